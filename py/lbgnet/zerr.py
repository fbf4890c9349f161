"""
lbgnet.zerr
===========

Calibration of the catalogue's redshift errors (``ZERR_LBG``, ``ZERR_TPL``).

Both raw errors are formal: ``ZERR_LBG`` from the agreement of the network's lines
(:func:`lbgnet.postprocess.combine_lines`), ``ZERR_TPL`` from the curvature of χ² in the
template fit (:mod:`lbgnet.refine`).  Neither knows the scatter of the lines' velocities
about the systemic redshift (outflows shift the interstellar lines and Lyα by different
amounts in each galaxy), the mismatch between the template and each galaxy, or the
correlation of the network's line positions, so both are too small.  The calibrated error
is

    ``σ = sqrt((scale · zerr)² + (floor · (1 + z))²)``

with ``scale`` and ``floor`` fitted on the validation set (:func:`fit_calibration`) so
that the pulls ``Δz / σ`` of the right redshifts have unit NMAD at every error size.  The
error describes right redshifts only: a wrong line identification (a catastrophic error)
is not a wide Gaussian; it is what ``SMALL_DELTA_CHI2`` flags.

Pure numpy/scipy.
"""
import numpy as np

#: Right redshifts for the fit and the pull statistics: ``|Δz| / (1 + z)`` below this.
MAX_REL_DZ = 0.01
#: Equal-count bins of the raw error in the fit.
NBINS = 8
#: Fewest right redshifts :func:`fit_calibration` accepts.
MIN_OBJECTS = 40
#: Smallest scale (a calibrated error must stay > 0 where the floor is 0).
MIN_SCALE = 1e-3
#: Fitted floors below this (in Δz/(1+z), 0.3 km/s) are reported as 0: the fit sits on
#: its bound and only rounding is left.
MIN_FLOOR = 1e-6
#: NMAD → Gaussian σ.
NMAD_FACTOR = 1.4826


def calibrated_error(zerr, z, scale=1.0, floor=0.0):
    """``sqrt((scale · zerr)² + (floor · (1 + z))²)``; NaN where `zerr` or `z` is NaN.

    Parameters
    ----------
    zerr, z : array_like
        Raw errors and redshifts, same shape.
    scale, floor : float, optional
        From :func:`fit_calibration`; the defaults return `zerr` unchanged (NaN where
        `z` is NaN).
    """
    zerr = np.asarray(zerr, dtype=np.float64)
    return np.hypot(scale * zerr, floor * (1.0 + np.asarray(z, dtype=np.float64)))


