"""Tests of lbgnet.sim.instrument (LSF, RESOLUTION, noise model) and its calibration."""
import numpy as np
import pytest

from conftest import reference_file
from lbgnet.config import ConfigError, load_config
from lbgnet.io import read_coadd
from lbgnet.io.skymodel import read_sky_lines
from lbgnet.sim.instrument import build_instrument, observe, pipeline_variance, resolution_for
from lbgnet.sim.lsf import FWHM_PER_SIGMA, convolve_lines, lsf_sigma, resolution_data


@pytest.fixture(scope='module')
def mock_config():
    return load_config('lbgnet-mock.yaml')


@pytest.fixture(scope='module')
def instrument(mock_config):
    return build_instrument(mock_config, read_sky_lines())


def test_lsf_matches_resolving_power(mock_config):
    wave = np.linspace(3600.0, 5800.0, 2751)
    sigma = lsf_sigma(wave, (2000.0, 3200.0))
    assert sigma[0] * FWHM_PER_SIGMA == pytest.approx(3600.0 / 2000.0)
    assert sigma[-1] * FWHM_PER_SIGMA == pytest.approx(5800.0 / 3200.0)
    with pytest.raises(ValueError):
        lsf_sigma(wave, (0.0, 3000.0))


def test_resolution_data_is_a_normalised_gaussian():
    from desispec.resolution import Resolution
    sigma_pix = np.full(200, 1.1)
    data = resolution_data(sigma_pix, 11)
    assert data.shape == (11, 200) and data.dtype == np.float32
    np.testing.assert_allclose(data.sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(data, data[::-1], atol=1e-7)        # symmetric
    # desispec reads it; a delta function comes out with variance sigma^2 + 1/12 (pixel)
    spike = np.zeros(200)
    spike[100] = 1.0
    out = Resolution(data).dot(spike)
    offs = np.arange(200) - 100
    assert np.sum(out * offs ** 2) == pytest.approx(1.1 ** 2 + 1 / 12, rel=0.02)
    with pytest.raises(ValueError):
        resolution_data(sigma_pix, 10)


def test_convolve_lines_conserves_flux():
    wave = 5000.0 + 0.8 * np.arange(500)
    fine = 5100.0 + 0.1 * np.arange(20)
    flux = np.exp(-0.5 * ((fine - 5101.0) / 0.2) ** 2)
    out = convolve_lines(fine, flux, wave, np.full(wave.size, 0.8))
    assert np.sum(out) * 0.8 == pytest.approx(np.sum(flux) * 0.1, rel=1e-3)
    assert abs(wave[np.argmax(out)] - 5101.0) <= 0.4


def test_instrument_from_config(instrument, mock_config):
    assert instrument.bands == ('b', 'r', 'z')
    assert instrument.efftime_ref == pytest.approx(8711.0)
    for arm in instrument.arms.values():
        assert np.all(arm.gain > 0) and np.all(arm.sky_cont > 0) and np.all(arm.sky_lines >= 0)
    res = resolution_for(instrument, 3)
    assert res['r'].shape == (3, 11, instrument.arms['r'].wave.size)
    bad = load_config('lbgnet-base.yaml')
    with pytest.raises(ConfigError):
        build_instrument(bad)


def test_noise_scales_with_efftime_and_flux(instrument):
    arm = instrument.arms['r']
    zero = np.zeros((2, arm.wave.size), dtype=np.float32)
    var = pipeline_variance(arm, zero, np.array([3600.0, 7200.0]), instrument.efftime_ref)
    np.testing.assert_allclose(var[0] / var[1], 2.0, rtol=1e-5)     # ivar ∝ EFFTIME
    bright = np.full((1, arm.wave.size), 5.0, dtype=np.float32)
    vb = pipeline_variance(arm, bright, np.array([3600.0]), instrument.efftime_ref)
    # object shot noise: extra variance = F / gain · T_ref / T
    np.testing.assert_allclose(vb[0] - var[0], 5.0 / arm.gain * instrument.efftime_ref / 3600.0,
                               rtol=1e-4)


def test_noise_statistics_and_determinism(instrument):
    n = 400
    models = {b: np.zeros((n, a.wave.size), dtype=np.float32) for b, a in instrument.arms.items()}
    eff = np.full(n, instrument.efftime_ref)
    flux1, ivar1 = observe(instrument, models, eff, np.random.default_rng(5))
    flux2, ivar2 = observe(instrument, models, eff, np.random.default_rng(5))
    flux3, _ = observe(instrument, models, eff, np.random.default_rng(6))
    assert all(np.array_equal(flux1[b], flux2[b]) and np.array_equal(ivar1[b], ivar2[b])
               for b in flux1)
    assert not np.array_equal(flux1['b'], flux3['b'])
    for band, arm in instrument.arms.items():
        clean = arm.sky_lines < 1e-3 * arm.sky_cont
        chi = flux1[band][:, clean] * np.sqrt(ivar1[band][:, clean])
        # flux scatter = noise_excess × pipeline σ away from sky lines (±2%: 400 spectra)
        assert np.std(chi) == pytest.approx(arm.noise_excess, rel=0.02)
        # sky-line residuals: scatter² = excess² + (ε·lines)²·ivar, beyond what ivar says
        strong = arm.sky_lines > 10 * np.sqrt(arm.background_var)
        if strong.any():
            chi_s = flux1[band][:, strong] * np.sqrt(ivar1[band][:, strong])
            expect = arm.noise_excess ** 2 + np.mean((arm.sky_residual * arm.sky_lines[strong]) ** 2
                                                     * ivar1[band][:, strong])
            # ±25%: one amplitude per line and spectrum, and b has few strong lines
            assert np.mean(chi_s ** 2) == pytest.approx(expect, rel=0.25)
            assert expect > 1.1 * arm.noise_excess ** 2
    with pytest.raises(ValueError):
        observe(instrument, models, np.zeros(n), np.random.default_rng(0))


def test_dichroic_overlaps_and_sky_lines_are_noisier(instrument):
    zero = {b: np.zeros((1, a.wave.size), dtype=np.float32) for b, a in instrument.arms.items()}
    sig = {b: np.sqrt(pipeline_variance(a, zero[b], np.array([7200.0]),
                                        instrument.efftime_ref))[0]
           for b, a in instrument.arms.items()}
    waves = instrument.waves

    def median_sigma(band, lo, hi):
        return np.median(sig[band][(waves[band] >= lo) & (waves[band] <= hi)])
    # each arm is noisier where it enters the dichroic overlap than 200 Å inside it
    # (real coadd: b 0.225 vs 0.21 (model: 3% higher), r 0.18 vs 0.12 and 0.21 vs 0.10,
    # z 0.13 vs 0.09)
    assert median_sigma('b', 5760, 5800) > 1.02 * median_sigma('b', 5560, 5760)
    assert median_sigma('r', 5760, 5800) > 1.3 * median_sigma('r', 5800, 6000)
    assert median_sigma('r', 7520, 7620) > 1.3 * median_sigma('r', 7320, 7520)
    assert median_sigma('z', 7520, 7620) > 1.3 * median_sigma('z', 7620, 7820)
    # [OI] 5577 (5578.9 Å vacuum) stands out in the b arm
    near = np.abs(waves['b'] - 5578.9) < 1.0
    assert sig['b'][near].max() > 1.5 * np.median(sig['b'])


def test_noise_model_matches_real_coadd(instrument):
    """Pipeline σ of the model vs the real SV1 coadd it was calibrated on."""
    from lbgnet.sim.calibrate import sigma_comparison
    coadd = read_coadd(reference_file('desi-coadd', 'coadd-sv1-dark-80605-25fibres.fits'))
    expected = {'b': 0.24, 'r': 0.10, 'z': 0.08}      # README of the reference data
    for band, (real, model) in sigma_comparison(coadd, instrument).items():
        med_real, med_model = np.nanmedian(real), np.median(model)
        assert med_model == pytest.approx(med_real, rel=0.05)
        assert med_model == pytest.approx(expected[band], rel=0.15)
        ratio = np.median(model, axis=0) / np.nanmedian(real, axis=0)
        # per pixel (sky lines and arm edges included): 90% within ±25%
        assert np.mean(np.abs(ratio - 1) < 0.25) > 0.9


def test_calibration_reproduces_shipped_parameters(mock_config):
    from lbgnet.sim.calibrate import calibrate_noise
    coadd = read_coadd(reference_file('desi-coadd', 'coadd-sv1-dark-80605-25fibres.fits'))
    inst = mock_config.extra['instrument']
    fit = calibrate_noise(coadd, inst['resolution'], read_sky_lines())
    shipped = inst['noise']
    for band in ('b', 'r', 'z'):
        np.testing.assert_allclose(fit['gain'][band]['value'], shipped['gain'][band]['value'],
                                   rtol=1e-3)
        assert fit['read_noise_var'][band] == pytest.approx(shipped['read_noise_var'][band],
                                                            rel=1e-3)
        assert fit['sky_residual'][band] == pytest.approx(shipped['sky_residual'][band], rel=1e-3)
    assert fit['sky_line_shift'] == shipped['sky_line_shift']


#: Per-fibre flux (1e-17 erg/s/cm²/Å) of the synthetic coadd: five faint fibres (below
#: lbgnet.sim.calibrate.FAINT_FLUX) and three bright ones.
SYNTH_FLUX = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 3.0, 10.0, 30.0])
SYNTH_GAIN, SYNTH_BACKGROUND = 200.0, 0.5


