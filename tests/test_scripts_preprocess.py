"""Tests of the desi_lbg_preprocess command and of the README/CI contract."""
import os
import re
import stat

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
    # the rebinned flux and ivar (channel 0 is normalised: the flux could not be recovered),
    # the arms with data and the provenance (review 2026-12-05); no pickle needed
    data = np.load(out, allow_pickle=False)
    assert data['FLUX'].shape == data['IVAR'].shape == (8, 800)
    assert data['FLUX'].dtype == data['IVAR'].dtype == np.float32
    snr = data['FLUX'] * np.sqrt(data['IVAR'])
    np.testing.assert_allclose(snr, data['X'][..., 1], rtol=1e-4, atol=1e-4)
    assert data['BANDS'].tolist() == ['b', 'r', 'z'] and data['BAND_VALID'].shape == (8, 3)
    assert str(data['SOURCE']).endswith('coadd-example.fits')
    from lbgnet import __version__
    assert str(data['LBGNET']) == __version__ and str(data['CONFIG']).endswith('lbgnet-base.yaml')


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


def _errors(caplog):
    import logging
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_output_directory_is_created_and_overwrite_is_needed(tmp_path, caplog):
    out = tmp_path / 'new' / 'sub' / 'x.npz'                   # parent missing
    assert main(['--example', '--output', str(out)]) == 0
    first = out.read_bytes()
    caplog.clear()
    assert main(['--example', '--output', str(out), '--seed', '3']) == 1
    assert 'use --overwrite' in _errors(caplog)[0] and out.read_bytes() == first
    assert main(['--example', '--output', str(out), '--seed', '3', '--overwrite']) == 0
    assert out.read_bytes() != first


def test_unusable_output_is_one_line_before_work(tmp_path, caplog):
    afile = tmp_path / 'afile'
    afile.write_text('keep')
    # a directory; under a file; a new directory's name (trailing /: was found out only
    # after the work)
    for bad in (str(tmp_path), str(afile / 'x.npz'), str(tmp_path / 'newdir') + os.sep):
        caplog.clear()
        assert main(['--example', '--output', bad]) == 1
        errors = _errors(caplog)
        assert len(errors) == 1 and errors[0].startswith('--output ') and 'Traceback' not in caplog.text
        assert 'wrote example coadd' not in caplog.text            # refused before the work
    assert afile.read_text() == 'keep'
    # the input itself, even with --overwrite (it was replaced by the npz)
    caplog.clear()
    assert main(['--coadd', str(afile), '--output', str(afile), '--overwrite']) == 1
    assert 'is an input file; refusing to overwrite it' in caplog.text
    assert afile.read_text() == 'keep'


def test_outdir_output_that_is_an_input_is_refused(tmp_path, tiny_coadd, caplog):
    """--outdir whose output for a coadd is that coadd itself (a link named coadd-X.fits
    to OUTDIR/lbg_input-X.npz) is refused before any work, even with --overwrite."""
    import shutil
    out = tmp_path / 'grid'
    out.mkdir()
    target = out / 'lbg_input-a.npz'
    shutil.copy(tiny_coadd[0], target)
    link = tmp_path / 'coadd-a.fits'
    link.symlink_to(target)
    before = target.read_bytes()
    assert main(['--coadd', str(link), '--outdir', str(out), '--overwrite']) == 1
    errors = _errors(caplog)
    assert errors == [f'{target}: is an input file; refusing to overwrite it'], errors
    assert target.read_bytes() == before and sorted(os.listdir(out)) == ['lbg_input-a.npz']


def test_parse_rejects_negative_seed_and_empty_output():
    import pytest
    from lbgnet.scripts.lbg_preprocess import parse
    for bad in (['--example', '--seed', '-1'], ['--example', '--output', '']):
        with pytest.raises(SystemExit) as exc:
            parse(bad)
        assert exc.value.code == 2


def test_doc_describes_the_command_and_a_runnable_check():
    from conftest import reference_file
    doc = open(os.path.join(ROOT, 'doc', 'preprocess.rst')).read()
    assert 'desi_lbg_preprocess' in doc and '--overwrite' in doc
    for key in ('``X``: float32, shape (N, 800, 2)', '``TARGETID``', '``EMPTY``'):
        assert key in doc
    cmd = re.search(r'venv/bin/python \.\./shared/tools/check_grid\.py (\S+)', doc)
    assert cmd, 'doc/preprocess.rst must give the check_grid.py command'
    assert cmd.group(1).startswith('../shared/reference/')
    reference_file(*cmd.group(1).split('/')[3:])               # the file it names exists


