"""Tests of the mock files: lbgnet.sim.mock, lbgnet.sim.rrmock, lbgnet.io.mock, desi_lbg_mock."""
import glob
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from lbgnet.io import read_coadd, read_redrock
from lbgnet.io.errors import InputFileError
from lbgnet.io.mock import check_truth_matches, mock_keywords, read_truth, truth_checksum, write_mock
from lbgnet.scripts.lbg_mock import main, parse
from lbgnet.sim.mock import load_mock_setup, make_mock, simulator_hash
from lbgnet.sim.rrmock import LYA_WAVE, OII_WAVE, ZWARN_BITS, simulate_redrock


@pytest.fixture(scope='module')
def setup():
    return load_mock_setup()


@pytest.fixture(scope='module')
def mock(setup):
    return make_mock(setup, 40, np.random.default_rng(11), pixel=1234)


def test_make_mock_is_deterministic(setup, mock):
    again = make_mock(setup, 40, np.random.default_rng(11), pixel=1234)
    other = make_mock(setup, 40, np.random.default_rng(12), pixel=1234)
    for band in mock.flux:
        assert np.array_equal(mock.flux[band], again.flux[band])
        assert np.array_equal(mock.ivar[band], again.ivar[band])
        assert not np.array_equal(mock.flux[band], other.flux[band])
    assert np.array_equal(mock.redshifts['Z'], again.redshifts['Z'])
    assert np.array_equal(mock.truth['Z_TRUE'], again.truth['Z_TRUE'])


def test_mock_tables_are_consistent(setup, mock):
    import healpy
    from desitarget.targets import decode_targetid
    tid = np.asarray(mock.truth['TARGETID'])
    assert np.unique(tid).size == tid.size
    for table in (mock.fibermap, mock.scores, mock.redshifts):
        assert np.array_equal(np.asarray(table['TARGETID']), tid)
    objid, brickid, release, mockbit = decode_targetid(tid)[:4]
    assert np.all(mockbit == 1) and np.all(brickid == 1234) and np.all(release == 9999)
    pix = healpy.ang2pix(64, mock.fibermap['TARGET_RA'], mock.fibermap['TARGET_DEC'],
                         nest=True, lonlat=True)
    assert np.all(pix == 1234)
    assert mock.fibermap['COADD_NUMEXP'].sum() == len(mock.exp_fibermap)
    assert set(mock.exp_fibermap['TARGETID']) == set(tid)
    # COADD_NUMNIGHT counts the distinct nights of each target's exposures, as desispec's
    # coadd derives it; the nights are valid dates
    ex = mock.exp_fibermap
    nights = {t: len(set(ex['NIGHT'][ex['TARGETID'] == t])) for t in tid}
    assert [nights[t] for t in tid] == list(mock.fibermap['COADD_NUMNIGHT'])
    from lbgnet.sim.fibermap import make_exp_fibermap
    one = mock.fibermap[:1].copy()
    one['COADD_NUMEXP'] = 100                          # past the end of a month
    many = make_exp_fibermap(one, 1)
    assert many['NIGHT'][-1] == 20230203 and many['NIGHT'][3] == 20230102
    # FLUX_R (nanomaggies) is the truth r magnitude
    np.testing.assert_allclose(22.5 - 2.5 * np.log10(mock.fibermap['FLUX_R']), mock.truth['RMAG'],
                               atol=1e-4)
    assert all(c in mock.scores.colnames for c in ('TSNR2_LRG', 'TSNR2_ELG', 'TSNR2_LYA',
                                                   'MEDIAN_COADD_SNR_B'))
    # TSNR2 ∝ EFFTIME, 0 without any pixel of data (desispec sums over ivar > 0)
    live = sum(np.any(mock.ivar[b] > 0, axis=1) for b in mock.ivar) > 0
    np.testing.assert_allclose(mock.scores['TSNR2_ELG'],
                               0.1163 * mock.truth['EFFTIME'] * live, rtol=1e-5)
    lo, hi = setup.config.extra['mock']['efftime_range']
    assert np.all((mock.truth['EFFTIME'] >= lo) & (mock.truth['EFFTIME'] <= hi))
    # noiseless model + noise: the residual scatter is close to the pipeline σ
    chi = (mock.flux['r'] - mock.model['r']) * np.sqrt(mock.ivar['r'])
    live = mock.ivar['r'] > 0
    assert 0.9 < np.std(chi[live]) < 1.3


def test_dead_fibres_have_no_data_and_nodata_zwarn(setup):
    from desispec.maskbits import fibermask
    mock = make_mock(setup, 400, np.random.default_rng(3), pixel=77, with_resolution=False)
    status = np.asarray(mock.fibermap['COADD_FIBERSTATUS'])
    dead = (status & fibermask.BROKENFIBER) != 0
    assert 2 <= dead.sum() <= 40                                      # 4% of 400
    for band in mock.ivar:
        assert np.all(mock.ivar[band][dead] == 0) and np.all(mock.mask[band][dead] != 0)
        assert np.all(mock.ivar[band][~dead & (status == 0)] > 0)
    zwarn = np.asarray(mock.redshifts['ZWARN'])
    assert np.all(zwarn[dead] & ZWARN_BITS['NODATA'])
    assert np.all(mock.redshifts['NPIXELS'][dead] == 0)
    badamp = (status & ~fibermask.BROKENFIBER) != 0
    assert np.all(zwarn[badamp] & ZWARN_BITS['LITTLE_COVERAGE'])


