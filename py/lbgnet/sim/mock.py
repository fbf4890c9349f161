"""
lbgnet.sim.mock
===============

Compose the simulator into DESI-like mock data: population → noiseless spectra per
arm (through the LSF) → noise at a random effective exposure time → flux, ivar,
mask and resolution per arm, with a FIBERMAP, EXP_FIBERMAP, SCORES, a simulated
Redrock REDSHIFTS table and a truth table.  Pure functions (randomness through
``rng``); :mod:`lbgnet.io.mock` writes the result.
"""
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from desiutil.log import get_logger

from ..config import ConfigError
from .instrument import observe, resolution_for
from .rrmock import simulate_redrock


@dataclass(eq=False)
class MockData:
    """One batch of mock spectra with everything a coadd/redrock/truth file holds.

    Attributes
    ----------
    wave, flux, ivar, mask, model : dict
        band -> arrays; wave (nwave,) Å, the others (nspec, nwave); flux and model in
        1e-17 erg/s/cm²/Å (model: noiseless, through the LSF).
    resolution : dict or None
        band -> (nspec, ndiag, nwave) RESOLUTION data.
    truth, fibermap, exp_fibermap, scores, redshifts : astropy.table.Table
        One row per spectrum (EXP_FIBERMAP: one per exposure), same TARGETID order.
    meta : dict
        Primary-header keywords (HPXPIXEL, SURVEY, ...).
    """

    wave: dict
    flux: dict
    ivar: dict
    mask: dict
    model: dict
    resolution: object
    truth: Table
    fibermap: Table
    exp_fibermap: Table
    scores: Table
    redshifts: Table
    meta: dict

    @property
    def nspec(self):
        """Number of spectra."""
        return len(self.truth)


def mock_settings(config):
    """The ``mock`` and ``redrock_mock`` sections of a configuration, checked.

    Raises
    ------
    lbgnet.config.ConfigError
        If a section or one of its required keys is missing.
    """
    need = {'mock': ('efftime_range', 'efftime_per_exposure', 'exptime_per_efftime',
                     'dead_fibre_fraction',
                     'dead_arm_fraction', 'tsnr2_per_efftime', 'files', 'target_bits'),
            'redrock_mock': ('success', 'lbg', 'failure_mix', 'wrong_z', 'zerr', 'deltachi2',
                             'chi2_mismatch', 'ncoeff')}
    for section, keys in need.items():
        sec = config.extra.get(section)
        if not isinstance(sec, dict):
            raise ConfigError(f'{config.source}: no "{section}" section (use lbgnet-mock.yaml)')
        missing = [k for k in keys if k not in sec]
        if missing:
            raise ConfigError(f'{config.source}: {section} lacks {", ".join(missing)}')
    lo, hi = config.extra['mock']['efftime_range']
    if not 0 < lo <= hi:
        raise ConfigError(f'{config.source}: mock.efftime_range must satisfy 0 < min <= max')
    return config.extra['mock'], config.extra['redrock_mock']


def draw_efftime(n, efftime_range, rng):
    """Effective exposure times (s), uniform in `efftime_range`, shape (n,)."""
    lo, hi = (float(v) for v in efftime_range)
    return rng.uniform(lo, hi, n)


def fibre_failures(n, bands, dead_fraction, dead_arm_fraction, rng):
    """Broken fibres and dead arms.

    Returns
    -------
    fiberstatus : numpy.ndarray of int32
        COADD_FIBERSTATUS: BROKENFIBER for dead fibres, BADAMP<B|R|Z> for a dead arm.
    arm_dead : numpy.ndarray of bool
        Shape (n, narms): pixels of these arms get ivar = 0.
    """
    from desispec.maskbits import fibermask
    dead = rng.random(n) < dead_fraction
    one_arm = (rng.random(n) < dead_arm_fraction) & ~dead
    which = rng.integers(0, len(bands), n)
    arm_dead = dead[:, None] | (one_arm[:, None] & (which[:, None] == np.arange(len(bands))))
    status = np.where(dead, fibermask.BROKENFIBER, 0)
    for iarm, band in enumerate(bands):
        status |= np.where(one_arm & (which == iarm), fibermask.mask(f'BADAMP{band.upper()}'), 0)
    return status.astype(np.int32), arm_dead


def apply_failures(fluxes, ivars, masks, arm_dead):
    """Zero flux/ivar and set the mask of dead arms, in place."""
    from desispec.maskbits import specmask
    for iarm, band in enumerate(fluxes):
        rows = arm_dead[:, iarm]
        fluxes[band][rows] = 0.0
        ivars[band][rows] = 0.0
        masks[band][rows] = specmask.BADFIBER


