"""
lbgnet.sim.rrmock
=================

A parametric stand-in for the Redrock outcome of mock spectra, so that mock
``redrock-*.fits`` files can be written without running Redrock (which needs its
templates and ~1 s per spectrum).  It reproduces what matters downstream:

* QSOs, low-z galaxies and stars: mostly the right class and redshift, with a
  success probability falling with the effective magnitude
  ``m_eff = RMAG - 1.25 log10(EFFTIME / efftime_ref)`` (S/N ∝ flux·√EFFTIME);
* LBGs: Redrock has no LBG template.  A strong Lyα emitter may be fitted by a QSO
  template near its redshift (biased by the Lyα velocity offset, DV_LYA of the truth
  table when present); Lyα may be taken
  for [OII] 3727 (a GALAXY at (1+z)·1215.67/3728.48 − 1), both less often for fainter
  spectra; otherwise a random wrong
  solution, mostly a low-z GALAXY with a small ΔΧ²;
* ZERR, ZWARN (SMALL_DELTA_CHI2, NODATA, UNPLUGGED, LITTLE_COVERAGE), DELTACHI2,
  CHI2 (from the actual noise of each mock spectrum), NPIXELS, COEFF, NCOEFF with
  Redrock's column names and types.

The probabilities are configuration parameters (``redrock_mock`` section of
``etc/lbgnet-mock.yaml``), documented there; they are a model, not a Redrock run.
"""
import numpy as np
from astropy.table import Table
from scipy.constants import c as speed_of_light

from ..bitmask import REDROCK_ZWARN as ZWARN_BITS

#: Rest wavelengths (Å) of Lyα and [OII] 3727+3729 (vacuum, mean of the doublet).
LYA_WAVE, OII_WAVE = 1215.67, 3728.48
#: Length of the COEFF column (Redrock's largest template basis, the GALAXY PCA).
NCOEFF_MAX = 10
#: Spectral types Redrock can return.
SPECTYPES = ('GALAXY', 'QSO', 'STAR')

C_KMS = speed_of_light / 1e3


def effective_magnitude(rmag, efftime, efftime_ref):
    """r magnitude corrected to the reference depth: equal S/N ↔ equal m_eff."""
    return np.asarray(rmag) - 1.25 * np.log10(np.asarray(efftime) / efftime_ref)


