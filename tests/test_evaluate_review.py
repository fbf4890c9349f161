"""desi_lbg_evaluate: defects found by a user-level review, on small hand-made files (each
test failed on the code it was written against)."""
import json
import os

import fitsio
import pytest
import numpy as np

from lbg_testdata import run_logged

#: DESI-like TARGETIDs (above 2**53: neighbours are equal in float64).
BASE_TID = 332206504612462592


def _truth(path, targetid, classes, z, rmag=None, header=None):
    """Write a truth file (primary header `header`, TRUTH HDU)."""
    n = len(targetid)
    data = np.zeros(n, dtype=[('TARGETID', 'i8'), ('CLASS', 'S6'), ('Z_TRUE', 'f8'),
                              ('RMAG', 'f4')])
    data['TARGETID'] = targetid
    data['CLASS'] = classes
    data['Z_TRUE'] = z
    data['RMAG'] = np.linspace(22.0, 24.5, n) if rmag is None else rmag
    fitsio.write(str(path), None, header=header, clobber=True)
    fitsio.write(str(path), data, extname='TRUTH')
    return str(path)


def _catalogue(path, columns, header=None, primary=None):
    """Write an LBG_CNN catalogue from a dict of columns."""
    names = list(columns)
    data = np.zeros(len(columns['TARGETID']),
                    dtype=[(k, np.asarray(columns[k]).dtype) for k in names])
    for k in names:
        data[k] = columns[k]
    fitsio.write(str(path), None, header=primary, clobber=True)
    fitsio.write(str(path), data, extname='LBG_CNN', header=header)
    return str(path)


def _ten_objects():
    """Six LBGs (two per regime) and four contaminants, with a truth aligned by row."""
    tid = BASE_TID + np.arange(10, dtype=np.int64)
    classes = np.array(['LBG'] * 6 + ['QSO', 'GALAXY', 'STAR', 'QSO'])
    z = np.array([2.2, 2.4, 2.9, 3.1, 3.6, 4.0, 2.0, 0.8, 0.0, 1.5])
    return tid, classes, z


def test_refined_catalogue_without_selection_reports_no_template_metrics_below_cthresh(
        tmp_path, caplog):
    """A refined catalogue holds Z_TPL only for its own selection (C_LBG > CTHRESH): with
    a --c-thresh below CTHRESH the template metrics are left out (doc/model.rst).  When
    the catalogue selected nothing at its CTHRESH (no finite Z_TPL), they were reported
    anyway: ``redshift_template`` was the CNN's Z_LBG under the template's name and
    ``reliable`` said no selected LBG had a reliable redshift (efficiency 0)."""
    from lbgnet.scripts.lbg_evaluate import main
    tid, classes, z = _ten_objects()
    truth = _truth(tmp_path / 'truth.fits', tid, classes, z)
    c_lbg = np.float32([0.8, 0.7, 0.85, 0.6, 0.75, 0.8, 0.3, 0.1, 0.05, 0.55])
    nan = np.full(10, np.nan)
    cat = _catalogue(tmp_path / 'lbg_cnn-refined.fits',
                     {'TARGETID': tid, 'C_LBG': c_lbg, 'IS_LBG': np.zeros(10, bool),
                      'Z_LBG': z + 1e-3, 'ZERR_LBG': np.full(10, 1e-3), 'Z_TPL': nan,
                      'ZERR_TPL': nan, 'DELTACHI2_TPL': nan,
                      'LBG_FLAG': np.zeros(10, np.int32)},
                     header={'CTHRESH': 0.9, 'NTHRESH': 3, 'REFINE': True, 'REFWGT': 1.0,
                             'REFWIN': 0.1, 'REFSTEP': 2e-4,
                             'REFTEMPL': 'rrtemplate-GALAXY-LBG-v0.2.fits'})
    out = tmp_path / 'out'
    rc, _ = run_logged(main, caplog, '--catalog', cat, '--truth', truth, '--outdir', str(out),
                       '--c-thresh', '0.5')
    assert rc == 0
    regimes = json.loads((out / 'metrics.json').read_text())['regimes']
    assert regimes['all']['efficiency'] == 1.0           # six LBGs selected at 0.5
    assert 'redshift_template' not in regimes['all'], regimes['all'].get('redshift_template')
    assert 'reliable' not in regimes['all']


