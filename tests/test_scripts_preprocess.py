"""Tests of the desi_lbg_preprocess command and of the README/CI contract."""
import os
import re

import numpy as np

from lbgnet.scripts.lbg_preprocess import main

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))


def test_example_runs_and_writes(tmp_path):
    out = str(tmp_path / 'grid.npz')
    assert main(['--example', '--output', out]) == 0
    data = np.load(out)
    assert data['X'].shape == (8, 800, 2)
    np.testing.assert_array_equal(data['TARGETID'], np.arange(8) + 1000)
    assert not data['EMPTY'].any()


def test_output_name_without_npz_and_bad_config(tmp_path):
    out = tmp_path / 'grid.out'                    # np.savez would have written grid.out.npz
    assert main(['--example', '--output', str(out)]) == 0
    assert np.load(str(out))['X'].shape == (8, 800, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['grid.out']      # no stray temporary
    assert main(['--example', '--config', str(tmp_path / 'none.yaml')]) == 1


def test_bad_file_gives_nonzero_status(tmp_path, tiny_coadd, caplog):
    good, _ = tiny_coadd
    bad = tmp_path / 'bad.fits'
    bad.write_text('not fits')
    assert main(['--coadd', good, str(bad)]) == 1


def test_readme_test_command_is_what_ci_runs():
    readme = open(os.path.join(ROOT, 'README.rst')).read()
    ci = open(os.path.join(ROOT, '.ci', 'run')).read()
    blocks = re.findall(r'::\n\n    (.+)\n', readme)
    assert len(blocks) >= 2, 'README must open with the two fresh-machine commands'
    test_cmd = blocks[1].split('&&')[-1].strip()
    assert test_cmd.startswith('venv/bin/python -m pytest')
    assert test_cmd in ci.splitlines()
    install = blocks[1].split('&&')[1].strip()
    assert install in ci
