"""
lbgnet.sim.render
=================

Noiseless observed-frame spectra of a truth table (:mod:`lbgnet.sim.population`)
on any increasing wavelength grid, normalised to each object's r magnitude.

Every grid gets pixel-averaged flux densities: lines are integrated over each pixel,
and grids coarser than MAX_SUBPIXEL are rendered on sub-pixels and averaged.

Normalisation: every object is first rendered on the fixed internal grid of the
normalisation filter (:func:`lbgnet.sim.photometry.filter_grid`, default DECam r),
without instrumental broadening; its synthetic AB magnitude m0 there gives the scale
10^(-0.4 (RMAG - m0)) applied on every requested grid.  The scale does not depend on
the grid (arm) the spectrum is rendered on, and all line-of-sight randomness comes
from the IGM_SEED column, so the same object rendered on two overlapping grids agrees
in the overlap.
"""
import functools

import numpy as np

from .components import evaluate
from .galaxy import galaxy_components
from .lbg import composite_residual, lbg_components
from .photometry import ab_magnitude, filter_grid
from .population import CLASSES, DEFAULT_SIM_CONFIG, load_sim_config
from .profiles import pixel_edges
from .qso import qso_components
from .star import star_components


#: Pixels wider than this (Å) are rendered as the mean of equal sub-pixels, so that
#: the forest and breaks are averaged over the pixel, not sampled at its centre
#: (the DESI 0.8 Å pixels are rendered directly; the 8 Å grid uses 8 sub-pixels).
MAX_SUBPIXEL = 1.0


class _Rows:
    """Column access to a subset of rows of a table, as plain numpy arrays."""

    def __init__(self, truth, sel):
        self._truth, self._sel = truth, sel

    def __getitem__(self, key):
        col = np.asarray(self._truth[key])[self._sel]
        return col.astype(str) if col.dtype.kind == 'S' else col


def _strings(col):
    """A string column as str, also when read back from FITS as bytes."""
    col = np.asarray(col)
    return col.astype(str) if col.dtype.kind == 'S' else col


@functools.lru_cache(maxsize=4)
def _cached_sim_config(name):
    return load_sim_config(name)


def _derived(templates, key, build):
    """Arrays derived once from the templates, kept in ``templates.cache``."""
    if key not in templates.cache:
        templates.cache[key] = build()
    return templates.cache[key]


def _lbg_residual(templates, sim, lines):
    if templates is None or templates.lbg_composite is None:
        return None
    pars = sim['lbg']
    restlines = list(lines.values()) + [v['wave'] for v in pars['emission'].values()]
    # keyed by what the residual depends on: another simulator configuration in the same
    # session (a variant, generator._with_fractions) must not get this one's residual
    key = ('lbg_residual', float(pars['composite_min_wave']), float(pars['composite_smooth']),
           float(pars['composite_line_window']), tuple(float(w) for w in restlines))
    return _derived(templates, key,
                    lambda: composite_residual(*templates.lbg_composite, pars, restlines))


def _qso_bases(templates):
    if templates is None:
        return None

    def build():
        out = {}
        for sub in ('HIZ', 'LOZ'):
            tmpl = templates.rr.get(f'QSO-{sub}')
            if tmpl is not None:
                lnw = np.log(tmpl.wave)
                out[sub] = (lnw[0], (lnw[-1] - lnw[0]) / (lnw.size - 1), tmpl.basis.astype(np.float32))
        return out
    return _derived(templates, 'qso_bases', build) or None


def _star_archetypes(templates, smooth):
    if templates is None:
        return {}

    def build():
        from scipy.ndimage import gaussian_filter1d
        out = {}
        for key, tmpl in templates.rr.items():
            if tmpl.rrtype != 'STAR' or tmpl.coeff is None:
                continue
            dw = (tmpl.wave[-1] - tmpl.wave[0]) / (tmpl.wave.size - 1)
            step = max(1, int(round(0.25 * smooth / dw)))
            basis = gaussian_filter1d(tmpl.basis, smooth / dw, axis=1)[:, ::step]
            out[tmpl.subtype] = (tmpl.wave[0], dw * step, basis.astype(np.float32), tmpl.coeff)
        return out
    return _derived(templates, ('star_archetypes', float(smooth)), build)