def test_file_without_fibermap_warns_about_targetids(tmp_path, tiny_coadd, caplog):
    """A stripped coadd (no FIBERMAP) is gridded, its TARGETIDs written as -1 with a warning
    (before, silently)."""
    import logging
    from astropy.io import fits
    good, _ = tiny_coadd
    stripped = str(tmp_path / 'stripped.fits')
    with fits.open(good) as hdul:
        fits.HDUList([h for h in hdul if h.name != 'FIBERMAP']).writeto(stripped)
    out = str(tmp_path / 'grid.npz')
    with caplog.at_level(logging.WARNING):
        assert main(['--coadd', stripped, '--output', out]) == 0
    assert np.all(np.load(out)['TARGETID'] == -1)
    assert 'no FIBERMAP, so no TARGETIDs: written as -1' in caplog.text


def test_fibermap_targetids_that_are_not_integers_fail_their_file(tmp_path, tiny_coadd, caplog):
    """TARGETIDs as text crashed the run with a traceback (the other files of --outdir were
    never gridded); as floats they were cast silently (DESI ids exceed 2**53: neighbours
    became equal).  Now such a file fails in one line and the others are gridded."""
    from astropy.io import fits
    good, _ = tiny_coadd
    bad = {}
    for kind, values in (('text', np.array([f'x{i}' for i in range(6)])),
                         ('float', np.arange(6) + 39627835576420141.0)):
        bad[kind] = str(tmp_path / f'coadd-{kind}.fits')
        with fits.open(good) as hdul:
            fmap = hdul['FIBERMAP']
            cols = [fits.Column('TARGETID', format='8A' if kind == 'text' else 'D',
                                array=values)]
            cols += [c for c in fmap.columns if c.name != 'TARGETID']
            hdul['FIBERMAP'] = fits.BinTableHDU.from_columns(cols, header=fmap.header,
                                                             name='FIBERMAP')
            hdul.writeto(bad[kind])
    out = tmp_path / 'grid'
    caplog.clear()
    assert main(['--coadd', bad['text'], bad['float'], good, '--outdir', str(out)]) == 1
    assert sorted(p.name for p in out.iterdir()) == ['lbg_input-test.npz']
    assert _errors(caplog) == [
        f'{bad["text"]}: FIBERMAP TARGETID must be an integer column, not text',
        f'{bad["float"]}: FIBERMAP TARGETID must be an integer column, not float64 (DESI '
        'TARGETIDs above 2**53 lose their last digits in floating point)']
    assert 'Traceback' not in caplog.text


def test_coadd_glob_patterns_are_expanded(tmp_path, tiny_coadd, caplog):
    """A quoted pattern is expanded as by the other commands; one matching nothing fails."""
    good, _ = tiny_coadd
    pattern = os.path.join(os.path.dirname(good), 'coadd-*.fits')
    out = tmp_path / 'g.npz'
    assert main(['--coadd', pattern, '--output', str(out)]) == 0
    np.testing.assert_array_equal(np.load(str(out))['TARGETID'], np.arange(6) + 100)
    caplog.clear()
    missing = str(tmp_path / 'nothing-*.fits')
    assert main(['--coadd', good, missing]) == 1
    assert _errors(caplog) == [f'{missing}: matched no coadd file']
    # with --outdir the summary counts the pattern as a failure (it said 0 with status 1)
    caplog.clear()
    import logging
    with caplog.at_level(logging.INFO):
        assert main(['--coadd', good, missing, '--outdir', str(tmp_path / 'grids')]) == 1
    assert '1 of 1 file(s) written' in caplog.text and '1 failure(s)' in caplog.text
    # --output needs one file: a pattern matching two is refused before any work
    other = tmp_path / 'coadd-two.fits'
    other.write_bytes(open(good, 'rb').read())
    caplog.clear()
    assert main(['--coadd', pattern, '--output', str(tmp_path / 'h.npz')]) == 1
    assert 'gives 2' in _errors(caplog)[0] and not (tmp_path / 'h.npz').exists()


