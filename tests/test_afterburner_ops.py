"""desi_lbg_afterburner operations: resuming, output placement, refusals, one-line errors."""
import logging
import os
from types import SimpleNamespace

import fitsio
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from lbg_testdata import run_logged, save_tiny_model, write_test_coadd, write_test_redrock

import lbgnet.io.catalog as iocat
import lbgnet.scripts.lbg_afterburner as script
from lbgnet.io.catalog import OutputFileError, read_catalog, write_outputs
from lbgnet.scripts.lbg_afterburner import Outcome, main, summarise

#: What fitsio raised when the disk filled up while writing the priors file (cfitsio's
#: error stack; its first line is misleading).
CFITSIO_DISK_FULL = '\n'.join([
    'FITSIO status = 252: 1st key not SIMPLE or XTENSION',
    'ffgcnn could not find column: ZBLANK',
    "Extension doesn't start with SIMPLE or XTENSION keyword. (ffrhdu)",
    'END',
    'Error while closing HDU number 0 (ffchdu).',
    'Failed to move to HDU number 2 (ffmahd).',
    'FITSIO status = 107: tried to move past end of file',
    'FITSIO status = 106: error writing to FITS file',
    'Error writing data buffer to file:',
    '/d/.priors_lbg-x.tmp1.fits',
    ''])


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return save_tiny_model(str(tmp_path_factory.mktemp('model') / 'tiny.weights.h5'))


def make_pair(directory, name='main-dark-100', nspec=4, **kwargs):
    """Coadd + Redrock file in `directory`; return the coadd and its default catalogue path."""
    os.makedirs(directory, exist_ok=True)
    coadd = os.path.join(directory, f'coadd-{name}.fits')
    tid, _ = write_test_coadd(coadd, nspec, **kwargs)
    write_test_redrock(os.path.join(directory, f'redrock-{name}.fits'), tid[::-1])
    return coadd, os.path.join(directory, f'lbg_cnn-{name}.fits')


def run(caplog, *options):
    return run_logged(main, caplog, *options)


def failed_lines(text):
    return [line for line in text.splitlines() if 'FAILED' in line]


def test_write_error_is_one_line_with_the_real_reason(tmp_path, model_path, caplog, monkeypatch):
    """fitsio's multi-line error gives its "error writing" line, not its first line."""
    coadd, output = make_pair(str(tmp_path))

    def disk_full(path, table, header, extname):
        raise OSError(CFITSIO_DISK_FULL)
    monkeypatch.setattr(iocat, '_write_table', disk_full)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 1 and 'Traceback' not in text and '1st key' not in text
    (line,) = failed_lines(text)
    assert line.endswith('lbg_cnn-main-dark-100.fits: cannot write (FITSIO status = 106: error '
                         'writing to FITS file); no output of this file was written')
    assert not [f for f in os.listdir(tmp_path) if f.startswith(('.', 'lbg_cnn-', 'priors_lbg-'))]


def test_write_error_on_a_full_device_says_so(tmp_path, monkeypatch):
    table = Table({'TARGETID': np.arange(3)})
    path = str(tmp_path / 'lbg_cnn-x.fits')

    def disk_full(path, table, header, extname):
        open(path, 'wb').close()
        raise OSError(CFITSIO_DISK_FULL)

    monkeypatch.setattr(iocat, '_write_table', disk_full)
    monkeypatch.setattr(iocat.shutil, 'disk_usage',
                        lambda path: SimpleNamespace(total=10 ** 9, used=10 ** 9, free=0))
    with pytest.raises(OutputFileError) as info:
        write_outputs([(path, table, 'LBG_CNN')], fits.Header())
    assert str(info.value) == (f'{path}: cannot write (no space left on device (0 bytes free); '
                               'FITSIO status = 106: error writing to FITS file); no output of '
                               'this file was written')
    assert os.listdir(tmp_path) == []


def test_write_error_on_a_pseudo_file_system_is_not_a_full_device(tmp_path, monkeypatch):
    """/proc and /sys report 0 bytes free of 0: a write refused there is not a full disk."""
    table = Table({'TARGETID': np.arange(3)})
    path = str(tmp_path / 'lbg_cnn-x.fits')

    def refused(path, table, header, extname):
        raise OSError('FITSIO status = 105: could not create the named file')

    monkeypatch.setattr(iocat, '_write_table', refused)
    monkeypatch.setattr(iocat.shutil, 'disk_usage',
                        lambda path: SimpleNamespace(total=0, used=0, free=0))
    with pytest.raises(OutputFileError) as info:
        write_outputs([(path, table, 'LBG_CNN')], fits.Header())
    assert 'space' not in str(info.value) and 'could not create the named file' in str(info.value)


