"""Keras backends other than TensorFlow (a model trained and evaluated with
KERAS_BACKEND=jax on a GPU machine): the forward pass the commands use."""
import numpy as np
import pytest

from lbgnet.network import compiled_forward, default_model_path, load_network


def test_forward_pass_under_another_backend(monkeypatch):
    """Under another backend the commands' forward pass is the model's predict_on_batch,
    whose numpy outputs Network.predict takes as they are (it called ``.numpy()``, a
    TensorFlow tensor's method): same outputs as the tf.function."""
    import keras
    X = np.random.default_rng(3).normal(size=(300, 800, 2)).astype(np.float32)
    reference = load_network(default_model_path()).predict(X, batch_size=128)
    monkeypatch.setattr(keras.backend, 'backend', lambda: 'jax')
    net = load_network(default_model_path())
    forward = compiled_forward(net.model)
    assert forward == net.model.predict_on_batch
    conf, offset = net.predict(X, batch_size=128)
    assert conf.dtype == np.float32 and conf.shape == reference[0].shape
    np.testing.assert_allclose(conf, reference[0], atol=1e-5)
    np.testing.assert_allclose(offset, reference[1], atol=1e-5)


def test_thread_settings_need_no_tensorflow_under_another_backend(monkeypatch):
    """desi_lbg_afterburner sets TensorFlow's thread pools before it loads the network:
    under KERAS_BACKEND=jax, on a machine without TensorFlow, that was an ImportError."""
    import sys
    from lbgnet.afterburner import set_tensorflow_threads
    monkeypatch.setitem(sys.modules, 'tensorflow', None)      # import tensorflow fails
    monkeypatch.setenv('KERAS_BACKEND', 'jax')
    set_tensorflow_threads(1)
    monkeypatch.setenv('KERAS_BACKEND', 'tensorflow')
    with pytest.raises(ImportError):
        set_tensorflow_threads(1)
