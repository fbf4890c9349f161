"""
lbgnet.io.atomic
================

Write files under a temporary name and rename them into place, so that a crash
mid-write never leaves a partial file under the final name; turn a termination
signal (Slurm's time limit, ``scancel``) into an exception so that the temporaries
are removed on the way out too.

A process killed outright (``kill -9``, Slurm's SIGKILL after its grace period, the OOM
killer, a lost node) cannot remove anything: every hidden temporary lbgnet makes beside an
output therefore names its owner, ``.NAME.tmp<pid>-<host>...`` (:func:`owner_tag`), and a
later command that writes the same output removes the ones whose process has ended on its
own host (:func:`remove_leftovers`).
"""
import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import sys
import tempfile


class Terminated(SystemExit):
    """Raised in the main thread when the process receives a termination signal.

    A :class:`SystemExit` whose code is ``128 + signum`` (143 for SIGTERM, as the shell
    reports a process killed by it), so ``except Exception`` blocks let it through and
    every :func:`atomic_path` on the way out removes its temporary file.
    """


_received = []      # 128 + the signal number, once a handled signal has arrived


def exit_on_termination(signals=(signal.SIGTERM, signal.SIGHUP, signal.SIGINT)):
    """Make `signals` raise :class:`Terminated` instead of killing the process at once.

    Call it once, in the main thread of a command, before any work.  Python runs the
    handler between two bytecodes, so a signal that arrives during a long C call (a
    TensorFlow prediction, a FITS write) acts when that call returns: well inside the
    grace period Slurm leaves between SIGTERM and SIGKILL (``KillWait``, 30 s by default).

    A signal the process was started with ignored stays ignored: ``nohup`` sets SIGHUP so,
    and a training started under it must survive the end of the login session.

    Parameters
    ----------
    signals : sequence of int, optional
        The signals to handle [SIGTERM, SIGHUP and SIGINT: Ctrl-C ends a command with
        one line and status 130, like a signal from Slurm, instead of a
        KeyboardInterrupt traceback].
    """
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:       # a forked worker (Keras's pool ends them by SIGTERM):
            signal.signal(signum, signal.SIG_DFL)     # it dies as it would have, silently,
            os.kill(os.getpid(), signum)              # and removes none of the temporaries
            return
        for other in handled:          # a second signal (mpiexec forwards one too) must not
            signal.signal(other, signal.SIG_IGN)      # interrupt the clean-up of the first
        os.write(2, f'{os.path.basename(sys.argv[0])}: stopped by '
                    f'{signal.Signals(signum).name}; removing temporary outputs\n'.encode())
        _received[:] = [128 + signum]
        raise Terminated(128 + signum)

    _received.clear()
    handled = [signum for signum in signals if signal.getsignal(signum) is not signal.SIG_IGN]
    for signum in handled:
        signal.signal(signum, handler)


def raise_if_terminated():
    """Raise :class:`Terminated` again if a signal handled by :func:`exit_on_termination`
    has been received.

    The handler raises wherever the interpreter happens to be, and a library may catch
    that exception and raise another in its place: TensorFlow, signalled while it traces
    a function, reports a ``TypeError`` ("Failed to convert elements of (None, 16, 40, 1)
    to Tensor").  Call this first in every ``except Exception`` block that goes on with
    the next file or trial, so that the signal stops the run instead of failing one file.
    """
    if _received:
        raise Terminated(_received[0])


@contextlib.contextmanager
def atomic_path(path, rename=None):
    """Context manager yielding a temporary path that is renamed to `path` on success.

    The temporary file sits in the same directory (so the rename is atomic) and
    carries the process id and host name (``.<root>.tmp<pid>-<host><ext>``,
    :func:`owner_tag`), so that MPI ranks never collide and a leftover of a process killed
    outright can be told from a live one (:func:`remove_leftovers`).  On any exception it is
    removed, with any file whose name starts like it (the writer's own temporary:
    :func:`desispec.io.write_spectra` writes ``<tmp root>_tmp<pid>.fits`` and renames it
    to the name it was given, leaving it behind when interrupted), and the exception
    propagates; `path` is then untouched.

    Parameters
    ----------
    path : str
        Final file name.  Its extension is kept on the temporary name, because some
        writers (fitsio, desispec) choose the format from it.
    rename : callable, optional
        ``rename(tmp, path)`` that puts the file in place [:func:`os.replace`, looked up
        when called].
    """
    path = str(path)
    head, root, ext = _split_name(path)
    stem = f'.{root}.{owner_tag()}'
    tmp = os.path.join(head, stem + ext)
    try:
        yield tmp
        (os.replace if rename is None else rename)(tmp, path)
    except BaseException:
        # '[._]' after the host: not the temporary of a host whose name starts with ours
        leftovers = glob.glob(os.path.join(glob.escape(head), glob.escape(stem) + '[._]*'))
        for leftover in [tmp] + leftovers:        # tmp itself: a name without extension
            if os.path.isfile(leftover) or os.path.islink(leftover):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(leftover)
        raise


def _split_name(path):
    """(directory, root, extension) of `path` as :func:`atomic_path` names its temporary
    (``.gz`` keeps the extension before it)."""
    head, tail = os.path.split(str(path))
    root, ext = os.path.splitext(tail)
    if ext == '.gz':
        root, ext0 = os.path.splitext(root)
        ext = ext0 + ext
    return head, root, ext


def host_label():
    """This host's name as the temporaries carry it: :func:`socket.gethostname` with every
    character other than a letter, a digit or ``-`` replaced by ``-`` (``login01.nersc.gov``
    gives ``login01-nersc-gov``), so that the name parses back (:func:`remove_leftovers`)."""
    return re.sub(r'[^A-Za-z0-9-]', '-', socket.gethostname()) or 'localhost'


