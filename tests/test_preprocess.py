"""Tests of lbgnet.preprocess: rebinning invariants, masking, edges, empty spectra, real data."""
import os

import numpy as np
import pytest

from lbgnet.config import Grid
from lbgnet.preprocess import grid_channels, grid_spectra, load_coadd_grid, rebin_arms

from conftest import reference_file

GRID = Grid(3600.0, 8.0, 800)


def _arm(lo, hi, nspec, rng, pixel=0.8):
    wave = np.round(lo + pixel * np.arange(int(round((hi - lo) / pixel)) + 1), 4)
    flux = rng.normal(1.0, 0.5, (nspec, wave.size)).astype(np.float32)
    ivar = rng.uniform(0.5, 4.0, (nspec, wave.size)).astype(np.float32)
    return wave, flux, ivar


def test_rebin_conserves_weighted_mean_and_total_ivar():
    rng = np.random.default_rng(1)
    wave, flux, ivar = _arm(3600.0, 5800.0, 3, rng)
    fbin, ibin, _ = rebin_arms([wave], [flux], [ivar], GRID)
    # total ivar conserved
    np.testing.assert_allclose(ibin.sum(1), ivar.astype(np.float64).sum(1), rtol=1e-6)
    # ivar-weighted mean flux conserved (over the whole arm)
    mean_in = (flux * ivar).astype(np.float64).sum(1) / ivar.astype(np.float64).sum(1)
    mean_out = (fbin * ibin).sum(1) / ibin.sum(1)
    np.testing.assert_allclose(mean_out, mean_in, rtol=1e-6)
    # one bin by hand: pixels 3600.0 ... 3607.2 (10 pixels) form bin 0
    w, f = ivar[0, :10].astype(np.float64), flux[0, :10].astype(np.float64)
    assert fbin[0, 0] == pytest.approx((w * f).sum() / w.sum(), rel=1e-6)
    assert ibin[0, 0] == pytest.approx(w.sum(), rel=1e-6)


