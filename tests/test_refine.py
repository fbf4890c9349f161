"""Template refinement (lbgnet.refine): χ² values, redshift recovery, window, errors."""
import numpy as np
import pytest

from lbgnet.config import load_config
from lbgnet.labels import encode_boxes, line_waves_at
from lbgnet.refine import (DEFAULT_PRIOR_WEIGHT, DEFAULT_WINDOW, Refiner, RefineTemplate,
                           basis_products, binned_basis, box_support, chi2_scan, line_boxes,
                           redshift_grid, refine_redshifts, template_from_basis)

CONFIG = load_config('lbgnet-default.yaml')
GRID = CONFIG.grid
#: Rest wavelengths (Å) of absorption lines and Lyα emission of the synthetic template.
ABSORPTION = (1260.42, 1303.3, 1334.53, 1393.76, 1402.77, 1526.71, 1549.0, 1608.45, 1670.79,
              2344.2, 2382.8, 2600.2, 2796.4, 2803.5)


def synthetic_template(nbasis=3):
    """Power-law continuum, an absorption-line component and Lyα emission (no IGM)."""
    wave = np.arange(600.0, 3800.0, 0.5)
    cont = (wave / 1500.0) ** -1.5 * (wave > 912)
    lines = sum(np.exp(-0.5 * ((wave - w) / 2.5) ** 2) for w in ABSORPTION)
    lya = np.exp(-0.5 * ((wave - 1216.5) / 2.0) ** 2)
    basis = np.array([cont, -cont * lines, lya])[:nbasis]
    return RefineTemplate(wave, basis, None)


def spectra_at(template, z, coeff):
    """Noiseless rebinned spectra of the template at redshifts `z`, shape (n, nbins)."""
    tb = binned_basis(template, GRID.edges, np.asarray(z, dtype=float))
    return np.einsum('nkb,nk->nb', tb, np.asarray(coeff, dtype=float))


def test_chi2_scan_matches_least_squares():
    rng = np.random.default_rng(1)
    tpl = synthetic_template()
    zs = np.array([2.0, 2.5, 3.1])
    tb = binned_basis(tpl, GRID.edges, zs)
    flux = rng.normal(size=(2, GRID.nbins)) + spectra_at(tpl, [2.5, 2.5], [[1, 0.5, 2]] * 2)
    ivar = rng.uniform(0.5, 2.0, size=flux.shape)
    ivar[1, 100:200] = 0.0                                       # masked bins
    chi2 = chi2_scan(flux, ivar, tb, block=1)
    for s in range(2):
        for iz in range(len(zs)):
            sw = np.sqrt(ivar[s])
            coeff = np.linalg.lstsq(tb[iz].T * sw[:, None], flux[s] * sw, rcond=None)[0]
            expected = np.sum(ivar[s] * (flux[s] - coeff @ tb[iz]) ** 2)
            assert chi2[s, iz] == pytest.approx(expected, rel=1e-8, abs=1e-6)


def test_chi2_scan_with_masked_and_degenerate_basis_vectors():
    """Five vectors, one zero wherever the spectrum is unmasked and one a copy of another:
    the χ² is still the least-squares one (the ridge only regularises the solve), with or
    without products passed in, for any block size."""
    rng = np.random.default_rng(4)
    wave = np.arange(600.0, 3800.0, 0.5)
    basis = np.array([(wave / 1500.0) ** -1.5, np.sin(wave / 37.0), np.cos(wave / 91.0),
                      ((wave > 1400) & (wave < 1450)).astype(float),
                      (wave / 1500.0) ** -1.5])
    tpl = RefineTemplate(wave, basis, None)
    zs = np.array([2.0, 2.5])
    tb = binned_basis(tpl, GRID.edges, zs)
    flux = rng.normal(size=(3, GRID.nbins)) + 2.0 * tb[1, 0] + tb[1, 1]
    ivar = rng.uniform(0.5, 2.0, size=flux.shape)
    ivar[:, np.any(tb[:, 3] != 0, axis=0)] = 0.0                  # vector 3 wholly masked
    expected = np.empty((3, zs.size))
    for s in range(3):
        for iz in range(zs.size):
            sw = np.sqrt(ivar[s])
            coeff = np.linalg.lstsq(tb[iz].T * sw[:, None], flux[s] * sw, rcond=None)[0]
            expected[s, iz] = np.sum(ivar[s] * (flux[s] - coeff @ tb[iz]) ** 2)
    products = basis_products(tb)
    for block, prod in ((1, None), (2, products), (128, products)):
        chi2 = chi2_scan(flux, ivar, tb, block=block, products=prod)
        assert np.allclose(chi2, expected, rtol=1e-7)


@pytest.mark.parametrize('valid', [(0, 5800), (7520, 1e5), (8400, 1e5)],
                         ids=['b arm', 'z arm', 'above 8400'])
def test_chi2_scan_of_the_shipped_template_on_one_arm_is_least_squares(valid):
    """With only one arm valid (the other cameras lost) the shipped basis is ill-conditioned
    at some redshifts; the ridge must not bias χ² there (a relative ridge of 1e-8 did by up
    to 1.35 on the b arm, enough to move DELTACHI2_TPL across its threshold of 9), and
    where the normal equations lose precision (z arm only: condition numbers to 1e17)
    χ² is still the least-squares one (it was wrong by up to 3 on the z arm, 31 above
    8400 Å)."""
    from lbgnet.afterburner import default_template_path, load_refiner
    from lbgnet.io.modelfile import default_model_path, load_model
    path = default_model_path()
    _, config, _ = load_model(path)
    refiner = load_refiner(default_template_path(), config, (1.8, 4.6))
    tb = refiner.tbasis
    rng = np.random.default_rng(3)
    iz = np.argmin(np.abs(refiner.zs - 3.0))
    flux = 30 * np.array([1.0, 0.2, -0.1, 0.05, 0.02]) @ tb[iz] + rng.normal(size=GRID.nbins)
    ivar = ((config.grid.centers >= valid[0]) & (config.grid.centers < valid[1])).astype(float)
    chi2 = chi2_scan(flux[None], ivar[None], tb)[0]
    sw = np.sqrt(ivar)
    expected = np.array([np.sum(ivar * (flux - np.linalg.lstsq(t.T * sw[:, None], flux * sw,
                                                                rcond=None)[0] @ t) ** 2)
                         for t in tb])
    assert np.max(np.abs(chi2 - expected)) < 0.05