def test_catalogue_with_float_targetid_is_not_called_duplicated(tmp_path, caplog):
    """A catalogue whose TARGETID column was written as float (DESI ids above 2**53) gets
    the integer-column message of :func:`lbgnet.io.targetid.as_targetids`, naming the
    catalogue; it was refused as having 'duplicated TARGETIDs' (neighbouring ids are
    equal in float64), the very message as_targetids exists to avoid."""
    from lbgnet.scripts.lbg_evaluate import main
    tid, classes, z = _ten_objects()
    truth = _truth(tmp_path / 'truth.fits', tid, classes, z)
    c_lbg = np.float32([0.95] * 6 + [0.1] * 4)
    cat = _catalogue(tmp_path / 'lbg_cnn-float.fits',
                     {'TARGETID': tid.astype(np.float64), 'C_LBG': c_lbg,
                      'IS_LBG': c_lbg > 0.5, 'Z_LBG': z, 'LBG_FLAG': np.zeros(10, np.int32)},
                     header={'CTHRESH': 0.5, 'NTHRESH': 3})
    rc, log = run_logged(main, caplog, '--catalog', cat, '--truth', truth, '--outdir',
                         str(tmp_path / 'out'))
    assert rc == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == 'ERROR']
    assert len(errors) == 1 and errors[0].startswith(cat), errors
    assert 'duplicated' not in errors[0] and 'integer' in errors[0], errors


def _evaluate_with_truth_rows(tmp_path, caplog, rows):
    """Evaluate a mock catalogue (with its TRUTHSUM) against the truth rows `rows` of
    :func:`_ten_objects`; return (status, log)."""
    from lbgnet.io.mock import truth_checksum
    from lbgnet.scripts.lbg_evaluate import main
    tid, classes, z = _ten_objects()
    truthsum = truth_checksum({'TARGETID': tid, 'CLASS': classes, 'Z_TRUE': z})
    truth = _truth(tmp_path / 'truth-edited.fits', tid[rows], classes[rows], z[rows],
                   header={'TRUTHSUM': truthsum})
    c_lbg = np.float32([0.95] * 6 + [0.1] * 4)
    cat = _catalogue(tmp_path / 'lbg_cnn-mock.fits',
                     {'TARGETID': tid, 'C_LBG': c_lbg, 'IS_LBG': c_lbg > 0.5, 'Z_LBG': z,
                      'LBG_FLAG': np.zeros(10, np.int32)},
                     header={'CTHRESH': 0.5, 'NTHRESH': 3}, primary={'TRUTHSUM': truthsum})
    return run_logged(main, caplog, '--catalog', cat, '--truth', truth, '--outdir',
                      str(tmp_path / 'out'))


def test_truth_with_duplicated_rows_is_called_duplicated_not_another_mock_run(tmp_path, caplog):
    """A truth file with a duplicated row is refused with 'duplicated TARGETIDs' when its
    catalogue carries no TRUTHSUM; when it does (every mock catalogue), the TRUTHSUM
    comparison ran first and said 'truth and coadd from different mock runs?', sending
    the user to look for another mock run instead of the duplicated row."""
    rc, log = _evaluate_with_truth_rows(tmp_path, caplog, np.r_[np.arange(10), 3])
    assert rc == 1
    assert 'duplicated TARGETIDs' in log, log
    assert 'different mock runs' not in log


def test_an_interrupted_publication_leaves_no_earlier_metrics_beside_new_figures(
        tmp_path, monkeypatch):
    """publish moves the figures, then metrics.json: killed between two moves, the earlier
    run's metrics.json stayed beside the new figures and described them wrongly; it is
    now removed first."""
    import os
    import pytest
    import lbgnet.scripts.lbg_evaluate as script
    stage, outdir = tmp_path / 'stage', tmp_path / 'out'
    stage.mkdir()
    outdir.mkdir()
    written = ['metrics', 'pe', 'z']
    for key in written:
        (stage / script.OUTPUTS[key]).write_text('new')
        (outdir / script.OUTPUTS[key]).write_text('old')
    (outdir / script.OUTPUTS['pulls']).write_text('old')      # not made by this run
    real, moves = os.replace, []

    def killed(src, dst):
        if moves:
            raise KeyboardInterrupt
        moves.append(dst)
        real(src, dst)
    monkeypatch.setattr(script.os, 'replace', killed)
    with pytest.raises(KeyboardInterrupt):
        script.publish(str(stage), str(outdir), written)
    left = {p.name: p.read_text() for p in outdir.iterdir()}
    assert 'metrics.json' not in left and script.OUTPUTS['pulls'] not in left
    assert sorted(left.values()) == ['new', 'old']        # one figure moved, one not yet
    monkeypatch.undo()
    for key in written:
        (stage / script.OUTPUTS[key]).write_text('new')
    script.publish(str(stage), str(outdir), written)
    assert {p.name: p.read_text() for p in outdir.iterdir()} == {
        script.OUTPUTS[k]: 'new' for k in written}


# review 2026-12-05 (sixteenth session): edge cases of the metrics


