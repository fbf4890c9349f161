"""
lbgnet.train
============

Training wiring: compile the line finder, fit it with validation-driven callbacks
(validation score, early stopping, best checkpoint, CSV history, loss-curve PNG) and
seeds.  Weight transfer from another model is :mod:`lbgnet.transfer`; data come from
elsewhere (:mod:`lbgnet.sim` generators, files read by :mod:`lbgnet.io`); the losses from
:mod:`lbgnet.losses`.
"""
import os
import time
import warnings

import numpy as np
import keras
from desiutil.log import get_logger

from .config import ConfigError, as_float, as_int, check_keys
from .evaluate import pe_score, regime_masks, LBG_CLASS
from .losses import LineFinderLoss, resolve_pos_weight

#: Defaults of the ``training`` configuration section (its keys are
#: ``lbgnet.config.SECTION_KEYS['training']``).
TRAINING_DEFAULTS = {'epochs': 30, 'batch_size': 256, 'learning_rate': 1e-3, 'patience': 6,
                     'monitor': 'val_score', 'seed': 1, 'ntrain': 40000, 'nval': 4000,
                     'simulation': None, 'lr_schedule': 'constant', 'lr_final_fraction': 0.05,
                     'max_minutes': None, 'sim_fraction': 0.0, 'depth_min': 0.5}
#: Learning-rate schedules: constant, cosine decay over all planned steps, or cosine decay
#: over the wall-clock budget ``max_minutes`` (equal-time comparisons on loaded machines).
LR_SCHEDULES = ('constant', 'cosine', 'cosine_time')
#: Monitored quantities and whether larger is better.
MONITORS = {'val_score': 'max', 'val_loss': 'min'}
CHECKPOINT = 'checkpoint.weights.h5'
#: Its model card (:func:`save_checkpoint`).
CHECKPOINT_CARD = 'checkpoint.json'
HISTORY = 'history.csv'
LOSS_PLOT = 'loss.png'


def training_options(config, **overrides):
    """``training`` section of a configuration with defaults and command-line overrides.

    Parameters
    ----------
    config : lbgnet.config.Config
    **overrides
        Values that replace the configuration's (None values are ignored); named
        ``--<key>`` in errors (they come from the command line).

    Returns
    -------
    dict

    Raises
    ------
    lbgnet.config.ConfigError
        For an unknown monitor or schedule, a value of the wrong type or out of range:
        ``epochs``, ``batch_size``, ``ntrain``, ``nval`` integers > 0 (integral floats
        such as 2.0 accepted), ``patience`` an integer >= 0, ``seed`` one in [0, 2**32)
        (NumPy's legacy seeding, which Keras uses), ``learning_rate``
        > 0, ``lr_final_fraction`` in (0, 1], ``max_minutes`` > 0 or None (no limit),
        ``sim_fraction`` in [0, 1) and ``depth_min`` in (0, 1] (labelled-file training,
        :mod:`lbgnet.labelled`).
    """
    section = config.extra.get('training') or {}
    check_keys({'training': section}, config.source)   # also for configurations built in code
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get('max_minutes') == 0:    # --max-minutes 0: no limit, whatever the file says
        given['max_minutes'] = None
    # the file alone, then with the command line's values (a cosine_time schedule in the
    # file may take its budget from --max-minutes)
    opts = _checked_training(dict(TRAINING_DEFAULTS, **section),
                             lambda key: f'{config.source}: training.{key}', combined=not given)
    if given:
        opts = _checked_training(dict(opts, **given), lambda key: (
            f'--{key.replace("_", "-")}:' if key in given else f'{config.source}: training.{key}'))
    return opts


