"""Tests of lbgnet.io readers: normal files and every bad-input case."""

import os

import fitsio
import numpy as np
import pytest
from astropy.table import Table

from lbgnet.io import InputFileError, MissingInputError, read_coadd, read_redrock
from lbgnet.preprocess import load_coadd_grid

from conftest import reference_file


def _copy_without(src, dst, drop=(), replace=None):
    """Copy a FITS file HDU by HDU, dropping some EXTNAMEs and replacing the data of others."""
    replace = replace or {}
    with fitsio.FITS(src) as fin, fitsio.FITS(dst, 'rw', clobber=True) as fout:
        fout.write(None, header=fin[0].read_header())
        for hdu in fin[1:]:
            name = hdu.get_extname()
            if name in drop:
                continue
            data = replace.get(name, hdu.read())
            fout.write(data, extname=name, header=None)
    return dst


def test_read_coadd_written_by_desispec(tiny_coadd):
    path, arrays = tiny_coadd
    coadd = read_coadd(path)
    assert coadd.bands == ('b', 'r', 'z')
    assert coadd.nspec == 6
    np.testing.assert_array_equal(coadd.targetid, arrays['targetid'])
    for b in 'brz':
        np.testing.assert_array_equal(coadd.flux[b], arrays['flux'][b])
        np.testing.assert_array_equal(coadd.ivar[b], arrays['ivar'][b])
        assert coadd.mask[b] is not None
    assert coadd.fibermap is not None


def test_desispec_reads_what_we_write(tiny_coadd):
    from desispec.io import read_spectra
    path, arrays = tiny_coadd
    spec = read_spectra(path)
    np.testing.assert_array_equal(spec.fibermap['TARGETID'], arrays['targetid'])
    np.testing.assert_array_equal(spec.flux['r'], arrays['flux']['r'])


def test_real_stripped_file():
    path = reference_file('desi-coadd', 'coadd-sv1-dark-80605-25fibres.fits')
    coadd = read_coadd(path)
    assert coadd.nspec == 25 and coadd.fibermap is None
    assert all(coadd.mask[b] is None for b in 'brz')
    with pytest.raises(InputFileError, match='no FIBERMAP'):
        coadd.require_targetid()


def test_missing_file(tmp_path):
    path = str(tmp_path / 'nope.fits')
    with pytest.raises(MissingInputError, match='nope.fits: no such file'):
        read_coadd(path)
    with pytest.raises(FileNotFoundError):
        read_redrock(path)


def test_not_fits(tmp_path):
    path = tmp_path / 'text.fits'
    path.write_text('this is not a FITS file\n' * 200)
    with pytest.raises(InputFileError, match='text.fits: not a readable FITS file'):
        read_coadd(str(path))


def test_empty_and_damaged_gzip_named_as_such(tmp_path, tiny_coadd):
    """A zero-byte file was 'not a readable FITS file (FITSIO status = 107: tried to move
    past end of file)'; a gzip stream damaged in the middle, 'error uncompressing image'."""
    import gzip
    empty = tmp_path / 'empty.fits'
    empty.write_bytes(b'')
    with pytest.raises(InputFileError) as err:
        read_coadd(str(empty))
    assert str(err.value) == f'{empty}: empty file (0 bytes)'
    src, _ = tiny_coadd
    packed = bytearray(gzip.compress(open(src, 'rb').read()))
    middle = len(packed) // 2
    packed[middle:middle + 64] = bytes(64)
    damaged = tmp_path / 'damaged.fits.gz'
    damaged.write_bytes(bytes(packed))
    with pytest.raises(InputFileError, match=r'damaged.fits.gz: damaged gzip file \(FITSIO status'):
        read_coadd(str(damaged))


def test_truncated(tmp_path, tiny_coadd):
    src, _ = tiny_coadd
    data = open(src, 'rb').read()
    path = tmp_path / 'trunc.fits'
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(InputFileError, match='trunc.fits: truncated FITS file'):
        read_coadd(str(path))
    # cut inside the header of the last HDU: fitsio lists only the HDUs before it, which
    # would pass for a smaller valid file; a gzip stream cut short is caught too
    import gzip
    last = data.rindex(b'XTENSION')
    path.write_bytes(data[:last + 1000])
    with pytest.raises(InputFileError, match=f'trunc.fits: truncated or damaged FITS file: an HDU header at byte {last}'):
        read_coadd(str(path))
    gz = tmp_path / 'trunc.fits.gz'
    gz.write_bytes(gzip.compress(data)[:-100])
    with pytest.raises(InputFileError, match='trunc.fits.gz: truncated or damaged gzip file'):
        read_coadd(str(gz))


