"""
lbgnet.sim.components
=====================

The common form every class model (LBG, QSO, galaxy, star) is reduced to before
rendering: a rest-frame continuum function, a table of Gaussian lines (rest centre,
rest sigma, rest equivalent width) and, for high-redshift sources, the intergalactic
transmission parameters.  :func:`evaluate` turns it into fluxes on any grid.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import igm
from .profiles import add_gaussian_lines

#: Speed of light (km/s).
C_KMS = 299792.458


@dataclass
class Components:
    """Physical description of a batch of objects of one class.

    Attributes
    ----------
    z : numpy.ndarray
        Redshift of the rest frame of the continuum and lines, shape (nspec,).
    continuum : callable
        ``continuum(rest)`` -> f_λ (arbitrary units) at rest wavelengths ``rest`` (Å),
        float32 array of shape (nspec, m) -> (nspec, m).
    line_rest, line_sigma, line_ew : numpy.ndarray
        Shape (nspec, nlines): rest-frame centre (Å, velocity offsets included),
        intrinsic Gaussian sigma (Å, rest) and rest equivalent width (Å; > 0 emission)
        relative to ``continuum`` at the line centre.  EW 0 = absent.
    igm_scale, igm_seed, tau_ll : numpy.ndarray or None
        Shape (nspec,): IGM optical-depth factor, per-object forest seed and Lyman-limit
        optical depth (``inf``: black).  ``igm_scale`` None means no IGM (low z sources).
    """

    z: np.ndarray
    continuum: Callable
    line_rest: np.ndarray
    line_sigma: np.ndarray
    line_ew: np.ndarray
    igm_scale: Optional[np.ndarray] = None
    igm_seed: Optional[np.ndarray] = None
    tau_ll: Optional[np.ndarray] = None


def cap_depth(ew, sigma, depth_max):
    """Widen absorption lines so that their intrinsic depth stays below `depth_max`.

    A Gaussian absorption line of rest EW W < 0 and sigma s is abs(W) / (s √(2π)) deep;
    saturated lines grow in width (damping wings, velocity spread) rather than below
    zero flux, so s is raised to abs(W) / (√(2π) depth_max) where needed.  EW is unchanged.
    """
    ew = np.asarray(ew, dtype=np.float64)
    return np.where(ew < 0, np.maximum(sigma, -ew / (np.sqrt(2 * np.pi) * depth_max)), sigma)


def lsf_at(lsf_sigma, wave, where):
    """Instrumental sigma (Å) at wavelengths `where`; 0 when `lsf_sigma` is None."""
    if lsf_sigma is None:
        return np.zeros(np.shape(where))
    lsf = np.asarray(lsf_sigma, dtype=np.float64)
    if lsf.ndim == 0:
        return np.full(np.shape(where), float(lsf))
    if lsf.shape != np.shape(wave):
        raise ValueError(f'lsf_sigma must be a scalar or shaped like wave {np.shape(wave)}, got {lsf.shape}')
    return np.interp(where, wave, lsf)


def evaluate(comp, wave, edges, lsf_sigma, igmcfg):
    """Unnormalised observed-frame spectra of one class batch on a grid.

    Parameters
    ----------
    comp : Components
    wave : numpy.ndarray
        Pixel centres (Å), shape (nwave,).
    edges : numpy.ndarray
        Pixel edges (Å), shape (nwave+1,).
    lsf_sigma : float, numpy.ndarray or None
        Instrumental Gaussian sigma (Å), added in quadrature to the line widths.
    igmcfg : dict
        ``simulation.igm`` section.

    Returns
    -------
    numpy.ndarray
        Shape (nspec, nwave), float32, ≥ 0.  Arbitrary scale; the line and continuum
        fluxes are mutually consistent (observed EW = rest EW × (1+z)).
    """
    zp1 = 1.0 + np.asarray(comp.z, dtype=np.float64)
    rest = (np.asarray(wave, dtype=np.float64)[None, :] / zp1[:, None]).astype(np.float32)
    flux = np.ascontiguousarray(comp.continuum(rest), dtype=np.float32)
    if comp.line_rest.size:
        cont_line = comp.continuum(comp.line_rest.astype(np.float32)).astype(np.float64)
        centre = comp.line_rest * zp1[:, None]
        sig_obs = np.hypot(comp.line_sigma * zp1[:, None], lsf_at(lsf_sigma, wave, centre))
        amp = comp.line_ew * zp1[:, None] * cont_line
        add_gaussian_lines(flux, edges, centre, sig_obs, amp)
    if comp.igm_scale is not None:
        flux *= igm.transmission(wave, comp.z, comp.igm_scale, comp.igm_seed, comp.tau_ll, igmcfg)
    np.maximum(flux, 0.0, out=flux)
    return flux
