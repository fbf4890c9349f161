"""
lbgnet.tune
===========

Bayesian hyper-parameter search with optuna (TPE sampler, median pruner), resumable
through an optuna RDB storage (an SQLite file by default).

Searched parameters (``DEFAULT_SPACE``; a configuration's ``tune`` section overrides any):

================  ===========================================  ==========================
parameter         default range                                YAML form in ``tune:``
================  ===========================================  ==========================
conv_layers       2 – 8 (int)                                  ``[lo, hi]``, or a fixed value
filters           16 – 192 (int, log), same for every layer     ``[lo, hi]`` / value
kernel_size       3 – 15 (int)                                 ``[lo, hi]`` / value
learning_rate     1e-4 – 3e-3 (log)                            ``[lo, hi]`` / value
dropout           0 – 0.3                                      ``[lo, hi]`` / value
nboxes            divisors of nbins with boxes of 80–320 Å     list of choices / value
gamma             0.1 – 10 (log)                               ``[lo, hi]`` / value
================  ===========================================  ==========================

``{choices: [...]}`` makes any parameter categorical.  Strides are not searched: the first
``tune.strided_layers`` (an integer >= 0, default 4) convolutions have stride 2, the
others 1 (every convolution of a network with fewer layers), so the 800-bin grid shrinks
to 50 bins, as in QuasarNET, in networks of 4 layers or more (200 or 100 bins with 2
or 3).  A study records its search space, a hash of the rest of the configuration
(:func:`config_hash`) and of the simulator configuration (:func:`simulation_hash`): a
resume with an edited ``tune`` section, base configuration or simulator is refused once
trials have finished.

Every trial trains the candidate network on the same fixed training set for
``trial_epochs`` epochs (optionally capped in minutes) and is scored on the same validation
set: the objective is the mean over the z regimes (low/mid/high) of the purity = efficiency
score (:func:`lbgnet.predict.regime_scores`), with the n_thresh chosen as in training.
Trials whose validation score after an epoch falls below the median of earlier trials at
that epoch are pruned (never after the first epoch, a warm-up, nor at the last epoch of
their fit: pruning needs ``trial_epochs`` >= 3).  Trial n writes its history in
``workdir/<study name>/trial_<n>``.
"""
import dataclasses
import functools
import hashlib
import json
import os
import re
import time

import numpy as np
from desiutil.log import get_logger

from .config import ConfigError, as_float, as_int, mapping_sha256, read_yaml_config
from .io.atomic import raise_if_terminated
from .io.catalog import OutputFileError
from .io.modelfile import model_paths

#: Default search space (see the module docstring); None for nboxes = derived from the grid.
DEFAULT_SPACE = {'conv_layers': [2, 8], 'filters': [16, 192], 'kernel_size': [3, 15],
                 'learning_rate': [1.0e-4, 3.0e-3], 'dropout': [0.0, 0.3], 'nboxes': None,
                 'gamma': [0.1, 10.0]}
INT_PARAMS = ('conv_layers', 'filters', 'kernel_size')
LOG_PARAMS = ('filters', 'learning_rate', 'gamma')
#: Box widths (Å) of the default nboxes choices.
BOX_WIDTH_RANGE = (80.0, 320.0)
STRIDED_LAYERS = 4
#: Trial attributes written to the results table, after the parameters.
ATTRS = ('score_lowz', 'score_midz', 'score_highz', 'frac_dz_lt_0p05', 'sigma_nmad',
         'nparams', 'epochs_run', 'best_epoch', 'fit_seconds', 'n_thresh', 'c_thresh')


#: Allowed values of each parameter: (low, high, low included, high included).
VALUE_RANGES = {'conv_layers': (1, np.inf, True, False), 'filters': (1, np.inf, True, False),
                'kernel_size': (1, np.inf, True, False), 'nboxes': (1, np.inf, True, False),
                'learning_rate': (0.0, np.inf, False, False), 'dropout': (0.0, 1.0, True, False),
                'gamma': (0.0, np.inf, True, False), 'strided_layers': (0, np.inf, True, False)}


