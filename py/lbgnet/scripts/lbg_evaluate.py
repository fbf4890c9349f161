"""
lbgnet.scripts.lbg_evaluate
===========================

``desi_lbg_evaluate``: metrics of the line finder on mock files with known truth.

Input: coadd files (run through a model, optionally with their Redrock files for a
Redrock comparison) or afterburner catalogues, each paired with its truth file (same
order).  Output, in ``--outdir``: ``metrics.json`` (``regimes``: per regime purity = efficiency score,
purity/efficiency curves, efficiency vs z and magnitude, redshift accuracy of Z_LBG and of
the best line, confusion by class; ``inputs``; ``redrock``: Redrock's redshift accuracy on
the true LBGs when Redrock files are given) and PNG figures.  Coadd input gets the
afterburner's template refinement (``Z_TPL``, :mod:`lbgnet.refine`) unless ``--no-refine``;
catalogue input uses the catalogue's Z_TPL column when it has one.  Its accuracy is
reported as ``redshift_template`` (and ``by_depth_template``) beside that of Z_LBG.
"""
import argparse
import os
from dataclasses import replace

import numpy as np
from desiutil.log import get_logger

from ..io import InputFileError
from ..io.evaluation import match_rows
from .refine_options import (add_refine_arguments, check_refine_arguments, make_refiner,
                             refine_options_given)

#: Output file names inside --outdir.
OUTPUTS = {'metrics': 'metrics.json', 'pe': 'purity_efficiency.png', 'z': 'redshift.png',
           'eff': 'efficiency.png', 'examples': 'examples.png', 'reliability': 'reliability.png',
           'pulls': 'pulls.png'}


#: Per-object predictions the metrics use (``Z_TPL`` only with the template refinement).
PRED_KEYS = ('C_LBG', 'IS_LBG', 'Z_LBG', 'ZERR_LBG', 'Z_BESTLINE', 'Z_TPL', 'ZERR_TPL',
             'DELTACHI2_TPL')


def parse(options=None):
    """Parse the command line of ``desi_lbg_evaluate``."""
    parser = argparse.ArgumentParser(description='Evaluate the LBG line finder on mock files '
                                     'with known truth: JSON metrics and PNG figures.')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--coadd', nargs='+', help='coadd FITS file(s) to run the model on')
    src.add_argument('--catalog', nargs='+', help='afterburner catalogue(s) (HDU LBG_CNN)')
    parser.add_argument('--truth', nargs='+', required=True,
                        help='truth file(s) (HDU TRUTH), one per coadd/catalogue, same order')
    parser.add_argument('--redrock', nargs='+',
                        help='Redrock file(s), one per coadd, for a Redrock comparison')
    parser.add_argument('--model', help='model file (.weights.h5 or .json) [shipped model]')
    parser.add_argument('--outdir', required=True, help='output directory')
    parser.add_argument('--c-thresh', type=float,
                        help='line confidence threshold [model default; for --catalog, the '
                        "catalogue's CTHRESH]")
    parser.add_argument('--n-thresh', type=int,
                        help='number of lines required [model default]; not with --catalog, '
                        'whose C_LBG was computed for its NTHRESH')
    parser.add_argument('--include-bad-fibres', action='store_true',
                        help='keep spectra with COADD_FIBERSTATUS != 0 or no valid pixel '
                        '(catalogue: LBG_FLAG NODATA/NOT_SCIENCE/NOT_IN_COADD); left out by '
                        'default')
    parser.add_argument('--record-as', metavar='NAME',
                        help='also store a summary of the metrics in the model card (the '
                        "model's JSON, metadata.heldout_tests.NAME); needs --model")
    add_refine_arguments(parser)
    parser.add_argument('--title', default='', help='title of the figures [%(default)s]')
    parser.add_argument('--nexamples', type=int, default=4,
                        help='example spectra to draw (coadd input) [%(default)s]')
    args = parser.parse_args(options)
    inputs = args.coadd or args.catalog
    if len(args.truth) != len(inputs):
        parser.error(f'{len(inputs)} input file(s) but {len(args.truth)} truth file(s)')
    if args.redrock and (args.catalog or len(args.redrock) != len(inputs)):
        parser.error('--redrock needs --coadd, with one Redrock file per coadd')
    if args.record_as and not args.model:
        parser.error('--record-as needs an explicit --model')
    if args.catalog and args.n_thresh is not None:
        parser.error("--n-thresh needs --coadd: a catalogue's C_LBG was computed for its NTHRESH")
    if args.c_thresh is not None and not 0.0 <= args.c_thresh <= 1.0:
        parser.error(f'--c-thresh must be in [0, 1], not {args.c_thresh}')
    if args.n_thresh is not None and args.n_thresh < 1:
        parser.error(f'--n-thresh must be >= 1, not {args.n_thresh}')
    check_refine_arguments(parser, args)
    if args.catalog and refine_options_given(args):
        parser.error(f'{", ".join(refine_options_given(args))} need --coadd: a catalogue '
                     'holds the refinement it was made with (its header, recorded in the '
                     'metrics)')
    return args


