#!/usr/bin/env python
"""What purity = efficiency score could any classifier reach?  A Bayes estimate on a mock test.

The companion of ``oracle_redshift_bound.py`` for the classification.  The mock test
spectra are noiseless models plus Gaussian noise of known variance (the coadd's ivar), and
the simulator can draw as many exact noiseless spectra of each class as wanted.  The best
possible classifier of such data ranks the objects by the likelihood ratio

    p(d | LBG) / p(d | contaminant),   p(d | C) ≈ mean over a bank of class C of p(d | t),

where p(d | t) integrates exp(−χ²/2) of the data against a bank spectrum t over its
amplitude a ≥ 0 (every bank spectrum scaled to r = 0 from its magnitude, so that a is the
r-band flux; a flat prior in a, or with ``--amplitude-prior log`` a prior ∝ 1/a — flat in
magnitude, as the simulator draws r — in the Laplace approximation), over
every arm pixel of the coadd, with the simulator's true noise: the pipeline variance times
``noise_excess²`` plus the variance of its sky-line residuals (treated as independent
per pixel, although the simulator draws one amplitude per line).  The banks are drawn
from the same population as the test (LBGs in the test's redshift range; QSOs, galaxies
and stars in the simulator's proportions, the [OII]-as-Lyα galaxies mimicking the same
redshift range).  The purity = efficiency score of that ranking estimates the Bayes
score: what no classifier of the same spectra can beat on average.  With ``--grid`` the
same is done on the network's 8 Å grid (the data rebinned by the production code with the
pipeline ivar, their true variance propagated with :func:`lbgnet.preprocess.grid_noise_ivar`,
which keeps each sky line's residual coherent within a bin, as the simulator draws it;
the bank spectra rebinned with equal pixel weights): what no classifier of the network's
input can beat.  (Before 2026-12-01 the grid variance treated the residuals as independent
per pixel, which underestimated it in the bins a sky line covers and biased the grid
estimate low: 0.933 / 0.960 at low / mid z instead of 0.952 / 0.971, banks of
40,000.)  With ``--noise pipeline`` the likelihoods use the pipeline ivar alone, as a method run on real data would
(the noise excess and the sky-line residuals unknown to it).  The estimate is limited by
the bank size (a finite bank misses the closest look-alikes of some objects:
the script reports the score for growing banks, so one sees whether it has converged) and
by its approximations (on the pixels the sky-line residuals treated as independent per
pixel, the flat amplitude prior, and with ``--grid`` the bank spectra rebinned with equal
pixel weights).  It ignores what the mock ivar itself carries: the simulator computes it
from the noiseless flux, so a method reading it could learn the spectrum from it (the
shipped network does not: ``benchmarks/edge_noise_check.py --kinds smoothed-ivar``).

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/oracle_class_bound.py --test runs/test-lowz \
        --zmin 1.8 --zmax 2.6 [--nbank 40000] [--seed 1] [--model FILE] [--json FILE]

The test directory holds ``coadd-*.fits`` and ``truth-*.fits`` from ``desi_lbg_mock`` with
the default mock configuration (the one re-rendered here) and LBGs in [zmin, zmax].  The
network's score (``C_LBG``) of the same objects is reported beside the Bayes estimate, for
every depth of :data:`lbgnet.evaluate.DEPTH_LIMITS`.
"""
import argparse
import os

import numpy as np
from benchutil import predict_test_files, write_json

#: Bank spectra rendered at once.
CHUNK = 2000


def add_common_options(parser, nbank):
    """Options shared with ``bayes_redshift_estimate.py``: test, its LBG range, bank, noise
    model and output."""
    parser.add_argument('--test', required=True, help='test directory')
    parser.add_argument('--zmin', type=float, required=True, help='lowest LBG z of the test')
    parser.add_argument('--zmax', type=float, required=True, help='highest LBG z of the test')
    parser.add_argument('--nbank', type=int, default=nbank,
                        help='bank spectra of each class [%(default)s]')
    parser.add_argument('--seed', type=int, default=1, help='seed of the banks [%(default)s]')
    parser.add_argument('--amplitude-prior', choices=('flat', 'log'), default='flat',
                        help='prior of the r-band flux: flat, or flat in magnitude '
                        '[%(default)s]')
    parser.add_argument('--grid', action='store_true',
                        help="on the network's 8 A grid instead of the 0.8 A pixels")
    parser.add_argument('--noise', choices=('true', 'pipeline'), default='true',
                        help="the simulator's true noise (noise excess, sky residuals), or only "
                        "the pipeline ivar, as a method run on real data would [%(default)s]")
    parser.add_argument('--model', help='model file [the shipped model]')
    parser.add_argument('--json', help='write the numbers here')


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_common_options(parser, 40000)
    return parser.parse_args(options)


