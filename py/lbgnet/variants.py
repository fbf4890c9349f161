"""
lbgnet.variants
===============

End-to-end variants of the network, selected by ``model.architecture`` in the YAML:

``linefinder`` (default)
    The QuasarNET-style line finder of :mod:`lbgnet.model`.
``direct``
    Direct regression: the same convolutional trunk and ``fc_common``, then a dense layer
    ``fc_direct`` and a three-value head ``direct`` = (P(LBG), z, σ_z) — no line finder.
``hybrid``
    Both heads on the shared trunk: outputs ``{'line_boxes': …, 'direct': …}``.

The direct head (``DirectOutput``) maps its three raw values to a probability (sigmoid),
a redshift inside ``model.direct.z_range`` (scaled sigmoid) and a positive scatter σ of
Δz/(1+z) (softplus).  Its loss (:func:`direct_loss`) is

.. math::

    L = \\mathrm{BCE}(t, p) + t \\left[ \\gamma_d \\, H\\!\\left(\\frac{x}{s}\\right)
        + \\frac{1}{2} \\frac{\\bar x^2}{\\sigma^2} + \\ln\\frac{\\sigma}{s} \\right],
    \\qquad x = \\frac{\\hat z - z}{1 + z}

with t = 1 for the target class (LBG), H the Huber function (robust to the catastrophic
redshift errors of line confusions), s = ``dz_scale`` and x̄ = x with the gradient stopped,
so that the σ head learns the scatter without pulling the redshift.  YAML::

    model:
      architecture: direct          # linefinder | direct | hybrid
      direct: {units: 64, z_range: [1.5, 5.0]}
    loss:
      gamma: 1.0                    # line finder offset weight (linefinder, hybrid)
      pos_weight: balanced
      direct: {gamma: 1.0, dz_scale: 0.01, weight: 1.0}   # weight: of the direct loss

Catalogue quantities of every architecture come from :mod:`lbgnet.predict`.
"""
import dataclasses

import keras
import numpy as np
from keras import ops

from .config import ConfigError, as_float, check_keys
from .modelspec import NDIRECT, architecture, direct_options

#: Defaults of ``loss.direct``.
DIRECT_LOSS_DEFAULTS = {'gamma': 1.0, 'dz_scale': 0.01, 'weight': 1.0}
#: Smallest σ the direct head can predict (in Δz/(1+z)).
SIGMA_FLOOR = 1e-4
EPSILON = 1e-7


def direct_loss_options(config):
    """``loss.direct`` with defaults: ``gamma``, ``dz_scale``, ``weight`` (floats)."""
    section = (config.extra.get('loss') or {}).get('direct') or {}
    check_keys({'loss': {'direct': section}}, config.source)
    opts = dict(DIRECT_LOSS_DEFAULTS, **section)
    out = {}
    for key in DIRECT_LOSS_DEFAULTS:
        try:
            out[key] = as_float(opts[key])          # a YAML boolean is no number here
        except (TypeError, ValueError):
            raise ConfigError(f'{config.source}: loss.direct.{key} must be a finite number, '
                              f'not {opts[key]!r}') from None
    if not (0 < out['dz_scale'] < np.inf and 0 <= out['gamma'] < np.inf
            and 0 < out['weight'] < np.inf):          # written so that NaN fails too
        raise ConfigError(f'{config.source}: loss.direct needs dz_scale > 0, gamma >= 0, '
                          'weight > 0, all finite')
    return out


@keras.saving.register_keras_serializable(package='lbgnet')
class DirectOutput(keras.layers.Layer):
    """Direct head: raw (batch, 3) -> (P(target), z in [z_lo, z_hi], σ_z > 0).

    Parameters
    ----------
    z_lo, z_hi : float
        Redshift range of the regression output.
    """

    def __init__(self, z_lo, z_hi, **kwargs):
        super().__init__(**kwargs)
        self.z_lo = float(z_lo)
        self.z_hi = float(z_hi)

    def call(self, inputs):
        """Shape (batch, 3): sigmoid, scaled sigmoid, softplus + floor."""
        prob = ops.sigmoid(inputs[:, 0:1])
        z = self.z_lo + (self.z_hi - self.z_lo) * ops.sigmoid(inputs[:, 1:2])
        sigma = ops.softplus(inputs[:, 2:3]) + SIGMA_FLOOR
        return ops.concatenate([prob, z, sigma], axis=-1)

    def compute_output_shape(self, input_shape):
        """Unchanged (batch, 3)."""
        return input_shape

    def get_config(self):
        """Constructor arguments, for serialisation."""
        config = super().get_config()
        config.update(z_lo=self.z_lo, z_hi=self.z_hi)
        return config


