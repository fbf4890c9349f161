"""
lbgnet.predict
==============

Catalogue quantities from any architecture (:mod:`lbgnet.variants`), so that training,
evaluation and production treat line finders, direct-regression and hybrid networks alike.

:func:`predict_raw` runs the network and returns its raw outputs (``conf``/``offset`` of
the line finder, ``direct`` = (P, z, σ) of the direct head); :func:`catalog_from_raw` turns
them into the keys of :func:`lbgnet.postprocess.postprocess` (pure numpy):

``linefinder``
    :func:`lbgnet.postprocess.postprocess` unchanged.
``direct``
    ``C_LBG`` = P, ``IS_LBG`` = P > c_thresh, ``Z_LBG`` = ``Z_BESTLINE`` = z,
    ``ZERR_LBG`` = σ (1 + z); no lines: ``C_LINES``/``Z_LINES`` NaN, ``BESTLINE`` −1,
    ``NLINES_AGREE`` 0.
``hybrid``
    Line quantities and ``Z_LBG`` from the line finder, except where no line passes
    ``line_floor`` (there ``Z_LBG``/``ZERR_LBG`` come from the direct head); ``C_LBG`` per
    ``postprocess.hybrid_score``: ``mean`` (default) of the line-finder score and P,
    ``linefinder`` or ``direct``.

The direct head's outputs are also returned as ``P_DIRECT``, ``Z_DIRECT``, ``ZERR_DIRECT``.
"""
import numpy as np

from .evaluate import LBG_CLASS, pe_score, regime_masks
from .modelspec import architecture
from .postprocess import HYBRID_SCORES, check_c_thresh, postprocess, postprocess_options
from .thresholds import choose_from_scores, choose_thresholds
from .zerr import calibrated_error


