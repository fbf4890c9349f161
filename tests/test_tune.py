"""Hyper-parameter search: search space, two tiny trials, resumption, results files, CLI."""
import csv
import dataclasses
import os
import re

import numpy as np
import pytest

from lbgnet.config import ConfigError, LineList, load_config
from lbgnet.example import example_spectra
from lbgnet.model import build_model
from lbgnet.preprocess import grid_spectra
from lbgnet.tune import (Objective, TuneData, config_for_params, default_nboxes,
                         finished_trials, open_study, run_study, search_space, write_results)

MODEL = dict(channels=['flux', 'snr'], conv_layers=2, filters=8, kernel_size=5, strides=2,
             padding='same', dropout=0.0, dense_units=16, offset_margin=0.1, snr_softening=5.0)
TUNE = {'conv_layers': [1, 2], 'filters': [4, 8], 'kernel_size': [3, 7], 'nboxes': [20, 40],
        'learning_rate': [1e-3, 1e-2], 'dropout': 0.0, 'gamma': [0.5, 2.0]}


def tiny_config(config, **tune):
    """Two lines only (fast graphs), LBG line list subset."""
    lines = LineList(('LYA', 'CIV'), (1215.67, 1549.48))
    extra = dict(config.extra, name='tiny', model=MODEL, loss={'gamma': 1.0, 'pos_weight': 'balanced'},
                 training={'batch_size': 64, 'learning_rate': 1e-3, 'patience': 3},
                 tune=dict(TUNE, **tune))
    return dataclasses.replace(config, lines=lines, extra=extra, source='tune-test-config')


def tiny_data(config, n, seed):
    """Example spectra: every other one has Lya emission (class LBG)."""
    wave, flux, ivar, z = example_spectra(config, n, np.random.default_rng(seed))
    bands = list(wave)
    X, _, _ = grid_spectra([wave[b] for b in bands], [flux[b] for b in bands],
                           [ivar[b] for b in bands], config.grid)
    truth = {'CLASS': np.where(np.isfinite(z), 'LBG', 'STAR'), 'Z_TRUE': np.nan_to_num(z),
             'RMAG': np.full(n, 23.0)}
    return X, truth


def test_search_space_and_config_for_params(config):
    cfg = tiny_config(config)
    space = search_space(cfg)
    assert space['conv_layers'] == ('int', 1, 2, False)
    assert space['filters'] == ('int', 4, 8, True)
    assert space['nboxes'] == ('choice', [20, 40]) and space['dropout'] == ('fixed', 0.0)
    # default nboxes: divisors of nbins with 80-320 A boxes
    full = search_space(load_config('lbgnet-default.yaml'))
    assert full['nboxes'][0] == 'choice' and config.nboxes in full['nboxes'][1]
    assert all(80 <= config.grid.nbins * config.grid.dwave / n <= 320 for n in default_nboxes(config))
    params = {'conv_layers': 6, 'filters': 24, 'kernel_size': 7, 'learning_rate': 2e-3,
              'dropout': 0.1, 'nboxes': 25, 'gamma': 3.0}
    new = config_for_params(cfg, params)
    assert new.nboxes == 25 and new.extra['loss']['gamma'] == 3.0
    assert new.extra['model']['strides'] == [2, 2, 2, 2, 1, 1]
    assert new.extra['training']['learning_rate'] == 2e-3
    model = build_model(new)
    assert model.get_layer('conv_6').kernel.shape == (7, 24, 24)
    assert model.output_shape == (None, 2, 25, 2)
    with pytest.raises(ConfigError, match='unknown tune'):
        search_space(tiny_config(config, depth=[1, 2]))
    with pytest.raises(ConfigError, match='do not divide'):
        search_space(tiny_config(config, nboxes=[30]))
    # values that could not build a network, or are not numbers: one line naming the key
    for tune, match in (({'conv_layers': [2, 'x']}, "tune.conv_layers values must be integers, not 'x'"),
                        ({'nboxes': 'abc'}, "tune.nboxes values must be integers, not 'abc'"),
                        ({'dropout': [0.5, 2.0]}, r'tune.dropout value 2.0 is outside \[0, 1\)'),
                        ({'filters': [8, 16.5]}, 'tune.filters values must be integers'),
                        ({'gamma': {'choices': [1.0, -1.0]}}, r'tune.gamma value -1.0 is outside'),
                        ({'learning_rate': 0}, r'tune.learning_rate value 0 is outside \(0, inf\)'),
                        ({'kernel_size': [3, 5, 7]}, 'tune.kernel_size must be a .low, high. pair')):
        with pytest.raises(ConfigError, match=match):
            search_space(tiny_config(config, **tune))