def test_summary_median_is_over_the_spectra_with_data(caplog):
    """The logged median |S/N| per valid bin counted spectra without data as 0."""
    import logging
    from types import SimpleNamespace
    from lbgnet.scripts.lbg_preprocess import summarise
    X = np.zeros((3, 4, 2), np.float32)
    X[0, :, 1] = 2.0
    X[1, :2, 1] = 4.0
    info = SimpleNamespace(bands=('b',), empty=np.array([False, False, True]),
                           nvalid_bins=np.array([4, 2, 0]))
    with caplog.at_level(logging.INFO):
        summarise('f.fits', X, info)
    assert 'median |S/N| per valid bin 3.00 (of the 2 spectra with data)' in caplog.text


def test_outdir_writes_one_file_per_coadd_and_keeps_them_on_a_rerun(tmp_path, caplog):
    """--outdir: one lbg_input-X.npz per coadd-X.fits, the same arrays as --output; a bad
    file fails alone; a rerun keeps the files of the same coadds and configuration, refuses
    one whose coadd changed since (INCOSUM) unless --overwrite, and two coadds of one name
    are refused before any work."""
    import logging
    from lbg_testdata import write_test_coadd
    coadds = [str(tmp_path / f'coadd-sv3-dark-{pix}.fits') for pix in (11, 12)]
    for i, path in enumerate(coadds):
        write_test_coadd(path, 5 + i, seed=i)
    bad = tmp_path / 'coadd-sv3-dark-13.fits'
    bad.write_text('not fits')
    out = tmp_path / 'grid'
    assert main(['--coadd', *coadds, str(bad), '--outdir', str(out)]) == 1
    assert sorted(p.name for p in out.iterdir()) == ['lbg_input-sv3-dark-11.npz',
                                                     'lbg_input-sv3-dark-12.npz']
    single = str(tmp_path / 'single.npz')
    assert main(['--coadd', coadds[1], '--output', single]) == 0
    with np.load(single) as one, np.load(str(out / 'lbg_input-sv3-dark-12.npz')) as batch:
        assert set(one.files) == set(batch.files) and 'INCOSUM' in batch.files
        for key in one.files:
            np.testing.assert_array_equal(one[key], batch[key], err_msg=key)
    first = out / 'lbg_input-sv3-dark-11.npz'
    stamp = first.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(['--coadd', *coadds, '--outdir', str(out)]) == 0
    assert first.stat().st_mtime_ns == stamp
    assert '0 of 2 file(s) written' in caplog.text and '2 kept from an earlier run' in caplog.text
    assert '2/2 files gridded' in caplog.text                      # the progress bar
    write_test_coadd(coadds[0], 7, seed=5)              # the coadd was re-reduced since
    caplog.clear()
    assert main(['--coadd', *coadds, '--outdir', str(out)]) == 1
    assert 'INCOSUM differs' in caplog.text and '--overwrite' in caplog.text
    assert first.stat().st_mtime_ns == stamp
    assert main(['--coadd', *coadds, '--outdir', str(out), '--overwrite']) == 0
    with np.load(str(first)) as data:
        assert data['X'].shape == (7, 800, 2)
    os.remove(coadds[1])                  # its output stays; the missing coadd fails
    caplog.clear()
    assert main(['--coadd', coadds[1], '--outdir', str(out)]) == 1
    assert 'coadd-sv3-dark-12.fits' in caplog.text and (out / 'lbg_input-sv3-dark-12.npz').exists()
    (tmp_path / 'other').mkdir()                        # one name in two directories
    twin = str(tmp_path / 'other' / 'coadd-sv3-dark-11.fits')
    write_test_coadd(twin, 3)
    caplog.clear()
    assert main(['--coadd', coadds[0], twin, '--outdir', str(tmp_path / 'twins')]) == 1
    assert 'would both write' in caplog.text and not (tmp_path / 'twins').exists()


def test_outdir_option_conflicts_are_usage_errors(tmp_path):
    import pytest
    from lbgnet.scripts.lbg_preprocess import parse
    for bad in (['--coadd', 'a.fits', '--output', 'x.npz', '--outdir', 'd'],
                ['--coadd', 'a.fits', '--mpi'], ['--example', '--outdir', 'd', '--mpi'],
                ['--coadd', 'a.fits', '--outdir', '']):
        with pytest.raises(SystemExit):
            parse(bad)
    assert parse(['--coadd', 'a.fits', 'b.fits', '--outdir', 'd', '--overwrite', '--mpi']).mpi


