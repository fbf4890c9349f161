#!/usr/bin/env python
"""
Benchmark of desi_lbg_afterburner (issue 6).

Measures, in one run:

1. end-to-end throughput on ``--nfiles`` healpix-style coadds of ``--nspec`` spectra,
   model loaded once, (a) one process (TensorFlow on all cores) and (b) ``mpiexec -n 2``
   (one thread per rank): spectra/s of the file loop (read → grid → predict →
   post-process → catalogue → write) and wall time of the whole command;
2. ``rrdesi`` on the first of those files (``--mp`` = number of cores, templates from
   ``--rrdesi-templates``, by default ../shared/reference/redrock-templates) and the
   afterburner alone on the same file: the time ratio;
3. peak resident memory of the afterburner on one ``--big``-spectrum file.

Mock files: the simple spectra of :mod:`lbgnet.example` on the DESI arm grids (the
content does not change the CNN's cost), with RESOLUTION, EXP_FIBERMAP and SCORES so
that rrdesi can read them.  The model is ``--model`` or, by default, the network of
``--config`` with random weights (same cost as trained weights).

Usage::

    PYTHONPATH=py python benchmarks/bench_afterburner.py --workdir /tmp/lbgbench
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

import numpy as np
from astropy.table import Table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, '..', 'shared', 'reference', 'redrock-templates')


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workdir', required=True, help='scratch directory for files')
    parser.add_argument('--nfiles', type=int, default=8, help='files of --nspec [%(default)s]')
    parser.add_argument('--nspec', type=int, default=500, help='spectra per file [%(default)s]')
    parser.add_argument('--big', type=int, default=5000, help='spectra of the memory test file')
    parser.add_argument('--model', help='model file [random-weight network of --config]')
    parser.add_argument('--config', default='lbgnet-default.yaml', help='[%(default)s]')
    parser.add_argument('--rrdesi-templates', default=REFERENCE, help='[%(default)s]')
    parser.add_argument('--skip-rrdesi', action='store_true')
    parser.add_argument('--json', help='write the numbers here')
    return parser.parse_args(options)


def make_file(path, nspec, seed, resolution=True):
    from lbgnet.config import load_config
    from lbgnet.example import example_spectra
    from lbgnet.io import minimal_fibermap, write_coadd
    rng = np.random.default_rng(seed)
    wave, flux, ivar, _ = example_spectra(load_config(), nspec, rng)
    tid = np.arange(nspec, dtype=np.int64) + 10_000 * (seed + 1)
    fm = minimal_fibermap(tid, ra=rng.uniform(0, 1, nspec), dec=rng.uniform(0, 1, nspec))
    fm['TILEID'] = np.ones(nspec, dtype=np.int32)
    fm['COADD_NUMEXP'] = np.ones(nspec, dtype=np.int16)
    extra = {}
    if resolution:
        efm = Table(dict(TARGETID=tid, TILEID=np.ones(nspec, np.int32), EXPID=np.ones(nspec, np.int32)))
        scores = Table(dict(TARGETID=tid, TSNR2_LRG=np.ones(nspec, np.float32)))
        off = np.arange(5, -6, -1)
        kern = np.exp(-0.5 * off ** 2)
        kern /= kern.sum()
        res = {b: np.broadcast_to(kern[None, :, None], (nspec, 11, w.size)).astype(np.float32)
               for b, w in wave.items()}
        extra = dict(resolution=res, exp_fibermap=efm, scores=scores)
    write_coadd(path, wave, flux, ivar, fm, meta=dict(SURVEY='main', PROGRAM='dark'), **extra)
    rr = np.zeros(nspec, dtype=[('TARGETID', 'i8'), ('Z', 'f8'), ('ZERR', 'f8'), ('ZWARN', 'i8'),
                                ('CHI2', 'f8'), ('COEFF', 'f8', (10,)), ('SPECTYPE', 'S6'),
                                ('SUBTYPE', 'S20'), ('DELTACHI2', 'f8')])
    rr['TARGETID'] = tid[::-1]
    rr['SPECTYPE'] = 'GALAXY'
    import fitsio
    with fitsio.FITS(path.replace('coadd-', 'redrock-'), 'rw', clobber=True) as fx:
        fx.write(rr, extname='REDSHIFTS')


def make_model(path, config):
    from lbgnet.config import load_config
    from lbgnet.io.modelfile import save_model
    from lbgnet.model import build_model
    import keras
    keras.utils.set_random_seed(0)
    cfg = load_config(config)
    return save_model(path, build_model(cfg), cfg, {'purpose': 'benchmark, random weights'})[0]


def run(cmd, env=None):
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise RuntimeError(f'{cmd[:3]} failed with status {proc.returncode}')
    return wall, proc.stdout + proc.stderr


def rate(log):
    m = re.search(r'processing: (\d+) spectra in ([\d.]+) s on (\d+) rank', log)
    return int(m.group(1)), float(m.group(2))


def main(args):
    os.makedirs(args.workdir, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, 'py'), TF_CPP_MIN_LOG_LEVEL='2')
    py, bindir = sys.executable, os.path.join(ROOT, 'bin')
    mpiexec = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
    indir = os.path.join(args.workdir, 'in')
    os.makedirs(indir, exist_ok=True)
    files = [os.path.join(indir, f'coadd-main-dark-{i}.fits') for i in range(args.nfiles)]
    for i, path in enumerate(files):
        if not os.path.exists(path):
            make_file(path, args.nspec, i)
    model = args.model or make_model(os.path.join(args.workdir, 'model.weights.h5'), args.config)
    out = dict(ncores=os.cpu_count(), nfiles=args.nfiles, nspec=args.nspec, model=model)
    ab = [py, os.path.join(bindir, 'desi_lbg_afterburner'), '--model', model, '--overwrite']

    wall, log = run(ab + ['--input-dir', indir, '--outdir', os.path.join(args.workdir, 'o1')], env)
    n, secs = rate(log)
    out['serial'] = dict(spectra=n, loop_s=secs, spectra_per_s=n / secs, command_wall_s=wall)
    env1 = dict(env, OMP_NUM_THREADS='1', TF_NUM_INTRAOP_THREADS='1', TF_NUM_INTEROP_THREADS='1')
    wall, log = run([mpiexec, '-n', '2'] + ab + ['--mpi', '--input-dir', indir, '--outdir',
                                                 os.path.join(args.workdir, 'o2')], env1)
    n, secs = rate(log)
    out['mpi2'] = dict(spectra=n, loop_s=secs, spectra_per_s=n / secs, command_wall_s=wall)

    one = files[0]
    wall, log = run(ab + ['--coadd', one, '--output', os.path.join(args.workdir, 'one.fits')], env)
    n, secs = rate(log)
    out['one_file'] = dict(spectra=n, loop_s=secs, command_wall_s=wall)
    if not args.skip_rrdesi:
        code = ('import sys, numpy as np; np.NaN = np.nan; from redrock.external.desi import rrdesi; '
                'rrdesi(sys.argv[1:])')
        templates = sorted(os.path.join(args.rrdesi_templates, f)
                           for f in os.listdir(args.rrdesi_templates) if f.startswith('rrtemplate-'))
        wall, _ = run([py, '-c', code, '-i', one, '-o', os.path.join(args.workdir, 'rr.fits'),
                       '--mp', str(os.cpu_count()), '-t', *templates], env)
        out['rrdesi'] = dict(command_wall_s=wall, templates=[os.path.basename(t) for t in templates],
                             ratio_command=wall / out['one_file']['command_wall_s'],
                             ratio_loop=wall / out['one_file']['loop_s'])

    big = os.path.join(args.workdir, 'big', f'coadd-main-dark-{args.big}.fits')
    if not os.path.exists(big):
        os.makedirs(os.path.dirname(big), exist_ok=True)
        make_file(big, args.big, 99, resolution=False)
    code = ('import resource, sys; from lbgnet.scripts.lbg_afterburner import main; '
            'rc = main(sys.argv[1:]); '
            'print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)')
    wall, log = run([py, '-c', code, '--model', model, '--overwrite', '--coadd', big,
                     '--output', os.path.join(args.workdir, 'big.fits')], env)
    rss = int(re.search(r'MAXRSS_KB (\d+)', log).group(1))
    out['big'] = dict(spectra=args.big, peak_rss_mb=rss / 1024, command_wall_s=wall,
                      file_mb=os.path.getsize(big) / 2 ** 20)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        with open(args.json, 'w') as fx:
            fx.write(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main(parse()))