def test_two_trials_then_resume_with_a_third(tmp_path, config):
    cfg = tiny_config(config)
    X, truth = tiny_data(cfg, 256, 1)
    Xv, truth_v = tiny_data(cfg, 96, 2)
    data = TuneData(X, {k: truth[k] for k in ('CLASS', 'Z_TRUE')}, Xv, truth_v)
    storage = f'sqlite:///{tmp_path / "study.sqlite3"}'
    objective = Objective(cfg, data, str(tmp_path / 'work'), epochs=2, seed=3)
    study = open_study(storage, 'tiny-study', seed=3, startup_trials=2, prune=False)
    assert run_study(study, objective, 2) == 2
    first = [dict(t.params) for t in study.trials]
    assert len(finished_trials(study)) == 2 and 0.0 <= study.best_value <= 1.0
    best = study.best_trial
    assert set(best.params) == {'conv_layers', 'filters', 'kernel_size', 'nboxes',
                                'learning_rate', 'gamma'}
    assert best.user_attrs['nparams'] > 0 and best.user_attrs['epochs_run'] == 2
    assert best.user_attrs['best_epoch'] in (1, 2)      # the epoch whose weights are scored
    assert best.value == pytest.approx(np.nanmean([best.user_attrs[f'score_{r}']
                                                   for r in ('lowz', 'midz', 'highz')
                                                   if best.user_attrs[f'score_{r}'] is not None]))
    # a new process: the same storage resumes the same study and runs only the missing trial
    study2 = open_study(storage, 'tiny-study', seed=3, startup_trials=2, prune=False)
    assert len(study2.trials) == 2
    assert run_study(study2, objective, 3) == 1
    assert len(study2.trials) == 3 and [dict(t.params) for t in study2.trials[:2]] == first
    assert run_study(study2, objective, 3) == 0
    (tmp_path / 'tiny.yaml').write_text(TUNE_YAML)
    paths = write_results(study2, cfg, str(tmp_path / 'tiny.yaml'), str(tmp_path / 'out'))
    rows = list(csv.DictReader(open(paths['table'])))
    assert [int(r['trial']) for r in rows] == [0, 1, 2]
    assert all(r['state'] == 'COMPLETE' for r in rows) and rows[0]['score_lowz'] != ''
    text = open(paths['best']).read()
    assert text.startswith('# Best configuration') and 'base:' in text
    assert load_config(paths['best']).extra['name'] == 'tiny-study-best'    # base_sha256 holds
    import yaml
    best_yaml = yaml.safe_load(text)
    assert best_yaml['nboxes'] == study2.best_params['nboxes']
    assert best_yaml['model']['conv_layers'] == study2.best_params['conv_layers']
    assert best_yaml['loss']['gamma'] == pytest.approx(study2.best_params['gamma'])


TUNE_YAML = """
base: lbgnet-base.yaml
name: tinytune
model: {channels: [flux, snr], conv_layers: 1, filters: 4, kernel_size: 5, strides: 4,
        padding: same, dropout: 0.0, dense_units: 8, offset_margin: 0.1, snr_softening: 5.0}
loss: {gamma: 1.0, pos_weight: balanced}
training: {simulation: lbgnet-mock.yaml, batch_size: 64, learning_rate: 1.0e-3, patience: 2}
target: {lines: {LYA: 1215.67, CIV: 1549.48}}
tune: {conv_layers: 1, filters: [4, 6], kernel_size: 5, nboxes: [40], dropout: 0.0,
       learning_rate: 1.0e-3, gamma: 1.0}
"""


