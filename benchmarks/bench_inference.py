#!/usr/bin/env python
"""Inference speed of a network: forward pass + post-processing, spectra per second.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/bench_inference.py [--config lbgnet-default.yaml]
        [--model FILE] [--engine numpy keras eager] [--nspec 20000] [--batch-size N]
        [--threads 2]

Random inputs are used (speed does not depend on the values).  Each engine is timed in the
same run, on the same inputs: ``numpy`` (:mod:`lbgnet.npforward`, the afterburner's
default), ``keras`` (the compiled TensorFlow pass of :class:`lbgnet.network.Network`, the
afterburner's ``--engine keras``) and ``eager`` (:func:`lbgnet.predict.predict_raw`, the
model's eager call in batches of 2048: the path this script timed before the numpy
engine, for comparison with the earlier records).  The first pass is excluded; the best of
``--repeat`` timed passes is reported.  With ``--model``, loading the model file is timed
too, for each engine but ``eager``: :func:`lbgnet.network.load_network` in a fresh process
(importing lbgnet.network, then the load; the smallest of ``--repeat`` processes) and the
largest maximum resident set of those processes.  Results are recorded in
doc/benchmarks.rst.
"""
import argparse
import json
import os
import time

import numpy as np

from benchutil import run_child

#: Run in a fresh process: import lbgnet.network and load a model file with an engine;
#: prints the seconds of each step and the maximum resident set (JSON).
LOAD_CHILD = r'''
import json, sys, time
from benchutil import peak_kb
t0 = time.perf_counter()
from lbgnet.network import load_network
t1 = time.perf_counter()
load_network(sys.argv[1], engine=sys.argv[2], threads=int(sys.argv[3]))
t2 = time.perf_counter()
print(json.dumps(dict(import_s=t1 - t0, load_s=t2 - t1, total_s=t2 - t0,
                      peak_mb=peak_kb() / 1024)))
'''

def engine_batches():
    """Default batch of each engine (the afterburner's, from the library)."""
    from lbgnet.network import DEFAULT_BATCH
    from lbgnet.npforward import BATCH
    return {'numpy': BATCH, 'keras': DEFAULT_BATCH, 'eager': 2048}


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', nargs='+', default=['lbgnet-default.yaml'],
                        help='configuration(s) to time (random weights) [%(default)s]')
    parser.add_argument('--model', help='time a saved model instead of --config')
    parser.add_argument('--engine', nargs='+', choices=('eager', 'keras', 'numpy'),
                        default=['numpy', 'keras', 'eager'], help='[%(default)s]')
    parser.add_argument('--nspec', type=int, default=20000, help='spectra per pass [%(default)s]')
    parser.add_argument('--batch-size', type=int,
                        help='spectra per forward pass [each engine\'s default]')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads [%(default)s]')
    parser.add_argument('--repeat', type=int, default=3, help='timed passes [%(default)s]')
    return parser.parse_args(options)


def engine_pass(engine, model, config, batch_size, threads):
    """``X -> raw outputs`` (:func:`lbgnet.predict.predict_raw`'s dict) of an engine."""
    from lbgnet.network import Network
    from lbgnet.predict import predict_raw
    if engine == 'eager':
        return lambda X: predict_raw(model, X, config, batch_size)
    net = Network(model, config, threads=threads)
    if engine == 'numpy':
        from lbgnet.npforward import from_keras
        net.numpy_pass = from_keras(model, config)
    return lambda X: net.raw_outputs(X, batch_size)


def time_engine(forward, config, X, repeat):
    """Best rates (spectra/s) of the forward pass, the post-processing and both."""
    from lbgnet.predict import catalog_from_raw
    forward(X[:2048])
    best = {'predict': np.inf, 'postprocess': np.inf, 'total': np.inf}
    for _ in range(repeat):
        t0 = time.perf_counter()
        raw = forward(X)
        t1 = time.perf_counter()
        catalog_from_raw(raw, config)
        t2 = time.perf_counter()
        for key, dt in (('predict', t1 - t0), ('postprocess', t2 - t1), ('total', t2 - t0)):
            best[key] = min(best[key], dt)
    return {k: X.shape[0] / v for k, v in best.items()}


def load_costs(path, engine, threads, repeat):
    """Seconds to import lbgnet.network and load `path` in a fresh process (the fastest of
    `repeat` processes, each step from that process) and the largest peak memory (MB)."""
    runs = [run_child(LOAD_CHILD, path, engine, threads) for _ in range(repeat)]
    best = min(runs, key=lambda run: run['total_s'])
    return dict(best, peak_mb=max(run['peak_mb'] for run in runs))


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import tensorflow as tf
    from threadpoolctl import threadpool_limits
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    threadpool_limits(limits=args.threads)
    from desiutil.log import get_logger
    from lbgnet.config import load_config
    from lbgnet.io.modelfile import load_model
    from lbgnet.model import build_model
    log = get_logger()
    rng = np.random.default_rng(0)
    results = {}
    if args.model:
        model, config, _ = load_model(args.model)
        jobs = [(args.model, model, config)]
    else:
        jobs = []
        for name in args.config:
            config = load_config(name)
            jobs.append((name, build_model(config), config))
    for name, model, config in jobs:
        X = rng.normal(0, 1, (args.nspec, config.grid.nbins, 2)).astype(np.float32)
        results[name] = {'nparams': int(model.count_params())}
        for engine in args.engine:
            batch = args.batch_size or engine_batches()[engine]
            forward = engine_pass(engine, model, config, batch, args.threads)
            rates = time_engine(forward, config, X, args.repeat)
            results[name][engine] = dict(rates, batch_size=batch)
            log.info('%s, %s engine (batch %d): %.0f spectra/s total (predict %.0f/s, '
                     'postprocess %.0f/s) on %d threads', name, engine, batch, rates['total'],
                     rates['predict'], rates['postprocess'], args.threads)
        for engine in (e for e in args.engine if args.model and e != 'eager'):
            load = load_costs(args.model, engine, args.threads, args.repeat)
            results[name][engine]['load'] = load
            log.info('%s, %s engine: loaded in %.2f s in a fresh process (import %.2f s, '
                     'load %.2f s), peak memory %.0f MB', name, engine, load['total_s'],
                     load['import_s'], load['load_s'], load['peak_mb'])
        if 'numpy' in args.engine:
            for other in set(args.engine) - {'numpy'}:
                log.info('%s: numpy engine / %s engine = %.2f', name, other,
                         results[name]['numpy']['total'] / results[name][other]['total'])
    log.info('%s', json.dumps(results))
    return 0


if __name__ == '__main__':
    import sys
    sys.exit(main())
