"""
lbgnet.sim.lbg
==============

Lyman Break Galaxies: population draw and physical model.

Model (rest frame, f_λ): UV power law ``(λ/1500)^BETA``, turning over blueward of
``lyman_side_wave`` (calibrated on the Shapley composite); Lyα either in emission
(asymmetric: a Gaussian core plus a red wing, redshifted by DV_LYA, on top of a
weaker broad trough) or in absorption (a broad damped trough at the interstellar
velocity); the interstellar absorption
lines of the 16-line list and the near-UV FeII/MgII/MgI lines at DV_ISM
(blueshifted), low-ionisation and HI lines scaled by ISM_SCALE, high-ionisation
lines by HIGH_ION_SCALE; HeII 1640, OIII]
1661/1666, CIII] 1907/1909 and SiII* emission at the systemic redshift; the
intergalactic Lyman-series forest (:mod:`lbgnet.sim.igm`) and zero flux below the
Lyman limit.  Every parameter and its published source is in ``etc/lbgnet-sim.yaml``.

With the Shapley et al. (2003) composite (``--lbg-composite``), the composite's
features that the parametric model does not describe (weak stellar-photospheric and
wind lines, fine structure, the shape of the continuum between the lines) are
imprinted multiplicatively: see :func:`composite_residual`.
"""
import numpy as np
from scipy.ndimage import median_filter

from .components import C_KMS, Components

LYA = 1215.67


def _lognormal(rng, sigma, n):
    """Mean-one lognormal factors exp(N(-σ²/2, σ))."""
    return np.exp(rng.normal(-0.5 * sigma ** 2, sigma, n))


def draw_lbg(pars, n, rng, zrange=None):
    """Draw the physical parameters of `n` LBGs.

    Parameters
    ----------
    pars : dict
        The ``simulation.lbg`` configuration section.
    n : int
    rng : numpy.random.Generator
    zrange : (float, float), optional
        Redshift range overriding ``pars['zrange']``.

    Returns
    -------
    dict
        Column name -> array of shape (n,): Z_TRUE, LYA_EW (Å, rest, > 0 emission),
        BETA, DV_LYA, DV_ISM (km/s), ISM_SCALE, HIGH_ION_SCALE, IGM_SCALE, IGM_SEED.
    """
    zlo, zhi = pars['zrange'] if zrange is None else zrange
    knots = np.asarray(pars['lya_ew_knots'], dtype=np.float64)
    lya = np.interp(rng.uniform(0.0, 1.0, n), np.linspace(0.0, 1.0, knots.size), knots)
    # pivot of the W trends: the mean W of the piecewise-linear inverse CDF (one knot: W)
    wref = float(knots[0] if knots.size == 1 else np.mean(0.5 * (knots[1:] + knots[:-1])))
    beta = (pars['beta_mean'] + pars['beta_lya_slope'] * (lya - wref)
            + rng.normal(0.0, pars['beta_sigma'], n))
    dv_lya = (pars['dv_lya_mean'] + pars['dv_lya_ew_slope'] * (lya - wref)
              + rng.normal(0.0, pars['dv_lya_sigma'], n))
    return {
        'Z_TRUE': rng.uniform(zlo, zhi, n),
        'LYA_EW': lya,
        'BETA': beta,
        'DV_LYA': np.maximum(dv_lya, 0.0),
        'DV_ISM': rng.normal(pars['dv_ism_mean'], pars['dv_ism_sigma'], n),
        'ISM_SCALE': np.interp(lya, pars['ism_scale_w'], pars['ism_scale_mean'])
        * _lognormal(rng, pars['ism_scale_sigma'], n),
        'HIGH_ION_SCALE': np.interp(lya, pars['high_scale_w'], pars['high_scale_mean'])
        * _lognormal(rng, pars['high_scale_sigma'], n),
    }


