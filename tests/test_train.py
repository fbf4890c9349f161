"""A short training on a small mock set demonstrably learns; callbacks write their files."""
import dataclasses
import os

import numpy as np
import pytest

from lbgnet.evaluate import pe_score, regime_masks
from lbgnet.example import example_spectra
from lbgnet.labels import make_targets
from lbgnet.model import build_model, predict_boxes
from lbgnet.postprocess import postprocess
from lbgnet.preprocess import grid_spectra
from lbgnet.config import ConfigError
from lbgnet.losses import LineFinderLoss
from lbgnet.train import TrainingDiverged, compile_model, fit, set_seeds, training_options

from lbg_testdata import TRAIN_YAML

MODEL = dict(channels=['flux', 'snr'], conv_layers=3, filters=[16, 16, 16], kernel_size=[10, 5, 5],
             strides=2, padding='same', dropout=0.0, dense_units=32, offset_margin=0.1,
             snr_softening=5.0)


def small_config(config, **training):
    extra = dict(config.extra)
    extra['model'] = MODEL
    extra['loss'] = {'gamma': 1.0, 'pos_weight': 'balanced'}
    extra['training'] = dict({'epochs': 6, 'batch_size': 64, 'learning_rate': 3e-3,
                              'patience': 3, 'monitor': 'val_score'}, **training)
    return dataclasses.replace(config, extra=extra, source='train-test-config')


def mock_set(config, nspec, seed):
    """Example spectra (every other one LBG-like with Lya) gridded, with Lya-only targets."""
    wave, flux, ivar, z = example_spectra(config, nspec, np.random.default_rng(seed))
    bands = list(wave)
    X, _, _ = grid_spectra([wave[b] for b in bands], [flux[b] for b in bands],
                           [ivar[b] for b in bands], config.grid)
    line_waves = np.full((nspec, len(config.lines)), np.nan)
    line_waves[:, config.lines.index('LYA')] = 1215.67 * (1 + z)
    classes = np.where(np.isfinite(z), 'LBG', 'STAR')
    return X, make_targets(line_waves, config), {'CLASS': classes, 'Z_TRUE': np.nan_to_num(z)}


def test_short_training_learns(tmp_path, config):
    cfg = small_config(config)
    set_seeds(7)
    X, y, _ = mock_set(cfg, 800, seed=1)
    Xv, yv, truth_v = mock_set(cfg, 200, seed=2)
    model = compile_model(build_model(cfg), cfg)
    start_loss = float(model.evaluate(Xv, yv, verbose=0))
    history, info = fit(model, (X, y), (Xv, yv), cfg, str(tmp_path), val_truth=truth_v, verbose=0)
    assert min(history['val_loss']) < 0.5 * start_loss
    assert history['loss'][-1] < 0.5 * history['loss'][0]
    conf, off = predict_boxes(model, Xv)
    out = postprocess(conf, off, cfg, n_thresh=1)
    is_lbg = truth_v['CLASS'] == 'LBG'
    score = pe_score(is_lbg, out['C_LBG'])[0]
    assert score > 0.9                   # chance level is the LBG fraction, 0.5
    assert info['best'] == pytest.approx(max(history['val_score']))
    # the restored weights are those of the best epoch (val_score = mean over the z regimes)
    masks = regime_masks(truth_v['CLASS'], truth_v['Z_TRUE'])
    regime_mean = np.mean([pe_score(is_lbg[m], out['C_LBG'][m])[0] for k, m in masks.items()
                           if k != 'all'])
    assert regime_mean == pytest.approx(info['best'], abs=1e-6)
    dz = np.abs(out['Z_LINES'][is_lbg, cfg.lines.index('LYA')] - truth_v['Z_TRUE'][is_lbg])
    assert np.median(dz) < 0.05           # one box is 0.13 in z at Lya; random boxes give ~0.6
    for name in ('checkpoint.weights.h5', 'history.csv', 'loss.png'):
        assert os.path.getsize(tmp_path / name) > 0
    assert os.path.getsize(tmp_path / 'loss.png') < 300_000
    # the checkpoint is a whole model (weights + card): the best epoch's weights, which a
    # killed run leaves for --init-from, --model and evaluation
    from lbgnet.io.modelfile import load_model
    from lbgnet.transfer import init_from
    kept, kept_cfg, meta = load_model(str(tmp_path / 'checkpoint.weights.h5'))
    assert meta['checkpoint']['epoch'] == info['best_epoch']
    assert meta['checkpoint']['monitor'] == 'val_score'
    assert meta['checkpoint']['value'] == pytest.approx(info['best'])
    assert kept_cfg.lines.names == cfg.lines.names
    np.testing.assert_array_equal(predict_boxes(kept, Xv)[0], conf)
    fresh = build_model(cfg)
    report = init_from(fresh, str(tmp_path / 'checkpoint.weights.h5'), config=cfg)
    assert report.loaded and not report.skipped and not report.missing
    np.testing.assert_array_equal(predict_boxes(fresh, Xv)[0], conf)