def test_cut_in_its_first_header_and_dangling_links_are_named(tmp_path, tiny_coadd):
    """A file cut inside its first header was 'not a readable FITS file (FITSIO status =
    108 ...)': it is a truncated FITS file.  A symbolic link to a file that is gone was
    'no such file', although ls lists it."""
    src, _ = tiny_coadd
    path = tmp_path / 'cut.fits'
    path.write_bytes(open(src, 'rb').read()[:1000])
    with pytest.raises(InputFileError) as err:
        read_coadd(str(path))
    assert str(err.value) == (f'{path}: truncated FITS file (1000 bytes, not a whole number '
                              'of 2880-byte blocks)')
    path.write_bytes(b'not a FITS file at all\n' * 100)     # not FITS: said as before
    with pytest.raises(InputFileError, match='cut.fits: not a readable FITS file'):
        read_coadd(str(path))
    link = tmp_path / 'coadd-x.fits'
    os.symlink(str(tmp_path / 'gone' / 'coadd-x.fits'), link)
    with pytest.raises(InputFileError) as err:
        read_coadd(str(link))
    assert str(err.value) == (f"{link}: a symbolic link to {tmp_path / 'gone' / 'coadd-x.fits'}"
                              ', which does not exist')
    relative = tmp_path / 'coadd-y.fits'                   # named from the link's directory
    os.symlink('nowhere.fits', relative)
    with pytest.raises(InputFileError) as err:
        read_coadd(str(relative))
    assert str(err.value).endswith(f"a symbolic link to {tmp_path / 'nowhere.fits'}, which "
                                   'does not exist')
    os.symlink('loop2.fits', tmp_path / 'loop1.fits')
    os.symlink('loop1.fits', tmp_path / 'loop2.fits')
    with pytest.raises(InputFileError, match='loop1.fits: a symbolic link that leads nowhere'):
        read_coadd(str(tmp_path / 'loop1.fits'))


def test_damaged_header(tmp_path, tiny_coadd):
    src, _ = tiny_coadd
    data = bytearray(open(src, 'rb').read())
    second = data.index(b'XTENSION', 2880)          # first card of the second HDU
    data[second:second + 8] = b'\xff' * 8
    path = tmp_path / 'damaged.fits'
    path.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match='damaged.fits: '):
        read_coadd(str(path))


def test_non_ascii_text_column_is_one_error(tmp_path):
    """fitsio decodes FITS text as ASCII: a non-ASCII byte was a UnicodeDecodeError
    traceback from every command reading the table."""
    from lbgnet.io.fitsutil import read_table
    path = str(tmp_path / 'truth.fits')
    data = np.zeros(2, dtype=[('TARGETID', 'i8'), ('CLASS', 'S8')])
    data['CLASS'] = [b'LBG', 'STAR\xe9'.encode('latin-1')]
    fitsio.write(path, data, extname='TRUTH')
    with fitsio.FITS(path) as fx, pytest.raises(InputFileError, match='non-ASCII'):
        read_table(fx, 'TRUTH', path)


def test_damaged_header_messages(tmp_path, tiny_coadd):
    """The messages doc/afterburner.rst gives for undecodable header cards."""
    src, _ = tiny_coadd
    data = bytes(open(src, 'rb').read())
    second = data.index(b'XTENSION', 2880)
    for offset, problem in ((second + 5 * 80, 'corrupt FITS structure'),   # a card of HDU 1
                            (0, 'not a readable FITS file')):              # first card, SIMPLE
        damaged = bytearray(data)
        damaged[offset:offset + 8] = b'\xff' * 8
        path = tmp_path / 'damaged.fits'
        path.write_bytes(bytes(damaged))
        with pytest.raises(InputFileError, match=f'damaged.fits: {problem} \\(.*decode'):
            read_coadd(str(path))


def test_gzipped_coadd_is_read(tmp_path, tiny_coadd, config):
    import gzip
    src, _ = tiny_coadd
    path = tmp_path / 'coadd-gz.fits.gz'
    path.write_bytes(gzip.compress(open(src, 'rb').read()))
    X, info = load_coadd_grid(str(path), config)
    np.testing.assert_array_equal(X, load_coadd_grid(src, config)[0])


def test_flux_without_ivar(tmp_path, tiny_coadd):
    src, _ = tiny_coadd
    path = _copy_without(src, str(tmp_path / 'noivar.fits'), drop=('R_IVAR',))
    with pytest.raises(InputFileError, match='has R_FLUX but no R_IVAR'):
        read_coadd(path)


def test_arm_hdus_without_their_flux_are_refused(tmp_path, tiny_coadd):
    """A coadd whose B_FLUX HDU is gone but whose B_IVAR, B_WAVELENGTH (and B_MASK) are
    there is a damaged file: it was read as a file without a b camera (every spectrum
    MISSING_CAMERA, the run status 0, the warning saying no b camera was in the file)."""
    src, _ = tiny_coadd
    path = _copy_without(src, str(tmp_path / 'noflux.fits'), drop=('B_FLUX',))
    with pytest.raises(InputFileError, match='noflux.fits: has B_IVAR but no B_FLUX HDU'):
        read_coadd(path)
    # a camera truly absent (all its HDUs) is still read, as before
    path = _copy_without(src, str(tmp_path / 'nob.fits'),
                         drop=('B_FLUX', 'B_IVAR', 'B_WAVELENGTH', 'B_MASK', 'B_RESOLUTION'))
    assert 'b' not in read_coadd(path).bands


