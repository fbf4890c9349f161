"""
lbgnet.preprocess
=================

Turn DESI spectra (several arms on 0.8 Å pixels) into the network input: one
linear grid of ``grid.nbins`` bins, two channels per bin.

* channel 0: rebinned flux, normalised per spectrum (inverse-variance weighted
  mean subtracted, divided by the inverse-variance weighted rms), 0 where a bin has
  no valid pixel;
* channel 1: signal-to-noise per bin, rebinned flux × √(summed ivar), 0 where a
  bin has no valid pixel.

A pixel is valid when ivar > 0, its mask is 0 (when a mask is given) and flux and
ivar are finite.  Everything here is pure numpy and vectorised over spectra; the
only I/O is :func:`load_coadd_grid`, which composes :func:`lbgnet.io.read_coadd`
with these functions.  See ``doc/preprocess.rst`` for the choices and why.
"""
from dataclasses import dataclass

import numpy as np

from .config import load_config
from .io import read_coadd

#: Number of channels of the network input (normalised flux, S/N).
NCHANNELS = 2


@dataclass
class GridInfo:
    """Per-spectrum information that goes with the gridded input.

    Attributes
    ----------
    targetid : numpy.ndarray or None
        TARGETID per spectrum, shape (nspec,), None when the file has no FIBERMAP.
    empty : numpy.ndarray of bool
        True for spectra without a single valid pixel on the grid, shape (nspec,).
    bands : tuple of str
        Bands (arms) present in the input.
    band_valid : numpy.ndarray of bool
        Shape (nspec, len(bands)): whether each arm has at least one valid pixel.
    nvalid_bins : numpy.ndarray of int
        Number of grid bins holding at least one valid pixel, shape (nspec,).
    """

    targetid: object
    empty: np.ndarray
    bands: tuple
    band_valid: np.ndarray
    nvalid_bins: np.ndarray


def bin_segments(wave, grid):
    """Map one arm's sorted pixels to grid bins as contiguous segments.

    Parameters
    ----------
    wave : numpy.ndarray
        Increasing pixel wavelengths of one arm, shape (nwave,), Å.
    grid : lbgnet.config.Grid

    Returns
    -------
    lo, hi : int
        Pixels ``lo:hi`` fall on the grid; the others are outside it.
    starts : numpy.ndarray of int
        Start of each run of pixels sharing a bin, relative to `lo` (for
        :func:`numpy.add.reduceat`).
    bins : numpy.ndarray of int
        The bin of each run.
    """
    idx = grid.bin_index(wave)
    inside = np.flatnonzero((idx >= 0) & (idx < grid.nbins))
    if inside.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return 0, 0, empty, empty
    lo, hi = int(inside[0]), int(inside[-1]) + 1
    sub = idx[lo:hi]
    starts = np.flatnonzero(np.concatenate(([True], sub[1:] != sub[:-1])))
    return lo, hi, starts, sub[starts]


def valid_weights(flux, ivar, mask=None):
    """Inverse-variance weights with invalid pixels set to zero.

    Parameters
    ----------
    flux, ivar : numpy.ndarray
        Shape (nspec, nwave).
    mask : numpy.ndarray, optional
        Same shape; pixels with a non-zero mask are invalid.

    Returns
    -------
    weight, weighted_flux : numpy.ndarray
        ``ivar`` and ``flux * ivar`` where valid, 0 elsewhere (float32).
    """
    valid = (ivar > 0) & np.isfinite(flux) & np.isfinite(ivar)
    if mask is not None:
        valid &= (mask == 0)
    weight = np.where(valid, ivar, 0).astype(np.float32, copy=False)
    weighted_flux = np.where(valid, flux * weight, 0).astype(np.float32, copy=False)
    return weight, weighted_flux


def rebin_arms(waves, fluxes, ivars, grid, masks=None):
    """Inverse-variance weighted rebinning of several arms onto the grid.

    Pixels of all arms falling into one bin are combined (b/r and r/z overlaps are
    added, not overwritten).

    Parameters
    ----------
    waves : sequence of numpy.ndarray
        One increasing wavelength array per arm, shape (nwave_a,), Å.
    fluxes, ivars : sequence of numpy.ndarray
        Flux and inverse variance per arm, shape (nspec, nwave_a).
    grid : lbgnet.config.Grid
    masks : sequence of (numpy.ndarray or None), optional
        Integer mask per arm; non-zero pixels carry no weight.

    Returns
    -------
    flux : numpy.ndarray
        Weighted mean flux per bin, shape (nspec, nbins), float64; 0 in empty bins.
    ivar : numpy.ndarray
        Summed inverse variance per bin, shape (nspec, nbins), float64.
    arm_valid : numpy.ndarray of bool
        Shape (nspec, narms): arm has at least one valid pixel on the grid.
    """
    nspec = fluxes[0].shape[0] if len(fluxes) else 0
    masks = [None] * len(waves) if masks is None else masks
    fsum = np.zeros((nspec, grid.nbins))
    isum = np.zeros((nspec, grid.nbins))
    arm_valid = np.zeros((nspec, len(waves)), dtype=bool)
    for iarm, (wave, flux, ivar, mask) in enumerate(zip(waves, fluxes, ivars, masks)):
        lo, hi, starts, bins = bin_segments(wave, grid)
        if hi == lo or nspec == 0:
            continue
        sub_mask = None if mask is None else mask[:, lo:hi]
        weight, weighted_flux = valid_weights(flux[:, lo:hi], ivar[:, lo:hi], sub_mask)
        arm_isum = np.add.reduceat(weight, starts, axis=1, dtype=np.float64)
        fsum[:, bins] += np.add.reduceat(weighted_flux, starts, axis=1, dtype=np.float64)
        isum[:, bins] += arm_isum
        arm_valid[:, iarm] = np.any(arm_isum > 0, axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):
        flux = np.where(isum > 0, fsum / isum, 0.0)
    return flux, isum, arm_valid