def test_pe_threshold_is_finite_when_unscored_rows_rank_below_the_cut():
    """Rows without C_LBG (NaN, ranked as -inf) below the N_LBG-th score made the
    threshold -inf (null in the JSON) although the score was defined; and the fallback
    1e-6 below a score of 300 rounds onto it in float32 (one object too few selected)."""
    from lbgnet.evaluate import pe_score
    is_true = np.array([1, 1, 0, 0, 1, 0], bool)
    score = np.array([np.nan, np.nan, np.nan, 0.2, 0.1, 0.0])
    value, thr = pe_score(is_true, score)
    assert value == 1 / 3 and np.isfinite(thr) and np.count_nonzero(score > thr) == 3
    big = np.float32([100, 200, 300])
    value, thr = pe_score(np.ones(3, bool), big)
    assert value == 1.0 and np.count_nonzero(big > thr) == 3


def test_bootstrap_gives_a_purity_error_without_true_lbgs():
    """Purity is defined (0) when contaminants are selected and no LBG is present; its
    error was null (the bootstrap returned NaN for everything without true LBGs)."""
    from lbgnet.evaluate import bootstrap_errors
    is_true = np.zeros(8, bool)
    selected = np.array([1, 0, 0, 1, 0, 0, 0, 0], bool)
    err = bootstrap_errors(is_true, selected, selected * 0.9, np.zeros(8),
                           {'redshift': np.zeros(8)}, nboot=50)
    assert err['purity'] == 0.0 and np.isnan(err['efficiency']) and np.isnan(err['pe_score'])


def test_depth_limited_reports_purity_at_the_threshold():
    from lbgnet.evaluate import depth_limited
    is_true = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.1, 0.2, 0.1, 0.95])
    rmag = np.array([22.5, 22.8, 22.6, 23.0, 24.5, 24.8])
    out = depth_limited(is_true, score > 0.5, score, rmag, np.ones(6), np.ones(6),
                        limits=(22.6, 23.0, 25.0))
    assert out['r<=23']['purity'] == 1.0 and out['r<=25']['purity'] == 2 / 3
    only_contaminants = depth_limited(~is_true, score > 0.5, score, rmag, np.ones(6),
                                      np.ones(6), limits=(22.5,))
    assert only_contaminants['r<=22.5']['purity'] == 0.0


def _ten_stars():
    """The metrics of a test of ten stars alone, three of them selected at 0.7."""
    from lbgnet.evaluate import evaluate_predictions
    n = 10
    c_lbg = np.linspace(0.0, 0.95, n)
    pred = {'C_LBG': c_lbg, 'IS_LBG': c_lbg > 0.7, 'Z_LBG': np.full(n, 2.5),
            'Z_BESTLINE': np.full(n, 2.5)}
    truth = {'CLASS': np.array(['STAR'] * n), 'Z_TRUE': np.zeros(n), 'RMAG': np.full(n, 22.0)}
    return n, evaluate_predictions(truth, pred, 0.7)


def test_contaminant_only_test_is_recorded_and_drawn(tmp_path, caplog, monkeypatch):
    """A held-out test of contaminants alone (e.g. stars) recorded only its inputs in the
    model card, logged nothing of what was selected, and drew an empty figure (with
    matplotlib's 'No artists with labels' warning)."""
    import warnings
    from lbgnet import plots
    from lbgnet.scripts.lbg_evaluate import summarise
    n, regimes = _ten_stars()
    card = summarise({'inputs': {'files': ['/a/lbg_cnn-x.fits'], 'truth': ['/a/truth-x.fits']},
                      'regimes': regimes})
    assert card['all']['nlbg'] == 0 and card['all']['ncontaminant'] == n
    assert card['all']['selected_fraction'] == {'STAR': 0.3}
    assert card['all']['purity'] == 0.0 and 'lowz' not in card
    figures = []
    monkeypatch.setattr(plots, 'save_png', lambda fig, path: figures.append(fig) or path)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        plots.plot_purity_efficiency(regimes, 'pe.png')
    ax = figures[0].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any('contaminants selected' in label for label in labels), labels
    line = next(l for l in ax.lines if 'contaminants' in l.get_label())
    assert np.interp(0.5, line.get_xdata(), line.get_ydata()) == pytest.approx(0.5, abs=0.11)
    assert ax.get_ylim()[0] == 0.0                   # the whole fraction in view


def test_truth_with_a_missing_row_is_named_not_another_mock_run(tmp_path, caplog):
    """A truth file without one of the catalogue's TARGETIDs is refused naming the missing
    TARGETIDs; with the mock's TRUTHSUM it was 'different mock runs?'."""
    rc, log = _evaluate_with_truth_rows(tmp_path, caplog, np.arange(10) != 4)
    assert rc == 1
    assert 'different mock runs' not in log and 'not in this file' in log, log