def test_simulator_hash(setup):
    import copy
    import dataclasses
    base = simulator_hash(setup)
    assert len(base) == 16 and simulator_hash(load_mock_setup()) == base
    for path, value in ((('simulation', 'lbg', 'zrange'), [2.0, 3.0]),
                        (('simulation', 'class_fractions'), {'LBG': 1.0}),
                        (('mock', 'efftime_range'), [100.0, 200.0]),
                        (('simulation', 'lbg', 'sigma_ism'), 300.0),
                        (('instrument', 'noise', 'efftime_ref'), 1000.0)):
        other = dataclasses.replace(setup, simcfg=copy.deepcopy(setup.simcfg))
        node = other.simcfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        sampling = path[-1] in ('zrange', 'class_fractions', 'efftime_range')
        assert (simulator_hash(other) == base) == sampling, path
    # the content of the empirical inputs and of a non-default sky-line spectrum counts
    from lbgnet.io.templates import RRTemplate, SimTemplates
    wave = np.linspace(1000.0, 2000.0, 5)
    comp = SimTemplates(lbg_composite=(wave, np.ones(5)))
    rr = SimTemplates(lbg_composite=(wave, np.ones(5)),
                      rr={'QSO-HIZ': RRTemplate('QSO', 'HIZ', wave, np.ones((2, 5)), None, 'x',
                                                'PCA')})
    hashes = {simulator_hash(dataclasses.replace(setup, templates=t)) for t in (comp, rr)}
    hashes.add(simulator_hash(dataclasses.replace(setup, sky_lines='0123abcd')))
    assert len(hashes | {base}) == 4
    from lbgnet.io.skymodel import sky_lines_path
    if sky_lines_path() is not None:           # the default spectrum given by name: same
        assert simulator_hash(load_mock_setup(sky_lines=sky_lines_path())) == base


def test_files_round_trip(tmp_path, setup, mock):
    from desispec.io import read_spectra
    paths = write_mock(str(tmp_path), mock, 'lbgnet-mock.yaml')
    assert sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / '*'))) == sorted(
        os.path.basename(p) for p in paths.values())                 # no temporary files left
    spec = read_spectra(paths['coadd'])
    assert spec.flux['b'].shape == mock.flux['b'].shape
    assert spec.resolution_data['z'].shape == (40, 11, mock.wave['z'].size)
    np.testing.assert_array_equal(spec.fibermap['TARGETID'], mock.truth['TARGETID'])
    assert spec.exp_fibermap is not None and 'TSNR2_QSO' in spec.scores.colnames
    coadd = read_coadd(paths['coadd'])
    np.testing.assert_array_equal(coadd.flux['r'], mock.flux['r'])
    rr = read_redrock(paths['redrock'])
    np.testing.assert_array_equal(rr.targetid, coadd.targetid)    # Redrock order = coadd order
    assert set(rr.redshifts['SPECTYPE']) <= {'GALAXY', 'QSO', 'STAR'}
    with fits.open(paths['redrock']) as hdul:
        assert [h.name for h in hdul[1:]] == ['REDSHIFTS', 'FIBERMAP', 'EXP_FIBERMAP', 'TSNR2']
        assert hdul[0].header['HPXPIXEL'] == 1234 and 'RRMOCK' in hdul[0].header
    truth = read_truth(paths['truth'])
    np.testing.assert_array_equal(truth['TARGETID'], coadd.targetid)
    np.testing.assert_array_equal(truth['CLASS'], mock.truth['CLASS'])
    # provenance: the same SIMHASH and TRUTHSUM in the three files; TRUTHSUM survives FITS
    keys = [mock_keywords(p) for p in paths.values()]
    assert all(k == keys[0] for k in keys)
    assert keys[0]['SIMHASH'] == simulator_hash(setup)
    assert keys[0]['TRUTHSUM'] == truth_checksum(truth) == truth_checksum(mock.truth)
    check_truth_matches(paths['coadd'], paths['truth'], truth)
    # truth is matched to spectra by TARGETID: reordered rows keep the checksum (and the
    # mock writes increasing TARGETIDs, so files written before the sort still match)
    assert np.all(np.diff(np.asarray(truth['TARGETID'])) > 0)
    check_truth_matches(paths['coadd'], paths['truth'], truth[::-1])
    truth['Z_TRUE'][0] += 1e-6
    with pytest.raises(InputFileError, match='does not belong to'):
        check_truth_matches(paths['coadd'], paths['truth'], truth)


