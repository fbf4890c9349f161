"""
lbgnet.io.modelfile
===================

Save and load trained line finders.

A model is two files side by side:

* ``NAME.weights.h5``: the weights, in Keras's own weights format (HDF5, no pickle);
* ``NAME.json``: what is needed to rebuild the network and use it — the full configuration
  (grid, line list, ``nboxes``, selection thresholds, model/loss/post-processing sections),
  a description of the input normalisation, the SHA-256 of the weights file, versions and
  free-form metadata (training recipe, timings, metrics: the machine-readable model card).

:func:`load_model` checks everything it can (format, configuration, checksum, number and
shapes of the weight tensors) before returning, so that a bad model file fails with one
clear :class:`~lbgnet.io.InputFileError` before any spectrum is processed.
"""
import glob
import hashlib
import json
import os
import shutil
import warnings

import h5py
import numpy as np

from .._version import __version__
from ..config import MODEL_FORMAT, ConfigError, check_keys, config_from_dict
from ..postprocess import check_options
from .catalog import source_revision
from .errors import InputFileError, MissingInputError
from .evaluation import jsonable

#: Value of the ``format`` key of the JSON file.
FORMAT = MODEL_FORMAT
#: Current version of the JSON layout; files with a larger version are refused.
FORMAT_VERSION = 1
WEIGHTS_SUFFIX = '.weights.h5'

#: How the network input is built (stored in the JSON so that a model documents its input).
NORMALISATION = {
    'channels': ['flux', 'snr'],
    'flux': 'inverse-variance weighted mean subtracted, divided by the weighted rms '
            '(lbgnet.preprocess.normalise_flux)',
    'snr': 'rebinned flux x sqrt(summed ivar) (lbgnet.preprocess.signal_to_noise)',
    'empty_bins': 0.0,
}


def model_paths(path):
    """The (weights, json) pair of file names of a model.

    Parameters
    ----------
    path : str
        Either file of the pair (``NAME.weights.h5`` or ``NAME.json``).

    Returns
    -------
    weights_path, json_path : str

    Raises
    ------
    ValueError
        If `path` ends neither in ``.weights.h5`` nor in ``.json``.
    """
    path = str(path)
    if path.endswith(WEIGHTS_SUFFIX):
        root = path[:-len(WEIGHTS_SUFFIX)]
    elif path.endswith('.json'):
        root = path[:-len('.json')]
    else:
        raise ValueError(f'{path}: a model file name must end in {WEIGHTS_SUFFIX} or .json')
    return root + WEIGHTS_SUFFIX, root + '.json'