def build_components(truth, simcfg, templates=None):
    """Per-class physical models of a truth table.

    Returns
    -------
    list of (numpy.ndarray, Components)
        Row indices into `truth` and the components of those rows.
    """
    sim = simcfg['simulation']
    cls = _strings(truth['CLASS'])
    unknown = set(np.unique(cls)) - set(CLASSES)
    if unknown:
        raise ValueError(f'unknown CLASS values {sorted(unknown)} in truth table; known {CLASSES}')
    out = []
    for name in CLASSES:
        sel = np.nonzero(cls == name)[0]
        if sel.size == 0:
            continue
        rows = _Rows(truth, sel)
        if name == 'LBG':
            out.append((sel, lbg_components(rows, sim['lbg'], simcfg['lines'],
                                            _lbg_residual(templates, sim, simcfg['lines']))))
        elif name == 'QSO':
            out.append((sel, qso_components(rows, sim['qso'], _qso_bases(templates))))
        elif name == 'GALAXY':
            out.append((sel, galaxy_components(rows, sim['galaxy'])))
        else:
            arche = _star_archetypes(templates, float(sim['star']['template_smooth']))
            has = np.isin(_strings(truth['SUBTYPE'])[sel], list(arche))
            for mask, arg in ((has, arche), (~has, None)):
                if np.any(mask):
                    out.append((sel[mask], star_components(_Rows(truth, sel[mask]), sim['star'], arg)))
    return out


def _subpixels(wave, lsf_sigma, max_subpixel):
    """Sub-pixel grid when pixels are wider than `max_subpixel` Å (else the grid itself).

    Returns
    -------
    sub_wave, sub_edges, sub_lsf, k
        Each pixel is cut into k equal sub-pixels (k = 1: unchanged).
    """
    edges = pixel_edges(wave)
    widths = np.diff(edges)
    k = int(np.ceil(np.max(widths) / max_subpixel - 1e-9)) if max_subpixel else 1
    if k <= 1:
        return wave, edges, lsf_sigma, 1
    frac = np.arange(k) / k
    sub_lo = (edges[:-1, None] + widths[:, None] * frac[None, :]).ravel()
    sub_edges = np.concatenate([sub_lo, edges[-1:]])
    sub_wave = 0.5 * (sub_edges[1:] + sub_edges[:-1])
    if lsf_sigma is not None and np.ndim(lsf_sigma) > 0:
        lsf_sigma = np.repeat(np.asarray(lsf_sigma, dtype=np.float64), k)
    return sub_wave, sub_edges, lsf_sigma, k


def _render_grid(parts, nspec, wave, lsf_sigma, igmcfg, max_subpixel=MAX_SUBPIXEL):
    """Pixel-averaged flux of all parts on one grid (sub-sampled where pixels are wide)."""
    wave = np.asarray(wave, dtype=np.float64)
    if lsf_sigma is not None and np.ndim(lsf_sigma) > 0 and np.shape(lsf_sigma) != wave.shape:
        raise ValueError(f'lsf_sigma must be a scalar or shaped like wave {wave.shape}, '
                         f'got {np.shape(lsf_sigma)}')
    sub_wave, sub_edges, sub_lsf, k = _subpixels(wave, lsf_sigma, max_subpixel)
    flux = np.zeros((nspec, sub_wave.size), dtype=np.float32)
    for sel, comp in parts:
        flux[sel] = evaluate(comp, sub_wave, sub_edges, sub_lsf, igmcfg)
    if k > 1:
        flux = flux.reshape(nspec, wave.size, k).mean(axis=2)
    return flux


def normalisation(parts, truth, simcfg):
    """Per-object factor that brings the rendered spectra to r_AB = RMAG.

    Returns
    -------
    numpy.ndarray
        Shape (nspec,), float32.

    Raises
    ------
    ValueError
        If an object has no flux in the normalisation filter.
    """
    norm = simcfg['simulation']['normalisation']
    fwave, weights = filter_grid(str(norm['filter']), float(norm['step']))
    unit = _render_grid(parts, len(truth), fwave, None, simcfg['simulation']['igm'], max_subpixel=None)
    mag0 = ab_magnitude(unit, weights)
    bad = ~np.isfinite(mag0)
    if np.any(bad):
        raise ValueError(f'{int(bad.sum())} object(s) have no flux in the {norm["filter"]} band '
                         f'(first: CLASS={truth["CLASS"][bad][0]}, Z_TRUE={truth["Z_TRUE"][bad][0]:.3f})')
    return (10 ** (-0.4 * (np.asarray(truth['RMAG'], dtype=np.float64) - mag0))).astype(np.float32)