def test_binned_basis_matches_interpolated_integral():
    """Bin means are the exact integral of the pixelised template over each redshifted bin
    (linear interpolation of its cumulative sum, constant beyond its ends, as numpy.interp),
    also for bins that straddle or leave the template's coverage."""
    rng = np.random.default_rng(2)
    wave = np.arange(1000.0, 2000.0, 0.7)
    basis = rng.normal(1.0, 0.3, size=(2, wave.size))
    zs = np.array([1.5, 2.0, 3.0, 4.5])
    tb = binned_basis(RefineTemplate(wave, basis, None), GRID.edges, zs)
    step = wave[1] - wave[0]
    bounds = np.concatenate([[wave[0] - step / 2], wave + step / 2])
    for k in range(2):
        cum = np.concatenate([[0.0], np.cumsum(basis[k]) * step])
        for iz, z in enumerate(zs):
            rest = GRID.edges / (1 + z)
            expected = np.diff(np.interp(rest, bounds, cum)) / np.diff(rest)
            assert np.allclose(tb[iz, k], expected, rtol=1e-12, atol=1e-12)
    assert np.all(tb[0, :, -1] == 0) and np.all(tb[-1, :, 0] == 0)   # beyond the coverage


def test_binned_basis_conserves_the_mean_and_shifts_features():
    tpl = RefineTemplate(np.arange(600.0, 3800.0, 0.5), np.ones((1, 6400)), None)
    tb = binned_basis(tpl, GRID.edges, np.array([2.0]))
    assert np.allclose(tb, 1.0)                                  # flat stays flat
    tpl = synthetic_template()
    z = np.array([2.0, 3.0])
    tb = binned_basis(tpl, GRID.edges, z)
    centres = 0.5 * (GRID.edges[1:] + GRID.edges[:-1])
    peak = centres[np.argmax(tb[:, 2], axis=1)]                  # Lyα emission component
    assert np.allclose(peak, 1216.5 * (1 + z), atol=GRID.dwave)


def test_igm_only_blueward_of_lya():
    igm = {'tau_a': 0.0018, 'tau_b': 3.92, 'lyman_series': {'LYB': [1025.72, 0.16]}}
    flat = np.ones((1, 6400))
    tb = binned_basis(RefineTemplate(np.arange(600.0, 3800.0, 0.5), flat, igm), GRID.edges,
                      np.array([3.0]))[0, 0]
    centres = 0.5 * (GRID.edges[1:] + GRID.edges[:-1])
    red = centres > 1215.67 * 4.0 + GRID.dwave
    blue = centres < 1215.67 * 4.0 - GRID.dwave
    assert np.allclose(tb[red], 1.0) and np.all(tb[blue] < 0.9) and np.all(tb[blue] > 0)


def test_recovers_noiseless_redshift_between_grid_points():
    tpl = synthetic_template()
    zs = redshift_grid(1.8, 4.6)
    tb = binned_basis(tpl, GRID.edges, zs)
    z_true = np.array([1.95, 2.4321, 3.0777, 4.2])
    flux = spectra_at(tpl, z_true, [[1.0, 0.3, 1.5]] * 4)
    ivar = np.full_like(flux, 100.0)
    start = z_true + 0.01 * (1 + z_true)                         # a network half a box off
    out = refine_redshifts(flux, ivar, start, tb, zs, window=0.02)
    assert np.all(np.abs(out['Z_TPL'] - z_true) / (1 + z_true) < 5e-5)
    assert np.all(out['DELTACHI2_TPL'] > 100) and np.all(out['ZERR_TPL'] > 0)


def test_window_keeps_the_start_and_deltachi2_flags_disagreement():
    tpl = synthetic_template()
    zs = redshift_grid(1.8, 4.6)
    tb = binned_basis(tpl, GRID.edges, zs)
    z_true = 3.0
    flux = spectra_at(tpl, [z_true], [[1.0, 0.3, 1.5]])
    ivar = np.full_like(flux, 100.0)
    start = np.array([3.4])                                      # wrong line identification
    out = refine_redshifts(flux, ivar, start, tb, zs, window=0.02)
    assert abs(out['Z_TPL'][0] - 3.4) / 4.4 < 0.02 + 1e-3      # window + sub-grid step
    assert out['DELTACHI2_TPL'][0] < -100                        # the truth is outside


def test_deltachi2_by_hand():
    """DELTACHI2_TPL = lowest χ² farther than `exclude` in Δz/(1+z) from Z_TPL, minus χ² at
    the grid minimum (at z ≈ 4 a zone in Δz instead would be five times narrower)."""
    rng = np.random.default_rng(11)
    tpl = synthetic_template()
    zs = redshift_grid(1.8, 4.6)
    tb = binned_basis(tpl, GRID.edges, zs)
    flux = spectra_at(tpl, [4.05, 2.3], [[1.0, 0.3, 1.5]] * 2)
    flux += rng.normal(0, 0.5, flux.shape)
    ivar = np.full_like(flux, 4.0)
    out = refine_redshifts(flux, ivar, np.array([4.06, 2.31]), tb, zs, prior_weight=0.0)
    chi2 = chi2_scan(flux, ivar, tb)
    for s in range(2):
        zbest = out['Z_TPL'][s]
        near = np.abs(zs - zbest) / (1 + zbest) < DEFAULT_WINDOW
        ibest = np.flatnonzero(near)[np.argmin(chi2[s, near])]
        far = np.abs(zs - zbest) / (1 + zbest) > 0.01
        expected = chi2[s, far].min() - chi2[s, ibest]
        assert out['DELTACHI2_TPL'][s] == pytest.approx(expected, rel=1e-9)
    # with the network's prior: the minimum is that of χ² − w S, DELTACHI2_TPL stays a
    # difference of plain χ² (the prior is not subtracted from the other redshifts)
    support = rng.uniform(0.0, 3.0, (2, zs.size))
    out = refine_redshifts(flux, ivar, np.array([4.06, 2.31]), tb, zs, support=support,
                           prior_weight=1.0)
    for s in range(2):
        zbest = out['Z_TPL'][s]
        z0 = (4.06, 2.31)[s]
        near = np.abs(zs - z0) / (1 + z0) < DEFAULT_WINDOW
        ibest = np.flatnonzero(near)[np.argmin((chi2[s] - support[s])[near])]
        far = np.abs(zs - zbest) / (1 + zbest) > 0.01
        expected = chi2[s, far].min() - chi2[s, ibest]
        assert out['DELTACHI2_TPL'][s] == pytest.approx(expected, rel=1e-9)


def test_errors_are_calibrated_on_noisy_spectra():
    rng = np.random.default_rng(7)
    tpl = synthetic_template()
    zs = redshift_grid(2.5, 3.5)
    tb = binned_basis(tpl, GRID.edges, zs)
    n = 300
    z_true = rng.uniform(2.8, 3.2, n)
    coeff = np.tile([1.0, 0.5, 2.0], (n, 1))
    sigma = 0.15
    flux = spectra_at(tpl, z_true, coeff) + rng.normal(0, sigma, (n, GRID.nbins))
    ivar = np.full_like(flux, sigma ** -2)
    out = refine_redshifts(flux, ivar, z_true, tb, zs)
    pull = (out['Z_TPL'] - z_true) / out['ZERR_TPL']
    assert np.all(np.isfinite(pull))
    assert 0.85 < np.std(pull) < 1.2 and abs(np.mean(pull)) < 0.2   # ±0.04 expected (n = 300)
    noisier = refine_redshifts(flux, ivar / 4, z_true, tb, zs)   # same data, σ stated 2x
    assert np.median(noisier['ZERR_TPL'] / out['ZERR_TPL']) == pytest.approx(2.0, rel=0.05)


