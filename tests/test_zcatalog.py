"""desi_lbg_zcatalog: stacking, every row kept, ZCAT_PRIMARY, GOOD_LBG, provenance."""
import logging
import os

import numpy as np
import pytest
from astropy.table import Table

from lbgnet.bitmask import LBGWarnMask
from lbgnet.io.catalog import provenance_header, read_catalog, write_catalog
from lbgnet.scripts.lbg_zcatalog import main
from lbgnet.zcatalog import add_location, good_lbg, stack_catalogs

MASK = LBGWarnMask()


def write_cat(path, tid, is_lbg, z, flag, dchi2, cards=(), sha='abc', extra=None,
              tid_dtype=np.int64):
    cat = Table(meta={'EXTNAME': 'LBG_CNN'})
    cat['TARGETID'] = np.asarray(tid, dtype=tid_dtype)
    cat['IS_LBG'] = np.asarray(is_lbg, dtype=bool)
    cat['Z_LBG'] = np.asarray(z, dtype=np.float64)
    cat['ZERR_LBG'] = np.where(np.isfinite(cat['Z_LBG']), 1e-3, np.nan)
    cat['LBG_FLAG'] = np.asarray(flag, dtype=np.int32)
    cat['DELTACHI2_RR'] = np.asarray(dchi2, dtype=np.float64)
    cat['TARGET_RA'] = np.zeros(len(tid))
    cat['TARGET_RA'].unit = 'deg'
    for name, values in (extra or {}).items():
        cat[name] = values
    header = provenance_header([('LBGMSHA', sha, ''), ('CTHRESH', 0.5, ''), ('NTHRESH', 1, ''),
                                ('RERUNRR', False, '')] + list(cards))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_catalog(path, cat, header)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / 'out'
    hp = root / 'healpix' / 'main' / 'dark' / '1'
    write_cat(str(hp / '100' / 'lbg_cnn-main-dark-100.fits'), [1, 2, 3], [1, 1, 0], [3.0, 2.5, np.nan],
              [0, MASK.NOT_SCIENCE, MASK.NODATA], [5, 6, 7])
    write_cat(str(hp / '101' / 'lbg_cnn-main-dark-101.fits'), [4, 5], [1, 1], [3.3, 9.0],
              [MASK.MISSING_CAMERA, MASK.Z_OUT_OF_RANGE], [1, 1])
    # Same target 1 in sv3/bright: kept separately (another survey/program).
    write_cat(str(root / 'healpix/sv3/bright/1/100/lbg_cnn-sv3-bright-100.fits'), [1], [0], [2.0],
              [0], [9])
    return root


def test_stack_healpix(tree, tmp_path):
    out = str(tmp_path / 'lbg-zcat.fits')
    assert main(['--input-dir', str(tree), '--output', out]) == 0
    zcat, hdr = read_catalog(out, extname='LBG_ZCAT')
    keys = list(zip(zcat['SURVEY'], zcat['PROGRAM'], zcat['TARGETID']))
    assert keys == [('main', 'dark', 1), ('main', 'dark', 2), ('main', 'dark', 3),
                    ('main', 'dark', 4), ('main', 'dark', 5), ('sv3', 'bright', 1)]
    assert zcat['HPXPIXEL'].tolist() == [100, 100, 100, 101, 101, 100]
    assert zcat['SPGRPVAL'].tolist() == zcat['HPXPIXEL'].tolist()
    assert zcat['TILEID'].tolist() == [-1] * 6
    assert zcat['GOOD_LBG'].tolist() == [True, False, False, True, False, False]
    assert zcat['ZCAT_NSPEC'].tolist() == [2, 1, 1, 1, 1, 2]    # target 1 in main and sv3
    assert zcat['ZCAT_PRIMARY'].tolist() == [False] + [True] * 5     # 1: larger DELTACHI2 in sv3
    assert hdr['NINPUT'] == 3 and hdr['LBGMSHA'] == 'abc'
    assert str(zcat['TARGET_RA'].unit) == 'deg'
    assert main(['--input-dir', str(tree), '--output', out]) == 1          # exists
    assert main(['--input-dir', str(tree), '--output', out, '--overwrite']) == 0


def test_overlapping_tiles_keep_every_row(tmp_path):
    """Overlapping tiles of one survey/program: every row is kept (a complete candidate
    sample can be drawn from the stack), the best is ZCAT_PRIMARY."""
    root = tmp_path / 'tiles'
    cards = [('SURVEY', 'main', ''), ('PROGRAM', 'dark', '')]
    write_cat(str(root / '80605/20210101/lbg_cnn-3-80605-thru20210101.fits'), [7, 8], [1, 1],
              [3.0, 3.5], [0, 0], [10, 50], cards)
    write_cat(str(root / '80606/20210102/lbg_cnn-4-80606-thru20210102.fits'), [7, 8], [1, 0],
              [3.1, np.nan], [0, MASK.NODATA], [20, 900], cards)
    out = str(tmp_path / 'z.fits')
    assert main(['--catalogs', str(root / '*/*/lbg_cnn-*.fits'), '--output', out]) == 0
    zcat, _ = read_catalog(out, extname='LBG_ZCAT')
    assert zcat['TARGETID'].tolist() == [7, 7, 8, 8]
    assert zcat['TILEID'].tolist() == [80605, 80606, 80605, 80606]     # file order
    assert zcat['PETAL'].tolist() == [3, 4, 3, 4]
    # with TILEID and PETAL, the thru-night (from the file name) names each row's file
    assert zcat['SPGRPVAL'].tolist() == [20210101, 20210102] * 2
    assert zcat['Z_LBG'][:3].tolist() == [3.0, 3.1, 3.5] and np.isnan(zcat['Z_LBG'][3])
    assert zcat['ZCAT_NSPEC'].tolist() == [2, 2, 2, 2]
    # 7: larger DELTACHI2 (80606); 8: no bad bit (80605)
    assert zcat['ZCAT_PRIMARY'].tolist() == [False, True, True, False]
    assert zcat['GOOD_LBG'].tolist() == [True, True, True, False]


def test_spectra_groupings_are_not_stacked_together(tmp_path, caplog):
    """Healpix and tile coadds of one production combine the same exposures: stacking
    them counted one target's spectra three times (ZCAT_NSPEC 3); several groupings are
    refused unless --spgrp picks one, whose files alone are read."""
    root = tmp_path / 'prod'
    cards = [('SURVEY', 'main', ''), ('PROGRAM', 'dark', '')]
    write_cat(str(root / 'healpix/main/dark/100/10016/lbg_cnn-main-dark-10016.fits'), [7], [1],
              [3.0], [0], [10], cards + [('HPXNSIDE', 64, ''), ('HPXNEST', True, '')])
    write_cat(str(root / 'tiles/cumulative/1000/20210505/lbg_cnn-3-1000-thru20210505.fits'),
              [7], [1], [3.0], [0], [10], cards)
    write_cat(str(root / 'tiles/pernight/1000/20210505/lbg_cnn-3-1000-20210505.fits'), [7], [1],
              [3.0], [0], [10], cards)
    out = str(tmp_path / 'z.fits')
    caplog.clear()
    assert main(['--input-dir', str(root), '--output', out]) == 1 and not os.path.exists(out)
    assert ('3 catalogues: several spectra groupings (SPGRP cumulative 1, healpix 1, '
            'pernight 1)') in caplog.text
    # an unreadable file of another grouping does not stop a --spgrp run
    with open(root / 'tiles/pernight/1000/20210505/lbg_cnn-3-1000-20210505.fits', 'w') as fx:
        fx.write('not FITS')
    for spgrp, tileid, hpx in (('healpix', -1, 10016), ('cumulative', 1000, -1)):
        assert main(['--input-dir', str(root), '--output', out, '--overwrite',
                     '--spgrp', spgrp]) == 0
        zcat, hdr = read_catalog(out, extname='LBG_ZCAT')
        assert zcat['ZCAT_NSPEC'].tolist() == [1] and hdr['NINPUT'] == 1
        assert zcat['SPGRP'].tolist() == [spgrp]
        assert zcat['TILEID'].tolist() == [tileid] and zcat['HPXPIXEL'].tolist() == [hpx]
        if spgrp == 'healpix':          # HPXPIXEL means nothing without them
            assert hdr['HPXNSIDE'] == 64 and hdr['HPXNEST'] is True
    # what --spgrp leaves out is said; the grouping is recorded in the header
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(['--input-dir', str(root), '--output', out, '--overwrite',
                     '--spgrp', 'cumulative']) == 0
    assert '--spgrp cumulative: 1 of 3 catalogues stacked (left out: healpix 1, pernight 1)' \
        in caplog.text
    assert read_catalog(out, extname='LBG_ZCAT')[1]['SPGRP'] == 'cumulative'
    caplog.clear()
    assert main(['--input-dir', str(root / 'healpix'), '--output', out, '--overwrite',
                 '--spgrp', 'perexp']) == 1
    assert 'no catalogue of spectra grouping perexp (found: healpix 1)' in caplog.text
    # a catalogue whose name and header name no grouping is counted as such, not as one
    # whose header names another grouping
    write_cat(str(root / 'flat' / 'lbg_cnn-x.fits'), [7], [1], [3.0], [0], [1])
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(['--input-dir', str(root), '--output', out, '--overwrite',
                     '--spgrp', 'cumulative']) == 0
    assert ('--spgrp cumulative: 1 of 4 catalogues stacked (left out: healpix 1, pernight 1, '
            'no grouping named 1)') in caplog.text