def logistic(x):
    """1 / (1 + exp(-x)), overflow-safe."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def success_probability(cls, meff, params):
    """Probability that Redrock finds the right class and redshift (non-LBG classes)."""
    prob = np.zeros(meff.size)
    for name, par in params['success'].items():
        sel = cls == name
        prob[sel] = par['p_max'] * logistic((par['m50'] - meff[sel]) / par['width'])
    return prob


def lbg_outcome_weights(truth, meff, params):
    """Probabilities of the LBG outcomes ``qso_right``, ``oii`` and ``wrong``, shape (n, 3).

    Both non-random outcomes need the Lyα line to be seen: each is its maximum times the
    brightness factor ``logistic((m50 − m_eff) / width)`` times a logistic in LYA_EW.
    """
    lbg = params['lbg']
    ew = np.asarray(truth['LYA_EW'], dtype=np.float64) if 'LYA_EW' in truth.colnames \
        else np.zeros(len(truth))
    ew = np.nan_to_num(ew)
    bright = logistic((lbg['m50'] - meff) / lbg['width'])
    ew0, ew_width = lbg['qso_right_ew']
    p_qso = lbg['qso_right_max'] * bright * logistic((ew - ew0) / ew_width)
    z_oii = (1.0 + np.asarray(truth['Z_TRUE'])) * LYA_WAVE / OII_WAVE - 1.0
    p_oii = lbg['oii_max'] * bright * logistic((ew - lbg['oii_ew'][0]) / lbg['oii_ew'][1]) \
        * (z_oii > 0)
    p_oii = np.minimum(p_oii, 1.0 - p_qso)
    return np.stack([p_qso, p_oii, 1.0 - p_qso - p_oii], axis=1)


def draw_categories(weights, rng):
    """One category index per row of a (n, k) probability table."""
    cum = np.cumsum(weights, axis=1)
    cum /= cum[:, -1:]
    return (rng.random(weights.shape[0])[:, None] > cum).sum(axis=1)


def _wrong_solutions(idx, cls, params, rng, spectype, z, subtype):
    """Fill random wrong solutions for rows `idx` (in place)."""
    mix = params['failure_mix']
    for name in np.unique(cls[idx]):
        rows = idx[cls[idx] == name]
        kinds = np.array(list(mix[name]))
        probs = np.array([mix[name][k] for k in kinds], dtype=np.float64)
        choice = kinds[rng.choice(kinds.size, size=rows.size, p=probs / probs.sum())]
        spectype[rows] = choice
    lo, hi = params['wrong_z']['GALAXY']
    gal = idx[spectype[idx] == 'GALAXY']
    z[gal] = rng.uniform(lo, hi, gal.size)
    lo, hi = params['wrong_z']['QSO']
    qso = idx[spectype[idx] == 'QSO']
    z[qso] = rng.uniform(lo, hi, qso.size)
    star = idx[spectype[idx] == 'STAR']
    z[star] = rng.normal(0.0, params['star_vr_sigma'] / C_KMS, star.size)
    subtype[star] = rng.choice(params['star_subtypes'], size=star.size)


def redshift_outcome(truth, meff, params, rng):
    """Draw SPECTYPE, SUBTYPE, Z and whether each solution is right.

    Returns
    -------
    spectype, subtype : numpy.ndarray of str
    z : numpy.ndarray
    right : numpy.ndarray of bool
        Redrock found the true class (LBGs: a QSO within the Lyα offset) and redshift.
    """
    n = len(truth)
    cls = np.asarray(truth['CLASS']).astype(str)
    ztrue = np.asarray(truth['Z_TRUE'], dtype=np.float64)
    spectype = np.full(n, 'GALAXY', dtype='U6')
    subtype = np.full(n, '', dtype='U20')
    z = np.zeros(n)
    right = np.zeros(n, dtype=bool)
    nonlbg = np.flatnonzero(cls != 'LBG')
    ok = rng.random(nonlbg.size) < success_probability(cls[nonlbg], meff[nonlbg], params)
    good = nonlbg[ok]
    spectype[good] = cls[good]
    z[good] = ztrue[good]
    right[good] = True
    star = good[cls[good] == 'STAR']
    if 'SUBTYPE' in truth.colnames:
        subtype[star] = np.asarray(truth['SUBTYPE'])[star].astype(str)
    qso = good[cls[good] == 'QSO']
    z[qso] += (1 + ztrue[qso]) * rng.normal(0.0, params['qso_dv_sigma'], qso.size) / C_KMS
    lbg = np.flatnonzero(cls == 'LBG')
    kind = draw_categories(lbg_outcome_weights(truth[lbg], meff[lbg], params), rng)
    dv_lya = rng.normal(*params['lbg']['lya_dv'], size=lbg.size)
    if 'DV_LYA' in truth.colnames:                  # the simulated Lyα offset, when known
        known = np.asarray(truth['DV_LYA'], dtype=np.float64)[lbg]
        dv_lya = np.where(np.isfinite(known), known, dv_lya)
    zlya = (1 + ztrue[lbg]) * (1 + dv_lya / C_KMS) - 1
    spectype[lbg[kind == 0]] = 'QSO'
    z[lbg[kind == 0]] = zlya[kind == 0]
    right[lbg[kind == 0]] = True
    z[lbg[kind == 1]] = (1 + zlya[kind == 1]) * LYA_WAVE / OII_WAVE - 1
    wrong = np.concatenate([nonlbg[~ok], lbg[kind == 2]])
    _wrong_solutions(wrong, cls, params, rng, spectype, z, subtype)
    qso = spectype == 'QSO'
    subtype[qso] = np.where(z[qso] >= params['qso_hiz_min'], 'HIZ', 'LOZ')
    return spectype, subtype, z, right


def simulate_redrock(truth, efftime, efftime_ref, npixels, chi2_noise, signal_chi2,
                     fiberstatus, params, rng):
    """Simulated Redrock REDSHIFTS table for mock spectra.

    Parameters
    ----------
    truth : astropy.table.Table
        TARGETID, CLASS, Z_TRUE, RMAG, optionally SUBTYPE and LYA_EW; shape (n,).
    efftime : numpy.ndarray
        Effective exposure time per spectrum (s), shape (n,).
    efftime_ref : float
        Depth (s) at which the magnitudes in `params` are given.
    npixels : numpy.ndarray of int
        Valid pixels per spectrum (all arms), shape (n,).
    chi2_noise, signal_chi2 : numpy.ndarray
        Σ (flux − model)²·ivar and Σ model²·ivar over the valid pixels, shape (n,).
    fiberstatus : numpy.ndarray of int
        COADD_FIBERSTATUS (desispec fibermask bits), shape (n,).
    params : dict
        The ``redrock_mock`` configuration section.
    rng : numpy.random.Generator

    Returns
    -------
    astropy.table.Table
        REDSHIFTS rows in the order of `truth`.
    """
    from desispec.maskbits import fibermask
    n = len(truth)
    meff = effective_magnitude(truth['RMAG'], efftime, efftime_ref)
    spectype, subtype, z, right = redshift_outcome(truth, meff, params, rng)
    zerr0 = np.array([params['zerr'][s] for s in spectype]) if n else np.zeros(0)
    zerr = zerr0 * (1 + np.abs(z)) * 10 ** (0.2 * (meff - params['zerr_mag'])
                                            + params['zerr_dex'] * rng.standard_normal(n))
    snr2 = 10 ** (-0.8 * (meff - params['deltachi2']['mag']))
    dchi2 = np.where(right, params['deltachi2']['right'] * snr2
                     * 10 ** (params['deltachi2']['dex'] * rng.standard_normal(n)),
                     rng.exponential(params['deltachi2']['wrong_mean'], n))
    mismatch = np.where(right, params['chi2_mismatch']['right'], params['chi2_mismatch']['wrong'])
    chi2 = chi2_noise + mismatch * signal_chi2
    ncoeff = np.array([params['ncoeff'][s] for s in spectype], dtype=np.int64) if n \
        else np.zeros(0, dtype=np.int64)
    coeff = rng.normal(0.0, 0.3, (n, NCOEFF_MAX)) * (np.arange(NCOEFF_MAX) < ncoeff[:, None])
    coeff[:, 0] = 10 ** (-0.4 * (np.asarray(truth['RMAG']) - 22.5))
    coeff[:, 1:] *= coeff[:, :1]
    status = np.asarray(fiberstatus, dtype=np.int64)
    nopix = np.asarray(npixels) == 0
    nodata = nopix | ((status & fibermask.BROKENFIBER) != 0)
    for arr, val in ((z, 0.0), (zerr, 0.0), (chi2, 0.0), (dchi2, 0.0), (coeff, 0.0)):
        arr[nodata] = val
    spectype[nodata], subtype[nodata] = 'GALAXY', ''
    # ZWARN from the values written, as Redrock (rrdesi) sets it: a spectrum without
    # data gets LITTLE_COVERAGE|NODATA (+ UNPLUGGED for a broken fibre), not
    # SMALL_DELTA_CHI2 although its DELTACHI2 is 0
    zwarn = np.where((dchi2 < params['small_deltachi2']) & ~nodata,
                     ZWARN_BITS['SMALL_DELTA_CHI2'], 0)
    badamp = sum(fibermask.mask(k) for k in ('BADAMPB', 'BADAMPR', 'BADAMPZ'))
    zwarn |= np.where(((status & badamp) != 0) | nopix, ZWARN_BITS['LITTLE_COVERAGE'], 0)
    zwarn |= np.where(nodata, ZWARN_BITS['NODATA'], 0)
    zwarn |= np.where(status & fibermask.BROKENFIBER, ZWARN_BITS['UNPLUGGED'], 0)
    out = Table()
    out['TARGETID'] = np.asarray(truth['TARGETID'], dtype=np.int64)
    out['CHI2'] = chi2.astype(np.float64)
    out['COEFF'] = coeff
    out['Z'] = z
    out['ZERR'] = zerr
    out['ZWARN'] = zwarn.astype(np.int64)
    out['NPIXELS'] = np.asarray(npixels, dtype=np.int64)
    out['SPECTYPE'] = spectype
    out['SUBTYPE'] = subtype
    out['NCOEFF'] = ncoeff
    out['DELTACHI2'] = dchi2
    out.meta['EXTNAME'] = 'REDSHIFTS'
    return out
