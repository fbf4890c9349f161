"""
lbgnet.evalinputs
=================

The inputs of ``desi_lbg_evaluate``: predictions over coadd files (the model run as the
afterburner runs it) or read from afterburner catalogues, each aligned with its mock truth
file, and the checks that they belong together.  File reading is in :mod:`lbgnet.io`;
the metrics are in :mod:`lbgnet.evaluate`.
"""
import os
from dataclasses import replace

import numpy as np
from desiutil.log import get_logger

from .io import InputFileError
from .io.evaluation import match_rows
from .io.targetid import unique_targetids

#: Per-object predictions the metrics use (``Z_TPL`` only with the template refinement).
PRED_KEYS = ('C_LBG', 'IS_LBG', 'Z_LBG', 'ZERR_LBG', 'Z_BESTLINE', 'Z_TPL', 'ZERR_TPL',
             'DELTACHI2_TPL', 'LBG_FLAG')

#: Refinement outputs, dropped when they do not cover the selection evaluated.
TEMPLATE_KEYS = ('Z_TPL', 'ZERR_TPL', 'DELTACHI2_TPL')


def predict_coadd(path, network, c_thresh, n_thresh, include_bad=False, refiner=None,
                  zrange=None, chunk_size=None):
    """Grid one coadd, run the network, post-process and refine the selected redshifts.

    The network runs over all the file's spectra, `chunk_size` at a time, as the
    afterburner's does (:func:`lbgnet.afterburner.predict_coadd`, same forward pass and
    batches): its outputs are then bit for bit those of a catalogue made with the
    afterburner's default ``--chunk-size`` and ``--batch-size`` (other sizes change the
    last bits: the batch composition changes the BLAS blocking).  Spectra
    without a valid pixel get the afterburner's blank outputs (NaN / False,
    :func:`lbgnet.afterburner.blank_empty`), and ``LBG_FLAG`` its bits (those known from
    the spectra and, with `zrange`, Z_OUT_OF_RANGE; with `refiner`, SMALL_DELTA_CHI2), so
    that both evaluation paths agree.

    Parameters
    ----------
    path : str
        Coadd file with a FIBERMAP.
    network : lbgnet.network.Network
    c_thresh : float or None
    n_thresh : int or None
        [the model's]
    include_bad : bool, optional
        Keep the spectra the metrics leave out (see `all_tid` below).
    refiner : lbgnet.refine.Refiner, optional
    zrange : (float, float), optional
    chunk_size : int, optional
        Spectra per call of the network [the afterburner's ``--chunk-size`` default].

    Returns
    -------
    targetid : numpy.ndarray
    res : dict
        :meth:`lbgnet.network.Network.catalog` output, with ``Z_TPL`` etc. when `refiner`
        is given (:func:`lbgnet.afterburner.refine_selected`), and ``LBG_FLAG``.
    X, conf, offset : numpy.ndarray
        Input and raw line-finder output (for the example figure; conf and offset are
        None for direct-regression networks).
    all_tid : numpy.ndarray
        TARGETIDs of all spectra, those left out included (dead fibre, not a science
        target or no valid pixel: :func:`lbgnet.io.evaluation.is_evaluated`; kept with
        `include_bad`).
    """
    from .afterburner import DEFAULT_CHUNK, blank_empty, refine_selected
    from .catalog import apply_model_range, apply_small_deltachi2
    from .io.evaluation import read_coadd_for_evaluation
    X, targetid, good, info, flags = read_coadd_for_evaluation(
        path, config=network.config, noise=None if refiner is None else refiner.noise)
    chunk_size = int(chunk_size or DEFAULT_CHUNK)
    blocks = [network.raw_outputs(X[start:start + chunk_size])
              for start in range(0, max(len(X), 1), chunk_size)]
    keep = np.ones_like(good) if include_bad else good
    raw = {key: np.concatenate([b[key] for b in blocks])[keep] for key in blocks[0]}
    all_tid = targetid
    X, targetid = X[keep], targetid[keep]
    res = network.catalog(raw, c_thresh, n_thresh)
    blank_empty(res, info.empty[keep])
    conf, offset = raw.get('conf'), raw.get('offset')     # None for direct networks
    flags = flags[keep]
    if refiner is not None:
        rows = replace(info, flux=info.flux[keep], ivar=info.ivar[keep],
                       noise_ivar=None if info.noise_ivar is None else info.noise_ivar[keep])
        res.update(refine_selected(refiner, rows, res, conf))
        flags = apply_small_deltachi2(flags, res['IS_LBG'], res['DELTACHI2_TPL'],
                                      res['ZERR_TPL'])
    if zrange is not None:
        flags = apply_model_range(flags, (res['Z_LBG'], res.get('Z_TPL', res['Z_LBG'])),
                                  zrange)
    res['LBG_FLAG'] = flags
    return targetid, res, X, conf, offset, all_tid