def test_mismatched_shapes(tmp_path, tiny_coadd):
    src, arrays = tiny_coadd
    ivar = arrays['ivar']['b'][:, :-5]
    path = _copy_without(src, str(tmp_path / 'shape.fits'), replace={'B_IVAR': ivar})
    with pytest.raises(InputFileError, match=r'B_IVAR shape \(6, 2746\) does not match B_WAVELENGTH length 2751'):
        read_coadd(path)
    # one HDU cut short: both counts are named (the IVAR HDU was blamed for a short FLUX)
    path = _copy_without(src, str(tmp_path / 'rows.fits'), replace={'R_FLUX': arrays['flux']['r'][:4]})
    with pytest.raises(InputFileError, match='R_IVAR has 6 spectra but R_FLUX has 4'):
        read_coadd(path)
    flux = arrays['flux']['z'][:4]
    path = _copy_without(src, str(tmp_path / 'nspec.fits'),
                         replace={'Z_FLUX': flux, 'Z_IVAR': arrays['ivar']['z'][:4],
                                  'Z_MASK': arrays['mask']['z'][:4]})
    with pytest.raises(InputFileError, match='bands disagree on the number of spectra'):
        read_coadd(path)
    # a wavelength array shorter than the flux rows, and a 1-D flux image: one clear line
    path = _copy_without(src, str(tmp_path / 'wave.fits'),
                         replace={'B_WAVELENGTH': arrays['wave']['b'][:-5]})
    with pytest.raises(InputFileError, match=r'B_FLUX shape \(6, 2751\) does not match B_WAVELENGTH length 2746'):
        read_coadd(path)
    path = _copy_without(src, str(tmp_path / 'flat.fits'),
                         replace={'B_FLUX': arrays['flux']['b'][0]})
    with pytest.raises(InputFileError, match=r'B_FLUX shape \(2751,\) does not match'):
        read_coadd(path)


@pytest.mark.parametrize('ext', ['B_WAVELENGTH', 'B_FLUX', 'B_IVAR', 'B_MASK'])
def test_table_where_an_image_belongs(ext, tmp_path, tiny_coadd):
    """A spectral HDU stored as a table is one InputFileError (was an AttributeError
    from fitsio's missing ``get_dims``, which stopped a preprocess batch)."""
    src, _ = tiny_coadd
    with fitsio.FITS(src) as fx:
        data = fx[ext].read()
    table = np.zeros(len(data), dtype=[('V', data.dtype.str, data.shape[1:])])
    table['V'] = data
    path = _copy_without(src, str(tmp_path / 'tab.fits'), replace={ext: table})
    with pytest.raises(InputFileError, match=f'HDU {ext} is a table, not an image'):
        read_coadd(path)


def test_wavelengths_off_the_grid_are_one_error(tmp_path, tiny_coadd, config):
    """Wavelengths in nm put every pixel off the grid: load_coadd_grid (desi_lbg_preprocess)
    and the evaluation reader say so, as the afterburner does, instead of returning
    empty spectra."""
    from lbgnet.io.evaluation import read_coadd_for_evaluation
    src, arrays = tiny_coadd
    path = _copy_without(src, str(tmp_path / 'nm.fits'),
                         replace={f'{b.upper()}_WAVELENGTH': arrays['wave'][b] / 10
                                  for b in arrays['wave']})
    for read in (lambda: load_coadd_grid(path, config),
                 lambda: read_coadd_for_evaluation(path, config)):
        with pytest.raises(InputFileError, match=r'nm\.fits: no camera overlaps the model grid '
                                                 r'3600-10000 Angstrom .*must be in Angstrom'):
            read()
    read_coadd(path)          # without a grid, the file itself is valid


def test_no_flux_hdu(tmp_path):
    path = str(tmp_path / 'table.fits')
    Table({'A': [1, 2]}).write(path)
    with pytest.raises(InputFileError, match='no <BAND>_FLUX HDU'):
        read_coadd(path)
    with pytest.raises(InputFileError, match='no REDSHIFTS HDU'):
        read_redrock(path)


def test_zero_spectra(tmp_path, tiny_coadd, config):
    src, arrays = tiny_coadd
    repl = {}
    for b in 'BRZ':
        n = arrays['wave'][b.lower()].size
        repl[f'{b}_FLUX'] = np.zeros((0, n), dtype=np.float32)
        repl[f'{b}_IVAR'] = np.zeros((0, n), dtype=np.float32)
        repl[f'{b}_MASK'] = np.zeros((0, n), dtype=np.int32)
    from astropy.io import fits
    path = str(tmp_path / 'empty.fits')
    hdus = [fits.PrimaryHDU()]
    for b in 'BRZ':
        hdus.append(fits.ImageHDU(arrays['wave'][b.lower()], name=f'{b}_WAVELENGTH'))
        for part in ('FLUX', 'IVAR', 'MASK'):
            hdus.append(fits.ImageHDU(repl[f'{b}_{part}'], name=f'{b}_{part}'))
    fits.HDUList(hdus).writeto(path)
    X, info = load_coadd_grid(path, config)
    assert X.shape == (0, config.grid.nbins, 2)
    assert info.empty.shape == (0,)


def test_nan_inf_pixels_masked(tmp_path, tiny_coadd, config):
    src, arrays = tiny_coadd
    flux = arrays['flux']['b'].copy()
    flux[0, 100] = np.nan
    flux[1, 200] = np.inf
    ivar = arrays['ivar']['b'].copy()
    ivar[2, 300] = np.nan
    path = _copy_without(src, str(tmp_path / 'nan.fits'), replace={'B_FLUX': flux, 'B_IVAR': ivar})
    coadd = read_coadd(path)
    assert coadd.nbad['b'] == 3
    assert coadd.ivar['b'][0, 100] == 0 and coadd.ivar['b'][1, 200] == 0 and coadd.ivar['b'][2, 300] == 0
    X, _ = load_coadd_grid(path, config)
    assert np.isfinite(X).all()


