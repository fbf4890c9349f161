"""
lbgnet.evaluate
===============

Classification and redshift metrics on mock spectra with known truth (pure numpy).

Definitions used throughout:

* efficiency = recall of true LBGs = selected true LBGs / true LBGs;
* purity = precision = selected true LBGs / selected objects;
* the *score* is the value where purity = efficiency while the threshold on ``C_LBG`` is
  lowered.  Selecting the top-k objects gives purity TP/k and efficiency TP/N_LBG, so the
  two are equal exactly at k = N_LBG: the score is the fraction of true LBGs among the
  N_LBG highest-``C_LBG`` objects (no interpolation needed);
* Δz = z_pred - z_true; σ_NMAD = 1.4826 × ``median(|x - median(x)|)`` of x = Δz/(1+z_true);
  a catastrophic failure is ``|Δz|/(1+z_true) > 0.01`` (3000 km/s, five times the σ_NMAD
  target of 2e-3: the line finder works on 8 Å bins, so DESI's 1000 km/s criterion for
  Redrock would flag ordinary 2σ errors), reported beside the fraction with ``|Δz| < 0.05``;
* test regimes select the LBGs by true redshift — low-z (z ≤ 2.6), mid-z (2.6 < z < 3.4),
  high-z (z ≥ 3.4) — and keep every contaminant in each regime;
* standard errors (``errors`` of each regime): bootstrap over the objects
  (:func:`bootstrap_errors`, 200 resamples, fixed seed);
* *reliable*: the IS_LBG targets without the afterburner's SMALL_DELTA_CHI2 flag
  (``DELTACHI2_TPL`` ≥ 9 and a finite ``ZERR_TPL``) nor another bit that vetoes
  ``GOOD_LBG`` (Z_OUT_OF_RANGE, LOW_COVERAGE, when ``LBG_FLAG`` is given): the
  ``GOOD_LBG`` sample of reliable redshifts (:func:`reliable_metrics`);
* ``redshift_errors``: the pulls Δz/``ZERR`` of the selected true LBGs whose redshift is
  right (``|Δz|/(1+z) < 0.01``), their NMAD and the fractions within 1σ and 2σ
  (:func:`lbgnet.zerr.pull_stats`).
"""
import warnings

import numpy as np

from .io.evaluation import jsonable  # noqa: F401 (used here and imported from here)
from .refine import MIN_DELTACHI2, reliable_redshift
from .zerr import pull_stats


#: Redshift regimes of the LBGs: name -> (z_lo or None, z_hi or None).
REGIMES = {'lowz': (None, 2.6), 'midz': (2.6, 3.4), 'highz': (3.4, None)}
#: ``|Δz|/(1+z)`` above which a redshift error is catastrophic (3000 km/s).
CATASTROPHIC_DZ1PZ = 0.01
#: ``|Δz|`` limit of the "good redshift" fraction.
DZ_GOOD = 0.05
#: Truth class of the objects to find.
LBG_CLASS = 'LBG'
#: Bootstrap resamples and seed of the metrics' standard errors (:func:`bootstrap_errors`).
NBOOT = 200
BOOT_SEED = 0
#: Bootstrap draws (resamples × objects) held in memory at once.
BOOT_CHUNK = 2_000_000
#: r-magnitude limits of the depth-limited metrics (:func:`depth_limited`); 24.2 is about
#: the depth of DESI's LBG pilot selections (Ruhlmann-Kleider et al. 2024).
DEPTH_LIMITS = (23.0, 23.5, 24.0, 24.2, 24.5, 25.0)
#: The depth of DESI's LBG pilot selections among :data:`DEPTH_LIMITS`, summarised in the
#: log of ``desi_lbg_evaluate``.
PILOT_DEPTH = 24.2


