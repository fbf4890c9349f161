"""
lbgnet.model
============

The QuasarNET-style line finder, built from the ``model`` section of a configuration.

Architecture (layer names in brackets)::

    input (nbins, 2: normalised flux, S/N)                   [spectra]
    channel selection / S/N softening                       [input_channels]
    n × { Conv1D → BatchNorm → ReLU → Dropout }             [conv_i, batch_normalization_i,
                                                             activation_i, dropout_i]
    Flatten → Dense → BatchNorm → ReLU → Dropout            [flatten, fc_common,
                                                             batch_normalization_fc,
                                                             fc_activation, dropout_fc]
    per line L: Dense(nboxes, sigmoid)                      [fc_box_<L>]
                Dense(nboxes) → rescaled sigmoid            [fc_offset_<L>, offset_activation]
    output (nlines, nboxes, 2: confidence, offset)          [line_boxes]

The convolutional and ``fc_common`` layers carry QuasarNET's names, so that QuasarNET-format
weights can be mapped onto them (:func:`quasarnet_layer_names`).  The model always takes
the full two-channel output of :mod:`lbgnet.preprocess`; a flux-only configuration selects
channel 0 inside the network, so callers never slice the input themselves.
"""
import numpy as np
import keras

from .labels import NTARGETS
from .modelspec import BN_EPSILON, CHANNEL_NAMES, model_options
from .preprocess import NCHANNELS

@keras.saving.register_keras_serializable(package='lbgnet')
class InputChannels(keras.layers.Layer):
    """Select input channels and optionally soften the S/N channel.

    Parameters
    ----------
    channels : sequence of int
        Indices of the channels to keep, in order.
    snr_index : int or None
        Index (in the input) of the S/N channel to soften, or None.
    snr_softening : float or None
        When set, the S/N channel becomes ``asinh(snr / snr_softening)``, which keeps faint
        spectra linear and compresses bright ones.
    """

    def __init__(self, channels, snr_index=None, snr_softening=None, **kwargs):
        super().__init__(**kwargs)
        self.channels = [int(c) for c in channels]
        self.snr_index = None if snr_index is None else int(snr_index)
        self.snr_softening = None if snr_softening is None else float(snr_softening)

    def call(self, inputs):
        """Return the selected (and softened) channels, shape (batch, nbins, nkept)."""
        parts = []
        for chan in self.channels:
            part = inputs[..., chan:chan + 1]
            if chan == self.snr_index and self.snr_softening is not None:
                part = keras.ops.arcsinh(part / self.snr_softening)
            parts.append(part)
        if len(parts) == 1:
            return parts[0]
        return keras.ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        """Same as the input with ``len(channels)`` channels."""
        return tuple(input_shape[:-1]) + (len(self.channels),)

    def get_config(self):
        """Constructor arguments, for serialisation."""
        config = super().get_config()
        config.update(channels=self.channels, snr_index=self.snr_index,
                      snr_softening=self.snr_softening)
        return config


@keras.saving.register_keras_serializable(package='lbgnet')
class RescaledSigmoid(keras.layers.Layer):
    """Sigmoid rescaled to ``(-margin, 1 + margin)``: the offset head.

    A plain sigmoid never reaches 0 or 1, so a line sitting on a box edge would push the
    logits to infinity; the margin lets the head reach slightly outside its box.

    Parameters
    ----------
    margin : float
        How far outside [0, 1] the output may go.
    """

    def __init__(self, margin=0.1, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)

    def call(self, inputs):
        """``-margin + (1 + 2 margin) sigmoid(inputs)``."""
        return (1.0 + 2.0 * self.margin) * keras.ops.sigmoid(inputs) - self.margin

    def compute_output_shape(self, input_shape):
        """Unchanged."""
        return input_shape

    def get_config(self):
        """Constructor arguments, for serialisation."""
        config = super().get_config()
        config.update(margin=self.margin)
        return config


def build_model(config):
    """Build the line finder described by a configuration.

    Parameters
    ----------
    config : lbgnet.config.Config
        Supplies the grid (``nbins``), the line list, ``nboxes`` and the ``model`` section
        (see ``etc/lbgnet-default.yaml`` and ``doc/model.rst``).

    Returns
    -------
    keras.Model
        Uncompiled functional model: input (batch, nbins, 2) float32, output
        (batch, nlines, nboxes, 2) = (box confidence, in-box offset).

    Raises
    ------
    lbgnet.config.ConfigError
        For an invalid model section or a network whose convolutions shrink the grid to
        nothing.
    """
    from .variants import architecture, build_variant
    if architecture(config) != 'linefinder':      # direct / hybrid: lbgnet.variants
        return build_variant(config)
    opts = model_options(config)
    nlines, nboxes = len(config.lines), config.nboxes
    inputs = keras.Input(shape=(config.grid.nbins, NCHANNELS), name='spectra')
    snr_index = CHANNEL_NAMES.index('snr')
    x = InputChannels(opts['channel_index'], snr_index, opts['snr_softening'],
                      name='input_channels')(inputs)
    for i in range(1, opts['conv_layers'] + 1):
        x = keras.layers.Conv1D(opts['filters'][i - 1], opts['kernel_size'][i - 1],
                                strides=opts['strides'][i - 1], padding=opts['padding'],
                                name=f'conv_{i}')(x)
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON,
                                            name=f'batch_normalization_{i}')(x)
        x = keras.layers.Activation('relu', name=f'activation_{i}')(x)
        if opts['dropout'] > 0:
            x = keras.layers.Dropout(opts['dropout'], name=f'dropout_{i}')(x)
    x = keras.layers.Flatten(name='flatten')(x)
    x = keras.layers.Dense(int(opts['dense_units']), name='fc_common')(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name='batch_normalization_fc')(x)
    x = keras.layers.Activation('relu', name='fc_activation')(x)
    if opts['dropout'] > 0:
        x = keras.layers.Dropout(opts['dropout'], name='dropout_fc')(x)
    boxes = [keras.layers.Dense(nboxes, activation='sigmoid', name=f'fc_box_{line}')(x)
             for line in config.lines.names]
    offsets = [keras.layers.Dense(nboxes, name=f'fc_offset_{line}')(x)
               for line in config.lines.names]
    box = _stack_lines(boxes, nlines, nboxes, 'box')
    offset = _stack_lines(offsets, nlines, nboxes, 'offset')
    offset = RescaledSigmoid(float(opts['offset_margin']), name='offset_activation')(offset)
    outputs = keras.layers.Concatenate(axis=-1, name='line_boxes')([box, offset])
    name = str(config.extra.get('name', 'lbgnet')).replace(' ', '_')
    return keras.Model(inputs, outputs, name=name)