def test_silently_truncated_write_is_an_error(tmp_path, monkeypatch):
    """cfitsio can fail while closing without fitsio raising: the file is checked after."""
    real = iocat._write_table
    table = Table({'TARGETID': np.arange(2000)})
    paths = [str(tmp_path / 'lbg_cnn-x.fits'), str(tmp_path / 'priors_lbg-x.fits')]
    def truncated(path, table, header, extname):
        real(path, table, header, extname)
        if extname == 'PRIORS':
            os.truncate(path, 2 * 2880)

    monkeypatch.setattr(iocat, '_write_table', truncated)
    with pytest.raises(OutputFileError, match=r'priors_lbg-x.fits: cannot write \(.*incomplete after '
                                              r'writing.*\); no output of this file was written'):
        write_outputs([(paths[0], table, 'LBG_CNN'), (paths[1], table, 'PRIORS')], fits.Header())
    assert os.listdir(tmp_path) == []


def test_output_that_is_a_directory(tmp_path, model_path, caplog, monkeypatch):
    """An output path that is a directory is refused before anything is written (the
    priors file must not appear alone), and is not taken for a finished output; a rename
    that fails anyway names the file it failed on and what was already written."""
    coadd, _ = make_pair(str(tmp_path / 'in'))
    out = tmp_path / 'dd' / 'out.fits'
    os.makedirs(out)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--output', str(out),
                   '--overwrite')
    assert rc == 1 and 'Traceback' not in text
    assert f'{out}: is a directory; cannot write the output there' in text
    assert os.listdir(tmp_path / 'dd') == ['out.fits']
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--output', str(out))
    assert rc == 1 and 'skipped' not in text
    # without --overwrite too it says why (it pointed to --overwrite, which cannot help)
    assert f'{out}: is a directory; cannot write the output there' in text
    assert '--overwrite' not in text
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--priors', str(out))
    assert rc == 1 and f'{out}: is a directory; cannot write the output there' in text
    # an --input-dir that is a file is not said to be missing
    rc, text = run(caplog, '--input-dir', coadd, '--model', model_path)
    assert rc == 1 and f'{coadd}: not a directory' in text
    # and a --coadd that is a directory is not said to lack the "coadd" prefix
    rc, text = run(caplog, '--coadd', str(tmp_path / 'in'), '--model', model_path)
    assert rc == 1 and f'{tmp_path / "in"}: is a directory, not a coadd file (--input-dir' in text
    table = Table({'TARGETID': np.arange(3)})
    paths = [str(tmp_path / 'lbg_cnn-x.fits'), str(tmp_path / 'priors_lbg-x.fits')]
    real = os.replace

    def replace(src, dst):
        if dst == paths[0]:
            raise PermissionError(13, 'Permission denied')
        real(src, dst)
    monkeypatch.setattr(os, 'replace', replace)
    with pytest.raises(OutputFileError) as info:
        write_outputs([(paths[0], table, 'LBG_CNN'), (paths[1], table, 'PRIORS')], fits.Header())
    assert str(info.value) == (f'{paths[0]}: cannot rename the output into place (Permission '
                               f'denied); {paths[1]} already written')
    monkeypatch.setattr(os, 'replace', real)
    # over an older pair (--overwrite): the old catalogue goes before the renames, so a
    # failure (or a kill) between them never leaves it beside the new priors, where a
    # resumed run would skip the file as complete
    old = Table({'TARGETID': np.arange(5)})
    write_outputs([(paths[0], old, 'LBG_CNN'), (paths[1], old, 'PRIORS')], fits.Header())
    monkeypatch.setattr(os, 'replace', replace)
    with pytest.raises(OutputFileError, match=f'cannot rename the output into place .*'
                       f'already written \\(the earlier {paths[0]} was removed: a rerun'):
        write_outputs([(paths[0], table, 'LBG_CNN'), (paths[1], table, 'PRIORS')], fits.Header())
    assert not os.path.exists(paths[0]) and len(read_catalog(paths[1], 'PRIORS')[0]) == 3
    monkeypatch.setattr(os, 'replace', real)
    write_outputs([(paths[0], old, 'LBG_CNN'), (paths[1], old, 'PRIORS')], fits.Header())
    assert len(read_catalog(paths[0])[0]) == 5


