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
    # p = 1 and no extra: exactly one chunk each, of the drawn width (100 Å: at most 126
    # pixels of 0.8 Å in any arm)
    waves, ivars = _waves_ivars(setup, 200)
    count = mask_chunks(waves, ivars, np.random.default_rng(2), 1.0, 0.0, (100.0, 100.0))
    assert np.all(count == 1)
    per_arm = np.stack([(iv == 0).sum(axis=1) for iv in ivars.values()])
    assert np.all(per_arm.sum(axis=0) > 0) and per_arm.max() <= 126
    # one interval: every masked pixel of a spectrum, all arms together, within 100 Å
    masked = [np.concatenate([waves[b][ivars[b][i] == 0] for b in waves]) for i in range(200)]
    assert max(m.max() - m.min() for m in masked) <= 100.0
    with pytest.raises(ValueError):
        AugmentConfig.from_dict({'p_lya': 1.5})
    with pytest.raises(ValueError):
        AugmentConfig.from_dict({'p_unknown': 0.1})
    # sizes that masked nothing silently, or failed mid-training (negative Poisson mean)
    for bad, match in (({'chunk_extra': -1}, 'chunk_extra'), ({'overlap_range': [5800, 5760]}, 'overlap_range'),
                       ({'chunk_width': [-20, 150]}, 'chunk_width'), ({'lya_halfwidth': 0}, 'lya_halfwidth'),
                       ({'chunk_extra': float('nan')}, 'chunk_extra'), ({'chunk_width': [1, 2, 3]}, 'chunk_width')):
        with pytest.raises(ValueError, match=match):
            AugmentConfig.from_dict(bad)
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


def test_default_overlap_mask_is_5760_to_5800_in_b_and_r(setup):
    """The default overlap window masks exactly 5760 <= λ < 5800 Å in b and r, nothing in z."""
    waves, ivars = _waves_ivars(setup, 2)
    augment_masks(waves, ivars, Table({'CLASS': ['STAR'] * 2, 'Z_TRUE': [0.0] * 2}),
                  np.random.default_rng(0), AugmentConfig(p_overlap=1.0))
    for band in ('b', 'r'):
        inside = (waves[band] >= 5760.0) & (waves[band] < 5800.0)
        assert inside.sum() == 50
        np.testing.assert_array_equal(ivars[band] == 0, np.broadcast_to(inside, (2, inside.size)))
    assert np.all(ivars['z'] == 1)


def test_augment_masks_uses_every_configured_setting(setup):
    """augment_masks = mask_overlap, mask_chunks, mask_lya in turn with the configuration's own
    probabilities and sizes (non-default values throughout)."""
    cfg = AugmentConfig(p_overlap=0.4, overlap_range=(6000.0, 6100.0), p_chunks=0.3,
                        chunk_extra=2.0, chunk_width=(200.0, 300.0), p_lya=0.6, lya_halfwidth=25.0)
    n = 200
    truth = Table({'CLASS': np.where(np.arange(n) % 2 == 0, 'LBG', 'QSO'),
                   'Z_TRUE': np.linspace(2.5, 3.5, n)})
    waves, got = _waves_ivars(setup, n)
    augment_masks(waves, got, truth, np.random.default_rng(4), cfg)
    _, expect = _waves_ivars(setup, n)
    rng = np.random.default_rng(4)
    mask_overlap(waves, expect, rng, 0.4, (6000.0, 6100.0))
    mask_chunks(waves, expect, rng, 0.3, 2.0, (200.0, 300.0))
    mask_lya(waves, expect, truth, rng, 0.6, 25.0)
    for band in waves:
        np.testing.assert_array_equal(got[band], expect[band])
    assert sum((iv == 0).sum() for iv in got.values()) > 0


def test_jitter_draws_follow_p_and_sigma(setup):
    """A fraction p of the spectra is shifted by N(0, σ) Å, both signs, the same in every arm."""
    from lbgnet.sim.augment import jitter_wavelength
    n = 4000
    waves = setup.instrument.waves
    models = {b: np.tile(np.sin(w / 7.0).astype(np.float32), (n, 1)) for b, w in waves.items()}
    out, shift = jitter_wavelength(waves, models, np.random.default_rng(8), 0.5, 0.3)
    moved = shift != 0
    assert 1850 < moved.sum() < 2150                              # 2000 ± 5σ
    assert np.std(shift[moved]) == pytest.approx(0.3, rel=0.08)
    assert 0.45 < np.mean(shift[moved] > 0) < 0.55
    for band in waves:
        np.testing.assert_array_equal(out[band], shift_spectra(waves[band], models[band], shift))
        assert np.array_equal(out[band][~moved], models[band][~moved])


