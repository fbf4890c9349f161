#!/usr/bin/env python
"""Does re-choosing the lines averaged into Z_LBG help?  A check on the held-out tests.

:func:`lbgnet.postprocess.combine_lines` averages the lines that agree with the winning
proposal.  Agreement is not transitive: a scattered right line can agree with the other
right lines and with a wrong one, win the most support, and bring the wrong line into the
mean.  This script runs the network on held-out mock tests (as ``desi_lbg_evaluate
--coadd`` does), counts the selected true LBGs whose averaged lines hold a disagreeing
pair, and compares the shipped rule with three others on the same line outputs:

* ``recentred``: the lines within ``agree_tol`` of the combined redshift (one iteration);
* ``recentred/2``: the same within ``agree_tol``/2;
* ``clique``: the member farthest from the mean dropped until all agree pairwise.

It prints, per test, the fraction of \\|Δz\\| < 0.05, σ_NMAD of Δz/(1+z) and the fraction
with \\|Δz\\|/(1+z) > 0.01.  Results: ``doc/model.rst`` (``Z_LBG``).

Usage::

    python benchmarks/zlbg_membership.py runs/test-lowz runs/test-midz runs/test-highz

(the directories of ``desi_lbg_mock``, the model card's held-out tests.)
"""
import argparse
import glob
import os

import numpy as np


def weighted_mean(members, weight, z, fallback):
    """Confidence-weighted mean of the `members` lines; `fallback` where there is none."""
    w = np.where(members, weight, 0.0)
    total = w.sum(axis=1)
    zsum = (w * np.where(members, z, 0.0)).sum(axis=1)
    return np.where(total > 0, zsum / np.where(total > 0, total, 1.0), fallback)


def alternatives(c_lines, z_lines, config, agree_tol, line_floor):
    """Z_LBG by the shipped rule and the alternatives, and the rows whose members disagree.

    Returns
    -------
    dict
        name -> redshifts, shape (nspec,), and ``'chained'`` -> bool, shape (nspec,).
    """
    from lbgnet.postprocess import combine_lines
    z0, _, _ = combine_lines(c_lines, z_lines, config, agree_tol, line_floor)
    usable = np.isfinite(z_lines) & (z_lines > -1.0)
    weight = np.where((np.clip(c_lines, 0, 1) >= line_floor) & usable, np.clip(c_lines, 0, 1), 0.0)
    zf = np.where(usable, z_lines, 0.0)

    def near(zc, tol):
        return (np.abs(zf - zc[:, None]) / (1.0 + zc[:, None]) < tol) & (weight > 0)

    members = near(z0, agree_tol)
    rel = np.abs(zf[:, :, None] - zf[:, None, :]) / (1.0 + zf[:, :, None])
    chained = ((rel >= agree_tol) & members[:, :, None] & members[:, None, :]).any(axis=(1, 2))
    out = {'shipped': z0, 'chained': chained,
           'recentred': weighted_mean(members, weight, zf, z0),
           'recentred/2': weighted_mean(near(z0, agree_tol / 2), weight, zf, z0)}
    clique = members.copy()
    for _ in range(z_lines.shape[1]):
        zm = weighted_mean(clique, weight, zf, z0)
        zmax = np.where(clique, zf, -np.inf).max(axis=1)
        zmin = np.where(clique, zf, np.inf).min(axis=1)
        spread = (zmax - zmin) / (1.0 + zmin) >= agree_tol
        if not spread.any():
            break
        far = np.argmax(np.where(clique, np.abs(zf - zm[:, None]), -1.0), axis=1)
        clique[np.flatnonzero(spread), far[spread]] = False
    out['clique'] = weighted_mean(clique, weight, zf, z0)
    return out


def summary(z_pred, z_true):
    """|Δz|<0.05 fraction, σ_NMAD and > 0.01 fraction of Δz/(1+z) (NaN counts as a failure)."""
    dz = (z_pred - z_true) / (1.0 + z_true)
    finite = dz[np.isfinite(dz)]
    nmad = 1.4826 * np.median(np.abs(finite - np.median(finite)))
    return (f'|dz|<0.05 {np.mean(np.abs(z_pred - z_true) < 0.05):.4f}  sigma_NMAD {nmad:.3e}  '
            f'>0.01 {np.mean(~(np.abs(dz) <= 0.01)):.4f}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('tests', nargs='+', help='directories of desi_lbg_mock test files')
    parser.add_argument('--engine', default='numpy', choices=('numpy', 'keras'))
    args = parser.parse_args()
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from astropy.table import Table
    from lbgnet.catalog import lookup
    from lbgnet.evalinputs import predict_coadd
    from lbgnet.network import default_model_path, load_network
    from lbgnet.postprocess import postprocess_options
    network = load_network(default_model_path(), args.engine, threads=os.cpu_count())
    opts = postprocess_options(network.config)
    for test in args.tests:
        c_all, z_all, zt_all = [], [], []
        for path in sorted(glob.glob(os.path.join(test, 'coadd-*.fits'))):
            tid, res, *_ = predict_coadd(path, network, None, None)
            truth = Table.read(path.replace('coadd-', 'truth-'))
            row = lookup(np.asarray(truth['TARGETID']), np.asarray(tid))
            is_lbg = np.asarray(truth['CLASS']).astype(str)[row] == 'LBG'
            sel = np.asarray(res['IS_LBG'], dtype=bool) & is_lbg
            c_all.append(np.asarray(res['C_LINES'], dtype=np.float64)[sel])
            z_all.append(np.asarray(res['Z_LINES'], dtype=np.float64)[sel])
            zt_all.append(np.asarray(truth['Z_TRUE'], dtype=np.float64)[row][sel])
        z_true = np.concatenate(zt_all)
        out = alternatives(np.concatenate(c_all), np.concatenate(z_all), network.config,
                           opts['agree_tol'], opts['line_floor'])
        print(f'{test}: {z_true.size} selected true LBGs, members with a disagreeing pair: '
              f'{np.mean(out["chained"]):.3f}')
        for name in ('shipped', 'recentred', 'recentred/2', 'clique'):
            print(f'  {name:12s} {summary(out[name], z_true)}')


if __name__ == '__main__':
    main()
