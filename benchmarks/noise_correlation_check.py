#!/usr/bin/env python
"""Is the noise of real DESI coadds white, as the simulator draws it, on pixels and 8 Å bins?

Usage::

    python benchmarks/noise_correlation_check.py [--reference FILE] [--seed N] [--json FILE]

On the faint live fibres of the real SV1 coadd of ``../shared/reference`` (median smoothed
flux below :data:`lbgnet.sim.calibrate.FAINT_FLUX`), away from sky lines (pixels of the
noise model's sky-line residuals, widened by 3 pixels) and more than 30 Å inside the
wavelengths only one camera covers, the flux minus a running median is put in units of
the pipeline σ, per pixel and per 8 Å bin of the network's grid (ivar-weighted mean of
the bin's 10 pixels; only bins whose pixels are all usable).  The same numbers are
computed on *white* spectra (``--draws`` copies of each fibre): ``noise_excess`` × σ × N(0, 1) per pixel with the real σ
and no object, the simulator's noise away from sky lines (:mod:`lbgnet.sim.instrument`).
(Adding the real running median instead of no object would carry the median's own noise,
correlated over its window, into the white bins.)  Whatever of the real objects the
running medians leave counts as real scatter, so a real / white ratio above 1 is an upper
bound on the noise's departure from white.

Printed per camera: the Pearson lag-1 correlation of neighbouring pixels (sensitive to
the tails), robust lag-1 to lag-9 correlations (real minus white) ((s₊² − s₋²)/(s₊² + s₋²) with s± the
robust scatter of (a ± b)/√2), the fraction of pixels beyond 5σ, and the robust scatter
(1.4826 × MAD) of the pixels and of the 8 Å bins, real against white, the ratio of the
bin scatters with its spread over fibres.  Results are recorded in doc/sim_instrument.rst.
"""
import argparse
import os
import sys

import numpy as np
from scipy.ndimage import median_filter

#: Running-median widths: pixels (33 Å) and 8 Å bins (104 Å).
PIXEL_WINDOW, BIN_WINDOW = 41, 13
#: Pixel lags of the correlations (an 8 Å bin holds 10 pixels).
LAGS = tuple(range(1, 10))
#: Sky-line mask widening (pixels each side) and margin (Å) inside each camera's own range.
SKY_WIDEN, MARGIN = 3, 30.0
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared',
                         'reference', 'desi-coadd', 'coadd-sv1-dark-80605-25fibres.fits')


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--reference', default=REFERENCE, help='real coadd [%(default)s]')
    parser.add_argument('--seed', type=int, default=1, help='seed of the white noise [%(default)s]')
    parser.add_argument('--draws', type=int, default=50,
                        help='white-noise copies of each fibre [%(default)s]')
    parser.add_argument('--json', help='also write the numbers to this JSON file')
    return parser.parse_args(options)


def robust_scatter(values):
    """1.4826 × median absolute deviation of the finite values."""
    values = values[np.isfinite(values)]
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def lag_pairs(res, lag):
    """Finite (a, b) pairs of residuals `lag` pixels apart, flattened."""
    a, b = res[:, :-lag], res[:, lag:]
    both = np.isfinite(a) & np.isfinite(b)
    return a[both], b[both]


def robust_correlation(a, b):
    """Correlation from the robust scatters of the sum and the difference."""
    plus, minus = robust_scatter((a + b) / np.sqrt(2)), robust_scatter((a - b) / np.sqrt(2))
    return (plus ** 2 - minus ** 2) / (plus ** 2 + minus ** 2)


def binned_residuals(flux, ivar, usable, pixbin, nbins):
    """Per 8 Å bin: (flux − running median over bins) × √(Σ ivar), NaN where not all usable.

    Returns shape (nspec, nbins) float64.
    """
    inside = (pixbin >= 0) & (pixbin < nbins)
    onehot = np.zeros((pixbin.size, nbins))
    onehot[np.flatnonzero(inside), pixbin[inside]] = 1.0
    weight = np.where(usable, ivar, 0.0)
    isum = weight @ onehot
    npix, nuse = onehot.sum(axis=0), usable.astype(float) @ onehot
    full = (nuse == npix[None, :]) & (npix[None, :] > 0)
    mean = np.where(full, (weight * np.nan_to_num(flux)) @ onehot / np.where(full, isum, 1.0), np.nan)
    out = np.full(mean.shape, np.nan)
    for i in range(mean.shape[0]):          # a few spectra: one median filter each
        good = np.isfinite(mean[i])
        if good.sum() > 2 * BIN_WINDOW:
            out[i, good] = (mean[i, good] - median_filter(mean[i, good], BIN_WINDOW,
                                                          mode='nearest')) * np.sqrt(isum[i, good])
    return out


def camera_statistics(flux, ivar, usable, pixbin, nbins):
    """The printed numbers of one set of spectra of one camera (see the module docstring)."""
    sigma = 1.0 / np.sqrt(np.where(ivar > 0, ivar, np.nan))
    res = (flux - median_filter(flux, size=(1, PIXEL_WINDOW), mode='nearest')) / sigma
    res = np.where(usable, res, np.nan)
    a, b = lag_pairs(res, 1)
    binres = binned_residuals(flux, ivar, usable, pixbin, nbins)
    finite = res[np.isfinite(res)]
    return dict(pixels=int(finite.size), bins=int(np.isfinite(binres).sum()),
                pearson_lag1=float(np.corrcoef(a, b)[0, 1]),
                robust_lag=[float(robust_correlation(*lag_pairs(res, lag))) for lag in LAGS],
                beyond_5sigma=float(np.mean(np.abs(finite) > 5.0)),
                pixel_scatter=robust_scatter(res), bin_scatter=robust_scatter(binres),
                bin_scatter_per_fibre=[robust_scatter(row) for row in binres])


