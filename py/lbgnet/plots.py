"""
lbgnet.plots
============

PNG figures of training and evaluation: loss curves, purity/efficiency curves, predicted
vs true redshift, redshift error against DELTACHI2_TPL, pulls of the redshift errors,
efficiency vs redshift and magnitude, example spectra with line boxes.

Figures are made with :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot state) and
written atomically.  Each function takes plain arrays or the dictionaries returned by
:mod:`lbgnet.evaluate`, and returns the path written.
"""
import os

import numpy as np
from desiutil.log import get_logger
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .io.atomic import atomic_path

#: Resolution of the PNG files (dots per inch): most figures stay below 300 kB (a tall
#: ``examples.png`` of many spectra is larger).
DPI = 90
REGIME_COLORS = {'all': 'k', 'lowz': 'tab:blue', 'midz': 'tab:green', 'highz': 'tab:red'}


def save_png(fig, path):
    """Write `fig` to `path` as PNG atomically (its folder created), return `path`.

    Logged at debug level: the commands say what they wrote (``desi_lbg_evaluate`` draws
    into a staging directory first).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format='png')
    get_logger().debug('wrote %s', path)
    return path


def plot_loss_curves(history, path):
    """Training and validation loss (and validation score) per epoch.

    Parameters
    ----------
    history : dict
        Keras history: ``loss``, ``val_loss`` and optionally ``val_score`` -> list per epoch.
    path : str
        Output PNG.
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    epochs = np.arange(1, len(history['loss']) + 1)
    ax.plot(epochs, history['loss'], label='training loss')
    if 'val_loss' in history:
        ax.plot(epochs, history['val_loss'], label='validation loss')
    ax.set_xlabel('epoch (from 1, as the model card; history.csv row + 1)')
    ax.set_ylabel('loss')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))     # no fractional epochs
    # transfer learning (--unfreeze-epochs): where the second phase, all unfrozen, starts
    boundaries = np.flatnonzero(np.diff(np.asarray(history.get('phase', []))) != 0) + 1
    for i, start in enumerate(boundaries):
        ax.axvline(start + 0.5, color='0.5', ls=':', lw=1,
                   label='unfrozen from here' if i == 0 else None)
    losses = np.concatenate([np.asarray(history[k], dtype=float) for k in ('loss', 'val_loss')
                             if k in history])
    # the direct/hybrid losses (Gaussian likelihood term) can go negative: no log axis then
    ax.set_yscale('log' if np.all(losses[np.isfinite(losses)] > 0) else 'linear')
    if 'val_score' in history:
        ax2 = ax.twinx()
        ax2.plot(epochs, history['val_score'], 'k--', label='validation score')
        ax2.set_ylabel('purity = efficiency score')
        ax2.legend(loc='center right')
    ax.legend(loc='upper right')
    fig.tight_layout()
    return save_png(fig, path)


def plot_purity_efficiency(metrics, path, title=''):
    """Purity and efficiency vs confidence threshold (left), and purity against
    efficiency (right), one colour per regime.

    Each regime's purity = efficiency point is marked (a circle at its score), and the
    selection threshold the metrics were computed at (``c_thresh``) is a dashed line on
    the left and, on the right, a square at each regime's efficiency and purity there.

    Parameters
    ----------
    metrics : dict
        Output of :func:`lbgnet.evaluate.evaluate_predictions` (regime -> metrics).
    path : str
    title : str, optional
    """
    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot(1, 2, 1)
    for name, res in metrics.items():
        if res['pe_score'] is None:          # no LBG in this regime
            continue
        curve = res['curve']
        color = REGIME_COLORS.get(name)
        thr = np.asarray(curve['threshold'], dtype=float)
        pur = np.asarray(curve['purity'], dtype=float)
        eff = np.asarray(curve['efficiency'], dtype=float)
        ax.plot(thr, pur, '-', color=color, label=f'{name} purity (score {res["pe_score"]:.3f})')
        ax.plot(thr, eff, ':', color=color, label=f'{name} efficiency')
        if res.get('pe_threshold') is not None:
            ax.plot([res['pe_threshold']], [res['pe_score']], 'o', color=color, ms=4)
    alone = metrics.get('all')
    if alone and alone['pe_score'] is None and alone.get('ncontaminant'):
        # contaminants alone (e.g. a test of stars): the fraction of them selected
        curve = alone['curve']
        ax.plot(curve['threshold'], np.asarray(curve['nselected'], dtype=float)
                / alone['ncontaminant'], '-', color=REGIME_COLORS.get('all'),
                label=f'contaminants selected (of {alone["ncontaminant"]}; no true LBG)')
    c_thresh = [res.get('c_thresh') for res in metrics.values()
                if res['pe_score'] is not None or res is alone]
    if c_thresh and c_thresh[0] is not None and np.isfinite(c_thresh[0]):
        ax.axvline(c_thresh[0], color='0.4', ls='--', lw=0.8,
                   label=f'selection threshold {threshold_text(c_thresh[0])}')
    ax.set_xlabel('threshold on C_LBG')
    scores = [res['pe_score'] for res in metrics.values() if res['pe_score'] is not None]
    ax.set_ylabel('purity (solid) / efficiency (dotted)' if scores else
                  'fraction of the contaminants selected')
    # from 0.5 (the shipped model's range), lower for a weaker model or a threshold far
    # from the purity = efficiency point, so that every regime's purity = efficiency point
    # and operating point (right panel) stay in view
    points = scores + [res[key] for res in metrics.values() if res['pe_score'] is not None
                       for key in ('efficiency', 'purity')
                       if res.get(key) is not None and np.isfinite(res[key])]
    ax.set_ylim(0.0 if not scores else min([0.5] + [value - 0.05 for value in points]), 1.005)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='lower center', ncol=2)
    ax.set_title(title)
    _purity_vs_efficiency(fig.add_subplot(1, 2, 2), metrics, ax.get_ylim()[0], title)
    fig.tight_layout()
    return save_png(fig, path)


