"""Purity/efficiency, score, redshift metrics and regimes on hand-made cases."""
import json
import os
import re
import shutil
import warnings

import numpy as np
import pytest

from lbgnet.evaluate import (binned_efficiency, bootstrap_errors, confusion_by_class, depth_limited,
                             evaluate_predictions, pe_score, purity_efficiency, redshift_metrics,
                             regime_masks, reliable_metrics)
from lbgnet.thresholds import choose_thresholds


def test_pe_score_hand_made():
    # 4 LBGs; top-4 scores hold 3 LBGs -> score 0.75; threshold between 4th and 5th score
    is_true = np.array([1, 1, 0, 1, 0, 1, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.1])
    value, thr = pe_score(is_true, score)
    assert value == 0.75
    assert thr == pytest.approx(0.5)
    curve = purity_efficiency(is_true, score, [thr])
    assert curve['purity'][0] == curve['efficiency'][0] == 0.75
    assert np.isnan(pe_score(np.zeros(3, bool), np.ones(3))[0])


def test_pe_score_unscored_objects_never_count():
    """Fewer scored objects than LBGs (NODATA rows kept by --include-bad-fibres, in a small
    subset): the unscored ones take no place in the top N_LBG, whose value is then the
    efficiency of selecting every scored object, reached at threshold -inf."""
    is_true = np.array([1, 1, 1, 0, 0], bool)
    score = np.array([0.9, np.nan, np.nan, 0.5, np.nan])      # 2 scored, 3 LBGs
    value, thr = pe_score(is_true, score)
    curve = purity_efficiency(is_true, score, [thr])
    assert value == pytest.approx(1 / 3) == curve['efficiency'][0]
    assert pe_score(np.array([1, 1, 0], bool), np.array([0.9, np.nan, np.nan]))[0] == 0.5


def test_pe_score_threshold_separates_adjacent_float32_scores():
    # the N_LBG-th and the next score one float32 ulp apart: float32 C_LBG > threshold
    # (compared in float32 under NumPy 2) still selects exactly N_LBG
    cut = np.float32(0.5)
    score = np.array([0.9, cut, np.nextafter(cut, np.float32(0)), 0.1], dtype=np.float32)
    value, thr = pe_score(np.array([1, 1, 0, 0], bool), score)
    assert value == 1.0 and int(np.count_nonzero(score > thr)) == 2
    value64, thr64 = pe_score(np.array([1, 1, 0, 0], bool), score.astype(np.float64))
    assert int(np.count_nonzero(score.astype(np.float64) > thr64)) == 2


def test_pe_score_threshold_separates_adjacent_float64_scores():
    score = np.array([0.9, 0.5, np.nextafter(0.5, 0.0), 0.1])
    value, thr = pe_score(np.array([1, 1, 0, 0], bool), score)
    assert value == 1.0 and np.count_nonzero(score > thr) == 2


def test_pe_score_nan_scores_rank_last():
    # rows without a prediction (NaN C_LBG) are never selected: when they reach rank
    # N_LBG they rank at the bottom like -inf instead of making the score NaN, and take no
    # place in the top N_LBG (test_pe_score_unscored_objects_never_count)
    is_true = np.array([1, 1, 0, 0, 0], bool)
    score = np.array([0.9, np.nan, np.nan, np.nan, np.nan])
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        value, thr = pe_score(is_true, score)
    assert value == pytest.approx(pe_score(is_true, np.where(np.isnan(score), -np.inf, score))[0])
    assert value == 0.5
    assert np.count_nonzero(score > thr) == 1


def test_pe_score_ties_do_not_depend_on_row_order():
    # 90 LBGs and 15 contaminants all at 1.0 (saturated sigmoids): a useless classifier
    is_true = np.r_[np.ones(90, bool), np.zeros(15, bool)]
    score = np.ones(105)
    value, thr = pe_score(is_true, score)
    assert value == pytest.approx(90 / 105)
    assert pe_score(is_true[::-1], score)[0] == pytest.approx(value)
    assert np.sum(score > thr) == 105                # selects the tied group, never nothing
    # a tie straddling rank N_LBG = 3: 2 above, then 3 tied (1 LBG) -> 1 + 1 * 1/3 of 3
    is_true = np.array([1, 0, 1, 0, 0, 1, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.5, 0.5, 0.5, 0.2, 0.1])
    value, thr = pe_score(is_true, score)
    assert value == pytest.approx((1 + 1 / 3) / 3)
    assert np.sum(score > thr) == 2                  # 2 (one short) rather than 5 (two over)
    assert pe_score(is_true[::-1], score[::-1])[0] == pytest.approx(value)
    # equally far either way (2 above + 2 tied for N_LBG = 3): the tied group is kept
    is_true = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.5, 0.5, 0.2, 0.1])
    value, thr = pe_score(is_true, score)
    assert np.sum(score > thr) == 4 and value == pytest.approx((2 + 0.5) / 3)


