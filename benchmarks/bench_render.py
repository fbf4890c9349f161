#!/usr/bin/env python
"""Benchmark lbgnet.sim.render: noiseless spectra per second on the three DESI arm grids.

Draws 2048 mixed-class objects (default class fractions) and renders them in batches
(default 256) on the b, r, z arm grids of the base configuration, with a constant
instrumental sigma, single-threaded numpy.  Prints spectra/s and ms per spectrum,
for ``render_arms`` (one call for the three arms) and for three ``render_spectra``
calls (one per arm).

Usage::

    PYTHONPATH=py python benchmarks/bench_render.py [--n 2048] [--batch 256] [--templates]
"""
import argparse
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

import numpy as np  # noqa: E402
from benchutil import best_time  # noqa: E402

from lbgnet.config import arm_wavelengths, load_config  # noqa: E402
from lbgnet.sim import draw_population, load_sim_config, render_arms, render_spectra  # noqa: E402

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'reference')


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=2048, help='number of objects [%(default)s]')
    parser.add_argument('--batch', type=int, default=256, help='batch size [%(default)s]')
    parser.add_argument('--repeat', type=int, default=3, help='timed repetitions, best kept [%(default)s]')
    parser.add_argument('--templates', action='store_true',
                        help='use ../shared/reference LBG composite and Redrock templates')
    return parser.parse_args(options)


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    cfg = load_config()
    simcfg = load_sim_config()
    waves = arm_wavelengths(cfg)
    lsf = {band: 0.75 for band in waves}
    templates = None
    if args.templates:
        from lbgnet.io.templates import load_templates
        templates = load_templates(os.path.join(REFERENCE, 'lbg-composite'),
                                   os.path.join(REFERENCE, 'redrock-templates'))
    truth = draw_population(simcfg, args.n, np.random.default_rng(1))
    batches = [truth[i:i + args.batch] for i in range(0, args.n, args.batch)]
    render_arms(batches[0], waves, None, lsf, templates, simcfg)   # warm caches

    def run_arms():
        for tb in batches:
            render_arms(tb, waves, None, lsf, templates, simcfg)

    def run_single():
        for tb in batches:
            for band, wave in waves.items():
                render_spectra(tb, wave, None, lsf[band], templates, simcfg)

    npix = sum(w.size for w in waves.values())
    for name, func in (('render_arms (3 arms in one call)', run_arms),
                       ('render_spectra (one call per arm)', run_single)):
        dt = best_time(func, args.repeat)
        print(f'{name}: {args.n / dt:8.0f} spectra/s  ({1e3 * dt / args.n:.3f} ms per spectrum, '
              f'{npix} pixels, batch {args.batch}, templates={args.templates})')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