def _checked_training(opts, where, combined=True):
    """Convert and check the values of a ``training`` mapping; `where(key)` prefixes errors.
    `combined`: also check the values that depend on each other (cosine_time needs
    max_minutes)."""
    if not isinstance(opts['monitor'], str) or opts['monitor'] not in MONITORS:
        raise ConfigError(f'{where("monitor")} must be one of {sorted(MONITORS)}, not '
                          f'{opts["monitor"]!r}')
    if not isinstance(opts['lr_schedule'], str) or opts['lr_schedule'] not in LR_SCHEDULES:
        raise ConfigError(f'{where("lr_schedule")} must be one of {LR_SCHEDULES}, not '
                          f'{opts["lr_schedule"]!r}')
    if opts['simulation'] is not None and not isinstance(opts['simulation'], str):
        raise ConfigError(f'{where("simulation")} must be a file name, not {opts["simulation"]!r}')
    kinds = {'lr_final_fraction': as_float, 'learning_rate': as_float, 'epochs': as_int,
             'batch_size': as_int, 'ntrain': as_int, 'nval': as_int, 'patience': as_int,
             'seed': as_int, 'sim_fraction': as_float, 'depth_min': as_float}
    if opts['max_minutes'] is not None:
        kinds['max_minutes'] = as_float
    for key, kind in kinds.items():
        try:
            opts[key] = kind(opts[key])
        except (TypeError, ValueError):
            what = 'an integer' if kind is as_int else 'a number'
            raise ConfigError(f'{where(key)} must be {what}, not {opts[key]!r}') from None
    ranges = [(key, '> 0', lambda v: v > 0) for key in ('epochs', 'batch_size', 'ntrain', 'nval',
                                                         'learning_rate')]
    ranges += [('patience', '>= 0', lambda v: v >= 0), ('seed', 'in [0, 2**32 - 1]', lambda v: 0 <= v < 2 ** 32),
               ('lr_final_fraction', 'in (0, 1]', lambda v: 0 < v <= 1),
               ('sim_fraction', 'in [0, 1)', lambda v: 0 <= v < 1),
               ('depth_min', 'in (0, 1]', lambda v: 0 < v <= 1),
               ('max_minutes', '> 0 (leave it out, or give --max-minutes 0, for no limit)',
                lambda v: v is None or v > 0)]
    for key, text, good in ranges:
        if not good(opts[key]):
            raise ConfigError(f'{where(key)} must be {text}, not {opts[key]!r}')
    if combined and opts['lr_schedule'] == 'cosine_time' and not opts['max_minutes']:
        raise ConfigError(f'{where("lr_schedule")} cosine_time needs max_minutes')
    return opts


def check_config(config, sim_config=None):
    """Check, before any training, the options that are read only later.

    The ``model`` section (:func:`lbgnet.modelspec.model_options`, ``snr_softening`` > 0), the
    options of the architecture (``model.direct``), the ``loss`` section, the ``postprocess``
    section (read by the validation score after the first epoch and at the end:
    ``agree_tol`` > 0, ``line_floor`` in [0, 1], ``zerr_scale`` / ``zerr_tpl_scale`` > 0,
    ``zerr_floor`` / ``zerr_tpl_floor`` >= 0, ``hybrid_score``) and, given the simulator
    configuration, its ``generator.augment`` mapping.

    Parameters
    ----------
    config : lbgnet.config.Config
    sim_config : lbgnet.config.Config, optional
        Simulator (mock) configuration of the training batches.

    Raises
    ------
    lbgnet.config.ConfigError
        Naming the configuration file and the key.
    """
    from .config import check_names
    from .model import model_options
    from .variants import architecture, direct_options
    check_names(config)
    try:
        model_options(config)          # the whole model section, snr_softening included
    except ConfigError as err:
        text = str(err)
        raise ConfigError(text if text.startswith(f'{config.source}:')
                          else f'{config.source}: {text}') from None
    if architecture(config) != 'linefinder':
        direct_options(config)
    loss_from_config(config)
    _check_postprocess(config)
    if sim_config is not None:
        _check_augment(sim_config)


def _check_postprocess(config):
    """The ``postprocess`` options of :func:`check_config`."""
    from .postprocess import check_options
    check_options(config)


def _check_augment(sim_config):
    """``generator.augment`` of a simulator configuration: known keys, numbers, probabilities."""
    from .sim.augment import AugmentConfig
    section = (sim_config.extra.get('generator') or {}).get('augment') or {}
    fields = AugmentConfig.__dataclass_fields__
    for key, value in (section.items() if isinstance(section, dict) else ()):
        if key not in fields:
            continue                                   # refused by from_dict below
        pair = isinstance(fields[key].default, tuple)
        try:
            if pair and (isinstance(value, (str, dict)) or len(value) != 2):
                raise ValueError(value)
            for number in (value if pair else (value,)):
                as_float(number)
        except (TypeError, ValueError):
            what = 'a [min, max] pair of numbers' if pair else 'a number'
            raise ConfigError(f'{sim_config.source}: generator.augment.{key} must be {what}, '
                              f'not {value!r}') from None
    try:
        AugmentConfig.from_dict(section)
    except (TypeError, ValueError) as err:
        raise ConfigError(f'{sim_config.source}: invalid generator.augment ({err})') from None