def _tiny_template(path):
    """A 2-vector GALAXY Redrock template (constant + slope) scanning z = 0.1-0.5."""
    wave = np.arange(2000.0, 11000.0, 2.0)
    basis = np.vstack([np.ones_like(wave), (wave - 6000.0) / 5000.0])
    hdr = fits.Header({'CRVAL1': wave[0], 'CDELT1': 2.0, 'LOGLAM': 0, 'RRTYPE': 'GALAXY',
                       'RRSUBTYP': '', 'RRVER': '0.21', 'RRIGM': 'None', 'VERSION': 'test',
                       'EXTNAME': 'BASIS_VECTORS'})
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(basis, header=hdr),
                  fits.ImageHDU(np.linspace(0.1, 0.5, 41), name='REDSHIFTS')]).writeto(path)


def test_rrdesi_accepts_the_coadd(tmp_path, setup, monkeypatch):
    monkeypatch.setattr(np, 'NaN', np.nan, raising=False)   # redrock 0.21 on numpy 2
    from redrock.external.desi import rrdesi
    mock = make_mock(setup, 6, np.random.default_rng(2), pixel=99)
    paths = write_mock(str(tmp_path), mock)
    template = str(tmp_path / 'rrtemplate-GALAXY-test.fits')
    _tiny_template(template)
    out = str(tmp_path / 'rr-out.fits')
    rrdesi(['--infiles', paths['coadd'], '--outfile', out, '--templates', template,
            '--ncpu', '1'])
    zbest = Table.read(out, 'REDSHIFTS')
    np.testing.assert_array_equal(zbest['TARGETID'], mock.truth['TARGETID'])
    live = mock.fibermap['COADD_FIBERSTATUS'] == 0
    assert np.all((zbest['Z'][live] >= 0.1) & (zbest['Z'][live] <= 0.5))
    assert np.all(zbest['NPIXELS'][live] > 7000)


def _truth(n, cls, rmag, rng):
    t = Table()
    t['TARGETID'] = np.arange(n)
    t['CLASS'] = np.full(n, cls)
    t['SUBTYPE'] = np.full(n, 'K' if cls == 'STAR' else '')
    t['Z_TRUE'] = {'LBG': rng.uniform(2.5, 4.0, n), 'QSO': rng.uniform(0.5, 4.0, n),
                   'GALAXY': rng.uniform(0.1, 1.5, n), 'STAR': np.zeros(n)}[cls]
    t['RMAG'] = np.full(n, rmag)
    t['LYA_EW'] = rng.uniform(-20, 80, n) if cls == 'LBG' else np.full(n, np.nan)
    return t


@pytest.mark.parametrize('cls', ['LBG', 'QSO', 'GALAXY', 'STAR'])
def test_redrock_mock_outcomes(setup, cls):
    rng = np.random.default_rng(7)
    params = setup.config.extra['redrock_mock']
    n = 3000
    out = {}
    for rmag in (22.0, 24.8):
        truth = _truth(n, cls, rmag, rng)
        eff = np.full(n, setup.instrument.efftime_ref)
        npix = np.full(n, 7958)
        out[rmag] = (truth, simulate_redrock(truth, eff, setup.instrument.efftime_ref, npix,
                                             1.1 * npix, np.full(n, 500.0), np.zeros(n, int),
                                             params, rng))
    for rmag, (truth, rr) in out.items():
        assert rr['COEFF'].shape == (n, 10) and rr['SPECTYPE'].dtype.kind == 'U'
        assert np.all(rr['ZERR'] > 0) and np.all(rr['DELTACHI2'] >= 0)
        assert np.all((rr['CHI2'] > 1.1 * 7958) & (rr['CHI2'] < 1.1 * 7958 + 500))
        small = (rr['ZWARN'] & ZWARN_BITS['SMALL_DELTA_CHI2']) != 0
        assert np.array_equal(small, rr['DELTACHI2'] < params['small_deltachi2'])
    truth, rr = out[22.0]
    dz = np.abs(rr['Z'] - truth['Z_TRUE']) / (1 + truth['Z_TRUE'])
    right = (rr['SPECTYPE'] == cls) & (dz < 0.005)
    faint_truth, faint_rr = out[24.8]
    faint_dz = np.abs(faint_rr['Z'] - faint_truth['Z_TRUE']) / (1 + faint_truth['Z_TRUE'])
    if cls == 'LBG':
        # no LBG template: mostly wrong, mostly low-z GALAXY, some [OII] confusions
        qso_right = (rr['SPECTYPE'] == 'QSO') & (dz < 0.005)
        assert 0.05 < qso_right.mean() < 0.5
        gal = rr['SPECTYPE'] == 'GALAXY'
        assert gal.mean() > 0.4 and np.all(rr['Z'][gal] < 1.71)
        z_oii = (1 + truth['Z_TRUE']) * LYA_WAVE / OII_WAVE - 1
        assert np.mean(np.abs(rr['Z'][gal] - z_oii[gal]) < 0.01) > 0.1
        assert np.median(rr['DELTACHI2'][~qso_right]) < np.median(rr['DELTACHI2'][qso_right])
        # Lyα is taken for [OII] only where it is seen: the confusion falls with magnitude
        # like the QSO fit (it did not: a pure-noise LBG was an [OII] alias as often)
        faint_oii = (faint_rr['SPECTYPE'] == 'GALAXY') & (np.abs(
            faint_rr['Z'] - ((1 + faint_truth['Z_TRUE']) * LYA_WAVE / OII_WAVE - 1)) < 0.01)
        oii = gal & (np.abs(rr['Z'] - z_oii) < 0.01)
        assert faint_oii.mean() < 0.5 * oii.mean()
    else:
        assert right.mean() > 0.9
        assert np.mean(faint_dz < 0.005) < right.mean() - 0.2        # success falls with mag
        assert np.median(rr['DELTACHI2'][right]) > 100


