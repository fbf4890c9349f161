"""Model construction from configurations, custom-layer serialisation, prediction, model files."""
import dataclasses
import json
import os

import numpy as np
import pytest

import keras

from lbgnet.config import ConfigError, load_config
from lbgnet.io import InputFileError
from lbgnet.io.modelfile import load_model, model_paths, save_model, update_model_metadata
from lbgnet.model import (InputChannels, RescaledSigmoid, build_model, predict_boxes,
                          quasarnet_layer_names)

from conftest import reference_file

SMALL = dict(channels=['flux', 'snr'], conv_layers=2, filters=[8, 8], kernel_size=5, strides=2,
             padding='same', dropout=0.1, dense_units=16, offset_margin=0.1, snr_softening=5.0)


def small_config(config, **model):
    extra = dict(config.extra)
    extra['model'] = dict(SMALL, **model)
    extra['name'] = 'small'
    return dataclasses.replace(config, extra=extra, source='small-test-config')


def _inputs(config, nspec=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (nspec, config.grid.nbins, 2)).astype(np.float32)


@pytest.mark.parametrize('name', ['lbgnet-initial.yaml', 'lbgnet-snr.yaml', 'lbgnet-default.yaml'])
def test_shipped_configs_build(name):
    config = load_config(name)
    model = build_model(config)
    nlines = len(config.lines)
    assert model.input_shape == (None, config.grid.nbins, 2)
    assert model.output_shape == (None, nlines, config.nboxes, 2)
    names = {layer.name for layer in model.layers}
    nconv = config.extra['model']['conv_layers']
    for i in range(1, nconv + 1):
        assert f'conv_{i}' in names and f'batch_normalization_{i}' in names
    assert 'fc_common' in names
    for line in config.lines.names:
        assert f'fc_box_{line}' in names and f'fc_offset_{line}' in names
    filters = config.extra['model']['filters']
    last = filters if isinstance(filters, int) else filters[-1]
    assert model.get_layer(f'conv_{nconv}').kernel.shape[-1] == last
    nchan = len(config.extra['model']['channels'])
    assert model.get_layer('conv_1').kernel.shape[1] == nchan


def test_flux_only_ignores_snr_and_offset_range(config):
    cfg = small_config(config, channels=['flux'], offset_margin=0.2)
    model = build_model(cfg)
    X = _inputs(cfg)
    X2 = X.copy()
    X2[..., 1] = 1e3
    conf, off = predict_boxes(model, X)
    conf2, off2 = predict_boxes(model, X2)
    np.testing.assert_allclose(conf, conf2, atol=1e-6)
    assert conf.shape == (5, len(cfg.lines), cfg.nboxes)
    assert np.all((conf > 0) & (conf < 1))
    assert np.all((off > -0.2) & (off < 1.2))
    # with the snr channel the output does depend on it
    model2 = build_model(small_config(config))
    assert not np.allclose(predict_boxes(model2, X)[0], predict_boxes(model2, X2)[0])


def test_custom_layers_get_config_round_trip():
    layer = RescaledSigmoid(0.3, name='r')
    clone = RescaledSigmoid.from_config(layer.get_config())
    x = np.linspace(-30, 30, 7).astype(np.float32)[None]
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(layer(x)))
    np.testing.assert_allclose(np.asarray(layer(x))[0, [0, -1]], [-0.3, 1.3], atol=1e-5)
    sel = InputChannels([1, 0], snr_index=1, snr_softening=2.0)
    clone = InputChannels.from_config(sel.get_config())
    X = np.random.default_rng(0).normal(0, 5, (2, 4, 2)).astype(np.float32)
    out = np.asarray(clone(X))
    np.testing.assert_allclose(out[..., 0], np.arcsinh(X[..., 1] / 2.0), rtol=1e-5)
    np.testing.assert_allclose(out[..., 1], X[..., 0])