def test_objects_without_a_magnitude_are_counted_in_a_warning(tmp_path, caplog):
    """Truth rows with a NaN RMAG vanished silently from by_depth and efficiency vs mag."""
    from lbgnet.scripts.lbg_evaluate import main
    tid, classes, z = _ten_objects()
    rmag = np.linspace(22.0, 24.5, 10)
    rmag[[1, 8]] = np.nan
    truth = _truth(tmp_path / 'truth.fits', tid, classes, z, rmag=rmag)
    c_lbg = np.float32([0.95] * 6 + [0.1] * 4)
    cat = _catalogue(tmp_path / 'lbg_cnn-x.fits',
                     {'TARGETID': tid, 'C_LBG': c_lbg, 'IS_LBG': c_lbg > 0.5, 'Z_LBG': z,
                      'LBG_FLAG': np.zeros(10, np.int32)},
                     header={'CTHRESH': 0.5, 'NTHRESH': 3})
    rc, log = run_logged(main, caplog, '--catalog', cat, '--truth', truth, '--outdir',
                         str(tmp_path / 'out'))
    assert rc == 0
    assert '2 object(s) of the truth without a finite RMAG are left out' in log
    regimes = json.loads((tmp_path / 'out' / 'metrics.json').read_text())['regimes']
    assert regimes['all']['by_depth']['r<=25']['nlbg'] == 5


def test_class_names_are_normalised_by_the_python_api():
    """evaluate_predictions given FITS-padded bytes or lower-case class names counted no
    LBG (the command line cleans its truth files first; a script calling the API did not)."""
    from lbgnet.evaluate import evaluate_predictions
    c_lbg = np.array([0.9, 0.8, 0.2, 0.1])
    pred = {'C_LBG': c_lbg, 'IS_LBG': c_lbg > 0.5, 'Z_LBG': np.full(4, 3.0),
            'Z_BESTLINE': np.full(4, 3.0)}
    for classes in (np.array([b'LBG ', b'LBG ', b'QSO ', b'STAR']),
                    np.array(['lbg', 'Lbg', 'qso', 'star'])):
        truth = {'CLASS': classes, 'Z_TRUE': np.array([3.0, 3.0, 2.0, 0.0]),
                 'RMAG': np.full(4, 23.0)}
        res = evaluate_predictions(truth, pred, 0.5)['all']
        assert res['nlbg'] == 2 and res['efficiency'] == 1.0 and set(res['confusion']) == {
            'LBG', 'QSO', 'STAR'}


def test_evaluating_a_checkpoint_warns_that_its_thresholds_are_untuned(tmp_path, caplog):
    """The afterburner warned that a training checkpoint's thresholds are its
    configuration's (not chosen on validation); desi_lbg_evaluate --coadd did not."""
    from lbg_testdata import save_tiny_model
    from lbgnet.scripts.lbg_evaluate import main
    from test_evaluate import _mock_files
    paths = _mock_files(tmp_path, nspec=12, seed=3)
    model = save_tiny_model(str(tmp_path / 'checkpoint.weights.h5'), metadata={
        'checkpoint': {'epoch': 4, 'monitor': 'val_score', 'value': 0.5}})
    common = ['--coadd', paths['coadd'], '--truth', paths['truth'], '--model', model,
              '--nexamples', '0', '--no-refine']
    rc, log = run_logged(main, caplog, *common, '--outdir', str(tmp_path / 'a'))
    assert rc == 0 and 'a training checkpoint (epoch 4, val_score 0.5), not a finished' in log
    rc, log = run_logged(main, caplog, *common, '--outdir', str(tmp_path / 'b'),
                         '--c-thresh', '0.5', '--n-thresh', '2')
    assert rc == 0 and 'training checkpoint' not in log


def test_evaluating_an_uncalibrated_model_warns_about_its_error_statistics(tmp_path, caplog):
    """The afterburner warned that a model's training left ZERR_LBG uncalibrated;
    desi_lbg_evaluate --coadd reported pulls of those raw errors without a word."""
    from lbg_testdata import save_tiny_model
    from lbgnet.scripts.lbg_evaluate import main
    from test_evaluate import _mock_files
    paths = _mock_files(tmp_path, nspec=12, seed=3)
    cal = {'ZERR_LBG': {'fit': None, 'reason': '1 right redshifts, need at least 40'},
           'ZERR_TPL': {'fit': {'scale': 1.5, 'floor': 2e-4}}}
    model = save_tiny_model(str(tmp_path / 'raw.weights.h5'), metadata={'error_calibration': cal})
    common = ['--coadd', paths['coadd'], '--truth', paths['truth'], '--model', model,
              '--nexamples', '0', '--no-refine']
    rc, log = run_logged(main, caplog, *common, '--outdir', str(tmp_path / 'a'))
    assert rc == 0, log
    assert ('its training left ZERR_LBG uncalibrated (1 right redshifts, need at least 40): '
            'the error statistics and pulls use the raw error') in log
    assert 'ZERR_TPL uncalibrated' not in log
    cal['ZERR_LBG']['fit'] = {'scale': 4.0, 'floor': 0.0}
    model = save_tiny_model(str(tmp_path / 'cal.weights.h5'), metadata={'error_calibration': cal})
    rc, log = run_logged(main, caplog, '--coadd', paths['coadd'], '--truth', paths['truth'],
                         '--model', model, '--nexamples', '0', '--no-refine',
                         '--outdir', str(tmp_path / 'b'))
    assert rc == 0 and 'uncalibrated' not in log