def predict_coadd(path, model, config, c_thresh, n_thresh, include_bad=False, refiner=None):
    """Grid one coadd, run the model, post-process and refine the selected redshifts.

    Returns
    -------
    targetid : numpy.ndarray
    res : dict
        :func:`lbgnet.postprocess.postprocess` output, with ``Z_TPL`` etc. when `refiner`
        is given (:func:`lbgnet.afterburner.refine_selected`).
    X, conf, offset : numpy.ndarray
        Input and raw line-finder output (for the example figure; conf and offset are
        None for direct-regression networks).
    nbad : int
        Spectra left out (dead fibre or no valid pixel; kept with `include_bad`).
    """
    from ..afterburner import refine_selected
    from ..io.evaluation import read_coadd_for_evaluation
    from ..predict import predict_catalog
    X, targetid, good, info = read_coadd_for_evaluation(
        path, config, None if refiner is None else refiner.noise)
    keep = np.ones_like(good) if include_bad else good
    X, targetid = X[keep], targetid[keep]
    res, raw = predict_catalog(model, X, config, c_thresh=c_thresh, n_thresh=n_thresh)
    conf, offset = raw.get('conf'), raw.get('offset')     # None for direct networks
    if refiner is not None:
        rows = replace(info, flux=info.flux[keep], ivar=info.ivar[keep],
                       noise_ivar=None if info.noise_ivar is None else info.noise_ivar[keep])
        res.update(refine_selected(refiner, rows, res, conf))
    return targetid, res, X, conf, offset, int(np.count_nonzero(~keep))


def redrock_metrics(rr_paths, truth_rows, tid_per_file):
    """Redshift accuracy of Redrock's Z on the true LBGs (all of them, no selection)."""
    from ..evaluate import LBG_CLASS, redshift_metrics
    from ..io import read_redrock
    z_rr = []
    for path, tid in zip(rr_paths, tid_per_file):
        rr = read_redrock(path, read_fibermap=False)
        z_rr.append(np.asarray(rr.redshifts['Z'])[match_rows(rr.targetid, tid, path)])
    z_rr = np.concatenate(z_rr)
    is_lbg = np.asarray(truth_rows['CLASS']).astype(str) == LBG_CLASS
    z_true = np.asarray(truth_rows['Z_TRUE'], dtype=np.float64)
    return redshift_metrics(z_true[is_lbg], z_rr[is_lbg])


