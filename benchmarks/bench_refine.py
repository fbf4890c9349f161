#!/usr/bin/env python
"""Cost of the template refinement (lbgnet.refine) beside the network, in one run.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/bench_refine.py [--model FILE] [--nspec 2000]
        [--threads 2] [--repeat 3] [--json FILE]

Simulates ``--nspec`` mock spectra (all classes, default mock settings), grids them, then
times (best of ``--repeat``): the compiled forward pass + post-processing of the network
(:class:`lbgnet.network.Network`) on all of them, the gridding of the ivar under the
calibrated noise model (which the default refinement does for every spectrum read), and
the refinement of all of them (as if every spectrum were selected), with the commands'
defaults (noise model and archetype stage; ``--refine-noise pipeline`` and
``--refine-archetypes none`` as in the afterburner).  Also reports the one-off set-up time
of the refiner, the size of its binned basis and archetypes and the per-file cost at
several selected fractions (the afterburner refines the IS_LBG targets only).  Results are
recorded in doc/benchmarks.rst.
"""
import argparse
import os
import time

import numpy as np
from benchutil import best_time, write_json


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', help='model file [the shipped model]')
    parser.add_argument('--nspec', type=int, default=2000, help='spectra [%(default)s]')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads [%(default)s]')
    parser.add_argument('--repeat', type=int, default=3, help='timed passes [%(default)s]')
    parser.add_argument('--json', help='write the numbers here')
    parser.add_argument('--refine-noise', choices=('pipeline', 'calibrated'),
                        default='calibrated', help='[%(default)s, the commands\' default]')
    parser.add_argument('--refine-archetypes', default=None, metavar='FILE',
                        help='archetype file or "none" [the shipped archetypes]')
    return parser.parse_args(options)


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from desiutil.log import get_logger
    from lbgnet.afterburner import (default_archetype_path, default_template_path, load_refiner,
                                    set_threads)
    from lbgnet.preprocess import grid_noise_ivar
    from lbgnet.network import default_model_path, load_network
    from lbgnet.preprocess import accumulate_arms, grid_channels, mean_flux
    from lbgnet.sim.mock import load_mock_setup, make_mock
    log = get_logger()
    set_threads(args.threads)
    # the afterburner's engine on --threads threads (set_threads limits BLAS and
    # TensorFlow only: the numpy forward pass takes its own thread count)
    network = load_network(args.model or default_model_path(), threads=args.threads)
    cfg = network.config
    mock = make_mock(load_mock_setup(), args.nspec, np.random.default_rng(5), pixel=3,
                     with_resolution=False)
    bands = sorted(mock.wave)
    fsum, isum, _ = accumulate_arms([mock.wave[b] for b in bands], [mock.flux[b] for b in bands],
                                    [mock.ivar[b] for b in bands], cfg.grid)
    X, flux = grid_channels(fsum, isum), mean_flux(fsum, isum)
    archetypes = args.refine_archetypes or default_archetype_path()
    archetypes = None if archetypes.lower() == 'none' else archetypes
    t0 = time.perf_counter()
    refiner = load_refiner(default_template_path(), cfg, network.zrange, noise=args.refine_noise,
                           archetypes=archetypes)
    t_setup = time.perf_counter() - t0
    t_noise, ivar = None, isum
    if refiner.noise is not None:
        def noise_grid():
            return grid_noise_ivar(bands, [mock.wave[b] for b in bands],
                                   [mock.flux[b] for b in bands], [mock.ivar[b] for b in bands],
                                   cfg.grid, refiner.noise)
        ivar = noise_grid()
        t_noise = best_time(noise_grid, args.repeat)
    raw = network.raw_outputs(X)
    res = network.catalog(raw, cfg.selection.c_thresh, cfg.selection.n_thresh)
    t_net = best_time(lambda: network.results(X, cfg.selection.c_thresh,
                                              cfg.selection.n_thresh), args.repeat)
    t_ref = best_time(lambda: refiner.run(flux, ivar, res['Z_LBG'], raw.get('conf')),
                      args.repeat)
    net_rate, ref_rate = args.nspec / t_net, args.nspec / t_ref
    per_spectrum = 1.0 / net_rate + (0.0 if t_noise is None else t_noise / args.nspec)
    out = {'nspec': args.nspec, 'threads': args.threads, 'refine_noise': args.refine_noise,
           'archetypes': archetypes, 'network_engine': network.engine,
           'network_threads': args.threads, 'network_spectra_per_s': net_rate,
           'noise_grid_spectra_per_s': None if t_noise is None else args.nspec / t_noise,
           'refine_spectra_per_s': ref_rate,
           'refine_over_network_time_per_spectrum': net_rate / ref_rate,
           'refiner_setup_s': t_setup, 'n_trial_redshifts': int(refiner.zs.size),
           'binned_basis_mb': refiner.tbasis.nbytes / 2 ** 20,
           'binned_archetypes_mb': (0.0 if refiner.archetypes is None
                                    else refiner.archetypes.nbytes / 2 ** 20),
           'selected_fraction_here': float(np.mean(res['IS_LBG'])),
           'throughput_at_selected_fraction': {
               f'{f:g}': 1.0 / (per_spectrum + f / ref_rate) for f in (0.01, 0.05, 0.2, 0.5)}}
    log.info('network %.0f spectra/s; noise-model gridding %s spectra/s; refinement %.0f '
             'spectra/s (%.1fx the time per spectrum); set-up %.2f s, %d trial redshifts, basis '
             '%.0f MB, archetypes %.0f MB', net_rate,
             'no' if t_noise is None else f'{args.nspec / t_noise:.0f}', ref_rate,
             out['refine_over_network_time_per_spectrum'], t_setup, refiner.zs.size,
             out['binned_basis_mb'], out['binned_archetypes_mb'])
    for frac, rate in out['throughput_at_selected_fraction'].items():
        log.info('network + refinement of a fraction %s of the spectra: %.0f spectra/s', frac, rate)
    write_json(args.json, out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
