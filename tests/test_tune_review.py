"""Hyper-parameter search and experiment scripts: the study's record of the configuration
and simulator, per-study trial folders, validation targets of other target classes,
``tune`` section checks, pruning at the real last epoch, and the γ-study / results-table
scripts' handling of failures (fast: fake trainings, evaluations and trials)."""
import dataclasses
import logging
import os

import numpy as np
import pytest

from lbgnet.config import ConfigError, load_config
from lbgnet.tune import (Objective, TuneData, check_study_settings, config_for_params,
                         config_hash, open_study, search_space, suggest_params)
from test_experiments import load_bench
from test_tune import TUNE_YAML, tiny_config, tiny_data


def errors_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# --- the study records the configuration and the simulator ------------------------------

def test_config_hash_covers_the_configuration_but_not_the_searched_keys(config):
    cfg = tiny_config(config)
    ref = config_hash(cfg)

    def edited(section, **values):
        return dataclasses.replace(cfg, extra=dict(cfg.extra, **{
            section: dict(cfg.extra.get(section) or {}, **values)}))
    for other in (edited('model', dense_units=64), edited('model', channels=['flux']),
                  edited('loss', pos_weight=1.0), edited('training', patience=7),
                  edited('target', **{'class': 'QSO'}),
                  dataclasses.replace(cfg, lines=cfg.lines.__class__(('LYA',), (1215.67,)))):
        assert config_hash(other) != ref
    # what each trial sets itself, the name and the tune section (recorded on its own)
    params = {'conv_layers': 2, 'filters': 6, 'kernel_size': 7, 'learning_rate': 2e-3,
              'dropout': 0.1, 'nboxes': 20, 'gamma': 3.0}
    for same in (edited('loss', gamma=5.0), edited('training', learning_rate=1.0, epochs=3),
                 dataclasses.replace(cfg, extra=dict(cfg.extra, name='other', tune={})),
                 config_for_params(cfg, params)):
        assert config_hash(same) == ref


class FakeObjective:
    """Stands in for lbgnet.tune.Objective in desi_lbg_tune: no training, records the data."""

    calls = []

    def __init__(self, config, data, workdir, *args):
        self.space = search_space(config)
        FakeObjective.calls.append((config, data, workdir))

    def __call__(self, trial):
        suggest_params(trial, self.space)
        return 0.5


def test_resume_with_edited_config_or_simulator_is_refused(tmp_path, caplog, monkeypatch):
    """An edited base configuration or simulator configuration is another study: refused
    once trials finished (it was accepted and its trials ranked with the earlier ones).
    Another study in the same work directory with another simulator gets its own
    validation set (the cache was keyed by --nval and --seed only)."""
    from lbgnet import tune
    from lbgnet.scripts.lbg_tune import main
    monkeypatch.setattr(tune, 'Objective', FakeObjective)
    FakeObjective.calls.clear()
    cfg_path = tmp_path / 'tinytune.yaml'
    cfg_path.write_text(TUNE_YAML)
    args = ['--config', str(cfg_path), '--trials', '1', '--ntrain', '64', '--nval', '40',
            '--trial-epochs', '1', '--workdir', str(tmp_path / 'work'), '--outdir',
            str(tmp_path / 'out'), '--startup-trials', '1']
    assert main(args) == 0
    more = list(args)
    more[more.index('--trials') + 1] = '2'
    for old, new, key in (('dense_units: 8', 'dense_units: 16', 'config_hash'),
                          ('pos_weight: balanced', 'pos_weight: 2.0', 'config_hash'),
                          ('simulation: lbgnet-mock.yaml', 'simulation: lbgnet-qso-mock.yaml',
                           'simulation_hash')):
        cfg_path.write_text(TUNE_YAML.replace(old, new))
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert main(more) == 1, old
        errors = errors_of(caplog)
        assert len(errors) == 1 and f'the study was run with {key}=' in errors[0], errors
        assert 'could not be ranked with new ones' in errors[0]
    assert len(FakeObjective.calls) == 1
    # the unedited configuration resumes
    cfg_path.write_text(TUNE_YAML)
    assert main(more) == 0 and len(FakeObjective.calls) == 2
    # another study in this work directory with another simulator (the QSO mock: same
    # SIMHASH, other class mix), here a QSO finder: its own validation set, whose truth
    # keeps the classes of the files (the trials make the targets from them)
    qso = tmp_path / 'tinyqso.yaml'
    qso.write_text(TUNE_YAML.replace('name: tinytune', 'name: tinyqso').replace(
        'simulation: lbgnet-mock.yaml', 'simulation: lbgnet-qso-mock.yaml').replace(
        'target: {', 'target: {class: QSO, '))
    assert main([str(qso) if a == str(cfg_path) else a for a in args]) == 0
    val_dirs = sorted(d for d in os.listdir(tmp_path / 'work') if d.startswith('validation'))
    assert len(val_dirs) == 2 and all(d.startswith('validation-n40-seed1-sim') for d in val_dirs)
    data = FakeObjective.calls[-1][1]
    lbg_data = FakeObjective.calls[0][1]
    assert not np.array_equal(data.X_val, lbg_data.X_val)
    classes = set(np.asarray(data.truth_val['CLASS']).astype(str))
    assert {'QSO', 'LBG'} <= classes and classes <= {'QSO', 'LBG', 'GALAXY', 'STAR'}