def owner_tag():
    """``tmp<pid>-<host>``: the part of a temporary's name that says which process made it.

    Processes are told apart by host name and process id: two hosts that report the same
    name (or containers on one host with their own process-id namespace but not their own
    host name) would be taken for one.
    """
    return f'tmp{os.getpid()}-{host_label()}'


def private_directory(path):
    """Make a hidden directory beside `path` for work on it, named after it and this process:
    ``.NAME.tmp<pid>-<host>.XXXXXXXX`` (``.NAME.XXXXXXXX`` when NAME is already a temporary
    of this process), which :func:`remove_leftovers` for `path` (or for the output NAME is
    the temporary of) recognises once its process has ended.  The caller removes it.

    Parameters
    ----------
    path : str

    Returns
    -------
    str
        The new directory.
    """
    head, name = os.path.split(os.path.abspath(str(path)))
    owner = _owner(name)
    mine = owner is not None and owner[1:] == (os.getpid(), host_label())
    return tempfile.mkdtemp(prefix=f'.{name}.' if mine else f'.{name}.{owner_tag()}.', dir=head)


#: A temporary named by :func:`owner_tag`: ``.BASE.tmp<pid>-<host>`` then nothing or a
#: ``.``/``_`` and anything (extension, a writer's own temporary, a private directory's
#: random part); a private directory of such a temporary starts with two dots.
_OWNED = re.compile(r'^\.\.?(?P<base>[^.].*)\.tmp(?P<pid>\d+)-(?P<host>[A-Za-z0-9-]+)(?:[._].*)?$')
#: A temporary named before the host was added (``.BASE.tmp<pid>.fits``): its owner cannot
#: be told.
_UNOWNED = re.compile(r'^\.\.?(?P<base>[^.].*)\.tmp(?P<pid>\d+)(?:[._].*)?$')


def _owner(name):
    """(base, pid, host) of a temporary's file name; host None for a name without it; None
    for a name that is not a temporary."""
    match = _OWNED.match(name) or _UNOWNED.match(name)
    if match is None:
        return None
    return match['base'], int(match['pid']), match.groupdict().get('host')


def _running(pid):
    """Whether process `pid` exists on this host (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # someone else's process
        return True
    except (OverflowError, ValueError):      # no such process id can exist
        return False
    return True


def _names(path):
    """The names whose temporaries belong to the output `path`: its file name and each
    part of it up to a dot (``x.weights.h5``: ``x``, ``x.weights``, ``x.weights.h5``)."""
    parts = os.path.basename(str(path)).split('.')
    return {'.'.join(parts[:i]) for i in range(1, len(parts) + 1)} - {''}


def find_leftovers(paths):
    """The temporaries lbgnet left beside the outputs `paths`, with whether they may go.

    Each directory is listed once.  A temporary whose name carries this host and a process
    id that no longer runs here is abandoned: its process was killed outright.  Any other
    (another host's, a live process's, or one named without its host by an lbgnet before
    this rule) may still be in use, and is only reported.

    Parameters
    ----------
    paths : iterable of str
        Output names (files or directories).

    Returns
    -------
    list of (str, str or None)
        Each temporary (sorted by path) with None when it is abandoned, else why it is kept
        (one phrase); directories that cannot be listed (not created yet) are skipped.
    """
    wanted = {}
    for path in paths:
        head, _ = os.path.split(str(path))
        wanted.setdefault(head, set()).update(_names(path))
    host = host_label()
    found = []
    for head, names in wanted.items():
        try:
            entries = os.listdir(head or '.')
        except OSError:
            continue
        for entry in entries:
            owner = _owner(entry)
            if owner is None or owner[0] not in names:
                continue
            _, pid, where = owner
            if where is None:
                reason = f'process {pid}, named without its host by an older lbgnet'
            elif where != host:
                reason = f'process {pid} on {where}'
            elif _running(pid):
                reason = f'process {pid}, still running on this host'
            else:
                reason = None
            found.append((os.path.join(head, entry), reason))
    return sorted(found)


def remove_leftovers(paths):
    """Remove the abandoned temporaries beside the outputs `paths` (:func:`find_leftovers`).

    Call it once a command knows the outputs it writes, before writing them: one listing of
    each output directory.  What was removed is logged in one line; the temporaries kept
    (they may belong to a run still writing) in one warning, naming one; a temporary that
    cannot be removed is a warning, never a failure.

    Parameters
    ----------
    paths : iterable of str
        Output names (files or directories).

    Returns
    -------
    list of str
        The temporaries removed.
    """
    from desiutil.log import get_logger
    log = get_logger()
    removed, kept = [], []
    for path, reason in find_leftovers(paths):
        if reason is not None:
            kept.append((path, reason))
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except FileNotFoundError:       # another run removed it meanwhile
            continue
        except OSError as err:
            log.warning('%s: cannot remove this temporary of an interrupted write (%s)', path,
                        err.strerror or err)
            continue
        removed.append(path)
    if removed:
        pids = sorted({_owner(os.path.basename(path))[1] for path in removed})
        shown = ', '.join(removed[:3]) + (f' and {len(removed) - 3} more' if len(removed) > 3
                                           else '')
        log.info('removed %d temporary file(s) of interrupted writes left beside the outputs '
                 'by process(es) %s of this host, no longer running: %s', len(removed),
                 ', '.join(map(str, pids)), shown)
    if kept:
        log.warning('%d temporary file(s) beside the outputs that may still be in use, e.g. '
                    '%s (%s): kept; remove them once no other run writes there', len(kept),
                    *kept[0])
    return removed
