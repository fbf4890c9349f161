"""Optional empirical inputs of the simulator: readers (lbgnet.io.templates) and rendering
with the LBG composite and Redrock templates, on tiny files built here and, when present,
on the ../shared/reference files."""
import os

import fitsio
import numpy as np
import pytest

from conftest import reference_file
from lbgnet.io import InputFileError, MissingInputError
from lbgnet.io.templates import load_templates, read_lbg_composite, read_rr_template
from lbgnet.sim import draw_population, load_sim_config, render_spectra
from lbgnet.sim.igm import LYMAN_LIMIT

WAVE = np.arange(3600.0, 9824.0, 0.8)


@pytest.fixture(scope='module')
def simcfg():
    return load_sim_config()


def _write_rr(path, rrtype, subtype, basis, crval, cdelt, loglam, coeff=None):
    hdr = [dict(name='RRTYPE', value=rrtype), dict(name='RRSUBTYP', value=subtype),
           dict(name='CRVAL1', value=crval), dict(name='CDELT1', value=cdelt),
           dict(name='LOGLAM', value=loglam)]
    with fitsio.FITS(str(path), 'rw', clobber=True) as fx:
        fx.write(basis.astype(np.float64), extname='BASIS_VECTORS', header=hdr)
        if coeff is not None:
            fx.write(coeff.astype(np.float64), extname='ARCHETYPE_COEFF')


@pytest.fixture
def tiny_rr_dir(tmp_path):
    """A STAR-K template (2 archetypes: flat, and flat with a deep 5000 Å line) and a
    QSO-HIZ template (a power law with a Lyα line) in the Redrock layout."""
    wave = 3000.0 + 0.1 * np.arange(80001)
    flat = np.ones_like(wave)
    line = -0.9 * np.exp(-0.5 * ((wave - 5000.0) / 3.0) ** 2)
    _write_rr(tmp_path / 'rrtemplate-STAR-K-v0.1.fits', 'STAR', 'K', np.stack([flat, line]),
              3000.0, 0.1, 0, coeff=np.array([[1.0, 0.0], [1.0, 1.0]]))
    loglam = 2.6 + 1e-4 * np.arange(10000)
    lam = 10 ** loglam
    qso = (lam / 1500.0) ** -1.5 * (1 + 5 * np.exp(-0.5 * ((lam - 1215.67) / 10.0) ** 2))
    _write_rr(tmp_path / 'rrtemplate-QSO-HIZ-v1.1.fits', 'QSO', 'HIZ',
              np.stack([qso, np.gradient(qso), qso * 0.01]), 2.6, 1e-4, 1)
    _write_rr(tmp_path / 'rrtemplate-GALAXY-v2.6.fits', 'GALAXY', '', np.stack([flat]), 3000.0, 0.1, 0)
    return tmp_path


def test_reader_errors(tmp_path):
    bad = tmp_path / 'bad.txt'
    bad.write_text('wavelength flux\n1 2\n')
    with pytest.raises(InputFileError, match='bad.txt'):
        read_lbg_composite(str(bad))
    with pytest.raises(MissingInputError, match='nope.txt'):
        read_lbg_composite(str(tmp_path / 'nope.txt'))
    rev = tmp_path / 'rev.txt'
    np.savetxt(rev, np.column_stack([np.arange(2000.0, 900.0, -1.0), np.ones(1100)]))
    with pytest.raises(InputFileError, match='increase'):
        read_lbg_composite(str(rev))
    # f_nu = 0 or < 0 redward of Lya: the simulator's residual would be 1 (no effect) while
    # the header named the file as used
    for value in (0.0, -1.0):
        flat = tmp_path / f'flat{value}.txt'
        np.savetxt(flat, np.column_stack([np.arange(900.0, 2000.0), np.full(1100, value)]))
        with pytest.raises(InputFileError, match='positive redward of Lya'):
            read_lbg_composite(str(flat))
    nohdr = tmp_path / 'rrtemplate-X.fits'
    with fitsio.FITS(str(nohdr), 'rw', clobber=True) as fx:
        fx.write(np.ones((2, 10)), extname='BASIS_VECTORS')
    with pytest.raises(InputFileError) as err:
        read_rr_template(str(nohdr))
    # the missing cards named plainly (fitsio's KeyError text leaked: "lacks 'unknown
    # record: RRTYPE'")
    assert str(err.value) == (f'{nohdr}: Redrock template header lacks RRTYPE, CRVAL1, CDELT1 '
                              '(not a Redrock template file?)')
    with fitsio.FITS(str(nohdr), 'rw', clobber=True) as fx:
        fx.write(np.ones((2, 10)), extname='BASIS_VECTORS',
                 header={'RRTYPE': 'GALAXY', 'CRVAL1': 'x', 'CDELT1': 1.0})
    with pytest.raises(InputFileError, match="CRVAL1/CDELT1 are not numbers"):
        read_rr_template(str(nohdr))
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(InputFileError, match='no Redrock'):
        load_templates(rr_template_dir=str(empty))


