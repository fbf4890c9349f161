"""
lbgnet.npforward
================

The line finder's forward pass in numpy: the afterburner's default inference engine.

:func:`from_weights` takes the weight tensors of a line finder (read from its weights file
by :func:`lbgnet.io.modelfile.read_weight_arrays`, without Keras, or taken from a Keras
model by :func:`from_keras`), checks them against the network its configuration
describes (:func:`weight_shapes`), folds every batch normalisation into the convolution or
dense layer before it, and returns a :class:`NumpyLineFinder` whose
:meth:`~NumpyLineFinder.predict` gives the Keras model's output to float32 rounding (about
1e-5).  Neither Keras nor TensorFlow is imported, so a production rank starts faster and
holds far less memory (doc/benchmarks.rst).

Each convolution is one matrix product: the padded input is viewed as its sliding windows
(``numpy.lib.stride_tricks.as_strided``, no copy), gathered into a (batch × bins,
kernel × channels) matrix and multiplied by the (kernel × channels, filters) kernel in
numpy's BLAS; bias and ReLU are then written straight into the next layer's padded input.
Spectra go through in small batches (:data:`BATCH`, which keep each layer's activations
in the CPU caches) on ``threads`` Python threads, each running BLAS on one thread (numpy
releases the GIL in both).  On 2 CPU cores this is as fast as the compiled TensorFlow pass
and twice as fast as the model's eager call (doc/benchmarks.rst); it needs a few MB per
thread instead of TensorFlow's ~0.5 MB per spectrum of a batch.

Dropout is the identity at inference and is skipped.  Direct and hybrid networks
(:mod:`lbgnet.variants`) have other heads and stay on Keras: :func:`from_keras` refuses
them with a ValueError.

BLAS always runs on one thread here and, within a block of spectra, the batches always
start at the same spectra, so the number of threads changes no output bit (the compiled
TensorFlow pass's outputs change in their last bits with its thread count,
doc/afterburner.rst).  The batch size does, and so does a block shorter than a batch (the
afterburner's ``--chunk-size``): BLAS blocks a product by its size, so a spectrum's
outputs may differ by float32 rounding from one batch size to another.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .modelspec import BN_EPSILON, CHANNEL_NAMES, architecture, model_options

#: Spectra per batch (the fastest of 32, 64 and 128 on 2 cores, doc/benchmarks.rst).
BATCH = 32

#: Layer classes a line finder of :func:`lbgnet.model.build_model` is made of.
_KNOWN_LAYERS = {'InputLayer', 'InputChannels', 'Conv1D', 'BatchNormalization', 'Activation',
                 'Dropout', 'Flatten', 'Dense', 'Concatenate', 'Reshape', 'RescaledSigmoid'}


@dataclass(frozen=True)
class ConvLayer:
    """One convolution with its batch normalisation folded in, followed by a ReLU.

    Attributes
    ----------
    kernel : numpy.ndarray
        Shape (kernel_size × in_channels, filters), float32, rows in (tap, channel) order.
    bias : numpy.ndarray
        Shape (filters,), float32.
    size, stride : int
        Kernel size and stride in bins.
    padding : str
        ``same`` or ``valid`` (Keras's conventions).
    """

    kernel: np.ndarray
    bias: np.ndarray
    size: int
    stride: int
    padding: str

    def geometry(self, nbins):
        """:func:`conv_geometry` of this layer for an input of `nbins` bins."""
        return conv_geometry(nbins, self.size, self.stride, self.padding)


def conv_geometry(nbins, size, stride, padding):
    """(output bins, zero bins before, zero bins after) of a convolution of an input of
    `nbins` bins, as Keras pads: ``same`` puts the odd bin of padding after the input."""
    if padding == 'valid':
        return (nbins - size) // stride + 1, 0, 0
    nout = -(-nbins // stride)
    total = max((nout - 1) * stride + size - nbins, 0)
    return nout, total // 2, total - total // 2


@dataclass(frozen=True)
class NumpyLineFinder:
    """A line finder's weights as numpy arrays and its forward pass.

    Attributes
    ----------
    nbins : int
        Input bins (the grid).
    channels : tuple of int
        Input channels the network reads, in order.
    snr_index : int or None
        Input index of the S/N channel; softened as ``asinh(snr / snr_softening)`` when
        `snr_softening` is set.
    snr_softening : float or None
    convs : tuple of ConvLayer
    dense_kernel, dense_bias : numpy.ndarray
        The common dense layer with its batch normalisation folded in (ReLU after it).
    head_kernel, head_bias : numpy.ndarray
        All the box heads, then all the offset heads, side by side: shape
        (dense units, 2 × nlines × nboxes).
    nlines, nboxes : int
    margin : float
        Offset margin of the rescaled sigmoid.
    """

    nbins: int
    channels: tuple
    snr_index: object
    snr_softening: object
    convs: tuple
    dense_kernel: np.ndarray
    dense_bias: np.ndarray
    head_kernel: np.ndarray
    head_bias: np.ndarray
    nlines: int
    nboxes: int
    margin: float

    def forward(self, X):
        """Network output of one batch.

        Parameters
        ----------
        X : numpy.ndarray
            Shape (nspec, nbins, 2), float32.

        Returns
        -------
        numpy.ndarray
            Shape (nspec, nlines, nboxes, 2): box confidence, in-box offset (float32).
        """
        nspec, nbins = X.shape[0], self.nbins
        x = self._first_input(X)
        for i, conv in enumerate(self.convs):
            nbins, nchan = conv.geometry(nbins)[0], x.shape[2]
            windows = as_strided(x, (nspec, nbins, conv.size, nchan),
                                 (x.strides[0], conv.stride * x.strides[1], x.strides[1],
                                  x.strides[2]), writeable=False)
            y = (windows.reshape(nspec * nbins, conv.size * nchan) @ conv.kernel)
            y = y.reshape(nspec, nbins, -1)
            if i + 1 < len(self.convs):         # bias and ReLU into the next padded input
                x, inner = self._padded(nspec, nbins, y.shape[2], self.convs[i + 1])
            else:
                inner = y
            np.add(y, conv.bias, out=inner)
            np.maximum(inner, 0, out=inner)
        hidden = inner.reshape(nspec, -1) @ self.dense_kernel
        hidden += self.dense_bias
        np.maximum(hidden, 0, out=hidden)
        heads = hidden @ self.head_kernel
        heads += self.head_bias
        _sigmoid(heads)
        out = np.empty((nspec, self.nlines, self.nboxes, 2), dtype=np.float32)
        nhead = self.nlines * self.nboxes
        out[..., 0] = heads[:, :nhead].reshape(nspec, self.nlines, self.nboxes)
        out[..., 1] = heads[:, nhead:].reshape(nspec, self.nlines, self.nboxes)
        out[..., 1] *= 1.0 + 2.0 * self.margin
        out[..., 1] -= self.margin
        return out

    def predict(self, X, threads=1, batch_size=BATCH):
        """Network output of any number of spectra, in batches on `threads` threads.

        Parameters
        ----------
        X : numpy.ndarray
            Shape (nspec, nbins, 2).
        threads : int, optional
            Python threads, each running BLAS on one thread [1]: give it the cores this
            process may use.  Changes no output bit.
        batch_size : int, optional
            Spectra per batch [:data:`BATCH`].

        Returns
        -------
        numpy.ndarray
            Shape (nspec, nlines, nboxes, 2), float32.

        Raises
        ------
        ValueError
            If `X` is not (nspec, nbins, 2).
        """
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 3 or X.shape[1:] != (self.nbins, 2):
            raise ValueError(f'input shape {X.shape} does not match the model input '
                             f'(nspec,) + {(self.nbins, 2)}')
        out = np.empty((X.shape[0], self.nlines, self.nboxes, 2), dtype=np.float32)
        batch_size = max(1, int(batch_size))
        starts = range(0, X.shape[0], batch_size)

        def run(start):
            out[start:start + batch_size] = self.forward(X[start:start + batch_size])

        from threadpoolctl import threadpool_limits
        threads = max(1, min(int(threads), len(starts)))
        with threadpool_limits(limits=1, user_api='blas'):   # see the module docstring
            if threads == 1:
                for start in starts:
                    run(start)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(run, starts))         # list(): raise a worker's error
        return out

    def _padded(self, nspec, nbins, nchan, conv):
        """A zero-padded input buffer for `conv` and a view of its inner `nbins` bins."""
        _, before, after = conv.geometry(nbins)
        buf = np.empty((nspec, nbins + before + after, nchan), dtype=np.float32)
        buf[:, :before] = 0.0
        buf[:, before + nbins:] = 0.0
        return buf, buf[:, before:before + nbins]

    def _first_input(self, X):
        """The selected (S/N softened) channels, padded for the first convolution."""
        x, inner = self._padded(X.shape[0], self.nbins, len(self.channels), self.convs[0])
        for j, chan in enumerate(self.channels):
            if chan == self.snr_index and self.snr_softening is not None:
                np.divide(X[..., chan], np.float32(self.snr_softening), out=inner[..., j])
                np.arcsinh(inner[..., j], out=inner[..., j])
            else:
                inner[..., j] = X[..., chan]
        return x


def _sigmoid(x):
    """``1 / (1 + exp(-x))`` in place (float32; exp overflows harmlessly to inf → 0)."""
    with np.errstate(over='ignore'):
        np.negative(x, out=x)
        np.exp(x, out=x)
    x += 1.0
    np.reciprocal(x, out=x)


def weight_shapes(config):
    """Shapes of the weight tensors of the line finder of a configuration, by layer.

    Parameters
    ----------
    config : lbgnet.config.Config

    Returns
    -------
    dict
        Layer name -> list of shapes, in Keras's order (kernel, bias; batch
        normalisations: gamma, beta, moving mean, moving variance).
    """
    opts = model_options(config)
    nbins, nchan, shapes = int(config.grid.nbins), len(opts['channel_index']), {}
    for i in range(opts['conv_layers']):
        size, nout = opts['kernel_size'][i], opts['filters'][i]
        shapes[f'conv_{i + 1}'] = [(size, nchan, nout), (nout,)]
        shapes[f'batch_normalization_{i + 1}'] = [(nout,)] * 4
        nbins = conv_geometry(nbins, size, opts['strides'][i], opts['padding'])[0]
        nchan = nout
    units, nboxes = opts['dense_units'], int(config.nboxes)
    shapes['fc_common'] = [(nbins * nchan, units), (units,)]
    shapes['batch_normalization_fc'] = [(units,)] * 4
    for name in config.lines.names:
        shapes[f'fc_box_{name}'] = [(units, nboxes), (nboxes,)]
        shapes[f'fc_offset_{name}'] = [(units, nboxes), (nboxes,)]
    return shapes


def check_weights(weights, config):
    """ValueError, in one line, unless `weights` are those of the configuration's line finder.

    Parameters
    ----------
    weights : dict
        Layer name -> list of arrays (layers without weights may be left out).
    config : lbgnet.config.Config
    """
    expected = weight_shapes(config)
    given = {name: arrays for name, arrays in weights.items() if len(arrays)}
    missing = [name for name in expected if name not in given]
    extra = sorted(set(given) - set(expected))
    if missing or extra:
        raise ValueError('the weights are not those of the configuration\'s line finder '
                         f'(missing: {", ".join(missing[:4]) or "none"}; '
                         f'not in the network: {", ".join(extra[:4]) or "none"})')
    for name, shapes in expected.items():
        got = [tuple(np.shape(a)) for a in given[name]]
        if got != [tuple(s) for s in shapes]:
            raise ValueError(f'the weights of {name} have shapes {got}, the configuration\'s '
                             f'line finder {shapes}')


def from_weights(weights, config):
    """The numpy forward pass of the line finder of `config` with the given weights.

    Parameters
    ----------
    weights : dict
        Layer name -> list of arrays in Keras's order, as
        :func:`lbgnet.io.modelfile.read_weight_arrays` returns them (a model saved by
        :func:`lbgnet.io.modelfile.save_model`), with the layer names of
        :func:`lbgnet.model.build_model`.
    config : lbgnet.config.Config

    Returns
    -------
    NumpyLineFinder

    Raises
    ------
    ValueError
        For a direct or hybrid network, or weights that are not those of the
        configuration's line finder (:func:`check_weights`).
    """
    _check_linefinder(config)
    check_weights(weights, config)
    opts = model_options(config)
    convs = []
    for i in range(1, opts['conv_layers'] + 1):
        kernel, bias = _folded(weights[f'conv_{i}'], weights[f'batch_normalization_{i}'])
        size, nin, nout = kernel.shape
        convs.append(ConvLayer(np.ascontiguousarray(kernel.reshape(size * nin, nout)), bias,
                               int(size), int(opts['strides'][i - 1]), str(opts['padding'])))
    dense = _folded(weights['fc_common'], weights['batch_normalization_fc'])
    heads = [weights[f'fc_{kind}_{name}'] for kind in ('box', 'offset') for name in config.lines.names]
    snr_index = CHANNEL_NAMES.index('snr')
    return NumpyLineFinder(
        nbins=int(config.grid.nbins), channels=tuple(opts['channel_index']), snr_index=snr_index,
        snr_softening=opts['snr_softening'], convs=tuple(convs), dense_kernel=dense[0],
        dense_bias=dense[1],
        head_kernel=np.ascontiguousarray(np.concatenate([h[0] for h in heads], axis=1),
                                         dtype=np.float32),
        head_bias=np.concatenate([h[1] for h in heads]).astype(np.float32),
        nlines=len(config.lines), nboxes=int(config.nboxes), margin=float(opts['offset_margin']))


def _check_linefinder(config):
    """ValueError for a direct or hybrid network (:func:`lbgnet.modelspec.architecture`)."""
    arch = architecture(config)
    if arch != 'linefinder':
        raise ValueError(f'the numpy forward pass runs line finders only, not a {arch} network')


def _folded(layer, norm):
    """Kernel and bias of a layer's weights [kernel, bias] with the batch normalisation
    [gamma, beta, mean, variance] after it folded in (float32)."""
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in layer)
    gamma, beta, mean, var = (np.asarray(w, dtype=np.float64) for w in norm)
    scale = gamma / np.sqrt(var + BN_EPSILON)
    return (kernel * scale).astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)


def from_keras(model, config):
    """The numpy forward pass of a Keras line finder (:func:`from_weights` of its weights).

    Parameters
    ----------
    model : keras.Model
        Built by :func:`lbgnet.model.build_model` for `config`.
    config : lbgnet.config.Config

    Returns
    -------
    NumpyLineFinder

    Raises
    ------
    ValueError
        As :func:`from_weights`, and for a model with layers (or activations, or batch
        normalisation settings) other than those :func:`lbgnet.model.build_model` makes.
    """
    _check_linefinder(config)
    margin = float(model_options(config)['offset_margin'])
    unknown = sorted({type(layer).__name__ for layer in model.layers} - _KNOWN_LAYERS)
    if unknown:
        raise ValueError(f'the numpy forward pass does not support layers {", ".join(unknown)}')
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == 'BatchNormalization' and (layer.epsilon != BN_EPSILON or not layer.center
                                             or not layer.scale):
            raise ValueError(f'the numpy forward pass needs batch normalisation {layer.name} '
                             f'with epsilon {BN_EPSILON:g}, centre and scale')
        if kind == 'Conv1D' and (layer.data_format != 'channels_last' or layer.groups != 1
                                 or tuple(layer.dilation_rate) != (1,)):
            raise ValueError(f'the numpy forward pass does not support {layer.name} as configured')
        _check_activation(layer, kind)
        if kind == 'RescaledSigmoid' and layer.margin != margin:
            raise ValueError(f'the numpy forward pass uses the configuration\'s offset margin '
                             f'{margin:g}, not {layer.name}\'s offset margin {layer.margin:g}')
    weights = {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.layers}
    return from_weights(weights, config)


def _check_activation(layer, kind):
    """Refuse an activation other than the one the numpy pass applies after `layer`: ReLU
    for Activation layers, a sigmoid in the box heads, none in the other convolutions
    and dense layers (:func:`lbgnet.model.build_model`)."""
    if kind == 'Activation':
        expected = 'relu'
    elif kind == 'Dense' and layer.name.startswith('fc_box_'):
        expected = 'sigmoid'
    elif kind in ('Conv1D', 'Dense'):
        expected = 'linear'
    else:
        return
    found = getattr(layer.activation, '__name__', repr(layer.activation))
    if found != expected:
        raise ValueError(f'the numpy forward pass does not support {layer.name} with '
                         f'activation {found} (it applies {expected})')
