"""desi_lbg_zcatalog: defects found by a user-level review (each test failed on
the code it was written against)."""
import logging
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from lbgnet.bitmask import LBGWarnMask
from lbgnet.io.catalog import provenance_header, write_catalog
from lbgnet.scripts.lbg_zcatalog import main
from test_zcatalog import write_cat

MASK = LBGWarnMask()


def test_output_equal_to_an_input_is_not_told_to_use_overwrite(tmp_path, caplog):
    """An --output that is one of the input catalogues is refused for what it is: the
    message must not advise --overwrite, which cannot help (the command then refuses the
    name, or the input itself), as for an output that is a directory."""
    cat = str(tmp_path / 'cats' / 'lbg_cnn-main-dark-1.fits')
    write_cat(cat, [1], [1], [3.0], [0], [5])
    with caplog.at_level(logging.ERROR):
        assert main(['--catalogs', cat, '--output', cat]) == 1
    assert '--overwrite' not in caplog.text, caplog.text


def test_bit_meanings_of_the_inputs_are_checked(tmp_path, caplog):
    """GOOD_LBG and GOODBITS use this lbgnet's LBG_FLAG bits: a catalogue whose LBGBITnn
    cards give a bit another meaning must be refused (naming the file and the bit), not
    stacked silently with the differing card dropped from the stacked header."""
    root = tmp_path / 'cats'
    bits = MASK.header_cards()
    other = [(k, 'SOMETHING_ELSE' if v == 'Z_OUT_OF_RANGE' else v, c) for k, v, c in bits]
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [5], cards=bits)
    write_cat(str(root / 'lbg_cnn-main-dark-2.fits'), [2], [1], [3.0],
              [MASK.Z_OUT_OF_RANGE], [5], cards=other)
    with caplog.at_level(logging.WARNING):
        rc = main(['--input-dir', str(root), '--output', str(tmp_path / 'z.fits')])
    assert rc == 1 and 'lbg_cnn-main-dark-2.fits' in caplog.text and 'LBGBIT' in caplog.text, \
        caplog.text


def _write_plain(path, **columns):
    """A one-file LBG_CNN table with the required columns, some replaced by `columns`."""
    from astropy.table import Table
    cols = dict(TARGETID=np.array([1, 2]), IS_LBG=np.array([True, False]),
                Z_LBG=np.array([3.0, 3.1]), ZERR_LBG=np.array([1e-3, 1e-3]),
                LBG_FLAG=np.array([0, 0], np.int32), DELTACHI2_RR=np.array([5.0, 5.0]))
    cols.update(columns)
    header = provenance_header([('LBGMSHA', 'abc', ''), ('CTHRESH', 0.5, ''),
                                ('NTHRESH', 1, ''), ('RERUNRR', False, '')])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_catalog(str(path), Table(cols, meta={'EXTNAME': 'LBG_CNN'}), header)


def test_text_redshift_column_is_named_with_its_file(tmp_path, caplog):
    """A catalogue whose Z_LBG holds text (not an afterburner catalogue) is refused with
    one line naming the file (it said only numpy's 'could not convert string to float')."""
    path = tmp_path / 'cats' / 'lbg_cnn-main-dark-1.fits'
    _write_plain(path, Z_LBG=np.array(['a', 'b']))
    with caplog.at_level(logging.ERROR):
        assert main(['--catalogs', str(path), '--output', str(tmp_path / 'z.fits')]) == 1
    assert str(path) in caplog.text and 'Z_LBG' in caplog.text, caplog.text


def test_non_integer_flag_column_is_refused(tmp_path, caplog):
    """LBG_FLAG must be an integer bit mask: a float column with NaN (cast to a garbage
    integer) made its row GOOD_LBG; it must be refused, naming the file and the column."""
    path = tmp_path / 'cats' / 'lbg_cnn-main-dark-1.fits'
    _write_plain(path, LBG_FLAG=np.array([np.nan, 1.0]))
    with caplog.at_level(logging.ERROR):
        rc = main(['--catalogs', str(path), '--output', str(tmp_path / 'z.fits')])
    assert rc == 1 and str(path) in caplog.text and 'LBG_FLAG' in caplog.text, caplog.text


