"""Keras backends other than TensorFlow (a model trained and evaluated with
KERAS_BACKEND=jax on a GPU machine): the forward pass the commands use."""
import numpy as np
import pytest

from lbgnet.network import default_model_path, load_network, padded_forward


def test_forward_pass_under_another_backend(monkeypatch):
    """Under another backend the commands' forward pass is the model's predict_on_batch,
    whose numpy outputs Network.predict takes as they are (it called ``.numpy()``, a
    TensorFlow tensor's method): same outputs as the tf.function."""
    import keras
    X = np.random.default_rng(3).normal(size=(300, 800, 2)).astype(np.float32)
    reference = load_network(default_model_path(), 'keras').predict(X, batch_size=128)
    monkeypatch.setattr(keras.backend, 'backend', lambda: 'jax')
    net = load_network(default_model_path(), 'keras')
    seen = []
    predict = net.model.predict_on_batch
    monkeypatch.setattr(net.model, 'predict_on_batch', lambda x: seen.append(len(x)) or predict(x))
    for n in (300, 301, 5):         # each file's last batch had its own size
        conf, offset = net.predict(X[:n], batch_size=128)
        assert conf.dtype == np.float32 and conf.shape == reference[0][:n].shape
        np.testing.assert_allclose(conf, reference[0][:n], atol=1e-5)
        np.testing.assert_allclose(offset, reference[1][:n], atol=1e-5)
    # padded to powers of two: JAX compiles once per size, not once per last batch
    assert set(seen) == {128, 64, 8}


def test_padded_forward_cuts_every_output_back():
    """Hybrid networks return a dict: every output is cut back to the batch."""
    calls = []

    def predict(x):
        calls.append(x.shape[0])
        return {'direct': x[:, :3, 0] * 2, 'line_boxes': x[:, :4, :]}

    x = np.random.default_rng(1).normal(size=(5, 10, 2)).astype(np.float32)
    out = padded_forward(predict)(x)
    assert calls == [8]
    np.testing.assert_array_equal(out['direct'], x[:, :3, 0] * 2)
    np.testing.assert_array_equal(out['line_boxes'], x[:, :4, :])
    assert padded_forward(lambda x: x[:, 0, 0])(x[:4]).shape == (4,)
    assert padded_forward(lambda x: x[:, 0, 0])(x[:0]).shape == (0,)


def test_thread_settings_need_no_tensorflow_under_another_backend(monkeypatch):
    """desi_lbg_afterburner sets TensorFlow's thread pools before it loads the network:
    under KERAS_BACKEND=jax, on a machine without TensorFlow, that was an ImportError."""
    import sys
    import keras
    from lbgnet.afterburner import set_tensorflow_threads
    monkeypatch.setitem(sys.modules, 'tensorflow', None)      # import tensorflow fails
    monkeypatch.setattr(keras.config, 'backend', lambda: 'jax')   # Keras loaded: it decides
    set_tensorflow_threads(1)
    monkeypatch.setattr(keras.config, 'backend', lambda: 'tensorflow')
    with pytest.raises(ImportError):
        set_tensorflow_threads(1)