def _write_redrock(path, targetid, extra_rows=0):
    n = len(targetid)
    zb = Table()
    zb['TARGETID'] = np.asarray(targetid, dtype=np.int64)
    zb['Z'] = np.linspace(0.1, 3.0, n)
    zb['ZERR'] = np.full(n, 1e-4)
    zb['ZWARN'] = np.zeros(n, dtype=np.int64)
    zb['SPECTYPE'] = np.array(['GALAXY'] * n, dtype='U6')
    zb['SUBTYPE'] = np.array([''] * n, dtype='U20')
    zb['DELTACHI2'] = np.full(n, 50.0)
    zb['CHI2'] = np.full(n, 8000.0)
    zb['COEFF'] = np.zeros((n, 10))
    zb.meta['EXTNAME'] = 'REDSHIFTS'
    fm = Table({'TARGETID': np.concatenate([zb['TARGETID'], 1000 + np.arange(extra_rows)])})
    fm.meta['EXTNAME'] = 'FIBERMAP'
    with fitsio.FITS(path, 'rw', clobber=True) as fx:
        fx.write(zb.as_array(), extname='REDSHIFTS')
        fx.write(fm.as_array(), extname='FIBERMAP')
    return path


def test_read_redrock(tmp_path):
    path = _write_redrock(str(tmp_path / 'redrock-test.fits'), [5, 3, 9])
    rr = read_redrock(path)
    np.testing.assert_array_equal(rr.targetid, [5, 3, 9])
    assert list(rr.redshifts['SPECTYPE']) == ['GALAXY'] * 3
    assert rr.redshifts['SPECTYPE'].dtype.kind == 'U'
    assert rr.redshifts['COEFF'].shape == (3, 10)
    assert len(rr.fibermap) == 3


def test_redrock_missing_column(tmp_path):
    path = str(tmp_path / 'rr.fits')
    with fitsio.FITS(path, 'rw', clobber=True) as fx:
        fx.write(Table({'TARGETID': [1, 2], 'Z': [0.1, 0.2]}).as_array(), extname='REDSHIFTS')
    with pytest.raises(InputFileError, match='REDSHIFTS lacks column'):
        read_redrock(path)


def test_redrock_duplicate_targetid(tmp_path):
    path = _write_redrock(str(tmp_path / 'rr.fits'), [1, 1])
    with pytest.raises(InputFileError, match='duplicated TARGETIDs'):
        read_redrock(path)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(InputFileError, match='is a directory'):
        read_coadd(str(tmp_path))


def test_fibermap_length_differs_from_flux(tmp_path, tiny_coadd):
    src, _ = tiny_coadd
    with fitsio.FITS(src) as fx:
        fibermap = fx['FIBERMAP'].read()
    path = _copy_without(src, str(tmp_path / 'short-fibermap.fits'), replace={'FIBERMAP': fibermap[:5]})
    with pytest.raises(InputFileError, match='short-fibermap.fits: FIBERMAP has 5 rows but flux has 6'):
        read_coadd(path)


def test_redrock_fibermap_length_differs(tmp_path):
    path = _write_redrock(str(tmp_path / 'rr-long.fits'), [5, 3, 9], extra_rows=2)
    with pytest.raises(InputFileError, match='rr-long.fits: FIBERMAP has 5 rows but REDSHIFTS has 3'):
        read_redrock(path)
    assert read_redrock(path, read_fibermap=False).fibermap is None


def test_negative_ivar_pixels_masked(tmp_path, tiny_coadd, config):
    # Finite flux/ivar everywhere but a few negative ivar: the reader zeroes their weight and
    # counts them (not skipped by the all-finite fast path), and the grid ignores them.
    from lbgnet.io.evaluation import read_coadd_for_evaluation
    src, arrays = tiny_coadd
    pix = (np.array([0, 3, 3]), np.array([50, 700, 701]))
    assert np.all(arrays['ivar']['r'][pix] > 0)
    flux = arrays['flux']['r'].copy()
    flux[pix] = 1e6
    ivar = arrays['ivar']['r'].copy()
    ivar[pix] = -arrays['ivar']['r'][pix]
    path = _copy_without(src, str(tmp_path / 'negivar.fits'), replace={'R_FLUX': flux, 'R_IVAR': ivar})
    zero = ivar.copy()
    zero[pix] = 0
    ref = _copy_without(src, str(tmp_path / 'zeroivar.fits'), replace={'R_FLUX': flux, 'R_IVAR': zero})
    coadd = read_coadd(path)
    assert coadd.nbad == {'b': 0, 'r': 3, 'z': 0}
    assert np.all(coadd.ivar['r'][pix] == 0) and np.all(coadd.flux['r'][pix] == 0)
    assert np.count_nonzero(coadd.ivar['r'] != arrays['ivar']['r']) == 3
    assert read_coadd(path, sanitize=False).nbad['r'] == 0
    X_ref, _ = load_coadd_grid(ref, config)
    np.testing.assert_array_equal(load_coadd_grid(path, config)[0], X_ref)      # sanitize=False
    np.testing.assert_array_equal(read_coadd_for_evaluation(path, config)[0], X_ref)


