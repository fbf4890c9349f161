"""
lbgnet.sim.lsf
==============

The Gaussian line-spread function of the DESI-like arms (:mod:`lbgnet.sim.instrument`):
its width for a resolving power varying across an arm, the matching desispec RESOLUTION
diagonals, and the convolution of a finely sampled line spectrum (the sky lines) with it.
Pure numpy.
"""
import numpy as np

#: FWHM = FWHM_PER_SIGMA × σ for a Gaussian.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

#: Half-width of the sky-line convolution kernel, in units of the LSF σ.
LSF_TRUNCATION = 5.0


def lsf_sigma(wave, resolution):
    """Gaussian LSF σ for a resolving power varying linearly across an arm.

    Parameters
    ----------
    wave : numpy.ndarray
        Increasing pixel wavelengths, shape (nwave,), Å.
    resolution : (float, float)
        R = λ/FWHM at the first and at the last pixel.

    Returns
    -------
    numpy.ndarray
        σ per pixel, shape (nwave,), Å.
    """
    wave = np.asarray(wave, dtype=np.float64)
    r_lo, r_hi = (float(v) for v in resolution)
    if r_lo <= 0 or r_hi <= 0:
        raise ValueError(f'resolving power must be positive, got {resolution}')
    frac = (wave - wave[0]) / max(wave[-1] - wave[0], 1e-12)
    return wave / (r_lo + frac * (r_hi - r_lo)) / FWHM_PER_SIGMA


def resolution_data(sigma_pix, ndiag):
    """desispec RESOLUTION diagonals of a pixel-integrated Gaussian LSF.

    Parameters
    ----------
    sigma_pix : numpy.ndarray
        LSF σ per pixel in units of pixels, shape (nwave,).
    ndiag : int
        Number of diagonals (odd), e.g. 11 as in DESI coadds.

    Returns
    -------
    numpy.ndarray
        Shape (ndiag, nwave), float32, in the ``scipy.sparse.dia_matrix.data`` layout
        that :class:`desispec.resolution.Resolution` reads (offsets ndiag//2 … -ndiag//2);
        each column sums to 1.
    """
    from scipy.special import erf
    if ndiag % 2 != 1 or ndiag < 3:
        raise ValueError(f'ndiag must be odd and >= 3, got {ndiag}')
    half = ndiag // 2
    offsets = np.arange(half, -half - 1, -1, dtype=np.float64)[:, None]
    scale = np.sqrt(2.0) * np.asarray(sigma_pix, dtype=np.float64)[None, :]
    data = 0.5 * (erf((offsets + 0.5) / scale) - erf((offsets - 0.5) / scale))
    data /= data.sum(axis=0, keepdims=True)
    return data.astype(np.float32)


def convolve_lines(line_wave, line_flux, wave, sigma):
    """Put a finely sampled emission-line spectrum through a Gaussian LSF.

    Parameters
    ----------
    line_wave, line_flux : numpy.ndarray
        Samples of the line spectrum (Å, flux density), shape (nsample,), on a
        regular grid (only the non-zero samples need be given).
    wave : numpy.ndarray
        Output pixel centres, increasing, shape (nwave,), Å.
    sigma : numpy.ndarray
        LSF σ at each output pixel, shape (nwave,), Å.

    Returns
    -------
    numpy.ndarray
        Flux density on `wave`, shape (nwave,); the integral of the input is kept.
    """
    out = np.zeros(wave.size)
    if line_wave.size == 0:
        return out
    step = np.median(np.diff(line_wave)) if line_wave.size > 1 else 0.1
    pixel = np.median(np.diff(wave))
    half = int(np.ceil(LSF_TRUNCATION * sigma.max() / pixel))
    centre = np.searchsorted(wave, line_wave)
    idx = centre[:, None] + np.arange(-half, half + 1)[None, :]
    ok = (idx >= 0) & (idx < wave.size)
    idx = np.clip(idx, 0, wave.size - 1)
    sig = sigma[idx]
    gauss = np.exp(-0.5 * ((wave[idx] - line_wave[:, None]) / sig) ** 2)
    kernel = gauss / (np.sqrt(2 * np.pi) * sig)
    contrib = np.where(ok, kernel * (line_flux * step)[:, None], 0.0)
    return np.bincount(idx.ravel(), weights=contrib.ravel(), minlength=wave.size)


def sky_line_spectrum(sky_lines, wave, sigma, shift=0.0, sigma_factor=1.0):
    """Sky emission lines as they appear in the variance of an extracted spectrum.

    Parameters
    ----------
    sky_lines : (numpy.ndarray, numpy.ndarray)
        Finely sampled line spectrum (wave Å, flux density), e.g. desispec's spec-sky.dat.
    wave, sigma : numpy.ndarray
        Pixel centres and LSF σ, shape (nwave,), Å.
    shift : float, optional
        Velocity shift of the lines (km/s): DESI coadds are in the barycentric frame,
        so the sky lines move by the barycentric correction (±30 km/s).
    sigma_factor : float, optional
        Width of the line profile in the variance relative to the LSF: the extraction
        (deconvolution, then reconvolution with the resolution matrix) makes the
        variance profile of a sky line narrower than the LSF.

    Returns
    -------
    numpy.ndarray
        Shape (nwave,), in the units of the input flux density.
    """
    from scipy.constants import c as speed_of_light
    line_wave = sky_lines[0] * (1.0 + shift * 1e3 / speed_of_light)
    return convolve_lines(line_wave, sky_lines[1], wave, sigma * sigma_factor)
