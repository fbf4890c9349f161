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

A pixel is valid when ivar > 0, its mask is 0 (when a mask is given), flux and
ivar are finite and its S/N abs(flux)·√ivar is at most :data:`MAX_PIXEL_SNR`.
Everything here is pure computation (numpy, with small numba kernels for the
per-pixel passes) without loops over spectra in Python; the
only I/O is :func:`load_coadd_grid`, which composes :func:`lbgnet.io.read_coadd`
with these functions.  See ``doc/preprocess.rst`` for the choices and why.
"""
from dataclasses import dataclass

import numba
import numpy as np

from .config import load_config
from .io import read_coadd

#: Number of channels of the network input (normalised flux, S/N).
NCHANNELS = 2

#: Largest abs(flux)·√ivar of a valid pixel.  A DESI pixel stays below about 1e4 (a full CCD
#: well, ~1.5e5 electrons, in each of a hundred exposures); a larger value is a corrupt
#: pixel, and values near the float32 limit (e.g. flux ~3e38) would overflow the S/N
#: channel and turn the network's output into NaN.  Such pixels carry no weight.
MAX_PIXEL_SNR = 1e6
#: Bound on the magnitude of the normalised-flux channel.  Valid pixels keep the S/N
#: channel finite, but a bin of tiny (corrupt, denormal) ivar can still sit 10⁴⁰ rms from
#: the mean and overflow float32; real spectra stay within a few hundred.
MAX_NORM_FLUX = 1e6


def _compiled(func):
    """``numba.njit(nogil=True)``, with numba's on-disk cache when it has a place for it.

    numba refuses ``cache=True`` at import time when neither the package directory nor
    ``$HOME`` (nor ``$NUMBA_CACHE_DIR``) is writable, e.g. a shared read-only install run
    with a read-only home in a container: the functions are then compiled in each process
    (about a second) instead of every command failing on import.
    """
    try:
        return numba.njit(cache=True, nogil=True)(func)
    except RuntimeError:
        return numba.njit(nogil=True)(func)


def usable_pixels(flux, ivar):
    """The pixel rule of :func:`accumulate_arms`, masks aside, vectorised.

    Parameters
    ----------
    flux, ivar : numpy.ndarray
        Same shape.

    Returns
    -------
    numpy.ndarray of bool
        ivar > 0, flux·ivar finite and abs(flux)·√ivar ≤ :data:`MAX_PIXEL_SNR`.
    """
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    with np.errstate(invalid='ignore', over='ignore'):
        return ((ivar > 0) & np.isfinite(flux * ivar)
                & (flux * flux * ivar <= MAX_PIXEL_SNR ** 2))


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
    flux, ivar : numpy.ndarray or None
        The rebinned spectrum (:func:`rebin_arms`), shape (nspec, nbins), float64, for
        fits on the grid (:mod:`lbgnet.refine`); None when not kept.
    noise_ivar : numpy.ndarray or None
        The grid ivar under a calibrated noise model (:func:`coadd_to_grid` with a
        :class:`lbgnet.noise.NoiseModel`), for the refinement's χ²; None otherwise.
    """

    targetid: object
    empty: np.ndarray
    bands: tuple
    band_valid: np.ndarray
    nvalid_bins: np.ndarray
    flux: np.ndarray = None
    ivar: np.ndarray = None
    noise_ivar: np.ndarray = None


@_compiled
def _pixel_ok(value, weight, masked, max_snr2):
    """The validity test of one pixel (compiled; see :func:`_accumulate`)."""
    weighted = value * weight
    flux = np.float64(value)
    return (weight > 0.0 and np.isfinite(weighted) and flux * flux * np.float64(weight) <= max_snr2
            and not masked)


