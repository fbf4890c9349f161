"""Transfer learning: weights from QuasarNET-format .h5 and lbgnet model files, freezing,
two-phase training, and desi_lbg_train --init-from/--freeze/--unfreeze-epochs."""
import dataclasses
import json
import os

import h5py
import numpy as np
import pytest

from lbgnet.config import LineList
from lbgnet.io import InputFileError
from lbgnet.io.modelfile import save_model
from lbgnet.io.qnweights import count_conv_layers, read_keras2_weights
from lbgnet.model import build_model
from lbgnet.train import compile_model, set_seeds
from lbgnet.transfer import (fit_in_phases, freeze_blocks, init_from, read_pretrained,
                             selected_layers, trunk_blocks, unfreeze)

from conftest import reference_file

QN_FILE = ('quasarnet-weights', 'quasarnet-format-small-weights.h5')
#: conv_1, conv_4 and every batch norm but the 2nd match the 25-filter reference file;
#: conv_2 (32 filters), conv_3 (32 inputs) and fc_common (flatten size) do not.
QN_LIKE = dict(channels=['flux'], conv_layers=4, filters=[25, 32, 25, 25], kernel_size=10,
               strides=2, padding='same', dropout=0.0, dense_units=25, offset_margin=0.1,
               snr_softening=None)


def model_config(config, **model):
    """A small network; three lines only, to keep graph building fast."""
    lines = LineList(('LYA', 'SIIV1393', 'CIV'), (1215.67, 1393.76, 1549.48))
    extra = dict(config.extra, name='t', model=dict(QN_LIKE, **model),
                 loss={'gamma': 1.0, 'pos_weight': 'balanced'},
                 training={'epochs': 3, 'batch_size': 16, 'learning_rate': 1e-2,
                           'patience': 5, 'monitor': 'val_loss'})
    return dataclasses.replace(config, lines=lines, extra=extra, source='transfer-test-config')


class ListLogger:
    """Collects log calls (desiutil loggers write to the original stdout)."""

    def __init__(self):
        self.records = []

    def info(self, msg, *args):
        self.records.append(('INFO', msg % args))

    def warning(self, msg, *args):
        self.records.append(('WARNING', msg % args))


def test_quasarnet_file_compatible_loaded_incompatible_reported(config):
    path = reference_file(*QN_FILE)
    raw = read_keras2_weights(path)
    assert count_conv_layers(raw) == 4 and raw['conv_2'][0].shape == (10, 25, 25)
    set_seeds(0)
    model = build_model(model_config(config))
    before = {l.name: [w.copy() for w in l.get_weights()] for l in model.layers if l.weights}
    report = init_from(model, path, 'dense')
    loaded = {name for name, _ in report.loaded}
    assert loaded == {'conv_1', 'batch_normalization_1'}
    assert {n for n, _, _ in report.incompatible} == {'conv_2', 'batch_normalization_2',
                                                      'conv_3', 'fc_common'}
    # layers fed by a layer not loaded are skipped although their shapes match: batch
    # norms of layers not loaded, and conv_4 (with its batch norm), which reads conv_3
    # (it was loaded over a random conv_3 before 2026-12-07)
    skipped = dict(report.skipped)
    assert set(skipped) == {'batch_normalization_3', 'conv_4', 'batch_normalization_4',
                            'batch_normalization_fc'}
    assert skipped['conv_4'].startswith('batch_normalization_3, which feeds it, was not loaded')
    assert report.kind == 'quasarnet' and not report.missing
    # loaded layers hold the file's values
    np.testing.assert_array_equal(model.get_layer('conv_1').get_weights()[0], raw['conv_1'][0])
    for got, want in zip(model.get_layer('batch_normalization_1').get_weights(),
                         raw['batch_normalization']):
        np.testing.assert_array_equal(got, want)
    # other layers are untouched
    for name in ('conv_2', 'conv_3', 'conv_4', 'fc_common', 'batch_normalization_2',
                 'batch_normalization_3', 'batch_normalization_4', 'batch_normalization_fc'):
        for got, was in zip(model.get_layer(name).get_weights(), before[name]):
            np.testing.assert_array_equal(got, was)
    # one log line per layer, layers not loaded as warnings (with both shapes or the reason)
    logger = ListLogger()
    report.log(logger)
    warnings = [m for level, m in logger.records if level == 'WARNING']
    assert len(warnings) == 8 and len(logger.records) == 1 + 10
    line = next(m for m in warnings if m.strip().startswith('conv_2:'))
    assert '(10, 25, 25)' in line and '(10, 25, 32)' in line
    assert json.dumps(report.to_dict())


