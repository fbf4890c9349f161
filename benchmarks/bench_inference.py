#!/usr/bin/env python
"""Inference speed of a network: forward pass + post-processing, spectra per second.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/bench_inference.py [--config lbgnet-default.yaml]
        [--model FILE] [--nspec 20000] [--batch-size 2048] [--threads 2]

Random inputs are used (speed does not depend on the values).  The first pass (graph
building) is excluded; the best of ``--repeat`` timed passes is reported.  Results are
recorded in doc/benchmarks.rst.
"""
import argparse
import json
import os
import time

import numpy as np


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', nargs='+', default=['lbgnet-default.yaml'],
                        help='configuration(s) to time (random weights) [%(default)s]')
    parser.add_argument('--model', help='time a saved model instead of --config')
    parser.add_argument('--nspec', type=int, default=20000, help='spectra per pass [%(default)s]')
    parser.add_argument('--batch-size', type=int, default=2048, help='[%(default)s]')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads for TF [%(default)s]')
    parser.add_argument('--repeat', type=int, default=3, help='timed passes [%(default)s]')
    return parser.parse_args(options)


def time_model(model, config, X, batch_size, repeat):
    from lbgnet.predict import catalog_from_raw, predict_raw
    predict_raw(model, X[:batch_size], config, batch_size)
    best = {'predict': np.inf, 'postprocess': np.inf, 'total': np.inf}
    for _ in range(repeat):
        t0 = time.perf_counter()
        raw = predict_raw(model, X, config, batch_size)
        t1 = time.perf_counter()
        catalog_from_raw(raw, config)
        t2 = time.perf_counter()
        for key, dt in (('predict', t1 - t0), ('postprocess', t2 - t1), ('total', t2 - t0)):
            best[key] = min(best[key], dt)
    return {k: X.shape[0] / v for k, v in best.items()}


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
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
        rates = time_model(model, config, X, args.batch_size, args.repeat)
        rates['nparams'] = int(model.count_params())
        results[name] = rates
        log.info('%s: %d params, %.0f spectra/s total (predict %.0f/s, postprocess %.0f/s) '
                 'on %d threads', name, rates['nparams'], rates['total'], rates['predict'],
                 rates['postprocess'], args.threads)
    log.info('%s', json.dumps(results))
    return 0


if __name__ == '__main__':
    import sys
    sys.exit(main())
