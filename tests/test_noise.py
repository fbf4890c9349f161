"""The calibrated noise model (lbgnet.noise) and the grid ivar under it (lbgnet.preprocess)."""
import numpy as np
import pytest
from lbg_testdata import write_test_coadd

from lbgnet.config import load_config
from lbgnet.io.coadd import read_coadd
from lbgnet.noise import NoiseModel, load_noise_model
from lbgnet.preprocess import (accumulate_arms, coadd_to_grid, grid_effective_ivar,
                               grid_noise_ivar)


@pytest.fixture(scope='module')
def noise():
    return load_noise_model()


def test_effective_ivar_adds_the_excess_and_the_sky_residuals(noise):
    """Off the sky lines the ivar is divided by noise_excess²; on them it is smaller still;
    invalid ivar stays 0; the residuals follow the wavelengths given."""
    for cam in ('b', 'r', 'z'):
        wave, resid, excess = noise.wave[cam], noise.resid_var[cam], noise.excess[cam]
        assert 1.0 < excess < 1.2                   # calibrated on the real coadd: 3-9 %
        assert resid.max() > 0 and np.mean(resid > 0) < 0.5
        ivar = np.full((2, wave.size), 25.0)
        ivar[1, :3] = [0.0, np.nan, -1.0]
        eff = noise.effective_ivar(cam, wave, ivar)
        quiet, line = resid == 0, resid > 0
        assert np.allclose(eff[0, quiet], 25.0 / excess ** 2)
        assert np.allclose(eff[0, line], 1.0 / (excess ** 2 / 25.0 + resid[line]))
        assert np.all(eff[0, line] < 25.0 / excess ** 2)
        assert np.all(eff[1, :3] == 0)
        # the residual variance moves with the wavelengths (a sub-range of the pixels)
        part = slice(100, 400)
        assert np.allclose(noise.effective_ivar(cam, wave[part], ivar[:, part]), eff[:, part])
    with pytest.raises(KeyError):
        noise.effective_ivar('x', noise.wave['b'], np.ones((1, noise.wave['b'].size)))


def test_noise_model_from_a_toy_instrument():
    """NoiseModel.from_instrument: excess and (sky_residual × sky line)² on the residual pixels."""
    from types import SimpleNamespace
    lines = np.array([0.0, 0.0, 5.0, 0.0])
    arm = SimpleNamespace(wave=np.arange(4.0), noise_excess=1.5, sky_residual=0.1,
                          sky_lines=lines, residual_segments=(np.array([2]), np.array([0]), 1))
    model = NoiseModel.from_instrument(SimpleNamespace(arms={'b': arm}))
    assert model.excess == {'b': 1.5}
    assert np.allclose(model.resid_var['b'], [0, 0, 0.25, 0])
    assert model.resid_line['b'].tolist() == [-1, -1, 0, -1]
    assert np.allclose(model.effective_ivar('b', arm.wave, np.full((1, 4), 4.0)),
                       [[4 / 2.25, 4 / 2.25, 1 / (2.25 / 4 + 0.25), 4 / 2.25]])


def test_grid_effective_ivar_propagates_the_variance():
    """The grid ivar of the ivar-weighted mean: the pipeline grid ivar when the pixels
    scatter as their ivar says, 1/k² of it when they scatter k times more, and computed by
    hand for unequal excesses; pixels with a NaN flux are left out as in the gridding."""
    grid = load_config().grid
    rng = np.random.default_rng(3)
    wave = np.arange(4000.0, 4100.0, 0.8)
    flux = rng.normal(1.0, 1.0, (2, wave.size))
    ivar = rng.uniform(1.0, 4.0, (2, wave.size))
    _, isum, _ = accumulate_arms([wave], [flux], [ivar], grid)
    assert np.allclose(grid_effective_ivar([wave], [flux], [ivar], [ivar], grid), isum)
    assert np.allclose(grid_effective_ivar([wave], [flux], [ivar], [ivar / 4], grid), isum / 4)
    eff = ivar / rng.uniform(1.0, 3.0, ivar.shape)
    got = grid_effective_ivar([wave], [flux], [ivar], [eff], grid)
    bins = grid.bin_index(wave)
    for b in np.unique(bins):
        sel = bins == b
        want = ivar[:, sel].sum(axis=1) ** 2 / (ivar[:, sel] ** 2 / eff[:, sel]).sum(axis=1)
        assert np.allclose(got[:, b], want)
    nan_flux = flux.copy()
    nan_flux[0, 5] = np.nan
    dropped = ivar.copy()
    dropped[0, 5] = 0.0
    assert np.allclose(grid_effective_ivar([wave], [nan_flux], [ivar], [eff], grid),
                       grid_effective_ivar([wave], [flux], [dropped], [eff], grid))


