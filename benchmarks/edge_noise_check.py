#!/usr/bin/env python
"""Does the simulator's noise flatter the shipped model?  Two checks, one run.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/edge_noise_check.py --workdir DIR
        [--regimes midz highz] [--kinds simulator edge-matched smoothed-ivar] [--model FILE]

For each regime the held-out test set of the model card (same command and seed, so the
same objects and draws) is made once per ``--kinds`` entry, and the shipped model is
evaluated on each:

``simulator``
    as the simulator makes it.
``edge-matched``
    the mock noise model (:mod:`lbgnet.sim.calibrate`) puts too little noise within ~60 Å
    of the arm ends, above all at the b/r overlap (model σ / real σ 0.73 at 5760–5780 Å in
    the r arm against the real SV1 coadd of ``../shared/reference``); here the variance
    within 60 Å of every arm end is multiplied by (real σ / model σ)² measured on the
    reference coadd (median over its live fibres, smoothed over 13 pixels, clipped to
    0.5–20).  Needs the reference coadd.
``smoothed-ivar``
    the simulator's ivar is an exact function of the *noiseless* flux (its shot-noise
    term), so in principle it leaks the spectrum; a pipeline's ivar comes from a noisy
    estimate.  Here the written ivar uses a 51-pixel running median of the noisy flux
    instead (the noise itself is drawn as before).
``bin-scatter``
    on the 8 Å bins of the network input, the faint fibres of the reference coadd scatter
    8–13 % more than white noise of the calibrated model at their ivar
    (``benchmarks/noise_correlation_check.py``; per pixel 1–2 %).  Here every arm's noise
    (flux − noiseless flux: scatter and sky residuals, the same draws as ``simulator``) is
    multiplied by that camera's real / white ratio of the 8 Å bin scatter; the ivar is
    unchanged.  Needs the reference coadd.

Results are recorded in doc/sim_instrument.rst.
"""
import argparse
import json
import os
import sys

import numpy as np

#: Distance (Å) from an arm end within which the variance is corrected.
EDGE = 60.0
#: Noise variants of the test sets (see the module docstring).
KINDS = ('simulator', 'edge-matched', 'smoothed-ivar', 'bin-scatter')
#: Running-median width (pixels) of the flux estimate behind the ``smoothed-ivar`` ivar.
SMOOTH_IVAR_PIXELS = 51
#: Regime -> (zmin, zmax, seed) of the model card's held-out tests.
REGIMES = {'lowz': (1.8, 2.6, 20231), 'midz': (2.6, 3.4, 20232), 'highz': (3.4, 4.6, 20233)}
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared',
                         'reference', 'desi-coadd', 'coadd-sv1-dark-80605-25fibres.fits')


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workdir', required=True, help='directory for the mocks and metrics')
    parser.add_argument('--regimes', nargs='+', choices=sorted(REGIMES), default=['midz', 'highz'],
                        help='held-out tests to remake [%(default)s]')
    parser.add_argument('--kinds', nargs='+', choices=KINDS, default=list(KINDS),
                        help='noise variants [%(default)s]')
    parser.add_argument('--model', help='model file [the shipped model]')
    parser.add_argument('--reference', default=REFERENCE, help='real coadd [%(default)s]')
    parser.add_argument('--nspec', type=int, default=2000, help='spectra per test [%(default)s]')
    return parser.parse_args(options)


def edge_factors(reference, setup):
    """(real σ / model σ)² near the arm ends, 1 elsewhere: band -> (nwave,)."""
    from scipy.ndimage import median_filter
    from lbgnet.io import read_coadd
    from lbgnet.sim.calibrate import sigma_comparison
    coadd = read_coadd(reference)
    factors = {}
    for band, (real, model) in sigma_comparison(coadd, setup.instrument).items():
        wave = coadd.wave[band]
        ratio2 = (np.nanmedian(real, axis=0) / np.median(model, axis=0)) ** 2
        ratio2 = median_filter(np.nan_to_num(ratio2, nan=1.0), size=13, mode='nearest')
        edge = (wave < wave[0] + EDGE) | (wave > wave[-1] - EDGE)
        factors[band] = np.where(edge, np.clip(ratio2, 0.5, 20.0), 1.0).astype(np.float32)
    return factors