def loss_from_config(config):
    """The :class:`~lbgnet.losses.LineFinderLoss` of a configuration's ``loss`` section."""
    section = config.extra.get('loss') or {}
    if not isinstance(section, dict):
        raise ConfigError(f'{config.source}: section "loss" must be a mapping, not {section!r}')
    try:
        pos_weight = resolve_pos_weight(section.get('pos_weight', 'balanced'), config.nboxes)
    except (TypeError, ValueError) as err:
        raise ConfigError(f'{config.source}: invalid loss section ({err})') from None
    try:
        gamma = as_float(section.get('gamma', 1.0))
    except (TypeError, ValueError):
        gamma = -1.0
    if gamma < 0:
        raise ConfigError(f'{config.source}: invalid loss section (loss.gamma must be a finite '
                          f'number >= 0, not {section.get("gamma")!r})')
    from .variants import variant_loss
    return variant_loss(config, LineFinderLoss(gamma=gamma, pos_weight=pos_weight))


def compile_model(model, config, learning_rate=None, total_steps=None):
    """Compile `model` with Adam and the configured loss.

    Parameters
    ----------
    model : keras.Model
    config : lbgnet.config.Config
        ``loss`` section, and ``training.lr_schedule`` / ``lr_final_fraction``.
    learning_rate : float, optional
        Initial learning rate [``training.learning_rate``].
    total_steps : int, optional
        Planned optimizer steps (epochs × batches per epoch), needed by the ``cosine``
        schedule, which decays the rate to ``lr_final_fraction`` of its start over them.

    Returns
    -------
    keras.Model
        `model`, compiled, with the optimizer built for its trainable variables (a built
        `model`); compile it again after changing which layers are trainable.
    """
    opts = training_options(config)
    lr = opts['learning_rate'] if learning_rate is None else float(learning_rate)
    if opts['lr_schedule'] == 'cosine' and total_steps:
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=int(total_steps),
                                                    alpha=opts['lr_final_fraction'])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss_from_config(config))
    if model.built:
        # Adam's slot variables made now, not while the first training step is traced:
        # variables made inside a tf.function trace it twice (about 4 s of a 9 s first step
        # for the test networks); the same zeros either way, so training is unchanged
        model.optimizer.build(model.trainable_variables)
    return model


def set_seeds(seed):
    """Seed Python, numpy and the Keras backend (for weight initialisation and dropout).

    Keras also seeds TensorFlow whenever it is installed, under any backend: it is then
    imported here first without its start-up lines (:func:`lbgnet.tflog.quiet_import`).
    """
    import importlib.util
    from .tflog import keras_backend_name, quiet_import
    if keras_backend_name() != 'tensorflow' and importlib.util.find_spec('tensorflow'):
        quiet_import('tensorflow')
    keras.utils.set_random_seed(int(seed))


#: Lines above threshold behind ``C_LBG`` in :class:`ValidationScore`: fixed, since the
#: selection thresholds are chosen after training (a configuration's ``selection`` section
#: is not used by training); 1 is the most confident line.
VAL_SCORE_N_THRESH = 1