def check_same_mock(path, other_path, what):
    """Raise when two files carry different mock ``TRUTHSUM`` keywords (both present).

    Parameters
    ----------
    path : str
        The file checked (e.g. a Redrock file).
    other_path : str
        The file it must belong to (its coadd).
    what : str
        What `path` is, for the message.
    """
    from .io.mock import mock_keywords
    mine = mock_keywords(path).get('TRUTHSUM')
    theirs = mock_keywords(other_path).get('TRUTHSUM')
    if mine is not None and theirs is not None and mine != theirs:
        raise InputFileError(path, f'{what} of another mock run than '
                             f'{os.path.basename(other_path)} (TRUTHSUM {mine}, the coadd '
                             f'has {theirs})')


def redrock_metrics(rr_paths, coadd_paths, truth_rows, tid_per_file):
    """Redshift accuracy of Redrock's Z on the true LBGs (all of them, no selection).

    Each Redrock file must belong to its coadd (same mock ``TRUTHSUM`` when both have one).
    Returns JSON-ready values (undefined → None).
    """
    from .evaluate import LBG_CLASS, jsonable, redshift_metrics
    from .io import read_redrock
    z_rr = []
    for path, coadd, tid in zip(rr_paths, coadd_paths, tid_per_file):
        check_same_mock(path, coadd, 'Redrock file')
        rr = read_redrock(path, read_fibermap=False)
        z_rr.append(np.asarray(rr.redshifts['Z'])[match_rows(rr.targetid, tid, path)])
    z_rr = np.concatenate(z_rr)
    is_lbg = np.asarray(truth_rows['CLASS']).astype(str) == LBG_CLASS
    z_true = np.asarray(truth_rows['Z_TRUE'], dtype=np.float64)
    return jsonable(redshift_metrics(z_true[is_lbg], z_rr[is_lbg]))


def check_distinct_inputs(paths):
    """Raise when one file is given twice (its objects would be counted twice)."""
    seen = {}
    for path in paths:
        real = os.path.realpath(path)
        if real in seen:
            raise InputFileError(path, f'given twice (also as {seen[real]}): its objects '
                                 'would be counted twice')
        seen[real] = path


def truth_keys(truth, simulated):
    """The keys :func:`check_not_a_copy` compares: ``(kind, checksum)`` pairs.

    ``'ids'``: :func:`lbgnet.io.mock.truth_checksum` (TARGETID, CLASS, Z_TRUE: a copy, or
    the same objects observed again).  ``'objects'``, for a `simulated` table (a mock
    truth file, with ``SIMHASH``: :func:`is_simulated`) with at least two distinct
    redshifts: the same without the TARGETIDs, i.e. the same simulated objects under other
    TARGETIDs, which a mock run again with the same ``--seed`` gives (its files ``k`` hold
    the same spectra in other healpix pixels).  Hand-written truth tables, whose few rounded
    redshifts two different sets may share, have no such key.  An empty table has none.
    """
    from .io.mock import truth_checksum
    if not len(truth):
        return []
    keys = [('ids', truth_checksum(truth))]
    if simulated and np.unique(np.asarray(truth['Z_TRUE'], dtype=np.float64)).size >= 2:
        keys.append(('objects', truth_checksum(truth, targetids=False)))
    return keys


