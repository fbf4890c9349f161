"""desi_lbg_train: defects found by a user-level review (each test failed on the code it was
written against): options and configuration values that were ignored,
refused for no reason, or crash instead of a one-line error."""
import dataclasses
import math
import os

import numpy as np
import pytest

from lbgnet.config import ConfigError

from lbg_testdata import TRAIN_YAML


def _with_training(config, **training):
    """`config` with a small training section plus `training` (source named for errors)."""
    section = dict({'epochs': 2, 'batch_size': 64, 'learning_rate': 1e-3, 'patience': 2,
                    'monitor': 'val_score', 'seed': 1}, **training)
    return dataclasses.replace(config, extra=dict(config.extra, training=section),
                               source='review-config.yaml')


@pytest.mark.parametrize('monitor', [['val_score'], {'val_score': 1}])
def test_monitor_of_a_wrong_type_is_a_config_error(config, monitor):
    """training.monitor given as a YAML list or mapping is a one-line ConfigError naming
    the file and the key (it raised TypeError: unhashable type, a traceback out of
    desi_lbg_train)."""
    from lbgnet.train import training_options
    with pytest.raises(ConfigError, match='review-config.yaml: training.monitor'):
        training_options(_with_training(config, monitor=monitor))


def test_cosine_time_in_the_config_takes_max_minutes_from_the_command_line(config):
    """A configuration with lr_schedule: cosine_time and the budget given as
    --max-minutes is a valid run (doc: "cosine_time, with --max-minutes"); it was
    refused with 'training.lr_schedule cosine_time needs max_minutes' because the
    configuration is checked alone before the command-line values are applied."""
    from lbgnet.train import training_options
    opts = training_options(_with_training(config, lr_schedule='cosine_time'), max_minutes=3.0)
    assert opts['lr_schedule'] == 'cosine_time' and opts['max_minutes'] == 3.0


def test_the_configs_time_budget_can_be_lifted_from_the_command_line(tmp_path):
    """A configuration with training.max_minutes (the shipped lbgnet-default: 40) can be
    run without a time limit from the command line, for a seeded, reproducible run
    (doc/model.rst: a run stopped by --max-minutes is not bit-reproducible).  Every
    spelling was refused, --max-minutes 0 with '--max-minutes: must be > 0 (leave it out
    for no limit)', and leaving it out gives the configuration's 40 minutes."""
    from lbgnet.scripts.lbg_train import parse, training_setup
    cfg = tmp_path / 'budget.yaml'
    cfg.write_text(TRAIN_YAML.replace('seed: 5}', 'seed: 5, max_minutes: 40}'))
    lifted = []
    for value in ('0', 'inf', 'none'):
        try:
            _, opts, _ = training_setup(parse(['--config', str(cfg), '--outdir', 'o',
                                               '--max-minutes', value]))
        except (SystemExit, ConfigError):
            continue
        lifted.append(opts['max_minutes'] is None or math.isinf(opts['max_minutes']))
    assert any(lifted), 'no --max-minutes value removes the configuration\'s time budget'


@pytest.mark.parametrize('extra', [['--unfreeze-lr-factor', '0.5'],
                                   ['--freeze', '1', '--unfreeze-lr-factor', '0.5']])
def test_unfreeze_lr_factor_without_unfreeze_epochs_is_refused(extra, capsys):
    """--unfreeze-lr-factor without --unfreeze-epochs has no effect (there is no unfrozen
    phase) and was accepted without a word, as --init-layers without --init-from used to
    be; the card then records a factor that was never applied."""
    from lbgnet.scripts.lbg_train import parse
    with pytest.raises(SystemExit) as exc:
        parse(['--config', 'x.yaml', '--outdir', 'o'] + extra)
    assert exc.value.code == 2 and '--unfreeze-lr-factor' in capsys.readouterr().err


@pytest.mark.parametrize('extra', [['--init-from', 'm.weights.h5'], ['--freeze', '2'],
                                   ['--init-from', 'm.weights.h5', '--init-layers', 'conv']])
def test_validation_only_refuses_training_options(extra, capsys):
    """--validation-only trains nothing: --init-from / --freeze were silently ignored
    (not even checked), while --train-dir and --val-dir are refused with it."""
    from lbgnet.scripts.lbg_train import parse
    with pytest.raises(SystemExit) as exc:
        parse(['--config', 'x.yaml', '--outdir', 'o', '--validation-only'] + extra)
    assert exc.value.code == 2 and '--validation-only' in capsys.readouterr().err