def test_training_options(config):
    cfg = small_config(config)
    opts = training_options(cfg, epochs=3, batch_size=None)
    assert opts['epochs'] == 3 and opts['batch_size'] == 64
    with pytest.raises(ValueError, match='monitor'):
        training_options(small_config(config, monitor='accuracy'))
    with pytest.raises(ConfigError, match=r'train-test-config: training.epochs must be an integer'):
        training_options(small_config(config, epochs='one'))
    with pytest.raises(ConfigError, match='--patience: must be >= 0'):
        training_options(small_config(config), patience=-1)
    with pytest.raises(ConfigError, match='unknown key.*training.max_minute'):
        training_options(small_config(config, max_minute=0.05))
    # nonsensical values are refused, naming the file and the key
    for bad, match in [({'learning_rate': 0.0}, 'training.learning_rate must be > 0'),
                       ({'learning_rate': -1e-3}, 'training.learning_rate must be > 0'),
                       ({'lr_final_fraction': 0.0}, r'training.lr_final_fraction must be in \(0, 1\]'),
                       ({'lr_final_fraction': 1.5}, r'training.lr_final_fraction must be in \(0, 1\]'),
                       ({'max_minutes': 0}, 'training.max_minutes must be > 0'),
                       ({'max_minutes': -5.0}, 'training.max_minutes must be > 0'),
                       ({'epochs': 1.9}, 'training.epochs must be an integer, not 1.9'),
                       ({'batch_size': True}, 'training.batch_size must be an integer'),
                       ({'seed': -1}, r'training.seed must be in \[0, 2\*\*32 - 1\]'),
                       ({'seed': 2 ** 32}, r'training.seed must be in \[0, 2\*\*32 - 1\]'),
                       ({'simulation': 3}, 'training.simulation must be a file name')]:
        with pytest.raises(ConfigError, match='train-test-config: ' + match):
            training_options(small_config(config, **bad))
    opts = training_options(small_config(config, epochs=2.0, lr_final_fraction=1.0))
    assert opts['epochs'] == 2 and isinstance(opts['epochs'], int)
    assert training_options(small_config(config, max_minutes=None))['max_minutes'] is None
    # errors of command-line overrides name the option, not the file
    with pytest.raises(ConfigError, match=r'^--epochs: must be > 0, not 0$'):
        training_options(small_config(config), epochs=0)
    with pytest.raises(ConfigError, match=r'^--max-minutes: must be > 0'):
        training_options(small_config(config), max_minutes=-1.0)
    with pytest.raises(ConfigError, match=r'^--learning-rate: must be > 0'):
        training_options(small_config(config), learning_rate=0.0)
    # one list of training keys: the YAML check and the defaults agree
    from lbgnet.config import SECTION_KEYS
    from lbgnet.train import TRAINING_DEFAULTS
    assert set(SECTION_KEYS['training']) == set(TRAINING_DEFAULTS)