def _checked_value(name, value, where):
    """`value` of parameter `name` converted (int or float) and range-checked."""
    lo, hi, lo_in, hi_in = VALUE_RANGES[name]
    integer = name in INT_PARAMS + ('nboxes', 'strided_layers')
    try:
        out = as_int(value) if integer else as_float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f'{where}: tune.{name} values must be '
                          f'{"integers" if integer else "numbers"}, not {value!r}') from None
    if not ((lo < out or (lo_in and lo == out)) and (out < hi or (hi_in and out == hi))):
        interval = f'{"[" if lo_in else "("}{lo:g}, {hi:g}{"]" if hi_in else ")"}'
        raise ConfigError(f'{where}: tune.{name} value {value!r} is outside {interval}')
    return out


def default_nboxes(config):
    """Divisors of ``grid.nbins`` whose box width lies in :data:`BOX_WIDTH_RANGE`."""
    nbins, dwave = config.grid.nbins, config.grid.dwave
    return [n for n in range(1, nbins + 1) if nbins % n == 0
            and BOX_WIDTH_RANGE[0] <= nbins * dwave / n <= BOX_WIDTH_RANGE[1]]


def search_space(config):
    """Validated search space of a configuration (``DEFAULT_SPACE`` + ``tune`` section).

    Returns
    -------
    dict
        name -> ``('int'|'float', lo, hi, log)``, ``('choice', values)`` or ``('fixed', value)``.

    Raises
    ------
    lbgnet.config.ConfigError
        For a ``tune`` section that is not a mapping, unknown keys, bad ranges, nboxes
        choices that do not divide nbins, or a ``strided_layers`` that is not an
        integer >= 0.
    """
    tune = _tune_section(config)
    if 'strided_layers' in tune:
        _checked_value('strided_layers', tune['strided_layers'], config.source)
    section = {k: v for k, v in tune.items() if k != 'strided_layers'}
    unknown = set(section) - set(DEFAULT_SPACE)
    if unknown:
        raise ConfigError(f'{config.source}: unknown tune parameter(s) {sorted(unknown)}; '
                          f'known: {sorted(DEFAULT_SPACE)}')
    spec = dict(DEFAULT_SPACE, nboxes=default_nboxes(config))
    spec.update(section)
    out = {}
    for name, value in spec.items():
        check = functools.partial(_checked_value, name, where=config.source)
        if isinstance(value, dict) and 'choices' in value:
            if not isinstance(value['choices'], (list, tuple)) or not value['choices']:
                raise ConfigError(f'{config.source}: tune.{name}.choices must be a non-empty list')
            out[name] = ('choice', [check(v) for v in value['choices']])
        elif name == 'nboxes' and isinstance(value, (list, tuple)):
            out[name] = ('choice', [check(v) for v in value])
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            lo, hi = (check(v) for v in value)
            if not lo <= hi or (name in LOG_PARAMS and lo <= 0):
                raise ConfigError(f'{config.source}: tune.{name} range {value} is invalid')
            out[name] = ('int' if name in INT_PARAMS else 'float', lo, hi, name in LOG_PARAMS)
        elif isinstance(value, (list, tuple, dict)):
            raise ConfigError(f'{config.source}: tune.{name} must be a [low, high] pair, '
                              f'{{choices: [...]}} or one value, not {value!r}')
        else:
            out[name] = ('fixed', check(value))
    boxes = out['nboxes'][1] if out['nboxes'][0] == 'choice' else [out['nboxes'][1]]
    bad = [n for n in boxes if int(n) <= 0 or config.grid.nbins % int(n)]
    if bad:
        raise ConfigError(f'{config.source}: tune.nboxes {bad} do not divide nbins={config.grid.nbins}')
    return out


def _tune_section(config):
    """The ``tune`` section of `config` ({} when absent); ConfigError when not a mapping."""
    tune = config.extra.get('tune')
    if tune is None:
        return {}
    if not isinstance(tune, dict):
        raise ConfigError(f'{config.source}: section "tune" must be a mapping, '
                          f'not {type(tune).__name__} {tune!r}')
    return tune


def strided_layers(config):
    """Number of leading stride-2 convolutions (``tune.strided_layers``, validated)."""
    tune = _tune_section(config)
    if 'strided_layers' not in tune:
        return STRIDED_LAYERS
    return _checked_value('strided_layers', tune['strided_layers'], config.source)


def suggest_params(trial, space):
    """Ask an optuna trial for one value of every parameter of `space`."""
    params = {}
    for name, spec in space.items():
        if spec[0] == 'int':
            params[name] = trial.suggest_int(name, spec[1], spec[2], log=spec[3])
        elif spec[0] == 'float':
            params[name] = trial.suggest_float(name, spec[1], spec[2], log=spec[3])
        elif spec[0] == 'choice':
            params[name] = trial.suggest_categorical(name, spec[1])
        else:
            params[name] = spec[1]
    return params


