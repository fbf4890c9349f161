"""
lbgnet.postprocess
==================

From the line finder's box confidences and offsets to per-object quantities: line
confidences and redshifts, the LBG score and decision, and a combined redshift.

Pure numpy (no TensorFlow import), vectorised over spectra.

* ``C_LINES`` / ``Z_LINES`` (nspec, nlines): per line, the confidence of its most confident
  box and the redshift decoded from that box and its offset (:func:`lbgnet.labels.decode_boxes`).
* ``C_LBG``: the ``n_thresh``-th highest line confidence, so that ``IS_LBG`` (at least
  ``n_thresh`` lines above ``c_thresh``) is exactly ``C_LBG > c_thresh``; sweeping a threshold
  on ``C_LBG`` gives the purity/efficiency curves.
* ``Z_LBG``: confidence-weighted mean of the lines that agree.  Each line above
  ``line_floor`` proposes its redshift; the proposal supported by the largest summed
  confidence of agreeing lines (``|Δz|/(1+z) < agree_tol``, z the proposal's) wins, and
  the mean is taken over its supporters.  A single wrong line, even a confident one,
  cannot pull the estimate unless it is more confident than all the agreeing lines
  together, or a line between the two agrees with both (agreement is not transitive:
  the winning proposal's supporters can then include the wrong line; measured in
  ``doc/model.rst``).
* ``ZERR_LBG``: weighted scatter of the agreeing lines divided by √(effective number of
  lines), added in quadrature to a floor from the grid resolution (one 8 Å bin, uniform:
  ``dwave/√12`` per line).  This formal error is too small (the lines of one spectrum
  share the network's errors); :func:`lbgnet.predict.catalog_from_raw` calibrates it with
  the ``zerr_scale`` and ``zerr_floor`` options (:mod:`lbgnet.zerr`).
* ``Z_BESTLINE``: the redshift of the single most confident line (QuasarNET's choice),
  kept for comparison.
"""
import numpy as np

from .labels import decode_boxes

#: Defaults of the ``postprocess`` configuration section.
#: ``zerr_*``: calibration of ``ZERR_LBG`` and (``zerr_tpl_*``) of the template refinement's
#: ``ZERR_TPL`` (:mod:`lbgnet.zerr`, fitted on the validation set by ``desi_lbg_train``);
#: the defaults leave the formal errors unchanged.
DEFAULT_OPTIONS = {'agree_tol': 0.01, 'line_floor': 0.05, 'zerr_scale': 1.0, 'zerr_floor': 0.0,
                   'zerr_tpl_scale': 1.0, 'zerr_tpl_floor': 0.0}

#: Values of ``postprocess.hybrid_score`` (how :mod:`lbgnet.predict` scores a hybrid network).
HYBRID_SCORES = ('mean', 'linefinder', 'direct')

#: Keys of the dictionary returned by :func:`postprocess`.
OUTPUT_KEYS = ('C_LINES', 'Z_LINES', 'C_LBG', 'IS_LBG', 'Z_LBG', 'ZERR_LBG', 'Z_BESTLINE',
               'BESTLINE', 'NLINES_AGREE')


def nan_argmax(values, axis):
    """``numpy.argmax`` that never picks a NaN over a number (NaN ranks lowest)."""
    return np.argmax(np.nan_to_num(values, nan=-np.inf), axis=axis)


def has_redshift(z_lines):
    """Lines with a usable redshift: finite and above -1 (1 + z > 0), the rule of
    :func:`line_members` and of ``BESTLINE``."""
    z_lines = np.asarray(z_lines)
    return np.isfinite(z_lines) & (z_lines > -1.0)


def best_line(c_lines, z_lines):
    """QuasarNET's choice: the most confident line with a redshift (:func:`has_redshift`).

    Parameters
    ----------
    c_lines, z_lines : numpy.ndarray
        Shape (nspec, nlines).

    Returns
    -------
    best : numpy.ndarray of int16
        Index of that line, -1 where no line has both a confidence and a redshift.
    z_best : numpy.ndarray
        Its redshift, NaN where `best` is -1; shape (nspec,).
    """
    c_lines, z_lines = np.asarray(c_lines), np.asarray(z_lines)
    if c_lines.shape[0] == 0:
        return np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.float64)
    ranked = np.where(has_redshift(z_lines), c_lines, np.nan)
    best = nan_argmax(ranked, axis=1)
    found = ~np.all(np.isnan(ranked), axis=1)
    z_best = np.take_along_axis(z_lines, best[:, None], axis=1)[:, 0]
    return (np.where(found, best, -1).astype(np.int16),
            np.where(found, z_best, np.nan))