def test_train_script_with_simulator(tmp_path, caplog):
    """desi_lbg_train on the real generator: model + card + history; thresholds from validation."""
    import json
    from lbgnet.io.modelfile import load_model
    from lbgnet.scripts.lbg_train import main
    cfg_path = tmp_path / 'tiny.yaml'
    cfg_path.write_text(TRAIN_YAML)
    out = tmp_path / 'run'
    assert main(['--config', str(cfg_path), '--outdir', str(out), '--verbose', '0']) == 0
    model, cfg, meta = load_model(str(out / 'tiny.weights.h5'))
    card = json.loads((out / 'tiny.json').read_text())
    assert card['config']['selection'] == {'c_thresh': meta['thresholds']['c_thresh'],
                                           'n_thresh': meta['thresholds']['n_thresh']}
    assert cfg.selection.n_thresh in (1, 2, 3)
    assert meta['training']['epochs_run'] == 2 and meta['training']['fit_seconds'] > 0
    import tensorflow as tf        # the backend and its version: seeds differ between backends
    assert card['keras_backend'] == f'tensorflow {tf.__version__}'
    assert meta['training']['options']['seed'] == 5
    # the sizes actually used: whole batches, validation spectra read
    assert meta['training']['ntrain_per_epoch'] == 256
    assert meta['z_range'] == [1.8, 4.6]          # the simulator's LBG range, recorded
    assert 0 < meta['training']['nval_used'] <= 120
    assert 'e + 1' in meta['training']['generator']['seed_streams']
    # the simulator fingerprint, the same as in the validation files it wrote
    from lbgnet.io.mock import mock_keywords
    val_truth = sorted((out / 'validation').glob('truth-*.fits'))[0]
    assert meta['training']['simulator_hash'] == mock_keywords(val_truth)['SIMHASH']
    assert meta['training']['validation_simulator_hash'] == [meta['training']['simulator_hash']]
    assert set(meta['validation_metrics']) == {'all', 'lowz', 'midz', 'highz'}
    # error calibration: recorded in the card and set in the model's postprocess options
    calib = meta['error_calibration']
    assert set(calib) == {'refine_noise', 'refine_archetypes', 'postprocess', 'ZERR_LBG', 'ZERR_TPL'}
    assert calib['refine_noise'] == 'calibrated'        # as the commands refine by default
    from lbgnet.afterburner import default_archetype_path
    from lbgnet.io.catalog import file_sha256
    if calib['ZERR_TPL']['fit'] is not None:
        assert calib['refine_archetypes'] == file_sha256(default_archetype_path())
    assert {k: card['config']['postprocess'][k] for k in calib['postprocess']} == calib['postprocess']
    assert len(meta['history']['val_score']) == 2
    assert (out / 'validation').is_dir() and (out / 'history.csv').exists()
    # a second run into the same --outdir is refused before it touches anything (a stopped
    # rerun left the old card beside the new run's history and validation set)
    before = {p: p.stat().st_mtime_ns for p in out.rglob('*') if p.is_file()}
    assert main(['--config', str(cfg_path), '--outdir', str(out), '--seed', '6',
                 '--verbose', '0']) == 1
    assert main(['--config', str(cfg_path), '--outdir', str(out), '--name', 'other',
                 '--validation-only', '--nval', '40']) == 1           # another name too
    assert {p: p.stat().st_mtime_ns for p in out.rglob('*') if p.is_file()} == before
    # --overwrite under another name: the earlier model stays, and the run says that it
    # does not describe this directory's history and validation set any more
    # ... nor into it from a file that the run would replace as it trains (its first epoch
    # wrote the checkpoint over the weights it continued from, better or not)
    for init in ('checkpoint.weights.h5', 'checkpoint.json', 'tiny.weights.h5'):
        caplog.clear()
        assert main(['--config', str(cfg_path), '--outdir', str(out), '--overwrite',
                     '--init-from', str(out / init), '--verbose', '0']) == 1
        assert 'this run would replace it in --outdir as it trains' in caplog.text
    assert {p: p.stat().st_mtime_ns for p in out.rglob('*') if p.is_file()} == before
    caplog.clear()
    assert main(['--config', str(cfg_path), '--outdir', str(out), '--name', 'other',
                 '--overwrite', '--epochs', '1', '--verbose', '0',
                 '--init-from', str(out / 'tiny.weights.h5')]) == 0
    assert (out / 'tiny.json').exists() and (out / 'other.json').exists()
    # the starting weights' score on the validation set (the same set: same seed) is
    # recorded, so that a continued run can be compared with where it started
    other = json.loads((out / 'other.json').read_text())['metadata']['training']
    assert other['init_val_score'] == pytest.approx(max(meta['history']['val_score']), abs=1e-6)
    # the checkpoint's card says how it was trained too (a killed run's checkpoint did not)
    ckpt = json.loads((out / 'checkpoint.json').read_text())['metadata']['training']
    assert ckpt['init_from'] == str(out / 'tiny.weights.h5') and ckpt['seed'] == 5
    assert ckpt['init_from_sha256'] == other['init_from_sha256'] and ckpt['train_dir'] is None
    assert (f"--overwrite: {out / 'tiny.json'} of an earlier run is still in {out}; "
            "history.csv, loss.png and validation/ are this run's (other)") in caplog.text
    # --validation-only writes the same validation files (same seed) and trains nothing
    only = tmp_path / 'only'
    assert main(['--config', str(cfg_path), '--outdir', str(only), '--validation-only']) == 0
    from lbgnet.io.mock import read_truth, truth_checksum
    written = sorted(p.name for p in (only / 'validation').iterdir())
    assert written == sorted(p.name for p in (out / 'validation').iterdir())
    for name in written:
        if name.startswith('truth-'):
            assert truth_checksum(read_truth(str(only / 'validation' / name))) == \
                truth_checksum(read_truth(str(out / 'validation' / name)))
    assert not list(only.glob('*.weights.h5')) and not (only / 'history.csv').exists()
    # that set is kept: written again only as it is (same seed, size and simulator); another
    # one replaces it only with --overwrite (it was replaced without a word, under the
    # models validated on it through --val-dir)
    before = {p.name: p.read_bytes() for p in (only / 'validation').iterdir()}
    assert main(['--config', str(cfg_path), '--outdir', str(only), '--validation-only']) == 0
    caplog.clear()
    assert main(['--config', str(cfg_path), '--outdir', str(only), '--validation-only',
                 '--seed', '9']) == 1
    assert (f"{only / 'validation'}: holds another validation set (1 coadd file(s); "
            'VALNSPEC') in caplog.text
    assert 'use --overwrite to replace it, or another --outdir' in caplog.text
    assert {p.name: p.read_bytes() for p in (only / 'validation').iterdir()} == before
    assert main(['--config', str(cfg_path), '--outdir', str(only), '--validation-only',
                 '--seed', '9', '--overwrite']) == 0
    assert {p.name: p.read_bytes() for p in (only / 'validation').iterdir()} != before
    with pytest.raises(SystemExit):
        main(['--config', str(cfg_path), '--outdir', str(only), '--validation-only',
              '--val-dir', str(out / 'validation')])
    # command-line overrides reach the training options
    from lbgnet.scripts.lbg_train import parse, training_setup
    _, opts, _ = training_setup(parse(['--config', str(cfg_path), '--outdir', str(only),
                                       '--patience', '40', '--max-minutes', '3']))
    assert opts['patience'] == 40 and opts['max_minutes'] == 3.0 and opts['epochs'] == 2
    # a bad configuration fails with status 1, not a traceback
    bad = tmp_path / 'bad.yaml'
    bad.write_text(TRAIN_YAML.replace('lbgnet-mock.yaml', 'no-such-sim.yaml'))
    assert main(['--config', str(bad), '--outdir', str(tmp_path / 'bad'), '--verbose', '0']) == 1