def test_the_simulators_generator_batch_size_is_not_silently_ignored(tmp_path, monkeypatch,
                                                                     caplog):
    """training.simulation's generator.batch_size / batches_per_epoch (set in the shipped
    lbgnet-mock.yaml, under 'In-memory training generator') are replaced by
    training.batch_size and ntrain // batch_size without a word: a researcher who edits
    them changes nothing.  They must either be used or named in a warning."""
    import lbgnet.transfer
    from lbgnet.scripts.lbg_train import main
    (tmp_path / 'my-mock.yaml').write_text('base: lbgnet-mock.yaml\n'
                                           'generator: {batch_size: 77, batches_per_epoch: 3}\n')
    cfg = tmp_path / 'tiny.yaml'
    cfg.write_text(TRAIN_YAML.replace('simulation: lbgnet-mock.yaml', 'simulation: my-mock.yaml'))
    used = {}

    def stop(model, train_data, val_data, config, outdir, steps_per_epoch, **kwargs):
        used.update(batch_size=train_data.batches.batch_size, batches=steps_per_epoch)
        raise ConfigError('stopped before fitting (test)')
    monkeypatch.setattr(lbgnet.transfer, 'fit_in_phases', stop)
    assert main(['--config', str(cfg), '--outdir', str(tmp_path / 'run'), '--nval', '20',
                 '--verbose', '0', '--workers', '1']) == 1
    assert used, 'the run did not reach the fit'
    warned = 'generator.batch_size' in caplog.text or 'generator.batches_per_epoch' in caplog.text
    assert warned or used == {'batch_size': 77, 'batches': 3}


def test_a_run_worse_than_its_starting_weights_is_said(caplog):
    """A run continued with --init-from whose best epoch scores below the weights it started
    from ended with a worse model and no word (review 2026-12-05)."""
    import logging
    from lbgnet.scripts.lbg_train import compare_with_start
    with caplog.at_level(logging.WARNING):
        assert compare_with_start(0.5, {'monitor': 'val_score', 'best': 0.4}, 'a.weights.h5') == 0.5
    assert ('the starting network (the layers loaded from --init-from a.weights.h5, any others '
            'initialised from the seed) scored val_score 0.5000') in caplog.text
    assert 'better than this run\'s best epoch (0.4000)' in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert compare_with_start(0.3, {'monitor': 'val_score', 'best': 0.4}, 'a') == 0.3
        assert compare_with_start(float('nan'), {'monitor': 'val_score', 'best': 0.4}, 'a') is None
        assert compare_with_start(None, {'monitor': 'val_score', 'best': 0.4}, 'a') is None
    assert caplog.text == ''


def test_a_stopped_run_says_where_its_best_checkpoint_is(tmp_path, monkeypatch, caplog):
    """A training stopped by a signal said only 'removing temporary outputs': it now names
    the checkpoint it keeps, its epoch and score, and how to continue (review 2026-12-05);
    an earlier run's checkpoint (older than this run) is not announced."""
    import json
    import logging
    import time
    import pytest
    from lbgnet.io.atomic import Terminated
    from lbgnet.scripts import lbg_train
    def stopped(args, log, t_start):          # the run wrote a checkpoint, then the signal
        (tmp_path / 'checkpoint.json').write_text(json.dumps({'metadata': {'checkpoint': {
            'epoch': 7, 'monitor': 'val_score', 'value': 0.8125}}}))
        raise Terminated(143)
    monkeypatch.setattr(lbg_train, '_train', stopped)
    with caplog.at_level(logging.INFO), pytest.raises(Terminated):
        lbg_train.main(['--config', 'lbgnet-default.yaml', '--outdir', str(tmp_path)])
    assert (f'the best checkpoint so far (epoch 7, val_score 0.8125) is kept in '
            f'{tmp_path / "checkpoint.weights.h5"}; continue with --init-from it into another '
            '--outdir') in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        lbg_train.say_checkpoint(str(tmp_path), time.time() + 60)
        lbg_train.say_checkpoint(str(tmp_path / 'none'), 0)
    assert caplog.text == ''


def test_validation_set_of_another_simulator_is_warned_and_recorded(tmp_path, caplog):
    """A --val-dir simulated by another simulator version (SIMHASH) chose the thresholds
    on other spectra without a word, and the card's simulator_hash (this training's) was
    documented as the validation set's too: a warning names both hashes, and the card
    records the validation files' own (validation_simulator_hash)."""
    import fitsio
    import logging
    from lbgnet.scripts.lbg_train import validation_simulators, warn_other_simulator
    from lbgnet.sim.mock import load_mock_setup, simulator_hash
    setup = load_mock_setup('lbgnet-mock.yaml')
    mine = simulator_hash(setup)
    paths = []
    for name, value in (('a', 'feedfacefeedface'), ('b', mine), ('c', None)):
        path = str(tmp_path / f'coadd-{name}.fits')
        fitsio.write(path, None, header={'SIMHASH': value} if value else {}, clobber=True)
        paths.append(path)
    assert validation_simulators(paths) == sorted(['feedfacefeedface', mine])
    with caplog.at_level(logging.WARNING):
        warn_other_simulator(paths, setup, 'vdir')
    assert (f'--val-dir vdir was simulated by another simulator (SIMHASH feedfacefeedface) '
            f'than this training ({mine})') in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        warn_other_simulator(paths[1:], setup, 'vdir')
    assert 'another simulator' not in caplog.text


