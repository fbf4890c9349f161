#!/usr/bin/env python
"""What fraction of right redshifts could any method reach?  A Bayes estimate on a mock test.

The redshift companion of ``oracle_class_bound.py`` (same likelihoods, same true noise model,
same banks of exact noiseless spectra drawn by the simulator), and a realistic counterpart of
``oracle_redshift_bound.py``, which was told each object's exact spectrum.  Here the
estimator knows only the *population*: the posterior of an LBG's redshift is

    p(z | d) ∝ Σ_k p(d | t_k) over the bank LBGs t_k with redshift z_k in the bin of z,

each p(d | t_k) integrated over the amplitude (:func:`oracle_class_bound.bank_loglike`), with
the bank drawn from the simulator's LBG population over its whole redshift range (what the
network is trained on) on bins of ``--dz-bin`` in z.  The issue's metric counts a redshift
as right when \\|Δz\\| < 0.05, so the estimator that maximises the expected number of right
redshifts takes, for each object, the centre ẑ of the window ẑ ± 0.05 holding the most
posterior probability.  The fraction of objects with \\|ẑ − z\\| < 0.05 is what a method
that knows the simulator reaches on the same objects (not the optimum: a finite bank
samples the population coarsely), the mean of the window probabilities what the posterior
itself expects (``bayes_expected``), and the median \\|ẑ − z\\| how closely ẑ follows the
truth.  It is reported for the issue's
population — the true LBGs the network selects at its default thresholds — beside the
network's ``Z_LBG`` and the afterburner's ``Z_TPL`` of the same objects (its default
refinement: calibrated noise model and archetypes since 2026-12-01, the pipeline ivar
alone before), and for all true
LBGs, at every depth of :data:`lbgnet.evaluate.DEPTH_LIMITS`; also with the prior
restricted to the test's own redshift range (``bayes_test_prior``: an estimator told that
the test's LBGs lie in [zmin, zmax], which the network is not).  The estimate is limited
by the bank size (a finite bank samples the posterior coarsely: the numbers are reported
for growing banks) and by the approximations of ``oracle_class_bound.py``; with ``--grid``
it works on the network's 8 Å input instead of the coadd's 0.8 Å pixels.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/bayes_redshift_estimate.py --test runs/test-lowz \\
        --zmin 1.8 --zmax 2.6 [--nbank 80000] [--seed 1] [--grid] [--model FILE] [--json FILE]

The test directory holds ``coadd-*.fits`` and ``truth-*.fits`` from ``desi_lbg_mock`` with
the default mock configuration (the one re-rendered here).
"""
import argparse
import os

import numpy as np
from benchutil import write_json
from oracle_class_bound import (CHUNK, add_common_options, bank_chunks, bank_loglike,
                                load_inputs, read_test)

#: Half width (in z) of a right redshift.
DZ_GOOD = 0.05


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_common_options(parser, 80000)
    parser.add_argument('--dz-bin', type=float, default=0.005,
                        help='redshift bin of the posterior [%(default)s]')
    return parser.parse_args(options)