def test_script_writes_reproducible_files(tmp_path):
    outdir = str(tmp_path / 'out')
    args = ['--outdir', outdir, '--nspec', '25', '--nfiles', '2', '--seed', '4',
            '--no-resolution', '--classes', 'LBG', 'QSO', '--zmin', '2.5', '--zmax', '3.0',
            '--efftime-min', '4000', '--efftime-max', '5000']
    assert main(args) == 0
    truths = sorted(glob.glob(os.path.join(outdir, 'truth-lbgmock-dark-*.fits')))
    assert len(truths) == 2 and len(glob.glob(os.path.join(outdir, 'coadd-*.fits'))) == 2
    tables = [read_truth(p) for p in truths]
    allt = np.concatenate([np.asarray(t['CLASS']) for t in tables])
    assert allt.size == 25 and set(allt) <= {'LBG', 'QSO'}
    for t in tables:
        lbg = t['CLASS'] == 'LBG'
        assert np.all((t['Z_TRUE'][lbg] >= 2.5) & (t['Z_TRUE'][lbg] <= 3.0))
        assert np.all((t['EFFTIME'] >= 4000) & (t['EFFTIME'] <= 5000))
    coadd = read_coadd(truths[0].replace('truth-', 'coadd-'))
    for kind in ('coadd', 'redrock', 'truth'):              # the command line, recorded
        with fits.open(truths[0].replace('truth-', f'{kind}-')) as hdul:
            hdr = hdul[0].header
        run = [hdr[k] for k in ('MOCKSEED', 'MOCKNSPC', 'MOCKNFIL', 'MOCKCLAS')]
        assert run == [4, 25, 2, 'LBG QSO']
        ranges = [hdr[k] for k in ('MOCKZMIN', 'MOCKZMAX', 'MOCKTMIN', 'MOCKTMAX')]
        assert ranges == [2.5, 3.0, 4000, 5000]
        assert 'MOCKRMIN' not in hdr and 'MOCKRMAX' not in hdr   # configuration default
    assert mock_keywords(truths[0]).keys() == {'SIMHASH', 'TRUTHSUM'}
    assert main(args) == 1                                   # refuses to overwrite
    before = {p: open(p, 'rb').read() for p in glob.glob(os.path.join(outdir, '*.fits'))}
    import time
    time.sleep(1.1)            # CHECKSUM comments with a time stamp would differ now
    assert main(args + ['--overwrite']) == 0
    again = read_coadd(truths[0].replace('truth-', 'coadd-'))
    np.testing.assert_array_equal(again.flux['b'], coadd.flux['b'])   # same seed, same files
    # ... byte for byte (the model card's validation_sha256 of two identical training
    # runs differed: desispec's CHECKSUM comments carry the time of writing)
    assert {p: open(p, 'rb').read() for p in before} == before
    with fits.open(truths[0].replace('truth-', 'coadd-'), checksum=True) as hdul:
        assert all(hdu.verify_checksum() == 1 for hdu in hdul)