def test_study_without_hashes_resumes_with_a_warning(caplog):
    """A study made before the hashes were recorded resumes; they are recorded then."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction='maximize')
    check_study_settings(study, {'ntrain': 128}, 'mem')
    study.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=1)
    new = {'ntrain': 128, 'config_hash': 'abc', 'simulation_hash': 'def'}
    caplog.clear()
    with caplog.at_level(logging.INFO):
        check_study_settings(study, new, 'mem')
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'recording config_hash, simulation_hash' in warnings[0]
    assert study.user_attrs['settings'] == new
    with pytest.raises(ConfigError, match="config_hash='abc'; this run asks for "
                       "config_hash='xyz'"):
        check_study_settings(study, dict(new, config_hash='xyz'), 'mem')


# --- trials: folders per study, targets of another class, pruning -------------------------

def fake_fit(calls):
    """A stand-in of lbgnet.train.fit that records its arguments and writes a history."""
    def fit(model, train_data, val_data, config, outdir, val_truth=None, **kwargs):
        os.makedirs(outdir, exist_ok=True)
        with open(os.path.join(outdir, 'history.csv'), 'w') as fx:
            fx.write(f'{len(calls)}\n')
        calls.append({'outdir': outdir, 'y_val': val_data[1], 'val_truth': val_truth})
        return {}, {'epochs_run': 1, 'best_epoch': 1, 'fit_seconds': 0.0}
    return fit


def qso_config(config):
    """The tiny tuning configuration with QSOs as the target class."""
    cfg = tiny_config(config)
    return dataclasses.replace(cfg, extra=dict(cfg.extra, target={'class': 'QSO'}))


def test_trials_of_two_studies_keep_their_folders_and_qso_targets(tmp_path, config,
                                                                  monkeypatch):
    """Two studies in one work directory wrote the same workdir/trial_<n>; the validation
    targets of a QSO finder were made from truth relabelled for the metrics (every
    spectrum a negative)."""
    from lbgnet import train
    calls = []
    monkeypatch.setattr(train, 'fit', fake_fit(calls))
    cfg = qso_config(config)
    X, truth = tiny_data(cfg, 32, 1)
    Xv, truth_v = tiny_data(cfg, 24, 2)
    truth_v = dict(truth_v, CLASS=np.where(truth_v['CLASS'] == 'LBG', 'QSO', 'STAR'))
    truth_v['CLASS'][:2] = 'LBG'                      # LBGs: contaminants of a QSO finder
    data = TuneData(X, {k: truth[k] for k in ('CLASS', 'Z_TRUE')}, Xv, truth_v)
    workdir = str(tmp_path / 'work')
    for name in ('A', 'B'):
        study = open_study(None, name, seed=1, startup_trials=1, prune=False)
        study.optimize(Objective(cfg, data, workdir, epochs=1), n_trials=1)
        assert study.trials[0].state.name == 'COMPLETE'
    assert [c['outdir'] for c in calls] == [os.path.join(workdir, n, 'trial_0000')
                                            for n in ('A', 'B')]
    assert [open(os.path.join(workdir, n, 'trial_0000', 'history.csv')).read()
            for n in ('A', 'B')] == ['0\n', '1\n']
    qsos = truth_v['CLASS'] == 'QSO'
    positive = np.any(calls[0]['y_val'][..., 0] > 0, axis=(1, 2))
    assert qsos.sum() > 2 and np.array_equal(positive, qsos)
    # the metrics count the target class as LBG, the real LBGs as contaminants
    assert np.all(calls[0]['val_truth']['CLASS'][qsos] == 'LBG')
    assert not np.any(calls[0]['val_truth']['CLASS'][~qsos] == 'LBG')


class FakeTrial:
    def __init__(self):
        self.reports = []

    def report(self, value, step):
        self.reports.append(step)

    def should_prune(self):
        return True


def test_no_pruning_at_the_last_epoch_of_a_fit_that_stops_early():
    from types import SimpleNamespace
    from lbgnet.tune import _pruning_callback
    for stopping, pruned in ((False, True), (True, False)):
        callback = _pruning_callback(FakeTrial())
        callback.set_params({'epochs': 8})
        callback.set_model(SimpleNamespace(stop_training=stopping))   # early stop / time cap
        callback.on_epoch_end(2, {'val_score': 0.3})
        assert callback.pruned is pruned
    callback = _pruning_callback(FakeTrial())
    callback.set_params({'epochs': 3})
    callback.set_model(SimpleNamespace(stop_training=False))
    callback.on_epoch_end(2, {'val_score': 0.3})                         # the planned last
    assert not callback.pruned


# --- tune section checks -----------------------------------------------------------------

@pytest.mark.parametrize('value, match', [
    ('x', "tune.strided_layers values must be integers, not 'x'"),
    (None, 'tune.strided_layers values must be integers, not None'),
    (2.5, 'tune.strided_layers values must be integers'),
    (True, 'tune.strided_layers values must be integers'),
    (-1, r'tune.strided_layers value -1 is outside \[0, inf\)')])
def test_strided_layers_is_checked(config, value, match):
    with pytest.raises(ConfigError, match=f'^tune-test-config: {match}'):
        search_space(tiny_config(config, strided_layers=value))


def test_strided_layers_values_that_work(config):
    params = {'conv_layers': 3, 'filters': 6, 'kernel_size': 5, 'learning_rate': 1e-3,
              'dropout': 0.0, 'nboxes': 20, 'gamma': 1.0}
    for value, strides in ((0, [1, 1, 1]), ('2', [2, 2, 1]), (9, [2, 2, 2])):
        cfg = tiny_config(config, strided_layers=value)
        search_space(cfg)
        assert config_for_params(cfg, params).extra['model']['strides'] == strides


def test_search_space_record_is_of_the_strides_used(config):
    """strided_layers left out or 4, '2' or 2, build the same networks: one record (a
    resume was refused)."""
    from lbgnet.tune import space_record
    assert space_record(tiny_config(config)) == space_record(tiny_config(config, strided_layers=4))
    assert space_record(tiny_config(config))['strided_layers'] is None     # as before
    assert space_record(tiny_config(config, strided_layers='2')) == \
        space_record(tiny_config(config, strided_layers=2)) != space_record(tiny_config(config))


def test_simulation_hash_follows_the_content_not_the_path():
    """The simulator file's path (relative or absolute --config, working directory) made
    another hash: an unchanged study could not be resumed; an in-place edit must."""
    import copy
    from lbgnet.sim.mock import load_mock_setup
    from lbgnet.tune import simulation_hash
    setup = load_mock_setup('lbgnet-mock.yaml')
    moved = dataclasses.replace(setup, simcfg=dict(setup.simcfg, _source='/elsewhere/x.yaml'))
    assert simulation_hash(moved) == simulation_hash(setup)
    edited = copy.deepcopy(setup.simcfg)
    edited['simulation']['class_fractions']['LBG'] = 0.3
    assert simulation_hash(dataclasses.replace(setup, simcfg=edited)) != simulation_hash(setup)


@pytest.mark.parametrize('section', [['conv_layers', 'filters'], 'conv_layers', 3])
def test_tune_section_must_be_a_mapping(config, section):
    cfg = tiny_config(config)
    cfg = dataclasses.replace(cfg, extra=dict(cfg.extra, tune=section))
    with pytest.raises(ConfigError, match='^tune-test-config: section "tune" must be a '
                       'mapping, not'):
        search_space(cfg)


def test_tune_script_tune_section_not_a_mapping_is_one_line(tmp_path, caplog):
    from lbgnet.scripts.lbg_tune import main
    bad = tmp_path / 'bad.yaml'
    bad.write_text('base: lbgnet-default.yaml\nname: tt\ntune: [conv_layers, filters]\n')
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(['--config', str(bad), '--trials', '1', '--outdir', str(tmp_path / 'o'),
                     '--workdir', str(tmp_path / 'w')]) == 1
    errors = errors_of(caplog)
    assert len(errors) == 1 and errors[0].startswith(f'{bad}: section "tune" must be')


# --- the simulated validation set --------------------------------------------------------

def test_interrupted_validation_simulation_leaves_nothing(tmp_path, monkeypatch):
    from lbgnet.scripts import lbg_train
    from lbgnet.scripts.lbg_tune import parse, study_setup, tuning_data
    from lbgnet.targets import apply_target

    def interrupted(setup, outdir, *args):
        os.makedirs(outdir)
        open(os.path.join(outdir, 'coadd-lbgmock-dark-0.fits'), 'w').close()
        raise KeyboardInterrupt
    monkeypatch.setattr(lbg_train, 'write_validation', interrupted)
    cfg_path = tmp_path / 'tinytune.yaml'
    cfg_path.write_text(TUNE_YAML)
    workdir = tmp_path / 'work'
    workdir.mkdir()
    args = parse(['--config', str(cfg_path), '--trials', '1', '--nval', '40', '--outdir',
                  str(tmp_path / 'out'), '--workdir', str(workdir)])
    config = apply_target(load_config(str(cfg_path)))
    with pytest.raises(KeyboardInterrupt):
        tuning_data(args, config, str(workdir), study_setup(args, config))
    assert os.listdir(workdir) == []


# --- benchmarks/gamma_study.py and experiment_table.py ----------------------------------

@pytest.fixture
def fake_gamma_tools(tmp_path, monkeypatch):
    """gamma_study with fake training (touches the model; fails for γ in `fail_train`),
    evaluation (fails for γ in `fail_eval`), rows and plot; returns (state, test dir)."""
    from lbgnet import experiments
    from lbgnet.scripts import lbg_train
    state = {'train': [], 'fail_train': set(), 'fail_eval': set()}
    test_dir = tmp_path / 'test'
    test_dir.mkdir()
    for kind in ('coadd', 'truth'):
        (test_dir / f'{kind}-x.fits').write_text('')

    def train(opts):
        state['train'].append(opts)
        outdir = opts[opts.index('--outdir') + 1]
        name = os.path.basename(outdir)
        if float(name[len('gamma-'):]) in state['fail_train']:
            return 1
        os.makedirs(os.path.join(outdir, 'validation'), exist_ok=True)
        open(os.path.join(outdir, f'{name}.weights.h5'), 'w').close()
        return 0

    def evaluate(model, tests, outdir, force=False):
        name = os.path.basename(outdir)
        if float(name[len('gamma-'):]) in state['fail_eval']:
            raise RuntimeError(f'desi_lbg_evaluate failed on {tests["midz"]} for {model}')
        return {}

    def row(name, model, metrics):
        return {'model': name, 'gamma': float(name[len('gamma-'):]), 'score_midz': 0.5}
    monkeypatch.setattr(lbg_train, 'main', train)
    monkeypatch.setattr(experiments, 'evaluate_model', evaluate)
    monkeypatch.setattr(experiments, 'summary_row', row)
    monkeypatch.setattr(experiments, 'plot_tradeoff', lambda rows, path, **kw: path)
    cfg = tmp_path / 'tinyg.yaml'
    cfg.write_text('base: lbgnet-default.yaml\n')
    return state, test_dir, cfg


def test_gamma_study_val_dir_among_the_train_options(tmp_path, fake_gamma_tools):
    """--val-dir after "--" was followed by --val-dir <first gamma>/validation (missing)."""
    state, test_dir, cfg = fake_gamma_tools
    study = load_bench('gamma_study')
    out = tmp_path / 'g'
    assert study.main(['--config', str(cfg), '--gammas', '0.5', '2', '--outdir', str(out),
                       '--tests', f'midz={test_dir}', '--', '--val-dir', 'VAL',
                       '--epochs', '1']) == 0
    assert [o.count('--val-dir') for o in state['train']] == [1, 1]
    assert all(o[o.index('--val-dir') + 1] == 'VAL' for o in state['train'])
    # without a --val-dir: the first gamma's validation set serves the others
    state['train'].clear()
    out2 = tmp_path / 'g2'
    assert study.main(['--config', str(cfg), '--gammas', '0.5', '2', '--outdir', str(out2),
                       '--tests', f'midz={test_dir}']) == 0
    assert '--val-dir' not in state['train'][0]
    assert state['train'][1][-2:] == ['--val-dir', str(out2 / 'gamma-0.5' / 'validation')]
    # given twice (benchmarks/run_experiments.sh): the same folder, once in the options
    state['train'].clear()
    assert study.main(['--config', str(cfg), '--gammas', '0.5', '2', '--outdir',
                       str(tmp_path / 'g3'), '--tests', f'midz={test_dir}', '--val-dir', 'VAL',
                       '--', '--val-dir=VAL']) == 0
    assert [sum(a.startswith('--val-dir') for a in o) for o in state['train']] == [1, 1]
    with pytest.raises(SystemExit):                   # two folders: which one?
        study.parse(['--config', str(cfg), '--gammas', '1', '--outdir', str(out), '--tests',
                     f'midz={test_dir}', '--val-dir', 'A', '--', '--val-dir=B'])


def test_gamma_study_goes_on_after_a_failed_gamma(tmp_path, fake_gamma_tools, caplog):
    state, test_dir, cfg = fake_gamma_tools
    state['fail_train'].add(2.0)
    state['fail_eval'].add(3.0)
    study = load_bench('gamma_study')
    out = tmp_path / 'g'
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert study.main(['--config', str(cfg), '--gammas', '0.5', '2', '3', '10',
                           '--outdir', str(out), '--tests', f'midz={test_dir}']) == 1
    errors = errors_of(caplog)
    assert len(errors) == 2 and errors[0].startswith('gamma = 2: desi_lbg_train failed')
    assert errors[1].startswith('gamma = 3: desi_lbg_evaluate failed')
    assert 'Traceback' not in caplog.text
    lines = (out / 'gamma.csv').read_text().splitlines()
    assert [line.split(',')[0] for line in lines[1:]] == ['gamma-0.5', 'gamma-10']
    assert (out / 'gamma.rst').read_text().count('   * - ') == 3       # header + 2 rows


def test_gamma_study_checks_the_test_folders_first(tmp_path, fake_gamma_tools, caplog):
    state, test_dir, cfg = fake_gamma_tools
    study = load_bench('gamma_study')
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert study.main(['--config', str(cfg), '--gammas', '0.5', '2', '--outdir',
                           str(tmp_path / 'g'), '--tests', f'midz={test_dir}',
                           f'highz={tmp_path / "tests-typo"}']) == 1
    errors = errors_of(caplog)
    assert len(errors) == 1 and errors[0].startswith(f'--tests highz={tmp_path / "tests-typo"}')
    assert state['train'] == []
    # test files gone after every gamma was evaluated on them: their metrics stand in
    import json
    out = tmp_path / 'g2'
    for name in ('gamma-0.5', 'gamma-2'):
        (out / name / 'eval-midz').mkdir(parents=True)
        (out / name / f'{name}.weights.h5').write_text('')
        (out / name / 'eval-midz' / 'metrics.json').write_text(json.dumps({'inputs': {
            'model': str(out / name / f'{name}.weights.h5'),
            'files': [str(test_dir / 'coadd-x.fits')]}}))
    for path in test_dir.iterdir():
        path.unlink()
    assert study.main(['--config', str(cfg), '--gammas', '0.5', '2', '--outdir', str(out),
                       '--tests', f'midz={test_dir}']) == 0


def break_rst_table(monkeypatch):
    """Make lbgnet.experiments.rst_table fail (a failure while a table is made)."""
    from lbgnet import experiments

    def broken(rows, columns=None):
        raise RuntimeError('broken table')
    monkeypatch.setattr(experiments, 'rst_table', broken)


def test_gamma_table_written_atomically(tmp_path, fake_gamma_tools, monkeypatch):
    """A failure while the table is made keeps the earlier gamma.rst (it was emptied)."""
    state, test_dir, cfg = fake_gamma_tools
    out = tmp_path / 'g'
    out.mkdir()
    (out / 'gamma.rst').write_text('earlier table')
    break_rst_table(monkeypatch)
    study = load_bench('gamma_study')
    with pytest.raises(RuntimeError, match='broken table'):
        study.main(['--config', str(cfg), '--gammas', '1', '--outdir', str(out), '--tests',
                    f'midz={test_dir}'])
    assert (out / 'gamma.rst').read_text() == 'earlier table'
    assert not [f for f in os.listdir(out) if f.startswith('.')]


def test_experiment_table_outdir_checked_first_and_table_atomic(tmp_path, monkeypatch,
                                                                caplog):
    from lbgnet import experiments
    calls = []
    monkeypatch.setattr(experiments, 'evaluate_model', lambda *a, **k: calls.append(a) or {})
    monkeypatch.setattr(experiments, 'summary_row', lambda name, path, metrics: {'model': name})
    table = load_bench('experiment_table')
    afile = tmp_path / 'afile'
    afile.write_text('keep')
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert table.main(['--outdir', str(afile / 'table'), '--tests', 'midz=x',
                           '--model', 'a=a.weights.h5']) == 1
    errors = errors_of(caplog)
    assert len(errors) == 1 and errors[0].startswith(f'--outdir {afile / "table"}: ')
    assert calls == [] and 'Traceback' not in caplog.text
    out = tmp_path / 't'
    out.mkdir()
    (out / 'results.rst').write_text('earlier table')
    break_rst_table(monkeypatch)
    with pytest.raises(RuntimeError, match='broken table'):
        table.main(['--outdir', str(out), '--tests', 'midz=x', '--model', 'a=a.weights.h5'])
    assert (out / 'results.rst').read_text() == 'earlier table'
    assert not [f for f in os.listdir(out) if f.startswith('.')]


def test_resume_with_other_files_in_the_val_dir_is_refused(tmp_path, caplog, monkeypatch):
    """The study recorded --val-dir's path only: files swapped in that folder scored the
    resumed trials on another validation set, ranked with the earlier ones.  The record
    now holds a digest of the files' names and contents."""
    import shutil
    import lbgnet.tune as tune
    from lbgnet.scripts.lbg_mock import main as mock_main
    from lbgnet.scripts.lbg_tune import main
    monkeypatch.setattr(tune, 'Objective', FakeObjective)
    FakeObjective.calls.clear()
    for seed in (5, 6):
        assert mock_main(['--outdir', str(tmp_path / f'set{seed}'), '--nspec', '40', '--seed',
                          str(seed), '--no-resolution']) == 0
    val = tmp_path / 'val'

    def use(seed):
        shutil.rmtree(val, ignore_errors=True)
        shutil.copytree(tmp_path / f'set{seed}', val)
    use(5)
    cfg_path = tmp_path / 'tinytune.yaml'
    cfg_path.write_text(TUNE_YAML)
    args = ['--config', str(cfg_path), '--trials', '1', '--ntrain', '64', '--val-dir', str(val),
            '--trial-epochs', '1', '--workdir', str(tmp_path / 'work'), '--outdir',
            str(tmp_path / 'out'), '--startup-trials', '1']
    assert main(args) == 0
    more = list(args)
    more[more.index('--trials') + 1] = '2'
    use(6)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(more) == 1
    errors = errors_of(caplog)
    assert len(errors) == 1 and 'the study was run with val_files=' in errors[0], errors
    assert len(FakeObjective.calls) == 1
    use(5)                                              # the same files again: resumes
    assert main(more) == 0 and len(FakeObjective.calls) == 2


