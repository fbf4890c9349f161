"""
lbgnet.transfer
===============

Transfer learning: initialise a network from a pretrained one, freeze the first layers,
and train in two phases (frozen, then everything unfrozen for a few final epochs).

The *trunk* of every lbgnet architecture is the sequence of blocks ::

    block 1 .. n     conv_i + batch_normalization_i            (i = 1 .. conv_layers)
    block n + 1      fc_common + batch_normalization_fc

and ``--freeze N`` freezes the first N blocks.  A frozen batch normalisation runs in
inference mode (its moving statistics stay those of the pretrained network), as Keras
does for any non-trainable ``BatchNormalization``.

Pretrained weights come from an lbgnet model file (:mod:`lbgnet.io.modelfile`, same layer
names) or from a QuasarNET-format Keras 2 ``.h5`` file (:mod:`lbgnet.io.qnweights`, mapped
with :func:`lbgnet.model.quasarnet_layer_names`).  A layer is loaded only when every one
of its tensors has the shape of the target's; every other layer keeps its initialisation
and is reported with both sets of shapes.  ``fc_common`` also needs the same flatten
layout (bins × filters of the last convolution: a kernel of equal shape over another
layout would mean other features), and a batch normalisation is loaded only with the
layer it normalises (its statistics describe that layer's output).
"""
import dataclasses
import os
import re

import numpy as np
from desiutil.log import get_logger

from .config import ConfigError

#: Which layers ``--init-layers`` selects.
INIT_LAYERS = ('conv', 'dense', 'all')
_CONV_RE = re.compile(r'^(conv|batch_normalization)_\d+$')
_DENSE = ('fc_common', 'batch_normalization_fc')
_NO_CARD = ('{what} without its model card (.json), e.g. written before lbgnet wrote cards '
            'with its checkpoints; use the final <name>.weights.h5 (with <name>.json) of a '
            'finished run')


@dataclasses.dataclass
class TransferReport:
    """What :func:`apply_weights` did, layer by layer.

    Attributes
    ----------
    source : str
        File the weights came from.
    kind : str
        ``'lbgnet'`` or ``'quasarnet'``.
    loaded : list of (str, list)
        Layer name and its tensor shapes.
    incompatible : list of (str, list, list)
        Layer name, the file's shapes and the model's shapes.
    missing : list of str
        Selected layers of the model that the file does not have.
    skipped : list of (str, str)
        Layer name and why it was not loaded although its shapes match.
    layers : str
        The layer selection applied (:func:`selected_layers`; :func:`init_from` narrows
        ``all`` to ``dense`` for a QuasarNET file), '' when not given.
    """

    source: str
    kind: str
    layers: str = ''
    loaded: list = dataclasses.field(default_factory=list)
    incompatible: list = dataclasses.field(default_factory=list)
    missing: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)

    def lines(self):
        """One human-readable line per layer (loaded, incompatible, missing)."""
        out = [f'{name}: loaded {_fmt(shapes)}' for name, shapes in self.loaded]
        out += [f'{name}: NOT loaded, incompatible shapes: file {_fmt(src)} vs model {_fmt(dst)}'
                for name, src, dst in self.incompatible]
        out += [f'{name}: NOT loaded, not in the file' for name in self.missing]
        out += [f'{name}: NOT loaded, {why}' for name, why in self.skipped]
        return out

    def log(self, logger=None):
        """Log a summary and :meth:`lines` (incompatible/missing layers as warnings)."""
        log = logger or get_logger()
        log.info('initialised %d layer(s) from %s (%s format); %d incompatible, %d missing, '
                 '%d skipped', len(self.loaded), self.source, self.kind,
                 len(self.incompatible), len(self.missing), len(self.skipped))
        for line in self.lines():
            (log.info if ': loaded ' in line else log.warning)('  %s', line)

    def to_dict(self):
        """JSON-ready form, for the model card."""
        return {'source': self.source, 'kind': self.kind,
                'loaded': [name for name, _ in self.loaded],
                'incompatible': [{'layer': n, 'file': [list(s) for s in a],
                                  'model': [list(s) for s in b]}
                                 for n, a, b in self.incompatible],
                'missing': list(self.missing),
                'skipped': [{'layer': n, 'why': why} for n, why in self.skipped]}