def test_wavelengths_in_other_units_are_refused(tmp_path, model_path, caplog):
    """Wavelengths in nm put no pixel on the grid: a clear error, not a file of NODATA rows."""
    coadd, output = make_pair(str(tmp_path))
    with fitsio.FITS(coadd, 'rw') as fx:
        for band in 'BRZ':
            fx[f'{band}_WAVELENGTH'].write(fx[f'{band}_WAVELENGTH'].read() / 10)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 1 and 'Traceback' not in text and not os.path.exists(output)
    assert 'no camera overlaps the model grid 3600-10000 Angstrom (b 360' in text


def test_non_ascii_path_is_escaped_in_the_header(tmp_path, model_path, caplog):
    """FITS headers hold printable ASCII only: a path with other characters is recorded
    escaped instead of failing the write after the work is done."""
    coadd, output = make_pair(str(tmp_path / 'données'))
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 0 and 'Traceback' not in text
    header = fitsio.read_header(output, 'LBG_CNN')
    assert header['INCOADD'].endswith('donn\\xe9es/coadd-main-dark-100.fits')


def test_listed_coadds_go_flat_into_outdir_and_stay_there(tmp_path, model_path, caplog):
    """Adding a coadd from elsewhere (here a missing one) does not move the other outputs:
    the rerun finds them and skips those files."""
    a, _ = make_pair(str(tmp_path / 'in' / 'h1'), name='main-dark-1')
    b, _ = make_pair(str(tmp_path / 'in' / 'h2'), name='main-dark-2')
    out = tmp_path / 'out'
    rc, text = run(caplog, '--coadd', a, b, '--outdir', str(out), '--model', model_path)
    assert rc == 0 and '2 files done' in text
    assert sorted(os.listdir(out)) == ['lbg_cnn-main-dark-1.fits', 'lbg_cnn-main-dark-2.fits',
                                       'priors_lbg-main-dark-1.fits', 'priors_lbg-main-dark-2.fits']
    typo = str(tmp_path / 'typo' / 'coadd-main-dark-3.fits')
    rc, text = run(caplog, '--coadd', a, b, typo, '--outdir', str(out), '--model', model_path)
    assert rc == 1 and '0 files done' in text and '2 skipped' in text
    assert failed_lines(text)[-1].endswith(f'FAILED {typo}: no such file')
    assert len(os.listdir(out)) == 4
    # two coadds of one name cannot both go flat into --outdir: one clear line, nothing done
    c, _ = make_pair(str(tmp_path / 'in' / 'h3'), name='main-dark-1')
    rc, text = run(caplog, '--coadd', a, c, '--outdir', str(out), '--model', model_path, '--overwrite')
    assert rc == 1 and 'would both write' in text and 'spectra' not in text


def test_files_per_rank_count_only_processed_files(caplog):
    outcomes = [Outcome('a', 'done', rank=1), Outcome('b', 'failed', 'x', rank=1),
                Outcome('c', 'skipped'), Outcome('d', 'skipped'), Outcome('e', 'skipped'),
                Outcome('f', 'failed', 'stale outputs', rank=0, unprocessed=True)]
    with caplog.at_level(logging.INFO):
        assert summarise(outcomes, [], size=2) == 2
    assert 'files per rank: 0, 2' in caplog.text       # the refused existing outputs: none
    assert '1 file done' in caplog.text and '3 skipped, 2 failed' in caplog.text


def test_catalogue_without_its_priors_file_is_redone(tmp_path, model_path, caplog):
    coadd, output = make_pair(str(tmp_path))
    priors = output.replace('lbg_cnn-', 'priors_lbg-')
    assert run(caplog, '--coadd', coadd, '--model', model_path)[0] == 0
    os.remove(priors)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 0 and '1 file done' in text and '0 skipped' in text
    assert os.path.exists(priors) and os.path.exists(output)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 0 and '0 files done' in text and '1 skipped' in text


def drop_fibermap_targetid(path):
    with fits.open(path) as hdul:
        fm = hdul['FIBERMAP']
        cols = [col for col in fm.columns if col.name != 'TARGETID']
        hdus = [fits.BinTableHDU.from_columns(cols, header=fm.header, name='FIBERMAP')
                if hdu.name == 'FIBERMAP' else hdu for hdu in hdul]
        fits.HDUList(hdus).writeto(path, overwrite=True)