@pytest.mark.parametrize('seed', ['-1', '4294967296'])
def test_seed_out_of_range_is_refused_before_the_study(seed, tmp_path, capsys):
    """A seed outside numpy's range reached optuna, which failed while the study was
    opened: the error blamed --storage and left an empty study database."""
    from lbgnet.scripts.lbg_tune import parse
    with pytest.raises(SystemExit):
        parse(['--config', 'etc/lbgnet-default.yaml', '--trials', '1', '--outdir',
               str(tmp_path / 'o'), '--workdir', str(tmp_path / 'w'), '--seed', seed])
    assert f'--seed must be in [0, 2**32 - 1], not {seed}' in capsys.readouterr().err
    assert not (tmp_path / 'w').exists()


# --- from a hand mutation-testing pass of tune.py -----------------------------------------

def test_dropout_of_one_is_refused(config):
    """Dropout lies in [0, 1): a rate of 1 drops every unit, so ``tune: {dropout: 1.0}``
    (the excluded upper bound itself) is refused, as is a range reaching it; 0 is allowed."""
    for value in (1.0, [0.0, 1.0]):
        with pytest.raises(ConfigError, match=r'^tune-test-config: tune.dropout value 1.0 is '
                                              r'outside \[0, 1\)$'):
            search_space(tiny_config(config, dropout=value))
    assert search_space(tiny_config(config, dropout=0.0))['dropout'] == ('fixed', 0.0)