def bin_loglike(loglike, zbin, nbins):
    """log Σ exp(`loglike`) over the bank spectra of each redshift bin.

    Parameters
    ----------
    loglike : numpy.ndarray
        Shape (n, m): objects × bank spectra.
    zbin : numpy.ndarray of int
        Bin of each bank spectrum, shape (m,), in [0, nbins).
    nbins : int

    Returns
    -------
    numpy.ndarray
        Shape (n, nbins); −inf in the bins without bank spectra.
    """
    top = np.max(loglike, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    onehot = np.zeros((zbin.size, nbins))
    onehot[np.arange(zbin.size), zbin] = 1.0
    with np.errstate(divide='ignore'):
        return np.log(np.exp(loglike - top) @ onehot) + top


def window_estimate(logpost, halfwidth, tol=1e-9):
    """The centre of the window of ± `halfwidth` bins that holds the most posterior
    probability.

    The two end bins of a window count half (a redshift uniform within a bin at `halfwidth`
    bins from the centre lies within the window half of the time).  A posterior narrower
    than the window is held whole by a run of neighbouring windows; the estimate is then the
    middle of that run (within `tol` of the maximum), i.e. centred on the posterior, not its
    first window.

    Parameters
    ----------
    logpost : numpy.ndarray
        Unnormalised log posterior on the bins, shape (n, nbins).
    halfwidth : int
    tol : float, optional
        Windows whose probability is within `tol` of the largest count as tied.

    Returns
    -------
    position : numpy.ndarray
        Centre of the chosen window in bins (bin i spans [i, i + 1), so a window centred on
        bin i has position i + 0.5; an integer is a bin edge), within [0, nbins], shape (n,).
    prob : numpy.ndarray
        Posterior probability of the best window, shape (n,).
    """
    from scipy.ndimage import convolve1d
    top = np.max(logpost, axis=1, keepdims=True)
    post = np.exp(logpost - top)
    post /= np.sum(post, axis=1, keepdims=True)
    kernel = np.ones(2 * halfwidth + 1)
    kernel[[0, -1]] = 0.5
    # Window centres also beyond the end bins (padding), so that a posterior at an end bin
    # gets a run of windows centred on it, not one pushed inwards.
    padded = np.pad(post, ((0, 0), (halfwidth, halfwidth)))
    window = convolve1d(padded, kernel, axis=1, mode='constant', cval=0.0)
    first = np.argmax(window, axis=1)
    prob = window[np.arange(len(first)), first]
    idx = np.arange(window.shape[1])
    after = (window < prob[:, None] - tol) & (idx[None, :] > first[:, None])
    end = np.where(after.any(axis=1), np.argmax(after, axis=1), window.shape[1])
    return np.clip(0.5 * (first + end - 1) + 0.5 - halfwidth, 0.0, post.shape[1]), prob


def right_fraction(z_est, z_true):
    """Fraction with |z_est − z_true| < :data:`DZ_GOOD` (NaN estimates are wrong)."""
    if z_true.size == 0:
        return float('nan')
    return float(np.mean(np.abs(z_est - z_true) < DZ_GOOD))


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from desiutil.log import get_logger
    from lbgnet.evaluate import DEPTH_LIMITS, LBG_CLASS
    log = get_logger()
    halfwidth = int(round(DZ_GOOD / args.dz_bin))
    if not np.isclose(halfwidth * args.dz_bin, DZ_GOOD) or halfwidth < 1:
        log.error('--dz-bin %g must divide %g', args.dz_bin, DZ_GOOD)
        return 1
    network, refiner, setup = load_inputs(args.model, refine=True)
    data = read_test(network, setup, args.test, args.grid, refiner, args.noise)
    lbg = data['is_lbg']
    data = {k: v[lbg] for k, v in data.items()}
    bank_range = tuple(float(z) for z in setup.simcfg['simulation']['lbg']['zrange'])
    edges = bank_range[0] + args.dz_bin * np.arange(
        int(np.ceil((bank_range[1] - bank_range[0]) / args.dz_bin - 1e-9)) + 1)
    nbins = edges.size - 1
    centres = 0.5 * (edges[1:] + edges[:-1])
    in_test = (centres > args.zmin) & (centres < args.zmax)
    checkpoints = sorted({n for n in (args.nbank // 4, args.nbank // 2, args.nbank)
                          if n > 0 and n % CHUNK == 0} | {args.nbank})
    rng = np.random.default_rng(args.seed)
    grid = network.config.grid if args.grid else None
    logpost = np.full((lbg.sum(), nbins), -np.inf)
    posts, done = {}, 0
    for truth, models in bank_chunks(setup, [LBG_CLASS], bank_range, args.nbank, rng, grid):
        z = np.asarray(truth['Z_TRUE'], dtype=np.float64)
        zbin = np.clip(np.searchsorted(edges, z, side='right') - 1, 0, nbins - 1)
        logpost = np.logaddexp(logpost, bin_loglike(
            bank_loglike(data['wf'], data['w'], models, args.amplitude_prior), zbin, nbins))
        done += len(truth)
        if done in checkpoints:
            posts[done] = logpost.copy()
        log.info('LBG bank: %d / %d spectra', done, args.nbank)
    z_true, rmag, sel = data['z_true'], data['rmag'], data['selected']
    out = {'test': os.path.basename(os.path.normpath(args.test)), 'zrange': [args.zmin, args.zmax],
           'bank_zrange': list(bank_range), 'seed': args.seed, 'dz_bin': args.dz_bin,
           'amplitude_prior': args.amplitude_prior, 'grid': bool(args.grid), 'noise': args.noise,
           'n_lbg': int(lbg.sum()), 'n_selected': int(sel.sum()), 'by_depth': {}}
    est = {}
    for n, lp in posts.items():
        for prior, logp in (('bayes', lp), ('bayes_test_prior', np.where(in_test, lp, -np.inf))):
            pos, prob = window_estimate(logp, halfwidth)
            est[prior, n] = (edges[0] + args.dz_bin * pos, prob)
    for limit in DEPTH_LIMITS:
        row = {}
        for who, mask in (('selected', sel), ('all', np.ones_like(sel))):
            cut = mask & (rmag <= limit)
            part = {'n': int(cut.sum()),
                    'z_lbg': right_fraction(data['z_lbg'][cut], z_true[cut])}
            if who == 'selected':               # Z_TPL exists for the selected only
                part['z_tpl'] = right_fraction(data['z_tpl'][cut], z_true[cut])
            for (prior, n), (zhat, prob) in est.items():
                part.setdefault(prior, {})[str(n)] = right_fraction(zhat[cut], z_true[cut])
                part.setdefault(prior + '_median_abs_dz', {})[str(n)] = (
                    float(np.median(np.abs(zhat[cut] - z_true[cut]))) if cut.any() else float('nan'))
                part.setdefault(prior + '_expected', {})[str(n)] = (
                    float(np.mean(prob[cut])) if cut.any() else float('nan'))
            row[who] = part
        out['by_depth'][str(limit)] = row
        s = row['selected']
        log.info('r <= %.1f, %d selected true LBGs: |dz| < %.2f for Z_LBG %.3f, Z_TPL %.3f; Bayes '
                 'estimate %s (test prior %s; bank sizes %s)', limit, s['n'], DZ_GOOD, s['z_lbg'],
                 s['z_tpl'], ' / '.join(f'{v:.3f}' for v in s['bayes'].values()),
                 ' / '.join(f'{v:.3f}' for v in s['bayes_test_prior'].values()),
                 ' / '.join(s['bayes']))
    write_json(args.json, out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