def test_purity_efficiency_curve():
    is_true = np.array([True, False, True, False])
    score = np.array([0.9, 0.8, 0.3, 0.1])
    c = purity_efficiency(is_true, score, [0.0, 0.5, 0.85, 0.95])
    np.testing.assert_allclose(c['efficiency'], [1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(c['purity'][:3], [0.5, 0.5, 1.0])
    assert np.isnan(c['purity'][3]) and list(c['nselected']) == [4, 2, 1, 0]
    # the selection is score > threshold: a threshold equal to a score leaves that object out
    c = purity_efficiency(is_true, score, [0.8, 0.9])
    assert list(c['nselected']) == [1, 0]


def test_redshift_metrics():
    z_true = np.array([2.0, 3.0, 3.0, 4.0])
    z_pred = np.array([2.0, 3.0 + 0.036, 3.1, 4.0 - 0.06])
    m = redshift_metrics(z_true, z_pred)
    assert m['n'] == 4
    assert m['frac_dz_lt_0p05'] == 0.5
    x = (z_pred - z_true) / (1 + z_true)
    assert m['sigma_nmad'] == pytest.approx(1.4826 * np.median(np.abs(x - np.median(x))))
    # dz/(1+z): 0, 0.009, 0.025, -0.012 -> entries 2 and 3 are catastrophic (> 0.01), 1 is not
    assert m['catastrophic_rate'] == 0.5
    # a biased estimator: offset 0.02 in dz/(1+z) with a small symmetric scatter and one
    # outlier -> sigma_NMAD measures the scatter (not the offset), median_dz_1pz the offset
    z_true = np.full(7, 3.0)
    x = 0.02 + np.array([-3e-4, -2e-4, -1e-4, 0.0, 1e-4, 2e-4, 0.5])
    m = redshift_metrics(z_true, z_true + 4.0 * x)
    assert m['median_dz_1pz'] == pytest.approx(0.02, rel=1e-9)
    assert m['sigma_nmad'] == pytest.approx(1.4826 * 2e-4, rel=1e-6)
    assert redshift_metrics([], [])['n'] == 0
    # the boundaries themselves (z_true 0, so that the errors are exact in binary):
    # |dz| = 0.05 is not within 0.05, |dz|/(1+z) = 0.01 is not catastrophic
    m = redshift_metrics(np.zeros(4), np.array([0.05, -0.05, 0.01, 0.0]))
    assert m['frac_dz_lt_0p05'] == 0.5 and m['catastrophic_rate'] == 0.5


def test_regimes_keep_contaminants():
    classes = np.array(['LBG', 'LBG', 'LBG', 'LBG', 'QSO', 'STAR'])
    z = np.array([2.6, 2.61, 3.4, 4.0, 2.5, 0.0])
    m = regime_masks(classes, z)
    np.testing.assert_array_equal(m['lowz'], [1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(m['midz'], [0, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(m['highz'], [0, 0, 1, 1, 1, 1])
    assert m['all'].all()


def test_binned_and_confusion():
    eff = binned_efficiency([2.1, 2.2, 3.1, 3.2, 0.5], [1, 1, 1, 1, 0], [1, 0, 1, 1, 1],
                            [2.0, 3.0, 4.0])
    np.testing.assert_allclose(eff['efficiency'], [0.5, 1.0])
    # a selected contaminant inside a bin counts for nothing (efficiency is a recall)
    eff = binned_efficiency([2.1, 2.2, 3.1, 3.2, 2.5], [1, 1, 1, 1, 0], [1, 0, 1, 1, 1],
                            [2.0, 3.0, 4.0])
    np.testing.assert_allclose(eff['efficiency'], [0.5, 1.0])
    assert eff['ntrue'].tolist() == [2, 2]
    conf = confusion_by_class(['LBG', 'QSO', 'QSO', 'STAR'], [True, True, False, False])
    assert conf['QSO'] == {'n': 2, 'nselected': 1, 'fraction_selected': 0.5}
    assert conf['STAR']['nselected'] == 0


def test_depth_limited():
    # bright objects (r <= 23) are well separated, faint ones are not
    is_true = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.1, 0.2, 0.1, 0.95])
    rmag = np.array([22.5, 22.8, 22.6, 23.0, 24.5, 24.8])
    selected = score > 0.5
    z_true = np.array([2.0, 3.0, 0.0, 0.0, 3.5, 0.0])
    z_pred = np.array([2.01, 3.2, 0.0, 0.0, 3.5, 2.0])
    out = depth_limited(is_true, selected, score, rmag, z_true, z_pred, limits=(23.0, 25.0))
    bright, full = out['r<=23'], out['r<=25']
    assert (bright['nlbg'], bright['ncontaminant']) == (2, 2)
    assert bright['pe_score'] == 1.0 and bright['efficiency'] == 1.0
    assert bright['n'] == 2 and bright['frac_dz_lt_0p05'] == 0.5
    # all six: the top three scores hold two of the three LBGs
    assert full['pe_score'] == pytest.approx(2 / 3) and full['efficiency'] == pytest.approx(2 / 3)


def test_choose_thresholds_prefers_informative_n():
    """Contaminants have one spurious confident line; LBGs have several: n_thresh=2 separates them."""
    rng = np.random.default_rng(0)
    n = 200
    classes = np.where(np.arange(n) % 2 == 0, 'LBG', 'QSO')
    z = np.where(classes == 'LBG', rng.uniform(2.0, 4.5, n), 2.5)
    c_lines = rng.uniform(0, 0.2, (n, 16))
    c_lines[classes == 'LBG', :3] = rng.uniform(0.6, 0.9, ((classes == 'LBG').sum(), 3))
    c_lines[classes == 'QSO', 0] = 0.95
    c_thresh, n_thresh, table = choose_thresholds(classes, z, c_lines)
    assert n_thresh == 2 and table[2]['mean_score'] == 1.0 and table[1]['mean_score'] < 0.9
    assert 0.2 < c_thresh < 0.6
    # a regime without LBGs (none at z >= 3.4 here) has no score: it does not vote, and
    # must not make every candidate's mean NaN (then n = 1 always won)
    low = classes != 'LBG'
    low |= z < 3.4
    c_thresh, n_thresh, table = choose_thresholds(classes[low], z[low], c_lines[low])
    assert n_thresh == 2 and np.isfinite(table[2]['mean_score']) and table[2]['mean_score'] == 1.0


def test_choose_from_scores_averages_the_regimes_not_all():
    """n_thresh maximises the mean score of the low/mid/high-z regimes (the 'all' mixture
    does not vote) and c_thresh is the purity = efficiency threshold over all objects."""
    from lbgnet.thresholds import choose_from_scores
    rng = np.random.default_rng(3)
    nlbg = {2.2: 300, 3.0: 60, 4.0: 60}                   # the low-z regime dominates 'all'
    classes = np.array(['LBG'] * sum(nlbg.values()) + ['QSO'] * 200)
    z = np.concatenate([np.full(k, zz) for zz, k in nlbg.items()] + [np.full(200, 1.0)])
    cont = rng.uniform(0.01, 0.5, 200)

    def lbg_scores(fractions):
        """A fraction p of each regime's LBGs far above the contaminants, the rest below."""
        out = []
        for (zz, k), p in zip(nlbg.items(), fractions):
            high = rng.permutation(k) < round(p * k)
            out.append(np.where(high, rng.uniform(0.8, 0.9, k), rng.uniform(0.0, 0.005, k)))
        return np.concatenate(out + [cont])

    # regime scores: n = 1 -> 1.0 / 0.6 / 0.6 (mean 0.733); n = 2 -> 0.75 everywhere
    scores = {1: lbg_scores((1.0, 0.6, 0.6)), 2: lbg_scores((0.75, 0.75, 0.75))}
    is_true = classes == 'LBG'
    masks = regime_masks(classes, z)
    means = {n: [np.mean([pe_score(is_true[m], scores[n][m])[0] for k, m in masks.items()
                          if k != drop]) for drop in ('all', None)] for n in scores}
    assert means[2][0] > means[1][0] and means[1][1] > means[2][1]   # 'all' would flip it
    c_thresh, n_thresh, table = choose_from_scores(classes, z, scores.get, (1, 2))
    assert n_thresh == 2 and table[2]['mean_score'] == pytest.approx(means[2][0])
    assert c_thresh == pe_score(is_true, scores[2])[1]
    assert c_thresh != pe_score(is_true[masks['lowz']], scores[2][masks['lowz']])[1]


def test_reliable_metrics():
    # 4 true LBGs (3 selected), 2 selected contaminants; DELTACHI2 >= 9 keeps 2 + 1 of them
    is_true = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    selected = np.array([1, 1, 1, 0, 1, 1], dtype=bool)
    dchi2 = np.array([30.0, 9.0, 4.0, 50.0, 12.0, np.nan])
    rmag = np.array([22.0, 24.5, 23.0, 22.0, 24.0, 22.0])
    z_true = np.array([2.0, 3.0, 3.5, 2.5, 0.0, 0.0])
    z_pred = np.array([2.01, 3.3, 2.0, 2.5, 2.2, 3.0])
    out = reliable_metrics(is_true, selected, dchi2, rmag, z_true, z_pred)
    assert out['min_deltachi2'] == 9.0
    assert out['efficiency'] == pytest.approx(2 / 4) and out['purity'] == pytest.approx(2 / 3)
    assert out['kept'] == pytest.approx(2 / 3)
    assert out['redshift']['n'] == 2 and out['redshift']['frac_dz_lt_0p05'] == 0.5
    bright = out['by_depth']['r<=23']      # LBGs 0, 2, 3; only 0 is selected and reliable
    assert bright['efficiency'] == pytest.approx(1 / 3) and bright['kept'] == pytest.approx(1 / 2)
    assert bright['frac_dz_lt_0p05'] == 1.0
    # a NaN ZERR_TPL (no χ² minimum at Z_TPL) is not reliable whatever DELTACHI2_TPL says
    zerr = np.array([np.nan, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3])
    out = reliable_metrics(is_true, selected, dchi2, rmag, z_true, z_pred, zerr)
    assert out['efficiency'] == pytest.approx(1 / 4) and out['purity'] == pytest.approx(1 / 2)
    assert out['redshift']['n'] == 1 and out['redshift']['frac_dz_lt_0p05'] == 0.0
    # LBG_FLAG: a GOOD_LBG-vetoing bit (Z_OUT_OF_RANGE) leaves a row out, MISSING_CAMERA not
    from lbgnet.bitmask import LBGWarnMask
    mask = LBGWarnMask()
    flag = np.array([mask.MISSING_CAMERA, mask.Z_OUT_OF_RANGE, 0, 0, 0, 0])
    out = reliable_metrics(is_true, selected, dchi2, rmag, z_true, z_pred, None, flag)
    assert out['efficiency'] == pytest.approx(1 / 4) and out['purity'] == pytest.approx(1 / 2)
    assert out['redshift']['n'] == 1 and out['redshift']['frac_dz_lt_0p05'] == 1.0


def test_evaluate_predictions_json():
    rng = np.random.default_rng(1)
    n = 300
    classes = rng.choice(['LBG', 'QSO', 'GALAXY', 'STAR'], n)
    z = np.where(classes == 'LBG', rng.uniform(2.0, 4.5, n), rng.uniform(0, 3, n))
    truth = {'CLASS': classes, 'Z_TRUE': z, 'RMAG': rng.uniform(22, 25, n)}
    c_lbg = np.where(classes == 'LBG', rng.uniform(0.4, 1, n), rng.uniform(0, 0.6, n))
    pred = {'C_LBG': c_lbg, 'IS_LBG': c_lbg > 0.5, 'Z_LBG': z + 1e-4, 'Z_BESTLINE': z}
    out = evaluate_predictions(truth, pred, 0.5)
    assert set(out) == {'all', 'lowz', 'midz', 'highz'}
    text = json.dumps(out, allow_nan=False)   # strict JSON: no NaN
    back = json.loads(text)
    assert back['all']['nlbg'] == int((classes == 'LBG').sum())
    assert back['lowz']['ncontaminant'] == back['all']['ncontaminant']
    assert back['all']['redshift']['frac_dz_lt_0p05'] == 1.0
    assert 0.5 < back['all']['pe_score'] <= 1.0
    assert 0 < back['all']['errors']['pe_score'] < 0.1
    assert back['all']['errors']['redshift']['frac_dz_lt_0p05'] == 0.0
    # the binned efficiencies cover every true LBG (the top edge included), in 0.25 steps
    # of z and 0.5 of r from multiples of the step
    for key, values in (('efficiency_vs_z', z), ('efficiency_vs_mag', truth['RMAG'])):
        binned = back['all'][key]
        assert sum(binned['ntrue']) == back['all']['nlbg'], key
        edges = np.asarray(binned['edges'])
        assert edges[0] <= values[classes == 'LBG'].min()
        assert edges[-1] >= values[classes == 'LBG'].max()
    assert np.allclose(np.diff(back['all']['efficiency_vs_z']['edges']), 0.25)
    # a regime without true LBGs has no efficiency (not 0) and no score
    pred['IS_LBG'][(classes == 'LBG') & (z > 3.3)] = False
    truth['CLASS'] = np.where((classes == 'LBG') & (z > 3.3), 'QSO', classes)
    back = json.loads(json.dumps(evaluate_predictions(truth, pred, 0.5), allow_nan=False))
    assert back['highz']['nlbg'] == 0
    assert back['highz']['efficiency'] is None and back['highz']['pe_score'] is None
    assert back['highz']['errors']['pe_score'] is None
    # nothing selected: purity undefined (null), not 0
    pred['IS_LBG'][:] = False
    back = json.loads(json.dumps(evaluate_predictions(truth, pred, 0.5), allow_nan=False))
    assert back['all']['purity'] is None and back['all']['efficiency'] == 0.0


def _mock_files(tmp_path, config_name='lbgnet-mock.yaml', nspec=60, seed=11, zrange=None):
    from lbgnet.io.mock import write_mock
    from lbgnet.sim.mock import load_mock_setup, make_mock
    setup = load_mock_setup(config_name)
    population = {'zrange': zrange} if zrange else None
    mock = make_mock(setup, nspec, np.random.default_rng(seed), pixel=7, with_resolution=False,
                     population=population)
    return write_mock(str(tmp_path / 'mock'), mock, config_name)


def _small_model(tmp_path, seed=0, name='small'):
    import dataclasses
    from lbgnet.config import load_config
    from lbgnet.io.modelfile import save_model
    from lbgnet.model import build_model
    from lbgnet.train import set_seeds
    base = load_config()
    extra = dict(base.extra, name='small', model=dict(
        channels=['flux', 'snr'], conv_layers=2, filters=8, kernel_size=5, strides=4,
        padding='same', dropout=0.0, dense_units=16, offset_margin=0.1, snr_softening=5.0))
    cfg = dataclasses.replace(base, extra=extra)
    set_seeds(seed)
    return save_model(str(tmp_path / f'{name}.weights.h5'), build_model(cfg), cfg)[0]


def _write_catalog(path, res, targetid, line_names, flag, header=None):
    import fitsio
    data = {'TARGETID': targetid, 'C_LBG': res['C_LBG'], 'IS_LBG': res['IS_LBG'].astype(bool),
            'Z_LBG': res['Z_LBG'], 'Z_TPL': res['Z_TPL'], 'DELTACHI2_TPL': res['DELTACHI2_TPL'],
            'LBG_FLAG': flag, 'ZERR_LBG': res['ZERR_LBG'], 'ZERR_TPL': res['ZERR_TPL']}
    for i, name in enumerate(line_names):
        data[f'C_{name}'] = res['C_LINES'][:, i]
        data[f'Z_{name}'] = res['Z_LINES'][:, i]
    fitsio.write(path, data, extname='LBG_CNN', clobber=True, header=header)


def test_evaluate_script_coadd_and_catalog(tmp_path, caplog, monkeypatch):
    """Coadd input and the equivalent catalogue input give the same metrics; files are written."""
    import os
    from lbgnet.io.modelfile import load_model
    from lbgnet.network import load_network
    from lbgnet.postprocess import postprocess
    from lbgnet.io.evaluation import read_coadd_for_evaluation
    from lbgnet.afterburner import default_template_path, load_refiner, refine_selected
    from lbgnet.network import training_zrange
    from lbgnet.scripts.lbg_evaluate import OUTPUTS, main
    paths = _mock_files(tmp_path)
    model_path = _small_model(tmp_path)
    out1 = tmp_path / 'ev1'
    assert main(['--coadd', paths['coadd'], '--truth', paths['truth'], '--redrock',
                 paths['redrock'], '--model', model_path, '--outdir', str(out1)]) == 0
    m1 = json.loads((out1 / OUTPUTS['metrics']).read_text())
    assert set(m1) == {'regimes', 'inputs', 'redrock'}
    from astropy.io import fits
    simhash = fits.getheader(paths['truth'])['SIMHASH']
    assert m1['inputs']['simulator'] == {'model': None, 'files': [simhash], 'match': None}
    assert m1['inputs']['refine']['template'].startswith('rrtemplate-GALAXY-LBG')
    assert m1['inputs']['refine']['noise'] == 'calibrated'
    noisy = tmp_path / 'ev-noise'               # the refinement with the pipeline ivar
    assert main(['--coadd', paths['coadd'], '--truth', paths['truth'], '--model', model_path,
                 '--outdir', str(noisy), '--refine-noise', 'pipeline', '--refine-arch-skip',
                 '0']) == 0
    mn = json.loads((noisy / OUTPUTS['metrics']).read_text())
    assert mn['inputs']['refine']['noise'] == 'pipeline'
    assert (m1['inputs']['refine']['arch_skip'], mn['inputs']['refine']['arch_skip']) == (25.0, 0.0)
    for name, reg in mn['regimes'].items():
        assert reg['nlbg'] == m1['regimes'][name]['nlbg']
        if reg['nlbg']:
            assert reg['redshift_template']['n'] == m1['regimes'][name]['redshift_template']['n']
            # the χ² weights changed: so did the refined numbers that depend on them
            assert reg != m1['regimes'][name]
    for name, reg in m1['regimes'].items():     # template refinement of the coadd input
        if reg['nlbg']:
            assert reg['redshift_template']['n'] == reg['redshift']['n']
            assert set(reg['by_depth_template']) == set(reg['by_depth'])
            assert reg['reliable']['kept'] <= 1 and reg['reliable']['min_deltachi2'] == 9.0
    assert m1['redrock']['n'] == m1['regimes']['all']['nlbg'] > 0
    # nothing selected: the refinement ran, so its metrics are there (of no object), as they
    # are for a catalogue input; only --no-refine leaves them out
    none = tmp_path / 'ev-none'
    assert main(['--coadd', paths['coadd'], '--truth', paths['truth'], '--model', model_path,
                 '--outdir', str(none), '--nexamples', '0', '--c-thresh', '1.0']) == 0
    m0 = json.loads((none / OUTPUTS['metrics']).read_text())['regimes']['all']
    assert m0['redshift_template']['n'] == 0 and 'reliable' in m0
    for key in ('pe', 'z', 'eff', 'examples', 'reliability', 'pulls'):
        assert 0 < os.path.getsize(out1 / OUTPUTS[key]) < 300_000
    # a run that fails while writing (full disk at the 5th figure) leaves the earlier
    # run's files as they were: metrics.json and figures of one evaluation, no temporaries
    before = {name: (out1 / name).read_bytes() for name in os.listdir(out1)}
    import errno
    import lbgnet.plots

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(lbgnet.plots, 'plot_reliability', full_disk)
    assert main(['--coadd', paths['coadd'], '--truth', paths['truth'], '--model', model_path,
                 '--outdir', str(out1), '--nexamples', '0', '--title', 'other']) == 1
    assert {name: (out1 / name).read_bytes() for name in os.listdir(out1)} == before
    monkeypatch.undo()
    with pytest.raises(SystemExit):             # matplotlib cannot draw it: before any work
        main(['--coadd', paths['coadd'], '--truth', paths['truth'], '--model', model_path,
              '--outdir', str(out1), '--title', r'eval $\lbg$'])
    # a test set of one regime (no mid/high-z LBGs) still evaluates, with undefined scores there
    out3 = tmp_path / 'ev3'
    low = _mock_files(tmp_path / 'low', nspec=30, seed=13, zrange=(1.8, 2.6))
    import logging
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(['--coadd', low['coadd'], '--truth', low['truth'], '--model', model_path,
                     '--outdir', str(out3), '--nexamples', '0', '--record-as', 'low']) == 0
    assert 'highz: no true LBG in this regime' in caplog.text and 'highz: 0 LBGs' not in caplog.text
    assert '1/1 files evaluated' in caplog.text                    # the progress bar
    assert re.search(r'lowz: \d+ LBGs, \d+ contaminants; efficiency [0-9.]+ \+- [0-9.]+, purity '
                     r'[0-9.]+ \+- [0-9.]+ at C_LBG > [0-9.]+; purity=efficiency score [0-9.]+ \+- ',
                     caplog.text)
    assert re.search(r'lowz: ZERR_LBG of the \d+ right redshifts: pull NMAD', caplog.text)
    from lbgnet.io.modelfile import load_model as load
    card = load(model_path)[2]['heldout_tests']['low']
    assert set(card) == {'inputs', 'all', 'lowz'} and card['lowz']['nlbg'] > 0
    assert card['lowz']['by_depth']['r<=25']['nlbg'] == card['lowz']['nlbg']
    m3 = json.loads((out3 / OUTPUTS['metrics']).read_text())
    assert m3['regimes']['highz']['nlbg'] == 0 and m3['regimes']['highz']['pe_score'] is None
    pilot = m3['regimes']['lowz']['by_depth']['r<=24.2']           # one line at that depth
    assert pilot['nlbg'] > 0
    assert re.search(r'lowz: r <= 24\.2 \(DESI LBG pilot depth\): %d LBGs, %d contaminants; '
                     r'purity=efficiency score %.4f; at C_LBG > [0-9.]+ efficiency [0-9.]+, '
                     r'purity [0-9.]+; \|dz\|<0\.05 [0-9.na/]+ \(Z_LBG\), [0-9.na/]+ \(Z_TPL\)'
                     % (pilot['nlbg'], pilot['ncontaminant'], pilot['pe_score']), caplog.text)
    assert 'highz: r <= 24.2' not in caplog.text
    assert m3['regimes']['lowz']['nlbg'] == m3['regimes']['all']['nlbg'] > 0
    # the same predictions as an afterburner catalogue, rows shuffled
    model, cfg, meta = load_model(model_path)
    from lbgnet.afterburner import default_archetype_path
    refiner = load_refiner(default_template_path(), cfg, training_zrange(cfg, meta),
                           noise='calibrated', archetypes=default_archetype_path())  # the default
    X, targetid, good, info, _ = read_coadd_for_evaluation(paths['coadd'], cfg, refiner.noise)
    assert (~good).sum() == m1['inputs']['nexcluded_bad_fibres']
    raw = load_network(model_path).raw_outputs(X)   # the afterburner's forward pass
    conf = raw['conf']
    res = postprocess(conf, raw['offset'], cfg)
    res.update(refine_selected(refiner, info, res, conf))
    order = np.random.default_rng(0).permutation(len(X))
    cat = str(tmp_path / 'lbg_cnn-test.fits')
    flag = np.where(good, 0, 4).astype(np.int32)     # NOT_SCIENCE for dead fibres
    _write_catalog(cat, {k: v[order] for k, v in res.items()}, targetid[order],
                   cfg.lines.names, flag[order], header={'CTHRESH': 0.25, 'NTHRESH': 2})
    out2 = tmp_path / 'ev2'
    assert main(['--catalog', cat, '--truth', paths['truth'], '--model', model_path,
                 '--outdir', str(out2)]) == 0
    m2 = json.loads((out2 / OUTPUTS['metrics']).read_text())
    # the selection recorded is the catalogue's, not the model's defaults
    assert (m2['inputs']['c_thresh'], m2['inputs']['n_thresh']) == (0.25, 2)
    assert 'refine' not in m2['inputs']                  # its header records no refinement
    # a catalogue's refinement comes from its header (REFNOISE absent: the pipeline ivar);
    # catalogues refined differently are evaluated apart; --refine-* need --coadd
    refined = {'CTHRESH': 0.25, 'NTHRESH': 2, 'REFINE': True, 'REFWGT': 3.0, 'REFWIN': 0.1,
               'REFSTEP': 2e-4, 'REFTEMPL': '/x/rrtemplate-GALAXY-LBG-v0.2.fits',
               'REFARCH': '/x/rrarchetype-GALAXY-LBG-v0.2.fits'}
    cats = [str(tmp_path / f'lbg_cnn-r{i}.fits') for i in range(2)]
    for i, path in enumerate(cats):
        _write_catalog(path, {k: v[order] for k, v in res.items()}, targetid[order],
                       cfg.lines.names, flag[order],
                       header=dict(refined, **({'REFNOISE': 'calibrated'} if i else {})))
    outr = tmp_path / 'ev-refined'
    assert main(['--catalog', cats[0], '--truth', paths['truth'], '--model', model_path,
                 '--outdir', str(outr)]) == 0
    mr = json.loads((outr / OUTPUTS['metrics']).read_text())
    assert mr['inputs']['refine'] == {'template': 'rrtemplate-GALAXY-LBG-v0.2.fits',
                                      'prior_weight': 3.0, 'window': 0.1, 'step': 2e-4,
                                      'noise': 'pipeline',
                                      'archetypes': 'rrarchetype-GALAXY-LBG-v0.2.fits',
                                      'arch_skip': 0.0}     # REFASKP absent: never skipped
    assert main(['--catalog', *cats, '--truth', paths['truth'], paths['truth'], '--model',
                 model_path, '--outdir', str(tmp_path / 'ev-mixed')]) == 1
    for opt in (['--refine-noise', 'pipeline'], ['--refine-archetypes', 'none'], ['--no-refine'],
                ['--refine-arch-skip', '0']):
        with pytest.raises(SystemExit):
            main(['--catalog', cats[0], '--truth', paths['truth'], '--outdir',
                  str(tmp_path / 'x')] + opt)
    assert m2['regimes']['all']['c_thresh'] == 0.25
    with pytest.raises(SystemExit):                  # C_LBG was made for NTHRESH: no override
        main(['--catalog', cat, '--truth', paths['truth'], '--outdir', str(tmp_path / 'x'),
              '--n-thresh', '1'])
    for bad in (['--n-thresh', '0'], ['--c-thresh', '1.5'], ['--nexamples', '-1'],
                ['--nexamples', '25']):      # 100 examples drew a 16,000-pixel-tall PNG
        with pytest.raises(SystemExit):
            main(['--coadd', paths['coadd'], '--truth', paths['truth'], '--outdir',
                  str(tmp_path / 'x')] + bad)
    assert main(['--coadd', paths['coadd'], '--truth', paths['truth'], '--model', model_path,
                 '--outdir', str(tmp_path / 'x'), '--n-thresh', '17']) == 1
    assert not (tmp_path / 'x').exists()
    for regime in ('all', 'lowz', 'midz', 'highz'):
        a, b = m1['regimes'][regime], m2['regimes'][regime]
        assert a['pe_score'] == b['pe_score'] and a['confusion'] == b['confusion']
        assert a['redshift_bestline'] == pytest.approx(b['redshift_bestline'])
        if a['nlbg']:                                  # Z_TPL read from the catalogue
            assert a['redshift_template'] == pytest.approx(b['redshift_template'], rel=1e-6)
            assert set(a['redshift_errors']) == set(b['redshift_errors']) == {'ZERR_LBG', 'ZERR_TPL'}
            for key, pulls in a['redshift_errors'].items():    # ZERR_* from the catalogue
                assert pulls['n'] == b['redshift_errors'][key]['n']
                if pulls['n'] > 1:                     # one pull has no spread (None)
                    assert pulls['nmad_pull'] == pytest.approx(b['redshift_errors'][key]['nmad_pull'],
                                                               rel=1e-5)
                else:
                    assert pulls['nmad_pull'] is b['redshift_errors'][key]['nmad_pull'] is None
            ra, rb = a['reliable'], b['reliable']             # DELTACHI2_TPL from the catalogue
            for key, value in ra['redshift'].items():   # None where nothing is kept
                assert rb['redshift'][key] == (value if value is None else pytest.approx(value, rel=1e-6))
            assert [ra[k] for k in ('efficiency', 'purity', 'kept')] == [
                rb[k] for k in ('efficiency', 'purity', 'kept')]
    # a catalogue made without the refinement (Z_TPL all NaN) reports no template metrics
    _write_catalog(cat, {**{k: v[order] for k, v in res.items()}, 'Z_TPL': np.full(len(X), np.nan)},
                   targetid[order], cfg.lines.names, flag[order])
    out4 = tmp_path / 'ev4'
    assert main(['--catalog', cat, '--truth', paths['truth'], '--model', model_path,
                 '--outdir', str(out4)]) == 0
    m4 = json.loads((out4 / OUTPUTS['metrics']).read_text())
    assert all('redshift_template' not in r and 'reliable' not in r for r in m4['regimes'].values())
    assert not (out4 / OUTPUTS['reliability']).exists()


def test_compare_simulators():
    from lbgnet.scripts.lbg_evaluate import compare_simulators
    files = {'a.fits': 'h1', 'b.fits': 'h1', 'c.fits': None}
    assert compare_simulators(files, 'h1') == {'model': 'h1', 'files': ['h1'], 'match': True}
    assert compare_simulators(files, 'h2')['match'] is False
    assert compare_simulators({'a.fits': 'h1', 'b.fits': 'h2'}, 'h1')['match'] is False
    assert compare_simulators(files, None)['match'] is None
    assert compare_simulators({'c.fits': None}, 'h1') == {'model': 'h1', 'files': [], 'match': None}


def test_evaluate_script_errors(tmp_path):
    from lbgnet.scripts.lbg_evaluate import main
    paths = _mock_files(tmp_path, nspec=20)
    model_path = _small_model(tmp_path)
    # truth file without the coadd's TARGETIDs: clear failure, no output
    other = _mock_files(tmp_path / 'other', nspec=20, seed=12)
    import fitsio
    truth = fitsio.read(other['truth'], ext='TRUTH')
    truth['TARGETID'] += 10 ** 6
    fitsio.write(str(tmp_path / 'truth-bad.fits'), truth, extname='TRUTH', clobber=True)
    assert main(['--coadd', paths['coadd'], '--truth', str(tmp_path / 'truth-bad.fits'),
                 '--model', model_path, '--outdir', str(tmp_path / 'out' / 'a' / 'b')]) == 1
    assert not (tmp_path / 'out').exists()            # nor the parents it created
    # a quoted pattern (the afterburner expands its own; here files are paired in order)
    with pytest.raises(SystemExit):
        main(['--coadd', str(tmp_path / 'coadd-*.fits'), '--truth', paths['truth'],
              '--outdir', str(tmp_path / 'out')])
    assert main(['--coadd', paths['coadd'], '--truth', str(tmp_path / 'truth-bad.fits'),
                 '--model', model_path, '--outdir',
                 str(tmp_path / 'out' / 'a' / '..' / 'b')]) == 1
    assert not (tmp_path / 'out').exists()            # 'a' is never made
    # the truth file of another mock run with the same TARGETIDs: refused (TRUTHSUM)
    np.testing.assert_array_equal(fitsio.read(other['truth'], ext='TRUTH')['TARGETID'],
                                  fitsio.read(paths['truth'], ext='TRUTH')['TARGETID'])
    assert main(['--coadd', paths['coadd'], '--truth', other['truth'], '--model', model_path,
                 '--outdir', str(tmp_path / 'out')]) == 1
    assert not (tmp_path / 'out').exists()
    # training's validation reader refuses the same pair
    from lbgnet.config import load_config
    from lbgnet.io.errors import InputFileError
    from lbgnet.scripts.lbg_train import read_labelled
    with pytest.raises(InputFileError, match='does not belong to'):
        read_labelled([paths['coadd']], [other['truth']], load_config('lbgnet-default.yaml'))
    assert len(read_labelled([paths['coadd']], [paths['truth']],
                             load_config('lbgnet-default.yaml'))[0]) > 0
    # ... also through an afterburner catalogue, which carries the coadd's TRUTHSUM
    from lbgnet.io.mock import mock_keywords
    from lbgnet.scripts.lbg_afterburner import main as afterburner
    cat = str(tmp_path / 'lbg_cnn-mock.fits')
    assert afterburner(['--coadd', paths['coadd'], '--redrock', paths['redrock'], '--output', cat,
                        '--priors', str(tmp_path / 'priors.fits'), '--model', model_path,
                        '--no-refine']) == 0
    assert mock_keywords(cat) == mock_keywords(paths['coadd'])
    assert main(['--catalog', cat, '--truth', other['truth'], '--model', model_path,
                 '--outdir', str(tmp_path / 'out')]) == 1
    assert not (tmp_path / 'out').exists()
    assert main(['--catalog', cat, '--truth', paths['truth'], '--model', model_path,
                 '--outdir', str(tmp_path / 'out'), '--nexamples', '0']) == 0
    assert main(['--coadd', paths['coadd'], '--truth', paths['truth'], '--model',
                 str(tmp_path / 'missing.weights.h5'), '--outdir', str(tmp_path / 'out')]) == 1
    with pytest.raises(SystemExit):
        main(['--coadd', paths['coadd'], '--truth', paths['truth'], paths['truth'],
              '--outdir', str(tmp_path / 'out')])
    # an --outdir that cannot be written fails at once, in one line, before the work
    # (a traceback from os.makedirs after the model and the refinement had run)
    from unittest import mock
    from lbgnet.scripts import lbg_evaluate
    with mock.patch.object(lbg_evaluate, 'collect', side_effect=AssertionError('work done')), \
            mock.patch.object(lbg_evaluate, 'get_logger') as logger:
        assert main(['--catalog', cat, '--truth', paths['truth'], '--model', model_path,
                     '--outdir', '/proc/lbgnet-test/out']) == 1
    message = logger.return_value.error.call_args[0]
    assert (message[0] % message[1:]).startswith('--outdir /proc/lbgnet-test/out: cannot create')
    # and a write failing anyway is one line, not a traceback
    with mock.patch('lbgnet.io.evaluation.write_json', side_effect=OSError(28, 'No space left')):
        assert main(['--catalog', cat, '--truth', paths['truth'], '--model', model_path,
                     '--outdir', str(tmp_path / 'out2'), '--nexamples', '0']) == 1


def test_evaluate_script_input_checks(tmp_path, caplog):
    """Inputs that would silently distort the metrics are refused; a reused --outdir keeps
    no figure of an earlier run; several catalogues of one run take one --c-thresh."""
    import fitsio
    from lbgnet.evalinputs import redrock_metrics
    from lbgnet.scripts.lbg_afterburner import main as afterburner
    from lbgnet.scripts.lbg_evaluate import OUTPUTS, main
    paths = _mock_files(tmp_path, nspec=20)
    other = _mock_files(tmp_path / 'other', nspec=20, seed=12)      # same TARGETIDs
    model_path = _small_model(tmp_path)
    common = ['--model', model_path, '--nexamples', '2']
    out = tmp_path / 'out'
    # a Redrock file of another mock run (matching TARGETIDs) is refused
    assert main(['--coadd', paths['coadd'], '--truth', paths['truth'], '--redrock',
                 other['redrock'], '--outdir', str(out), '--no-refine'] + common) == 1
    assert not out.exists()
    # one file given twice would count its objects twice
    assert main(['--coadd', paths['coadd'], paths['coadd'], '--truth', paths['truth'],
                 paths['truth'], '--outdir', str(out), '--no-refine'] + common) == 1
    # ... also as copies under other names (evaluated with every object twice before)
    copies = {k: str(tmp_path / f'copy-{os.path.basename(paths[k])}') for k in ('coadd', 'truth')}
    for k, dst in copies.items():
        shutil.copy(paths[k], dst)
    caplog.clear()
    assert main(['--coadd', paths['coadd'], copies['coadd'], '--truth', paths['truth'],
                 copies['truth'], '--outdir', str(out), '--no-refine'] + common) == 1
    assert '(a copy, or the same objects observed again): they would be counted twice' \
        in caplog.text
    assert not out.exists()
    cat = str(tmp_path / 'lbg_cnn-mock.fits')
    assert afterburner(['--coadd', paths['coadd'], '--redrock', paths['redrock'], '--output', cat,
                        '--priors', str(tmp_path / 'priors.fits'), '--model', model_path]) == 0
    data, header = fitsio.read(cat, ext='LBG_CNN', header=True)
    primary = fitsio.read_header(cat, ext=0)
    for name, rows in (('dup', np.concatenate([data, data[:1]])), ('cut', data[1:])):
        path = str(tmp_path / f'lbg_cnn-{name}.fits')
        fitsio.write(path, None, header=primary, clobber=True)
        fitsio.write(path, rows, extname='LBG_CNN', header=header)
        assert main(['--catalog', path, '--truth', paths['truth'],
                     '--outdir', str(out)] + common) == 1
    assert not out.exists()
    # coadd input writes the example figure; catalogue input into the same directory does
    # not make one, and the old one is removed
    assert main(['--coadd', paths['coadd'], '--truth', paths['truth'],
                 '--outdir', str(out), '--no-refine'] + common) == 0
    assert (out / OUTPUTS['examples']).exists()
    copy = str(tmp_path / 'lbg_cnn-copy.fits')
    shutil.copy(cat, copy)
    header_c = float(header['CTHRESH'])
    low = header_c / 2
    assert main(['--catalog', cat, copy, '--truth', paths['truth'], paths['truth'],
                 '--outdir', str(out), '--c-thresh', str(low)] + common) == 1   # a copy: twice
    # two catalogues of one afterburner setup, one --c-thresh for both
    cat2 = str(tmp_path / 'lbg_cnn-other.fits')
    assert afterburner(['--coadd', other['coadd'], '--redrock', other['redrock'], '--output',
                        cat2, '--priors', str(tmp_path / 'priors2.fits'), '--model',
                        model_path]) == 0
    # the coadd evaluation in --outdir is another one: replaced only with --overwrite
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    caplog.clear()
    assert main(['--catalog', cat, cat2, '--truth', paths['truth'], other['truth'],
                 '--outdir', str(out), '--c-thresh', str(low)] + common) == 1
    assert (f'--outdir {out}: holds the results of another evaluation (the input files, the '
            'truth files differ; it evaluated the model') in caplog.text
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(['--catalog', cat, cat2, '--truth', paths['truth'], other['truth'],
                 '--outdir', str(out), '--c-thresh', str(low), '--overwrite'] + common) == 0
    metrics = json.loads((out / OUTPUTS['metrics']).read_text())
    assert metrics['regimes']['all']['nlbg'] + metrics['regimes']['all']['ncontaminant'] == \
        40 - metrics['inputs']['nexcluded_bad_fibres']
    assert metrics['inputs']['include_bad_fibres'] is False
    assert not (out / OUTPUTS['examples']).exists()
    # with --include-bad-fibres nothing is excluded, and the metrics say why
    assert main(['--catalog', cat, cat2, '--truth', paths['truth'], other['truth'],
                 '--outdir', str(out), '--c-thresh', str(low), '--include-bad-fibres']
                + common) == 0
    kept = json.loads((out / OUTPUTS['metrics']).read_text())['inputs']
    assert kept['include_bad_fibres'] is True and kept['nexcluded_bad_fibres'] == 0
    assert metrics['inputs']['c_thresh'] == low
    # refined only above CTHRESH: no template metrics below it (a warning says why)
    assert all('redshift_template' not in r for r in metrics['regimes'].values())
    assert 'refined only above its CTHRESH' in caplog.text
    # --outdir naming a file: a usage error before any work
    with pytest.raises(SystemExit):
        main(['--catalog', cat, '--truth', paths['truth'], '--outdir', cat] + common)
    # catalogues of two networks are not evaluated together; another network's catalogue
    # never has its metrics recorded in this model's card
    from lbgnet.io.modelfile import read_model_description
    model2 = _small_model(tmp_path, seed=1, name='small2')
    cat3 = str(tmp_path / 'lbg_cnn-model2.fits')
    assert afterburner(['--coadd', other['coadd'], '--redrock', other['redrock'], '--output',
                        cat3, '--priors', str(tmp_path / 'priors3.fits'), '--model',
                        model2]) == 0
    caplog.clear()
    out2 = tmp_path / 'out2'
    assert main(['--catalog', cat, cat3, '--truth', paths['truth'], other['truth'],
                 '--outdir', str(out2), '--c-thresh', str(low)] + common) == 1
    assert 'made by the network' in caplog.text and not out2.exists()
    assert main(['--catalog', cat3, '--truth', other['truth'], '--outdir', str(out2),
                 '--record-as', 'wrong'] + common) == 1
    assert '--record-as would record' in caplog.text and not out2.exists()
    assert 'wrong' not in (read_model_description(model_path)[0]['metadata']
                           .get('heldout_tests') or {})
    caplog.clear()
    assert main(['--catalog', cat3, '--truth', other['truth'], '--outdir', str(out2)]
                + common) == 0                  # a warning names the networks
    assert 'the catalogues were made by' in caplog.text
    caplog.clear()
    assert main(['--catalog', cat3, '--truth', other['truth'], '--outdir', str(out2),
                 '--model', model2, '--nexamples', '2', '--record-as', 'right',
                 '--overwrite']) == 0            # the metrics there were model_path's
    assert 'the catalogues were made by' not in caplog.text
    description = read_model_description(model2)[0]
    assert 'right' in description['metadata']['heldout_tests']
    metrics = json.loads((out2 / OUTPUTS['metrics']).read_text())
    assert metrics['inputs']['network_sha256'] == description['weights_sha256']
    assert 'heldout_tests.right existed; replaced' not in caplog.text
    assert main(['--catalog', cat3, '--truth', other['truth'], '--outdir', str(out2),
                 '--model', model2, '--nexamples', '2', '--record-as', 'right']) == 0
    assert 'heldout_tests.right existed; replaced by these metrics' in caplog.text
    # a model card that cannot be written: refused before the work when its directory is
    # not writable, a one-line error (no traceback) when the write itself fails
    import lbgnet.io.modelfile as modelfile
    caplog.clear()
    with pytest.MonkeyPatch.context() as mp:
        real_access = os.access
        mp.setattr(os, 'access', lambda path, mode: (False if os.path.abspath(path)
                                                     == os.path.dirname(os.path.abspath(model2))
                                                     else real_access(path, mode)))
        assert main(['--catalog', cat3, '--truth', other['truth'], '--outdir',
                     str(tmp_path / 'ro'), '--model', model2, '--record-as', 'ro']) == 1
    assert "--record-as: the model card's directory is not writable" in caplog.text
    assert not (tmp_path / 'ro').exists()

    def read_only(*args, **kwargs):
        raise OSError(30, 'Read-only file system')
    caplog.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(modelfile, 'update_model_metadata', read_only)
        assert main(['--catalog', cat3, '--truth', other['truth'], '--outdir', str(out2),
                     '--model', model2, '--record-as', 'ro']) == 1
    assert 'cannot update the model card (Read-only file system)' in caplog.text
    assert 'Traceback' not in caplog.text
    # catalogue input never needs TensorFlow (it took seconds to import, for nothing)
    import subprocess
    import sys
    code = ('import sys\nfrom lbgnet.scripts.lbg_evaluate import main\n'
            f'assert main({["--catalog", cat3, "--truth", other["truth"], "--model", model2, "--outdir", str(out2)]!r}) == 0\n'
            'print(sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow")))')
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == '[]'
    # Redrock metrics without a true LBG are JSON-ready (undefined -> None)
    truth = {'CLASS': np.array(['QSO'] * 20), 'Z_TRUE': np.full(20, 2.5)}
    tid = fitsio.read(paths['truth'], ext='TRUTH')['TARGETID']
    rr = redrock_metrics([paths['redrock']], [paths['coadd']], truth, [tid])
    json.dumps(rr, allow_nan=False)
    assert rr['n'] == 0


def _rewrite_coadd(src, dst, rows=None, fibermap=None):
    """Copy a coadd keeping spectra `rows` (all HDUs with one row per spectrum) and,
    optionally, replacing its FIBERMAP; headers (TRUTHSUM included) are kept."""
    import fitsio
    with fitsio.FITS(src) as fx:
        hdus = [(h.get_extname(), h.read_header(), h.read() if h.has_data() else None)
                for h in fx]
    nspec = len(dict((n, d) for n, _, d in hdus)['FIBERMAP'])
    rows = np.arange(nspec) if rows is None else rows
    with fitsio.FITS(dst, 'rw', clobber=True) as out:
        for i, (name, hdr, data) in enumerate(hdus):
            if name == 'FIBERMAP' and fibermap is not None:
                data = fibermap
            if data is not None and data.shape[:1] == (nspec,) and not name.endswith('WAVELENGTH'):
                data = data[rows]
            out.write(data, header=hdr, **({'extname': name} if i else {}))
    return dst


def test_coadd_input_rows_checked_and_excluded_like_catalogues(tmp_path, caplog):
    """Coadd input refuses duplicated TARGETIDs and truth objects without a spectrum
    (they were counted twice / silently dropped, while catalogue input refused both),
    and leaves out the spectra catalogue input leaves out: by LBG_FLAG, not by
    ``COADD_FIBERSTATUS != 0`` (which dropped harmless bits and kept sky fibres)."""
    import fitsio
    from desispec.maskbits import fibermask
    from lbgnet.config import load_config
    from lbgnet.io.evaluation import read_coadd_for_evaluation
    from lbgnet.scripts.lbg_evaluate import main
    paths = _mock_files(tmp_path, nspec=12)
    model_path = _small_model(tmp_path)
    nspec = 12
    for name, rows, message in (('dup', np.r_[np.arange(nspec), 0], 'duplicated TARGETIDs'),
                                ('cut', np.arange(3, nspec),
                                 '3 TARGETID(s) of truth-lbgmock-dark-7.fits have no row in this coadd')):
        bad = _rewrite_coadd(paths['coadd'], str(tmp_path / f'coadd-{name}.fits'), rows)
        caplog.clear()
        assert main(['--coadd', bad, '--truth', paths['truth'], '--outdir',
                     str(tmp_path / 'out'), '--no-refine', '--model', model_path]) == 1
        assert message in caplog.text, caplog.text
    # the truth of another file (--truth in another order than --coadd): said so
    from astropy.table import Table
    other = Table.read(paths['truth'], 'TRUTH')
    other['TARGETID'] += 10 ** 9
    other.write(str(tmp_path / 'truth-other.fits'))
    caplog.clear()
    assert main(['--coadd', paths['coadd'], '--truth', str(tmp_path / 'truth-other.fits'),
                 '--outdir', str(tmp_path / 'out'), '--no-refine', '--model', model_path]) == 1
    assert ('none of the 12 TARGETIDs of truth-other.fits is in this coadd: the truth of '
            'another file? (--truth lists one truth file per coadd, in the same order)'
            in caplog.text), caplog.text
    fibermap = fitsio.read(paths['coadd'], ext='FIBERMAP')
    fibermap['COADD_FIBERSTATUS'][:] = 0
    fibermap['OBJTYPE'][0] = 'SKY'
    fibermap['COADD_FIBERSTATUS'][1] = fibermask.mask('LOWTRANSMISSION')
    fibermap['COADD_FIBERSTATUS'][2] = fibermask.mask('BROKENFIBER')
    flagged = _rewrite_coadd(paths['coadd'], str(tmp_path / 'coadd-flags.fits'),
                             fibermap=fibermap)
    good = read_coadd_for_evaluation(flagged, load_config())[2]
    np.testing.assert_array_equal(good[:3], [False, True, False])


def test_loss_plot_axis_follows_the_sign_of_the_losses(tmp_path):
    """Direct/hybrid losses can be negative: they must stay visible (linear axis)."""
    import matplotlib.image
    from lbgnet import plots
    axes = []
    real = plots.Figure.add_subplot

    def keep(self, *args, **kwargs):
        ax = real(self, *args, **kwargs)
        axes.append(ax)
        return ax

    import unittest.mock
    with unittest.mock.patch.object(plots.Figure, 'add_subplot', keep):
        plots.plot_loss_curves({'loss': [2.0, 1.0], 'val_loss': [2.5, 1.2]}, str(tmp_path / 'a.png'))
        plots.plot_loss_curves({'loss': [0.5, -0.3], 'val_loss': [0.4, -0.1],
                                'val_score': [0.5, 0.6]}, str(tmp_path / 'b.png'))
    assert [ax.get_yscale() for ax in axes[:2]] == ['log', 'linear']   # (then the twin axis)
    assert matplotlib.image.imread(str(tmp_path / 'b.png')).shape[0] > 100


def _population(rng, n=3000):
    """Objects of a known generating process: half LBGs, a noisy score, redshift errors."""
    is_true = rng.random(n) < 0.5
    score = np.clip(np.where(is_true, rng.normal(0.75, 0.2, n), rng.normal(0.3, 0.2, n)), 0, 1)
    z_true = rng.uniform(2.0, 4.0, n)
    outlier = rng.random(n) < 0.1
    z_pred = z_true + np.where(outlier, rng.uniform(-0.5, 0.5, n), rng.normal(0, 2e-3, n) * (1 + z_true))
    return is_true, score, z_true, z_pred


def test_bootstrap_errors_match_the_sampling_spread(monkeypatch):
    """Errors from one sample agree with the spread of the metrics over independent samples."""
    rng = np.random.default_rng(3)
    samples = [_population(rng) for _ in range(150)]

    def metrics(is_true, score, z_true, z_pred):
        sel = score > 0.5
        good = sel & is_true
        red = redshift_metrics(z_true[good], z_pred[good])
        return [pe_score(is_true, score)[0], good.sum() / is_true.sum(), good.sum() / sel.sum(),
                red['frac_dz_lt_0p05'], red['sigma_nmad']]

    spread = np.std([metrics(*s) for s in samples], axis=0, ddof=1)
    is_true, score, z_true, z_pred = samples[0]
    err = bootstrap_errors(is_true, score > 0.5, score, z_true, {'redshift': z_pred})
    boot = [err['pe_score'], err['efficiency'], err['purity'],
            err['redshift']['frac_dz_lt_0p05'], err['redshift']['sigma_nmad']]
    assert np.all(spread > 0)
    np.testing.assert_allclose(boot, spread, rtol=0.3)
    # binomial check of the efficiency error
    eff = ((score > 0.5) & is_true).sum() / is_true.sum()
    assert err['efficiency'] == pytest.approx(np.sqrt(eff * (1 - eff) / is_true.sum()), rel=0.2)
    # the vectorised redshift part is redshift_metrics on each resample
    from lbgnet.evaluate import BOOT_SEED
    idx = np.random.default_rng(BOOT_SEED).integers(0, is_true.size, size=(20, is_true.size))
    small = bootstrap_errors(is_true, score > 0.5, score, z_true, {'z': z_pred}, nboot=20)
    per = [redshift_metrics(z_true[i][((score > 0.5) & is_true)[i]],
                            z_pred[i][((score > 0.5) & is_true)[i]]) for i in idx]
    assert small['z']['sigma_nmad'] == pytest.approx(np.std([p['sigma_nmad'] for p in per], ddof=1),
                                                     rel=1e-9)
    assert small['z']['frac_dz_lt_0p05'] == pytest.approx(
        np.std([p['frac_dz_lt_0p05'] for p in per], ddof=1), rel=1e-9)
    # ... and purity, efficiency and the score are theirs on each resample (the spread
    # check above cannot tell purity's error from efficiency's in this population)
    sel = score > 0.5
    for key, metric in (('purity', lambda i: (sel[i] & is_true[i]).sum() / sel[i].sum()),
                        ('efficiency', lambda i: (sel[i] & is_true[i]).sum() / is_true[i].sum()),
                        ('pe_score', lambda i: pe_score(is_true[i], score[i])[0])):
        assert small[key] == pytest.approx(np.std([metric(i) for i in idx], ddof=1), rel=1e-9), key
    # reproducible (fixed seed), whatever the memory chunking, and zero spread for a
    # perfect selection
    assert bootstrap_errors(is_true, score > 0.5, score, z_true, {'redshift': z_pred}) == err
    import lbgnet.evaluate
    monkeypatch.setattr(lbgnet.evaluate, 'BOOT_CHUNK', 7 * is_true.size)
    assert bootstrap_errors(is_true, score > 0.5, score, z_true, {'redshift': z_pred}) == err
    perfect = bootstrap_errors(is_true, is_true, is_true.astype(float), z_true, {'r': z_true})
    assert perfect['pe_score'] == perfect['efficiency'] == perfect['purity'] == 0.0
    assert perfect['r'] == {'frac_dz_lt_0p05': 0.0, 'sigma_nmad': 0.0}
    # |dz| = 0.05 itself is outside, as in redshift_metrics (z_true 0: exact errors): half
    # of the LBGs within, a fraction that varies between resamples
    edge = bootstrap_errors(np.ones(20, bool), np.ones(20, bool), np.ones(20), np.zeros(20),
                            {'r': np.tile([0.05, 0.0], 10)}, nboot=50)
    assert edge['r']['frac_dz_lt_0p05'] > 0.05
    # one LBG among ten objects: resamples without it are left out, not counted as 0
    one = np.zeros(10, bool)
    one[3] = True
    few = bootstrap_errors(one, one, one.astype(float), np.full(10, 3.0), {'r': np.full(10, 3.0)},
                           nboot=50)
    assert few['pe_score'] == 0.0 and few['efficiency'] == 0.0 and few['r']['sigma_nmad'] == 0.0
    with pytest.raises(ValueError, match='nboot'):
        bootstrap_errors(one, one, one.astype(float), np.ones(10), {}, nboot=0)
    # no true LBG: undefined, not zero
    none = bootstrap_errors(np.zeros(5, bool), np.ones(5, bool), np.ones(5), np.ones(5), {'r': np.ones(5)})
    assert np.isnan(none['pe_score']) and np.isnan(none['r']['sigma_nmad'])


def test_redshift_errors_report_the_pulls_of_right_redshifts():
    """redshift_errors: pulls of the selected true LBGs with right redshifts only; errors
    twice too small show up as a pull NMAD of 2."""
    from lbgnet.evaluate import evaluate_regime
    rng = np.random.default_rng(11)
    n = 3000
    cls = np.where(np.arange(n) % 4 == 0, 'STAR', 'LBG')
    z_true = rng.uniform(2, 4, n)
    sigma = rng.uniform(2e-4, 2e-3, n)
    z = z_true + sigma * rng.standard_normal(n)
    z[:50] += 0.3                                           # wrong redshifts: left out
    pred = {'C_LBG': np.where(cls == 'LBG', 0.9, 0.1), 'IS_LBG': cls == 'LBG', 'Z_LBG': z,
            'Z_BESTLINE': z, 'ZERR_LBG': sigma / 2, 'Z_TPL': z, 'ZERR_TPL': sigma}
    truth = {'CLASS': cls, 'Z_TRUE': z_true, 'RMAG': np.full(n, 23.0)}
    out = evaluate_regime(truth, pred, 0.5, np.linspace(0, 1, 11), np.array([2.0, 4.0]),
                          np.array([22.0, 25.0]))
    errs = out['redshift_errors']
    nright = int(((cls == 'LBG') & (np.arange(n) >= 50)).sum())
    assert errs['ZERR_TPL']['n'] == errs['ZERR_LBG']['n'] == nright
    assert errs['ZERR_TPL']['nmad_pull'] == pytest.approx(1.0, abs=0.06)
    assert errs['ZERR_TPL']['frac_within_1sigma'] == pytest.approx(0.683, abs=0.03)
    assert errs['ZERR_LBG']['nmad_pull'] == pytest.approx(2.0, abs=0.12)


def test_coadd_input_runs_the_network_as_the_afterburner(tmp_path):
    """On a coadd, desi_lbg_evaluate runs the network as the afterburner does (its engine,
    over all spectra in the same batches, dead fibres included, before the cut): the
    predictions equal the catalogue's bit for bit and the metrics are the same; --engine
    keras agrees to rounding; the engine is recorded; the numpy engine runs without Keras
    and TensorFlow."""
    import subprocess
    import sys
    import fitsio
    from lbgnet.evalinputs import predict_coadd
    from lbgnet.network import ENGINES, load_network
    from lbgnet.scripts.lbg_afterburner import main as afterburner
    from lbgnet.scripts.lbg_evaluate import OUTPUTS, main
    paths = _mock_files(tmp_path, nspec=60, seed=31)
    model_path = _small_model(tmp_path)
    cat = str(tmp_path / 'lbg_cnn-mock.fits')
    assert afterburner(['--coadd', paths['coadd'], '--redrock', paths['redrock'], '--output', cat,
                        '--priors', str(tmp_path / 'priors.fits'), '--model', model_path,
                        '--no-refine']) == 0
    table = fitsio.read(cat, ext='LBG_CNN')
    network = load_network(model_path)
    tid, res, _, conf, _, all_tid = predict_coadd(paths['coadd'], network, None, None)
    assert 0 < tid.size < all_tid.size == len(table)          # some dead fibres left out
    rows = np.searchsorted(table['TARGETID'], tid, sorter=np.argsort(table['TARGETID']))
    rows = np.argsort(table['TARGETID'])[rows]
    assert np.array_equal(table['TARGETID'][rows], tid)
    for key in ('C_LBG', 'Z_LBG', 'ZERR_LBG'):
        assert np.array_equal(table[key][rows], res[key].astype(table[key].dtype),
                              equal_nan=True), key
    assert np.array_equal(table['IS_LBG'][rows], res['IS_LBG'])

    def metrics(name, *options):
        out = tmp_path / name
        assert main([*options, '--truth', paths['truth'], '--model', model_path, '--outdir',
                     str(out), '--nexamples', '0']) == 0
        return json.loads((out / OUTPUTS['metrics']).read_text())
    from_cat = metrics('ev-cat', '--catalog', cat)
    from_coadd = metrics('ev-coadd', '--coadd', paths['coadd'], '--no-refine', '--threads', '2')
    assert from_cat['inputs']['engine'] == from_coadd['inputs']['engine'] == 'numpy'
    assert from_coadd['regimes'] == from_cat['regimes']
    with_keras = metrics('ev-keras', '--coadd', paths['coadd'], '--no-refine', '--engine', 'keras')
    assert with_keras['inputs']['engine'] == 'keras'
    for name, reg in with_keras['regimes'].items():
        assert reg['nlbg'] == from_coadd['regimes'][name]['nlbg']
        if reg['nlbg']:
            assert reg['pe_score'] == pytest.approx(from_coadd['regimes'][name]['pe_score'],
                                                    abs=1e-6)
    for engine in ENGINES:                 # a catalogue holds its engine's outputs
        with pytest.raises(SystemExit):
            main(['--catalog', cat, '--truth', paths['truth'], '--outdir', str(tmp_path / 'x'),
                  '--engine', engine])
    with pytest.raises(SystemExit):
        main(['--coadd', paths['coadd'], '--truth', paths['truth'], '--outdir',
              str(tmp_path / 'x'), '--threads', '0'])
    driver = tmp_path / 'driver.py'          # importing Keras or TensorFlow fails
    driver.write_text('import sys\nsys.modules["keras"] = None\nsys.modules["tensorflow"] = None\n'
                      'from lbgnet.scripts.lbg_evaluate import main\n'
                      'sys.exit(main(sys.argv[1:]))\n')
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), '..', 'py'))
    args = ['--coadd', paths['coadd'], '--truth', paths['truth'], '--model', model_path,
            '--no-refine', '--nexamples', '0', '--outdir', str(tmp_path / 'ev-nokeras')]
    proc = subprocess.run([sys.executable, str(driver), *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / 'ev-nokeras' / OUTPUTS['metrics']).read_text())['regimes'] \
        == from_coadd['regimes']
    proc = subprocess.run([sys.executable, str(driver), *args, '--engine', 'keras'], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and 'keras' in (proc.stdout + proc.stderr).lower()


def test_reliable_is_the_good_lbg_sample(tmp_path):
    """``reliable`` counts exactly the GOOD_LBG true LBGs of desi_lbg_zcatalog's selection,
    from an afterburner catalogue and from its coadd alike; a LOW_COVERAGE bit on a
    GOOD_LBG row takes it out of both (it once stayed in ``reliable``)."""
    import fitsio
    from lbgnet.bitmask import LBGWarnMask
    from lbgnet.io.catalog import read_catalog
    from lbgnet.scripts.lbg_afterburner import main as afterburner
    from lbgnet.scripts.lbg_evaluate import OUTPUTS, main
    from lbgnet.zcatalog import good_lbg
    paths = _mock_files(tmp_path, nspec=60, seed=23)
    cat = str(tmp_path / 'lbg_cnn.fits')
    assert afterburner(['--coadd', paths['coadd'], '--redrock', paths['redrock'],
                        '--output', cat, '--priors', str(tmp_path / 'priors.fits')]) == 0

    def reliable(option, path, name):
        assert main([option, path, '--truth', paths['truth'], '--outdir', str(tmp_path / name),
                     '--nexamples', '0']) == 0
        m = json.loads((tmp_path / name / OUTPUTS['metrics']).read_text())['regimes']['all']
        return m['reliable'], m['nlbg']

    def good_true(table):
        truth = fitsio.read(paths['truth'])
        lbg = truth['TARGETID'][np.char.strip(truth['CLASS'].astype(str)) == 'LBG']
        return good_lbg(table) & np.isin(np.asarray(table['TARGETID']), lbg)

    table, _ = read_catalog(cat)
    ngood = int(good_true(table).sum())
    assert ngood > 3
    from_cat, nlbg = reliable('--catalog', cat, 'ev-cat')
    from_coadd, _ = reliable('--coadd', paths['coadd'], 'ev-coadd')
    assert round(from_cat['efficiency'] * nlbg) == ngood
    assert [from_cat[k] for k in ('efficiency', 'purity', 'kept')] == pytest.approx(
        [from_coadd[k] for k in ('efficiency', 'purity', 'kept')])
    row = int(np.flatnonzero(good_true(table))[0])
    with fitsio.FITS(cat, 'rw') as fx:
        flag = fx['LBG_CNN']['LBG_FLAG'][:]
        flag[row] |= LBGWarnMask().LOW_COVERAGE
        fx['LBG_CNN'].write_column('LBG_FLAG', flag)
    flagged, _ = reliable('--catalog', cat, 'ev-flagged')
    assert round(flagged['efficiency'] * nlbg) == ngood - 1


def test_efficiency_figure_has_the_title(monkeypatch):
    """--title is the title of every figure; efficiency.png had none."""
    from lbgnet import plots
    figures = []
    monkeypatch.setattr(plots, 'save_png', lambda fig, path: figures.append(fig) or path)
    bins = {'edges': [2.0, 3.0, 4.0], 'efficiency': [0.5, 0.9], 'ntrue': [10, 20]}
    plots.plot_efficiency_bins({'all': {'efficiency_vs_z': bins, 'efficiency_vs_mag': bins}},
                               'eff.png', title='midz test')
    assert figures[0]._suptitle is not None and figures[0]._suptitle.get_text() == 'midz test'


def test_redshift_figure_counts_the_points_beyond_its_panel(monkeypatch):
    """The Δz/(1+z) panel spans ±0.01, the catastrophic cut: the catastrophic redshifts
    vanished from it without a word."""
    from lbgnet import plots
    figures = []
    monkeypatch.setattr(plots, 'save_png', lambda fig, path: figures.append(fig) or path)
    z_true = np.array([2.0, 2.5, 3.0, 3.5, 4.0])
    z_lbg = z_true * np.array([1.0, 1.0, 1.2, 0.7, 1.0])            # two catastrophic
    plots.plot_redshift(z_true, z_lbg, 'z.png', z_template=z_true + 1e-4)
    ax2 = figures[0].axes[1]
    assert ax2.get_title().endswith('Z_LBG 2, Z_TPL 0')
    ys = np.concatenate([line.get_ydata() for line in ax2.lines if len(line.get_ydata())])
    lo, hi = ax2.get_ylim()
    assert np.sum((ys > 0.9 * hi) & (ys <= hi)) == 1 and np.sum((ys < 0.9 * lo) & (ys >= lo)) == 1


def test_purity_efficiency_figure_marks_the_score_and_the_threshold(monkeypatch):
    from lbgnet import plots
    figures = []
    monkeypatch.setattr(plots, 'save_png', lambda fig, path: figures.append(fig) or path)
    curve = {'threshold': [0.1, 0.5, 0.9], 'purity': [0.6, 0.8, 0.95],
             'efficiency': [0.99, 0.8, 0.4]}
    metrics = {'all': {'pe_score': 0.8, 'pe_threshold': 0.5, 'c_thresh': 0.7, 'curve': curve},
               'midz': {'pe_score': None, 'c_thresh': 0.7}}
    plots.plot_purity_efficiency(metrics, 'pe.png')
    ax = figures[0].axes[0]
    points = [(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.lines
              if line.get_marker() == 'o']
    assert points == [((0.5,), (0.8,))]
    assert any(tuple(line.get_xdata()) == (0.7, 0.7) for line in ax.lines)
    assert 'selection threshold 0.700' in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_ylim()[0] == 0.5
    # a weak model (score 0.3): its point stays in view
    weak = {'all': dict(metrics['all'], pe_score=0.3, curve=dict(curve, purity=[0.2, 0.3, 0.35]))}
    plots.plot_purity_efficiency(weak, 'pe.png')
    lo, hi = figures[-1].axes[0].get_ylim()
    assert lo < 0.3 < hi


def minimal_catalogue():
    """The columns every afterburner catalogue has, for three rows (no line, no flag)."""
    from astropy.table import Table
    t = Table(meta={'EXTNAME': 'LBG_CNN'})
    t['TARGETID'] = np.arange(3, dtype=np.int64)
    t['C_LBG'] = np.float32([0.9, 0.2, 0.95])
    t['IS_LBG'] = [True, False, True]
    t['Z_LBG'] = [2.5, 3.1, 4.0]
    return t


def test_catalogue_best_line_redshift_of_rows_without_line_columns(tmp_path):
    """A direct network writes NaN line columns: read back, Z_BESTLINE is Z_LBG (as in memory)."""
    from lbgnet.config import load_config
    from lbgnet.io.evaluation import read_prediction_catalog
    names = load_config().lines.names
    t = minimal_catalogue()
    for n in names:
        t[f'C_{n}'] = np.full(3, np.nan, np.float32)
        t[f'Z_{n}'] = np.full(3, np.nan)
    t[f'C_{names[2]}'][0], t[f'Z_{names[2]}'][0] = 0.8, 2.49      # a line-finder row
    # a more confident line without a redshift (NaN offset) is skipped, as postprocess
    # does (the catalogue path gave NaN, a best-line failure the coadd path did not count)
    t[f'C_{names[0]}'][0] = 0.9
    path = tmp_path / 'lbg_cnn-direct.fits'
    t.write(path)
    out = read_prediction_catalog(path, names)
    np.testing.assert_array_equal(out['Z_BESTLINE'], [2.49, 3.1, 4.0])


def test_missing_redshift_is_a_failure_in_every_rate():
    """A NaN predicted redshift failed |dz| < 0.05 but was not catastrophic, and made
    sigma_NMAD NaN."""
    out = redshift_metrics(np.full(4, 3.0), np.array([3.0, 3.001, 3.5, np.nan]))
    assert out['frac_dz_lt_0p05'] == 0.5 and out['catastrophic_rate'] == 0.5
    x = np.array([0.0, 0.001, 0.5]) / 4.0
    assert out['sigma_nmad'] == pytest.approx(1.4826 * np.median(np.abs(x - np.median(x))))
    assert out['median_dz_1pz'] == pytest.approx(np.median(x))


def test_catalogue_without_lbg_flag_is_warned_about(tmp_path, caplog):
    """Without LBG_FLAG no dead or sky fibre can be left out as from a coadd: say so."""
    import logging
    from lbgnet.config import load_config
    from lbgnet.evalinputs import read_catalog_input
    names = load_config().lines.names
    t = minimal_catalogue()
    path = tmp_path / 'lbg_cnn-noflag.fits'
    t.write(path)
    with caplog.at_level(logging.WARNING):
        read_catalog_input(str(path), names, False, None)
    assert 'no LBG_FLAG column' in caplog.text
    caplog.clear()
    t['LBG_FLAG'] = np.zeros(3, np.int32)
    t.write(path, overwrite=True)
    with caplog.at_level(logging.WARNING):
        read_catalog_input(str(path), names, False, None)
    assert 'LBG_FLAG' not in caplog.text


def test_template_redshift_metrics_use_z_tpl_with_the_cnn_fallback():
    """redshift_template uses Z_TPL where finite and Z_LBG where the refinement skipped a
    target (before only a slow end-to-end test noticed Z_LBG used throughout)."""
    n = 40
    classes = np.array(['LBG'] * 30 + ['QSO'] * 10)
    z = np.where(classes == 'LBG', np.linspace(2.0, 4.0, n), 1.0)
    truth = {'CLASS': classes, 'Z_TRUE': z, 'RMAG': np.full(n, 23.0)}
    c_lbg = np.where(classes == 'LBG', 0.9, 0.1)
    z_lbg = z + 0.2                                   # every CNN redshift wrong
    z_tpl = z.copy()                                  # every refined one right ...
    z_tpl[:10] = np.nan                               # ... where the refinement ran
    pred = {'C_LBG': c_lbg, 'IS_LBG': c_lbg > 0.5, 'Z_LBG': z_lbg, 'Z_BESTLINE': z_lbg,
            'Z_TPL': z_tpl}
    out = evaluate_predictions(truth, pred, 0.5)['all']
    assert out['redshift']['frac_dz_lt_0p05'] == 0.0
    assert out['redshift_template']['frac_dz_lt_0p05'] == pytest.approx(20 / 30)


def test_regime_scores_mean_is_over_the_regimes_with_lbgs():
    """The mean that ranks tuning trials and picks checkpoints averages low/mid/high z
    (those with LBGs), never the 'all' mixture."""
    from lbgnet.predict import regime_scores
    rng = np.random.default_rng(4)
    classes = np.array(['LBG'] * 60 + ['QSO'] * 40)
    z = np.concatenate([np.full(40, 2.2), np.full(20, 3.0), np.full(40, 1.0)])
    c_lbg = np.concatenate([rng.uniform(0.5, 1.0, 40), rng.uniform(0.0, 0.6, 20),
                            rng.uniform(0.0, 0.55, 40)])
    out = regime_scores({'C_LBG': c_lbg}, {'CLASS': classes, 'Z_TRUE': z})
    assert np.isnan(out['highz']) and out['lowz'] != out['midz']
    assert out['mean'] == pytest.approx(np.mean([out['lowz'], out['midz']]))
    assert out['mean'] != pytest.approx(np.mean([out['lowz'], out['midz'], out['all']]))


def test_curve_thresholds_follow_the_scores():
    """The purity/efficiency curve is sampled where the objects are: with confidences
    crowded near 1 (as the shipped network's are), evenly spaced thresholds left about ten
    points for the part of the curve between efficiency 1 and 0; quantiles of the scores add
    points there, and the even grid stays."""
    from lbgnet.evaluate import curve_thresholds, evaluate_predictions
    rng = np.random.default_rng(3)
    score = 1.0 - rng.exponential(0.02, 1000).clip(0, 1)      # crowded near 1
    score[:5] = np.nan                                        # blank spectra
    thr = curve_thresholds(score, 101)
    assert np.all(np.diff(thr) > 0) and thr[0] == 0.0 and thr[-1] <= 1.0
    assert np.isin(np.linspace(0.0, 1.0, 101), thr).all()
    assert np.count_nonzero(thr > 0.95) >= 50
    assert np.array_equal(curve_thresholds(np.array([np.nan]), 11), np.linspace(0, 1, 11))
    # scores of exactly 0 and 1 are objects too (their quantiles count); scores outside
    # [0, 1] are not
    edge = np.array([0.0] * 6 + [0.3, 0.6, 1.0, 1.0, 2.0, -1.0])
    quantiles = np.quantile(edge[:10], np.linspace(0.0, 1.0, 5))
    assert np.array_equal(curve_thresholds(edge, 5),
                          np.unique(np.concatenate([np.linspace(0.0, 1.0, 5), quantiles])))
    truth = {'CLASS': np.where(np.arange(1000) % 2, 'LBG', 'QSO'), 'Z_TRUE': np.full(1000, 3.0),
             'RMAG': np.full(1000, 23.0)}
    pred = {'C_LBG': score, 'IS_LBG': score > 0.97, 'Z_LBG': np.full(1000, 3.0),
            'Z_BESTLINE': np.full(1000, 3.0)}
    curve = evaluate_predictions(truth, pred, 0.97)['all']['curve']
    eff = np.asarray(curve['efficiency'], dtype=float)
    # efficiency falls from 1 to 0 over many points, not in a few 0.01 steps
    assert np.count_nonzero((eff > 0.05) & (eff < 0.95)) >= 50


def test_purity_against_efficiency_panel(monkeypatch):
    """The purity/efficiency figure has a second panel, purity against efficiency, with each
    regime's purity = efficiency point and its operating point at the selection threshold."""
    from lbgnet import plots
    figures = []
    monkeypatch.setattr(plots, 'save_png', lambda fig, path: figures.append(fig) or path)
    curve = {'threshold': [0.2, 0.5, 0.8], 'purity': [0.6, 0.8, 0.95],
             'efficiency': [0.99, 0.8, 0.4]}
    metrics = {'all': {'pe_score': 0.8, 'pe_threshold': 0.5, 'c_thresh': 0.7, 'curve': curve,
                       'efficiency': 0.6, 'purity': 0.9},
               'midz': {'pe_score': None, 'c_thresh': 0.7}}
    plots.plot_purity_efficiency(metrics, 'pe.png')
    ax = figures[0].axes[1]
    assert ax.get_xlabel() == 'efficiency' and ax.get_ylabel() == 'purity'
    curves = [line for line in ax.lines if line.get_linestyle() == '-']
    assert [tuple(line.get_xdata()) for line in curves] == [(0.99, 0.8, 0.4)]
    marks = {line.get_marker(): (tuple(line.get_xdata()), tuple(line.get_ydata()))
             for line in ax.lines if line.get_marker() in ('o', 's')}
    assert marks == {'o': ((0.8,), (0.8,)), 's': ((0.6,), (0.9,))}
