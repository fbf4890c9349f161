"""Refinement, Redrock rerun, preprocessing and refinement options: tests that kill the mutants
which survived a hand-mutation review (2026-12-07); each failed on a mutant."""
import numpy as np
import pytest

from lbgnet.config import load_config
from lbgnet.refine import Refiner, RefineTemplate, bin_light_edges

CONFIG = load_config('lbgnet-default.yaml')


def _template():
    wave = np.arange(600.0, 3800.0, 0.5)
    cont = (wave / 1500.0) ** -1.5 * (wave > 912)
    lya = np.exp(-0.5 * ((wave - 1216.5) / 2.0) ** 2)
    return RefineTemplate(wave, np.array([cont, lya]), None)


def test_archetypes_a_few_steps_short_of_the_grid_are_refused():
    """with_archetypes tolerates one trial-redshift step of missing coverage, not more."""
    tpl = _template()
    ref = Refiner.build(tpl, CONFIG, (2.2, 3.8))
    edges = bin_light_edges(CONFIG)
    step = 10.0 ** ref.dlogz
    need_red = edges[-1] / (1 + ref.zs[0])        # reddest rest wavelength needed
    need_blue = edges[0] / (1 + ref.zs[-1])       # bluest
    arch = lambda keep: RefineTemplate(tpl.wave[keep], tpl.basis[:1, keep] + 1.0, None)
    ok = (tpl.wave >= need_blue - 1) & (tpl.wave <= need_red + 1)
    ref.with_archetypes(arch(ok), CONFIG)                       # covers: accepted
    for keep in (ok & (tpl.wave < need_red / step ** 3),       # 3 steps short at the red end
                 ok & (tpl.wave > need_blue * step ** 3)):     # 3 steps short at the blue end
        with pytest.raises(ValueError, match='do not cover the grid'):
            ref.with_archetypes(arch(keep), CONFIG)


def test_zrange_coverage_of_an_empty_range():
    """The documented cases of an empty model range: 1 inside a template range, 0 outside."""
    from lbgnet.redrock_rerun import zrange_coverage
    assert zrange_coverage([(1.0, 3.0)], (2.0, 2.0)) == 1.0
    assert zrange_coverage([(3.0, 4.0)], (2.0, 2.0)) == 0.0


def test_rerun_needs_scores(tmp_path):
    """rrdesi needs the SCORES HDU: refused before the network runs, naming it."""
    from astropy.io import fits
    from lbg_testdata import write_test_coadd
    from lbgnet.io.errors import InputFileError
    from lbgnet.redrock_rerun import check_rerunnable
    path = str(tmp_path / 'coadd-x.fits')
    write_test_coadd(path, 3, full=True)
    check_rerunnable(path)
    with fits.open(path) as hdul:
        del hdul['SCORES']
        hdul.writeto(path, overwrite=True)
    with pytest.raises(InputFileError, match='no SCORES HDU'):
        check_rerunnable(path)


def test_usable_pixels_needs_positive_ivar():
    from lbgnet.preprocess import usable_pixels
    assert usable_pixels([1.0, 1.0, 1.0, np.nan], [0.0, -1.0, 2.0, 1.0]).tolist() == [
        False, False, True, False]


def test_nearly_flat_bright_spectrum_is_normalised():
    """A spread of 1e-4 of the mean is real (S/N ~ 1e4 per bin), not rounding: channel 0
    has unit weighted rms."""
    from lbgnet.preprocess import grid_channels
    rng = np.random.default_rng(0)
    flux = 1000.0 + 0.1 * rng.standard_normal((1, 800))
    ivar = np.ones((1, 800))
    X = grid_channels(flux * ivar, ivar)
    assert np.sqrt(np.mean(X[0, :, 0].astype(float) ** 2)) == pytest.approx(1.0, rel=1e-3)


def test_camera_coadded_band_is_cut_in_the_middle_of_each_overlap():
    """b/r at 5780 A, r/z at 7570 A (the documented cuts): the overlap pixels go half to
    each camera, which decides the noise model's camera excess and sky residuals there."""
    from lbgnet.preprocess import camera_pieces
    wave = np.round(np.arange(3600.0, 9824.4, 0.8), 1)
    b, r, z = camera_pieces(('brz',), {'brz': wave})
    assert (b.camera, r.camera, z.camera) == ('b', 'r', 'z')
    assert wave[b.pixels][-1] < 5780.0 <= wave[r.pixels][0]
    assert wave[r.pixels][-1] < 7570.0 <= wave[z.pixels][0]
    assert b.pixels.stop == r.pixels.start and r.pixels.stop == z.pixels.start


def test_refine_prior_weight_zero_is_accepted():
    """0 is the documented plain-χ² setting (with --refine-archetypes none)."""
    from lbgnet.scripts.lbg_afterburner import parse
    args = parse(['--coadd', 'a.fits', '--refine-prior-weight', '0', '--refine-archetypes', 'none'])
    assert args.refine_prior_weight == 0.0


def test_never_skipping_the_archetype_stage_keeps_the_calibration(caplog):
    """--refine-arch-skip 0 changes no Z_TPL that matters: no 'only approximately' warning
    for the shipped (calibrated) model; another threshold is named."""
    import logging
    from lbgnet.network import default_model_path, load_network
    from lbgnet.scripts.lbg_afterburner import parse
    from lbgnet.scripts.refine_options import make_refiner
    net = load_network(default_model_path(), engine='numpy')
    for skip, warned in (('0', False), ('9', True)):
        caplog.clear()
        args = parse(['--coadd', 'a.fits', '--refine-arch-skip', skip])
        with caplog.at_level(logging.WARNING):
            make_refiner(args, net.config, net.zrange, net.metadata)
        assert ('only approximately so' in caplog.text) == warned, caplog.text
