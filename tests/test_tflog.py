"""Tests of lbgnet.tflog: TensorFlow's start-up lines hidden per TF_CPP_MIN_LOG_LEVEL, nothing else."""
import os
import re
import subprocess
import sys

import pytest

from lbgnet.tflog import ABSL_NOTICE, filter_output, hidden_line, import_tensorflow, tf_log_level

INFO = 'I0000 00:00:1796123496.084928    6239 port.cc:153] oneDNN custom operations are on.'
WARN = 'W0000 00:00:1796123496.084928    6239 cpu.cc:12] a warning'
ERROR = 'E1201 11:03:07.123456    6239 dso.cc:99] an error'
FATAL = 'F1201 11:03:07.123456    6239 dso.cc:99] fatal'


@pytest.mark.parametrize('level, hidden', [
    (0, set()),
    (1, {ABSL_NOTICE, INFO}),
    (2, {ABSL_NOTICE, INFO, WARN}),
    (3, {ABSL_NOTICE, INFO, WARN, ERROR}),
])
def test_hidden_lines_follow_the_tensorflow_levels(level, hidden):
    for line in (ABSL_NOTICE, INFO, WARN, ERROR, FATAL, 'Traceback (most recent call last):',
                 'UserWarning: I0000 is not a log line here'):
        assert hidden_line(line, level) == (line in hidden), (level, line)


def test_filter_output_keeps_order_and_other_lines():
    text = '\n'.join([ABSL_NOTICE, INFO, 'python warning', WARN, ERROR]) + '\n'
    assert filter_output(text, 2) == 'python warning\n' + ERROR + '\n'
    assert filter_output(ABSL_NOTICE + '\n' + INFO, 1) == ''


@pytest.mark.parametrize('value, level', [(None, 0), ('2', 2), ('x', 0)])
def test_log_level_from_environment(value, level):
    env = {} if value is None else {'TF_CPP_MIN_LOG_LEVEL': value}
    assert tf_log_level(env) == level


def test_import_hides_start_up_lines_but_keeps_the_rest(tmp_path, monkeypatch, capfd):
    """A module that writes absl lines and a real message to file descriptor 2 on import."""
    (tmp_path / 'noisy_tf_stand_in.py').write_text(
        'import os\n'
        f'os.write(2, {(ABSL_NOTICE + chr(10) + INFO + chr(10)).encode()!r})\n'
        "os.write(2, b'kept message\\n')\n"
        f'os.write(2, {(WARN + chr(10)).encode()!r})\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '1')
    module = import_tensorflow('noisy_tf_stand_in')
    assert module.__name__ == 'noisy_tf_stand_in'
    err = capfd.readouterr().err
    assert err == 'kept message\n' + WARN + '\n'


def test_import_error_still_raises_with_its_output(tmp_path, monkeypatch, capfd):
    (tmp_path / 'broken_tf_stand_in.py').write_text(
        "import os\nos.write(2, b'why it broke\\n')\nraise ImportError('broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '2')
    with pytest.raises(ImportError, match='broken'):
        import_tensorflow('broken_tf_stand_in')
    assert 'why it broke' in capfd.readouterr().err
    os.write(2, b'')                                    # file descriptor 2 still open


def test_real_tensorflow_import_is_quiet_at_level_2():
    """TensorFlow 2.21 prints its oneDNN INFO line whatever TF_CPP_MIN_LOG_LEVEL says."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    run = subprocess.run([sys.executable, '-c', 'from lbgnet.tflog import import_tensorflow; '
                          'import_tensorflow(); import keras; print("ok")'],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == 'ok'
    assert 'oneDNN' not in run.stderr and ABSL_NOTICE not in run.stderr, run.stderr


@pytest.mark.parametrize('env, keras_json, backend', [
    ({}, None, 'tensorflow'),
    ({'KERAS_BACKEND': 'jax'}, '{"backend": "torch"}', 'jax'),       # the variable wins
    ({}, '{"backend": "torch"}', 'torch'),
    ({}, '{"floatx": "float32"}', 'tensorflow'),
    ({}, 'not json', 'tensorflow'),
])
def test_keras_backend_read_as_keras_reads_it(tmp_path, env, keras_json, backend):
    from lbgnet.tflog import keras_backend_name
    if keras_json is not None:
        (tmp_path / 'keras.json').write_text(keras_json)
    assert keras_backend_name(dict(env, KERAS_HOME=str(tmp_path))) == backend


def test_no_tensorflow_import_under_another_keras_backend():
    """Training under KERAS_BACKEND=jax (a GPU machine without TensorFlow) must not import
    TensorFlow: desi_lbg_train stopped with ModuleNotFoundError."""
    code = ('import sys; from lbgnet.tflog import import_tensorflow; '
            'print(import_tensorflow() is None, "tensorflow" in sys.modules)')
    env = dict(os.environ, KERAS_BACKEND='numpy', TF_CPP_MIN_LOG_LEVEL='2')   # no jax in CI
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['True', 'False']


@pytest.mark.parametrize('backend, train, message', [
    ('tensorflow', True, None),
    ('numpy', False, None),                                   # numpy and openvino predict
    ('numpy', True, "Keras backend 'numpy' cannot train a network"),
    ('nonsense', False, "Keras backend 'nonsense' (KERAS_BACKEND or keras.json) is not one"),
    ('jax', False, "jax is not installed; install it or choose another backend"),
])
def test_check_keras_backend(monkeypatch, backend, train, message):
    import importlib.util
    from lbgnet.tflog import KerasBackendError, check_keras_backend
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None if name == 'jax' else real(name))
    env = {'KERAS_BACKEND': backend}
    if message is None:
        assert check_keras_backend(train, env) == backend
    else:
        with pytest.raises(KerasBackendError, match=re.escape(message)):
            check_keras_backend(train, env)


def test_keras_loaded_decides_its_backend(monkeypatch):
    """Once Keras is imported, its own answer counts (its home-directory rules included)."""
    import keras
    from lbgnet.tflog import keras_backend_name
    monkeypatch.setenv('KERAS_BACKEND', 'jax')
    assert keras_backend_name() == keras.config.backend()
    monkeypatch.setattr(keras.config, 'backend', lambda: 'torch')
    assert keras_backend_name() == 'torch'


def test_unusable_backend_is_one_line_for_a_command(tmp_path):
    """desi_lbg_train under a backend that cannot train (or is not installed) was a
    traceback (NotImplementedError: fit not implemented for NumPy backend)."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          'bin', 'desi_lbg_train')
    env = dict(os.environ, KERAS_BACKEND='numpy', TF_CPP_MIN_LOG_LEVEL='2')
    out = subprocess.run([sys.executable, script, '--config', 'lbgnet-default.yaml',
                          '--outdir', str(tmp_path / 'run')], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "Keras backend 'numpy' cannot train a network" in text
    assert 'Traceback' not in text and not (tmp_path / 'run').exists()