def test_skip_existing_finishes_an_interrupted_run(tmp_path, caplog):
    """--skip-existing keeps the sets of this run, rewrites sets cut short, refuses files of
    another run; a directory holding other runs' coadds is reported."""
    import logging
    outdir = str(tmp_path / 'out')
    args = ['--outdir', outdir, '--nspec', '12', '--nfiles', '3', '--seed', '2',
            '--no-resolution', '--classes', 'LBG']
    assert main(args) == 0
    coadds = sorted(glob.glob(os.path.join(outdir, 'coadd-*.fits')))
    assert len(coadds) == 3
    flux = {p: read_coadd(p).flux['b'] for p in coadds}
    kept, gone, cut = coadds
    for kind in ('coadd', 'redrock', 'truth'):          # a set never written
        os.remove(gone.replace('coadd-', f'{kind}-'))
    os.remove(cut)                                      # a set cut short before its coadd
    before = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(outdir, '*.fits'))}
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(args + ['--skip-existing']) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert '1 kept from an earlier run' in caplog.text
    for kind in ('coadd', 'redrock', 'truth'):          # the complete set was not touched
        path = kept.replace('coadd-', f'{kind}-')
        assert os.stat(path).st_mtime_ns == before[path]
    for path in (gone, cut):                            # the others are this run's again
        np.testing.assert_array_equal(read_coadd(path).flux['b'], flux[path])
    with fits.open(kept) as hdul:
        fingerprint = hdul[0].header['MOCKRUN']
    with fits.open(cut.replace('coadd-', 'truth-')) as hdul:
        assert hdul[0].header['MOCKRUN'] == fingerprint
    # another run over the same pixels (same seed and files, another --nspec): refused
    caplog.clear()
    other = args[:2] + ['--nspec', '13'] + args[4:]
    assert main(other + ['--skip-existing']) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 3 and all('exists from another run' in e for e in errors)
    assert 'already holds 3 coadd file(s) of other runs' in caplog.text
    assert all(read_coadd(p).flux['b'].shape == flux[p].shape for p in coadds)   # untouched
    with pytest.raises(SystemExit):
        parse(args + ['--skip-existing', '--overwrite'])
    # the same configuration file named another way (its path as typed was fingerprinted:
    # every set was refused as another run's)
    from lbgnet.config import etc_dir
    os.remove(cut)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(args + ['--skip-existing', '--config',
                            os.path.join(etc_dir(), 'lbgnet-mock.yaml')]) == 0, caplog.text
    assert '2 kept from an earlier run' in caplog.text


def test_parse_rejects_bad_options():
    for bad in (['--zmin', '2'], ['--zmin', '3', '--zmax', '2'], ['--nfiles', '0'],
                ['--classes', 'ELG'], ['--efftime-min', '-1', '--efftime-max', '10'],
                ['--zmin', '-0.5', '--zmax', '0.5'], ['--zmin', '0', '--zmax', '0.5'],
                ['--rmag-min', '22', '--rmag-max', 'inf'], ['--zmin', 'nan', '--zmax', '3'],
                # far outside any target's magnitude the fluxes overflowed to inf (exit 0)
                ['--rmag-min', '-100', '--rmag-max', '100'], ['--rmag-min', '22', '--rmag-max', '31'],
                ['--seed', '-1'], ['--classes', 'LBG', 'LBG'], ['--classes', 'LBG', 'QSO', 'LBG'],
                ['--classes', 'STAR', '--zmin', '2', '--zmax', '3']):    # nothing to place
        with pytest.raises(SystemExit) as exc:
            parse(['--outdir', 'x', '--nspec', '10'] + bad)
        assert exc.value.code == 2, bad
    assert parse(['--outdir', 'x', '--nspec', '10', '--classes', 'LBG', 'STAR', '--zmin', '2',
                  '--zmax', '3']).zmin == 2
    # the LBG range also places the [OII]-as-Lya galaxies: a contaminant-only test set of
    # one regime (it was refused as "ignored")
    assert parse(['--outdir', 'x', '--nspec', '10', '--classes', 'GALAXY', '--zmin', '2.4',
                  '--zmax', '2.6']).zmax == 2.6


def test_low_lbg_range_is_drawn_without_oii_aliases(tmp_path, caplog):
    """LBGs at z 1.8-2.2 (no [OII] emitter at z >= 0.05 mimics their Lyα) are written;
    the simulator refused the range before."""
    import logging
    with caplog.at_level(logging.WARNING):
        rc = main(['--outdir', str(tmp_path), '--nspec', '20', '--nfiles', '1', '--seed', '5',
                   '--zmin', '1.8', '--zmax', '2.2', '--no-resolution'])
    assert rc == 0
    truth = Table.read(next(tmp_path.glob('truth-*.fits')), 'TRUTH')
    lbg = truth['CLASS'] == 'LBG'
    assert lbg.any() and np.all((truth['Z_TRUE'][lbg] >= 1.8) & (truth['Z_TRUE'][lbg] <= 2.2))
    assert 'OII_LYA' not in set(truth['SUBTYPE'])
    assert 'drawn as SF' in caplog.text


@pytest.mark.parametrize('options', [['--classes', 'LBG', '--zmin', '2', '--zmax', '20'],
                                     ['--zmin', '4', '--zmax', '6']])
def test_impossible_population_fails_once_before_any_file(tmp_path, caplog, options):
    """A range the renderer cannot normalise (LBGs at z = 20 have no flux in the r band:
    once a traceback per file) fails once, on one line naming the options, before the
    output directory exists."""
    import logging
    outdir = tmp_path / 'out'
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc = main(['--outdir', str(outdir), '--nspec', '6', '--nfiles', '3', '--no-resolution']
                  + options)
    assert rc == 1 and not outdir.exists()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and ' '.join(options[-4:]) in errors[0]
    assert 'Traceback' not in caplog.text
    # Lya beyond the r band (z > 4.89): the r magnitude would rest on the forest-absorbed
    # flux, scaling the LBGs up by 84 at z = 7 (they were written, with status 0)
    assert 'have Lya redward of the decam2014-r band' in errors[0]