def collect(args, config, model, refiner=None):
    """Predictions and aligned truth over all input files.

    Returns
    -------
    pred : dict of numpy.ndarray
    truth : dict of numpy.ndarray
    extras : dict
        TARGETIDs per file, the number of spectra left out (dead fibres), the ``SIMHASH``
        of each truth file (None when absent) and, for coadd input, the first file's
        arrays for the example plot.

    Raises
    ------
    InputFileError
        Also when a truth file does not belong to its coadd (``TRUTHSUM``).
    """
    from ..io.evaluation import catalog_refinement, catalog_thresholds, read_prediction_catalog
    from ..io.labelled import check_labels
    from ..io.mock import check_truth_matches, mock_keywords, read_truth
    preds, truths, tids, first, nexcluded, simhash = [], [], [], None, 0, {}
    refinement = None
    selection = (config.selection.c_thresh if args.c_thresh is None else args.c_thresh,
                 config.selection.n_thresh if args.n_thresh is None else args.n_thresh)
    for i, (path, truth_path) in enumerate(zip(args.coadd or args.catalog, args.truth)):
        if args.coadd:
            tid, res, X, conf, offset, nbad = predict_coadd(path, model, config, args.c_thresh,
                                                            args.n_thresh, args.include_bad_fibres,
                                                            refiner)
            first = first or (X, conf, offset, tid)
            nexcluded += nbad
        else:
            res = read_prediction_catalog(path, config.lines.names)
            made_with = catalog_thresholds(path)
            refined_with = catalog_refinement(path)
            if i == 0:
                selection, refinement = made_with, refined_with
            elif made_with != selection:
                raise InputFileError(path, f'made with CTHRESH, NTHRESH = {made_with}, the '
                                     f'first catalogue with {selection}: evaluate them apart')
            elif refined_with != refinement:
                raise InputFileError(path, f'refined with {refined_with}, the first catalogue '
                                     f'with {refinement}: evaluate them apart')
            if args.c_thresh is not None:
                selection = (args.c_thresh, selection[1])
            keep = np.ones(len(res['GOOD']), bool) if args.include_bad_fibres else res['GOOD']
            res = {k: v[keep] for k, v in res.items()}
            nexcluded += int(np.count_nonzero(~keep))
            tid = res['TARGETID']
            if args.c_thresh is not None:
                res['IS_LBG'] = res['C_LBG'] > args.c_thresh
        truth = read_truth(truth_path)
        check_truth_matches(path, truth_path, truth)
        check_labels(truth, truth_path)
        simhash[truth_path] = mock_keywords(truth_path).get('SIMHASH')
        rows = match_rows(np.asarray(truth['TARGETID']), tid, truth_path)
        truths.append({k: np.asarray(truth[k])[rows] for k in ('CLASS', 'Z_TRUE', 'RMAG')})
        preds.append({k: np.asarray(res[k]) for k in PRED_KEYS if k in res})
        tids.append(tid)
    pred = {k: np.concatenate([p[k] for p in preds]) for k in preds[0]
            if all(k in p for p in preds)}
    if 'Z_TPL' in pred and not np.isfinite(pred['Z_TPL']).any():
        del pred['Z_TPL']          # catalogues made with --no-refine: nothing to report
        pred.pop('DELTACHI2_TPL', None)
        pred.pop('ZERR_TPL', None)
    truth = {k: np.concatenate([t[k] for t in truths]) for k in truths[0]}
    return pred, truth, {'targetid': tids, 'first': first, 'nexcluded': nexcluded,
                         'simhash': simhash, 'selection': selection, 'refine': refinement}


def compare_simulators(file_hashes, model_hash):
    """Which simulator made the test files, against the one the model was trained on.

    Logs a warning when a truth file's ``SIMHASH`` differs from the model card's
    ``training.simulator_hash``: metrics measured on files of another simulator version
    are not comparable with the model card's (regenerate the test files).

    Parameters
    ----------
    file_hashes : dict
        Truth file -> SIMHASH (None when the file has none).
    model_hash : str or None

    Returns
    -------
    dict
        ``model``, ``files`` (the distinct hashes) and ``match`` (None when unknown).
    """
    found = sorted({h for h in file_hashes.values() if h is not None})
    match = None
    if model_hash is not None and found:
        match = found == [model_hash]
        if not match:
            other = [os.path.basename(p) for p, h in file_hashes.items()
                     if h is not None and h != model_hash]
            get_logger().warning('%s simulated by another simulator (SIMHASH %s) than the '
                                 'model was trained on (%s): these metrics are not comparable '
                                 'with its model card; regenerate the test files',
                                 ', '.join(other), ', '.join(h for h in found if h != model_hash),
                                 model_hash)
    return {'model': model_hash, 'files': found, 'match': match}


