#!/usr/bin/env python
"""Does the template refinement depend on the template being the simulator's own?

The shipped refinement template (``rrtemplate-GALAXY-LBG``) is a PCA of the simulator's
parametric LBGs, and the held-out tests come from the same simulator, so its gain on them
is partly a best case.  This script refines the same selected objects with a template
independent of the simulator — the Shapley et al. (2003) composite (reference data),
converted to f_λ, extended redward of its last wavelength with the power law fitted over
1650–1950 Å, zero below 912 Å, no IGM added (the composite has the mean forest of its
z ≈ 3 galaxies); basis: the composite, the composite × ln(λ/1500 Å) (UV slope) and a
Gaussian Lyα line (emission or absorption) — and compares the redshift metrics.

It also asks whether the wrong redshifts are the network's fault or the data's: for the
selected true LBGs whose ``Z_LBG`` is wrong (|Δz| > 0.05), the χ² of the shipped template
at the true redshift (lowest within 0.003 in Δz/(1+z)) minus the lowest χ² over the whole
trial grid, and minus the χ² at ``Z_LBG`` (percentiles 10/25/50/75/90).

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/refine_template_check.py \
        --tests runs/test-lowz runs/test-midz runs/test-highz [--model FILE] [--json FILE]

Each test directory holds ``coadd-*.fits`` and ``truth-*.fits`` (``desi_lbg_mock``).
"""
import argparse
import os

import numpy as np
from benchutil import predict_test_files, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSITE = os.path.join(ROOT, '..', 'shared', 'reference', 'lbg-composite')
PCT = (10, 25, 50, 75, 90)


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--tests', nargs='+', required=True, help='test directories')
    parser.add_argument('--model', help='model file [the shipped model]')
    parser.add_argument('--composite', default=COMPOSITE, help='[%(default)s]')
    parser.add_argument('--json', help='write the numbers here')
    return parser.parse_args(options)


def composite_template(path):
    """The composite basis described in the module docstring (RefineTemplate)."""
    from lbgnet.io.templates import read_lbg_composite
    from lbgnet.refine import template_from_basis
    wave, fnu = read_lbg_composite(path)
    flam = fnu / wave ** 2
    fit = (wave > 1650) & (wave < 1950)
    slope, offset = np.polyfit(np.log(wave[fit]), np.log(np.clip(flam[fit], 1e-300, None)), 1)
    rest = np.arange(600.0, 3800.0, 0.5)
    cont = np.interp(rest, wave, flam, left=0.0, right=0.0)
    red = rest > wave[-1]
    cont[red] = np.exp(offset) * rest[red] ** slope
    cont[rest < 912.0] = 0.0
    cont /= cont[(rest > 1420) & (rest < 1480)].mean()
    lya = np.exp(-0.5 * ((rest - 1216.9) / 3.0) ** 2)
    return template_from_basis(rest, np.array([cont, cont * np.log(rest / 1500.0), lya]), 3)


def chi2_gaps(refiner, flux, ivar, z_true, z_lbg, tol=0.003):
    """χ²(truth) − min χ² and χ²(truth) − χ²(z_lbg), shape (2, n) (module docstring)."""
    from lbgnet.refine import chi2_scan
    chi2 = chi2_scan(flux, ivar, refiner.tbasis)
    zs = refiner.zs[None, :]

    def near(z):
        return np.where(np.abs(zs - z[:, None]) / (1 + z[:, None]) < tol, chi2, np.inf).min(axis=1)
    at_true = near(z_true)
    return np.array([at_true - chi2.min(axis=1), at_true - near(z_lbg)])


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from desiutil.log import get_logger
    from lbgnet.afterburner import default_template_path, load_refiner, refine_selected
    from lbgnet.network import default_model_path, load_network
    from lbgnet.evaluate import LBG_CLASS, redshift_metrics
    from lbgnet.refine import Refiner
    log = get_logger()
    network = load_network(args.model or default_model_path())
    cfg = network.config
    refiners = {'shipped': load_refiner(default_template_path(), cfg, network.zrange),
                'composite': Refiner.build(composite_template(args.composite), cfg,
                                           network.zrange)}
    out = {}
    for test in args.tests:
        z_true, z_pred, gaps = [], {'Z_LBG': []} | {k: [] for k in refiners}, []
        for _, info, good, truth, raw, res in predict_test_files(network, test):
            sel = good & res['IS_LBG'] & (np.asarray(truth['CLASS']).astype(str) == LBG_CLASS)
            z_true.append(np.asarray(truth['Z_TRUE'])[sel])
            z_pred['Z_LBG'].append(res['Z_LBG'][sel])
            for name, refiner in refiners.items():
                z_pred[name].append(refine_selected(refiner, info, res, raw.get('conf'))['Z_TPL'][sel])
            wrong = sel & (np.abs(res['Z_LBG'] - np.asarray(truth['Z_TRUE'])) > 0.05)
            gaps.append(chi2_gaps(refiners['shipped'], info.flux[wrong], info.ivar[wrong],
                                  np.asarray(truth['Z_TRUE'])[wrong], res['Z_LBG'][wrong]))
        z_true = np.concatenate(z_true)
        name = os.path.basename(os.path.normpath(test))
        out[name] = {k: redshift_metrics(z_true, np.concatenate(v)) for k, v in z_pred.items()}
        gaps = np.concatenate(gaps, axis=1)
        out[name]['wrong_z_lbg_chi2_gaps'] = {
            'n': int(gaps.shape[1]),
            'true_minus_min': np.percentile(gaps[0], PCT).tolist(),
            'true_minus_at_z_lbg': np.percentile(gaps[1], PCT).tolist()}
        for key, m in out[name].items():
            if key == 'wrong_z_lbg_chi2_gaps':
                log.info('%s: %d wrong Z_LBG; chi2(true) - min %s; chi2(true) - chi2(Z_LBG) %s',
                         name, m['n'], np.round(m['true_minus_min'], 1),
                         np.round(m['true_minus_at_z_lbg'], 1))
                continue
            log.info('%s %-9s n=%d |dz|<0.05 %.3f  sigma_NMAD %.2e  median %.1e', name, key,
                     m['n'], m['frac_dz_lt_0p05'], m['sigma_nmad'], m['median_dz_1pz'])
    write_json(args.json, out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