def _synthetic_coadd(instrument, flux=SYNTH_FLUX):
    """A coadd on the mock's wavelength grids whose pipeline variance is exactly
    SYNTH_BACKGROUND + flux / SYNTH_GAIN (constant flux per fibre), and a function
    replacing its fields."""
    import dataclasses
    from lbgnet.io import CoaddData
    wave = {band: np.asarray(arm.wave, dtype=np.float64) for band, arm in instrument.arms.items()}
    fluxes = {b: np.repeat(flux[:, None], w.size, axis=1).astype(np.float32)
              for b, w in wave.items()}
    ivars = {b: (1.0 / (SYNTH_BACKGROUND + f / SYNTH_GAIN)).astype(np.float32)
             for b, f in fluxes.items()}
    coadd = CoaddData('synthetic.fits', tuple(wave), wave, fluxes, ivars,
                      {b: None for b in wave})
    return coadd, lambda **kw: dataclasses.replace(coadd, **kw)


@pytest.mark.parametrize('case, message', [
    ('dead', '0 of 8 fibres are live (a valid pixel in every arm), needs >= 3'),
    ('two_live', '2 of 8 fibres are live (a valid pixel in every arm), needs >= 3'),
    ('no_faint', 'the b arm at 3600-3630 A has 8 live fibres with a valid pixel, 0 of '
                 'them faint (median flux < 1) and 8 bright; needs >= 3 (the gain '
                 'regression), >= 1 faint (the background) and >= 1 bright'),
    ('no_bright', 'the b arm at 3600-3630 A has 8 live fibres with a valid pixel, 8 of '
                  'them faint (median flux < 1) and 0 bright; needs >= 3'),
    ('masked_chunk', 'the r arm at 5790-5820 A has 0 live fibres with a valid pixel, 0 of '
                     'them faint'),
    ('flat_variance', 'in the b arm at 3600-3630 A the variance of the 8 fibres with a '
                      'valid pixel does not grow with their flux')],
    ids=['dead', 'two_live', 'no_faint', 'no_bright', 'masked_chunk', 'flat_variance'])