def test_every_bin_gets_exactly_ten_pixels():
    wave = np.round(3600.0 + 0.8 * np.arange(int((9824.0 - 3600.0) / 0.8) + 1), 4)
    ones = np.ones((1, wave.size), dtype=np.float32)
    _, ibin, _ = rebin_arms([wave], [ones], [ones], GRID)
    full = int((9824.0 - 3600.0) // 8.0)
    assert np.all(ibin[0, :full] == 10)
    assert ibin[0, full] == 1          # 9824.0 alone starts bin 778
    assert np.all(ibin[0, full + 1:] == 0)


def test_edge_pixels_land_in_the_right_bin():
    # values just below an edge through floating-point noise belong to the upper bin
    wave = np.array([3607.9999999999995, 3608.0, 5799.999999999999, 5800.0, 5807.2, 5808.0])
    idx = GRID.bin_index(wave)
    np.testing.assert_array_equal(idx, [1, 1, 275, 275, 275, 276])
    np.testing.assert_array_equal(GRID.bin_index([3590.0, 3600.0, 9999.2, 10000.0]), [-1, 0, 799, 800])
    # pixels outside the grid are ignored, those inside counted once
    wave = np.array([3590.0, 3600.0, 3600.8, 9999.2, 10000.0])
    ones = np.ones((1, 5), dtype=np.float32)
    _, ibin, _ = rebin_arms([wave], [ones], [ones], GRID)
    assert ibin.sum() == 3 and ibin[0, 0] == 2 and ibin[0, 799] == 1


def test_overlap_combined_not_overwritten():
    rng = np.random.default_rng(2)
    b = _arm(3600.0, 5800.0, 2, rng)
    r = _arm(5760.0, 7620.0, 2, rng)
    fbin, ibin, _ = rebin_arms([b[0], r[0]], [b[1], r[1]], [b[2], r[2]], GRID)
    k = GRID.bin_index(5770.0)                     # bin 271: 5768-5776, in both arms
    sel_b = GRID.bin_index(b[0]) == k
    sel_r = GRID.bin_index(r[0]) == k
    w = np.concatenate([b[2][:, sel_b], r[2][:, sel_r]], axis=1).astype(np.float64)
    f = np.concatenate([b[1][:, sel_b], r[1][:, sel_r]], axis=1).astype(np.float64)
    assert sel_b.sum() == 10 and sel_r.sum() == 10
    np.testing.assert_allclose(ibin[:, k], w.sum(1), rtol=1e-6)
    np.testing.assert_allclose(fbin[:, k], (w * f).sum(1) / w.sum(1), rtol=1e-6)


def test_arm_shapes_are_checked():
    """Arrays whose shapes disagree with their arm's wavelengths, or arms without a
    mask entry, are a ValueError; the compiled pass would otherwise read past the
    arrays (garbage sums) or silently drop the unmatched arms."""
    rng = np.random.default_rng(3)
    b = _arm(3600.0, 5800.0, 2, rng)
    r = _arm(5760.0, 7620.0, 2, rng)
    with pytest.raises(ValueError, match=r'arm 0: ivar has shape \(2, 2650\), expected \(2, 2751\)'):
        rebin_arms([b[0]], [b[1]], [b[2][:, :-101]], GRID)
    with pytest.raises(ValueError, match=r'arm 0: flux has shape \(2, 2746\)'):
        rebin_arms([b[0]], [b[1][:, :-5]], [b[2][:, :-5]], GRID)
    with pytest.raises(ValueError, match=r'arm 1: flux has shape \(3, 2326\)'):
        rebin_arms([b[0], r[0]], [b[1], np.vstack([r[1], r[1][:1]])], [b[2], r[2]], GRID)
    with pytest.raises(ValueError, match='2 wavelength arrays but 2 flux, 2 ivar and 1 mask'):
        rebin_arms([b[0], r[0]], [b[1], r[1]], [b[2], r[2]], GRID,
                   masks=[np.zeros(b[1].shape, dtype=np.int32)])
    with pytest.raises(ValueError, match=r'arm 0: flux must be 2-D \(spectra, wavelengths\), '
                                         r'not of shape \(2751,\)'):
        rebin_arms([b[0]], [b[1][0]], [b[2][0]], GRID)


def test_big_endian_arrays_match_native():
    """Big-endian arrays (astropy.io.fits data) grid exactly as native ones."""
    rng = np.random.default_rng(4)
    wave, flux, ivar = _arm(3600.0, 5800.0, 3, rng)
    mask = (rng.uniform(size=flux.shape) < 0.1).astype(np.int32)
    want = rebin_arms([wave], [flux], [ivar], GRID, masks=[mask])
    got = rebin_arms([wave], [flux.astype('>f4')], [ivar.astype('>f4')], GRID,
                     masks=[mask.astype('>i4')])
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('kind', ['mask', 'nan_flux', 'inf_flux', 'nan_ivar', 'zero_ivar', 'neg_ivar',
                                  'absurd_flux'])
def test_invalid_pixels_carry_no_weight(kind):
    rng = np.random.default_rng(3)
    wave, flux, ivar = _arm(3600.0, 5800.0, 1, rng)
    ref_f, ref_i, _ = rebin_arms([wave], [flux.copy()], [ivar.copy()], GRID)
    mask = np.zeros(flux.shape, dtype=np.int32)
    bad = 5                                           # a pixel of bin 0
    flux2, ivar2 = flux.copy(), ivar.copy()
    if kind == 'mask':
        mask[0, bad] = 1
        flux2[0, bad] = 50.0          # must be ignored (a plausible value: only the mask
                                      # removes it, not the S/N cut)
    elif kind == 'nan_flux':
        flux2[0, bad] = np.nan
    elif kind == 'inf_flux':
        flux2[0, bad] = np.inf
    elif kind == 'nan_ivar':
        ivar2[0, bad] = np.nan
    elif kind == 'zero_ivar':
        ivar2[0, bad] = 0.0
        flux2[0, bad] = 1e6
    elif kind == 'neg_ivar':
        ivar2[0, bad] = -1.0
    elif kind == 'absurd_flux':                      # finite, but S/N ~1e38
        flux2[0, bad], ivar2[0, bad] = 3e38, 1.0
    fbin, ibin, _ = rebin_arms([wave], [flux2], [ivar2], GRID, masks=[mask])
    keep = np.arange(10) != bad
    w, f = ivar[0, :10][keep].astype(np.float64), flux[0, :10][keep].astype(np.float64)
    assert np.isfinite(fbin).all() and np.isfinite(ibin).all()
    assert ibin[0, 0] == pytest.approx(w.sum(), rel=1e-6)
    assert fbin[0, 0] == pytest.approx((w * f).sum() / w.sum(), rel=1e-6)
    np.testing.assert_array_equal(fbin[0, 1:], ref_f[0, 1:])


def test_corrupt_pixels_near_float32_limit_leave_finite_channels_and_noise_ivar():
    """A bin of flux ~3e38 (finite, ivar 1) once overflowed the float32 S/N channel (NaN
    network output); such pixels are invalid in every gridding path, consistently."""
    from lbgnet.noise import load_noise_model
    from lbgnet.preprocess import MAX_PIXEL_SNR, grid_noise_ivar, usable_pixels

    rng = np.random.default_rng(5)
    wave, flux, ivar = _arm(3600.0, 5800.0, 2, rng)
    flux[0, :10] = 3e38                               # all of bin 0
    ivar[0, :10] = 1.0
    flux[1, 20] = 0.9 * MAX_PIXEL_SNR                 # large but allowed (ivar 1)
    flux[1, 21] = MAX_PIXEL_SNR                       # the limit itself is allowed
    ivar[1, 20:22] = 1.0
    X, _, _ = grid_spectra([wave], [flux], [ivar], GRID)
    _, ibin, _ = rebin_arms([wave], [flux], [ivar], GRID)
    assert np.isfinite(X).all()
    assert ibin[0, 0] == 0 and X[0, 0, 1] == 0 and ibin[1, 2] > 0
    np.testing.assert_array_equal(usable_pixels(flux, ivar)[0, :10], False)
    assert usable_pixels(flux, ivar)[1, 20] and usable_pixels(flux, ivar)[1, 21]
    # bin 2 (pixels 20-29) holds the weight of all its pixels, both large ones included
    assert ibin[1, 2] == pytest.approx(ivar[1, 20:30].astype(np.float64).sum(), rel=1e-12)
    nivar = grid_noise_ivar(['b'], [wave], [flux], [ivar], GRID, load_noise_model())
    np.testing.assert_array_equal(nivar > 0, ibin > 0)


def test_tiny_ivar_bin_leaves_the_flux_channel_finite():
    """Every pixel valid (S/N 1e5), but bin 0 has ivar 1e-44 and flux 1e27 while the rest
    has huge ivar and zero flux: the normalised flux of bin 0 was 1e40 rms from the
    mean, inf in float32.  It is now bounded, and the ordinary bins are untouched."""
    from lbgnet.preprocess import MAX_NORM_FLUX, usable_pixels
    wave = np.round(3600.0 + 0.8 * np.arange(2751), 4)
    flux = np.zeros((1, wave.size), np.float32)
    ivar = np.full(flux.shape, 3e38, np.float32)
    flux[0, :10], ivar[0, :10] = 1e27, 1e-44
    assert usable_pixels(flux, ivar).all()
    X, _, _ = grid_spectra([wave], [flux], [ivar], GRID)
    assert np.isfinite(X).all()
    assert X[0, 0, 0] == MAX_NORM_FLUX and np.all(np.abs(X[0, 1:275, 0]) < 1)


def test_works_where_numba_cannot_cache():
    """A read-only install run with a read-only $HOME: numba refuses cache=True at import
    (RuntimeError 'no locator available'), which made every command fail on import.  The
    compiled functions then run uncached."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ('import numba.core.caching as caching\n'
            'def no_locator(self, py_func):\n'
            '    raise RuntimeError(f"cannot cache function {py_func.__name__!r}: no locator '
            'available for file {py_func.__code__.co_filename!r}")\n'
            'caching.FunctionCache.__init__ = no_locator\n'
            'import numpy as np\n'
            'from lbgnet.config import Grid\n'
            'from lbgnet.preprocess import grid_spectra\n'
            'wave = 3600.0 + 0.8 * np.arange(100)\n'
            'X, _, _ = grid_spectra([wave], [np.ones((2, 100), "f4")], [np.ones((2, 100), "f4")], '
            'Grid(3600.0, 8.0, 800))\n'
            'print(X.shape, float(X[0, 0, 1]))\n')
    env = dict(os.environ, PYTHONPATH=os.path.join(root, 'py'))
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ['(2,', '800,', '2)', str(float(np.float32(np.sqrt(10))))]


def test_compiled_loops_stay_inside_their_arrays(tmp_path):
    """The compiled loops trust the pixel runs they are given (numba checks no bounds: a
    run of bin ``nbins`` would write past the arrays, silently).  Run with numba's bounds
    checks on (and a fresh cache, so that no unchecked build is reused), an arm reaching
    past both ends of the grid, a pixel on its upper edge, a mask and the noise model's
    path (a sky line's residual across that edge) must grid without an IndexError."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ('import numpy as np\n'
            'from lbgnet.config import Grid\n'
            'from lbgnet.noise import load_noise_model\n'
            'from lbgnet.preprocess import grid_noise_ivar, grid_spectra\n'
            'grid = Grid(5500.0, 8.0, 10)\n'      # its upper edge 5580 Å on the 5577 Å sky line
            'wave = 5400.0 + 0.8 * np.arange(400)\n'            # 5400 .. 5719.2
            'assert 5580.0 in wave\n'
            'rng = np.random.default_rng(1)\n'
            'flux = rng.normal(1.0, 0.3, (3, 400)).astype("f4")\n'
            'ivar = np.ones((3, 400), "f4")\n'
            'mask = np.zeros((3, 400), "i4")\n'
            'mask[1, ::3] = 1\n'
            'X, _, _ = grid_spectra([wave], [flux], [ivar], grid, masks=[mask])\n'
            'nivar = grid_noise_ivar(["b"], [wave], [flux], [ivar], grid, load_noise_model())\n'
            'assert X.shape == (3, 10, 2) and nivar.shape == (3, 10)\n'
            'print("ok")\n')
    env = dict(os.environ, PYTHONPATH=os.path.join(root, 'py'), NUMBA_BOUNDSCHECK='1',
               NUMBA_CACHE_DIR=str(tmp_path / 'numba'))
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == 'ok', run.stderr[-2000:]


def test_empty_spectra_are_zero_and_flagged():
    rng = np.random.default_rng(4)
    wave, flux, ivar = _arm(3600.0, 5800.0, 3, rng)
    ivar[1] = 0.0
    flux[2] = np.nan
    X, arm_valid, nvalid = grid_spectra([wave], [flux], [ivar], GRID)
    assert X.shape == (3, 800, 2) and X.dtype == np.float32
    assert np.all(X[1:] == 0) and np.isfinite(X).all()
    np.testing.assert_array_equal(nvalid == 0, [False, True, True])
    np.testing.assert_array_equal(arm_valid[:, 0], [True, False, False])


def test_channels_definition():
    rng = np.random.default_rng(5)
    wave, flux, ivar = _arm(3600.0, 5800.0, 2, rng)
    X, _, _ = grid_spectra([wave], [flux], [ivar], GRID)
    fbin, ibin, _ = rebin_arms([wave], [flux], [ivar], GRID)
    np.testing.assert_allclose(X[..., 1], fbin * np.sqrt(ibin), rtol=1e-5, atol=1e-6)
    valid = ibin > 0
    # channel 0 has zero weighted mean and unit weighted rms over valid bins
    for s in range(2):
        x, w = X[s, valid[s], 0].astype(np.float64), ibin[s, valid[s]]
        assert abs(np.average(x, weights=w)) < 1e-5
        assert np.sqrt(np.average(x ** 2, weights=w)) == pytest.approx(1.0, rel=1e-5)
    assert np.all(X[:, ~valid.any(0), :] == 0)


def test_constant_flux_and_empty_spectrum_channels():
    isum = np.ones((2, 10))
    isum[1] = 0.0
    fsum = 3.0 * isum
    X = grid_channels(fsum, isum)
    assert np.all(X[0, :, 0] == 0)                    # constant flux: rms set to 1, no NaN
    np.testing.assert_allclose(X[0, :, 1], 3.0)
    assert np.all(X[1] == 0)


def test_constant_flux_not_exactly_representable_is_zero():
    # 3.3 is rounded in float32: the rounding spread must not be scaled up to ±1
    rng = np.random.default_rng(3)
    isum = rng.uniform(0.5, 2.0, (2, 10))
    isum[1, 1:] = 0.0                                 # a single valid bin
    X = grid_channels(3.3 * isum, isum)
    assert np.abs(X[0, :, 0]).max() < 1e-5 and np.all(X[1, :, 0] == 0)
    np.testing.assert_allclose(X[0, :, 1], 3.3 * np.sqrt(isum[0]), rtol=1e-6)


def test_load_coadd_grid_roundtrip(tiny_coadd, config):
    path, arrays = tiny_coadd
    X, info = load_coadd_grid(path, config)
    assert X.shape == (6, config.grid.nbins, 2)
    np.testing.assert_array_equal(info.targetid, arrays['targetid'])
    assert info.bands == ('b', 'r', 'z')
    assert not info.empty.any() and info.band_valid.all()
    # identical to gridding the in-memory arrays
    Xmem, _, _ = grid_spectra([arrays['wave'][b] for b in 'brz'], [arrays['flux'][b] for b in 'brz'],
                              [arrays['ivar'][b] for b in 'brz'], config.grid)
    np.testing.assert_allclose(X, Xmem, rtol=1e-6, atol=1e-6)


def test_real_desi_coadd(config):
    path = reference_file('desi-coadd', 'coadd-sv1-dark-80605-25fibres.fits')
    X, info = load_coadd_grid(path, config)
    assert X.shape == (25, 800, 2)
    assert np.isfinite(X).all()
    assert info.targetid is None                      # stripped file: no FIBERMAP
    # channel 1 is zero exactly where no pixel has data: recompute which bins have ivar > 0
    import fitsio
    has_data = np.zeros((25, 800), dtype=bool)
    for arm in 'BRZ':
        wave = fitsio.read(path, arm + '_WAVELENGTH')
        ivar = fitsio.read(path, arm + '_IVAR')
        flux = fitsio.read(path, arm + '_FLUX')
        good = (ivar > 0) & np.isfinite(flux)
        idx = config.grid.bin_index(wave)
        for s in range(25):
            has_data[s, np.unique(idx[good[s]])] = True
    assert np.all(X[~has_data] == 0)
    assert np.all(X[..., 1][has_data] != 0)
    assert np.all(~has_data[:, 779:])


@pytest.mark.parametrize('bands', ['brz', 'br', 'rz', 'bz'])
def test_camera_coadded_file_is_judged_per_camera(tmp_path, config, bands):
    """A desispec ``coadd_cameras`` file (one ``brz``, ``br``, ``rz`` or ``bz`` band) is gridded
    like the per-camera file, pixel for pixel, and judged per camera: a camera without data
    (killed before the cameras were coadded) is flagged MISSING_CAMERA although the overlap
    pixels of its neighbours fall inside its wavelength range."""
    from desispec.coaddition import coadd_cameras
    from desispec.io import read_spectra, write_spectra
    from lbgnet.bitmask import LBGWarnMask
    from lbgnet.catalog import spectrum_flags
    from lbg_testdata import write_test_coadd
    src = str(tmp_path / 'coadd-cameras.fits')
    nspec = len(bands) + 2
    write_test_coadd(src, nspec, seed=3, bands=bands)
    spec = read_spectra(src)
    for i, cam in enumerate(bands):                 # spectrum i: camera bands[i] has no data
        spec.ivar[cam][i] = 0.0
    write_spectra(src, spec)
    merged = coadd_cameras(spec)
    assert tuple(merged.bands) == (bands,)
    path = str(tmp_path / 'coadd-merged.fits')
    write_spectra(path, merged)
    Xs, infos = load_coadd_grid(src, config)
    Xm, infom = load_coadd_grid(path, config)
    assert infom.bands == infos.bands == tuple(bands)
    expected = np.ones((nspec, len(bands)), dtype=bool)
    expected[np.arange(len(bands)), np.arange(len(bands))] = False
    np.testing.assert_array_equal(infos.band_valid, expected)
    np.testing.assert_array_equal(infom.band_valid, expected)
    # no pixel dropped: the same bins hold data (none lost beyond a fixed b/r or r/z cut)
    np.testing.assert_array_equal(infom.nvalid_bins, infos.nvalid_bins)
    mask = LBGWarnMask().MISSING_CAMERA
    flags = spectrum_flags(infom, None, config.grid.nbins)
    missing = bands != 'brz'                        # a camera absent from the file: everyone
    assert [bool(f & mask) for f in flags] == [True] * len(bands) + [missing] * 2
    # outside the overlaps (resampled by coadd_cameras) the input is the same
    c = config.grid.centers
    inner = ((c < 5700) | (c > 5900)) & ((c < 7450) | (c > 7700))
    np.testing.assert_allclose(Xm[len(bands):, inner], Xs[len(bands):, inner], rtol=1e-4,
                               atol=1e-4)


def test_example_spectra_never_absorb_below_zero(config, monkeypatch):
    """The noiseless example model stays >= 0 even for the deepest Lya absorption drawn."""
    import lbgnet.example as example
    monkeypatch.setattr(example, 'ARM_SIGMA', {'b': 1e-9, 'r': 1e-9, 'z': 1e-9})
    _, flux, _, _ = example.example_spectra(config, 400, np.random.default_rng(0))
    assert min(float(f.min()) for f in flux.values()) > -1e-6


@pytest.mark.parametrize('damage', ['nan', 'unsorted', 'repeated'])
def test_wavelengths_must_be_finite_and_increasing(damage, config):
    """A NaN or out-of-order wavelength is refused: the compiled accumulation trusts the
    pixel runs, and such a pixel was written to another bin (NaN -> the last bin) or
    outside the arrays (another spectrum's bins, or a crash)."""
    from lbgnet.preprocess import grid_spectra, pixel_segments
    wave = config.grid.wave_min + 0.8 * np.arange(40.0)
    if damage == 'nan':
        wave[7] = np.nan
    elif damage == 'unsorted':
        wave[7] = config.grid.wave_max + 40.0
    else:
        wave[7] = wave[6]
    with pytest.raises(ValueError, match='finite and strictly increasing'):
        pixel_segments(wave, config.grid)
    with pytest.raises(ValueError, match='finite and strictly increasing'):
        grid_spectra([wave], [np.ones((3, 40))], [np.ones((3, 40))], config.grid)


def test_coadd_reader_counts_valid_bins_and_empty_spectra(tmp_path):
    """Through the production reader: a spectrum without any valid pixel is empty with 0
    valid bins, one with only its z arm has the z arm's bins, and the counts are those of
    grid_spectra on the same arrays."""
    from lbg_testdata import write_test_coadd
    from lbgnet.config import load_config
    arrays = {}

    def edit(flux, ivar):
        for b in 'brz':
            ivar[b][1] = 0.0                      # spectrum 1: nothing
        for b in 'br':
            ivar[b][2] = 0.0                      # spectrum 2: the z arm only
        arrays.update(flux={b: f.copy() for b, f in flux.items()},
                      ivar={b: v.copy() for b, v in ivar.items()})

    path = str(tmp_path / 'coadd-main-dark-1.fits')
    write_test_coadd(path, 4, edit=edit)
    config = load_config()
    X, info = load_coadd_grid(path, config)
    assert info.empty.tolist() == [False, True, False, False]
    assert info.nvalid_bins[1] == 0 and 0 < info.nvalid_bins[2] < info.nvalid_bins[0]
    from astropy.io import fits
    waves = [fits.getdata(path, f'{b.upper()}_WAVELENGTH').astype(np.float64) for b in 'brz']
    _, _, nvalid = grid_spectra(waves, [arrays['flux'][b] for b in 'brz'],
                                [arrays['ivar'][b] for b in 'brz'], config.grid)
    np.testing.assert_array_equal(info.nvalid_bins, nvalid)
    assert np.all(X[1] == 0)
