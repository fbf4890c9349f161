"""Tests of the in-memory training generator (lbgnet.sim.generator) and augmentation."""
import copy
import dataclasses

import numpy as np
import pytest
from astropy.table import Table

from lbgnet.config import config_from_dict
from lbgnet.io.mock import write_mock
from lbgnet.preprocess import load_coadd_grid
from lbgnet.sim.augment import (AugmentConfig, augment_masks, mask_chunks, mask_lya,
                                mask_overlap, shift_spectra)
from lbgnet.sim.generator import MockBatches, as_pydataset
from lbgnet.sim.mock import load_mock_setup, make_mock, render_models
from lbgnet.sim.population import draw_population

NO_AUGMENT = AugmentConfig()


@pytest.fixture(scope='module')
def setup():
    return load_mock_setup()


def test_batches_are_pure_functions_of_seed_epoch_index(setup):
    gen = MockBatches(setup, batch_size=16, batches_per_epoch=4, seed=3)
    b2 = gen[2]
    b1 = gen[1]
    assert b2.shape == (16, setup.config.grid.nbins, 2) and b2.dtype == np.float32
    other = MockBatches(setup, batch_size=16, batches_per_epoch=4, seed=3)
    assert np.array_equal(other[2], b2)                    # order and instance do not matter
    assert not np.array_equal(b1, b2)
    gen.on_epoch_end()
    assert not np.array_equal(gen[2], b2)                  # a new epoch, new spectra
    other.epoch = 1
    assert np.array_equal(other[2], gen[2])
    assert not np.array_equal(MockBatches(setup, batch_size=16, seed=4)[2], b2)
    assert len(gen) == 4
    with pytest.raises(IndexError):
        gen[4]


def test_encode_truth_channels_and_fractions(setup):
    seen = {}

    def encode(truth):
        seen['n'] = len(truth)
        return np.asarray(truth['Z_TRUE'], dtype=np.float32)

    gen = MockBatches(setup, encode=encode, batch_size=12, seed=1, channels=[0],
                      class_fractions={'LBG': 1.0}, zrange=(3.0, 3.5), return_truth=True)
    X, y, truth = gen[0]
    assert X.shape == (12, setup.config.grid.nbins, 1) and seen['n'] == 12
    assert np.all(truth['CLASS'] == 'LBG')
    assert np.all((truth['Z_TRUE'] >= 3.0) & (truth['Z_TRUE'] <= 3.5))
    np.testing.assert_array_equal(y, truth['Z_TRUE'].astype(np.float32))
    full = MockBatches(setup, batch_size=12, seed=1, class_fractions={'LBG': 1.0},
                       zrange=(3.0, 3.5))[0]
    np.testing.assert_array_equal(full[..., :1], X)
    lo, hi = setup.config.extra['generator']['efftime_range']
    assert np.all((truth['EFFTIME'] >= lo) & (truth['EFFTIME'] <= hi))


def test_keras_pydataset_wrapper(setup):
    import keras
    gen = MockBatches(setup, encode=lambda t: np.zeros(len(t)), batch_size=4,
                      batches_per_epoch=2, seed=0)
    ds = as_pydataset(gen)
    assert isinstance(ds, keras.utils.PyDataset) and len(ds) == 2
    X, y = ds[1]
    assert np.array_equal(X, gen[1][0])
    ds.on_epoch_end()
    assert gen.epoch == 1


def _waves_ivars(setup, n):
    waves = setup.instrument.waves
    return waves, {b: np.ones((n, w.size), dtype=np.float32) for b, w in waves.items()}


def test_mask_overlap_and_lya(setup):
    rng = np.random.default_rng(0)
    waves, ivars = _waves_ivars(setup, 200)
    mask_overlap(waves, ivars, rng, 0.5, (5760.0, 5800.0))
    hit = ivars['r'][:, 0] == 0
    assert 60 < hit.sum() < 140
    for band in ('b', 'r'):
        inside = (waves[band] >= 5760.0) & (waves[band] < 5800.0)
        assert np.all(ivars[band][hit][:, inside] == 0) and np.all(ivars[band][:, ~inside] == 1)
        assert np.all(ivars[band][~hit] == 1)
    assert np.all(ivars['z'] == 1)
    truth = Table({'CLASS': ['LBG', 'QSO', 'LBG'], 'Z_TRUE': [3.0, 3.0, 2.5]})
    waves, ivars = _waves_ivars(setup, 3)
    mask_lya(waves, ivars, truth, rng, 1.0, 10.0)
    lya = 4 * 1215.67
    masked = waves['b'][ivars['b'][0] == 0]
    assert masked.min() >= lya - 40.0 and masked.max() < lya + 40.0 and masked.size > 90
    assert np.all(ivars['b'][1] == 1)                     # not an LBG
    assert np.any(ivars['b'][2] == 0)


