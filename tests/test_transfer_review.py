"""Transfer learning and model files: findings of a bad-input and hand-mutation review
(2026-12-07); each test failed on the code before, or on the mutant it names."""

import numpy as np
import pytest

from lbgnet.io import InputFileError
from lbgnet.transfer import read_pretrained

from test_transfer import QN_FILE, _keras2_file, model_config
from conftest import reference_file


def test_quasarnet_flatten_layout_uses_the_last_convolutions_output_filters(tmp_path):
    """T1 survivor: (bins, filters) came from the kernel's last axis; shape[1] (its input
    channels) passed every test because the reference file's conv_4 is 25 -> 25."""
    z = lambda *s: np.zeros(s, np.float32)
    layers = {'conv_1': {'conv_1/kernel:0': z(10, 1, 32), 'conv_1/bias:0': z(32)},
              'conv_2': {'conv_2/kernel:0': z(10, 32, 20), 'conv_2/bias:0': z(20)},
              'fc_common': {'fc_common/kernel:0': z(500, 25), 'fc_common/bias:0': z(25)}}
    assert read_pretrained(_keras2_file(tmp_path / 'q.h5', layers))[2] == (25, 20)


def test_heads_are_not_loaded_over_an_fc_common_that_was_not(tmp_path, config):
    """F1: an lbgnet file whose trunk fits nothing (other filters) still loaded every line
    head (same dense_units, nboxes, lines), so the 'no layer fits' guard did not fire and
    the run trained a random trunk under heads fitted to other features."""
    from lbgnet.io.modelfile import save_model
    from lbgnet.model import build_model
    from lbgnet.scripts.lbg_train import initial_model
    src_cfg = model_config(config, channels=['flux', 'snr'], filters=8, dense_units=16)
    wpath, _ = save_model(str(tmp_path / 'src.weights.h5'), build_model(src_cfg), src_cfg)
    dst_cfg = model_config(config, channels=['flux', 'snr'], filters=12, dense_units=16)
    with pytest.raises(InputFileError, match='no layer of .all. fits this network'):
        initial_model(dst_cfg, wpath, 'all')


def test_on_another_grid_the_trunk_loads_and_the_heads_do_not(tmp_path, config):
    """Another grid (other nbins): the convolutions load, fc_common does not (its input
    size differs), so neither do its batch normalisation nor the line heads that read it
    (all 2 x nlines heads were loaded over a random fc_common)."""
    import dataclasses
    from lbgnet.config import Grid
    from lbgnet.io.modelfile import save_model
    from lbgnet.model import build_model
    from lbgnet.transfer import init_from
    src_cfg = model_config(config, channels=['flux', 'snr'], filters=8, dense_units=16)
    wpath, _ = save_model(str(tmp_path / 'src.weights.h5'), build_model(src_cfg), src_cfg)
    dst_cfg = dataclasses.replace(src_cfg, grid=Grid(src_cfg.grid.wave_min,
                                                     src_cfg.grid.dwave / 2,
                                                     src_cfg.grid.nbins * 2))
    report = init_from(build_model(dst_cfg), wpath, 'all', config=dst_cfg)
    loaded = {name for name, _ in report.loaded}
    assert loaded and all(name.startswith(('conv_', 'batch_normalization_'))
                          and name != 'batch_normalization_fc' for name in loaded), loaded
    skipped = dict(report.skipped)
    assert skipped['batch_normalization_fc'].startswith('fc_common was not loaded')
    heads = [n for n in skipped if n.startswith(('fc_box_', 'fc_offset_'))]
    assert len(heads) == 2 * len(dst_cfg.lines.names)
    assert skipped[heads[0]].startswith('batch_normalization_fc, which feeds it, was not loaded')


def test_quasarnet_first_convolution_on_another_channel_is_warned(config, caplog):
    """F2: QuasarNET's one input channel is the normalised flux; its conv_1 was loaded onto
    an S/N-only network without a word (lbgnet files get input_differences' warning)."""
    import logging
    from lbgnet.model import build_model
    from lbgnet.transfer import init_from
    cfg = model_config(config, channels=['snr'])
    with caplog.at_level(logging.WARNING):
        report = init_from(build_model(cfg), reference_file(*QN_FILE), 'dense', config=cfg)
    assert 'conv_1' in {n for n, _ in report.loaded}
    assert 'model.channels' in caplog.text