#: What each kind of :func:`truth_keys` match means.
SAME_CONTENT = {
    'ids': 'same objects (TARGETID, CLASS, Z_TRUE) as {other} (a copy, or the same objects '
           'observed again)',
    'objects': 'same simulated objects (CLASS, Z_TRUE row by row) as {other} under other '
               'TARGETIDs (mocks made with the same --seed repeat their spectra)'}


def is_simulated(path):
    """Whether the truth file `path` was written by the simulator (``SIMHASH``)."""
    from .io.mock import mock_keywords
    return 'SIMHASH' in mock_keywords(path, ('SIMHASH',))


def check_not_a_copy(truth, path, seen, simulated=None):
    """Raise when a truth table has the content of one seen before (a copied file, the
    same simulated objects at another depth, or under other TARGETIDs: :func:`truth_keys`).

    Parameters
    ----------
    truth : astropy.table.Table
    path : str
    seen : dict
        :func:`truth_keys` checksum -> path of the tables seen so far; updated.
    simulated : bool, optional
        Whether it is a mock truth table [:func:`is_simulated` of `path`].

    Raises
    ------
    InputFileError
        Naming both files: the objects of a copy would be counted twice (and, between
        training and validation sets, the thresholds chosen on training spectra).
    """
    keys = truth_keys(truth, is_simulated(path) if simulated is None else simulated)
    for kind, key in keys:
        if key in seen:
            raise InputFileError(path, SAME_CONTENT[kind].format(other=seen[key]) +
                                 ': they would be counted twice; evaluate them apart')
    for _, key in keys:
        seen[key] = path


def read_catalog_input(path, names, include_bad, c_thresh):
    """Predictions of one afterburner catalogue, with its selection and refinement.

    Parameters
    ----------
    path : str
    names : sequence of str
        Line names of the model.
    include_bad : bool
        Keep rows flagged NODATA / NOT_SCIENCE / NOT_IN_COADD.
    c_thresh : float or None
        Threshold to select with instead of the catalogue's CTHRESH.

    Returns
    -------
    res : dict of numpy.ndarray
        Rows kept, ``IS_LBG`` re-selected at `c_thresh` when given.
    all_tid : numpy.ndarray
        TARGETIDs of all rows (before the bad-fibre cut).
    made : dict
        From the header: ``selection`` (CTHRESH, NTHRESH), ``refine`` (the refinement,
        None without), ``model_sha256``, ``model`` and ``engine`` (``LBGMSHA``,
        ``LBGMODEL``, ``LBGENGIN``; None where absent).
    """
    from .io.evaluation import (catalog_model, catalog_refinement, catalog_thresholds,
                                read_prediction_catalog)
    res = read_prediction_catalog(path, names)
    made_with = catalog_thresholds(path)
    made = {'selection': made_with, 'refine': catalog_refinement(path)}
    made['model_sha256'], made['model'], made['engine'] = catalog_model(path)
    all_tid = res['TARGETID'] = unique_targetids(res['TARGETID'], path)   # floats collide
    keep = np.ones(len(all_tid), bool) if include_bad else res['GOOD']
    if not include_bad and 'LBG_FLAG' not in res:
        get_logger().warning('%s: no LBG_FLAG column: dead fibres and sky or stuck positioners '
                             'cannot be left out as from a coadd (all %d rows evaluated)',
                             path, len(all_tid))
    res = {k: v[keep] for k, v in res.items()}
    if c_thresh is not None:
        res['IS_LBG'] = res['C_LBG'] > c_thresh
        # a refined catalogue that selected nothing at its CTHRESH has no finite Z_TPL,
        # yet is refined: its header says so
        refined = made['refine'] is not None or np.isfinite(res.get('Z_TPL', np.nan)).any()
        if (any(k in res for k in TEMPLATE_KEYS) and made_with[0] is not None
                and c_thresh < made_with[0] and refined):
            get_logger().warning('%s: refined only above its CTHRESH %g: no Z_TPL metrics at '
                                 '--c-thresh %g (evaluate its coadd for them)', path,
                                 made_with[0], c_thresh)
            for key in TEMPLATE_KEYS:
                res.pop(key, None)
    return res, all_tid, made