def load_inputs(model=None, refine=False):
    """The network (`model`, default the shipped one), the refinement of its redshifts (with
    `refine`, as the commands refine by default: calibrated noise model and archetypes, since
    2026-12-01; else None) and the default mock set-up that re-renders the tests."""
    from lbgnet.afterburner import (DEFAULT_REFINE_NOISE, default_archetype_path,
                                    default_template_path, load_refiner)
    from lbgnet.network import default_model_path, load_network
    from lbgnet.sim.mock import load_mock_setup
    network = load_network(model or default_model_path())
    refiner = (load_refiner(default_template_path(), network.config, network.zrange,
                            noise=DEFAULT_REFINE_NOISE, archetypes=default_archetype_path())
               if refine else None)
    return network, refiner, load_mock_setup()


def bank_loglike(wf, w, models, prior='flat'):
    """log ∫ exp(−χ²(a)/2) da over a ≥ 0 for each object and bank spectrum, without the
    data term.

    Parameters
    ----------
    wf, w : numpy.ndarray
        ivar·flux and ivar of the objects on the bank's pixels, shape (n, npix).
    models : numpy.ndarray
        Bank spectra, shape (m, npix).

    Returns
    -------
    numpy.ndarray
        Shape (n, m).  With ``A = Σ w f t`` and ``B = Σ w t²``, χ²(a) = Σ w f² − 2aA + a²B
        and the integral is ``exp(A²/2B) sqrt(2π/B) Φ(A/√B)`` times exp(−Σ w f²/2), the
        same for every bank spectrum (it cancels in likelihood ratios).  With `prior`
        ``'log'`` the integrand is also divided by a, taken at its best value A/B (Laplace;
        objects whose best amplitude is ≤ 0 get the flat-prior value).
    """
    from scipy.special import log_ndtr
    num = wf @ models.T
    den = np.maximum(w @ (models ** 2).T, 1e-300)
    out = 0.5 * (num ** 2 / den + np.log(2 * np.pi / den)) + log_ndtr(num / np.sqrt(den))
    if prior == 'log':
        out -= np.log(np.where(num > 0, num / den, 1.0))
    return out


def bank_chunks(setup, classes, zrange, nbank, rng, grid=None):
    """Draw and render a bank of exact noiseless spectra, :data:`CHUNK` at a time.

    Parameters
    ----------
    setup : lbgnet.sim.mock.MockSetup
    classes : list of str
    zrange : (float, float)
        LBG redshift range (and that of the galaxies that mimic it).
    nbank : int
    rng : numpy.random.Generator
    grid : lbgnet.config.Grid, optional
        Rebin onto this grid (equal pixel weights) instead of concatenating the arm pixels.

    Yields
    ------
    truth : astropy.table.Table
        The chunk's objects.
    models : numpy.ndarray
        Their spectra scaled to r = 0, float64, shape (chunk, npix).
    """
    from lbgnet.sim.mock import render_models
    from lbgnet.sim.population import draw_population
    bands = setup.instrument.bands
    for start in range(0, nbank, CHUNK):
        truth = draw_population(setup.simcfg, min(CHUNK, nbank - start), rng, classes=classes,
                                zrange=zrange)
        models = render_models(setup, truth)
        if grid is None:
            flat = np.concatenate([models[b] for b in bands], axis=1)
        else:
            from lbgnet.preprocess import accumulate_arms, mean_flux
            fsum, isum, _ = accumulate_arms([setup.instrument.waves[b] for b in bands],
                                            [models[b] for b in bands],
                                            [np.ones_like(models[b]) for b in bands], grid)
            flat = mean_flux(fsum, isum)
        scale = 10.0 ** (0.4 * np.asarray(truth['RMAG'], dtype=np.float64))   # r = 0
        yield truth, flat.astype(np.float64) * scale[:, None]


def class_loglike(setup, classes, zrange, nbank, rng, wf, w, log, name, checkpoints,
                  prior='flat', grid=None):
    """log mean exp(−χ²/2) over a bank of `classes`, per object, at each bank size of
    `checkpoints` (the bank grows by chunks; the smaller banks are its beginnings)."""
    from scipy.special import logsumexp
    total = np.full(wf.shape[0], -np.inf)
    out = {}
    done = 0
    for truth, models in bank_chunks(setup, classes, zrange, nbank, rng, grid):
        total = np.logaddexp(total, logsumexp(bank_loglike(wf, w, models, prior), axis=1))
        done += len(truth)
        if done in checkpoints:
            out[done] = total - np.log(done)
        log.info('%s bank: %d / %d spectra', name, done, nbank)
    return out


