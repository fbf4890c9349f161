#!/usr/bin/env python
"""How many wrong redshifts could any fit avoid?  An oracle bound on the mock tests.

The mock files are re-rendered exactly from their truth tables (every random choice of a
spectrum, IGM included, is stored there), so for each selected true LBG the *exact*
noiseless spectrum is known.  For the selected true LBGs whose refined redshift ``Z_TPL``
is wrong (|Δz| ≥ 0.05), this script compares the χ² (free amplitude, every arm pixel of
the coadd) of the exact spectrum placed at ``Z_TPL`` with its lowest χ² over redshifts
within 0.05 of the truth (step 5e-4, the truth included).  Where the wrong redshift fits
better, a maximum-likelihood fit that knew each object's exact spectrum would be wrong
too: the number of such objects bounds the fraction with |Δz| < 0.05 that any
maximum-likelihood method reaches on the same selection (an upper bound: the oracle is
told the exact spectrum, IGM realisation included, and is only offered two regions).

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/oracle_redshift_bound.py \
        --tests runs/test-lowz runs/test-midz runs/test-highz [--model FILE] [--json FILE]

Each test directory holds ``coadd-*.fits`` and ``truth-*.fits`` from ``desi_lbg_mock`` with
the default mock configuration (the one re-rendered here).
"""
import argparse
import os

import numpy as np
from benchutil import predict_test_files, write_json
from oracle_class_bound import load_inputs

#: Half width (in z) of the region around the truth that counts as right, and its step.
DZ_GOOD, DZ_STEP = 0.05, 5e-4
PCT = (10, 25, 50, 75, 90)


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--tests', nargs='+', required=True, help='test directories')
    parser.add_argument('--model', help='model file [the shipped model]')
    parser.add_argument('--json', help='write the numbers here')
    return parser.parse_args(options)


def amplitude_chi2(flux, ivar, model):
    """χ² of ``a * model`` against `flux` with the best amplitude a, per spectrum.

    flux, ivar, model : dict band -> (n, nwave) arrays.
    """
    num = sum(np.sum(ivar[b] * flux[b] * model[b], axis=1) for b in flux)
    den = sum(np.sum(ivar[b] * model[b] ** 2, axis=1) for b in flux)
    amp = num / np.maximum(den, 1e-300)
    return sum(np.sum(ivar[b] * (flux[b] - amp[:, None] * model[b]) ** 2, axis=1) for b in flux)


def oracle_gap(setup, truth, flux, ivar, z_wrong):
    """χ²(exact spectrum at `z_wrong`) − min χ² within ``DZ_GOOD`` of the truth, shape (n,)."""
    from lbgnet.sim.mock import render_models
    moved = truth.copy()
    z_true = np.asarray(truth['Z_TRUE'], dtype=np.float64)
    moved['Z_TRUE'] = z_wrong
    at_wrong = amplitude_chi2(flux, ivar, render_models(setup, moved))
    near = np.full(len(truth), np.inf)
    nstep = int(round(DZ_GOOD / DZ_STEP))
    for k in range(-nstep + 1, nstep):
        moved['Z_TRUE'] = z_true + k * DZ_STEP
        near = np.minimum(near, amplitude_chi2(flux, ivar, render_models(setup, moved)))
    return at_wrong - near


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from desiutil.log import get_logger
    from lbgnet.afterburner import refine_selected
    from lbgnet.evaluate import LBG_CLASS
    from lbgnet.io.coadd import read_coadd
    from lbgnet.sim.mock import render_models
    log = get_logger()
    network, refiner, setup = load_inputs(args.model, refine=True)
    out = {}
    for test in args.tests:
        nsel, nwrong, gaps, chi2_pix = 0, 0, [], []
        for path, info, good, truth, raw, res in predict_test_files(network, test, refiner.noise):
            z_tpl = refine_selected(refiner, info, res, raw.get('conf'))['Z_TPL']
            z_true = np.asarray(truth['Z_TRUE'], dtype=np.float64)
            sel = (good & res['IS_LBG'] & np.isfinite(z_tpl)
                   & (np.asarray(truth['CLASS']).astype(str) == LBG_CLASS))
            wrong = np.flatnonzero(sel & (np.abs(z_tpl - z_true) >= DZ_GOOD))
            nsel += int(sel.sum())
            nwrong += wrong.size
            coadd = read_coadd(path, read_fibermap=False, read_extra=False)
            flux = {b: coadd.flux[b][wrong].astype(np.float64) for b in coadd.bands}
            ivar = {b: coadd.ivar[b][wrong].astype(np.float64) for b in coadd.bands}
            gaps.append(oracle_gap(setup, truth[wrong], flux, ivar, z_tpl[wrong]))
            exact = render_models(setup, truth[wrong])
            npix = sum(np.count_nonzero(ivar[b] > 0, axis=1) for b in ivar)
            chi2_pix.append(amplitude_chi2(flux, ivar, exact) / np.maximum(npix, 1))
        gaps = np.concatenate(gaps)
        nbetter = int(np.count_nonzero(gaps < 0))
        name = os.path.basename(os.path.normpath(test))
        out[name] = {'n_selected_true_lbg': nsel, 'n_wrong_z_tpl': nwrong,
                     'frac_dz_lt_0p05_z_tpl': 1 - nwrong / max(nsel, 1),
                     'n_wrong_fits_better_than_truth': nbetter,
                     'bound_frac_dz_lt_0p05': 1 - nbetter / max(nsel, 1),
                     'gap_percentiles': np.percentile(gaps, PCT).tolist() if gaps.size else [],
                     'gap_below_9': float(np.mean(gaps < 9)) if gaps.size else float('nan'),
                     'chi2_per_pixel_exact_median': float(np.median(np.concatenate(chi2_pix)))}
        m = out[name]
        log.info('%s: %d selected true LBGs, %d with a wrong Z_TPL (|dz|<0.05: %.3f); the exact '
                 'spectrum fits better at the wrong z for %d -> bound %.3f; gap percentiles %s, '
                 '%.0f%% below 9; chi2/pixel of the exact spectrum %.2f', name, nsel, nwrong,
                 m['frac_dz_lt_0p05_z_tpl'], nbetter, m['bound_frac_dz_lt_0p05'],
                 np.round(m['gap_percentiles'], 1), 100 * m['gap_below_9'],
                 m['chi2_per_pixel_exact_median'])
    write_json(args.json, out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
