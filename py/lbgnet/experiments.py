"""
lbgnet.experiments
==================

Reproducible experiment summaries: evaluate trained models on the held-out test sets,
collect one row per model (architecture, size, training time, scores, redshift accuracy),
and render the rows as CSV, an RST table for ``doc/experiments.rst`` and a score vs
σ_NMAD trade-off figure.  Used by ``benchmarks/experiment_table.py`` and
``benchmarks/gamma_study.py``; every number in the tables comes from a model card
(``NAME.json``) or a ``metrics.json`` written by ``desi_lbg_evaluate``.
"""
import glob
import json
import os

import numpy as np
from desiutil.log import get_logger

from .io import InputFileError

#: Test regimes, in table order.
REGIMES = ('lowz', 'midz', 'highz')


def test_files(test_dir):
    """Coadd and truth files of a held-out test directory (``desi_lbg_mock`` output)."""
    coadds = sorted(glob.glob(os.path.join(glob.escape(test_dir), 'coadd-*.fits')))
    truths = [os.path.join(test_dir, 'truth-' + os.path.basename(c)[len('coadd-'):])
              for c in coadds]
    if not coadds or not all(os.path.exists(t) for t in truths):
        raise InputFileError(test_dir, 'no coadd-*.fits with matching truth-*.fits')
    return coadds, truths


def evaluate_model(model_path, tests, outdir, force=False):
    """Run ``desi_lbg_evaluate`` of a model on each regime's test set (skipped where its
    ``metrics.json`` is already there for this model and these test files,
    :func:`metrics_are_of`).

    Parameters
    ----------
    model_path : str
        ``NAME.weights.h5``.
    tests : dict
        Regime -> test directory.
    outdir : str
        Receives ``eval-<regime>/metrics.json`` (and figures).
    force : bool, optional
        Re-evaluate even when the metrics of this model and test exist.

    Returns
    -------
    dict
        Regime -> metrics.json path.

    Raises
    ------
    RuntimeError
        When an evaluation fails.
    """
    from .scripts.lbg_evaluate import main as evaluate
    out = {}
    for regime, test_dir in tests.items():
        target = os.path.join(outdir, f'eval-{regime}')
        metrics = os.path.join(target, 'metrics.json')
        try:
            coadds, truths = test_files(test_dir)
        except InputFileError:          # lost test files: metrics made from them stand in
            if force or not metrics_are_of(metrics, model_path, None, test_dir):
                raise
            get_logger().info('%s: test files gone; the metrics of %s are kept', test_dir,
                              metrics)
            out[regime] = metrics
            continue
        if force or not metrics_are_of(metrics, model_path, coadds):
            # metrics of another model or test set there are replaced: decided above
            status = evaluate(['--model', model_path, '--coadd', *coadds, '--truth', *truths,
                               '--outdir', target, '--nexamples', '0', '--title', regime,
                               '--overwrite'])
            if status != 0:
                raise RuntimeError(f'desi_lbg_evaluate failed on {test_dir} for {model_path}')
        out[regime] = metrics
    return out


def metrics_are_of(path, model_path, coadds, test_dir=None):
    """Whether the ``metrics.json`` at `path` evaluated this model on these test files.

    It must exist, name the same model and coadd files, and be newer than each of them:
    a model retrained at the same path or a test set regenerated under the same names
    would otherwise fill a results row with stale numbers.  `coadds` None (the test files
    are gone) keeps metrics of this model that are newer than it and were made from files
    in `test_dir` (not from another directory, when this one is mistyped or not made yet).
    """
    if not os.path.exists(path):
        return False
    try:
        with open(path) as fx:
            data = json.load(fx)
    except (OSError, ValueError):
        return False
    inputs = (data.get('inputs') or {}) if isinstance(data, dict) else None
    if not isinstance(inputs, dict) or not isinstance(inputs.get('files') or [], list):
        return False                  # not metrics this package wrote: evaluated afresh
    from .io.modelfile import model_paths
    made = os.path.getmtime(path)
    files = [] if coadds is None else list(coadds)
    try:                              # the card is rewritten alone (thresholds, calibration)
        model_files = list(model_paths(model_path))
    except ValueError:
        model_files = [model_path]
    recorded = [os.path.abspath(f) for f in inputs.get('files') or []]
    if coadds is None:
        where = os.path.abspath(test_dir) if test_dir is not None else None
        same_files = bool(recorded) and all(os.path.dirname(f) == where for f in recorded)
    else:
        same_files = sorted(recorded) == sorted(map(os.path.abspath, files))
    same = (inputs.get('model') == os.path.abspath(model_path) and same_files
            and all(os.path.getmtime(p) <= made for p in model_files + files
                    if os.path.exists(p)))
    if not same:
        get_logger().info('%s: made for another or an older model or test set; evaluating '
                          'again', path)
    return same