def linefinder_config(config):
    """`config` with ``model.architecture`` set to ``linefinder``."""
    model = dict(config.extra.get('model') or {}, architecture='linefinder')
    return dataclasses.replace(config, extra=dict(config.extra, model=model))


def build_variant(config):
    """Build a ``direct`` or ``hybrid`` network (see the module docstring).

    Parameters
    ----------
    config : lbgnet.config.Config

    Returns
    -------
    keras.Model
        ``direct``: output (batch, 3); ``hybrid``: outputs ``{'line_boxes': (batch, nlines,
        nboxes, 2), 'direct': (batch, 3)}``.  Layer names of the trunk are those of the
        line finder, so weights transfer between architectures.
    """
    from .model import build_model
    arch = architecture(config)
    if arch == 'linefinder':
        return build_model(config)
    opts = direct_options(config)
    finder = build_model(linefinder_config(config))
    names = {layer.name for layer in finder.layers}
    trunk = finder.get_layer('dropout_fc' if 'dropout_fc' in names else 'fc_activation').output
    x = keras.layers.Dense(opts['units'], activation='relu', name='fc_direct')(trunk)
    raw = keras.layers.Dense(NDIRECT, name='direct_raw')(x)
    direct = DirectOutput(*opts['z_range'], name='direct')(raw)
    outputs = direct if arch == 'direct' else {'line_boxes': finder.output, 'direct': direct}
    return keras.Model(finder.input, outputs, name=f'{finder.name}_{arch}')


def direct_loss(y_true, y_pred, gamma=1.0, dz_scale=0.01):
    """Loss of the direct head per spectrum (see the module docstring).

    Parameters
    ----------
    y_true : tensor
        (nspec, 3): target flag (1 for the target class), true z (ignored when the flag
        is 0), unused.
    y_pred : tensor
        (nspec, 3): probability, z, σ of Δz/(1+z).
    gamma : float, optional
        Weight of the Huber redshift term [1].
    dz_scale : float, optional
        Δz/(1+z) at which the Huber function turns linear, and unit of σ [0.01].

    Returns
    -------
    tensor
        Shape (nspec,).
    """
    y_true = ops.convert_to_tensor(y_true, dtype='float32')
    y_pred = ops.convert_to_tensor(y_pred, dtype='float32')
    flag, z_true = y_true[:, 0], y_true[:, 1]
    prob = ops.clip(y_pred[:, 0], EPSILON, 1.0 - EPSILON)
    bce = -(flag * ops.log(prob) + (1.0 - flag) * ops.log(1.0 - prob))
    x = (y_pred[:, 1] - z_true) / (1.0 + z_true)
    u = ops.abs(x) / dz_scale
    huber = ops.where(u < 1.0, 0.5 * ops.square(u), u - 0.5)
    sigma = y_pred[:, 2]
    nll = 0.5 * ops.square(ops.stop_gradient(x) / sigma) + ops.log(sigma / dz_scale)
    return bce + flag * (gamma * huber + nll)


@keras.saving.register_keras_serializable(package='lbgnet')
class DirectLoss(keras.losses.Loss):
    """Keras wrapper of :func:`direct_loss`, times `weight`.

    Parameters
    ----------
    gamma, dz_scale : float, optional
    weight : float, optional
        Factor on the whole loss (relative weight of the direct head in a hybrid) [1].
    name, reduction : str, optional
    """

    def __init__(self, gamma=1.0, dz_scale=0.01, weight=1.0, name='direct_loss',
                 reduction='sum_over_batch_size'):
        super().__init__(name=name, reduction=reduction)
        self.gamma = float(gamma)
        self.dz_scale = float(dz_scale)
        self.weight = float(weight)

    def call(self, y_true, y_pred):
        """Per-spectrum loss, shape (nspec,)."""
        return self.weight * direct_loss(y_true, y_pred, self.gamma, self.dz_scale)

    def get_config(self):
        """Constructor arguments, for serialisation."""
        return dict(gamma=self.gamma, dz_scale=self.dz_scale, weight=self.weight,
                    name=self.name, reduction=self.reduction)


def variant_loss(config, linefinder_loss):
    """The Keras loss of a configuration's architecture.

    Parameters
    ----------
    config : lbgnet.config.Config
    linefinder_loss : keras.losses.Loss
        The line-finder loss built from the ``loss`` section.

    Returns
    -------
    keras.losses.Loss or dict
        `linefinder_loss`, a :class:`DirectLoss`, or for ``hybrid`` a dict keyed by output.
    """
    arch = architecture(config)
    if arch == 'linefinder':
        return linefinder_loss
    direct = DirectLoss(**direct_loss_options(config))
    if arch == 'direct':
        return direct
    return {'line_boxes': linefinder_loss, 'direct': direct}