def test_numpy_engine_names_an_unreadable_weights_file_once(tmp_path):
    """F3: 'x.weights.h5: x.weights.h5: not a readable HDF5 weights file' (numpy engine)."""
    import hashlib
    import json
    from lbgnet.io.modelfile import default_model_path, model_paths
    from lbgnet.network import load_network
    src = default_model_path()
    desc = json.load(open(model_paths(src)[1]))
    weights = tmp_path / 'bad.weights.h5'
    weights.write_bytes(b'not hdf5')
    desc['weights_sha256'] = hashlib.sha256(b'not hdf5').hexdigest()
    json.dump(desc, open(tmp_path / 'bad.json', 'w'))
    with pytest.raises(InputFileError) as err:
        load_network(str(weights), engine='numpy')
    assert str(err.value).count('bad.weights.h5') == 1, str(err.value)


def test_channel_differences_are_reported_for_the_first_convolution_alone(config):
    """T7 survivor: the channels check keyed to conv_2 instead of conv_1 passed (the test
    loads every layer)."""
    from lbgnet.transfer import input_differences
    a = model_config(config, channels=['flux', 'snr'])
    b = model_config(config, channels=['snr', 'flux'])
    assert any('model.channels' in d for d in input_differences(a, b, ['conv_1']))
    assert not any('model.channels' in d for d in input_differences(a, b, ['conv_2']))


def test_unfrozen_phase_keeps_a_time_limit_when_the_frozen_phase_spent_it(tmp_path, config,
                                                                         monkeypatch):
    """T6 survivor: without max(remaining, 1e-3) phase 2 got max_minutes 0 (no limit) or
    a negative one (a ConfigError at the end of a long run)."""
    import dataclasses
    from lbgnet.model import build_model
    from lbgnet.transfer import fit_in_phases
    from test_transfer import _phase, _scripted_phases
    cfg = model_config(config, filters=4, dense_units=4)
    cfg = dataclasses.replace(cfg, extra=dict(cfg.extra, training=dict(
        cfg.extra['training'], max_minutes=6.0)))
    calls = _scripted_phases(monkeypatch, [_phase(0.7, 2, 2, 400.0), _phase(0.6, 1, 1, 1.0)])
    fit_in_phases(build_model(cfg), None, None, cfg, str(tmp_path), 10, nfrozen=1,
                  unfreeze_epochs=1)
    assert 0 < calls['compile'][1][0]['max_minutes'] <= 1e-3


def test_heads_of_another_offset_margin_are_warned(config):
    """F4: fc_offset_* feed RescaledSigmoid(offset_margin): loaded under another margin the
    same logits give other offsets, without a warning."""
    from lbgnet.transfer import input_differences
    a = model_config(config, offset_margin=0.1)
    b = model_config(config, offset_margin=0.3)
    assert any('offset_margin' in d for d in input_differences(a, b, ['fc_offset_LYA']))
    assert not input_differences(a, b, ['conv_1'])


def test_a_moved_line_is_reported_only_when_its_heads_were_loaded(config):
    """T8 survivor: the rest-wavelength check ignored which layers were loaded."""
    import dataclasses
    from lbgnet.config import LineList
    from lbgnet.transfer import input_differences
    a = model_config(config)
    b = dataclasses.replace(a, lines=LineList(('LYA', 'SIIV1393', 'CIV'),
                                              (1215.67, 1393.76, 1550.5)))
    assert any('CIV' in d for d in input_differences(a, b, ['fc_box_CIV']))
    assert not input_differences(a, b, ['conv_1', 'fc_box_LYA'])


def test_valid_padding_down_to_one_bin_is_accepted(config):
    """S1 survivor: a 'valid' stack leaving exactly one bin is buildable."""
    from lbgnet.modelspec import model_options
    cfg = model_config(config, conv_layers=1, filters=4, kernel_size=config.grid.nbins,
                       strides=1, padding='valid')
    assert model_options(cfg)['kernel_size'] == [config.grid.nbins]