def _stack_lines(heads, nlines, nboxes, what):
    """Concatenate per-line (batch, nboxes) heads into (batch, nlines, nboxes, 1)."""
    x = keras.layers.Concatenate(axis=-1, name=f'concat_{what}')(heads) if nlines > 1 else heads[0]
    return keras.layers.Reshape((nlines, nboxes, 1), name=f'reshape_{what}')(x)


def quasarnet_layer_names(nconv, file_layers=None):
    """Map our layer names to those of a QuasarNET-format Keras model.

    QuasarNET (Busca & Balland 2018) names its layers ``conv_1 … conv_n``, the dense layer
    ``fc_common``, and its n + 1 batch normalisations (after each convolution, then after
    the dense layer) with Keras's automatic names.  Those start at ``batch_normalization``
    (tf.keras: ``batch_normalization``, ``batch_normalization_1`` … ``_<n>``) or at
    ``batch_normalization_1`` (standalone Keras 2: ``_1`` … ``_<n+1>``), so they are
    mapped by their order, not by their suffix.

    Parameters
    ----------
    nconv : int
        Number of convolutional layers.
    file_layers : iterable of str, optional
        Layer names of the file; the batch normalisations are taken from it in the order
        of their numeric suffix (none = 0), only when its convolutions are exactly
        ``conv_1 … conv_<nconv>`` and it has `nconv` or `nconv` + 1 batch normalisations
        (otherwise none is mapped).  Without it, the tf.keras convention.

    Returns
    -------
    dict
        Our layer name -> QuasarNET layer name, for the layers with weights that the two
        architectures share (the per-line heads differ and are not mapped).
    """
    def suffix(name):
        tail = name[len('batch_normalization'):]
        return int(tail[1:]) if tail.startswith('_') and tail[1:].isdigit() else 0

    if file_layers is None:
        norms = ['batch_normalization'] + [f'batch_normalization_{i}' for i in range(1, nconv + 1)]
    else:
        file_layers = list(file_layers)
        norms = sorted((n for n in file_layers if n == 'batch_normalization'
                        or (n.startswith('batch_normalization_') and n[20:].isdigit())), key=suffix)
        convs = {n for n in file_layers if n.lower().startswith('conv')}
        if convs != {f'conv_{i}' for i in range(1, nconv + 1)} or \
                len(norms) not in (nconv, nconv + 1):
            # not QuasarNET's layout (conv_0.., Conv_1.., other batch norms): which layer
            # each batch normalisation follows is unknown, and a shape cannot tell
            norms = []
    names = {f'conv_{i}': f'conv_{i}' for i in range(1, nconv + 1)}
    names.update({f'batch_normalization_{i}': norms[i - 1] for i in range(1, min(nconv, len(norms)) + 1)})
    names['fc_common'] = 'fc_common'
    if len(norms) > nconv:
        names['batch_normalization_fc'] = norms[nconv]
    return names


def predict_boxes(model, X, batch_size=2048):
    """Run the line finder on gridded spectra.

    Parameters
    ----------
    model : keras.Model
        From :func:`build_model` or :func:`lbgnet.io.modelfile.load_model`.
    X : numpy.ndarray
        Network input from :mod:`lbgnet.preprocess`, shape (nspec, nbins, 2).
    batch_size : int, optional
        Spectra per forward pass [2048].

    Returns
    -------
    conf : numpy.ndarray
        Box confidence, shape (nspec, nlines, nboxes), float32 in (0, 1).
    offset : numpy.ndarray
        In-box offset, same shape, float32.

    Raises
    ------
    ValueError
        If `X` does not have the model's input shape.
    """
    expected = tuple(model.input_shape[1:])
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 3 or X.shape[1:] != expected:
        raise ValueError(f'input shape {X.shape} does not match the model input (nspec,) + {expected}')
    nlines, nboxes = model.output_shape[1:3]
    out = np.empty((X.shape[0], nlines, nboxes, NTARGETS), dtype=np.float32)
    for start in range(0, X.shape[0], batch_size):
        chunk = X[start:start + batch_size]
        out[start:start + len(chunk)] = keras.ops.convert_to_numpy(model(chunk, training=False))
    return out[..., 0], out[..., 1]