@_compiled
def _accumulate(flux, ivar, mask, use_mask, seg_start, seg_bin, fsum, isum, nvalid,
                max_snr2, wsum, factor, use_factor):
    """Add one arm's pixels into the per-bin sums (compiled, one pass).

    Pixels ``seg_start[j]:seg_start[j+1]`` fall into bin ``seg_bin[j]``.  A pixel counts
    when ivar > 0 (false for NaN), its mask is 0 (when `use_mask`), flux × ivar is
    finite in the arrays' precision (false for NaN/inf flux or infinite ivar) and
    flux² × ivar ≤ `max_snr2` in float64 (:func:`usable_pixels`).  `nvalid` (nspec,) counts the valid pixels of
    each spectrum.  With `use_factor`, `factor` × the arm's Σivar of each bin is added
    to `wsum` too.
    """
    for s in range(flux.shape[0]):
        flux_row = flux[s]
        ivar_row = ivar[s]
        mask_row = mask[s] if use_mask else mask[0]
        count = 0
        for j in range(seg_bin.size):
            facc = 0.0
            wacc = 0.0
            for p in range(seg_start[j], seg_start[j + 1]):
                weight = ivar_row[p]
                if _pixel_ok(flux_row[p], weight, use_mask and mask_row[p] != 0, max_snr2):
                    facc += flux_row[p] * weight
                    wacc += weight
                    count += 1
            fsum[s, seg_bin[j]] += facc
            isum[s, seg_bin[j]] += wacc
            if use_factor:
                wsum[s, seg_bin[j]] += factor * wacc
        nvalid[s] += count


@_compiled
def _coherent(flux, ivar, mask, use_mask, pix, amp, run_start, run_bin, out, max_snr2):
    """Add (Σ_run ivar · amp)² over the valid pixels of each run into its bin (compiled).

    Run j is the pixels ``pix[run_start[j]:run_start[j+1]]`` (indices into the arm) and
    lies in bin ``run_bin[j]``; ``amp[k]`` is the factor of pixel ``pix[k]``.  Validity is
    that of :func:`_accumulate`.
    """
    for s in range(flux.shape[0]):
        flux_row = flux[s]
        ivar_row = ivar[s]
        mask_row = mask[s] if use_mask else mask[0]
        for j in range(run_bin.size):
            acc = 0.0
            for k in range(run_start[j], run_start[j + 1]):
                p = pix[k]
                weight = ivar_row[p]
                if _pixel_ok(flux_row[p], weight, use_mask and mask_row[p] != 0, max_snr2):
                    acc += np.float64(weight) * amp[k]
            out[s, run_bin[j]] += acc * acc


def pixel_segments(wave, grid):
    """Runs of consecutive pixels of one arm that share a grid bin.

    Parameters
    ----------
    wave : numpy.ndarray
        Increasing pixel wavelengths of one arm, shape (nwave,), Å.
    grid : lbgnet.config.Grid

    Returns
    -------
    seg_start : numpy.ndarray of int
        Shape (nseg+1,): run j is pixels ``seg_start[j]:seg_start[j+1]``.
    seg_bin : numpy.ndarray of int
        Shape (nseg,): the bin of each run.  Pixels outside the grid are in no run.

    Raises
    ------
    ValueError
        If `wave` is not finite and strictly increasing.
    """
    wave = np.asarray(wave)
    if wave.ndim != 1 or not np.all(np.isfinite(wave)) or np.any(np.diff(wave) <= 0):
        # the compiled accumulation trusts the runs: a pixel out of order or NaN inside
        # them would be written to another bin, or outside the arrays
        raise ValueError('pixel wavelengths must be finite and strictly increasing')
    pixel_bin = grid.bin_index(wave)
    inside = np.flatnonzero((pixel_bin >= 0) & (pixel_bin < grid.nbins))
    if inside.size == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lo, hi = inside[0], inside[-1] + 1
    starts = lo + np.flatnonzero(np.diff(pixel_bin[lo:hi], prepend=-1) != 0)
    return np.append(starts, hi), pixel_bin[starts]