def test_the_lbg_range_ends_where_lya_leaves_the_normalisation_band():
    from lbgnet.scripts.lbg_mock import normalisable_lbg_zmax
    from lbgnet.sim import load_sim_config
    assert normalisable_lbg_zmax(load_sim_config()) == pytest.approx(4.886, abs=0.01)


def test_outdir_that_is_a_file_is_one_error(tmp_path, caplog):
    import logging
    afile = tmp_path / 'afile'
    afile.write_text('keep')
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(['--outdir', str(afile), '--nspec', '2', '--no-resolution']) == 1
    assert 'not a directory' in caplog.text and 'Traceback' not in caplog.text
    assert afile.read_text() == 'keep'


def test_mock_set_is_all_or_nothing(tmp_path, setup, monkeypatch, caplog):
    import logging
    import lbgnet.io.mock as iomock
    from lbgnet.io.catalog import OutputFileError
    rng = np.random.default_rng(5)
    small = make_mock(setup, 3, rng, pixel=77, with_resolution=False)

    def full_disk(path, *args, **kwargs):
        with open(path, 'wb') as fh:                  # half-written, then the disk is full
            fh.write(b'SIMPLE')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(iomock, 'write_truth', full_disk)
    with pytest.raises(OutputFileError, match='truth-.*No space left'):
        write_mock(str(tmp_path), small, 'lbgnet-mock.yaml')
    assert os.listdir(tmp_path) == []                 # no coadd, redrock, nor temporary
    # through the command: one line, no file of the set, a rerun is not refused
    outdir = tmp_path / 'cmd'
    args = ['--outdir', str(outdir), '--nspec', '2', '--no-resolution']
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(args) == 1
    # no file of the set, and no empty directory: the run created it and wrote nothing
    assert not outdir.exists() and 'Traceback' not in caplog.text
    monkeypatch.undo()
    assert main(args) == 0
    assert len(os.listdir(outdir)) == 3
    # a failed rename (the redrock file's): the truth already renamed is taken back,
    # the error names the file whose rename failed
    real_replace = os.replace

    def failing_replace(src, dst):
        if os.path.basename(str(dst)).startswith('redrock-'):
            raise OSError(5, 'Input/output error', src, None, dst)
        return real_replace(src, dst)
    monkeypatch.setattr(os, 'replace', failing_replace)
    rn = tmp_path / 'rn'
    with pytest.raises(OutputFileError, match=r'redrock-.*cannot rename into place') as err:
        write_mock(str(rn), small, 'lbgnet-mock.yaml')
    assert 'already replaced' not in str(err.value)
    assert os.listdir(rn) == []
    # over an older set (--overwrite): a failed truth rename replaced nothing (the redrock
    # and coadd renames never ran); the message named the old redrock file as replaced
    monkeypatch.undo()
    old = tmp_path / 'old'
    write_mock(str(old), small, 'lbgnet-mock.yaml')
    before = {p: os.path.getmtime(old / p) for p in os.listdir(old)}

    def failing_truth(src, dst):
        if os.path.basename(str(dst)).startswith('truth-'):
            raise OSError(5, 'Input/output error', src, None, dst)
        return real_replace(src, dst)
    monkeypatch.setattr(os, 'replace', failing_truth)
    with pytest.raises(OutputFileError, match=r'truth-.*cannot rename into place') as err:
        write_mock(str(old), small, 'lbgnet-mock.yaml')
    assert 'already replaced' not in str(err.value)
    assert {p: os.path.getmtime(old / p) for p in os.listdir(old)} == before


def test_configuration_errors_are_clear(tmp_path):
    from lbgnet.config import ConfigError
    with pytest.raises(ConfigError, match='no "mock" section'):
        load_mock_setup('lbgnet-sim.yaml')
    assert main(['--outdir', str(tmp_path), '--nspec', '5', '--config', 'lbgnet-sim.yaml']) == 1
    assert not os.listdir(tmp_path)


def test_fibre_failures_follow_the_fractions():
    """Dead fibres lose every arm (BROKENFIBER only), dead-arm fibres exactly one (its BADAMP bit);
    the counts follow the two fractions."""
    from desispec.maskbits import fibermask
    from lbgnet.sim.mock import fibre_failures
    bands = ('b', 'r', 'z')
    n = 2000
    status, arm_dead = fibre_failures(n, bands, 0.3, 0.5, np.random.default_rng(0))
    assert arm_dead.shape == (n, 3) and status.dtype == np.int32
    nd = arm_dead.sum(axis=1)
    assert set(np.unique(nd)) == {0, 1, 3}
    assert 500 < (nd == 3).sum() < 700                           # 600 ± 5σ
    assert 600 < (nd == 1).sum() < 800                           # 0.5 × 1400 ± 5σ
    np.testing.assert_array_equal(status[nd == 3], fibermask.BROKENFIBER)
    assert np.all(status[nd == 0] == 0)
    for iarm, band in enumerate(bands):
        one = (nd == 1) & arm_dead[:, iarm]
        assert one.sum() > 150
        np.testing.assert_array_equal(status[one], fibermask.mask(f'BADAMP{band.upper()}'))
    status, arm_dead = fibre_failures(50, bands, 0.0, 0.0, np.random.default_rng(0))
    assert not arm_dead.any() and np.all(status == 0)
    status, arm_dead = fibre_failures(50, bands, 1.0, 1.0, np.random.default_rng(0))
    assert arm_dead.all() and np.all(status == fibermask.BROKENFIBER)


