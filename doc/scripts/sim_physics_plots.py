#!/usr/bin/env python
"""Make the PNG figures of doc/sim_physics.rst (noiseless mock spectra, LBG stack versus
the Shapley et al. 2003 composite, populations, IGM transmission).

Usage (from the repository root)::

    PYTHONPATH=py python doc/scripts/sim_physics_plots.py [--outdir doc/images]

The comparison with the composite and the template examples need ../shared/reference;
without it those panels are skipped.
"""
import argparse
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lbgnet.config import arm_wavelengths, load_config  # noqa: E402
from lbgnet.io.templates import load_templates, read_lbg_composite  # noqa: E402
from lbgnet.sim import draw_population, load_sim_config, render_arms  # noqa: E402
from lbgnet.sim import igm  # noqa: E402

REF = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared', 'reference')
COMPOSITE = os.path.join(REF, 'lbg-composite', 'shapley2003_lbg_composite.txt')
RRDIR = os.path.join(REF, 'redrock-templates')
LSF = 0.75   # Å, typical DESI instrumental sigma, for the examples


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--outdir', default='doc/images', help='output directory [%(default)s]')
    parser.add_argument('--seed', type=int, default=7, help='random seed [%(default)s]')
    return parser.parse_args(options)


def _examples(simcfg, cls, settings, rng):
    """Truth table of one class with some columns set per row."""
    truth = draw_population(simcfg, len(settings), rng, classes=[cls])
    for i, row in enumerate(settings):
        for key, val in row.items():
            truth[key][i] = val
    return truth


def plot_examples(simcfg, waves, templates, outdir, rng):
    specs = {
        'LBG': [dict(Z_TRUE=2.1, LYA_EW=40.0), dict(Z_TRUE=2.8, LYA_EW=-15.0),
                dict(Z_TRUE=3.5, LYA_EW=8.0), dict(Z_TRUE=4.4, LYA_EW=60.0)],
        'QSO': [dict(Z_TRUE=1.0), dict(Z_TRUE=2.2), dict(Z_TRUE=3.0, SUBTYPE='BAL', BAL_EW=20.0,
                                                           BAL_V=8000.0, BAL_SIGMA=2500.0),
                dict(Z_TRUE=4.0)],
        'GALAXY': [dict(SUBTYPE='SF', Z_TRUE=0.3, D4000=1.2, BETA_BLUE=-1.2, BETA_RED=-1.0, OII_EW=25.0),
                   dict(SUBTYPE='SF', Z_TRUE=1.0, D4000=1.15, BETA_BLUE=-1.5, BETA_RED=-1.2, OII_EW=15.0),
                   dict(SUBTYPE='OII_LYA', Z_TRUE=0.45, D4000=1.1, BETA_BLUE=-1.5, BETA_RED=-1.2, OII_EW=50.0),
                   dict(SUBTYPE='PASSIVE', Z_TRUE=0.6, D4000=1.9, OII_EW=2.0, BETA_BLUE=1.0, BETA_RED=-0.5)],
        'STAR': [dict(SUBTYPE='A', TEFF=9000.0), dict(SUBTYPE='G', TEFF=5600.0),
                 dict(SUBTYPE='M', TEFF=3200.0), dict(SUBTYPE='WD', TEFF=14000.0)],
    }
    lsf = {b: LSF for b in waves}
    for cls, settings in specs.items():
        truth = _examples(simcfg, cls, settings, rng)
        truth['RMAG'] = 22.5
        flux = render_arms(truth, waves, None, lsf, None, simcfg)
        tflux = (render_arms(truth, waves, None, lsf, templates, simcfg)
                 if templates is not None and cls in ('LBG', 'QSO', 'STAR') else None)
        fig, axes = plt.subplots(len(settings), 1, figsize=(9, 1.9 * len(settings)), sharex=True)
        for ax, i in zip(axes, range(len(truth))):
            for band, wave in waves.items():
                if tflux is not None:
                    ax.plot(wave[::2], tflux[band][i, ::2], lw=0.5, color='C1',
                            label='with templates' if band == 'b' else None)
                ax.plot(wave[::2], flux[band][i, ::2], lw=0.4, color='C0', alpha=0.7,
                        label='parametric' if band == 'b' else None)
            row = truth[i]
            ax.text(0.99, 0.9, f"{row['SUBTYPE']}  z = {row['Z_TRUE']:.2f}", ha='right', va='top',
                    transform=ax.transAxes, fontsize=8)
            ax.set_ylabel('flux', fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0].legend(fontsize=7, loc='upper center', ncol=2)
        axes[-1].set_xlabel('observed wavelength [Å]   (r = 22.5, noiseless, 1e-17 erg/s/cm²/Å)', fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, f'sim_examples_{cls.lower()}.png'), dpi=72)
        plt.close(fig)


