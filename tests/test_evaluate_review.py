"""desi_lbg_evaluate: defects found by a user-level review, on small hand-made files (each
test failed on the code it was written against)."""
import json

import fitsio
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


def test_truth_with_duplicated_rows_is_called_duplicated_not_another_mock_run(tmp_path, caplog):
    """A truth file with a duplicated row is refused with 'duplicated TARGETIDs' when its
    catalogue carries no TRUTHSUM; when it does (every mock catalogue), the TRUTHSUM
    comparison ran first and said 'truth and coadd from different mock runs?', sending
    the user to look for another mock run instead of the duplicated row."""
    from lbgnet.io.mock import truth_checksum
    from lbgnet.scripts.lbg_evaluate import main
    tid, classes, z = _ten_objects()
    good = {'TARGETID': tid, 'CLASS': classes, 'Z_TRUE': z}
    truthsum = truth_checksum(good)
    rows = np.r_[np.arange(10), 3]                       # row 3 twice
    truth = _truth(tmp_path / 'truth-dup.fits', tid[rows], classes[rows], z[rows],
                   header={'TRUTHSUM': truthsum})
    c_lbg = np.float32([0.95] * 6 + [0.1] * 4)
    cat = _catalogue(tmp_path / 'lbg_cnn-mock.fits',
                     {'TARGETID': tid, 'C_LBG': c_lbg, 'IS_LBG': c_lbg > 0.5, 'Z_LBG': z,
                      'LBG_FLAG': np.zeros(10, np.int32)},
                     header={'CTHRESH': 0.5, 'NTHRESH': 3}, primary={'TRUTHSUM': truthsum})
    rc, log = run_logged(main, caplog, '--catalog', cat, '--truth', truth, '--outdir',
                         str(tmp_path / 'out'))
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
