#!/usr/bin/env python
"""
Does the Redrock rerun with CNN priors and the LBG template improve LBG redshifts?

On a ``desi_lbg_mock`` data set (LBGs only by default, with RESOLUTION):

1. run the real ``rrdesi`` with the standard templates available to us
   (``--rrdesi-templates``: QSO and STAR; no GALAXY template is available here) →
   Z_RR as production would have it without lbgnet;
2. run ``desi_lbg_afterburner --rerun-redrock`` with that Redrock file, the model
   ``--model`` and the LBG template ``--template`` → Z_LBG (CNN) and Z_NEW (rerun);
3. compare with the truth (Z_TRUE) for the true LBGs, both all of them and those the CNN
   selected (IS_LBG): median |Δz|/(1+z), σ_NMAD, fraction with |Δv| < 1000 km/s and
   catastrophic fraction (|Δz| > 0.05); the mock's own simulated Z_RR is listed too.

Writes a JSON summary and a PNG of the Δz/(1+z) distributions.

Usage::

    PYTHONPATH=py python benchmarks/eval_rerun.py --workdir /tmp/lbgrerun --model M \\
        [--template py/lbgnet/data/rrtemplate-GALAXY-LBG-v0.2.fits]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchutil import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, '..', 'shared', 'reference', 'redrock-templates')
C_KMS = 299792.458


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workdir', required=True)
    parser.add_argument('--model', help='afterburner model [shipped model]')
    parser.add_argument('--template', help='LBG Redrock template file [the shipped one, newest '
                        'version in py/lbgnet/data]')
    parser.add_argument('--nspec', type=int, default=200)
    parser.add_argument('--seed', type=int, default=777)
    parser.add_argument('--classes', nargs='+', default=['LBG'])
    parser.add_argument('--rrdesi-templates', default=REFERENCE)
    parser.add_argument('--prepare-only', action='store_true',
                        help='only make the mock and the rrdesi file (slow, model-independent)')
    parser.add_argument('--json', help='output JSON')
    parser.add_argument('--png', help='output PNG')
    args = parser.parse_args(options)
    if args.template is None:
        from lbgnet.io.rrtemplate import default_template_path
        args.template = default_template_path()
    return args


def run(cmd, env):
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise RuntimeError(f'{os.path.basename(cmd[1])} failed ({proc.returncode})')
    return time.time() - t0


def stats(z, ztrue):
    """Accuracy of `z` against `ztrue` (NaN = no answer counts as a failure)."""
    dz = (z - ztrue) / (1 + ztrue)
    ok = np.isfinite(dz)
    adz = np.abs(dz[ok])
    nmad = 1.4826 * np.median(np.abs(dz[ok] - np.median(dz[ok]))) if ok.any() else np.nan
    n = ztrue.size
    return dict(n=int(n), answered=int(ok.sum()), median_abs_dz=float(np.median(adz)) if ok.any() else None,
                sigma_nmad=float(nmad),
                frac_within_1000kms=float(np.sum(adz * C_KMS < 1000.0) / n),
                frac_within_0p005=float(np.sum(adz < 0.005) / n),
                catastrophic_frac=float((np.sum(np.abs(z[ok] - ztrue[ok]) > 0.05) + (n - ok.sum())) / n))


def main(args):
    from lbgnet.io.catalog import read_catalog
    from lbgnet.io.mock import read_truth
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, 'py'), TF_CPP_MIN_LOG_LEVEL='2')
    py, bindir = sys.executable, os.path.join(ROOT, 'bin')
    mockdir = os.path.join(args.workdir, 'mock')
    if not os.path.isdir(mockdir):
        run([py, os.path.join(bindir, 'desi_lbg_mock'), '--outdir', mockdir, '--nspec',
             str(args.nspec), '--nfiles', '1', '--seed', str(args.seed), '--classes', *args.classes], env)
    coadd = [os.path.join(mockdir, f) for f in os.listdir(mockdir) if f.startswith('coadd-')][0]
    rrfile = os.path.join(args.workdir, 'redrock-real.fits')
    out = {}
    if not os.path.exists(rrfile):
        templates = sorted(os.path.join(args.rrdesi_templates, f)
                           for f in os.listdir(args.rrdesi_templates) if f.startswith('rrtemplate-'))
        code = 'import sys; from lbgnet.redrock_rerun import import_rrdesi; import_rrdesi()(sys.argv[1:])'
        out['rrdesi_s'] = run([py, '-c', code, '-i', coadd, '-o', rrfile, '--mp', str(os.cpu_count()),
                               '-t', *templates], env)
    if args.prepare_only:
        print(json.dumps(out))
        return 0
    catfile = os.path.join(args.workdir, 'lbg_cnn.fits')
    cmd = [py, os.path.join(bindir, 'desi_lbg_afterburner'), '--coadd', coadd, '--redrock', rrfile,
           '--output', catfile, '--rerun-redrock', '--templates', args.template, '--overwrite']
    out['afterburner_rerun_s'] = run(cmd + (['--model', args.model] if args.model else []), env)
    cat, hdr = read_catalog(catfile)
    truth = read_truth(coadd.replace('coadd-', 'truth-'))
    order = np.argsort(np.asarray(truth['TARGETID']))
    pos = order[np.searchsorted(np.asarray(truth['TARGETID'])[order], cat['TARGETID'])]
    cls = np.asarray(truth['CLASS'])[pos].astype(str)
    ztrue = np.asarray(truth['Z_TRUE'], dtype=np.float64)[pos]
    mockrr = read_catalog_column(coadd.replace('coadd-', 'redrock-'), cat['TARGETID'])
    lbg = cls == 'LBG'
    sel = lbg & np.asarray(cat['IS_LBG'])
    for name, mask in (('all_true_lbg', lbg), ('selected_true_lbg', sel)):
        out[name] = {col: stats(np.asarray(vals, dtype=np.float64)[mask], ztrue[mask])
                     for col, vals in (('Z_RR', cat['Z_RR']), ('Z_RR_MOCK', mockrr),
                                       ('Z_LBG', cat['Z_LBG']), ('Z_NEW', cat['Z_NEW']))}
    out['efficiency'] = float(sel.sum() / max(lbg.sum(), 1))
    out['model_sha256'] = hdr.get('LBGMSHA')
    out['template'] = os.path.basename(args.template)
    if args.png:
        plot(args.png, cat, ztrue, sel, mockrr)
    print(json.dumps(out, indent=1))
    write_json(args.json, out)
    return 0


def read_catalog_column(path, targetid):
    """Z of the mock's simulated Redrock file, in `targetid` order."""
    import fitsio
    rr = fitsio.read(path, 'REDSHIFTS', columns=['TARGETID', 'Z'])
    order = np.argsort(rr['TARGETID'])
    return rr['Z'][order][np.searchsorted(rr['TARGETID'][order], targetid)]


