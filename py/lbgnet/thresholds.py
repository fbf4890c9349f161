"""
lbgnet.thresholds
=================

The default selection thresholds (``c_thresh``, ``n_thresh``) of a model, chosen on a
validation set with known truth at the end of training (pure numpy; the metrics are
those of :mod:`lbgnet.evaluate`).
"""
import numpy as np

from .evaluate import LBG_CLASS, pe_score, regime_masks
from .postprocess import lbg_score


def choose_thresholds(classes, z_true, c_lines, n_candidates=(1, 2, 3), regimes=None):
    """Default selection thresholds from a validation set.

    For each candidate ``n_thresh`` the LBG score is the ``n_thresh``-th highest line
    confidence; the ``n_thresh`` with the best mean purity = efficiency score over the
    regimes wins, and ``c_thresh`` is the threshold where purity = efficiency on the whole
    set (regime ``all``).

    Parameters
    ----------
    classes, z_true : array_like
        Truth class and redshift, shape (n,).
    c_lines : numpy.ndarray
        Line confidences ``C_LINES``, shape (n, nlines).
    n_candidates : sequence of int, optional
        [(1, 2, 3)]
    regimes : dict, optional
        [:data:`lbgnet.evaluate.REGIMES`]

    Returns
    -------
    c_thresh : float
    n_thresh : int
    table : dict
        n_thresh -> {'mean_score': …, 'c_thresh': …} for every candidate.
    """
    c_lines = np.asarray(c_lines)
    return choose_from_scores(classes, z_true, lambda n: lbg_score(c_lines, n), n_candidates,
                              regimes)


def choose_from_scores(classes, z_true, score_for, n_candidates, regimes=None):
    """Pick (c_thresh, n_thresh) given a function that scores objects for each n_thresh.

    Parameters
    ----------
    classes, z_true : array_like
        Truth class and redshift, shape (n,).
    score_for : callable
        ``score_for(n_thresh)`` -> ``C_LBG`` of every object, shape (n,).
    n_candidates : sequence of int
    regimes : dict, optional
        [:data:`lbgnet.evaluate.REGIMES`]

    Returns
    -------
    c_thresh, n_thresh, table
        As :func:`choose_thresholds`.  The threshold is clipped to [0, 1], the range
        the post-processing accepts: where the score's cut falls in a group tied at
        ``C_LBG = 0`` (a saturated or untrained network, or a set of LBGs only),
        :func:`lbgnet.evaluate.pe_score` puts it just below 0, and 0 is the nearest
        selection ``C_LBG > c_thresh`` can make.
    """
    is_true = np.asarray(classes).astype(str) == LBG_CLASS
    masks = regime_masks(classes, z_true, regimes)
    table = {}
    for n_thresh in n_candidates:
        score = np.asarray(score_for(n_thresh))
        per_regime = [pe_score(is_true[m], score[m])[0] for k, m in masks.items() if k != 'all']
        per_regime = [v for v in per_regime if np.isfinite(v)]
        table[int(n_thresh)] = {'mean_score': float(np.mean(per_regime)) if per_regime else float('nan'),
                                'c_thresh': _clip_threshold(pe_score(is_true, score)[1])}
    best = max(table, key=lambda n: (np.nan_to_num(table[n]['mean_score'], nan=-1.0), -n))
    return table[best]['c_thresh'], best, table


def _clip_threshold(c_thresh):
    """`c_thresh` in [0, 1] (NaN, the threshold of a set without LBGs, kept)."""
    c_thresh = float(c_thresh)
    return c_thresh if np.isnan(c_thresh) else float(np.clip(c_thresh, 0.0, 1.0))
