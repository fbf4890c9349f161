"""
lbgnet.sim.qso
==============

Quasars: population draw and physical model.

Parametric model (rest frame, f_λ): broken power law f_ν ∝ ν^ALPHA below
``alpha_break`` Å and ν^alpha_red above (Vanden Berk et al. 2001, AJ 122, 549), two
broad pseudo-continuum humps (FeII and Balmer continuum, the "small blue bump"),
broad and narrow emission lines with the Vanden Berk composite equivalent widths
scaled per object (LINE_SCALE) and broad widths QSO_FWHM; broad absorption troughs
for the BAL subtype; the Lyman-series forest with line-of-sight scatter and a
Lyman-limit optical depth TAU_LL (:mod:`lbgnet.sim.igm`).

With Redrock templates (``--rr-template-dir``), the continuum and emission lines come
from the Redrock QSO PCA basis (``HIZ`` for z ≥ 1.2, ``LOZ`` below, when present): the
mean vector plus QSO_PCA1..3 × ``pca_scatter`` × (rms of mean / rms of vector) times
the remaining vectors, tilted by the ALPHA offset from its mean.  The v1.1 templates
had the mean Lyα forest divided out only between 1025.72 and 1215.67 Å rest (their
header); blueward of Lyβ they keep the mean forest and Lyman-limit absorption of their
training quasars.  There each spectrum is raised to the unabsorbed power law
f_ν ∝ ν^alpha_mean matched to it at 1090–1110 Å rest (:func:`unabsorbed_below_lyb`), so
that the simulator's own forest, Lyman limit (TAU_LL) and BAL troughs, applied on top as
for the parametric model, are not applied twice.
"""
import numpy as np

from .components import C_KMS, Components

#: Redshift at and above which the HIZ Redrock template is used.
HIZ_MIN_Z = 1.2
#: Rest wavelengths of the BAL troughs (CIV, SiIV, NV, Lyα) and their EW relative to CIV.
BAL_LINES = ((1549.06, 1.0), (1396.76, 0.6), (1240.14, 0.6), (1215.67, 0.5))
NPCA = 3
#: Rest wavelength (Å) below which the Redrock v1.1 QSO templates keep the mean absorption
#: of their training quasars (Lyβ; the forest correction covers 1025.72–1215.67 Å).
TEMPLATE_FOREST_MIN = 1025.72
#: Rest window (Å) where the unabsorbed power law is matched to a template spectrum: a
#: stretch of continuum between OVI and the Lyα wing, redward of the uncorrected part.
TEMPLATE_MATCH_WINDOW = (1090.0, 1110.0)


def draw_piecewise(rng, edges, weights, n):
    """Draw from a piecewise-uniform density (bin `edges`, relative `weights`)."""
    edges = np.asarray(edges, dtype=np.float64)
    prob = np.asarray(weights, dtype=np.float64)
    if prob.size != edges.size - 1 or np.any(prob < 0) or prob.sum() <= 0:
        raise ValueError(f'piecewise density needs len(weights) = len(edges)-1 and weights >= 0, '
                         f'got {len(weights)} weights for {len(edges)} edges')
    k = rng.choice(prob.size, size=n, p=prob / prob.sum())
    return rng.uniform(edges[k], edges[k + 1])