def test_fc_common_needs_the_files_flatten_layout(config):
    """A last conv of 20 filters over 25 bins flattens to 500 features like the file's
    25 filters over 20 bins: same kernel shape, other meaning, not loaded."""
    path = reference_file(*QN_FILE)
    cfg = model_config(config, filters=[25, 25, 25, 20], strides=[2, 2, 2, 4])
    model = build_model(cfg)
    report = init_from(model, path, 'dense')
    assert model.get_layer('flatten').input.shape[1:] == (25, 20)
    skipped = dict(report.skipped)
    assert 'fc_common' in skipped and '(20, 25)' in skipped['fc_common']
    assert 'batch_normalization_fc' in skipped
    assert 'fc_common' not in {n for n, _ in report.loaded}


def test_fc_common_of_a_file_whose_convolutions_are_not_found_is_not_loaded(tmp_path, config):
    """Convolutions named Conv_1 ... (not found): the file's flatten layout is unknown, so
    fc_common is left out (it was loaded unchecked over any layout of equal size)."""
    import shutil
    path = str(tmp_path / 'upper.h5')
    shutil.copy(reference_file(*QN_FILE), path)
    with h5py.File(path, 'r+') as fx:
        group = fx['model_weights']
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs['layer_names']]
        for name in [n for n in names if n.startswith('conv_')]:
            group.move(name, 'C' + name[1:])
        group.attrs['layer_names'] = np.array([('C' + n[1:] if n.startswith('conv_') else n)
                                               .encode() for n in names])
    assert read_pretrained(path)[2] is None
    model = build_model(model_config(config, filters=[25, 25, 25, 20], strides=[2, 2, 2, 4]))
    report = init_from(model, path, 'dense')
    assert 'unknown' in dict(report.skipped)['fc_common'] and not report.loaded


def test_init_layers_selection_and_lbgnet_model_file(tmp_path, config):
    src_cfg = model_config(config, channels=['flux', 'snr'], filters=8, dense_units=16)
    set_seeds(1)
    src = build_model(src_cfg)
    wpath, _ = save_model(str(tmp_path / 'src.weights.h5'), src, src_cfg)
    weights, kind, flatten = read_pretrained(wpath)
    assert kind == 'lbgnet' and 'fc_box_LYA' in weights
    dst = build_model(model_config(config, channels=['flux', 'snr'], filters=8, dense_units=12))
    assert selected_layers(dst, 'conv') == [f'{k}_{i}' for i in range(1, 5)
                                            for k in ('conv', 'batch_normalization')]
    fc_before = dst.get_layer('fc_common').get_weights()[0].copy()
    report = init_from(dst, wpath, 'conv')
    assert len(report.loaded) == 8 and not report.incompatible
    np.testing.assert_array_equal(dst.get_layer('conv_3').get_weights()[0],
                                  src.get_layer('conv_3').get_weights()[0])
    np.testing.assert_array_equal(dst.get_layer('fc_common').get_weights()[0], fc_before)
    report = init_from(dst, wpath, 'all')
    assert 'fc_common' in {n for n, _, _ in report.incompatible}          # 16 vs 12 units
    assert 'fc_box_LYA' in {n for n, _, _ in report.incompatible}         # its input width too