def test_apply_failures_blanks_flux_ivar_and_masks():
    """Dead arms get flux = ivar = 0 and BADFIBER; the other arms are untouched."""
    from desispec.maskbits import specmask
    from lbgnet.sim.mock import apply_failures
    fluxes = {b: np.full((3, 4), 2.0, dtype=np.float32) for b in 'brz'}
    ivars = {b: np.full((3, 4), 5.0, dtype=np.float32) for b in 'brz'}
    masks = {b: np.zeros((3, 4), dtype=np.int32) for b in 'brz'}
    arm_dead = np.array([[True, True, True], [False, True, False], [False, False, False]])
    apply_failures(fluxes, ivars, masks, arm_dead)
    for iarm, band in enumerate('brz'):
        dead = arm_dead[:, iarm]
        assert np.all(fluxes[band][dead] == 0) and np.all(ivars[band][dead] == 0)
        assert np.all(masks[band][dead] == specmask.BADFIBER)
        assert np.all(fluxes[band][~dead] == 2) and np.all(ivars[band][~dead] == 5)
        assert np.all(masks[band][~dead] == 0)


def test_noise_statistics_by_hand():
    """χ²(noise) = Σ (flux - model)² ivar, χ²(signal) = Σ model² ivar, npix = #(ivar > 0)."""
    from lbgnet.sim.mock import noise_statistics
    fluxes = {'b': np.array([[1.0, 3.0, 9.0]]), 'r': np.array([[0.0, 2.0]])}
    models = {'b': np.array([[2.0, 1.0, 1.0]]), 'r': np.array([[1.0, 2.0]])}
    ivars = {'b': np.array([[4.0, 0.25, 0.0]]), 'r': np.array([[9.0, 1.0]])}
    chi2, signal, npix = noise_statistics(fluxes, models, ivars)
    assert chi2[0] == pytest.approx(4.0 + 1.0 + 9.0)
    assert signal[0] == pytest.approx(16.0 + 0.25 + 9.0 + 4.0)
    assert npix[0] == 4


def test_draw_efftime_fills_the_range():
    """EFFTIME is uniform over the whole range (mean at the centre, both ends reached)."""
    from lbgnet.sim.mock import draw_efftime
    t = draw_efftime(10000, (1000, 5000), np.random.default_rng(0))
    assert t.shape == (10000,) and t.min() >= 1000 and t.max() <= 5000
    assert t.min() < 1010 and t.max() > 4990
    assert np.mean(t) == pytest.approx(3000.0, abs=60)             # σ(mean) = 11.5


def test_choose_pixels_bounded():
    """Distinct pixels in the strip; asking for more than it has is an error, not a hang."""
    import healpy
    from lbgnet.scripts.lbg_mock import choose_pixels
    strip = healpy.query_strip(8, np.radians(20.0), np.radians(100.0), inclusive=True, nest=True)
    pix = choose_pixels(strip.size, 8, [-10.0, 70.0], np.random.default_rng(1))
    assert np.unique(pix).size == strip.size and np.isin(pix, strip).all()
    with pytest.raises(ValueError, match='healpix pixels'):
        choose_pixels(strip.size + 1, 8, [-10.0, 70.0], np.random.default_rng(1))
    a = choose_pixels(5, 64, [-10.0, 70.0], np.random.default_rng(3))
    assert np.array_equal(a, choose_pixels(5, 64, [-10.0, 70.0], np.random.default_rng(3)))