def test_tiny_templates_render(tiny_rr_dir, simcfg):
    tmpl = load_templates(rr_template_dir=str(tiny_rr_dir))
    assert set(tmpl.rr) == {'STAR-K', 'QSO-HIZ'}          # GALAXY ignored
    np.testing.assert_allclose(tmpl.rr['QSO-HIZ'].wave[0], 10 ** 2.6)
    stars = draw_population(simcfg, 40, np.random.default_rng(1), classes=['STAR'])
    stars['SUBTYPE'] = np.where(np.arange(40) % 2 == 0, 'K', 'B')
    stars['TEMPLATE_U'] = np.where(np.arange(40) % 4 == 0, 0.25, 0.75)   # archetype 0 or 1
    flux = render_spectra(stars, WAVE, simcfg=simcfg, templates=tmpl)
    plain = render_spectra(stars, WAVE, simcfg=simcfg)
    is_k = stars['SUBTYPE'] == 'K'
    # B stars have no template: identical to the parametric model
    np.testing.assert_array_equal(flux[~is_k], plain[~is_k])
    # K stars are the archetypes: flat, and flat with a 90%-deep line at 5000 Å (1+z)
    i5000 = np.abs(WAVE - 5000.0 * (1 + stars['Z_TRUE'][:, None])).argmin(axis=1)
    depth = 1 - flux[np.arange(40), i5000] / np.median(flux, axis=1)
    arche1 = is_k & (stars['TEMPLATE_U'] > 0.5)
    assert np.all(depth[arche1] > 0.8) and np.all(np.abs(depth[is_k & ~arche1]) < 1e-3)
    qso = draw_population(simcfg, 30, np.random.default_rng(2), classes=['QSO'])
    qso['Z_TRUE'] = np.linspace(2.5, 4.0, 30)
    qso['BAL_EW'] = 0.0
    qf = render_spectra(qso, WAVE, simcfg=simcfg, templates=tmpl)
    assert np.all(np.isfinite(qf)) and np.all(qf >= 0)
    for k in (1, 2, 3):
        qso[f'QSO_PCA{k}'] = 0.0
    q0 = render_spectra(qso, WAVE, simcfg=simcfg, templates=tmpl)
    assert not np.allclose(qf, q0)           # the PCA deviates change the spectra
    # mean template only: Lyα peak at 1215.67 (1+z) (the forest absorbs its blue side,
    # moving the peak by < 1 sigma = 10 Å rest)
    peak = WAVE[np.argmax(q0, axis=1)]
    assert np.all(np.abs(peak / (1 + qso['Z_TRUE']) - 1215.67) < 10.0)
    zp1 = 1 + np.asarray(qso['Z_TRUE'])[:, None]
    blue = (WAVE[None, :] / zp1 > 1080) & (WAVE[None, :] / zp1 < 1180)
    model = (WAVE[None, :] / zp1 / 1500.0) ** -1.5
    # forest: mean flux over model blueward of Lyα well below the template's (no IGM) level
    ratio = np.array([np.mean(q0[i, blue[i]] / model[i, blue[i]]) for i in range(30)])
    red = (WAVE[None, :] / zp1 > 1300) & (WAVE[None, :] / zp1 < 1400)
    ratio_red = np.array([np.mean(q0[i, red[i]] / model[i, red[i]]) for i in range(30)])
    assert np.all(ratio < 0.95 * ratio_red)