def compare_with_white(reference, draws=50, seed=1):
    """The numbers of the module docstring, real against white, per camera.

    Parameters
    ----------
    reference : str
        A real DESI coadd.
    draws : int, optional
        White-noise copies of each fibre.
    seed : int, optional
        Seed of the white noise.

    Returns
    -------
    dict
        camera -> {``fibres``, ``real``, ``white`` (:func:`camera_statistics` results),
        ``bin_ratio`` (real / white 8 Å bin scatter), ``bin_ratio_fibres`` (its 16, 50 and
        84 % points over the fibres)}.
    """
    from lbgnet.config import load_config
    from lbgnet.io import read_coadd
    from lbgnet.noise import load_noise_model
    from lbgnet.preprocess import CAMERA_RANGES, usable_pixels
    from lbgnet.sim.calibrate import FAINT_FLUX, live_fibres, smooth_flux
    grid = load_config().grid
    coadd = read_coadd(reference)
    noise = load_noise_model()
    live = live_fibres(coadd.ivar)
    rng = np.random.default_rng(seed)
    results = {}
    for cam in coadd.bands:
        wave = coadd.wave[cam]
        flux = coadd.flux[cam][live].astype(np.float64)
        ivar = coadd.ivar[cam][live].astype(np.float64)
        faint = np.median(smooth_flux(flux), axis=1) < FAINT_FLUX
        flux, ivar = flux[faint], ivar[faint]
        _, line = noise.residual_profile(cam, wave)
        sky = np.convolve((line >= 0).astype(float), np.ones(2 * SKY_WIDEN + 1), 'same') > 0
        others = [CAMERA_RANGES[c] for c in CAMERA_RANGES if c != cam]
        lo = max([hi for _, hi in others if hi < CAMERA_RANGES[cam][1]], default=-np.inf)
        hi = min([lo_ for lo_, _ in others if lo_ > CAMERA_RANGES[cam][0]], default=np.inf)
        own = (wave > lo + MARGIN) & (wave < hi - MARGIN)
        usable = usable_pixels(flux, ivar) & (~sky & own)[None, :]
        sigma = 1.0 / np.sqrt(np.where(ivar > 0, ivar, np.inf))
        # `draws` white copies of every fibre, stacked as more fibres
        white = (noise.excess[cam] * np.tile(sigma, (draws, 1))
                 * rng.standard_normal((draws * flux.shape[0], flux.shape[1])))
        pixbin = grid.bin_index(wave)
        real = camera_statistics(flux, ivar, usable, pixbin, grid.nbins)
        model = camera_statistics(white, np.tile(ivar, (draws, 1)), np.tile(usable, (draws, 1)),
                                  pixbin, grid.nbins)
        per_fibre = np.reshape(model['bin_scatter_per_fibre'], (draws, -1)).mean(axis=0)
        model['bin_scatter_per_fibre'] = per_fibre.tolist()
        ratio = np.array(real['bin_scatter_per_fibre']) / per_fibre
        results[cam] = dict(fibres=int(faint.sum()), real=real, white=model,
                            bin_ratio=real['bin_scatter'] / model['bin_scatter'],
                            bin_ratio_fibres=[float(np.nanpercentile(ratio, q))
                                              for q in (16, 50, 84)])
    return results


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    if not os.path.exists(args.reference):
        sys.exit(f'{args.reference}: not found (the real coadd of ../shared/reference is needed)')
    from benchutil import write_json
    results = compare_with_white(args.reference, args.draws, args.seed)
    for cam, res in results.items():
        real, white = res['real'], res['white']
        lags = ' '.join(f'{r - w:+.3f}' for r, w in zip(real['robust_lag'], white['robust_lag']))
        print(f"{cam}: {res['fibres']} faint fibres, {real['pixels']} pixels, {real['bins']} bins\n"
              f"  Pearson lag-1 correlation  real {real['pearson_lag1']:.3f}  white "
              f"{white['pearson_lag1']:.3f}\n"
              f"  robust correlation, real - white, lags 1-{len(LAGS)}: {lags}\n"
              f"  pixels beyond 5 sigma      real {real['beyond_5sigma']:.4f}  white "
              f"{white['beyond_5sigma']:.4f}\n"
              f"  pixel scatter              real {real['pixel_scatter']:.3f}  white "
              f"{white['pixel_scatter']:.3f}  ratio {real['pixel_scatter'] / white['pixel_scatter']:.3f}\n"
              f"  8 A bin scatter            real {real['bin_scatter']:.3f}  white "
              f"{white['bin_scatter']:.3f}  ratio {res['bin_ratio']:.3f} (over fibres 16/50/84 %: "
              f"{' / '.join(f'{x:.2f}' for x in res['bin_ratio_fibres'])})")
    write_json(args.json, results)


if __name__ == '__main__':
    main()