def test_model_config_round_trip(config):
    cfg = small_config(config)
    model = build_model(cfg)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    X = _inputs(cfg)
    np.testing.assert_allclose(predict_boxes(clone, X)[0], predict_boxes(model, X)[0], atol=1e-6)
    assert [l.name for l in clone.layers] == [l.name for l in model.layers]


def test_predict_boxes_checks_and_batches(config):
    cfg = small_config(config)
    model = build_model(cfg)
    X = _inputs(cfg, nspec=7)
    conf, off = predict_boxes(model, X, batch_size=3)
    ref = np.asarray(model(X, training=False))
    np.testing.assert_allclose(conf, ref[..., 0], atol=1e-6)
    np.testing.assert_allclose(off, ref[..., 1], atol=1e-6)
    empty = predict_boxes(model, X[:0])
    assert empty[0].shape == (0, len(cfg.lines), cfg.nboxes)
    with pytest.raises(ValueError, match='input shape'):
        predict_boxes(model, X[:, :100])


def test_invalid_model_sections(config):
    with pytest.raises(ConfigError, match='2 values for 3'):
        build_model(small_config(config, conv_layers=3))
    with pytest.raises(ConfigError, match='channels'):
        build_model(small_config(config, channels=['ivar']))
    for channels in (None, 5):                     # were raw TypeErrors
        with pytest.raises(ConfigError, match='model.channels must be taken from'):
            build_model(small_config(config, channels=channels))
    # too deep for the grid: one line naming the layer (Keras's ValueError escaped before)
    with pytest.raises(ConfigError, match='conv_7 leaves no bins'):
        build_model(small_config(config, conv_layers=8, filters=8, kernel_size=10, strides=2,
                                 padding='valid'))
    extra = dict(config.extra)
    extra.pop('model', None)
    with pytest.raises(ConfigError, match='no "model" section'):
        build_model(dataclasses.replace(config, extra=extra))


def test_quasarnet_batch_norms_mapped_by_order():
    """tf.keras numbers the batch normalisations from none, standalone Keras 2 from 1."""
    zero = ['conv_1', 'batch_normalization', 'conv_2', 'batch_normalization_1', 'fc_common',
            'batch_normalization_2', 'fc_box_LYA']
    one = ['conv_1', 'batch_normalization_1', 'conv_2', 'batch_normalization_2', 'fc_common',
           'batch_normalization_3', 'batch_normalization_10_x']
    assert quasarnet_layer_names(2, zero) == quasarnet_layer_names(2)
    m = quasarnet_layer_names(2, one)
    assert (m['batch_normalization_1'], m['batch_normalization_2'], m['batch_normalization_fc']) == (
        'batch_normalization_1', 'batch_normalization_2', 'batch_normalization_3')
    assert 'batch_normalization_fc' not in quasarnet_layer_names(2, one[:4])   # no dense BN
    # another layout: a batch norm's layer is unknown, so none is mapped (they were mapped
    # by position: conv_0.. shifted every statistic by a layer; Conv_1.. gave the dense
    # layer's batch norm the first convolution's)
    shifted = ['conv_0', 'batch_normalization', 'conv_1', 'batch_normalization_1', 'conv_2',
               'batch_normalization_2', 'fc_common', 'batch_normalization_3']
    upper = ['Conv_1', 'batch_normalization', 'Conv_2', 'batch_normalization_1', 'fc_common',
             'batch_normalization_2']
    for layers, nconv in ((shifted, 2), (upper, 0)):
        m = quasarnet_layer_names(nconv, layers)
        assert not [k for k in m if k.startswith('batch_normalization')], m