def accumulate_arms(waves, fluxes, ivars, grid, masks=None, max_snr=MAX_PIXEL_SNR,
                    arm_factors=None):
    """Per-bin sums Σ(ivar·flux) and Σivar over the valid pixels of several arms.

    Pixels of all arms falling into one bin are combined (b/r and r/z overlaps are
    added, not overwritten).  A pixel is valid when ivar > 0, its mask is 0, flux
    and ivar are finite and abs(flux)·√ivar ≤ :data:`MAX_PIXEL_SNR`
    (:func:`usable_pixels`); invalid pixels carry no weight.

    Parameters
    ----------
    waves : sequence of numpy.ndarray
        One increasing wavelength array per arm, shape (nwave_a,), Å.
    fluxes, ivars : sequence of numpy.ndarray
        Flux and inverse variance per arm, shape (nspec, nwave_a).
    grid : lbgnet.config.Grid
    masks : sequence of (numpy.ndarray or None), optional
        Integer mask per arm; non-zero pixels carry no weight.
    max_snr : float, optional
        The pixel S/N cut [:data:`MAX_PIXEL_SNR`]; ``np.inf`` when `fluxes` carry another
        quantity per pixel (a variance factor, NaN where the pixel is not valid), whose
        "S/N" means nothing.
    arm_factors : sequence of float, optional
        A factor c_a per arm: then also return Σ_a c_a Σivar_a per bin, the arms' summed
        ivar weighted by their factors (e.g. the white part of the noise model's
        variance, :func:`grid_noise_ivar`), from the same pass.

    Returns
    -------
    fsum, isum : numpy.ndarray
        Σ(ivar·flux) and Σivar per bin, shape (nspec, nbins), float64.
    arm_valid : numpy.ndarray of bool
        Shape (nspec, narms): arm has at least one valid pixel on the grid.
    weighted : numpy.ndarray
        Only with `arm_factors`: Σ_a c_a Σivar_a, shape (nspec, nbins), float64.

    Notes
    -----
    The per-pixel work is one compiled pass per arm (numba, already required by
    desispec and redrock): a multi-pass numpy
    version (validity masks, ``where``, ``reduceat``) was 5x slower, too slow for
    the "read + preprocess ≤ 2 × raw read" target (see doc/benchmarks.rst).
    """
    masks = [None] * len(waves) if masks is None else masks
    if not len(fluxes) == len(ivars) == len(masks) == len(waves):
        raise ValueError(f'{len(waves)} wavelength arrays but {len(fluxes)} flux, '
                         f'{len(ivars)} ivar and {len(masks)} mask arrays')
    if arm_factors is not None and len(arm_factors) != len(waves):
        raise ValueError(f'{len(waves)} wavelength arrays but {len(arm_factors)} arm factors')
    nspec = np.shape(fluxes[0])[0] if len(fluxes) and np.ndim(fluxes[0]) == 2 else 0
    fsum = np.zeros((nspec, grid.nbins))
    isum = np.zeros((nspec, grid.nbins))
    weighted = np.zeros((nspec, grid.nbins) if arm_factors is not None else (1, 1))
    arm_valid = np.zeros((nspec, len(waves)), dtype=bool)
    no_mask = np.zeros((1, 1), dtype=np.int32)
    for iarm, (wave, flux, ivar, mask) in enumerate(zip(waves, fluxes, ivars, masks)):
        flux, ivar, mask = _arm_arrays(iarm, np.shape(wave)[0], nspec, flux, ivar, mask)
        seg_start, seg_bin = pixel_segments(wave, grid)
        if seg_bin.size == 0 or nspec == 0:
            continue
        nvalid = np.zeros(nspec, dtype=np.int64)
        _accumulate(flux, ivar, no_mask if mask is None else mask, mask is not None,
                    seg_start, seg_bin, fsum, isum, nvalid, float(max_snr) ** 2, weighted,
                    0.0 if arm_factors is None else float(arm_factors[iarm]),
                    arm_factors is not None)
        arm_valid[:, iarm] = nvalid > 0
    if arm_factors is not None:
        return fsum, isum, arm_valid, weighted
    return fsum, isum, arm_valid