def test_one_bad_catalogue_says_the_batch_was_refused(tmp_path, caplog):
    """One unreadable catalogue among several stops the whole stack (by design): the error
    must say so (nothing written / the others not stacked), not only what is wrong with
    that file, which reads as if the others had been stacked without it."""
    root = tmp_path / 'cats'
    for i in range(3):
        write_cat(str(root / f'lbg_cnn-main-dark-{i}.fits'), [i], [1], [3.0], [0], [5])
    (root / 'lbg_cnn-main-dark-9.fits').write_text('not a FITS file')
    out = tmp_path / 'z.fits'
    with caplog.at_level(logging.ERROR):
        assert main(['--input-dir', str(root), '--output', str(out)]) == 1
    assert not out.exists()
    text = caplog.text.lower()
    assert any(w in text for w in ('not written', 'no output', 'nothing written', 'refus',
                                   'not stacked', 'none stacked')), caplog.text


def test_refinement_settings_are_not_claimed_for_unrefined_inputs(tmp_path):
    """--allow-mixed with a --no-refine catalogue (REFINE = F, no refinement keywords)
    beside a refined one: the stacked header must not record the refined catalogue's
    refinement settings as 'common to all inputs' (the unrefined one's absent keywords
    were taken as the implicit values of an older lbgnet, e.g. REFNOISE = 'pipeline')."""
    root = tmp_path / 'cats'
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [5],
              cards=[('REFINE', False, '')])
    refined = [('REFINE', True, ''), ('REFTSHA', 'ttt', ''), ('REFWGT', 3.0, ''),
               ('REFWIN', 0.1, ''), ('REFSTEP', 2e-4, ''), ('REFNOISE', 'pipeline', ''),
               ('REFASHA', '', ''), ('REFAWGT', 0.0, ''), ('REFABAS', 0.0, ''),
               ('REFASKP', 0.0, ''), ('MINDCHI2', 9.0, ''), ('ZTPLSCL', 1.0, ''),
               ('ZTPLFLR', 0.0, '')]
    write_cat(str(root / 'lbg_cnn-main-dark-2.fits'), [2], [1], [3.0], [0], [5], cards=refined)
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(root), '--output', out, '--allow-mixed']) == 0
    header = fits.getheader(out, 'LBG_ZCAT')
    assert 'REFINE' not in header
    claimed = [k for k in ('REFNOISE', 'REFASHA', 'REFAWGT', 'REFABAS', 'REFASKP', 'ZTPLSCL',
                           'ZTPLFLR') if k in header]
    assert not claimed, claimed


def test_a_catalogue_whose_data_no_longer_match_its_datasum_is_named(tmp_path, caplog):
    """Catalogues are written with CHECKSUM/DATASUM; one with a byte changed in its table
    (a bad copy, a disk error) was stacked without a word."""
    root = tmp_path / 'cats'
    for i in range(2):
        write_cat(str(root / f'lbg_cnn-main-dark-{i}.fits'), [i, i + 10], [1, 0], [3.0, 2.0],
                  [0, 0], [5, 6])
    bad = root / 'lbg_cnn-main-dark-1.fits'
    with fits.open(bad) as hdul:
        hdu = hdul['LBG_CNN']
        assert hdu.verify_datasum() == 1
        offset = hdu._data_offset + 16                  # a byte of the first row
    data = bytearray(bad.read_bytes())
    data[offset] ^= 0x40
    bad.write_bytes(bytes(data))
    out = tmp_path / 'z.fits'
    with caplog.at_level(logging.ERROR):
        assert main(['--input-dir', str(root), '--output', str(out)]) == 1
    assert not out.exists()
    assert f'{bad}: damaged LBG_CNN HDU (its data do not match its DATASUM' in caplog.text