def check_truth_covered(truth_tid, all_tid, path, truth_path, what):
    """Every truth object must have a row in the coadd or catalogue `what` (a missing one
    would vanish silently from the metrics); raises :class:`lbgnet.io.InputFileError`."""
    present = np.isin(truth_tid, all_tid)
    if truth_tid.size and not present.any():
        raise InputFileError(path, f'none of the {truth_tid.size} TARGETIDs of '
                             f'{os.path.basename(truth_path)} is in this {what}: the truth of '
                             f'another file? (--truth lists one truth file per {what}, in the '
                             'same order)')
    if not present.all():
        raise InputFileError(path, f'{int(np.count_nonzero(~present))} TARGETID(s) of '
                             f'{os.path.basename(truth_path)} have no row in this {what} '
                             f'(a cut or filtered {what}?)')


def collect(args, config, network=None, refiner=None, zrange=None):
    """Predictions and aligned truth over all input files.

    `network` (:class:`lbgnet.network.Network`, for ``args.coadd``) runs on the coadds;
    `zrange` (the model's LBG redshift range) sets Z_OUT_OF_RANGE in the ``LBG_FLAG`` of
    coadd input as the afterburner does; catalogues carry their own ``LBG_FLAG``.

    Returns
    -------
    pred : dict of numpy.ndarray
    truth : dict of numpy.ndarray
        For a network of another target class (:func:`lbgnet.targets.target_class`) its
        CLASS is relabelled by :func:`lbgnet.targets.metric_truth`: that class is
        ``'LBG'``, the true LBGs ``'LBG*'``.
    extras : dict
        TARGETIDs per file, the number of spectra left out (dead fibres), the ``SIMHASH``
        of each truth file (None when absent), the selection and, for coadd input, the
        arrays of the first file with spectra for the example plot (``first``, with its
        offset in the concatenated rows, ``first_start``); for catalogue input, their
        ``network`` (LBGMSHA, LBGMODEL of the first) and ``engine``
        (:func:`_one_or_all` of their LBGENGIN).

    Raises
    ------
    InputFileError
        Also when a truth file does not belong to its coadd (``TRUTHSUM``), a file is
        given twice or a truth file is a copy of another (:func:`check_not_a_copy`), a
        coadd or catalogue has duplicated TARGETIDs or lacks truth objects, or
        catalogues were made with different settings.
    """
    from .io.labelled import check_labels
    from .io.mock import check_truth_matches, mock_keywords, read_truth
    from .progress import Progress
    from .targets import metric_truth, target_class
    inputs = args.coadd or args.catalog
    check_distinct_inputs(inputs)
    check_distinct_inputs(args.truth)        # also catches copies of one coadd / catalogue
    preds, truths, tids, nexcluded, simhash = [], [], [], 0, {}
    first, first_start, nrows = None, 0, 0
    header_selection, refinement, made_by = None, None, (None, None)
    contents, engines = {}, set()
    progress = Progress(len(inputs), unit='files evaluated', min_interval=10.0)
    for i, (path, truth_path) in enumerate(progress.iterate(list(zip(inputs, args.truth)))):
        truth = read_truth(truth_path)
        # the truth's own problems first: the TRUTHSUM comparison below would blame them
        # on truth and coadd from different mock runs
        unique_targetids(truth['TARGETID'], truth_path)
        check_labels(truth, truth_path, target_class(config))
        check_not_a_copy(truth, truth_path, contents)
        if args.coadd:
            tid, res, X, conf, offset, all_tid = predict_coadd(
                path, network, args.c_thresh, args.n_thresh, args.include_bad_fibres,
                refiner, zrange)
            if first is None and len(tid):
                first, first_start = (X, conf, offset, tid), nrows
        else:
            res, all_tid, made = read_catalog_input(
                path, config.lines.names, args.include_bad_fibres, args.c_thresh)
            if i == 0:
                header_selection, refinement = made['selection'], made['refine']
                made_by = (made['model_sha256'], made['model'])
            elif made['model_sha256'] != made_by[0]:
                raise InputFileError(path, f'made by the network {made["model"]} (LBGMSHA '
                                     f'{_short(made["model_sha256"])}), the first catalogue by '
                                     f'{made_by[1]} ({_short(made_by[0])}): evaluate them apart')
            elif made['selection'] != header_selection:
                raise InputFileError(path, f'made with CTHRESH, NTHRESH = {made["selection"]}, '
                                     f'the first catalogue with {header_selection}: evaluate '
                                     'them apart')
            elif made['refine'] != refinement:
                raise InputFileError(path, f'refined with {made["refine"]}, the first catalogue '
                                     f'with {refinement}: evaluate them apart')
            engines.add(made['engine'])
            tid = res['TARGETID']
        check_truth_covered(np.asarray(truth['TARGETID']), all_tid, path, truth_path,
                             'coadd' if args.coadd else 'catalogue')
        nexcluded += all_tid.size - len(tid)
        # rows first: a truth file that lacks some TARGETIDs or repeats them is named as
        # such, not as the truth of another mock run (its TRUTHSUM differs too)
        rows = match_rows(np.asarray(truth['TARGETID']), tid, truth_path)
        check_truth_matches(path, truth_path, truth)
        simhash[truth_path] = mock_keywords(truth_path).get('SIMHASH')
        truths.append({k: np.asarray(truth[k])[rows] for k in ('CLASS', 'Z_TRUE', 'RMAG')})
        preds.append({k: np.asarray(res[k]) for k in PRED_KEYS if k in res})
        tids.append(tid)
        nrows += len(tid)
    pred = {k: np.concatenate([p[k] for p in preds]) for k in preds[0]
            if all(k in p for p in preds)}
    # refinement metrics whenever the refinement ran, even on no selected object (then of
    # none); a catalogue tells by its header, or by refined values (older headers)
    if 'Z_TPL' in pred and not (refiner is not None if args.coadd else
                                refinement is not None or np.isfinite(pred['Z_TPL']).any()):
        for key in TEMPLATE_KEYS:    # catalogues made with --no-refine: nothing to report
            pred.pop(key, None)
    # a network trained to find another class (a QSO finder) is scored on that class,
    # as its training scored it: the metrics count class 'LBG' as positive
    truth = metric_truth({k: np.concatenate([t[k] for t in truths]) for k in truths[0]}, config)
    if args.coadd:
        selection = (config.selection.c_thresh if args.c_thresh is None else args.c_thresh,
                     config.selection.n_thresh if args.n_thresh is None else args.n_thresh)
    else:
        selection = (header_selection if args.c_thresh is None
                     else (args.c_thresh, header_selection[1]))
    return pred, truth, {'targetid': tids, 'first': first, 'first_start': first_start,
                         'nexcluded': nexcluded, 'simhash': simhash, 'selection': selection,
                         'refine': refinement, 'network': made_by,
                         'engine': _one_or_all(engines) if args.catalog else None}