def test_check_config_fails_before_training(config):
    """Options read only during or after training are checked up front (one clear line)."""
    from lbgnet.train import check_config
    check_config(small_config(config))
    cases = [({'postprocess': {'agree_tol': 'abc'}}, 'postprocess.agree_tol must be a finite number'),
             ({'postprocess': {'hybrid_score': 'max'}}, 'postprocess.hybrid_score must be one of'),
             ({'postprocess': {'agree_tol': 0}}, 'postprocess.agree_tol must be > 0'),
             ({'postprocess': {'zerr_scale': 0.0}}, 'postprocess.zerr_scale must be > 0'),
             ({'postprocess': {'zerr_tpl_scale': -1}}, 'postprocess.zerr_tpl_scale must be > 0'),
             ({'postprocess': {'zerr_floor': -1e-3}}, 'postprocess.zerr_floor must be >= 0'),
             ({'postprocess': {'zerr_tpl_floor': 'x'}}, 'postprocess.zerr_tpl_floor must be a finite number'),
             ({'postprocess': {'line_floor': 2.0}}, r'postprocess.line_floor must be in \[0, 1\]'),
             ({'model': dict(MODEL, snr_softening='abc')}, 'model.snr_softening must be a number'),
             ({'model': dict(MODEL, snr_softening=0)}, 'model.snr_softening must be a number > 0'),
             ({'model': dict(MODEL, filters='abc')}, 'model.filters must be integers'),
             ({'loss': {'gamma': 'abc'}}, 'invalid loss section'),
             ({'loss': {'gamma': float('nan')}}, r'invalid loss section \(loss.gamma must be a finite'),
             ({'loss': {'gamma': -2}}, r'invalid loss section \(loss.gamma must be a finite number >= 0'),
             ({'loss': {'pos_weight': float('inf')}}, 'invalid loss section.*pos_weight must be a finite'),
             ({'loss': {'pos_weight': True}}, 'invalid loss section.*pos_weight must be a number'),
             ({'model': dict(MODEL, dense_units='abc')}, 'model.dense_units must be an integer >= 1'),
             ({'model': dict(MODEL, dense_units=0)}, 'model.dense_units must be an integer >= 1'),
             ({'model': dict(MODEL, dense_units=2.7)}, 'model.dense_units must be an integer >= 1'),
             ({'model': dict(MODEL, conv_layers=True)}, 'model.conv_layers must be an integer'),
             ({'model': dict(MODEL, filters=[8, 8, 8.5])}, 'model.filters must be integers > 0'),
             ({'model': dict(MODEL, offset_margin='abc')}, r'model.offset_margin must be a number in \[0, 1\)'),
             ({'model': dict(MODEL, offset_margin=-0.7)}, r'model.offset_margin must be a number in \[0, 1\)'),
             ({'model': dict(MODEL, dropout=1.0)}, r'model.dropout must be a number in \[0, 1\)'),
             ({'model': dict(MODEL, architecture='hybrid'), 'loss': {'direct': {'weight': 'x'}}},
              'loss.direct.weight must be a finite number')]
    for extra, match in cases:
        cfg = small_config(config)
        cfg = dataclasses.replace(cfg, extra=dict(cfg.extra, **extra))
        with pytest.raises(ConfigError, match='^train-test-config: ' + match):
            check_config(cfg)
    for augment, match in [({'p_jitter': 'abc'}, 'generator.augment.p_jitter must be a number'),
                           ({'overlap_range': 5}, 'generator.augment.overlap_range must be a '
                                                  r'\[min, max\] pair'),
                           ({'p_jiter': 0.1}, 'invalid generator.augment'),
                           ({'p_lya': 1.5}, 'invalid generator.augment')]:
        sim = dataclasses.replace(config, extra={'generator': {'augment': augment}},
                                  source='sim-test-config')
        with pytest.raises(ConfigError, match='^sim-test-config: ' + match):
            check_config(small_config(config), sim)


def test_train_script_fails_on_bad_options_before_simulating(tmp_path, caplog):
    """A wrong postprocess value is an error before the validation set is written."""
    from lbgnet.scripts.lbg_train import main
    bad = tmp_path / 'bad.yaml'
    bad.write_text(TRAIN_YAML + 'postprocess: {agree_tol: abc}\n')
    out = tmp_path / 'bad'
    assert main(['--config', str(bad), '--outdir', str(out), '--verbose', '0']) == 1
    assert not out.exists()
    assert main(['--config', str(tmp_path / 'x.yaml'), '--outdir', str(out), '--epochs', '0']) == 1
    cfg = tmp_path / 'ok.yaml'
    cfg.write_text(TRAIN_YAML)
    caplog.clear()
    assert main(['--config', str(cfg), '--outdir', str(out), '--epochs', '0']) == 1
    assert '--epochs: must be > 0' in caplog.text and 'ok.yaml' not in caplog.text
    # a missing simulation file is named with the configuration and key that asked for it
    nosim = tmp_path / 'nosim.yaml'
    nosim.write_text(TRAIN_YAML.replace('simulation: lbgnet-mock.yaml', 'simulation: nonexist.yaml'))
    caplog.clear()
    assert main(['--config', str(nosim), '--outdir', str(out)]) == 1 and not out.exists()
    assert "nosim.yaml: training.simulation 'nonexist.yaml': configuration file not found" in caplog.text
    # the simulator's configuration given as --config: said so
    caplog.clear()
    assert main(['--config', 'lbgnet-mock.yaml', '--outdir', str(out)]) == 1 and not out.exists()
    assert 'lbgnet-mock.yaml: a simulator (mock) configuration; --config takes a model' in caplog.text
    # an --outdir that cannot be created is one line, before the validation set
    afile = tmp_path / 'afile'
    afile.write_text('x')
    caplog.clear()
    assert main(['--config', str(cfg), '--outdir', str(afile / 'out'), '--validation-only']) == 1
    assert f'{afile / "out"}: cannot create the output directory (Not a directory)' in caplog.text