def test_two_catalogues_of_one_coadd_are_refused(tmp_path, caplog):
    """A retried file written under another name (``--coadd ... --outdir`` writes flat,
    the tree run mirrors the input tree) gave two catalogues of one coadd, stacked with
    ZCAT_NSPEC 2; the header INCOADD tells them apart from genuine repeats."""
    root = tmp_path / 'out'
    cards = [('SURVEY', 'main', ''), ('PROGRAM', 'dark', '')]
    src = '/redux/healpix/main/dark/146/14638/coadd-main-dark-14638.fits'
    write_cat(str(root / '146/14638/lbg_cnn-main-dark-14638.fits'), [7], [1], [3.0], [0], [10],
              cards + [('INCOADD', src, '')])
    write_cat(str(root / 'lbg_cnn-main-dark-14638.fits'), [7], [1], [3.0], [0], [10],
              cards + [('INCOADD', src, '')])
    write_cat(str(root / '146/14639/lbg_cnn-main-dark-14639.fits'), [8], [1], [3.0], [0], [10],
              cards + [('INCOADD', src.replace('14638', '14639'), '')])
    write_cat(str(root / 'lbg_cnn-main-dark-14639.fits'), [8], [1], [3.0], [0], [10],
              cards + [('INCOADD', src.replace('14638', '14639'), '')])
    out = str(tmp_path / 'z.fits')
    caplog.clear()
    assert main(['--input-dir', str(root), '--output', out]) == 1 and not os.path.exists(out)
    # every pair named in one run (one per run made the operator run it again and again)
    assert f'made from the coadd {src}, as ' in caplog.text
    assert f'made from the coadd {src.replace("14638", "14639")}, as ' in caplog.text
    assert '2 catalogue(s): made from a coadd another catalogue was made from' in caplog.text
    # a coadd and its gzipped copy are one coadd, also when no location tells them apart
    # (a custom coadd name, no SURVEY/TILEID/HPXPIXEL): they were stacked as two spectra
    other = tmp_path / 'custom'
    for suffix in ('', '.gz'):
        write_cat(str(other / f'lbg_cnn-foo.fits{suffix}'), [9], [1], [3.0], [0], [10],
                  [('INCOADD', f'/data/coadd-foo.fits{suffix}', '')])
    caplog.clear()
    assert main(['--input-dir', str(other), '--output', out]) == 1 and not os.path.exists(out)
    assert 'made from the coadd /data/coadd-foo.fits' in caplog.text
    os.remove(other / 'lbg_cnn-foo.fits.gz')
    assert main(['--input-dir', str(other), '--output', out]) == 0
    os.remove(out)
    os.remove(root / 'lbg_cnn-main-dark-14639.fits')
    # another coadd of the same target (an overlapping pixel or tile) is a real repeat
    os.remove(root / 'lbg_cnn-main-dark-14638.fits')
    write_cat(str(root / 'lbg_cnn-main-dark-14640.fits'), [7], [1], [3.0], [0], [10],
              cards + [('INCOADD', src.replace('14638', '14640'), '')])
    assert main(['--input-dir', str(root), '--output', out]) == 0
    assert read_catalog(out, extname='LBG_ZCAT')[0]['ZCAT_NSPEC'].tolist() == [2, 2, 1]   # 7 twice, 8


def test_small_deltachi2_is_not_good(tmp_path):
    root = tmp_path / 'cats'
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1, 2, 3], [1, 1, 1], [3.0, 2.4, 3.9],
              [0, MASK.SMALL_DELTA_CHI2, MASK.SMALL_DELTA_CHI2 | MASK.MISSING_CAMERA], [5, 6, 7])
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(root), '--output', out]) == 0
    zcat, hdr = read_catalog(out, extname='LBG_ZCAT')
    assert zcat['GOOD_LBG'].tolist() == [True, False, False]
    assert hdr['GOODBITS'] & MASK.SMALL_DELTA_CHI2 and not hdr['GOODBITS'] & MASK.MISSING_CAMERA


def test_mixed_models_refused(tree, tmp_path):
    write_cat(str(tree / 'healpix/main/dark/1/102/lbg_cnn-main-dark-102.fits'), [9], [1], [3.0],
              [0], [1], sha='other')
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(tree), '--output', out]) == 1 and not os.path.exists(out)
    assert main(['--input-dir', str(tree), '--output', out, '--allow-mixed']) == 0
    # the stacked header says the inputs were mixed, and in what (it left no trace)
    hdr = read_catalog(out, extname='LBG_ZCAT')[1]
    assert hdr['MIXED'] is True and hdr['MIXKEYS'] == 'LBGMSHA' and 'LBGMSHA' not in hdr
    same = str(tmp_path / 'same.fits')
    assert main(['--input-dir', str(tree / 'healpix/main/dark/1/100'), '--output', same]) == 0
    hdr = read_catalog(same, extname='LBG_ZCAT')[1]
    assert hdr['MIXED'] is False and 'MIXKEYS' not in hdr


@pytest.mark.parametrize('cards', [[('LBGCSHA', 'c2', '')], [('LBGZMIN', 2.0, '')],
                                   [('LBGZMAX', 4.0, '')]])
def test_other_model_description_refused(tmp_path, cards):
    """The same weights with another description (line agreement, redshift range: other
    Z_LBG, other Z_OUT_OF_RANGE hence GOOD_LBG) are another model."""
    root = tmp_path / 'cats'
    base = [('LBGCSHA', 'c1', ''), ('LBGZMIN', 1.8, ''), ('LBGZMAX', 4.6, '')]
    write_cat(str(root / 'a/lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [1], base)
    changed = dict((k, (k, v, c)) for k, v, c in base)
    changed.update((k, (k, v, c)) for k, v, c in cards)
    write_cat(str(root / 'b/lbg_cnn-main-dark-2.fits'), [2], [1], [3.0], [0], [1],
              list(changed.values()))
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(root), '--output', out]) == 1 and not os.path.exists(out)
    assert main(['--input-dir', str(root), '--output', out, '--allow-mixed']) == 0


