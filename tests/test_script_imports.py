"""The scripts outside the package (doc/scripts, benchmarks) still import: the numbers and
figures of the docs are made by them, and a moved constant broke one silently."""
import glob
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, 'doc', 'scripts', '*.py'))
                 + glob.glob(os.path.join(ROOT, 'benchmarks', '*.py')))


def test_scripts_found():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize('path', SCRIPTS, ids=[os.path.relpath(p, ROOT) for p in SCRIPTS])
def test_script_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.dirname(path))      # benchmarks import benchutil
    name = 'script_' + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if name != 'script_benchutil':                           # helpers of the benchmarks
        assert callable(getattr(module, 'main', None))


def test_benchmark_children_report_their_own_peak_memory(monkeypatch):
    """A benchmark's child process (benchutil.run_child) reports its own peak memory
    (benchutil.peak_kb), not the parent's: ``ru_maxrss`` of a child carries its parent's
    peak across exec, so children of a 1.6 GB parent all reported 1.6 GB."""
    import numpy as np
    monkeypatch.syspath_prepend(os.path.join(ROOT, 'benchmarks'))
    from benchutil import peak_kb, run_child
    held = np.ones(50_000_000)                       # 400 MB held by this process
    assert peak_kb() > 400_000
    small = run_child('import json, sys; from benchutil import peak_kb; '
                      'print(json.dumps([sys.argv[1:], peak_kb()]))', 'a', 2)
    big = run_child('import json, numpy; from benchutil import peak_kb; '
                    'x = numpy.ones(25_000_000); print(json.dumps([None, peak_kb()]))')
    assert small[0] == ['a', '2'] and small[1] < 100_000
    assert 200_000 < big[1] < 350_000                # its own 200 MB array
    assert held.sum() > 0
    with pytest.raises(SystemExit, match='exit 3'):
        run_child('import sys; sys.exit(3)')