def test_quasarnet_names_match_reference_file(config):
    """Our conv/BN/dense layers map onto the layer names and shapes of a QuasarNET .h5."""
    import h5py
    path = reference_file('quasarnet-weights', 'quasarnet-format-small-weights.h5')
    cfg = small_config(config, channels=['flux'], conv_layers=4, filters=25, kernel_size=10,
                       dense_units=25)
    model = build_model(cfg)
    mapping = quasarnet_layer_names(4)
    with h5py.File(path, 'r') as fx:
        group = fx['model_weights']
        for ours, theirs in mapping.items():
            assert theirs in group, theirs
            shapes = sorted(tuple(d.shape) for d in _datasets(group[theirs]))
            mine = sorted(tuple(w.shape) for w in model.get_layer(ours).weights)
            if ours == 'fc_common':   # flatten size differs (800 bins here, not QuasarNET's grid)
                assert shapes[0] == mine[0]
            else:
                assert shapes == mine, ours


def _datasets(group):
    import h5py
    out = []
    group.visititems(lambda n, o: out.append(o) if isinstance(o, h5py.Dataset) else None)
    return out


def test_model_file_round_trip(tmp_path, config):
    cfg = small_config(config)
    model = build_model(cfg)
    X = _inputs(cfg)
    path = str(tmp_path / 'm.weights.h5')
    wpath, jpath = save_model(path, model, cfg, metadata={'seed': np.int64(3), 'note': 'x'})
    assert (wpath, jpath) == model_paths(path) and os.path.exists(jpath)
    assert sorted(os.listdir(tmp_path)) == ['m.json', 'm.weights.h5']
    loaded, cfg2, meta = load_model(jpath)
    assert meta == {'seed': 3, 'note': 'x'}
    assert cfg2.grid == cfg.grid and cfg2.lines == cfg.lines and cfg2.nboxes == cfg.nboxes
    assert cfg2.extra['model'] == cfg.extra['model']
    np.testing.assert_allclose(predict_boxes(loaded, X)[0], predict_boxes(model, X)[0], atol=1e-6)
    desc = json.load(open(jpath))
    assert desc['normalisation']['channels'] == ['flux', 'snr'] and not str(desc).count('pickle')


def test_model_file_rewritten_with_sorted_keys_gives_each_line_its_head(tmp_path, config):
    """Keras stores the line heads by position, built in config.lines order: a JSON rewritten
    with sorted keys (jq -S) gave every line head another line's weights, silently."""
    cfg = small_config(config)
    model = build_model(cfg)
    X = _inputs(cfg)
    jpath = save_model(str(tmp_path / 'm.weights.h5'), model, cfg)[1]
    desc = json.load(open(jpath))
    assert desc['line_order'] == list(cfg.lines.names) != sorted(cfg.lines.names)
    json.dump(desc, open(jpath, 'w'), sort_keys=True)
    loaded, cfg2, _ = load_model(jpath)
    assert cfg2.lines.names == cfg.lines.names
    np.testing.assert_array_equal(predict_boxes(loaded, X)[0], predict_boxes(model, X)[0])
    for bad in (desc['line_order'][:-1], desc['line_order'] + ['LYA'], 'LYA'):
        json.dump(dict(desc, line_order=bad), open(jpath, 'w'))
        with pytest.raises(InputFileError, match='line_order must name each line'):
            load_model(jpath)
    # an older card (no line_order) rewritten with sorted keys: the network is built in the
    # sorted order, and each head still gets its own line's weights (by name, as the numpy
    # engine reads them; Keras alone loads by position)
    older = {k: v for k, v in desc.items() if k != 'line_order'}
    json.dump(older, open(jpath, 'w'), sort_keys=True)
    loaded, cfg3, _ = load_model(jpath)
    assert list(cfg3.lines.names) == sorted(cfg.lines.names)
    order = [list(cfg.lines.names).index(n) for n in cfg3.lines.names]
    np.testing.assert_allclose(predict_boxes(loaded, X)[0], predict_boxes(model, X)[0][:, order],
                               atol=1e-6)
    # a line renamed in the description: no weights of that name, one clear error
    renamed = json.loads(json.dumps(older))
    renamed['config']['lines'] = {('XXX' if n == 'LYA' else n): w
                                  for n, w in renamed['config']['lines'].items()}
    json.dump(renamed, open(jpath, 'w'))
    with pytest.raises(InputFileError, match='no weights named fc_(box|offset)_XXX'):
        load_model(jpath)