def regime_masks(classes, z_true, regimes=None):
    """Objects belonging to each test regime.

    Parameters
    ----------
    classes : array_like of str
        True class per object (``'LBG'``, ``'QSO'``, ``'GALAXY'``, ``'STAR'``), shape (n,).
    z_true : array_like
        True redshift, shape (n,).
    regimes : dict, optional
        name -> (z_lo, z_hi) [:data:`REGIMES`].  An open-ended regime includes its edge
        (``z <= z_hi`` or ``z >= z_lo``); a closed one excludes both (``z_lo < z < z_hi``).

    Returns
    -------
    dict
        ``'all'`` and each regime name -> bool mask (n,): the regime's LBGs + all contaminants.
    """
    regimes = REGIMES if regimes is None else regimes
    is_lbg = np.asarray(classes).astype(str) == LBG_CLASS
    z_true = np.asarray(z_true, dtype=np.float64)
    masks = {'all': np.ones(is_lbg.size, dtype=bool)}
    for name, (z_lo, z_hi) in regimes.items():
        inside = np.ones(is_lbg.size, dtype=bool)
        if z_lo is not None:
            inside &= (z_true >= z_lo) if z_hi is None else (z_true > z_lo)
        if z_hi is not None:
            inside &= (z_true <= z_hi) if z_lo is None else (z_true < z_hi)
        masks[name] = ~is_lbg | (is_lbg & inside)
    return masks