def test_mixed_refinement_refused(tmp_path):
    root = tmp_path / 'cats'
    write_cat(str(root / 'a/lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [1],
              [('REFINE', True, ''), ('REFWGT', 3.0, ''), ('REFWIN', 0.1, '')])
    write_cat(str(root / 'b/lbg_cnn-main-dark-2.fits'), [2], [1], [3.0], [0], [1],
              [('REFINE', True, ''), ('REFWGT', 0.0, ''), ('REFWIN', 0.1, '')])
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(root), '--output', out]) == 1 and not os.path.exists(out)
    assert main(['--input-dir', str(root), '--output', out, '--allow-mixed']) == 0
    # another trial-redshift step is another setting too
    other = tmp_path / 'step'
    for i, step in enumerate((2e-4, 4e-4)):
        write_cat(str(other / f'lbg_cnn-main-dark-{i}.fits'), [i], [1], [3.0], [0], [1],
                  [('REFINE', True, ''), ('REFSTEP', step, '')])
    assert main(['--input-dir', str(other), '--output', str(tmp_path / 's.fits')]) == 1
    # and so is the refinement's noise (it sets what DELTACHI2_TPL, hence GOOD_LBG, means);
    # a catalogue without REFNOISE was refined with the pipeline ivar
    noise = tmp_path / 'noise'
    for name, cards in (('0', [('REFNOISE', 'calibrated', '')]), ('1', [('REFNOISE', 'pipeline', '')]),
                        ('2', [])):
        write_cat(str(noise / name / f'lbg_cnn-main-dark-{name}.fits'), [int(name)], [1], [3.0],
                  [0], [1], [('REFINE', True, '')] + cards)
    assert main(['--input-dir', str(noise), '--output', str(tmp_path / 'n.fits')]) == 1
    assert main(['--catalogs', str(noise / '1' / '*.fits'), str(noise / '2' / '*.fits'),
                 '--output', str(tmp_path / 'n12.fits')]) == 0
    # skipping the archetype stage where the fit is decisive is recorded (REFASKP); a
    # catalogue without it ran the stage for every spectrum (0)
    skip = tmp_path / 'skip'
    for name, cards in (('0', [('REFASKP', 25.0, '')]), ('1', [('REFASKP', 0.0, '')]), ('2', [])):
        write_cat(str(skip / name / f'lbg_cnn-main-dark-{name}.fits'), [int(name)], [1], [3.0],
                  [0], [1], [('REFINE', True, '')] + cards)
    assert main(['--input-dir', str(skip), '--output', str(tmp_path / 'k.fits')]) == 1
    assert main(['--catalogs', str(skip / '1' / '*.fits'), str(skip / '2' / '*.fits'),
                 '--output', str(tmp_path / 'k12.fits')]) == 0


def test_survey_target_bits_and_rerun_columns(tmp_path):
    root = tmp_path / 'cats'
    write_cat(str(root / 'a/lbg_cnn-main-dark-1.fits'), [1, 2], [1, 1], [3.0, 2.5], [0, 0], [1, 1],
              extra={'DESI_TARGET': np.array([5, 6], dtype=np.int64)})
    write_cat(str(root / 'b/lbg_cnn-sv1-dark-2.fits'), [3], [1], [3.2], [0], [1],
              extra={'SV1_DESI_TARGET': np.array([7], dtype=np.int64)})
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(root), '--output', out]) == 0     # surveys differ: fine
    zcat, _ = read_catalog(out, extname='LBG_ZCAT')
    rows = {t: i for i, t in enumerate(zcat['TARGETID'])}
    assert zcat['DESI_TARGET'][rows[1]] == 5 and zcat['DESI_TARGET'][rows[3]] == 0
    assert zcat['SV1_DESI_TARGET'][rows[3]] == 7 and zcat['SV1_DESI_TARGET'][rows[2]] == 0
    # a catalogue made with --rerun-redrock (Z_NEW) beside plain ones: refused, or filled
    write_cat(str(root / 'c/lbg_cnn-main-dark-3.fits'), [4], [1], [3.4], [0], [1],
              cards=[('RERUNRR', True, '')], extra={'Z_NEW': np.array([3.41])})
    assert main(['--input-dir', str(root), '--output', out, '--overwrite']) == 1
    assert main(['--input-dir', str(root), '--output', out, '--overwrite', '--allow-mixed']) == 0
    zcat, _ = read_catalog(out, extname='LBG_ZCAT')
    z_new = dict(zip(zcat['TARGETID'].tolist(), zcat['Z_NEW'].tolist()))
    assert z_new[4] == 3.41 and np.isnan(z_new[1])


def test_pattern_matching_nothing_is_an_error(tree, tmp_path):
    out = str(tmp_path / 'z.fits')
    cats = str(tree / 'healpix/main/dark/1/*/lbg_cnn-*.fits')
    assert main(['--catalogs', cats, str(tmp_path / 'nosuchdir/lbg_cnn-*.fits'),
                 '--output', out]) == 1 and not os.path.exists(out)
    assert main(['--catalogs', cats, '--output', out]) == 0


def test_nothing_to_stack(tmp_path):
    assert main(['--input-dir', str(tmp_path), '--output', str(tmp_path / 'z.fits')]) == 1
    assert main(['--input-dir', str(tmp_path / 'nope'), '--output', str(tmp_path / 'z.fits')]) == 1


def test_output_directory_and_input_file_are_named_for_what_they_are(tree, tmp_path, caplog):
    import logging
    outdir = tmp_path / 'zdir.fits'
    outdir.mkdir()
    afile = tmp_path / 'afile'
    afile.write_text('x')
    with caplog.at_level(logging.ERROR):
        assert main(['--input-dir', str(tree), '--output', str(outdir)]) == 1
        assert main(['--input-dir', str(afile), '--output', str(tmp_path / 'z.fits')]) == 1
    assert f'{outdir}: is a directory; cannot write the output there' in caplog.text
    assert '--overwrite' not in caplog.text          # it cannot help
    assert f'{afile}: not a directory' in caplog.text and 'does not exist' not in caplog.text
    # a pipe (or a device: /dev/null as root) was replaced by the rename with --overwrite
    import stat
    fifo = tmp_path / 'zpipe.fits'
    os.mkfifo(fifo)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(['--input-dir', str(tree), '--output', str(fifo), '--overwrite']) == 1
    assert f'{fifo}: exists and is not a regular file' in caplog.text, caplog.text
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def location_cat(tid, z, dchi2, survey='main', program='dark', tileid=-1, flag=None, is_lbg=None):
    """An in-memory LBG_CNN catalogue with its location columns."""
    n = len(tid)
    cat = Table(dict(TARGETID=np.asarray(tid, dtype=np.int64),
                     IS_LBG=np.ones(n, bool) if is_lbg is None else np.asarray(is_lbg, bool),
                     Z_LBG=np.asarray(z, dtype=np.float64),
                     ZERR_LBG=np.where(np.isfinite(np.asarray(z, dtype=np.float64)), 1e-3, np.nan),
                     LBG_FLAG=np.zeros(n, np.int32) if flag is None else np.asarray(flag, np.int32),
                     DELTACHI2_RR=np.asarray(dchi2, dtype=np.float64)))
    return add_location(cat, dict(SURVEY=survey, PROGRAM=program, TILEID=tileid))


def test_programs_of_one_survey_kept_apart():
    # One TARGETID observed in main/dark and main/bright: a row in each, the deeper primary.
    zcat = stack_catalogs([location_cat([5, 6], [3.0, 3.2], [10, 10], program='dark', tileid=1),
                           location_cat([5], [2.0], [900], program='bright', tileid=2)])
    keys = list(zip(zcat['SURVEY'], zcat['PROGRAM'], zcat['TARGETID']))
    assert keys == [('main', 'bright', 5), ('main', 'dark', 5), ('main', 'dark', 6)]
    assert zcat['TILEID'].tolist() == [2, 1, 1]
    assert zcat['ZCAT_NSPEC'].tolist() == [2, 2, 1]
    assert zcat['ZCAT_PRIMARY'].tolist() == [True, False, True]


def primary(zcat, column='TILEID'):
    """`column` of the ZCAT_PRIMARY rows, in TARGETID order."""
    return np.asarray(zcat[column])[np.asarray(zcat['ZCAT_PRIMARY'])].tolist()