def test_chosen_threshold_stays_in_the_range_postprocess_accepts(config):
    """A validation set whose cut falls in a group tied at C_LBG = 0 (a saturated
    network, or LBGs only) gave c_thresh = -5e-7, which postprocess refuses: training
    ended in a traceback after all its epochs."""
    from lbgnet.predict import catalog_from_raw, choose_catalog_thresholds
    nl, nb = len(config.lines), config.nboxes
    rng = np.random.default_rng(0)
    conf_lbg = rng.uniform(0.2, 1, (10, nl, nb)).astype(np.float32)
    conf_lbg[9] = 0
    for conf, classes in ((np.zeros((20, nl, nb), np.float32), ['LBG'] * 10 + ['STAR'] * 10),
                          (conf_lbg, ['LBG'] * 10)):
        raw = {'conf': conf, 'offset': np.full(conf.shape, 0.5, np.float32)}
        truth = {'CLASS': np.array(classes), 'Z_TRUE': np.linspace(2.2, 3.8, len(classes))}
        c_thresh, n_thresh, table = choose_catalog_thresholds(raw, truth, config)
        assert c_thresh == 0.0 and all(0 <= row['c_thresh'] <= 1 for row in table.values())
        res = catalog_from_raw(raw, config, c_thresh=c_thresh, n_thresh=n_thresh, calibrate=False)
        assert np.sum(res['IS_LBG']) == np.sum(np.max(conf, axis=2).max(axis=1) > 0)


def test_operating_point_far_from_the_score_stays_in_view(monkeypatch):
    """At a threshold far above the purity = efficiency point (efficiency 0.37) the
    operating point's square was drawn outside the right panel, and the legend called the
    threshold 0.9999 "1.000" (which selects nothing)."""
    from lbgnet import plots
    figures = []
    monkeypatch.setattr(plots, 'save_png', lambda fig, path: figures.append(fig) or path)
    curve = {'threshold': [0.1, 0.5, 0.9999], 'purity': [0.8, 0.94, 1.0],
             'efficiency': [0.99, 0.94, 0.37]}
    metrics = {'all': {'pe_score': 0.94, 'pe_threshold': 0.5, 'c_thresh': 0.9999,
                       'efficiency': 0.37, 'purity': 1.0, 'curve': curve}}
    plots.plot_purity_efficiency(metrics, 'pe.png')
    left, right = figures[0].axes
    square = next(line for line in right.lines if line.get_marker() == 's')
    assert right.get_xlim()[0] < square.get_xdata()[0] < right.get_xlim()[1]
    labels = [t.get_text() for t in left.get_legend().get_texts()]
    assert 'selection threshold 0.9999' in labels, labels
    assert plots.threshold_text(0.912) == '0.912' and plots.threshold_text(1.0) == '1.000'
    assert plots.threshold_text(0.0004) == '0.0004'


def test_contaminant_only_figures_say_so(monkeypatch):
    """A test of contaminants alone: the y label named purity and efficiency for a curve
    of the fraction of contaminants selected, and the efficiency figure was two empty
    panels."""
    from lbgnet import plots
    regimes = _ten_stars()[1]
    figures = []
    monkeypatch.setattr(plots, 'save_png', lambda fig, path: figures.append(fig) or path)
    plots.plot_purity_efficiency(regimes, 'pe.png')
    assert figures[0].axes[0].get_ylabel() == 'fraction of the contaminants selected'
    plots.plot_efficiency_bins(regimes, 'eff.png')
    for ax in figures[1].axes:
        assert [t.get_text() for t in ax.texts] == ['no true LBG in the test']


def test_stopped_evaluation_leaves_no_directory_it_made(tmp_path, monkeypatch):
    """Stopped by a signal (SIGTERM from Slurm: :class:`lbgnet.io.atomic.Terminated`)
    before it wrote anything, it left the --outdir it had created, empty; a failed one
    removed it.  The stop still ends the command (the exception goes on)."""
    from lbgnet.io.atomic import Terminated
    import lbgnet.scripts.lbg_evaluate as script

    def stopped(*args):
        raise Terminated(143)
    monkeypatch.setattr(script, 'evaluate_into', stopped)
    with pytest.raises(Terminated):
        script.main(['--coadd', 'c.fits', '--truth', 't.fits',
                     '--outdir', str(tmp_path / 'out' / 'a')])
    assert not (tmp_path / 'out').exists()
    kept = tmp_path / 'kept'                 # a directory that was there stays
    kept.mkdir()
    with pytest.raises(Terminated):
        script.main(['--coadd', 'c.fits', '--truth', 't.fits', '--outdir', str(kept)])
    assert kept.is_dir()