def test_unify_columns_shares_the_tables_data():
    """The column merge copied every catalogue (the whole production held twice in memory)
    and searched the list of tables for each missing column (quadratic in files)."""
    from astropy.table import Table
    from lbgnet.zcatalog import CatalogColumns, unify_columns
    main = CatalogColumns.from_table(Table({
        'TARGETID': np.arange(3), 'DESI_TARGET': np.ones(3, dtype=np.int64),
        'Z_LBG': np.linspace(2, 3, 3)}))
    sv1 = CatalogColumns.from_table(Table({
        'TARGETID': np.arange(3, 5), 'SV1_DESI_TARGET': np.full(2, 4, dtype=np.int64),
        'Z_LBG': np.array([3.5, 4.0])}))
    out = unify_columns([main, sv1])
    assert [t.colnames for t in out] == [['TARGETID', 'DESI_TARGET', 'Z_LBG', 'SV1_DESI_TARGET']] * 2
    assert np.shares_memory(out[0]['Z_LBG'], main['Z_LBG'])
    assert np.shares_memory(out[1]['Z_LBG'], sv1['Z_LBG'])
    assert list(out[0]['SV1_DESI_TARGET']) == [0, 0, 0] and list(out[1]['DESI_TARGET']) == [0, 0]
    assert out[1]['DESI_TARGET'].dtype == np.int64
    same = unify_columns([main, main])
    assert same[0] is main                      # nothing to add or reorder: the table itself


def test_int32_flags_converts_other_integer_types():
    """An unsigned 64-bit LBG_FLAG (beside int32 ones it would stack as float64) becomes
    int32 in a copy; one beyond 32 bits is refused, naming the file."""
    from lbgnet.zcatalog import int32_flags
    wide = Table({'LBG_FLAG': np.array([1, 4], dtype=np.uint64), 'X': [1.0, 2.0]})
    converted = int32_flags(wide, 'f.fits')
    assert converted['LBG_FLAG'].dtype == np.int32 and list(converted['LBG_FLAG']) == [1, 4]
    assert wide['LBG_FLAG'].dtype == np.uint64          # the caller's table is left alone
    with pytest.raises(ValueError, match='f.fits: LBG_FLAG holds values beyond 32 bits'):
        int32_flags(Table({'LBG_FLAG': np.array([2 ** 40], dtype=np.int64)}), 'f.fits')
    # the limits themselves fit; one past either does not
    edges = np.array([-2 ** 31, 2 ** 31 - 1], dtype=np.int64)
    assert list(int32_flags(Table({'LBG_FLAG': edges}), 'f.fits')['LBG_FLAG']) == list(edges)
    for beyond in (-2 ** 31 - 1, 2 ** 31):
        with pytest.raises(ValueError, match='beyond 32 bits'):
            int32_flags(Table({'LBG_FLAG': np.array([beyond], dtype=np.int64)}), 'f.fits')


def test_catalog_columns_hold_plain_arrays_and_stack_as_vstack():
    """desi_lbg_zcatalog keeps each file's columns as plain arrays (an astropy Table per
    file cost ~100 KB of objects: ~10 GB at 1e5 catalogues).  Nothing of the Table may stay
    alive, catalogues with the same columns share one attribute mapping, and stacking gives
    what astropy's vstack gives: values, dtypes, masks, units, descriptions, formats."""
    import gc
    import weakref
    from astropy.table import MaskedColumn, vstack
    from lbgnet.zcatalog import CatalogColumns, concatenate_catalogs

    def table(n, seed, survey):
        rng = np.random.default_rng(seed)
        t = Table()
        t['TARGETID'] = np.arange(n, dtype='>i8')
        t['LBG_FLAG'] = np.zeros(n, dtype='>i4')
        t['Z_LBG'] = rng.uniform(2, 4, n).astype('>f8')
        t['Z_LBG'].unit, t['Z_LBG'].description, t['Z_LBG'].format = '', 'LBG redshift', '.4f'
        t['FLUX'] = rng.normal(size=n).astype(np.float32)
        t['FLUX'].unit = 'nanomaggy'
        t['COEFF'] = rng.normal(size=(n, 3))
        t['SURVEY'] = np.full(n, survey)
        t['RMAG'] = MaskedColumn(rng.uniform(22, 25, n), mask=np.arange(n) % 3 == 0)
        return t

    shared = {}
    tables = [table(4, 1, 'main'), table(5, 2, 'sv1x')]
    expected = vstack(tables, join_type='exact', metadata_conflicts='silent')
    column = weakref.ref(tables[0]['Z_LBG'])
    catalogs = [CatalogColumns.from_table(t, shared) for t in tables]
    del tables
    gc.collect()
    assert column() is None                       # the file's Table is not held
    assert catalogs[0].attributes is catalogs[1].attributes
    assert all(type(a) in (np.ndarray, np.ma.MaskedArray) and a.dtype.isnative
               for cat in catalogs for a in cat.data.values())
    stacked = concatenate_catalogs(catalogs)
    assert stacked.colnames == expected.colnames
    for name in expected.colnames:
        got, want = stacked[name], expected[name]
        assert got.dtype == want.dtype.newbyteorder('='), name
        assert (got.unit, got.description, got.format) == (want.unit, want.description,
                                                           want.format), name
        assert np.array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(want)), name
        assert np.array_equal(np.ma.filled(got, 0), np.ma.filled(want, 0)), name
    assert isinstance(stacked['RMAG'], MaskedColumn) and stacked['RMAG'].mask.sum() == 4