def test_tie_goes_to_first_file():
    # Equal DELTACHI2_RR and no bad bit: the row of the first catalogue given is primary.
    a = location_cat([7, 8], [3.0, 3.5], [40, 40], tileid=100)
    b = location_cat([7, 8], [3.1, 3.6], [40, 40], tileid=200)
    c = location_cat([8], [3.7], [40], tileid=300)
    assert primary(stack_catalogs([a, b, c])) == [100, 100]
    assert primary(stack_catalogs([b, a, c])) == [200, 200]
    zcat = stack_catalogs([c, b, a])
    assert zcat['TILEID'].tolist() == [200, 100, 300, 200, 100]    # file order within a target
    assert primary(zcat) == [200, 300] and primary(zcat, 'Z_LBG') == [3.1, 3.7]
    assert zcat['ZCAT_NSPEC'].tolist() == [2, 2, 3, 3, 3]


def test_redshift_bits_of_non_candidates_do_not_rank_repeats():
    """Z_OUT_OF_RANGE on a non-candidate (its Z_LBG means nothing) must not make a deeper
    spectrum lose to a shallower one; on a candidate it still does, as a bad spectrum
    bit does on any row."""
    deep_flag = LBGWarnMask().mask('Z_OUT_OF_RANGE')
    for is_lbg, kept in ((False, 100), (True, 200)):
        deep = location_cat([7], [6.46], [50], tileid=100, flag=[deep_flag], is_lbg=[is_lbg])
        shallow = location_cat([7], [3.0], [10], tileid=200, is_lbg=[True])
        assert primary(stack_catalogs([deep, shallow])) == [kept], is_lbg
    nodata = location_cat([7], [np.nan], [50], tileid=100, flag=[MASK.NODATA], is_lbg=[False])
    shallow = location_cat([7], [3.0], [10], tileid=200, is_lbg=[False])
    assert primary(stack_catalogs([nodata, shallow])) == [200]


def test_candidate_of_a_repeat_stays_in_the_stack():
    """A deep IS_LBG row flagged SMALL_DELTA_CHI2 beside a shallow non-candidate of the same
    survey/program: before, only the shallow row was kept, so the candidate vanished from
    the stack (and from any complete IS_LBG sample); now both rows stay and the unflagged
    one is primary."""
    deep = location_cat([7], [3.0], [50], tileid=100, flag=[MASK.SMALL_DELTA_CHI2], is_lbg=[True])
    shallow = location_cat([7], [np.nan], [10], tileid=200, is_lbg=[False])
    zcat = stack_catalogs([deep, shallow])
    assert zcat['IS_LBG'].tolist() == [True, False] and zcat['TILEID'].tolist() == [100, 200]
    assert primary(zcat) == [200] and not zcat['GOOD_LBG'].any()


def test_nspec_skips_rows_without_spectrum():
    # A NOT_IN_COADD row (Redrock target absent from the coadd) is no spectrum: not counted.
    notin = LBGWarnMask().mask('NOT_IN_COADD')
    a = location_cat([7, 8], [3.0, 3.5], [40, 40], tileid=100, flag=[0, notin])
    b = location_cat([7, 8], [3.1, 3.6], [40, 40], tileid=200, flag=[notin, notin])
    zcat = stack_catalogs([a, b])
    assert zcat['ZCAT_NSPEC'].tolist() == [1, 1, 0, 0]
    assert primary(zcat) == [100, 100]


def test_finite_deltachi2_beats_nan():
    # A row with a finite DELTACHI2_RR (even 0) is kept over one with NaN, in either file order.
    finite = location_cat([7, 8], [3.0, 3.5], [0.0, 25.0], tileid=100)
    nan = location_cat([7, 8], [3.1, 3.6], [np.nan, np.nan], tileid=200)
    for tables in ([finite, nan], [nan, finite]):
        zcat = stack_catalogs(tables)
        assert primary(zcat) == [100, 100]
        assert primary(zcat, 'DELTACHI2_RR') == [0.0, 25.0]
        assert zcat['ZCAT_NSPEC'].tolist() == [2, 2, 2, 2]


def test_is_lbg_without_redshift_is_not_good():
    # IS_LBG with NaN Z_LBG and a clean LBG_FLAG: not GOOD_LBG (a finite redshift is required).
    cat = location_cat([1, 2, 3, 4], [np.nan, 3.0, np.inf, 3.0], [5, 5, 5, 5],
                       is_lbg=[True, True, True, False])
    assert good_lbg(cat).tolist() == [False, True, False, False]
    assert stack_catalogs([cat])['GOOD_LBG'].tolist() == [False, True, False, False]


def test_good_lbg_uses_the_best_redshift():
    # Z and ZERR come from Z_TPL/ZERR_TPL where refined: a NaN ZERR_TPL (no chi2 minimum at
    # Z_TPL) is not GOOD_LBG, a finite one is; RERUN_FAILED does not veto (Z is not Z_NEW),
    # Z_OUT_OF_RANGE and SMALL_DELTA_CHI2 do
    cat = location_cat([1, 2, 3, 4, 5, 6], [3.0] * 6, [5] * 6,
                       flag=[0, 0, 0, MASK.RERUN_FAILED, MASK.Z_OUT_OF_RANGE,
                             MASK.SMALL_DELTA_CHI2])
    cat['Z_TPL'] = [3.01, 3.01, np.nan, 3.01, 3.01, 3.01]
    cat['ZERR_TPL'] = [2e-4, np.nan, np.nan, 2e-4, 2e-4, 2e-4]
    assert good_lbg(cat).tolist() == [True, False, True, True, False, False]
    zcat = stack_catalogs([cat])
    assert zcat['Z'].tolist() == [3.01, 3.01, 3.0, 3.01, 3.01, 3.01]
    assert zcat['ZERR'][2] == 1e-3 and np.isnan(zcat['ZERR'][1])
    assert zcat['GOOD_LBG'].tolist() == [True, False, True, True, False, False]


def test_zcat_primary_marks_one_row_per_target():
    # Target 5 in main/dark (deep), main/bright (shallow) and sv3/dark (flagged): the
    # main/dark row is primary; 6 only in main/dark; 7 in two programs with equal depth:
    # the first SURVEY/PROGRAM in sorted order (main/bright); 8: a bad bit loses to depth
    dark = location_cat([5, 6, 7, 8], [3.0, 3.2, 2.5, 2.9], [100, 10, 50, 900], program='dark')
    bright = location_cat([5, 7, 8], [3.0, 2.5, 2.9], [20, 50, 1], program='bright')
    sv3 = location_cat([5], [3.0], [900], survey='sv3', flag=[MASK.NODATA])
    dark['LBG_FLAG'][3] = MASK.LOW_COVERAGE
    zcat = stack_catalogs([dark, bright, sv3])
    keys = list(zip(zcat['SURVEY'], zcat['PROGRAM'], zcat['TARGETID'], zcat['ZCAT_PRIMARY']))
    assert keys == [('main', 'bright', 5, False), ('main', 'bright', 7, True),
                    ('main', 'bright', 8, True), ('main', 'dark', 5, True),
                    ('main', 'dark', 6, True), ('main', 'dark', 7, False),
                    ('main', 'dark', 8, False), ('sv3', 'dark', 5, False)]
    tid = np.asarray(zcat['TARGETID'])[zcat['ZCAT_PRIMARY']]
    assert sorted(tid.tolist()) == [5, 6, 7, 8]


