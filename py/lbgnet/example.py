"""
lbgnet.example
==============

A small built-in example: a handful of DESI-like spectra (three arms, real pixel
grids, Gaussian noise at the per-arm levels measured on a real DESI dark-time coadd)
so that the commands can be run end to end on a fresh machine without any data.

The spectra are simple: a power-law UV continuum, for the "LBG" rows a Lyα line,
mean Lyα-forest absorption below Lyα and no flux below the Lyman limit; for the
other rows a featureless continuum.  The full simulator is :mod:`lbgnet.sim`.
"""
import numpy as np

from .config import arm_wavelengths

#: Median noise per 0.8 Å pixel of a real DESI dark-time coadd, per arm
#: (1e-17 erg/s/cm²/Å; ../shared/reference/desi-coadd, see its README).
ARM_SIGMA = {'b': 0.24, 'r': 0.10, 'z': 0.08}

LYA = 1215.67
LYMAN_LIMIT = 911.75


def example_spectra(config, nspec, rng):
    """Noisy example spectra on the DESI arm grids.

    Parameters
    ----------
    config : lbgnet.config.Config
        Supplies the arm grids.
    nspec : int
        Number of spectra; every other one is an LBG-like spectrum.
    rng : numpy.random.Generator

    Returns
    -------
    wave, flux, ivar : dict
        band -> arrays of shape (nwave,) and (nspec, nwave).
    z : numpy.ndarray
        Redshift per spectrum (NaN for the featureless ones), shape (nspec,).
    """
    wave = arm_wavelengths(config)
    is_lbg = np.arange(nspec) % 2 == 0
    z = np.where(is_lbg, rng.uniform(2.2, 4.2, nspec), np.nan)
    amp = rng.uniform(0.3, 1.0, nspec)            # continuum at 5500 Å
    lya_ew = rng.uniform(-10.0, 60.0, nspec)      # rest-frame EW, Å
    flux, ivar = {}, {}
    for band, wav in wave.items():
        cont = amp[:, None] * (wav[None, :] / 5500.0) ** -2.0
        rest = wav[None, :] / (1.0 + np.nan_to_num(z, nan=0.0))[:, None]
        tau = 0.0018 * (wav[None, :] / LYA) ** 3.92
        trans = np.where(rest < LYA, np.exp(-tau), 1.0)
        trans = np.where(rest < LYMAN_LIMIT, 0.0, trans)
        sig_line = 3.0
        line = np.exp(-0.5 * ((rest - LYA) / sig_line) ** 2) / (np.sqrt(2 * np.pi) * sig_line)
        # emission adds to the transmitted continuum; absorption removes a fraction of it,
        # at most 90 % (subtracting an EW < -6.8 Å profile would go below zero)
        profile = lya_ew[:, None] * line
        model = cont * np.where(profile < 0, trans * (1 + np.maximum(profile, -0.9)),
                                trans + profile)
        model = np.where(is_lbg[:, None], model, cont)
        sigma = ARM_SIGMA[band]
        flux[band] = (model + rng.normal(0.0, sigma, model.shape)).astype(np.float32)
        ivar[band] = np.full(model.shape, 1.0 / sigma ** 2, dtype=np.float32)
    return wave, flux, ivar, z