def nmad(x):
    """Normalised median absolute deviation about the median (NaN for an empty array)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return np.nan
    return NMAD_FACTOR * float(np.median(np.abs(x - np.median(x))))


def right_redshifts(z, zerr, z_true, max_rel=MAX_REL_DZ):
    """Δz/(1+z_true) and zerr/(1+z_true) of the finite right redshifts.

    Parameters
    ----------
    z, zerr, z_true : array_like
        Shape (n,).
    max_rel : float, optional
        Right: ``|z − z_true| / (1 + z_true) < max_rel``.

    Returns
    -------
    rel_dz, rel_err : numpy.ndarray
        Shape (nright,); objects with a non-finite or non-positive error are left out.
    """
    z, zerr, z_true = (np.asarray(a, dtype=np.float64) for a in (z, zerr, z_true))
    with np.errstate(invalid='ignore', divide='ignore'):     # z_true -1 or infinite: left out
        rel_dz = (z - z_true) / (1.0 + z_true)
        keep = np.isfinite(rel_dz) & np.isfinite(zerr) & (zerr > 0) & (np.abs(rel_dz) < max_rel)
    return rel_dz[keep], zerr[keep] / (1.0 + z_true[keep])


def fit_calibration(z, zerr, z_true, max_rel=MAX_REL_DZ, nbins=NBINS, min_objects=MIN_OBJECTS):
    """Scale and floor that make the right redshifts' pulls unit-NMAD at every error size.

    The right redshifts (:func:`right_redshifts`) are cut into `nbins` equal-count bins of
    the raw error; in each, the NMAD of Δz/(1+z) should equal
    ``sqrt(scale² σ² + floor²)`` at the bin's median raw error σ (in Δz/(1+z)).  The two
    parameters (≥ 0) minimise the squared logarithms of the ratios, so that every bin
    counts alike; the scale is at least :data:`MIN_SCALE`.  Both are then multiplied by
    one factor that makes the NMAD of all the pulls exactly 1 (the bins fix the shape;
    with few objects per bin their noise would otherwise shift the overall width).

    Parameters
    ----------
    z, zerr, z_true : array_like
        Measured redshifts, their raw errors and the true redshifts of true LBGs (the
        selected ones, as the catalogue reports them), shape (n,).
    max_rel, nbins, min_objects : optional
        See :data:`MAX_REL_DZ`, :data:`NBINS`, :data:`MIN_OBJECTS`.

    Returns
    -------
    dict
        ``scale``, ``floor`` (in Δz/(1+z); 0 below :data:`MIN_FLOOR`), ``nobj`` (right
        redshifts used), ``bins`` (``median_error`` and ``nmad`` of Δz/(1+z) per bin, what
        was fitted).

    Raises
    ------
    ValueError
        With fewer than `min_objects` right redshifts, or when they do not scatter.
    """
    from scipy.optimize import least_squares
    rel_dz, rel_err = right_redshifts(z, zerr, z_true, max_rel)
    if rel_dz.size < max(min_objects, 2 * nbins):
        raise ValueError(f'{rel_dz.size} right redshifts with an error: need at least '
                         f'{max(min_objects, 2 * nbins)} to calibrate the errors')
    order = np.argsort(rel_err, kind='stable')
    bins = np.array_split(order, nbins)
    sigma = np.array([np.median(rel_err[b]) for b in bins])
    width = np.array([nmad(rel_dz[b]) for b in bins])
    if not np.all(width > MIN_FLOOR / 1000):
        raise ValueError('the right redshifts do not scatter in some bins of the error: '
                         'nothing to calibrate on')

    def residual(p):
        return 0.5 * np.log((p[0] ** 2 * sigma ** 2 + p[1] ** 2) / width ** 2)

    start = [max(float(np.median(width / sigma)), 2 * MIN_SCALE), float(0.5 * width.min())]
    fit = least_squares(residual, start, bounds=([MIN_SCALE, 0.0], [np.inf, np.inf]))
    scale, floor = fit.x
    # the bins fix the shape; one common factor makes the NMAD of all pulls exactly 1
    norm = nmad(rel_dz / np.hypot(scale * rel_err, floor))
    scale, floor = scale * norm, floor * norm
    floor = float(floor) if floor >= MIN_FLOOR else 0.0
    return {'scale': float(max(scale, MIN_SCALE)), 'floor': floor, 'nobj': int(rel_dz.size),
            'bins': {'median_error': sigma.tolist(), 'nmad': width.tolist()}}


def pull_stats(z, zerr, z_true, max_rel=MAX_REL_DZ):
    """How well errors describe the right redshifts (:func:`right_redshifts`).

    Returns
    -------
    dict
        ``n`` (right redshifts with an error), ``nmad_pull`` (NMAD of Δz/σ; 1 when the
        errors are right; None for fewer than two, which have no spread),
        ``frac_within_1sigma`` and ``frac_within_2sigma`` (of ``|Δz| < σ``, < 2σ; 0.683 and
        0.954 for Gaussian errors); None values when there is none.
    """
    rel_dz, rel_err = right_redshifts(z, zerr, z_true, max_rel)
    if rel_dz.size == 0:
        return {'n': 0, 'nmad_pull': None, 'frac_within_1sigma': None, 'frac_within_2sigma': None}
    pull = rel_dz / rel_err
    return {'n': int(pull.size), 'nmad_pull': nmad(pull) if pull.size > 1 else None,
            'frac_within_1sigma': float(np.mean(np.abs(pull) < 1)),
            'frac_within_2sigma': float(np.mean(np.abs(pull) < 2))}


#: Each redshift error and the header keyword saying whether it was calibrated.
CALIBRATION_CARDS = (('ZERR_LBG', 'ZERRCAL'), ('ZERR_TPL', 'ZTPLCAL'))


def calibration_status(metadata):
    """Whether a model's redshift errors were calibrated when it was trained.

    Parameters
    ----------
    metadata : dict or None
        The model card's metadata (``error_calibration``, written by ``desi_lbg_train`` and
        ``benchmarks/calibrate_errors.py``).

    Returns
    -------
    dict
        ``'ZERR_LBG'`` and ``'ZERR_TPL'`` -> True (a fit was stored), False (the training
        left it uncalibrated: too few right redshifts on the validation set, or no
        refinement) or None (the card does not say: a model from elsewhere).
    """
    cal = (metadata or {}).get('error_calibration')
    out = {}
    for key, _ in CALIBRATION_CARDS:
        entry = cal.get(key) if isinstance(cal, dict) else None
        out[key] = None if not isinstance(entry, dict) else entry.get('fit') is not None
    return out
