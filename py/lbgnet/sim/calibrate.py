"""
lbgnet.sim.calibrate
====================

Fit the noise model of :mod:`lbgnet.sim.instrument` to a real DESI coadd, and
compare the model with it.  Used once, by the maintainers, to produce the
``instrument.noise`` section of ``etc/lbgnet-mock.yaml`` (the package itself never
needs the real file); kept in the package so that the calibration can be redone
on another coadd.

Method (per arm):

1. *Gain.*  The pipeline variance of fibre i at pixel j is
   ``var_ij = A_j + F_ij / G_j`` (background plus object shot noise).  In chunks of
   wavelength, the median variance of each fibre is regressed on its median
   (smoothed) flux; the slope is 1/G.
2. *Background.*  ``A_j`` = median over faint fibres of ``var_ij - F_ij/G_j``; then
   ``A_j G_j = c(λ_j) + a_arm L_j + RN²_arm / G_j`` is solved by non-negative
   least squares for a piecewise-linear sky continuum c, a sky-line scale a_arm
   (L = desispec's sky-line spectrum through the LSF) and a read-noise variance RN².
3. *Excess scatter.*  Robust scatter of (f_j - f_j+2)/σ between line-free pixels.
4. *Sky residuals.*  Excess of the squared deviations from a running median at
   the sky-line pixels (in units of the pipeline σ), in units of the scaled line flux.

A coadd that cannot support these fits (too few live fibres, no faint fibre for the
background or no bright one for the shot noise in some gain chunk, or a variance that
does not grow with flux) is refused with a ValueError saying what is missing
(:func:`check_calibration_input`), rather than giving numbers without meaning.
"""
import numpy as np
from scipy.ndimage import median_filter
from scipy.optimize import nnls

from .lsf import lsf_sigma, sky_line_spectrum

#: Running-median window (pixels) for the smooth object flux.
SMOOTH_PIXELS = 101
#: Width (Å) of the gain chunks within `EDGE_ZONE` of an arm edge, and elsewhere.
EDGE_CHUNK, MID_CHUNK, EDGE_ZONE = 30.0, 150.0, 120.0
#: Median flux (1e-17 erg/s/cm²/Å) below which a fibre counts as faint.
FAINT_FLUX = 1.0
#: Spacing (Å) of the sky-continuum nodes.
CONTINUUM_STEP = 400.0
#: Grids searched for the sky-line velocity shift (km/s) and variance-profile width.
SHIFT_GRID = np.arange(-40.0, 40.1, 4.0)
SIGMA_FACTOR_GRID = np.arange(0.4, 1.21, 0.05)
#: Fewest live fibres with a valid pixel in each gain chunk: the regression fits two
#: coefficients (background and 1/G), one point per fibre, so it needs one more to be
#: overdetermined.
MIN_CHUNK_FIBRES = 3
#: Fewest faint fibres (the background variance, the excess scatter and the sky residual
#: are measured on them) and bright fibres (their shot noise sets the gain) with a valid
#: pixel in each gain chunk: without them the fits are undefined (no bright fibre: gains
#: of 10**6; no faint one: read noise ~1e-309, excess NaN).  The least for a defined
#: fit, not for a good one: on subsets of the 24-fibre SV1 coadd, its 8 bright and 1
#: faint fibre gave gains within 16 % and read noise within 22 % of the fit on all of
#: them, but 1 bright and 2 faint gave gains off by up to a factor 3 and a read noise of 0.
MIN_FAINT_FIBRES = 1
MIN_BRIGHT_FIBRES = 1


def live_fibres(ivars):
    """Fibres with at least one valid pixel in every arm, shape (nspec,) bool."""
    return np.all([np.any(iv > 0, axis=1) for iv in ivars.values()], axis=0)


def smooth_flux(flux):
    """Running median of each spectrum, clipped at 0, shape (nspec, nwave)."""
    return np.maximum(median_filter(flux, size=(1, SMOOTH_PIXELS), mode='nearest'), 0.0)


def chunk_edges(wave):
    """Edges of the gain-fit chunks of one arm: narrow near its ends, wide inside."""
    lo, hi = wave[0], wave[-1] + 1e-6
    left = np.arange(lo, lo + EDGE_ZONE, EDGE_CHUNK)
    right = hi - np.arange(0.0, EDGE_ZONE, EDGE_CHUNK)[::-1]
    nmid = max(1, int(round((right[0] - left[-1]) / MID_CHUNK)))
    mid = np.linspace(left[-1], right[0], nmid + 1)
    return np.unique(np.concatenate([left, mid, right, [hi]]))