def purity_efficiency(is_true, score, thresholds):
    """Purity and efficiency of the selection ``score > threshold``.

    Parameters
    ----------
    is_true : array_like of bool
        True LBGs, shape (n,).
    score : array_like
        ``C_LBG``, shape (n,).
    thresholds : array_like
        Shape (nthresh,).

    Returns
    -------
    dict
        ``threshold``, ``purity`` (NaN where nothing is selected), ``efficiency`` (NaN
        without true LBGs), ``nselected``: arrays of shape (nthresh,).
    """
    is_true = np.asarray(is_true, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    check_same_shape(is_true=is_true, score=score)
    selected = score[None, :] > thresholds[:, None]
    nsel = selected.sum(axis=1)
    tp = (selected & is_true[None, :]).sum(axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):
        purity = np.where(nsel > 0, tp / np.maximum(nsel, 1), np.nan)
        efficiency = tp / is_true.sum() if is_true.any() else np.full(tp.shape, np.nan)
    return {'threshold': thresholds, 'purity': purity, 'efficiency': efficiency,
            'nselected': nsel}


def curve_thresholds(score, npoints=101):
    """Thresholds of the purity/efficiency curves: `npoints` evenly spaced in [0, 1] and
    as many at evenly spaced quantiles of the finite scores in [0, 1].

    A network's confidences crowd near 1 (the shipped model's selection threshold is
    0.91): evenly spaced thresholds alone leave about ten points for the part of the curve
    where efficiency falls from 1 to 0.  The quantiles put points where the objects are.

    Parameters
    ----------
    score : array_like
        ``C_LBG`` of all objects (NaN for blank spectra, ignored).
    npoints : int, optional

    Returns
    -------
    numpy.ndarray
        Sorted, distinct thresholds, from 0 to at most 1.
    """
    grid = np.linspace(0.0, 1.0, int(npoints))
    score = np.asarray(score, dtype=np.float64)
    score = score[np.isfinite(score) & (score >= 0.0) & (score <= 1.0)]
    if score.size == 0:
        return grid
    return np.unique(np.concatenate([grid, np.quantile(score, grid)]))


def check_same_shape(**arrays):
    """Raise ValueError unless the named 1-d arrays have one shape (numpy would broadcast
    a length-1 array against the others and report metrics of nothing real)."""
    shapes = {name: np.shape(array) for name, array in arrays.items()}
    if len(set(shapes.values())) > 1 or any(len(s) != 1 for s in shapes.values()):
        raise ValueError('need 1-d arrays of one length, got '
                         + ', '.join(f'{name} {shape}' for name, shape in shapes.items()))


def pe_score(is_true, score):
    """The score where purity = efficiency, and the threshold that reaches it.

    Parameters
    ----------
    is_true : array_like of bool
        True LBGs, shape (n,).
    score : array_like
        ``C_LBG``, shape (n,).  NaN (no prediction) ranks below every score, as
        ``score > threshold`` never selects it.

    Returns
    -------
    value : float
        Fraction of true LBGs among the N_LBG highest scores (NaN without LBGs; objects
        without a score never count, even when fewer than N_LBG have one).  Objects
        tied with the N_LBG-th highest score share the remaining places: they count with
        their mean truth (the expectation over random tie breaking), so the value does
        not depend on the order of the rows.
    threshold : float
        ``score > threshold`` selects the top N_LBG objects: midway between the N_LBG-th
        and the next lower distinct score.  When a tie straddles rank N_LBG, the threshold
        keeps or drops the whole tied group, whichever selects closer to N_LBG objects
        (keeping it on equality, and always when dropping it would select nothing).
    """
    is_true = np.asarray(is_true, dtype=bool)
    dtype = np.asarray(score).dtype
    score = np.asarray(score, dtype=np.float64)
    check_same_shape(is_true=is_true, score=score)
    score = np.where(np.isnan(score), -np.inf, score)
    ntrue = int(is_true.sum())
    if ntrue == 0:
        return float('nan'), float('nan')
    cut = -np.partition(-score, ntrue - 1)[ntrue - 1]          # the N_LBG-th highest
    above, tied = score > cut, score == cut
    nabove, ntied = int(above.sum()), int(tied.sum())
    value = (np.count_nonzero(is_true & above)
             + (ntrue - nabove) * np.count_nonzero(is_true & tied) / ntied) / ntrue
    if np.isneginf(cut):
        # fewer scored objects than LBGs: the unscored ones (-inf) are never selected, so
        # they take no place among the top N_LBG (the value is the efficiency of selecting
        # every scored object, the threshold -inf)
        value = np.count_nonzero(is_true & above) / ntrue
    compare = dtype if dtype.kind == 'f' else np.dtype(np.float64)
    lower = score[(score < cut) & np.isfinite(score)]      # unscored rows set no threshold
    # without a lower score: a little below the cut, and below it in the scores' precision
    below = lower.max() if lower.size else min(
        cut - 1e-6, float(np.nextafter(np.asarray(cut).astype(compare), compare.type(-np.inf))))
    keep = nabove == 0 or nabove + ntied - ntrue <= ntrue - nabove
    if not keep:
        return float(value), float(cut)
    middle = 0.5 * (cut + below)
    if np.asarray(middle).astype(compare) >= np.asarray(cut).astype(compare):
        # scores are compared in their own precision (NEP 50): a midpoint between adjacent
        # values (float32, or float64 one ulp apart) rounds onto the cut; `below` itself
        # separates them exactly
        middle = below
    return float(value), float(middle)


def redshift_metrics(z_true, z_pred):
    """Accuracy of predicted redshifts.

    Parameters
    ----------
    z_true, z_pred : array_like
        Shape (n,).

    Returns
    -------
    dict
        ``n``, ``frac_dz_lt_0p05`` (``|Δz| < 0.05``), ``sigma_nmad`` (of Δz/(1+z)),
        ``catastrophic_rate`` (``|Δz|/(1+z)`` > :data:`CATASTROPHIC_DZ1PZ`), ``median_dz_1pz``
        (bias);
        NaN values when n = 0.  A NaN `z_pred` counts as a failure in both rates (outside
        ``|Δz| < 0.05``, catastrophic); ``sigma_nmad`` and ``median_dz_1pz`` are those of
        the finite ones.
    """
    z_true = np.asarray(z_true, dtype=np.float64)
    z_pred = np.asarray(z_pred, dtype=np.float64)
    check_same_shape(z_true=z_true, z_pred=z_pred)
    n = int(z_true.size)
    if n == 0:
        return {'n': 0, 'frac_dz_lt_0p05': float('nan'), 'sigma_nmad': float('nan'),
                'catastrophic_rate': float('nan'), 'median_dz_1pz': float('nan')}
    dz = z_pred - z_true
    x = dz / (1.0 + z_true)
    # a missing (NaN) redshift is a failure for every rate: outside |dz| < 0.05 and
    # catastrophic; the spread and median are those of the redshifts measured
    finite = np.isfinite(x)
    med = np.median(x[finite]) if finite.any() else np.nan
    spread = np.median(np.abs(x[finite] - med)) if finite.any() else np.nan
    return {'n': n,
            'frac_dz_lt_0p05': float(np.mean(np.abs(dz) < DZ_GOOD)),
            'sigma_nmad': float(1.4826 * spread),
            'catastrophic_rate': float(np.mean(~(np.abs(x) <= CATASTROPHIC_DZ1PZ))),
            'median_dz_1pz': float(med)}


def binned_efficiency(values, is_true, selected, edges):
    """Efficiency of a selection in bins of a truth quantity (z, magnitude).

    Parameters
    ----------
    values : array_like
        Quantity to bin, shape (n,).
    is_true, selected : array_like of bool
        True LBGs and selected objects, shape (n,).
    edges : array_like
        Bin edges, shape (nbins+1,).

    Returns
    -------
    dict
        ``edges``, ``ntrue`` and ``efficiency`` per bin (NaN in bins without LBGs).
    """
    values = np.asarray(values, dtype=np.float64)
    is_true = np.asarray(is_true, dtype=bool)
    selected = np.asarray(selected, dtype=bool)
    edges = np.asarray(edges, dtype=np.float64)
    ntrue = np.histogram(values[is_true], edges)[0]
    nsel = np.histogram(values[is_true & selected], edges)[0]
    with np.errstate(invalid='ignore', divide='ignore'):
        eff = np.where(ntrue > 0, nsel / np.maximum(ntrue, 1), np.nan)
    return {'edges': edges, 'ntrue': ntrue, 'efficiency': eff}


def confusion_by_class(classes, selected):
    """How many objects of each true class are selected as LBGs.

    Returns
    -------
    dict
        class -> ``{'n': …, 'nselected': …, 'fraction_selected': …}``.
    """
    classes = np.asarray(classes).astype(str)
    selected = np.asarray(selected, dtype=bool)
    out = {}
    for name in np.unique(classes):
        mask = classes == name
        nsel = int(np.count_nonzero(selected & mask))
        out[str(name)] = {'n': int(mask.sum()), 'nselected': nsel,
                          'fraction_selected': nsel / int(mask.sum())}
    return out


def bootstrap_errors(is_true, selected, score, z_true, z_preds, nboot=NBOOT, seed=BOOT_SEED):
    """Standard errors of the headline metrics: bootstrap over the objects.

    The objects (true LBGs and contaminants) are drawn with replacement `nboot` times and
    every metric recomputed; the error is the standard deviation of the resampled values
    (the threshold stays the one ``IS_LBG`` was made with).

    Parameters
    ----------
    is_true, selected : array_like of bool
        True LBGs and selected objects, shape (n,).
    score : array_like
        ``C_LBG``, shape (n,).
    z_true : array_like
        True redshift, shape (n,).
    z_preds : dict
        name -> predicted redshift (n,), e.g. ``{'redshift': Z_LBG, 'redshift_template':
        Z_TPL}``.
    nboot, seed : int, optional
        Resamples and random seed [:data:`NBOOT`, :data:`BOOT_SEED`]: fixed, so the errors
        are reproducible.

    Returns
    -------
    dict
        ``nboot``; ``pe_score``, ``efficiency``, ``purity``; for each name of `z_preds`, a
        dict with ``frac_dz_lt_0p05`` and ``sigma_nmad`` (of the selected true LBGs).
        Resamples where a metric is undefined (no true LBG, nothing selected) are left
        out of its spread; NaN where fewer than two remain.  Predicted redshifts are
        assumed finite (as ``Z_LBG`` and ``Z_TPL`` with its fallback are).
    """
    if nboot < 1:
        raise ValueError(f'need nboot >= 1, not {nboot}')
    is_true = np.asarray(is_true, dtype=bool)
    selected = np.asarray(selected, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    z_true = np.asarray(z_true, dtype=np.float64)
    z_preds = {k: np.asarray(v, dtype=np.float64) for k, v in z_preds.items()}
    n = is_true.size
    if n == 0:
        return {'nboot': int(nboot), 'pe_score': float('nan'), 'efficiency': float('nan'),
                'purity': float('nan'),
                **{k: {'frac_dz_lt_0p05': float('nan'), 'sigma_nmad': float('nan')}
                   for k in z_preds}}
    rng = np.random.default_rng(seed)
    values = {'pe_score': [], 'efficiency': [], 'purity': []}
    values.update({(name, key): [] for name in z_preds for key in ('frac_dz_lt_0p05', 'sigma_nmad')})
    chunk = max(1, BOOT_CHUNK // n)              # resamples at a time: bounded memory
    for start in range(0, nboot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, nboot - start), n))
        true_b, sel_b = is_true[idx], selected[idx]
        good_b = true_b & sel_b
        ngood, ntrue, nsel = good_b.sum(axis=1), true_b.sum(axis=1), sel_b.sum(axis=1)
        values['efficiency'].append(np.where(ntrue > 0, ngood / np.maximum(ntrue, 1), np.nan))
        values['purity'].append(np.where(nsel > 0, ngood / np.maximum(nsel, 1), np.nan))
        # pe_score needs a partition per resample (a loop over resamples, not objects)
        values['pe_score'].append([pe_score(t, score[i])[0] for t, i in zip(true_b, idx)])
        for name, z_pred in z_preds.items():
            # redshift_metrics of the selected true LBGs of every resample at once
            dz = np.where(good_b, z_pred[idx] - z_true[idx], np.nan)
            x = dz / (1.0 + z_true[idx])
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', RuntimeWarning)   # resamples without any
                nmad = 1.4826 * np.nanmedian(np.abs(x - np.nanmedian(x, axis=1)[:, None]), axis=1)
            values[name, 'frac_dz_lt_0p05'].append(
                np.where(ngood > 0, (np.abs(dz) < DZ_GOOD).sum(axis=1) / np.maximum(ngood, 1),
                         np.nan))
            values[name, 'sigma_nmad'].append(nmad)
    std = {k: _nanstd(np.concatenate(v)) for k, v in values.items()}
    out = {'nboot': int(nboot), 'pe_score': std['pe_score'], 'efficiency': std['efficiency'],
           'purity': std['purity']}
    for name in z_preds:
        out[name] = {key: std[name, key] for key in ('frac_dz_lt_0p05', 'sigma_nmad')}
    return out


def _nanstd(values):
    """Standard deviation of the finite values (NaN if fewer than two)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if values.size > 1 else float('nan')


def depth_limited(is_true, selected, score, rmag, z_true, z_pred, limits=DEPTH_LIMITS):
    """Metrics of the objects (LBGs and contaminants alike) brighter than each r limit.

    A survey targeting LBGs to a shallower depth than the test set sees these numbers.

    Parameters
    ----------
    is_true, selected : array_like of bool
        True LBGs and selected objects, shape (n,).
    score : array_like
        ``C_LBG``, shape (n,).
    rmag, z_true, z_pred : array_like
        Truth r magnitude and redshift, predicted ``Z_LBG``, shape (n,).
    limits : sequence of float, optional
        r-magnitude limits [:data:`DEPTH_LIMITS`].

    Returns
    -------
    dict
        ``'r<=LIMIT'`` -> ``nlbg``, ``ncontaminant``, ``pe_score``, ``efficiency`` and
        ``purity`` (at the default threshold; NaN without true LBGs or without selected
        objects) and the :func:`redshift_metrics` of the selected true LBGs.
    """
    is_true = np.asarray(is_true, dtype=bool)
    selected = np.asarray(selected, dtype=bool)
    rmag = np.asarray(rmag, dtype=np.float64)
    z_true = np.asarray(z_true, dtype=np.float64)
    z_pred = np.asarray(z_pred, dtype=np.float64)
    out = {}
    for limit in limits:
        keep = rmag <= limit
        good = keep & is_true & selected
        ntrue = int((keep & is_true).sum())
        nsel = int((keep & selected).sum())
        out[f'r<={limit:g}'] = {
            'nlbg': ntrue, 'ncontaminant': int((keep & ~is_true).sum()),
            'pe_score': pe_score(is_true[keep], np.asarray(score)[keep])[0],
            'efficiency': float(good.sum() / ntrue) if ntrue else float('nan'),
            'purity': float(good.sum() / nsel) if nsel else float('nan'),
            **redshift_metrics(z_true[good], z_pred[good])}
    return out


def evaluate_regime(truth, pred, c_thresh, thresholds, z_edges, mag_edges):
    """All metrics of one set of objects (one regime).

    Parameters
    ----------
    truth : dict of numpy.ndarray
        ``CLASS``, ``Z_TRUE``, ``RMAG`` (n,).
    pred : dict of numpy.ndarray
        ``C_LBG``, ``IS_LBG``, ``Z_LBG``, ``Z_BESTLINE`` (n,), e.g. from
        :func:`lbgnet.postprocess.postprocess`; optionally ``Z_TPL``, the template-refined
        redshift (:mod:`lbgnet.refine`), which adds ``redshift_template`` and
        ``by_depth_template`` (``Z_TPL``, or ``Z_LBG`` where it is NaN), and with it
        ``DELTACHI2_TPL``, which adds ``reliable`` (:func:`reliable_metrics`; with
        ``LBG_FLAG``, the ``GOOD_LBG`` sample exactly).  With
        ``ZERR_LBG`` / ``ZERR_TPL``, ``redshift_errors`` tells how well they describe the
        right redshifts of the selected true LBGs (:func:`lbgnet.zerr.pull_stats`).
    c_thresh : float
        The threshold ``IS_LBG`` was made with (recorded only).
    thresholds, z_edges, mag_edges : numpy.ndarray
        Threshold grid of the purity/efficiency curve, bin edges in z and magnitude.

    Returns
    -------
    dict
        JSON-ready metrics (see :func:`evaluate_predictions`).
    """
    is_true = np.asarray(truth['CLASS']).astype(str) == LBG_CLASS
    selected = np.asarray(pred['IS_LBG'], dtype=bool)
    score, thresh = pe_score(is_true, pred['C_LBG'])
    good = is_true & selected
    z_true = np.asarray(truth['Z_TRUE'], dtype=np.float64)
    nsel = int(selected.sum())
    out = {
        'nlbg': int(is_true.sum()), 'ncontaminant': int((~is_true).sum()),
        'pe_score': score, 'pe_threshold': thresh,
        'c_thresh': float(c_thresh),
        'efficiency': float(good.sum() / is_true.sum()) if is_true.any() else float('nan'),
        'purity': float(good.sum() / nsel) if nsel else float('nan'),
        'redshift': redshift_metrics(z_true[good], np.asarray(pred['Z_LBG'])[good]),
        'redshift_bestline': redshift_metrics(z_true[good], np.asarray(pred['Z_BESTLINE'])[good]),
        'curve': purity_efficiency(is_true, pred['C_LBG'], thresholds),
        'efficiency_vs_z': binned_efficiency(z_true, is_true, selected, z_edges),
        'efficiency_vs_mag': binned_efficiency(truth['RMAG'], is_true, selected, mag_edges),
        'confusion': confusion_by_class(truth['CLASS'], selected),
        'by_depth': depth_limited(is_true, selected, pred['C_LBG'], truth['RMAG'], z_true,
                                  pred['Z_LBG']),
    }
    z_preds = {'redshift': pred['Z_LBG']}
    if 'Z_TPL' in pred:
        z_tpl = z_preds['redshift_template'] = template_or_cnn(pred)
        out['redshift_template'] = redshift_metrics(z_true[good], z_tpl[good])
        out['by_depth_template'] = depth_limited(is_true, selected, pred['C_LBG'],
                                                 truth['RMAG'], z_true, z_tpl)
        if 'DELTACHI2_TPL' in pred:
            out['reliable'] = reliable_metrics(is_true, selected, pred['DELTACHI2_TPL'],
                                               truth['RMAG'], z_true, z_tpl,
                                               pred.get('ZERR_TPL'), pred.get('LBG_FLAG'))
    out['errors'] = bootstrap_errors(is_true, selected, pred['C_LBG'], z_true, z_preds)
    out['redshift_errors'] = {
        key: pull_stats(np.asarray(pred[zkey])[good], np.asarray(pred[key])[good], z_true[good])
        for zkey, key in (('Z_LBG', 'ZERR_LBG'), ('Z_TPL', 'ZERR_TPL'))
        if zkey in pred and key in pred}
    return out


def reliable_metrics(is_true, selected, deltachi2, rmag, z_true, z_pred, zerr=None, flag=None):
    """Metrics of the IS_LBG targets without the SMALL_DELTA_CHI2 flag (``GOOD_LBG``).

    The afterburner flags an IS_LBG target whose template refinement does not single
    out its redshift (``DELTACHI2_TPL`` < :data:`lbgnet.refine.MIN_DELTACHI2`, or χ² not
    convex at ``Z_TPL``); these numbers describe the sample that remains.  With `flag`
    the other bits that veto ``GOOD_LBG`` of ``desi_lbg_zcatalog``
    (:data:`lbgnet.zcatalog.BAD_FOR_CLUSTERING`: Z_OUT_OF_RANGE, LOW_COVERAGE, …) are
    left out too, so that the sample is ``GOOD_LBG``.

    Parameters
    ----------
    is_true, selected : array_like of bool
        True LBGs and IS_LBG, shape (n,).
    deltachi2 : array_like
        ``DELTACHI2_TPL``, shape (n,).
    rmag, z_true, z_pred : array_like
        Truth r magnitude and redshift, predicted (refined) redshift, shape (n,).
    zerr : array_like, optional
        ``ZERR_TPL`` (NaN: χ² not convex at ``Z_TPL`` or pinned by an edge), shape (n,); None: not checked.
    flag : array_like of int, optional
        ``LBG_FLAG``, shape (n,); None: only the refinement decides.

    Returns
    -------
    dict
        ``min_deltachi2``; ``efficiency`` and ``purity`` of the unflagged IS_LBG targets;
        ``kept`` (fraction of the selected true LBGs left unflagged); ``redshift``
        (:func:`redshift_metrics` of the unflagged true LBGs); ``by_depth``: r limit ->
        ``efficiency``, ``kept`` and ``frac_dz_lt_0p05``.
    """
    is_true = np.asarray(is_true, dtype=bool)
    selected = np.asarray(selected, dtype=bool)
    rmag = np.asarray(rmag, dtype=np.float64)
    z_true = np.asarray(z_true, dtype=np.float64)
    z_pred = np.asarray(z_pred, dtype=np.float64)
    reliable = reliable_redshift(selected, deltachi2, zerr)
    if flag is not None:
        from .zcatalog import bad_bits
        reliable &= (np.asarray(flag, dtype=np.int64) & bad_bits()) == 0

    def summary(keep):
        ntrue = int((keep & is_true).sum())
        nsel = int((keep & selected & is_true).sum())
        good = keep & reliable & is_true
        nrel = int((keep & reliable).sum())
        return {'efficiency': float(good.sum() / ntrue) if ntrue else float('nan'),
                'purity': float(good.sum() / nrel) if nrel else float('nan'),
                'kept': float(good.sum() / nsel) if nsel else float('nan'),
                'redshift': redshift_metrics(z_true[good], z_pred[good])}

    out = {'min_deltachi2': MIN_DELTACHI2, **summary(np.ones(is_true.size, dtype=bool))}
    out['by_depth'] = {}
    for limit in DEPTH_LIMITS:
        sub = summary(rmag <= limit)
        out['by_depth'][f'r<={limit:g}'] = {
            'efficiency': sub['efficiency'], 'kept': sub['kept'],
            'frac_dz_lt_0p05': sub['redshift']['frac_dz_lt_0p05']}
    return out


def template_or_cnn(pred):
    """``Z_TPL`` where it is finite, else ``Z_LBG`` (targets the refinement skipped)."""
    z_tpl = np.asarray(pred['Z_TPL'], dtype=np.float64)
    return np.where(np.isfinite(z_tpl), z_tpl, np.asarray(pred['Z_LBG'], dtype=np.float64))


def evaluate_predictions(truth, pred, c_thresh, regimes=None, nthresh=101):
    """Metrics per regime, as a JSON-serialisable dictionary.

    Parameters
    ----------
    truth : dict or astropy.table.Table
        ``CLASS``, ``Z_TRUE``, ``RMAG`` per object, aligned with `pred`.
    pred : dict
        ``C_LBG``, ``IS_LBG``, ``Z_LBG``, ``Z_BESTLINE`` per object; optionally ``Z_TPL``,
        ``DELTACHI2_TPL``, ``ZERR_LBG``, ``ZERR_TPL`` and ``LBG_FLAG`` (see
        :func:`evaluate_regime`).
    c_thresh : float
        Threshold used for ``IS_LBG``.
    regimes : dict, optional
        [:data:`REGIMES`]
    nthresh : int, optional
        Thresholds of the purity/efficiency curves evenly spaced in [0, 1], and as many at
        quantiles of ``C_LBG`` (:func:`curve_thresholds`) [101].

    Returns
    -------
    dict
        regime name (``all``, ``lowz``, ``midz``, ``highz``) -> metrics of
        :func:`evaluate_regime`, arrays converted to lists.
    """
    truth = {k: np.asarray(truth[k]) for k in ('CLASS', 'Z_TRUE', 'RMAG')}
    truth['CLASS'] = class_names(truth['CLASS'])
    pred = {k: np.asarray(pred[k]) for k in ('C_LBG', 'IS_LBG', 'Z_LBG', 'Z_BESTLINE')
            + tuple(k for k in ('Z_TPL', 'DELTACHI2_TPL', 'ZERR_LBG', 'ZERR_TPL', 'LBG_FLAG')
                    if k in pred)}
    is_lbg = truth['CLASS'].astype(str) == LBG_CLASS
    thresholds = curve_thresholds(pred['C_LBG'], nthresh)
    z_edges = _edges(truth['Z_TRUE'][is_lbg], 0.25)
    mag_edges = _edges(truth['RMAG'][is_lbg], 0.5)
    out = {}
    for name, mask in regime_masks(truth['CLASS'], truth['Z_TRUE'], regimes).items():
        sub_truth = {k: v[mask] for k, v in truth.items()}
        sub_pred = {k: v[mask] for k, v in pred.items()}
        out[name] = jsonable(evaluate_regime(sub_truth, sub_pred, c_thresh, thresholds,
                                              z_edges, mag_edges))
    return out


def class_names(values):
    """Class names as stripped upper-case text (FITS bytes such as ``b'LBG '`` and
    ``'lbg'`` are ``'LBG'``), shape of `values`."""
    values = np.asarray(values)
    if values.dtype.kind == 'S':
        values = np.char.decode(values, 'ascii')
    return np.char.upper(np.char.strip(values.astype(str)))


def _edges(values, step):
    """Bin edges on multiples of `step` covering finite `values` (one bin if empty)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.array([0.0, step])
    lo = np.floor(values.min() / step) * step
    hi = np.ceil(values.max() / step) * step
    return np.arange(lo, hi + step / 2, step) if hi > lo else np.array([lo, lo + step])