def test_training_simulation_next_to_the_config(tmp_path, monkeypatch):
    """training.simulation is looked for next to the configuration first, whatever the cwd."""
    from lbgnet.scripts.lbg_train import parse, training_setup
    (tmp_path / 'cfg').mkdir()
    (tmp_path / 'cfg' / 'my-mock.yaml').write_text('base: lbgnet-mock.yaml\n'
                                                   'generator: {batch_size: 77}\n')
    cfg = tmp_path / 'cfg' / 'tiny.yaml'
    cfg.write_text(TRAIN_YAML.replace('simulation: lbgnet-mock.yaml', 'simulation: my-mock.yaml'))
    (tmp_path / 'elsewhere').mkdir()
    monkeypatch.chdir(tmp_path / 'elsewhere')
    _, opts, setup = training_setup(parse(['--config', str(cfg), '--outdir', 'x']))
    assert setup.config.extra['generator']['batch_size'] == 77
    assert opts['simulation'] == 'my-mock.yaml'


def test_write_validation_removes_stale_files(tmp_path):
    """Validation files of an earlier, larger set are removed; other files are left alone."""
    from lbgnet.scripts.lbg_train import find_validation, write_validation
    from lbgnet.sim.mock import load_mock_setup
    val = tmp_path / 'validation'
    val.mkdir()
    for name in ('coadd-main-dark-1.fits', 'redrock-main-dark-1.fits', 'truth-main-dark-1.fits',
                 'notes.txt', 'other-1.fits'):
        (val / name).write_text('old')
    coadds, truths = write_validation(load_mock_setup('lbgnet-mock.yaml'), str(val), 20, 3,
                                      'lbgnet-mock.yaml')
    assert len(coadds) == 1 and find_validation(str(val)) == (coadds, truths)
    names = sorted(p.name for p in val.iterdir())
    assert 'notes.txt' in names and 'other-1.fits' in names
    assert len([n for n in names if n.startswith(('coadd-', 'redrock-', 'truth-'))]) == 3
    assert all(not n.endswith('-1.fits') or n == 'other-1.fits' for n in names)


def test_batch_streams_follow_the_epoch_numbers():
    """What the model card and doc/model.rst say: Keras draws batches of stream 0 for its
    tensor specs and moves on before the first epoch, so epoch e (1-based) uses stream e;
    a second fit (the unfrozen phase) skips one more stream."""
    import keras
    from lbgnet.sim.generator import as_pydataset

    class Streams:
        def __init__(self):
            self.epoch, self.used = 0, []

        def __len__(self):
            return 3

        def __getitem__(self, index):
            self.used.append(self.epoch)
            return np.full((4, 2), self.epoch, np.float32), np.zeros((4, 1), np.float32)

        def on_epoch_end(self):
            self.epoch += 1

    class Record(keras.callbacks.Callback):
        def __init__(self, batches):
            super().__init__()
            self.batches, self.seen = batches, []

        def on_epoch_begin(self, epoch, logs=None):
            self.seen.append(self.batches.epoch)

    batches = Streams()
    record = Record(batches)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile('sgd', 'mse')
    data = as_pydataset(batches, workers=1)
    model.fit(data, epochs=2, verbose=0, callbacks=[record])
    assert record.seen == [1, 2]
    assert sorted(set(batches.used)) == [0, 1, 2] and batches.used.count(0) <= 2
    model.fit(data, epochs=1, verbose=0, callbacks=[record])
    assert record.seen == [1, 2, 4]


def test_compile_model_builds_the_optimizer_for_the_trainable_layers():
    """Adam's slots exist after compile_model (none are made while the first step is
    traced), for exactly the trainable variables: frozen layers get none."""
    from lbg_testdata import tiny_config
    cfg = tiny_config()
    model = build_model(cfg)
    model.get_layer('conv_1').trainable = False
    compile_model(model, cfg)
    opt = model.optimizer
    assert opt.built
    trainable = {id(v) for v in model.trainable_variables}
    assert {id(v) for v in opt._trainable_variables} == trainable
    assert len(opt.variables) == 2 * len(trainable) + 2      # m, v per variable + counters
    model.get_layer('conv_1').trainable = True                # unfrozen: compiled again
    compile_model(model, cfg)
    assert len(model.optimizer._trainable_variables) == len(model.trainable_variables) > len(trainable)


def test_time_limit_callback():
    """TimeLimit stops when one more epoch of the mean duration would exceed the budget."""
    import time
    from types import SimpleNamespace
    from lbgnet.train import TimeLimit
    cb = TimeLimit(minutes=1.0)
    cb.set_model(SimpleNamespace(stop_training=False))
    cb.on_train_begin()
    cb.start = time.time() - 25.0          # first epoch took 25 s: 50 s < 60 s, go on
    cb.on_epoch_end(0)
    assert not cb.model.stop_training
    cb.start = time.time() - 62.0          # two epochs in 62 s: over budget, stop
    cb.on_epoch_end(1)
    assert cb.model.stop_training and cb.stopped_epoch == 2


