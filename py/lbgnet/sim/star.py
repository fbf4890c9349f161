"""
lbgnet.sim.star
===============

Stars, hot to cool, and DA white dwarfs.

Parametric model: a Planck continuum at TEFF with Gaussian absorption lines whose
equivalent widths are interpolated in TEFF from a small table (Balmer series peaking
at A0, CaII H&K, G band, Mgb, NaD, the CaII triplet strengthening towards K/M, TiO
bands below ~4000 K; see ``etc/lbgnet-sim.yaml``); metal lines are scaled by
METAL_SCALE (faint halo stars are metal-poor).  White dwarfs have only pressure-
broadened Balmer lines.  Z_TRUE is the radial velocity over c.

With Redrock templates (``--rr-template-dir``), stars of subtype A, F, G, K, M and WD
are real spectra instead: the archetype ``floor(TEMPLATE_U × narchetype)`` of the
``STAR-<SUBTYPE>`` file, rebuilt from its basis and ``ARCHETYPE_COEFF`` (smoothed once
to ``template_smooth`` Å).  Subtypes without a template keep the parametric model.
"""
import numpy as np

from .components import C_KMS, Components, cap_depth

#: h c / k in Å K.
HC_K = 1.4387769e8


def draw_star(pars, n, rng):
    """Draw the physical parameters of `n` stars.

    Returns
    -------
    dict
        Columns (shape (n,)): SUBTYPE, Z_TRUE (v_r / c), TEFF (K), METAL_SCALE, TEMPLATE_U.
    """
    subs = pars['subtypes']
    names = list(subs)
    prob = np.array([subs[k]['fraction'] for k in names], dtype=np.float64)
    sub = np.asarray(names)[rng.choice(len(names), size=n, p=prob / prob.sum())]
    lo = np.log(np.array([subs[s]['teff'][0] for s in sub], dtype=np.float64))
    hi = np.log(np.array([subs[s]['teff'][1] for s in sub], dtype=np.float64))
    mean, sig = pars['metal_dex']
    return {
        'SUBTYPE': sub,
        'Z_TRUE': rng.normal(0.0, pars['vr_sigma'], n) / C_KMS,
        'TEFF': np.exp(rng.uniform(lo, hi)),
        'METAL_SCALE': np.clip(10 ** rng.normal(mean, sig, n), 0.05, 1.5),
        'TEMPLATE_U': rng.uniform(0.0, 1.0, n),
    }


def planck_continuum(teff):
    """Continuum function f_λ ∝ λ^-5 / (exp(hc/λkT) - 1), normalised near 5500 Å."""
    x0 = (HC_K / 5500.0 / np.asarray(teff, dtype=np.float64))
    norm = (np.expm1(x0)).astype(np.float32)[:, None]
    tinv = (HC_K / np.asarray(teff, dtype=np.float64)).astype(np.float32)[:, None]

    def continuum(rest):
        x = np.minimum(tinv / rest, np.float32(80.0))
        return (rest * np.float32(1.0 / 5500.0)) ** -5 * norm / np.expm1(x)
    return continuum


def star_lines(truth, pars):
    """Line table (rest centre, rest sigma, rest EW) of stars (parametric model)."""
    teff = np.asarray(truth['TEFF'], dtype=np.float64)
    metal = np.asarray(truth['METAL_SCALE'], dtype=np.float64)
    is_wd = np.asarray(truth['SUBTYPE']) == 'WD'
    n = teff.size
    knots = np.log(pars['teff_knots'])
    wdk = np.log(pars['wd_teff_knots'])
    wd_hb = np.interp(np.log(teff), wdk, pars['wd_hb_ew'])
    wd_sig = np.interp(np.log(teff), wdk, pars['wd_sigma'])
    rest, sigma, ew = [], [], []
    for name, spec in pars['lines'].items():
        val = np.interp(np.log(teff), knots, spec['ew'])
        if spec['kind'] == 'metal':
            val = val * metal
        sig = np.full(n, float(spec['sigma']))
        if spec['kind'] == 'balmer':
            ratio = pars['wd_balmer_ratio'].get(name, 0.0)
            val = np.where(is_wd, ratio * wd_hb, val)
            sig = np.where(is_wd, wd_sig, sig)
        else:
            val = np.where(is_wd, 0.0, val)
        rest.append(np.full(n, float(spec['wave'])))
        sigma.append(sig)
        ew.append(val)
    ew = np.stack(ew, axis=1)
    return np.stack(rest, axis=1), cap_depth(ew, np.stack(sigma, axis=1), pars['max_absorption_depth']), ew


def template_continuum(truth, archetypes):
    """Continuum function from smoothed Redrock star archetypes.

    Parameters
    ----------
    truth : mapping
        Star rows (SUBTYPE, TEMPLATE_U), all of subtypes present in `archetypes`.
    archetypes : dict
        SUBTYPE -> (wave0, dwave, basis (nbasis, nwave), coeff (narchetype, nbasis)),
        basis on a uniform grid (Å).

    Notes
    -----
    The archetypes of the batch are rebuilt once (coefficients @ basis), then sampled
    at the nearest template wavelength at each call.
    """
    sub = np.asarray(truth['SUBTYPE'])
    u = np.asarray(truth['TEMPLATE_U'], dtype=np.float64)
    built = {}
    for key in np.unique(sub):
        sel = np.nonzero(sub == key)[0]
        w0, dw, basis, coeff = archetypes[key]
        iarch = np.minimum((u[sel] * coeff.shape[0]).astype(np.int64), coeff.shape[0] - 1)
        built[key] = (sel, w0, dw, coeff[iarch].astype(np.float32) @ basis)

    def continuum(rest):
        # nearest template sample: the archetypes are smoothed to ~0.7 Å and sampled
        # every ~0.2 Å, finer than any grid rendered here
        flux = np.empty(rest.shape, dtype=np.float32)
        for sel, w0, dw, spectra in built.values():
            idx = ((rest[sel] - np.float32(w0)) * np.float32(1.0 / dw) + np.float32(0.5)).astype(np.int32)
            np.clip(idx, 0, spectra.shape[1] - 1, out=idx)
            flux[sel] = np.take_along_axis(spectra, idx, axis=1)
        return np.maximum(flux, 0.0)
    return continuum


def star_components(truth, pars, archetypes=None):
    """:class:`~lbgnet.sim.components.Components` of a batch of stars.

    Parameters
    ----------
    truth : mapping
        Star rows of the truth table (see :func:`draw_star`).
    pars : dict
        ``simulation.star`` section.
    archetypes : dict, optional
        SUBTYPE -> smoothed archetype basis (see :func:`template_continuum`).  When
        given, every row must have a subtype present in it (the caller splits).
    """
    z = np.asarray(truth['Z_TRUE'], dtype=np.float64)
    if archetypes:
        empty = np.zeros((z.size, 0))
        return Components(z, template_continuum(truth, archetypes), empty, empty, empty)
    rest, sigma, ew = star_lines(truth, pars)
    return Components(z, planck_continuum(truth['TEFF']), rest, sigma, ew)