def test_nothing_to_refine_gives_nan():
    tpl = synthetic_template()
    zs = redshift_grid(2.0, 3.0)
    tb = binned_basis(tpl, GRID.edges, zs)
    flux = spectra_at(tpl, [2.5, 2.5, 2.5], [[1, 0, 0]] * 3)
    ivar = np.ones_like(flux)
    ivar[1] = 0.0                                                # no valid bin
    out = refine_redshifts(flux, ivar, np.array([np.nan, 2.5, 4.5]), tb, zs)
    for key in ('Z_TPL', 'ZERR_TPL', 'DELTACHI2_TPL'):
        assert np.all(np.isnan(out[key]))                       # skipped, empty, outside grid
    empty = refine_redshifts(flux[:0], ivar[:0], np.zeros(0), tb, zs)
    assert all(v.shape == (0,) for v in empty.values())


def test_pixel_spectra_through_the_rebinning_are_unbiased():
    """Template light integrated over each DESI pixel, rebinned as production does.

    The rebinning puts each 0.8 Å pixel in the bin that holds its centre; a model averaged
    over the bin edges themselves would fit about +7e-5 too red in Δz/(1+z)."""
    from lbgnet.config import arm_wavelengths
    from lbgnet.preprocess import rebin_arms
    tpl = synthetic_template()
    z_true = np.array([2.05, 2.37, 2.81, 3.13, 3.52, 3.96, 4.33])
    waves = arm_wavelengths(CONFIG)
    fluxes, ivars = {}, {}
    for band, wave in waves.items():
        edges = np.r_[wave - 0.4, wave[-1] + 0.4]
        pix = binned_basis(tpl, edges, z_true)                   # (nz, nbasis, npix)
        fluxes[band] = np.einsum('nkp,k->np', pix, [1.0, 0.3, 1.5])
        ivars[band] = np.ones_like(fluxes[band])
    bands = list(waves)
    flux, ivar, _ = rebin_arms([waves[b] for b in bands], [fluxes[b] for b in bands],
                               [ivars[b] for b in bands], GRID)
    ref = Refiner.build(tpl, CONFIG, (1.8, 4.6), prior_weight=0.0)
    dz = (ref.run(flux, ivar, z_true)['Z_TPL'] - z_true) / (1 + z_true)
    assert abs(np.mean(dz)) < 2e-5 and np.max(np.abs(dz)) < 5e-5


def test_bad_pixels_carry_no_weight():
    tpl = synthetic_template()
    zs = redshift_grid(1.8, 4.6)
    tb = binned_basis(tpl, GRID.edges, zs)
    flux = spectra_at(tpl, [3.0] * 4, [[1.0, 0.3, 1.5]] * 4)
    ivar = np.full_like(flux, 100.0)
    flux[1, 300], ivar[2, 310], ivar[3, 320] = np.nan, np.nan, np.inf
    ivar[1, 300] = 0.0
    out = refine_redshifts(flux, ivar, np.full(4, 3.02), tb, zs, prior_weight=0.0)
    np.testing.assert_allclose(out['Z_TPL'], 3.0, atol=2e-4)
    assert np.all(np.isfinite(out['ZERR_TPL'])) and np.all(np.isfinite(out['DELTACHI2_TPL']))


def test_template_from_basis_and_refiner_build():
    wave = 10 ** np.arange(np.log10(600), np.log10(3800), 1e-4)   # log-λ grid
    basis = np.vstack([np.ones_like(wave), wave / 1000, (wave / 1000) ** 2])
    tpl = template_from_basis(wave, basis, nbasis=2)
    assert tpl.basis.shape[0] == 2 and np.allclose(np.diff(tpl.wave), np.diff(tpl.wave)[0])
    assert np.allclose(tpl.basis[1], tpl.wave / 1000, rtol=1e-6)
    config = CONFIG
    ref = Refiner.build(tpl, config, (1.8, 4.6), window=0.02, source='x')
    assert ref.zs[0] >= GRID.wave_max / tpl.wave[-1] - 1           # template covers the grid
    assert ref.zs[0] <= 2.8 * 0.98 - 1 + 1e-9 and ref.zs[-1] >= 5.6 * 1.02 - 1 - 1e-3
    assert ref.tbasis.shape == (len(ref.zs), 2, GRID.nbins)
    with pytest.raises(ValueError, match='does not cover'):
        Refiner.build(template_from_basis(wave[wave < 2000], basis[:, wave < 2000]), config,
                      (1.8, 2.2))
    for weight in (-1, np.inf, np.nan):
        with pytest.raises(ValueError, match='prior_weight'):
            Refiner.build(tpl, config, (1.8, 4.6), prior_weight=weight)
    with pytest.raises(ValueError, match='must increase'):
        template_from_basis(wave[::-1], basis)
    # one NaN in the basis made every χ² and DELTACHI2_TPL NaN, silently
    bad = basis.copy()
    bad[1, 500] = np.nan
    with pytest.raises(ValueError, match='1 non-finite basis'):
        template_from_basis(wave, bad)


