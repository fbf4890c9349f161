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