def test_masked_pixels_carry_no_weight(tmp_path, tiny_coadd, config):
    # Pixels with MASK != 0 (ivar > 0, a plausible but wrong flux, which the S/N cut
    # does not remove) grid exactly as if their ivar were 0.
    src, arrays = tiny_coadd
    pix = (np.array([1, 1, 4, 5]), np.array([300, 301, 1200, 2000]))
    assert np.all(arrays['ivar']['b'][pix] > 0)
    flux = arrays['flux']['b'].copy()
    flux[pix] = 50.0
    mask = arrays['mask']['b'].copy()
    mask[pix] = 1
    path = _copy_without(src, str(tmp_path / 'masked.fits'), replace={'B_FLUX': flux, 'B_MASK': mask})
    ivar = arrays['ivar']['b'].copy()
    ivar[pix] = 0
    ref = _copy_without(src, str(tmp_path / 'removed.fits'), replace={'B_FLUX': flux, 'B_IVAR': ivar})
    X, info = load_coadd_grid(path, config)
    X_ref, info_ref = load_coadd_grid(ref, config)
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(info.nvalid_bins, info_ref.nvalid_bins)
    assert not np.array_equal(X, load_coadd_grid(src, config)[0])     # the pixels did matter
    unmasked = _copy_without(src, str(tmp_path / 'unmasked.fits'), replace={'B_FLUX': flux})
    assert not np.array_equal(X, load_coadd_grid(unmasked, config)[0])   # ... only the mask


def test_damaged_header_card_does_not_spoil_the_next_files(tmp_path):
    """Undecodable bytes in a header card leave messages in cfitsio's global error stack;
    without clearing them, the next good file (and the next output) failed to open."""
    from lbg_testdata import write_test_coadd
    from lbgnet.io.catalog import provenance_header, read_catalog, write_catalog
    good = str(tmp_path / 'coadd-main-dark-1.fits')
    write_test_coadd(good, 4)
    raw = bytearray(open(good, 'rb').read())
    raw[410:421] = b'\xff' * 11                         # over the value of the 6th card
    bad = str(tmp_path / 'coadd-main-dark-2.fits')
    open(bad, 'wb').write(bytes(raw))
    for path in (bad, good, bad, good, bad):
        try:
            read_coadd(path)
        except InputFileError as err:                    # the damaged one may be refused
            assert path == bad, err
    out = str(tmp_path / 'cat.fits')
    write_catalog(out, Table({'TARGETID': np.arange(3)}), provenance_header([]))
    assert read_catalog(out)[0]['TARGETID'].tolist() == [0, 1, 2]


@pytest.mark.parametrize('name, bad', [('coadd-main-dark-1.fits', None), ('run[1]/c.fits', "'['"),
                                       ('run (copy)/c.fits', "'('"), ('c.fits+2', "'+2'"),
                                       ('!c.fits', "'!'"), ('c.fits ', 'blank'),
                                       ('a b/c-d_e.fits.gz', None), ('/x/y,z@1#2.fits', None)])
def test_cfitsio_name_problem(name, bad, tmp_path):
    """Names cfitsio would parse (brackets, parentheses, +N, !, blanks) are named; others
    pass; open_fits refuses an existing such file with that message."""
    from lbgnet.io.fitsutil import cfitsio_name_problem, open_fits
    problem = cfitsio_name_problem(name)
    assert (problem is None) == (bad is None)
    if bad is not None:
        assert bad in problem
        path = tmp_path / 'x[1].fits'
        fitsio.write(str(tmp_path / 'plain.fits'), np.zeros(3))
        os.rename(tmp_path / 'plain.fits', path)
        with pytest.raises(InputFileError, match=r'x\[1\]\.fits: the path contains'):
            open_fits(str(path))


def test_redrock_fingerprint_follows_its_columns(tmp_path):
    """A Redrock file (no DATASUM) rewritten with one SPECTYPE changed, or one Z changed in
    its last digits, gets another fingerprint; the same content rewritten (and gzipped)
    keeps it."""
    import gzip
    import shutil
    from astropy.io import fits as afits
    from lbgnet.io.fitsutil import REDROCK_FINGERPRINT_COLUMNS, header_fingerprint

    def write(path, spectype, z):
        table = afits.BinTableHDU.from_columns([
            afits.Column('TARGETID', 'K', array=np.array([1, 2])),
            afits.Column('Z', 'D', array=np.asarray(z)),
            afits.Column('SPECTYPE', '6A', array=np.asarray(spectype))], name='REDSHIFTS')
        afits.HDUList([afits.PrimaryHDU(), table]).writeto(path, overwrite=True)
        return header_fingerprint(path, REDROCK_FINGERPRINT_COLUMNS)

    path = str(tmp_path / 'redrock-x.fits')
    base = write(path, ['GALAXY', 'QSO'], [3.0, 1.0])
    with open(path, 'rb') as src, gzip.open(path + '.gz', 'wb') as dst:
        shutil.copyfileobj(src, dst)
    assert header_fingerprint(path + '.gz', REDROCK_FINGERPRINT_COLUMNS) == base
    assert write(path, ['GALAXY', 'QSO'], [3.0, 1.0]) == base
    assert write(path, ['GALAXY', 'STAR'], [3.0, 1.0]) != base
    assert write(path, ['GALAXY', 'QSO'], [3.0 * (1 + 1e-12), 1.0]) != base


