"""
lbgnet.sim.galaxy
=================

Low-redshift galaxies (0.05 < z < 1.6), the [OII]-for-Lyα confusers.

Subtypes: ``SF`` (star-forming), ``OII_LYA`` (strong [OII] emitters placed so that
[OII] 3727 falls where an LBG's Lyα would, 3728.48 (1+z) = 1215.67 (1+Z_LYA_ALIAS))
and ``PASSIVE``.  Continuum: power laws BETA_BLUE / BETA_RED below / above 4000 Å
with a 4000 Å break of amplitude D4000 and stellar absorption lines (CaII H&K, G band,
Mgb, NaD, MgII) growing with D4000; the star-forming subtypes also have interstellar
FeII/MgII/MgI near-UV absorption (the LBG table, scaled by ISM_SCALE).  Emission
lines from the [OII] equivalent width and flux ratios (Hβ, [OIII], Hα, [NII], [SII],
Hγ, Hδ, [NeIII]) with a Balmer decrement from E(B−V).  Parameter sources are in
``etc/lbgnet-sim.yaml``.
"""
import numpy as np
from desiutil.log import get_logger

from .components import C_KMS, Components, cap_depth
from .qso import draw_piecewise

LYA = 1215.67
OII = 3728.48            # flux-weighted mean of the doublet (vacuum)
OII_BLUE, OII_RED = 3727.09, 3729.88
#: Rest wavelengths (Å, vacuum) of the emission lines.
EMISSION = {'OII3727': OII_BLUE, 'OII3730': OII_RED, 'NEIII': 3869.86, 'HD': 4102.89,
            'HG': 4341.68, 'HB': 4862.68, 'OIII4960': 4960.30, 'OIII5008': 5008.24,
            'NII6550': 6549.86, 'HA': 6564.61, 'NII6585': 6585.27, 'SII6718': 6718.29,
            'SII6733': 6732.67}
#: Calzetti et al. (2000) k(Hβ) − k(Hα) for the Balmer decrement; case-B Hα/Hβ = 2.86,
#: Hγ/Hβ = 0.468, Hδ/Hβ = 0.259 (Osterbrock & Ferland 2006).
DK_HB_HA = 1.27
BREAK_WIDTH = 25.0       # Å, width of the smooth 4000 Å break


def draw_galaxy(pars, n, rng, lbg_zrange):
    """Draw the physical parameters of `n` low-redshift galaxies.

    Parameters
    ----------
    pars : dict
        ``simulation.galaxy`` section.
    n : int
    rng : numpy.random.Generator
    lbg_zrange : (float, float)
        LBG redshift range, for the ``OII_LYA`` subtype.  Where no galaxy redshift in
        ``oii_lya_zrange`` puts [OII] at the Lyα of an LBG in this range (LBGs below
        z ≈ 2.22 with the default 0.05), that subtype's draws become ``SF`` (warned).

    Returns
    -------
    dict
        Columns (shape (n,)): SUBTYPE, Z_TRUE, Z_LYA_ALIAS (NaN unless OII_LYA), D4000,
        BETA_BLUE, BETA_RED, OII_EW (Å, rest, doublet total), OII_RATIO (3729/3726),
        LOG_OII_HB, LOG_OIII_HB, LOG_NII_HA, LOG_SII_HA, EBV, VDISP (km/s), ISM_SCALE
        (factor on ``ism_absorption``; 0 for PASSIVE).
    """
    names = list(pars['subtype_fractions'])
    prob = np.array([pars['subtype_fractions'][k] for k in names], dtype=np.float64)
    sub = np.asarray(names)[rng.choice(len(names), size=n, p=prob / prob.sum())]
    z = draw_piecewise(rng, pars['z_edges'], pars['z_weights'], n)
    # [OII] at Lyα: uniform in the LBG redshift that it mimics, within oii_lya_zrange.
    zg_lo, zg_hi = pars['oii_lya_zrange']
    zl_lo = max(lbg_zrange[0], OII * (1 + zg_lo) / LYA - 1)
    zl_hi = min(lbg_zrange[1], OII * (1 + zg_hi) / LYA - 1)
    alias = np.full(n, np.nan)
    is_oii = sub == 'OII_LYA'
    if np.any(is_oii) and zl_hi <= zl_lo:
        # e.g. LBGs at z < 2.22: their Lyα lies blueward of [OII] at the lowest galaxy
        # redshift, so no galaxy can mimic them; these become ordinary star-forming galaxies
        get_logger().warning('no [OII]-as-Lya galaxy redshift in %s for LBG redshifts %s: '
                             '%d OII_LYA galaxies drawn as SF', pars['oii_lya_zrange'],
                             tuple(lbg_zrange), int(is_oii.sum()))
        sub = np.where(is_oii, 'SF', sub)
        is_oii = np.zeros(n, bool)
    if np.any(is_oii):
        alias[is_oii] = rng.uniform(zl_lo, zl_hi, int(is_oii.sum()))
        z[is_oii] = LYA * (1 + alias[is_oii]) / OII - 1
    passive = sub == 'PASSIVE'

    def by_type(key_sf, key_passive):
        return np.where(passive, rng.uniform(*pars[key_passive], n), rng.uniform(*pars[key_sf], n))

    med = np.array([pars['oii_ew_median'][s] for s in sub], dtype=np.float64)
    return {
        'SUBTYPE': sub, 'Z_TRUE': z, 'Z_LYA_ALIAS': alias,
        'D4000': by_type('sf_d4000', 'passive_d4000'),
        'BETA_BLUE': by_type('sf_beta_blue', 'passive_beta_blue'),
        'BETA_RED': by_type('sf_beta_red', 'passive_beta_red'),
        'OII_EW': med * 10 ** rng.normal(0.0, pars['oii_ew_dex'], n),
        'OII_RATIO': rng.uniform(*pars['oii_ratio_range'], n),
        'LOG_OII_HB': rng.normal(*pars['log_oii_hb'], n),
        'LOG_OIII_HB': rng.normal(*pars['log_oiii_hb'], n),
        'LOG_NII_HA': rng.normal(*pars['log_nii_ha'], n),
        'LOG_SII_HA': rng.normal(*pars['log_sii_ha'], n),
        'EBV': rng.uniform(*pars['ebv_range'], n),
        'VDISP': rng.uniform(*pars['vdisp_range'], n),
        # Drawn last so that the columns above keep their random streams.
        'ISM_SCALE': np.where(passive, 0.0, np.exp(rng.normal(
            -0.5 * pars.get('ism_scale_sigma', 0.0) ** 2, pars.get('ism_scale_sigma', 0.0), n))),
    }