def true_weights(instrument, ivar):
    """Inverse of the simulator's true noise variance per pixel (0 where ivar is 0):
    :class:`lbgnet.noise.NoiseModel` of `instrument`.

    Parameters
    ----------
    instrument : lbgnet.sim.instrument.Instrument
    ivar : dict
        band -> pipeline inverse variance, shape (n, nwave).
    """
    from lbgnet.noise import NoiseModel
    model = NoiseModel.from_instrument(instrument)
    return {band: model.effective_ivar(band, instrument.arms[band].wave, iv)
            for band, iv in ivar.items()}


def grid_data(instrument, flux, ivar, grid, noise='true'):
    """Data on the network grid: ivar-weighted means and the inverse of their variance.

    Parameters
    ----------
    instrument : lbgnet.sim.instrument.Instrument
    flux, ivar : dict
        band -> (n, nwave): flux and pipeline ivar.
    grid : lbgnet.config.Grid
    noise : {'true', 'pipeline'}, optional
        The simulator's noise (:func:`lbgnet.preprocess.grid_noise_ivar`: the noise excess
        and one residual per sky line, coherent within a bin, as the simulator draws it;
        treating the residuals as independent per pixel, as before 2026-12-01,
        underestimated the variance of the bins a sky line covers), or the pipeline ivar.

    Returns
    -------
    flux, weight : numpy.ndarray
        Shape (n, nbins); weight 0 in empty bins.
    """
    from lbgnet.noise import NoiseModel
    from lbgnet.preprocess import accumulate_arms, grid_noise_ivar, mean_flux
    bands = list(flux)
    waves = [instrument.waves[b] for b in bands]
    fluxes, ivars = [flux[b] for b in bands], [ivar[b] for b in bands]
    fsum, isum, _ = accumulate_arms(waves, fluxes, ivars, grid)
    if noise == 'pipeline':
        return mean_flux(fsum, isum), isum
    return mean_flux(fsum, isum), grid_noise_ivar(bands, waves, fluxes, ivars, grid,
                                                  NoiseModel.from_instrument(instrument))


def read_test(network, setup, test, grid=False, refiner=None, noise='true'):
    """The spectra of a mock test directory, weighted for the likelihoods, with the
    network's results and the truth.

    Parameters
    ----------
    network : lbgnet.network.Network
    setup : lbgnet.sim.mock.MockSetup
        The simulator that wrote the test (its instrument gives the true noise).
    test : str
        Directory with ``coadd-*.fits`` and ``truth-*.fits``.
    grid : bool
        On the network's 8 A grid (:func:`grid_data`) instead of the arm pixels.
    refiner : lbgnet.refine.Refiner, optional
        Also refine the selected spectra (``z_tpl``; NaN elsewhere).
    noise : {'true', 'pipeline'}, optional
        Weight by the inverse of the simulator's true variance (:func:`true_weights`) or by
        the pipeline ivar alone.

    Returns
    -------
    dict of numpy.ndarray
        One row per spectrum with data: ``wf`` and ``w`` (inverse true variance times flux,
        and inverse true variance), ``cls``, ``is_lbg``, ``rmag``, ``z_true``, the network's
        ``c_lbg``, ``selected`` (IS_LBG) and ``z_lbg``, and ``z_tpl``.
    """
    from lbgnet.afterburner import refine_selected
    from lbgnet.evaluate import LBG_CLASS
    from lbgnet.io.coadd import read_coadd
    bands = setup.instrument.bands
    keys = ('wf', 'w', 'is_lbg', 'cls', 'rmag', 'z_true', 'c_lbg', 'selected', 'z_lbg', 'z_tpl')
    parts = {k: [] for k in keys}
    for path, info, good, truth, raw, res in predict_test_files(
            network, test, None if refiner is None else refiner.noise):
        coadd = read_coadd(path, read_fibermap=False, read_extra=False)
        keep = np.flatnonzero(good)
        ivar = {b: coadd.ivar[b][keep].astype(np.float64) for b in bands}
        flux = {b: coadd.flux[b][keep].astype(np.float64) for b in bands}
        if grid:
            gflux, gweight = grid_data(setup.instrument, flux, ivar, network.config.grid, noise)
            parts['wf'].append(gweight * gflux)
            parts['w'].append(gweight)
        else:
            weight = true_weights(setup.instrument, ivar) if noise == 'true' else ivar
            parts['wf'].append(np.concatenate([weight[b] * flux[b] for b in bands], axis=1))
            parts['w'].append(np.concatenate([weight[b] for b in bands], axis=1))
        parts['cls'].append(np.asarray(truth['CLASS']).astype(str)[keep])
        parts['is_lbg'].append(parts['cls'][-1] == LBG_CLASS)
        parts['rmag'].append(np.asarray(truth['RMAG'], dtype=np.float64)[keep])
        parts['z_true'].append(np.asarray(truth['Z_TRUE'], dtype=np.float64)[keep])
        parts['c_lbg'].append(np.asarray(res['C_LBG'], dtype=np.float64)[keep])
        parts['selected'].append(np.asarray(res['IS_LBG'], dtype=bool)[keep])
        parts['z_lbg'].append(np.asarray(res['Z_LBG'], dtype=np.float64)[keep])
        z_tpl = (refine_selected(refiner, info, res, raw.get('conf'))['Z_TPL']
                 if refiner is not None else np.full(len(good), np.nan))
        parts['z_tpl'].append(z_tpl[keep])
    return {k: np.concatenate(v) for k, v in parts.items()}