def test_default_nboxes_include_both_box_width_limits():
    """The default nboxes choices are the divisors n of nbins = 800 whose box width
    6400 Å / n lies in [80, 320] Å, both ends included: 20 (320 Å) to 80 (80 Å)."""
    from lbgnet.tune import default_nboxes
    config = load_config()
    assert (config.grid.nbins, config.grid.dwave) == (800, 8.0)
    assert default_nboxes(config) == [20, 25, 32, 40, 50, 80]


def test_range_of_one_value_is_allowed(config):
    """A [low, high] range with low == high is one value, not an invalid range:
    ``tune: {filters: [16, 16]}`` is the (log) integer range 16..16."""
    assert search_space(tiny_config(config, filters=[16, 16]))['filters'] == ('int', 16, 16, True)
    with pytest.raises(ConfigError, match=r'tune.filters range \[16, 8\] is invalid'):
        search_space(tiny_config(config, filters=[16, 8]))


def test_log_range_from_zero_is_refused(config):
    """gamma is searched on a log scale: a range starting at 0 (a valid gamma value by
    itself) has no logarithm and is refused, while a fixed gamma of 0 is accepted."""
    with pytest.raises(ConfigError, match=r'^tune-test-config: tune.gamma range \[0, 2\] is invalid$'):
        search_space(tiny_config(config, gamma=[0, 2]))
    assert search_space(tiny_config(config, gamma=0))['gamma'] == ('fixed', 0.0)