def test_reference_templates(simcfg):
    comp = reference_file('lbg-composite', 'shapley2003_lbg_composite.txt')
    rrdir = os.path.dirname(reference_file('redrock-templates', 'rrtemplate-QSO-HIZ-v1.1.fits'))
    wave, fnu = read_lbg_composite(os.path.dirname(comp))      # the directory form
    assert wave[0] <= 920.0 and wave[-1] >= 2000.0 and fnu.size == wave.size
    tmpl = load_templates(comp, rrdir)
    assert {'QSO-HIZ', 'QSO-LOZ', 'STAR-WD', 'STAR-M'} <= set(tmpl.rr)
    truth = draw_population(simcfg, 300, np.random.default_rng(3))
    flux = render_spectra(truth, WAVE, simcfg=simcfg, templates=tmpl, lsf_sigma=0.8)
    assert np.all(np.isfinite(flux)) and np.all(flux >= 0)
    lbg = np.asarray(truth['CLASS']) == 'LBG'
    rest = WAVE[None, :] / (1 + np.asarray(truth['Z_TRUE'])[lbg, None])
    assert np.all(flux[lbg][rest < LYMAN_LIMIT] == 0)
    # r magnitudes still hold with templates (independent speclite check on a wide grid)
    import astropy.units as u
    import speclite.filters
    wide = np.arange(3300.0, 11000.0, 0.5)
    fw = render_spectra(truth, wide, simcfg=simcfg, templates=tmpl)
    mags = speclite.filters.load_filter('decam2014-r').get_ab_magnitude(
        fw.astype(np.float64) * 1e-17 * u.erg / u.s / u.cm ** 2 / u.Angstrom, wide * u.Angstrom)
    # same tolerances as the parametric test (forest in the band: sampled on the 2 A grid)
    dmag = np.abs(mags - truth['RMAG'])
    forest = np.isin(truth['CLASS'], ['LBG', 'QSO']) & (1215.67 * (1 + truth['Z_TRUE']) > 5420.0)
    assert np.max(dmag[~forest]) < 0.01 and np.max(dmag[forest]) < 0.04
    # the composite imprints features on LBGs redward of 1225 Å, nothing blueward
    plain = render_spectra(truth, WAVE, simcfg=simcfg, lsf_sigma=0.8)
    ratio = flux[lbg] / np.where(plain[lbg] > 0, plain[lbg], 1)
    red = (rest > 1300) & (rest < 1950)
    assert np.std(ratio[red] / np.median(ratio, axis=1, keepdims=True).repeat(rest.shape[1], 1)[red]) > 0.01
    stars = np.asarray(truth['CLASS']) == 'STAR'
    assert not np.allclose(flux[stars], plain[stars])


def test_template_versions_sort_as_numbers():
    from lbgnet.io.rrtemplate import version_key
    names = [f'd/rrtemplate-GALAXY-LBG-v{v}.fits' for v in ('0.10', '0.2', '1.0', '0.9')]
    assert [n.rsplit('-v', 1)[1][:-5] for n in sorted(names, key=version_key)] == \
        ['0.2', '0.9', '0.10', '1.0']


@pytest.mark.parametrize('content, match', [
    (b'\x7fELF\x02\x01\x01' + bytes(range(256)) * 20, r'not a readable FITS file \(FITSIO status = 252'),
    ('truncate', r'truncated FITS file'),
])
def test_damaged_template_is_one_line(tmp_path, content, match):
    """cfitsio's whole error stack (with raw bytes of the file) made a multi-line message."""
    path = tmp_path / 'rrtemplate-QSO-HIZ-v1.1.fits'
    if content == 'truncate':
        data = np.zeros((3, 5000))
        with fitsio.FITS(str(tmp_path / 'full.fits'), 'rw', clobber=True) as fx:
            fx.write(data, extname='BASIS_VECTORS',
                     header={'RRTYPE': 'QSO', 'CRVAL1': 3.0, 'CDELT1': 1e-4})
        content = (tmp_path / 'full.fits').read_bytes()[:6000]
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=match) as err:
        read_rr_template(str(path))
    assert '\n' not in str(err.value) and str(err.value).count(str(path)) == 1