def test_storage_label_hides_passwords_and_resolves_sqlite_paths(tmp_path, monkeypatch):
    """The best file names its storage without the password, and one SQLite database
    written as a relative or absolute URL is one storage (it was refused as another)."""
    from lbgnet.tune import storage_label
    label = storage_label('postgresql://desi:S3cretPassw0rd@db.nersc.gov/tune')
    assert 'S3cret' not in label and label.startswith('postgresql://desi:')
    monkeypatch.chdir(tmp_path)
    assert storage_label('sqlite:///study.sqlite3') == \
        storage_label(f'sqlite:///{tmp_path / "study.sqlite3"}')


def test_tune_script_needs_an_outdir():
    """Without --outdir the results would land in the package's etc/: refused."""
    from lbgnet.scripts.lbg_tune import parse
    with pytest.raises(SystemExit):
        parse(['--config', 'lbgnet-default.yaml', '--trials', '1'])
    assert parse(['--config', 'x.yaml', '--trials', '1', '--outdir', 'out']).outdir == 'out'


def test_tune_script_writes_table_and_best_config(tmp_path, caplog):
    import logging
    from lbgnet.scripts.lbg_tune import main
    cfg_path = tmp_path / 'tinytune.yaml'
    cfg_path.write_text(TUNE_YAML)
    args = ['--config', str(cfg_path), '--trials', '1', '--ntrain', '128', '--nval', '60',
            '--trial-epochs', '1', '--workdir', str(tmp_path / 'work'), '--outdir', str(tmp_path),
            '--startup-trials', '1', '--batch-size', '32']
    assert main(args) == 0
    assert (tmp_path / 'work' / 'study.sqlite3').exists()
    # the validation set of this --nval/--seed/simulator, complete (no temporary directory
    # left); the trials' folders under the study's name
    val_dirs = [d for d in os.listdir(tmp_path / 'work') if d.startswith('validation-')]
    assert len(val_dirs) == 1 and val_dirs[0].startswith('validation-n60-seed1-sim')
    assert sorted(os.listdir(tmp_path / 'work' / val_dirs[0])) == [
        'coadd-lbgmock-dark-0.fits', 'redrock-lbgmock-dark-0.fits', 'truth-lbgmock-dark-0.fits']
    assert not [d for d in os.listdir(tmp_path / 'work') if d.startswith('.')]
    assert (tmp_path / 'work' / 'tinytune-tune' / 'trial_0000' / 'history.csv').exists()
    # the trials' checkpoints (weights and card) are not kept
    assert not [n for n in os.listdir(tmp_path / 'work' / 'tinytune-tune' / 'trial_0000')
                if n.startswith('checkpoint')]
    best = tmp_path / 'tinytune-tune-best.yaml'
    cfg = load_config(str(best))                  # base: resolved next to the best file
    assert cfg.extra['name'] == 'tinytune-tune-best' and cfg.extra['model']['filters'] in (4, 5, 6)
    # the trials' batch size (--batch-size 32; the base says 64): the retrain uses it
    assert cfg.extra['training']['batch_size'] == 32
    rows = list(csv.DictReader(open(tmp_path / 'tinytune-tune-trials.csv')))
    assert len(rows) == 1
    # every parameter of the search space has its column, the fixed ones included (optuna
    # stores only the suggested filters and nboxes)
    assert {k: rows[0][k] for k in ('conv_layers', 'kernel_size', 'dropout', 'gamma')} == \
        {'conv_layers': '1', 'kernel_size': '5', 'dropout': '0', 'gamma': '1'}
    assert rows[0]['filters'] in ('4', '5', '6')
    # the header says which epoch's weights were scored (the run's last was implied)
    assert re.search(r'epochs of tuning training \(the weights of epoch \d scored\)',
                     best.read_text())
    # resuming with another training set size would rank incomparable trials: refused
    more = ['256' if a == '128' else a for a in args]
    more[more.index('--trials') + 1] = '2'
    assert main(more) == 1
    assert len(list(csv.DictReader(open(tmp_path / 'tinytune-tune-trials.csv')))) == 1
    # results that cannot be written (a directory in the way): one line; the study is kept
    blocked = tmp_path / 'blocked'
    (blocked / 'tinytune-tune-trials.csv').mkdir(parents=True)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main([str(blocked) if a == str(tmp_path) else a for a in args]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(f'--outdir {blocked}: cannot write')
    assert 'Traceback' not in caplog.text
    # the best file names its study's storage; another study of the same name (another
    # --workdir) into the same --outdir is refused before any work, not written over it
    storage = f'sqlite:///{tmp_path / "work" / "study.sqlite3"}'
    assert f'# study storage: {storage}\n' in best.read_text()
    caplog.clear()
    other = [str(tmp_path / 'work2') if a == str(tmp_path / 'work') else a for a in args]
    assert main(other) == 1
    assert (f'tinytune-tune-best.yaml holds the results of the study \'tinytune-tune\' in '
            f'{storage}') in caplog.text
    assert not (tmp_path / 'work2' / 'study.sqlite3').exists()
    bad = tmp_path / 'bad.yaml'
    bad.write_text(TUNE_YAML.replace('nboxes: [40]', 'nboxes: [33]'))
    assert main(['--config', str(bad), '--trials', '1', '--workdir', str(tmp_path / 'w2'),
                 '--outdir', str(tmp_path)]) == 1


def test_study_settings_recorded_and_checked(caplog):
    """A study keeps the settings its trials depend on; an older study without them gets
    the current ones (with a warning); another setting is then refused."""
    import logging
    import optuna
    from lbgnet.config import ConfigError
    from lbgnet.tune import check_study_settings
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction='maximize')
    study.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=1)     # an "older" study
    with caplog.at_level(logging.INFO):
        check_study_settings(study, {'ntrain': 128}, 'mem')
    assert 'were not recorded' in caplog.text and study.user_attrs['settings'] == {'ntrain': 128}
    check_study_settings(study, {'ntrain': 128}, 'mem')
    with pytest.raises(ConfigError, match=r'ntrain=128; this run asks for ntrain=256'):
        check_study_settings(study, {'ntrain': 256}, 'mem')