def _filters(model):
    values = model.get('filters')
    return values if isinstance(values, int) else '/'.join(str(v) for v in values)


def summary_row(name, model_path, metrics_paths):
    """One results-table row from a model card and its per-regime metrics files.

    Returns
    -------
    dict
        ``model``, ``architecture``, ``layers``, ``filters``, ``kernel``, ``lr``,
        ``lr_unfrozen`` (the learning rate of a fine-tuning's unfrozen phase,
        ``--unfreeze-epochs``; None without one), ``kept_phase`` (which of its two phases
        gave the weights; None without), ``gamma``,
        ``nboxes``, ``parameters``, ``score_<regime>``, ``score_mean``,
        ``frac_dz_<regime>`` (\\|Δz\\| < 0.05 of selected true LBGs),
        ``sigma_nmad_<regime>``, ``score_err_<regime>`` and ``frac_dz_err_<regime>``
        (bootstrap standard errors, :func:`lbgnet.evaluate.bootstrap_errors`; None for
        metrics files without them), ``train_minutes`` (fit time), ``epochs``, ``cpu_count``,
        ``init_from``.
    """
    from .io.modelfile import read_model_description
    desc, config = read_model_description(model_path)
    model = config.extra.get('model') or {}
    training = (desc.get('metadata') or {}).get('training') or {}
    opts = training.get('options') or {}
    row = {'model': name, 'architecture': model.get('architecture', 'linefinder'),
           'layers': model.get('conv_layers'), 'filters': _filters(model),
           'kernel': _filters({'filters': model.get('kernel_size')}),
           'lr': opts.get('learning_rate'), 'gamma': (config.extra.get('loss') or {}).get('gamma'),
           'nboxes': config.nboxes, 'parameters': desc.get('nparams'),
           'train_minutes': (round(training['fit_seconds'] / 60, 1)
                             if training.get('fit_seconds') is not None else None),
           'epochs': training.get('epochs_run'), 'cpu_count': training.get('cpu_count'),
           'init_from': os.path.basename(training['init_from']) if training.get('init_from') else ''}
    transfer = training.get('transfer') or {}
    unfrozen = transfer.get('unfreeze_epochs') and opts.get('learning_rate') is not None
    row['lr_unfrozen'] = (opts['learning_rate'] * transfer.get('unfreeze_lr_factor', 0.1)
                          if unfrozen else None)
    row['kept_phase'] = training.get('kept_phase') if unfrozen else None
    scores = []
    for regime in REGIMES:
        if regime not in metrics_paths:
            continue
        with open(metrics_paths[regime]) as fx:
            res = json.load(fx)['regimes'][regime]
        row[f'score_{regime}'] = res['pe_score']
        row[f'frac_dz_{regime}'] = res['redshift']['frac_dz_lt_0p05']
        row[f'sigma_nmad_{regime}'] = res['redshift']['sigma_nmad']
        errors = res.get('errors') or {}          # absent in metrics written before them
        row[f'score_err_{regime}'] = errors.get('pe_score')
        row[f'frac_dz_err_{regime}'] = (errors.get('redshift') or {}).get('frac_dz_lt_0p05')
        if res['pe_score'] is not None:
            scores.append(res['pe_score'])
    row['score_mean'] = float(np.mean(scores)) if scores else None
    return row


def _fmt(value, spec):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return '—'
    if spec == 'lr' and isinstance(value, (int, float)):
        # three significant digits, trailing zeros dropped: 1e-03, 1.45e-03, 5.4e-04
        mantissa, exponent = format(value, '.2e').split('e')
        return f'{mantissa.rstrip("0").rstrip(".")}e{exponent}'
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


#: Columns of :func:`rst_table`: key, header, format (``lr``: three significant digits).
TABLE_COLUMNS = (('model', 'model', ''), ('layers', 'layers', ''), ('filters', 'filters', ''),
                 ('lr', 'lr', 'lr'), ('parameters', 'parameters', ','),
                 ('score_lowz', 'score low', '.3f'), ('score_midz', 'mid', '.3f'),
                 ('score_highz', 'high', '.3f'), ('frac_dz_lowz', '|Δz|<0.05 low', '.3f'),
                 ('frac_dz_midz', 'mid', '.3f'), ('frac_dz_highz', 'high', '.3f'),
                 ('train_minutes', 'train min', '.1f'))