class ValidationScore(keras.callbacks.Callback):
    """After each epoch, the purity = efficiency score on a validation set, as ``val_score``.

    ``val_score`` is the mean of the scores of the regimes of
    :func:`lbgnet.evaluate.regime_masks` (low/mid/high z), with ``C_LBG`` at
    :data:`VAL_SCORE_N_THRESH` lines; the per-regime values are logged as
    ``val_score_<regime>``.  It must come before the callbacks that monitor it.

    Parameters
    ----------
    X : numpy.ndarray
        Validation input, shape (nval, nbins, 2).
    classes, z_true : numpy.ndarray
        Truth class and redshift, shape (nval,).
    config : lbgnet.config.Config
    batch_size : int, optional
    """

    def __init__(self, X, classes, z_true, config, batch_size=2048):
        super().__init__()
        self.X = X
        self.classes = np.asarray(classes).astype(str)
        self.z_true = np.asarray(z_true, dtype=np.float64)
        self.config = config
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        """Add ``val_score`` and ``val_score_<regime>`` to `logs`."""
        logs = {} if logs is None else logs
        from .predict import predict_catalog      # any architecture (lbgnet.variants)
        res, _ = predict_catalog(self.model, self.X, self.config, n_thresh=VAL_SCORE_N_THRESH,
                                 batch_size=self.batch_size)
        c_lbg = res['C_LBG']
        is_true = self.classes == LBG_CLASS
        # weights gone NaN (a diverged epoch) give NaN confidences, which rank as tied
        # (lbgnet.evaluate.pe_score) at a finite, chance-level score: such an epoch must
        # never be the best one, so its scores are NaN
        broken = (not np.all(np.isfinite(c_lbg))
                  or not np.isfinite(float(logs.get('loss', 0.0))))
        scores = []
        for name, mask in regime_masks(self.classes, self.z_true).items():
            value = float('nan') if broken else pe_score(is_true[mask], c_lbg[mask])[0]
            logs[f'val_score_{name}'] = value
            if name != 'all' and np.isfinite(value):
                scores.append(value)
        logs['val_score'] = float(np.mean(scores)) if scores else logs['val_score_all']


def merge_histories(first, second, phase=2):
    """Per-epoch logs of two training phases end to end, with a ``phase`` entry per epoch.

    Parameters
    ----------
    first : dict
        Logs of the earlier phase(s), with ``phase``.
    second : dict
        Logs of the phase that follows (``{key: [value per epoch]}``).
    phase : int, optional
        Phase number of `second`'s epochs [2].

    Returns
    -------
    dict
    """
    keys = [k for k in dict.fromkeys(list(first) + list(second)) if k != 'phase']
    nfirst = len(first['phase'])
    nsecond = max((len(v) for v in second.values()), default=0)
    merged = {key: (list(first.get(key, [np.nan] * nfirst))
                    + list(second.get(key, [np.nan] * nsecond))) for key in keys}
    merged['phase'] = list(first['phase']) + [phase] * nsecond
    return merged


class HistoryWriter(keras.callbacks.Callback):
    """Write ``history.csv`` after every epoch and ``loss.png`` at most every `plot_seconds`.

    Both are replaced atomically, so a run killed at any moment leaves the record of every
    finished epoch (and a loss curve at most `plot_seconds` old); :func:`fit` draws the
    final curve.

    Parameters
    ----------
    outdir : str
    previous : dict, optional
        Logs of earlier phases (with ``phase``), kept in front of this fit's epochs.
    phase : int, optional
        Phase number of this fit's epochs (with `previous`).
    plot_seconds : float, optional
        Least time between two drawings of the loss curve [60].
    """

    def __init__(self, outdir, previous=None, phase=2, plot_seconds=60.0):
        super().__init__()
        self.outdir = outdir
        self.previous = previous
        self.phase = phase
        self.plot_seconds = plot_seconds
        self.logs = {}
        self._plotted = None

    def merged(self):
        """Logs of the earlier phases and of this fit so far."""
        if self.previous is None:
            return {key: list(values) for key, values in self.logs.items()}
        return merge_histories(self.previous, self.logs, self.phase)

    def on_epoch_end(self, epoch, logs=None):
        """Add the epoch's logs; rewrite ``history.csv`` (and ``loss.png`` when due)."""
        from .io.experiments import write_history_csv
        from .plots import plot_loss_curves
        nbefore = max((len(v) for v in self.logs.values()), default=0)
        for key, value in (logs or {}).items():
            self.logs.setdefault(key, [np.nan] * nbefore).append(float(value))
        for values in self.logs.values():
            values.extend([np.nan] * (nbefore + 1 - len(values)))
        history = self.merged()
        write_history_csv(os.path.join(self.outdir, HISTORY), history)
        now = time.monotonic()
        if self._plotted is None or now - self._plotted >= self.plot_seconds:
            plot_loss_curves(history, os.path.join(self.outdir, LOSS_PLOT))
            self._plotted = now