def test_coadd_fingerprint_without_datasum_follows_its_data(tmp_path):
    """A coadd without DATASUM (stripped or hand-made, as the reference file) rewritten
    with other values of the same shapes kept its fingerprint, so --outdir and the
    afterburner kept outputs of the old content; now its data is hashed.  The same content
    rewritten, or gzipped, keeps it; a file with DATASUM is fingerprinted from its headers."""
    import gzip
    import shutil
    from astropy.io import fits as afits
    from lbgnet.io.fitsutil import header_fingerprint

    def write(path, flux, checksum=False):
        hdus = afits.HDUList([afits.PrimaryHDU(),
                              afits.ImageHDU(np.asarray(flux, np.float32), name='B_FLUX')])
        hdus.writeto(path, overwrite=True, checksum=checksum)
        return header_fingerprint(path)

    path = str(tmp_path / 'coadd-x.fits')
    flux = np.arange(12.0).reshape(3, 4)
    base = write(path, flux)
    with open(path, 'rb') as src, gzip.open(path + '.gz', 'wb') as dst:
        shutil.copyfileobj(src, dst)
    assert header_fingerprint(path + '.gz') == base
    assert write(path, flux) == base
    assert write(path, -3 * flux) != base
    # with DATASUM, another content changes the checksums (read from the header alone)
    summed = write(path, flux, checksum=True)
    assert write(path, -3 * flux, checksum=True) != summed
    assert write(path, flux, checksum=True) == summed


def test_malformed_coadd_arrays_are_named(tmp_path):
    """A reversed wavelength array, or an IVAR image with fewer rows than FLUX, is one
    error naming the HDU (the second crashed later on broadcasting without the check)."""
    from astropy.io import fits as afits
    from lbg_testdata import write_test_coadd
    from lbgnet.io.coadd import read_coadd
    good = str(tmp_path / 'coadd-good.fits')
    write_test_coadd(good, 6)
    for name, edit, match in (
            ('reversed', lambda h: h['B_WAVELENGTH'].data.__setitem__(
                slice(None), h['B_WAVELENGTH'].data[::-1].copy()), 'B_WAVELENGTH must be'),
            ('short', lambda h: setattr(h['B_IVAR'], 'data', h['B_IVAR'].data[:4].copy()),
             'B_IVAR has 4 spectra but B_FLUX has 6'),
            # physical units in float64 (σ ~ 4e-20 erg/s/cm²/Å): the ivar overflowed the
            # float32 the reader works in, and the whole arm was dropped without a word
            ('units', lambda h: setattr(h['B_IVAR'], 'data',
                                        h['B_IVAR'].data.astype(np.float64) * 1e39),
             r'B_IVAR holds values up to .*e\+\d\d, beyond the float32 range')):
        bad = str(tmp_path / f'coadd-{name}.fits')
        with afits.open(good) as hdul:
            edit(hdul)
            hdul.writeto(bad)
        with pytest.raises(InputFileError, match=match):
            read_coadd(bad)


def test_unreadable_file_says_permission_denied(tmp_path, tiny_coadd, monkeypatch):
    """A coadd the user may not read is reported as such (cfitsio's own message says only
    that it could not open the file).  The tests may run as root, whom permissions do not
    stop, so os.access is made to answer as for another user."""
    import lbgnet.io.fitsutil as fitsutil
    src, _ = tiny_coadd
    real_access = os.access
    monkeypatch.setattr(fitsutil.os, 'access',
                        lambda p, mode, **kw: False if str(p) == src else real_access(p, mode, **kw))
    with pytest.raises(InputFileError, match=r'cannot read it \(permission denied\)') as err:
        read_coadd(src)
    assert str(err.value).startswith(src)


def test_missing_file_with_a_compressed_twin_says_so(tmp_path, tiny_coadd):
    """A Redrock file looked for as .gz (beside a compressed coadd) while the plain one is
    there, or the reverse, is named in the error (it said only 'no such file')."""
    import gzip
    src, _ = tiny_coadd
    plain = str(tmp_path / 'coadd-x.fits')
    with open(src, 'rb') as fi, open(plain, 'wb') as fo:
        fo.write(fi.read())
    with pytest.raises(InputFileError, match=r'no such file \(coadd-x.fits is there'):
        read_coadd(plain + '.gz')
    packed = str(tmp_path / 'coadd-y.fits.gz')
    with open(src, 'rb') as fi, gzip.open(packed, 'wb') as fo:
        fo.write(fi.read())
    with pytest.raises(InputFileError, match=r'no such file \(coadd-y.fits.gz is there'):
        read_coadd(packed[:-3])
    with pytest.raises(InputFileError, match=r'no such file$'):
        read_coadd(str(tmp_path / 'coadd-z.fits'))