def rst_table(rows, columns=TABLE_COLUMNS):
    """An RST ``list-table`` of result rows (missing values as an em dash).

    Parameters
    ----------
    rows : list of dict
    columns : sequence of (key, header, format spec), optional

    Returns
    -------
    str
    """
    lines = ['.. list-table::', '   :header-rows: 1', '']
    cells = [[header for _, header, _ in columns]]
    cells += [[_cell(row, key, spec) for key, _, spec in columns] for row in rows]
    for row in cells:
        lines.append('   * - ' + _escape(row[0]))
        lines += ['     - ' + _escape(cell) for cell in row[1:]]
    return '\n'.join(lines) + '\n'


def _cell(row, key, spec):
    """The text of one cell: the learning rate of a fine-tuning with an unfrozen phase
    names both phases' rates, and which one the weights come from."""
    text = _fmt(row.get(key), spec)
    if spec == 'lr' and row.get('lr_unfrozen') is not None:
        kept = {1: ', frozen phase kept',
                2: ', unfrozen phase kept'}.get(row.get('kept_phase'), '')
        text += f' ({_fmt(row["lr_unfrozen"], spec)} unfrozen{kept})'
    return text


def _escape(text):
    return str(text).replace('|', '\\|')


def plot_tradeoff(rows, path, label_key='gamma', title=''):
    """Purity = efficiency score against σ_NMAD per regime, one point per row, labelled.

    Parameters
    ----------
    rows : list of dict
        :func:`summary_row` outputs.
    path : str
        Output PNG.
    label_key : str, optional
        Row key printed beside each point ['gamma'].
    title : str, optional
        Figure title [none].

    Returns
    -------
    str
        `path`.
    """
    from matplotlib.figure import Figure
    from .plots import save_png
    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for regime, color in zip(REGIMES, ('tab:blue', 'tab:green', 'tab:red')):
        pts = [(r.get(f'sigma_nmad_{regime}'), r.get(f'score_{regime}'), r.get(label_key))
               for r in rows]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], 'o-', color=color, label=regime)
        for x, y, lab in pts:
            ax.annotate(f'{lab:g}' if isinstance(lab, (int, float)) else str(lab), (x, y),
                        textcoords='offset points', xytext=(4, 3), fontsize=8, color=color)
    ax.set_xlabel('σ_NMAD of Δz/(1+z), selected true LBGs')
    ax.set_ylabel('purity = efficiency score')
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)


def plot_pe_comparison(metrics_paths, path, title=''):
    """Purity against efficiency of several models, one panel per regime.

    Each curve runs over the ``C_LBG`` thresholds of the model's ``metrics.json``
    (:func:`lbgnet.evaluate.purity_efficiency`); the purity = efficiency score is the
    point where a curve crosses the diagonal.

    Parameters
    ----------
    metrics_paths : dict
        Model name -> (regime -> ``metrics.json`` path), e.g. from :func:`evaluate_model`.
    path : str
        Output PNG.
    title : str, optional

    Returns
    -------
    str
        `path`.
    """
    from matplotlib.figure import Figure
    from .plots import save_png
    regimes = [r for r in REGIMES if any(r in m for m in metrics_paths.values())]
    fig = Figure(figsize=(4.2 * max(len(regimes), 1), 4.4))
    for k, regime in enumerate(regimes):
        ax = fig.add_subplot(1, len(regimes), k + 1)
        for i, (name, paths) in enumerate(metrics_paths.items()):
            if regime not in paths:
                continue
            with open(paths[regime]) as fx:
                res = json.load(fx)['regimes'][regime]
            if res['pe_score'] is None:
                continue
            curve = res['curve']
            eff = np.asarray(curve['efficiency'], dtype=float)
            pur = np.asarray(curve['purity'], dtype=float)
            ax.plot(eff, pur, ('-', '--', '-.')[(i // 10) % 3], color=f'C{i % 10}', lw=1.2,
                    label=f'{name} ({res["pe_score"]:.3f})')
        ax.plot([0.7, 1.0], [0.7, 1.0], ':', color='grey', lw=0.8)
        ax.set_xlim(0.7, 1.005)
        ax.set_ylim(0.7, 1.005)
        ax.set_xlabel('efficiency')
        ax.set_ylabel('purity')
        ax.set_title(f'{regime} {title}'.strip())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc='lower left')
    fig.tight_layout()
    return save_png(fig, path)