def test_fibermap_without_targetid_is_one_line(tmp_path, model_path, caplog):
    bad, bad_out = make_pair(str(tmp_path), name='main-dark-1')
    _, good_out = make_pair(str(tmp_path), name='main-dark-2')
    drop_fibermap_targetid(bad)
    rc, text = run(caplog, '--coadd', str(tmp_path / 'coadd-*.fits'), '--model', model_path)
    assert rc == 1 and 'Traceback' not in text and 'KeyError' not in text
    assert f'{bad}: FIBERMAP has no TARGETID column' in text
    assert failed_lines(text) == [line for line in text.splitlines()
                                  if line.endswith(f'FAILED {bad}: FIBERMAP has no TARGETID column')]
    assert '1 file done' in text and os.path.exists(good_out) and not os.path.exists(bad_out)


def test_existing_priors_or_output_target_is_not_overwritten(tmp_path, model_path, caplog):
    coadd, _ = make_pair(str(tmp_path))
    truth = tmp_path / 'truth.fits'
    truth.write_text('precious')
    for opts in (['--priors', str(truth)], ['--output', str(truth)],
                 ['--output', str(tmp_path / 'cat.fits'), '--priors', str(truth)]):
        rc, text = run(caplog, '--coadd', coadd, '--model', model_path, *opts)
        assert rc == 1 and 'Traceback' not in text
        assert f'{truth}: exists; refusing to overwrite it (use --overwrite)' in text
        assert truth.read_text() == 'precious' and not (tmp_path / 'cat.fits').exists()
    # with --overwrite it is replaced; a complete pair of explicit names is then skipped
    opts = ['--output', str(tmp_path / 'cat.fits'), '--priors', str(truth)]
    assert run(caplog, '--coadd', coadd, '--model', model_path, '--overwrite', *opts)[0] == 0
    assert fits.getheader(truth, 'PRIORS')['EXTNAME'] == 'PRIORS'
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, *opts)
    assert rc == 0 and '1 skipped' in text


def test_an_output_that_is_a_pipe_is_refused(tmp_path, model_path, caplog):
    """An output path that is a FIFO (or a device: /dev/null as root) was replaced by the
    rename of the written file with --overwrite; refused in one line, left as it was."""
    import stat
    coadd, output = make_pair(str(tmp_path))
    fifo = tmp_path / 'pipe.fits'
    os.mkfifo(fifo)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--priors', str(fifo),
                   '--overwrite')
    assert rc == 1 and 'Traceback' not in text
    assert f'{fifo}: exists and is not a regular file' in text, text
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and not os.path.exists(output)


@pytest.mark.parametrize('named', ['--priors', '--output'])
def test_naming_one_output_does_not_replace_an_existing_default_one(tmp_path, model_path,
                                                                    caplog, named):
    """The default pair of an earlier run, then a run naming only the priors (or only the
    catalogue) elsewhere: the other output's default name exists and is refused, not
    replaced (it was, silently, leaving the earlier pair out of step)."""
    coadd, output = make_pair(str(tmp_path))
    assert run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine')[0] == 0
    priors = os.path.join(os.path.dirname(output),
                          os.path.basename(output).replace('lbg_cnn', 'priors_lbg'))
    default = {'--priors': output, '--output': priors}[named]
    before = {p: open(p, 'rb').read() for p in (output, priors)}
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine',
                   '--c-thresh', '0.3', named, str(tmp_path / 'other.fits'))
    assert rc == 1 and 'Traceback' not in text
    other = {'--priors': '--output', '--output': '--priors'}[named]
    mate = os.path.basename({'--priors': priors, '--output': output}[named])
    assert (f"{default}: exists, with {mate} beside it (an earlier run's pair); refusing to "
            f"overwrite it (use --overwrite, or name this run's {other[2:]} output with "
            f'{other})') in text, text
    assert {p: open(p, 'rb').read() for p in (output, priors)} == before
    assert not (tmp_path / 'other.fits').exists()
    # --overwrite replaces it; the run then writes the pair it names
    assert run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine', '--overwrite',
               '--c-thresh', '0.3', named, str(tmp_path / 'other.fits'))[0] == 0
    assert (tmp_path / 'other.fits').exists() and open(default, 'rb').read() != before[default]


def test_a_named_output_run_stopped_between_its_renames_is_redone(tmp_path, model_path,
                                                                  caplog):
    """--output C alone writes C and the default-named priors beside it (priors renamed
    first): a run stopped between the renames leaves that priors file alone, and the same
    command redoes the file, as without --output; the lone priors file is not an earlier
    run's pair (it was refused as one).  Also with the default catalogue name given."""
    coadd, default = make_pair(str(tmp_path))
    out = tmp_path / 'o1'
    out.mkdir()
    for name in ('C.fits', os.path.basename(default)):
        catalogue = str(out / name)
        assert run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine',
                   '--output', catalogue)[0] == 0
        os.remove(catalogue)                   # what a kill between the renames leaves
        rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine',
                       '--output', catalogue)
        assert rc == 0 and 'refusing' not in text, text
        assert os.path.exists(catalogue)
        for path in out.iterdir():
            path.unlink()