def config_for_params(config, params):
    """The configuration of one point of the search space.

    Returns
    -------
    lbgnet.config.Config
        `config` with ``nboxes``, the model section (conv_layers, filters, kernel_size,
        strides, dropout), ``loss.gamma`` and ``training.learning_rate`` replaced.
    """
    nconv = int(params['conv_layers'])
    nstrided = min(nconv, strided_layers(config))
    model = dict(config.extra.get('model') or {}, conv_layers=nconv, filters=params['filters'],
                 kernel_size=params['kernel_size'], dropout=float(params['dropout']),
                 strides=[2] * nstrided + [1] * (nconv - nstrided))
    loss = dict(config.extra.get('loss') or {}, gamma=float(params['gamma']))
    training = dict(config.extra.get('training') or {},
                    learning_rate=float(params['learning_rate']))
    nboxes = int(params['nboxes'])
    if nboxes <= 0 or config.grid.nbins % nboxes:
        raise ConfigError(f'nboxes={nboxes} does not divide nbins={config.grid.nbins}')
    return dataclasses.replace(config, nboxes=nboxes,
                               extra=dict(config.extra, model=model, loss=loss, training=training))


@dataclasses.dataclass
class TuneData:
    """The fixed training and validation sets shared by all trials.

    Attributes
    ----------
    X_train, X_val : numpy.ndarray
        Network inputs (n, nbins, 2).
    truth_train, truth_val : dict of numpy.ndarray
        ``CLASS``, ``Z_TRUE`` (and ``RMAG`` for the validation set), aligned with the inputs,
        with the classes of the files (not relabelled by
        :func:`lbgnet.targets.metric_truth`: the targets are made from them, and the
        metrics relabel them).
    """

    X_train: np.ndarray
    truth_train: dict
    X_val: np.ndarray
    truth_val: dict


