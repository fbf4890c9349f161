"""Command-line inputs of desi_lbg_make_template: refused in parse (status 2) or in one line."""
import logging

import numpy as np
import pytest

from lbgnet.scripts import lbg_make_template
from lbgnet.scripts.lbg_make_template import main, parse

FAST = ['--nspec', '20', '--nbasis', '2', '--dwave', '2.0']


def _errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize('bad, word', [
    (['--seed', '-1'], '--seed'),
    # the SEED card holds a 64-bit integer: fitsio read a larger one back as a string
    (['--seed', str(2 ** 63)], '--seed must be in [0, 2**63 - 1]'),
    (['--version', ''], '--version'),
    (['--version', 'a/b'], '--version'),
    (['--version', '../x'], '--version'),
    (['--dwave', '500'], '--dwave'),
    (['--dwave', '0'], '--dwave'),
    (['--nspec', '80', '--nbasis', '70', '--dwave', '60'], '--nbasis'),   # > 54 rest pixels
    (['--wave-range', '1500', '7000', '--z-range', '0.5', '1.0'], '--wave-range'),
    # more memory than any machine has (it was killed by the kernel without a word)
    (['--nspec', '60', '--nbasis', '5', '--dwave', '1e-9'], 'GiB, more than this machine'),
    # trial-redshift grids of 348 million (a 2.8 GB template) or of one redshift, and
    # infinite ranges or steps (tracebacks before)
    (['--dlogz', '1e-9'], 'trial redshifts'),
    (['--dlogz', 'inf'], '--dlogz'),
    (['--dlogz', '1'], 'trial redshifts'),
    (['--dlogz', '0.35'], 'gives 1 trial redshifts'),       # np.arange: 1 point, not 2
    (['--wave-range', '600', 'inf'], '--wave-range'),
    (['--dwave', '1e-320'], '--dwave')])
def test_parse_refuses(bad, word, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(['--outdir', 'x'] + bad)
    assert exc.value.code == 2 and word in capsys.readouterr().err


def test_parse_accepts_simple_versions():
    for version in ('0.2', '1.0-rc_1', 'v3'):
        assert parse(['--outdir', 'x', '--version', version]).version == version
    assert parse(['--outdir', 'x', '--dwave', '60']).dwave == 60


def test_outdir_that_is_a_file_is_one_line(tmp_path, caplog):
    afile = tmp_path / 'afile'
    afile.write_text('keep')
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(['--outdir', str(afile)] + FAST) == 1
    errors = _errors(caplog)
    assert len(errors) == 1 and errors[0].startswith('--outdir ') and 'not a directory' in errors[0]
    assert 'Traceback' not in caplog.text and afile.read_text() == 'keep'


def test_output_that_is_a_directory_is_one_line(tmp_path, caplog):
    from lbgnet.io.rrtemplate import template_filename
    args = parse(['--outdir', str(tmp_path)] + FAST)
    (tmp_path / template_filename('GALAXY', 'LBG', args.version)).mkdir()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(args) == 1
    errors = _errors(caplog)
    assert len(errors) == 1 and 'is a directory; cannot write the output there' in errors[0]


def test_write_failure_is_one_line(tmp_path, caplog, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(lbg_make_template, 'write_rr_template', full_disk)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(['--outdir', str(tmp_path / 'out')] + FAST) == 1
    errors = _errors(caplog)
    assert len(errors) == 1 and 'No space left on device' in errors[0]


def test_largest_seed_is_an_integer_card(tmp_path):
    """--seed 2**63 - 1, the largest accepted, is read back from the SEED card as that integer."""
    import fitsio
    seed = 2 ** 63 - 1
    assert main(['--outdir', str(tmp_path), '--seed', str(seed)] + FAST) == 0
    (path,) = tmp_path.glob('rrtemplate-*.fits')
    assert fitsio.read_header(str(path))['SEED'] == seed


def test_rest_frame_spectra_names_an_empty_window():
    from lbgnet.sim import load_sim_config
    from lbgnet.template import rest_frame_spectra
    wave = np.arange(600.0, 3800.0, 500.0)                      # no pixel in 1420-1480 A
    with pytest.raises(ValueError, match='no pixel in the normalisation window'):
        rest_frame_spectra(3, wave, np.random.default_rng(1), load_sim_config())
