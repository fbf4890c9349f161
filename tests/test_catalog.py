"""Catalogue assembly: Redrock order, alignment checks, flags, rerun columns, FITS round trip."""
import os
import re

import fitsio
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from lbgnet.bitmask import LBGWarnMask
from lbgnet.catalog import (NCOEFF, add_rerun_columns, apply_model_range, apply_small_deltachi2,
                            assemble_catalog, bad_fiberstatus_mask, lookup, match_targetids,
                            spectrum_flags)
from lbgnet.io.catalog import provenance_header, read_catalog, write_catalog
from lbgnet.io.errors import InputFileError
from lbgnet.preprocess import GridInfo

MASK = LBGWarnMask()
LINES = ('LYA', 'CIV')


def fake_results(nspec, rng):
    c_lines = rng.uniform(0, 1, (nspec, len(LINES))).astype(np.float32)
    z_lines = rng.uniform(2, 4, (nspec, len(LINES)))
    return dict(C_LINES=c_lines, Z_LINES=z_lines, C_LBG=c_lines.max(1), IS_LBG=c_lines.max(1) > 0.5,
                Z_LBG=z_lines[:, 0], ZERR_LBG=np.full(nspec, 1e-3))


def redshifts_table(tid):
    t = Table()
    t['TARGETID'] = np.asarray(tid, dtype=np.int64)
    t['SPECTYPE'] = np.array(['GALAXY'] * len(tid))
    t['Z'] = np.linspace(0, 1, len(tid))
    t['ZERR'] = np.full(len(tid), 1e-4)
    t['ZWARN'] = np.arange(len(tid))
    t['DELTACHI2'] = np.arange(len(tid)) * 2.0
    return t


def test_lookup():
    keys = np.array([30, 10, 20])
    assert lookup(keys, np.array([20, 30, 99, 10])).tolist() == [2, 0, -1, 1]
    assert lookup(np.array([], dtype=int), np.array([1, 2])).tolist() == [-1, -1]


def test_match_targetids_order_and_extras():
    rng = np.random.default_rng(1)
    coadd_tid = rng.permutation(50) + 1000
    rr_tid = np.concatenate([rng.permutation(coadd_tid), [5, 6]])
    idx = match_targetids(rr_tid, coadd_tid)
    assert np.array_equal(coadd_tid[idx[:50]], rr_tid[:50])
    assert idx[50:].tolist() == [-1, -1]


def test_match_targetids_mismatch_is_an_error():
    with pytest.raises(InputFileError, match=r'rr.fits: TARGETID mismatch with coadd.fits: 1 of 3'):
        match_targetids(np.array([1, 2, 4]), np.array([1, 2, 3]), 'rr.fits', 'coadd.fits')
    with pytest.raises(InputFileError, match='duplicated TARGETID'):
        match_targetids(np.array([1, 2]), np.array([1, 2, 2]), 'rr.fits', 'coadd.fits')


def test_assemble_in_redrock_order():
    rng = np.random.default_rng(2)
    coadd_tid = np.array([10, 11, 12, 13])
    fm = Table(dict(TARGETID=coadd_tid, TARGET_RA=[1., 2., 3., 4.], TARGET_DEC=[5., 6., 7., 8.],
                    DESI_TARGET=[1, 2, 4, 8], SV3_BGS_TARGET=[3, 3, 3, 3], CMX_TARGET=[7, 7, 7, 7],
                    OTHER_TARGETX=[0, 0, 0, 0]))
    res = fake_results(4, rng)
    flags = np.array([0, MASK.NODATA, 0, MASK.MISSING_CAMERA], dtype=np.int32)
    rr_tid = np.array([13, 99, 10, 12, 11])
    rr = redshifts_table(rr_tid)
    idx = match_targetids(rr_tid, coadd_tid)
    cat = assemble_catalog(rr, idx, fm, res, flags, LINES)
    assert cat['TARGETID'].tolist() == rr_tid.tolist()
    assert cat['TARGET_RA'].tolist()[0] == 4.0 and np.isnan(cat['TARGET_RA'][1])
    assert str(cat['TARGET_RA'].unit) == 'deg'
    assert cat['DESI_TARGET'].tolist() == [8, 0, 1, 4, 2]
    assert 'SV3_BGS_TARGET' in cat.colnames and 'CMX_TARGET' in cat.colnames
    assert 'OTHER_TARGETX' not in cat.colnames
    assert np.array_equal(cat['Z_RR'], rr['Z']) and np.array_equal(cat['ZWARN_RR'], rr['ZWARN'])
    assert cat['LBG_FLAG'].tolist() == [MASK.MISSING_CAMERA, MASK.NOT_IN_COADD, 0, 0, MASK.NODATA]
    assert cat['C_CIV'][2] == res['C_LINES'][0, 1] and cat['Z_LYA'][3] == res['Z_LINES'][2, 0]
    assert np.isnan(cat['C_LBG'][1]) and not cat['IS_LBG'][1] and np.isnan(cat['Z_CIV'][1])
    assert cat.meta['EXTNAME'] == 'LBG_CNN'