def test_time_cosine_schedule(tmp_path, config):
    """cosine_time decays the rate from its start to the final fraction over the time budget."""
    import time
    import keras
    from lbgnet.train import TimeCosine, cosine_fraction
    assert np.allclose(cosine_fraction([0.0, 30.0, 60.0, 90.0], 60.0, 0.05),
                       [1.0, 0.525, 0.05, 0.05])
    cfg = small_config(config, lr_schedule='cosine_time', max_minutes=1.0)
    model = compile_model(build_model(cfg), cfg, learning_rate=2e-3)
    cb = TimeCosine(minutes=1.0, final_fraction=0.05)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_train_batch_begin(0)
    assert np.isclose(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)), 2e-3,
                      rtol=1e-3)
    cb.start = time.time() - 30.0          # half the budget gone: half-way down the cosine
    cb.on_train_batch_begin(1)
    assert np.isclose(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
                      2e-3 * 0.525, rtol=1e-2)
    # fit() installs it: after a fit that used up its budget the rate is at its end value
    X, y, _ = mock_set(cfg, 64, seed=3)
    fast = small_config(config, lr_schedule='cosine_time', max_minutes=1e-4, epochs=2)
    model = compile_model(build_model(fast), fast, learning_rate=2e-3)
    fit(model, (X, y), (X, y), fast, str(tmp_path), verbose=0)
    assert np.isclose(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)), 1e-4,
                      rtol=1e-2)
    # a validation loss that is NaN in every epoch leaves no epoch to keep: a clear error
    model = compile_model(build_model(fast), fast, learning_rate=2e-3)
    with pytest.raises(TrainingDiverged, match='val_loss is not finite in any epoch .check the validation'):
        fit(model, (X, y), (np.full_like(X, np.nan), y), fast, str(tmp_path / 'nan'), verbose=0)
    # so does a training loss that is NaN from the start (a NaN loss weight): stopped at once
    nanloss = dataclasses.replace(fast, extra=dict(fast.extra, loss={'gamma': 1.0}))
    model = build_model(nanloss)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=LineFinderLoss(gamma=float('nan')))
    with pytest.raises(TrainingDiverged, match='training loss became nan in epoch 1'):
        fit(model, (X, y), (X, y), small_config(config, epochs=3), str(tmp_path / 'nan2'), verbose=0)
    # weights gone NaN in a later epoch: NaN confidences tie at a finite chance-level score,
    # and that epoch was kept as the best (NaN weights written); the earlier one is kept
    class OneBadPixel(keras.utils.PyDataset):
        """Two batches an epoch; one pixel of one batch of the second epoch is NaN."""
        epoch = 0

        def __len__(self):
            return 2

        def __getitem__(self, i):
            xb = X[i * 32:(i + 1) * 32].copy()
            if self.epoch == 1 and i == 1:
                xb[0, 10, 0] = np.nan
            return xb, y[i * 32:(i + 1) * 32]
    data = OneBadPixel()
    epochs = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: setattr(data, 'epoch', epoch))
    Xv, yv, tv = mock_set(cfg, 64, seed=4)
    two = small_config(config, epochs=2, patience=5)
    model = compile_model(build_model(two), two, learning_rate=2e-3)
    history, info = fit(model, data, (Xv, yv), two, str(tmp_path / 'nan3'), val_truth=tv,
                        verbose=0, extra_callbacks=[epochs])
    assert not np.isfinite(history['loss'][1]) and np.isnan(history['val_score'][1])
    assert info['best_epoch'] == 1
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    # the schedule needs a budget
    with pytest.raises(ValueError, match='cosine_time needs max_minutes'):
        training_options(small_config(config, lr_schedule='cosine_time'))


def test_history_writer_keeps_every_finished_epoch(tmp_path):
    """history.csv (with earlier phases) and loss.png exist after every epoch, so a run
    killed in a later phase keeps the record of the earlier one (the CSVLogger of the
    second phase used to truncate it)."""
    import csv
    from lbgnet.train import HISTORY, LOSS_PLOT, HistoryWriter
    previous = {'loss': [3.0, 2.0], 'val_loss': [3.5, 2.5], 'val_score': [0.1, 0.2],
                'phase': [1, 1]}
    writer = HistoryWriter(str(tmp_path), previous=previous, plot_seconds=1e9)
    writer.on_epoch_end(0, {'loss': 1.5, 'val_loss': 2.0, 'val_score': 0.3})
    assert (tmp_path / LOSS_PLOT).exists()
    (tmp_path / LOSS_PLOT).unlink()
    writer.on_epoch_end(1, {'loss': 1.0, 'val_loss': 1.8, 'val_score': 0.4, 'learning_rate': 1e-4})
    assert not (tmp_path / LOSS_PLOT).exists()          # drawn at most every plot_seconds
    with open(tmp_path / HISTORY) as fx:
        rows = list(csv.DictReader(fx))
    assert [int(r['epoch']) for r in rows] == [0, 1, 2, 3]
    assert [int(r['phase']) for r in rows] == [1, 1, 2, 2]
    assert [float(r['loss']) for r in rows] == [3.0, 2.0, 1.5, 1.0]
    assert rows[3]['learning_rate'] == '0.0001' and rows[2]['learning_rate'] in ('', 'nan')
    single = HistoryWriter(str(tmp_path / 'one'))
    (tmp_path / 'one').mkdir()
    single.on_epoch_end(0, {'loss': 1.0, 'val_loss': 1.2})
    assert (tmp_path / 'one' / LOSS_PLOT).exists()
    with open(tmp_path / 'one' / HISTORY) as fx:
        assert next(csv.reader(fx)) == ['epoch', 'loss', 'val_loss']