def top_classes(is_lbg, classes, score):
    """Classes among the N_LBG highest scores (the purity = efficiency selection)."""
    top = np.argsort(-score, kind='stable')[:int(is_lbg.sum())]
    names, counts = np.unique(classes[top], return_counts=True)
    return {str(c): int(n) for c, n in zip(names, counts)}


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from desiutil.log import get_logger
    from lbgnet.evaluate import DEPTH_LIMITS, LBG_CLASS, pe_score
    log = get_logger()
    network, _, setup = load_inputs(args.model)
    data = read_test(network, setup, args.test, args.grid, noise=args.noise)
    contaminants = [c for c in setup.simcfg['simulation']['class_fractions'] if c != LBG_CLASS]
    zrange = (args.zmin, args.zmax)
    checkpoints = sorted({n for n in (args.nbank // 8, args.nbank // 4, args.nbank // 2,
                                      args.nbank) if n > 0 and n % CHUNK == 0} | {args.nbank})
    rng = np.random.default_rng(args.seed)
    grid = network.config.grid if args.grid else None
    ll_lbg = class_loglike(setup, [LBG_CLASS], zrange, args.nbank, rng, data['wf'], data['w'],
                           log, 'LBG', checkpoints, args.amplitude_prior, grid)
    ll_con = class_loglike(setup, contaminants, zrange, args.nbank, rng, data['wf'], data['w'],
                           log, 'contaminant', checkpoints, args.amplitude_prior, grid)
    is_lbg, rmag = data['is_lbg'], data['rmag']
    out = {'test': os.path.basename(os.path.normpath(args.test)), 'zrange': list(zrange),
           'seed': args.seed, 'amplitude_prior': args.amplitude_prior, 'grid': bool(args.grid),
           'noise': args.noise,
           'n_lbg': int(is_lbg.sum()), 'n_contaminant': int((~is_lbg).sum()),
           'by_depth': {}}
    for limit in DEPTH_LIMITS:
        cut = rmag <= limit
        row = {'network': pe_score(is_lbg[cut], data['c_lbg'][cut])[0],
               'bayes_by_bank_size': {str(n): pe_score(is_lbg[cut], (ll_lbg[n] - ll_con[n])[cut])[0]
                                      for n in checkpoints}}
        out['by_depth'][str(limit)] = row
        log.info('r <= %.1f: purity=efficiency score, network %.3f; Bayes estimate %s '
                 '(bank sizes %s)', limit, row['network'],
                 ' / '.join(f'{v:.3f}' for v in row['bayes_by_bank_size'].values()),
                 ' / '.join(row['bayes_by_bank_size']))
    ratio = ll_lbg[checkpoints[-1]] - ll_con[checkpoints[-1]]
    out['top_n_lbg'] = {who: top_classes(is_lbg, data['cls'], score)
                        for who, score in (('network', data['c_lbg']), ('bayes', ratio))}
    for who, row in out['top_n_lbg'].items():
        log.info('%s: among the %d highest scores (r <= 25), %s', who, int(is_lbg.sum()),
                 ', '.join(f'{c} {n}' for c, n in row.items()))
    write_json(args.json, out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