def test_coadd_to_grid_adds_the_noise_ivar_only_when_asked(tmp_path, noise):
    path = str(tmp_path / 'coadd.fits')
    write_test_coadd(path, 6)
    coadd = read_coadd(path)
    grid = load_config().grid
    X, info = coadd_to_grid(coadd, grid)
    assert info.noise_ivar is None
    X2, info2 = coadd_to_grid(coadd, grid, noise)
    np.testing.assert_array_equal(X, X2)               # the network input is unchanged
    np.testing.assert_array_equal(info.ivar, info2.ivar)
    assert info2.noise_ivar.shape == info.ivar.shape
    assert np.all((info2.noise_ivar > 0) == (info.ivar > 0))
    # every bin scatters more than the pipeline says
    on = info.ivar > 0
    ratio = info2.noise_ivar[on] / info.ivar[on]
    assert ratio.max() < 1.0 and ratio.min() > 0
    # bins of one camera without sky-line residuals: exactly that camera's excess²
    bins = np.arange(grid.nbins)
    owner = np.full(grid.nbins, '', dtype=object)
    noisy = np.zeros(grid.nbins, dtype=bool)
    for cam in ('b', 'r', 'z'):
        wave = coadd.wave[cam]
        b = grid.bin_index(wave)
        inside = (b >= 0) & (b < grid.nbins)
        shared = (owner[b[inside]] != '') & (owner[b[inside]] != cam)
        noisy[b[inside][shared]] = True                      # overlap bins: two cameras
        owner[b[inside]] = cam
        resid = np.interp(wave, noise.wave[cam], noise.resid_var[cam], left=0, right=0)
        noisy[b[inside & (resid > 0)]] = True
    for cam in ('b', 'r', 'z'):
        quiet = bins[(owner == cam) & ~noisy]
        assert quiet.size > 20
        got = info2.noise_ivar[:, quiet] / np.where(info.ivar[:, quiet] > 0, info.ivar[:, quiet], 1)
        np.testing.assert_allclose(got[info.ivar[:, quiet] > 0], 1 / noise.excess[cam] ** 2,
                                   rtol=1e-9)
    # masked pixels carry no weight, as in the gridding: masking one is dropping it
    pix = np.flatnonzero(coadd.ivar['r'][0] > 0)[50]
    masked = read_coadd(path)
    masked.mask = {b: np.zeros(masked.flux[b].shape, dtype=np.int32) for b in masked.bands}
    masked.mask['r'][0, pix] = 1
    dropped = read_coadd(path)
    dropped.ivar['r'][0, pix] = 0
    np.testing.assert_array_equal(coadd_to_grid(masked, grid, noise)[1].noise_ivar,
                                  coadd_to_grid(dropped, grid, noise)[1].noise_ivar)
    assert not np.array_equal(coadd_to_grid(masked, grid, noise)[1].noise_ivar, info2.noise_ivar)


def toy_model(excess=1.2):
    """One camera on a 1 Å grid 4000-4040 Å: two sky lines, one across a bin edge."""
    wave = np.arange(4000.0, 4040.0)
    var = np.zeros(wave.size)
    line = np.full(wave.size, -1)
    var[5:8], line[5:8] = [0.25, 0.64, 0.25], 0          # inside bin [4000, 4008)
    var[14:18], line[14:18] = [0.01, 0.16, 0.16, 0.01], 1  # across the edge at 4016
    return NoiseModel({'b': excess}, {'b': wave}, {'b': var}, {'b': line}), wave


def test_residual_profile_maps_the_nearest_model_pixel():
    model, wave = toy_model()
    amp, line = model.residual_profile('b', wave)
    np.testing.assert_allclose(amp, np.sqrt(model.resid_var['b']))
    np.testing.assert_array_equal(line, model.resid_line['b'])
    amp, line = model.residual_profile('b', np.array([3990.0, 4005.3, 4006.4, 4015.9, 4100.0]))
    np.testing.assert_allclose(amp, [0, 0.5, 0.8, 0.4, 0])
    assert line.tolist() == [-1, 0, 0, 1, -1]


def test_residual_profile_takes_a_model_pixel_within_half_a_step_only():
    """Beyond the model's wavelengths a pixel takes the end pixel's residual when within
    half a model pixel of it, and none further out."""
    wave = np.arange(4000.0, 4010.0)
    var, line = np.zeros(10), np.full(10, -1)
    var[[0, 9]], line[[0, 9]] = 0.25, [0, 1]
    model = NoiseModel({'b': 1.0}, {'b': wave}, {'b': var}, {'b': line})
    amp, idx = model.residual_profile('b', np.array([3999.4, 3999.6, 4009.45, 4009.55]))
    np.testing.assert_allclose(amp, [0, 0.5, 0.5, 0])
    assert idx.tolist() == [-1, 0, 1, -1]


