"""
lbgnet.labels
=============

Box encoding of line positions, the training target of the line finder, and its inverse.

The input grid (``config.grid``: ``wave_min`` to ``wave_max``) is cut into
``config.nboxes`` equal slices ("boxes") of ``config.box_width`` Å.  A line observed at
wavelength λ lies in box ``b = floor((λ - wave_min) / box_width)`` at the fractional
position ``offset = (λ - wave_min) / box_width - b`` in [0, 1).  :func:`encode_boxes`
turns observed wavelengths into (one-hot box, offset) and :func:`decode_boxes` turns a box
index and an offset back into a redshift; they are exact numpy inverses of each other.

Everything here is pure numpy and vectorised over spectra and lines.
"""
import numpy as np

#: Number of target channels per (line, box): box indicator and in-box offset.
NTARGETS = 2


def box_position(wave, config):
    """Position of a wavelength on the box axis, in units of boxes.

    Parameters
    ----------
    wave : array_like
        Observed wavelengths (Å), any shape.
    config : lbgnet.config.Config

    Returns
    -------
    numpy.ndarray
        ``(wave - wave_min) / box_width``, same shape, float64; the integer part is the box
        and the fractional part the offset.
    """
    return (np.asarray(wave, dtype=np.float64) - config.grid.wave_min) / config.box_width


def encode_boxes(line_waves_obs, config):
    """Encode observed line wavelengths as box indicators and in-box offsets.

    Parameters
    ----------
    line_waves_obs : array_like
        Observed wavelength of each line, shape (nspec, nlines), Å.  NaN means that the
        line is absent (non-LBG object, or line not simulated).
    config : lbgnet.config.Config
        Supplies the grid and ``nboxes``.

    Returns
    -------
    box : numpy.ndarray
        One-hot box indicator, shape (nspec, nlines, nboxes), float32; all zero for an
        absent line or a line outside ``[wave_min, wave_max)``.
    offset : numpy.ndarray
        Position inside the true box in [0, 1), shape (nspec, nlines), float32; 0 where
        the line is absent or outside the grid.
    """
    pos = box_position(line_waves_obs, config)
    inside = np.isfinite(pos) & (pos >= 0) & (pos < config.nboxes)
    index = np.where(inside, np.floor(np.where(inside, pos, 0.0)), -1).astype(np.int64)
    box = (index[..., None] == np.arange(config.nboxes)).astype(np.float32)
    offset = np.where(inside, pos - np.maximum(index, 0), 0.0).astype(np.float32)
    # an offset just below 1 in float64 rounds to 1.0 in float32: keep it inside the box
    offset = np.minimum(offset, np.nextafter(np.float32(1.0), np.float32(0.0)))
    return box, offset


def decode_boxes(box_index, offset, config):
    """Redshift of each line from its box index and in-box offset.

    Parameters
    ----------
    box_index : array_like of int
        Box of each line, shape (nspec, nlines) (any leading shape; the last axis runs
        over ``config.lines``).
    offset : array_like
        Position inside the box (normally in [0, 1), may be slightly outside), same shape.
    config : lbgnet.config.Config

    Returns
    -------
    numpy.ndarray
        Redshift per line, same shape, float64: ``λ_obs / λ_rest - 1``.
    """
    wave = box_to_wave(box_index, offset, config)
    if wave.ndim == 0 or wave.shape[-1] != len(config.lines):
        raise ValueError(f'box_index / offset of shape {wave.shape}: the last axis must run '
                         f'over the {len(config.lines)} lines')
    return wave / config.lines.wave_array - 1.0


def box_to_wave(box_index, offset, config):
    """Observed wavelength (Å) of a box index plus in-box offset (any matching shapes)."""
    pos = np.asarray(box_index, dtype=np.float64) + np.asarray(offset, dtype=np.float64)
    return config.grid.wave_min + pos * config.box_width


def line_waves_at(z, config):
    """Observed wavelength of every line at redshift `z`.

    Parameters
    ----------
    z : array_like
        Redshift per spectrum, shape (nspec,) (a scalar is one spectrum); NaN for objects
        without LBG lines.
    config : lbgnet.config.Config

    Returns
    -------
    numpy.ndarray
        Shape (nspec, nlines), Å; NaN rows where `z` is NaN.
    """
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    return (1.0 + z)[:, None] * config.lines.wave_array[None, :]


def make_targets(line_waves_obs, config):
    """Training target of the line finder from observed line wavelengths.

    Parameters
    ----------
    line_waves_obs : array_like
        Shape (nspec, nlines), Å, NaN for absent lines (see :func:`encode_boxes`).
    config : lbgnet.config.Config

    Returns
    -------
    numpy.ndarray
        Shape (nspec, nlines, nboxes, 2), float32: channel 0 the one-hot box, channel 1
        the in-box offset placed in the true box (0 in every other box).  This is the
        ``y_true`` layout expected by :mod:`lbgnet.losses`.
    """
    box, offset = encode_boxes(line_waves_obs, config)
    out = np.empty(box.shape + (NTARGETS,), dtype=np.float32)
    out[..., 0] = box
    out[..., 1] = box * offset[..., None]
    return out