def draw_qso(pars, n, rng, zrange=None):
    """Draw the physical parameters of `n` quasars.

    Parameters
    ----------
    pars : dict
        ``simulation.qso`` section.
    n : int
    rng : numpy.random.Generator
    zrange : (float, float), optional
        Clip the redshift distribution to this range.

    Returns
    -------
    dict
        Columns (shape (n,)): SUBTYPE ('QSO' or 'BAL'), Z_TRUE, ALPHA, QSO_FWHM (km/s),
        LINE_SCALE, BAL_EW (Å, rest, > 0 = trough depth), BAL_V, BAL_SIGMA (km/s),
        TAU_LL, QSO_PCA1..3.
    """
    edges = np.asarray(pars['z_edges'], dtype=np.float64)
    weights = np.asarray(pars['z_weights'], dtype=np.float64)
    if zrange is not None:
        lo, hi = zrange
        wlo, whi = np.clip(edges[:-1], lo, hi), np.clip(edges[1:], lo, hi)
        keep = whi > wlo
        if not np.any(keep):
            raise ValueError(f'QSO zrange {zrange} does not overlap the QSO redshift range '
                             f'[{edges[0]}, {edges[-1]}]')
        weights = np.where(keep, weights * (whi - wlo) / np.diff(edges), 0.0)
        edges = np.concatenate([[wlo[0]], whi])
    is_bal = rng.uniform(size=n) < pars['bal_fraction']
    out = {
        'SUBTYPE': np.where(is_bal, 'BAL', 'QSO'),
        'Z_TRUE': draw_piecewise(rng, edges, weights, n),
        'ALPHA': rng.normal(pars['alpha_mean'], pars['alpha_sigma'], n),
        'QSO_FWHM': pars['fwhm_median'] * 10 ** rng.normal(0.0, pars['fwhm_dex'], n),
        'LINE_SCALE': 10 ** rng.normal(0.0, pars['line_scale_dex'], n),
        'BAL_EW': np.where(is_bal, rng.uniform(*pars['bal_ew_range'], n), 0.0),
        'BAL_V': np.where(is_bal, rng.uniform(*pars['bal_v_range'], n), 0.0),
        'BAL_SIGMA': np.where(is_bal, rng.uniform(*pars['bal_sigma_range'], n), 0.0),
        'TAU_LL': rng.exponential(pars['lyman_limit_tau_mean'], n),
    }
    for k in range(NPCA):
        out[f'QSO_PCA{k + 1}'] = rng.normal(0.0, 1.0, n)
    return out


def _parametric_continuum(truth, pars):
    alpha = np.asarray(truth['ALPHA'], dtype=np.float32)[:, None]
    brk = np.float32(pars['alpha_break'])
    ared = np.float32(pars['alpha_red'])
    bumps = np.asarray(pars['bumps'], dtype=np.float32)

    def continuum(rest):
        lnr = np.log(rest / brk)
        # f_lambda ~ lambda^(-2-alpha): continuous at the break.
        slope = np.where(lnr < 0, -2.0 - alpha, -2.0 - ared)
        flux = np.exp(slope * lnr)
        hump = np.ones_like(flux)
        for centre, sigma, amp in bumps:
            hump += amp * np.exp(-0.5 * ((rest - centre) / sigma) ** 2)
        return flux * hump
    return continuum


def _template_continuum(truth, pars, basis_sets):
    """Continuum from Redrock QSO PCA templates; basis_sets: key -> (lnw0, dlnw, basis).

    The spectra of the batch are built once (coefficients @ basis) and then sampled by
    linear interpolation in ln λ at each call.
    """
    z = np.asarray(truth['Z_TRUE'])
    use_hiz = (z >= HIZ_MIN_Z) | ('LOZ' not in basis_sets)
    if 'HIZ' not in basis_sets:
        use_hiz[:] = False
    tilt = (np.asarray(truth['ALPHA']) - pars['alpha_mean']).astype(np.float32)[:, None]
    pca = np.stack([np.asarray(truth[f'QSO_PCA{k + 1}']) for k in range(NPCA)], axis=1)
    built = []
    for key, sel in (('HIZ', use_hiz), ('LOZ', ~use_hiz)):
        if not np.any(sel):
            continue
        lnw0, dlnw, basis = basis_sets[key]
        nb = basis.shape[0]
        k = min(nb - 1, NPCA)
        rms = np.sqrt(np.mean(basis.astype(np.float64) ** 2, axis=1))
        coef = np.zeros((int(sel.sum()), nb), dtype=np.float32)
        coef[:, 0] = 1.0
        coef[:, 1:k + 1] = pca[sel, :k] * pars['pca_scatter'] * rms[0] / rms[1:k + 1]
        spectra = unabsorbed_below_lyb(coef @ basis, lnw0, dlnw, pars['alpha_mean'])
        built.append((np.nonzero(sel)[0], lnw0, dlnw, spectra))

    def continuum(rest):
        flux = np.empty(rest.shape, dtype=np.float32)
        for rows, lnw0, dlnw, spectra in built:
            lnr = np.log(rest[rows])
            pos = (lnr - np.float32(lnw0)) * np.float32(1.0 / dlnw)
            idx = np.clip(pos.astype(np.int64), 0, spectra.shape[1] - 2)
            frac = np.clip(pos - idx, 0.0, 1.0)
            v0 = np.take_along_axis(spectra, idx, axis=1)
            v1 = np.take_along_axis(spectra, idx + 1, axis=1)
            flux[rows] = (v0 + frac * (v1 - v0)) * np.exp(-tilt[rows] * (lnr - np.float32(np.log(2000.0))))
        return np.maximum(flux, 0.0)
    return continuum