def test_rerun_without_resolution_fails_before_the_network(tmp_path, model_path, caplog,
                                                           monkeypatch):
    coadd, output = make_pair(str(tmp_path))             # no RESOLUTION HDUs

    def network(*args, **kwargs):
        raise AssertionError('the network ran')
    monkeypatch.setattr(script, 'template_files', lambda templates: ['rrtemplate-x.fits'])
    monkeypatch.setattr(script, 'template_zrange', lambda files: [(2.0, 5.0)])
    monkeypatch.setattr(script, 'templates_sha256', lambda files: 'x' * 64)
    monkeypatch.setattr(script, 'predict_coadd', network)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--rerun-redrock')
    assert rc == 1 and 'the network ran' not in text and 'Traceback' not in text
    assert (f'FAILED {coadd}: cannot rerun Redrock: no B_RESOLUTION HDU (run without '
            '--rerun-redrock for this file; desi_lbg_zcatalog stacks it with --allow-mixed)') \
        in text
    assert not os.path.exists(output)


def test_tsnr2_lrg_from_scores_in_redrock_order(tmp_path, model_path, caplog):
    """TSNR2_LRG (the depth desi_lbg_zcatalog ranks repeated targets by) comes from the
    coadd's SCORES row of each target; NaN without SCORES."""
    full, cat_full = make_pair(str(tmp_path / 'full'), nspec=5, full=True)
    fm = fitsio.read(full, 'FIBERMAP')
    with fitsio.FITS(full, 'rw') as fx:                 # distinct values per row
        fx['SCORES'].write_column('TSNR2_LRG', np.arange(5, dtype=np.float32) * 10 + 3)
    plain, cat_plain = make_pair(str(tmp_path / 'plain'), nspec=5)
    assert run(caplog, '--coadd', full, '--model', model_path, '--no-refine')[0] == 0
    assert run(caplog, '--coadd', plain, '--model', model_path, '--no-refine')[0] == 0
    cat = fitsio.read(cat_full, 'LBG_CNN')
    expected = dict(zip(fm['TARGETID'].tolist(), (np.arange(5) * 10 + 3).tolist()))
    assert cat['TSNR2_LRG'].tolist() == [expected[t] for t in cat['TARGETID'].tolist()]
    assert np.all(np.isnan(fitsio.read(cat_plain, 'LBG_CNN')['TSNR2_LRG']))


@pytest.mark.parametrize('damage', ['short', 'order', 'no_column'])
def test_unusable_scores_leave_tsnr2_nan_without_failing(tmp_path, model_path, caplog, damage):
    """TSNR2_LRG only ranks repeated spectra: a SCORES HDU with another length, other
    TARGETIDs or no TSNR2_LRG gives NaN (with a warning), never a failed file."""
    coadd, cat_path = make_pair(str(tmp_path), nspec=5, full=True)
    with fits.open(coadd) as hdul:
        scores = Table(hdul['SCORES'].data)
        if damage == 'short':
            scores = scores[:3]
        elif damage == 'order':
            scores = scores[::-1]
        else:
            scores.remove_column('TSNR2_LRG')
        hdus = [h if h.name != 'SCORES' else fits.BinTableHDU(scores, name='SCORES')
                for h in hdul]
        fits.HDUList(hdus).writeto(coadd, overwrite=True)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine')
    assert rc == 0 and 'Traceback' not in text
    assert np.all(np.isnan(fitsio.read(cat_path, 'LBG_CNN')['TSNR2_LRG']))
    assert ('TSNR2_LRG left NaN' in text) == (damage != 'no_column')


def test_text_targetids_fail_without_a_scores_warning_first(tmp_path, model_path, caplog):
    """A FIBERMAP with text TARGETIDs fails on that one line; SCORES, whose integer
    TARGETIDs never equal text, is not first said to be 'in another order'."""
    coadd, _ = make_pair(str(tmp_path), nspec=5, full=True)
    with fits.open(coadd) as hdul:
        fm = Table(hdul['FIBERMAP'].data)
        fm.replace_column('TARGETID', fm['TARGETID'].astype(str))
        hdus = [h if h.name != 'FIBERMAP' else fits.BinTableHDU(fm, name='FIBERMAP')
                for h in hdul]
        fits.HDUList(hdus).writeto(coadd, overwrite=True)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine')
    assert rc == 1 and 'FIBERMAP TARGETID must be an integer column' in text
    assert 'SCORES' not in text