def _arm_arrays(iarm, nwave, nspec, *arrays):
    """Native-order, C-contiguous copies of one arm's (flux, ivar, mask), checked to
    have shape (nspec, nwave): the compiled pass reads them without bounds checks."""
    out = []
    for name, arr in zip(('flux', 'ivar', 'mask'), arrays):
        if arr is None:
            out.append(None)
            continue
        arr = np.asarray(arr)
        if arr.ndim != 2:
            raise ValueError(f'arm {iarm}: {name} must be 2-D (spectra, wavelengths), not of '
                             f'shape {arr.shape}')
        if arr.shape != (nspec, nwave):
            raise ValueError(f'arm {iarm}: {name} has shape {arr.shape}, expected '
                             f'({nspec}, {nwave}) (spectra, wavelengths)')
        out.append(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder('=')))
    return out


def rebin_arms(waves, fluxes, ivars, grid, masks=None):
    """Inverse-variance weighted rebinning of several arms onto the grid.

    Parameters are those of :func:`accumulate_arms`.

    Returns
    -------
    flux : numpy.ndarray
        Weighted mean flux per bin, shape (nspec, nbins), float64; 0 in empty bins.
    ivar : numpy.ndarray
        Summed inverse variance per bin, shape (nspec, nbins), float64.
    arm_valid : numpy.ndarray of bool
        Shape (nspec, narms).
    """
    fsum, isum, arm_valid = accumulate_arms(waves, fluxes, ivars, grid, masks)
    return mean_flux(fsum, isum), isum, arm_valid


def mean_flux(fsum, isum):
    """Weighted mean flux per bin, Σ(ivar·flux) / Σivar, and 0 in empty bins."""
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(isum > 0, fsum / isum, 0.0)


@_compiled
def _finalise(fsum, isum, X):
    """Fill X (nspec, nbins, 2) from the per-bin sums (compiled; see :func:`grid_channels`)."""
    nspec, nbins = fsum.shape
    for s in range(nspec):
        wsum = 0.0
        fwsum = 0.0
        for k in range(nbins):
            wsum += isum[s, k]
            fwsum += fsum[s, k]
        mean = fwsum / wsum if wsum > 0 else 0.0
        var = 0.0
        for k in range(nbins):
            w = isum[s, k]
            if w > 0:
                resid = fsum[s, k] / w - mean          # float64 throughout
                var += resid * resid * w
        rms = np.sqrt(var / wsum) if wsum > 0 else 0.0
        # below ~float32 resolution of the mean the spread is rounding: treat as constant
        inv_rms = 1.0 / rms if rms > 1e-6 * abs(mean) and rms > 0 else 1.0
        for k in range(nbins):
            w = isum[s, k]
            if w > 0:
                flux = fsum[s, k] / w
                X[s, k, 1] = flux * np.sqrt(w)
                X[s, k, 0] = min(max((flux - mean) * inv_rms, -MAX_NORM_FLUX), MAX_NORM_FLUX)
            else:
                X[s, k, 1] = 0.0
                X[s, k, 0] = 0.0


def grid_channels(fsum, isum):
    """The two input channels from per-bin sums of ivar·flux and ivar.

    Channel 0 is the QuasarNET normalisation of the rebinned flux f = Σ(ivar·flux)/Σivar:
    (f − mean) / rms with mean and rms weighted by the binned ivar over the valid bins
    (rms = 1 when it is 0, e.g. constant flux), bounded by ±:data:`MAX_NORM_FLUX`.
    Channel 1 is the S/N, f × √Σivar.  Both are exactly 0 in bins without valid pixels.

    Parameters
    ----------
    fsum, isum : numpy.ndarray
        Per-bin Σ(ivar·flux) and Σivar, shape (nspec, nbins), float64.

    Returns
    -------
    numpy.ndarray
        X, shape (nspec, nbins, 2), float32.
    """
    X = np.empty(fsum.shape + (NCHANNELS,), dtype=np.float32)
    _finalise(fsum, isum, X)
    return X


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
    fsum, isum, arm_valid = accumulate_arms(waves, fluxes, ivars, grid, masks)
    return grid_channels(fsum, isum), arm_valid, np.count_nonzero(isum > 0, axis=1)


#: Wavelength range (Å) of each DESI camera, first to last pixel (the pixel grids of the
#: coadds; ``instrument.arms`` of ``etc/lbgnet-base.yaml``).  A camera-coadded band
#: (``brz``, ``br``, ...: desispec.coaddition.coadd_cameras) is cut back into cameras with
#: these.
CAMERA_RANGES = {'b': (3600.0, 5800.0), 'r': (5760.0, 7620.0), 'z': (7520.0, 9824.0)}

