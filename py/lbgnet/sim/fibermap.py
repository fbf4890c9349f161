"""
lbgnet.sim.fibermap
===================

DESI bookkeeping tables of mock spectra: the coadded FIBERMAP (TARGETID, position,
photometry, target bits, coadd summaries), the per-exposure EXP_FIBERMAP, and the
SCORES table (desispec's flux/S/N scores and TSNR2_* columns).  Pure functions.
"""
import numpy as np
from astropy.table import Table

from ..config import ConfigError

#: Top-hat stand-ins of the Legacy Surveys g, r, z filters (Å), for mock colours.
BROADBANDS = {'G': (4000.0, 5500.0), 'R': (5650.0, 7100.0), 'Z': (8500.0, 9800.0)}
#: DESI coadd FIBERMAP: MORPHTYPE given to point-like classes (others get 'REX').
POINT_CLASSES = ('QSO', 'STAR')
#: MJD of the first mock exposure: 2023-01-02 03:00 UTC, i.e. 20:00 MST (Kitt Peak) in the
#: night of 2023-01-01, as DESI dates its nights (desispec.util.mjd2night, the local date at
#: noon before the exposure); the next exposures of the night follow every 0.05 d.
MJD0 = 59946.125
#: The night of :data:`MJD0` (YYYY-MM-DD) and how many exposures a mock target gets per
#: night (EXP_FIBERMAP NIGHT / MJD, FIBERMAP COADD_NUMNIGHT).
FIRST_NIGHT = '2023-01-01'
EXPOSURES_PER_NIGHT = 3
#: Reference epoch of the (zero) proper motions, as in Legacy Surveys DR9.
REF_EPOCH = 2015.5


def make_targetids(n, brickid, release, first_objid=0):
    """DESI TARGETIDs with the mock bit set (desitarget.targets.encode_targetid).

    Parameters
    ----------
    n : int
    brickid : int
        Stored in the BRICKID field (we use the healpix pixel).
    release : int
        Legacy Surveys release number field.
    first_objid : int, optional
        OBJID of the first target.
    """
    from desitarget.targets import encode_targetid
    objid = np.arange(first_objid, first_objid + n, dtype=np.int64)
    return np.asarray(encode_targetid(objid=objid, brickid=np.full(n, brickid),
                                      release=np.full(n, release), mock=1), dtype=np.int64)


def positions_in_pixel(n, nside, pixel, rng):
    """Uniform random (RA, Dec) in degrees inside one nested healpix pixel."""
    import healpy
    corners = healpy.boundaries(nside, pixel, step=4, nest=True)
    theta, phi = healpy.vec2ang(corners.T)
    zmin, zmax = np.cos(theta.max()), np.cos(theta.min())
    phis = np.unwrap(phi)
    ra, dec = np.zeros(0), np.zeros(0)
    while ra.size < n:
        m = 4 * (n - ra.size) + 16
        cz = rng.uniform(zmin, zmax, m)
        ph = rng.uniform(phis.min(), phis.max(), m)
        inside = healpy.ang2pix(nside, np.arccos(cz), ph, nest=True) == pixel
        ra = np.concatenate([ra, np.degrees(ph[inside]) % 360.0])
        dec = np.concatenate([dec, 90.0 - np.degrees(np.arccos(cz[inside]))])
    return ra[:n], dec[:n]


def photsys_of(ra, dec):
    """Legacy Surveys photometric system of positions: 'N' (BASS/MzLS) or 'S' (DECaLS).

    'N' where desitarget resolves targets to the northern imaging: Dec at or above
    ``desitarget.io.desitarget_resolve_dec()`` (32.375°) north of the Galactic plane.
    :func:`desitarget.targets.resolve` itself decides, so that real DESI's resolution
    keeps every mock target.

    Parameters
    ----------
    ra, dec : numpy.ndarray
        Degrees, shape (n,).

    Returns
    -------
    numpy.ndarray of str
        Shape (n,), dtype U1.
    """
    from desitarget.targets import resolve
    n = np.size(ra)
    probe = np.zeros(n, dtype=[('RA', 'f8'), ('DEC', 'f8'), ('PHOTSYS', 'U1'), ('ROW', 'i8')])
    probe['RA'], probe['DEC'], probe['PHOTSYS'] = ra, dec, 'N'
    probe['ROW'] = np.arange(n)
    out = np.full(n, 'S', dtype='U1')
    if n:
        out[resolve(probe)['ROW']] = 'N'          # the 'N' rows resolve keeps
    return out