def test_calibration_refuses_unusable_coadd(mock_config, instrument, case, message):
    """calibrate_noise raises a ValueError saying what the coadd lacks (it returned a fit:
    gains of 10**6, a read noise of 1e-309 or NaN, or failed in lstsq's SVD)."""
    from lbgnet.sim.calibrate import calibrate_noise
    coadd, replace = _synthetic_coadd(instrument)
    ivar = {b: v.copy() for b, v in coadd.ivar.items()}
    if case == 'dead':
        coadd = replace(ivar={b: np.zeros_like(v) for b, v in ivar.items()})
    elif case == 'two_live':
        for v in ivar.values():
            v[2:] = 0
        coadd = replace(ivar=ivar)
    elif case == 'no_faint':
        coadd, _ = _synthetic_coadd(instrument, SYNTH_FLUX + 2.0)
    elif case == 'no_bright':
        coadd, _ = _synthetic_coadd(instrument, SYNTH_FLUX / 100.0)
    elif case == 'masked_chunk':
        wave = coadd.wave['r']
        ivar['r'][:, (wave >= 5790) & (wave < 5820)] = 0
        coadd = replace(ivar=ivar)
    else:
        coadd = replace(ivar={b: np.full_like(v, 2.0) for b, v in ivar.items()})
    with pytest.raises(ValueError) as err:
        calibrate_noise(coadd, mock_config.extra['instrument']['resolution'],
                        read_sky_lines())
    assert str(err.value).startswith('synthetic.fits: cannot calibrate the noise: ')
    assert message in str(err.value)