def test_template_absorption_below_lyb_removed():
    """The Redrock v1.1 QSO templates keep their training quasars' mean forest and Lyman
    break below Lyβ; raised to the matched power law, keeping a line above it."""
    from lbgnet.sim.qso import TEMPLATE_FOREST_MIN, unabsorbed_below_lyb
    lnw = np.log(700.0) + 1e-4 * np.arange(12000)
    lam = np.exp(lnw)
    power = (lam / 1100.0) ** (-2.0 + 0.44)
    line = 1.5 * np.exp(-0.5 * ((lam - 1030.0) / 5.0) ** 2)
    # the template's mean absorption sets in smoothly below Lyβ (none at 1025.72 Å)
    absorbed = (1 - 0.4 * np.clip((TEMPLATE_FOREST_MIN - lam) / 20.0, 0, 1)) * np.where(lam < 912.0, 0.05, 1.0)
    spectra = np.stack([2 * (power + line) * absorbed, 3 * power])
    out = unabsorbed_below_lyb(spectra, lnw[0], 1e-4, -0.44)
    red = lam >= TEMPLATE_FOREST_MIN
    np.testing.assert_array_equal(out[:, red], spectra[:, red].astype(np.float32))
    blue = lam < 1010.0
    np.testing.assert_allclose(out[0, blue], 2 * power[blue], rtol=1e-4)
    np.testing.assert_allclose(out[1], 3 * power, rtol=1e-4)
    wing = (lam > 1021.0) & (lam < TEMPLATE_FOREST_MIN)            # the line's blue wing kept
    assert wing.sum() > 5 and np.all(out[0, wing] > 2 * power[wing] * 1.01)
    assert np.max(np.abs(np.diff(out[0]) / out[0, 1:])) < 0.02     # no step (0.1 Å pixels)


def test_reference_qso_template_lyman_break_from_tau_ll(simcfg):
    """With the reference v1.1 template, a QSO without IGM and with TAU_LL = 0 had a Lyman
    break (×0.28, the template's own) and TAU_LL controlled nothing."""
    rrdir = os.path.dirname(reference_file('redrock-templates', 'rrtemplate-QSO-HIZ-v1.1.fits'))
    tmpl = load_templates(rr_template_dir=rrdir)
    qso = draw_population(simcfg, 40, np.random.default_rng(5), classes=['QSO'])
    qso['Z_TRUE'] = 3.5
    qso['IGM_SCALE'] = 1e-6
    qso['BAL_EW'] = 0.0
    rest = WAVE / 4.5
    below = (rest > 850) & (rest < 905)
    above = (rest > 920) & (rest < 1000)
    for tau, lo, hi in ((0.0, 1.0, 1.4), (3.0, 0.0, 0.1)):
        qso['TAU_LL'] = tau
        flux = render_spectra(qso, WAVE, simcfg=simcfg, templates=tmpl)
        brk = flux[:, below].mean(axis=1) / flux[:, above].mean(axis=1)
        assert np.all((brk > lo) & (brk < hi)), (tau, brk.min(), brk.max())


def test_template_arrays_follow_the_configuration(tiny_rr_dir, simcfg):
    """Arrays derived from the templates were cached by name: a second configuration in
    the same session (another star smoothing) got the first one's spectra."""
    import copy
    stars = draw_population(simcfg, 8, np.random.default_rng(4), classes=['STAR'])
    stars['SUBTYPE'] = 'K'
    stars['TEMPLATE_U'] = 0.75
    other = copy.deepcopy(simcfg)
    other['simulation']['star']['template_smooth'] = 6.0
    shared = load_templates(rr_template_dir=str(tiny_rr_dir))
    first = render_spectra(stars, WAVE, simcfg=simcfg, templates=shared)
    second = render_spectra(stars, WAVE, simcfg=other, templates=shared)
    fresh = render_spectra(stars, WAVE, simcfg=other, templates=load_templates(rr_template_dir=str(tiny_rr_dir)))
    assert not np.allclose(first, fresh)
    np.testing.assert_array_equal(second, fresh)
