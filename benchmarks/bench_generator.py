#!/usr/bin/env python
"""Throughput of the in-memory training generator (lbgnet.sim.generator), spectra/s.

Three measurements on the default configuration (lbgnet-mock.yaml, augmentation on):

1. serial: one process calls ``MockBatches[i]`` (wall clock, and per CPU second: the
   load-independent cost, since numpy runs single-threaded here);
2. processes: ``--workers`` forked processes simulate batches in parallel
   (what ``as_pydataset(..., use_multiprocessing=True)`` does inside ``fit``);
3. keras: ``model.fit`` of a tiny model on
   ``as_pydataset(workers=--workers, use_multiprocessing=True)``, timed over the second
   epoch: the generator as training sees it, including Keras' queue.

Usage: ``python benchmarks/bench_generator.py [--batches 16 --batch-size 256 --workers 2]``
"""
import argparse
import json
import multiprocessing
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from desiutil.log import get_logger  # noqa: E402

from lbgnet.sim.generator import MockBatches, as_pydataset  # noqa: E402
from lbgnet.sim.mock import load_mock_setup  # noqa: E402

from benchutil import write_json  # noqa: E402

_GEN = None


def _simulate(index):
    return _GEN.simulate(0, index)[0].shape[0]


def bench_serial(gen, nbatch):
    """Wall-clock and CPU-time throughput of one process (spectra/s)."""
    start, cpu = time.time(), time.process_time()
    n = sum(gen[i][0].shape[0] for i in range(nbatch))
    return n / (time.time() - start), n / (time.process_time() - cpu)


def bench_processes(gen, nbatch, workers):
    global _GEN
    _GEN = gen
    ctx = multiprocessing.get_context('fork')
    with ctx.Pool(workers) as pool:
        pool.map(_simulate, range(workers))                       # warm up the workers
        start = time.time()
        n = sum(pool.map(_simulate, range(nbatch), chunksize=1))
    return n / (time.time() - start)


def bench_keras(gen, workers):
    """``model.fit`` throughput over the second of two epochs (the first warms up TF)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.time()

        def on_epoch_end(self, epoch, logs=None):
            self.last = time.time() - self.start

    nbins = gen.setup.config.grid.nbins
    model = keras.Sequential([keras.Input((nbins, 2)), keras.layers.Flatten(),
                              keras.layers.Dense(1)])
    model.compile(optimizer='sgd', loss='mse')
    ds = as_pydataset(gen, workers=workers, use_multiprocessing=workers > 1)
    timer = EpochTimer()
    model.fit(ds, epochs=2, verbose=0, callbacks=[timer])
    return len(gen) * gen.batch_size / timer.last


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batches', type=int, default=16, help='batches per measurement')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--no-keras', action='store_true', help='skip the model.fit measurement')
    parser.add_argument('--output', help='write the numbers as JSON')
    args = parser.parse_args()
    log = get_logger()
    setup = load_mock_setup()
    gen = MockBatches(setup, encode=lambda t: (t['Z_TRUE'].data * 0).astype('float32'),
                      batch_size=args.batch_size, batches_per_epoch=args.batches, seed=0)
    gen[0]                                                            # warm-up
    res = {'batch_size': args.batch_size, 'batches': args.batches, 'workers': args.workers,
           'cpus': os.cpu_count(), 'load_average_1min': os.getloadavg()[0]}
    res['serial_spectra_per_s'], res['serial_spectra_per_cpu_s'] = bench_serial(gen, args.batches)
    log.info('serial: %.0f spectra/s (%.0f per CPU second)', res['serial_spectra_per_s'],
             res['serial_spectra_per_cpu_s'])
    res['processes_spectra_per_s'] = bench_processes(gen, args.batches, args.workers)
    log.info('%d processes: %.0f spectra/s', args.workers, res['processes_spectra_per_s'])
    if not args.no_keras:
        res['keras_fit_spectra_per_s'] = bench_keras(gen, args.workers)
        log.info('keras fit, %d workers: %.0f spectra/s', args.workers,
                 res['keras_fit_spectra_per_s'])
    res['load_average_1min_after'] = os.getloadavg()[0]
    write_json(args.output, res)
    log.info('%s', json.dumps(res))


if __name__ == '__main__':
    main()