def test_damaged_existing_output_is_one_line(tmp_path, caplog):
    """An existing lbg_input-X.npz that is not a readable archive (junk, a truncated zip,
    a .npy under that name) fails its file in one line, without a traceback (the review
    of 2026-12-05 found np.load's BadZipFile and a TypeError escaping)."""
    from lbg_testdata import write_test_coadd
    coadd = str(tmp_path / 'coadd-sv3-dark-31.fits')
    write_test_coadd(coadd, 3)
    out = tmp_path / 'grid'
    assert main(['--coadd', coadd, '--outdir', str(out)]) == 0
    target = out / 'lbg_input-sv3-dark-31.npz'
    good = target.read_bytes()
    target.write_bytes(good[:len(good) // 2])
    caplog.clear()
    assert main(['--coadd', coadd, '--outdir', str(out)]) == 1
    assert 'cannot be read' in caplog.text and 'Traceback' not in caplog.text
    # not a zip at all: said so (junk was read as a pickle: 'contains pickled data')
    with open(target, 'wb') as fh:
        np.save(fh, np.zeros(3))
    for junk in (b'junk', target.read_bytes()):
        target.write_bytes(junk)
        caplog.clear()
        assert main(['--coadd', coadd, '--outdir', str(out)]) == 1
        assert f'{target}: exists and is not an .npz archive' in caplog.text, caplog.text
        assert 'pickle' not in caplog.text and 'Traceback' not in caplog.text
    assert main(['--coadd', coadd, '--outdir', str(out), '--overwrite']) == 0
    assert target.read_bytes()[:2] == b'PK'


def test_launched_as_several_processes_without_mpi_is_refused(tmp_path, monkeypatch, caplog):
    """Under mpiexec/srun without --mpi every process would grid and write every file."""
    from lbg_testdata import write_test_coadd
    coadd = str(tmp_path / 'coadd-sv3-dark-51.fits')
    write_test_coadd(coadd, 2)
    monkeypatch.setenv('PMI_SIZE', '2')
    monkeypatch.setenv('PMI_RANK', '0')
    assert main(['--coadd', coadd, '--outdir', str(tmp_path / 'out')]) == 1
    assert 'one of 2 MPI processes but without --mpi' in caplog.text
    assert not (tmp_path / 'out').exists()


def test_output_that_is_a_device_or_pipe_or_a_fits_name_is_refused(tmp_path, caplog):
    """--output naming a FIFO (or a device: /dev/null as root) was replaced by the rename
    of the written file with --overwrite, and a FITS name got an .npz archive under it;
    with --outdir, a FIFO in place of an lbg_input-X.npz blocked the reading of it.  Each
    is one line now, and the FIFO is left as it was."""
    from lbg_testdata import write_test_coadd
    coadd = str(tmp_path / 'coadd-sv3-dark-61.fits')
    write_test_coadd(coadd, 2)
    fifo = tmp_path / 'pipe.npz'
    os.mkfifo(fifo)
    caplog.clear()
    assert main(['--coadd', coadd, '--output', str(fifo), '--overwrite']) == 1
    assert f'{fifo}: exists and is not a regular file' in caplog.text, caplog.text
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    caplog.clear()
    assert main(['--coadd', coadd, '--output', str(tmp_path / 'grid.fits')]) == 1
    assert 'a FITS name, but the output is an .npz archive' in caplog.text, caplog.text
    assert not (tmp_path / 'grid.fits').exists()
    out = tmp_path / 'grid'
    out.mkdir()
    os.mkfifo(out / 'lbg_input-sv3-dark-61.npz')
    caplog.clear()
    assert main(['--coadd', coadd, '--outdir', str(out)]) == 1       # did not block
    assert 'lbg_input-sv3-dark-61.npz: exists and is not a regular file' in caplog.text
    assert stat.S_ISFIFO(os.stat(out / 'lbg_input-sv3-dark-61.npz').st_mode)


def test_preprocess_leaves_no_empty_outdir_when_nothing_is_written(tmp_path):
    """A run that writes nothing (its one coadd unreadable) left the empty --outdir it
    made (desi_lbg_mock and desi_lbg_make_template remove theirs)."""
    from lbgnet.scripts.lbg_preprocess import main
    bad = tmp_path / 'coadd-bad.fits'
    bad.write_text('not a FITS file\n')
    out = tmp_path / 'grid' / 'deeper'
    assert main(['--coadd', str(bad), '--outdir', str(out)]) == 1
    assert not (tmp_path / 'grid').exists()