def test_same_simulated_objects_under_other_targetids_are_one_test(tmp_path):
    """Two test files of the same simulated objects under other TARGETIDs (mocks made
    with the same --seed) would count every object twice: refused as a copy is (they
    passed, as their truth checksum holds the TARGETIDs)."""
    from astropy.table import Table
    from lbgnet.evalinputs import check_not_a_copy
    from lbgnet.io import InputFileError
    seen = {}
    z = [2.5, 3.1, 0.4]
    check_not_a_copy(Table({'TARGETID': [1, 2, 3], 'CLASS': ['LBG', 'LBG', 'GALAXY'],
                            'Z_TRUE': z}), 'a.fits', seen, simulated=True)
    with pytest.raises(InputFileError) as err:
        check_not_a_copy(Table({'TARGETID': [7, 8, 9], 'CLASS': ['LBG', 'LBG', 'GALAXY'],
                                'Z_TRUE': z}), 'b.fits', seen, simulated=True)
    assert str(err.value).startswith('b.fits: same simulated objects (CLASS, Z_TRUE row by '
                                     'row) as a.fits under other TARGETIDs')
    check_not_a_copy(Table({'TARGETID': [7, 8, 9], 'CLASS': ['LBG', 'LBG', 'GALAXY'],
                            'Z_TRUE': [2.5, 3.1, 0.41]}), 'c.fits', seen,
                     simulated=True)                               # other objects
    # hand-written truth tables (no SIMHASH): two small sets may share rounded redshifts
    hand = {}
    for name, ids in (('h1.fits', [101, 102, 103]), ('h2.fits', [201, 202, 203])):
        check_not_a_copy(Table({'TARGETID': ids, 'CLASS': ['LBG', 'GALAXY', 'LBG'],
                                'Z_TRUE': [3.0, 0.5, 2.5]}), name, hand, simulated=False)


def test_record_as_refuses_the_models_own_validation_or_training_files(tmp_path, caplog):
    """--record-as records held-out tests in the model card: a coadd the card names as a
    validation or labelled training file (by SHA-256, so also a copy under another name)
    is refused before the work, and the card is left as it was; it was recorded as a
    held-out score without a word.  Without --record-as it is evaluated."""
    import shutil
    from test_evaluate import _mock_files
    from lbgnet.io.catalog import file_sha256
    from lbgnet.io.modelfile import read_model_description, save_model
    from lbgnet.scripts.lbg_evaluate import main
    from lbg_testdata import save_tiny_model
    paths = _mock_files(tmp_path, nspec=12, seed=21)
    copy = tmp_path / 'copy' / 'coadd-copy.fits'
    copy.parent.mkdir()
    shutil.copy(paths['coadd'], copy)
    sha = file_sha256(paths['coadd'])
    for what, training in (('validation', {'validation_sha256': [sha]}),
                           ('training', {'labelled': {'files': [{'coadd': 'x',
                                                                 'coadd_sha256': sha}]}})):
        tiny = save_tiny_model(str(tmp_path / f'{what}.weights.h5'))
        description, config = read_model_description(tiny)
        from lbgnet.io.modelfile import load_model
        model, _, metadata = load_model(tiny)
        model_path = save_model(tiny, model, config, {**metadata, 'training': training})[1]
        before = (tmp_path / f'{what}.json').read_bytes()
        status, text = run_logged(main, caplog, '--coadd', str(copy), '--truth', paths['truth'],
                                  '--model', model_path, '--outdir', str(tmp_path / f'o-{what}'),
                                  '--nexamples', '0', '--no-refine', '--record-as', 'test')
        assert status == 1 and 'Traceback' not in text
        assert (f"{copy}: is one of the model's {what} files (the SHA-256 its card records): "
                '--record-as records held-out tests only') in text, text
        assert (tmp_path / f'{what}.json').read_bytes() == before
        assert not (tmp_path / f'o-{what}').exists()
    status, _ = run_logged(main, caplog, '--coadd', str(copy), '--truth', paths['truth'],
                           '--model', model_path, '--outdir', str(tmp_path / 'plain'),
                           '--nexamples', '0', '--no-refine')
    assert status == 0