def rest_stack(truth, flux, waves, rest_grid, norm_window=(1450.0, 1500.0)):
    """Mean rest-frame spectrum, each object normalised in `norm_window`."""
    wave = np.concatenate([waves[b] for b in waves])
    order = np.argsort(wave, kind='stable')
    wave = wave[order]
    allflux = np.concatenate([flux[b] for b in waves], axis=1)[:, order]
    out = np.full((len(truth), rest_grid.size), np.nan)
    for i, z in enumerate(np.asarray(truth['Z_TRUE'])):
        out[i] = np.interp(rest_grid, wave / (1 + z), allflux[i], left=np.nan, right=np.nan)
    sel = (rest_grid > norm_window[0]) & (rest_grid < norm_window[1])
    out /= np.nanmedian(out[:, sel], axis=1, keepdims=True)
    return np.nanmean(out, axis=0)


def stack_ew(flux, rest, centre, half):
    """EW (Å) in |λ - centre| < half over a 61 Å running-median continuum (1 Å grid)."""
    from scipy.ndimage import median_filter
    cont = median_filter(flux, 61, mode='nearest')
    sel = np.abs(rest - centre) <= half
    return float(np.sum(flux[sel] / cont[sel] - 1.0))


def write_ew_table(simcfg, rest, mock, comp, path):
    """CSV of line EWs measured the same way on the mock stack and on the composite."""
    lbg = simcfg['simulation']['lbg']
    dv = 1.0 + lbg['dv_ism_mean'] / 299792.458
    rows = ['line,rest [A],configured EW [A],mock stack [A],composite [A]']
    for name, lam in simcfg['lines'].items():
        if name == 'LYA':
            continue
        rows.append(f"{name},{lam:.2f},{lbg['lines'][name]['ew']:.2f},"
                    f"{stack_ew(mock, rest, lam * dv, 4.0):.2f},{stack_ew(comp, rest, lam * dv, 4.0):.2f}")
    for name, lam in (('HeII', 1640.42), ('CIII]', 1907.7)):
        rows.append(f'{name},{lam:.2f},,{stack_ew(mock, rest, lam, 6.0):.2f},{stack_ew(comp, rest, lam, 6.0):.2f}')
    with open(path, 'w') as fx:
        fx.write('\n'.join(rows) + '\n')


def plot_stack(simcfg, waves, templates, outdir, rng):
    truth = draw_population(simcfg, 1500, rng, classes=['LBG'], zrange=(2.7, 3.4))
    rest = np.arange(920.0, 2000.0, 1.0)
    lsf = {b: LSF for b in waves}
    fig, ax = plt.subplots(figsize=(9, 3.6))
    mock = rest_stack(truth, render_arms(truth, waves, None, lsf, None, simcfg), waves, rest)
    if os.path.exists(COMPOSITE):
        cw, cfnu = read_lbg_composite(COMPOSITE)
        cfl = np.interp(rest, cw, cfnu / cw ** 2)
        sel = (rest > 1450) & (rest < 1500)
        ax.plot(rest, cfl / np.median(cfl[sel]), color='k', lw=0.7, label='Shapley et al. 2003 composite')
        write_ew_table(simcfg, rest, mock, cfl / np.median(cfl[sel]), os.path.join(outdir, 'sim_lbg_ew.csv'))
    ax.plot(rest, mock, color='C0', lw=0.7, label='mock LBGs, parametric')
    if templates is not None and templates.lbg_composite is not None:
        ax.plot(rest, rest_stack(truth, render_arms(truth, waves, None, lsf, templates, simcfg), waves, rest),
                color='C1', lw=0.7, alpha=0.8, label='mock LBGs, with composite residual')
    ax.set_xlabel('rest wavelength [Å]')
    ax.set_ylabel('f_λ / median(1450-1500 Å)')
    ax.set_ylim(0, 3.2)
    ax.legend(fontsize=8)
    ax.set_title('Mean rest-frame spectrum of 1500 noiseless mock LBGs, 2.7 < z < 3.4', fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, 'sim_lbg_stack.png'), dpi=72)
    plt.close(fig)


