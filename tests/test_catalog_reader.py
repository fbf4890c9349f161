"""read_catalog: fitsio reads a catalogue whose header its CHECKSUM vouches for, into the
table astropy's reader gives; any other header goes to astropy, which refuses what cfitsio
would misread."""
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import lbgnet.io.catalog as catalog_io
from lbgnet.io.catalog import (ones_complement_sum, provenance_header, read_catalog,
                               write_catalog)
from lbgnet.io.errors import InputFileError


def astropy_reading(path, extname):
    """What astropy's own reader gives (the reference), with TTYPEn comments as
    descriptions, as read_catalog adds them."""
    with fits.open(path) as hdul:
        table = Table.read(hdul[extname], mask_invalid=False)
        comments = hdul[extname].header.comments
        for i, col in enumerate(table.colnames, 1):
            text = comments[f'TTYPE{i}'].strip()          # cfitsio's default: none
            table[col].description = None if text.startswith('label for field') else text or None
    table.meta['EXTNAME'] = extname
    return table


def assert_same_tables(mine, ref):
    assert mine.colnames == ref.colnames
    for col in ref.colnames:
        a, b = mine[col], ref[col]
        assert (a.dtype, a.shape, type(a)) == (b.dtype, b.shape, type(b)), col
        assert (a.unit, a.description) == (b.unit, b.description), col
        assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=a.dtype.kind == 'f'), col
    assert dict(mine.meta) == dict(ref.meta)


def varied_table(nrows):
    """Every kind of column a catalogue holds, and some it might."""
    rng = np.random.default_rng(nrows)
    t = Table()
    t['TARGETID'] = np.arange(nrows, dtype=np.uint64) + np.uint64(2 ** 63 + 5)
    t['SIGNED'] = np.arange(nrows, dtype=np.int64) - 3
    t['SHORT'] = np.arange(nrows, dtype=np.int16)
    t['FLAG'] = np.arange(nrows, dtype=np.int32)
    t['IS_LBG'] = np.arange(nrows) % 2 == 0
    t['SPECTYPE'] = np.array(['GALAXY', 'QSO', ''] * nrows)[:nrows]
    t['Z'] = np.where(np.arange(nrows) == 1, np.nan, rng.uniform(2, 4, nrows))
    t['C'] = rng.uniform(0, 1, nrows).astype(np.float32)
    t['COEFF'] = rng.normal(size=(nrows, 3))
    t['TARGET_RA'] = np.zeros(nrows)
    t['TARGET_RA'].unit = 'deg'
    t['FLUX_G'] = np.ones(nrows, dtype=np.float32)
    t['FLUX_G'].unit = 'nanomaggy'                  # written as 'nmgy', not a FITS unit
    for col in ('TARGETID', 'Z', 'COEFF'):
        t[col].description = f'the {col.lower()}'
    return t


@pytest.mark.parametrize('nrows', [5, 0])
@pytest.mark.filterwarnings('ignore:.*did not parse as fits unit')
def test_catalogue_read_by_fitsio_is_the_table_astropy_reads(tmp_path, monkeypatch, nrows):
    """Columns, types (unsigned ones in native order), values, units, descriptions and
    header keywords as astropy's reader gives them; a catalogue as written never goes to
    astropy (the speed of desi_lbg_zcatalog over a production rests on it)."""
    path = str(tmp_path / 'lbg_cnn-x.fits.gz')
    header = provenance_header([('CTHRESH', 0.5, 'threshold'), ('ZERRCAL', True, 'calibrated'),
                                ('LBGMODEL', '/long' * 30, 'a CONTINUE card')],
                               dependencies={'lbgnet': '9.9'})
    write_catalog(path, varied_table(nrows), header)
    ref = astropy_reading(path, 'LBG_CNN')

    def refuse(*args):
        raise AssertionError('astropy read a catalogue that fitsio can read')
    monkeypatch.setattr(catalog_io, '_read_table_astropy', refuse)
    mine, primary = read_catalog(path)
    assert_same_tables(mine, ref)
    assert mine['TARGETID'].dtype == np.uint64 and mine['TARGETID'].dtype.isnative
    assert mine.meta['LBGMODEL'] == '/long' * 30 and primary['CTHRESH'] == 0.5
    assert str(mine['TARGET_RA'].unit) == 'deg' and str(mine['FLUX_G'].unit) == 'nmgy'


