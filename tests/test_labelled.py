"""Training on labelled spectra files: reader, depth degradation, batches, desi_lbg_train --train-dir."""
import dataclasses
import json
import logging
import os
import shutil

import numpy as np
import pytest
from astropy.table import Table

from lbgnet.io import InputFileError
from lbgnet.io.evaluation import read_coadd_for_evaluation
from lbgnet.io.labelled import check_labels, find_labelled, read_labelled_spectra
from lbgnet.io.mock import read_truth
from lbgnet.labelled import FileBatches
from lbgnet.preprocess import grid_spectra
from lbgnet.sim.augment import AugmentConfig, degrade_depth
from lbgnet.sim.generator import MockBatches
from lbgnet.sim.mock import load_mock_setup

from lbg_testdata import TRAIN_YAML, run_logged



@pytest.fixture(scope='module')
def setup():
    return load_mock_setup('lbgnet-mock.yaml')


@pytest.fixture(scope='module')
def labelled_dir(tmp_path_factory, setup):
    """Two mock files (150 spectra, dead fibres included) standing in for labelled data."""
    from lbgnet.scripts.lbg_train import write_validation
    out = tmp_path_factory.mktemp('labelled')
    write_validation(setup, str(out), 150, 77, 'lbgnet-mock.yaml')
    # a second file: write_validation writes 1000 per file, so add one more set by hand
    from lbgnet.io.mock import write_mock
    from lbgnet.sim.mock import make_mock
    write_mock(str(out), make_mock(setup, 40, np.random.default_rng(5), pixel=3,
                                   with_resolution=False), 'lbgnet-mock.yaml')
    return str(out)


def test_degrade_depth_adds_the_missing_variance():
    rng = np.random.default_rng(1)
    n, m = 4, 200_000
    flux = {'b': np.zeros((n, m), dtype=np.float32)}
    ivar = {'b': np.full((n, m), 4.0, dtype=np.float32)}
    ivar['b'][:, :10] = 0.0
    frac = np.array([1.0, 0.5, 0.25, 0.1])
    degrade_depth(flux, ivar, frac, rng)
    # ivar scales with the depth; the added noise has variance (1/frac - 1) / ivar
    assert np.allclose(ivar['b'][:, 10:], 4.0 * frac[:, None])
    var = flux['b'][:, 10:].var(axis=1)
    assert np.allclose(var, (1 / frac - 1) / 4.0, rtol=0.02, atol=1e-9)
    assert np.all(flux['b'][0] == 0) and np.all(flux['b'][:, :10] == 0)
    assert np.all(ivar['b'][:, :10] == 0)
    # the degraded spectrum is consistent with its new ivar: chi2 per pixel of the total noise 1
    with pytest.raises(ValueError, match=r'\(0, 1\]'):
        degrade_depth(flux, ivar, np.array([1.0, 0.0, 0.5, 0.5]), rng)
    with pytest.raises(ValueError):
        degrade_depth(flux, ivar, np.array([1.0, 1.5, 0.5, 0.5]), rng)


def test_read_labelled_spectra_keeps_usable_rows_in_truth_order(labelled_dir, config):
    coadds, truths = find_labelled(labelled_dir)
    assert len(coadds) == 2 and all(os.path.exists(t) for t in truths)
    spectra = read_labelled_spectra(coadds, truths)
    ngood, ids = 0, []
    for coadd in coadds:
        _, targetid, good, _, _ = read_coadd_for_evaluation(coadd, config)
        ngood += good.sum()
        ids.append(targetid[good])
    assert len(spectra) == ngood < 190                 # the mock has dead fibres
    assert np.array_equal(spectra.truth['TARGETID'], np.concatenate(ids))
    # each row's label is the truth of its TARGETID
    truth = read_truth(truths[0])
    row = {t: i for i, t in enumerate(truth['TARGETID'])}
    first = spectra.truth[:len(ids[0])]
    assert np.array_equal(first['Z_TRUE'], truth['Z_TRUE'][[row[t] for t in ids[0]]])
    assert spectra.nbytes == sum(a.nbytes for d in (spectra.fluxes, spectra.ivars)
                                 for a in d.values()) > 0
    with pytest.raises(InputFileError, match='no coadd'):
        find_labelled(os.path.dirname(labelled_dir))
    # a truth from another file is refused (TRUTHSUM)
    with pytest.raises(InputFileError, match='does not belong'):
        read_labelled_spectra(coadds[:1], truths[1:])


def test_labelled_spectra_left_out_by_the_evaluation_rule(labelled_dir, config, tmp_path):
    """Training files leave out what evaluation leaves out (NOT_SCIENCE): a sky fibre, not a
    harmless COADD_FIBERSTATUS bit (the reader kept sky fibres and dropped LOWTRANSMISSION)."""
    import shutil
    import fitsio
    from desispec.maskbits import fibermask
    coadds, truths = find_labelled(labelled_dir)
    coadd, truth = str(tmp_path / os.path.basename(coadds[-1])), str(tmp_path / os.path.basename(truths[-1]))
    shutil.copy(coadds[-1], coadd)
    shutil.copy(truths[-1], truth)
    with fitsio.FITS(coadd, 'rw') as fx:
        fibermap = fx['FIBERMAP'].read()
        fibermap['COADD_FIBERSTATUS'][:2] = 0
        fibermap['OBJTYPE'][0] = 'SKY'
        fibermap['COADD_FIBERSTATUS'][1] = fibermask.mask('LOWTRANSMISSION')
        fx['FIBERMAP'].write_column('OBJTYPE', fibermap['OBJTYPE'])
        fx['FIBERMAP'].write_column('COADD_FIBERSTATUS', fibermap['COADD_FIBERSTATUS'])
    spectra = read_labelled_spectra([coadd], [truth])
    _, targetid, good, _, _ = read_coadd_for_evaluation(coadd, config)
    assert list(good[:2]) == [False, True]
    assert np.array_equal(spectra.truth['TARGETID'], targetid[good])