def _fmt(shapes):
    return ' '.join(str(tuple(int(d) for d in s)) for s in shapes)


def selected_layers(model, which='all'):
    """Names of the layers with weights that `which` selects.

    Parameters
    ----------
    model : keras.Model
    which : {'conv', 'dense', 'all'}
        ``conv``: the convolutions and their batch normalisations; ``dense``: those and
        ``fc_common`` with its batch normalisation; ``all``: every layer with weights.

    Returns
    -------
    list of str
    """
    if which not in INIT_LAYERS:
        raise ValueError(f'init layers must be one of {INIT_LAYERS}, not {which!r}')
    names = [layer.name for layer in model.layers if layer.weights]
    if which == 'all':
        return names
    keep = [n for n in names if _CONV_RE.match(n)]
    if which == 'dense':
        keep += [n for n in names if n in _DENSE]
    return keep


def apply_weights(model, weights, names, source='', kind='lbgnet', flatten=None):
    """Set the weights of the named layers when every tensor shape matches.

    A layer is loaded only when the layers with weights that feed it (the nearest ones
    upstream: ``conv_i`` for ``batch_normalization_i``, ``batch_normalization_i`` for
    ``conv_(i+1)``, ``batch_normalization_fc`` for the line heads), where they are among
    `names`, were loaded too: its weights were fitted to their output in the file (a
    feeding layer not among `names`, which :func:`selected_layers` never gives, is left
    as it is in the model, and the layer is loaded alone).  ``fc_common`` is loaded only
    when the flatten layout (bins, filters) is the file's.

    Parameters
    ----------
    model : keras.Model
    weights : dict
        Layer name (in `model`'s naming) -> list of arrays in ``get_weights()`` order.
    names : sequence of str
        Layers of `model` to initialise.
    source, kind : str, optional
        Recorded in the report.
    flatten : tuple of int, optional
        (bins, filters) at the file network's flatten layer; None: unknown, which for a
        QuasarNET file (`kind`) leaves ``fc_common`` out, and is unchecked otherwise.

    Returns
    -------
    TransferReport
    """
    report = TransferReport(str(source), kind)
    loaded = set()
    for name in names:
        layer = model.get_layer(name)
        mine = [tuple(w.shape) for w in layer.get_weights()]
        partner = _normalised_layer(name)
        unloaded = [f for f in feeding_layers(model, name) if f in names and f not in loaded]
        if name not in weights:
            report.missing.append(name)
        elif [tuple(w.shape) for w in weights[name]] != mine:
            report.incompatible.append((name, [tuple(w.shape) for w in weights[name]], mine))
        elif partner is not None and partner in unloaded:
            report.skipped.append((name, f'{partner} was not loaded (its statistics describe '
                                         f"the file's {partner})"))
        elif name == 'fc_common' and flatten is not None and \
                tuple(flatten) != flatten_layout(model):
            report.skipped.append((name, f'flatten layout (bins, filters) {tuple(flatten)} in '
                                         f'the file vs {flatten_layout(model)} in the model'))
        elif name == 'fc_common' and flatten is None and kind == 'quasarnet':
            # its last convolution was not found (other layer names): an equal input size
            # says nothing of which (bin, filter) each weight reads
            report.skipped.append((name, "the file's flatten layout (bins, filters) is "
                                         'unknown: its last convolution was not found'))
        elif unloaded:
            report.skipped.append((name, f'{unloaded[0]}, which feeds it, was not loaded (its '
                                         f"weights read the output of the file's {unloaded[0]})"))
        else:
            layer.set_weights(weights[name])
            report.loaded.append((name, mine))
            loaded.add(name)
    return report


