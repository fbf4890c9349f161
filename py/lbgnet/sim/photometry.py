"""
lbgnet.sim.photometry
=====================

Synthetic AB magnitudes used to normalise mock spectra to their r magnitude.

The filter response (speclite; default ``decam2014-r``, the Legacy Surveys DECam r
band used for DESI targeting) is sampled once on a fixed internal grid covering the
filter, so the normalisation never depends on the grid a spectrum is rendered on.
"""
import functools

import numpy as np

from .profiles import pixel_edges

#: AB zero point f_ν = 3631 Jy, in erg/s/cm²/Hz, and c in Å/s.
AB_FNU = 3.631e-20
C_AA = 2.99792458e18
#: Flux unit of the mock spectra (erg/s/cm²/Å).
FLUX_UNIT = 1e-17
#: Fraction of the peak response that separates the filter core (sampled every `step`)
#: from its wings (sampled WING_FACTOR times more coarsely).
RESPONSE_FLOOR = 3e-3
WING_FACTOR = 10


@functools.lru_cache(maxsize=8)
def filter_grid(name, step):
    """Internal grid and weights of a filter for synthetic AB magnitudes.

    Parameters
    ----------
    name : str
        speclite filter name, e.g. ``'decam2014-r'``.
    step : float
        Grid step (Å).

    Returns
    -------
    wave : numpy.ndarray
        Grid (Å) covering the filter's non-zero response, `step` apart in the core and
        WING_FACTOR × `step` in the faint wings, shape (m,), read-only.
    weights : numpy.ndarray
        Shape (m,), read-only, such that ``-2.5 log10(flux @ weights)`` is the AB
        magnitude of f_λ sampled on `wave` in 1e-17 erg/s/cm²/Å.

    Notes
    -----
    Cached per (name, step): the result is immutable and loading the filter costs
    milliseconds, which the training generator would otherwise pay per batch.
    """
    import speclite.filters
    try:
        filt = speclite.filters.load_filter(name)
    except ValueError as err:
        raise ValueError(f'unknown speclite filter {name!r} ({err})') from None
    # The tabulated DECam r response has a faint red leak (~4e-4 of the peak) out to
    # 10980 A, which matters for M dwarfs (~1.5%): the core (response above
    # RESPONSE_FLOOR of the peak) is sampled every `step`, the wings every WING_FACTOR steps.
    resp_all = filt.response
    nz = np.nonzero(resp_all > 0)[0]
    core = np.nonzero(resp_all > RESPONSE_FLOOR * resp_all.max())[0]
    lo, hi = float(filt.wavelength[nz[0]]), float(filt.wavelength[nz[-1]])
    clo, chi = float(filt.wavelength[core[0]]), float(filt.wavelength[core[-1]])
    wide = WING_FACTOR * step
    wave = np.concatenate([np.arange(clo - wide, lo - 0.5 * wide, -wide)[::-1],
                           np.arange(clo, chi + 0.5 * step, step),
                           np.arange(chi + wide, hi + 0.5 * wide, wide)])
    resp = np.interp(wave, filt.wavelength, resp_all, left=0.0, right=0.0)
    width = np.diff(pixel_edges(wave))
    ab = AB_FNU * C_AA / wave ** 2 / FLUX_UNIT
    weights = resp * wave * width / np.sum(resp * wave * width * ab)
    wave.flags.writeable = False
    weights.flags.writeable = False
    return wave, weights


def ab_magnitude(flux, weights):
    """AB magnitude of spectra sampled on a :func:`filter_grid` grid.

    Parameters
    ----------
    flux : numpy.ndarray
        Shape (nspec, m), 1e-17 erg/s/cm²/Å.
    weights : numpy.ndarray
        Shape (m,).

    Returns
    -------
    numpy.ndarray
        Shape (nspec,); +inf where the band flux is not positive.
    """
    band = np.asarray(flux, dtype=np.float64) @ np.asarray(weights, dtype=np.float64)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(band > 0, -2.5 * np.log10(np.where(band > 0, band, 1.0)), np.inf)