def simulate_training_set(setup, nspec, seed, batch_size=256):
    """Simulate a fixed training set with the training generator (epoch-0 streams).

    Returns
    -------
    X : numpy.ndarray
        (nspec, nbins, 2).
    truth : dict of numpy.ndarray
        ``CLASS``, ``Z_TRUE``, ``RMAG``.
    """
    from .sim.generator import MockBatches
    batches = MockBatches(setup, batch_size=batch_size, seed=seed,
                          batches_per_epoch=max(1, -(-int(nspec) // batch_size)))
    from .progress import Progress
    Xs, truths = [], []
    progress = Progress(len(batches), unit='batches of the training set simulated',
                        min_interval=10.0)
    for index in progress.iterate(range(len(batches))):
        X, truth = batches.simulate(0, index)
        Xs.append(X)
        truths.append({k: np.asarray(truth[k]) for k in ('CLASS', 'Z_TRUE', 'RMAG')})
    truth = {k: np.concatenate([t[k] for t in truths])[:nspec] for k in truths[0]}
    return np.concatenate(Xs)[:nspec], truth


def _pruning_callback(trial):
    import keras

    class OptunaPruning(keras.callbacks.Callback):
        """Report ``val_score`` after each epoch; stop the fit when optuna prunes."""

        pruned = False

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get('val_score')
            if value is None or not np.isfinite(value):
                return
            trial.report(float(value), epoch)
            # the last epoch of the fit: the planned one, or one after which the fit stops
            # anyway (early stopping, time cap: callbacks that ran before this one)
            last = (epoch + 1 >= int(self.params.get('epochs') or 0)
                    or bool(getattr(self.model, 'stop_training', False)))
            if not last and trial.should_prune():     # never prune a finished trial
                self.pruned = True
                self.model.stop_training = True
    return OptunaPruning()


def remove_checkpoint(outdir):
    """Remove the checkpoint a trial's training leaves (weights and card, ``*.weights.h5``
    and its JSON): the network is scored in memory and the study keeps its parameters,
    not its weights (tens of MB a trial).

    Parameters
    ----------
    outdir : str
        The trial's directory (nothing is done when it does not exist).
    """
    if not os.path.isdir(outdir):
        return
    for name in os.listdir(outdir):
        if name.endswith('.weights.h5'):
            for path in model_paths(os.path.join(outdir, name)):
                if os.path.isfile(path):
                    os.remove(path)


class Objective:
    """Train and score one candidate network per optuna trial.

    Parameters
    ----------
    config : lbgnet.config.Config
        Base configuration (architecture, channels, loss, postprocess …).
    data : TuneData
    workdir : str
        Each trial writes its history and loss curve in ``workdir/<study name>/trial_<n>``
        (two studies may share a work directory).
    epochs : int
        Epochs per trial.
    max_minutes : float, optional
        Wall-clock cap per trial.
    seed : int, optional
        Trial n initialises its network with ``seed + n``.
    """

    def __init__(self, config, data, workdir, epochs, max_minutes=None, seed=1):
        self.config, self.data, self.workdir = config, data, workdir
        self.epochs, self.max_minutes, self.seed = int(epochs), max_minutes, int(seed)
        self.space = search_space(config)

    def __call__(self, trial):
        """Objective value of one trial (mean regime score on the validation set)."""
        import optuna
        from .model import build_model
        from .targets import make_training_targets, metric_truth
        from .train import TrainingDiverged, compile_model, fit, set_seeds, training_options
        cfg = config_for_params(self.config, suggest_params(trial, self.space))
        opts = dict(training_options(cfg), epochs=self.epochs, max_minutes=self.max_minutes)
        if opts['lr_schedule'] == 'cosine_time':
            # trials have a fixed number of epochs: decay over them, not over a time budget
            opts['lr_schedule'] = 'cosine'
        cfg = dataclasses.replace(cfg, extra=dict(cfg.extra, training=opts))
        set_seeds(self.seed + trial.number)
        try:
            model = build_model(cfg)
        except (ConfigError, ValueError) as err:
            raise optuna.TrialPruned(f'network cannot be built: {err}') from None
        steps = -(-len(self.data.X_train) // opts['batch_size'])
        compile_model(model, cfg, total_steps=self.epochs * steps)
        outdir = trial_dir(self.workdir, trial.study.study_name, trial.number)
        pruning = _pruning_callback(trial)
        try:
            # targets from the files' classes (as desi_lbg_train), metrics from the
            # relabelled ones (the target class counts as LBG)
            _, info = fit(model, (self.data.X_train,
                                  make_training_targets(self.data.truth_train, cfg)),
                          (self.data.X_val, make_training_targets(self.data.truth_val, cfg)),
                          cfg, outdir, val_truth=metric_truth(self.data.truth_val, cfg),
                          verbose=2, extra_callbacks=[pruning])     # a line per epoch
        except TrainingDiverged as err:
            raise optuna.TrialPruned(f'diverged: {err}') from None
        finally:          # also for a trial stopped (SIGTERM, Ctrl-C) or diverged
            remove_checkpoint(outdir)
        attrs = score_model(model, cfg, self.data)
        attrs.update(nparams=int(model.count_params()), epochs_run=info['epochs_run'],
                     best_epoch=info['best_epoch'], fit_seconds=round(info['fit_seconds'], 1))
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if pruning.pruned:
            raise optuna.TrialPruned(f'pruned after epoch {info["epochs_run"]}')
        return attrs['score_mean']


def trial_dir(workdir, study_name, number):
    """Folder of trial `number` of the study `study_name`: ``workdir/<study>/trial_<n>``."""
    return os.path.join(workdir, study_name, f'trial_{int(number):04d}')


def score_model(model, config, data):
    """Validation metrics of a trained candidate (JSON-ready floats, NaN as None)."""
    from .evaluate import evaluate_predictions
    from .predict import catalog_from_raw, choose_catalog_thresholds, predict_raw, regime_scores
    from .targets import metric_truth
    truth = metric_truth(data.truth_val, config)
    raw = predict_raw(model, data.X_val, config)
    c_thresh, n_thresh, _ = choose_catalog_thresholds(raw, truth, config)
    res = catalog_from_raw(raw, config, c_thresh, n_thresh)
    scores = regime_scores(res, truth)
    redshift = evaluate_predictions(truth, res, c_thresh)['all']['redshift']
    out = {f'score_{k}': v for k, v in scores.items() if k != 'all'}
    out.update(frac_dz_lt_0p05=redshift['frac_dz_lt_0p05'], sigma_nmad=redshift['sigma_nmad'],
               n_thresh=int(n_thresh), c_thresh=float(c_thresh))
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


def open_study(storage, study_name, seed=1, startup_trials=10, prune=True):
    """Create or load a study (maximising), with a sampler seeded for the trials to come.

    The TPE sampler is seeded with ``seed + (trials already in the study)``, so a resumed
    study does not replay the random start-up points of the first run.  Trials left
    ``RUNNING`` by a killed process are failed after their heartbeat stops (grace period
    of 120 s) and retried once.
    """
    import warnings
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    if isinstance(storage, str):
        with warnings.catch_warnings():          # heartbeats are flagged "experimental"
            warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(storage, heartbeat_interval=30, grace_period=120,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                     max_retry=1))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=max(1, startup_trials // 2),
                                          n_warmup_steps=1) if prune else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=study_name, direction='maximize',
                                load_if_exists=True, pruner=pruner)
    study.sampler = optuna.samplers.TPESampler(seed=int(seed) + len(study.trials),
                                               n_startup_trials=int(startup_trials))
    return study


def check_study_settings(study, settings, where):
    """Record the settings the trials' scores depend on, or refuse a resume that changes them.

    A study's trials are ranked against each other, so they must share the training set,
    the per-trial budget, the validation set and the seeds.  The first run stores
    `settings` in the study's user attributes; a later run with other values is refused
    once the study holds a finished (complete or pruned) trial.  Before that (a first run
    that failed before any trial finished) this run's settings replace the stored ones.
    A study whose trials predate the record gets this run's settings, with a warning.

    Parameters
    ----------
    study : optuna.Study
    settings : dict
        JSON-ready values (``ntrain``, ``trial_epochs``, ``trial_minutes``, ``val_dir``,
        ``nval``, ``batch_size``, ``seed``, ``search_space``: :func:`space_record`,
        ``config_hash``: :func:`config_hash`, ``simulation_hash``:
        :func:`simulation_hash`).  A key the stored record lacks (written by an older
        lbgnet) is added to it, with a warning when trials finished without it (what they
        were run with cannot be checked).
    where : str
        Storage and study name, for the message.

    Raises
    ------
    lbgnet.config.ConfigError
        When the study has finished trials run with other settings.
    """
    stored = study.user_attrs.get('settings')
    if stored is None:
        if study.trials:            # a study of an older lbgnet: nothing to compare with
            get_logger().warning('%s: the settings of its %d earlier trials were not recorded '
                                 '(older lbgnet); recording this run\'s', where,
                                 len(study.trials))
        study.set_user_attr('settings', settings)
        return
    added = [k for k in settings if k not in stored]
    if added:                       # recorded by an older lbgnet, without these keys
        finished = len(finished_trials(study))
        (get_logger().warning if finished else get_logger().info)(
            '%s: recording %s, not recorded for its earlier trials%s', where, ', '.join(added),
            f' (its {finished} finished trial(s) are assumed to match)' if finished else '')
        stored = dict(stored, **{k: settings[k] for k in added})
        study.set_user_attr('settings', stored)
    diff = [k for k in sorted(set(stored) | set(settings)) if stored.get(k) != settings.get(k)]
    if not diff:
        return
    finished = len(finished_trials(study))
    if not finished:                # nothing was scored with the stored settings
        get_logger().info('%s: no trial has finished yet; replacing the recorded %s with '
                          '%s', where, ', '.join(f'{k}={stored.get(k)!r}' for k in diff),
                          ', '.join(f'{k}={settings.get(k)!r}' for k in diff))
        study.set_user_attr('settings', settings)
        return
    changes = _changed_entries(stored, settings, diff)
    raise ConfigError(f'{where}: the study was run with '
                      + ', '.join(f'{k}={old!r}' for k, old, _ in changes)
                      + '; this run asks for '
                      + ', '.join(f'{k}={new!r}' for k, _, new in changes)
                      + f' (its {finished} finished trial(s) could not be ranked with new ones: '
                      'use another --study-name or --workdir)')


def _changed_entries(stored, settings, keys):
    """(name, stored value, new value) of each of `keys` that differs; a mapping (the
    search space) is told by its entries that differ (``search_space.filters``), not whole."""
    out = []
    for key in keys:
        old, new = stored.get(key), settings.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += [(f'{key}.{sub}', old.get(sub), new.get(sub))
                    for sub in sorted(set(old) | set(new)) if old.get(sub) != new.get(sub)]
        else:
            out.append((key, old, new))
    return out


def space_record(config):
    """The search space of `config` (:func:`search_space` and ``tune.strided_layers``) as
    JSON values, for :func:`check_study_settings`: trials drawn from another space (an
    edited ``tune`` section) cannot be ranked with, nor turned into a best configuration
    by, this run's."""
    import json
    # the value used (2 and '2', or 4 and the default, build the same networks); None for
    # the default, as studies recorded it when the key was left out
    nstrided = strided_layers(config)
    space = dict(search_space(config),
                 strided_layers=None if nstrided == STRIDED_LAYERS else nstrided)
    return json.loads(json.dumps(space))


#: Keys of the configuration that every trial sets itself (:func:`config_for_params`, the
#: per-trial budget), that do not change a trial (the name) or that are recorded on their
#: own (the ``tune`` section, the simulator: :func:`simulation_hash`, not its file name):
#: left out of :func:`config_hash`.
UNHASHED_KEYS = {None: ('name', 'tune', 'nboxes'),
                 'model': ('conv_layers', 'filters', 'kernel_size', 'strides', 'dropout'),
                 'loss': ('gamma',),
                 'training': ('learning_rate', 'epochs', 'max_minutes', 'simulation')}


def _digest(data):
    """First 16 hex digits of the SHA-256 of `data` as sorted JSON."""
    text = json.dumps(data, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]


def config_hash(config):
    """Fingerprint of what a trial's score depends on in `config`, besides the search space.

    The resolved configuration (``base:`` merged, ``target.lines`` applied: grid, lines,
    selection, ``model``, ``loss``, ``training``, ``target`` … sections) without the name,
    the ``tune`` section (:func:`space_record`) and the keys each trial sets
    (:data:`UNHASHED_KEYS`), for :func:`check_study_settings`: trials of a study whose base
    configuration was edited in between cannot be ranked together.

    Returns
    -------
    str
        16 hex digits.
    """
    data = config.to_dict()
    for section, keys in UNHASHED_KEYS.items():
        node = data if section is None else data.get(section)
        if isinstance(node, dict):
            node = {k: v for k, v in node.items() if k not in keys}
            if section is None:
                data = node
            else:
                data[section] = node
    return _digest(data)


def simulation_hash(setup):
    """Fingerprint of the simulated data of a :class:`lbgnet.sim.mock.MockSetup`.

    The simulator's ``SIMHASH`` (:func:`lbgnet.sim.mock.simulator_hash`: physics,
    instrument, templates, sky lines) and the whole simulator configuration, sampling
    choices included (class mix, magnitude and redshift ranges, depths), which
    ``SIMHASH`` leaves out but which change the training and validation sets.  Recorded
    by a study (:func:`check_study_settings`) and part of the name of its cached validation
    set.

    Returns
    -------
    str
        16 hex digits.
    """
    from .sim.mock import simulator_hash
    # the configuration's content, not where it was read from (`_source`: a relative or
    # absolute --config, or another working directory, is the same simulator)
    simcfg = {k: v for k, v in setup.simcfg.items() if k != '_source'}
    return _digest({'simhash': simulator_hash(setup), 'config': simcfg})


def validation_digest(val_dir):
    """Fingerprint of the names and contents of the coadd and truth files of a validation
    directory (:func:`lbgnet.io.labelled.find_labelled`), recorded by a study tuned with
    ``--val-dir`` (other files there would score its trials on another set).

    Returns
    -------
    str
        16 hex digits.
    """
    from .io.catalog import file_sha256
    from .io.labelled import find_labelled
    coadds, truths = find_labelled(val_dir, 'validation')
    return _digest([[os.path.basename(c), file_sha256(c), os.path.basename(t), file_sha256(t)]
                    for c, t in zip(coadds, truths)])


def finished_trials(study):
    """Trials that count towards the requested number: complete or pruned."""
    from optuna.trial import TrialState
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def fail_stale(study):
    """Fail the trials of a killed run whose heartbeat has stopped (the storage of
    :func:`open_study` then queues their retry); ``optuna.storages.fail_stale_trials``,
    whose experimental-feature warning is hidden."""
    import warnings
    import optuna
    from optuna.storages import fail_stale_trials
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)


def run_study(study, objective, n_trials, budget_minutes=None):
    """Run trials until the study holds `n_trials` finished ones or the budget is spent.

    Trials of a killed run whose heartbeat has stopped are failed first (also when no
    trial is left to run; the storage of :func:`open_study` then queues their retry, which
    runs when a run has trials to do); a trial stopped by SIGTERM or Ctrl-C (both reach it
    as :class:`lbgnet.io.atomic.Terminated`, which optuna does not fail) is marked FAIL
    before the signal ends the run.  A trial whose files cannot be written (a full disk)
    is marked FAIL and ends the study (its error is raised once the trial is recorded).

    Returns
    -------
    int
        Trials finished by this call (a retried stale trial included; failed ones not).

    Raises
    ------
    lbgnet.io.catalog.OutputFileError
        A trial's output could not be written.
    """
    from optuna.trial import TrialState
    log = get_logger()
    fail_stale(study)     # a killed run's trials, also when nothing is left to do
    todo = max(0, int(n_trials) - len(finished_trials(study)))
    if todo == 0:
        log.info('study %s already has %d finished trials; nothing to do', study.study_name,
                 len(finished_trials(study)))
        return 0
    # finished trials, not trials: the retry of a stale trial was queued (WAITING) above
    before = len(finished_trials(study))
    start = time.time()
    running, failure = [], []

    def tracked(trial):
        running[:] = [trial]
        try:
            return objective(trial)
        except OutputFileError as err:
            raise_if_terminated()     # a library may turn the signal's exception into another
            # a full disk: every later trial would fail alike.  Returning None fails the
            # trial with a one-line log (optuna logs a raised error with its traceback).
            failure.append(err)
            trial.study.stop()
            return None
        except Exception:      # noqa: BLE001 -- optuna would fail the trial and go on
            raise_if_terminated()
            raise

    try:
        study.optimize(tracked, n_trials=todo,
                       timeout=None if budget_minutes is None else 60.0 * float(budget_minutes))
    except SystemExit:    # SIGTERM (lbgnet.io.atomic.Terminated): optuna fails a trial stopped
        # by Ctrl-C, not this one, which would stay RUNNING for good
        still = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for trial in running:
            if trial.number in still:
                study.tell(trial, state=TrialState.FAIL)
                log.warning('trial %d stopped by a signal: marked FAIL', trial.number)
        raise
    if failure:
        raise failure[0]
    ran = len(finished_trials(study)) - before
    log.info('ran %d trial(s) in %.1f min', ran, (time.time() - start) / 60)
    return ran


def trials_table(study, space=None):
    """One row per trial: number, state, value, duration, parameters, attributes.

    Parameters
    ----------
    study : optuna.study.Study
        ``value`` is the objective (mean regime score) for complete trials and for pruned
        ones scored after their last epoch, empty for pruned ones never scored.
    space : dict, optional
        The search space (:func:`search_space`): every parameter gets a column, in its
        order, the fixed ones included (optuna stores only the suggested ones); a
        parameter a trial never reached (a failed trial) is left empty.  Without it, the
        suggested parameters only.
    """
    rows = []
    for t in study.trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        # a pruned trial's stored value is its last report to the pruner (the validation
        # score at n_thresh = 1): give the objective's measure, as for complete trials
        value = t.value if t.state.name != 'PRUNED' else t.user_attrs.get('score_mean')
        row = {'trial': t.number, 'state': t.state.name, 'value': value,
               'duration_s': duration}
        row.update(t.params if space is None
                   else suggest_params(_FixedTrial(t.params), space))
        row.update({k: t.user_attrs.get(k) for k in ATTRS})
        rows.append(row)
    return rows


def best_config_data(study, config, config_path, outdir, base_sha256=None):
    """Mapping of the best configuration, as an override of `config_path` (``base:``,
    with its ``base_sha256``: the base edited after the study is refused when it is
    read).

    Parameters
    ----------
    study : optuna.Study
    config : lbgnet.config.Config
        The configuration the study ran with.
    config_path : str
        Its file.
    outdir : str
        Where the best YAML is written (a base there is named by its file name).
    base_sha256 : str, optional
        :func:`lbgnet.config.mapping_sha256` of `config_path` as the study read it (so
        that a base edited during the study is told); read now when not given.

    Returns
    -------
    dict
    """
    from .train import training_options
    best = study.best_trial
    params = dict(suggest_params(_FixedTrial(best.params), search_space(config)))
    tuned = config_for_params(config, params)
    path = os.path.abspath(config_path)
    base = (os.path.basename(path) if os.path.dirname(path) == os.path.abspath(outdir) else path)
    model = {k: tuned.extra['model'][k] for k in ('conv_layers', 'filters', 'kernel_size',
                                                  'strides', 'dropout')}
    try:
        base_sha = {'base_sha256': base_sha256 or mapping_sha256(read_yaml_config(path))}
    except ConfigError:          # gone since the study read it: loading the best file says so
        base_sha = {}
    return {'base': base, **base_sha, 'name': f'{study.study_name}-best', 'nboxes': tuned.nboxes,
            'model': model, 'loss': {'gamma': tuned.extra['loss']['gamma']},
            # the batch size the trials ran with (--batch-size overrides the base's): the
            # learning rate was tuned for it
            'training': {'learning_rate': tuned.extra['training']['learning_rate'],
                         'batch_size': int(training_options(tuned)['batch_size'])}}


class _FixedTrial:
    """Replays stored parameters through :func:`suggest_params` (fixed ones added back)."""

    def __init__(self, params):
        self.params = params

    def suggest_int(self, name, *args, **kwargs):
        return self.params.get(name)

    suggest_float = suggest_categorical = suggest_int


#: The comment line of ``<study>-best.yaml`` that names the study's storage.
STORAGE_LINE = 'study storage: '


def write_results(study, config, config_path, outdir, storage=None, base_sha256=None):
    """Write ``<study>-trials.csv`` and, when a trial completed, ``<study>-best.yaml``
    (`base_sha256`: see :func:`best_config_data`).

    `storage` (the optuna storage URL) is named in the YAML header (:data:`STORAGE_LINE`),
    so that the file says which study it came from (:func:`results_storage`).

    Returns
    -------
    dict
        ``table`` and ``best`` paths (``best`` None without a completed trial).
    """
    from optuna.trial import TrialState
    from .io.experiments import write_config_yaml, write_table_csv
    table = write_table_csv(os.path.join(outdir, f'{study.study_name}-trials.csv'),
                            trials_table(study, search_space(config)))
    if not any(t.state == TrialState.COMPLETE for t in study.trials):
        return {'table': table, 'best': None}
    best = study.best_trial
    scores = ' / '.join('n/a' if best.user_attrs.get(f'score_{r}') is None
                        else f'{best.user_attrs[f"score_{r}"]:.4f}' for r in ('lowz', 'midz', 'highz'))
    header = (f'Best configuration of optuna study {study.study_name!r} (desi_lbg_tune):\n'
              f'trial {best.number} of {len(study.trials)}, mean validation score '
              f'{best.value:.4f} (low/mid/high z: {scores}),\n'
              f'{best.user_attrs.get("epochs_run")} epochs of tuning training'
              + (f' (the weights of epoch {best.user_attrs["best_epoch"]} scored)'
                 if best.user_attrs.get('best_epoch') is not None else '')
              + '; retrain it with desi_lbg_train --config <this file>.'
              + (f'\n{STORAGE_LINE}{storage_label(storage)}' if storage else ''))
    path = write_config_yaml(os.path.join(outdir, f'{study.study_name}-best.yaml'),
                             best_config_data(study, config, config_path, outdir,
                                              base_sha256), header)
    return {'table': table, 'best': path}


def storage_label(storage):
    """`storage` as recorded and compared: password hidden, a relative SQLite file made
    absolute (one database written two ways is one storage)."""
    import sqlalchemy.engine
    try:
        url = sqlalchemy.engine.make_url(storage)
    except Exception:  # noqa: BLE001 -- an unparsable URL is reported when it is opened
        return hide_password(storage)
    if url.drivername.startswith('sqlite') and url.database and url.database != ':memory:':
        url = url.set(database=os.path.abspath(url.database))
    return url.render_as_string(hide_password=True)


#: The password part of a URL's ``user:password@`` (as written, percent-encoded or not).
_URL_PASSWORD = re.compile(r'(://[^:/@\s]*:)([^@\s]*)(@)')


def hide_password(text):
    """`text` with the password of every ``scheme://user:password@...`` URL in it replaced
    by ``***`` (a storage URL as given, or quoted in a driver's error message; also one
    that does not parse)."""
    return _URL_PASSWORD.sub(r'\1***\3', str(text))


def results_storage(path):
    """The storage named in the header of a ``<study>-best.yaml`` (None when the file or
    the line is absent, e.g. a file of an older lbgnet)."""
    try:
        with open(path) as fx:
            for line in fx:
                if not line.startswith('#'):
                    break
                if line[1:].strip().startswith(STORAGE_LINE):
                    return line[1:].strip()[len(STORAGE_LINE):]
    except (OSError, UnicodeDecodeError):
        return None
    return None