def test_resumed_study_does_not_replay_the_first_start_up_points(tmp_path):
    """open_study seeds the sampler with seed + (trials in the study): a study reopened
    from its SQLite store draws new random start-up points instead of repeating those of
    the first run (which would re-run the same trials).  A stand-in objective: no training."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f'sqlite:///{tmp_path / "study.sqlite3"}'

    def objective(trial):
        return trial.suggest_float('x', 0.0, 1.0)
    study = open_study(storage, 'resume', seed=5, startup_trials=10, prune=False)
    study.optimize(objective, n_trials=1)
    first = study.trials[0].params['x']
    again = open_study(storage, 'resume', seed=5, startup_trials=10, prune=False)
    assert len(again.trials) == 1
    again.optimize(objective, n_trials=1)
    assert len(again.trials) == 2 and again.trials[1].params['x'] != first
    # the same seed and trial count give the same point (what the seeding is for)
    fresh = open_study(f'sqlite:///{tmp_path / "other.sqlite3"}', 'resume', seed=5,
                       startup_trials=10, prune=False)
    fresh.optimize(objective, n_trials=1)
    assert fresh.trials[0].params['x'] == first


def _one_trial_study(config):
    """(tiny configuration, an in-memory optuna study 's' with one finished trial)."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = tiny_config(config)
    space = search_space(cfg)
    study = optuna.create_study(direction='maximize', study_name='s')
    study.optimize(lambda t: (suggest_params(t, space), 0.5)[1], n_trials=1)
    return cfg, study


