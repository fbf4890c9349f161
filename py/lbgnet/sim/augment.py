"""
lbgnet.sim.augment
==================

Online augmentation of simulated spectra, applied per arm before the spectra are
put on the network grid (so the gridding is exactly the production code's).

* random masking (ivar = 0) of the noisy b/r dichroic overlap (5760–5800 Å);
* random masking of other chunks of the spectrum (bad columns, cosmics, gaps);
* occasional masking of Lyα in LBGs (the network must also use the other lines);
* a small random wavelength shift of the noiseless spectrum (calibration errors);
* for observed spectra read from files (:mod:`lbgnet.labelled`), whose noiseless spectrum
  is unknown: extra noise as if observed to a random fraction of their depth
  (:func:`degrade_depth`).

Fresh noise at a random effective exposure time is drawn by the generator itself
(:func:`lbgnet.sim.instrument.observe`).  Every function is pure apart from
in-place edits of the arrays it is given, and takes its randomness from ``rng``.
"""
from dataclasses import dataclass

import numpy as np

#: Rest wavelength of Lyα (Å).
LYA_WAVE = 1215.67


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and sizes of the augmentations (all probabilities per spectrum).

    Attributes
    ----------
    p_overlap : float
        Probability to mask the b/r overlap `overlap_range` (Å) in both arms.
    overlap_range : tuple of float
    p_chunks : float
        Probability that a spectrum gets masked chunks; their number is then
        1 + Poisson(`chunk_extra`), widths uniform in `chunk_width` (Å), centres uniform
        over the arms.
    chunk_extra : float
    chunk_width : tuple of float
    p_lya : float
        Probability to mask Lyα of an LBG over ±`lya_halfwidth` rest-frame Å around
        (1 + Z_TRUE)·1215.67 (covers the emission offset and the absorption trough).
    lya_halfwidth : float
    p_jitter : float
        Probability to shift the spectrum by N(0, `jitter_sigma`) Å, clipped to ±1 arm
        pixel (0.8 Å for DESI; :func:`jitter_wavelength`): a wavelength-calibration error.
        The box labels stay at the true redshift (a calibration error does not move it),
        so the network learns to ignore such shifts; at 0.3 Å that is ~6e-5 in Δz/(1+z),
        and 0.07 % of the labelled lines fall in the box next to the one their shifted
        feature sits in.
    jitter_sigma : float
        ≥ 0, Å.
    """

    p_overlap: float = 0.0
    overlap_range: tuple = (5760.0, 5800.0)
    p_chunks: float = 0.0
    chunk_extra: float = 0.5
    chunk_width: tuple = (20.0, 150.0)
    p_lya: float = 0.0
    lya_halfwidth: float = 10.0
    p_jitter: float = 0.0
    jitter_sigma: float = 0.3

    @classmethod
    def from_dict(cls, section):
        """Build from the ``generator.augment`` configuration mapping.

        Raises
        ------
        ValueError
            For an unknown key, a probability outside [0, 1], a range that is not two
            increasing finite numbers (widths > 0), a negative ``chunk_extra`` or a
            ``lya_halfwidth`` that is not > 0.
        """
        section = dict(section or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(section) - known
        if unknown:
            raise ValueError(f'unknown augmentation option(s) {sorted(unknown)}; '
                             f'known {sorted(known)}')
        for key in ('overlap_range', 'chunk_width'):
            if key in section:
                try:
                    section[key] = tuple(float(v) for v in section[key])
                except (TypeError, ValueError):
                    raise ValueError(f'augmentation {key}={section[key]!r} is not two numbers') from None
        out = cls(**section)
        for key in ('overlap_range', 'chunk_width'):
            lo_hi = getattr(out, key)
            if len(lo_hi) != 2 or not np.all(np.isfinite(lo_hi)) or not lo_hi[0] < lo_hi[1] \
                    or (key == 'chunk_width' and lo_hi[0] <= 0):
                raise ValueError(f'augmentation {key}={list(lo_hi)} must be two increasing '
                                 f'finite numbers{" > 0" if key == "chunk_width" else ""} (Å)')
        for key, low in (('chunk_extra', '>= 0'), ('lya_halfwidth', '> 0')):
            value = getattr(out, key)
            if isinstance(value, bool) or not np.isfinite(value) or \
                    not (value >= 0 if low == '>= 0' else value > 0):
                raise ValueError(f'augmentation {key}={value} must be a finite number {low}')
        for key in ('p_overlap', 'p_chunks', 'p_lya', 'p_jitter'):
            if not 0.0 <= getattr(out, key) <= 1.0:
                raise ValueError(f'augmentation {key}={getattr(out, key)} is not a probability')
        if not out.jitter_sigma >= 0.0 or not np.isfinite(out.jitter_sigma):
            raise ValueError(f'augmentation jitter_sigma={out.jitter_sigma} must be >= 0')
        return out


def mask_intervals(waves, ivars, lo, hi):
    """Set ivar = 0 where lo[i] <= λ < hi[i], in place.

    Parameters
    ----------
    waves : dict
        band -> wavelengths (nwave,), Å.
    ivars : dict
        band -> inverse variance (nspec, nwave); modified in place.
    lo, hi : numpy.ndarray
        Interval per spectrum, shape (nspec,), Å; NaN = no interval.

    Returns
    -------
    numpy.ndarray
        Number of pixels masked per spectrum, shape (nspec,).
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    nmask = np.zeros(lo.size, dtype=np.int64)
    rows = np.flatnonzero(np.isfinite(lo) & np.isfinite(hi))
    if rows.size == 0:
        return nmask
    for band, wave in waves.items():
        first = np.searchsorted(wave, lo[rows], side='left')
        last = np.searchsorted(wave, hi[rows], side='left')
        pix = np.arange(wave.size)[None, :]
        inside = (pix >= first[:, None]) & (pix < last[:, None])
        sub = ivars[band][rows]
        sub[inside] = 0.0
        ivars[band][rows] = sub
        nmask[rows] += last - first
    return nmask


