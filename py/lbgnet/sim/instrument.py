"""
lbgnet.sim.instrument
=====================

A DESI-like spectrograph model: the three arms on their real pixel grids, a
Gaussian line-spread function per arm (:mod:`lbgnet.sim.lsf`, with the matching
desispec RESOLUTION data), and a noise model built from the sky (continuum plus
emission lines), the throughput and the read noise, scaled by an effective exposure
time.

Noise model, per 0.8 Å pixel and arm (flux unit F = 1e-17 erg/s/cm²/Å)::

    var(λ) = [ (F_obj + S_cont + a·S_lines) / G(λ) + RN² / G(λ)² ] · T_ref / T

where G(λ) is the number of electrons per pixel per flux unit at the reference
effective time T_ref (throughput, aperture and exposure folded in), S the sky in
the fibre, RN² the read-noise variance per pixel (e²) accumulated over the
exposures of T_ref.  Every term scales as 1/T because the number of exposures
grows with T.  The pipeline inverse variance is 1/var; the flux scatter is
``noise_excess`` times larger (real DESI coadds are slightly optimistic), plus a
sky-subtraction residual ``sky_residual · a·S_lines · N(0,1)`` at the sky lines that
the inverse variance does not know about (one random amplitude per line and
spectrum, i.e. a mis-scaled line profile, as sky-model errors are).  The parameters live in the
``instrument`` section of ``etc/lbgnet-mock.yaml`` and were fitted to a real DESI
coadd with :mod:`lbgnet.sim.calibrate`.

All functions are pure; randomness comes only through an ``rng`` argument.
"""
from dataclasses import dataclass

import numpy as np
from desiutil.log import get_logger

from ..config import ConfigError, arm_wavelengths
from .lsf import lsf_sigma, resolution_data, sky_line_spectrum

#: Sky-line residuals are drawn where sky_residual × lines > RESIDUAL_FLOOR × continuum.
RESIDUAL_FLOOR = 1e-3


@dataclass(frozen=True, eq=False)
class ArmModel:
    """Instrument model of one spectrograph arm.

    Attributes
    ----------
    band : str
        ``'b'``, ``'r'`` or ``'z'``.
    wave : numpy.ndarray
        Pixel centres, shape (nwave,), Å.
    lsf_sigma : numpy.ndarray
        Gaussian LSF σ per pixel, shape (nwave,), Å.
    gain : numpy.ndarray
        Electrons per pixel per 1e-17 erg/s/cm²/Å at the reference effective time,
        shape (nwave,).
    sky_cont, sky_lines : numpy.ndarray
        Sky continuum and LSF-convolved sky lines in the fibre, shape (nwave,),
        1e-17 erg/s/cm²/Å.
    read_var : float
        Read-noise variance per pixel at the reference effective time (e²).
    noise_excess : float
        True flux scatter / pipeline σ.
    sky_residual : float
        Fractional sky-subtraction residual of the sky lines.
    """

    band: str
    wave: np.ndarray
    lsf_sigma: np.ndarray
    gain: np.ndarray
    sky_cont: np.ndarray
    sky_lines: np.ndarray
    read_var: float
    noise_excess: float
    sky_residual: float

    @property
    def background_var(self):
        """Variance per pixel without object flux at the reference time, shape (nwave,)."""
        return (self.sky_cont + self.sky_lines) / self.gain + self.read_var / self.gain ** 2

    @property
    def residual_segments(self):
        """Pixels carrying sky-line residuals, grouped into lines.

        Returns
        -------
        pixels : numpy.ndarray of int
            Pixels where the scaled sky lines exceed :data:`RESIDUAL_FLOOR` × continuum.
        segment : numpy.ndarray of int
            Index of the (blended) line each of those pixels belongs to (runs of
            consecutive pixels).
        nsegment : int
        """
        pixels = np.flatnonzero(self.sky_residual * self.sky_lines
                                > RESIDUAL_FLOOR * self.sky_cont)
        if pixels.size == 0:
            return pixels, pixels, 0
        segment = np.concatenate([[0], np.cumsum(np.diff(pixels) > 1)])
        return pixels, segment, int(segment[-1]) + 1


@dataclass(frozen=True, eq=False)
class Instrument:
    """The spectrograph: one :class:`ArmModel` per band plus global settings.

    Attributes
    ----------
    arms : dict
        band -> :class:`ArmModel`, in wavelength order.
    efftime_ref : float
        Effective exposure time (s) at which the gain and read noise are given.
    ndiag : int
        Number of diagonals of the RESOLUTION data (odd).
    """

    arms: dict
    efftime_ref: float
    ndiag: int

    @property
    def bands(self):
        """Bands in wavelength order."""
        return tuple(self.arms)

    @property
    def waves(self):
        """band -> pixel wavelengths (Å)."""
        return {b: arm.wave for b, arm in self.arms.items()}


def _nodes(section, name, source):
    try:
        xs = np.asarray(section['wave'], dtype=np.float64)
        ys = np.asarray(section[name], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f'{source}: bad node table ({err!r})') from None
    if xs.ndim != 1 or xs.shape != ys.shape or xs.size < 2 or np.any(np.diff(xs) <= 0):
        raise ConfigError(f'{source}: node table needs >= 2 increasing wavelengths and '
                          f'as many values')
    return xs, ys