def test_outdir_of_another_evaluation_is_told_by_its_files_not_their_names(tmp_path, caplog):
    """The same evaluation run again is replaced, also with the model named by its .json
    (it was refused as 'another model'); a test set of other files with the same names
    (mock file names depend on the seed alone) is another evaluation, refused without
    --overwrite (it replaced the results silently).  A missing coadd with --record-as is
    one line (it was a traceback from hashing it)."""
    from test_evaluate import _mock_files, _small_model
    from lbgnet.scripts.lbg_evaluate import main
    first = _mock_files(tmp_path / 'a', nspec=12, seed=21)
    second = _mock_files(tmp_path / 'b', nspec=12, seed=22)      # same file names
    assert os.path.basename(first['coadd']) == os.path.basename(second['coadd'])
    model = _small_model(tmp_path)
    out = str(tmp_path / 'out')
    common = ['--nexamples', '0', '--no-refine', '--outdir', out]
    assert main(['--coadd', first['coadd'], '--truth', first['truth'], '--model', model]
                + common) == 0
    assert main(['--coadd', first['coadd'], '--truth', first['truth'],
                 '--model', model.replace('.weights.h5', '.json')] + common) == 0
    status, text = run_logged(main, caplog, '--coadd', second['coadd'], '--truth',
                              second['truth'], '--model', model, *common)
    assert status == 1 and 'holds the results of another evaluation (the input files, the ' \
        'truth files differ' in text, text
    assert json.loads(open(os.path.join(out, 'metrics.json')).read())['inputs']['files'] == \
        [os.path.abspath(first['coadd'])]
    card = _small_model(tmp_path, name='carded')
    from lbgnet.io.modelfile import load_model, save_model
    keras_model, config, metadata = load_model(card)
    save_model(card, keras_model, config, {**metadata, 'training': {'validation_sha256': ['0']}})
    status, text = run_logged(main, caplog, '--coadd', str(tmp_path / 'nowhere.fits'),
                              '--truth', first['truth'], '--model', card, '--record-as', 't',
                              '--nexamples', '0', '--no-refine', '--outdir',
                              str(tmp_path / 'o2'))
    assert status == 1 and 'Traceback' not in text
    assert f"{tmp_path / 'nowhere.fits'}: no such file" in text, text


def test_record_as_checks_the_coadd_of_a_catalogue(tmp_path, caplog):
    """--record-as with --catalog: the coadd a catalogue was made from (INCOADD) is checked
    against the card's validation files as a coadd input is (a catalogue of the model's own
    validation coadd was recorded as a held-out test); a catalogue whose coadd is gone is
    refused too, since it cannot be checked.  The card is left as it was."""
    import shutil
    from test_evaluate import _mock_files
    from lbgnet.io.catalog import file_sha256
    from lbgnet.io.modelfile import load_model, save_model
    from lbgnet.scripts.lbg_afterburner import main as afterburner
    from lbgnet.scripts.lbg_evaluate import main
    from lbg_testdata import save_tiny_model
    paths = _mock_files(tmp_path, nspec=12, seed=21)
    tiny = save_tiny_model(str(tmp_path / 'card.weights.h5'))
    model, config, metadata = load_model(tiny)
    model_path = save_model(tiny, model, config, {**metadata, 'training': {
        'validation_sha256': [file_sha256(paths['coadd'])]}})[1]
    cat = str(tmp_path / 'lbg_cnn-val.fits')
    assert afterburner(['--coadd', paths['coadd'], '--redrock', paths['redrock'], '--output', cat,
                        '--priors', str(tmp_path / 'priors.fits'), '--model', model_path,
                        '--no-refine']) == 0
    before = (tmp_path / 'card.json').read_bytes()
    common = ['--catalog', cat, '--truth', paths['truth'], '--model', model_path,
              '--nexamples', '0']
    status, text = run_logged(main, caplog, *common, '--outdir', str(tmp_path / 'o1'),
                              '--record-as', 'test')
    assert status == 1 and 'Traceback' not in text
    assert (f"{cat}: made from {os.path.abspath(paths['coadd'])}, one of the model's "
            'validation files') in text, text
    assert not (tmp_path / 'o1').exists()
    # the coadd moved away: not checkable, refused with --record-as only
    shutil.move(paths['coadd'], str(tmp_path / 'moved.fits'))
    status, text = run_logged(main, caplog, *common, '--outdir', str(tmp_path / 'o2'),
                              '--record-as', 'test')
    assert status == 1 and 'Traceback' not in text
    assert (f"{cat}: --record-as: its coadd {os.path.abspath(paths['coadd'])} (INCOADD) is not "
            'found') in text, text
    assert (tmp_path / 'card.json').read_bytes() == before
    assert main(common + ['--outdir', str(tmp_path / 'o3')]) == 0


def test_a_stacked_catalogue_is_named_as_such(tmp_path):
    """desi_lbg_zcatalog's output given to --catalog was 'no LBG_CNN HDU: not an lbgnet
    afterburner catalogue', though lbgnet wrote it: it is named, with what to evaluate."""
    from astropy.table import Table
    from lbgnet.io import InputFileError
    from lbgnet.io.evaluation import read_prediction_catalog
    path = str(tmp_path / 'lbg-zcat.fits')
    Table({'TARGETID': [1, 2]}, meta={'EXTNAME': 'LBG_ZCAT'}).write(path)
    with pytest.raises(InputFileError) as err:
        read_prediction_catalog(path, ['LYA'])
    assert str(err.value) == (f'{path}: a stacked catalogue of desi_lbg_zcatalog (LBG_ZCAT '
                              'HDU): evaluate the lbg_cnn-* catalogues it was made from')