def test_rerun_columns_fixed_types():
    cat = Table(dict(TARGETID=np.array([1, 2, 3])))
    rerun = Table(dict(TARGETID=[3, 1], Z=[3.1, 2.9], ZERR=[1e-4, 2e-4], ZWARN=[0, 4],
                       SPECTYPE=['GALAXY', 'GALAXY'], SUBTYPE=['LBG', 'LBG'], CHI2=[10., 11.],
                       DELTACHI2=[50., 60.], COEFF=np.ones((2, 3))))
    add_rerun_columns(cat, rerun)
    assert cat['Z_NEW'][0] == 2.9 and cat['Z_NEW'][2] == 3.1 and np.isnan(cat['Z_NEW'][1])
    assert cat['SPECTYPE_NEW'].tolist() == ['GALAXY', '', 'GALAXY']
    assert cat['ZWARN_NEW'].tolist() == [4, 512, 0]
    # ZWARN_NEW == 0 selects rerun rows only (a row not rerun has NODATA and Z_NEW NaN)
    assert cat['TARGETID'][cat['ZWARN_NEW'] == 0].tolist() == [3]
    assert cat['COEFF_NEW'].shape == (3, NCOEFF)
    assert np.all(cat['COEFF_NEW'][0, :3] == 1) and np.all(np.isnan(cat['COEFF_NEW'][0, 3:]))
    assert cat['Z_NEW'].description == 'rerun Redrock redshift'
    assert all(cat[c].description for c in cat.colnames if c.endswith('_NEW'))
    empty = Table(dict(TARGETID=np.array([1, 2])))
    add_rerun_columns(empty, None)
    assert empty['SUBTYPE_NEW'].dtype == cat['SUBTYPE_NEW'].dtype
    assert np.all(np.isnan(empty['DELTACHI2_NEW']))


def test_spectrum_flags():
    info = GridInfo(targetid=None, empty=np.array([True, False, False, False]), bands=('b', 'r'),
                    band_valid=np.array([[False, False], [True, True], [True, False], [True, True]]),
                    nvalid_bins=np.array([0, 500, 300, 500]))
    fm = Table(dict(OBJTYPE=['TGT', 'SKY', 'TGT', 'TGT'],
                    COADD_FIBERSTATUS=[0, 0, 0, bad_fiberstatus_mask() & -bad_fiberstatus_mask()]))
    flags = spectrum_flags(info, fm, 800)
    # no z camera at all: every spectrum has MISSING_CAMERA
    assert np.all(flags & MASK.MISSING_CAMERA)
    assert MASK.names(int(flags[0])) == ['NODATA', 'MISSING_CAMERA', 'LOW_COVERAGE']
    assert flags[1] & MASK.NOT_SCIENCE and flags[3] & MASK.NOT_SCIENCE
    assert flags[2] & MASK.LOW_COVERAGE and not flags[2] & MASK.NOT_SCIENCE
    full = GridInfo(None, np.zeros(2, bool), ('b', 'r', 'z'), np.ones((2, 3), bool), np.array([800, 800]))
    assert spectrum_flags(full, None, 800).tolist() == [0, 0]


