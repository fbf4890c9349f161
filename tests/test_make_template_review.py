"""desi_lbg_make_template: defects found by a user-level review (each test failed on the
code it was written against)."""
import logging
import os
import re

import numpy as np
from astropy.io import fits

from lbgnet.scripts.lbg_make_template import main

#: DESI coadd wavelengths (brz, 0.8 A pixels): Redrock rebins the template onto the pixel
#: edges, half a pixel beyond the first and the last centre.
DESI_B = np.arange(3600.0, 5800.0 + 0.4, 0.8)
DESI_Z = np.arange(7520.0, 9824.0 + 0.4, 0.8)


def _rebin_at_all_redshifts(path):
    """Redrock's own rebinning of the template at every redshift of its grid."""
    from lbgnet.redrock_rerun import import_rrdesi
    import_rrdesi()
    from redrock.rebin import rebin_template
    from redrock.templates import Template
    tmpl = Template(path)
    rebin_template(tmpl, np.asarray(tmpl.redshifts), {'b': DESI_B, 'z': DESI_Z})


def _errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_coverage_check_uses_the_grid_actually_written(tmp_path):
    """A template the command writes covers 3600-9824 A at every redshift it scans:
    --wave-range 600 3779 passes the coverage check, but with --dwave 40 the rest grid
    (np.arange) ends at 3760 A, so Redrock's rebinning fails at z = 1.6."""
    out = tmp_path / 'out'
    status = main(['--outdir', str(out), '--nspec', '3', '--nbasis', '1',
                   '--wave-range', '600', '3779', '--dwave', '40'])
    if status == 0:                   # written: then Redrock must be able to use it
        _rebin_at_all_redshifts(str(out / 'rrtemplate-GALAXY-LBG-v0.2.fits'))
    else:
        assert status == 1


def test_coverage_check_includes_desi_pixel_edges(tmp_path):
    """The coverage check must allow for the half pixel (0.4 A) beyond 9824 A that
    Redrock's trapezoidal rebinning needs: --wave-range 600 3778.5 (>= 9824/2.6 =
    3778.46) passes it, yet 3778.5 * 2.6 = 9824.1 < 9824.4 and Redrock raises
    'edges must be within input x range' for every spectrum."""
    out = tmp_path / 'out'
    status = main(['--outdir', str(out), '--nspec', '3', '--nbasis', '1',
                   '--wave-range', '600', '3778.5', '--dwave', '0.1'])
    if status == 0:
        _rebin_at_all_redshifts(str(out / 'rrtemplate-GALAXY-LBG-v0.2.fits'))
    else:
        assert status == 1


def test_nbasis_check_counts_the_pixels_of_the_rest_grid(tmp_path, caplog):
    """parse() counts int((max - min)/dwave + 0.5) + 1 = 55 rest pixels where rest_grid
    makes 54 (3200/dwave = 53.5): --nbasis 55 passes the check and pca_basis raises a
    ValueError traceback after the simulation, leaving an empty --outdir.  Expected: a
    usage error (status 2) or one line (status 1), and no directory left behind."""
    out = tmp_path / 'new'
    opts = ['--outdir', str(out), '--nspec', '55', '--nbasis', '55',
            '--dwave', repr(3200 / 53.5), '--z-range', '1.61', '4.8']
    try:
        status = main(opts)
    except SystemExit as exc:
        status = exc.code
    assert status in (1, 2)
    assert not out.exists()


def _composite(path, wave=None):
    """A small synthetic LBG composite (f_nu, positive redward of Lya)."""
    wave = np.arange(920.0, 2000.0, 1.0) if wave is None else wave
    fnu = 1.0 + 0.3 * np.sin(wave / 7.0) ** 8
    np.savetxt(path, np.column_stack([wave, fnu]))
    return str(path)


def test_archetype_header_records_the_lbg_composite(tmp_path):
    """--archetypes with --lbg-composite changes the spectra (the composite's features are
    imprinted), so the header must say which composite was used, as the PCA template's
    'LBG composite: NAME' comment does; the archetype header does not mention it."""
    comp = _composite(tmp_path / 'mycomposite.txt')
    opts = ['--nspec', '3', '--dwave', '2', '--archetypes']
    assert main(['--outdir', str(tmp_path / 'a')] + opts + ['--lbg-composite', comp]) == 0
    assert main(['--outdir', str(tmp_path / 'b')] + opts) == 0
    name = 'rrarchetype-GALAXY-LBG-v0.2.fits'
    with fits.open(tmp_path / 'a' / name) as with_c, fits.open(tmp_path / 'b' / name) as without:
        assert not np.array_equal(with_c[0].data, without[0].data)      # sanity
        header = repr(with_c[0].header)
    assert 'mycomposite.txt' in header