#: How far (Å) a pixel wavelength may be from the nominal camera end and still be that
#: camera's end pixel (5800.0000000005 is b's last pixel); well under the 0.8 Å pixel.
CAMERA_TOLERANCE = 0.1


@dataclass(frozen=True)
class CameraPiece:
    """The pixels of one camera inside a coadd band.

    Attributes
    ----------
    camera : str
        ``'b'``, ``'r'`` or ``'z'`` (or the band name of a band that is not made of
        known cameras).
    band : str
        The coadd band holding the pixels.
    pixels : slice
        This camera's pixels of the band, disjoint from the other pieces of the band.
    own : slice or None
        For a camera cut out of a camera-coadded band: the part of `pixels` (relative to
        it) that no other camera of the band covers, where this camera alone decides
        whether it has data.  None for a band that is one camera.
    """

    camera: str
    band: str
    pixels: slice
    own: slice = None


def camera_pieces(bands, waves):
    """The pixels of each camera: a band per camera, or a camera-coadded band cut up.

    A camera-coadded band is cut in the middle of the overlap of each pair of cameras
    next to each other in wavelength (5780 Å for b/r, 7570 Å for r/z, the middle of the
    gap for a ``bz`` band); the first and last pieces keep every pixel below / above.

    Parameters
    ----------
    bands : sequence of str
        Band names of a coadd (``b``, ``r``, ``z``, or a combination such as ``brz``).
    waves : dict
        band -> increasing wavelength array (Å).

    Returns
    -------
    list of CameraPiece
        In band order, the cameras of a band in wavelength order; the rebinned sums are the same as over the whole bands (the
        pieces are disjoint, no pixel dropped), but validity is judged per camera.
    """
    pieces = []
    for band in bands:
        if len(band) < 2 or not set(band) <= set(CAMERA_RANGES) or len(set(band)) < len(band):
            pieces.append(CameraPiece(band, band, slice(None)))
            continue
        wave = np.asarray(waves[band])
        cams = sorted(band, key=lambda c: CAMERA_RANGES[c])
        ranges = [CAMERA_RANGES[c] for c in cams]
        cuts = ([-np.inf] + [0.5 * (lo_next + hi) for (_, hi), (lo_next, _)
                             in zip(ranges[:-1], ranges[1:])] + [np.inf])
        edges = np.searchsorted(wave, cuts)
        for i, cam in enumerate(cams):
            # covered by no other camera: beyond the previous camera's last pixel and short of
            # the next camera's first (by CAMERA_TOLERANCE: the stored wavelengths are not exact)
            own_lo = ranges[i - 1][1] + CAMERA_TOLERANCE if i > 0 else -np.inf
            own_hi = ranges[i + 1][0] - CAMERA_TOLERANCE if i + 1 < len(cams) else np.inf
            start, stop = int(edges[i]), int(edges[i + 1])
            own = np.searchsorted(wave[start:stop], [own_lo, own_hi])
            pieces.append(CameraPiece(cam, band, slice(start, stop),
                                      slice(int(own[0]), int(own[1]))))
    return pieces


def own_pixels_valid(piece, wave, flux, ivar, mask, grid):
    """Whether a camera cut out of a camera-coadded band has data (:class:`CameraPiece`).

    Parameters
    ----------
    piece : CameraPiece
        With ``own`` set.
    wave, flux, ivar, mask
        The piece's pixels, as one arm of :func:`accumulate_arms` (`mask` may be None).
    grid : lbgnet.config.Grid

    Returns
    -------
    numpy.ndarray of bool
        Shape (nspec,): at least one valid pixel on the grid among the pixels only this
        camera covers.  The overlap pixels are left out: there the coadd holds the
        neighbouring camera's data even when this camera has none.
    """
    own = piece.own
    # the compiled pass of accumulate_arms on those pixels: the same validity rule, at
    # its speed (a numpy version of it made camera-coadded files 2.6x slower to grid)
    _, _, valid = accumulate_arms([np.asarray(wave)[own]], [np.asarray(flux)[:, own]],
                                  [np.asarray(ivar)[:, own]], grid,
                                  [None if mask is None else np.asarray(mask)[:, own]])
    return valid[:, 0]