@pytest.mark.parametrize('bad', [['--workers', '0'], ['--batch-size', '0'], ['--batch-size', '-5']])
def test_train_and_tune_refuse_bad_counts_in_parse(bad, capsys):
    """--workers < 1 (silently accepted) and --batch-size < 1 (refused late, blamed on the
    configuration file) are usage errors of the command line."""
    from lbgnet.scripts.lbg_train import parse
    from lbgnet.scripts.lbg_tune import parse as parse_tune
    with pytest.raises(SystemExit) as exc:
        parse(['--config', 'x.yaml', '--outdir', 'o'] + bad)
    assert exc.value.code == 2 and bad[0] in capsys.readouterr().err
    if bad[0] == '--batch-size':
        with pytest.raises(SystemExit) as exc:
            parse_tune(['--config', 'x.yaml', '--trials', '2', '--outdir', 'o'] + bad)
        assert exc.value.code == 2 and '--batch-size must be >= 1' in capsys.readouterr().err


def test_init_layers_needs_init_from(capsys):
    """--init-layers alone trained from scratch and exited 0, as if it had done something."""
    from lbgnet.scripts.lbg_train import parse
    with pytest.raises(SystemExit) as exc:
        parse(['--config', 'x.yaml', '--outdir', 'o', '--init-layers', 'conv'])
    assert exc.value.code == 2 and '--init-layers needs --init-from' in capsys.readouterr().err
    assert parse(['--config', 'x.yaml', '--outdir', 'o', '--init-from', 'm.h5']).init_layers == 'all'


def test_incomplete_or_mixed_validation_set_is_refused(tmp_path, monkeypatch):
    """A validation set that a stopped --validation-only run left with 2 of its 3 files,
    or files of two sets, is refused by --val-dir (it was used silently, smaller)."""
    import shutil
    import lbgnet.scripts.lbg_train as script
    from lbgnet.io import InputFileError
    from lbgnet.sim.mock import load_mock_setup
    monkeypatch.setattr(script, 'VALIDATION_FILE_SIZE', 10)
    setup = load_mock_setup('lbgnet-mock.yaml')
    full, other = tmp_path / 'full', tmp_path / 'other'
    coadds, truths = script.write_validation(setup, str(full), 25, 3, 'lbgnet-mock.yaml')
    assert len(coadds) == 3 and script.find_validation(str(full)) == (coadds, truths)
    script.write_validation(setup, str(other), 15, 4, 'lbgnet-mock.yaml')
    shutil.copytree(full, tmp_path / 'cut')
    (tmp_path / 'cut' / os.path.basename(coadds[1])).unlink()
    with pytest.raises(InputFileError, match='incomplete validation set: 2 of its 3 files'):
        script.find_validation(str(tmp_path / 'cut'))
    for path in sorted((other).glob('*-1.fits')):     # the second file of the other set
        shutil.copy(path, tmp_path / 'cut' / path.name)
    with pytest.raises(InputFileError, match='files of different validation sets'):
        script.find_validation(str(tmp_path / 'cut'))


def test_validation_set_without_the_target_class_fails_before_training(tmp_path, caplog):
    """A --val-dir without LBGs is refused before the first epoch (the training used to run
    to its end and then fail on an undefined score)."""
    from lbgnet.scripts.lbg_mock import main as mock
    from lbgnet.scripts.lbg_train import main
    assert mock(['--outdir', str(tmp_path / 'qso'), '--nspec', '12', '--classes', 'QSO',
                 '--no-resolution']) == 0
    cfg = tmp_path / 'ok.yaml'
    cfg.write_text(TRAIN_YAML)
    out = tmp_path / 'out'
    caplog.clear()
    assert main(['--config', str(cfg), '--outdir', str(out), '--val-dir', str(tmp_path / 'qso'),
                 '--epochs', '2', '--verbose', '0']) == 1
    assert f'{tmp_path / "qso"}: no LBG in the validation set' in caplog.text
    assert not (out / 'history.csv').exists()


def test_validation_score_ignores_the_selection_section(config):
    """val_score (early stopping, best checkpoint) is computed with C_LBG at one line,
    whatever the configuration's selection says: training tells users that section is not
    used, and the thresholds are chosen after training."""
    from lbgnet.config import Selection
    from lbgnet.train import ValidationScore
    cfg = small_config(config)
    set_seeds(4)
    model = build_model(cfg)
    X, _, truth = mock_set(cfg, 60, 5)
    scores = []
    for n in (1, 3):
        callback = ValidationScore(X, truth['CLASS'], truth['Z_TRUE'],
                                   dataclasses.replace(cfg, selection=Selection(0.5, n)))
        callback.set_model(model)
        logs = {'loss': 1.0}
        callback.on_epoch_end(0, logs)
        scores.append(logs['val_score'])
    assert np.isfinite(scores[0]) and scores[0] == scores[1]