class BestCheckpoint(keras.callbacks.Callback):
    """Keep the weights of the best epoch so far in a file, replaced atomically.

    As ``keras.callbacks.ModelCheckpoint(save_best_only=True, save_weights_only=True)``
    (strictly better than the best so far, or than `initial_value_threshold`; non-finite
    values never count), but written under a temporary name and renamed
    (:func:`lbgnet.io.modelfile.save_weights_atomic`), after checking that the disk has
    room: Keras writes the file in place, so a full disk or a kill mid-write left a
    truncated checkpoint under its final name (and HDF5 then crashed the process).

    Parameters
    ----------
    path : str
        ``*.weights.h5``.
    monitor : str
        Key of the epoch logs.
    mode : {'min', 'max'}
    initial_value_threshold : float, optional
        Value an epoch must beat to be saved (an earlier phase's best).
    config : lbgnet.config.Config, optional
        The network's configuration: the checkpoint is then a whole lbgnet model, its
        weights with a model card (``checkpoint.json``, :func:`save_checkpoint`), which
        ``desi_lbg_train --init-from``, ``desi_lbg_evaluate`` and the afterburner take as
        any model (the card says which epoch it holds); None: the weights alone.
    card : dict, optional
        More entries of the checkpoint's model card (:func:`save_checkpoint`).
    epoch_offset : int, optional
        Epochs of the run before this fit (an earlier training phase): the card counts the
        epochs of the whole run [0].
    """

    def __init__(self, path, monitor, mode, initial_value_threshold=None, config=None,
                 card=None, epoch_offset=0):
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.better = np.less if mode == 'min' else np.greater
        self.best = initial_value_threshold
        self.config = config
        self.card = card
        self.epoch_offset = int(epoch_offset)

    def on_epoch_end(self, epoch, logs=None):
        """Save the weights when the epoch's `monitor` beats the best so far."""
        from .io.modelfile import save_weights_atomic
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(float(value)):
            return
        if self.best is not None and not self.better(float(value), self.best):
            return
        self.best = float(value)
        if self.config is None:
            save_weights_atomic(self.model, self.path)
        else:
            save_checkpoint(self.path, self.model, self.config, self.epoch_offset + epoch + 1,
                            self.monitor, self.best, card=self.card)


def save_checkpoint(path, model, config, epoch, monitor, value, card=None):
    """Write the best weights so far as an lbgnet model: weights and model card, renamed
    into place together (:func:`lbgnet.io.modelfile.save_model`).

    A killed or time-limited run thereby leaves a model that the commands take as any
    other (``--init-from``, ``--model``); it carries no selection thresholds nor error
    calibration (those are chosen at the end of a finished run), which the afterburner
    says when it loads it.

    Parameters
    ----------
    path : str
        ``checkpoint.weights.h5`` (its card: ``checkpoint.json``).
    model : keras.Model
        Built from `config`.
    config : lbgnet.config.Config
    epoch : int
        The epoch whose weights these are, counted from 1.
    monitor : str
        The quantity that chose it, and its `value`.
    value : float
    card : dict, optional
        More entries of the model card: ``desi_lbg_train`` gives the training LBG
        redshift range (``z_range``, :func:`lbgnet.network.training_zrange`) and
        ``training.simulator_hash``, as on the finished model's card, and how the run was
        started (``training.init_from``, ``train_dir``, ``val_dir``, ``seed``).
    """
    from .io.modelfile import save_model
    from .zerr import CALIBRATION_CARDS
    why = 'a training checkpoint: errors are calibrated at the end of a finished run'
    save_model(path, model, config, {
        **(card or {}),
        'checkpoint': {'epoch': int(epoch), 'monitor': str(monitor), 'value': float(value)},
        'error_calibration': {key: {'fit': None, 'reason': why} for key, _ in CALIBRATION_CARDS}})


class TimeLimit(keras.callbacks.Callback):
    """Stop training after the epoch that would make the next one end past a time budget.

    Parameters
    ----------
    minutes : float
        Wall-clock budget of the fit, from its start.
    """

    def __init__(self, minutes):
        super().__init__()
        self.seconds = 60.0 * float(minutes)
        self.start = None
        self.stopped_epoch = None

    def on_train_begin(self, logs=None):
        """Start the clock."""
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        """Stop when one more epoch of the mean duration would exceed the budget."""
        elapsed = time.time() - self.start
        if elapsed * (epoch + 2) / (epoch + 1) > self.seconds:
            self.model.stop_training = True
            self.stopped_epoch = epoch + 1
            get_logger().info('time budget of %.1f min reached after epoch %d',
                              self.seconds / 60, epoch + 1)