def test_not_science_rule_and_coverage_boundary():
    """NOT_SCIENCE: any OBJTYPE but TGT, and each of the fibre-status bits for which Redrock
    sets ZWARN alone (one dropped from the list went unnoticed); another bit alone is not
    enough.  LOW_COVERAGE below half of the bins, not at half."""
    from desispec.maskbits import fibermask
    from lbgnet.catalog import BAD_FIBERSTATUS_BITS
    n = 4 + len(BAD_FIBERSTATUS_BITS) + 1
    status = [0] * 4 + [fibermask.mask(b) for b in BAD_FIBERSTATUS_BITS] + [fibermask.mask('LOWEFFTIME')]
    fm = Table(dict(OBJTYPE=['TGT', 'SKY', 'NON', 'BAD'] + ['TGT'] * (n - 4),
                    COADD_FIBERSTATUS=status))
    nvalid = np.full(n, 800)
    nvalid[:2] = (399, 400)
    info = GridInfo(None, np.zeros(n, bool), ('b', 'r', 'z'), np.ones((n, 3), bool), nvalid)
    flags = spectrum_flags(info, fm, 800)
    assert ((flags & MASK.NOT_SCIENCE) != 0).tolist() == [False, True, True, True] + \
        [True] * len(BAD_FIBERSTATUS_BITS) + [False]
    assert ((flags & MASK.LOW_COVERAGE) != 0).tolist() == [True] + [False] * (n - 1)


def test_model_range():
    flags = apply_model_range(np.array([0, 1, 0, 0]), [np.array([1.0, 3.0, np.nan, 6.0])], (1.5, 5.0))
    assert flags.tolist() == [MASK.Z_OUT_OF_RANGE, 1, 0, MASK.Z_OUT_OF_RANGE]
    # Z_TPL too: its window reaches beyond the range, and Z of the zcatalogue uses it
    z_lbg = np.array([1.52, 4.98, 3.0, np.nan, 1.0])
    z_tpl = np.array([1.49, 4.99, np.nan, 5.2, 1.6])
    flags = apply_model_range(np.zeros(5, int), (z_lbg, z_tpl), (1.5, 5.0))
    assert flags.tolist() == [MASK.Z_OUT_OF_RANGE, 0, 0, MASK.Z_OUT_OF_RANGE, MASK.Z_OUT_OF_RANGE]
    # the range's ends are inside it
    flags = apply_model_range(np.zeros(2, int), [np.array([1.5, 5.0])], (1.5, 5.0))
    assert flags.tolist() == [0, 0]


def test_small_deltachi2():
    # IS_LBG rows below Redrock's 9 (or NaN, or negative: the prior decided) are flagged;
    # rows not selected never are, whatever their DELTACHI2_TPL; other bits are kept
    is_lbg = np.array([1, 1, 1, 1, 1, 0, 0], dtype=bool)
    dchi2 = np.array([8.99, 9.0, 250.0, np.nan, -3.0, 1.0, np.nan])
    flags = apply_small_deltachi2(np.array([0, 0, 2, 2, 0, 0, 1]), is_lbg, dchi2)
    bit = MASK.SMALL_DELTA_CHI2
    assert bit == 2 ** 7 and MASK.names(int(bit)) == ['SMALL_DELTA_CHI2']
    assert flags.tolist() == [bit, 0, 2, 2 | bit, bit, 0, 1]
    # χ² without a minimum at Z_TPL (ZERR_TPL NaN: the prior alone placed it) is not
    # singled out either, whatever DELTACHI2_TPL says
    zerr = np.array([1e-4, 1e-4, np.nan, 1e-4, 1e-4, np.nan, 1e-4])
    flags = apply_small_deltachi2(np.zeros(7, int), is_lbg, dchi2, zerr)
    assert flags.tolist() == [bit, 0, bit, bit, bit, 0, 0]


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    rr = redshifts_table([5, 6, 7])
    cat = assemble_catalog(rr, np.array([2, 1, 0]), None, fake_results(3, rng),
                           np.zeros(3, np.int32), LINES)
    header = provenance_header([('CTHRESH', 0.5, 'threshold'), ('LBGMODEL', '/x' * 50, 'model')],
                               dependencies={'lbgnet': '9.9'})
    path = str(tmp_path / 'sub' / 'lbg_cnn-x.fits')
    write_catalog(path, cat, header)
    back, hdr = read_catalog(path)
    assert back.colnames == cat.colnames
    for col in cat.colnames:
        nan = np.asarray(cat[col]).dtype.kind == 'f'
        assert np.array_equal(np.asarray(back[col]), np.asarray(cat[col]), equal_nan=nan), col
    assert hdr['CTHRESH'] == 0.5 and hdr['LBGMODEL'] == '/x' * 50
    assert 'lbgnet' in [hdr[k] for k in hdr if k.startswith('DEPNAM')]
    assert str(back['TARGET_DEC'].unit) == 'deg'
    assert os.listdir(tmp_path / 'sub') == ['lbg_cnn-x.fits']
    # CHECKSUM/DATASUM in both HDUs (desispec convention) and valid: a later corruption
    # of the file is detectable
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')               # astropy warns on a bad checksum
        with fits.open(path, checksum=True) as hdul:
            assert all('CHECKSUM' in h.header and 'DATASUM' in h.header for h in hdul)
            # no time of writing in the cards (cfitsio's comment has one): reruns on the
            # same inputs write identical files
            comments = [h.header.comments[k] for h in hdul for k in ('CHECKSUM', 'DATASUM')]
            assert not any(re.search(r'\d\d:\d\d|\d{4}-\d\d-\d\d', c) for c in comments), comments
    with open(path, 'r+b') as fx:                    # one flipped byte in the table data
        fx.seek(-2880 + 5, 2)
        byte = fx.read(1)
        fx.seek(-2880 + 5, 2)
        fx.write(bytes([byte[0] ^ 0xFF]))
    with pytest.warns(Warning, match='(Checksum|Datasum) verification failed'):
        fits.open(path, checksum=True).close()