def test_non_finite_refinement_template_is_one_error(tmp_path):
    from astropy.io import fits

    from lbgnet.afterburner import default_template_path, load_refiner
    from lbgnet.io.errors import InputFileError
    from lbgnet.io.templates import read_rr_template
    path = str(tmp_path / 'rrtemplate-nan.fits')
    with fits.open(default_template_path()) as hdul:
        ext = next(h for h in hdul if h.data is not None and h.data.ndim == 2)
        ext.data = ext.data.copy()
        ext.data[0, ext.data.shape[1] // 2] = np.nan
        hdul.writeto(path)
    assert np.isnan(read_rr_template(path).basis).any()
    with pytest.raises(InputFileError, match='unusable refinement template: .*non-finite'):
        load_refiner(path, CONFIG, (1.8, 4.6))


def test_shipped_template_refines_a_simulated_lbg():
    """The shipped LBG template with the simulator's mean IGM pins down a noisy mock LBG."""
    from lbgnet.afterburner import default_template_path, load_refiner
    from lbgnet.io.modelfile import default_model_path, load_model
    from lbgnet.preprocess import rebin_arms
    from lbgnet.sim.mock import load_mock_setup, make_mock
    path = default_model_path()
    _, config, _ = load_model(path)
    refiner = load_refiner(default_template_path(), config, (1.8, 4.6))
    setup = load_mock_setup()
    mock = make_mock(setup, 40, np.random.default_rng(3), pixel=1, with_resolution=False,
                     population={'classes': ['LBG'], 'rmag_range': (22.0, 23.0)})
    bands = sorted(mock.wave)
    flux, ivar, _ = rebin_arms([mock.wave[b] for b in bands], [mock.flux[b] for b in bands],
                               [mock.ivar[b] for b in bands], config.grid)
    z_true = np.asarray(mock.truth['Z_TRUE'])
    out = refiner.run(flux, ivar, z_true * 1.01 + 0.01)             # start 1% off in 1+z
    dz = np.abs(out['Z_TPL'] - z_true) / (1 + z_true)
    live = (ivar > 0).any(axis=1)                                # dead fibres are not refined
    assert np.isnan(dz[~live]).all() and live.sum() >= 35
    assert np.median(dz[live]) < 1e-3 and np.mean(dz[live] < 3e-3) > 0.9


def one_hot_conf(z):
    """Box confidences that are 1 exactly in the true box of every line at redshifts z."""
    box, _ = encode_boxes(line_waves_at(np.asarray(z, dtype=float), CONFIG), CONFIG)
    return box.astype(np.float64)


def test_box_support_counts_the_lines_in_their_boxes():
    zs = redshift_grid(1.8, 4.6)
    boxes = line_boxes(CONFIG, zs)
    assert boxes.shape == (zs.size, len(CONFIG.lines)) and boxes.max() < CONFIG.nboxes
    z0 = np.array([2.2, 3.5])
    conf = one_hot_conf(z0)
    support = box_support(conf, boxes)
    i0 = np.searchsorted(zs, z0)
    on_grid = conf.sum(axis=(1, 2))                               # lines inside the grid
    assert np.allclose(support[[0, 1], i0], on_grid) and np.all(on_grid >= 8)
    assert np.all(support.max(axis=1) == on_grid)
    far = np.abs(zs[None, :] - z0[:, None]) / (1 + z0[:, None]) > 0.1
    assert np.all(support[far] <= 2)                              # chance coincidences only
    line_on_grid = conf[0, 3].sum()                               # 1 if line 3 is on the grid
    conf[0, 3] *= 0.5                                             # a less confident line
    assert box_support(conf, boxes)[0, i0[0]] == pytest.approx(on_grid[0] - 0.5 * line_on_grid)
    # random confidences: the sum, over the lines on the grid, of the box each falls in
    rng = np.random.default_rng(8)
    conf = rng.random((3, len(CONFIG.lines), CONFIG.nboxes))
    expect = np.array([[sum(conf[s, k, b] for k, b in enumerate(row) if b >= 0) for row in boxes]
                       for s in range(3)])
    np.testing.assert_allclose(box_support(conf, boxes), expect, rtol=1e-12)


def test_prior_lets_clear_data_overrule_the_network_and_not_noise():
    tpl = synthetic_template()
    zs = redshift_grid(1.8, 4.6)
    tb = binned_basis(tpl, GRID.edges, zs)
    boxes = line_boxes(CONFIG, zs)
    z_true, z_net = 3.0, 3.15                                     # lines a box off
    clear = spectra_at(tpl, [z_true], [[1.0, 0.3, 1.5]])
    support = box_support(one_hot_conf([z_net]), boxes)
    out = refine_redshifts(clear, np.full_like(clear, 100.0), np.array([z_net]), tb, zs,
                           support=support, prior_weight=3.0)
    assert abs(out['Z_TPL'][0] - z_true) / (1 + z_true) < 1e-4  # data win
    noise = np.random.default_rng(2).normal(size=clear.shape)
    out = refine_redshifts(noise, np.ones_like(noise), np.array([z_net]), tb, zs,
                           support=support, prior_weight=3.0)
    assert abs(out['Z_TPL'][0] - z_net) / (1 + z_net) < 0.03    # the network's boxes win
    far = refine_redshifts(clear, np.full_like(clear, 100.0), np.array([3.4]), tb, zs,
                           window=0.05, support=box_support(one_hot_conf([3.4]), boxes),
                           prior_weight=3.0)
    assert abs(far['Z_TPL'][0] - 3.4) / 4.4 < 0.05 + 1e-3         # never beyond the window
    assert far['DELTACHI2_TPL'][0] < -100


def test_refiner_run_applies_the_prior_only_with_boxes():
    tpl = synthetic_template()
    rng = np.random.default_rng(4)
    z_net = np.array([3.15, 2.2])
    flux = spectra_at(tpl, [3.0, 2.25], [[1.0, 0.3, 1.5]] * 2) + rng.normal(0, 3, (2, GRID.nbins))
    ivar = np.full_like(flux, 1 / 9)
    conf = one_hot_conf(z_net)
    ref = Refiner.build(tpl, CONFIG, (1.8, 4.6))
    assert ref.window == DEFAULT_WINDOW and ref.prior_weight == DEFAULT_PRIOR_WEIGHT
    expected = refine_redshifts(flux, ivar, z_net, ref.tbasis, ref.zs, ref.window, ref.exclude,
                                box_support(conf, ref.boxes), 3.0)
    plain = refine_redshifts(flux, ivar, z_net, ref.tbasis, ref.zs, ref.window, ref.exclude)
    with_boxes, without = ref.run(flux, ivar, z_net, conf), ref.run(flux, ivar, z_net)
    for key in expected:
        assert np.array_equal(with_boxes[key], expected[key], equal_nan=True)
        assert np.array_equal(without[key], plain[key], equal_nan=True)
    assert not np.array_equal(with_boxes['Z_TPL'], without['Z_TPL'])


def test_parabola_moves_at_most_half_a_step():
    """A grid minimum's vertex lies within half a step; where the prior chose a point on a
    slope of χ², the redshift moves half a step towards the χ² minimum, no more (it used
    to move a whole step, out of the set it was chosen from)."""
    from lbgnet.refine import _parabola
    dlogz = 2e-4
    x = np.arange(7.0)
    chi2 = np.array([(x - 3.3) ** 2,          # minimum at 3: vertex +0.3 step
                     (x - 5.0) ** 2])         # chosen point 3 on the slope: clipped
    shift, curv = _parabola(chi2, np.array([3, 3]), dlogz)
    assert shift[0] == pytest.approx(0.3 * dlogz) and shift[1] == pytest.approx(0.5 * dlogz)
    assert np.allclose(curv, 2 / dlogz ** 2)
    concave = -(x - 3.0) ** 2
    assert np.isnan(_parabola(concave[None], np.array([3]), dlogz)[1][0])
    # a minimum at either end of the grid: no vertex, no curvature (ZERR_TPL NaN)
    ends = np.array([x ** 2, (x - 6.0) ** 2])
    shift, curv = _parabola(ends, np.array([0, 6]), dlogz)
    assert shift.tolist() == [0.0, 0.0] and np.isnan(curv).all()


def test_nan_confidences_give_no_support():
    """A NaN box confidence must not decide Z_TPL (np.argmin would stop at it)."""
    tpl = synthetic_template()
    rng = np.random.default_rng(4)
    z_net = np.array([3.0])
    flux = spectra_at(tpl, [3.0], [[1.0, 0.3, 1.5]]) + rng.normal(0, 1, (1, GRID.nbins))
    ivar = np.ones_like(flux)
    conf = one_hot_conf(z_net)
    ref = Refiner.build(tpl, CONFIG, (1.8, 4.6))
    bad = conf.copy()
    bad[0, 0, :5] = np.nan                    # NaN in boxes the true redshift does not use
    clean = conf.copy()
    clean[0, 0, :5] = 0.0
    out, expected = ref.run(flux, ivar, z_net, bad), ref.run(flux, ivar, z_net, clean)
    assert np.array_equal(out['Z_TPL'], expected['Z_TPL'])
    assert abs(out['Z_TPL'][0] - 3.0) < 2e-3


def test_refiner_calibrates_zerr_tpl_only():
    """Refiner.run scales ZERR_TPL and adds the floor; Z_TPL and DELTACHI2_TPL are unchanged."""
    tpl = synthetic_template()
    rng = np.random.default_rng(5)
    flux = spectra_at(tpl, [3.0, 2.25], [[1.0, 0.3, 1.5]] * 2) + rng.normal(0, 3, (2, GRID.nbins))
    ivar = np.full_like(flux, 1 / 9)
    z_net = np.array([3.0, 2.25])
    plain = Refiner.build(tpl, CONFIG, (1.8, 4.6)).run(flux, ivar, z_net)
    cal = Refiner.build(tpl, CONFIG, (1.8, 4.6), zerr_scale=2.0, zerr_floor=3e-4).run(flux, ivar, z_net)
    assert np.array_equal(cal['Z_TPL'], plain['Z_TPL'])
    assert np.array_equal(cal['DELTACHI2_TPL'], plain['DELTACHI2_TPL'])
    np.testing.assert_allclose(cal['ZERR_TPL'], np.hypot(2 * plain['ZERR_TPL'],
                                                         3e-4 * (1 + plain['Z_TPL'])))
    with pytest.raises(ValueError, match='zerr_scale'):
        Refiner.build(tpl, CONFIG, (1.8, 4.6), zerr_scale=0.0)


def test_archetype_curve_is_the_evidence_summed_over_archetypes():
    """archetype_curve: −2 ln Σ_k exp(−χ²_k/2) / sqrt(A_k), χ²_k at the best amplitude
    a ≥ 0 (an archetype anti-correlated with the data fits with a = 0)."""
    from scipy.special import logsumexp
    from lbgnet.refine import archetype_curve
    rng = np.random.default_rng(11)
    narch, nz, nbins = 4, 3, 50
    abasis = rng.uniform(0.1, 1.0, (narch, nz, nbins)).astype(np.float32)
    flux = rng.normal(0.0, 1.0, (2, nbins)) + 2.0 * abasis[2, 1].astype(float)
    flux[1] = -flux[1]                        # anti-correlated: every amplitude 0 or small
    ivar = rng.uniform(0.5, 2.0, (2, nbins))
    got = archetype_curve(flux, ivar, abasis)
    for s in range(2):
        for iz in range(nz):
            terms = []
            for k in range(narch):
                t = abasis[k, iz].astype(float)
                a = max(0.0, (ivar[s] * flux[s] * t).sum() / (ivar[s] * t * t).sum())
                chi2 = (ivar[s] * (flux[s] - a * t) ** 2).sum()
                terms.append(-0.5 * chi2 - 0.5 * np.log((ivar[s] * t * t).sum()))
            assert got[s, iz] == pytest.approx(-2 * logsumexp(terms), rel=1e-5)
    # the data made from archetype 2 at the second trial redshift prefer that redshift
    assert np.argmin(got[0]) == 1
    # an archetype with no flux on the valid bins (e.g. all bins below its Lyman limit)
    # is credited at most its prior width, not an unbounded -1/2 ln A
    from lbgnet.refine import ARCH_AMPLITUDE_MAX
    dark = abasis.copy()
    dark[0, 0] = 0.0                           # archetype 0 at the first redshift: no flux
    curve = archetype_curve(flux, ivar, dark)
    chi2_zero = (ivar * flux ** 2).sum(axis=1)           # a = 0 for it
    bound = -2 * np.log(np.exp(-0.5 * chi2_zero) * ARCH_AMPLITUDE_MAX
                        + np.exp(-0.5 * got[:, 0]))      # + all the others at most
    assert np.all(np.isfinite(curve)) and np.all(curve[:, 0] >= bound - 1e-6)


def test_basin_restricts_the_template_fit_around_the_archetype_choice():
    """With a centre, Z_TPL is the χ² minimum within the basin around it (inside the
    window); a NaN centre, or none, leaves the plain window search."""
    from lbgnet.refine import basin_centres
    tpl = synthetic_template()
    zs = redshift_grid(2.5, 3.5)
    tbasis = binned_basis(tpl, GRID.edges, zs)
    flux = spectra_at(tpl, [3.0, 3.0, 3.0], [[1.0, 0.6, 1.5]] * 3)
    ivar = np.ones_like(flux)
    z0 = np.full(3, 3.0)
    plain = refine_redshifts(flux, ivar, z0, tbasis, zs)
    centre = np.array([3.1, np.nan, 3.0])
    out = refine_redshifts(flux, ivar, z0, tbasis, zs, centre=centre, basin=0.01)
    assert abs(out['Z_TPL'][0] - 3.1) / 4.1 < 0.011               # held in the basin
    assert abs(plain['Z_TPL'][0] - 3.0) < 1e-3                   # the truth, without it
    np.testing.assert_allclose(out['Z_TPL'][1:], plain['Z_TPL'][1:])
    # basin_centres: the minimum of curve − w S in the window, refined by a parabola
    curve = (np.log10(1 + zs)[None, :] - np.log10(4.05)) ** 2 * 1e6 * np.ones((2, 1))
    got = basin_centres(curve, zs, np.array([3.0, np.nan]), window=0.1)
    assert got[0] == pytest.approx(3.05, abs=1e-4) and np.isnan(got[1])
    support = np.zeros_like(curve)
    support[:, np.argmin(np.abs(zs - 2.9))] = 1e9                # an overwhelming prior
    # (the parabola through the curve moves it by at most one grid step, 1.8e-3 in z here)
    assert basin_centres(curve, zs, np.array([3.0, 3.0]), 0.1, support)[0] == pytest.approx(2.9, abs=2e-3)


def test_basin_astride_the_window_edge_keeps_the_search_in_the_window():
    """A centre near the window's edge: its basin reaches outside the window, but the
    search stays inside (the basin is intersected with the window), so a χ² minimum
    outside the window, inside the basin, is not taken."""
    zs = redshift_grid(2.5, 3.5)
    z0, window, basin = 3.0, 0.1, 0.01
    centre = z0 + (window - 0.5 * basin) * (1 + z0)            # 3.38, window edge 3.4
    zmin = z0 + (window + 0.5 * basin) * (1 + z0)              # 3.42: outside, in the basin
    chi2 = ((np.log10(1 + zs) - np.log10(1 + zmin)) * 1e4)[None, :] ** 2
    flux, ivar = np.ones((1, 8)), np.ones((1, 8))
    out = refine_redshifts(flux, ivar, np.array([z0]), None, zs, window=window,
                           centre=np.array([centre]), basin=basin, chi2=chi2)
    zt = out['Z_TPL'][0]
    assert abs(zt - z0) / (1 + z0) < window                     # pinned at the window's edge
    assert abs(zt - centre) / (1 + centre) < basin
    assert zt > centre and abs(zt - zmin) > 0.01


def test_refiner_with_archetypes_finds_redshifts_of_archetype_spectra():
    """Refiner.build with archetypes: noisy spectra made from one of them at a random
    redshift get Z_TPL near the truth starting 3 % off; archetypes that do not cover the
    grid are refused."""
    tpl = synthetic_template()
    rng = np.random.default_rng(5)
    arch = RefineTemplate(tpl.wave, np.array([tpl.basis[0] - 0.5 * tpl.basis[1],
                                              tpl.basis[0] + 3 * tpl.basis[2],
                                              tpl.basis[0] - tpl.basis[1] + tpl.basis[2]]), None)
    ref = Refiner.build(tpl, CONFIG, (2.2, 3.8), archetypes=arch, arch_source='a.fits')
    assert ref.archetypes.shape == (3, ref.azs.size, GRID.nbins) and ref.archetypes.dtype == np.float32
    z = rng.uniform(2.4, 3.6, 20)
    flux = np.stack([spectra_at(RefineTemplate(arch.wave, arch.basis[[k]], None), [zi], [[2.0]])[0]
                     for zi, k in zip(z, rng.integers(0, 3, 20))])
    ivar = np.full_like(flux, 100.0)
    flux += rng.normal(0.0, 0.1, flux.shape)
    out = ref.run(flux, ivar, (1 + z) * 1.03 - 1)
    assert np.all(np.abs(out['Z_TPL'] - z) / (1 + z) < 1e-3)
    short = RefineTemplate(tpl.wave[tpl.wave < 2000], arch.basis[:, tpl.wave < 2000], None)
    with pytest.raises(ValueError, match='archetypes'):
        Refiner.build(tpl, CONFIG, (2.2, 3.8), archetypes=short)
    empty = RefineTemplate(arch.wave, np.vstack([arch.basis[:2], np.zeros((1, arch.wave.size))]), None)
    with pytest.raises(ValueError, match='positive mean'):
        Refiner.build(tpl, CONFIG, (2.2, 3.8), archetypes=empty)
    # each spectrum scored only over its own window = the whole grid, also for first
    # guesses at the ends of the grid and NaN ones, in any order
    from lbgnet.refine import archetype_curve, archetype_curve_windows, basin_centres
    z0 = np.concatenate([z, [ref.zs[0], ref.zs[-1], np.nan]])
    flux2 = np.vstack([flux, flux[:3]])
    ivar2 = np.vstack([ivar, ivar[:3]])
    windowed = ref.basin_centres(flux2, ivar2, z0)
    full = basin_centres(archetype_curve(flux2, ivar2, ref.archetypes), ref.azs, z0, ref.window)
    np.testing.assert_allclose(windowed, full, atol=1e-5, equal_nan=True)
    assert np.isnan(windowed[-1]) and np.isfinite(windowed[:-1]).all()
    # the windowed curve equals the full one inside each window, inf outside
    lo, hi = np.array([0, 3, 3, 10]), np.array([5, 8, 9, ref.azs.size])
    part = archetype_curve_windows(flux[:4], ivar[:4], ref.archetypes, lo, hi)
    whole = archetype_curve(flux[:4], ivar[:4], ref.archetypes)
    inside = (np.arange(ref.azs.size) >= lo[:, None]) & (np.arange(ref.azs.size) < hi[:, None])
    # (float32 products: both are rounded at ~1e-6 of Σ w f², here ~1e5)
    scale = (ivar[:4] * flux[:4] ** 2).sum(axis=1).max()
    np.testing.assert_allclose(part[inside], whole[inside], rtol=0, atol=2e-5 * scale)
    assert np.all(np.isinf(part[~inside]))
    with pytest.raises(ValueError, match='sorted'):
        archetype_curve_windows(flux[:2], ivar[:2], ref.archetypes, np.array([10, 0]),
                                np.array([20, 5]))
    # a first guess whose window is off the grid: NaN, without warnings
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        off = ref.basin_centres(flux[:3], ivar[:3], np.array([6.0, z[1], 1.0]))
    assert np.isnan(off[[0, 2]]).all() and np.isfinite(off[1])


def test_window_margin_by_hand():
    """window_margin: lowest χ² − prior of the window outside the basin around the window's
    minimum, minus that minimum; inf when the window holds nothing else, NaN when empty."""
    from lbgnet.refine import window_margin
    zs = redshift_grid(2.5, 3.5)
    chi2 = np.full((4, zs.size), 100.0)
    i3, i31, i305 = (np.argmin(np.abs(zs - z)) for z in (3.0, 3.1, 3.005))
    chi2[:, i3] = 40.0                                        # near the minimum (in its basin)
    chi2[:, i305] = 30.0                                      # the minimum
    chi2[:, i31] = 70.0                                       # an alias 2.5 % away
    prior = np.zeros_like(chi2)
    prior[1, i31] = 35.0                                      # the prior favours the alias
    prior[2, i31] = 50.0                                      # the prior makes it the minimum
    z0 = np.array([3.0, 3.0, 3.0, 10.0])
    got = window_margin(chi2, zs, z0, window=0.1, basin=0.01, prior=prior)
    assert got[0] == pytest.approx(40.0)                      # 70 − 30
    assert got[1] == pytest.approx(5.0)                       # 30 − (70 − 35)
    assert got[2] == pytest.approx(10.0)                      # 30 − (70 − 50), from the alias
    narrow = window_margin(chi2[:1], zs, z0[:1], window=0.005, basin=0.01)
    assert np.isinf(narrow[0])                                # nothing outside the basin
    assert np.isnan(got[3])                                   # no trial redshift in the window


def test_archetype_stage_skipped_where_the_fit_is_decisive(monkeypatch):
    """With arch_skip the archetype stage runs only for the spectra whose window margin is
    below it; decisive spectra keep the fit's own window minimum (the same Z_TPL as with
    the stage), and arch_skip = 0 runs it for all."""
    tpl = synthetic_template()
    rng = np.random.default_rng(8)
    arch = RefineTemplate(tpl.wave, np.array([tpl.basis[0] - 0.5 * tpl.basis[1],
                                              tpl.basis[0] + 3 * tpl.basis[2]]), None)
    z = np.array([2.6, 3.0, 3.3, 3.5])
    flux = spectra_at(tpl, z, [[1.0, 0.5, 1.5]] * 4)
    ivar = np.array([100.0, 100.0, 1e-3, 1e-3])[:, None] * np.ones_like(flux)   # 2 faint
    flux += rng.normal(0.0, 1.0, flux.shape) / np.sqrt(ivar)
    z0 = z * 1.01
    seen = []
    original = Refiner.basin_centres

    def spy(self, flux, ivar, z_start, conf=None):
        seen.append(len(z_start))
        return original(self, flux, ivar, z_start, conf)
    monkeypatch.setattr(Refiner, 'basin_centres', spy)
    results = {}
    for skip in (0.0, 25.0, 1e12):
        ref = Refiner.build(tpl, CONFIG, (2.2, 3.8), archetypes=arch, arch_skip=skip)
        assert ref.arch_skip == skip
        seen.clear()
        results[skip] = ref.run(flux, ivar, z0)
        results[skip]['ran'] = list(seen)
    assert results[0.0]['ran'] == [4] and results[1e12]['ran'] == [4]
    assert results[25.0]['ran'] == [2]                       # only the two faint ones
    for key in ('Z_TPL', 'DELTACHI2_TPL'):
        np.testing.assert_allclose(results[25.0][key], results[0.0][key], rtol=1e-12)
    assert np.all(np.abs(results[25.0]['Z_TPL'][:2] - z[:2]) / (1 + z[:2]) < 1e-3)
    with pytest.raises(ValueError, match='skip'):
        Refiner.build(tpl, CONFIG, (2.2, 3.8), archetypes=arch, arch_skip=-1.0)


def test_minimum_pinned_by_the_window_edge_is_not_reliable():
    """A χ² minimum just beyond the window (inside the DELTACHI2 exclusion zone of the edge
    point) left Z_TPL on the edge with a finite ZERR and a large DELTACHI2: a confidently
    wrong redshift passed as reliable."""
    from lbgnet.refine import _window_minimum, reliable_redshift
    tpl = synthetic_template()
    zs = redshift_grid(2.5, 3.5)
    tb = binned_basis(tpl, GRID.edges, zs)
    flux = spectra_at(tpl, [3.0, 3.0], [[1.0, 0.3, 1.5]] * 2)
    ivar = np.full_like(flux, 100.0)
    start = np.array([(3.0 - 0.025) / 1.025, (3.0 - 0.015) / 1.015])   # truth 0.025 / 0.015 off
    out = refine_redshifts(flux, ivar, start, tb, zs, window=0.02, prior_weight=0.0)
    assert abs(abs(out['Z_TPL'][0] - start[0]) / (1 + start[0]) - 0.02) < 3e-4   # on the edge
    assert out['DELTACHI2_TPL'][0] > 9 and np.isnan(out['ZERR_TPL'][0])
    assert abs(out['Z_TPL'][1] - 3.0) / 4.0 < 1e-4 and np.isfinite(out['ZERR_TPL'][1])
    assert list(reliable_redshift([True, True], out['DELTACHI2_TPL'], out['ZERR_TPL'])) == [False, True]
    # on a toy curve: pinned by either edge of the allowed set, and only when the outside
    # neighbour is lower (a minimum exactly at the edge point is a measured minimum)
    curve = (np.arange(30.0)[None, :] - np.array([[10.0], [10.0], [12.0], [20.0]])) ** 2
    allowed = np.zeros((4, 30), dtype=bool)
    allowed[0, 12:26] = allowed[1, 5:26] = allowed[2, 12:26] = allowed[3, 5:18] = True
    ibest, _, curv = _window_minimum(curve, np.linspace(2.0, 2.3, 30), allowed)
    assert list(ibest) == [12, 10, 12, 17]
    assert list(np.isnan(curv)) == [True, False, False, True]
    # the prior alone (χ² lowest at the edge point, support higher just outside) does not pin
    prior = np.zeros((4, 30))
    prior[2, 11] = 50.0
    ibest, _, curv = _window_minimum(curve, np.linspace(2.0, 2.3, 30), allowed, prior)
    assert ibest[2] == 12 and np.isfinite(curv[2])
    # χ² lower beyond the edge, but the prior holds the edge point (χ² − w S is lower
    # there): the prior decided, as inside the window; it is not pinned
    prior = np.zeros((4, 30))
    prior[0, 12] = 50.0
    ibest, _, curv = _window_minimum(curve, np.linspace(2.0, 2.3, 30), allowed, prior)
    assert ibest[0] == 12 and np.isfinite(curv[0])


def test_refiners_built_again_share_their_binning_and_never_a_stale_one():
    """Refiners built again in one process from the same template, archetypes and grid
    share the binned arrays and the basis products (read-only: no refiner can change what
    another uses); any other template, archetype set, IGM or redshift range gets its own,
    equal to a fresh binning; clear_shared forgets them."""
    from dataclasses import replace as dc_replace
    from lbgnet.refine import bin_light_edges, binned_archetypes, clear_shared
    from lbgnet.sim.population import load_sim_config
    edges = bin_light_edges(CONFIG)
    tpl = synthetic_template()
    arch = RefineTemplate(tpl.wave, np.array([tpl.basis[0] - 0.5 * tpl.basis[1],
                                              tpl.basis[0] + 3 * tpl.basis[2]]), None)
    clear_shared()
    first = Refiner.build(tpl, CONFIG, (2.2, 3.8), archetypes=arch)
    again = Refiner.build(tpl, CONFIG, (2.2, 3.8), archetypes=arch, prior_weight=1.0)
    assert again.tbasis is first.tbasis and again.archetypes is first.archetypes
    assert again.products is first.products
    for shared in (first.tbasis, first.archetypes, first.products):
        assert not shared.flags.writeable
    np.testing.assert_array_equal(first.tbasis, binned_basis(tpl, edges, first.zs))
    np.testing.assert_array_equal(first.products, basis_products(np.array(first.tbasis)))
    # equal inputs in new arrays (another read of the same file) are the same key
    copy = RefineTemplate(tpl.wave.copy(), tpl.basis.copy(), None)
    assert Refiner.build(copy, CONFIG, (2.2, 3.8)).tbasis is first.tbasis
    igm = load_sim_config()['simulation']['igm']
    tpl_igm = dc_replace(tpl, igm=igm)
    with_igm = Refiner.build(tpl_igm, CONFIG, (2.2, 3.8))
    np.testing.assert_array_equal(with_igm.tbasis, binned_basis(tpl_igm, edges, first.zs))
    assert not np.array_equal(with_igm.tbasis, first.tbasis)
    # a refiner given its own binned basis gets that basis's products, not the shared ones
    own = dc_replace(with_igm, tbasis=np.asarray(with_igm.tbasis) * 3.0)
    np.testing.assert_allclose(own.products, 9.0 * np.asarray(with_igm.products), atol=1e-290)
    # a changed basis, archetype, IGM law or trial grid: a new binning, never the shared one
    scaled = RefineTemplate(tpl.wave, tpl.basis * 2.0, None)
    other = Refiner.build(scaled, CONFIG, (2.2, 3.8))
    np.testing.assert_allclose(other.tbasis, 2.0 * np.asarray(first.tbasis), atol=1e-290)
    assert other.products is not first.products
    np.testing.assert_allclose(other.products, 4.0 * np.asarray(first.products), atol=1e-290)
    wider = Refiner.build(tpl, CONFIG, (2.0, 3.8))
    assert wider.zs.size > first.zs.size and wider.tbasis.shape[0] == wider.zs.size
    arch2 = RefineTemplate(arch.wave, arch.basis[::-1].copy(), None)
    swapped = Refiner.build(tpl, CONFIG, (2.2, 3.8), archetypes=arch2)
    np.testing.assert_array_equal(swapped.archetypes, np.asarray(first.archetypes)[::-1])
    np.testing.assert_array_equal(swapped.archetypes, binned_archetypes(arch2, edges, swapped.azs))
    clear_shared()
    assert Refiner.build(tpl, CONFIG, (2.2, 3.8)).tbasis is not first.tbasis
    clear_shared()


def test_shared_binning_key_sees_every_digit_of_the_igm_law():
    """The digest of the IGM law keeps every digit of numpy values in it (numpy's repr
    rounds to 8 digits and elides long arrays): laws that differ beyond that are other keys."""
    from dataclasses import replace as dc_replace
    from lbgnet.refine import _binning_key
    tpl = synthetic_template()
    edges, zs = CONFIG.grid.edges, np.array([2.5, 3.0])
    a = dc_replace(tpl, igm={'tau_a': np.array([0.00180000001]), 'long': np.zeros(2000)})
    b = dc_replace(tpl, igm={'tau_a': np.array([0.00180000002]), 'long': np.zeros(2000)})
    long_b = np.zeros(2000)
    long_b[1000] = 1.0
    c = dc_replace(tpl, igm={'tau_a': np.array([0.00180000001]), 'long': long_b})
    keys = {_binning_key('basis', t, edges, zs) for t in (a, b, c)}
    assert len(keys) == 3
    assert _binning_key('basis', a, edges, zs) == _binning_key('basis', dc_replace(a), edges, zs)


def test_flat_chi2_has_no_error():
    """Fewer valid bins than basis vectors: the basis fits them exactly at every trial
    redshift, χ² is rounding noise (~1e-14), and its second differences were read as a
    curvature (ZERR_TPL ~ 1e4); now the error is NaN, as for any non-convex χ².  A spectrum
    with enough bins keeps a finite error."""
    rng = np.random.default_rng(2)
    tpl = synthetic_template()
    zs = redshift_grid(2.5, 3.5)
    tb = binned_basis(tpl, GRID.edges, zs)
    flux = rng.normal(0.0, 1.0, (3, GRID.nbins)) + 1.0
    ivar = np.zeros_like(flux)
    ivar[0, 500] = 1.0                             # 1 bin, 3 basis vectors
    ivar[1, 400] = 1.0
    flux[2] = rng.normal(0.0, 0.05, GRID.nbins) + spectra_at(tpl, [3.0], [[1.0, 0.5, 2.0]])[0]
    ivar[2] = 400.0
    chi2 = chi2_scan(flux, ivar, tb)
    assert np.abs(chi2[:2]).max() < 1e-9
    out = refine_redshifts(flux, ivar, np.full(3, 3.0), tb, zs, prior_weight=0)
    assert np.all(np.isnan(out['ZERR_TPL'][:2]))
    assert np.isfinite(out['ZERR_TPL'][2]) and abs(out['Z_TPL'][2] - 3.0) < 1e-3


# ---- from a hand mutation-testing pass of refine.py
def test_redshift_grid_includes_zmax():
    """The grid runs from zmin to zmax inclusive: with log10(1 + zmax) = 0.001 and
    dlogz = 2e-4 it has the 6 points log10(1 + z) = 0, 2e-4, ..., 1e-3, the last one zmax
    (the arange stop is padded by half a step because 0.001 / 2e-4 is 5 minus rounding)."""
    from lbgnet.refine import redshift_grid
    zmax = 10 ** 0.001 - 1
    zs = redshift_grid(0.0, zmax, 2e-4)
    assert zs.size == 6 and zs[0] == 0.0
    np.testing.assert_allclose(np.log10(1 + zs), np.arange(6) * 2e-4, rtol=0, atol=1e-15)
    assert zs[-1] == pytest.approx(zmax, rel=1e-12)


def test_line_on_the_top_edge_of_the_grid_has_no_box():
    """Box k covers [k, k + 1) box widths from the grid start: a line landing exactly on
    the top edge (position nboxes) is off the grid (box −1), one at the grid start is in
    box 0 and one just below the top edge in the last box."""
    from lbgnet.labels import box_position
    k = CONFIG.lines.names.index('CIV')                    # 1549.48 Å: edges hit without rounding
    civ = CONFIG.lines.wave_array[k]
    zs = np.array([GRID.wave_max / civ - 1, GRID.wave_min / civ - 1,
                   (GRID.wave_max - 1.0) / civ - 1])
    pos = box_position(civ * (1 + zs), CONFIG)
    assert pos[0] == CONFIG.nboxes and pos[1] == 0         # the edges exactly, as line_boxes sees them
    assert line_boxes(CONFIG, zs)[:, k].tolist() == [-1, 0, CONFIG.nboxes - 1]


def test_deltachi2_at_the_threshold_is_reliable():
    """reliable_redshift is ``deltachi2 >= min_deltachi2`` (documented): DELTACHI2_TPL of
    exactly MIN_DELTACHI2 = 9 is reliable, just below is not."""
    from lbgnet.refine import MIN_DELTACHI2, reliable_redshift
    assert MIN_DELTACHI2 == 9.0
    assert reliable_redshift([True], [9.0]).tolist() == [True]
    assert reliable_redshift([True, True, False], [np.nextafter(9.0, 0), np.nan, 50.0]).tolist() \
        == [False, False, False]