def test_a_catalogue_with_a_targetid_twice_is_refused(tmp_path, caplog):
    """A catalogue holds one row per target, as Redrock writes them: one with a TARGETID
    twice (rows appended again) was stacked, counting that target twice in ZCAT_NSPEC and
    GOOD_LBG.  It is refused in one line."""
    write_cat(str(tmp_path / 'in/lbg_cnn-main-dark-100.fits'), [1, 2, 2], [1, 1, 1],
              [3.0, 2.5, 2.5], [0, 0, 0], [5, 6, 6])
    write_cat(str(tmp_path / 'in/lbg_cnn-main-dark-101.fits'), [3, 4], [1, 0],
              [3.0, 2.5], [0, 0], [5, 6])
    with caplog.at_level(logging.ERROR):
        assert main(['--input-dir', str(tmp_path / 'in'), '--output',
                     str(tmp_path / 'z.fits')]) == 1
    assert f"{tmp_path / 'in/lbg_cnn-main-dark-100.fits'}: duplicated TARGETIDs" in caplog.text
    assert 'Traceback' not in caplog.text


def test_inputs_of_other_lbgnet_revisions_are_said_and_recorded(tmp_path, caplog):
    """Catalogues written by different lbgnet revisions (a refinement fix moves Z_TPL
    without changing the model's SHA-256) were stacked without a word, the output naming
    only the stacking code's revision: a warning names each revision with its count and
    the header records INLBGGIT, the common revision or 'mixed'."""
    import fitsio
    for n, rev in ((100, 'aaaaaaaaaaaa'), (101, 'bbbbbbbbbbbb'), (102, 'bbbbbbbbbbbb')):
        write_cat(str(tmp_path / f'in/lbg_cnn-main-dark-{n}.fits'), [n], [1], [3.0], [0], [5],
                  cards=[('LBGGIT', rev, '')])
    with caplog.at_level(logging.WARNING):
        assert main(['--input-dir', str(tmp_path / 'in'), '--output',
                     str(tmp_path / 'z.fits')]) == 0
    assert ('written by 2 lbgnet revisions: bbbbbbbbbbbb (2), aaaaaaaaaaaa (1)'
            in caplog.text), caplog.text
    assert fitsio.read_header(str(tmp_path / 'z.fits'), 'LBG_ZCAT')['INLBGGIT'] == 'mixed'
    caplog.clear()
    os.remove(tmp_path / 'in/lbg_cnn-main-dark-100.fits')
    with caplog.at_level(logging.WARNING):
        assert main(['--input-dir', str(tmp_path / 'in'), '--output', str(tmp_path / 'z.fits'),
                     '--overwrite']) == 0
    assert 'revisions' not in caplog.text
    assert fitsio.read_header(str(tmp_path / 'z.fits'), 'LBG_ZCAT')['INLBGGIT'] == 'bbbbbbbbbbbb'
    # a catalogue that records no revision (no LBGGIT, no lbgnet DEPNAM) is not one
    from lbgnet.zcatalog import describe_revisions
    assert describe_revisions({}, 2) == (None, None)
    value, warning = describe_revisions({'aaaa': 1, 'bbbb': 1}, 1)
    assert value == 'mixed' and '(1 record none)' in warning