def test_allow_mixed_fills_vector_columns_and_keeps_shared_provenance(tmp_path, caplog):
    """A --rerun-redrock catalogue (vector COEFF_NEW) beside a plain one: --allow-mixed fills
    the vector column with NaN cells of the same shape, and keywords every input shares
    stay in the header while the differing ones are dropped."""
    root = tmp_path / 'cats'
    coeff = np.arange(20, dtype=np.float64).reshape(2, 10)
    write_cat(str(root / 'a/lbg_cnn-main-dark-1.fits'), [1, 2], [1, 1], [3.0, 2.5], [0, 0], [1, 1],
              cards=[('RERUNRR', True, ''), ('LBGCONF', 'lbgnet-default', '')],
              extra={'Z_NEW': np.array([3.01, 2.51]), 'COEFF_NEW': coeff,
                     'ZWARN_NEW': np.array([0, 4], dtype=np.int64)})
    write_cat(str(root / 'b/lbg_cnn-main-dark-2.fits'), [3], [1], [3.2], [0], [1],
              cards=[('LBGCONF', 'lbgnet-default', '')])
    out = str(tmp_path / 'z.fits')
    with caplog.at_level(logging.INFO):
        assert main(['--input-dir', str(root), '--output', out]) == 1
    assert 'RERUNRR = False here, True in' in caplog.text and 'lbg_cnn-main-dark-2.fits' in caplog.text
    assert main(['--input-dir', str(root), '--output', out, '--allow-mixed']) == 0
    zcat, hdr = read_catalog(out, extname='LBG_ZCAT')
    rows = {t: i for i, t in enumerate(zcat['TARGETID'])}
    assert zcat['COEFF_NEW'].shape == (3, 10)
    np.testing.assert_array_equal(zcat['COEFF_NEW'][rows[2]], coeff[1])
    assert np.all(np.isnan(zcat['COEFF_NEW'][rows[3]]))
    # the plain catalogue's row was not rerun: Redrock's NODATA, as the afterburner writes,
    # so that ZWARN_NEW == 0 selects rerun rows only
    assert [zcat['ZWARN_NEW'][rows[t]] for t in (1, 2, 3)] == [0, 4, 512]
    assert hdr['LBGMSHA'] == 'abc' and hdr['LBGCONF'] == 'lbgnet-default'
    assert hdr['CTHRESH'] == 0.5 and 'RERUNRR' not in hdr


def test_refinement_template_and_error_calibration_must_agree(tmp_path, caplog):
    """Catalogues refined with templates of different content, or with other error
    calibrations, are refused (naming the keyword); --allow-mixed stacks them with a
    warning; the shared template hash reaches the stacked header."""
    for name, cards in (('tsha', [('REFTSHA', 'aaa', ''), ('REFTSHA', 'bbb', '')]),
                        ('rrtsha', [('RRTSHA', 'aaa', ''), ('RRTSHA', 'bbb', '')]),
                        ('zerr', [('ZERRSCL', 4.3, ''), ('ZERRSCL', 1.5, '')]),
                        ('ztpl', [('ZTPLFLR', 2e-4, ''), ('ZTPLFLR', 1e-4, '')])):
        root = tmp_path / name
        for i, card in enumerate(cards):
            write_cat(str(root / f'lbg_cnn-main-dark-{i}.fits'), [i], [1], [3.0], [0], [1],
                      [('REFINE', True, ''), card])
        key = cards[0][0]
        with caplog.at_level(logging.INFO):
            caplog.clear()
            assert main(['--input-dir', str(root), '--output', str(tmp_path / f'{name}.fits')]) == 1
            assert f'{key} = ' in caplog.text and 'older lbgnet' not in caplog.text
            caplog.clear()
            assert main(['--input-dir', str(root), '--output', str(tmp_path / f'{name}-m.fits'),
                         '--allow-mixed']) == 0
            assert 'WARNING' in caplog.text and key in caplog.text
        _, hdr = read_catalog(str(tmp_path / f'{name}-m.fits'), extname='LBG_ZCAT')
        assert key not in hdr
    root = tmp_path / 'same'
    for i in range(2):
        write_cat(str(root / f'lbg_cnn-main-dark-{i}.fits'), [i], [1], [3.0], [0], [1],
                  [('REFINE', True, ''), ('REFTSHA', 'aaa', ''), ('LBGBIT07', 'SMALL_DELTA_CHI2', '')])
    out = str(tmp_path / 'same.fits')
    assert main(['--input-dir', str(root), '--output', out]) == 0
    _, hdr = read_catalog(out, extname='LBG_ZCAT')
    assert hdr['REFTSHA'] == 'aaa' and hdr['LBGBIT07'] == 'SMALL_DELTA_CHI2'


def test_every_unreadable_catalogue_is_named(tmp_path, caplog):
    root = tmp_path / 'cats'
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [1])
    for i in (2, 3):
        (root / f'lbg_cnn-main-dark-{i}.fits').write_bytes(b'not a FITS file')
    out = str(tmp_path / 'z.fits')
    with caplog.at_level(logging.INFO):
        assert main(['--input-dir', str(root), '--output', out]) == 1
    assert not os.path.exists(out)
    for i in (2, 3):
        assert f'lbg_cnn-main-dark-{i}.fits: ' in caplog.text
    assert '2 of 3 catalogues: refused (listed above); nothing is stacked' in caplog.text


def test_symlinked_catalogue_directories_are_stacked(tmp_path):
    """A production tree assembled from symlinks (a subset of pixels) is searched in full."""
    real = tmp_path / 'real'
    write_cat(str(real / 'p1' / 'lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [1])
    write_cat(str(real / 'p2' / 'lbg_cnn-main-dark-2.fits'), [2], [1], [3.1], [0], [1])
    farm = tmp_path / 'farm'
    (farm / 'healpix').mkdir(parents=True)
    os.symlink(real / 'p1', farm / 'healpix' / 'p1')
    os.symlink(real / 'p2', farm / 'healpix' / 'p2')
    os.symlink(real / 'p2', farm / 'healpix' / 'again')           # same directory twice
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(farm), '--output', out]) == 0
    zcat, hdr = read_catalog(out, extname='LBG_ZCAT')
    assert zcat['TARGETID'].tolist() == [1, 2] and hdr['NINPUT'] == 2


def test_catalogues_of_an_older_lbgnet(tmp_path, caplog):
    """A catalogue without the error-calibration keywords holds uncalibrated errors: it
    stacks with a new uncalibrated one, and is refused beside a calibrated one with a
    message saying to re-run it."""
    root = tmp_path / 'plain'
    write_cat(str(root / 'lbg_cnn-main-dark-0.fits'), [0], [1], [3.0], [0], [1])
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [1],
              [('ZERRSCL', 1.0, ''), ('ZERRFLR', 0.0, '')])
    assert main(['--input-dir', str(root), '--output', str(tmp_path / 'p.fits')]) == 0
    _, hdr = read_catalog(str(tmp_path / 'p.fits'), extname='LBG_ZCAT')
    assert hdr['ZERRSCL'] == 1.0                  # recorded by one input, implied by the other
    root = tmp_path / 'calibrated'
    write_cat(str(root / 'lbg_cnn-main-dark-0.fits'), [0], [1], [3.0], [0], [1])
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [1],
              [('ZERRSCL', 4.3, ''), ('ZERRFLR', 0.0, '')])
    with caplog.at_level(logging.INFO):
        assert main(['--input-dir', str(root), '--output', str(tmp_path / 'c.fits')]) == 1
    assert 'ZERRSCL absent from' in caplog.text and '(taken as 1.0), 4.3 here' in caplog.text
    assert 'older lbgnet' in caplog.text
    # a new TSNR2_LRG column is no reason to refuse an otherwise equal older catalogue
    root = tmp_path / 'tsnr2'
    write_cat(str(root / 'lbg_cnn-main-dark-0.fits'), [0], [1], [3.0], [0], [1])
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [1],
              extra={'TSNR2_LRG': np.array([50.0])})
    assert main(['--input-dir', str(root), '--output', str(tmp_path / 't.fits')]) == 0
    zcat, hdr = read_catalog(str(tmp_path / 't.fits'), extname='LBG_ZCAT')
    assert np.isnan(zcat['TSNR2_LRG'][0]) and zcat['TSNR2_LRG'][1] == 50.0
    assert 'ZERRSCL' not in hdr                   # no input recorded it: not written as common


