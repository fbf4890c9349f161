"""
lbgnet.network
==============

The trained network as production runs it: load a model file once and check it against
its own configuration (:func:`load_network`), run the forward pass in batches and turn the
raw outputs into catalogue quantities for any architecture (:class:`Network`), and the
redshift range the model was trained on (:func:`training_zrange`).

Two engines run a line finder's forward pass (:data:`ENGINES`): ``numpy``
(:mod:`lbgnet.npforward`, the default: the weights are read with h5py and neither Keras nor
TensorFlow is imported; as fast as the compiled TensorFlow pass on 2 CPU cores, and its
outputs do not depend on the number of threads) and ``keras`` (the compiled TensorFlow
pass, or the model's own backend).  Direct and hybrid networks always run in Keras.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from .io.catalog import file_sha256
from .io.errors import InputFileError
from .modelspec import architecture

#: Spectra per forward pass of the network: TensorFlow keeps every layer's activations of a
#: batch (~0.5 MB per spectrum for the default network), so this bounds its memory; 256 is
#: also the fastest batch measured on 2 CPU cores (doc/afterburner.rst).
DEFAULT_BATCH = 256

#: Forward-pass engines of a line finder; the first is the default.
ENGINES = ('numpy', 'keras')


@dataclass
class Network:
    """A loaded line finder and what goes with it.

    Attributes
    ----------
    model : keras.Model
    config : lbgnet.config.Config
        The configuration stored with the weights (grid, lines, boxes, thresholds).
    metadata : dict
    path : str
        Model weights file (``NAME.weights.h5``; ``NAME.json`` beside it).
    sha256 : str
        SHA-256 of the weights file.
    numpy_pass : lbgnet.npforward.NumpyLineFinder or None
        The numpy forward pass, used by :meth:`predict` when set (engine ``numpy``).
    threads : int
        Threads of the numpy forward pass.
    """

    model: object
    config: object
    metadata: dict = field(default_factory=dict)
    path: str = ''
    sha256: str = ''
    forward: object = None
    _zrange: tuple = None
    numpy_pass: object = None
    threads: int = 1

    @property
    def engine(self):
        """The engine of the forward pass: ``numpy`` or ``keras`` (:data:`ENGINES`)."""
        return 'keras' if self.numpy_pass is None else 'numpy'

    @property
    def architecture(self):
        """``linefinder``, ``direct`` or ``hybrid`` (:func:`lbgnet.modelspec.architecture`)."""
        return architecture(self.config)

    def compiled(self):
        """The compiled forward pass (:func:`compiled_forward`), built on first use."""
        if self.forward is None:
            self.forward = compiled_forward(self.model)
        return self.forward

    def results(self, X, c_thresh, n_thresh, batch_size=None):
        """Catalogue quantities of gridded spectra, for any architecture
        (:meth:`raw_outputs` then :meth:`catalog`).

        Parameters
        ----------
        X : numpy.ndarray
            Shape (nspec, nbins, 2).
        c_thresh : float
        n_thresh : int
        batch_size : int, optional
            Spectra per forward pass [the engine's: :data:`lbgnet.npforward.BATCH` or
            :data:`DEFAULT_BATCH`].

        Returns
        -------
        dict of numpy.ndarray
        """
        return self.catalog(self.raw_outputs(X, batch_size), c_thresh, n_thresh)

    def raw_outputs(self, X, batch_size=None):
        """Raw network outputs through the engine's forward pass: ``conf`` and ``offset``
        (line finders, :meth:`predict`; hybrids), ``direct`` (direct and hybrid networks,
        :func:`lbgnet.predict.predict_raw`)."""
        if self.architecture == 'linefinder':
            conf, offset = self.predict(X, batch_size)
            return {'conf': conf, 'offset': offset}
        from .predict import predict_raw
        return predict_raw(self.model, X, self.config, batch_size or DEFAULT_BATCH,
                           forward=self.compiled())

    def catalog(self, raw, c_thresh, n_thresh):
        """Catalogue quantities from :meth:`raw_outputs`
        (:func:`lbgnet.predict.catalog_from_raw`: :func:`lbgnet.postprocess.postprocess`
        for line finders; direct and hybrid networks add ``P_DIRECT``, ``Z_DIRECT``,
        ``ZERR_DIRECT``)."""
        from .predict import catalog_from_raw
        res = catalog_from_raw(raw, self.config, c_thresh, n_thresh)
        return {key: np.asarray(val) for key, val in res.items()}

    def predict(self, X, batch_size=None):
        """Box confidences and offsets, as :func:`lbgnet.model.predict_boxes`.

        With :attr:`numpy_pass`, through it on :attr:`threads` threads; otherwise through a
        compiled (``tf.function``) forward pass traced once for any batch size: about 4x
        faster on CPU than the eager call (doc/afterburner.rst).  Under another Keras
        backend, :func:`compiled_forward`'s padded batches.

        Parameters
        ----------
        X : numpy.ndarray
            Shape (nspec, nbins, 2).
        batch_size : int, optional
            [the engine's: :data:`lbgnet.npforward.BATCH` or :data:`DEFAULT_BATCH`]

        Returns
        -------
        conf, offset : numpy.ndarray
            Shape (nspec, nlines, nboxes), float32.
        """
        if self.numpy_pass is not None:
            from .npforward import BATCH
            out = self.numpy_pass.predict(X, self.threads, batch_size or BATCH)
            return out[..., 0], out[..., 1]
        batch_size = batch_size or DEFAULT_BATCH
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 3 or X.shape[1:] != (self.config.grid.nbins, 2):
            raise ValueError(f'input shape {X.shape} does not match the model input '
                             f'(nspec,) + {(self.config.grid.nbins, 2)}')
        from keras.ops import convert_to_numpy
        forward = self.compiled()
        nlines, nboxes = len(self.config.lines), self.config.nboxes
        out = np.empty((X.shape[0], nlines, nboxes, 2), dtype=np.float32)
        for start in range(0, X.shape[0], batch_size):
            out[start:start + batch_size] = convert_to_numpy(forward(X[start:start + batch_size]))
        return out[..., 0], out[..., 1]

    @property
    def zrange(self):
        """Redshift range of the LBGs the model was trained on (:func:`training_zrange`)."""
        if self._zrange is None:
            self._zrange = training_zrange(self.config, self.metadata)
        return self._zrange


def training_zrange(config, metadata):
    """Redshift range of the training LBGs of a model.

    In order: ``metadata['z_range']`` (written by ``desi_lbg_train``); for a model card
    without it, the ``simulation.lbg.zrange`` of the simulator configuration named by the
    model's ``training.simulation`` when that name is a file of the package's ``etc/``
    (never a file of the current directory, which would change the range from one
    working directory to the next); else the redshifts at which Lyα falls on the grid.

    Returns
    -------
    (float, float)
    """
    zr = metadata.get('z_range') if isinstance(metadata, dict) else None
    if zr is not None and len(zr) == 2:
        return float(zr[0]), float(zr[1])
    simname = (config.extra.get('training') or {}).get('simulation')
    if simname:
        from .config import ConfigError, etc_dir
        from .sim.population import load_sim_config
        packaged = os.path.join(str(etc_dir()), os.path.basename(str(simname)))
        try:
            zlo, zhi = load_sim_config(packaged)['simulation']['lbg']['zrange']
            return float(zlo), float(zhi)
        except (ConfigError, KeyError, TypeError, ValueError):
            pass
    lines = config.lines
    lya = lines.wave_array[lines.index('LYA')] if 'LYA' in lines.names else lines.wave_array.min()
    return config.grid.wave_min / lya - 1.0, config.grid.wave_max / lya - 1.0


def compiled_forward(model):
    """``model(x, training=False)`` as a ``tf.function`` with an unknown batch dimension.

    Under another Keras backend (a model trained with ``KERAS_BACKEND=jax``, evaluated
    there): the backend's compiled ``model.predict_on_batch`` (numpy outputs), on batches
    padded with zeros to a power of two (JAX compiles it again for every new batch
    size: every file's last batch), the outputs cut back to the batch.
    """
    import keras
    if keras.backend.backend() != 'tensorflow':
        return padded_forward(model.predict_on_batch)
    import tensorflow as tf
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


def padded_forward(predict):
    """`predict` (a batch -> array or dict of arrays) called on the batch padded with zeros
    to the next power of two, its outputs cut back to the batch's length (the network's
    inference mode treats the spectra independently)."""
    def forward(x):
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        size = 1 << max(0, n - 1).bit_length()
        if size != n:
            x = np.concatenate([x, np.zeros((size - n,) + x.shape[1:], dtype=x.dtype)])
        out = predict(x)
        if isinstance(out, dict):
            return {key: np.asarray(value)[:n] for key, value in out.items()}
        return np.asarray(out)[:n]
    return forward


def default_model_path():
    """The pretrained model shipped in the package, or None when there is none."""
    try:
        from .io import modelfile
    except ImportError:
        return None
    finder = getattr(modelfile, 'default_model_path', None)
    path = finder() if finder is not None else None
    return path if path and os.path.exists(path) else None


def check_model_file(path):
    """The description of the model file `path`, checked without TensorFlow: readable
    JSON of a supported format and a weights file whose SHA-256 it records.

    For a run that may load no network (every output already there): a bad ``--model``
    is still one error, as when it is loaded.

    Returns
    -------
    description : dict
    config : lbgnet.config.Config
        As :func:`lbgnet.io.modelfile.read_model_description` returns them.

    Raises
    ------
    InputFileError
        As :func:`load_network` for a missing model, an unreadable description or a
        weights file that is missing or is not the one described.
    """
    from .io.modelfile import check_model_files
    if path is None:
        raise InputFileError('--model', 'no model given and no pretrained model shipped')
    return check_model_files(path)


def load_network(path, engine=ENGINES[0], threads=1):
    """Load a model file and check it against its own configuration.

    Parameters
    ----------
    path : str
        Model written by :func:`lbgnet.io.modelfile.save_model` (its ``.weights.h5`` or
        ``.json`` file).
    engine : str, optional
        Forward pass of a line finder (:data:`ENGINES`) [``numpy``: the weights are read
        with h5py and neither Keras nor TensorFlow is imported]; direct and hybrid
        networks are loaded in Keras whatever it says.
    threads : int, optional
        Threads of the numpy forward pass [1].

    Returns
    -------
    Network
        With ``model`` None under the numpy engine.

    Raises
    ------
    InputFileError
        Missing, unreadable or incompatible model file (weights that are not those of
        the network its configuration describes; under Keras, an output shape other than
        the (nlines, nboxes) of its configuration, or a network that rejects the grid
        input).
    ValueError
        For an unknown `engine`.
    """
    from .io.modelfile import check_model_files, model_paths
    if engine not in ENGINES:
        raise ValueError(f'unknown forward-pass engine {engine!r}: choose from {", ".join(ENGINES)}')
    if path is None:
        raise InputFileError('--model', 'no model given and no pretrained model shipped')
    threads = max(1, int(threads))
    if engine == 'numpy':
        description, config = check_model_files(path)
        if _described_architecture(config, model_paths(path)[1]) == 'linefinder':
            weights = model_paths(path)[0]
            # check_model_files has just verified this SHA-256 against the file
            return Network(None, config, dict(description.get('metadata') or {}),
                           os.path.abspath(weights), description['weights_sha256'],
                           numpy_pass=load_numpy_pass(weights, config), threads=threads)
    model, config, metadata = _load_keras_model(path)
    weights = model_paths(path)[0]
    return Network(model, config, dict(metadata or {}), os.path.abspath(weights),
                   file_sha256(weights), threads=threads)


def _described_architecture(config, json_path):
    """The architecture of a model description, its network checked as the keras engine
    checks it when building it (a description that names no buildable network is the
    JSON's fault, not the weights').

    Raises
    ------
    InputFileError
        Naming `json_path`.
    """
    from .config import ConfigError
    from .io.modelfile import own_words
    from .npforward import weight_shapes
    try:
        kind = architecture(config)
        if kind == 'linefinder':
            weight_shapes(config)
    except (ConfigError, ValueError) as err:
        raise InputFileError(json_path, 'cannot build the described network '
                             f'({own_words(err, json_path)})') from None
    return kind


def load_numpy_pass(weights_path, config):
    """The numpy forward pass (:func:`lbgnet.npforward.from_weights`) of the weights file
    of a line finder, read without Keras.

    Raises
    ------
    InputFileError
        An unreadable weights file, or weights that are not those of the configuration's
        line finder.
    """
    from .io.modelfile import read_weight_arrays
    from .npforward import from_weights
    try:
        return from_weights(read_weight_arrays(weights_path), config)
    except InputFileError:                  # names the file already
        raise
    except ValueError as err:
        raise InputFileError(weights_path, str(err)) from None


def _load_keras_model(path):
    """(model, config, metadata) of :func:`lbgnet.io.modelfile.load_model`, checked on a
    probe spectrum: its output shapes must be the configuration's."""
    from .io.modelfile import load_model
    from .predict import predict_raw
    model, config, metadata = load_model(path)
    probe = np.zeros((1, config.grid.nbins, 2), dtype=np.float32)
    try:
        raw = predict_raw(model, probe, config)
    except (ValueError, TypeError) as err:
        raise InputFileError(path, f'incompatible model: {str(err).splitlines()[0]}') from None
    expected = {'conf': (1, len(config.lines), config.nboxes), 'direct': (1, 3)}
    for key, value in raw.items():
        if key in expected and np.shape(value) != expected[key]:
            raise InputFileError(path, f'incompatible model: output {np.shape(value)}, '
                                 f'configuration expects {expected[key]}')
    return model, config, metadata