def build_instrument(config, sky_lines=None):
    """Build the :class:`Instrument` described by a configuration.

    Parameters
    ----------
    config : lbgnet.config.Config
        A configuration whose ``instrument`` section holds ``pixel``, ``arms``,
        ``resolution``, ``resolution_ndiag`` and ``noise`` (``etc/lbgnet-mock.yaml``).
    sky_lines : (numpy.ndarray, numpy.ndarray), optional
        Sky-line spectrum (wave Å, flux) as returned by
        :func:`lbgnet.io.skymodel.read_sky_lines`.  When omitted the sky has no
        emission lines (a warning is logged).

    Returns
    -------
    Instrument

    Raises
    ------
    lbgnet.config.ConfigError
        If a key is missing or a value is out of range.
    """
    log = get_logger()
    src = config.source or 'config'
    waves = arm_wavelengths(config)
    try:
        inst = config.extra['instrument']
        noise = inst['noise']
        ndiag = int(inst['resolution_ndiag'])
        efftime_ref = float(noise['efftime_ref'])
        cont_w, cont_f = _nodes(noise['sky_continuum'], 'flux', f'{src} sky_continuum')
        arms = {}
        for band, wave in waves.items():
            sigma = lsf_sigma(wave, inst['resolution'][band])
            gain_w, gain_v = _nodes(noise['gain'][band], 'value', f'{src} gain.{band}')
            gain = np.interp(wave, gain_w, gain_v)
            lines = np.zeros(wave.size) if sky_lines is None else \
                float(noise['sky_line_scale'][band]) * sky_line_spectrum(
                    sky_lines, wave, sigma, float(noise['sky_line_shift']),
                    float(noise['sky_line_sigma_factor']))
            arms[band] = ArmModel(band, wave, sigma, gain, np.interp(wave, cont_w, cont_f),
                                  lines, float(noise['read_noise_var'][band]),
                                  float(noise['noise_excess'][band]),
                                  float(noise['sky_residual'][band]))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f'{src}: missing or invalid instrument key ({err!r})') from None
    if efftime_ref <= 0 or any(np.any(a.gain <= 0) for a in arms.values()):
        raise ConfigError(f'{src}: efftime_ref and gains must be positive')
    if sky_lines is None:
        log.warning('instrument built without sky lines: no sky-line noise or residuals')
    return Instrument(arms, efftime_ref, ndiag)


def pipeline_variance(arm, model_flux, efftime, efftime_ref):
    """Variance per pixel that the pipeline would report (1/ivar).

    Parameters
    ----------
    arm : ArmModel
    model_flux : numpy.ndarray
        Noiseless object flux, LSF-convolved, shape (nspec, nwave), 1e-17 erg/s/cm²/Å.
    efftime : numpy.ndarray
        Effective exposure time per spectrum, shape (nspec,), s.
    efftime_ref : float
        Reference effective time of the gain and read noise (s).

    Returns
    -------
    numpy.ndarray
        Shape (nspec, nwave), float32, (1e-17 erg/s/cm²/Å)².
    """
    var = np.maximum(model_flux, 0.0, dtype=np.float32)
    var *= (1.0 / arm.gain).astype(np.float32)
    var += arm.background_var.astype(np.float32)
    var *= (efftime_ref / np.asarray(efftime, dtype=np.float64)).astype(np.float32)[:, None]
    return var


def observe_arm(arm, model_flux, efftime, efftime_ref, rng):
    """Noisy flux and inverse variance of one arm.

    Parameters
    ----------
    arm : ArmModel
    model_flux : numpy.ndarray
        Noiseless flux, shape (nspec, nwave), 1e-17 erg/s/cm²/Å.
    efftime : numpy.ndarray
        Shape (nspec,), s.
    efftime_ref : float
        s.
    rng : numpy.random.Generator

    Returns
    -------
    flux, ivar : numpy.ndarray
        Shape (nspec, nwave), float32.
    """
    var = pipeline_variance(arm, model_flux, efftime, efftime_ref)
    ivar = np.reciprocal(var)
    sigma = np.sqrt(var, out=var)
    sigma *= np.float32(arm.noise_excess)
    flux = rng.standard_normal(var.shape, dtype=np.float32)
    flux *= sigma
    flux += model_flux
    pix, segment, nseg = arm.residual_segments
    if nseg:
        # one residual amplitude per sky line and spectrum: a mis-scaled line profile
        amp = rng.standard_normal((var.shape[0], nseg), dtype=np.float32)
        flux[:, pix] += amp[:, segment] * (arm.sky_residual * arm.sky_lines[pix]).astype(np.float32)
    return flux, ivar


def observe(instrument, model_fluxes, efftime, rng):
    """Add noise to noiseless spectra of every arm.

    Parameters
    ----------
    instrument : Instrument
    model_fluxes : dict
        band -> noiseless LSF-convolved flux, shape (nspec, nwave_band).
    efftime : numpy.ndarray
        Effective exposure time per spectrum, shape (nspec,), s.
    rng : numpy.random.Generator

    Returns
    -------
    fluxes, ivars : dict
        band -> float32 arrays of shape (nspec, nwave_band).
    """
    efftime = np.asarray(efftime, dtype=np.float64)
    if np.any(efftime <= 0):
        raise ValueError('efftime must be positive')
    fluxes, ivars = {}, {}
    for band, arm in instrument.arms.items():
        fluxes[band], ivars[band] = observe_arm(arm, model_fluxes[band], efftime,
                                                instrument.efftime_ref, rng)
    return fluxes, ivars


def resolution_for(instrument, nspec):
    """RESOLUTION data for `nspec` spectra (the same LSF for all).

    Returns
    -------
    dict
        band -> float32 array of shape (nspec, ndiag, nwave), a broadcast view
        (read-only; copy before modifying).
    """
    out = {}
    for band, arm in instrument.arms.items():
        pixel = np.gradient(arm.wave)
        data = resolution_data(arm.lsf_sigma / pixel, instrument.ndiag)
        out[band] = np.broadcast_to(data[None], (nspec,) + data.shape)
    return out