def predict_raw(model, X, config, batch_size=2048, forward=None):
    """Raw network outputs.

    Parameters
    ----------
    model : keras.Model
    X : numpy.ndarray
        Shape (nspec, nbins, 2).
    config : lbgnet.config.Config
    batch_size : int, optional
    forward : callable, optional
        ``forward(x)`` = ``model(x, training=False)`` for direct and hybrid networks, e.g.
        a compiled ``tf.function`` (:func:`lbgnet.network.compiled_forward`) [the
        eager call].

    Returns
    -------
    dict
        ``conf``, ``offset`` (nspec, nlines, nboxes) for line finders and hybrids;
        ``direct`` (nspec, 3) for direct and hybrid networks.
    """
    from .model import predict_boxes
    arch = architecture(config)
    if arch == 'linefinder':
        conf, offset = predict_boxes(model, X, batch_size)
        return {'conf': conf, 'offset': offset}
    import keras
    X = np.asarray(X, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if X.ndim != 3 or X.shape[1:] != expected:
        raise ValueError(f'input shape {X.shape} does not match the model input (nspec,) + {expected}')
    chunks = []
    for start in range(0, X.shape[0], batch_size):
        batch = X[start:start + batch_size]
        out = forward(batch) if forward is not None else model(batch, training=False)
        out = out if isinstance(out, dict) else {'direct': out}
        chunks.append({k: keras.ops.convert_to_numpy(v) for k, v in out.items()})
    if not chunks:
        nlines, nboxes = len(config.lines), config.nboxes
        chunks = [{'direct': np.zeros((0, 3), np.float32),
                   'line_boxes': np.zeros((0, nlines, nboxes, 2), np.float32)}]
    raw = {'direct': np.concatenate([c['direct'] for c in chunks])}
    if arch == 'hybrid':
        boxes = np.concatenate([c['line_boxes'] for c in chunks])
        raw.update(conf=boxes[..., 0], offset=boxes[..., 1])
    return raw


def _direct_keys(direct):
    return {'P_DIRECT': direct[:, 0], 'Z_DIRECT': direct[:, 1].astype(np.float64),
            'ZERR_DIRECT': (direct[:, 2] * (1.0 + direct[:, 1])).astype(np.float64)}


def catalog_from_raw(raw, config, c_thresh=None, n_thresh=None, calibrate=True):
    """Per-object catalogue quantities from raw outputs (see the module docstring).

    Parameters
    ----------
    raw : dict
        From :func:`predict_raw`.
    config : lbgnet.config.Config
    c_thresh, n_thresh : optional
        [``config.selection``]; `n_thresh` is ignored by direct networks.
    calibrate : bool, optional
        Calibrate ``ZERR_LBG`` with the configuration's ``postprocess.zerr_scale`` and
        ``zerr_floor`` (:mod:`lbgnet.zerr`; the defaults leave it raw).  False: the raw
        error (to fit the calibration).

    Returns
    -------
    dict of numpy.ndarray
        The keys of :func:`lbgnet.postprocess.postprocess`, plus ``P_DIRECT``, ``Z_DIRECT``
        and ``ZERR_DIRECT`` for direct and hybrid networks.
    """
    res = _catalog_from_raw(raw, config, c_thresh, n_thresh)
    if calibrate:
        opts = postprocess_options(config)
        res['ZERR_LBG'] = calibrated_error(res['ZERR_LBG'], res['Z_LBG'], opts['zerr_scale'],
                                           opts['zerr_floor'])
    return res


def _catalog_from_raw(raw, config, c_thresh, n_thresh):
    arch = architecture(config)
    c_thresh = config.selection.c_thresh if c_thresh is None else float(c_thresh)
    if arch == 'linefinder':
        return postprocess(raw['conf'], raw['offset'], config, c_thresh, n_thresh)
    check_c_thresh(c_thresh)
    direct = _direct_keys(np.asarray(raw['direct']))
    if arch == 'direct':
        nspec, nlines = direct['P_DIRECT'].size, len(config.lines)
        res = {'C_LINES': np.full((nspec, nlines), np.nan, np.float32),
               'Z_LINES': np.full((nspec, nlines), np.nan),
               'C_LBG': direct['P_DIRECT'], 'Z_LBG': direct['Z_DIRECT'],
               'ZERR_LBG': direct['ZERR_DIRECT'], 'Z_BESTLINE': direct['Z_DIRECT'],
               'BESTLINE': np.full(nspec, -1, np.int16),
               'NLINES_AGREE': np.zeros(nspec, np.int16)}
    else:
        res = postprocess(raw['conf'], raw['offset'], config, c_thresh, n_thresh)
        # NaN lines count as absent, as in combine_lines
        nolines = ~np.any(res['C_LINES'] >= postprocess_options(config)['line_floor'], axis=1)
        res['Z_LBG'] = np.where(nolines, direct['Z_DIRECT'], res['Z_LBG'])
        res['ZERR_LBG'] = np.where(nolines, direct['ZERR_DIRECT'], res['ZERR_LBG'])
        res['C_LBG'] = hybrid_score(res['C_LBG'], direct['P_DIRECT'], config)
    res['IS_LBG'] = res['C_LBG'] > c_thresh
    res.update(direct)
    return res


def hybrid_score(c_linefinder, p_direct, config):
    """``C_LBG`` of a hybrid from the line-finder score and the direct probability."""
    how = (config.extra.get('postprocess') or {}).get('hybrid_score', 'mean')
    if how not in HYBRID_SCORES:
        raise ValueError(f'postprocess.hybrid_score must be one of {HYBRID_SCORES}, not {how!r}')
    if how == 'linefinder':
        return c_linefinder
    if how == 'direct':
        return p_direct
    return 0.5 * (np.asarray(c_linefinder, dtype=np.float32) + p_direct)


def predict_catalog(model, X, config, c_thresh=None, n_thresh=None, batch_size=2048):
    """Run any lbgnet network and post-process: ``(catalogue dict, raw outputs)``."""
    raw = predict_raw(model, X, config, batch_size)
    return catalog_from_raw(raw, config, c_thresh, n_thresh), raw


def choose_catalog_thresholds(raw, truth, config, n_candidates=(1, 2, 3)):
    """Default thresholds from a validation set, for any architecture.

    Line finders use :func:`lbgnet.thresholds.choose_thresholds`.  Otherwise, for each
    usable ``n_thresh`` (only 1 for direct networks, whose score has no lines), the mean
    purity = efficiency score over the z regimes is computed on ``C_LBG``; the best
    ``n_thresh`` wins and ``c_thresh`` is where purity = efficiency on the whole set.

    Parameters
    ----------
    raw : dict
        :func:`predict_raw` output.
    truth : dict
        ``CLASS``, ``Z_TRUE`` of the same objects.
    config : lbgnet.config.Config
    n_candidates : sequence of int, optional

    Returns
    -------
    c_thresh : float
    n_thresh : int
    table : dict
        n_thresh -> ``{'mean_score', 'c_thresh'}``.
    """
    arch = architecture(config)
    usable = tuple(n for n in n_candidates if n <= len(config.lines)) or (1,)
    if arch == 'linefinder':
        c_lines = postprocess(raw['conf'], raw['offset'], config)['C_LINES']
        return choose_thresholds(truth['CLASS'], truth['Z_TRUE'], c_lines, usable)
    candidates = (1,) if arch == 'direct' else usable
    return choose_from_scores(truth['CLASS'], truth['Z_TRUE'],
                              lambda n: catalog_from_raw(raw, config, n_thresh=n)['C_LBG'],
                              candidates)


def regime_scores(res, truth):
    """Purity = efficiency score per z regime and their mean.

    Returns
    -------
    dict
        ``lowz``, ``midz``, ``highz`` (NaN without LBGs), ``all`` and ``mean`` (over the
        regimes with LBGs).
    """
    is_true = np.asarray(truth['CLASS']).astype(str) == LBG_CLASS
    out = {name: pe_score(is_true[m], res['C_LBG'][m])[0]
           for name, m in regime_masks(truth['CLASS'], truth['Z_TRUE']).items()}
    finite = [v for k, v in out.items() if k != 'all' and np.isfinite(v)]
    out['mean'] = float(np.mean(finite)) if finite else float('nan')
    return out