def plot(path, cat, ztrue, sel, mockrr):
    """Cumulative |Δz|/(1+z) of the selected true LBGs, and Δz/(1+z) against z."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    grid = np.logspace(-5, 0, 200)
    for col, vals in (('Z_RR (rrdesi, QSO+STAR templates)', cat['Z_RR']),
                      ('Z_LBG (CNN)', cat['Z_LBG']), ('Z_NEW (Redrock rerun, CNN prior)', cat['Z_NEW'])):
        dz = ((np.asarray(vals, dtype=np.float64) - ztrue) / (1 + ztrue))[sel]
        adz = np.where(np.isfinite(dz), np.abs(dz), np.inf)
        axes[0].plot(grid, (adz[:, None] < grid).mean(axis=0), label=col)
        axes[1].plot(ztrue[sel], np.clip(dz, -0.02, 0.02), '.', ms=3, label=col.split()[0])
    axes[0].axvline(1000.0 / C_KMS, color='gray', lw=0.8, ls=':')
    axes[0].set_xscale('log')
    axes[0].set_xlabel('|Δz|/(1+z)')
    axes[0].set_ylabel('fraction of selected true LBGs below')
    axes[0].legend(fontsize=7, loc='upper left')
    axes[1].set_xlabel('z true')
    axes[1].set_ylabel('Δz/(1+z) (clipped at ±0.02)')
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == '__main__':
    sys.exit(main(parse()))