def test_coadd_without_fibermap_names_that_first(tmp_path, model_path, caplog):
    """A coadd without FIBERMAP (a stripped file) says so, rather than asking for a Redrock
    file that could not be used anyway."""
    coadd, output = make_pair(str(tmp_path))
    os.remove(coadd.replace('coadd-', 'redrock-'))
    with fits.open(coadd) as hdul:
        fits.HDUList([hdu for hdu in hdul if hdu.name != 'FIBERMAP']).writeto(coadd, overwrite=True)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 1 and f'{coadd}: no FIBERMAP HDU' in text and 'redrock' not in text.lower()


@pytest.mark.parametrize('where', ['outdir', 'input'])
def test_cfitsio_syntax_in_a_path_is_refused_and_touches_nothing(tmp_path, model_path, caplog,
                                                                  where):
    """cfitsio reads 'results[v2]/x.fits' as the file 'results' (and, writing with clobber,
    replaced it): such a path is refused on one line, before anything is created or
    changed; an input under such a name is named as the problem (not 'matched no file')."""
    coadd, _ = make_pair(str(tmp_path / 'in'))
    (tmp_path / 'results').write_text('precious')
    before = sorted(os.listdir(tmp_path))
    if where == 'outdir':
        options = ['--coadd', coadd, '--outdir', str(tmp_path / 'results[v2]')]
        named = str(tmp_path / 'results[v2]' / os.path.basename(coadd).replace('coadd-', 'lbg_cnn-'))
    else:
        os.rename(tmp_path / 'in', tmp_path / 'run (copy)')
        coadd = str(tmp_path / 'run (copy)' / os.path.basename(coadd))
        options = ['--coadd', coadd, '--outdir', str(tmp_path / 'out')]
        named, before = coadd, sorted(os.listdir(tmp_path))
    rc, text = run(caplog, *options, '--model', model_path)
    assert rc == 1 and 'Traceback' not in text
    assert f'{named}: the path contains ' in text and 'cfitsio' in text
    assert (tmp_path / 'results').read_text() == 'precious'
    assert sorted(os.listdir(tmp_path)) == before           # no 'results[v2]', no stray file
    with pytest.raises(SystemExit):                          # a literal existing name is one file
        script.parse(['--coadd', str(tmp_path / 'nothing[1].fits'), '--output', 'x.fits'])
    if where == 'input':
        assert script.parse(['--coadd', coadd, '--output', 'x.fits']).coadd == [coadd]


def test_desispec_temporary_in_the_input_tree_is_skipped(tmp_path, model_path, caplog):
    """A coadd-X_tmp<pid>.fits left by an interrupted desispec write is not a coadd of the
    production: skipped with a warning, and the run succeeds."""
    root = tmp_path / 'redux'
    coadd, _ = make_pair(str(root))
    leftover = str(root / 'coadd-main-dark-100_tmp4242.fits')
    with open(coadd, 'rb') as fin, open(leftover, 'wb') as fout:
        fout.write(fin.read(100000))
    rc, text = run(caplog, '--input-dir', str(root), '--outdir', str(tmp_path / 'out'),
                   '--model', model_path)
    assert rc == 0 and '1 file done' in text
    assert 'desispec write skipped' in text and leftover in text
    assert sorted(os.listdir(tmp_path / 'out')) == ['lbg_cnn-main-dark-100.fits',
                                                    'priors_lbg-main-dark-100.fits']