def test_composite_with_nonpositive_wavelengths_is_refused(tmp_path, caplog):
    """An LBG composite whose wavelength column has values <= 0 (not rest-frame Angstrom)
    is bad input: one error line naming the file, status 1, nothing written.  It is
    accepted as long as the column increases and covers 1215.67 A."""
    wave = np.concatenate([np.linspace(-500.0, 0.0, 20), np.arange(920.0, 2000.0, 1.0)])
    comp = _composite(tmp_path / 'negwave.txt', wave)
    out = tmp_path / 'out'
    caplog.clear()
    with caplog.at_level(logging.INFO):
        status = main(['--outdir', str(out), '--nspec', '3', '--nbasis', '1', '--dwave', '2',
                       '--lbg-composite', comp])
    assert status == 1
    errors = _errors(caplog)
    assert len(errors) == 1 and 'negwave.txt' in errors[0]
    assert not out.exists()


def test_header_identifies_the_simulator_configuration(tmp_path):
    """Two simulator configurations of the same file name but different content give
    different spectra; the header records only the base name ('simulator
    lbgnet-sim.yaml'), so both files carry identical headers (the mocks record SIMHASH;
    the template should record the configuration's path or a hash of its content)."""
    from lbgnet.config import etc_dir
    text = open(os.path.join(etc_dir(), 'lbgnet-sim.yaml')).read()
    changed, n = re.subn(r'beta_mean: -1\.9\b', 'beta_mean: -1.0', text)
    assert n == 1
    custom = tmp_path / 'custom'
    custom.mkdir()
    (custom / 'lbgnet-sim.yaml').write_text(changed)
    opts = ['--nspec', '3', '--dwave', '2', '--archetypes']
    assert main(['--outdir', str(tmp_path / 'a')] + opts) == 0
    assert main(['--outdir', str(tmp_path / 'b'), '--sim-config',
                 str(custom / 'lbgnet-sim.yaml')] + opts) == 0
    name = 'rrarchetype-GALAXY-LBG-v0.2.fits'
    with fits.open(tmp_path / 'a' / name) as a, fits.open(tmp_path / 'b' / name) as b:
        assert not np.array_equal(a[0].data, b[0].data)                # sanity
        assert repr(a[0].header) != repr(b[0].header)


def test_an_output_name_cfitsio_would_misread_fails_before_the_simulation(tmp_path, caplog,
                                                                          monkeypatch):
    """An --outdir such as ``x[1]`` (cfitsio syntax) was refused only at the write, after
    the simulation (about 20 s with the defaults); now before it, in one line."""
    import logging
    import lbgnet.scripts.lbg_make_template as script

    def never(*args, **kwargs):
        raise AssertionError('simulated before the output name was checked')
    monkeypatch.setattr(script, 'rest_frame_spectra', never)
    with caplog.at_level(logging.ERROR):
        assert main(['--outdir', str(tmp_path / 'x[1]'), '--nspec', '3', '--nbasis', '2',
                     '--dwave', '2']) == 1
    assert 'x[1]' in caplog.text and not (tmp_path / 'x[1]').exists()


def test_a_run_stopped_before_writing_leaves_no_empty_outdir(tmp_path, monkeypatch):
    """SIGTERM during the simulation (after --outdir was made) left the empty directory;
    desi_lbg_mock likewise, stopped before its first file."""
    import pytest
    from lbgnet.io.atomic import Terminated
    from lbgnet.scripts import lbg_make_template, lbg_mock

    def stopped(*args, **kwargs):
        raise Terminated(143)
    monkeypatch.setattr(lbg_make_template, 'rest_frame_spectra', stopped)
    with pytest.raises(Terminated):
        main(['--outdir', str(tmp_path / 'tpl' / 'deep'), '--nspec', '20', '--nbasis', '3'])
    assert not (tmp_path / 'tpl').exists()
    monkeypatch.setattr(lbg_mock, 'make_mock', stopped)
    with pytest.raises(Terminated):
        lbg_mock.main(['--outdir', str(tmp_path / 'mock' / 'deep'), '--nspec', '4',
                       '--nfiles', '1', '--no-resolution'])
    assert not (tmp_path / 'mock').exists()