def test_init_from_an_input_of_another_meaning_is_warned(tmp_path, config, monkeypatch):
    """Swapped channels, another S/N softening or a moved grid load by shape alone: the
    weights were applied with no word that they mean something else."""
    import lbgnet.transfer as transfer
    from lbgnet.transfer import input_differences
    src_cfg = model_config(config, channels=['flux', 'snr'], filters=8, dense_units=16,
                           snr_softening=5.0)
    set_seeds(1)
    wpath, _ = save_model(str(tmp_path / 'src.weights.h5'), build_model(src_cfg), src_cfg)
    moved = dataclasses.replace(src_cfg, grid=dataclasses.replace(src_cfg.grid, wave_min=4400.0))
    swapped = model_config(config, channels=['snr', 'flux'], filters=8, dense_units=16,
                           snr_softening=None)
    assert input_differences(src_cfg, src_cfg) == []
    assert [d.split(':')[0] for d in input_differences(src_cfg, swapped)] == \
        ['model.channels', 'model.snr_softening']
    assert input_differences(src_cfg, swapped, loaded=['fc_common']) == []
    assert input_differences(src_cfg, moved)[0].startswith('grid (wave_min, dwave, nbins): '
                                                          '(3600.0, 8.0, 800) vs (4400.0')
    shifted = dataclasses.replace(src_cfg, lines=LineList(('LYA', 'SIIV1393', 'CIV'),
                                                          (1215.67, 1393.76, 1549.0)))
    other = dataclasses.replace(src_cfg, lines=LineList(('LYB', 'OVI'), (1025.72, 1033.82)))
    # other strides (same kernels, same flattened length): every later layer and fc_common
    # load, over inputs of another resolution, without a word before
    strided = model_config(config, channels=['flux', 'snr'], filters=8, dense_units=16,
                           snr_softening=5.0, strides=[1, 4, 2, 2])
    assert [d.split(':')[0] for d in input_differences(src_cfg, strided)] == ['model.strides']
    assert input_differences(src_cfg, strided, loaded=['conv_1']) == []
    for target, which, expected in ((src_cfg, 'all', []),
                                    (strided, 'all', ['model.strides']),
                                    (swapped, 'all', ['model.channels', 'model.snr_softening']),
                                    (moved, 'all', ['grid']),
                                    (shifted, 'all', ['line rest wavelengths: CIV 1549.48']),
                                    (other, 'all', [])):           # no head of the file loads
        logger = ListLogger()
        monkeypatch.setattr(transfer, 'get_logger', lambda: logger)
        report = init_from(build_model(target), wpath, which, target)
        assert len(report.loaded) >= 2                      # the weights do load
        warned = [m for level, m in logger.records if 'its input differs' in m]
        assert len(warned) == len(expected), (target.lines.names, which, warned)
        assert all(e in m for e, m in zip(expected, warned))


def test_bad_pretrained_files(tmp_path, config):
    with pytest.raises(InputFileError, match='no such file'):
        read_pretrained(str(tmp_path / 'none.h5'))
    (tmp_path / 'weights.txt').write_text('x\n')
    with pytest.raises(InputFileError, match='nor a Keras .h5'):
        read_pretrained(str(tmp_path / 'weights.txt'))
    # a Keras 3 weights file without its JSON is not a QuasarNET file: clear error
    cfg = model_config(config, filters=4, dense_units=4)
    build_model(cfg).save_weights(str(tmp_path / 'k3.weights.h5'))
    with pytest.raises(InputFileError, match='k3.weights.h5: Keras 3 weights without its model '
                                             r'card \(.json\)'):
        read_pretrained(str(tmp_path / 'k3.weights.h5'))
    # nor a checkpoint written without its card (before save_checkpoint wrote one)
    (tmp_path / 'killed').mkdir()
    build_model(cfg).save_weights(str(tmp_path / 'killed' / 'checkpoint.weights.h5'))
    with pytest.raises(InputFileError, match=r'checkpoint.weights.h5: a training checkpoint '
                                             r'without its model card \(.json\).*finished run'):
        init_from(build_model(cfg), str(tmp_path / 'killed' / 'checkpoint.weights.h5'))
    (tmp_path / 'text.h5').write_text('not hdf5')
    with pytest.raises(InputFileError, match='not a readable HDF5'):
        read_keras2_weights(str(tmp_path / 'text.h5'))


def _data(cfg, n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, cfg.grid.nbins, 2)).astype(np.float32)
    y = np.zeros((n, len(cfg.lines), cfg.nboxes, 2), np.float32)
    y[np.arange(n), rng.integers(0, len(cfg.lines), n), rng.integers(0, cfg.nboxes, n), 0] = 1
    return X, y


def test_frozen_layers_do_not_change_in_a_training_step(config):
    cfg = model_config(config, filters=8, dense_units=8)
    set_seeds(2)
    model = build_model(cfg)
    assert [b[0] for b in trunk_blocks(model)] == ['conv_1', 'conv_2', 'conv_3', 'conv_4',
                                                   'fc_common']
    frozen = freeze_blocks(model, 2)
    assert frozen == ['conv_1', 'batch_normalization_1', 'conv_2', 'batch_normalization_2']
    before = {l.name: [w.copy() for w in l.get_weights()] for l in model.layers if l.weights}
    compile_model(model, cfg)
    X, y = _data(cfg, 32, 0)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    trunk = [name for block in trunk_blocks(model) for name in block]
    for name in trunk:     # (an offset head of a line without a true box gets no gradient)
        layer = model.get_layer(name)
        same = all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), before[name]))
        assert same == (name in frozen), name               # BN moving stats included
        assert layer.trainable == (name not in frozen)
    unfreeze(model)
    assert all(layer.trainable for layer in model.layers)
    with pytest.raises(ValueError, match='trunk blocks'):
        freeze_blocks(model, 6)