def test_temporaries_of_a_killed_run_are_removed_or_reported(tmp_path, model_path, caplog):
    """A run killed outright (kill -9, Slurm's SIGKILL) leaves its temporaries beside the
    output.  The next run over that file removes those of a process that has ended on this
    host (they were only reported, and piled up: a private directory of add_checksums
    holds a whole copy of the catalogue), in one line; it reports, once, and keeps those
    that another run may own (a live process's, another host's, one named without its
    host).  Temporaries of other names, or of files not processed, are not looked at."""
    import subprocess
    from lbgnet.io.atomic import host_label
    coadd, output = make_pair(str(tmp_path))
    child = subprocess.Popen(['true'])
    child.wait()
    host, dead = host_label(), child.pid
    gone = [tmp_path / f'.lbg_cnn-main-dark-100.tmp{dead}-{host}.fits',
            tmp_path / f'.priors_lbg-main-dark-100.tmp{dead}-{host}.fits.plain-{dead}',
            tmp_path / f'..lbg_cnn-main-dark-100.tmp{dead}-{host}.fits.k3j_x9ab']
    for path in gone[:2]:
        path.write_bytes(b'half')
    gone[2].mkdir()
    (gone[2] / f'.lbg_cnn-main-dark-100.tmp{dead}-{host}.fits').write_bytes(b'whole')
    stale = tmp_path / f'.lbg_cnn-main-dark-100.tmp{dead}-other-node.fits'
    stale.write_bytes(b'half')
    others = [tmp_path / f'.lbg_cnn-main-dark-999.tmp{dead}-{host}.fits',
              tmp_path / '.lbg_cnn-main-dark-100.tmpx.fits']
    for path in others:
        path.write_bytes(b'not a temporary of this output')
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 0 and text.count('temporary file(s) of interrupted writes') == 1
    assert (f'removed 3 temporary file(s) of interrupted writes left beside the outputs by '
            f'process(es) {dead} of this host, no longer running: '
            f'{", ".join(sorted(map(str, gone)))}') in text
    assert (f'1 temporary file(s) beside the outputs that may still be in use, e.g. {stale} '
            f'(process {dead} on other-node): kept') in text
    assert not any(path.exists() for path in gone)
    assert stale.exists() and all(path.exists() for path in others)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)     # skipped: not looked at
    assert rc == 0 and 'temporary file(s)' not in text


def test_more_threads_than_cores_is_warned_once(tmp_path, model_path, caplog):
    """--threads above the cores the process may use is accepted (as the operator asked)
    but said once: it was silent."""
    coadd, _ = make_pair(str(tmp_path))
    cores = len(os.sched_getaffinity(0))
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--threads', str(cores + 7))
    assert rc == 0
    assert text.count(f'--threads {cores + 7} exceeds the {cores} core(s)') == 1
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--threads', '1',
                   '--overwrite')
    assert rc == 0 and 'exceeds' not in text


def test_training_checkpoint_runs_as_a_model_with_warnings(tmp_path, caplog):
    """The checkpoint of a killed training (lbgnet.train.save_checkpoint) runs as any model;
    the afterburner says once that its thresholds were not chosen on a validation set
    (unless both are given) and that its errors are uncalibrated (header ZERRCAL = F)."""
    import keras
    from lbg_testdata import tiny_config
    from lbgnet.model import build_model
    from lbgnet.train import save_checkpoint
    keras.utils.set_random_seed(3)
    model = str(tmp_path / 'run' / 'checkpoint.weights.h5')
    save_checkpoint(model, build_model(tiny_config()), tiny_config(), 12, 'val_score', 0.8125)
    tid, _ = write_test_coadd(str(tmp_path / 'coadd-sv3-dark-401.fits'), 6, seed=1)
    write_test_redrock(str(tmp_path / 'redrock-sv3-dark-401.fits'), tid)
    base = ['--coadd', str(tmp_path / 'coadd-sv3-dark-401.fits'), '--model', model,
            '--no-refine']
    code, errors = run(caplog, *base, '--outdir', str(tmp_path / 'a'))
    assert code == 0, errors
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    checkpoint = [m for m in said if 'a training checkpoint (epoch 12, val_score 0.8125)' in m]
    assert len(checkpoint) == 1 and 'not chosen on a validation set' in checkpoint[0]
    assert any('ZERR_LBG uncalibrated (a training checkpoint' in m for m in said)
    header = fitsio.read_header(str(tmp_path / 'a' / 'lbg_cnn-sv3-dark-401.fits'), 'LBG_CNN')
    assert header['ZERRCAL'] is False
    caplog.clear()
    code, _ = run(caplog, *base, '--outdir', str(tmp_path / 'b'), '--c-thresh', '0.5',
                  '--n-thresh', '1')
    assert code == 0
    assert not [r for r in caplog.records if 'a training checkpoint (epoch' in r.getMessage()]
    code, _ = run(caplog, *base, '--outdir', str(tmp_path / 'c'), '--c-thresh', '0.5')
    assert code == 0
    assert [r for r in caplog.records if 'a training checkpoint (epoch' in r.getMessage()]


def _float_targetid(path, ext):
    """Rewrite the TARGETID column of HDU `ext` of `path` as float64 (a badly made file)."""
    with fits.open(path) as hdul:
        cols = [fits.Column(name='TARGETID', format='D',
                            array=np.asarray(hdul[ext].data['TARGETID'], dtype=float))
                if c.name == 'TARGETID' else c for c in hdul[ext].columns]
        new = fits.BinTableHDU.from_columns(cols, header=hdul[ext].header, name=ext)
        fits.HDUList([new if h.name == ext else h for h in hdul]).writeto(path, overwrite=True)