def write_plots(args, metrics, pred, truth, config, first):
    """Figures of one evaluation in ``args.outdir``."""
    from ..evaluate import LBG_CLASS, template_or_cnn
    from ..plots import (plot_efficiency_bins, plot_example_spectra, plot_pulls,
                         plot_purity_efficiency, plot_redshift, plot_reliability)
    from ..zerr import right_redshifts
    from ..refine import MIN_DELTACHI2
    out = {k: os.path.join(args.outdir, v) for k, v in OUTPUTS.items()}
    plot_purity_efficiency(metrics, out['pe'], title=args.title)
    sel = (np.asarray(truth['CLASS']).astype(str) == LBG_CLASS) & pred['IS_LBG']
    z_tpl = template_or_cnn(pred)[sel] if 'Z_TPL' in pred else None
    plot_redshift(truth['Z_TRUE'][sel], pred['Z_LBG'][sel], out['z'],
                  z_bestline=pred['Z_BESTLINE'][sel], title=args.title, z_template=z_tpl)
    plot_efficiency_bins(metrics, out['eff'])
    pulls = {}
    for zkey, ekey in (('Z_LBG', 'ZERR_LBG'), ('Z_TPL', 'ZERR_TPL')):
        if zkey in pred and ekey in pred:
            rel_dz, rel_err = right_redshifts(pred[zkey][sel], pred[ekey][sel],
                                              truth['Z_TRUE'][sel])
            pulls[ekey] = rel_dz / rel_err
    if any(v.size for v in pulls.values()):
        plot_pulls(pulls, out['pulls'], title=args.title)
    if 'DELTACHI2_TPL' in pred:
        chosen = np.asarray(pred['IS_LBG'], dtype=bool)
        z_true = np.asarray(truth['Z_TRUE'], dtype=np.float64)[chosen]
        plot_reliability(pred['DELTACHI2_TPL'][chosen],
                         np.abs(template_or_cnn(pred)[chosen] - z_true) / (1 + z_true),
                         np.asarray(truth['CLASS']).astype(str)[chosen] == LBG_CLASS,
                         out['reliability'], MIN_DELTACHI2, title=args.title)
    if first is not None and first[1] is not None and args.nexamples > 0:
        X, conf, offset, tid = first
        classes = truth['CLASS'][:len(tid)].astype(str)
        lbg = np.flatnonzero(classes == LBG_CLASS)[:(args.nexamples + 1) // 2]
        other = np.flatnonzero(classes != LBG_CLASS)[:args.nexamples - lbg.size]
        idx = np.concatenate([lbg, other]).astype(int)
        if idx.size:
            titles = [f'{classes[i]} z={truth["Z_TRUE"][i]:.3f}  C_LBG={pred["C_LBG"][i]:.2f}  '
                      f'Z_LBG={pred["Z_LBG"][i]:.3f}' for i in idx]
            plot_example_spectra(X[idx], conf[idx], offset[idx], config, out['examples'], titles)
    return out


def summarise(metrics):
    """Compact form of the metrics for the model card (regimes with LBGs only)."""
    inputs = {k: v for k, v in metrics['inputs'].items() if k != 'model'}
    for key in ('files', 'truth'):
        inputs[key] = [os.path.basename(p) for p in inputs[key]]
    out = {'inputs': inputs}
    for name, res in metrics['regimes'].items():
        if not res['nlbg']:
            continue
        out[name] = {k: res[k] for k in ('nlbg', 'ncontaminant', 'pe_score', 'pe_threshold',
                                         'efficiency', 'purity', 'errors')}
        out[name]['redshift'] = res['redshift']
        out[name]['sigma_nmad_bestline'] = res['redshift_bestline']['sigma_nmad']
        for key in ('redshift_template', 'by_depth_template', 'reliable', 'redshift_errors'):
            if key in res:
                out[name][key] = res[key]
        out[name]['selected_fraction'] = {c: v['fraction_selected']
                                          for c, v in res['confusion'].items()}
        if 'by_depth' in res:
            out[name]['by_depth'] = res['by_depth']
    if 'redrock' in metrics:
        out['redrock_on_true_lbgs'] = metrics['redrock']
    return out


def record_in_model_card(model_path, name, metrics):
    """Store :func:`summarise` of `metrics` as ``metadata.heldout_tests[name]`` of the model."""
    from ..io.modelfile import read_model_description, update_model_metadata
    tests = dict(read_model_description(model_path)[0]['metadata'].get('heldout_tests') or {})
    tests[name] = summarise(metrics)
    update_model_metadata(model_path, {'heldout_tests': tests})
    from ..io.modelfile import model_paths
    get_logger().info('recorded the metrics in %s as heldout_tests.%s', model_paths(model_path)[1],
                      name)


def main(args=None, comm=None):
    """Run ``desi_lbg_evaluate``; return 0 on success, 1 on an input error."""
    if not isinstance(args, argparse.Namespace):
        args = parse(args)
    from ..network import training_zrange
    from ..evaluate import evaluate_predictions
    from ..io.evaluation import write_json
    from ..io.modelfile import default_model_path, load_model, read_model_description
    log = get_logger()
    model_path = args.model or default_model_path()
    try:
        refiner = None
        if args.coadd:
            model, config, metadata = load_model(model_path)
            refiner = make_refiner(args, config, training_zrange(config, metadata), metadata)
        else:
            description, config = read_model_description(model_path)
            model, metadata = None, description.get('metadata')
        if args.n_thresh is not None and args.n_thresh > len(config.lines):
            raise InputFileError(model_path, f'--n-thresh {args.n_thresh} exceeds the '
                                 f'{len(config.lines)} lines of this model')
        pred, truth, extras = collect(args, config, model, refiner)
        c_thresh, n_thresh = extras['selection']
        regimes = evaluate_predictions(truth, pred, float('nan') if c_thresh is None else c_thresh)
        metrics = {'regimes': regimes,
                   'inputs': {'files': list(args.coadd or args.catalog), 'truth': list(args.truth),
                              'model': os.path.abspath(model_path), 'c_thresh': c_thresh,
                              'nexcluded_bad_fibres': extras['nexcluded'],
                              'n_thresh': n_thresh}}
        metrics['inputs']['simulator'] = compare_simulators(
            extras['simhash'], (metadata or {}).get('training', {}).get('simulator_hash'))
        if extras['refine'] is not None:                # catalogue input: its header
            metrics['inputs']['refine'] = extras['refine']
        if refiner is not None:
            metrics['inputs']['refine'] = {'template': os.path.basename(refiner.source),
                                           'prior_weight': refiner.prior_weight,
                                           'window': refiner.window, 'step': refiner.dlogz,
                                           'noise': ('pipeline' if refiner.noise is None
                                                     else 'calibrated'),
                                           'archetypes': (os.path.basename(refiner.arch_source)
                                                          if refiner.archetypes is not None
                                                          else None),
                                           'arch_skip': (refiner.arch_skip
                                                         if refiner.archetypes is not None
                                                         else None)}
        if args.redrock:
            metrics['redrock'] = redrock_metrics(args.redrock, truth, extras['targetid'])
    except InputFileError as err:
        log.error('%s', err)
        return 1
    os.makedirs(args.outdir, exist_ok=True)
    write_json(os.path.join(args.outdir, OUTPUTS['metrics']), metrics)
    write_plots(args, regimes, pred, truth, config, extras['first'])
    if args.record_as:
        record_in_model_card(args.model, args.record_as, metrics)
    for name in ('lowz', 'midz', 'highz'):
        res = regimes[name]
        if not res['nlbg']:
            log.info('%s: no true LBG in this regime (%d contaminants)', name, res['ncontaminant'])
            continue
        err = res['errors']
        log.info('%s: %d LBGs, %d contaminants; purity=efficiency score %s; |dz|<0.05 %s, '
                 'sigma_NMAD %s (Z_LBG) / %s (best line)', name, res['nlbg'], res['ncontaminant'],
                 _pm(res['pe_score'], err['pe_score']),
                 _pm(res['redshift']['frac_dz_lt_0p05'], err['redshift']['frac_dz_lt_0p05']),
                 _pm(res['redshift']['sigma_nmad'], err['redshift']['sigma_nmad'], '.2e'),
                 _fmt(res['redshift_bestline']['sigma_nmad'], '.2e'))
        if 'redshift_template' in res:
            tpl, etpl = res['redshift_template'], err['redshift_template']
            log.info('%s: template-refined Z_TPL: |dz|<0.05 %s, sigma_NMAD %s', name,
                     _pm(tpl['frac_dz_lt_0p05'], etpl['frac_dz_lt_0p05']),
                     _pm(tpl['sigma_nmad'], etpl['sigma_nmad'], '.2e'))
        for key, pulls in res.get('redshift_errors', {}).items():
            log.info('%s: %s of the right redshifts: pull NMAD %s, within 1 / 2 sigma %s / %s '
                     '(Gaussian: 1, 0.683 / 0.954)', name, key, _fmt(pulls['nmad_pull'], '.2f'),
                     _fmt(pulls['frac_within_1sigma'], '.3f'),
                     _fmt(pulls['frac_within_2sigma'], '.3f'))
        if 'reliable' in res:
            rel = res['reliable']
            log.info('%s: without SMALL_DELTA_CHI2 (DELTACHI2_TPL >= %g): efficiency %s, '
                     'purity %s, %s of the selected LBGs kept, |dz|<0.05 %s', name,
                     rel['min_deltachi2'], _fmt(rel['efficiency']), _fmt(rel['purity']),
                     _fmt(rel['kept']), _fmt(rel['redshift']['frac_dz_lt_0p05']))
    log.info('wrote %s', args.outdir)
    return 0


def _fmt(value, spec='.4f'):
    """Format a metric that may be None (undefined, e.g. no LBG in the regime)."""
    return 'n/a' if value is None else format(value, spec)


def _pm(value, error, spec='.4f'):
    """A metric and its standard error (``0.9130 +- 0.0063``), either may be None."""
    return _fmt(value, spec) if error is None else f'{_fmt(value, spec)} +- {format(error, spec)}'