def test_header_meta_as_astropy_makes_it(tmp_path, monkeypatch):
    """COMMENT and HISTORY cards, repeated and HIERARCH keywords, and unsigned columns
    written by astropy (checksums right, so fitsio reads it)."""
    hdr = fits.Header()
    hdr['NOTE'] = 'first'
    hdr['COMMENT'] = 'one'
    hdr['COMMENT'] = 'two'
    hdr['HISTORY'] = 'made'
    hdr['HIERARCH LONG.KEY.NAME'] = 3
    hdr.append(('REPEAT', 1))
    hdr.append(('REPEAT', 2))
    cols = [fits.Column(name='U', format='J', bzero=2 ** 31,
                        array=np.array([0, 2 ** 32 - 1], dtype=np.uint32)),
            fits.Column(name='B', format='B', array=np.array([0, 255], dtype=np.uint8)),
            fits.Column(name='S', format='4A', array=np.array(['a', 'bcd']))]
    table = fits.BinTableHDU.from_columns(cols, header=hdr, name='LBG_CNN')
    path = str(tmp_path / 'astropy.fits')
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path, checksum=True)
    ref = astropy_reading(path, 'LBG_CNN')
    monkeypatch.setattr(catalog_io, '_read_table_astropy', None)     # not called
    mine, _ = read_catalog(path)
    assert_same_tables(mine, ref)
    assert mine.meta['comments'] == ['one', 'two'] and mine.meta['REPEAT'] == [1, 2]
    assert mine['U'].dtype == np.uint32 and mine['U'][1] == 2 ** 32 - 1


def checksummed_catalogue(path):
    table = Table({'TARGETID': np.arange(3), 'BGS_TARGET': np.ones(3, dtype=np.int64)})
    table['BGS_TARGET'].description = 'target bits'
    write_catalog(path, table, provenance_header([]))
    return bytearray(open(path, 'rb').read())


def test_a_header_card_cfitsio_would_misread_is_refused(tmp_path):
    """A catalogue whose column-name card lost its closing quote: cfitsio reads the name
    as "BGS_TARGET   / target bits" (a wrong column, no error); such a header no longer
    matches its CHECKSUM and goes to astropy, which refuses the card."""
    path = str(tmp_path / 'lbg_cnn-x.fits')
    raw = checksummed_catalogue(path)
    card = raw.find(b"TTYPE2  = 'BGS_TARGET'")
    raw[card + len("TTYPE2  = 'BGS_TARGET")] = ord(' ')
    open(path, 'wb').write(bytes(raw))
    with pytest.raises(InputFileError, match='damaged LBG_CNN HDU'):
        read_catalog(path)


def test_a_header_edited_after_writing_is_read(tmp_path):
    """A header changed by another tool (its CHECKSUM no longer right) is read by
    astropy, with the change."""
    path = str(tmp_path / 'lbg_cnn-x.fits')
    raw = checksummed_catalogue(path)
    card = raw.find(b'/ target bits')
    raw[card + 2:card + 8] = b'TARGET'
    open(path, 'wb').write(bytes(raw))
    table, _ = read_catalog(path)
    assert table['BGS_TARGET'].description == 'TARGET bits'
    assert list(table['BGS_TARGET']) == [1, 1, 1]


def test_ones_complement_sum_carries_around():
    assert ones_complement_sum(b'\xff\xff\xff\xff\x00\x00\x00\x01') == 1
    assert ones_complement_sum(b'\x80\x00\x00\x00' * 2, start=5) == 6
    assert ones_complement_sum(b'') == 0