def test_grid_noise_ivar_is_the_variance_of_the_gridded_flux():
    """A Monte Carlo of the noise model (excess × σ per pixel, one amplitude per sky line)
    through the production gridding: the scatter of the bin means is 1 / grid_noise_ivar,
    which differs from the independent-pixel formula in the bins holding a line."""
    from lbgnet.config import Grid
    model, wave = toy_model()
    grid = Grid(4000.0, 8.0, 5)
    rng = np.random.default_rng(8)
    nreal = 40000
    ivar = np.tile(rng.uniform(2.0, 6.0, wave.size), (nreal, 1))
    ivar[:, 20] = 0.0                                     # a dead pixel
    sigma = np.where(ivar > 0, 1 / np.sqrt(np.where(ivar > 0, ivar, 1)), 0)
    amp = np.sqrt(model.resid_var['b'])
    lines = rng.standard_normal((nreal, 2))
    flux = model.excess['b'] * sigma * rng.standard_normal(ivar.shape)
    flux += np.where(model.resid_line['b'] >= 0, lines[:, np.maximum(model.resid_line['b'], 0)]
                     * amp, 0.0)
    fsum, isum, _ = accumulate_arms([wave], [flux], [ivar], grid)
    scatter = np.var(fsum / isum, axis=0)
    got = grid_noise_ivar(['b'], [wave], [flux[:2]], [ivar[:2]], grid, model)[0]
    np.testing.assert_allclose(1 / got, scatter, rtol=0.03)
    indep = grid_effective_ivar([wave], [flux[:2]], [ivar[:2]],
                                [model.effective_ivar('b', wave, ivar[:2])], grid)[0]
    assert 1 / indep[0] < 0.8 * scatter[0]               # the coherent line is missed
    np.testing.assert_allclose(indep[3:], got[3:])        # no line there: the same


def test_variance_sums_keep_the_noisiest_pixels_and_do_not_depend_on_flux_units():
    """The per-pixel variance factors go through the accumulation without the pixel S/N
    cut (they are not fluxes): a pixel on a bright sky residual (ivar / eff_ivar = 1e5)
    stays in the bin's variance — it was dropped, giving a bin ivar 8,000 times too
    large — and the noise ivar of a spectrum in erg units (ivar ~ 1e15) is that of the
    same spectrum in 1e-17 units — it was 0."""
    grid = load_config().grid
    wave = grid.wave_min + 0.8 * np.arange(10)                 # the 10 pixels of bin 0
    flux, ivar = np.zeros((1, 10)), np.full((1, 10), 1000.0)
    eff = ivar / 1.1
    eff[0, 3] = 1e-2
    expected = ivar.sum() ** 2 / (ivar[0] ** 2 / eff[0]).sum()
    got = grid_effective_ivar([wave], [flux], [ivar], [eff], grid)[0, 0]
    assert got == pytest.approx(expected, rel=1e-12)
    wave = grid.wave_min + 0.8 * np.arange(20)
    model = NoiseModel({'b': 1.05}, {'b': wave}, {'b': np.zeros(20)}, {'b': np.full(20, -1)})
    ratios = []
    for scale in (1.0, 1e-7):
        flux, ivar = np.full((1, 20), scale), np.full((1, 20), 4.0 / scale ** 2)
        _, isum, _ = accumulate_arms([wave], [flux], [ivar], grid)
        ratios.append(grid_noise_ivar(['b'], [wave], [flux], [ivar], grid, model)[0, :2]
                      / isum[0, :2])
    np.testing.assert_allclose(ratios, 1 / 1.05 ** 2, rtol=1e-12)


def test_grid_noise_ivar_by_hand_with_invalid_pixels():
    """[Σ w excess² + Σ_lines (Σ w r)²] / (Σ w)² over the valid pixels only: a masked
    pixel, a NaN flux and a pixel above the S/N cut inside the lines leave both sums, as
    they leave the gridded flux."""
    from lbgnet.config import Grid
    from lbgnet.preprocess import MAX_PIXEL_SNR
    model, wave = toy_model(excess=1.2)
    grid = Grid(4000.0, 8.0, 5)
    rng = np.random.default_rng(3)
    ivar = rng.uniform(1.0, 9.0, (2, wave.size))
    flux = rng.normal(0.0, 1.0, (2, wave.size))
    mask = np.zeros((2, wave.size), dtype=np.int32)
    mask[0, 6] = 1                                   # in line 0
    flux[0, 15] = np.nan                             # in line 1
    flux[1, 14] = 2 * MAX_PIXEL_SNR / np.sqrt(ivar[1, 14])   # in line 1, above the cut
    got = grid_noise_ivar(['b'], [wave], [flux], [ivar], grid, model, [mask])
    valid = (mask == 0) & np.isfinite(flux) & (np.abs(flux) * np.sqrt(ivar) <= MAX_PIXEL_SNR)
    w = np.where(valid, ivar, 0.0)
    amp, line = np.sqrt(model.resid_var['b']), model.resid_line['b']
    pixbin = ((wave - 4000.0) // 8).astype(int)
    want = np.zeros((2, 5))
    for k in range(5):
        inbin = pixbin == k
        var = 1.2 ** 2 * w[:, inbin].sum(axis=1)
        for ln in (0, 1):
            sel = inbin & (line == ln)
            var = var + (w[:, sel] * amp[sel]).sum(axis=1) ** 2
        want[:, k] = w[:, inbin].sum(axis=1) ** 2 / var
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0, 0] != grid_noise_ivar(['b'], [wave], [flux], [ivar], grid, model)[0, 0]