def postprocess_options(config):
    """``postprocess`` section of a configuration, with defaults for missing keys.

    Returns
    -------
    dict
        ``agree_tol`` (float, in Δz/(1+z)), ``line_floor`` (float, confidence) and the
        error calibration ``zerr_scale``, ``zerr_floor``, ``zerr_tpl_scale``,
        ``zerr_tpl_floor`` (floats, floors in Δz/(1+z)).
    """
    section = dict(DEFAULT_OPTIONS)
    section.update(config.extra.get('postprocess') or {})
    return {k: float(section[k]) for k in DEFAULT_OPTIONS}


def check_options(config):
    """Refuse ``postprocess`` options that are not numbers or out of range.

    ``agree_tol`` > 0 (with 0 no line would agree even with itself), ``line_floor`` in [0, 1], ``zerr_scale`` / ``zerr_tpl_scale`` > 0,
    ``zerr_floor`` / ``zerr_tpl_floor`` >= 0 (all finite), ``hybrid_score`` one of
    :data:`HYBRID_SCORES`.  Checked before training and when a model file
    is read, so that a bad value fails at once rather than per spectrum.

    Raises
    ------
    lbgnet.config.ConfigError
        Naming the configuration's file and the key.
    """
    from .config import ConfigError
    section = config.extra.get('postprocess') or {}
    for key, value in section.items():
        if key == 'hybrid_score':
            continue
        try:
            bad = isinstance(value, (bool, np.bool_)) or not np.isfinite(float(value))
        except (TypeError, ValueError):
            bad = True
        if bad:
            raise ConfigError(f'{config.source}: postprocess.{key} must be a finite number, '
                              f'not {value!r}')
    opts = postprocess_options(config)
    positive, non_negative = ('> 0', lambda v: v > 0), ('>= 0', lambda v: v >= 0)
    ranges = {'agree_tol': positive, 'line_floor': ('in [0, 1]', lambda v: 0 <= v <= 1),
              'zerr_scale': positive, 'zerr_tpl_scale': positive,
              'zerr_floor': non_negative, 'zerr_tpl_floor': non_negative}
    for key, (text, good) in ranges.items():
        if not good(opts[key]):
            raise ConfigError(f'{config.source}: postprocess.{key} must be {text}, '
                              f'not {opts[key]!r}')
    how = section.get('hybrid_score', 'mean')
    if how not in HYBRID_SCORES:
        raise ConfigError(f'{config.source}: postprocess.hybrid_score must be one of '
                          f'{HYBRID_SCORES}, not {how!r}')


def best_boxes(conf, offset, config):
    """Per-line best box, its confidence and its redshift.

    Parameters
    ----------
    conf, offset : numpy.ndarray
        Shape (nspec, nlines, nboxes).
    config : lbgnet.config.Config

    Returns
    -------
    c_lines : numpy.ndarray
        Shape (nspec, nlines), confidence of the best box.
    z_lines : numpy.ndarray
        Shape (nspec, nlines), redshift of the line in that box.
    """
    best = nan_argmax(conf, axis=-1)
    c_lines = np.take_along_axis(conf, best[..., None], axis=-1)[..., 0]
    off = np.take_along_axis(offset, best[..., None], axis=-1)[..., 0]
    return c_lines.astype(np.float32), decode_boxes(best, off, config)


def lbg_score(c_lines, n_thresh):
    """The ``n_thresh``-th highest line confidence per spectrum, shape (nspec,)."""
    if c_lines.shape[0] == 0:
        return np.zeros(0, dtype=c_lines.dtype)
    return -np.partition(-c_lines, n_thresh - 1, axis=1)[:, n_thresh - 1]