def check_calibration_input(coadd):
    """The live fibres of a coadd, once it is checked to support :func:`calibrate_noise`.

    Every gain chunk (:func:`chunk_edges`) of every arm must hold at least
    `MIN_CHUNK_FIBRES` live fibres with a valid pixel (ivar > 0) in it, `MIN_FAINT_FIBRES`
    of them faint (median smoothed flux in the arm below `FAINT_FLUX`) and
    `MIN_BRIGHT_FIBRES` bright.

    Parameters
    ----------
    coadd : lbgnet.io.CoaddData

    Returns
    -------
    numpy.ndarray
        :func:`live_fibres`, shape (nspec,) bool.

    Raises
    ------
    ValueError
        Naming the file, the arm and the chunk (Å), and what was found against what is
        needed.
    """
    live = live_fibres(coadd.ivar)
    if live.sum() < MIN_CHUNK_FIBRES:
        raise ValueError(f'{coadd.path}: cannot calibrate the noise: {int(live.sum())} of '
                         f'{live.size} fibres are live (a valid pixel in every arm), '
                         f'needs >= {MIN_CHUNK_FIBRES}')
    for band in coadd.bands:
        wave, valid = coadd.wave[band], coadd.ivar[band][live] > 0
        faint = np.median(smooth_flux(coadd.flux[band][live]), axis=1) < FAINT_FLUX
        edges = chunk_edges(wave)
        for lo, hi in zip(edges[:-1], edges[1:]):
            seen = np.any(valid[:, (wave >= lo) & (wave < hi)], axis=1)
            nfib, nfaint = int(seen.sum()), int(np.sum(seen & faint))
            if (nfib < MIN_CHUNK_FIBRES or nfaint < MIN_FAINT_FIBRES
                    or nfib - nfaint < MIN_BRIGHT_FIBRES):
                raise ValueError(
                    f'{coadd.path}: cannot calibrate the noise: the {band} arm at '
                    f'{lo:.0f}-{hi:.0f} A has {nfib} live fibres with a valid pixel, '
                    f'{nfaint} of them faint (median flux < {FAINT_FLUX:g}) and '
                    f'{nfib - nfaint} bright; needs >= {MIN_CHUNK_FIBRES} (the gain '
                    f'regression), >= {MIN_FAINT_FIBRES} faint (the background) and '
                    f'>= {MIN_BRIGHT_FIBRES} bright (the shot noise that sets the gain)')
    return live


def fit_gain(wave, flux, ivar):
    """Electrons per pixel per flux unit, from the variance-flux regression.

    Parameters
    ----------
    wave : numpy.ndarray
        Shape (nwave,), Å.
    flux, ivar : numpy.ndarray
        Live fibres only, shape (nfib, nwave); each chunk's regression uses those with
        a valid pixel (ivar > 0) in it.

    Returns
    -------
    node_wave, node_gain : numpy.ndarray
        Chunk centres (Å) and gains; the first and last node sit on the arm ends.

    Raises
    ------
    ValueError
        When the variance does not grow with the flux in a chunk (a slope of 1e-6 or
        less: a gain of 10**6 or more, where DESI's are below ~10**3), naming the chunk.
    """
    var = 1.0 / np.where(ivar > 0, ivar, np.nan)
    fsm = smooth_flux(flux)
    edges = chunk_edges(wave)
    centres, gains = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (wave >= lo) & (wave < hi)
        seen = np.any(ivar[:, sel] > 0, axis=1)       # the fibres with a variance here
        fmed = np.median(fsm[seen][:, sel], axis=1)
        vmed = np.nanmedian(var[seen][:, sel], axis=1)
        design = np.vstack([np.ones_like(fmed), fmed]).T / vmed[:, None]
        coef, *_ = np.linalg.lstsq(design, np.ones_like(vmed), rcond=None)
        if not coef[1] > 1e-6:
            raise ValueError(f'at {lo:.0f}-{hi:.0f} A the variance of the {fmed.size} '
                             f'fibres with a valid pixel does not grow with their flux '
                             f'(slope {coef[1]:.3g} per flux unit): no shot noise to set '
                             'the gain')
        centres.append(0.5 * (lo + hi))
        gains.append(1.0 / coef[1])
    centres = np.array(centres)
    centres[0], centres[-1] = wave[0], wave[-1]
    return centres, np.array(gains)


def background_variance(flux, ivar, gain):
    """Median over faint fibres of the variance minus the object shot noise, shape (nwave,)."""
    var = 1.0 / np.where(ivar > 0, ivar, np.nan)
    fsm = smooth_flux(flux)
    faint = np.median(fsm, axis=1) < FAINT_FLUX
    return np.nanmedian(var[faint] - fsm[faint] / gain, axis=0)