#: Rest-wavelength span (Å) and step of the lookup table of the composite residual;
#: it covers every rest wavelength a DESI spectrum of an LBG can reach (1 outside the
#: composite), so rendering needs one gather per pixel and no bounds test.
RESIDUAL_SPAN = (400.0, 8000.0)
RESIDUAL_STEP = 0.25


def composite_residual(wave, fnu, pars, restlines):
    """Features of the LBG composite that the parametric model does not describe.

    The composite (f_ν) is turned into f_λ and divided by its running median
    (``composite_smooth`` Å): the ratio keeps the narrow features and drops the
    continuum slope (set per object by BETA).  The ratio is set to 1 blueward of
    ``composite_min_wave`` (the forest and Lyα are modelled per object) and within
    ``composite_line_window`` Å of every modelled line, and clipped to [0.3, 1.7].

    Parameters
    ----------
    wave, fnu : numpy.ndarray
        Composite rest wavelength (Å, increasing) and f_ν.
    pars : dict
        ``simulation.lbg`` section.
    restlines : array_like
        Rest wavelengths (Å) of the modelled lines.

    Returns
    -------
    w0, dw, ratio : float, float, numpy.ndarray
        Lookup table: the multiplicative residual at ``w0 + dw·i`` (Å, rest), float32,
        linearly interpolated from the composite and 1 outside it.
    """
    wave = np.asarray(wave, dtype=np.float64)
    dw = float(np.median(np.diff(wave)))
    grid = np.arange(wave[0], wave[-1] + 0.5 * dw, dw)
    flam = np.interp(grid, wave, np.asarray(fnu, dtype=np.float64) / wave ** 2)
    size = max(3, int(round(pars['composite_smooth'] / dw)) | 1)
    cont = median_filter(flam, size=size, mode='nearest')
    with np.errstate(divide='ignore', invalid='ignore'):
        ratio = np.where(cont > 0, flam / cont, 1.0)
    ratio[grid < pars['composite_min_wave']] = 1.0
    for line in np.asarray(restlines, dtype=np.float64):
        ratio[np.abs(grid - line) < pars['composite_line_window']] = 1.0
    ratio = np.clip(np.nan_to_num(ratio, nan=1.0), 0.3, 1.7)
    table = np.arange(RESIDUAL_SPAN[0], RESIDUAL_SPAN[1], RESIDUAL_STEP)
    return RESIDUAL_SPAN[0], RESIDUAL_STEP, np.interp(table, grid, ratio, left=1.0, right=1.0).astype(np.float32)


def _continuum(beta, pars, residual):
    beta = np.asarray(beta, dtype=np.float32)[:, None]
    wside = np.float32(pars['lyman_side_wave'])
    dslope = np.float32(pars['lyman_side_slope'])

    def continuum(rest):
        lnr = np.log(rest * np.float32(1.0 / 1500.0))
        # below lyman_side_wave the slope steepens by lyman_side_slope (continuous there)
        lnside = np.minimum(np.log(rest / wside), np.float32(0.0))
        flux = np.exp(beta * lnr + dslope * lnside)
        if residual is not None:
            w0, dw, ratio = residual
            pos = np.clip((rest - np.float32(w0)) * np.float32(1.0 / dw), 0, ratio.size - 1)
            idx = np.minimum(pos.astype(np.int32), ratio.size - 2)
            frac = pos - idx
            flux *= ratio[idx] + frac * (ratio[idx + 1] - ratio[idx])
        return flux
    return continuum