def test_arm_factors_weight_each_arm_summed_ivar():
    """accumulate_arms(arm_factors=c) adds Σ_a c_a Σivar_a from the same pass, and leaves
    the flux and ivar sums bit for bit as without it (overlapping arms)."""
    grid = load_config().grid
    rng = np.random.default_rng(5)
    waves = [np.arange(5700.0, 5900.0, 0.8), np.arange(5760.0, 6000.0, 0.8)]
    fluxes = [rng.normal(size=(3, w.size)) for w in waves]
    ivars = [rng.uniform(0.5, 2.0, (3, w.size)).astype(np.float32) for w in waves]
    fluxes[1][1, 10] = np.nan
    plain = accumulate_arms(waves, fluxes, ivars, grid)
    fsum, isum, valid, weighted = accumulate_arms(waves, fluxes, ivars, grid,
                                                  arm_factors=[2.0, 3.0])
    for a, b in zip(plain, (fsum, isum, valid)):
        assert np.array_equal(a, b)
    single = [accumulate_arms([w], [f], [i], grid)[1] for w, f, i in zip(waves, fluxes, ivars)]
    np.testing.assert_allclose(weighted, 2.0 * single[0] + 3.0 * single[1], rtol=1e-14)
    assert np.any((single[0] > 0) & (single[1] > 0))          # the arms share bins
    with pytest.raises(ValueError, match='arm factors'):
        accumulate_arms(waves, fluxes, ivars, grid, arm_factors=[1.0])


def test_noise_model_keeps_each_pixel_s_sky_line():
    """from_instrument labels each residual pixel with its own sky line (segment), so that
    two lines get independent amplitudes; one label for all would add them coherently."""
    from types import SimpleNamespace
    arm = SimpleNamespace(wave=np.arange(5.0), noise_excess=1.0, sky_residual=0.1,
                          sky_lines=np.array([0.0, 5.0, 3.0, 4.0, 0.0]),
                          residual_segments=(np.array([1, 2, 3]), np.array([0, 0, 1]), 2))
    model = NoiseModel.from_instrument(SimpleNamespace(arms={'z': arm}))
    assert model.resid_line['z'].tolist() == [-1, 0, 0, 1, -1]
    np.testing.assert_allclose(model.resid_var['z'], [0, 0.25, 0.09, 0.16, 0])


def test_residual_profile_gives_no_line_where_the_residual_is_zero():
    """A model pixel inside a sky line's segment whose residual is 0 (no sky flux there)
    carries no residual: its line index is -1, as documented (-1: no residual)."""
    wave = np.arange(4000.0, 4006.0)
    var = np.array([0.0, 0.25, 0.0, 0.36, 0.0, 0.0])
    line = np.array([-1, 0, 0, 0, -1, -1])
    model = NoiseModel({'b': 1.0}, {'b': wave}, {'b': var}, {'b': line})
    amp, idx = model.residual_profile('b', wave)
    np.testing.assert_allclose(amp, [0, 0.5, 0, 0.6, 0, 0])
    assert idx.tolist() == [-1, 0, -1, 0, -1, -1]


def test_residual_profile_half_a_step_away_is_within():
    """A pixel exactly half a model pixel beyond either end (3999.5, 4009.5 Å, exact in
    binary) is "within half a model pixel" and takes the end pixel's residual."""
    wave = np.arange(4000.0, 4010.0)
    var, line = np.zeros(10), np.full(10, -1)
    var[[0, 9]], line[[0, 9]] = 0.25, [0, 1]
    model = NoiseModel({'b': 1.0}, {'b': wave}, {'b': var}, {'b': line})
    amp, idx = model.residual_profile('b', np.array([3999.5, 4009.5]))
    np.testing.assert_allclose(amp, [0.5, 0.5])
    assert idx.tolist() == [0, 1]
