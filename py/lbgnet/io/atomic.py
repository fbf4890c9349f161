"""
lbgnet.io.atomic
================

Write files under a temporary name and rename them into place, so that a crash
mid-write never leaves a partial file under the final name.
"""
import contextlib
import os


@contextlib.contextmanager
def atomic_path(path, rename=None):
    """Context manager yielding a temporary path that is renamed to `path` on success.

    The temporary file sits in the same directory (so the rename is atomic) and
    carries the process id, so that MPI ranks never collide.  On any exception it is
    removed and the exception propagates; `path` is then untouched.

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
    head, tail = os.path.split(path)
    root, ext = os.path.splitext(tail)
    if ext == '.gz':
        root, ext0 = os.path.splitext(root)
        ext = ext0 + ext
    tmp = os.path.join(head, f'.{root}.tmp{os.getpid()}{ext}')
    try:
        yield tmp
        (os.replace if rename is None else rename)(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