def feeding_layers(model, name):
    """The layers with weights that feed a layer.

    Parameters
    ----------
    model : keras.Model
    name : str
        A layer of `model`.

    Returns
    -------
    list of str
        Names of the nearest layers with weights upstream of `name` (through layers
        without weights: activations, dropout, flatten); empty for the first.
    """
    out, seen = [], set()
    stack = [model.get_layer(name)]
    while stack:
        layer = stack.pop()
        try:
            inputs = layer.input
        except (AttributeError, ValueError):        # an input layer
            continue
        for tensor in (inputs if isinstance(inputs, (list, tuple)) else [inputs]):
            history = getattr(tensor, '_keras_history', None)
            source = getattr(history, 'operation', None)
            if source is None or source is layer or source.name in seen:
                continue
            seen.add(source.name)
            if source.weights:
                out.append(source.name)
            else:
                stack.append(source)
    return out


def _normalised_layer(name):
    """The layer a batch normalisation follows (None for other layers)."""
    if name == 'batch_normalization_fc':
        return 'fc_common'
    match = re.fullmatch(r'batch_normalization_(\d+)', name)
    return f'conv_{match.group(1)}' if match else None


def flatten_layout(model):
    """(bins, filters) entering the ``flatten`` layer of an lbgnet network (None without one)."""
    try:
        shape = model.get_layer('flatten').input.shape
    except ValueError:
        return None
    return tuple(int(d) for d in shape[1:])


