#!/usr/bin/env python
"""Make the figures and numbers of doc/sim_instrument.rst (noise model against the real
DESI coadd, S/N per 8 Å bin against r magnitude, mock spectra next to real ones, the
simulated Redrock outcome).

Usage (from the repository root)::

    PYTHONPATH=py python doc/scripts/sim_instrument_plots.py [--outdir doc/images]

Needs ../shared/reference/desi-coadd/coadd-sv1-dark-80605-25fibres.fits; prints the
numbers quoted in the page as JSON.
"""
import argparse
import json
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.ndimage import median_filter  # noqa: E402

from lbgnet.io import read_coadd  # noqa: E402
from lbgnet.preprocess import grid_spectra, rebin_arms  # noqa: E402
from lbgnet.sim.calibrate import live_fibres, sigma_comparison, smooth_flux  # noqa: E402
from lbgnet.sim.fibermap import BROADBANDS  # noqa: E402
from lbgnet.sim.instrument import observe  # noqa: E402
from lbgnet.sim.lsf import FWHM_PER_SIGMA  # noqa: E402
from lbgnet.sim.mock import load_mock_setup, make_mock, render_models  # noqa: E402
from lbgnet.sim.population import draw_population  # noqa: E402

REF = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared',
                   'reference', 'desi-coadd', 'coadd-sv1-dark-80605-25fibres.fits')
COLORS = {'b': 'tab:blue', 'r': 'tab:red', 'z': 'tab:brown'}


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--outdir', default='doc/images', help='output directory [%(default)s]')
    parser.add_argument('--seed', type=int, default=3, help='random seed [%(default)s]')
    return parser.parse_args(options)


def sigma_figure(coadd, setup, path):
    """σ per pixel, real (median of 24 live fibres) against the model; numbers per arm."""
    cmp = sigma_comparison(coadd, setup.instrument)
    fig, (ax, axr) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True,
                                  gridspec_kw=dict(height_ratios=[3, 1.3]))
    stats = {}
    for band, (real, model) in cmp.items():
        wave = setup.instrument.arms[band].wave
        mreal, mmodel = np.nanmedian(real, axis=0), np.median(model, axis=0)
        ax.plot(wave, mreal, color='0.55', lw=0.6, label='real SV1 coadd' if band == 'b' else None)
        ax.plot(wave, mmodel, color=COLORS[band], lw=0.6, alpha=0.8,
                label=f'model ({band})')
        ratio = mmodel / mreal
        axr.plot(wave, median_filter(ratio, 9), color=COLORS[band], lw=0.6)
        stats[band] = dict(median_sigma_real=float(np.nanmedian(real)),
                           median_sigma_model=float(np.median(model)),
                           ratio_p05=float(np.percentile(ratio, 5)),
                           ratio_p95=float(np.percentile(ratio, 95)),
                           frac_within_25pct=float(np.mean(np.abs(ratio - 1) < 0.25)))
    ax.set_yscale('log')
    ax.set_ylim(0.04, 3)
    ax.set_ylabel(r'$\sigma$ per 0.8 Å pixel [$10^{-17}$ erg/s/cm$^2$/Å]')
    ax.legend(loc='upper right', fontsize=8, ncol=2)
    ax.set_title('Pipeline noise of 24 fibres of SV1 tile 80605 (EFFTIME 8711 s) and the '
                 'noise model at the same flux and depth', fontsize=9)
    axr.axhline(1, color='k', lw=0.5)
    axr.set_ylim(0.5, 1.5)
    axr.set_ylabel('model / real\n(9-pixel median)')
    axr.set_xlabel('wavelength [Å]')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return stats


def chi_statistics(coadd, setup, rng):
    """Robust and rms scatter of pixel differences, real and model, off and on sky lines."""
    nmad = lambda x: float(1.4826 * np.median(np.abs(x - np.median(x))))  # noqa: E731
    live = live_fibres(coadd.ivar)
    out = {}
    for band, arm in setup.instrument.arms.items():
        real_f, real_iv = coadd.flux[band][live], coadd.ivar[band][live]
        fsm = smooth_flux(real_f).astype(np.float32)
        faint = np.median(fsm, axis=1) < 1.0
        eff = np.full(fsm.shape[0], setup.instrument.efftime_ref)
        mock_f, mock_iv = observe(setup.instrument, {b: fsm if b == band else
                                                     np.zeros((fsm.shape[0], a.wave.size),
                                                              dtype=np.float32)
                                                     for b, a in setup.instrument.arms.items()},
                                  eff, rng)
        bg = np.sqrt(arm.background_var)
        lines = np.maximum(arm.sky_lines[1:], arm.sky_lines[:-1])
        for name, f, iv in (('real', real_f, real_iv), ('model', mock_f[band], mock_iv[band])):
            var = 1.0 / np.where(iv > 0, iv, np.nan)     # pixels without weight left out
            diff = ((f[:, 1:] - f[:, :-1]) / np.sqrt(var[:, 1:] + var[:, :-1]))[faint]
            off, on = lines < 0.01 * bg[1:], lines > 5 * bg[1:]
            d_off, d_on = diff[:, off], diff[:, on]
            d_off, d_on = d_off[np.isfinite(d_off)], d_on[np.isfinite(d_on)]
            out[f'{band}_{name}'] = dict(nmad_off_lines=nmad(d_off),
                                         rms_on_lines=float(np.sqrt(np.mean(d_on ** 2))))
    return out