def test_mask_chunks_and_config(setup):
    waves, ivars = _waves_ivars(setup, 300)
    count = mask_chunks(waves, ivars, np.random.default_rng(1), 0.5, 0.5, (20.0, 150.0))
    nmasked = sum((iv == 0).sum(axis=1) for iv in ivars.values())
    assert np.all(nmasked[count == 0] == 0) and np.all(nmasked[count > 0] > 0)
    assert nmasked.max() < 4 * 150 / 0.8 * count.max()
    with pytest.raises(ValueError):
        AugmentConfig.from_dict({'p_lya': 1.5})
    with pytest.raises(ValueError):
        AugmentConfig.from_dict({'p_unknown': 0.1})
    cfg = AugmentConfig.from_dict(setup.config.extra['generator']['augment'])
    assert cfg.overlap_range == (5760.0, 5800.0) and 0 < cfg.p_overlap <= 1
    waves, ivars = _waves_ivars(setup, 3)
    augment_masks(waves, ivars, Table({'CLASS': ['STAR'] * 3, 'Z_TRUE': [0.0] * 3}),
                  np.random.default_rng(0), NO_AUGMENT)
    assert all(np.all(iv == 1) for iv in ivars.values())


def test_shift_spectra_moves_features():
    wave = 4000.0 + 0.8 * np.arange(300)
    flux = np.exp(-0.5 * ((wave - 4100.0) / 2.0) ** 2)[None].repeat(3, axis=0).astype(np.float32)
    out = shift_spectra(wave, flux, np.array([0.3, -0.5, 0.0]))
    centroid = (out * wave).sum(axis=1) / out.sum(axis=1) - (flux[0] * wave).sum() / flux[0].sum()
    np.testing.assert_allclose(centroid, [0.3, -0.5, 0.0], atol=0.01)
    np.testing.assert_allclose(out.sum(axis=1), flux.sum(axis=1), rtol=1e-3)


def test_gridded_overlap_mask_reaches_the_network_input(setup):
    aug = AugmentConfig(p_overlap=1.0)
    X = MockBatches(setup, batch_size=8, seed=2, augment=aug)[0]
    grid = setup.config.grid
    bins = np.flatnonzero((grid.edges[:-1] >= 5760.0) & (grid.edges[1:] <= 5800.0))
    assert bins.size == 5 and np.all(X[:, bins, :] == 0)
    assert np.all(X[:, bins[0] - 1, 1] != 0)


def _without_failures(setup):
    data = copy.deepcopy(setup.simcfg)
    data['mock']['dead_fibre_fraction'] = 0.0
    data['mock']['dead_arm_fraction'] = 0.0
    return dataclasses.replace(setup, simcfg=data, config=config_from_dict(data, 'test'))


def test_file_and_generator_paths_give_the_same_inputs(tmp_path, setup):
    """One LBG, 300 noise realisations, through desi_lbg_mock's files and the generator."""
    setup = _without_failures(setup)
    one = draw_population(setup.simcfg, 1, np.random.default_rng(5), classes=['LBG'],
                          zrange=(3.0, 3.0001), rmag_range=(23.0, 23.0))
    n, efftime = 300, 7200.0
    truth = one[np.zeros(n, dtype=int)]
    mock = make_mock(setup, n, np.random.default_rng(1), pixel=5, truth=truth,
                     population={'efftime_range': (efftime, efftime)}, with_resolution=False)
    # same noiseless spectra in both paths
    models = render_models(setup, truth)
    assert all(np.array_equal(models[b], mock.model[b]) for b in models)
    paths = write_mock(str(tmp_path), mock)
    X_file, info = load_coadd_grid(paths['coadd'], setup.config)
    gen = MockBatches(setup, batch_size=n, seed=9, augment=NO_AUGMENT,
                      efftime_range=(efftime, efftime))
    X_gen = gen.observe_truth(truth.copy(), np.random.default_rng(2))
    assert X_file.shape == X_gen.shape and not info.empty.any()
    for ch in (0, 1):
        mf, mg = X_file[..., ch].mean(axis=0), X_gen[..., ch].mean(axis=0)
        sf, sg = X_file[..., ch].std(axis=0), X_gen[..., ch].std(axis=0)
        valid = (sf > 0) & (sg > 0)
        assert valid.mean() > 0.95
        # means agree within the statistical error (z-score < 4 in 99% of bins)
        zscore = np.abs(mf - mg)[valid] / np.sqrt((sf ** 2 + sg ** 2)[valid] / n)
        assert np.mean(zscore < 4) > 0.99
        # scatter agrees (±20%: 300 realisations give ~4% per-bin error) in 99% of bins
        assert np.mean(np.abs(sf[valid] / sg[valid] - 1) < 0.2) > 0.99
        assert np.median(sf[valid] / sg[valid]) == pytest.approx(1.0, abs=0.02)