def test_header_names_the_source_revision():
    """The version string does not change between commits: run from a git checkout, the
    header and the model description record ``git describe`` of the source."""
    import shutil
    import subprocess
    import lbgnet
    root = os.path.dirname(os.path.dirname(os.path.abspath(lbgnet.__file__)))
    root = os.path.dirname(root)                      # <checkout>/py/lbgnet
    if shutil.which('git') is None or not os.path.exists(os.path.join(root, '.git')):
        # not a checkout (an installed copy) or no git: no revision to name, no card
        assert 'LBGGIT' not in provenance_header()
        return
    git = ['git', '-c', f'safe.directory={root}', '-C', root]
    commit = subprocess.run(git + ['describe', '--always', '--abbrev=12'], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(git + ['status', '--porcelain', '--untracked-files=no'],
                           capture_output=True, text=True).stdout.strip()
    assert commit and provenance_header()['LBGGIT'] == commit + ('-dirty' if dirty else '')
    # a GIT_DIR in the environment (inside a git hook) does not name another repository
    import sys
    env = dict(os.environ, GIT_DIR=os.path.join(str(os.path.dirname(root)), 'elsewhere.git'))
    run = subprocess.run([sys.executable, '-c', 'from lbgnet.io.catalog import source_revision;'
                          'print(source_revision())'], capture_output=True, text=True, env=env)
    assert run.stdout.strip() == provenance_header()['LBGGIT'], run.stderr


def test_crash_mid_write_leaves_nothing(tmp_path, monkeypatch):
    """Not the file, not its temporary, not the directories made for it (a full disk
    left the empty output tree of every failed file)."""
    cat = Table(dict(TARGETID=np.arange(5)))
    path = tmp_path / 'sub' / 'deeper' / 'lbg_cnn-y.fits'

    real = fitsio.FITS.write

    def crash(self, data, **kwargs):
        real(self, data, **kwargs)              # the primary HDU is written, then the disk fills
        raise OSError('disk full')

    monkeypatch.setattr(fitsio.FITS, 'write', crash)
    with pytest.raises(OSError, match='disk full'):
        write_catalog(str(path), cat, fits.Header())
    assert os.listdir(tmp_path) == []


def test_signal_mid_write_leaves_no_directory_either(tmp_path, monkeypatch):
    """SIGTERM (Terminated, a SystemExit) while the file is written: the temporary goes,
    and so do the directories made for it (an empty output tree stayed behind)."""
    from lbgnet.io.atomic import Terminated
    cat = Table(dict(TARGETID=np.arange(5)))
    path = tmp_path / 'sub' / 'deeper' / 'lbg_cnn-y.fits'

    def killed(self, data, **kwargs):
        raise Terminated(143)

    monkeypatch.setattr(fitsio.FITS, 'write', killed)
    with pytest.raises(Terminated):
        write_catalog(str(path), cat, fits.Header())
    assert os.listdir(tmp_path) == []


def test_types_and_missing_positions():
    rng = np.random.default_rng(4)
    rr = redshifts_table([5, 6, 7])
    fm = Table(dict(TARGETID=[7, 6, 5]))                 # no TARGET_RA/DEC columns
    cat = assemble_catalog(rr, match_targetids(rr['TARGETID'], fm['TARGETID']), fm,
                           fake_results(3, rng), np.zeros(3, np.int32), LINES)
    assert np.all(np.isnan(cat['TARGET_RA']))
    assert cat['C_LBG'].dtype == np.float32 and cat['C_LYA'].dtype == np.float32
    assert cat['Z_LBG'].dtype == np.float64 and cat['IS_LBG'].dtype == bool
    assert cat['LBG_FLAG'].dtype == np.int32


def test_every_column_from_its_own_source():
    # Every source column holds distinct values, so a column filled from the wrong source
    # (TARGET_DEC from TARGET_RA, ZERR_LBG from Z_LBG, ...) cannot pass unnoticed.
    coadd_tid = np.array([20, 21, 22, 23])
    n = coadd_tid.size
    base = np.arange(n, dtype=np.float64)
    fm = Table(dict(TARGETID=coadd_tid, TARGET_RA=100 + base, TARGET_DEC=-30 - base,
                    DESI_TARGET=np.array([1, 2, 4, 8]), BGS_TARGET=np.array([16, 32, 64, 128]),
                    SV1_MWS_TARGET=np.array([3, 5, 7, 11])))
    c_lines = np.array([[0.11, 0.12], [0.21, 0.22], [0.31, 0.32], [0.41, 0.42]], np.float32)
    z_lines = np.array([[2.11, 2.12], [2.21, 2.22], [2.31, 2.32], [2.41, 2.42]])
    res = dict(C_LINES=c_lines, Z_LINES=z_lines, C_LBG=np.float32(0.5) + base.astype(np.float32) / 10,
               IS_LBG=np.array([True, False, True, False]), Z_LBG=3.0 + base / 10,
               ZERR_LBG=1e-3 * (1 + base), Z_TPL=4.0 + base / 10, ZERR_TPL=1e-4 * (1 + base),
               DELTACHI2_TPL=50.0 + base)
    flags = np.array([0, MASK.NODATA, MASK.MISSING_CAMERA, MASK.LOW_COVERAGE], dtype=np.int32)
    rr_tid = np.array([22, 98, 20, 23, 99, 21])
    rr = redshifts_table(rr_tid)
    rr['ZERR'] = np.arange(len(rr_tid)) * 1e-5 + 7e-5
    rr['SPECTYPE'] = ['GALAXY', 'QSO', 'STAR', 'GALAXY', 'QSO', 'STAR']
    idx = match_targetids(rr_tid, coadd_tid)
    tsnr2 = 500.0 + base * 7
    cat = assemble_catalog(rr, idx, fm, res, flags, LINES, tsnr2_lrg=tsnr2)
    inside = idx >= 0
    assert inside.tolist() == [True, False, True, True, False, True]

    def check(col, src, fill):
        src = np.asarray(src)
        assert np.array_equal(np.asarray(cat[col])[inside], src[idx[inside]]), col
        out = np.asarray(cat[col])[~inside]
        if isinstance(fill, float) and np.isnan(fill):
            assert np.all(np.isnan(out)), col
        else:
            assert np.all(out == fill), col

    assert cat['TARGETID'].tolist() == rr_tid.tolist()
    for col in ('TARGET_RA', 'TARGET_DEC'):
        check(col, fm[col], np.nan)
    for col in ('DESI_TARGET', 'BGS_TARGET', 'SV1_MWS_TARGET'):
        check(col, fm[col], 0)
    for col in ('C_LBG', 'Z_LBG', 'ZERR_LBG', 'Z_TPL', 'ZERR_TPL', 'DELTACHI2_TPL'):
        check(col, res[col], np.nan)
    check('IS_LBG', res['IS_LBG'], False)
    check('TSNR2_LRG', tsnr2, np.nan)
    check('LBG_FLAG', flags, MASK.NOT_IN_COADD)
    for i, name in enumerate(LINES):
        check(f'C_{name}', c_lines[:, i], np.nan)
        check(f'Z_{name}', z_lines[:, i], np.nan)
    # Redrock columns are copied in Redrock order, every row
    for col in ('SPECTYPE', 'Z', 'ZERR', 'ZWARN', 'DELTACHI2'):
        assert np.array_equal(np.asarray(cat[f'{col}_RR']), np.asarray(rr[col])), col


def test_harmless_fiberstatus_is_science():
    from desispec.maskbits import fibermask
    harmless = [name for name in ('RESTRICTED', 'LOWEFFTIME', 'STUCKPOSITIONER', 'LOWTRANSMISSION')
                if fibermask.mask(name) & bad_fiberstatus_mask() == 0]
    assert len(harmless) == 4
    status = [fibermask.mask(name) for name in harmless]
    status += [sum(status), fibermask.mask('BADAMPR'), fibermask.mask('RESTRICTED|BROKENFIBER'), 0]
    n = len(status)
    info = GridInfo(None, np.zeros(n, bool), ('b', 'r', 'z'), np.ones((n, 3), bool), np.full(n, 800))
    flags = spectrum_flags(info, Table(dict(OBJTYPE=['TGT'] * n, COADD_FIBERSTATUS=status)), 800)
    # only the bits for which Redrock sets ZWARN make a fibre "not science"
    assert flags.tolist() == [0] * 5 + [MASK.NOT_SCIENCE] * 2 + [0]


def test_columns_are_described_in_the_file(tmp_path):
    """Every column of an afterburner catalogue has a description, written as its TTYPEn
    comment within desiutil.annotate's 46 characters and read back as the column's
    description."""
    import fitsio
    from desiutil.annotate import check_comment_length
    from lbgnet.io.catalog import provenance_header, read_catalog, write_catalog
    rr_tid = np.array([22, 20, 98, 21])
    fm = Table(dict(TARGETID=np.array([20, 21, 22]), TARGET_RA=np.zeros(3), TARGET_DEC=np.zeros(3),
                    DESI_TARGET=np.ones(3, dtype=np.int64)))
    res = fake_results(3, np.random.default_rng(1))
    cat = assemble_catalog(redshifts_table(rr_tid), match_targetids(rr_tid, fm['TARGETID']), fm,
                           res, np.zeros(3, np.int32), LINES, line_waves=[1215.67, 1334.53],
                           tsnr2_lrg=np.ones(3))
    assert all(cat[c].description for c in cat.colnames), [c for c in cat.colnames
                                                             if not cat[c].description]
    assert check_comment_length({c: cat[c].description for c in cat.colnames}) == 0
    out = str(tmp_path / 'c.fits')
    write_catalog(out, cat, provenance_header([]))
    hdr = fitsio.read_header(out, 'LBG_CNN')
    i = cat.colnames.index('Z_TPL') + 1
    assert hdr[f'TTYPE{i}'] == 'Z_TPL' and hdr.get_comment(f'TTYPE{i}') == cat['Z_TPL'].description
    back, _ = read_catalog(out)
    assert [back[c].description for c in back.colnames] == [cat[c].description for c in cat.colnames]
    assert back['C_LYA'].description == 'best-box confidence, LYA 1215.7 A'


def test_descriptions_of_files_without_them_and_long_names(tmp_path):
    """A catalogue written without descriptions (an older lbgnet) reads back with none, not
    cfitsio's 'label for field N'; a description is kept ASCII and short enough that the
    column name survives a long name."""
    import fitsio
    from lbgnet.io.catalog import card_comment, provenance_header, read_catalog, write_catalog
    old = str(tmp_path / 'old.fits')
    fitsio.write(old, np.zeros(2, dtype=[('TARGETID', 'i8'), ('Z_LBG', 'f8')]), extname='LBG_CNN')
    table, _ = read_catalog(old)
    assert [table[c].description for c in table.colnames] == [None, None]
    long_name = 'A_VERY_LONG_COLUMN_NAME_OF_THIRTY'
    t = Table({long_name: np.zeros(2), 'W': np.ones(2)})
    t[long_name].description = 'x' * 60
    t['W'].description = 'wavelength in Å units'
    out = str(tmp_path / 'new.fits')
    write_catalog(out, t, provenance_header([]))
    back = fitsio.read(out, 'LBG_CNN')
    assert back.dtype.names == (long_name, 'W')
    assert read_catalog(out)[0]['W'].description == 'wavelength in  units'
    assert len(card_comment('x' * 60, long_name)) == 65 - len(long_name)
    assert card_comment(None, 'A') == ''


def test_bit_numbers_are_the_documented_ones():
    """LBG_FLAG values are published: the bit numbers must stay those of the tables in the
    module docstring and in doc/afterburner.rst (the tests name bits symbolically, so a
    renumbering went unnoticed), and the docstring's examples hold."""
    import doctest
    import lbgnet.bitmask as bitmask

    def table_of(text):
        start = text.index('\n====  ')
        end = text.index('\n====  ', text.index('\n====  ', start + 1) + 1)   # 3rd border
        return dict((name, int(bit)) for bit, name in
                    re.findall(r'^(\d+)\s+([A-Z_0-9]+)\s', text[start:end], re.M))

    mine = {name: MASK.bitnum(name) for name in MASK.names()}
    assert len(mine) == 8 and sorted(mine.values()) == list(range(8))
    doc = os.path.join(os.path.dirname(__file__), '..', 'doc', 'afterburner.rst')
    text = open(doc).read()
    assert table_of(bitmask.__doc__) == mine
    assert table_of(text[text.index('``LBG_FLAG`` bits'):]) == mine
    result = doctest.testmod(bitmask)
    assert result.attempted >= 2 and result.failed == 0


def test_output_path_ending_with_a_separator_is_refused_first(tmp_path):
    """--output new/ (a directory that does not exist yet): the separator was dropped, the
    check passed, and the write failed only after all the work; now it is refused first,
    creating nothing."""
    from lbgnet.io.catalog import OutputFileError, check_writable
    for create in (False, True):
        with pytest.raises(OutputFileError, match='names a directory .ends with a path '
                                                  'separator.; give a file name'):
            check_writable(str(tmp_path / 'new') + os.sep, create=create)
        assert not (tmp_path / 'new').exists()
    check_writable(str(tmp_path / 'new' / 'cat.fits'), create=False)


def test_output_path_with_a_parent_step_after_a_missing_directory(tmp_path, monkeypatch):
    """out/x/../cat.fits with no out/x: the normalised name passed every check and the
    write failed after the work; now it is refused first, creating nothing.  '..' after
    existing directories, and leading '..' of a relative path, are fine."""
    from lbgnet.io.catalog import OutputFileError, check_writable
    out = tmp_path / 'out'
    for create in (False, True):
        with pytest.raises(OutputFileError, match=r"'\.\.' follows .*/out/x, which is not an "
                                                  'existing directory'):
            check_writable(str(out / 'x' / '..' / 'cat.fits'), create=create)
        assert not out.exists()
    (tmp_path / 'a' / 'b').mkdir(parents=True)
    check_writable(str(tmp_path / 'a' / 'b' / '..' / 'cat.fits'), create=False)
    check_writable(str(tmp_path / 'a' / 'b' / '..' / 'new' / 'cat.fits'), create=True)
    assert (tmp_path / 'a' / 'new').is_dir()
    monkeypatch.chdir(tmp_path / 'a' / 'b')
    check_writable(os.path.join('..', '..', 'c.fits'), create=False)
    # '..' after a symbolic link goes up from the link's target, not beside the link:
    # link/../new/cat.fits was checked as ./new and written to (missing) target/../new
    (tmp_path / 'x' / 'sub').mkdir(parents=True)
    (tmp_path / 'a' / 'link').symlink_to(tmp_path / 'x' / 'sub')
    for create in (False, True):
        with pytest.raises(OutputFileError, match=r"'\.\.' follows .*/a/link, a symbolic link: "
                                                  r"the system goes up to .*/x, not .*/a"):
            check_writable(str(tmp_path / 'a' / 'link' / '..' / 'other' / 'cat.fits'),
                           create=create)
        assert not (tmp_path / 'a' / 'other').exists() and not (tmp_path / 'x' / 'other').exists()
    check_writable(str(tmp_path / 'a' / 'link' / 'c.fits'), create=False)
    # a working directory reached through a link does not count: '..' there is the system's
    monkeypatch.chdir(tmp_path / 'a' / 'link')
    check_writable(os.path.join('..', 'sub', 'c.fits'), create=False)
    (tmp_path / 'x' / 'sub' / 'deep').mkdir()
    check_writable(os.path.join('deep', '..', 'c.fits'), create=False)