def test_a_validation_set_stopped_while_written_is_written_again(tmp_path):
    """check_validation_kept passes the files of the set this run writes (same VALNSPEC,
    VALNFILE, VALSEED, SIMHASH) also when fewer than VALNFILE are there (a run stopped
    while writing it could not be resumed: 'holds another validation set'); a file of
    another set is refused, naming how many files are there."""
    import fitsio
    from lbgnet.io import InputFileError
    from lbgnet.scripts.lbg_train import check_validation_kept
    from lbgnet.sim.mock import load_mock_setup, simulator_hash
    setup = load_mock_setup('lbgnet-mock.yaml')
    stamp = {'VALNSPEC': 1200, 'VALNFILE': 2, 'VALSEED': 3, 'SIMHASH': simulator_hash(setup)}
    fitsio.write(str(tmp_path / 'coadd-a.fits'), None, header=stamp, clobber=True)
    check_validation_kept(str(tmp_path), 1200, 3, setup)          # one of its two files
    check_validation_kept(str(tmp_path / 'none'), 1200, 3, setup)  # nothing there
    with pytest.raises(InputFileError) as err:
        check_validation_kept(str(tmp_path), 1200, 4, setup)
    assert str(err.value).startswith(f'{tmp_path}: holds another validation set (1 coadd '
                                     'file(s); VALNSPEC 1200, VALNFILE 2, VALSEED 3')
    assert str(err.value).endswith('use --overwrite to replace it, or another --outdir')


def test_validation_streams_are_never_training_streams():
    """numpy pads a short seed with zeros, so the validation stream (seed + 10000, file)
    was batch 0 of epoch `file` of a run with seed seed + 10000: objects of the validation
    set trained on.  The validation streams are now apart from every training stream."""
    from lbgnet.scripts.lbg_train import VALIDATION_SEED_OFFSET, validation_rng
    from lbgnet.sim.generator import MockBatches
    gen = MockBatches.__new__(MockBatches)
    gen.seed = 1 + VALIDATION_SEED_OFFSET
    for ifile in range(4):
        val = validation_rng(1, ifile).random(8)
        assert not np.array_equal(gen.rng(ifile, 0).random(8), val)
        assert not np.array_equal(gen.rng(ifile, 1).random(8), val)
    assert not np.array_equal(validation_rng(1, 0).random(8), validation_rng(1, 1).random(8))


def test_the_card_records_which_simulator_configuration_trained_it(tmp_path, monkeypatch):
    """A fine-tuning on a custom simulator configuration (simulation.rmag_range changed)
    left a card that named it only as 'bright-mock.yaml', with the SIMHASH of the default
    simulator (magnitude ranges and class mixes are left out of it): the card of the model
    and of its checkpoint now record the file read, the fingerprint of its whole content
    (lbgnet.tune.simulation_hash) and the magnitude range and class mix drawn."""
    import types
    from lbgnet.config import load_config
    from lbgnet.scripts.lbg_train import checkpoint_card, model_card
    from lbgnet.sim.generator import MockBatches
    from lbgnet.sim.mock import load_mock_setup, simulator_hash
    from lbgnet.tune import simulation_hash
    cfgdir = tmp_path / 'cfg'
    cfgdir.mkdir()
    (cfgdir / 'bright-mock.yaml').write_text('base: lbgnet-mock.yaml\n'
                                              'simulation: {rmag_range: [20.0, 25.0]}\n')
    monkeypatch.chdir(tmp_path)
    bright = load_mock_setup(str(cfgdir / 'bright-mock.yaml'))
    default = load_mock_setup('lbgnet-mock.yaml')
    assert simulator_hash(bright) == simulator_hash(default)     # why the hash is not enough
    config = load_config('lbgnet-default.yaml')
    args = types.SimpleNamespace(val_dir=str(tmp_path), init_from=None)
    opts = {'seed': 1, 'simulation': 'bright-mock.yaml'}
    thresholds = (0.5, 1, {})
    cards = {}
    for name, setup in (('bright', bright), ('default', default)):
        batches = MockBatches(setup, batch_size=4, batches_per_epoch=1, seed=1)
        card = model_card(args, config, opts, batches, [], {}, thresholds, {}, {}, 1.0,
                          setup=setup)
        assert checkpoint_card(setup)['training']['simulation'] == card['training']['simulation']
        cards[name] = card['training']['simulation']
    assert cards['bright'] == {
        'file': str(cfgdir / 'bright-mock.yaml'), 'config_hash': simulation_hash(bright),
        'rmag_range': [20.0, 25.0],
        'class_fractions': {'LBG': 0.5, 'QSO': 0.2, 'GALAXY': 0.2, 'STAR': 0.1}}
    assert cards['default']['rmag_range'] == [22.0, 25.0]
    assert cards['default']['file'].endswith(os.path.join('etc', 'lbgnet-mock.yaml'))
    assert cards['default']['config_hash'] != cards['bright']['config_hash']
