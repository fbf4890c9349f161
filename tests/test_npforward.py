"""The numpy forward pass (lbgnet.npforward) against Keras, and its use by load_network."""
import os

import numpy as np
import pytest

from lbgnet.config import config_from_dict, load_config
from lbgnet.io.errors import InputFileError
from lbgnet.io.modelfile import default_model_path, load_model
from lbgnet.model import build_model, predict_boxes
from lbgnet.network import ENGINES, load_network
from lbgnet.npforward import from_keras


def random_inputs(nspec, nbins, seed=0):
    """Spectra with a flux channel ~N(0, 1) and an S/N channel spanning -30..30."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 1.0, (nspec, nbins, 2)).astype(np.float32)
    X[..., 1] *= rng.uniform(0.5, 10.0, (nspec, 1)).astype(np.float32)
    X[:2] = 0.0                             # empty spectra, as the grid writes them
    return X


def perturbed_model(config, seed):
    """`config`'s network with random weights and batch-normalisation statistics far from
    their initial values (so that folding them in is tested)."""
    import keras
    keras.utils.set_random_seed(seed)
    model = build_model(config)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == 'BatchNormalization':
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2.0, gamma.shape), rng.normal(0, 0.5, beta.shape),
                               rng.normal(0, 0.5, mean.shape), rng.uniform(0.2, 3.0, var.shape)])
        elif type(layer).__name__ in ('Conv1D', 'Dense'):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.3, bias.shape)])
    return model


def variant_config(**model):
    data = load_config('lbgnet-default.yaml').to_dict()
    data['model'].update(model)
    return config_from_dict(data, source='npforward-test')


def assert_same_outputs(model, config, X, atol=2e-5):
    conf, offset = predict_boxes(model, X)
    out = from_keras(model, config).predict(X, threads=2, batch_size=17)
    assert out.dtype == np.float32 and out.shape == conf.shape + (2,)
    np.testing.assert_allclose(out[..., 0], conf, atol=atol)
    np.testing.assert_allclose(out[..., 1], offset, atol=atol)


def test_shipped_model_numpy_pass_matches_keras():
    """The shipped network's outputs through numpy equal Keras's to float32 rounding, and
    reproduce the golden fixture's predictions and decisions."""
    from lbgnet.postprocess import postprocess
    model, config, _ = load_model(default_model_path())
    assert_same_outputs(model, config, random_inputs(300, config.grid.nbins))
    golden = np.load(os.path.join(os.path.dirname(__file__), 'data', 'golden_default_model.npz'))
    out = from_keras(model, config).predict(golden['X'])
    np.testing.assert_allclose(out[..., 0], golden['conf'], atol=1e-4)
    res = postprocess(out[..., 0], out[..., 1], config)
    np.testing.assert_array_equal(res['IS_LBG'], golden['IS_LBG'])
    np.testing.assert_allclose(res['Z_LBG'], golden['Z_LBG'], atol=1e-4)


@pytest.mark.parametrize('options', [
    dict(channels=['flux'], snr_softening=None, padding='valid', strides=[1, 2, 3, 2],
         kernel_size=[1, 4, 9, 3]),
    dict(channels=['snr', 'flux'], snr_softening=None, dropout=0.3, strides=3,
         kernel_size=[8, 5, 4, 2]),
    dict(channels=['snr'], snr_softening=2.0, conv_layers=2, filters=[5, 7], strides=[2, 4],
         kernel_size=[6, 11], padding='same'),
], ids=['flux-valid', 'swapped-dropout', 'snr-only'])
def test_numpy_pass_matches_keras_for_other_architectures(options):
    """Channel selection, no S/N softening, 'valid' and 'same' padding with odd and even
    kernels and strides (Keras pads the odd bin after the input), dropout (identity at
    inference) and random batch-normalisation statistics."""
    config = variant_config(**options)
    model = perturbed_model(config, seed=len(str(options)))
    assert_same_outputs(model, config, random_inputs(70, config.grid.nbins, seed=1))


def test_threads_change_no_bit_and_batches_are_independent():
    model, config, _ = load_model(default_model_path())
    net = from_keras(model, config)
    X = random_inputs(150, config.grid.nbins, seed=2)
    one = net.predict(X, threads=1, batch_size=32)
    np.testing.assert_array_equal(net.predict(X, threads=2, batch_size=32), one)
    np.testing.assert_array_equal(net.predict(X, threads=3, batch_size=32), one)
    np.testing.assert_allclose(net.predict(X, batch_size=7), one, atol=2e-5)
    assert net.predict(X[:0]).shape == (0, len(config.lines), config.nboxes, 2)
    with pytest.raises(ValueError, match=r'input shape \(3, 799, 2\) does not match'):
        net.predict(X[:3, :-1])


def test_other_architectures_and_layers_are_refused():
    import keras
    for name in ('lbgnet-direct.yaml', 'lbgnet-hybrid.yaml'):
        config = load_config(name)
        with pytest.raises(ValueError, match='runs line finders only'):
            from_keras(build_model(config), config)
    config = load_config('lbgnet-default.yaml')
    model = build_model(config)
    x = keras.layers.GaussianNoise(0.1, name='noise')(model.output)
    with pytest.raises(ValueError, match='does not support layers GaussianNoise'):
        from_keras(keras.Model(model.input, x), config)


