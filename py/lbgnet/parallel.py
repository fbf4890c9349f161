"""
lbgnet.parallel
===============

Distribution of files over MPI ranks, as a pure function (no MPI import here), what an
MPI launcher tells a process through its environment, and the rule that a rank that
fails or is stopped takes every rank down with it (:func:`abort_all_on_failure`).
"""
import argparse
import importlib
import os
import signal
import sys
import time
import traceback

import numpy as np

#: Environment variables in which MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm's
#: ``srun``) give a process its rank.
LAUNCHER_RANK_VARS = ('PMI_RANK', 'OMPI_COMM_WORLD_RANK', 'PMIX_RANK', 'SLURM_PROCID')
#: ... and the number of processes they started (not ``SLURM_NTASKS``: it is also set in a
#: plain shell inside an allocation, where nothing was launched).
LAUNCHER_SIZE_VARS = ('PMI_SIZE', 'OMPI_COMM_WORLD_SIZE', 'SLURM_STEP_NUM_TASKS')


def _launcher_value(names, environ, least):
    """The first of `names` that `environ` holds as an integer (at least `least`), else `least`."""
    environ = os.environ if environ is None else environ
    for name in names:
        try:
            return max(least, int(environ[name]))
        except (KeyError, ValueError):
            continue
    return least


def launcher_rank(environ=None):
    """This process's rank according to an MPI launcher (0 when none is detected)."""
    return _launcher_value(LAUNCHER_RANK_VARS, environ, 0)


def launcher_size(environ=None):
    """Number of processes an MPI launcher says it started (1 when none is detected)."""
    return _launcher_value(LAUNCHER_SIZE_VARS, environ, 1)


class RankZeroParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors only rank 0 prints.

    Under ``srun -n 64`` every rank parses the same command line; a bad option would
    otherwise print the same usage and error 64 times.  Every rank still exits with
    status 2.
    """

    def error(self, message):
        """Print usage and `message` on rank 0 (:func:`launcher_rank`), exit 2 on every rank."""
        if launcher_rank() == 0:
            self.print_usage(sys.stderr)
            sys.stderr.write(f'{self.prog}: error: {message}\n')
        sys.exit(2)


def split_work(items, size, rank, weights=None):
    """The items that rank `rank` of `size` ranks should process.

    Items are taken largest first and each goes to the rank with the smallest total
    weight so far (ties: the one with the fewest items, then the lowest rank), the
    classic "longest processing time first"
    greedy schedule.  The result is deterministic and the union over all ranks is
    exactly `items`, each once.

    Parameters
    ----------
    items : sequence
        Work units (e.g. file names).
    size : int
        Number of ranks (>= 1).
    rank : int
        This rank, 0 <= rank < size.
    weights : sequence of float, optional
        Cost of each item (e.g. file size in bytes), same length as `items`; all equal
        when omitted.  Must be finite and >= 0.

    Returns
    -------
    list
        The items of `rank`, largest first (input order among equal weights).

    Raises
    ------
    ValueError
        If `size` < 1, `rank` is out of range, or `weights` has the wrong length or
        negative / non-finite values.

    Examples
    --------
    >>> split_work(['a', 'b', 'c', 'd'], 2, 0, weights=[1, 5, 2, 3])
    ['b', 'a']
    >>> split_work(['a', 'b', 'c', 'd'], 2, 1, weights=[1, 5, 2, 3])
    ['d', 'c']
    """
    items = list(items)
    if int(size) < 1:
        raise ValueError(f'size must be >= 1, got {size}')
    if not 0 <= int(rank) < int(size):
        raise ValueError(f'rank must be in [0, {size}), got {rank}')
    if weights is None:
        weights = np.ones(len(items))
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(items),):
        raise ValueError(f'weights has shape {weights.shape}, expected ({len(items)},)')
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError('weights must be finite and >= 0')
    order = np.argsort(-weights, kind='stable')
    load = np.zeros(int(size))
    count = np.zeros(int(size), dtype=np.int64)
    owner = np.empty(len(items), dtype=np.int64)
    for i in order:            # least loaded rank; of equal loads (zero weights), fewest items
        least = np.flatnonzero(load == load.min())
        dest = int(least[np.argmin(count[least])])
        owner[i] = dest
        load[dest] += weights[i]
        count[dest] += 1
    return [items[i] for i in order if owner[i] == rank]


def problem_on_rank_zero(comm, check, errors):
    """Why rank 0's `check()` fails, on every rank: a check that every rank would answer
    alike, made once (a ``stat`` per file on a shared file system) and its answer shared,
    so that a failure is reported as the run's, not as ``rank 0: ...``.

    Parameters
    ----------
    comm : mpi4py communicator or None
    check : callable
        Called with no argument on rank 0 only; raises one of `errors` when it fails.
    errors : exception class or tuple of them

    Returns
    -------
    str or None
        The failure's one-line message, the same on every rank, or None.
    """
    problem = None
    if comm is None or comm.rank == 0:
        try:
            check()
        except errors as err:
            problem = str(err)
    return problem if comm is None else comm.bcast(problem, root=0)


def stop_if_any_failed(comm, problem, log):
    """Whether the run must stop because a rank could not start: every rank passes its
    `problem` (a one-line reason, or None) and all get the same answer, so that no rank
    goes on alone to wait forever in a later collective.

    Parameters
    ----------
    comm : mpi4py communicator or None
    problem : str or None
    log : logging.Logger
        Logs the reasons (rank 0's logger; others are silenced by their callers): one line
        when every rank failed alike (``every rank: why`` with several ranks, not rank 0's
        ``rank 0:`` prefix, which read as if rank 0 alone had failed), else one per failed
        rank, ``rank N: why``.

    Returns
    -------
    bool
    """
    problems = [problem] if comm is None else comm.allgather(problem)
    failed = [(r, text) for r, text in enumerate(problems) if text]
    if not failed:
        return False
    if len(failed) == len(problems) and all(text == failed[0][1] for _, text in failed):
        log.error('%s%s', 'every rank: ' if len(problems) > 1 else '', failed[0][1])
    else:
        for r, text in failed:
            log.error('rank %d: %s', r, text)
    return True


def run_entry_point(module):
    """What each ``bin/desi_lbg_*`` script does: ``main()`` of `module`, signals handled.

    SIGTERM, SIGHUP and SIGINT raise :class:`lbgnet.io.atomic.Terminated`
    (:func:`lbgnet.io.atomic.exit_on_termination`, installed first), so that a command
    stopped by Slurm removes its temporaries and ends with one line.  Under an MPI launcher
    a rank that stops that way before :func:`abort_all_on_failure` has joined the ranks
    (while the command's modules are imported, about a second) would leave the others
    waiting in MPI for ever; such a rank ends by the signal itself, which the launcher
    sees, and ends the others.

    Parameters
    ----------
    module : str
        E.g. ``'lbgnet.scripts.lbg_afterburner'``.

    Returns
    -------
    int
        The command's status.
    """
    from .io.atomic import Terminated, exit_on_termination
    exit_on_termination()
    try:
        return importlib.import_module(module).main()
    except Terminated as stop:
        if launcher_size() > 1 and stop.code > 128:
            signal.signal(stop.code - 128, signal.SIG_DFL)
            os.kill(os.getpid(), stop.code - 128)
        raise


#: Seconds a rank stopped by a signal waits before aborting the others (well inside Slurm's
#: default ``KillWait`` of 30 s).
ABORT_GRACE = 2.0


def run_command(comm, use_mpi, run, args, what):
    """Start a command's work `run(args, comm)` on the ranks it was launched on.

    `comm` is used as given; with `use_mpi` (``--mpi``) and no `comm`,
    ``MPI.COMM_WORLD``.  Started by an MPI launcher as one of several processes without
    either, it refuses (one line, by the first process: every process would `what`,
    e.g. ``'run every file'``) and returns 1.  Otherwise
    :func:`abort_all_on_failure`: a rank that fails or is stopped aborts every rank.

    Returns
    -------
    int
        `run`'s status, or 1 when refused.
    """
    launched = launcher_size()
    if comm is None and not use_mpi and launched > 1:
        if launcher_rank() == 0:         # once, not per process
            from desiutil.log import get_logger
            get_logger().error('started as one of %d MPI processes but without --mpi: every '
                               'process would %s; add --mpi to share them', launched, what)
        return 1
    if comm is None and use_mpi:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    return abort_all_on_failure(comm, run, args, comm)


def abort_all_on_failure(comm, run, *args):
    """``run(*args)`` on every rank of `comm`; a rank that fails aborts them all.

    With more than one rank, log lines start with ``rank N:``
    (:func:`lbgnet.ranklog.rank_prefix`), and an exception escaping `run` on one rank —
    which would leave the others waiting forever in a collective — calls
    ``comm.Abort``: at once for an unexpected error (its traceback logged), after
    :data:`ABORT_GRACE` seconds for a signal (:class:`lbgnet.io.atomic.Terminated`:
    ``srun`` signals every rank, and this gives the others time to finish the C call
    they are in and remove their temporaries; further signals are ignored by
    :func:`lbgnet.io.atomic.exit_on_termination`).

    Returns
    -------
    object
        What `run` returns (with one rank or none, `run` is simply called).
    """
    if comm is None or comm.size == 1:
        return run(*args)
    from desiutil.log import get_logger
    from .io.atomic import Terminated
    from .ranklog import rank_prefix
    try:
        with rank_prefix(comm):
            return run(*args)
    except Terminated as stop:   # SIGTERM: this rank's temporaries are gone
        get_logger().error('rank %d: stopped by a signal; aborting every rank in %g s',
                           comm.rank, ABORT_GRACE)
        time.sleep(ABORT_GRACE)
        comm.Abort(stop.code)
    except BaseException:    # noqa: BLE001 -- the other ranks would wait forever
        get_logger().critical('rank %d: unexpected error; aborting every rank:\n%s',
                              comm.rank, traceback.format_exc())
        comm.Abort(1)


def threads_per_rank(affinities, local_rank):
    """CPU threads one rank should use, given the CPU sets of the ranks on its node.

    Ranks pinned to disjoint CPU sets (``srun --cpu-bind``) each use their own set; ranks
    that share a set (``mpiexec`` without binding) divide it between them.

    Parameters
    ----------
    affinities : sequence of frozenset of int
        ``os.sched_getaffinity(0)`` of every rank on this node, in node-local rank order.
    local_rank : int
        Position of this rank in `affinities`.

    Returns
    -------
    int
        >= 1.

    Examples
    --------
    >>> threads_per_rank([frozenset({0, 1}), frozenset({0, 1})], 0)
    1
    >>> threads_per_rank([frozenset({0, 1}), frozenset({2, 3})], 1)
    2
    """
    mine = affinities[local_rank]
    sharing = sum(1 for cpus in affinities if cpus == mine)
    return max(1, len(mine) // sharing)