def test_targetids_are_exact_integers_or_refused():
    """as_targetids: int and uint columns become int64 exactly (beyond 2**53), a float
    column is refused naming the file, and an empty list (numpy makes it float64) is no
    ids rather than a float column (a direct call with no targets was refused)."""
    from lbgnet.io import InputFileError
    from lbgnet.io.targetid import as_targetids
    big = 39633000000000001
    out = as_targetids(np.array([big, big + 1], dtype=np.uint64), 'a.fits')
    assert out.dtype == np.int64 and out.tolist() == [big, big + 1]
    for empty in ([], np.array([]), np.zeros(0, dtype=np.int32)):
        out = as_targetids(empty, 'a.fits')
        assert out.dtype == np.int64 and out.shape == (0,)
    with pytest.raises(InputFileError, match=r'a\.fits: TARGETID must be an integer column, '
                                             'not float64'):
        as_targetids(np.array([1.0]), 'a.fits')
    with pytest.raises(InputFileError, match='values beyond the int64 range'):
        as_targetids(np.array([2**63], dtype=np.uint64), 'a.fits')
    with pytest.raises(InputFileError, match='not bool'):
        as_targetids(np.zeros(0, dtype=bool), 'a.fits')
    # the floating-point explanation only for floats (a text column was told about 2**53)
    with pytest.raises(InputFileError, match=r'lose their last digits in floating point'):
        as_targetids(np.array([1.0]), 'a.fits')
    with pytest.raises(InputFileError) as err:
        as_targetids(np.array(['39633000000000001']), 'a.fits')
    assert str(err.value) == 'a.fits: TARGETID must be an integer column, not text'


# ---- from a hand mutation-testing pass of io/coadd.py and io/redrock.py
def test_repeated_wavelength_is_refused(tmp_path, tiny_coadd):
    """A WAVELENGTH array with a repeated value (two pixels at one wavelength) is not
    increasing: the pixel edges derived from it would have zero width, so the file is
    refused like a reversed one, not only one that decreases."""
    src, arrays = tiny_coadd
    wave = arrays['wave']['b'].copy()
    wave[101] = wave[100]                                  # still never decreasing
    path = _copy_without(src, str(tmp_path / 'repeat.fits'), replace={'B_WAVELENGTH': wave})
    with pytest.raises(InputFileError, match='B_WAVELENGTH must be 1-D, finite and increasing'):
        read_coadd(path)


def _tiny_coadd_with_scores(path, nspec, scores):
    """A one-arm coadd of `nspec` spectra (no FIBERMAP) with the SCORES table `scores`."""
    with fitsio.FITS(path, 'rw', clobber=True) as fx:
        fx.write(None)
        fx.write(np.linspace(3600.0, 5900.0, 50), extname='B_WAVELENGTH')
        fx.write(np.ones((nspec, 50), dtype='f4'), extname='B_FLUX')
        fx.write(np.ones((nspec, 50), dtype='f4'), extname='B_IVAR')
        fx.write(scores, extname='SCORES')
    return path


def test_scores_of_another_length_without_targetid_give_no_tsnr2(tmp_path, caplog):
    """A SCORES table of 3 rows for 2 spectra, with no TARGETID column to tell its rows
    apart, cannot say which depth belongs to which spectrum: TSNR2_LRG is None (NaN in
    the catalogue) with a warning naming both counts, not the 3 values.  The same table
    with 2 rows is read."""
    import logging
    from lbgnet.io.coadd import read_layout
    for nrow, expect in ((3, None), (2, [7.0, 7.0])):
        scores = np.zeros(nrow, dtype=[('TSNR2_LRG', 'f4')])
        scores['TSNR2_LRG'] = 7.0
        path = _tiny_coadd_with_scores(str(tmp_path / f'scores{nrow}.fits'), 2, scores)
        caplog.clear()
        with caplog.at_level(logging.WARNING), fitsio.FITS(path) as fx:
            layout = read_layout(fx, path)
        if expect is None:
            assert layout.tsnr2_lrg is None
            assert f'{path}: SCORES has 3 rows for 2 spectra; TSNR2_LRG left NaN' in caplog.text
        else:
            assert layout.tsnr2_lrg.tolist() == expect and 'SCORES' not in caplog.text


def test_camera_overlapping_the_grid_start_is_accepted(config):
    """check_grid_overlap asks whether a camera's range [w[0], w[-1]] meets the grid: a b
    camera 3500-5900 Å begins below the 3600-10000 Å grid but ends inside it, so it is
    accepted; one ending below the grid start (3500-3590 Å) is not."""
    from lbgnet.io.coadd import CoaddLayout, check_grid_overlap
    assert (config.grid.wave_min, config.grid.wave_max) == (3600.0, 10000.0)

    def layout(lo, hi):
        return CoaddLayout('c.fits', ('b',), {'b': np.linspace(lo, hi, 100)}, 0, None, {})
    check_grid_overlap(layout(3500.0, 5900.0), config.grid)
    with pytest.raises(InputFileError, match=r'c\.fits: no camera overlaps the model grid '
                                             r'3600-10000 Angstrom \(b 3500-3590\)'):
        check_grid_overlap(layout(3500.0, 3590.0), config.grid)