def test_best_config_names_a_base_outside_outdir_by_its_absolute_path(tmp_path, config,
                                                                     monkeypatch):
    """The best YAML is written in outdir and resolves ``base:`` next to itself: a
    configuration in another folder (given by a relative path) is named by its absolute
    path, one inside outdir by its file name alone."""
    from lbgnet.tune import best_config_data
    cfg, study = _one_trial_study(config)
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'conf').mkdir()
    (tmp_path / 'out').mkdir()
    (tmp_path / 'conf' / 'tiny.yaml').write_text(TUNE_YAML)
    (tmp_path / 'out' / 'tiny.yaml').write_text(TUNE_YAML)
    data = best_config_data(study, cfg, os.path.join('conf', 'tiny.yaml'), 'out')
    assert data['base'] == str(tmp_path / 'conf' / 'tiny.yaml')
    assert data['name'] == 's-best'
    data = best_config_data(study, cfg, os.path.join('out', 'tiny.yaml'), 'out')
    assert data['base'] == 'tiny.yaml'


def test_best_config_refuses_a_base_edited_after_the_study(tmp_path, config):
    """The best YAML is an override of the study's configuration (``base:``): that file
    edited after the study (another grid, line list, simulator) made the retrain a network
    the study never scored, without a word.  It records ``base_sha256`` and reading it
    with the base changed is one ConfigError; without base_sha256 the base is used as it
    is, and base_sha256 without a base is an error."""
    from lbgnet.io.experiments import write_config_yaml
    from lbgnet.tune import best_config_data
    cfg, study = _one_trial_study(config)
    base = tmp_path / 'tiny.yaml'
    base.write_text(TUNE_YAML)
    data = best_config_data(study, cfg, str(base), str(tmp_path))
    best = write_config_yaml(str(tmp_path / 's-best.yaml'), data, 'best')
    assert load_config(best).extra['name'] == 's-best'
    assert 'patience: 2}' in TUNE_YAML
    base.write_text(TUNE_YAML.replace('patience: 2}', 'patience: 5}'))
    with pytest.raises(ConfigError) as err:
        load_config(best)
    assert str(err.value).startswith(f"{best}: base 'tiny.yaml' ({base}), or a file of its "
                                     'own base: chain, is not the configuration this file was '
                                     'written over')
    text = open(best).read()
    open(best, 'w').write('\n'.join(line for line in text.splitlines()
                                    if not line.startswith('base_sha256')))
    assert load_config(best).extra['name'] == 's-best'
    # a base edited during the study: the hash the study read at its start is pinned
    from lbgnet.config import mapping_sha256, read_yaml_config
    base.write_text(TUNE_YAML)
    at_start = mapping_sha256(read_yaml_config(str(base)))
    base.write_text(TUNE_YAML.replace('patience: 2}', 'patience: 5}'))
    best = write_config_yaml(str(tmp_path / 's-best.yaml'),
                             best_config_data(study, cfg, str(base), str(tmp_path), at_start),
                             'best')
    with pytest.raises(ConfigError, match='is not the configuration this file was written over'):
        load_config(best)
    lone = tmp_path / 'lone.yaml'
    lone.write_text('base_sha256: abc\n')
    with pytest.raises(ConfigError, match='base_sha256 without a base'):
        load_config(str(lone))