def test_jitter_records_the_shift_it_applies(setup):
    """Draws beyond one pixel are clipped where applied; WAVE_SHIFT must say so (a σ of
    2 Å was recorded unclipped while 0.8 Å was applied)."""
    from lbgnet.sim.augment import AugmentConfig, jitter_wavelength
    n = 500
    waves = setup.instrument.waves
    ramp = {b: np.tile(w.astype(np.float64), (n, 1)) for b, w in waves.items()}
    out, shift = jitter_wavelength(waves, ramp, np.random.default_rng(3), 1.0, 2.0)
    assert np.abs(shift).max() == pytest.approx(0.8) and np.mean(np.abs(shift) == 0.8) > 0.5
    for band, w in waves.items():      # a linear ramp moves by exactly the shift inside
        np.testing.assert_allclose(ramp[band][:, 5:-5] - out[band][:, 5:-5],
                                   np.tile(shift[:, None], (1, w.size - 10)), atol=1e-9)
    with pytest.raises(ValueError, match='jitter_sigma=-0.1 must be >= 0'):
        AugmentConfig.from_dict({'jitter_sigma': -0.1})


def test_observe_truth_shifts_the_model_before_the_noise(setup):
    """observe_truth = render, jitter (recorded as WAVE_SHIFT), draw EFFTIME, add noise, grid."""
    from lbgnet.preprocess import grid_spectra
    from lbgnet.sim.augment import jitter_wavelength
    from lbgnet.sim.instrument import observe
    from lbgnet.sim.mock import draw_efftime
    setup = _without_failures(setup)
    truth = draw_population(setup.simcfg, 6, np.random.default_rng(1))
    gen = MockBatches(setup, batch_size=6, augment=AugmentConfig(p_jitter=1.0, jitter_sigma=0.5),
                      efftime_range=(3000.0, 9000.0))
    X = gen.observe_truth(truth, np.random.default_rng(3))
    inst, rng = setup.instrument, np.random.default_rng(3)
    models, shift = jitter_wavelength(inst.waves, render_models(setup, truth), rng, 1.0, 0.5)
    efftime = draw_efftime(6, (3000.0, 9000.0), rng)
    fluxes, ivars = observe(inst, models, efftime, rng)
    bands = inst.bands
    expect, _, _ = grid_spectra([inst.waves[b] for b in bands], [fluxes[b] for b in bands],
                                [ivars[b] for b in bands], setup.config.grid)
    assert np.all(shift != 0)
    np.testing.assert_array_equal(truth['WAVE_SHIFT'], shift.astype(np.float32))
    np.testing.assert_array_equal(truth['EFFTIME'], efftime.astype(np.float32))
    np.testing.assert_array_equal(X, expect)


def _with_failures(setup, dead_fibre, dead_arm):
    data = copy.deepcopy(setup.simcfg)
    data['mock']['dead_fibre_fraction'] = dead_fibre
    data['mock']['dead_arm_fraction'] = dead_arm
    return dataclasses.replace(setup, simcfg=data, config=config_from_dict(data, 'test'))


def test_generator_fibre_failures_blank_the_dead_arm(setup):
    """With every fibre losing one arm, exactly that arm's own wavelengths are blank in X
    (each of b, r, z occurs); with every fibre dead, X is all zero."""
    gen = MockBatches(_with_failures(setup, 0.0, 1.0), batch_size=30, seed=5,
                      augment=NO_AUGMENT, fibre_failures=True)
    X = gen[0]
    centres = 0.5 * (setup.config.grid.edges[:-1] + setup.config.grid.edges[1:])
    only = [(centres > 3700) & (centres < 5700), (centres > 5900) & (centres < 7400),
            (centres > 7700) & (centres < 9700)]
    blank = np.array([[np.all(X[i, sel, 1] == 0) for sel in only] for i in range(30)])
    live = np.array([[np.all(X[i, sel, 1] != 0) for sel in only] for i in range(30)])
    assert np.all(blank.sum(axis=1) == 1) and np.all(live == ~blank)
    assert np.all(blank.any(axis=0))
    intact = MockBatches(_with_failures(setup, 0.0, 1.0), batch_size=30, seed=5,
                         augment=NO_AUGMENT, fibre_failures=False)[0]
    assert all(np.all(intact[:, sel, 1] != 0) for sel in only)
    dead = MockBatches(_with_failures(setup, 1.0, 0.0), batch_size=5, seed=5,
                       augment=NO_AUGMENT, fibre_failures=True)[0]
    assert np.all(dead == 0)
