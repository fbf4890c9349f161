"""
lbgnet.ranklog
==============

Rank numbers in the log lines of an MPI run: with 64 ranks writing per-file lines to one
stream, a line must say which rank wrote it.
"""
import contextlib
import logging
import re

from desiutil.log import get_logger


#: A message that already starts with a rank (its own, a record seen before, or one rank
#: 0 logs about another: ``rank 1: --outdir ... not writable``) or says it is every
#: rank's (``every rank: ...``, logged once by rank 0).
NAMES_A_RANK = re.compile(r'^(rank \d+|every rank): ')


class RankPrefix(logging.Filter):
    """Prefix every record's message with ``rank N:`` (a handler filter), unless it
    starts with a rank already (:data:`NAMES_A_RANK`)."""

    def __init__(self, rank):
        super().__init__()
        self.label = f'rank {rank}: '

    def filter(self, record):
        text = record.getMessage()
        if not NAMES_A_RANK.match(text):
            record.msg, record.args = f'{self.label}{text}', None
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
