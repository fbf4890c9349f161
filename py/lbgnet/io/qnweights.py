"""
lbgnet.io.qnweights
===================

Read the layer weights of a Keras 2 HDF5 file, the format in which QuasarNET
(Busca & Balland 2018) and QuasarNP distribute their trained networks.

Two layouts are accepted:

* a full model file (``model.save('x.h5')``): the weights are in the ``model_weights``
  group, next to ``model_config`` and optimizer state (which are ignored);
* a weights-only file (``model.save_weights('x.h5')``): the layer groups are at the root.

In both, the group's ``layer_names`` attribute lists the layers in order, and each layer
group's ``weight_names`` attribute lists its tensors (``conv_1/kernel:0``,
``batch_normalization/gamma:0`` …) in the order of Keras's ``layer.get_weights()``, which
is also the order of Keras 3 for Conv1D (kernel, bias), Dense (kernel, bias) and
BatchNormalization (gamma, beta, moving_mean, moving_variance).
"""
import os

import h5py
import numpy as np

from .errors import InputFileError, MissingInputError


def _decode(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_keras2_weights(path):
    """Layer weights of a Keras 2 (QuasarNET-format) HDF5 file.

    Parameters
    ----------
    path : str
        ``.h5`` file written by Keras 2 ``model.save`` or ``model.save_weights``.

    Returns
    -------
    dict
        Layer name -> list of numpy arrays in ``get_weights()`` order, for every layer
        that has weights, in the file's layer order.

    Raises
    ------
    InputFileError
        Missing file, not HDF5, or no Keras layer weights in it (e.g. a Keras 3
        ``.weights.h5`` file, which has another layout).
    """
    path = str(path)
    if os.path.isdir(path):
        raise InputFileError(path, 'is a directory, not a weights file')
    try:
        fx = h5py.File(path, 'r')
    except FileNotFoundError:
        raise MissingInputError(path) from None
    except OSError as err:
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputFileError(path, f'not a readable HDF5 file ({text})') from None
    try:
        with fx:
            out = _read_layers(fx, path)
    except InputFileError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, UnicodeDecodeError) as err:
        # a damaged object header, link or attribute: h5py raises any of these
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputFileError(path, f'not a readable Keras 2 weights file ({text})') from None
    if not out:
        raise InputFileError(path, 'no layer with weights')
    return out


def _read_layers(fx, path):
    """The layer weights of the open Keras 2 file `fx` (:func:`read_keras2_weights`)."""
    group = fx['model_weights'] if 'model_weights' in fx else fx
    if 'layer_names' not in group.attrs:
        raise InputFileError(path, 'no Keras 2 layer weights (no "layer_names" attribute in '
                             f'{"model_weights" if group is not fx else "the root group"})')
    out = {}
    for name in (_decode(n) for n in group.attrs['layer_names']):
        if name not in group:
            raise InputFileError(path, f'layer {name!r} is listed but has no group')
        layer = group[name]
        weight_names = [_decode(w) for w in layer.attrs.get('weight_names', [])]
        if not weight_names:
            continue
        try:
            out[name] = [np.asarray(layer[w]) for w in weight_names]
        except KeyError as err:
            raise InputFileError(path, f'layer {name!r}: missing tensor ({err})') from None
    return out


def count_conv_layers(weights):
    """Number of ``conv_<i>`` layers (i = 1, 2, …, consecutive) in a weights mapping."""
    n = 0
    while f'conv_{n + 1}' in weights:
        n += 1
    return n