def normalise_flux(flux, ivar):
    """QuasarNET normalisation: subtract the weighted mean, divide by the weighted rms.

    Parameters
    ----------
    flux, ivar : numpy.ndarray
        Rebinned flux and summed ivar, shape (nspec, nbins).

    Returns
    -------
    numpy.ndarray
        Normalised flux, shape (nspec, nbins); exactly 0 where ivar == 0, and all 0 for
        a spectrum without valid bins.  A spectrum with constant flux keeps rms = 1.
    """
    wsum = ivar.sum(axis=1, keepdims=True)
    safe_wsum = np.where(wsum > 0, wsum, 1.0)
    mean = (flux * ivar).sum(axis=1, keepdims=True) / safe_wsum
    resid = flux - mean
    rms = np.sqrt((resid ** 2 * ivar).sum(axis=1, keepdims=True) / safe_wsum)
    rms = np.where(rms > 0, rms, 1.0)
    return np.where(ivar > 0, resid / rms, 0.0)


def signal_to_noise(flux, ivar):
    """S/N per bin: rebinned flux × √ivar (0 where ivar == 0)."""
    return flux * np.sqrt(ivar)


def grid_spectra(waves, fluxes, ivars, grid, masks=None):
    """Build the two-channel network input from per-arm spectra.

    Parameters
    ----------
    waves, fluxes, ivars, masks
        As in :func:`rebin_arms`.
    grid : lbgnet.config.Grid

    Returns
    -------
    X : numpy.ndarray
        Shape (nspec, nbins, 2), float32: normalised flux and S/N.
    arm_valid : numpy.ndarray of bool
        Shape (nspec, narms).
    nvalid_bins : numpy.ndarray of int
        Shape (nspec,).
    """
    flux, ivar, arm_valid = rebin_arms(waves, fluxes, ivars, grid, masks)
    X = np.empty(flux.shape + (NCHANNELS,), dtype=np.float32)
    X[..., 0] = normalise_flux(flux, ivar)
    X[..., 1] = signal_to_noise(flux, ivar)
    return X, arm_valid, np.count_nonzero(ivar > 0, axis=1)


def coadd_to_grid(coadd, grid):
    """Grid the spectra of a :class:`lbgnet.io.CoaddData`.

    Returns
    -------
    X : numpy.ndarray
        Shape (nspec, nbins, 2), float32.
    info : GridInfo
    """
    bands = coadd.bands
    X, arm_valid, nvalid = grid_spectra([coadd.wave[b] for b in bands],
                                        [coadd.flux[b] for b in bands],
                                        [coadd.ivar[b] for b in bands], grid,
                                        [coadd.mask[b] for b in bands])
    info = GridInfo(coadd.targetid, nvalid == 0, bands, arm_valid, nvalid)
    return X, info


def load_coadd_grid(path, config=None, read_fibermap=True):
    """Read a DESI coadd and return the network input.

    Parameters
    ----------
    path : str
        Coadd FITS file (healpix or tile, any subset of the b/r/z arms).
    config : lbgnet.config.Config, optional
        Configuration holding the grid [``lbgnet-base.yaml``].
    read_fibermap : bool, optional
        Read TARGETIDs from FIBERMAP when present [True].

    Returns
    -------
    X : numpy.ndarray
        Shape (nspec, nbins, 2), float32: normalised flux, S/N.
    info : GridInfo
        TARGETID (or None), empty-spectrum flags, bands present.

    Raises
    ------
    lbgnet.io.InputFileError
        For unreadable or inconsistent files (see :func:`lbgnet.io.read_coadd`).
    """
    config = load_config() if config is None else config
    coadd = read_coadd(path, read_fibermap=read_fibermap, read_extra=False)
    return coadd_to_grid(coadd, config.grid)