def test_model_file_errors(tmp_path, config):
    cfg = small_config(config)
    path = str(tmp_path / 'm.weights.h5')
    save_model(path, build_model(cfg), cfg)
    jpath = str(tmp_path / 'm.json')
    with pytest.raises(InputFileError, match='no such file'):
        load_model(str(tmp_path / 'nothere.weights.h5'))
    with pytest.raises(InputFileError, match='must end in'):
        load_model(str(tmp_path / 'm.h5'))
    # corrupted weights: checksum mismatch
    with open(path, 'r+b') as fx:
        fx.seek(2000)
        fx.write(b'\x00garbage\x00')
    with pytest.raises(InputFileError, match='SHA-256'):
        load_model(path)
    # weights of another architecture with a consistent checksum
    other = small_config(config, filters=[4, 4])
    save_model(str(tmp_path / 'o.weights.h5'), build_model(other), other)
    os.replace(tmp_path / 'o.weights.h5', path)
    desc = json.load(open(jpath))
    desc['weights_sha256'] = json.load(open(tmp_path / 'o.json'))['weights_sha256']
    json.dump(desc, open(jpath, 'w'))
    with pytest.raises(InputFileError, match='do not match'):
        load_model(path)
    # not JSON, wrong format, future version, broken config
    open(jpath, 'w').write('{not json')
    with pytest.raises(InputFileError, match='JSON'):
        load_model(jpath)
    for change, match in (({'format': 'other'}, 'not an lbgnet model'),
                          ({'format_version': 99}, 'not supported'),
                          ({'format_version': True}, 'not supported'),
                          ({'format_version': 0}, 'not supported'),
                          ({'metadata': [1, 2]}, 'metadata must be a JSON object'),
                          ({'metadata': {'z_range': 3.5}}, r'metadata.z_range .* not 3.5'),
                          ({'metadata': {'z_range': '34'}}, 'metadata.z_range'),
                          ({'metadata': {'z_range': [4.0, 2.0]}}, 'metadata.z_range'),
                          ({'metadata': {'z_range': [2.0, None]}}, 'metadata.z_range'),
                          ({'config': {'grid': {}}}, 'invalid configuration')):
        json.dump(dict(desc, **change), open(jpath, 'w'))
        with pytest.raises(InputFileError, match=match):
            load_model(jpath)


def test_save_compiled_model_stores_weights_only(tmp_path, config):
    """A compiled (trained) model is saved without optimizer state, and must match its config."""
    from lbgnet.train import compile_model
    cfg = small_config(config)
    model = compile_model(build_model(cfg), cfg)
    X = _inputs(cfg, nspec=8)
    y = np.zeros(model.output_shape[:0] + (8,) + model.output_shape[1:], dtype=np.float32)
    model.fit(X, y, epochs=1, verbose=0)
    wpath, _ = save_model(str(tmp_path / 'c.weights.h5'), model, cfg)
    loaded = load_model(wpath)[0]
    np.testing.assert_allclose(predict_boxes(loaded, X)[0], predict_boxes(model, X)[0], atol=1e-6)
    import h5py
    model.save_weights(str(tmp_path / 'raw.weights.h5'))
    with h5py.File(tmp_path / 'raw.weights.h5') as raw, h5py.File(wpath) as ours:
        assert 'optimizer' in raw and 'optimizer' not in ours
    assert os.path.getsize(wpath) < 0.6 * os.path.getsize(tmp_path / 'raw.weights.h5')
    with pytest.raises(ValueError, match='does not match'):
        save_model(str(tmp_path / 'd.weights.h5'), model, small_config(config, dense_units=4))