def _hat_basis(x, nodes):
    """Piecewise-linear interpolation basis, shape (len(x), len(nodes))."""
    eye = np.eye(nodes.size)
    return np.stack([np.interp(x, nodes, eye[k]) for k in range(nodes.size)], axis=1)


def fit_background(waves, backgrounds, gains, unit_lines):
    """Split the background variance into sky continuum, sky lines and read noise.

    Parameters
    ----------
    waves, backgrounds, gains, unit_lines : dict
        band -> arrays of shape (nwave,): wavelengths, background variance A_j,
        gain G_j and sky lines through the LSF at unit scale L_j.

    Returns
    -------
    dict
        ``continuum_wave``, ``continuum_flux`` (node table), ``line_scale`` and
        ``read_var`` (band -> float).
    """
    bands = list(waves)
    lo = min(w[0] for w in waves.values())
    hi = max(w[-1] for w in waves.values())
    nodes = np.linspace(lo, hi, int(np.ceil((hi - lo) / CONTINUUM_STEP)) + 1)
    rows, rhs = [], []
    for iband, band in enumerate(bands):
        ok = np.isfinite(backgrounds[band]) & (backgrounds[band] > 0)
        target = backgrounds[band][ok] * gains[band][ok]
        extra = np.zeros((ok.sum(), 2 * len(bands)))
        extra[:, iband] = unit_lines[band][ok]
        extra[:, len(bands) + iband] = 1.0 / gains[band][ok]
        design = np.hstack([_hat_basis(waves[band][ok], nodes), extra])
        rows.append(design / target[:, None])
        rhs.append(np.ones(ok.sum()))
    sol, _ = nnls(np.vstack(rows), np.concatenate(rhs), maxiter=5000)
    ncont = nodes.size
    return dict(continuum_wave=nodes, continuum_flux=sol[:ncont],
                line_scale={b: float(sol[ncont + i]) for i, b in enumerate(bands)},
                read_var={b: float(sol[ncont + len(bands) + i]) for i, b in enumerate(bands)})


def noise_excess(flux, ivar, lines, gap=2):
    """Robust scatter of pixel differences in units of the pipeline σ (line-free pixels)."""
    var = 1.0 / np.where(ivar > 0, ivar, np.nan)
    faint = np.median(smooth_flux(flux), axis=1) < FAINT_FLUX
    diff = (flux[:, gap:] - flux[:, :-gap]) / np.sqrt(var[:, gap:] + var[:, :-gap])
    clean = (lines[gap:] <= 0) & (lines[:-gap] <= 0)
    vals = diff[faint][:, clean]
    vals = vals[np.isfinite(vals)]
    return float(1.4826 * np.median(np.abs(vals - np.median(vals))))


def sky_residual(flux, ivar, lines, excess, window=25, min_lines_sigma=3.0):
    """Fractional sky-line residual ε, matching the scatter in units of the pipeline σ.

    At pixels where the scaled sky lines exceed `min_lines_sigma` × the median σ,
    E[(f − running median)²/var] = excess² + ε²·lines²/var; ε² is the sum over faint
    fibres and those pixels of the left side minus excess², divided by the sum of
    lines²/var (a moment estimator, not a least-squares fit).
    """
    var = 1.0 / np.where(ivar > 0, ivar, np.nan)
    faint = np.median(smooth_flux(flux), axis=1) < FAINT_FLUX
    resid = flux - median_filter(flux, size=(1, window), mode='nearest')
    strong = lines > min_lines_sigma * np.sqrt(np.nanmedian(var[faint], axis=0))
    if not np.any(strong):
        return 0.0
    vsub = var[faint][:, strong]
    chi_sq_excess = np.nansum(resid[faint][:, strong] ** 2 / vsub - excess ** 2)
    eps_sq = chi_sq_excess / np.nansum(lines[strong] ** 2 / vsub)
    return float(np.sqrt(max(eps_sq, 0.0)))


def background_model(fit, waves, gains, unit_lines):
    """Background variance predicted by a :func:`fit_background` result, band -> (nwave,)."""
    out = {}
    for band, wave in waves.items():
        sky = np.interp(wave, fit['continuum_wave'], fit['continuum_flux']) \
            + fit['line_scale'][band] * unit_lines[band]
        out[band] = sky / gains[band] + fit['read_var'][band] / gains[band] ** 2
    return out