def synthetic_fluxes(instrument, models, rmag):
    """g, r, z fluxes (nanomaggies): r from RMAG, g and z from the spectrum's colours.

    Objects without flux in the R window (e.g. an LBG whose Lyman limit is redder than
    it, z > 6.8) have no colour to scale by: their g and z fluxes are 0.

    Returns
    -------
    dict
        'G', 'R', 'Z' -> float32 arrays (nspec,).
    """
    fnu, positive = {}, {}
    for name, (lo, hi) in BROADBANDS.items():
        num = np.zeros(len(rmag))
        den = 0.0
        for band, arm in instrument.arms.items():
            sel = (arm.wave >= lo) & (arm.wave < hi)
            num += np.sum(models[band][:, sel] * arm.wave[sel], axis=1)
            den += np.sum(1.0 / arm.wave[sel])
        positive[name] = num > 0
        fnu[name] = np.maximum(num / max(den, 1e-30), 1e-6 * np.abs(num).max(initial=1e-30) + 1e-30)
    rflux = 10 ** (-0.4 * (np.asarray(rmag, dtype=np.float64) - 22.5))
    return {k: np.where(positive['R'] | (k == 'R'), rflux * fnu[k] / fnu['R'],
                        0.0).astype(np.float32) for k in BROADBANDS}


def target_bits(names_by_column, n):
    """Target-bit columns from bit names, e.g. {'DESI_TARGET': ['SCND_ANY']}."""
    from desitarget.targetmask import bgs_mask, desi_mask, mws_mask, scnd_mask
    masks = dict(DESI_TARGET=desi_mask, BGS_TARGET=bgs_mask, MWS_TARGET=mws_mask,
                 SCND_TARGET=scnd_mask)
    out = {}
    for col, mask in masks.items():
        value = 0
        for name in names_by_column.get(col, []) or []:
            try:
                value |= int(mask.mask(name))
            except (KeyError, AttributeError, ValueError):
                raise ConfigError(f'unknown {col} bit {name!r}') from None
        out[col] = np.full(n, value, dtype=np.int64)
    return out


def exposures_per_target(efftime, efftime_per_exposure):
    """Number of exposures of each target: EFFTIME / nominal exposure, at least 1."""
    return np.maximum(1, np.round(np.asarray(efftime) / efftime_per_exposure)).astype(np.int64)