def test_shipped_model_reproduces_golden_predictions():
    """The pretrained model in the package loads and gives the stored outputs on 8 fixed spectra.

    Tolerance 1e-4: oneDNN may reorder float32 sums differently on other CPUs.  After
    retraining, regenerate the fixture with tests/data/make_golden.py.
    """
    from lbgnet.io.modelfile import default_model_path, read_model_description
    from lbgnet.postprocess import postprocess
    golden = np.load(os.path.join(os.path.dirname(__file__), 'data', 'golden_default_model.npz'))
    path = default_model_path()
    assert os.path.exists(path), f'no shipped model at {path}'
    assert read_model_description(path)[0]['weights_sha256'] == str(golden['weights_sha256']), \
        'shipped weights changed: regenerate tests/data/golden_default_model.npz'
    model, cfg, meta = load_model(path)
    conf, offset = predict_boxes(model, golden['X'])
    np.testing.assert_allclose(conf, golden['conf'], atol=1e-4)
    np.testing.assert_allclose(offset, golden['offset'], atol=1e-4)
    res = postprocess(conf, offset, cfg)
    np.testing.assert_allclose(res['C_LBG'], golden['C_LBG'], atol=1e-4)
    np.testing.assert_allclose(res['Z_LBG'], golden['Z_LBG'], atol=1e-4)
    np.testing.assert_array_equal(res['IS_LBG'], golden['IS_LBG'])
    assert os.path.getsize(path) < 25e6 and 'thresholds' in meta


def test_update_model_metadata(tmp_path, config):
    cfg = small_config(config)
    wpath, jpath = save_model(str(tmp_path / 'u.weights.h5'), build_model(cfg), cfg,
                              metadata={'a': 1})
    update_model_metadata(wpath, {'heldout': {'lowz': 0.9}, 'a': 2})
    _, _, meta = load_model(wpath)                # checksum still valid
    assert meta == {'a': 2, 'heldout': {'lowz': 0.9}}
    # configuration updates merge into their section (the error calibration)
    before = load_model(wpath)[1].extra.get('postprocess') or {}
    update_model_metadata(wpath, {}, {'postprocess': {'zerr_scale': 4.3}})
    model, cfg2, meta = load_model(wpath)
    assert cfg2.extra['postprocess'] == dict(before, zerr_scale=4.3)
    assert meta['a'] == 2 and cfg2.selection == cfg.selection
    # what the weights mean cannot be changed, and an invalid value is refused unwritten
    text = open(jpath).read()
    with pytest.raises(ValueError, match="'grid' configuration"):
        update_model_metadata(wpath, {}, {'grid': {'wave_min': 4200.0}})
    with pytest.raises(ValueError, match='invalid'):
        update_model_metadata(wpath, {}, {'postprocess': {'zerr_scale': -1.0}})
    assert open(jpath).read() == text


def test_model_card_is_strict_json(tmp_path, config):
    """A NaN in the card (the history's score of a validation regime without LBGs, a
    diverged epoch's loss) is written as null: the card is strict JSON for any reader."""
    import json

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f'{name} in JSON'))
    cfg = small_config(config)
    history = {'val_score_midz': [np.float64(np.nan), 0.5], 'loss': [float('inf'), 1.0]}
    wpath, jpath = save_model(str(tmp_path / 's.weights.h5'), build_model(cfg), cfg,
                              metadata={'history': history})
    card = strict(open(jpath).read())['metadata']['history']
    assert card == {'val_score_midz': [None, 0.5], 'loss': [None, 1.0]}
    update_model_metadata(wpath, {'heldout': {'lowz': np.nan}})
    assert strict(open(jpath).read())['metadata']['heldout'] == {'lowz': None}
    assert load_model(wpath)[2]['history'] == card