def test_unfinished_study_takes_the_new_settings(caplog):
    """A first run that failed before any trial finished (a typo in --val-dir, a failed
    trial) does not lock its settings in: the corrected rerun replaces them."""
    import logging
    import optuna
    from lbgnet.tune import check_study_settings
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction='maximize')
    check_study_settings(study, {'val_dir': '/data/vall'}, 'mem')        # the failed run
    with caplog.at_level(logging.INFO):
        check_study_settings(study, {'val_dir': '/data/val'}, 'mem')
    assert study.user_attrs['settings'] == {'val_dir': '/data/val'}
    assert "no trial has finished yet; replacing the recorded val_dir='/data/vall'" in caplog.text

    def fails(trial):
        raise RuntimeError('bad --trial-minutes')
    study.optimize(fails, n_trials=1, catch=(RuntimeError,))            # a FAIL trial
    check_study_settings(study, {'val_dir': '/data/v2'}, 'mem')
    assert study.user_attrs['settings'] == {'val_dir': '/data/v2'}
    study.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=1)    # a finished trial
    with pytest.raises(ConfigError, match=r"val_dir='/data/v2'; this run asks for "
                       r"val_dir='/data/val' \(its 1 finished trial\(s\) could not be ranked"):
        check_study_settings(study, {'val_dir': '/data/val'}, 'mem')


@pytest.mark.parametrize('flags', [['--trial-minutes', '-1'], ['--trial-minutes', '0'],
                                   ['--trial-minutes', 'nan'], ['--budget-minutes', '-1'],
                                   ['--budget-minutes', 'inf'], ['--startup-trials', '-1'],
                                   ['--study-name', '../escape'], ['--study-name', '..'],
                                   ['--study-name', ' ']])
