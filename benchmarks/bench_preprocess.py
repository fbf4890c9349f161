#!/usr/bin/env python
"""Benchmark the coadd → network-input path (issue 3 targets).

1. Gridding a 5,000-spectrum, three-arm coadd held in memory (FITS read excluded):
   target ≤ 1 s per core.
2. ``load_coadd_grid`` (read + preprocess) of a 500-spectrum file written by
   desispec (with RESOLUTION, as real files have), against a raw fitsio read of its
   FLUX/IVAR/MASK HDUs: target ratio ≤ 2.  The raw read is timed two ways: holding
   the arrays it reads (as any consumer must; the reference for the target) and
   discarding each array at once (which lets malloc reuse one warm buffer and so
   avoids the page faults of holding ~12 bytes per pixel; reported for transparency).
3. Gridding that file's coadd (read once) with and without the calibrated noise model
   (``coadd_to_grid(..., noise)``, which the default template refinement needs): the
   ratio of the two times is the noise model's extra cost in the afterburner's reading.

All three are measured in one run, best of ``--repeat``; results go to stdout (and to
``doc/benchmarks.rst`` by hand).  Run with ``OMP_NUM_THREADS=1`` to measure one core.
"""
import argparse
import os
import tempfile

import fitsio
import numpy as np

from benchutil import best_time

from lbgnet.config import load_config
from lbgnet.example import example_spectra
from lbgnet.io import minimal_fibermap, read_coadd, write_coadd
from lbgnet.noise import load_noise_model
from lbgnet.preprocess import coadd_to_grid, grid_spectra, load_coadd_grid


def make_arrays(config, nspec, seed=0):
    """Example spectra with masks, the DESI-like input of the benchmark."""
    rng = np.random.default_rng(seed)
    wave, flux, ivar, _ = example_spectra(config, nspec, rng)
    mask = {b: (rng.random(flux[b].shape) < 0.02).astype(np.int32) for b in wave}
    return wave, flux, ivar, mask


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--nspec-memory', type=int, default=5000)
    parser.add_argument('--nspec-file', type=int, default=500)
    parser.add_argument('--repeat', type=int, default=5)
    args = parser.parse_args()
    config = load_config()
    bands = ('b', 'r', 'z')

    wave, flux, ivar, mask = make_arrays(config, args.nspec_memory)
    t_grid = best_time(lambda: grid_spectra([wave[b] for b in bands], [flux[b] for b in bands],
                                            [ivar[b] for b in bands], config.grid,
                                            [mask[b] for b in bands]), args.repeat)
    print(f'grid {args.nspec_memory} spectra in memory: {t_grid:.3f} s '
          f'({args.nspec_memory / t_grid:.0f} spectra/s; target <= 1 s)')

    wave, flux, ivar, mask = make_arrays(config, args.nspec_file, seed=1)
    ndiag = 11
    resolution = {b: np.zeros((args.nspec_file, ndiag, wave[b].size), dtype=np.float32) for b in bands}
    for b in bands:
        resolution[b][:, ndiag // 2, :] = 1.0
    with tempfile.TemporaryDirectory() as tmpdir:
        path = os.path.join(tmpdir, 'coadd-bench.fits')
        write_coadd(path, wave, flux, ivar, minimal_fibermap(np.arange(args.nspec_file)),
                    mask=mask, resolution=resolution)

        def raw_read(keep):
            held = []
            with fitsio.FITS(path) as fx:
                for b in bands:
                    for part in ('FLUX', 'IVAR', 'MASK'):
                        data = fx[f'{b.upper()}_{part}'].read()
                        if keep:
                            held.append(data)
            return held

        t_raw = best_time(lambda: raw_read(True), args.repeat)
        t_discard = best_time(lambda: raw_read(False), args.repeat)
        t_ours = best_time(lambda: load_coadd_grid(path, config), args.repeat)
        coadd, noise = read_coadd(path), load_noise_model()
        coadd_to_grid(coadd, config.grid, noise)                 # compile outside the timing
        t_plain = best_time(lambda: coadd_to_grid(coadd, config.grid), args.repeat)
        t_noise = best_time(lambda: coadd_to_grid(coadd, config.grid, noise), args.repeat)
    n = args.nspec_file
    print(f'raw fitsio read of FLUX/IVAR/MASK, {n} spectra, arrays held: {t_raw * 1e3:.1f} ms')
    print(f'raw fitsio read of FLUX/IVAR/MASK, {n} spectra, each array discarded: {t_discard * 1e3:.1f} ms')
    print(f'load_coadd_grid (read + preprocess), {n} spectra: {t_ours * 1e3:.1f} ms')
    print(f'ratio load_coadd_grid / raw read (held): {t_ours / t_raw:.2f} (target <= 2)')
    print(f'ratio load_coadd_grid / raw read (discarded): {t_ours / t_discard:.2f}')
    print(f'coadd_to_grid, {n} spectra: {t_plain * 1e3:.1f} ms; with the noise model: '
          f'{t_noise * 1e3:.1f} ms (ratio {t_noise / t_plain:.2f})')


if __name__ == '__main__':
    main()