def cosine_fraction(elapsed, total, final_fraction):
    """Cosine decay factor from 1 at ``elapsed = 0`` to `final_fraction` at `total` and after.

    Parameters
    ----------
    elapsed, total : float or array
        Time (or steps) so far, and the length of the decay.
    final_fraction : float
        Factor reached at the end.

    Returns
    -------
    float or array
    """
    x = np.clip(np.asarray(elapsed, dtype=float) / float(total), 0.0, 1.0)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + np.cos(np.pi * x))


class TimeCosine(keras.callbacks.Callback):
    """Cosine learning-rate decay over a wall-clock budget instead of planned steps.

    The rate set at compile time decays to `final_fraction` of itself as the fit's
    elapsed time reaches `minutes`, so a run that is slowed by other jobs still ends its
    schedule when :class:`TimeLimit` stops it (``training.lr_schedule: cosine_time``).

    Parameters
    ----------
    minutes : float
        Wall-clock budget of the fit.
    final_fraction : float
        Rate at the end of the budget, as a fraction of the initial rate.
    """

    def __init__(self, minutes, final_fraction):
        super().__init__()
        self.seconds = 60.0 * float(minutes)
        self.final_fraction = float(final_fraction)
        self.start = None
        self.lr0 = None

    def on_train_begin(self, logs=None):
        """Start the clock and read the initial rate."""
        self.start = time.time()
        self.lr0 = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_begin(self, batch, logs=None):
        """Set the rate for the elapsed fraction of the budget."""
        factor = cosine_fraction(time.time() - self.start, self.seconds, self.final_fraction)
        self.model.optimizer.learning_rate.assign(self.lr0 * float(factor))


class TrainingDiverged(RuntimeError):
    """The monitored validation value was not finite in any epoch (a diverged training or
    an unusable validation set): there is no epoch to keep.

    Attributes
    ----------
    history : dict
        The per-epoch logs of the fit that diverged (for the record).
    seconds : float
        Its fitting time.
    """

    def __init__(self, message, history=None, seconds=0.0):
        super().__init__(message)
        self.history = history or {}
        self.seconds = float(seconds)


