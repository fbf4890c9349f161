"""
lbgnet.tflog
============

Import TensorFlow without the C++ start-up lines that ``TF_CPP_MIN_LOG_LEVEL`` no
longer hides.

TensorFlow 2.21's two core libraries each write, while being imported and before
absl logging is initialised, ::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796123496.084928    6239 port.cc:153] oneDNN custom operations are on. ...

straight to file descriptor 2, whatever ``TF_CPP_MIN_LOG_LEVEL`` says (upstream:
tensorflow/tensorflow#102212).  Under ``srun`` that is four lines per rank and per
command.  :func:`import_tensorflow` imports TensorFlow with file descriptor 2 sent to a
temporary file, then writes back every captured line except those the level hides
(``I`` lines and absl's notice above from level 1, ``W`` lines from level 2), so errors
and Python warnings of the import still reach stderr.

Training runs under any Keras 3 backend (``KERAS_BACKEND=jax`` or ``torch``, e.g. on a
GPU machine without TensorFlow): :func:`import_tensorflow` then imports nothing.
"""
import importlib
import json
import os
import re
import sys
import tempfile

#: absl's notice printed before the first line of a library that logs before initialising.
ABSL_NOTICE = 'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR'

#: An absl C++ log line: severity letter, MMDD, time, thread id, ``file:line]``.
_ABSL_LINE = re.compile(r'^(?P<severity>[IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ')


def tf_log_level(environ=None):
    """``TF_CPP_MIN_LOG_LEVEL`` as an int (0 when unset or not a number)."""
    value = (os.environ if environ is None else environ).get('TF_CPP_MIN_LOG_LEVEL', '0')
    try:
        return int(value)
    except ValueError:
        return 0


def keras_backend_name(environ=None):
    """The backend Keras will load, read as Keras reads it, without importing Keras.

    ``KERAS_BACKEND`` when set, else ``backend`` in ``keras.json`` under ``KERAS_HOME``
    (default ``~/.keras``), else ``tensorflow``.

    Parameters
    ----------
    environ : mapping, optional
        [``os.environ``].

    Returns
    -------
    str
    """
    environ = os.environ if environ is None else environ
    if environ.get('KERAS_BACKEND'):
        return environ['KERAS_BACKEND']
    home = environ.get('KERAS_HOME') or os.path.join(os.path.expanduser('~'), '.keras')
    try:
        with open(os.path.join(home, 'keras.json')) as fh:
            backend = json.load(fh).get('backend')
    except (OSError, ValueError, AttributeError):
        backend = None
    return backend if isinstance(backend, str) and backend else 'tensorflow'


def hidden_line(line, level):
    """Whether `line` of TensorFlow's import output is hidden at log `level`.

    Parameters
    ----------
    line : str
        One line, without its newline.
    level : int
        ``TF_CPP_MIN_LOG_LEVEL``: 1 hides INFO, 2 also WARNING, 3 also ERROR (as in
        TensorFlow); FATAL lines are always kept.

    Returns
    -------
    bool
    """
    if level >= 1 and line == ABSL_NOTICE:
        return True
    match = _ABSL_LINE.match(line)
    if match is None:
        return False
    return {'I': 1, 'W': 2, 'E': 3}.get(match.group('severity'), 99) <= level


def filter_output(text, level):
    """The lines of `text` that :func:`hidden_line` keeps, newline-terminated ('' if none)."""
    kept = [line for line in text.splitlines() if not hidden_line(line, level)]
    return ''.join(line + '\n' for line in kept)


def import_tensorflow(name='tensorflow'):
    """Import TensorFlow (once), hiding the start-up lines ``TF_CPP_MIN_LOG_LEVEL`` hides.

    Does a plain import when the module is already imported or the level is 0.  An import
    error still raises, after the captured output has been written back.

    Parameters
    ----------
    name : str, optional
        Module to import [``tensorflow``] (another name only for tests).

    Returns
    -------
    module or None
        None, without importing anything, when Keras runs on another backend
        (:func:`keras_backend_name`).
    """
    if name == 'tensorflow' and keras_backend_name() != 'tensorflow':
        return None
    level = tf_log_level()
    if level < 1 or name in sys.modules:
        return importlib.import_module(name)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            module = importlib.import_module(name)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = filter_output(capture.read().decode('utf-8', 'replace'), level)
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
    return module