def test_large_negative_values_beyond_float32_are_refused():
    """The float32 range is symmetric: -1e39 overflows to -inf just as +1e39 does, so a
    float64 image [-1e39, 1] read as float32 is refused on its magnitude (the largest
    signed value, 1, would pass)."""
    from lbgnet.io.coadd import _check_float_range
    with pytest.raises(InputFileError, match=r'c\.fits: B_FLUX holds values up to 1e\+39, '
                                             'beyond the float32 range'):
        _check_float_range(np.array([-1e39, 1.0]), np.dtype(np.float32), 'c.fits', 'B_FLUX')
    _check_float_range(np.array([-3e38, 1.0]), np.dtype(np.float32), 'c.fits', 'B_FLUX')


def test_sanitize_keeps_zero_ivar_pixels_as_they_are():
    """sanitize_pixels counts and zeroes only non-finite pixels and negative ivar: a pixel
    with ivar exactly 0 already carries no weight and is neither counted nor has its flux
    changed.  flux [1, nan, 3], ivar [1, 1, 0]: one bad pixel (the NaN)."""
    from lbgnet.io.coadd import sanitize_pixels
    flux = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    ivar = np.array([1.0, 1.0, 0.0], dtype=np.float32)
    assert sanitize_pixels(flux, ivar) == 1
    assert flux.tolist() == [1.0, 0.0, 3.0] and ivar.tolist() == [1.0, 0.0, 0.0]


def test_sanitize_infinite_ivar_with_finite_flux():
    """Finite flux everywhere and no negative ivar, but one ivar inf: the all-finite fast
    path must look at the ivar sum too.  flux [1, 2, 3], ivar [1, inf, 1]: one bad pixel,
    whose weight and flux become 0."""
    from lbgnet.io.coadd import sanitize_pixels
    flux = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    ivar = np.array([1.0, np.inf, 1.0], dtype=np.float32)
    assert sanitize_pixels(flux, ivar) == 1
    assert flux.tolist() == [1.0, 0.0, 3.0] and ivar.tolist() == [1.0, 0.0, 1.0]


def _rewrite_redshifts(path, edit):
    """Rewrite the REDSHIFTS HDU of a _write_redrock file (FIBERMAP dropped) after
    ``edit(table)`` returns the new numpy table."""
    zb = edit(fitsio.read(path, 'REDSHIFTS'))
    with fitsio.FITS(path, 'rw', clobber=True) as fx:
        fx.write(zb, extname='REDSHIFTS')
    return path


def test_redrock_spectype_padding_is_stripped(tmp_path):
    """FITS drops trailing blanks of text but keeps leading ones: SPECTYPE ' QSO' reads as
    'QSO', so that comparisons with 'QSO' hold."""
    def edit(zb):
        zb['SPECTYPE'] = [b' QSO', b'GALAXY']
        return zb
    path = _rewrite_redshifts(_write_redrock(str(tmp_path / 'rr.fits'), [5, 3]), edit)
    assert read_redrock(path).redshifts['SPECTYPE'].tolist() == ['QSO', 'GALAXY']


def test_redrock_targetids_must_be_exact_integers(tmp_path):
    """A float TARGETID column (DESI ids above 2**53 lose digits in float64) or a uint64
    one with values beyond int64 is refused on one line naming the file, not read."""
    from numpy.lib import recfunctions as rfn
    for name, dtype, values, match in (
            ('float', 'f8', [5.0, 3.0], 'REDSHIFTS TARGETID must be an integer column, not float64'),
            ('uint', 'u8', [5, 2**63 + 1], 'REDSHIFTS TARGETID values beyond the int64 range')):
        def edit(zb):
            out = rfn.drop_fields(zb, 'TARGETID', usemask=False)
            return rfn.append_fields(out, 'TARGETID', np.array(values, dtype=dtype), usemask=False)
        path = _rewrite_redshifts(_write_redrock(str(tmp_path / f'rr-{name}.fits'), [5, 3]), edit)
        with pytest.raises(InputFileError, match=match) as err:
            read_redrock(path)
        assert str(err.value).startswith(f'{path}: ') and '\n' not in str(err.value)


def test_interrupted_coadd_write_leaves_no_astropy_temporary(tmp_path, monkeypatch):
    """A signal while add_checksums rewrites the coadd (astropy's in-place resize
    goes through a mkstemp 'tmpXXXXXXXX' file in the output directory) left it
    in the output directory (seen after `kill -TERM` of desi_lbg_mock, ~89 MB); nothing
    is left now."""
    import astropy.io.fits.hdu.hdulist as hdulist
    from lbgnet.io import minimal_fibermap
    from lbgnet.io.atomic import Terminated
    from lbgnet.io.spectra import write_coadd
    original = hdulist._tmp_name

    def interrupted(name):
        original(name)               # astropy has created its temporary file
        raise Terminated(143)        # ... and SIGTERM arrives
    monkeypatch.setattr(hdulist, '_tmp_name', interrupted)
    wave = {'b': np.linspace(3600, 5800, 50), 'r': np.linspace(5760, 7620, 50),
            'z': np.linspace(7520, 9824, 50)}
    flux = {b: np.ones((3, 50), np.float32) for b in wave}
    ivar = {b: np.ones((3, 50), np.float32) for b in wave}
    with pytest.raises(Terminated):
        write_coadd(str(tmp_path / 'coadd-test.fits'), wave, flux, ivar,
                    minimal_fibermap(np.arange(3) + 1),
                    meta={'DEPNAM00': 'lbgnet', 'DEPVER00': 'x'})
    assert sorted(os.listdir(tmp_path)) == []
