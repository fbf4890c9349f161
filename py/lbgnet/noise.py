"""
lbgnet.noise
============

A calibrated noise model of DESI coadds: the scatter that the pipeline inverse variance
leaves out.

The instrument model of the simulator (:mod:`lbgnet.sim.instrument`, calibrated on a real
SV1 coadd: doc/sim_instrument.rst) finds the flux scatter of real coadds ``noise_excess``
times the pipeline σ (3–9 % above it, per arm) plus a sky-subtraction residual on the
sky lines, ``sky_residual`` × the sky-line flux, which the pipeline ivar does not include.
Per pixel the variance is then

    noise_excess² / ivar + σ_res²,

with the residual of one sky line shared (one amplitude) by all its pixels; on the 8 Å grid
:func:`lbgnet.preprocess.grid_noise_ivar` adds each line's residual coherently within a
bin.  Weighted by that, a χ² treats the scatter of the data as it deserves.  The template
refinement of the commands uses it by default (``--refine-noise calibrated``;
:data:`lbgnet.afterburner.DEFAULT_REFINE_NOISE`): its ``DELTACHI2_TPL`` then judges the
sky-line residuals as noise rather than as features (doc/afterburner.rst, *A calibrated
noise model*).  The network's input is not changed.

Pure numpy; :func:`load_noise_model` builds the model from the default simulator
configuration.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseModel:
    """Per-camera scatter excess and sky-residual variance.

    Attributes
    ----------
    excess : dict
        camera (``'b'``, ``'r'``, ``'z'``) -> flux scatter in units of the pipeline σ.
    wave : dict
        camera -> wavelengths (Å) on which `resid_var` is given, increasing.
    resid_var : dict
        camera -> variance of the sky-subtraction residuals, flux units², same shape as
        ``wave[camera]`` (0 away from the sky lines).
    resid_line : dict
        camera -> index of the sky line each pixel's residual belongs to (−1: none), same
        shape as ``wave[camera]``.  One line's residual is one amplitude times its profile
        √resid_var, shared by all its pixels (:func:`lbgnet.sim.instrument.observe_arm`).
    """
    excess: dict
    wave: dict
    resid_var: dict
    resid_line: dict

    @classmethod
    def from_instrument(cls, instrument):
        """The noise model of a :class:`lbgnet.sim.instrument.Instrument`."""
        excess, wave, resid, line = {}, {}, {}, {}
        for band, arm in instrument.arms.items():
            var = np.zeros(arm.wave.size)
            label = np.full(arm.wave.size, -1, dtype=np.int64)
            pix, segment, _ = arm.residual_segments
            var[pix] = (arm.sky_residual * arm.sky_lines[pix]) ** 2
            label[pix] = segment
            excess[band], wave[band], resid[band], line[band] = (float(arm.noise_excess),
                                                                 arm.wave, var, label)
        return cls(excess, wave, resid, line)

    def residual_profile(self, camera, wave):
        """Sky-line residual profile and line index at the pixels `wave` of one camera.

        Each pixel takes the model pixel nearest to it (within half a model pixel; else no
        residual), so coadds on DESI's standard wavelength grid get the model's values
        exactly.

        Returns
        -------
        amp : numpy.ndarray
            √resid_var at each pixel, shape (nwave,).
        line : numpy.ndarray of int
            Line index (−1: no residual), shape (nwave,).
        """
        mwave = self.wave[camera]
        idx = np.clip(np.searchsorted(mwave, wave), 1, mwave.size - 1)
        idx -= (wave - mwave[idx - 1]) < (mwave[idx] - wave)
        step = np.median(np.diff(mwave))
        near = np.abs(mwave[idx] - wave) <= 0.5 * step
        amp = np.where(near, np.sqrt(self.resid_var[camera][idx]), 0.0)
        line = np.where(near & (amp > 0), self.resid_line[camera][idx], -1)
        return amp, line

    def effective_ivar(self, camera, wave, ivar):
        """Inverse of the calibrated variance of the pixels of one camera.

        Parameters
        ----------
        camera : str
            ``'b'``, ``'r'`` or ``'z'`` (a camera-coadded ``brz`` spectrum is split into
            cameras by :func:`lbgnet.preprocess.camera_pieces`, so each overlap pixel
            takes the model of the camera its side of the cut belongs to).
        wave : numpy.ndarray
            Pixel wavelengths (Å), shape (nwave,); each takes the residual variance of the
            nearest model pixel (:meth:`residual_profile`).
        ivar : numpy.ndarray
            Pipeline inverse variance, shape (nspec, nwave).

        Returns
        -------
        numpy.ndarray
            Shape (nspec, nwave), float64; 0 where `ivar` is not positive and finite.

        Raises
        ------
        KeyError
            Unknown camera.
        """
        resid = self.residual_profile(camera, wave)[0] ** 2
        ivar = np.asarray(ivar, dtype=np.float64)
        good = np.isfinite(ivar) & (ivar > 0)
        var = self.excess[camera] ** 2 / np.where(good, ivar, 1.0) + resid[None, :]
        return np.where(good, 1.0 / var, 0.0)


def load_noise_model():
    """The noise model of the default simulator configuration (``lbgnet-mock.yaml``).

    Returns
    -------
    NoiseModel
    """
    from .sim.mock import load_mock_setup
    return NoiseModel.from_instrument(load_mock_setup().instrument)