def test_tile_program_from_faprgrm(tmp_path):
    """A tile catalogue whose header has the fiberassign FAPRGRM but no PROGRAM gets its
    program from it (de-duplication against healpix rows works per program); PROGRAM wins
    when both are there."""
    root = tmp_path / 'tiles'
    write_cat(str(root / '1/lbg_cnn-0-1-thru20210101.fits'), [7], [1], [3.0], [0], [9],
              [('SURVEY', 'main', ''), ('FAPRGRM', 'DARK', '')])
    write_cat(str(root / '2/lbg_cnn-0-2-thru20210101.fits'), [8], [1], [3.0], [0], [9],
              [('SURVEY', 'main', ''), ('FAPRGRM', 'dark1b', ''), ('PROGRAM', 'dark', '')])
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(root), '--output', out]) == 0
    zcat, _ = read_catalog(out, extname='LBG_ZCAT')
    assert zcat['PROGRAM'].tolist() == ['dark', 'dark']
    # SPGRPVAL of the header wins over the file name's night; one it cannot use (text, or
    # beyond int32; an int16 PETAL beyond its range) leaves the file name's, not a crash
    write_cat(str(root / '1/lbg_cnn-0-1-thru20210101.fits'), [7], [1], [3.0], [0], [9],
              [('SURVEY', 'main', ''), ('FAPRGRM', 'DARK', ''), ('SPGRPVAL', 20210105, '')])
    write_cat(str(root / '2/lbg_cnn-0-2-thru20210101.fits'), [8], [1], [3.0], [0], [9],
              [('SURVEY', 'main', ''), ('PROGRAM', 'dark', ''), ('SPGRPVAL', 'x', '')])
    write_cat(str(root / '3/lbg_cnn-0-3-thru20210102.fits'), [9], [1], [3.0], [0], [9],
              [('SURVEY', 'main', ''), ('PROGRAM', 'dark', ''), ('SPGRPVAL', 2 ** 40, ''),
               ('PETAL', 40000, '')])
    assert main(['--input-dir', str(root), '--output', out, '--overwrite']) == 0
    zcat = read_catalog(out, extname='LBG_ZCAT')[0]
    assert zcat['SPGRPVAL'].tolist() == [20210105, 20210101, 20210102]
    assert zcat['PETAL'].tolist() == [0, 0, 0]


def test_no_refine_beside_refined_names_refine_only(tmp_path, caplog):
    """A --no-refine catalogue lacks the refinement keywords because of REFINE = F: the
    message names REFINE, not each missing keyword, and does not blame an older lbgnet."""
    root = tmp_path / 'mixed'
    write_cat(str(root / 'lbg_cnn-main-dark-0.fits'), [0], [1], [3.0], [0], [1],
              [('REFINE', True, ''), ('REFTSHA', 'aaa', ''), ('REFWGT', 3.0, ''),
               ('MINDCHI2', 9.0, '')])
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [1],
              [('REFINE', False, '')])
    with caplog.at_level(logging.INFO):
        assert main(['--input-dir', str(root), '--output', str(tmp_path / 'z.fits')]) == 1
    assert 'REFINE = False here, True in' in caplog.text
    assert 'REFTSHA' not in caplog.text and 'older lbgnet' not in caplog.text


def test_deepest_spectrum_by_tsnr2_before_deltachi2(tmp_path):
    """Repeated targets: unflagged first, then the largest TSNR2_LRG (desispec's choice),
    then DELTACHI2_RR; TSNR2_LRG NaN (no SCORES) counts as the shallowest."""
    root = tmp_path / 'tiles'
    cards = [('SURVEY', 'main', ''), ('PROGRAM', 'dark', '')]
    write_cat(str(root / '1/lbg_cnn-0-1-thru20210101.fits'), [7, 8, 9], [1, 1, 1],
              [3.0, 3.5, 2.5], [0, 0, MASK.SMALL_DELTA_CHI2], [900, 10, 5], cards,
              extra={'TSNR2_LRG': np.array([100.0, np.nan, 900.0])})
    write_cat(str(root / '2/lbg_cnn-1-2-thru20210102.fits'), [7, 8, 9], [1, 1, 1],
              [3.1, 3.6, 2.6], [0, 0, 0], [10, 900, 1], cards,
              extra={'TSNR2_LRG': np.array([200.0, 50.0, 10.0])})
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(root), '--output', out]) == 0
    zcat, _ = read_catalog(out, extname='LBG_ZCAT')
    assert zcat['TARGETID'].tolist() == [7, 7, 8, 8, 9, 9]
    # 7: deeper (TSNR2) despite the smaller DELTACHI2_RR; 8: NaN TSNR2 loses;
    # 9: the unflagged row although it is the shallower
    assert primary(zcat, 'Z_LBG') == [3.1, 3.6, 2.6]


def test_column_difference_names_a_file(tmp_path):
    """Catalogues that differ in a column (not target bits, not TSNR2_LRG) are refused with
    the column and a file that lacks it."""
    from lbgnet.zcatalog import unify_columns
    a = Table({'TARGETID': [1], 'Z_NEW': [3.0]})
    b = Table({'TARGETID': [2]})
    with pytest.raises(ValueError, match=r'Z_NEW absent from b\.fits'):
        unify_columns([a, b], sources=['a.fits', 'b.fits'])
    c = Table({'TARGETID': [3], 'TSNR2_LRG': [9.0]})
    out = unify_columns([b, c])
    assert np.isnan(out[0]['TSNR2_LRG'][0])


def test_unreadable_catalogues_are_named_also_after_a_setting_mismatch(tmp_path, caplog):
    root = tmp_path / 'cats'
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [1])
    write_cat(str(root / 'lbg_cnn-main-dark-2.fits'), [2], [1], [3.0], [0], [1], sha='other')
    (root / 'lbg_cnn-main-dark-3.fits').write_bytes(b'not a FITS file')
    with caplog.at_level(logging.INFO):
        assert main(['--input-dir', str(root), '--output', str(tmp_path / 'z.fits')]) == 1
    assert 'LBGMSHA = ' in caplog.text and 'lbg_cnn-main-dark-3.fits: ' in caplog.text


def test_best_redshift_prefers_the_refined_one():
    from lbgnet.zcatalog import best_redshift
    t = Table({'Z_LBG': [3.0, 2.5, np.nan], 'ZERR_LBG': [1e-3, 2e-3, np.nan],
               'Z_TPL': [3.01, np.nan, np.nan], 'ZERR_TPL': [1e-4, np.nan, np.nan]})
    z, zerr = best_redshift(t)
    assert z[:2].tolist() == [3.01, 2.5] and zerr[:2].tolist() == [1e-4, 2e-3]
    assert np.isnan(z[2]) and np.isnan(zerr[2])
    z, zerr = best_redshift(t['Z_LBG', 'ZERR_LBG'])         # a catalogue made with --no-refine
    assert z[:2].tolist() == [3.0, 2.5]
    # a masked Z_TPL (e.g. a table read with astropy's masking) is not refined, whatever
    # value lies under the mask
    from astropy.table import MaskedColumn
    t['Z_TPL'] = MaskedColumn([3.01, 0.0, 0.0], mask=[False, True, True])
    t['ZERR_TPL'] = MaskedColumn([1e-4, 0.0, 0.0], mask=[False, True, True])
    z, zerr = best_redshift(t)
    assert z[:2].tolist() == [3.01, 2.5] and zerr[:2].tolist() == [1e-4, 2e-3]