def render_arms(truth, instrument, rng, templates=None, render=None):
    """Noiseless spectra on each arm's pixels, through that arm's LSF.

    Parameters
    ----------
    truth : astropy.table.Table
        From :func:`lbgnet.sim.population.draw_population`.
    instrument : lbgnet.sim.instrument.Instrument
    rng : numpy.random.Generator
    templates : optional
        Empirical inputs (:func:`lbgnet.io.templates.load_templates`).
    render : callable, optional
        ``render(truth, wave, rng, lsf_sigma=..., templates=...)``
        [:func:`lbgnet.sim.render.render_spectra`].

    Returns
    -------
    dict
        band -> float32 array (nspec, nwave), 1e-17 erg/s/cm²/Å.
    """
    if render is None:
        from .render import render_spectra as render
    return {band: np.asarray(render(truth, arm.wave, rng, lsf_sigma=arm.lsf_sigma,
                                    templates=templates), dtype=np.float32)
            for band, arm in instrument.arms.items()}


def noise_statistics(fluxes, models, ivars):
    """Per-spectrum χ² of the noise, χ² of the signal and number of valid pixels."""
    chi2_noise = sum(np.sum((fluxes[b] - models[b]) ** 2 * ivars[b], axis=1, dtype=np.float64)
                     for b in fluxes)
    signal = sum(np.sum(models[b] ** 2 * ivars[b], axis=1, dtype=np.float64) for b in fluxes)
    npix = sum(np.count_nonzero(ivars[b] > 0, axis=1) for b in fluxes)
    return chi2_noise, signal, npix


def simulate_spectra(truth, instrument, efftime, rng, templates=None, render=None):
    """Noiseless and noisy spectra of a truth table.

    Returns
    -------
    models, fluxes, ivars : dict
        band -> float32 (nspec, nwave).
    """
    models = render_arms(truth, instrument, rng, templates, render)
    fluxes, ivars = observe(instrument, models, efftime, rng)
    return models, fluxes, ivars


def make_mock(config, instrument, nspec, rng, pixel=0, population=None, templates=None,
              render=None, with_resolution=True):
    """Simulate one file's worth of mock spectra.

    Parameters
    ----------
    config : lbgnet.config.Config
        ``lbgnet-mock.yaml`` (or a file including it).
    instrument : lbgnet.sim.instrument.Instrument
    nspec : int
    rng : numpy.random.Generator
    pixel : int, optional
        Healpix pixel (nested, nside ``mock.files.nside``) holding the targets; also the
        brick id of their TARGETIDs [0].
    population : dict, optional
        Keyword arguments of :func:`lbgnet.sim.population.draw_population`
        (``classes``, ``zrange``, ``rmag_range``); ``efftime_range`` (s) overrides the
        configuration's.
    templates : optional
        Empirical inputs (:func:`lbgnet.io.templates.load_templates`).
    render : callable, optional
        Spectrum renderer (:func:`render_arms`).
    with_resolution : bool, optional
        Attach RESOLUTION data [True].

    Returns
    -------
    MockData
    """
    from .fibermap import make_exp_fibermap, make_fibermap, make_scores
    from .population import draw_population
    log = get_logger()
    mockcfg, rrcfg = mock_settings(config)
    population = dict(population or {})
    efftime_range = population.pop('efftime_range', None) or mockcfg['efftime_range']
    truth = draw_population(config, nspec, rng, **population)
    efftime = draw_efftime(nspec, efftime_range, rng)
    models, fluxes, ivars = simulate_spectra(truth, instrument, efftime, rng, templates, render)
    masks = {b: np.zeros(f.shape, dtype=np.int32) for b, f in fluxes.items()}
    status, arm_dead = fibre_failures(nspec, instrument.bands, mockcfg['dead_fibre_fraction'],
                                      mockcfg['dead_arm_fraction'], rng)
    apply_failures(fluxes, ivars, masks, arm_dead)
    fibermap = make_fibermap(truth, instrument, models, status, efftime, pixel, mockcfg, rng)
    truth.add_column(fibermap['TARGETID'], name='TARGETID', index=0)
    truth['EFFTIME'] = efftime.astype(np.float32)
    exp_fibermap = make_exp_fibermap(fibermap, int(mockcfg['files']['tileid']))
    scores = make_scores(fibermap['TARGETID'], instrument, fluxes, ivars, efftime, mockcfg)
    chi2_noise, signal, npix = noise_statistics(fluxes, models, ivars)
    redshifts = simulate_redrock(truth, efftime, instrument.efftime_ref, npix, chi2_noise,
                                 signal, status, rrcfg, rng)
    files = mockcfg['files']
    meta = dict(SPGRP='healpix', SPGRPVAL=int(pixel), HPXPIXEL=int(pixel),
                HPXNSIDE=int(files['nside']), HPXNEST=True, SURVEY=str(files['survey']),
                PROGRAM=str(files['program']))
    resolution = resolution_for(instrument, nspec) if with_resolution else None
    log.debug('mock batch: %d spectra in healpix %d', nspec, pixel)
    return MockData(instrument.waves, fluxes, ivars, masks, models, resolution, truth,
                    fibermap, exp_fibermap, scores, redshifts, meta)