def test_make_mock_edge_inputs(tmp_path, setup, mock):
    """Zero objects, objects without flux in the R window, and a truth read back from a
    truth file (to re-observe the same objects) all give valid mocks."""
    empty = make_mock(setup, 0, np.random.default_rng(1), with_resolution=False)
    assert len(empty.truth) == 0 and len(empty.exp_fibermap) == 0
    far = make_mock(setup, 4, np.random.default_rng(2), with_resolution=False,
                    population=dict(classes=['LBG'], zrange=(7.0, 7.5)))
    for band in 'GRZ':
        assert np.all(np.isfinite(far.fibermap[f'FLUX_{band}']))
    assert np.all(far.fibermap['FLUX_G'] == 0) and np.all(far.fibermap['FLUX_Z'] == 0)
    paths = write_mock(str(tmp_path), mock, 'lbgnet-mock.yaml')
    truth = read_truth(paths['truth'])
    again = make_mock(setup, len(truth), np.random.default_rng(3), with_resolution=False,
                      truth=truth)
    assert np.array_equal(again.truth['Z_TRUE'], truth['Z_TRUE'])
    assert again.truth.colnames.count('TARGETID') == 1
    nights = np.asarray(mock.exp_fibermap['NIGHT'])
    assert nights.min() >= 20230101 and np.all((nights // 100) % 100 <= 12)


def test_mpi_launcher_without_mpi_flag_is_refused(tmp_path, monkeypatch, caplog):
    """Under ``mpiexec -n 2`` without --mpi every rank would write every file: refused,
    with one line from rank 0 (the launcher's environment, no real mpiexec)."""
    import logging
    from lbgnet.parallel import LAUNCHER_RANK_VARS, LAUNCHER_SIZE_VARS
    for name in LAUNCHER_RANK_VARS + LAUNCHER_SIZE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('PMI_SIZE', '2')
    outdir = tmp_path / 'out'
    args = ['--outdir', str(outdir), '--nspec', '4', '--nfiles', '2', '--no-resolution']
    for rank, nerrors in (('0', 1), ('1', 0)):
        monkeypatch.setenv('PMI_RANK', rank)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert main(args) == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == nerrors and not outdir.exists()
        assert all('2 MPI processes but without --mpi' in e for e in errors)


def test_run_writing_nothing_leaves_no_empty_outdir(tmp_path, monkeypatch):
    """Every file failing to write (a full disk) leaves no empty --outdir behind (it did);
    a directory that was there before is kept."""
    import lbgnet.scripts.lbg_mock as script
    from lbgnet.io.catalog import OutputFileError

    def full(outdir, mock, *args, **kwargs):
        raise OutputFileError(os.path.join(outdir, 'coadd-x.fits'), 'cannot write (No space left)')
    monkeypatch.setattr(script, 'write_mock', full)
    outdir = tmp_path / 'new' / 'mocks'
    args = ['--nspec', '4', '--nfiles', '2', '--no-resolution', '--classes', 'STAR']
    assert main(['--outdir', str(outdir)] + args) == 1
    assert not (tmp_path / 'new').exists()
    (tmp_path / 'kept').mkdir()
    assert main(['--outdir', str(tmp_path / 'kept')] + args) == 1
    assert (tmp_path / 'kept').is_dir()


#: Noiseless flux summed over each arm (b, r, z) of the 8 spectra of make_mock(seed 2026,
#: pixel 3, no resolution) with the default configuration, simulator version 2.  The LBG
#: rows of version 1 differed by about 3e-3 (e.g. 147.393 for the first b sum).
PINNED_MODEL_SUMS = {2: [[147.9020178816, 158.6905726828, 128.1408138238],
                         [228.5203439966, 155.8902273029, 182.3008133098],
                         [110.2153750216, 208.9478885289, 173.5513096116],
                         [70.6193774687, 76.3276638091, 76.924422944],
                         [910.696013853, 481.7262268662, 355.9467969462],
                         [306.2201012354, 175.1824229546, 129.5611909423],
                         [275.1003206708, 97.3002703376, 77.6419945545],
                         [931.9658054337, 630.5327032804, 476.3676410019]]}


def test_simulated_spectra_of_one_seed_are_pinned_to_the_simulator_version():
    """SIMHASH covers the configuration, not the code: a change of the simulator's code
    that changes its spectra (2026-12-07: the same SIMHASH before and after) must bump
    SIMULATOR_VERSION, which enters SIMHASH, and pin the new spectra here."""
    from lbgnet.sim import mock as simmock
    setup = simmock.load_mock_setup()
    mock = simmock.make_mock(setup, 8, np.random.default_rng(2026), pixel=3,
                             with_resolution=False)
    sums = np.array([mock.model[b].astype(np.float64).sum(axis=1) for b in 'brz']).T
    assert simmock.SIMULATOR_VERSION in PINNED_MODEL_SUMS, 'pin the spectra of this version'
    np.testing.assert_allclose(
        sums, PINNED_MODEL_SUMS[simmock.SIMULATOR_VERSION], rtol=1e-6,
        err_msg='the simulated spectra changed: bump lbgnet.sim.mock.SIMULATOR_VERSION '
                '(it changes SIMHASH) and pin the new sums')


def test_simulator_version_enters_the_fingerprint(monkeypatch):
    """SIMHASH changes with SIMULATOR_VERSION; version 1 leaves it out, so files and model
    cards made before the version existed keep their fingerprint."""
    from lbgnet.sim import mock as simmock
    setup = simmock.load_mock_setup()
    hashes = {}
    for version in (1, 2, 3):
        monkeypatch.setattr(simmock, 'SIMULATOR_VERSION', version)
        hashes[version] = simmock.simulator_hash(setup)
    assert len(set(hashes.values())) == 3
    assert hashes[1] == '33ef5193b9f0ac09'         # the shipped model's simulator_hash