@pytest.mark.parametrize('allow_mixed', [False, True])
def test_catalogue_without_a_required_column_is_named(tmp_path, caplog, allow_mixed):
    """A file without TARGETID (or another core column) is refused, never filled: a filled
    TARGETID merged all its rows into one under --allow-mixed."""
    from fitsio import FITS
    root = tmp_path / 'cats'
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1, 2], [1, 1], [3.0, 3.1], [0, 0], [5, 5])
    write_cat(str(root / 'lbg_cnn-main-dark-2.fits'), [21, 22, 23], [1, 1, 1], [3.0, 3.1, 3.2],
              [0, 0, 0], [5, 5, 5])
    bad = str(root / 'lbg_cnn-main-dark-2.fits')
    table, header = read_catalog(bad)
    del table['TARGETID']
    os.remove(bad)
    with FITS(bad, 'rw') as fx:
        fx.write(None, header=[{'name': k, 'value': v} for k, v in header.items()
                               if k not in ('SIMPLE', 'BITPIX', 'NAXIS', 'EXTEND')])
        fx.write(table.as_array(), extname='LBG_CNN')
    out = str(tmp_path / 'z.fits')
    options = ['--input-dir', str(root), '--output', out] + (['--allow-mixed'] if allow_mixed else [])
    with caplog.at_level(logging.INFO):
        assert main(options) == 1
    assert not os.path.exists(out)
    assert 'lbg_cnn-main-dark-2.fits: not an lbgnet catalogue: no TARGETID column' in caplog.text


def test_damaged_header_card_is_one_line_and_others_are_read(tmp_path, caplog):
    root = tmp_path / 'cats'
    for i in (1, 2, 3):
        write_cat(str(root / f'lbg_cnn-main-dark-{i}.fits'), [i], [1], [3.0], [0], [1])
    path = root / 'lbg_cnn-main-dark-2.fits'
    raw = bytearray(path.read_bytes())
    card = raw.find(b"TTYPE5  = 'LBG_FLAG'")
    assert card > 0
    raw[card + 20] ^= 0x5A                            # garbage right after the closing quote
    path.write_bytes(bytes(raw))
    (root / 'lbg_cnn-main-dark-3.fits').write_bytes(b'not a FITS file')
    out = str(tmp_path / 'z.fits')
    with caplog.at_level(logging.INFO):
        assert main(['--input-dir', str(root), '--output', out]) == 1
    assert 'lbg_cnn-main-dark-2.fits: damaged LBG_CNN HDU' in caplog.text
    assert 'lbg_cnn-main-dark-3.fits: ' in caplog.text and 'Traceback' not in caplog.text
    assert '2 of 3 catalogues: refused (listed above); nothing is stacked' in caplog.text


def test_text_and_number_column_clash_names_the_files():
    from lbgnet.zcatalog import check_column_kinds
    a = Table({'TARGETID': [1], 'SPECTYPE_RR': ['GALAXY']})
    b = Table({'TARGETID': [2], 'SPECTYPE_RR': [1.0]})
    with pytest.raises(ValueError, match=r'SPECTYPE_RR holds numbers in b\.fits but text in a\.fits'):
        check_column_kinds([a, b], ['a.fits', 'b.fits'])
    check_column_kinds([a, Table({'TARGETID': [3], 'SPECTYPE_RR': ['QSO']})])


def test_unsigned_and_float_targetids(tmp_path, caplog):
    """A catalogue with uint64 TARGETIDs stacks with int64 ones without merging targets
    beyond 2**53 (numpy would compare them in float64); a float TARGETID column is refused
    with the file named."""
    root = tmp_path / 'cats'
    big = 39633000000000001
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [big], [1], [3.0], [0], [5])
    path2 = str(root / 'lbg_cnn-main-dark-2.fits')
    write_cat(path2, [big + 1], [1], [3.2], [0], [5], tid_dtype=np.uint64)
    assert read_catalog(path2)[0]['TARGETID'].dtype == np.uint64
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(root), '--output', out]) == 0
    zcat, _ = read_catalog(out, extname='LBG_ZCAT')
    assert zcat['TARGETID'].dtype.kind == 'i' and zcat['TARGETID'].dtype.itemsize == 8
    assert zcat['TARGETID'].tolist() == [big, big + 1]
    assert zcat['ZCAT_NSPEC'].tolist() == [1, 1]
    write_cat(path2, [big + 1], [1], [3.2], [0], [5], tid_dtype=np.float64)
    with caplog.at_level(logging.ERROR):
        assert main(['--input-dir', str(root), '--output', out, '--overwrite']) == 1
    assert 'lbg_cnn-main-dark-2.fits' in caplog.text and 'TARGETID must be an integer' in caplog.text


def test_stacked_header_keeps_the_bit_meanings(tmp_path):
    """The stacked file's LBGBITnn cards keep each bit's meaning, whole (they said 'common
    to all inputs'; two per-file comments were cut mid-word), and its TARGETID column is
    not described as in Redrock's row order (the stack is sorted)."""
    from astropy.io import fits
    root = tmp_path / 'cats'
    bits = MASK.header_cards()
    for i in (1, 2):
        write_cat(str(root / f'lbg_cnn-main-dark-{i}.fits'), [i], [1], [3.0], [0], [5], cards=bits)
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(root), '--output', out]) == 0
    header = fits.getheader(out, 'LBG_ZCAT')
    for key, name, comment in bits:
        assert header[key] == name and header.comments[key] == comment == MASK.comment(name)
    assert header.comments['TTYPE1'] == 'DESI target id'


def test_rerun_beside_plain_names_rerunrr_only(tmp_path, caplog):
    """A catalogue made without --rerun-redrock has no rerun template (RRTSHA): the message
    names RERUNRR and does not send the user to rerun an 'older lbgnet'."""
    root = tmp_path / 'mixed'
    write_cat(str(root / 'lbg_cnn-main-dark-0.fits'), [0], [1], [3.0], [0], [1])
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [1],
              [('RERUNRR', True, ''), ('RRTSHA', 'bbb', '')], extra={'Z_NEW': np.array([3.0])})
    with caplog.at_level(logging.INFO):
        assert main(['--input-dir', str(root), '--output', str(tmp_path / 'z.fits')]) == 1
    assert 'RERUNRR = True here, False in' in caplog.text
    assert 'RRTSHA' not in caplog.text and 'older lbgnet' not in caplog.text


def test_empty_catalogue_keeps_its_grouping_in_the_header(tmp_path):
    from astropy.io import fits
    root = tmp_path / 'healpix'
    write_cat(str(root / 'lbg_cnn-main-dark-7.fits'), [], [], [], [], [],
              [('SPGRP', 'healpix', '')])
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(root), '--output', out]) == 0
    header = fits.getheader(out, 'LBG_ZCAT')
    assert header['NINPUT'] == 1 and header['SPGRP'] == 'healpix'


def test_vector_column_of_another_length_names_column_and_files():
    from lbgnet.zcatalog import check_column_kinds
    a = Table({'TARGETID': [1], 'COEFF_NEW': np.zeros((1, 10))})
    b = Table({'TARGETID': [2], 'COEFF_NEW': np.zeros((1, 5))})
    with pytest.raises(ValueError, match=r'COEFF_NEW has entries of shape \(5,\) in b\.fits '
                       r'but \(10,\) in a\.fits'):
        check_column_kinds([a, b], ['a.fits', 'b.fits'])
    check_column_kinds([a, Table({'TARGETID': [3, 4], 'COEFF_NEW': np.ones((2, 10))})])


def test_empty_output_name_is_refused_before_reading(tree, caplog):
    with caplog.at_level(logging.ERROR):
        assert main(['--input-dir', str(tree), '--output', '']) == 1
    assert '--output: empty file name' in caplog.text


def test_values_equal_to_rounding_are_kept_in_the_stacked_header(tmp_path):
    """A threshold given on the command line with fewer digits than the model's stacks
    without a warning, and the stacked header keeps it (it was dropped)."""
    from astropy.io import fits
    root = tmp_path / 'cats'
    write_cat(str(root / 'lbg_cnn-main-dark-0.fits'), [0], [1], [3.0], [0], [1],
              [('CTHRESH', 0.9117409288883209, '')])
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [1],
              [('CTHRESH', 0.9117409288883, '')])
    out = str(tmp_path / 'z.fits')
    assert main(['--input-dir', str(root), '--output', out]) == 0
    assert abs(fits.getheader(out, 'LBG_ZCAT')['CTHRESH'] - 0.91174092888832) < 1e-12


