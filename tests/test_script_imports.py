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
