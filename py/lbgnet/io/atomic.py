"""
lbgnet.io.atomic
================

Write files under a temporary name and rename them into place, so that a crash
mid-write never leaves a partial file under the final name; turn a termination
signal (Slurm's time limit, ``scancel``) into an exception so that the temporaries
are removed on the way out too.
"""
import contextlib
import glob
import os
import re
import signal
import sys


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
    carries the process id, so that MPI ranks never collide.  On any exception it is
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
    stem = f'.{root}.tmp{os.getpid()}'
    tmp = os.path.join(head, stem + ext)
    try:
        yield tmp
        (os.replace if rename is None else rename)(tmp, path)
    except BaseException:
        # '[._]' after the pid: not the temporary of a process whose pid starts with ours
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


_TEMPORARY = re.compile(r'^\.(?P<root>.+)\.tmp\d+(?P<ext>\.[^.]+(?:\.gz)?)?$')


def leftover_temporaries(paths):
    """Temporaries of :func:`atomic_path` for `paths` left by interrupted writes.

    A process killed outright (``kill -9``, a node lost) cannot remove its temporary file
    (``.<root>.tmp<pid><ext>`` beside the final name).  Each directory is listed once.

    Parameters
    ----------
    paths : sequence of str
        Final output names.

    Returns
    -------
    list of str
        The temporaries found (any process id), sorted; directories that cannot be listed
        (not created yet) are skipped.
    """
    wanted = {}
    for path in paths:
        head, root, ext = _split_name(path)
        wanted.setdefault(head, set()).add((root, ext))
    found = []
    for head, keys in wanted.items():
        try:
            names = os.listdir(head or '.')
        except OSError:
            continue
        for name in names:
            match = _TEMPORARY.match(name)
            if match and (match['root'], match['ext'] or '') in keys:
                found.append(os.path.join(head, name))
    return sorted(found)