def grid_effective_ivar(waves, fluxes, ivars, eff_ivars, grid, masks=None):
    """Inverse variance of the gridded flux when the pixels scatter more than their ivar says.

    The gridded flux of a bin is the ivar-weighted mean Σ w f / Σ w of its valid pixels
    (w: the pipeline ivar, :func:`accumulate_arms`).  If each pixel's true variance is
    1 / `eff_ivar` and the pixels are independent, that mean has variance
    Σ (w² / eff_ivar) / (Σ w)².  (Noise shared by neighbouring pixels, such as the residual
    of one sky line, is then underestimated in the bins it covers.)

    Parameters
    ----------
    waves, fluxes, ivars, masks
        As :func:`accumulate_arms` (the fluxes only decide which pixels are valid).
    eff_ivars : sequence of numpy.ndarray
        Inverse true variance per arm, shape (nspec, nwave_a), > 0 where ivar is
        (e.g. :meth:`lbgnet.noise.NoiseModel.effective_ivar`).
    grid : lbgnet.config.Grid

    Returns
    -------
    numpy.ndarray
        Shape (nspec, nbins), float64; 0 in bins without valid pixels.
    """
    ratios = []
    for flux, ivar, eff in zip(fluxes, ivars, eff_ivars):
        eff = np.asarray(eff, dtype=np.float64)
        usable = usable_pixels(flux, ivar) & (eff > 0)
        ratios.append(np.where(usable, np.asarray(ivar, dtype=np.float64)
                               / np.where(usable, eff, 1.0), np.nan))
    # validity is in the NaNs of `ratios` (usable_pixels cut the real S/N): no cut on them
    vsum, isum, _ = accumulate_arms(waves, ratios, ivars, grid, masks, max_snr=np.inf)
    good = (isum > 0) & (vsum > 0)
    return np.where(good, isum ** 2 / np.where(good, vsum, 1.0), 0.0)


def grid_noise_ivar(cameras, waves, fluxes, ivars, grid, noise, masks=None):
    """Inverse variance of the gridded flux under a calibrated noise model.

    The gridded flux of a bin is the ivar-weighted mean Σ w f / Σ w of its valid pixels
    (w: the pipeline ivar, :func:`accumulate_arms`).  Under the model of
    :class:`lbgnet.noise.NoiseModel` a pixel scatters by ``excess`` × its pipeline σ,
    independently, plus the residual of its sky line, one amplitude per line shared by the
    line's pixels; so the mean has variance

        [Σ w excess² + Σ_lines (Σ_{p in line and bin} w_p r_p)²] / (Σ w)²,

    with r_p the residual profile (:meth:`lbgnet.noise.NoiseModel.residual_profile`).
    The covariance between two bins that share a line is not kept (the refinement's χ²
    treats bins as independent).  The pixels are those of the gridded flux, judged by
    the same compiled test.

    Parameters
    ----------
    cameras : sequence of str
        Camera of each arm (``'b'``, ``'r'``, ``'z'``).
    waves, fluxes, ivars, masks
        As :func:`accumulate_arms` (the fluxes only decide which pixels are valid).
    grid : lbgnet.config.Grid
    noise : lbgnet.noise.NoiseModel

    Returns
    -------
    numpy.ndarray
        Shape (nspec, nbins), float64; 0 in bins without valid pixels.
    """
    _, isum, _, white = accumulate_arms(waves, fluxes, ivars, grid, masks,
                                        arm_factors=[noise.excess[c] ** 2 for c in cameras])
    return _noise_ivar(cameras, waves, fluxes, ivars, grid, noise, masks, isum, white)