def unabsorbed_below_lyb(spectra, lnw0, dlnw, alpha):
    """Undo the mean absorption a Redrock QSO template keeps blueward of Lyβ.

    Below :data:`TEMPLATE_FOREST_MIN` each spectrum becomes the larger of itself and the
    power law f_λ ∝ λ^(-2-`alpha`) that equals its median in
    :data:`TEMPLATE_MATCH_WINDOW`: the absorbed continuum (and the Lyman break of the
    training quasars) is replaced by the unabsorbed one, while the blue wing of the
    Lyβ/OVI line, above that continuum, is kept (continuous where the template is).

    Parameters
    ----------
    spectra : numpy.ndarray
        Template spectra on the grid ln λ = `lnw0` + i `dlnw`, shape (n, nwave).
    lnw0, dlnw : float
    alpha : float
        Power-law index of f_ν ∝ ν^alpha.

    Returns
    -------
    numpy.ndarray
        The spectra (a new array), unchanged from :data:`TEMPLATE_FOREST_MIN` redward and
        where the template does not cover the matching window.
    """
    spectra = np.array(spectra, dtype=np.float32)
    lam = np.exp(lnw0 + dlnw * np.arange(spectra.shape[1]))
    window = (lam >= TEMPLATE_MATCH_WINDOW[0]) & (lam <= TEMPLATE_MATCH_WINDOW[1])
    blue = lam < TEMPLATE_FOREST_MIN
    if not np.any(window) or not np.any(blue):
        return spectra
    shape = (lam / TEMPLATE_MATCH_WINDOW[0]) ** (-2.0 - alpha)
    level = np.median(spectra[:, window] / shape[window], axis=1)
    spectra[:, blue] = np.maximum(spectra[:, blue],
                                  (np.maximum(level, 0.0)[:, None] * shape[blue]).astype(np.float32))
    return spectra


def qso_lines(truth, pars, with_emission=True):
    """Line table (rest centre, rest sigma, rest EW) of quasars: emission + BAL troughs."""
    z = np.asarray(truth['Z_TRUE'])
    n = z.size
    cols = []
    if with_emission:
        fwhm = np.asarray(truth['QSO_FWHM'], dtype=np.float64)
        scale = np.asarray(truth['LINE_SCALE'], dtype=np.float64)
        for spec in pars['lines'].values():
            sig = spec['wave'] * fwhm * spec['broad'] / (2.3548 * C_KMS)
            cols.append((np.full(n, spec['wave']), sig, spec['ew'] * scale))
    bal_v = np.asarray(truth['BAL_V'], dtype=np.float64)
    bal_s = np.asarray(truth['BAL_SIGMA'], dtype=np.float64)
    bal_ew = np.asarray(truth['BAL_EW'], dtype=np.float64)
    for lam, rel in BAL_LINES:
        sig = np.where(bal_ew > 0, lam * np.maximum(bal_s, 1.0) / C_KMS, 1.0)
        cols.append((lam * (1 - bal_v / C_KMS), sig, -rel * bal_ew))
    return tuple(np.stack([c[k] for c in cols], axis=1) for k in range(3))


def qso_components(truth, pars, basis_sets=None):
    """:class:`~lbgnet.sim.components.Components` of a batch of quasars.

    Parameters
    ----------
    truth : mapping
        QSO rows of the truth table (see :func:`draw_qso`; plus IGM_SCALE, IGM_SEED).
    pars : dict
        ``simulation.qso`` section.
    basis_sets : dict, optional
        ``'HIZ'``/``'LOZ'`` -> (ln λ0, Δ ln λ, basis (nbasis, nwave)) from the Redrock
        templates; None for the parametric model.
    """
    if basis_sets:
        continuum = _template_continuum(truth, pars, basis_sets)
        rest, sigma, ew = qso_lines(truth, pars, with_emission=False)
    else:
        continuum = _parametric_continuum(truth, pars)
        rest, sigma, ew = qso_lines(truth, pars)
    return Components(np.asarray(truth['Z_TRUE'], dtype=np.float64), continuum, rest, sigma, ew,
                      np.asarray(truth['IGM_SCALE'], dtype=np.float64),
                      np.asarray(truth['IGM_SEED']), np.asarray(truth['TAU_LL'], dtype=np.float64))