def test_storage_passwords_are_masked_as_written():
    """The password of a storage URL is masked where it stands: also in a URL that does not
    parse, percent-encoded, or equal to a word of the URL (masking every occurrence of
    'postgres' turned 'postgresql://' into '***ql://')."""
    from lbgnet.tune import hide_password, storage_label
    assert hide_password('postgresql://postgres:postgres@h/db: connection refused') == \
        'postgresql://postgres:***@h/db: connection refused'
    assert hide_password('could not open postgresql://u:p%40ss@h/db') == \
        'could not open postgresql://u:***@h/db'
    assert storage_label('postgresql://user:secret@host:abc/db') == \
        'postgresql://user:***@host:abc/db'
    assert hide_password('sqlite:////a/b.db') == 'sqlite:////a/b.db'


def test_a_stopped_trial_leaves_no_checkpoint(tmp_path, config, monkeypatch):
    """A trial stopped during its training (Ctrl-C, SIGTERM) or diverged kept its
    checkpoint (weights and card, tens of MB a trial); only a finished trial removed it."""
    import optuna
    from lbgnet import train
    from lbgnet.tune import trial_dir
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = tiny_config(config)
    X, truth = tiny_data(cfg, 64, 1)
    Xv, truth_v = tiny_data(cfg, 32, 2)
    data = TuneData(X, {k: truth[k] for k in ('CLASS', 'Z_TRUE')}, Xv, truth_v)
    objective = Objective(cfg, data, str(tmp_path / 'work'), epochs=1, seed=3)

    def stopped_fit(model, train_data, val_data, config, outdir, **kwargs):
        os.makedirs(outdir, exist_ok=True)
        for name in (train.CHECKPOINT, train.CHECKPOINT.replace('.weights.h5', '.json')):
            open(os.path.join(outdir, name), 'w').write('x')
        raise error
    monkeypatch.setattr(train, 'fit', stopped_fit)
    for number, (error, caught) in enumerate(((KeyboardInterrupt(), KeyboardInterrupt),
                                              (train.TrainingDiverged('nan loss'),
                                               optuna.TrialPruned))):
        study = optuna.create_study(direction='maximize', study_name=f's{number}')
        trial = study.ask()
        with pytest.raises(caught):
            objective(trial)
        outdir = trial_dir(str(tmp_path / 'work'), f's{number}', trial.number)
        assert os.path.isdir(outdir) and os.listdir(outdir) == []
