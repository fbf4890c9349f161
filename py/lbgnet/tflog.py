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

The commands run under Keras's other backends too (``KERAS_BACKEND=jax`` or ``torch``,
e.g. on a GPU machine without TensorFlow): :func:`import_tensorflow` then imports
nothing; :func:`check_keras_backend` turns a backend that is not installed, unknown, or
cannot train into one line.
"""
import importlib
import importlib.util
import json
import os
import re
import sys
import tempfile

from .config import ConfigError

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
    """The backend Keras runs on, or will load, read as Keras reads it.

    Once Keras is imported (and `environ` not given), ``keras.config.backend()``.  Before:
    ``KERAS_BACKEND`` when set and not empty, else ``backend`` in ``keras.json`` under
    ``KERAS_HOME`` (when set, even empty), else under ``~/.keras`` (``/tmp/.keras`` when
    the home directory is not writable), else ``tensorflow``.

    Parameters
    ----------
    environ : mapping, optional
        [``os.environ``].

    Returns
    -------
    str
    """
    if environ is None and 'keras' in sys.modules:
        config = getattr(sys.modules['keras'], 'config', None)
        if config is not None and hasattr(config, 'backend'):
            return config.backend()
    environ = os.environ if environ is None else environ
    if environ.get('KERAS_BACKEND'):
        return environ['KERAS_BACKEND']
    if 'KERAS_HOME' in environ:
        home = environ['KERAS_HOME']
    else:
        base = os.path.expanduser('~')
        home = os.path.join(base if os.access(base, os.W_OK) else '/tmp', '.keras')
    backend = 'tensorflow'
    try:
        with open(os.path.expanduser(os.path.join(home, 'keras.json'))) as fh:
            backend = json.load(fh).get('backend', backend)
    except (OSError, ValueError, AttributeError):
        pass
    return backend


#: Keras 3 backends, and whether Keras can train on them.
KERAS_BACKENDS = {'tensorflow': True, 'jax': True, 'torch': True, 'numpy': False,
                  'openvino': False}


class KerasBackendError(ConfigError):
    """The Keras backend cannot be used (not installed, unknown, or cannot train)."""


def check_keras_backend(train=False, environ=None):
    """One-line error for a Keras backend the command cannot use, before Keras is imported.

    Parameters
    ----------
    train : bool, optional
        The command trains a network (Keras's numpy and openvino backends only predict).
    environ : mapping, optional
        [``os.environ``].

    Returns
    -------
    str
        The backend's name (:func:`keras_backend_name`).

    Raises
    ------
    KerasBackendError
    """
    name = keras_backend_name(environ)
    how = 'set KERAS_BACKEND to tensorflow, jax or torch'
    if name not in KERAS_BACKENDS:
        raise KerasBackendError(f'Keras backend {name!r} (KERAS_BACKEND or keras.json) is not '
                                f'one of Keras\'s: {how}')
    if train and not KERAS_BACKENDS[name]:
        raise KerasBackendError(f'Keras backend {name!r} cannot train a network: {how}')
    if KERAS_BACKENDS[name] and importlib.util.find_spec(name) is None:
        raise KerasBackendError(f'Keras backend {name!r} (KERAS_BACKEND or keras.json): '
                                f'{name} is not installed; install it or choose another backend')
    return name


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


def import_tensorflow(name='tensorflow', train=False):
    """Import TensorFlow (once) when Keras runs on it, hiding the start-up lines
    ``TF_CPP_MIN_LOG_LEVEL`` hides (:func:`quiet_import`); first check the backend.

    Parameters
    ----------
    name : str, optional
        Module to import [``tensorflow``] (another name only for tests: no backend check).
    train : bool, optional
        The command trains (:func:`check_keras_backend`).

    Returns
    -------
    module or None
        None, without importing anything, when Keras runs on another backend
        (:func:`keras_backend_name`).

    Raises
    ------
    KerasBackendError
        A backend the command cannot use (one line for the commands to log).
    """
    if name == 'tensorflow' and check_keras_backend(train) != 'tensorflow':
        return None
    return quiet_import(name)


def quiet_import(name):
    """Import module `name`, hiding the start-up lines ``TF_CPP_MIN_LOG_LEVEL`` hides.

    Does a plain import when the module is already imported or the level is 0.  An import
    error still raises, after the captured output has been written back.

    Returns
    -------
    module
    """
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