def _resolve_config(truth, simcfg):
    if simcfg is not None:
        return simcfg
    return _cached_sim_config(str(truth.meta.get('SIMCFG', DEFAULT_SIM_CONFIG)))


def render_arms(truth, waves, rng=None, lsf_sigma=None, templates=None, simcfg=None):
    """Noiseless spectra of a truth table on several grids (e.g. the three DESI arms).

    The physical model and the normalisation are computed once for all grids, which
    is cheaper than calling :func:`render_spectra` per grid; results are identical.

    Parameters
    ----------
    truth : astropy.table.Table
        From :func:`lbgnet.sim.population.draw_population`.
    waves : dict
        band -> increasing wavelength array (Å).
    rng : numpy.random.Generator, optional
        Unused: all randomness of the spectra is in the truth table (IGM_SEED).
    lsf_sigma : dict, optional
        band -> instrumental sigma (Å), scalar or array shaped like that band's grid.
    templates : lbgnet.io.templates.SimTemplates, optional
        Empirical inputs (LBG composite, Redrock templates).
    simcfg : dict, optional
        Simulator configuration; default: the one named by ``truth.meta['SIMCFG']``.

    Returns
    -------
    dict
        band -> flux, shape (nspec, nwave_band), float32, 1e-17 erg/s/cm²/Å.
    """
    simcfg = _resolve_config(truth, simcfg)
    lsf_sigma = {} if lsf_sigma is None else lsf_sigma
    parts = build_components(truth, simcfg, templates)
    scale = normalisation(parts, truth, simcfg)[:, None]
    igmcfg = simcfg['simulation']['igm']
    return {band: _render_grid(parts, len(truth), wave, lsf_sigma.get(band), igmcfg) * scale
            for band, wave in waves.items()}


def render_spectra(truth, wave, rng=None, lsf_sigma=None, templates=None, simcfg=None):
    """Noiseless observed-frame spectra on one wavelength grid.

    Parameters
    ----------
    truth : astropy.table.Table
        From :func:`lbgnet.sim.population.draw_population`, shape (nspec,).
    wave : numpy.ndarray
        Increasing wavelength grid (Å), shape (nwave,): one DESI arm or any grid.
    rng : numpy.random.Generator, optional
        Accepted for API stability; unused, because every stochastic part of a spectrum
        (the forest realisation) is derived from the per-object IGM_SEED, which makes
        renders on different grids consistent.
    lsf_sigma : float or numpy.ndarray, optional
        Instrumental Gaussian sigma (Å), scalar or shaped like `wave`, added in
        quadrature to the line widths.
    templates : lbgnet.io.templates.SimTemplates, optional
        Empirical inputs (see :func:`lbgnet.io.templates.load_templates`).
    simcfg : dict, optional
        Simulator configuration; default: the one named by ``truth.meta['SIMCFG']``.

    Returns
    -------
    numpy.ndarray
        Flux density, shape (nspec, nwave), float32, 1e-17 erg/s/cm²/Å, scaled so that
        the object's synthetic r_AB (DECam r by default) equals ``truth['RMAG']``.
    """
    return render_arms(truth, {'_': wave}, rng, {'_': lsf_sigma}, templates, simcfg)['_']


def line_wavelengths(truth, config):
    """Observed wavelengths of the configuration's lines at the systemic redshift.

    Parameters
    ----------
    truth : astropy.table.Table
        Needs CLASS and Z_TRUE.
    config : lbgnet.config.Config or dict
        Supplies the line list (``config.lines`` or ``config['lines']``).

    Returns
    -------
    numpy.ndarray
        Shape (nspec, nlines), rest × (1 + Z_TRUE) in Å; NaN for non-LBG rows.
    """
    if hasattr(config, 'lines') and hasattr(config.lines, 'wave_array'):
        rest = config.lines.wave_array
    else:
        rest = np.asarray(list(config['lines'].values()), dtype=np.float64)
    z = np.where(_strings(truth['CLASS']) == 'LBG', np.asarray(truth['Z_TRUE'], dtype=np.float64), np.nan)
    return (1.0 + z)[:, None] * rest[None, :]