def line_members(c_lines, z_lines, agree_tol, line_floor):
    """The lines :func:`combine_lines` averages into the combined redshift.

    Parameters
    ----------
    c_lines, z_lines : numpy.ndarray
        Shape (nspec, nlines).
    agree_tol, line_floor : float
        As in :func:`combine_lines`.

    Returns
    -------
    members : numpy.ndarray of bool
        Shape (nspec, nlines): the lines above `line_floor` that support the winning
        proposal (all False where no line passes the floor).
    weight : numpy.ndarray
        Each line's weight (its confidence clipped to [0, 1]; 0 below the floor or without
        a redshift), shape (nspec, nlines).
    center : numpy.ndarray of int
        The winning proposal's line (the most confident line with a redshift where no
        line passes the floor), shape (nspec,).
    usable : numpy.ndarray of bool
        Lines with a redshift above -1, shape (nspec, nlines).
    """
    # confidences are probabilities: an infinite one (stored or edited arrays) counts as
    # 1, not as a weight whose 0 x inf products would blank every candidate's support
    c_clipped = np.clip(np.asarray(c_lines, dtype=np.float64), 0.0, 1.0)
    z_lines = np.asarray(z_lines)
    # a line without a redshift, or at z <= -1 (1 + z <= 0: the relative test below would
    # pass for every other line; only edited or corrupt offsets get there), is no line
    usable = has_redshift(z_lines)
    weight = np.where((c_clipped >= line_floor) & usable, c_clipped, 0.0)
    with np.errstate(divide='ignore', invalid='ignore'):
        rel = np.abs(z_lines[:, :, None] - z_lines[:, None, :]) / (1.0 + z_lines[:, :, None])
    agree = rel < agree_tol                                      # (nspec, cand, line)
    support = np.einsum('sij,sj->si', agree, weight)
    support = np.where(weight > 0, support, -1.0)
    # the fallback (no line above the floor): the most confident line with a redshift
    fallback = nan_argmax(np.where(usable, c_lines, np.nan), axis=1)
    # Equal support (to rounding): the candidate with more agreeing lines wins, so that a
    # single line only prevails when it is strictly more confident than the others together.
    nsupport = np.einsum('sij,sj->si', agree, (weight > 0).astype(np.float64))
    smax = support.max(axis=1, keepdims=True)
    tied = support >= smax - 1e-6 * np.abs(smax)
    center = np.argmax(np.where(tied, nsupport, -1.0), axis=1)
    center = np.where(weight.max(axis=1) > 0, center, fallback)
    # Members: the lines that supported the centre line (the support counted their weight).
    members = np.take_along_axis(agree, center[:, None, None], axis=1)[:, 0] & (weight > 0)
    return members, weight, center, usable


def combine_lines(c_lines, z_lines, config, agree_tol, line_floor):
    """Combined redshift from the lines that agree.

    Parameters
    ----------
    c_lines, z_lines : numpy.ndarray
        Shape (nspec, nlines).
    config : lbgnet.config.Config
        Supplies the rest wavelengths and the grid bin width for the error floor.
    agree_tol : float
        Line j supports the candidate redshift z_i of line i when
        ``|z_i - z_j| / (1 + z_i) < agree_tol`` (the same test picks the lines averaged,
        so a candidate's support is the summed weight of the lines in its mean;
        :func:`line_members`).
    line_floor : float
        Lines with a lower confidence are ignored.

    Returns
    -------
    z : numpy.ndarray
        Shape (nspec,); the best line's redshift when no line passes `line_floor`; NaN
        when no line has both a confidence and a redshift.  Two candidates of equal
        support and equally many lines: the one whose line comes first in the line list.
    zerr : numpy.ndarray
        Shape (nspec,).
    nagree : numpy.ndarray of int
        Number of lines (above the floor) that agree with `z`, shape (nspec,).
    """
    z_lines = np.asarray(z_lines)
    members, weight, center, usable = line_members(c_lines, z_lines, agree_tol, line_floor)
    z_center = np.take_along_axis(z_lines, center[:, None], axis=1)
    w = np.where(members, weight, 0.0)
    wsum = w.sum(axis=1)
    nomember = wsum == 0
    wsafe = np.where(nomember, 1.0, wsum)
    zfin = np.where(members, z_lines, 0.0)                      # 0 × NaN would poison the sums
    z = np.where(nomember, z_center[:, 0], (w * zfin).sum(axis=1) / wsafe)
    var = (w * (zfin - z[:, None]) ** 2).sum(axis=1) / wsafe
    neff = np.where(nomember, 1.0, wsum ** 2 / np.maximum((w ** 2).sum(axis=1), 1e-300))
    sigma_line = config.grid.dwave / np.sqrt(12.0) / config.lines.wave_array  # (nlines,)
    floor_members = np.sqrt((w ** 2 * sigma_line ** 2).sum(axis=1)) / wsafe
    floor_single = np.take_along_axis(np.broadcast_to(sigma_line, z_lines.shape),
                                      center[:, None], axis=1)[:, 0]
    floor = np.where(nomember, floor_single, floor_members)
    zerr = np.sqrt(var / neff + floor ** 2)
    # no line with a confidence (a network gone wrong): no redshift either
    blank = ~np.any(np.isfinite(np.asarray(c_lines, dtype=np.float64)) & usable, axis=1)
    z, zerr = np.where(blank, np.nan, z), np.where(blank, np.nan, zerr)
    return z, zerr, members.sum(axis=1).astype(np.int16)