def test_read_labelled_spectra_refuses_another_wavelength_layout(labelled_dir, tmp_path):
    import fitsio
    coadds, truths = find_labelled(labelled_dir)
    other = tmp_path / os.path.basename(coadds[1])
    shutil.copy(coadds[1], other)
    with fitsio.FITS(str(other), 'rw') as fx:
        wave = fx['B_WAVELENGTH'].read()
        fx['B_WAVELENGTH'].write(wave + 0.4)
    with pytest.raises(InputFileError, match='wavelengths differ'):
        read_labelled_spectra([coadds[0], str(other)], truths)


def test_file_batches_without_augmentation_are_the_production_input(labelled_dir, config):
    """depth_min = 1 and no masks: a batch is exactly what production reads for those rows."""
    coadds, truths = find_labelled(labelled_dir)
    spectra = read_labelled_spectra(coadds, truths)
    X_prod = np.concatenate([read_coadd_for_evaluation(c, config)[0][
        read_coadd_for_evaluation(c, config)[2]] for c in coadds])
    batches = FileBatches(spectra, config.grid, batch_size=50, seed=2, depth_min=1.0,
                          return_truth=True)
    assert len(batches) == -(-len(spectra) // 50)
    X, truth = batches[1]
    rows = batches.order(0)[1]
    assert np.array_equal(truth['TARGETID'], spectra.truth['TARGETID'][rows])
    assert np.allclose(X, X_prod[rows], atol=1e-6)


def test_file_batches_epochs_orders_and_augmentation(labelled_dir, config, setup):
    coadds, truths = find_labelled(labelled_dir)
    spectra = read_labelled_spectra(coadds, truths)
    n = len(spectra)
    batches = FileBatches(spectra, config.grid, batch_size=64, seed=3,
                          augment=AugmentConfig(p_overlap=1.0), depth_min=0.3, return_truth=True)
    order = batches.order(4)
    # one epoch shows every labelled spectrum, the last batch completed at random
    assert np.array_equal(np.sort(order.ravel()[:n]), np.arange(n))
    assert order.shape == (len(batches), 64) and len(np.unique(order[-1])) == 64
    assert not np.array_equal(batches.order(5)[0], order[0])
    X0, t0 = batches[0]
    again, _ = batches[0]
    assert np.array_equal(X0, again)                       # a pure function of (seed, e, i)
    assert np.all((t0['DEPTH_FRAC'] >= 0.3) & (t0['DEPTH_FRAC'] < 1))
    # the b/r overlap is masked: no S/N in the grid bins inside 5760-5800 A
    wave_lo = config.grid.wave_min + config.grid.dwave * np.arange(config.grid.nbins)
    inside = (wave_lo >= 5760) & (wave_lo + config.grid.dwave <= 5800)
    assert inside.sum() == 5 and np.all(X0[:, inside, 1] == 0)
    batches.on_epoch_end()
    X1, t1 = batches[0]
    assert not np.array_equal(X1, X0)
    # mixed with simulated spectra: the simulator's part follows the labelled part
    sim = MockBatches(setup, batch_size=16, batches_per_epoch=len(batches), seed=3)
    mixed = FileBatches(spectra, config.grid, encode=lambda t: np.asarray(t['Z_TRUE']),
                        batch_size=64, seed=3, simulator=sim, return_truth=True)
    X, y, truth = mixed[2]
    assert X.shape[0] == 64 and mixed.nfile == 48 and len(mixed) == -(-n // 48)
    assert np.all(truth['TARGETID'][48:] == -1) and np.all(truth['TARGETID'][:48] > 0)
    assert np.array_equal(y, truth['Z_TRUE'])
    Xs, sim_truth = sim.simulate(0, 2)
    assert np.array_equal(X[48:], Xs) and np.array_equal(truth['Z_TRUE'][48:], sim_truth['Z_TRUE'])
    with pytest.raises(ValueError, match='no room'):
        FileBatches(spectra, config.grid, batch_size=16, simulator=sim)
    with pytest.raises(ValueError, match='depth_min'):
        FileBatches(spectra, config.grid, depth_min=0.0)


def test_train_script_on_labelled_files(tmp_path, labelled_dir, caplog):
    from lbgnet.io.modelfile import load_model
    from lbgnet.scripts.lbg_train import main, parse
    cfg = tmp_path / 'tiny.yaml'
    cfg.write_text(TRAIN_YAML)
    out = tmp_path / 'run'
    status, text = run_logged(main, caplog, '--config', str(cfg), '--outdir', str(out),
                              '--verbose', '0', '--train-dir', labelled_dir,
                              '--sim-fraction', '0.25', '--depth-min', '0.6', '--ntrain', '999')
    assert status == 0
    assert '--ntrain 999 is ignored with --train-dir' in text
    _, _, meta = load_model(str(out / 'tiny.weights.h5'))
    train = meta['training']
    nspec = len(read_labelled_spectra(*find_labelled(labelled_dir)))
    assert train['labelled']['nspec'] == nspec
    assert sum(train['labelled']['classes'].values()) == nspec
    coadds, truths = find_labelled(labelled_dir)
    assert [(f['coadd'], f['truth']) for f in train['labelled']['files']] == list(zip(coadds, truths))
    assert all(len(f['coadd_sha256']) == len(f['truth_sha256']) == 64
               for f in train['labelled']['files'])
    assert train['labelled']['augment']['p_jitter'] == 0          # never applied to files
    assert train['labelled']['spectra_per_batch'] == 96 and train['labelled']['depth_min'] == 0.6
    assert train['generator']['spectra_per_batch'] == 32
    assert train['ntrain_per_epoch'] == 128 * -(-nspec // 96)
    assert train['options']['sim_fraction'] == 0.25
    assert json.loads((out / 'tiny.json').read_text())['metadata']['training']['labelled'] == train['labelled']
    # labelled spectra only: no simulated part recorded
    status, _ = run_logged(main, caplog, '--config', str(cfg), '--outdir', str(tmp_path / 'only'),
                           '--verbose', '0', '--train-dir', labelled_dir, '--epochs', '1',
                           '--val-dir', str(out / 'validation'))
    assert status == 0
    _, _, meta = load_model(str(tmp_path / 'only' / 'tiny.weights.h5'))
    assert meta['training']['generator'] is None
    # errors: one line, status 1 or a usage error
    empty = tmp_path / 'empty'
    empty.mkdir()
    status, text = run_logged(main, caplog, '--config', str(cfg), '--outdir', str(tmp_path / 'e'),
                              '--train-dir', str(empty), '--val-dir', str(out / 'validation'))
    assert status == 1 and 'no coadd-*.fits labelled training files' in text
    # a bad --train-dir fails before the validation set is simulated
    status, text = run_logged(main, caplog, '--config', str(cfg), '--outdir', str(tmp_path / 'f'),
                              '--train-dir', str(tmp_path / 'nowhere'))
    assert status == 1 and 'no such directory' in text
    assert not (tmp_path / 'f' / 'validation').exists()
    # a --val-dir without coadds: one line, and no empty --outdir left behind
    status, text = run_logged(main, caplog, '--config', str(cfg), '--outdir', str(tmp_path / 'f'),
                              '--val-dir', str(empty))
    assert status == 1 and not (tmp_path / 'f').exists()
    # training files are not validation files
    status, text = run_logged(main, caplog, '--config', str(cfg), '--outdir', str(tmp_path / 'g'),
                              '--train-dir', labelled_dir, '--val-dir', labelled_dir)
    assert status == 1 and 'is both a --train-dir and a --val-dir file' in text
    # ... also as a copy in another directory
    copied = tmp_path / 'copied'
    shutil.copytree(labelled_dir, copied)
    status, text = run_logged(main, caplog, '--config', str(cfg), '--outdir', str(tmp_path / 'h'),
                              '--train-dir', labelled_dir, '--val-dir', str(copied))
    assert status == 1 and '(a --train-dir file in the --val-dir)' in text
    # a validation set without its truth files is just that, not a training file
    notruth = tmp_path / 'notruth'
    notruth.mkdir()
    for coadd in (out / 'validation').glob('coadd-*.fits'):
        shutil.copy(coadd, notruth / coadd.name)
    status, text = run_logged(main, caplog, '--config', str(cfg), '--outdir', str(tmp_path / 'n'),
                              '--train-dir', labelled_dir, '--val-dir', str(notruth))
    assert status == 1 and 'truth-' in text and '--train-dir file' not in text, text
    # ... also a validation set simulated with the seed of the one trained on
    status, text = run_logged(main, caplog, '--config', str(cfg), '--outdir', str(tmp_path / 'k'),
                              '--train-dir', str(out / 'validation'), '--epochs', '1')
    assert status == 1 and 'in the validation set simulated with seed' in text, text
    status, text = run_logged(main, caplog, '--config', str(cfg), '--outdir', str(out),
                              '--overwrite', '--train-dir', str(out / 'validation'))
    assert status == 1 and 'would be replaced by the new validation set' in text, text
    assert find_labelled(str(out / 'validation'))[0]            # not removed
    status, text = run_logged(main, caplog, '--config', str(cfg), '--outdir', str(tmp_path / 'e'),
                              '--train-dir', labelled_dir, '--sim-fraction', '1')
    assert status == 1 and '--sim-fraction: must be in [0, 1)' in text
    with pytest.raises(SystemExit):
        parse(['--config', str(cfg), '--outdir', 'x', '--sim-fraction', '0.5'])


def write_hand_truth(path, targetid, classes, z):
    """A truth file as a user would write it: only the four columns, no provenance."""
    import fitsio
    data = np.zeros(len(targetid), dtype=[('TARGETID', 'i8'), ('CLASS', 'U8'), ('Z_TRUE', 'f8'),
                                          ('RMAG', 'f4')])
    data['TARGETID'], data['CLASS'], data['Z_TRUE'], data['RMAG'] = targetid, classes, z, np.nan
    fitsio.write(str(path), data, extname='TRUTH', clobber=True)


def hand_labelled(tmp_path, labelled_dir, keep=None, edit=None, name='hand'):
    """One mock coadd without its provenance keywords, with a hand-written truth."""
    coadds, truths = find_labelled(labelled_dir)
    out = tmp_path / name
    out.mkdir()
    coadd = out / os.path.basename(coadds[0])
    shutil.copy(coadds[0], coadd)
    from astropy.io import fits
    with fits.open(coadd, mode='update') as hdul:
        for key in ('TRUTHSUM', 'SIMHASH'):
            del hdul[0].header[key]
    truth = read_truth(truths[0])
    rows = np.arange(len(truth)) if keep is None else keep(truth)
    classes = np.asarray(truth['CLASS'])[rows]
    z = np.asarray(truth['Z_TRUE'], dtype=float)[rows]
    if edit is not None:
        classes, z = edit(classes.astype('U8'), z)
    write_hand_truth(out / ('truth-' + coadd.name[len('coadd-'):]), truth['TARGETID'][rows],
                     classes, z)
    return out, truth


def test_hand_written_labels_are_checked(tmp_path, labelled_dir, caplog, config):
    # lower-case class names are accepted and normalised
    lower, truth = hand_labelled(tmp_path, labelled_dir, edit=lambda c, z: (np.char.lower(c), z),
                                 name='lower')
    spectra = read_labelled_spectra(*find_labelled(str(lower)))
    assert set(spectra.truth['CLASS']) <= {'LBG', 'QSO', 'GALAXY', 'STAR'}
    assert 'LBG' in set(spectra.truth['CLASS'])
    # the same rules for a validation set (--val-dir)
    from lbgnet.scripts.lbg_train import read_labelled
    _, _, val_truth = read_labelled(*find_labelled(str(lower)), config)
    assert 'LBG' in set(val_truth['CLASS']) and set(val_truth['CLASS']) <= {'LBG', 'QSO', 'GALAXY', 'STAR'}
    # an unknown class, or an LBG without a redshift, is a one-line error naming the truth file
    odd, _ = hand_labelled(tmp_path, labelled_dir, name='odd',
                           edit=lambda c, z: (np.where(c == 'STAR', 'STARR', c), z))
    with pytest.raises(InputFileError, match=r"truth-.*unknown CLASS value\(s\) 'STARR'"):
        read_labelled_spectra(*find_labelled(str(odd)))
    with pytest.raises(InputFileError, match=r"unknown CLASS value\(s\) 'STARR'"):
        read_labelled(*find_labelled(str(odd)), config)
    noz, _ = hand_labelled(tmp_path, labelled_dir, name='noz',
                           edit=lambda c, z: (c, np.where(c == 'LBG', np.nan, z)))
    with pytest.raises(InputFileError, match='LBG.* without a finite Z_TRUE'):
        read_labelled_spectra(*find_labelled(str(noz)))
    import fitsio
    truth_path = find_labelled(str(noz))[1][0]
    data = fitsio.read(truth_path, ext='TRUTH')
    ints = np.zeros(len(data), dtype=[('TARGETID', 'i8'), ('CLASS', 'i2'), ('Z_TRUE', 'f8'),
                                      ('RMAG', 'f4')])
    ints['TARGETID'], ints['Z_TRUE'] = data['TARGETID'], 2.5
    fitsio.write(truth_path, ints, extname='TRUTH', clobber=True)
    with pytest.raises(InputFileError, match='CLASS must hold class names'):
        read_labelled_spectra(*find_labelled(str(noz)))
    # spectra without a truth row are left out, with a warning
    part, truth = hand_labelled(tmp_path, labelled_dir, name='part',
                                keep=lambda t: np.arange(0, len(t), 2))
    import logging
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        spectra = read_labelled_spectra(*find_labelled(str(part)))
    assert 'have no row in' in caplog.text and 'left out (unlabelled)' in caplog.text
    assert set(spectra.truth['TARGETID']) <= set(truth['TARGETID'][::2])
    assert len(spectra) > 0


def test_fewer_labelled_spectra_than_a_batch(labelled_dir, config):
    spectra = read_labelled_spectra(*find_labelled(labelled_dir))
    small = dataclasses.replace(
        spectra, fluxes={b: f[:10] for b, f in spectra.fluxes.items()},
        ivars={b: v[:10] for b, v in spectra.ivars.items()}, truth=spectra.truth[:10])
    batches = FileBatches(small, config.grid, batch_size=32, seed=1, return_truth=True)
    assert len(batches) == 1
    X, truth = batches[0]
    assert X.shape[0] == 32 and set(truth['TARGETID']) == set(small.truth['TARGETID'])
    # the streams of the epoch order and of the batches are distinct (numpy ignores trailing
    # zeros of a seed, so batch 0 must not use (seed, tag, e, 0))
    from lbgnet.labelled import STREAM_TAG
    order_stream = np.random.default_rng([1, STREAM_TAG, 0]).random(4)
    assert not np.array_equal(batches.rng(0, 0).random(4), order_stream)


def test_targetid_columns_compare_exactly():
    """DESI TARGETIDs exceed 2**53: a uint64 truth column matches exactly (numpy would
    compare it with int64 in float64), a float column is refused."""
    from lbgnet.io.evaluation import find_rows
    ids = np.int64(39627652591521790) + np.arange(6)
    rows, found = find_rows(ids[::-1].astype(np.uint64), ids, 'truth.fits')
    assert found.all() and np.array_equal(rows, np.arange(6)[::-1])
    with pytest.raises(InputFileError, match='integer column'):
        find_rows(ids.astype(np.float64), ids, 'truth.fits')
    # a truth table without rows: nothing found (was an IndexError traceback)
    rows, found = find_rows(np.zeros(0, np.int64), ids, 'truth.fits')
    assert rows.shape == (6,) and not found.any()


def test_target_class_labels_are_checked(config):
    """The class a network is trained to find needs a numeric, finite Z_TRUE; the class
    name is upper-cased and must be known."""
    from astropy.table import Table
    from lbgnet.config import ConfigError
    from lbgnet.io.labelled import check_labels
    from lbgnet.targets import apply_target, target_class

    def truth(z):
        return Table({'TARGETID': [1, 2], 'CLASS': ['qso', 'LBG'], 'Z_TRUE': z})
    check_labels(truth([np.nan, 3.0]), 't.fits')                  # a QSO needs no z for LBGs
    with pytest.raises(InputFileError, match=r'1 QSO\(s\) without a finite Z_TRUE'):
        check_labels(truth([np.nan, 3.0]), 't.fits', target='QSO')
    with pytest.raises(InputFileError, match='Z_TRUE must be numeric'):
        check_labels(truth(['abc', '3.0']), 't.fits')
    # stand-in values (-1, 0) and corrupt ones were trained as LBGs with no line in the grid
    for z in (-1.0, 0.0, -5.0, 1e30):
        with pytest.raises(InputFileError, match=r'1 LBG\(s\) with Z_TRUE outside \(0, 10\)'):
            check_labels(truth([np.nan, z]), 't.fits')
    with pytest.raises(InputFileError, match=r'1 Z_TRUE value\(s\) <= -1'):
        check_labels(truth([-3.0, 3.0]), 't.fits')                # impossible for any class
    check_labels(truth([-1e-4, 3.0]), 't.fits')                   # a blueshifted star-like z
    stars = Table({'TARGETID': [1, 2], 'CLASS': ['STAR', 'LBG'], 'Z_TRUE': [-1e-4, 3.0]})
    check_labels(stars, 't.fits', target='STAR')                  # a star target: z = v_r/c
    qso = dataclasses.replace(config, extra=dict(config.extra, target={'class': 'qso '}))
    assert target_class(apply_target(qso)) == 'QSO'
    bad = dataclasses.replace(config, extra=dict(config.extra, target={'class': 'quasar'}))
    with pytest.raises(ConfigError, match='target.class must be one of'):
        apply_target(bad)


def test_truth_files_with_int64_and_uint64_targetids_stack_exactly(tmp_path):
    """One truth file with int64 TARGETIDs, another with uint64: the stacked labels keep
    DESI-sized ids exact (vstack had merged the columns into float64)."""
    import fitsio
    from lbg_testdata import write_test_coadd
    coadds, truths, expect = [], [], []
    for name, dtype, start in (('a', 'i8', 39633000000000001), ('b', 'u8', 39633000000000101)):
        ids = start + np.arange(3, dtype=np.int64)
        write_test_coadd(str(tmp_path / f'coadd-{name}.fits'), 3, seed=1, targetid=ids)
        data = np.zeros(3, dtype=[('TARGETID', dtype), ('CLASS', 'S6'), ('Z_TRUE', 'f8'),
                                  ('RMAG', 'f4')])
        data['TARGETID'], data['CLASS'], data['Z_TRUE'], data['RMAG'] = ids, 'LBG', 3.0, np.nan
        fitsio.write(str(tmp_path / f'truth-{name}.fits'), data, extname='TRUTH')
        coadds.append(str(tmp_path / f'coadd-{name}.fits'))
        truths.append(str(tmp_path / f'truth-{name}.fits'))
        expect.extend(ids)
    got = read_labelled_spectra(coadds, truths).truth['TARGETID']
    assert got.dtype == np.int64 and list(got) == expect


# ---- from the mutation audit of labelled.py and io/labelled.py (2026-12-03)
@pytest.fixture(scope='module')
def spectra(labelled_dir):
    return read_labelled_spectra(*find_labelled(labelled_dir))


def subset(spectra, n):
    return dataclasses.replace(spectra, fluxes={b: f[:n] for b, f in spectra.fluxes.items()},
                               ivars={b: v[:n] for b, v in spectra.ivars.items()},
                               truth=spectra.truth[:n])


# ---- lbgnet/labelled.py
def test_depth_degradation_is_applied_as_reported(spectra, config):      # A20 A21 A28
    b = FileBatches(spectra, config.grid, batch_size=40, seed=4, depth_min=0.2, return_truth=True)
    X, truth = b[1]
    rows, rng = b.order(0)[1], b.rng(0, 1)
    frac = rng.uniform(0.2, 1.0, rows.size)
    assert np.allclose(truth['DEPTH_FRAC'], frac)
    fl = {k: spectra.fluxes[k][rows] for k in spectra.bands}
    iv = {k: spectra.ivars[k][rows] for k in spectra.bands}
    degrade_depth(fl, iv, frac, rng)
    want, _, _ = grid_spectra([spectra.waves[k] for k in spectra.bands],
                              [fl[k] for k in spectra.bands], [iv[k] for k in spectra.bands],
                              config.grid)
    assert np.allclose(X, want, atol=1e-6)


def test_file_batches_refusals(spectra, config):                          # A04 A06 A15
    with pytest.raises(ValueError, match='depth_min'):
        FileBatches(spectra, config.grid, depth_min=1.5)
    with pytest.raises(ValueError, match='no labelled spectra'):
        FileBatches(subset(spectra, 0), config.grid)
    b = FileBatches(spectra, config.grid, batch_size=50)
    for i in (-1, len(b)):
        with pytest.raises(IndexError):
            b[i]


def test_epoch_length_when_batches_divide_the_spectra(spectra, config):  # A07
    b = FileBatches(subset(spectra, 32), config.grid, batch_size=16)
    assert len(b) == 2
    assert sorted(b.order(0).ravel()) == list(range(32))


def test_last_batch_never_repeats_a_spectrum(spectra, config):           # A12
    for seed in range(10):
        b = FileBatches(spectra, config.grid, batch_size=64, seed=seed)
        for e in range(3):
            assert len(np.unique(b.order(e)[-1])) == 64


def test_order_stream_differs_from_simulator_stream(spectra, config):    # A09
    b = FileBatches(spectra, config.grid, batch_size=64, seed=3)
    n = len(spectra)
    sim_stream = np.random.default_rng([3, 4]).permutation(n)   # MockBatches (3, 4, 0)
    assert not np.array_equal(b.order(4).ravel()[:n], sim_stream)


def test_channels_and_simulated_depth(spectra, config, setup):           # A16 A18 A23
    sim = MockBatches(setup, batch_size=8, batches_per_epoch=10, seed=1)
    b = FileBatches(spectra, config.grid, batch_size=24, seed=1, simulator=sim, channels=[1],
                    return_truth=True)
    X, truth = b[0]
    assert X.shape == (24, config.grid.nbins, 1)
    assert np.all(truth['DEPTH_FRAC'][16:] == 1)


def test_wavelength_jitter_is_switched_off(spectra, config):
    """FileBatches documents that the augmentation's wavelength jitter is not used and is
    set to 0 in its ``augment`` attribute (an observed spectrum's noise belongs to its
    wavelengths): given p_jitter 0.5, as a mapping or an AugmentConfig, ``augment.p_jitter``
    is 0, the other settings are kept and the caller's AugmentConfig is left as it was."""
    given = AugmentConfig(p_overlap=0.25, p_jitter=0.5, jitter_sigma=0.4)
    for augment in (dataclasses.asdict(given), given):
        b = FileBatches(subset(spectra, 32), config.grid, batch_size=16, augment=augment)
        assert b.augment == dataclasses.replace(given, p_jitter=0.0)
        assert b.augment.p_jitter == 0.0 and b.augment.p_overlap == 0.25
    assert given.p_jitter == 0.5


# ---- lbgnet/io/labelled.py
def test_find_labelled_is_sorted(tmp_path):                               # B02
    names = ['c', 'a', 'e', 'b', 'd', 'f']
    for n in names:
        (tmp_path / f'coadd-{n}.fits').write_text('')
    coadds, truths = find_labelled(str(tmp_path))
    assert [os.path.basename(c) for c in coadds] == [f'coadd-{n}.fits' for n in sorted(names)]


def lab(classes, z):
    return Table({'TARGETID': np.arange(len(z)) + 1, 'CLASS': classes, 'Z_TRUE': z})


def test_check_labels_edges():                                            # B05 B06 B10 B11 B12 B15 B17
    t = lab(np.array([b' lbg', b'QSO'], dtype='S6'), [3.0, 1.0])
    check_labels(t, 't.fits')
    assert list(t['CLASS']) == ['LBG', 'QSO']
    check_labels(lab(['LBG'], np.array([3])), 't.fits')                   # integer z
    with pytest.raises(InputFileError, match=r'1 LBG\(s\) without a finite'):
        check_labels(lab(['QSO', 'LBG'], [2.0, np.nan]), 't.fits', target='QSO')
    with pytest.raises(InputFileError, match=r'1 STAR\(s\) without a finite'):
        check_labels(lab(['STAR', 'LBG'], [np.inf, 3.0]), 't.fits', target='STAR')
    with pytest.raises(InputFileError, match='outside'):
        check_labels(lab(['LBG'], [10.0]), 't.fits')
    with pytest.raises(InputFileError, match=r'<= -1'):
        check_labels(lab(['GALAXY', 'LBG'], [-1.0, 3.0]), 't.fits')


def test_read_labelled_checks_the_target_class(tmp_path, labelled_dir):  # B21 B32
    d, _ = hand_labelled(tmp_path, labelled_dir, name='qso',
                         edit=lambda c, z: (c, np.where(c == 'QSO', np.nan, z)))
    read_labelled_spectra(*find_labelled(str(d)))
    with pytest.raises(InputFileError, match=r'QSO\(s\) without a finite Z_TRUE'):
        read_labelled_spectra(*find_labelled(str(d)), target='QSO')


def test_masked_pixels_and_partly_valid_spectra(tmp_path, labelled_dir, config):  # B22 B23
    import fitsio
    coadds, truths = find_labelled(labelled_dir)
    coadd = str(tmp_path / os.path.basename(coadds[0]))
    shutil.copy(coadds[0], coadd)
    shutil.copy(truths[0], str(tmp_path / os.path.basename(truths[0])))
    _, targetid, good, _, _ = read_coadd_for_evaluation(coadd, config)
    i, j = np.flatnonzero(good)[:2]
    with fitsio.FITS(coadd, 'rw') as fx:
        mask = fx['B_MASK'].read()
        mask[i, 100:200] = 1
        fx['B_MASK'].write(mask)
        assert np.all(fx['B_IVAR'].read()[i, 100:200] > 0)
        for band in 'BRZ':                       # a few dead pixels in every arm
            ivar = fx[f'{band}_IVAR'].read()
            ivar[j, :50] = 0
            fx[f'{band}_IVAR'].write(ivar)
    spectra = read_labelled_spectra([coadd], [str(tmp_path / os.path.basename(truths[0]))])
    row = list(spectra.truth['TARGETID']).index(targetid[i])
    assert np.all(spectra.ivars['b'][row, 100:200] == 0)
    assert targetid[j] in set(spectra.truth['TARGETID'])


def test_messages(tmp_path, labelled_dir, config, caplog):               # B28 B29 B30 B31
    with pytest.raises(InputFileError, match='no labelled coadd files given'):
        read_labelled_spectra([], [])
    none, _ = hand_labelled(tmp_path, labelled_dir, name='none', keep=lambda t: np.arange(0))
    with pytest.raises(InputFileError, match='no usable labelled spectrum'):
        read_labelled_spectra(*find_labelled(str(none)))
    part, truth = hand_labelled(tmp_path, labelled_dir, name='part',
                                keep=lambda t: np.arange(0, len(t), 2))
    coadds, truths = find_labelled(str(part))
    _, targetid, good, _, _ = read_coadd_for_evaluation(coadds[0], config)
    missing = int(np.sum(good & ~np.isin(targetid, truth['TARGETID'][::2])))
    with caplog.at_level(logging.WARNING):
        read_labelled_spectra(coadds, truths)
    assert f'{missing} of its {int(good.sum())} usable spectra have no row' in caplog.text
    # rows only for the usable spectra: nothing to warn about
    usable, _ = hand_labelled(tmp_path, labelled_dir, name='usable',
                              keep=lambda t: np.flatnonzero(np.isin(t['TARGETID'], targetid[good])))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read_labelled_spectra(*find_labelled(str(usable)))
    assert 'have no row' not in caplog.text


def test_bands_must_match(tmp_path, labelled_dir):                        # B18
    from astropy.io import fits
    coadds, truths = find_labelled(labelled_dir)
    other = str(tmp_path / os.path.basename(coadds[1]))
    with fits.open(coadds[1]) as hdul:
        keep = [h for h in hdul if not h.name.startswith('Z_')]
        fits.HDUList([h.copy() for h in keep]).writeto(other)
    with pytest.raises(InputFileError, match='bands or wavelengths differ'):
        read_labelled_spectra([coadds[0], other], truths)


def test_directories_with_glob_characters_are_literal(tmp_path, setup):
    """``--outdir run?``: the stale-file clean-up of the validation set deleted another
    run's files (run1/…) and find_labelled / test_files listed them."""
    from lbgnet.experiments import test_files
    from lbgnet.scripts.lbg_train import write_validation
    other = tmp_path / 'run1'
    other.mkdir()
    for kind in ('coadd', 'redrock', 'truth'):
        (other / f'{kind}-lbgmock-dark-3.fits').write_bytes(b'an earlier run')
    literal = tmp_path / 'run?'
    coadds, _ = write_validation(setup, str(literal), 12, 3, 'lbgnet-mock.yaml')
    assert sorted(os.listdir(other)) == ['coadd-lbgmock-dark-3.fits', 'redrock-lbgmock-dark-3.fits',
                                         'truth-lbgmock-dark-3.fits']
    assert find_labelled(str(literal))[0] == coadds
    assert test_files(str(literal))[0] == coadds
    empty = tmp_path / 'set[1]'
    empty.mkdir()
    shutil.copy(coadds[0], empty / os.path.basename(coadds[0]))
    assert len(find_labelled(str(empty))[0]) == 1         # was "no coadd-*.fits" files


def test_label_columns_need_numbers_one_per_row(config):
    """RMAG text crashed the stacking of truth tables with a traceback, 2-D label
    columns crashed check_labels; both are one-line errors naming the file."""
    def truth(**cols):
        base = {'TARGETID': [1, 2], 'CLASS': ['LBG', 'STAR'], 'Z_TRUE': [3.0, 0.0],
                'RMAG': [23.5, np.nan]}
        return Table({**base, **cols})
    with pytest.raises(InputFileError, match=r"t.fits: RMAG must be numeric \(NaN where unknown\)"):
        check_labels(truth(RMAG=['nan', '23']), 't.fits')
    ints = truth(RMAG=np.array([23, 24], dtype=np.int16))
    check_labels(ints, 't.fits')
    assert ints['RMAG'].dtype == np.float64                  # stacks with float truths
    with pytest.raises(InputFileError, match=r't.fits: Z_TRUE must hold one value per row, not shape \(2,\)'):
        check_labels(truth(Z_TRUE=[[3.0, 3.0], [0.0, 0.0]]), 't.fits')
    with pytest.raises(InputFileError, match='CLASS must hold one value per row'):
        check_labels(truth(CLASS=[['LBG', 'LBG'], ['STAR', 'STAR']]), 't.fits')


def test_target_labels_without_a_line_on_the_grid_are_warned(config, caplog):
    """An LBG whose lines all fall off the grid (z = 0.3 or 9.5) has all-zero box
    targets: it is trained as a negative, as the simulator's own such objects are (a QSO
    finder's validation set has QSOs at z < 1: refusing them stopped the tuning of a QSO
    finder).  With the network's configuration such labels are counted in a warning
    naming the file; the direct architecture needs no line."""
    from lbgnet.targets import lines_off_grid
    lo = config.grid.wave_min / config.lines.wave_array.max() - 1     # reddest line enters
    hi = config.grid.wave_max / config.lines.wave_array.min() - 1     # bluest line leaves
    off = lines_off_grid(np.array([0.3, lo - 1e-3, lo + 1e-3, 3.0, hi - 1e-3, hi + 1e-3, np.nan]),
                         config)
    assert off.tolist() == [True, True, False, False, False, True, False]
    table = Table({'TARGETID': [1, 2, 3], 'CLASS': ['LBG', 'LBG', 'STAR'],
                   'Z_TRUE': [0.3, 3.0, 0.0]})
    with caplog.at_level(logging.WARNING):
        check_labels(table.copy(), 't.fits')                   # without a configuration
        assert 'lines on its grid' not in caplog.text
        check_labels(table, 't.fits', config=config)
    assert ("t.fits: 1 LBG(s) with none of the network's lines on its grid, e.g. Z_TRUE 0.3: "
            "they are trained (and scored) as having no line") in caplog.text
    assert table['CLASS'].tolist() == ['LBG', 'LBG', 'STAR']   # kept, with its label
    direct = dataclasses.replace(config, extra=dict(config.extra, model=dict(
        config.extra.get('model') or {}, architecture='direct')))
    assert not lines_off_grid(np.array([0.3, 9.5]), direct).any()


def test_training_reader_uses_the_production_rules(tmp_path, labelled_dir, config):
    """A spectrum whose only pixels fail the production pixel rule (S/N above
    MAX_PIXEL_SNR) is NODATA for production and evaluation: training left it in, with an
    all-zero input and its label.  A coadd with duplicated TARGETIDs is refused, as in
    validation and evaluation."""
    import fitsio
    from lbgnet.scripts.lbg_train import read_labelled
    out, truth = hand_labelled(tmp_path, labelled_dir, name='nodata')
    coadd = find_labelled(str(out))[0][0]
    with fitsio.FITS(coadd, 'rw') as fx:
        for band in 'BRZ':
            flux, ivar = fx[f'{band}_FLUX'].read(), fx[f'{band}_IVAR'].read()
            ivar[0] = 0
            if band == 'R':
                flux[0, 100:110], ivar[0, 100:110] = 1e4, 1e6       # S/N 1e7
            fx[f'{band}_FLUX'].write(flux)
            fx[f'{band}_IVAR'].write(ivar)
    _, targetid, good, info, _ = read_coadd_for_evaluation(coadd, config)
    assert info.empty[0] and not good[0]
    spectra = read_labelled_spectra(*find_labelled(str(out)), config=config)
    kept = set(np.asarray(spectra.truth['TARGETID']).tolist())
    assert targetid[0] not in kept
    assert kept == set(targetid[good].tolist())                 # the evaluation's rows
    _, _, val_truth = read_labelled(*find_labelled(str(out)), config)
    assert len(val_truth['CLASS']) == len(spectra)
    from astropy.io import fits
    with fits.open(coadd, mode='update') as hdul:
        hdul['FIBERMAP'].data['TARGETID'][1] = hdul['FIBERMAP'].data['TARGETID'][0]
    with pytest.raises(InputFileError, match='coadd-.*: duplicated TARGETIDs'):
        read_labelled_spectra(*find_labelled(str(out)), config=config)


def test_validation_truths_with_other_columns_stack(tmp_path, labelled_dir, config):
    """A mock truth (text SUBTYPE) and a hand-written one with an integer SUBTYPE in one
    --val-dir: only the label columns are stacked (was a TableMergeError traceback)."""
    import fitsio
    from lbgnet.scripts.lbg_train import read_labelled
    out, _ = hand_labelled(tmp_path, labelled_dir, name='subtype')
    truth_path = find_labelled(str(out))[1][0]
    data = fitsio.read(truth_path, ext='TRUTH')
    extra = np.zeros(len(data), dtype=data.dtype.descr + [('SUBTYPE', 'i4')])
    for name in data.dtype.names:
        extra[name] = data[name]
    fitsio.write(truth_path, extra, extname='TRUTH', clobber=True)
    coadds, truths = find_labelled(labelled_dir)
    X, _, truth = read_labelled([coadds[1], find_labelled(str(out))[0][0]],
                                [truths[1], truth_path], config)
    assert len(X) == len(truth['CLASS']) and len(X) > 0


def test_chunk_size_must_be_positive(labelled_dir):
    """chunk_size 0 was a bare range() error, a negative one gave no block at all."""
    from lbgnet.io.chunks import iter_coadd_chunks
    coadd = find_labelled(labelled_dir)[0][0]
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match='chunk_size must be a whole number >= 1'):
            next(iter_coadd_chunks(coadd, bad))
    assert sum(block.nspec for _, _, block in iter_coadd_chunks(coadd, 7)) > 0


def test_mock_truth_with_lower_case_classes_is_read_like_evaluate(tmp_path, labelled_dir, config):
    """The labels are normalised before the TRUTHSUM comparison (as desi_lbg_evaluate
    does): a lower-case CLASS in a mock truth was called another mock run."""
    from astropy.io import fits
    from lbgnet.scripts.lbg_train import read_labelled
    coadds, truths = find_labelled(labelled_dir)
    out = tmp_path / 'lower'
    out.mkdir()
    shutil.copy(coadds[0], out / os.path.basename(coadds[0]))
    table = Table.read(truths[0], 'TRUTH')
    assert 'TRUTHSUM' in fits.getheader(coadds[0], 0)
    table['CLASS'] = np.char.lower(np.asarray(table['CLASS']).astype(str))
    table.write(out / os.path.basename(truths[0]))
    spectra = read_labelled_spectra(*find_labelled(str(out)))
    assert 'LBG' in set(spectra.truth['CLASS'])
    assert 'LBG' in set(read_labelled(*find_labelled(str(out)), config)[2]['CLASS'])


def test_truth_rows_without_a_spectrum(tmp_path, labelled_dir, config, caplog):
    """--val-dir refuses truth objects missing from their coadd, as desi_lbg_evaluate
    does (they vanished from the validation metrics); training files warn."""
    from lbgnet.scripts.lbg_train import read_labelled
    extra, truth = hand_labelled(tmp_path, labelled_dir, name='extra')
    truth_path = find_labelled(str(extra))[1][0]
    tid = np.concatenate([np.asarray(truth['TARGETID']), [12345, 12346]])
    write_hand_truth(truth_path, tid, np.concatenate([np.asarray(truth['CLASS']).astype('U8'),
                                                      ['STAR', 'STAR']]),
                     np.concatenate([np.asarray(truth['Z_TRUE'], dtype=float), [0.0, 0.0]]))
    with pytest.raises(InputFileError, match=r'2 TARGETID\(s\) of truth-.* have no row in this '
                                             'coadd'):
        read_labelled(*find_labelled(str(extra)), config)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        spectra = read_labelled_spectra(*find_labelled(str(extra)))
    assert f'{len(tid)} rows have no spectrum' in caplog.text and '2 of its' in caplog.text
    assert not set(spectra.truth['TARGETID']) & {12345, 12346}


def test_validation_objects_that_are_training_objects_are_refused(tmp_path):
    """check_disjoint refuses, besides a copied file: the same simulated objects under
    other TARGETIDs (two mocks made with the same --seed: their files k hold the same
    spectra in other healpix pixels; this passed), and a validation file holding some of
    the training objects (same TARGETID and Z_TRUE; this passed too).  Independent objects
    that share TARGETIDs (mocks of one pixel) and a few objects at one redshift under other
    TARGETIDs are not the same objects and pass; so do hand-written truth files (no
    SIMHASH) of one class and redshift sequence under other TARGETIDs, which two different
    small sets with rounded redshifts may share."""
    import fitsio
    from lbgnet.scripts.lbg_train import check_disjoint

    def simulated(path, targetid, cls, zz):
        write_hand_truth(path, targetid, cls, zz)
        data = fitsio.read(str(path), 'TRUTH')
        fitsio.write(str(path), None, header={'SIMHASH': '0123456789abcdef'}, clobber=True)
        fitsio.write(str(path), data, extname='TRUTH')
    z = np.array([2.31, 3.02, 0.0012, 1.7, 3.9])
    classes = ['LBG', 'LBG', 'STAR', 'QSO', 'LBG']
    train = tmp_path / 'truth-train.fits'
    simulated(train, np.arange(100, 105), classes, z)

    def check(name, targetid, cls, zz, write=simulated):
        path = tmp_path / f'truth-{name}.fits'
        write(path, targetid, cls, zz)
        check_disjoint(['coadd-train.fits'], [f'coadd-{name}.fits'], [str(train)], [str(path)])
    check('by-hand', np.arange(900, 905), classes, z, write=write_hand_truth)
    with pytest.raises(InputFileError) as err:          # same objects, other TARGETIDs
        check('reseeded', np.arange(900, 905), classes, z)
    assert 'same simulated objects (CLASS, Z_TRUE row by row) as' in str(err.value)
    assert '(a --train-dir file in the --val-dir)' in str(err.value)
    with pytest.raises(InputFileError) as err:          # two of the training objects
        check('subset', [101, 103, 7], ['LBG', 'QSO', 'STAR'], [3.02, 1.7, 0.0])
    assert '2 of its 3 objects (TARGETID and Z_TRUE) are --train-dir objects' in str(err.value)
    check('pixel', np.arange(100, 105), classes, z + 0.01)     # same TARGETIDs, other objects
    check('stars', [7, 8], ['STAR', 'STAR'], [0.0, 0.0])       # one redshift: no match
    write_hand_truth(train, [1, 2], ['STAR', 'STAR'], [0.0, 0.0])
    check('stars2', [7, 8], ['STAR', 'STAR'], [0.0, 0.0])
