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
#: 0 logs about another: ``rank 1: --outdir ... not writable``), says it is every
#: rank's (``every rank: ...``, logged once by rank 0) or the whole run's (``run: ...``,
#: :func:`run_wide`).
NAMES_A_RANK = re.compile(r'^(rank \d+|every rank|run): ')

#: The prefix of the lines rank 0 writes for the whole run (:func:`run_wide`).
RUN_LABEL = 'run: '


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


@contextlib.contextmanager
def run_wide():
    """Within the block, lines that :func:`rank_prefix` would start with ``rank N:``
    start with ``run:`` (:data:`RUN_LABEL`): for what rank 0 does for every rank (the
    list of files and the checks before the split) and the run's summary, which read as
    rank 0's own (``rank 0: FAILED PATTERN: matched no coadd file``, ``rank 0: 3 files
    done``).  Lines naming a rank keep it; nothing changes outside :func:`rank_prefix`.
    """
    filters = [f for handler in get_logger().parent.handlers for f in handler.filters
               if isinstance(f, RankPrefix)]
    labels = [f.label for f in filters]
    for f in filters:
        f.label = RUN_LABEL
    try:
        yield
    finally:
        for f, label in zip(filters, labels):
            f.label = label