def test_calibration_gain_skips_fibres_without_pixels_in_a_chunk(mock_config, instrument):
    """A fibre with no valid pixel in one gain chunk (but live) is left out of that chunk's
    regression; its NaN variance made lstsq fail ("SVD did not converge")."""
    from lbgnet.sim.calibrate import calibrate_noise
    coadd, replace = _synthetic_coadd(instrument)
    ivar = {b: v.copy() for b, v in coadd.ivar.items()}
    wave = coadd.wave['r']
    ivar['r'][0, (wave >= 5790) & (wave < 5820)] = 0
    fit = calibrate_noise(replace(ivar=ivar), mock_config.extra['instrument']['resolution'],
                          read_sky_lines())
    for band in coadd.bands:        # the variance is exactly background + flux / gain
        np.testing.assert_allclose(fit['gain'][band]['value'], SYNTH_GAIN, rtol=1e-3)


def test_ivar_is_the_inverse_pipeline_variance(instrument):
    """observe's ivar is exactly 1 / pipeline_variance (it does not include noise_excess)."""
    rng = np.random.default_rng(1)
    models = {b: rng.uniform(0, 3, (4, a.wave.size)).astype(np.float32)
              for b, a in instrument.arms.items()}
    eff = np.array([2000.0, 4000.0, 8000.0, 16000.0])
    _, ivars = observe(instrument, models, eff, rng)
    for band, arm in instrument.arms.items():
        var = pipeline_variance(arm, models[band], eff, instrument.efftime_ref)
        np.testing.assert_allclose(ivars[band], 1.0 / var, rtol=1e-6)


def test_negative_model_flux_adds_no_shot_noise(instrument):
    """Negative object flux (e.g. absorption below zero) counts as zero in the variance."""
    arm = instrument.arms['b']
    zero = np.zeros((1, arm.wave.size), dtype=np.float32)
    eff = np.array([5000.0])
    var = pipeline_variance(arm, zero, eff, instrument.efftime_ref)
    ref = instrument.efftime_ref
    np.testing.assert_array_equal(pipeline_variance(arm, zero - 2.0, eff, ref), var)
    np.testing.assert_allclose(var[0], arm.background_var * ref / 5000.0, rtol=1e-6)
    np.testing.assert_allclose(arm.background_var, (arm.sky_cont + arm.sky_lines) / arm.gain
                               + arm.read_var / arm.gain ** 2)


def test_sky_residual_is_one_amplitude_per_line(instrument):
    """Without pixel noise, flux - model is a ∝ sky_residual × sky_lines on each run of residual
    pixels, one amplitude a per (line, spectrum), and zero elsewhere."""
    import dataclasses
    from lbgnet.sim.instrument import observe_arm
    base = instrument.arms['r']
    lines = np.zeros(base.wave.size)
    lines[[100, 101, 102, 103, 200, 201, 203]] = [1.0, 3.0, 3.0, 1.0, 2.0, 2.0, 4.0]
    arm = dataclasses.replace(base, sky_lines=lines, noise_excess=0.0, sky_residual=0.5)
    pix, segment, nseg = arm.residual_segments
    np.testing.assert_array_equal(pix, [100, 101, 102, 103, 200, 201, 203])
    np.testing.assert_array_equal(segment, [0, 0, 0, 0, 1, 1, 2])
    assert nseg == 3
    model = np.ones((50, base.wave.size), dtype=np.float32)
    flux, _ = observe_arm(arm, model, np.full(50, 5000.0), instrument.efftime_ref,
                          np.random.default_rng(0))
    resid = flux - model
    assert np.all(np.delete(resid, pix, axis=1) == 0)
    amp = resid[:, pix] / (0.5 * lines[pix])
    for seg in range(3):
        cols = amp[:, segment == seg]
        np.testing.assert_allclose(cols, cols[:, :1].repeat(cols.shape[1], axis=1), rtol=1e-5)
    assert np.std(amp[:, [0, 4, 6]]) == pytest.approx(1.0, rel=0.2)
    assert not np.allclose(amp[:, 0], amp[:, 4]) and not np.allclose(amp[:, 4], amp[:, 6])


def test_resolution_width_is_the_lsf_in_pixels(instrument):
    """Second moment of each RESOLUTION column = (lsf_sigma / pixel size)² + 1/12 pixel²."""
    res = resolution_for(instrument, 2)
    offsets = np.arange(instrument.ndiag)[::-1] - instrument.ndiag // 2
    for band, arm in instrument.arms.items():
        data = res[band][1]
        moment = np.sum(data * offsets[:, None] ** 2, axis=0)
        expect = (arm.lsf_sigma / np.gradient(arm.wave)) ** 2 + 1 / 12
        np.testing.assert_allclose(moment[10:-10], expect[10:-10], rtol=0.01)