def fit(model, train_data, val_data, config, outdir, val_truth=None, epochs=None,
        verbose='auto', extra_callbacks=None, previous=None, initial_best=None,
        checkpoint_card=None, checkpoint_config=None, epoch_offset=0):
    """Fit a compiled model with early stopping and best-checkpointing on validation.

    Parameters
    ----------
    model : keras.Model
        Compiled (:func:`compile_model`).
    train_data : keras.utils.PyDataset or tuple
        Training batches ``(X, y)`` (a generator producing fresh, augmented spectra each
        epoch), or an ``(X, y)`` tuple of arrays.
    val_data : tuple
        ``(X_val, y_val)`` arrays.
    config : lbgnet.config.Config
        ``training`` section: ``epochs``, ``batch_size``, ``patience``, ``monitor`` and
        ``max_minutes`` (optional wall-clock budget, checked after each epoch).
    outdir : str
        Receives the best checkpoint, ``history.csv`` and ``loss.png``.
    val_truth : dict, optional
        ``CLASS`` and ``Z_TRUE`` of the validation set; needed to monitor ``val_score``
        (otherwise ``val_loss`` is monitored).
    epochs : int, optional
        [``training.epochs``]
    verbose : str or int, optional
        Keras verbosity ['auto': progress bar].
    extra_callbacks : list of keras.callbacks.Callback, optional
        Extra callbacks, run after the validation score (e.g. a tuning pruner).
    previous : dict, optional
        Logs of earlier training phases (with ``phase``): ``history.csv`` and ``loss.png``
        then hold them before this fit's epochs (:class:`HistoryWriter`).
    initial_best : float, optional
        The checkpoint is replaced only by an epoch better than this (an earlier phase's
        best), so that a run killed in a later phase keeps the best weights so far.
    checkpoint_card : dict, optional
        More entries of the checkpoint's model card (:func:`save_checkpoint`).
    checkpoint_config : lbgnet.config.Config, optional
        The configuration the checkpoint's card records [`config`] (a training phase's
        `config` has the phase's epochs; the card records the run's).
    epoch_offset : int, optional
        Epochs of the run before this fit: the checkpoint's card counts the run's [0].

    Returns
    -------
    history : dict
        Per-epoch logs (``loss``, ``val_loss``, ``val_score`` …).
    info : dict
        ``best_epoch`` (1-based), ``best`` monitored value, ``epochs_run``, ``fit_seconds``.

    Raises
    ------
    TrainingDiverged
        When the monitored value is not finite in any epoch.  A training loss that becomes
        NaN or infinite stops the fit (``keras.callbacks.TerminateOnNaN``); the best
        earlier epoch, if any, is kept.
    """
    log = get_logger()
    opts = training_options(config, epochs=epochs)
    monitor = opts['monitor'] if val_truth is not None else 'val_loss'
    os.makedirs(outdir, exist_ok=True)
    checkpoint = os.path.join(outdir, CHECKPOINT)
    callbacks = []
    if val_truth is not None:
        callbacks.append(ValidationScore(val_data[0], val_truth['CLASS'], val_truth['Z_TRUE'],
                                         config))
    callbacks += [
        keras.callbacks.EarlyStopping(monitor=monitor, mode=MONITORS[monitor],
                                      patience=opts['patience'], restore_best_weights=True),
        BestCheckpoint(checkpoint, monitor, MONITORS[monitor], initial_value_threshold=initial_best,
                       config=checkpoint_config or config, card=checkpoint_card,
                       epoch_offset=epoch_offset),
        HistoryWriter(outdir, previous),
        keras.callbacks.TerminateOnNaN(),
    ]
    if opts['max_minutes']:
        callbacks.append(TimeLimit(opts['max_minutes']))
        if opts['lr_schedule'] == 'cosine_time':
            callbacks.append(TimeCosine(opts['max_minutes'], opts['lr_final_fraction']))
    callbacks += list(extra_callbacks or [])
    fit_kwargs = {}
    if isinstance(train_data, tuple):
        fit_kwargs = dict(x=train_data[0], y=train_data[1], batch_size=opts['batch_size'],
                          shuffle=True)
    else:
        fit_kwargs = dict(x=train_data)
    start = time.time()
    result = model.fit(validation_data=val_data, epochs=opts['epochs'], callbacks=callbacks,
                       verbose=verbose, **fit_kwargs)
    seconds = time.time() - start
    history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
    values = np.asarray(history[monitor], dtype=np.float64)
    loss = np.asarray(history.get('loss', [np.nan]), dtype=np.float64)
    diverged = not np.isfinite(loss[-1])
    if not np.isfinite(values).any():
        why = (f'the training loss became {loss[-1]} in epoch {len(loss)}: check the loss '
               'weights and the learning rate' if diverged else 'check the validation set')
        raise TrainingDiverged(f'{outdir}: {monitor} is not finite in any epoch ({why}); '
                               'no model kept', history, seconds)
    if diverged:
        log.warning('the training loss became %s in epoch %d: stopped there', loss[-1], len(loss))
    values = np.where(np.isfinite(values), values, np.nan)
    best = int(np.nanargmax(values) if MONITORS[monitor] == 'max' else np.nanargmin(values))
    if os.path.exists(checkpoint):
        with warnings.catch_warnings():
            # a checkpoint kept from the frozen phase of transfer learning holds that
            # phase's optimizer state, which Keras skips with a warning: only the model
            # weights are wanted here
            warnings.filterwarnings('ignore', message='Skipping variable loading for optimizer')
            model.load_weights(checkpoint)
    from .plots import plot_loss_curves
    plot_loss_curves(history if previous is None else merge_histories(previous, history),
                     os.path.join(outdir, LOSS_PLOT))
    info = {'best_epoch': best + 1, 'best': float(values[best]), 'monitor': monitor,
            'epochs_run': len(values), 'fit_seconds': seconds}
    log.info('trained %d epoch%s in %.0f s; best %s = %.4f at epoch %d', info['epochs_run'],
             '' if info['epochs_run'] == 1 else 's',
             seconds, monitor, info['best'], info['best_epoch'])
    return history, info
