#!/usr/bin/env python
"""
Benchmark of desi_lbg_afterburner (issue 6).

Measures, in one run:

1. end-to-end throughput on ``--nfiles`` healpix-style coadds of ``--nspec`` spectra,
   model loaded once, (a) one process (the default engine and threads) and (b) ``mpiexec -n 2``
   (one thread per rank): spectra/s of the file loop (read → grid → predict →
   post-process → catalogue → write) and wall time of the whole command; with
   ``--variant NAME=OPTIONS``, also (c) ``mpiexec -n 2`` with extra options (e.g.
   ``--refine-noise pipeline``) and its rate relative to (b); the measures take turns,
   ``--repeat`` rounds, best of each;
2. ``rrdesi`` on the first of those files (``--mp`` = number of cores, templates from
   ``--rrdesi-templates``, by default ../shared/reference/redrock-templates) and the
   afterburner alone on the same file: the time ratio;
3. peak resident memory of the afterburner on one ``--big``-spectrum file.

Mock files: ``desi_lbg_mock`` (the lbgnet simulator: LBGs and contaminants, DESI noise,
full FIBERMAP/EXP_FIBERMAP/SCORES/RESOLUTION, so that rrdesi can read them).  The model is
``--model`` or, by default, the shipped one: the template refinement runs on the IS_LBG
rows only, so the cost depends on what the network selects (a random-weight network
selects nearly everything).  Each rank's thread limits (TensorFlow and BLAS) come from
the afterburner itself, so no ``OMP_NUM_THREADS`` is set here.

Usage::

    PYTHONPATH=py python benchmarks/bench_afterburner.py --workdir /tmp/lbgbench
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time

from benchutil import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, '..', 'shared', 'reference', 'redrock-templates')


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workdir', required=True, help='scratch directory for files')
    parser.add_argument('--nfiles', type=int, default=8, help='files of --nspec [%(default)s]')
    parser.add_argument('--nspec', type=int, default=500, help='spectra per file [%(default)s]')
    parser.add_argument('--big', type=int, default=5000, help='spectra of the memory test file')
    parser.add_argument('--model', help='model file [the shipped model]')
    parser.add_argument('--rrdesi-templates', default=REFERENCE, help='[%(default)s]')
    parser.add_argument('--repeat', type=int, default=3,
                        help='afterburner runs per measurement; the fastest is kept [%(default)s]')
    parser.add_argument('--skip-rrdesi', action='store_true')
    parser.add_argument('--json', help='write the numbers here')
    parser.add_argument('--variant', action='append', default=[], metavar='NAME=OPTIONS',
                        help='also time ``mpiexec -n 2`` with these extra afterburner options, '
                        'reported as mpi2_NAME with its rate relative to mpi2 (e.g. '
                        'pipeline="--refine-noise pipeline"); repeatable')
    args = parser.parse_args(options)
    args.variants = {}
    for item in args.variant:
        name, sep, opts = item.partition('=')
        if not sep or not name.isidentifier():
            parser.error(f'--variant must be NAME=OPTIONS, not {item!r}')
        args.variants[name] = shlex.split(opts)
    return args


def make_mock(outdir, nspec, nfiles, seed, env, resolution=True):
    """``desi_lbg_mock`` files (coadd + redrock + truth), unless already there with `nfiles`
    coadds of `nspec` spectra each (files of another size are made again: the timings
    would be of them, reported under this run's sizes)."""
    import shutil
    from astropy.io import fits
    if os.path.isdir(outdir):
        coadds = [os.path.join(outdir, f) for f in os.listdir(outdir) if f.startswith('coadd-')]
        if len(coadds) == nfiles and all(fits.getheader(c, 'FIBERMAP')['NAXIS2'] == nspec
                                         for c in coadds):
            return
        shutil.rmtree(outdir)
    cmd = [sys.executable, os.path.join(ROOT, 'bin', 'desi_lbg_mock'), '--outdir', outdir,
           '--nspec', str(nspec * nfiles), '--nfiles', str(nfiles), '--seed', str(seed)]
    run(cmd + ([] if resolution else ['--no-resolution']), env)


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
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, 'py'),
                                                       os.path.join(ROOT, 'benchmarks')]),
               TF_CPP_MIN_LOG_LEVEL='2')                    # benchutil: peak_kb
    py, bindir = sys.executable, os.path.join(ROOT, 'bin')
    mpiexec = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
    indir = os.path.join(args.workdir, 'in')
    make_mock(indir, args.nspec, args.nfiles, 1, env)
    files = sorted(os.path.join(indir, f) for f in os.listdir(indir) if f.startswith('coadd-'))
    from lbgnet.network import default_model_path
    model = args.model or default_model_path()
    out = dict(ncores=os.cpu_count(), nfiles=args.nfiles, nspec=args.nspec, model=model,
               loadavg_start=os.getloadavg())
    ab = [py, os.path.join(bindir, 'desi_lbg_afterburner'), '--model', model, '--overwrite']

    one = files[0]
    measures = {
        'serial': (ab + ['--input-dir', indir, '--outdir', os.path.join(args.workdir, 'o1')], env),
        'mpi2': ([mpiexec, '-n', '2'] + ab + ['--mpi', '--input-dir', indir, '--outdir',
                                              os.path.join(args.workdir, 'o2')], env),
        'one_file': (ab + ['--coadd', one, '--output', os.path.join(args.workdir, 'one.fits')], env),
    }
    for name, extra in args.variants.items():
        measures[f'mpi2_{name}'] = (measures['mpi2'][0] + extra, env)
    # round robin over the measures, so that a change of load hits them alike
    allruns = {name: [] for name in measures}
    for _ in range(args.repeat):
        for name, (cmd, cmd_env) in measures.items():
            allruns[name].append(run(cmd, cmd_env))
    for name, runs in allruns.items():
        walls = [w for w, _ in runs]
        loops = [rate(log) for _, log in runs]
        n, secs = min(loops, key=lambda x: x[1])
        out[name] = dict(spectra=n, loop_s=secs, spectra_per_s=n / secs, command_wall_s=min(walls),
                         all_loop_s=[x[1] for x in loops], all_command_wall_s=walls)
    for name in args.variants:
        out[f'mpi2_{name}']['rate_relative_to_mpi2'] = (out[f'mpi2_{name}']['spectra_per_s']
                                                        / out['mpi2']['spectra_per_s'])
    if not args.skip_rrdesi:
        code = 'import sys; from lbgnet.redrock_rerun import import_rrdesi; import_rrdesi()(sys.argv[1:])'
        templates = sorted(os.path.join(args.rrdesi_templates, f)
                           for f in os.listdir(args.rrdesi_templates) if f.startswith('rrtemplate-'))
        wall, _ = run([py, '-c', code, '-i', one, '-o', os.path.join(args.workdir, 'rr.fits'),
                       '--mp', str(os.cpu_count()), '-t', *templates], env)
        out['rrdesi'] = dict(command_wall_s=wall, templates=[os.path.basename(t) for t in templates],
                             ratio_command=wall / out['one_file']['command_wall_s'],
                             ratio_loop=wall / out['one_file']['loop_s'])

    bigdir = os.path.join(args.workdir, f'big{args.big}')
    make_mock(bigdir, args.big, 1, 2, env, resolution=False)
    big = [os.path.join(bigdir, f) for f in os.listdir(bigdir) if f.startswith('coadd-')][0]
    code = ('import sys; from benchutil import peak_kb; '
            'from lbgnet.scripts.lbg_afterburner import main; rc = main(sys.argv[1:]); '
            'print("MAXRSS_KB", peak_kb()); sys.exit(rc)')
    wall, log = run([py, '-c', code, '--model', model, '--overwrite', '--coadd', big,
                     '--output', os.path.join(args.workdir, 'big.fits')], env)
    rss = int(re.search(r'MAXRSS_KB (\d+)', log).group(1))
    out['big'] = dict(spectra=args.big, peak_rss_mb=rss / 1024, command_wall_s=wall,
                      file_mb=os.path.getsize(big) / 2 ** 20)
    out['loadavg_end'] = os.getloadavg()
    print(json.dumps(out, indent=1))
    write_json(args.json, out)
    return 0


if __name__ == '__main__':
    sys.exit(main(parse()))