def test_fit_in_phases_unfreezes_for_the_last_epochs(tmp_path, config):
    cfg = model_config(config, filters=8, dense_units=8)
    set_seeds(3)
    model = build_model(cfg)
    X, y = _data(cfg, 48, 1)
    Xv, yv = _data(cfg, 16, 2)
    conv1 = model.get_layer('conv_1').get_weights()[0].copy()
    history, info = fit_in_phases(model, (X, y), (Xv, yv), cfg, str(tmp_path), 3, nfrozen=1,
                                  unfreeze_epochs=1, verbose=0)
    assert history['phase'] == [1, 1, 2] and len(history['val_loss']) == 3
    assert info['frozen'] == ['conv_1', 'batch_normalization_1'] and len(info['phases']) == 2
    assert info['phases'][0]['epochs_run'] == 2 and info['phases'][1]['epochs_run'] == 1
    assert all(layer.trainable for layer in model.layers)
    assert info['best'] == pytest.approx(min(history['val_loss']))
    changed = not np.array_equal(model.get_layer('conv_1').get_weights()[0], conv1)
    assert changed == (info['kept_phase'] == 2)          # conv_1 moves only when unfrozen
    assert 'phase' in (tmp_path / 'history.csv').read_text().splitlines()[0]


def test_checkpoint_of_the_unfrozen_phase_counts_the_runs_epochs(tmp_path, config):
    """The checkpoint an unfrozen phase writes said the epoch counted from the phase's
    start, and carried the phase's own training.epochs: a run killed then left a model
    card naming the wrong epoch of the run."""
    from lbgnet.io.modelfile import load_model
    cfg = model_config(config, filters=8, dense_units=8)
    cfg = dataclasses.replace(cfg, extra=dict(cfg.extra, training=dict(
        cfg.extra['training'], learning_rate=1e-9)))        # the frozen phase learns nothing
    set_seeds(3)
    model = build_model(cfg)
    X, y = _data(cfg, 48, 1)
    Xv, yv = _data(cfg, 16, 2)
    history, info = fit_in_phases(model, (X, y), (Xv, yv), cfg, str(tmp_path), 3, nfrozen=1,
                                  unfreeze_epochs=1, unfreeze_lr_factor=1e7, verbose=0,
                                  checkpoint_card={'z_range': [2.5, 3.2]})
    assert info['kept_phase'] == 2 and info['best_epoch'] == 3
    _, kept_cfg, meta = load_model(str(tmp_path / 'checkpoint.weights.h5'))
    assert meta['checkpoint']['epoch'] == 3
    assert kept_cfg.extra['training']['epochs'] == 3             # the run's, not the phase's
    assert meta['z_range'] == [2.5, 3.2]