def test_another_evaluation_names_what_differs_in_good_grammar(tmp_path):
    """'(the model differ: model X ...)': one difference 'differs', and the model named is
    the one the earlier evaluation used."""
    from lbgnet.scripts.lbg_evaluate import other_evaluation
    for name in ('a.fits', 't.fits', 'm1.weights.h5', 'm2.weights.h5'):
        (tmp_path / name).write_bytes(b'')
    inputs = {'files': [str(tmp_path / 'a.fits')], 'truth': [str(tmp_path / 't.fits')],
              'model': str(tmp_path / 'm1.weights.h5')}
    (tmp_path / 'metrics.json').write_text(json.dumps({'inputs': inputs}))
    text = other_evaluation(str(tmp_path), inputs['files'], inputs['truth'],
                            str(tmp_path / 'm2.weights.h5'))
    assert text.startswith('holds the results of another evaluation (the model differs; it '
                           f"evaluated the model {tmp_path / 'm1.weights.h5'}, 1 input file(s)")
    assert other_evaluation(str(tmp_path), inputs['files'], inputs['truth'],
                            inputs['model']) is None
    text = other_evaluation(str(tmp_path), [str(tmp_path / 't.fits')], inputs['truth'],
                            inputs['model'])
    assert text.startswith('holds the results of another evaluation (the input files differ;')


def test_the_coadd_of_a_catalogue_is_found_under_a_non_ascii_name(tmp_path):
    """INCOADD holds the coadd's path with non-ASCII characters escaped (FITS headers are
    ASCII): a held-out catalogue of 'coadd-données.fits' was refused by --record-as as
    made from a coadd not found.  A file without LBG_CNN is one line (a traceback)."""
    from astropy.table import Table
    from lbgnet.io import InputFileError
    from lbgnet.io.catalog import printable_ascii
    from lbgnet.io.evaluation import catalog_coadd
    coadd = tmp_path / 'coadd-données.fits'
    coadd.write_bytes(b'')
    cat = str(tmp_path / 'lbg_cnn-x.fits')
    Table({'TARGETID': [1]}, meta={'EXTNAME': 'LBG_CNN',
                                   'INCOADD': printable_ascii(str(coadd))}).write(cat)
    assert catalog_coadd(cat) == str(coadd)
    zcat = str(tmp_path / 'lbg-zcat.fits')
    Table({'TARGETID': [1]}, meta={'EXTNAME': 'LBG_ZCAT'}).write(zcat)
    with pytest.raises(InputFileError, match='a stacked catalogue of desi_lbg_zcatalog'):
        catalog_coadd(zcat)


def test_coadd_metrics_record_the_networks_sha256(tmp_path, caplog):
    """metrics.json of a catalogue evaluation names the network by its SHA-256
    (inputs.network_sha256); one of a coadd evaluation named only the model's path, so a
    model retrained into the same file could not be told from the one evaluated."""
    from lbg_testdata import save_tiny_model
    from lbgnet.io.modelfile import read_model_description
    from lbgnet.scripts.lbg_evaluate import OUTPUTS, main
    from test_evaluate import _mock_files
    paths = _mock_files(tmp_path, nspec=12, seed=3)
    model = save_tiny_model(str(tmp_path / 'tiny.weights.h5'))
    out = tmp_path / 'out'
    rc, _ = run_logged(main, caplog, '--coadd', paths['coadd'], '--truth', paths['truth'],
                       '--model', model, '--nexamples', '0', '--no-refine',
                       '--outdir', str(out))
    assert rc == 0
    metrics = json.loads((out / OUTPUTS['metrics']).read_text())
    assert metrics['inputs']['network_sha256'] == read_model_description(model)[0]['weights_sha256']


def test_simulator_mismatch_does_not_only_blame_the_test_files(caplog):
    """Test files of the current simulator evaluated with a model trained on an older one
    (the shipped model: SIMHASH of simulator version 1) were told to 'regenerate the test
    files', which the current code cannot do for the model's simulator: the warning says
    that either the files or the model must be remade with the other's simulator."""
    import logging
    from lbgnet.evalinputs import compare_simulators
    with caplog.at_level(logging.WARNING):
        out = compare_simulators({'/x/truth-a.fits': 'aaaa'}, 'bbbb')
    assert out == {'model': 'bbbb', 'files': ['aaaa'], 'match': False}
    assert 'truth-a.fits simulated by another simulator (SIMHASH aaaa)' in caplog.text
    assert ('regenerate the test files with the simulator the model was trained on, or '
            'retrain the model on the test files\' simulator') in caplog.text