def lbg_lines(truth, pars, linewaves):
    """Line table (rest centre, rest sigma, rest EW) of LBGs.

    Parameters
    ----------
    truth : mapping
        Columns LYA_EW, DV_LYA, DV_ISM, ISM_SCALE, HIGH_ION_SCALE (shape (n,)).
    pars : dict
        ``simulation.lbg`` section.
    linewaves : dict
        The 16-line list, name -> rest wavelength (Å).

    Returns
    -------
    rest, sigma, ew : numpy.ndarray
        Shape (n, nlines).
    """
    lya = np.asarray(truth['LYA_EW'], dtype=np.float64)
    dvl = np.asarray(truth['DV_LYA'], dtype=np.float64)
    dvi = np.asarray(truth['DV_ISM'], dtype=np.float64)
    n = lya.size
    cols = []    # (rest centre (n,), sigma (n,), ew (n,))
    # (rest wavelength, EW, group, width) of the interstellar lines: the line list's and
    # the near-UV FeII / MgII / MgI lines outside it, which behave like the low-ion ones.
    ism = [(float(linewaves[name]), spec['ew'], spec['group'], spec['width'])
           for name, spec in pars['lines'].items()]
    ism += [(float(spec['wave']), spec['ew'], 'low', 1.0)
            for spec in pars.get('nuv_absorption', {}).values()]
    for lam, ew0, group, width in ism:
        scale = truth['HIGH_ION_SCALE'] if group == 'high' else truth['ISM_SCALE']
        ew = ew0 * np.asarray(scale, dtype=np.float64)
        # Saturated lines with partial covering: a larger EW means a wider line, not a
        # deeper one (depth capped at ism_depth_max, Shapley et al. 2003 Sec. 4.2).
        sig = np.maximum(lam * pars['sigma_ism'] * width / C_KMS,
                         np.abs(ew) / (np.sqrt(2 * np.pi) * pars['ism_depth_max']))
        cols.append((lam * (1 + dvi / C_KMS), sig, ew))
    # Lyα: emission core + red wing (W > 0) or damped absorption trough (W < 0).
    emis = np.maximum(lya, 0.0)
    sig_l = LYA * pars['sigma_lya'] / C_KMS
    wing = float(pars['lya_red_wing'])
    centre = LYA * (1 + dvl / C_KMS)
    cols.append((centre, np.full(n, sig_l), (1 - wing) * emis))
    cols.append((centre + 1.5 * sig_l, np.full(n, 1.5 * sig_l), wing * emis))
    # W < 0: the damped trough; W > 0: the emission sits on a weaker trough that scales
    # with the low-ionisation absorption (ISM_SCALE).
    absw = np.where(lya < 0, lya, pars['lya_trough_ew'] * np.asarray(truth['ISM_SCALE'], dtype=np.float64))
    sig_a = np.maximum(pars['lya_abs_sigma_min'],
                       -absw / (np.sqrt(2 * np.pi) * pars['lya_abs_depth_max']))
    cols.append((LYA * (1 + dvi / C_KMS), sig_a, absw))
    neb = 1.0 + pars['nebular_lya_slope'] * emis
    for spec in pars['emission'].values():
        ew = spec['ew'] * (neb if spec.get('nebular', False) else 1.0)
        cols.append((np.full(n, spec['wave']), np.full(n, spec['wave'] * spec['sigma'] / C_KMS),
                     np.broadcast_to(ew, (n,)).astype(np.float64)))
    rest, sigma, ew = (np.stack([c[k] for c in cols], axis=1) for k in range(3))
    return rest, sigma, ew


def lbg_components(truth, pars, linewaves, residual=None):
    """:class:`~lbgnet.sim.components.Components` of a batch of LBGs.

    Parameters
    ----------
    truth : mapping
        LBG rows of the truth table (see :func:`draw_lbg`; plus IGM_SCALE, IGM_SEED).
    pars : dict
        ``simulation.lbg`` section.
    linewaves : dict
        The 16-line list.
    residual : tuple, optional
        Output of :func:`composite_residual`.
    """
    rest, sigma, ew = lbg_lines(truth, pars, linewaves)
    n = rest.shape[0]
    return Components(np.asarray(truth['Z_TRUE'], dtype=np.float64),
                      _continuum(truth['BETA'], pars, residual), rest, sigma, ew,
                      np.asarray(truth['IGM_SCALE'], dtype=np.float64),
                      np.asarray(truth['IGM_SEED']), np.full(n, np.inf))