def fit_sky_lines(waves, backgrounds, gains, sigmas, sky_lines):
    """Grid search of the sky-line shift and width, each followed by :func:`fit_background`.

    Returns
    -------
    fit : dict
        The best :func:`fit_background` result plus ``shift`` (km/s) and ``sigma_factor``.
    unit_lines : dict
        band -> sky lines at unit scale for the best shift and width.
    """
    best = None
    for shift in SHIFT_GRID:
        for factor in SIGMA_FACTOR_GRID:
            lines = {b: sky_line_spectrum(sky_lines, w, sigmas[b], shift, factor)
                     for b, w in waves.items()}
            fit = fit_background(waves, backgrounds, gains, lines)
            model = background_model(fit, waves, gains, lines)
            cost = sum(np.nansum(np.log(model[b] / backgrounds[b]) ** 2) for b in waves)
            if best is None or cost < best[0]:
                best = (cost, dict(fit, shift=float(shift), sigma_factor=float(factor)), lines)
    return best[1], best[2]


def calibrate_noise(coadd, resolution, sky_lines):
    """Fit every noise parameter to a real coadd.

    Parameters
    ----------
    coadd : lbgnet.io.CoaddData
        A real DESI coadd (e.g. ../shared/reference/desi-coadd/).
    resolution : dict
        band -> (R at first pixel, R at last pixel).
    sky_lines : (numpy.ndarray, numpy.ndarray)
        desispec's sky-line spectrum (:func:`lbgnet.io.skymodel.read_sky_lines`).

    Returns
    -------
    dict
        ``gain`` (band -> {'wave', 'value'}), ``sky_continuum`` ({'wave', 'flux'}),
        ``sky_line_scale``, ``read_noise_var``, ``noise_excess``, ``sky_residual``
        (band -> float), ``sky_line_shift`` and ``sky_line_sigma_factor``: the layout of
        the ``instrument.noise`` configuration section (without ``efftime_ref``).

    Raises
    ------
    ValueError
        When the coadd cannot support the fit (:func:`check_calibration_input`), or the
        variance does not grow with the flux in a chunk (:func:`fit_gain`).
    """
    live = check_calibration_input(coadd)
    waves, backs, gains, sigmas, gain_nodes = {}, {}, {}, {}, {}
    for band in coadd.bands:
        wave, flux, ivar = coadd.wave[band], coadd.flux[band][live], coadd.ivar[band][live]
        try:
            nw, ng = fit_gain(wave, flux, ivar)
        except ValueError as err:
            raise ValueError(f'{coadd.path}: cannot calibrate the noise: in the {band} arm '
                             f'{err}') from None
        gain_nodes[band] = dict(wave=nw, value=ng)
        waves[band], gains[band] = wave, np.interp(wave, nw, ng)
        backs[band] = background_variance(flux, ivar, gains[band])
        sigmas[band] = lsf_sigma(wave, resolution[band])
    bg, lines = fit_sky_lines(waves, backs, gains, sigmas, sky_lines)
    out = dict(gain=gain_nodes, sky_continuum=dict(wave=bg['continuum_wave'],
                                                   flux=bg['continuum_flux']),
               sky_line_scale=bg['line_scale'], sky_line_shift=bg['shift'],
               sky_line_sigma_factor=bg['sigma_factor'], read_noise_var=bg['read_var'],
               noise_excess={}, sky_residual={})
    for band in coadd.bands:
        flux, ivar = coadd.flux[band][live], coadd.ivar[band][live]
        scaled = bg['line_scale'][band] * lines[band]
        out['noise_excess'][band] = noise_excess(flux, ivar, scaled)
        out['sky_residual'][band] = sky_residual(flux, ivar, scaled, out['noise_excess'][band])
    return out


def sigma_comparison(coadd, instrument):
    """Real and model pipeline σ per pixel for the live fibres of a coadd.

    The model σ uses each fibre's smoothed real flux as object flux, at the
    instrument's reference effective time.

    Returns
    -------
    dict
        band -> (sigma_real, sigma_model), each of shape (nlive, nwave).
    """
    from .instrument import pipeline_variance
    live = live_fibres(coadd.ivar)
    out = {}
    for band, arm in instrument.arms.items():
        ivar = coadd.ivar[band][live]
        real = 1.0 / np.sqrt(np.where(ivar > 0, ivar, np.nan))
        fsm = smooth_flux(coadd.flux[band][live])
        efft = np.full(fsm.shape[0], instrument.efftime_ref)
        model = np.sqrt(pipeline_variance(arm, fsm, efft, instrument.efftime_ref))
        out[band] = (real, model)
    return out