def test_other_activations_are_refused():
    """The numpy pass applies a ReLU after every Activation layer, no activation in the
    convolutions and dense layers, a sigmoid in the box heads and the configuration's
    offset margin: a Keras model built otherwise (another activation, or a margin edited
    after building) was converted anyway and gave other outputs than Keras."""
    import keras
    config = load_config('lbgnet-default.yaml')
    edits = {'activation_1': ('activation', 'tanh'), 'conv_2': ('activation', 'relu'),
             'fc_common': ('activation', 'elu'), 'fc_box_LYA': ('activation', 'linear'),
             'fc_offset_CIV': ('activation', 'sigmoid')}
    for name, (attr, value) in edits.items():
        model = build_model(config)
        setattr(model.get_layer(name), attr, keras.activations.get(value))
        with pytest.raises(ValueError, match=f'does not support {name} with activation {value}'):
            from_keras(model, config)
    model = build_model(config)
    model.get_layer('offset_activation').margin = 0.5
    with pytest.raises(ValueError, match='offset margin 0.5'):
        from_keras(model, config)
    from_keras(build_model(config), config)                   # as built: converted


def test_load_network_engines():
    """numpy is the default engine of a line finder, its weights read from the file without
    Keras (the same tensors Keras loads); keras keeps the compiled pass; both give the same
    outputs to float32 rounding."""
    from lbgnet.io.modelfile import read_weight_arrays
    assert ENGINES[0] == 'numpy'
    path = default_model_path()
    model, config, _ = load_model(path)
    arrays = read_weight_arrays(path)
    keras_weights = {layer.name: layer.get_weights() for layer in model.layers if layer.weights}
    assert sorted(arrays) == sorted(keras_weights)
    for name, tensors in keras_weights.items():
        assert len(arrays[name]) == len(tensors)
        for got, want in zip(arrays[name], tensors):
            np.testing.assert_array_equal(got, want)
    net = load_network(path, threads=2)
    assert net.engine == 'numpy' and net.threads == 2 and net.model is None
    keras_net = load_network(path, engine='keras')
    assert keras_net.engine == 'keras' and keras_net.numpy_pass is None
    X = random_inputs(40, net.config.grid.nbins, seed=4)
    for got, want in zip(net.predict(X), keras_net.predict(X)):
        np.testing.assert_allclose(got, want, atol=2e-5)
    with pytest.raises(ValueError, match="unknown forward-pass engine 'torch'"):
        load_network(path, engine='torch')
    # a wrong input shape is the same one-line error under both engines (Keras raised
    # its own traceback from inside the compiled function)
    for engine in (net, keras_net):
        with pytest.raises(ValueError, match=r'input shape \(3, 799, 2\) does not match'):
            engine.predict(X[:3, :-1])
    np.testing.assert_allclose(keras_net.predict(X.astype(np.float64).tolist())[0],
                               keras_net.predict(X)[0], atol=1e-6)


def test_weights_that_do_not_fit_the_configuration_are_refused():
    from lbgnet.npforward import check_weights, weight_shapes
    config = load_config('lbgnet-default.yaml')
    shapes = weight_shapes(config)
    model = build_model(config)
    assert shapes == {layer.name: [tuple(w.shape) for w in layer.weights]
                      for layer in model.layers if layer.weights}
    weights = {name: [np.zeros(s, np.float32) for s in sh] for name, sh in shapes.items()}
    check_weights(weights, config)
    wrong = dict(weights, conv_2=[np.zeros((7, 32, 40)), np.zeros(40)])
    with pytest.raises(ValueError, match=r'the weights of conv_2 have shapes \[\(7, 32, 40\), '
                                         r'\(40,\)\], the configuration'):
        check_weights(wrong, config)
    fewer = {k: v for k, v in weights.items() if k != 'fc_box_LYA'}
    with pytest.raises(ValueError, match='missing: fc_box_LYA; not in the network: none'):
        check_weights(fewer, config)
    with pytest.raises(ValueError, match='missing: none; not in the network: conv_9'):
        check_weights(dict(weights, conv_9=[np.zeros(3)]), config)


def test_model_file_that_numpy_cannot_read(tmp_path):
    """A weights file not laid out as Keras 3 writes it, or not the described network, is
    one clear error naming the file (before any spectrum), as under Keras."""
    import h5py
    import json
    import shutil
    from lbgnet.io.modelfile import model_paths, sha256sum
    weights, card = model_paths(default_model_path())
    for case in ('layout', 'network'):
        w, j = str(tmp_path / f'{case}.weights.h5'), str(tmp_path / f'{case}.json')
        if case == 'layout':
            with h5py.File(w, 'w') as fx:
                fx['conv_1/kernel'] = np.zeros((10, 2, 32))
        else:
            shutil.copy(weights, w)
            with h5py.File(w, 'a') as fx:
                group = [g for g in fx['layers'].values() if g['vars'].attrs['name'] == 'conv_2'][0]
                group['vars'].attrs['name'] = 'conv_7'
        description = json.load(open(card))
        description['weights_sha256'] = sha256sum(w)
        json.dump(description, open(j, 'w'))
        with pytest.raises(InputFileError) as err:
            load_network(j)
        text = str(err.value)
        assert text.startswith(w) and '\n' not in text
        assert ('not a Keras 3 weights file' in text if case == 'layout'
                else 'missing: conv_2; not in the network: conv_7' in text), text


