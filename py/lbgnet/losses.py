"""
lbgnet.losses
=============

Masked loss of the line finder, as pure functions of ``(y_true, y_pred)``.

Both tensors have shape (nspec, nlines, nboxes, 2) (see :func:`lbgnet.labels.make_targets`):
channel 0 is the box indicator (truth: one-hot or all zero; prediction: sigmoid
confidence), channel 1 the in-box offset (truth: the offset in the true box, 0 elsewhere;
prediction: the offset head in every box).

Per spectrum and line the loss is

.. math::

    L = \\frac{1}{n_b} \\sum_b \\left[ -w_+ \\, y_b \\log p_b - (1 - y_b) \\log(1 - p_b) \\right]
        + \\gamma \\sum_b y_b \\, (o_b - \\hat o_b)^2

i.e. a class-balanced binary cross-entropy over the boxes (positive boxes weighted by
:math:`w_+`: ``loss.pos_weight: balanced``, the default of the configurations, gives
``nboxes - 1`` so that the one true box weighs as much as all the empty ones together;
the functions and :class:`LineFinderLoss` themselves default to 1) plus γ times the
squared offset error *in the true box only*.  A line that is absent (non-LBG object) or outside the grid has all boxes 0: it contributes only
the negative cross-entropy term and no offset term.  The per-spectrum loss is the mean over
lines.

The functions use :mod:`keras.ops`, so they accept numpy arrays as well as backend tensors.
"""
import keras
import numpy as np
from keras import ops

#: Probabilities are clipped to [EPSILON, 1 - EPSILON] before the logarithms.
EPSILON = 1e-7


def box_crossentropy(box_true, conf, pos_weight=1.0):
    """Class-balanced binary cross-entropy over boxes.

    Parameters
    ----------
    box_true : tensor
        Box indicator, shape (..., nboxes), 0/1.
    conf : tensor
        Predicted confidences in (0, 1), same shape.
    pos_weight : float, optional
        Weight of the positive (true-box) terms [1].

    Returns
    -------
    tensor
        Mean over the last axis, shape (...).
    """
    conf = ops.clip(conf, EPSILON, 1.0 - EPSILON)
    terms = pos_weight * box_true * ops.log(conf) + (1.0 - box_true) * ops.log(1.0 - conf)
    return -ops.mean(terms, axis=-1)


def offset_squared_error(box_true, offset_true, offset_pred):
    """Squared offset error in the true box, zero for lines without a true box.

    Parameters
    ----------
    box_true : tensor
        Box indicator, shape (..., nboxes).
    offset_true, offset_pred : tensor
        True and predicted offsets, same shape (only the true box is used).

    Returns
    -------
    tensor
        Shape (...).
    """
    # a selection, not a product: 0 x NaN would let a non-finite offset in any other box
    # make the loss NaN
    return ops.sum(ops.where(box_true > 0, box_true * ops.square(offset_pred - offset_true),
                             ops.zeros_like(offset_pred)), axis=-1)


def line_finder_loss(y_true, y_pred, gamma=1.0, pos_weight=1.0):
    """Loss per spectrum: mean over lines of box cross-entropy + γ × offset error.

    Parameters
    ----------
    y_true, y_pred : tensor
        Shape (nspec, nlines, nboxes, 2), see the module docstring.
    gamma : float, optional
        Weight of the offset term [1].
    pos_weight : float, optional
        Weight of the positive boxes in the cross-entropy [1].

    Returns
    -------
    tensor
        Shape (nspec,).
    """
    y_true = ops.convert_to_tensor(y_true, dtype='float32')
    y_pred = ops.convert_to_tensor(y_pred, dtype='float32')
    known = [(a, b) for a, b in zip(y_true.shape, y_pred.shape) if a is not None and b is not None]
    if len(y_true.shape) != len(y_pred.shape) or any(a != b for a, b in known):
        # broadcasting one box or one spectrum against many gives a meaningless loss
        raise ValueError(f'y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)} '
                         'must have one shape (nspec, nlines, nboxes, 2)')
    box_true = y_true[..., 0]
    bce = box_crossentropy(box_true, y_pred[..., 0], pos_weight)
    off = offset_squared_error(box_true, y_true[..., 1], y_pred[..., 1])
    return ops.mean(bce + gamma * off, axis=-1)


def resolve_pos_weight(value, nboxes):
    """Positive-box weight from a configuration value.

    Parameters
    ----------
    value : float or str
        A number, or ``'balanced'`` for ``nboxes - 1`` (one true box weighs as much as
        the ``nboxes - 1`` empty ones of the same line; 1 with a single box).
    nboxes : int

    Returns
    -------
    float

    Raises
    ------
    ValueError
        For a string other than ``'balanced'`` or a non-positive number.
    """
    if isinstance(value, str):
        if value != 'balanced':
            raise ValueError(f"loss.pos_weight must be a number or 'balanced', not {value!r}")
        return float(max(nboxes - 1, 1))         # one box: no negatives to balance
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"loss.pos_weight must be a number or 'balanced', not {value!r}")
    out = float(value)
    if not (np.isfinite(out) and out > 0):
        raise ValueError(f'loss.pos_weight must be a finite number > 0, not {value!r}')
    return out


@keras.saving.register_keras_serializable(package='lbgnet')
class LineFinderLoss(keras.losses.Loss):
    """Keras wrapper of :func:`line_finder_loss` (serialisable through ``get_config``).

    Parameters
    ----------
    gamma : float, optional
        Weight of the offset term [1].
    pos_weight : float, optional
        Weight of the positive boxes [1].
    name : str, optional
    reduction : str, optional
        Keras reduction over spectra ['sum_over_batch_size'].
    """

    def __init__(self, gamma=1.0, pos_weight=1.0, name='line_finder_loss',
                 reduction='sum_over_batch_size'):
        super().__init__(name=name, reduction=reduction)
        self.gamma = float(gamma)
        self.pos_weight = float(pos_weight)

    def call(self, y_true, y_pred):
        """Per-spectrum loss, shape (nspec,)."""
        return line_finder_loss(y_true, y_pred, self.gamma, self.pos_weight)

    def get_config(self):
        """Constructor arguments, for serialisation."""
        return dict(gamma=self.gamma, pos_weight=self.pos_weight, name=self.name,
                    reduction=self.reduction)