def chi_model_spread(coadd, setup, seed, ndraw=20):
    """Mean, minimum and maximum of the model's :func:`chi_statistics` over `ndraw` noise draws.

    One draw of the model is noisy on the sky lines (each line gets one random residual
    amplitude per spectrum and only a few fibres are faint), so the documented model
    values are these averages.  The draws use their own seeds (``[seed, k]``), leaving the
    random stream of the other figures as it was.
    """
    draws = [chi_statistics(coadd, setup, np.random.default_rng([seed, k]))
             for k in range(ndraw)]
    out = {}
    for key in draws[0]:
        if key.endswith('_model'):
            out[key] = {stat: dict(mean=float(np.mean([d[key][stat] for d in draws])),
                                   min=float(np.min([d[key][stat] for d in draws])),
                                   max=float(np.max([d[key][stat] for d in draws])))
                        for stat in draws[0][key]}
    out['ndraw'] = ndraw
    return out


def snr_figure(coadd, setup, rng, path):
    """Median S/N per 8 Å bin in the r band against r magnitude, for three depths."""
    grid = setup.config.grid
    inst = setup.instrument
    rsel = (grid.centers >= BROADBANDS['R'][0]) & (grid.centers < BROADBANDS['R'][1])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    out = {}
    truth = draw_population(setup.simcfg, 3000, rng, rmag_range=(18.0, 25.5))
    models = render_models(setup, truth)
    for hours, color in ((1.0, 'tab:orange'), (inst.efftime_ref / 3600, 'k'), (4.0, 'tab:green')):
        eff = np.full(len(truth), hours * 3600.0)
        fluxes, ivars = observe(inst, models, eff, rng)
        X, _, _ = grid_spectra([inst.waves[b] for b in inst.bands], [fluxes[b] for b in inst.bands],
                               [ivars[b] for b in inst.bands], grid)
        snr = np.median(X[:, rsel, 1], axis=1)
        edges = np.arange(18.0, 25.51, 0.25)
        idx = np.digitize(truth['RMAG'], edges) - 1
        med = np.array([np.median(snr[idx == k]) for k in range(edges.size - 1)])
        centres = 0.5 * (edges[1:] + edges[:-1])
        ax.plot(centres, med, color=color, marker='.', label=f'mock, EFFTIME {hours:.2f} h')
        out[f'{hours:.2f}h'] = {f'{c:.3f}': float(m) for c, m in zip(centres, med)}
    live = live_fibres(coadd.ivar)
    flux, ivar, _ = rebin_arms([coadd.wave[b] for b in coadd.bands],
                               [coadd.flux[b][live] for b in coadd.bands],
                               [coadd.ivar[b][live] for b in coadd.bands], grid)
    fnu = np.sum(flux[:, rsel] * grid.centers[rsel], axis=1) / np.sum(1 / grid.centers[rsel])
    nanomaggies = fnu * 1e-17 / 2.998e18 / 3.631e-29    # f_nu / (3631 Jy x 1e-9)
    rmag = 22.5 - 2.5 * np.log10(np.clip(nanomaggies, 1e-3, None))
    snr_real = np.median(flux[:, rsel] * np.sqrt(ivar[:, rsel]), axis=1)
    ax.plot(rmag, snr_real, 'x', color='tab:red', label='real SV1 fibres (8711 s), top-hat r')
    ax.set_yscale('log')
    ax.set_xlim(17.8, 25.6)
    ax.set_ylim(0.2, 400)
    ax.set_xlabel('r AB')
    ax.set_ylabel('median S/N per 8 Å bin, 5650–7100 Å')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    out['real'] = [[float(m), float(s)] for m, s in zip(rmag, snr_real)]
    return out