def test_save_model_copies_weights_by_layer_name(tmp_path, config):
    # a network built with the lines in another order: each line keeps its own head
    cfg = small_config(config)
    names, waves = cfg.lines.names, cfg.lines.wave_array
    swapped = dataclasses.replace(cfg, lines=type(cfg.lines)(tuple(names[::-1]),
                                                             tuple(waves[::-1])))
    model = build_model(swapped)
    wpath, _ = save_model(str(tmp_path / 's.weights.h5'), model, cfg)
    loaded = load_model(wpath)[0]
    for name in names[:2]:
        layer = f'fc_box_{name}'
        for a, b in zip(loaded.get_layer(layer).get_weights(), model.get_layer(layer).get_weights()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('section, key, bad, match', [
    ('model', 'snr_softening', 0, r'model\.snr_softening must be a number > 0 .* not 0\)$'),
    ('model', 'snr_softening', -5, 'model.snr_softening must be a number > 0'),
    ('model', 'snr_softening', [5], 'model.snr_softening must be a number > 0'),
    ('model', None, [], 'section "model" must be a mapping'),
    ('postprocess', None, [], 'section "postprocess" must be a mapping'),
    ('lines', 'LYA', 0, 'the rest wavelength of LYA must be a finite number > 0'),
])
def test_model_file_with_a_bad_model_section_is_refused(section, key, bad, match, tmp_path,
                                                       config):
    """The model checks of training also hold when a model file is read: a softening of
    0 gave NaN confidences for every spectrum, a list an AttributeError traceback."""
    import json
    from lbgnet.io import InputFileError
    cfg = small_config(config)
    wpath, jpath = save_model(str(tmp_path / 'b.weights.h5'), build_model(cfg), cfg)
    description = json.loads(open(jpath).read())
    if key is None:
        description['config'][section] = bad
    else:
        description['config'][section][key] = bad
    with open(jpath, 'w') as fx:
        fx.write(json.dumps(description))
    with pytest.raises(InputFileError, match=match) as err:
        load_model(wpath)
    assert str(err.value).count('b.json') == 1


def test_model_file_of_a_freely_named_model_still_loads(tmp_path, config):
    """The name rules of a new training do not apply when reading: a model named before
    them ('lbgnet-default (retrained)') must stay usable by the afterburner."""
    import dataclasses
    cfg = small_config(config)
    cfg = dataclasses.replace(cfg, extra=dict(cfg.extra, name='small (retrained)'))
    wpath, _ = save_model(str(tmp_path / 'r.weights.h5'), build_model(cfg), cfg)
    assert load_model(wpath)[1].extra['name'] == 'small (retrained)'


def test_model_file_with_a_bad_error_calibration_is_refused(tmp_path, config):
    """A NaN or negative calibration in a model JSON fails when the model is read, with
    one line naming the file, instead of giving NaN errors per spectrum."""
    import json
    from lbgnet.io import InputFileError
    cfg = small_config(config)
    wpath, jpath = save_model(str(tmp_path / 'b.weights.h5'), build_model(cfg), cfg)
    for bad in (float('nan'), -1.0, 'abc'):
        description = json.loads(open(jpath).read())
        description['config'].setdefault('postprocess', {})['zerr_scale'] = bad
        with open(jpath, 'w') as fx:
            fx.write(json.dumps(description))        # NaN written as the JSON token NaN
        with pytest.raises(InputFileError, match=r'b\.json: invalid configuration .*zerr_scale'):
            load_model(wpath)


def test_save_model_interrupted_between_its_renames_keeps_the_old_model(tmp_path, config,
                                                                         monkeypatch):
    """Overwriting a model replaces weights then JSON: a termination between the two left
    new weights beside the old JSON (SHA-256 mismatch: neither model loadable)."""
    import lbgnet.io.modelfile as modelfile
    from lbgnet.io.atomic import Terminated
    cfg = small_config(config)
    path = str(tmp_path / 'm.weights.h5')
    keras.utils.set_random_seed(0)
    old = build_model(cfg)
    save_model(path, old, cfg)
    keras.utils.set_random_seed(1)
    new = build_model(cfg)
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise Terminated(143)
        return real(src, dst)
    monkeypatch.setattr(modelfile.os, 'replace', replace)
    with pytest.raises(Terminated):
        save_model(path, new, cfg)
    monkeypatch.setattr(modelfile.os, 'replace', real)
    assert sorted(os.listdir(tmp_path)) == ['m.json', 'm.weights.h5']
    loaded = load_model(path)[0]
    X = _inputs(cfg)
    np.testing.assert_array_equal(predict_boxes(loaded, X)[0], predict_boxes(old, X)[0])


def _save_killed_between_renames(monkeypatch, path, model, cfg):
    """save_model killed by SIGKILL after its first rename (the weights): no clean-up."""
    import lbgnet.io.modelfile as modelfile
    real, calls = os.replace, []

    class Killed(BaseException):
        pass

    def replace(src, dst):
        calls.append(dst)
        if len(calls) >= 2:                    # nor the restoring rename after it
            raise Killed()
        return real(src, dst)
    monkeypatch.setattr(modelfile.os, 'replace', replace)
    monkeypatch.setattr(modelfile.os, 'remove', lambda p: None)     # SIGKILL: no finally
    with pytest.raises(Killed):
        save_model(path, model, cfg)
    monkeypatch.undo()


def test_a_save_killed_between_its_renames_says_how_to_mend_the_pair(tmp_path, config,
                                                                      monkeypatch):
    """A SIGKILL between the two renames runs no clean-up: new weights stand beside the old
    description (SHA-256 mismatch), with the new description and the old weights left
    under temporary names.  The refusal names the leftover that mends the pair, and the
    rename it names gives a loadable model."""
    import shutil
    cfg = small_config(config)
    path = str(tmp_path / 'm.weights.h5')
    keras.utils.set_random_seed(0)
    save_model(path, build_model(cfg), cfg)
    keras.utils.set_random_seed(1)
    new = build_model(cfg)
    _save_killed_between_renames(monkeypatch, path, new, cfg)
    pid = os.getpid()
    assert sorted(os.listdir(tmp_path)) == [f'.m.old{pid}.weights.h5', f'.m.tmp{pid}.json',
                                            'm.json', 'm.weights.h5']
    backup = tmp_path / 'backup'
    shutil.copytree(tmp_path, backup)
    tmp_json = str(tmp_path / f'.m.tmp{pid}.json')
    with pytest.raises(InputFileError, match=r'm\.weights\.h5: SHA-256 does not match .*; an '
                       r'interrupted save left the description of these weights in '
                       rf'.*\.m\.tmp{pid}\.json: rename it to .*/m\.json$'):
        load_model(path)
    os.replace(tmp_json, str(tmp_path / 'm.json'))
    X = _inputs(cfg)
    np.testing.assert_array_equal(predict_boxes(load_model(path)[0], X)[0],
                                  predict_boxes(new, X)[0])
    # without the new description, the old weights kept beside it mend the old model
    os.remove(backup / f'.m.tmp{pid}.json')
    bpath = str(backup / 'm.weights.h5')
    with pytest.raises(InputFileError, match=r'the weights this description names in '
                       rf'.*\.m\.old{pid}\.weights\.h5: rename it to .*backup/m\.weights\.h5$'):
        load_model(bpath)
    os.replace(str(backup / f'.m.old{pid}.weights.h5'), bpath)
    load_model(bpath)
    # no leftover: the refusal as before, with nothing added
    os.remove(bpath)
    shutil.copy(str(tmp_path / 'm.weights.h5'), bpath)
    with pytest.raises(InputFileError, match=r'replaced weights file\)$'):
        load_model(bpath)


def test_a_first_save_killed_between_its_renames_says_how_to_mend_it(tmp_path, config,
                                                                     monkeypatch):
    """The first save of a name, killed after the weights' rename: no description at all,
    the new one under its temporary name.  The refusal ('no such file') names it, and the
    rename it names gives the saved model; a temporary of other weights is not named."""
    cfg = small_config(config)
    path = str(tmp_path / 'm.weights.h5')
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    _save_killed_between_renames(monkeypatch, path, model, cfg)
    pid = os.getpid()
    assert sorted(os.listdir(tmp_path)) == [f'.m.tmp{pid}.json', 'm.weights.h5']
    tmp_json = tmp_path / f'.m.tmp{pid}.json'
    other = json.loads(tmp_json.read_text())
    other['weights_sha256'] = '0' * 64
    (tmp_path / '.m.tmp1.json').write_text(json.dumps(other))     # another save's, sorted first
    (tmp_path / '.m.tmp2.json').write_text('{"a": ' * 100000)     # too deep for json: skipped
    with pytest.raises(InputFileError, match=r'm\.json: no such file \(the JSON description of '
                       r'the model\); an interrupted save left the description of these '
                       rf'weights in .*\.m\.tmp{pid}\.json: rename it to .*/m\.json$'):
        load_model(path)
    os.replace(str(tmp_json), str(tmp_path / 'm.json'))
    X = _inputs(cfg)
    np.testing.assert_array_equal(predict_boxes(load_model(path)[0], X)[0],
                                  predict_boxes(model, X)[0])


def test_model_card_z_range_must_be_two_increasing_finite_numbers(tmp_path):
    """metadata.z_range (the training LBG redshift range, which sets Z_OUT_OF_RANGE) is
    [zmin, zmax] with zmin < zmax strictly, finite numbers, not booleans: an empty range,
    an infinite end or a JSON true (read as 1) was a range no model was trained on."""
    from lbgnet.io.modelfile import default_model_path, read_model_description
    card = json.load(open(model_paths(default_model_path())[1]))
    path = str(tmp_path / 'm.json')
    for bad in ([3.0, 3.0], [2.0, float('inf')], [True, 4.0]):
        json.dump(dict(card, metadata=dict(card['metadata'], z_range=bad)), open(path, 'w'))
        with pytest.raises(InputFileError, match='metadata.z_range'):
            read_model_description(path)
    json.dump(dict(card, metadata=dict(card['metadata'], z_range=[2, 3.5])), open(path, 'w'))
    assert read_model_description(path)[0]['metadata']['z_range'] == [2, 3.5]


def test_weights_file_bytes_by_hand():
    """The room checked before writing weights: each variable's bytes (an optimizer's too
    once built) plus 4 KiB per variable and 1 MiB to spare."""
    from types import SimpleNamespace
    from lbgnet.io.modelfile import weights_file_bytes
    var = [SimpleNamespace(shape=(10, 4), dtype='float32'),
           SimpleNamespace(shape=(3,), dtype='float64')]
    model = SimpleNamespace(weights=var, optimizer=None)
    assert weights_file_bytes(model) == 160 + 24 + 2 * 4096 + 2 ** 20
    model.optimizer = SimpleNamespace(built=True,
                                      variables=[SimpleNamespace(shape=(5,), dtype='int64')])
    assert weights_file_bytes(model) == 160 + 24 + 40 + 3 * 4096 + 2 ** 20
    model.optimizer.built = False                     # not built yet: nothing saved of it
    assert weights_file_bytes(model) == 160 + 24 + 2 * 4096 + 2 ** 20



def test_update_model_metadata_merges_successive_section_updates(tmp_path):
    """Two updates of one configuration section (the ZERR_LBG calibration, then the
    ZERR_TPL one) keep each other's keys and the section's other values: a second update
    replacing the section would drop the first calibration."""
    import shutil
    from lbgnet.io.modelfile import default_model_path, read_model_description
    path = str(tmp_path / 'm.json')
    shutil.copy(model_paths(default_model_path())[1], path)
    before = read_model_description(path)[1].extra['postprocess']
    update_model_metadata(path, {}, {'postprocess': {'zerr_scale': 4.3}})
    update_model_metadata(path, {}, {'postprocess': {'zerr_tpl_scale': 1.5}})
    after = read_model_description(path)[1].extra['postprocess']
    assert after == dict(before, zerr_scale=4.3, zerr_tpl_scale=1.5)
    assert 'agree_tol' in after