def test_best_checkpoint_is_atomic_and_checks_the_room(tmp_path, monkeypatch):
    """BestCheckpoint keeps the weights of the strictly best finite epoch (as Keras'
    ModelCheckpoint), beating an initial threshold; with too little room on the disk it
    raises one OutputFileError before writing, and the earlier checkpoint stays whole (Keras
    wrote in place: a full disk left a truncated file and HDF5 crashed the process)."""
    import keras
    import lbgnet.io.modelfile as modelfile
    from lbgnet.io.catalog import OutputFileError
    from lbgnet.train import BestCheckpoint
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = str(tmp_path / 'checkpoint.weights.h5')
    cb = BestCheckpoint(path, 'val_score', 'max', initial_value_threshold=0.2)
    cb.set_model(model)
    saved = []
    for epoch, value in enumerate([0.1, 0.5, np.nan, 0.5, 0.7, 0.6]):
        model.layers[0].kernel.assign(np.full((3, 2), float(epoch)))
        cb.on_epoch_end(epoch, {'val_score': value})
        if os.path.exists(path):
            probe = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
            probe.load_weights(path)
            saved.append(float(probe.layers[0].kernel.numpy()[0, 0]))
    assert saved[-1] == 4.0 and sorted(set(saved)) == [1.0, 4.0]      # epochs 1 and 4 only
    before = open(path, 'rb').read()

    class Usage:
        free = 1000
    monkeypatch.setattr(modelfile.shutil, 'disk_usage', lambda d: Usage())
    model.layers[0].kernel.assign(np.full((3, 2), 9.0))
    with pytest.raises(OutputFileError, match='no room for the network weights'):
        cb.on_epoch_end(6, {'val_score': 0.9})
    assert open(path, 'rb').read() == before
    assert sorted(os.listdir(tmp_path)) == ['checkpoint.weights.h5']     # no temporary


def test_train_script_output_error_is_one_line(tmp_path, monkeypatch, caplog):
    """An output that cannot be written (full disk: the validation set, a checkpoint, the
    model) ends desi_lbg_train with one line and status 1, not a traceback."""
    import logging
    import lbgnet.scripts.lbg_train as script
    from lbgnet.io.catalog import OutputFileError

    def full(*args):
        raise OutputFileError(str(tmp_path / 'run' / 'validation' / 'coadd-x.fits'),
                              'cannot write (No space left on device)')
    monkeypatch.setattr(script, '_train', full)
    cfg = tmp_path / 'tiny.yaml'
    cfg.write_text(TRAIN_YAML)
    assert script.main(['--config', str(cfg), '--outdir', str(tmp_path / 'run')]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f'{tmp_path}/run/validation/coadd-x.fits: cannot write (No space left '
                      'on device)']


def test_an_earlier_finished_model_is_named_before_its_checkpoint(tmp_path):
    """desi_lbg_train refuses an --outdir holding an earlier run's model or checkpoint and
    names the first it finds: a finished 'a.json' was named, but 'checkpoint.json' sorts
    before a finished 'tinyqn.json' and the message then spoke of a checkpoint only."""
    from lbgnet.scripts.lbg_train import earlier_models
    for name in ('checkpoint', 'tinyqn', 'a'):
        (tmp_path / f'{name}.json').write_text('{}')
        (tmp_path / f'{name}.weights.h5').write_bytes(b'')
    (tmp_path / 'b.json').write_text('{}')               # a card without weights: not a model
    found = [os.path.basename(p) for p in earlier_models(str(tmp_path))]
    assert found == ['a.json', 'tinyqn.json', 'checkpoint.json']
    (tmp_path / 'a.json').unlink()      # weights whose first save was killed before the JSON
    assert os.path.basename(earlier_models(str(tmp_path))[0]) == 'a.weights.h5'
    (tmp_path / 'a.weights.h5').unlink()
    assert os.path.basename(earlier_models(str(tmp_path))[0]) == 'tinyqn.json'
    (tmp_path / 'checkpoint.json').unlink()
    (tmp_path / 'tinyqn.json').unlink()
    found = [os.path.basename(p) for p in earlier_models(str(tmp_path))]
    assert found == ['tinyqn.weights.h5', 'checkpoint.weights.h5']


def test_a_model_may_not_be_named_as_the_checkpoint():
    """--name checkpoint would write the finished model over the run's best checkpoint
    (and a later run would take it for one): refused before the work, other names kept."""
    import argparse
    from lbgnet.config import ConfigError, load_config
    from lbgnet.scripts.lbg_train import model_name
    config = load_config()
    with pytest.raises(ConfigError, match="model name 'checkpoint' .* is the name of the "
                       r"run's best checkpoint \(checkpoint\.weights\.h5"):
        model_name(argparse.Namespace(name='checkpoint', config='x.yaml'), config)
    assert model_name(argparse.Namespace(name='checkpoint2', config='x.yaml'),
                      config) == 'checkpoint2'


def test_worker_processes_train_the_same_network(tmp_path):
    """--worker-processes simulates the same batches as threads (each epoch's stream reaches
    the processes): same seed, bit-identical weights and history."""
    from lbgnet.io.modelfile import load_model
    from lbgnet.scripts.lbg_train import main
    cfg_path = tmp_path / 'tiny.yaml'
    cfg_path.write_text(TRAIN_YAML)
    weights, histories = [], []
    for tag, extra in (('threads', []), ('processes', ['--worker-processes'])):
        out = tmp_path / tag
        assert main(['--config', str(cfg_path), '--outdir', str(out), '--verbose', '0',
                     '--workers', '2'] + extra) == 0
        weights.append(load_model(str(out / 'tiny.weights.h5'))[0].get_weights())
        histories.append((out / 'history.csv').read_text())
    assert len(weights[0]) == len(weights[1])
    assert all(np.array_equal(a, b) for a, b in zip(*weights))
    assert histories[0] == histories[1]