def sha256sum(path):
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as fx:
        for block in iter(lambda: fx.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def weights_file_bytes(model):
    """Upper estimate (bytes) of the ``.weights.h5`` file of `model`.

    Its variables (and those of its optimizer, which Keras saves with a compiled model),
    plus 4 KiB of HDF5 metadata per variable and 1 MiB to spare: a default model's
    2,494,528 bytes of weights make a 2,648,664-byte file (1.6 KiB per variable).
    """
    variables = list(model.weights)
    optimizer = getattr(model, 'optimizer', None)
    if optimizer is not None and getattr(optimizer, 'built', False):
        variables += list(optimizer.variables)
    data = sum(int(np.prod(v.shape)) * np.dtype(str(v.dtype)).itemsize for v in variables)
    return data + 4096 * len(variables) + (1 << 20)


def check_room_for_weights(model, directory):
    """Raise unless `directory`'s file system has room for `model`'s weights file.

    HDF5 (through h5py) cannot fail cleanly when a write runs out of space: the error is
    raised, but the process then crashes (segmentation fault, status 139) when the library
    closes its half-written file at exit, so no one-line error could be given after it.
    The room is therefore checked before writing (:func:`weights_file_bytes`).

    Raises
    ------
    lbgnet.io.catalog.OutputFileError
        When the free space is below the estimate.
    """
    from .catalog import OutputFileError
    need = weights_file_bytes(model)
    try:
        free = shutil.disk_usage(directory).free
    except OSError:              # the write itself will say what is wrong with `directory`
        return
    if free < need:
        raise OutputFileError(directory, f'no room for the network weights ({free / 1e6:.1f} MB '
                              f'free, about {need / 1e6:.1f} MB needed); nothing written')


def save_weights_atomic(model, path):
    """``model.save_weights(path)`` under a temporary name renamed into place, after
    :func:`check_room_for_weights`: a crash or a full disk never leaves a partial file
    under `path` (Keras' own checkpoint callback writes in place).

    Raises
    ------
    lbgnet.io.catalog.OutputFileError
        No room, or the file cannot be written or renamed.
    """
    from .catalog import OutputFileError
    if not str(path).endswith(WEIGHTS_SUFFIX):
        raise ValueError(f'{path}: a weights file must end with {WEIGHTS_SUFFIX}')
    directory = os.path.dirname(os.path.abspath(path))
    check_room_for_weights(model, directory)
    head, tail = os.path.split(str(path))
    tmp = os.path.join(head, f'.{tail[:-len(WEIGHTS_SUFFIX)]}.tmp{os.getpid()}{WEIGHTS_SUFFIX}')
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise OutputFileError(str(path), f'cannot write ({err.strerror or err})') from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_model(path, model, config, metadata=None):
    """Write a model (weights + JSON description) atomically.

    Parameters
    ----------
    path : str
        ``NAME.weights.h5`` or ``NAME.json``; both files are written.
    model : keras.Model
        Built by :func:`lbgnet.model.build_model` from `config`.
    config : lbgnet.config.Config
    metadata : dict, optional
        JSON-serialisable extras (training recipe, seed, time, metrics).

    Returns
    -------
    weights_path, json_path : str

    Raises
    ------
    ValueError
        If `path` has the wrong extension or `model` does not match `config`.
    """
    weights_path, json_path = model_paths(path)
    directory = os.path.dirname(os.path.abspath(weights_path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(weights_path)[:-len(WEIGHTS_SUFFIX)]
    tmp_weights = os.path.join(directory, f'.{base}.tmp{os.getpid()}{WEIGHTS_SUFFIX}')
    tmp_json = os.path.join(directory, f'.{base}.tmp{os.getpid()}.json')
    old_weights = os.path.join(directory, f'.{base}.old{os.getpid()}{WEIGHTS_SUFFIX}')
    try:
        clean = _clean_copy(model, config)
        check_room_for_weights(clean, directory)
        clean.save_weights(tmp_weights)
        description = {
            'format': FORMAT, 'format_version': FORMAT_VERSION,
            'lbgnet_version': __version__, 'lbgnet_revision': source_revision(),
            'keras_version': _keras_version(),
            # the same seed gives other initial weights under another backend
            'keras_backend': _keras_backend(),
            'weights_file': os.path.basename(weights_path),
            'weights_sha256': sha256sum(tmp_weights),
            'nparams': int(model.count_params()),
            'config_source': config.source,
            'config': config.to_dict(),
            # the order of the line heads in the weights file, which Keras stores by layer
            # position: a JSON object's key order does not survive every tool
            'line_order': list(config.lines.names),
            'normalisation': NORMALISATION,
            'metadata': dict(metadata or {}),
        }
        with open(tmp_json, 'w') as fx:
            json.dump(jsonable(description), fx, indent=1, allow_nan=False,
                      default=_json_default)
            fx.write('\n')
        if os.path.isfile(weights_path) and os.path.isfile(json_path):
            # the pair is replaced by two renames: keep the old weights until the new JSON
            # is in, so that an interruption between them leaves the old model whole
            shutil.copy2(weights_path, old_weights)
        os.replace(tmp_weights, weights_path)
        try:
            os.replace(tmp_json, json_path)
        except BaseException:
            if os.path.exists(old_weights):
                os.replace(old_weights, weights_path)
            raise
    finally:
        for tmp in (tmp_weights, tmp_json, old_weights):
            if os.path.exists(tmp):
                os.remove(tmp)
    return weights_path, json_path


def read_model_description(path):
    """Read and check the JSON half of a model, without building the network.

    Parameters
    ----------
    path : str
        ``NAME.weights.h5`` or ``NAME.json``.

    Returns
    -------
    description : dict
        The JSON content.
    config : lbgnet.config.Config
        The configuration stored in it.

    Raises
    ------
    InputFileError
        Missing or unreadable JSON, wrong format or version, invalid configuration.
    """
    try:
        weights_path, json_path = model_paths(path)
    except ValueError as err:
        raise InputFileError(path, str(err).split(': ', 1)[-1]) from None
    if not os.path.exists(json_path):
        raise MissingInputError(json_path, 'no such file (the JSON description of the model)'
                                + _first_save_hint(weights_path, json_path))
    try:
        with open(json_path) as fx:
            description = json.load(fx)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputFileError(json_path, f'not a readable JSON model description ({err})') from None
    if not isinstance(description, dict) or description.get('format') != FORMAT:
        raise InputFileError(json_path, f'not an lbgnet model description (format != {FORMAT!r})')
    version = description.get('format_version')
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise InputFileError(json_path, f'model format version {version!r} is not supported '
                             f'(this lbgnet reads <= {FORMAT_VERSION})')
    try:
        if not isinstance(description['config'], dict):
            raise ConfigError('config must be a JSON object')
        check_keys(description['config'], json_path)   # sections are mappings, keys known
        _apply_line_order(description)
        config = config_from_dict(description['config'], source=json_path)
        check_options(config)
    except (KeyError, ConfigError) as err:
        raise InputFileError(json_path, f'invalid configuration ({own_words(err, json_path)})') from None
    if not isinstance(description.get('metadata') or {}, dict):
        raise InputFileError(json_path, 'metadata must be a JSON object')
    zrange = (description.get('metadata') or {}).get('z_range')
    if zrange is not None and not (
            isinstance(zrange, list) and len(zrange) == 2
            and all(isinstance(z, (int, float)) and not isinstance(z, bool) and np.isfinite(z)
                    for z in zrange) and zrange[0] < zrange[1]):
        raise InputFileError(json_path, 'metadata.z_range (the training LBG redshift range) '
                             f'must be [zmin, zmax], two finite numbers with zmin < zmax, '
                             f'not {zrange!r}')
    return description, config


def _apply_line_order(description):
    """Put the lines of `description`'s configuration in its ``line_order``.

    Keras weights files store layers by position, and the network's line heads are built
    in the order of ``config.lines``: a JSON rewritten with sorted keys (``jq -S``) would
    silently give every line head another line's weights.  ``line_order`` (a list, whose
    order survives) is written by :func:`save_model` since 2026-12-03; older files are
    read in their key order.
    """
    order = description.get('line_order')
    if order is None:
        return
    lines = description['config'].get('lines')
    if not isinstance(lines, dict):
        return                                   # config_from_dict says what is wrong
    if (not isinstance(order, list) or not all(isinstance(n, str) for n in order)
            or sorted(order) != sorted(lines)):
        raise ConfigError('line_order must name each line of config.lines once')
    description['config']['lines'] = {name: lines[name] for name in order}


def own_words(err, path):
    """The text of `err` without a leading "`path`: " (the message names `path` once)."""
    text = str(err)
    return text[len(path) + 2:] if text.startswith(f'{path}: ') else text


def check_model_files(path):
    """The description and configuration of a model (:func:`read_model_description`),
    with its weights file checked against the SHA-256 the description records; no
    TensorFlow needed.

    Raises
    ------
    InputFileError
        Missing or unreadable files, or weights that are not the ones described (corrupt,
        truncated or replaced).
    """
    description, config = read_model_description(path)
    weights_path, json_path = model_paths(path)
    if not os.path.exists(weights_path):
        raise MissingInputError(weights_path, 'no such file (the weights of the model)')
    try:
        checksum = sha256sum(weights_path)
    except OSError as err:            # a directory, no read permission, I/O error
        raise InputFileError(weights_path, f'cannot read the weights ({err.strerror or err})') from None
    if description.get('weights_sha256') != checksum:
        raise InputFileError(weights_path, f'SHA-256 does not match the one in {json_path} '
                             '(corrupt, truncated or replaced weights file)'
                             + interrupted_save_hint(weights_path, json_path, checksum,
                                                     description.get('weights_sha256')))
    return description, config


def read_weight_arrays(weights_path):
    """The weight tensors of a Keras 3 weights file, read with h5py (no Keras).

    Keras 3 stores each layer as ``layers/<its own key>/vars`` with the layer's name in
    that group's ``name`` attribute and its tensors as datasets ``0``, ``1``, … in the
    layer's order.

    Parameters
    ----------
    weights_path : str
        ``NAME.weights.h5`` (written by :func:`save_model`).

    Returns
    -------
    dict
        Layer name -> list of numpy arrays, for the layers with weights.

    Raises
    ------
    InputFileError
        An unreadable HDF5 file, or one not laid out as Keras 3 writes weights.
    """
    out = {}
    try:
        with h5py.File(weights_path, 'r') as fx:
            layers = fx.get('layers')
            if not isinstance(layers, h5py.Group):
                raise InputFileError(weights_path, 'not a Keras 3 weights file (no "layers" '
                                     'group); the keras engine may read it')
            for key, group in layers.items():
                tensors = group.get('vars') if isinstance(group, h5py.Group) else None
                if not isinstance(tensors, h5py.Group) or not len(tensors):
                    continue
                name = tensors.attrs.get('name', key)
                name = name.decode() if isinstance(name, bytes) else str(name)
                try:
                    out[name] = [np.asarray(tensors[str(i)]) for i in range(len(tensors))]
                except KeyError:
                    raise InputFileError(weights_path, f'layer {name}: tensors not numbered '
                                         '0, 1, ... as Keras 3 writes them') from None
    except OSError as err:
        raise InputFileError(weights_path, f'not a readable HDF5 weights file ({err})') from None
    return out


def _first_save_hint(weights_path, json_path):
    """:func:`interrupted_save_hint` for weights without a description (the first save of
    their name, killed between its renames), or '' (no weights, or unreadable ones)."""
    try:
        checksum = sha256sum(weights_path) if os.path.isfile(weights_path) else None
    except OSError:
        checksum = None
    return '' if checksum is None else interrupted_save_hint(weights_path, json_path,
                                                             checksum, None)


def interrupted_save_hint(weights_path, json_path, weights_sha, described_sha):
    """How to mend a model pair that a killed :func:`save_model` left half replaced, or ''.

    :func:`save_model` renames the new weights, then the new description; killed between
    the two, it leaves the new weights beside the old description, with the new
    description under its temporary name (``.NAME.tmpPID.json``) and a copy of the old
    weights (``.NAME.oldPID.weights.h5``).  Either leftover whose checksum matches makes a
    whole model again by a rename, which the message names.
    """
    directory = os.path.dirname(os.path.abspath(weights_path))
    base = os.path.basename(weights_path)[:-len(WEIGHTS_SUFFIX)]
    pattern = os.path.join(glob.escape(directory), glob.escape(f'.{base}.'))
    for tmp in sorted(glob.glob(pattern + 'tmp[0-9]*.json')):
        try:
            with open(tmp) as fx:
                if json.load(fx).get('weights_sha256') == weights_sha:
                    return (f'; an interrupted save left the description of these weights in '
                            f'{tmp}: rename it to {json_path}')
        except (OSError, UnicodeDecodeError, ValueError, AttributeError, RecursionError):
            continue
    for old in sorted(glob.glob(pattern + f'old[0-9]*{WEIGHTS_SUFFIX}')):
        try:
            if described_sha is not None and sha256sum(old) == described_sha:
                return (f'; an interrupted save left the weights this description names in '
                        f'{old}: rename it to {weights_path}')
        except OSError:
            continue
    return ''


def load_model(path):
    """Load a model written by :func:`save_model`.

    Parameters
    ----------
    path : str
        ``NAME.weights.h5`` or ``NAME.json``.

    Returns
    -------
    model : keras.Model
        Ready for :func:`lbgnet.model.predict_boxes` (not compiled).
    config : lbgnet.config.Config
        The configuration the model was trained with (grid, lines, nboxes, thresholds).
    metadata : dict
        The free-form metadata stored with the model.

    Raises
    ------
    InputFileError
        Missing files, unreadable or incompatible JSON, checksum mismatch (corrupt or
        swapped weights), weights whose tensors do not fit the described network.
    """
    from ..model import build_model
    description, config = check_model_files(path)
    weights_path, json_path = model_paths(path)
    try:
        model = build_model(config)
    except (ConfigError, ValueError) as err:
        raise InputFileError(json_path, 'cannot build the described network '
                             f'({own_words(err, json_path)})') from None
    _check_weight_shapes(weights_path, model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            model.load_weights(weights_path)
    except (ValueError, OSError, KeyError, UserWarning) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputFileError(weights_path, f'weights do not fit the described network ({first})') from None
    _assign_by_name(model, weights_path)
    return model, config, dict(description.get('metadata') or {})


def _assign_by_name(model, weights_path):
    """Give each layer of `model` the tensors stored under its name in a Keras 3 weights
    file, as the numpy engine reads them (:func:`read_weight_arrays`).

    Keras loads a weights file by position (its groups are named by layer class and
    index): the line heads of a description whose lines are in another order than the
    network's (an older card without ``line_order`` rewritten with sorted keys) got
    another line's weights without a word, and the two engines disagreed.  Files of
    another layout (no layer names) keep Keras's loading.

    Raises
    ------
    InputFileError
        A layer of the described network that the file does not name (e.g. a line
        renamed in the description).
    """
    try:
        stored = read_weight_arrays(weights_path)
    except InputFileError:
        return                                   # not the Keras 3 layout: Keras's loading
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in stored:
            raise InputFileError(weights_path, f'no weights named {layer.name}, a layer of the '
                                 'described network (line names differ from the description?)')
        arrays = stored[layer.name]
        if [a.shape for a in arrays] != [tuple(w.shape) for w in layer.weights]:
            raise InputFileError(weights_path, f'the weights named {layer.name} have shapes '
                                 f'{[a.shape for a in arrays]}, the described network\'s '
                                 f'{[tuple(w.shape) for w in layer.weights]}')
        layer.set_weights(arrays)


def _clean_copy(model, config):
    """A fresh, uncompiled network of `config` holding the weights of `model`.

    Saving a compiled model would also store its optimizer state (three times the size);
    copying into a network rebuilt from `config` also proves that the two agree.
    """
    from ..model import build_model
    clean = build_model(config)
    names = sorted(layer.name for layer in clean.layers if layer.weights)
    if sorted(layer.name for layer in model.layers if layer.weights) != names:
        raise ValueError(f'the model does not match its configuration {config.source} '
                         '(other layers: another line list or architecture)')
    try:
        for name in names:             # by name: a line's head never lands in another's
            clean.get_layer(name).set_weights(model.get_layer(name).get_weights())
    except ValueError as err:
        raise ValueError(f'the model does not match its configuration {config.source} ({err})') from None
    return clean


def _check_weight_shapes(weights_path, model):
    """Compare the multiset of tensor shapes in a Keras weights file with the model's."""
    shapes = []
    try:
        with h5py.File(weights_path, 'r') as fx:
            fx.visititems(lambda name, obj: shapes.append(tuple(obj.shape))
                          if isinstance(obj, h5py.Dataset) else None)
    except OSError as err:
        raise InputFileError(weights_path, f'not a readable HDF5 weights file ({err})') from None
    expected = sorted(tuple(w.shape) for w in model.weights)
    if sorted(shapes) != expected:
        raise InputFileError(weights_path, f'holds {len(shapes)} weight tensors that do not match '
                             f'the {len(expected)} of the described network')


def _keras_version():
    import keras
    return keras.__version__


def _keras_backend():
    """``'<backend> <its version>'`` of the running Keras, e.g. ``'jax 0.11.2'``."""
    import sys
    import keras
    name = keras.config.backend()
    version = getattr(sys.modules.get(name), '__version__', None)
    return f'{name} {version}' if version else name


def _json_default(obj):
    """JSON encoder for numpy scalars and arrays in metadata."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f'{type(obj).__name__} is not JSON serialisable')


#: Configuration sections :func:`update_model_metadata` may change (not grid, lines, boxes
#: or architecture, which define what the weights mean).
UPDATABLE_SECTIONS = ('postprocess', 'selection')


def update_model_metadata(path, updates, config_updates=None):
    """Add or replace top-level keys of a model's metadata (the weights are untouched).

    Used to record results obtained after training (held-out test metrics, a calibration
    of the redshift errors) in the model card.  The JSON is rewritten atomically.

    Parameters
    ----------
    path : str
        ``NAME.weights.h5`` or ``NAME.json``.
    updates : dict
        JSON-serialisable values merged into ``metadata``.
    config_updates : dict, optional
        ``{section: {key: value}}`` merged into those sections of the configuration: only
        :data:`UPDATABLE_SECTIONS` (e.g. the ``postprocess`` error calibration), on which
        the weights do not depend; the result must be a valid configuration.

    Returns
    -------
    str
        The JSON path.

    Raises
    ------
    ValueError
        For a section not in :data:`UPDATABLE_SECTIONS` or an invalid result (the file is
        left as it was).
    """
    description, _ = read_model_description(path)
    json_path = model_paths(path)[1]
    description['metadata'] = dict(description.get('metadata') or {}, **updates)
    for section, values in (config_updates or {}).items():
        if section not in UPDATABLE_SECTIONS:
            raise ValueError(f'{json_path}: the {section!r} configuration describes what the '
                             f'weights mean and cannot be updated (only '
                             f'{", ".join(UPDATABLE_SECTIONS)})')
        description['config'][section] = dict(description['config'].get(section) or {}, **values)
    try:
        check_options(config_from_dict(description['config'], source=json_path))
    except (KeyError, ConfigError) as err:
        raise ValueError(f'{json_path}: the update makes the configuration invalid '
                         f'({err})') from None
    tmp = os.path.join(os.path.dirname(os.path.abspath(json_path)),
                       f'.{os.path.basename(json_path)}.tmp{os.getpid()}')
    try:
        with open(tmp, 'w') as fx:
            json.dump(jsonable(description), fx, indent=1, allow_nan=False,
                      default=_json_default)
            fx.write('\n')
        os.replace(tmp, json_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return json_path


#: File name of the pretrained model shipped inside the package (``lbgnet/data/``).
DEFAULT_MODEL = 'lbgnet-default.weights.h5'


def default_model_path():
    """Path of the pretrained model shipped in the package (``lbgnet/data/``).

    Returns
    -------
    str
        The ``.weights.h5`` path; its ``.json`` model card lies beside it.  The file may be
        absent in a source tree where no model has been trained yet: callers check.
    """
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data',
                        DEFAULT_MODEL)