def example_figure(coadd, setup, rng, path):
    """Mock spectra of each class (8 Å bins, with the noiseless model) and real spectra."""
    grid = setup.config.grid
    inst = setup.instrument
    cases = [('LBG', (2.6, 2.61), 23.0), ('LBG', (3.5, 3.51), 24.0), ('QSO', None, 22.5),
             ('GALAXY', None, 23.0), ('STAR', None, 22.5)]
    live = np.flatnonzero(live_fibres(coadd.ivar))
    rflux, rivar, _ = rebin_arms([coadd.wave[b] for b in coadd.bands],
                                 [coadd.flux[b][live] for b in coadd.bands],
                                 [coadd.ivar[b][live] for b in coadd.bands], grid)
    order = np.argsort(np.median(rflux, axis=1))
    real_rows = order[[2, order.size // 2, -6, -2, -1]]
    fig, axes = plt.subplots(len(cases), 2, figsize=(11, 2.0 * len(cases)), sharex=True)
    for k, (cls, zr, rmag) in enumerate(cases):
        truth = draw_population(setup.simcfg, 1, rng, classes=[cls], zrange=zr,
                                rmag_range=(rmag, rmag))
        models = render_models(setup, truth)
        fluxes, ivars = observe(inst, models, np.array([inst.efftime_ref]), rng)
        bands = inst.bands
        flux, ivar, _ = rebin_arms([inst.waves[b] for b in bands], [fluxes[b] for b in bands],
                                   [ivars[b] for b in bands], grid)
        model, _, _ = rebin_arms([inst.waves[b] for b in bands], [models[b] for b in bands],
                                 [ivars[b] for b in bands], grid)
        ax = axes[k, 0]
        good = ivar[0] > 0
        ax.plot(grid.centers[good], flux[0][good], color='0.4', lw=0.6)
        ax.plot(grid.centers[good], model[0][good], color='tab:red', lw=0.8)
        sub = truth['SUBTYPE'][0]
        ax.set_title(f'mock {cls} {sub}  z={truth["Z_TRUE"][0]:.3f}  r={rmag}  '
                     f'EFFTIME {inst.efftime_ref:.0f} s', fontsize=8)
        _limits(ax, model[0][good])
        ax = axes[k, 1]
        row = real_rows[k]
        good = rivar[row] > 0
        ax.plot(grid.centers[good], rflux[row][good], color='0.4', lw=0.6)
        ax.set_title(f'real SV1 tile 80605, fibre {live[row]}', fontsize=8)
        _limits(ax, median_filter(rflux[row][good], 15))
    for ax in axes[-1]:
        ax.set_xlabel('wavelength [Å]')
    for ax in axes[:, 0]:
        ax.set_ylabel(r'$f_\lambda$ [$10^{-17}$]', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _limits(ax, ref):
    lo, hi = np.percentile(ref, [1, 99])
    pad = 0.6 * (hi - lo) + 0.1
    ax.set_ylim(lo - pad, hi + pad)
    ax.tick_params(labelsize=7)


def redrock_outcome(setup, rng, n=4000):
    """Fractions of simulated Redrock outcomes per true class (default configuration)."""
    mock = make_mock(setup, n, rng, pixel=1, with_resolution=False)
    truth, rr = mock.truth, mock.redshifts
    live = np.asarray(mock.fibermap['COADD_FIBERSTATUS']) == 0
    out = {'dead_or_arm_dead_fraction': float(1 - live.mean())}
    for cls in ('LBG', 'QSO', 'GALAXY', 'STAR'):
        sel = (np.asarray(truth['CLASS']) == cls) & live
        dz = np.abs(rr['Z'][sel] - truth['Z_TRUE'][sel]) / (1 + truth['Z_TRUE'][sel])
        spectype = np.asarray(rr['SPECTYPE'][sel])
        right_z = dz < 0.0033
        row = dict(n=int(sel.sum()), zwarn0=float(np.mean(rr['ZWARN'][sel] == 0)),
                   spectype={s: float(np.mean(spectype == s)) for s in ('GALAXY', 'QSO', 'STAR')})
        if cls == 'LBG':
            z_oii = (1 + truth['Z_TRUE'][sel]) * 1215.67 / 3728.48 - 1
            row['qso_right_z'] = float(np.mean((spectype == 'QSO') & (np.abs(
                rr['Z'][sel] - truth['Z_TRUE'][sel]) < 0.01)))
            row['lya_as_oii'] = float(np.mean((spectype == 'GALAXY')
                                              & (np.abs(rr['Z'][sel] - z_oii) < 0.01)))
        else:
            row['right'] = float(np.mean((spectype == cls) & right_z))
        out[cls] = row
    ivar0 = sum(np.sum(mock.ivar[b] == 0) for b in mock.ivar)
    out['ivar0_pixel_fraction'] = float(ivar0 / sum(mock.ivar[b].size for b in mock.ivar))
    return out


def main(options=None):
    args = parse(options)
    os.makedirs(args.outdir, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    setup = load_mock_setup()
    coadd = read_coadd(REF)
    numbers = dict(
        lsf_fwhm={b: [float(a.lsf_sigma[0] * FWHM_PER_SIGMA), float(a.lsf_sigma[-1] * FWHM_PER_SIGMA)]
                  for b, a in setup.instrument.arms.items()},
        sigma=sigma_figure(coadd, setup, os.path.join(args.outdir, 'sim_noise_sigma.png')),
        chi=chi_statistics(coadd, setup, rng),
        chi_model_draws=chi_model_spread(coadd, setup, args.seed),
        snr=snr_figure(coadd, setup, rng, os.path.join(args.outdir, 'sim_snr_rmag.png')),
        redrock=redrock_outcome(setup, rng))
    example_figure(coadd, setup, rng, os.path.join(args.outdir, 'sim_mock_vs_real.png'))
    print(json.dumps(numbers, indent=1))


if __name__ == '__main__':
    main()