def test_output_checked_before_reading(tmp_path, caplog):
    """--overwrite never replaces an input catalogue, a stacked catalogue is never named
    like an afterburner one (a later --input-dir run would stack it), and an unwritable
    --output fails before any catalogue is read."""
    root = tmp_path / 'cats'
    first, other = str(tmp_path / 'a.fits'), str(tmp_path / 'z.fits')     # --catalogs: any name
    write_cat(first, [1], [1], [3.0], [0], [5])
    write_cat(other, [2], [1], [3.0], [0], [5])
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(['--catalogs', first, other, '--output', other, '--overwrite']) == 1
    assert 'is an input file; refusing to overwrite it' in caplog.text
    assert read_catalog(other)[0]['TARGETID'].tolist() == [2]          # untouched
    write_cat(str(root / 'lbg_cnn-main-dark-1.fits'), [1], [1], [3.0], [0], [5])
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(['--input-dir', str(root), '--output', str(root / 'lbg_cnn-all.fits')]) == 1
    assert 'named like an afterburner catalogue' in caplog.text
    assert not os.path.exists(root / 'lbg_cnn-all.fits')
    with open(root / 'lbg_cnn-main-dark-2.fits', 'w') as fx:       # would be reported if read
        fx.write('not FITS')
    afile = tmp_path / 'afile'
    afile.write_text('x')
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(['--input-dir', str(root), '--output', str(afile / 'z.fits')]) == 1
    assert 'is not a directory' in caplog.text and 'lbg_cnn-main-dark-2' not in caplog.text


def test_catalogues_of_one_tile_petal_or_pixel_are_refused(tmp_path, caplog):
    """Two cumulative coadds of one tile and petal (the later holds the exposures of the
    earlier), or two catalogues of one healpix pixel: stacking them counted a target's
    spectra twice (ZCAT_NSPEC 2).  Other tiles, petals or pixels are real repeats."""
    cards = [('SURVEY', 'main', ''), ('PROGRAM', 'dark', '')]
    root = tmp_path / 'tiles'
    write_cat(str(root / '1000/20210101/lbg_cnn-3-1000-thru20210101.fits'), [7], [1], [3.0],
              [0], [10], cards)
    write_cat(str(root / '1000/20210105/lbg_cnn-3-1000-thru20210105.fits'), [7], [1], [3.0],
              [0], [20], cards)
    write_cat(str(root / '1001/20210105/lbg_cnn-3-1001-thru20210105.fits'), [7], [1], [3.0],
              [0], [20], cards)
    out = str(tmp_path / 'z.fits')
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(['--input-dir', str(root), '--output', out]) == 1
    assert 'lbg_cnn-3-1000-thru20210105.fits: holds the spectra of' in caplog.text
    assert '(cumulative coadd of tile 1000 petal 3)' in caplog.text
    assert 'thru20210101.fits' in caplog.text and 'lbg_cnn-3-1001' not in caplog.text
    os.remove(root / '1000/20210101/lbg_cnn-3-1000-thru20210101.fits')
    assert main(['--input-dir', str(root), '--output', out]) == 0
    assert read_catalog(out, extname='LBG_ZCAT')[0]['ZCAT_NSPEC'].tolist() == [2, 2]
    # pernight coadds of one tile and petal on different nights are different spectra
    night = tmp_path / 'pernight'
    for n in ('20210101', '20210102'):
        write_cat(str(night / f'1000/{n}/lbg_cnn-3-1000-{n}.fits'), [7], [1], [3.0], [0], [10],
                  cards)
    assert main(['--input-dir', str(night), '--output', out, '--overwrite']) == 0
    # one healpix pixel twice (two reductions mixed)
    hpx = tmp_path / 'hpx'
    for sub in ('a', 'b'):
        write_cat(str(hpx / sub / 'lbg_cnn-main-dark-100.fits'), [7], [1], [3.0], [0], [10],
                  cards)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(['--input-dir', str(hpx), '--output', out, '--overwrite']) == 1
    assert '(healpix main/dark pixel 100)' in caplog.text


def test_spectra_key_needs_a_known_location():
    """Only a complete location names a coadd: a -1 tile or pixel (unknown) never makes two
    catalogues 'the same spectra'; a blank SURVEY becomes 'unknown' in the columns."""
    from lbgnet.zcatalog import spectra_key
    assert spectra_key({'TILEID': 1000, 'PETAL': 3}, 'cumulative') == ('cumulative', 1000, 3)
    assert spectra_key({'TILEID': -1, 'PETAL': 3}, 'cumulative') is None
    assert spectra_key({'SURVEY': 'main', 'PROGRAM': 'dark', 'HPXPIXEL': -1}, 'healpix') is None
    assert spectra_key({'SURVEY': 'main', 'PROGRAM': '', 'HPXPIXEL': 5}, 'healpix') is None
    assert spectra_key({'TILEID': 1000, 'PETAL': 3}, 'pernight') is None     # no night
    assert spectra_key({'TILEID': 1000, 'PETAL': 3}, 'unknown') is None
    cat = add_location(Table(dict(TARGETID=np.array([1]))), {'SURVEY': '', 'TILEID': None})
    assert cat['SURVEY'][0] == 'unknown' and cat['TILEID'][0] == -1
    from lbgnet.zcatalog import usable_location
    assert usable_location({'TILEID': 1.7, 'PETAL': True, 'HPXPIXEL': float('inf'),
                            'SPGRPVAL': '20210101', 'SURVEY': ' main '}) == \
        {'SPGRPVAL': 20210101, 'SURVEY': 'main'}
    # a value at its column's limits fits (PETAL is int16); one past them does not
    assert usable_location({'PETAL': 32767}) == {'PETAL': 32767}
    assert usable_location({'PETAL': -32768}) == {'PETAL': -32768}
    assert usable_location({'PETAL': 32768}) == {} and usable_location({'PETAL': -32769}) == {}


def test_unsigned_flags_stack_as_int32():
    """An LBG_FLAG stored unsigned (uint64) beside int32 ones stacked as float64, bit mask
    lost; now every catalogue's LBG_FLAG is int32, and values beyond 32 bits are refused."""
    def located(tid, flag_dtype, flag=0):
        tab = Table(dict(TARGETID=np.array([tid]), IS_LBG=np.array([True]),
                         Z_LBG=np.array([3.0]), ZERR_LBG=np.array([1e-3]),
                         LBG_FLAG=np.array([flag], dtype=flag_dtype),
                         DELTACHI2_RR=np.array([1.0])))
        tab['LBG_FLAG'].description = 'warning bits'
        return add_location(tab, dict(SURVEY='main', PROGRAM='dark', TILEID=tid,
                                      SPGRP='cumulative'))
    unsigned = located(2, np.uint64, MASK.SMALL_DELTA_CHI2)
    zcat = stack_catalogs([located(1, np.int32), unsigned])
    assert zcat['LBG_FLAG'].dtype == np.int32
    assert zcat['LBG_FLAG'].tolist() == [0, MASK.SMALL_DELTA_CHI2]
    assert zcat['LBG_FLAG'].description == 'warning bits'
    assert unsigned['LBG_FLAG'].dtype == np.uint64       # the input is not changed
    with pytest.raises(ValueError, match=r'b.fits: LBG_FLAG holds values beyond 32 bits'):
        stack_catalogs([located(1, np.int32), located(2, np.uint64, 2 ** 40)],
                       sources=['a.fits', 'b.fits'])


def test_stack_catalogs_consumes_its_list_only_when_asked():
    """desi_lbg_zcatalog held every per-file table while the stacked one was sorted and
    completed: with consume=True the list is emptied once its rows are stacked."""
    tables = [location_cat([5, 6], [3.0, 3.2], [10, 10], program='dark', tileid=1),
              location_cat([7], [2.5], [10], program='dark', tileid=2)]
    kept = stack_catalogs(tables)
    assert len(tables) == 2
    consumed = stack_catalogs(tables, consume=True)
    assert tables == [] and len(consumed) == len(kept) == 3
    assert list(consumed['TARGETID']) == list(kept['TARGETID'])