def make_fibermap(truth, instrument, models, fiberstatus, efftime, pixel, mockcfg, rng):
    """Coadded FIBERMAP of mock targets (one row per spectrum, truth order).

    Parameters
    ----------
    truth : astropy.table.Table
        CLASS and RMAG per target.
    instrument : lbgnet.sim.instrument.Instrument
    models : dict
        band -> noiseless flux (nspec, nwave), for the g−r and r−z colours.
    fiberstatus : numpy.ndarray of int
        COADD_FIBERSTATUS.
    efftime : numpy.ndarray
        s, shape (nspec,).
    pixel : int
        Healpix pixel (nested).
    mockcfg : dict
        ``mock`` configuration section.
    rng : numpy.random.Generator

    Returns
    -------
    astropy.table.Table
    """
    n = len(truth)
    files = mockcfg['files']
    nexp = exposures_per_target(efftime, mockcfg['efftime_per_exposure'])
    ra, dec = positions_in_pixel(n, int(files['nside']), int(pixel), rng)
    point = np.isin(np.asarray(truth['CLASS']).astype(str), POINT_CLASSES)
    fluxes = synthetic_fluxes(instrument, models, truth['RMAG'])
    fm = Table()
    fm['TARGETID'] = make_targetids(n, int(pixel), int(files['release']))
    fm['COADD_FIBERSTATUS'] = np.asarray(fiberstatus, dtype=np.int32)
    fm['TARGET_RA'], fm['TARGET_DEC'] = ra, dec
    fm['PMRA'] = np.zeros(n, dtype=np.float32)
    fm['PMDEC'] = np.zeros(n, dtype=np.float32)
    fm['REF_EPOCH'] = np.full(n, REF_EPOCH, dtype=np.float32)
    fm['OBJTYPE'] = np.full(n, 'TGT', dtype='U3')
    fm['RELEASE'] = np.full(n, int(files['release']), dtype=np.int16)
    fm['BRICKID'] = np.full(n, int(pixel), dtype=np.int32)
    fm['BRICK_OBJID'] = np.arange(n, dtype=np.int32)
    fm['MORPHTYPE'] = np.where(point, 'PSF', 'REX').astype('U4')
    for band in BROADBANDS:
        fm[f'FLUX_{band}'] = fluxes[band]
    fm['PHOTSYS'] = photsys_of(ra, dec)
    for col, val in target_bits(mockcfg['target_bits'], n).items():
        fm[col] = val
    fm['COADD_NUMEXP'] = nexp.astype(np.int16)
    fm['COADD_EXPTIME'] = (efftime * float(mockcfg['exptime_per_efftime'])).astype(np.float32)
    fm['COADD_NUMNIGHT'] = ((nexp + EXPOSURES_PER_NIGHT - 1)
                            // EXPOSURES_PER_NIGHT).astype(np.int16)   # as make_exp_fibermap
    fm['COADD_NUMTILE'] = np.ones(n, dtype=np.int16)
    fm['MEAN_FIBER_RA'], fm['MEAN_FIBER_DEC'] = ra, dec
    fm.meta['EXTNAME'] = 'FIBERMAP'
    return fm


def yyyymmdd(dates):
    """DESI NIGHT integers (YYYYMMDD) of numpy datetime64[D] dates (any shape, also empty)."""
    months = dates.astype('datetime64[M]')
    year = dates.astype('datetime64[Y]').astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (dates - months).astype(np.int64) + 1
    return (10000 * year + 100 * month + day).astype(np.int32)


def make_exp_fibermap(fibermap, tileid):
    """Per-exposure EXP_FIBERMAP consistent with COADD_NUMEXP and COADD_EXPTIME.

    Exposures are numbered 0, 1, … per target, three per night, all on tile `tileid`.
    """
    nexp = np.asarray(fibermap['COADD_NUMEXP'], dtype=np.int64)
    rows = np.repeat(np.arange(len(fibermap)), nexp)
    first = np.cumsum(nexp) - nexp
    iexp = np.arange(rows.size) - first[rows]
    exptime = np.asarray(fibermap['COADD_EXPTIME'], dtype=np.float64)[rows] / nexp[rows]
    ex = Table()
    ex['TARGETID'] = np.asarray(fibermap['TARGETID'])[rows]
    night = iexp // EXPOSURES_PER_NIGHT
    dates = np.datetime64(FIRST_NIGHT) + night.astype('timedelta64[D]')
    ex['NIGHT'] = yyyymmdd(dates)
    ex['EXPID'] = (100000 + iexp).astype(np.int32)
    ex['MJD'] = MJD0 + night + 0.05 * (iexp % EXPOSURES_PER_NIGHT)
    ex['TILEID'] = np.full(rows.size, tileid, dtype=np.int32)
    ex['EXPTIME'] = exptime
    ex['PETAL_LOC'] = (rows % 10).astype(np.int16)
    ex['DEVICE_LOC'] = (rows // 10 % 500).astype(np.int32)
    ex['LOCATION'] = (1000 * ex['PETAL_LOC'] + ex['DEVICE_LOC']).astype(np.int64)
    ex['FIBER'] = (500 * ex['PETAL_LOC'] + ex['DEVICE_LOC']).astype(np.int32)
    ex['FIBERSTATUS'] = np.asarray(fibermap['COADD_FIBERSTATUS'])[rows]
    ex['FIBER_RA'] = np.asarray(fibermap['TARGET_RA'])[rows]
    ex['FIBER_DEC'] = np.asarray(fibermap['TARGET_DEC'])[rows]
    ex.meta['EXTNAME'] = 'EXP_FIBERMAP'
    return ex


def make_scores(targetid, instrument, fluxes, ivars, efftime, mockcfg):
    """SCORES: desispec's per-arm flux and S/N scores plus TSNR2_<TRACER> columns.

    TSNR2 is proportional to EFFTIME for faint targets; the factors (median
    TSNR2/EFFTIME of DESI dark exposures, desispec/data/tsnr/tsnr_refset_etc.csv)
    are in ``mock.tsnr2_per_efftime``.  desispec sums TSNR2 over the pixels with
    ivar > 0, so a spectrum without any (a dead fibre) gets TSNR2 = 0.  A spectrum with
    one dead arm keeps the full value: the share of each arm depends on the tracer's
    TSNR2 template (desispec's ensembles, not part of the mock), so this overestimates
    its TSNR2 by that arm's share.
    """
    from types import SimpleNamespace

    from desispec.specscore import compute_frame_scores
    scores = Table()
    scores['TARGETID'] = np.asarray(targetid, dtype=np.int64)
    for band, arm in instrument.arms.items():
        # compute_frame_scores reads only wave, flux, ivar and meta of its frame
        frame = SimpleNamespace(wave=arm.wave, flux=fluxes[band], ivar=ivars[band].copy(),
                                meta={'BUNIT': '10**-17 erg/(s cm2 Angstrom)'})
        vals, _ = compute_frame_scores(frame, band=band, suffix='COADD', flux_per_angstrom=True)
        for key in sorted(vals):
            scores[key] = np.asarray(vals[key], dtype=np.float32)
    live = np.zeros(len(scores), dtype=bool)
    for ivar in ivars.values():
        live |= np.any(np.asarray(ivar) > 0, axis=1)
    depth = np.where(live, np.asarray(efftime, dtype=np.float64), 0.0)
    for tracer, factor in mockcfg['tsnr2_per_efftime'].items():
        scores[f'TSNR2_{tracer.upper()}'] = (float(factor) * depth).astype(np.float32)
    scores.meta['EXTNAME'] = 'SCORES'
    return scores
