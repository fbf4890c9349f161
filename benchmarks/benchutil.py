"""Helpers shared by the benchmark scripts (run from the repository root as
``python benchmarks/<script>.py``, which puts this directory on ``sys.path``)."""
import json
import time


def best_time(func, repeat):
    """Smallest wall time (s) of `repeat` calls of ``func()``."""
    best = float('inf')
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - t0)
    return best


def write_json(path, obj):
    """Write `obj` as indented JSON to `path` when `path` is given."""
    if path:
        with open(path, 'w') as fh:
            json.dump(obj, fh, indent=1)


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
