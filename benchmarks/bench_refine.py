#!/usr/bin/env python
"""Cost of the template refinement (lbgnet.refine) beside the network, in one run.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/bench_refine.py [--model FILE] [--nspec 2000]
        [--threads 2] [--repeat 3] [--json FILE]

Simulates ``--nspec`` mock spectra (all classes, default mock settings), grids them, then
times (best of ``--repeat``): the compiled forward pass + post-processing of the network
(:class:`lbgnet.network.Network`) on all of them, and the refinement of all of them
(as if every spectrum were selected).  Also reports the one-off set-up time of the
refiner, the size of its binned basis and the per-file cost at several selected
fractions (the afterburner refines the IS_LBG targets only).  Results are recorded in
doc/benchmarks.rst.
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
    return parser.parse_args(options)


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from desiutil.log import get_logger
    from lbgnet.afterburner import default_template_path, load_refiner, set_threads
    from lbgnet.network import default_model_path, load_network
    from lbgnet.preprocess import accumulate_arms, grid_channels, mean_flux
    from lbgnet.sim.mock import load_mock_setup, make_mock
    log = get_logger()
    set_threads(args.threads)
    network = load_network(args.model or default_model_path())
    cfg = network.config
    mock = make_mock(load_mock_setup(), args.nspec, np.random.default_rng(5), pixel=3,
                     with_resolution=False)
    bands = sorted(mock.wave)
    fsum, isum, _ = accumulate_arms([mock.wave[b] for b in bands], [mock.flux[b] for b in bands],
                                    [mock.ivar[b] for b in bands], cfg.grid)
    X, flux = grid_channels(fsum, isum), mean_flux(fsum, isum)
    t0 = time.perf_counter()
    refiner = load_refiner(default_template_path(), cfg, network.zrange)
    t_setup = time.perf_counter() - t0
    raw = network.raw_outputs(X)
    res = network.catalog(raw, cfg.selection.c_thresh, cfg.selection.n_thresh)
    t_net = best_time(lambda: network.results(X, cfg.selection.c_thresh,
                                              cfg.selection.n_thresh), args.repeat)
    t_ref = best_time(lambda: refiner.run(flux, isum, res['Z_LBG'], raw.get('conf')),
                      args.repeat)
    net_rate, ref_rate = args.nspec / t_net, args.nspec / t_ref
    out = {'nspec': args.nspec, 'threads': args.threads,
           'network_spectra_per_s': net_rate, 'refine_spectra_per_s': ref_rate,
           'refine_over_network_time_per_spectrum': net_rate / ref_rate,
           'refiner_setup_s': t_setup, 'n_trial_redshifts': int(refiner.zs.size),
           'binned_basis_mb': refiner.tbasis.nbytes / 2 ** 20,
           'selected_fraction_here': float(np.mean(res['IS_LBG'])),
           'throughput_at_selected_fraction': {
               f'{f:g}': 1.0 / (1.0 / net_rate + f / ref_rate) for f in (0.01, 0.05, 0.2, 0.5)}}
    log.info('network %.0f spectra/s; refinement %.0f spectra/s (%.1fx the time per spectrum); '
             'set-up %.2f s, %d trial redshifts, basis %.0f MB', net_rate, ref_rate,
             out['refine_over_network_time_per_spectrum'], t_setup, refiner.zs.size,
             out['binned_basis_mb'])
    for frac, rate in out['throughput_at_selected_fraction'].items():
        log.info('network + refinement of a fraction %s of the spectra: %.0f spectra/s', frac, rate)
    write_json(args.json, out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