def threshold_text(value):
    """A threshold on C_LBG for a legend or log line: 3 decimals, more where 3 would
    round it to 0 or 1 (0.9999 is not "1.000", which would select nothing)."""
    text = f'{value:.3f}'
    if value not in (0.0, 1.0) and text in ('0.000', '1.000', '-0.000'):
        text = f'{value:.6g}'
    return text


def _purity_vs_efficiency(ax, metrics, low, title):
    """The right panel of :func:`plot_purity_efficiency`: each regime's purity against its
    efficiency, its purity = efficiency point (circle) and operating point at the
    selection threshold (square), both axes from `low`."""
    for name, res in metrics.items():
        if res['pe_score'] is None:
            continue
        color = REGIME_COLORS.get(name)
        ax.plot(np.asarray(res['curve']['efficiency'], dtype=float),
                np.asarray(res['curve']['purity'], dtype=float), '-', color=color, label=name)
        ax.plot([res['pe_score']], [res['pe_score']], 'o', color=color, ms=4)
        if res.get('efficiency') is not None and res.get('purity') is not None:
            ax.plot([res['efficiency']], [res['purity']], 's', color=color, ms=4,
                    mfc='none')
    ax.plot([low, 1.0], [low, 1.0], ':', color='0.6', lw=0.8)
    ax.set_xlim(low, 1.005)
    ax.set_ylim(low, 1.005)
    ax.set_xlabel('efficiency')
    ax.set_ylabel('purity')
    ax.grid(alpha=0.3)
    if ax.lines[:-1]:
        ax.legend(fontsize=7, loc='lower left', title='circle: purity = efficiency; '
                  'square: selection threshold', title_fontsize=6.5)
    ax.set_title(title)


#: Half range of the Δz/(1+z) panel of :func:`plot_redshift` (the catastrophic cut).
DZ_PANEL = 0.01


def plot_redshift(z_true, z_pred, path, z_bestline=None, title='', z_template=None):
    """Predicted vs true redshift of selected LBGs, with Δz/(1+z) underneath.

    The lower panel spans ±:data:`DZ_PANEL`; points beyond it (catastrophic redshifts) are
    drawn on its edges as triangles and counted in the panel.

    Parameters
    ----------
    z_true, z_pred : array_like
        Shape (n,).
    path : str
    z_bestline : array_like, optional
        Single-best-line redshifts, drawn in grey for comparison.
    title : str, optional
    z_template : array_like, optional
        Template-refined redshifts (``Z_TPL``), drawn on top.
    """
    z_true = np.asarray(z_true, dtype=float)
    fig = Figure(figsize=(5, 6))
    ax1 = fig.add_subplot(2, 1, 1)
    ax2 = fig.add_subplot(2, 1, 2, sharex=ax1)
    series = [(z_bestline, 'best line', {'color': '0.6'}), (z_pred, 'Z_LBG (combined)', {'color': 'C0'}),
              (z_template, 'Z_TPL (refined)', {'color': 'C3'})]
    outside = []
    for values, label, style in series:
        if values is None:
            continue
        values = np.asarray(values, dtype=float)
        ax1.plot(z_true, values, '.', ms=2, label=label, **style)
        rel = (values - z_true) / (1 + z_true)
        far = np.abs(rel) > DZ_PANEL
        ax2.plot(z_true[~far], rel[~far], '.', ms=2, **style)
        for sign, marker in ((1, '^'), (-1, 'v')):
            edge = far & (np.sign(rel) == sign)
            ax2.plot(z_true[edge], np.full(edge.sum(), 0.97 * sign * DZ_PANEL), marker, ms=3,
                     **style)
        outside.append(f'{label.split(" (")[0]} {int(far.sum())}')
    if outside:
        ax2.set_title(f'beyond ±{DZ_PANEL:g}, drawn on the edges: ' + ', '.join(outside),
                      fontsize=8)
    lims = [np.nanmin(z_true) if z_true.size else 0, np.nanmax(z_true) if z_true.size else 1]
    ax1.plot(lims, lims, 'k-', lw=0.5)
    ax1.set_ylabel('predicted z')
    ax1.legend(fontsize=8)
    ax1.set_title(title)
    ax2.set_ylim(-DZ_PANEL, DZ_PANEL)
    ax2.axhline(0, color='k', lw=0.5)
    ax2.set_xlabel('true z')
    ax2.set_ylabel('Δz / (1+z)')
    fig.tight_layout()
    return save_png(fig, path)