def test_tune_script_rejects_bad_numbers(flags, capsys):
    """Also a --study-name that is a path: it names the trials' folder and the result
    files, which it wrote outside --workdir and --outdir."""
    from lbgnet.scripts.lbg_tune import parse
    with pytest.raises(SystemExit) as exc:
        parse(['--config', 'x.yaml', '--trials', '1', '--outdir', 'out'] + flags)
    assert exc.value.code == 2 and f'{flags[0]} must be' in capsys.readouterr().err
    ok = parse(['--config', 'x.yaml', '--trials', '1', '--outdir', 'out', '--startup-trials', '0',
                '--trial-minutes', '0.5', '--budget-minutes', '3'])
    assert ok.startup_trials == 0 and ok.trial_minutes == 0.5 and ok.budget_minutes == 3.0


def test_tune_script_checks_paths_and_storage_first(tmp_path, caplog):
    """An unusable --outdir, --workdir or --storage: one line naming it, before the study
    is opened and before any data are simulated."""
    import logging
    from lbgnet.scripts.lbg_tune import main
    cfg_path = tmp_path / 'tinytune.yaml'
    cfg_path.write_text(TUNE_YAML)
    afile = tmp_path / 'afile'
    afile.write_text('keep')
    args = ['--config', str(cfg_path), '--trials', '1', '--ntrain', '128', '--nval', '60',
            '--trial-epochs', '1', '--startup-trials', '1']
    for extra, named in (
            (['--workdir', str(tmp_path / 'w1'), '--outdir', str(afile / 'out')], '--outdir'),
            (['--workdir', str(afile / 'w'), '--outdir', str(tmp_path / 'out')], '--workdir'),
            (['--workdir', str(tmp_path / 'w3'), '--outdir', str(tmp_path / 'out'),
              '--storage', 'nosuchdb://x'], '--storage nosuchdb://x: cannot open'),
            # a password in the URL is not printed (it was, in this line)
            (['--workdir', str(tmp_path / 'w7'), '--outdir', str(tmp_path / 'out'),
              '--storage', 'nosuchdb://user:s3cret@host/db'],
             '--storage nosuchdb://user:***@host/db: cannot open'),
            (['--workdir', str(tmp_path / 'w8'), '--outdir', str(tmp_path / 'out'),
              '--storage', 'postgresql://user:s3cret@host:abc/db'],      # does not parse
             '--storage postgresql://user:***@host:abc/db: cannot open'),
            (['--workdir', str(tmp_path / 'w4'), '--outdir', str(tmp_path / 'out'),
              '--storage', f'sqlite:///{afile}'], 'file is not a database'),
            # a file path for a URL: told how to write it
            (['--workdir', str(tmp_path / 'w6'), '--outdir', str(tmp_path / 'out'),
              '--storage', str(tmp_path / 'plain.db')],
             f'a database file is given as sqlite:///{tmp_path / "plain.db"}'),
            # a mistyped --val-dir: named as missing, not as a change of the study's settings
            (['--workdir', str(tmp_path / 'w5'), '--outdir', str(tmp_path / 'out'),
              '--val-dir', str(tmp_path / 'val3000')], f'{tmp_path / "val3000"}: no such directory')):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert main(args + extra) == 1, extra
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and named in errors[0] and '\n' not in errors[0], errors
        assert 's3cret' not in caplog.text
    assert not (tmp_path / 'w1' / 'study.sqlite3').exists()
    assert not (tmp_path / 'w5' / 'study.sqlite3').exists()     # checked before the study
    assert not any('validation' in d for w in ('w1', 'w3', 'w4') if (tmp_path / w).is_dir()
                   for d in os.listdir(tmp_path / w))
    assert afile.read_text() == 'keep'
    # the failed runs left no empty --outdir or --workdir behind (they did)
    assert sorted(os.listdir(tmp_path)) == ['afile', 'tinytune.yaml']