def _one_or_all(engines):
    """The engine of the catalogues (header ``LBGENGIN``, None where absent): one value
    when they agree, else the sorted list of their engines."""
    values = sorted(engines, key=str)
    return values[0] if len(values) == 1 else values


def _short(sha):
    """The first 12 hex digits of a SHA-256 for messages ('none' when absent)."""
    return 'none' if sha is None else sha[:12]


def trained_on(metadata):
    """The files a model was validated or trained on, by SHA-256.

    Parameters
    ----------
    metadata : dict or None
        The model card's metadata.

    Returns
    -------
    dict
        SHA-256 → ``'validation'`` or ``'training'`` (``training.validation_sha256`` and
        ``training.labelled.files[].coadd_sha256``); empty for a card that records none.
    """
    training = (metadata or {}).get('training') or {}
    known = {sha: 'validation' for sha in training.get('validation_sha256') or ()}
    for record in ((training.get('labelled') or {}).get('files') or ()):
        if record.get('coadd_sha256'):
            known[record['coadd_sha256']] = 'training'
    return known


def check_held_out(coadds, metadata):
    """Refuse coadds the model was trained or validated on, for ``--record-as``, which
    records held-out tests: the card names its validation files (``validation_sha256``)
    and its labelled training files (``labelled.files[].coadd_sha256``) by their SHA-256,
    so a copy under another name is found too.

    Parameters
    ----------
    coadds : sequence of str
    metadata : dict or None
        The model card's metadata.

    Raises
    ------
    InputFileError
        Naming the first such coadd and what it was for the model.
    """
    from .io.catalog import file_sha256
    known = trained_on(metadata)
    if not known:
        return
    for path in coadds:
        if not os.path.isfile(path):            # the reader's one line, before the hash
            raise InputFileError(path, 'no such file' if not os.path.exists(path)
                                 else 'not a file')
        what = known.get(file_sha256(path))
        if what is not None:
            raise InputFileError(path, f'is one of the model\'s {what} files (the SHA-256 its '
                                 'card records): --record-as records held-out tests only; '
                                 'evaluate it without --record-as')