def _continuum(truth):
    dinv = (1.0 / np.asarray(truth['D4000'], dtype=np.float32))[:, None]
    bblue = np.asarray(truth['BETA_BLUE'], dtype=np.float32)[:, None]
    bred = np.asarray(truth['BETA_RED'], dtype=np.float32)[:, None]

    def continuum(rest):
        lnr = np.log(rest * np.float32(1.0 / 4000.0))
        power = np.exp(np.where(lnr < 0, bblue, bred) * lnr)
        sigm = 0.5 + 0.5 * np.tanh((rest - np.float32(4000.0)) * np.float32(0.5 / BREAK_WIDTH))
        step = dinv + (1.0 - dinv) * sigm
        return power * step
    return continuum


def _line_fluxes(truth):
    """Emission-line fluxes relative to the [OII] doublet flux (dict name -> (n,))."""
    oii_hb = 10 ** np.asarray(truth['LOG_OII_HB'])
    ratio = np.asarray(truth['OII_RATIO'])
    hb = 1.0 / oii_hb
    ha = hb * 2.86 * 10 ** (0.4 * np.asarray(truth['EBV']) * DK_HB_HA)
    oiii = hb * 10 ** np.asarray(truth['LOG_OIII_HB'])
    nii = ha * 10 ** np.asarray(truth['LOG_NII_HA'])
    sii = ha * 10 ** np.asarray(truth['LOG_SII_HA'])
    return {'OII3727': 1.0 / (1.0 + ratio), 'OII3730': ratio / (1.0 + ratio),
            'NEIII': 0.05 * np.ones_like(hb), 'HD': 0.259 * hb, 'HG': 0.468 * hb, 'HB': hb,
            'OIII4960': oiii / 2.98, 'OIII5008': oiii, 'NII6550': nii / 3.05, 'HA': ha,
            'NII6585': nii, 'SII6718': 0.55 * sii, 'SII6733': 0.45 * sii}


def galaxy_components(truth, pars):
    """:class:`~lbgnet.sim.components.Components` of a batch of low-z galaxies.

    Notes
    -----
    Line fluxes follow from the [OII] EW: F_OII = OII_EW × C(3728.48 Å); the other
    lines' fluxes are ratios of F_OII; their EW is flux over the continuum at the line.
    """
    continuum = _continuum(truth)
    z = np.asarray(truth['Z_TRUE'], dtype=np.float64)
    n = z.size
    f_oii = np.asarray(truth['OII_EW']) * continuum(np.full((n, 1), OII, dtype=np.float32))[:, 0]
    fluxes = _line_fluxes(truth)
    rest_e = np.array(list(EMISSION.values()))
    cont_e = continuum(np.broadcast_to(rest_e.astype(np.float32), (n, rest_e.size)).copy())
    ew_e = np.stack([fluxes[k] for k in EMISSION], axis=1) * f_oii[:, None] / cont_e
    sig_e = rest_e[None, :] * np.asarray(truth['VDISP'])[:, None] / C_KMS
    absn = pars['absorption']
    rest_a = np.array([v['wave'] for v in absn.values()])
    strength = np.clip((np.asarray(truth['D4000']) - 1.0) / 0.8, 0.05, 1.5)
    ew_a = np.array([v['ew'] for v in absn.values()])[None, :] * strength[:, None]
    sig_a = cap_depth(ew_a, np.broadcast_to(rest_a * pars['absorption_sigma'] / C_KMS, (n, rest_a.size)),
                      pars['max_absorption_depth'])
    ism = pars.get('ism_absorption') or {}
    rest_i = np.array([v['wave'] for v in ism.values()], dtype=np.float64)
    scale = np.nan_to_num(np.asarray(truth['ISM_SCALE'], dtype=np.float64))  # NaN: none
    ew_i = np.array([v['ew'] for v in ism.values()], dtype=np.float64)[None, :] * scale[:, None]
    sig_i = cap_depth(ew_i, np.broadcast_to(rest_i * pars.get('ism_sigma', 250.0) / C_KMS,
                                            (n, rest_i.size)), pars['max_absorption_depth'])
    rest = np.concatenate([np.broadcast_to(rest_e, (n, rest_e.size)),
                           np.broadcast_to(rest_a, (n, rest_a.size)),
                           np.broadcast_to(rest_i, (n, rest_i.size))], axis=1)
    return Components(z, continuum, rest, np.concatenate([sig_e, sig_a, sig_i], axis=1),
                      np.concatenate([ew_e, ew_a, ew_i], axis=1))