def test_float_targetids_are_named_not_reported_as_duplicates(tmp_path, model_path, caplog):
    """DESI TARGETIDs exceed 2**53: stored as float64, neighbouring ids become equal.  Such a
    coadd was failed as 'duplicated TARGETID(s)' (or, ids 8 apart, as TARGETIDs missing
    from the Redrock file); now the column and its type are named, for either file."""
    tid = 39627650000000000 + np.arange(6)
    for pix, ext in ((1, 'FIBERMAP'), (2, 'REDSHIFTS')):
        coadd = str(tmp_path / f'coadd-sv3-dark-{pix}.fits')
        redrock = str(tmp_path / f'redrock-sv3-dark-{pix}.fits')
        write_test_coadd(coadd, 6, targetid=tid)
        write_test_redrock(redrock, tid)
        _float_targetid(coadd if ext == 'FIBERMAP' else redrock, ext)
        code, text = run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine',
                         '--outdir', str(tmp_path / 'out'))
        assert code == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors[0] == (f'{coadd if ext == "FIBERMAP" else redrock}: {ext} TARGETID must '
                             'be an integer column, not float64 (DESI TARGETIDs above 2**53 '
                             'lose their last digits in floating point)')
        assert 'duplicated' not in text and 'Traceback' not in text


def test_files_failing_the_cheap_checks_load_no_model(tmp_path, model_path, caplog, monkeypatch):
    """A batch whose every file fails a check that reads nothing (a missing coadd, a coadd
    whose name gives no Redrock file) fails one line per file without loading the model;
    a good file among them is still done."""
    missing = str(tmp_path / 'gone' / 'coadd-main-dark-1.fits')
    good, output = make_pair(str(tmp_path / 'in'))
    unnamed = str(tmp_path / 'in' / 'spectra.fits')
    with open(good, 'rb') as src, open(unnamed, 'wb') as dst:
        dst.write(src.read())
    loads = []
    with monkeypatch.context() as patch:
        patch.setattr(script, 'start_tensorflow', lambda nthreads=None: loads.append('tf'))
        patch.setattr(script, 'load_network', lambda path: loads.append(path))
        rc, text = run(caplog, '--coadd', missing, unnamed, '--model', model_path)
    assert rc == 1 and loads == []
    assert [line.split('FAILED ')[1].split(':')[0] for line in failed_lines(text)] == [
        missing, unnamed]
    assert 'no such file' in text and 'no model loaded' in text
    rc, text = run(caplog, '--coadd', missing, good, unnamed, '--model', model_path)
    assert rc == 1 and len(failed_lines(text)) == 2 and os.path.isfile(output)
    assert '1 file done' in text and 'model loaded once per rank' in text


def test_outputs_kept_from_another_revision_are_counted(tmp_path, model_path, caplog,
                                                        monkeypatch):
    """A resumed production keeps outputs made with this model and settings whatever the
    code revision that wrote them: said once in the summary (it was silent)."""
    import lbgnet.scripts.lbg_afterburner as script
    coadd, output = make_pair(str(tmp_path), nspec=4)
    assert run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine')[0] == 0
    with fitsio.FITS(output, 'rw') as fx:
        fx[0].write_key('LBGGIT', 'v0.0-1-gdeadbeef0000', 'lbgnet source revision')
    monkeypatch.setattr(script, 'source_revision', lambda: 'v0.1-9-gcafe00000000')
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine')
    assert rc == 0 and '1 skipped' in text
    assert ('1 of the existing catalogues kept were written by another lbgnet revision '
            '(v0.0-1-gdeadbeef0000; this run: v0.1-9-gcafe00000000)') in text
    monkeypatch.setattr(script, 'source_revision', lambda: 'v0.0-1-gdeadbeef0000')
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine')
    assert rc == 0 and 'another lbgnet revision' not in text


@pytest.mark.parametrize('step', ['1e-9', '1.9e-5'])
def test_refine_step_too_fine_is_refused_by_name(step, capsys):
    """--refine-step 1e-9 passed the (0, 2e-3] check and asked numpy for 2 TiB of scan
    tables (a MemoryError traceback that never named the option)."""
    from lbgnet.scripts.lbg_afterburner import parse
    with pytest.raises(SystemExit):
        parse(['--coadd', 'coadd-x.fits', f'--refine-step={step}'])
    assert '--refine-step must be in [2e-05, 2e-3]' in capsys.readouterr().err
    assert parse(['--coadd', 'coadd-x.fits', '--refine-step=2e-5']).refine_step == 2e-5