def plot_distributions(simcfg, outdir, rng):
    truth = draw_population(simcfg, 20000, rng)
    cls = np.asarray(truth['CLASS'])
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for name in ('LBG', 'QSO', 'GALAXY', 'STAR'):
        sel = cls == name
        if name != 'STAR':
            axes[0].hist(truth['Z_TRUE'][sel], bins=np.arange(0, 4.8, 0.05), histtype='step', label=name)
        axes[1].hist(truth['RMAG'][sel], bins=np.arange(22, 25.01, 0.1), histtype='step', label=name)
    oii = np.asarray(truth['SUBTYPE']) == 'OII_LYA'
    axes[0].hist(truth['Z_TRUE'][oii], bins=np.arange(0, 4.8, 0.05), histtype='stepfilled', alpha=0.3,
                 color='C2', label='GALAXY OII_LYA')
    axes[0].set_xlabel('Z_TRUE')
    axes[1].set_xlabel('RMAG (r AB)')
    axes[0].legend(fontsize=7)
    lya = np.sort(np.asarray(truth['LYA_EW'])[cls == 'LBG'])
    axes[2].hist(lya, bins=np.arange(-35, 110, 2.5), histtype='step', color='C0')
    for q, want in zip(np.array_split(lya, 4), (-14.92, -1.10, 11.00, 52.63)):
        axes[2].axvline(q.mean(), color='C0', lw=0.8)
        axes[2].axvline(want, color='k', ls=':', lw=0.8)
    axes[2].set_xlabel('LBG Lyα rest EW [Å]')
    axes[2].set_title('quartile means: mock (solid), Shapley (dotted)', fontsize=8)
    for ax in axes:
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, 'sim_distributions.png'), dpi=72)
    plt.close(fig)


def plot_igm(simcfg, outdir):
    igmcfg = simcfg['simulation']['igm']
    wave = np.arange(3600.0, 7000.0, 0.8)
    zs = np.array([2.5, 3.5, 4.5])
    n = 300
    fig, ax = plt.subplots(figsize=(7, 3.2))
    rng = np.random.default_rng(0)
    for j, z in enumerate(zs):
        sig = float(igmcfg['scale_sigma'])
        scale = np.exp(rng.normal(-0.5 * sig ** 2, sig, n))
        trans = igm.transmission(wave, np.full(n, z), scale, rng.integers(1, 2 ** 62, n),
                                 np.full(n, np.inf), igmcfg)
        ax.plot(wave, trans[0], lw=0.3, color=f'C{j}', alpha=0.5)
        ax.plot(wave, trans.mean(axis=0), lw=1.2, color=f'C{j}', label=f'z = {z}: mean of {n} sightlines')
        model = np.exp(-igm.forest_tau(wave, np.array([z]), np.ones(1), igmcfg)[0])
        model[wave < igm.LYMAN_LIMIT * (1 + z)] = 0.0
        ax.plot(wave, model, color='k', lw=0.6, ls='--')
    ax.set_xlabel('observed wavelength [Å]')
    ax.set_ylabel('IGM transmission')
    ax.set_title('one sightline (thin), mean of sightlines (thick), exp(-τ_eff) (dashed)', fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, 'sim_igm.png'), dpi=72)
    plt.close(fig)


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    os.makedirs(args.outdir, exist_ok=True)
    simcfg = load_sim_config()
    waves = arm_wavelengths(load_config())
    templates = None
    if os.path.exists(COMPOSITE) and os.path.isdir(RRDIR):
        templates = load_templates(COMPOSITE, RRDIR)
    rng = np.random.default_rng(args.seed)
    plot_examples(simcfg, waves, templates, args.outdir, rng)
    plot_stack(simcfg, waves, templates, args.outdir, rng)
    plot_distributions(simcfg, args.outdir, rng)
    plot_igm(simcfg, args.outdir)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