def mask_overlap(waves, ivars, rng, p, wave_range):
    """Mask the b/r overlap in a random fraction `p` of the spectra, in place."""
    n = next(iter(ivars.values())).shape[0]
    hit = rng.random(n) < p
    lo = np.where(hit, wave_range[0], np.nan)
    return mask_intervals(waves, ivars, lo, np.where(hit, wave_range[1], np.nan))


def mask_chunks(waves, ivars, rng, p, extra, width):
    """Mask 1 + Poisson(`extra`) random chunks in a fraction `p` of the spectra, in place."""
    n = next(iter(ivars.values())).shape[0]
    wmin = min(w[0] for w in waves.values())
    wmax = max(w[-1] for w in waves.values())
    count = np.where(rng.random(n) < p, 1 + rng.poisson(extra, n), 0)
    for k in range(int(count.max(initial=0))):
        centre = rng.uniform(wmin, wmax, n)
        half = 0.5 * rng.uniform(width[0], width[1], n)
        on = count > k
        mask_intervals(waves, ivars, np.where(on, centre - half, np.nan),
                       np.where(on, centre + half, np.nan))
    return count


def mask_lya(waves, ivars, truth, rng, p, halfwidth):
    """Mask Lyα (± `halfwidth` rest Å) of a fraction `p` of the LBGs, in place."""
    is_lbg = np.asarray(truth['CLASS']).astype(str) == 'LBG'
    hit = is_lbg & (rng.random(len(truth)) < p)
    one_z = 1.0 + np.asarray(truth['Z_TRUE'], dtype=np.float64)
    centre = LYA_WAVE * one_z
    lo = np.where(hit, centre - halfwidth * one_z, np.nan)
    mask_intervals(waves, ivars, lo, np.where(hit, centre + halfwidth * one_z, np.nan))
    return hit


