"""Helpers shared by the benchmark scripts (run from the repository root as
``python benchmarks/<script>.py``, which puts this directory on ``sys.path``)."""
import json
import os
import subprocess
import sys
import time


def best_time(func, repeat):
    """Smallest wall time (s) of `repeat` calls of ``func()``."""
    best = float('inf')
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_kb():
    """Peak resident memory of this process (kB): ``VmHWM`` of /proc/self/status.

    Not ``resource.getrusage(...).ru_maxrss``: a child process inherits its parent's peak
    in that figure (Linux keeps it across ``exec``), so a benchmark child started by a
    parent holding 1.6 GB reported 1.6 GB whatever it used itself."""
    with open('/proc/self/status') as fx:
        for line in fx:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    raise RuntimeError('no VmHWM line in /proc/self/status')


def run_child(code, *args, env=None):
    """Run Python `code` in a fresh interpreter (``python -c code args``) and return the
    JSON object of its last stdout line; stop with its stderr when it fails.

    `env` entries are added to this process's environment (``TF_CPP_MIN_LOG_LEVEL=2``
    unless set); ``PYTHONPATH`` starts with this directory (the child may import
    :func:`peak_kb`), then `env`'s, then this process's."""
    here = os.path.dirname(os.path.abspath(__file__))      # the child imports benchutil
    path = os.pathsep.join(p for p in (here, (env or {}).get('PYTHONPATH'),
                                       os.environ.get('PYTHONPATH')) if p)
    env = {'TF_CPP_MIN_LOG_LEVEL': '2', **os.environ, **(env or {}), 'PYTHONPATH': path}
    done = subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True,
                          text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f'benchmark child process failed (exit {done.returncode}):\n'
                         f'{done.stderr}')
    return json.loads(lines[-1])


def write_json(path, obj):
    """Write `obj` as indented JSON to `path` when `path` is given."""
    if path:
        with open(path, 'w') as fh:
            json.dump(obj, fh, indent=1)
            fh.write('\n')


def predict_test_files(network, test, noise=None):
    """Run `network` on each ``coadd-*.fits`` of a mock test directory, with its truth.

    `noise` (a :class:`lbgnet.noise.NoiseModel`, e.g. a refiner's ``noise``) also grids the
    ivar under it (``info.noise_ivar``), as the refinement with that noise needs.

    Yields
    ------
    path : str
        The coadd.
    info : lbgnet.preprocess.GridInfo
        Gridded flux and ivar (for the template refinement).
    good : numpy.ndarray of bool
        Spectra with data (live fibre, a valid pixel).
    truth : astropy.table.Table
        The truth rows in the coadd's order.
    raw, res : dict
        The network's raw outputs and catalogue quantities at the model's thresholds.
    """
    import glob
    import os

    import numpy as np
    from lbgnet.io.evaluation import match_rows, read_coadd_for_evaluation
    from lbgnet.io.mock import read_truth
    cfg = network.config
    for path in sorted(glob.glob(os.path.join(test, 'coadd-*.fits'))):
        X, tid, good, info, _ = read_coadd_for_evaluation(path, cfg, noise)
        truth = read_truth(path.replace('coadd-', 'truth-'))
        truth = truth[match_rows(np.asarray(truth['TARGETID']), tid, path)]
        raw = network.raw_outputs(X)
        res = network.catalog(raw, cfg.selection.c_thresh, cfg.selection.n_thresh)
        yield path, info, good, truth, raw, res