def read_pretrained(path):
    """Layer weights of a pretrained network, named as in lbgnet models.

    Parameters
    ----------
    path : str
        lbgnet model (``NAME.weights.h5`` with its ``NAME.json``, or the ``.json``), or a
        QuasarNET-format Keras 2 ``.h5`` file.

    Returns
    -------
    weights : dict
        Layer name -> list of arrays.
    kind : str
        ``'lbgnet'`` or ``'quasarnet'``.
    flatten : tuple of int or None
        (bins, filters) at the network's flatten layer (:func:`apply_weights`).

    Raises
    ------
    lbgnet.io.InputFileError
        Missing or unreadable file, or a Keras 3 ``.weights.h5`` without its ``.json``
        (e.g. a ``checkpoint.weights.h5`` written before checkpoints had their card,
        :func:`lbgnet.train.save_checkpoint`): its layers cannot be named without it.
    """
    from .io import InputFileError, MissingInputError
    from .io.modelfile import load_model, model_paths
    from .io.qnweights import count_conv_layers, read_keras2_weights
    from .model import quasarnet_layer_names
    path = str(path)
    try:
        json_path = model_paths(path)[1]
    except ValueError:
        json_path = None
    if json_path and os.path.exists(json_path):
        model = load_model(path)[0]
        return ({layer.name: layer.get_weights() for layer in model.layers if layer.weights},
                'lbgnet', flatten_layout(model))
    if not os.path.exists(path):
        raise MissingInputError(path)
    if os.path.isdir(path):
        raise InputFileError(path, 'is a directory: name a model file (NAME.weights.h5)')
    if not path.endswith(('.h5', '.hdf5')):
        raise InputFileError(path, 'not an lbgnet model (no .json beside it) nor a Keras .h5 file')
    try:
        raw = read_keras2_weights(path)
    except InputFileError:
        from .train import CHECKPOINT
        if path.endswith('.weights.h5') and os.path.isfile(path):
            raise InputFileError(path, _NO_CARD.format(
                what=('a training checkpoint' if os.path.basename(path) == CHECKPOINT
                      else 'Keras 3 weights'))) from None
        raise
    nconv = count_conv_layers(raw)
    mapping = quasarnet_layer_names(nconv, raw)
    weights = {ours: raw[theirs] for ours, theirs in mapping.items() if theirs in raw}
    flatten = None
    if f'conv_{nconv}' in weights and 'fc_common' in weights:
        filters = weights[f'conv_{nconv}'][0].shape[-1]      # kernel (width, in, out)
        flatten = (weights['fc_common'][0].shape[0] // filters, filters)
    return weights, 'quasarnet', flatten


def input_differences(source, target, loaded=None):
    """What the input of two lbgnet configurations means differently, for the layers loaded.

    Weights load wherever the shapes agree, but they only mean the same where the input
    does: swapped ``model.channels`` or another ``snr_softening`` change what the first
    convolution sees; other ``strides`` or ``padding`` feed the later layers (and
    ``fc_common``) their input at another resolution; another grid (same number of bins) puts ``fc_common``'s positions
    and every box at other wavelengths; a line of the same name at another rest
    wavelength gives its heads another meaning.

    Parameters
    ----------
    source, target : lbgnet.config.Config
    loaded : collection of str, optional
        Names of the layers that were loaded; None: all of them.  A difference is only
        reported when a layer it affects was loaded (fine-tuning from the convolutions of
        a network with other lines is no mismatch).

    Returns
    -------
    list of str
        One ``what: source vs target`` entry per difference (empty when none).
    """
    from .model import model_options

    def any_loaded(test):
        return loaded is None or any(test(name) for name in loaded)
    out = []
    src, dst = model_options(source), model_options(target)
    if any_loaded(lambda name: name == 'conv_1'):
        for key in ('channels', 'snr_softening'):
            if src.get(key) != dst.get(key):
                out.append(f'model.{key}: {src.get(key)} vs {dst.get(key)}')
    # the sampling of each convolution's input: another stride or padding upstream puts a
    # loaded layer's kernel (and fc_common's positions) over another resolution
    for key in ('strides', 'padding'):
        if src.get(key) != dst.get(key) and any_loaded(
                lambda name: name.startswith(('conv_', 'batch_normalization_', 'fc_'))
                and name != 'conv_1'):
            out.append(f'model.{key}: {src.get(key)} vs {dst.get(key)}')
    if src.get('offset_margin') != dst.get('offset_margin') and \
            any_loaded(lambda name: name.startswith('fc_offset_')):
        # the offset heads feed RescaledSigmoid(offset_margin): other offsets in the box
        out.append(f'model.offset_margin: {src.get("offset_margin")} vs '
                   f'{dst.get("offset_margin")}')
    grid = (source.grid.wave_min, source.grid.dwave, source.grid.nbins)
    if grid != (target.grid.wave_min, target.grid.dwave, target.grid.nbins) and \
            any_loaded(lambda name: name.startswith('fc_')):   # fc_common, heads
        out.append(f'grid (wave_min, dwave, nbins): {grid} vs '
                   f'{(target.grid.wave_min, target.grid.dwave, target.grid.nbins)}')
    waves = [dict(zip(c.lines.names, np.asarray(c.lines.waves, dtype=float)))
             for c in (source, target)]
    moved = sorted(name for name in set(waves[0]) & set(waves[1])
                   if abs(waves[0][name] - waves[1][name]) > 1e-3
                   and any_loaded(lambda layer, n=name: layer.endswith('_' + n)))
    if moved:
        out.append('line rest wavelengths: ' + ', '.join(
            f'{n} {waves[0][n]:g} vs {waves[1][n]:g}' for n in moved))
    return out


def init_from(model, path, which='all', config=None):
    """Initialise layers of `model` from a pretrained network file and log the outcome.

    Parameters
    ----------
    model : keras.Model
    path : str
        See :func:`read_pretrained`.
    which : {'conv', 'dense', 'all'}, optional
        Layers to initialise (:func:`selected_layers`) ['all'; ``dense`` for QuasarNET
        files, whose line heads never map onto ours].
    config : lbgnet.config.Config, optional
        The configuration of `model`: an lbgnet file whose input means something else for
        the layers loaded (:func:`input_differences`) is warned about, difference by
        difference.

    Returns
    -------
    TransferReport
    """
    weights, kind, flatten = read_pretrained(path)
    if kind == 'quasarnet' and which == 'all':
        which = 'dense'          # QuasarNET's per-line heads (QSO lines) never map onto ours
        get_logger().info('%s: QuasarNET heads are not transferred; initialising conv and '
                          'fc_common layers', path)
    report = apply_weights(model, weights, selected_layers(model, which), path, kind, flatten)
    report.layers = which
    report.log()
    loaded = [name for name, _ in report.loaded]
    if kind == 'quasarnet' and config is not None and 'conv_1' in loaded:
        from .model import model_options
        channels = list(model_options(config).get('channels') or [])
        if channels != ['flux']:        # QuasarNET's one input channel: normalised flux
            get_logger().warning("%s: its input differs from this network's (model.channels: "
                                 "['flux'] (QuasarNET) vs %s): the loaded conv_1 does not "
                                 'mean the same', path, channels)
    if kind == 'lbgnet' and config is not None:
        from .io.modelfile import read_model_description
        for text in input_differences(read_model_description(path)[1], config, loaded):
            get_logger().warning('%s: its input differs from this network\'s (%s): the '
                                 'loaded weights do not mean the same', path, text)
    return report


def trunk_blocks(model):
    """The trunk blocks of a model, in order (see the module docstring).

    Returns
    -------
    list of list of str
        Layer names of each block (the batch normalisation only when present).
    """
    names = {layer.name for layer in model.layers}
    blocks, i = [], 1
    while f'conv_{i}' in names:
        blocks.append([n for n in (f'conv_{i}', f'batch_normalization_{i}') if n in names])
        i += 1
    if 'fc_common' in names:
        blocks.append([n for n in _DENSE if n in names])
    return blocks


def freeze_blocks(model, nfrozen):
    """Make the first `nfrozen` trunk blocks non-trainable.

    Parameters
    ----------
    model : keras.Model
        Not compiled yet, or recompiled afterwards (Keras reads ``trainable`` at compile).
    nfrozen : int
        0 freezes nothing; at most the number of blocks (conv layers + 1).

    Returns
    -------
    list of str
        The frozen layer names.

    Raises
    ------
    lbgnet.config.ConfigError
        For `nfrozen` outside [0, number of blocks].
    """
    blocks = trunk_blocks(model)
    if not 0 <= int(nfrozen) <= len(blocks):
        raise ConfigError(f'--freeze {nfrozen}: this network has {len(blocks)} trunk blocks '
                          f'({len(blocks) - 1} conv layers + fc_common)')
    frozen = [name for block in blocks[:int(nfrozen)] for name in block]
    for name in frozen:
        model.get_layer(name).trainable = False
    return frozen


def unfreeze(model):
    """Make every layer trainable again (recompile afterwards)."""
    for layer in model.layers:
        layer.trainable = True


def _with_training(config, **changes):
    from .train import training_options
    return dataclasses.replace(config, extra=dict(config.extra,
                                                  training=dict(training_options(config), **changes)))


def fit_in_phases(model, train_data, val_data, config, outdir, steps_per_epoch, *, nfrozen=0,
                  unfreeze_epochs=0, unfreeze_lr_factor=0.1, val_truth=None, verbose='auto',
                  checkpoint_card=None):
    """Compile and fit, optionally with frozen layers and a final unfrozen phase.

    Phase 1 trains ``epochs - unfreeze_epochs`` epochs with the first `nfrozen` blocks
    frozen.  Phase 2 (when both `nfrozen` and `unfreeze_epochs` are > 0) unfreezes every
    layer, recompiles at ``learning_rate × unfreeze_lr_factor`` and trains
    `unfreeze_epochs` more.  The weights of the better phase (on the monitored validation
    quantity) are kept.  ``training.max_minutes`` is shared between the phases in
    proportion to their epochs.  With ``nfrozen = 0`` this is exactly
    :func:`lbgnet.train.compile_model` + :func:`lbgnet.train.fit`.

    Parameters
    ----------
    model : keras.Model
        Uncompiled.
    train_data, val_data, config, outdir, val_truth, verbose
        As for :func:`lbgnet.train.fit`.
    steps_per_epoch : int
        Batches per epoch (for the cosine learning-rate schedule).
    nfrozen, unfreeze_epochs : int, optional
        [0, 0]
    unfreeze_lr_factor : float, optional
        [0.1]
    checkpoint_card : dict, optional
        More entries of the checkpoint's model card (:func:`lbgnet.train.save_checkpoint`),
        whose configuration is `config` and whose epochs count from the run's start
        whatever the phase.

    Returns
    -------
    history : dict
        Per-epoch logs of both phases, with a ``phase`` entry (1 or 2) per epoch.
    info : dict
        As :func:`lbgnet.train.fit`, plus ``frozen`` (layer names), ``phases`` (the info of
        each phase) and ``kept_phase``.
    """
    from .io.experiments import write_history_csv
    from .plots import plot_loss_curves
    from .train import (CHECKPOINT, HISTORY, LOSS_PLOT, MONITORS, TrainingDiverged, compile_model,
                        fit, merge_histories, save_checkpoint, training_options)
    opts = training_options(config)
    epochs, lr = opts['epochs'], opts['learning_rate']
    frozen = freeze_blocks(model, nfrozen)
    k = int(unfreeze_epochs) if frozen else 0
    if not 0 <= k < epochs:
        raise ConfigError(f'--unfreeze-epochs {unfreeze_epochs} must be in [0, epochs={epochs})')
    minutes = opts['max_minutes']
    cfg1 = _with_training(config, epochs=epochs - k,
                          max_minutes=minutes * (epochs - k) / epochs if minutes else None)
    compile_model(model, cfg1, lr, total_steps=(epochs - k) * steps_per_epoch)
    card = dict(checkpoint_card=checkpoint_card, checkpoint_config=config)
    history, info = fit(model, train_data, val_data, cfg1, outdir, val_truth=val_truth,
                        verbose=verbose, **card)
    info = dict(info, frozen=frozen, phases=[dict(info)], kept_phase=1)
    history = dict(history, phase=[1] * info['epochs_run'])
    if k == 0:
        return history, info
    weights1 = model.get_weights()
    unfreeze(model)
    remaining = minutes - info['fit_seconds'] / 60 if minutes else None
    cfg2 = _with_training(config, epochs=k, max_minutes=max(remaining, 1e-3) if minutes else None)
    compile_model(model, cfg2, lr * unfreeze_lr_factor, total_steps=k * steps_per_epoch)
    try:
        history2, info2 = fit(model, train_data, val_data, cfg2, outdir, val_truth=val_truth,
                              verbose=verbose, previous=history, initial_best=info['best'],
                              epoch_offset=info['epochs_run'], **card)
    except TrainingDiverged as err:                 # the frozen phase stands
        get_logger().warning('unfrozen phase: %s; keeping the frozen phase', err)
        model.set_weights(weights1)
        save_checkpoint(os.path.join(outdir, CHECKPOINT), model, config, info['best_epoch'],
                        info['monitor'], info['best'], card=checkpoint_card)
        merged = merge_histories(history, err.history)    # the diverged epochs on record
        write_history_csv(os.path.join(outdir, HISTORY), merged)
        nrun = len(merged['phase'])
        return merged, dict(info, kept_phase=1, epochs_run=nrun,
                            fit_seconds=info['fit_seconds'] + err.seconds, phases=[
            info['phases'][0], {'diverged': str(err), 'epochs_run': nrun - info['epochs_run'],
                                     'fit_seconds': err.seconds}])
    better = info2['best'] > info['best'] if MONITORS[info2['monitor']] == 'max' \
        else info2['best'] < info['best']
    merged = merge_histories(history, history2)
    total = dict(info, phases=[info['phases'][0], info2], epochs_run=len(merged['phase']),
                 fit_seconds=info['fit_seconds'] + info2['fit_seconds'])
    if better:
        total.update(best=info2['best'], best_epoch=info['epochs_run'] + info2['best_epoch'],
                     kept_phase=2)
    else:
        model.set_weights(weights1)
        save_checkpoint(os.path.join(outdir, CHECKPOINT), model, config, info['best_epoch'],
                        info['monitor'], info['best'], card=checkpoint_card)
    write_history_csv(os.path.join(outdir, HISTORY), merged)
    plot_loss_curves(merged, os.path.join(outdir, LOSS_PLOT))
    get_logger().info('unfrozen phase: best %s %.4f (frozen phase %.4f); kept phase %d',
                      info2['monitor'], info2['best'], info['best'], total['kept_phase'])
    return merged, total