def check_catalogs_held_out(catalogs, metadata):
    """:func:`check_held_out` for afterburner catalogues: the coadd each was made from
    (header ``INCOADD``) is hashed.  A catalogue whose coadd is not found cannot be shown
    to be a held-out test and is refused too (only when the card records its validation
    or training files; a card without records checks nothing, as for coadds).

    Parameters
    ----------
    catalogs : sequence of str
        ``lbg_cnn-*.fits`` files.
    metadata : dict or None
        The model card's metadata.

    Raises
    ------
    InputFileError
        Naming the catalogue, its coadd and why.
    """
    from .io.catalog import file_sha256
    from .io.evaluation import catalog_coadd
    known = trained_on(metadata)
    if not known:
        return
    for path in catalogs:
        coadd = catalog_coadd(path)
        if coadd is None or not os.path.isfile(coadd):
            where = (f'its coadd {coadd} (INCOADD) is not found' if coadd is not None
                     else 'it names no coadd (no INCOADD)')
            raise InputFileError(path, f'--record-as: {where}, so it cannot be checked '
                                 'against the model\'s validation and training files; '
                                 'evaluate the coadd itself')
        what = known.get(file_sha256(coadd))
        if what is not None:
            raise InputFileError(path, f'made from {coadd}, one of the model\'s {what} files '
                                 '(the SHA-256 its card records): --record-as records held-out '
                                 'tests only; evaluate it without --record-as')


def check_catalog_network(network, model_path, model_sha, record):
    """Catalogues made by another network than ``--model``.

    The metrics of a catalogue input are the catalogue's own, but the model names the line
    columns, the training simulator compared with the test files and, with ``--record-as``,
    the card the metrics are written into. Recording another network's metrics in a model
    card is refused; otherwise a warning names both networks.

    Parameters
    ----------
    network : tuple
        (``LBGMSHA``, ``LBGMODEL``) of the catalogues (None, None for catalogues without).
    model_path : str
    model_sha : str or None
        ``weights_sha256`` of the model card.
    record : str or None
        ``--record-as``.

    Raises
    ------
    InputFileError
        With `record`, when the catalogues do not say they were made by this model.
    """
    sha, made_by = network
    if sha is not None and model_sha is not None and sha == str(model_sha).lower():
        return
    if sha is None:
        problem = 'the catalogues do not say which network made them (no LBGMSHA)'
    else:
        problem = (f'the catalogues were made by {made_by} (LBGMSHA {_short(sha)}), not by this '
                   f'model ({_short(model_sha)})')
    if record:
        raise InputFileError(model_path, f'{problem}: --record-as would record their metrics '
                             'in this model card (evaluate with --model set to their network)')
    get_logger().warning('%s: %s: its line names and training simulator are used, the '
                         'metrics are the catalogues\'', model_path, problem)


def compare_simulators(file_hashes, model_hash):
    """Which simulator made the test files, against the one the model was trained on.

    Logs a warning when a truth file's ``SIMHASH`` differs from the model card's
    ``training.simulator_hash``: metrics measured on files of another simulator version
    are not comparable with the model card's (regenerate the test files with the model's
    simulator, or, when the current code no longer makes it, as for the shipped model,
    retrain the model).

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
                                 'with its model card; regenerate the test files with the '
                                 'simulator the model was trained on, or retrain the model '
                                 'on the test files\' simulator',
                                 ', '.join(other), ', '.join(h for h in found if h != model_hash),
                                 model_hash)
    return {'model': model_hash, 'files': found, 'match': match}