def test_study_records_its_search_space(caplog):
    """An edited tune section is another search space: a resume is refused once trials
    finished (the best configuration was rebuilt from the new space: a KeyError for a
    parameter fixed before and searched now, the new fixed value for one searched before);
    a record without the space (older lbgnet) gets it added."""
    import dataclasses
    import logging
    import optuna
    from lbgnet.config import ConfigError, load_config
    from lbgnet.tune import check_study_settings, space_record
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = load_config('lbgnet-default.yaml')
    fixed = dataclasses.replace(base, extra=dict(base.extra, tune={'gamma': 1.0}))
    study = optuna.create_study(direction='maximize')
    check_study_settings(study, {'ntrain': 128}, 'mem')                  # an older record
    study.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=1)
    with caplog.at_level(logging.INFO):
        check_study_settings(study, {'ntrain': 128, 'search_space': space_record(fixed)}, 'mem')
    assert 'recording search_space, not recorded' in caplog.text
    assert study.user_attrs['settings']['search_space']['gamma'] == ['fixed', 1.0]
    check_study_settings(study, {'ntrain': 128, 'search_space': space_record(fixed)}, 'mem')
    with pytest.raises(ConfigError, match=r"search_space.gamma=\['fixed', 1.0\]; this run asks "
                       r"for search_space.gamma=") as err:
        check_study_settings(study, {'ntrain': 128, 'search_space': space_record(base)}, 'mem')
    # only the entries that changed are named (both whole spaces were printed: 600+ chars)
    assert 'filters' not in str(err.value) and len(str(err.value)) < 300, str(err.value)


def test_trial_whose_signal_a_library_replaced_ends_the_run_as_the_signal(tmp_path,
                                                                          monkeypatch):
    """TensorFlow, signalled while it traces, raises a TypeError in place of the handler's
    Terminated: the run still ends with Terminated (exit 128 + signum, no traceback), the
    trial marked FAIL."""
    from optuna.trial import TrialState
    from lbgnet.io import atomic
    study = open_study(f'sqlite:///{tmp_path / "study.sqlite3"}', 'replaced', seed=1,
                       startup_trials=1, prune=False)

    def objective(trial):
        if trial.number == 1:
            monkeypatch.setattr(atomic, '_received', [143])     # what the handler records
            raise TypeError('Failed to convert elements of (None, 16, 40, 1) to Tensor')
        return 0.5

    with pytest.raises(atomic.Terminated) as stop:
        run_study(study, objective, 3)
    assert stop.value.code == 143
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]


def test_trial_stopped_by_sigterm_is_failed(tmp_path):
    """SIGTERM reaches the trial as lbgnet.io.atomic.Terminated (a SystemExit), which optuna
    does not fail: the trial stayed RUNNING for good and showed in the results table."""
    from optuna.trial import TrialState
    from lbgnet.io.atomic import Terminated
    storage = f'sqlite:///{tmp_path / "study.sqlite3"}'
    study = open_study(storage, 'stopped', seed=1, startup_trials=1, prune=False)

    def objective(trial):
        if trial.number == 1:
            raise Terminated(143)
        return 0.5

    with pytest.raises(Terminated):
        run_study(study, objective, 3)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    # a stale RUNNING trial of a killed process (no heartbeat since) is failed by the next
    # run, even one with nothing left to do
    import time
    import warnings
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    with warnings.catch_warnings():                  # as open_study's, with a short grace
        warnings.simplefilter('ignore')
        quick = RDBStorage(storage, heartbeat_interval=1, grace_period=1,
                           heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                               max_retry=1))
    study2 = open_study(quick, 'stopped', seed=1, startup_trials=1, prune=False)
    with warnings.catch_warnings():          # "heartbeat ... used with Study.optimize"
        warnings.simplefilter('ignore')
        trial = study2.ask()
    quick.record_heartbeat(trial._trial_id)      # what optimize does for a live trial
    time.sleep(2.5)
    assert run_study(study2, objective, 1) == 0
    # failed, and its retry queued for the next run with trials to do
    assert [t.state for t in study2.trials][2:] == [TrialState.FAIL, TrialState.WAITING]
    # which runs it, and counts it (it counted trials added: 0, the retry being queued)
    assert run_study(study2, objective, 2) == 1
    assert [t.state for t in study2.trials][2:] == [TrialState.FAIL, TrialState.COMPLETE]