def check_c_thresh(c_thresh):
    """ValueError unless the confidence threshold `c_thresh` is in [0, 1] (NaN too: it
    would select nothing, silently)."""
    if not 0 <= c_thresh <= 1:
        raise ValueError(f'c_thresh={c_thresh} must be between 0 and 1')


def postprocess(conf, offset, config, c_thresh=None, n_thresh=None):
    """Turn line-finder outputs into per-object LBG scores and redshifts.

    Parameters
    ----------
    conf, offset : numpy.ndarray
        Output of :func:`lbgnet.model.predict_boxes`, shape (nspec, nlines, nboxes).
    config : lbgnet.config.Config
        The model's configuration (grid, lines, nboxes, ``selection`` thresholds and the
        optional ``postprocess`` section, see :func:`postprocess_options`).
    c_thresh : float, optional
        Line confidence threshold [``config.selection.c_thresh``].
    n_thresh : int, optional
        Number of lines required [``config.selection.n_thresh``].

    Returns
    -------
    dict of numpy.ndarray
        ``C_LINES``, ``Z_LINES`` (nspec, nlines), in ``config.lines`` order; ``C_LBG``,
        ``IS_LBG`` (bool), ``Z_LBG``, ``ZERR_LBG``, ``Z_BESTLINE``, ``BESTLINE`` (index of the
        most confident line with a redshift, -1 and NaN without one: :func:`best_line`),
        ``NLINES_AGREE`` (lines supporting ``Z_LBG``), all (nspec,).

    Raises
    ------
    ValueError
        When the shapes do not match the configuration or the thresholds are out of range.
    """
    conf = np.asarray(conf)
    offset = np.asarray(offset)
    expected = (len(config.lines), config.nboxes)
    if conf.ndim != 3 or conf.shape[1:] != expected or offset.shape != conf.shape:
        raise ValueError(f'conf {conf.shape} / offset {offset.shape} do not match '
                         f'(nspec, nlines, nboxes) = (nspec, {expected[0]}, {expected[1]})')
    c_thresh = config.selection.c_thresh if c_thresh is None else float(c_thresh)
    n_thresh = config.selection.n_thresh if n_thresh is None else int(n_thresh)
    if not 1 <= n_thresh <= expected[0]:
        raise ValueError(f'n_thresh={n_thresh} must be between 1 and {expected[0]}')
    check_c_thresh(c_thresh)
    opts = postprocess_options(config)
    c_lines, z_lines = best_boxes(conf, offset, config)
    c_lbg = lbg_score(c_lines, n_thresh)
    # the most confident line with a redshift (a NaN offset gives none; Z_LBG skips it too)
    best, z_best = best_line(c_lines, z_lines)
    z_lbg, zerr, nagree = combine_lines(c_lines, z_lines, config, opts['agree_tol'],
                                        opts['line_floor'])
    return {
        'C_LINES': c_lines,
        'Z_LINES': z_lines,
        'C_LBG': c_lbg,
        'IS_LBG': c_lbg > c_thresh,
        'Z_LBG': z_lbg,
        'ZERR_LBG': zerr,
        'Z_BESTLINE': z_best,
        'BESTLINE': best,
        'NLINES_AGREE': nagree,
    }
