"""
lbgnet.ranklog
==============

Rank numbers in the log lines of an MPI run: with 64 ranks writing per-file lines to one
stream, a line must say which rank wrote it.
"""
import contextlib
import logging

from desiutil.log import get_logger


class RankPrefix(logging.Filter):
    """Prefix every record's message with ``rank N:`` (a handler filter)."""

    def __init__(self, rank):
        super().__init__()
        self.label = f'rank {rank}: '

    def filter(self, record):
        text = record.getMessage()
        if not text.startswith(self.label):   # a message naming its rank already, or a
            record.msg, record.args = f'{self.label}{text}', None   # record seen before
        return True


@contextlib.contextmanager
def rank_prefix(comm):
    """Within the block, lines of desiutil's loggers start with ``rank N:`` when `comm` has
    more than one rank (nothing changes otherwise); the handlers are restored after it.

    Parameters
    ----------
    comm : mpi4py communicator or None
    """
    if comm is None or comm.size <= 1:
        yield
        return
    handlers = get_logger().parent.handlers
    prefix = RankPrefix(comm.rank)
    for handler in handlers:
        handler.addFilter(prefix)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(prefix)