def test_description_errors_name_the_json_under_both_engines(tmp_path):
    """A description naming no buildable network (an unknown architecture, a missing model
    key, layers that leave no bins) is the JSON's fault: the numpy engine blamed the
    weights file (or raised a bare ConfigError); now both engines say the same."""
    import json
    import shutil
    from lbgnet.io.modelfile import model_paths
    weights, card = model_paths(default_model_path())
    edits = {'architecture': lambda m: m.update(architecture='bogus'),
             'missing': lambda m: m.pop('dense_units'),
             'nobins': lambda m: m.update(strides=50, padding='valid')}
    for case, edit in edits.items():
        w, j = str(tmp_path / f'{case}.weights.h5'), str(tmp_path / f'{case}.json')
        shutil.copy(weights, w)
        description = json.load(open(card))
        edit(description['config']['model'])
        json.dump(description, open(j, 'w'))
        messages = []
        for engine in ENGINES:
            with pytest.raises(InputFileError) as err:
                load_network(j, engine=engine)
            messages.append(str(err.value))
        assert messages[0] == messages[1], messages
        assert messages[0].startswith(f'{j}: cannot build the described network ('), messages


def test_numpy_engine_imports_no_keras(tmp_path):
    """The afterburner with the numpy engine runs without Keras and TensorFlow: a run in
    which importing either fails writes its catalogue."""
    import subprocess
    import sys
    from lbg_testdata import write_test_coadd, write_test_redrock
    coadd = str(tmp_path / 'coadd-main-dark-7.fits')
    tid, _ = write_test_coadd(coadd, 6)
    write_test_redrock(str(tmp_path / 'redrock-main-dark-7.fits'), tid)
    driver = tmp_path / 'driver.py'
    driver.write_text(
        'import sys\n'
        'sys.modules["keras"] = None\n'            # import keras raises ImportError
        'sys.modules["tensorflow"] = None\n'
        'from lbgnet.scripts.lbg_afterburner import main\n'
        'sys.exit(main(sys.argv[1:]))\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(os.path.dirname(__file__), '..', 'py'), os.path.dirname(__file__)]))
    proc = subprocess.run([sys.executable, str(driver), '--coadd', coadd, '--no-refine'],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / 'lbg_cnn-main-dark-7.fits').exists()
    proc = subprocess.run([sys.executable, str(driver), '--coadd', coadd, '--no-refine',
                           '--overwrite', '--engine', 'keras'],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and 'keras' in (proc.stdout + proc.stderr).lower()


def _zero_line_finder(config):
    """The numpy pass of `config`'s line finder with all weights 0 (unit variances)."""
    from lbgnet.npforward import from_weights, weight_shapes
    weights = {name: [np.ones(s, np.float32) if name.startswith('batch_normalization') else
                      np.zeros(s, np.float32) for s in shapes]
               for name, shapes in weight_shapes(config).items()}
    return from_weights(weights, config)


def test_predict_refuses_other_channel_counts_and_clamps_the_batch_size():
    """An input with three channels per bin is not the network's (nspec, nbins, 2): refused
    (the pass would read two of them and say nothing); a batch size of 0 means 1."""
    config = load_config('lbgnet-default.yaml')
    net = _zero_line_finder(config)
    X = random_inputs(5, config.grid.nbins, seed=4)
    nbins = config.grid.nbins
    with pytest.raises(ValueError, match=rf'input shape \(5, {nbins}, 3\) does not match'):
        net.predict(np.concatenate([X, X[..., :1]], axis=2))
    np.testing.assert_array_equal(net.predict(X, batch_size=0), net.predict(X, batch_size=1))
    # all weights 0: every box confidence is sigmoid(0) and every offset the mid-box 0.5
    out = net.predict(X, batch_size=0)
    np.testing.assert_allclose(out[..., 0], 0.5)
    np.testing.assert_allclose(out[..., 1], 0.5, atol=1e-7)


def test_other_batch_normalisations_and_dilated_convolutions_are_refused():
    """The numpy pass folds a centred and scaled batch normalisation and runs undilated
    convolutions: a Keras model with a batch normalisation without scale, or a dilated
    convolution, is refused rather than converted into other outputs."""
    config = load_config('lbgnet-default.yaml')
    model = build_model(config)
    model.get_layer('batch_normalization_2').scale = False
    with pytest.raises(ValueError, match='batch normalisation batch_normalization_2 with epsilon'):
        from_keras(model, config)
    model = build_model(config)
    model.get_layer('conv_3').dilation_rate = (2,)
    with pytest.raises(ValueError, match='does not support conv_3 as configured'):
        from_keras(model, config)