def test_a_diverged_unfrozen_phase_stays_on_record(tmp_path, config):
    """history.csv and the returned history lost the unfrozen phase's epochs when it
    diverged (the frozen phase is kept)."""
    import csv
    cfg = model_config(config, filters=8, dense_units=8)
    set_seeds(3)
    model = build_model(cfg)
    X, y = _data(cfg, 48, 1)
    Xv, yv = _data(cfg, 16, 2)
    history, info = fit_in_phases(model, (X, y), (Xv, yv), cfg, str(tmp_path), 3, nfrozen=1,
                                  unfreeze_epochs=1, unfreeze_lr_factor=1e30, verbose=0)
    assert history['phase'] == [1, 1, 2] and not np.isfinite(history['loss'][-1])
    assert info['kept_phase'] == 1 and info['epochs_run'] == 3
    assert info['fit_seconds'] == pytest.approx(info['phases'][0]['fit_seconds']
                                                 + info['phases'][1]['fit_seconds'])
    assert info['phases'][1]['fit_seconds'] > 0
    assert 'not finite' in info['phases'][1]['diverged'] and info['phases'][1]['epochs_run'] == 1
    rows = list(csv.DictReader((tmp_path / 'history.csv').open()))
    assert [r['phase'] for r in rows] == ['1', '1', '2']
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    # the checkpoint (a whole model) holds the kept frozen phase's best epoch
    from lbgnet.io.modelfile import load_model
    kept, _, meta = load_model(str(tmp_path / 'checkpoint.weights.h5'))
    assert meta['checkpoint']['epoch'] == info['best_epoch'] <= 2
    for ours, theirs in zip(kept.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


TRAIN_YAML = """
base: lbgnet-base.yaml
name: tinyqn
model: {channels: [flux], conv_layers: 2, filters: [25, 8], kernel_size: 10, strides: 4,
        padding: same, dropout: 0.0, dense_units: 16, offset_margin: 0.1, snr_softening: null}
loss: {gamma: 1.0, pos_weight: balanced}
training: {simulation: lbgnet-mock.yaml, ntrain: 128, nval: 60, epochs: 2, batch_size: 64,
           learning_rate: 1.0e-3, patience: 2, monitor: val_score, seed: 5}
target: {lines: {LYA: 1215.67, CIV: 1549.48}}     # a subset of the LBG lines: fast to build
"""


@pytest.mark.filterwarnings('error:Skipping variable loading for optimizer')
def test_train_script_from_quasarnet_weights(tmp_path, caplog):
    import logging
    from lbgnet.io.modelfile import load_model
    from lbgnet.scripts.lbg_train import main
    qn = reference_file(*QN_FILE)
    cfg_path = tmp_path / 'tinyqn.yaml'
    cfg_path.write_text(TRAIN_YAML)
    out = tmp_path / 'run'
    with caplog.at_level(logging.INFO):         # conv_2 does not fit: frozen with random weights
        assert main(['--config', str(cfg_path), '--outdir', str(out), '--verbose', '0',
                     '--init-from', qn, '--freeze', '2', '--unfreeze-epochs', '1',
                     '--workers', '1']) == 0
    assert 'did not load (random weights): conv_2' in caplog.text
    assert 'conv_1,' not in caplog.text.split('random weights')[-1]
    model, _, meta = load_model(str(out / 'tinyqn.weights.h5'))
    transfer = meta['training']['transfer']
    assert transfer['kind'] == 'quasarnet' and transfer['freeze'] == 2
    # the selection applied: QuasarNET heads never map onto ours (was recorded as 'all')
    assert transfer['init_layers'] == 'dense' and transfer['init_layers_requested'] == 'all'
    # the card says which starting point it was, wherever the run started from
    from lbgnet.io.catalog import file_sha256
    assert meta['training']['init_from'] == os.path.abspath(qn)
    assert meta['training']['init_from_sha256'] == file_sha256(qn)
    assert len(meta['training']['validation_sha256']) == len(meta['training']['validation_files'])
    assert 'conv_1' in transfer['loaded'] and 'conv_2' in [i['layer'] for i in transfer['incompatible']]
    assert meta['history']['phase'] == [1, 2]
    with h5py.File(qn, 'r') as fx:
        kernel = np.asarray(fx['model_weights/conv_1/conv_1/kernel:0'])
    if meta['training']['kept_phase'] == 1:               # frozen conv_1 kept the file's values
        np.testing.assert_array_equal(model.get_layer('conv_1').get_weights()[0], kernel)
    # bad requests fail cleanly with status 1
    assert main(['--config', str(cfg_path), '--outdir', str(out / 'x'), '--verbose', '0',
                 '--init-from', str(tmp_path / 'missing.h5')]) == 1
    assert not (out / 'x').exists()              # refused before the validation set is written
    assert main(['--config', str(cfg_path), '--outdir', str(out / 'y'), '--verbose', '0',
                 '--val-dir', str(out / 'validation'), '--freeze', '9']) == 1
    with pytest.raises(SystemExit):
        main(['--config', str(cfg_path), '--outdir', str(out), '--unfreeze-epochs', '1'])
    for factor in ('-1', '0', 'nan', 'inf'):       # -1 made Adam climb the loss
        with pytest.raises(SystemExit):
            main(['--config', str(cfg_path), '--outdir', str(out / 'w'), '--freeze', '1',
                  '--unfreeze-epochs', '1', f'--unfreeze-lr-factor={factor}'])
    # freezing without --init-from: the freeze settings are on the card too
    assert main(['--config', str(cfg_path), '--outdir', str(out / 'v'), '--verbose', '0',
                 '--val-dir', str(out / 'validation'), '--freeze', '1', '--unfreeze-epochs', '1',
                 '--unfreeze-lr-factor', '0.5', '--workers', '1']) == 0
    final = load_model(str(out / 'v' / 'tinyqn.weights.h5'))[2]
    transfer = final['training']['transfer']
    # the checkpoint's card says which LBG redshifts and simulator it was trained on, as
    # the finished model's (without it, the range came from a file of the package's etc/
    # named as the run's simulator, or from the grid)
    ckpt_meta = load_model(str(out / 'v' / 'checkpoint.weights.h5'))[2]
    assert ckpt_meta['z_range'] == final['z_range']
    assert ckpt_meta['training']['simulator_hash'] == final['training']['simulator_hash']
    assert transfer['freeze'] == 1 and transfer['unfreeze_lr_factor'] == 0.5
    assert transfer['init_layers'] is None
    # its checkpoint is a model: a run started from it in the same --outdir needs
    # --overwrite, and the card records the checkpoint as it was when loaded
    ckpt = out / 'v' / 'checkpoint.weights.h5'
    sha = file_sha256(str(ckpt))
    # the finished model is named first, if any (also its weights alone), then the checkpoint
    for left in ('model', 'weights', 'checkpoint'):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert main(['--config', str(cfg_path), '--outdir', str(out / 'v'), '--verbose',
                         '0', '--val-dir', str(out / 'validation'), '--init-from',
                         str(ckpt)]) == 1
        if left == 'model':
            assert 'tinyqn.json: a model of an earlier run; use --overwrite' in caplog.text
            os.rename(out / 'v' / 'tinyqn.json', out / 'v' / 'tinyqn.json.kept')
        elif left == 'weights':
            assert ('tinyqn.weights.h5: weights of an earlier run, without their .json '
                    'description; use --overwrite' in caplog.text)
            os.rename(out / 'v' / 'tinyqn.weights.h5', out / 'v' / 'tinyqn.weights.kept')
        else:
            assert ('checkpoint.json: the best checkpoint of an earlier run (--init-from it'
                    in caplog.text)
    # with --overwrite too: the run would write its first epoch over the checkpoint it
    # continues from (refused since 2026-12-05); from a copy of it, the card records the
    # copy as it was when loaded, and the starting weights' validation score
    common = ['--config', str(cfg_path), '--outdir', str(out / 'v'), '--verbose', '0',
              '--val-dir', str(out / 'validation'), '--epochs', '1', '--overwrite',
              '--workers', '1']
    assert main(common + ['--init-from', str(ckpt)]) == 1
    assert file_sha256(str(ckpt)) == sha
    import shutil
    (out / 'copy').mkdir()
    for name in ('checkpoint.weights.h5', 'checkpoint.json'):
        shutil.copy(out / 'v' / name, out / 'copy' / name)
    copy = out / 'copy' / 'checkpoint.weights.h5'
    assert main(common + ['--init-from', str(copy)]) == 0
    training = load_model(str(out / 'v' / 'tinyqn.weights.h5'))[2]['training']
    assert training['transfer']['kind'] == 'lbgnet' and training['init_from'] == str(copy)
    assert training['init_from_sha256'] == sha == file_sha256(str(copy))
    assert 0.0 <= training['init_val_score'] <= 1.0
    # an unfrozen phase as long as the whole training: refused before anything is written
    assert main(['--config', str(cfg_path), '--outdir', str(out / 'z'), '--verbose', '0',
                 '--init-from', qn, '--freeze', '2', '--epochs', '2',
                 '--unfreeze-epochs', '2']) == 1
    assert not (out / 'z').exists()


def test_init_from_a_file_that_fits_nothing_is_an_error():
    """A QuasarNET file whose layers fit none of ours must not silently train from scratch."""
    from conftest import reference_file
    from lbgnet.config import load_config
    from lbgnet.scripts.lbg_train import initial_model
    path = reference_file('quasarnet-weights', 'quasarnet-format-small-weights.h5')
    with pytest.raises(InputFileError, match='no layer of .conv. fits this network'):
        initial_model(load_config('lbgnet-default.yaml'), path, 'conv')


@pytest.mark.parametrize('offset', [275955, 204144, 45140])
def test_damaged_quasarnet_file_is_one_clear_error(tmp_path, offset):
    """64 bytes overwritten in an object header, a symbol table or the layer_names
    attribute: h5py raises KeyError / RuntimeError / UnicodeDecodeError while the layers
    are read (were tracebacks of desi_lbg_train --init-from)."""
    import shutil
    path = str(tmp_path / 'damaged.h5')
    shutil.copy(reference_file(*QN_FILE), path)
    with open(path, 'r+b') as fx:
        fx.seek(offset)
        fx.write(b'\xff' * 64)
    with pytest.raises(InputFileError, match='not a readable Keras 2 weights file') as err:
        read_pretrained(path)
    assert str(err.value).startswith(path) and '\n' not in str(err.value)


def test_init_from_paths_that_are_missing_or_directories(tmp_path):
    """A missing .json is "no such file" (was "not an lbgnet model (no .json beside it)"),
    a directory named .h5 one line (was HDF5's multi-line error)."""
    (tmp_path / 'dir.h5').mkdir()
    (tmp_path / 'adir').mkdir()       # any directory (was "not an lbgnet model ... nor .h5")
    for name, match in (('missing.json', 'no such file'), ('missing.h5', 'no such file'),
                        ('dir.h5', 'is a directory'), ('adir', 'is a directory')):
        path = str(tmp_path / name)
        with pytest.raises(InputFileError, match=match) as err:
            read_pretrained(path)
        assert str(err.value).startswith(path) and '\n' not in str(err.value)


def test_loss_figure_marks_the_unfrozen_phase(monkeypatch):
    """loss.png of a transfer run did not show where the unfrozen phase starts, and its
    epoch axis had fractional ticks (review 2026-12-05)."""
    from lbgnet import plots
    figures = []
    monkeypatch.setattr(plots, 'save_png', lambda fig, path: figures.append(fig) or path)
    history = {'loss': [1.0, 0.8, 0.7, 0.6, 0.5], 'val_loss': [1.1, 0.9, 0.8, 0.7, 0.65],
               'val_score': [0.2, 0.3, 0.35, 0.4, 0.42], 'phase': [1, 1, 1, 2, 2]}
    plots.plot_loss_curves(history, 'loss.png')
    ax = figures[0].axes[0]
    marks = [line for line in ax.lines if line.get_label() == 'unfrozen from here']
    assert len(marks) == 1 and tuple(marks[0].get_xdata()) == (3.5, 3.5)
    ticks = ax.xaxis.get_major_locator().tick_values(1, 5)
    assert np.allclose(ticks, np.round(ticks))
    plots.plot_loss_curves({k: v for k, v in history.items() if k != 'phase'}, 'loss.png')
    assert not [l for l in figures[1].axes[0].lines if l.get_label() == 'unfrozen from here']


def _keras2_file(path, layers, listed=None):
    """A Keras 2 weights-only file: `layers` maps a layer name to its {weight name: array}
    (empty for a layer without weights); `listed` the layer_names attribute (its keys)."""
    with h5py.File(path, 'w') as fx:
        fx.attrs['layer_names'] = [n.encode() for n in (listed or list(layers))]
        for name, tensors in layers.items():
            group = fx.create_group(name)
            group.attrs['weight_names'] = [w.encode() for w in tensors]
            for wname, value in tensors.items():
                group[wname] = value
    return str(path)


def test_keras2_layers_without_weights_are_left_out_and_a_listed_layer_must_exist(tmp_path):
    """Layers without weights (flatten, activations) are not in the result, and a file of
    such layers only has no layer with weights; a layer listed in layer_names without its
    group is a damaged file, not a layer to skip; a directory is named as such (not an
    HDF5 error)."""
    kernel, bias = np.ones((10, 1, 25), np.float32), np.zeros(25, np.float32)
    conv = {'conv_1/kernel:0': kernel, 'conv_1/bias:0': bias}
    path = _keras2_file(tmp_path / 'a.h5', {'flatten': {}, 'conv_1': conv})
    weights = read_keras2_weights(path)
    assert list(weights) == ['conv_1']
    np.testing.assert_array_equal(weights['conv_1'][0], kernel)
    assert count_conv_layers(weights) == 1
    with pytest.raises(InputFileError, match='no layer with weights'):
        read_keras2_weights(_keras2_file(tmp_path / 'b.h5', {'flatten': {}}))
    with pytest.raises(InputFileError, match="layer 'conv_2' is listed but has no group"):
        read_keras2_weights(_keras2_file(tmp_path / 'c.h5', {'conv_1': conv},
                                         listed=['conv_1', 'conv_2']))
    with pytest.raises(InputFileError, match='is a directory, not a weights file'):
        read_keras2_weights(str(tmp_path))


def test_freeze_accepts_every_trunk_block_and_no_more(config):
    """--freeze N for N in [0, number of blocks]: freezing all five blocks of a 4-conv
    network (the whole trunk, only the heads train) is allowed; 0 freezes nothing; -1
    and 6 are refused."""
    model = build_model(model_config(config, filters=4, dense_units=4))
    assert freeze_blocks(model, 0) == []
    every = freeze_blocks(model, 5)
    assert every == [n for i in range(1, 5) for n in (f'conv_{i}', f'batch_normalization_{i}')] \
        + ['fc_common', 'batch_normalization_fc']
    assert not any(model.get_layer(n).trainable for n in every)
    assert model.get_layer('fc_box_LYA').trainable
    for bad in (-1, 6):
        with pytest.raises(ValueError, match='trunk blocks'):
            freeze_blocks(model, bad)


def _scripted_phases(monkeypatch, results):
    """Replace lbgnet.train's compile_model/fit/save_checkpoint (and the loss figure) by
    recorders; fit returns the scripted (history, info) of each phase in turn."""
    import lbgnet.plots
    import lbgnet.train
    calls = {'compile': [], 'fit': [], 'checkpoint': 0}
    results = list(results)

    def compile_model(model, cfg, lr=None, total_steps=None):
        calls['compile'].append((cfg.extra['training'], lr, total_steps))

    def fit(model, train_data, val_data, cfg, outdir, **kwargs):
        calls['fit'].append((cfg.extra['training'], kwargs))
        return results.pop(0)

    def save_checkpoint(*args, **kwargs):
        calls['checkpoint'] += 1
    monkeypatch.setattr(lbgnet.train, 'compile_model', compile_model)
    monkeypatch.setattr(lbgnet.train, 'fit', fit)
    monkeypatch.setattr(lbgnet.train, 'save_checkpoint', save_checkpoint)
    monkeypatch.setattr(lbgnet.plots, 'plot_loss_curves', lambda *args, **kwargs: None)
    return calls


def _phase(best, best_epoch, epochs_run, seconds, monitor='val_loss'):
    history = {'loss': [1.0] * epochs_run, monitor: [best] * epochs_run}
    return history, {'epochs_run': epochs_run, 'best': best, 'best_epoch': best_epoch,
                     'monitor': monitor, 'fit_seconds': seconds}


def test_fit_in_phases_splits_epochs_time_and_rate_between_the_phases(tmp_path, config,
                                                                       monkeypatch):
    """With training.epochs 3, max_minutes 6, learning rate 1e-2 and --unfreeze-epochs 1:
    phase 1 gets 2 epochs and 4 minutes, phase 2 one epoch at 1e-3 with the 5 minutes
    phase 1 (60 s) left; a better phase 2 (its epoch 1) is the run's epoch 3.  The frozen
    phase is kept on a tie of a maximised monitor (phase 2 must be better); without
    frozen layers there is one phase; --unfreeze-epochs must stay below the epochs."""
    from lbgnet.config import ConfigError
    cfg = model_config(config, filters=4, dense_units=4)
    cfg = dataclasses.replace(cfg, extra=dict(cfg.extra, training=dict(
        cfg.extra['training'], max_minutes=6.0)))
    calls = _scripted_phases(monkeypatch, [_phase(0.7, 2, 2, 60.0), _phase(0.6, 1, 1, 30.0)])
    _, info = fit_in_phases(build_model(cfg), None, None, cfg, str(tmp_path), 10, nfrozen=1,
                            unfreeze_epochs=1, unfreeze_lr_factor=0.1)
    (t1, lr1, steps1), (t2, lr2, steps2) = calls['compile']
    assert (t1['epochs'], t1['max_minutes'], lr1, steps1) == (2, pytest.approx(4.0), 1e-2, 20)
    assert (t2['epochs'], t2['max_minutes'], steps2) == (1, pytest.approx(5.0), 10)
    assert lr2 == pytest.approx(1e-3)
    assert calls['fit'][1][1]['epoch_offset'] == 2 and calls['fit'][1][1]['initial_best'] == 0.7
    assert info['kept_phase'] == 2 and info['best'] == 0.6 and info['best_epoch'] == 3
    assert info['epochs_run'] == 3 and info['fit_seconds'] == 90.0
    assert calls['checkpoint'] == 0

    calls = _scripted_phases(monkeypatch, [_phase(0.5, 1, 2, 1.0, 'val_score'),
                                           _phase(0.5, 1, 1, 1.0, 'val_score')])
    _, info = fit_in_phases(build_model(cfg), None, None, cfg, str(tmp_path), 10, nfrozen=1,
                            unfreeze_epochs=1)
    assert info['kept_phase'] == 1 and info['best_epoch'] == 1 and calls['checkpoint'] == 1

    calls = _scripted_phases(monkeypatch, [_phase(0.7, 3, 3, 1.0)])
    _, info = fit_in_phases(build_model(cfg), None, None, cfg, str(tmp_path), 10, nfrozen=0,
                            unfreeze_epochs=1)
    assert len(calls['compile']) == 1 and calls['compile'][0][0]['epochs'] == 3
    assert info['frozen'] == [] and info['kept_phase'] == 1

    _scripted_phases(monkeypatch, [])
    with pytest.raises(ConfigError, match='unfreeze-epochs 3 must be in'):
        fit_in_phases(build_model(cfg), None, None, cfg, str(tmp_path), 10, nfrozen=1,
                      unfreeze_epochs=3)