def shift_spectra(wave, flux, shift):
    """Spectra shifted by a fraction of a pixel (linear interpolation).

    Parameters
    ----------
    wave : numpy.ndarray
        Uniform pixel grid (nwave,), Å.
    flux : numpy.ndarray
        Shape (nspec, nwave).
    shift : numpy.ndarray
        Shape (nspec,), Å; positive moves features redwards.  Clipped to ±1 pixel
        (the jitter is meant to be small); the end pixels keep their value.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as `flux`.
    """
    step = (wave[-1] - wave[0]) / (wave.size - 1)
    frac = np.clip(np.asarray(shift) / step, -1.0, 1.0).astype(flux.dtype)[:, None]
    grad = np.diff(flux, axis=1)
    out = flux.copy()
    # new[j] = old(j - d): for d > 0 interpolate towards the left neighbour, else the right one
    out[:, 1:] -= np.maximum(frac, 0) * grad
    out[:, :-1] -= np.minimum(frac, 0) * grad
    return out


def jitter_wavelength(waves, models, rng, p, sigma):
    """Shift a fraction `p` of the noiseless spectra by N(0, sigma) Å (same shift in all arms).

    The draw is clipped to ±1 pixel of the arm with the smallest pixels, as
    :func:`shift_spectra` applies it, so the returned shift (the ``WAVE_SHIFT`` truth
    column) is the one applied.

    Returns
    -------
    models : dict
        band -> shifted spectra.
    shift : numpy.ndarray
        Shape (nspec,), Å.
    """
    n = next(iter(models.values())).shape[0]
    shift = np.where(rng.random(n) < p, rng.normal(0.0, sigma, n), 0.0)
    pixel = min((w[-1] - w[0]) / (w.size - 1) for w in (waves[b] for b in models))
    shift = np.clip(shift, -pixel, pixel)
    if not np.any(shift):
        return models, shift
    return {b: shift_spectra(waves[b], m, shift) for b, m in models.items()}, shift


def degrade_depth(fluxes, ivars, frac, rng):
    """Add noise to observed spectra as if exposed a fraction `frac` of their depth, in place.

    A spectrum observed to depth T has variance 1/ivar per pixel; at depth ``frac`` · T it
    would have 1/(frac · ivar).  The missing variance 1/ivar · (1/frac − 1) is drawn afresh
    and added to the flux, and ivar is multiplied by `frac` (sky and source noise both scale
    as 1/depth; this is the augmentation available for real spectra, whose noiseless
    spectrum is unknown).  Pixels with ivar = 0 stay as they are.

    Parameters
    ----------
    fluxes, ivars : dict
        band -> (nspec, nwave) arrays, modified in place.
    frac : numpy.ndarray
        Shape (nspec,), in (0, 1]; 1 leaves the spectrum unchanged.
    rng : numpy.random.Generator

    Raises
    ------
    ValueError
        If a fraction is not in (0, 1].
    """
    frac = np.asarray(frac, dtype=np.float64)
    if np.any(~(frac > 0) | (frac > 1)):
        raise ValueError('depth fractions must be in (0, 1]')
    extra = (1.0 / frac - 1.0)[:, None]
    for band, ivar in ivars.items():
        flux = fluxes[band]
        good = ivar > 0
        sigma = np.sqrt(extra / np.where(good, ivar, 1.0))
        noise = rng.standard_normal(ivar.shape) * np.where(good, sigma, 0.0)
        flux += noise.astype(flux.dtype)
        ivar *= frac[:, None].astype(ivar.dtype)


def augment_masks(waves, ivars, truth, rng, cfg):
    """Apply every masking augmentation of `cfg` (:class:`AugmentConfig`), in place."""
    if cfg.p_overlap > 0:
        mask_overlap(waves, ivars, rng, cfg.p_overlap, cfg.overlap_range)
    if cfg.p_chunks > 0:
        mask_chunks(waves, ivars, rng, cfg.p_chunks, cfg.chunk_extra, cfg.chunk_width)
    if cfg.p_lya > 0:
        mask_lya(waves, ivars, truth, rng, cfg.p_lya, cfg.lya_halfwidth)