def test_trial_that_cannot_write_fails_and_ends_the_study(tmp_path):
    """A trial whose files cannot be written (full disk) is marked FAIL, the study stops
    (every later trial would fail alike) and the error is raised for one line; optuna logs
    the failure without a traceback."""
    import logging
    from optuna.trial import TrialState
    from lbgnet.io.catalog import OutputFileError
    storage = f'sqlite:///{tmp_path / "study.sqlite3"}'
    study = open_study(storage, 'full', seed=1, startup_trials=1, prune=False)

    def objective(trial):
        if trial.number == 1:
            raise OutputFileError(str(tmp_path / 'trial_0001'), 'no room for the network weights')
        return 0.5

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    optuna_log = logging.getLogger('optuna')          # optuna's loggers do not propagate
    optuna_log.addHandler(handler)
    try:
        with pytest.raises(OutputFileError, match='no room'):
            run_study(study, objective, 4)
    finally:
        optuna_log.removeHandler(handler)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    failed = [r for r in records if 'Trial 1 failed' in r.getMessage()]
    assert failed and not any(r.exc_info for r in records)        # no traceback


def test_results_of_finished_trials_are_written_when_a_signal_stops_the_study(
        tmp_path, monkeypatch, caplog):
    """A study stopped by SIGTERM/SIGINT left no trials table nor best configuration in
    --outdir, though trials had finished (review 2026-12-05)."""
    import logging
    import lbgnet.tune as tune
    from lbgnet.io.atomic import Terminated
    from lbgnet.scripts import lbg_tune
    cfg_path = tmp_path / 'tinytune.yaml'
    cfg_path.write_text(TUNE_YAML)

    space = tune.search_space(load_config(str(cfg_path)))

    def stopped(study, objective, n_trials, budget_minutes=None):
        study.optimize(lambda trial: 0.5 + 0.0 * len(tune.suggest_params(trial, space)),
                       n_trials=1)
        raise Terminated(143)
    monkeypatch.setattr(lbg_tune, 'tuning_data', lambda *args: None)
    monkeypatch.setattr(tune, 'Objective', lambda *args: None)
    monkeypatch.setattr(tune, 'run_study', stopped)
    outdir = tmp_path / 'out'
    with caplog.at_level(logging.INFO), pytest.raises(Terminated):
        lbg_tune.main(['--config', str(cfg_path), '--trials', '3', '--ntrain', '128', '--nval',
                       '60', '--trial-epochs', '1', '--workdir', str(tmp_path / 'w'),
                       '--outdir', str(outdir)])
    assert (outdir / 'tinytune-tune-trials.csv').exists()
    assert (outdir / 'tinytune-tune-best.yaml').exists()
    assert 'results of the finished trials written to' in caplog.text


def test_trials_table_value_of_a_pruned_trial_is_the_objective():
    """optuna stores a pruned trial's last report to the pruner (the score at n_thresh =
    1) as its value: the table's value column mixed two measures.  A pruned trial scored
    after its last epoch shows its mean regime score; one never scored shows nothing."""
    import optuna
    from lbgnet.tune import trials_table
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction='maximize')

    def objective(trial):
        trial.suggest_int('filters', 4, 6)
        trial.report(0.13, 0)
        if trial.number == 0:
            return 0.5
        if trial.number == 1:
            trial.set_user_attr('score_mean', 0.1786)
        raise optuna.TrialPruned()
    study.optimize(objective, n_trials=3)
    rows = trials_table(study)
    assert [r['state'] for r in rows] == ['COMPLETE', 'PRUNED', 'PRUNED']
    assert [r['value'] for r in rows] == [0.5, 0.1786, None]