def plot_reliability(deltachi2, dz1pz, is_true, path, min_deltachi2, title=''):
    """Redshift error against ``DELTACHI2_TPL`` of the selected objects.

    Parameters
    ----------
    deltachi2 : array_like
        ``DELTACHI2_TPL`` of the IS_LBG objects, shape (n,).
    dz1pz : array_like
        ``|Δz|/(1+z)`` of ``Z_TPL`` for them (ignored for contaminants), shape (n,).
    is_true : array_like of bool
        True LBGs, shape (n,).
    path : str
    min_deltachi2 : float
        The SMALL_DELTA_CHI2 threshold, drawn as a vertical line.
    title : str, optional

    Notes
    -----
    Top: the true LBGs, x = Δχ² (symmetric log scale: it can be negative), y = error.
    Bottom: the Δχ² distribution of the true LBGs with a right and a wrong redshift
    (``|Δz|/(1+z)`` above 0.01) and of the selected contaminants.
    """
    deltachi2 = np.asarray(deltachi2, dtype=float)
    dz1pz = np.asarray(dz1pz, dtype=float)
    is_true = np.asarray(is_true, dtype=bool)
    fig = Figure(figsize=(5, 6))
    ax1 = fig.add_subplot(2, 1, 1)
    ax2 = fig.add_subplot(2, 1, 2, sharex=ax1)
    wrong = is_true & (dz1pz > 0.01)
    right = is_true & ~wrong
    ax1.plot(deltachi2[right], np.maximum(dz1pz[right], 1e-5), '.', ms=2, color='C0',
             label='true LBG, right z')
    ax1.plot(deltachi2[wrong], dz1pz[wrong], '.', ms=3, color='C3',
             label='true LBG, |Δz|/(1+z) > 0.01')
    ax1.set_yscale('log')
    ax1.set_ylabel('|Δz| / (1+z), Z_TPL')
    ax1.set_title(title)
    ax1.legend(fontsize=8)
    finite = deltachi2[np.isfinite(deltachi2)]
    top = max(float(np.max(finite)) if finite.size else 10.0, 10.0)
    edges = np.concatenate([-np.logspace(2, 0, 9), np.linspace(-0.5, 0.5, 3),
                            np.logspace(0, np.log10(top) + 0.01, 17)])
    edges = np.unique(np.round(edges, 6))
    for sel, label, color in ((right, 'true LBG, right z', 'C0'), (wrong, 'true LBG, wrong z', 'C3'),
                              (~is_true, 'contaminant', '0.4')):
        values = np.clip(deltachi2[sel & np.isfinite(deltachi2)], edges[0], edges[-1])
        ax2.hist(values, edges, histtype='step', color=color, label=f'{label} ({values.size})')
    for ax in (ax1, ax2):
        ax.axvline(min_deltachi2, color='k', ls='--', lw=0.8)
        ax.set_xscale('symlog', linthresh=1.0)
    ax2.set_xlabel('DELTACHI2_TPL (dashed: SMALL_DELTA_CHI2 below)')
    ax2.set_ylabel('selected objects')
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def plot_pulls(pulls, path, title=''):
    """Histograms of the pulls Δz/ZERR of the right redshifts, against a unit Gaussian.

    Parameters
    ----------
    pulls : dict
        Label (e.g. ``ZERR_LBG``) -> pulls, shape (n,) each (:func:`lbgnet.zerr.right_redshifts`:
        Δz/(1+z) divided by ZERR/(1+z)).
    path : str
    title : str, optional

    Notes
    -----
    Pulls beyond ±6 are drawn in the outer bins, so that heavy tails stay visible.
    """
    fig = Figure(figsize=(5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    edges = np.linspace(-6, 6, 49)
    centres = 0.5 * (edges[1:] + edges[:-1])
    for i, (label, values) in enumerate(pulls.items()):
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        if not values.size:
            continue
        inside = np.mean(np.abs(values) < 1)
        ax.hist(np.clip(values, edges[0], edges[-1]), edges, density=True, histtype='step',
                color=f'C{i}', label=f'{label} ({values.size}; {100 * inside:.0f}% within 1σ)')
    ax.plot(centres, np.exp(-0.5 * centres ** 2) / np.sqrt(2 * np.pi), 'k--', lw=0.8,
            label='unit Gaussian (68% within 1σ)')
    ax.set_xlabel('pull Δz / ZERR (right redshifts, |Δz|/(1+z) < 0.01)')
    ax.set_ylabel('density')
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def plot_efficiency_bins(metrics, path, title=''):
    """Efficiency vs true redshift and vs magnitude (regime ``all``), with binomial
    (Wald) standard errors, sqrt(e (1 - e) / n): zero in bins where every LBG is found;
    `title` over both panels."""
    res = metrics['all']
    fig = Figure(figsize=(8, 3.5))
    for i, (key, label) in enumerate((('efficiency_vs_z', 'true z'),
                                      ('efficiency_vs_mag', 'r magnitude'))):
        ax = fig.add_subplot(1, 2, i + 1)
        edges = np.asarray(res[key]['edges'], dtype=float)
        eff = np.asarray(res[key]['efficiency'], dtype=float)     # None (no LBG) -> NaN
        ntrue = np.asarray(res[key]['ntrue'], dtype=float)
        ax.step(edges, np.append(eff, eff[-1:]), where='post')
        with np.errstate(invalid='ignore', divide='ignore'):
            err = np.sqrt(eff * (1 - eff) / ntrue)
        ax.errorbar(0.5 * (edges[1:] + edges[:-1]), eff, yerr=err, fmt='none', ecolor='C0',
                    capsize=2)
        ax.set_xlabel(label)
        ax.set_ylabel('efficiency')
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if not np.any(ntrue > 0):
            ax.text(0.5, 0.5, 'no true LBG in the test', transform=ax.transAxes,
                    ha='center', va='center', color='0.4')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def plot_example_spectra(X, conf, offset, config, path, titles=None, c_thresh=None):
    """Gridded spectra with the boxes and line positions the network found.

    Parameters
    ----------
    X : numpy.ndarray
        Network input, shape (nspec, nbins, 2); channel 0 (normalised flux) is drawn.
    conf, offset : numpy.ndarray
        Shape (nspec, nlines, nboxes) from :func:`lbgnet.model.predict_boxes`.
    config : lbgnet.config.Config
    path : str
    titles : sequence of str, optional
        One per spectrum (e.g. true class and redshift).
    c_thresh : float, optional
        Boxes above this confidence are shaded [``config.selection.c_thresh``].
    """
    from .labels import box_to_wave
    from .postprocess import nan_argmax
    c_thresh = config.selection.c_thresh if c_thresh is None else c_thresh
    nspec = X.shape[0]
    wave = config.grid.centers
    fig = Figure(figsize=(9, 1.9 * max(nspec, 1) + 0.5))
    for i in range(nspec):
        ax = fig.add_subplot(nspec, 1, i + 1)
        ax.plot(wave, X[i, :, 0], lw=0.5, color='k')
        best = nan_argmax(conf[i], axis=-1)          # (nlines,), as postprocess chooses
        c_best = conf[i][np.arange(best.size), best]
        for iline in np.flatnonzero(c_best > c_thresh):
            b = best[iline]
            lo = config.grid.wave_min + b * config.box_width
            ax.axvspan(lo, lo + config.box_width, color='tab:orange', alpha=0.15 * c_best[iline])
            w = box_to_wave(b, offset[i, iline, b], config)
            ax.axvline(w, color='tab:red', lw=0.8)
            ax.text(w, 0.95, config.lines.names[iline], rotation=90, fontsize=6, va='top',
                    transform=ax.get_xaxis_transform())
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        ax.set_ylabel('flux (norm.)', fontsize=7)
        ax.set_xlim(config.grid.wave_min, config.grid.wave_max)
    if nspec == 0:                  # no spectrum: an empty panel, not an IndexError
        ax = fig.add_subplot(1, 1, 1)
        ax.set_xlim(config.grid.wave_min, config.grid.wave_max)
        ax.text(0.5, 0.5, 'no spectra', ha='center', va='center', transform=ax.transAxes)
    fig.axes[-1].set_xlabel('observed wavelength (Å)')
    fig.tight_layout()
    return save_png(fig, path)