def patches(kind, factors):
    """The simulator functions one noise variant replaces: {name in lbgnet.sim.instrument:
    function}; empty for ``simulator``."""
    import lbgnet.sim.instrument as instrument
    from scipy.ndimage import median_filter
    variance, observe = instrument.pipeline_variance, instrument.observe_arm
    if kind == 'edge-matched':
        def pipeline_variance(arm, model_flux, efftime, efftime_ref):
            return variance(arm, model_flux, efftime, efftime_ref) * factors[arm.band][None, :]
        return {'pipeline_variance': pipeline_variance}
    if kind == 'bin-scatter':
        def observe_arm(arm, model_flux, efftime, efftime_ref, rng):
            flux, ivar = observe(arm, model_flux, efftime, efftime_ref, rng)
            return model_flux + np.float32(factors[arm.band]) * (flux - model_flux), ivar
        return {'observe_arm': observe_arm}
    if kind == 'smoothed-ivar':
        def observe_arm(arm, model_flux, efftime, efftime_ref, rng):
            flux, _ = observe(arm, model_flux, efftime, efftime_ref, rng)
            estimate = np.maximum(median_filter(flux, size=(1, SMOOTH_IVAR_PIXELS),
                                                mode='nearest'), 0.0)
            return flux, np.reciprocal(variance(arm, estimate, efftime, efftime_ref))
        return {'observe_arm': observe_arm}
    return {}


def make_tests(args, outdir, name, kind, factors=None):
    """The model card's mock command for one regime, with one noise variant."""
    import lbgnet.sim.instrument as instrument
    from lbgnet.scripts.lbg_mock import main as mock
    zmin, zmax, seed = REGIMES[name]
    replaced = patches(kind, factors)
    originals = {attr: getattr(instrument, attr) for attr in replaced}
    for attr, function in replaced.items():
        setattr(instrument, attr, function)
    try:
        status = mock(['--outdir', outdir, '--nspec', str(args.nspec), '--nfiles', '2',
                       '--seed', str(seed), '--zmin', str(zmin), '--zmax', str(zmax),
                       '--no-resolution', '--overwrite'])
    finally:
        for attr, function in originals.items():
            setattr(instrument, attr, function)
    if status != 0:
        sys.exit(f'{outdir}: desi_lbg_mock failed')


def evaluate(args, testdir, outdir):
    """Metrics of the model on one test directory (dict of the regime's numbers)."""
    import glob
    from lbgnet.scripts.lbg_evaluate import main as evaluate_main
    coadds = sorted(glob.glob(os.path.join(testdir, 'coadd-*.fits')))
    truths = [c.replace('coadd-', 'truth-') for c in coadds]
    # the script owns its work directory: another model's results there are replaced
    options = ['--coadd', *coadds, '--truth', *truths, '--outdir', outdir, '--nexamples', '0',
               '--overwrite']
    if args.model:
        options += ['--model', args.model]
    if evaluate_main(options) != 0:
        sys.exit(f'{testdir}: evaluation failed')
    with open(os.path.join(outdir, 'metrics.json')) as fx:
        return json.load(fx)['regimes']


def main(args=None):
    args = parse(args)
    from lbgnet.sim.mock import load_mock_setup
    factors = {}
    if {'edge-matched', 'bin-scatter'} & set(args.kinds) and not os.path.exists(args.reference):
        sys.exit(f'{args.reference}: reference coadd not found')
    if 'edge-matched' in args.kinds:
        factors['edge-matched'] = edge_factors(args.reference, load_mock_setup())
    if 'bin-scatter' in args.kinds:
        from noise_correlation_check import compare_with_white
        factors['bin-scatter'] = {cam: res['bin_ratio'] for cam, res
                                  in compare_with_white(args.reference).items()}
        print('noise factors of bin-scatter: ' + ', '.join(
            f'{cam} {f:.3f}' for cam, f in factors['bin-scatter'].items()))
    rows = []
    for name in args.regimes:
        for kind in args.kinds:
            testdir = os.path.join(args.workdir, f'test-{name}-{kind}')
            make_tests(args, testdir, name, kind, factors.get(kind))
            reg = evaluate(args, testdir, os.path.join(args.workdir, f'eval-{name}-{kind}'))[name]
            rows.append((name, kind, reg['pe_score'], reg['redshift']['frac_dz_lt_0p05'],
                         reg['redshift_template']['frac_dz_lt_0p05'],
                         reg['redshift_template']['sigma_nmad']))
    print(f'{"regime":7s} {"noise":13s} {"score":>7s} {"Z_LBG<0.05":>11s} {"Z_TPL<0.05":>11s} '
          f'{"sNMAD(Z_TPL)":>12s}')
    for row in rows:
        print(f'{row[0]:7s} {row[1]:13s} {row[2]:7.4f} {row[3]:11.4f} {row[4]:11.4f} {row[5]:12.3e}')
    with open(os.path.join(args.workdir, 'edge_noise_check.json'), 'w') as fx:
        json.dump({'rows': rows}, fx, indent=1)


if __name__ == '__main__':
    main()