def _noise_ivar(cameras, waves, fluxes, ivars, grid, noise, masks, isum, white):
    """:func:`grid_noise_ivar` from the sums of :func:`accumulate_arms`: Σw and the white
    part Σ w excess² (`white`, added to in place) of the gridded flux's variance."""
    masks = [None] * len(waves) if masks is None else masks
    no_mask = np.zeros((1, 1), dtype=np.int32)
    for iarm, (cam, wave, flux, ivar, mask) in enumerate(zip(cameras, waves, fluxes, ivars,
                                                               masks)):
        amp, line = noise.residual_profile(cam, wave)
        pixbin = grid.bin_index(wave)
        sel = np.flatnonzero((line >= 0) & (pixbin >= 0) & (pixbin < grid.nbins))
        if sel.size == 0 or white.shape[0] == 0:
            continue
        flux, ivar, mask = _arm_arrays(iarm, np.shape(wave)[0], white.shape[0], flux, ivar,
                                       mask)
        # pixels are in wavelength order, so each (line, bin) pair is a run of pixels
        key = line[sel] * grid.nbins + pixbin[sel]
        starts = np.flatnonzero(np.diff(key, prepend=-1) != 0)
        _coherent(flux, ivar, no_mask if mask is None else mask, mask is not None, sel,
                  np.ascontiguousarray(amp[sel], dtype=np.float64),
                  np.append(starts, sel.size), pixbin[sel][starts], white,
                  MAX_PIXEL_SNR ** 2)
    good = (isum > 0) & (white > 0)
    return np.where(good, isum ** 2 / np.where(good, white, 1.0), 0.0)


def coadd_to_grid(coadd, grid, noise=None):
    """Grid the spectra of a :class:`lbgnet.io.CoaddData`.

    Parameters
    ----------
    coadd : lbgnet.io.CoaddData
    grid : lbgnet.config.Grid
    noise : lbgnet.noise.NoiseModel, optional
        Also compute ``info.noise_ivar``, the grid ivar under this noise model
        (:func:`grid_noise_ivar`), for the template refinement.

    Returns
    -------
    X : numpy.ndarray
        Shape (nspec, nbins, 2), float32.
    info : GridInfo
        With the rebinned ``flux`` and ``ivar`` (and ``noise_ivar`` with `noise`); its
        ``bands`` are cameras (a camera-coadded ``brz`` band counts as b, r and z, each
        judged on its own pixels).
    """
    pieces = camera_pieces(coadd.bands, coadd.wave)
    bands = tuple(p.camera for p in pieces)
    waves = [coadd.wave[p.band][p.pixels] for p in pieces]
    fluxes = [coadd.flux[p.band][:, p.pixels] for p in pieces]
    ivars = [coadd.ivar[p.band][:, p.pixels] for p in pieces]
    masks = [None if coadd.mask[p.band] is None else coadd.mask[p.band][:, p.pixels]
             for p in pieces]
    noise_ivar = None
    if noise is None:
        fsum, isum, arm_valid = accumulate_arms(waves, fluxes, ivars, grid, masks)
    else:           # the white part of the noise model's variance from the same pass
        fsum, isum, arm_valid, white = accumulate_arms(
            waves, fluxes, ivars, grid, masks, arm_factors=[noise.excess[b] ** 2 for b in bands])
        noise_ivar = _noise_ivar(bands, waves, fluxes, ivars, grid, noise, masks, isum, white)
    for i, piece in enumerate(pieces):
        if piece.own is not None:
            arm_valid[:, i] = own_pixels_valid(piece, waves[i], fluxes[i], ivars[i], masks[i],
                                               grid)
    nvalid = np.count_nonzero(isum > 0, axis=1)
    info = GridInfo(coadd.targetid, nvalid == 0, bands, arm_valid, nvalid,
                    mean_flux(fsum, isum), isum, noise_ivar)
    X = grid_channels(fsum, isum)
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
        For unreadable or inconsistent files, or wavelengths off the grid (see
        :func:`lbgnet.io.read_coadd`).
    """
    config = load_config() if config is None else config
    coadd = read_coadd(path, read_fibermap=read_fibermap, read_extra=False, sanitize=False,
                       fibermap_columns=['TARGETID'], grid=config.grid)
    return coadd_to_grid(coadd, config.grid)
