"""Post-processing on constructed confidences: redshift recovery, robustness, thresholds."""
import sys
import subprocess

import numpy as np
import pytest

from lbgnet.labels import encode_boxes, line_waves_at
from lbgnet.postprocess import OUTPUT_KEYS, postprocess


def _fake_outputs(z, config, conf_true, rng, noise_conf=0.02):
    """Confidences/offsets a perfect line finder would give for redshifts `z` (NaN: nothing)."""
    box, offset = encode_boxes(line_waves_at(z, config), config)
    nspec, nlines, nboxes = box.shape
    conf = rng.uniform(0, noise_conf, box.shape).astype(np.float32)
    conf = np.where(box > 0, np.asarray(conf_true, dtype=np.float32).reshape(-1, 1, 1)
                    if np.ndim(conf_true) else conf_true, conf)
    off = rng.uniform(0, 1, box.shape).astype(np.float32)
    off = np.where(box > 0, offset[..., None], off).astype(np.float32)
    return conf, off, box


def line_table(config, rows, fill=1.0):
    """Line confidences and redshifts, shape (len(rows), nlines): row i sets lines
    ``rows[i][0]`` to confidences ``rows[i][1]`` and redshifts ``rows[i][2]`` (the other
    lines: confidence 0, redshift `fill`)."""
    nlines = len(config.lines)
    c = np.zeros((len(rows), nlines))
    zl = np.full((len(rows), nlines), fill)
    for i, (idx, conf, z) in enumerate(rows):
        c[i, idx], zl[i, idx] = conf, z
    return c, zl


def test_redshift_recovery_and_keys(config):
    rng = np.random.default_rng(1)
    z = np.array([2.1, 2.9, 3.7, 4.3, np.nan])
    conf, off, box = _fake_outputs(z, config, 0.9, rng)
    out = postprocess(conf, off, config, c_thresh=0.5, n_thresh=2)
    assert set(out) == set(OUTPUT_KEYS)
    assert out['C_LINES'].shape == out['Z_LINES'].shape == (5, len(config.lines))
    np.testing.assert_array_equal(out['IS_LBG'], [True] * 4 + [False])
    np.testing.assert_allclose(out['Z_LBG'][:4], z[:4], atol=1e-4)
    np.testing.assert_allclose(out['Z_BESTLINE'][:4], z[:4], atol=1e-4)
    nin = box.sum(axis=(1, 2))
    np.testing.assert_array_equal(out['NLINES_AGREE'][:4], nin[:4])
    assert np.all(out['ZERR_LBG'][:4] > 0) and np.all(out['ZERR_LBG'][:4] < 1e-3)


def test_one_wrong_confident_line_does_not_move_z_lbg(config):
    """The most confident line is misplaced by 5 boxes: Z_BESTLINE is wrong, Z_LBG is not."""
    rng = np.random.default_rng(2)
    z = np.array([3.1])
    conf, off, box = _fake_outputs(z, config, 0.8, rng)
    ilya = config.lines.index('LYA')
    true_box = int(np.argmax(box[0, ilya]))
    conf[0, ilya, :] = 0.01
    conf[0, ilya, true_box + 5] = 0.99
    out = postprocess(conf, off, config, c_thresh=0.5, n_thresh=1)
    assert abs(out['Z_BESTLINE'][0] - z[0]) > 0.1
    assert out['BESTLINE'][0] == ilya
    assert out['Z_LBG'][0] == pytest.approx(z[0], abs=1e-4)
    assert out['NLINES_AGREE'][0] == box[0].sum() - 1


def test_a_wrong_line_as_confident_as_the_others_together_does_not_win(config):
    """Equal support: the redshift with more agreeing lines is kept."""
    rng = np.random.default_rng(3)
    z = np.array([3.0])
    conf, off, box = _fake_outputs(z, config, 0.45, rng, noise_conf=0.0)
    on = np.flatnonzero(box[0].sum(axis=1))
    wrong, keep = on[0], on[1:3]                     # two true lines at 0.45 each; the
    for line in on[3:]:                              # wrong one first, where argmax looks
        conf[0, line] = 0.0
    true_box = int(np.argmax(box[0, wrong]))
    conf[0, wrong, (true_box + 8) % config.nboxes] = 0.9      # one wrong line at 0.45 + 0.45
    out = postprocess(conf, off, config, c_thresh=0.5, n_thresh=1)
    assert out['Z_LBG'][0] == pytest.approx(z[0], abs=1e-4)
    assert out['NLINES_AGREE'][0] == len(keep)


def test_scatter_enters_zerr(config):
    """Shifting lines apart increases ZERR_LBG; with equal confidences Z_LBG is their plain mean."""
    rng = np.random.default_rng(4)
    z = np.array([3.0, 3.0])
    conf, off, box = _fake_outputs(z, config, 0.9, rng)
    inline = box[1] > 0
    jitter = rng.normal(0, 0.02, inline.sum()).astype(np.float32)
    off[1][inline] += jitter
    out = postprocess(conf, off, config)
    assert out['ZERR_LBG'][1] > 2 * out['ZERR_LBG'][0]
    used = out['C_LINES'][1] > 0.5
    np.testing.assert_allclose(out['Z_LBG'][1], out['Z_LINES'][1][used].mean(), rtol=1e-9)


def test_combine_lines_by_hand(config):
    """Z_LBG is the confidence-weighted mean of the agreeing lines above the floor, and
    ZERR_LBG their weighted scatter / sqrt(n_eff) with each line's own resolution floor."""
    from lbgnet.postprocess import combine_lines
    nlines = len(config.lines)
    lam = config.lines.wave_array
    sig = config.grid.dwave / np.sqrt(12.0) / lam
    c = np.zeros((4, nlines))
    zl = np.full((4, nlines), 1.0)
    # 0: two agreeing lines of unequal confidence, plus one below the floor nearby
    c[0, [2, 7, 9]] = [0.9, 0.3, 0.04]
    zl[0, [2, 7, 9]] = [3.0, 3.004, 3.006]
    # 1: the same without the sub-floor line: identical result
    c[1, [2, 7]], zl[1, [2, 7]] = [0.9, 0.3], [3.0, 3.004]
    # 2: agreement is relative: 0.045 apart at z = 4 is 0.009 in (1+z), inside agree_tol
    c[2, [3, 5]], zl[2, [3, 5]] = [0.8, 0.7], [4.0, 4.045]
    # 3: a single line: its own floor
    c[3, 11], zl[3, 11] = 0.6, 2.5
    # 4: two lines 0.009 apart in (1+z) at z = 4 together outweigh a more confident stray one
    c = np.vstack([c, np.zeros(nlines)])
    zl = np.vstack([zl, np.full(nlines, 1.0)])
    c[4, [3, 5, 12]], zl[4, [3, 5, 12]] = [0.5, 0.45, 0.6], [4.0, 4.045, 3.2]
    z, zerr, nagree = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.05)
    assert z[4] == pytest.approx((0.5 * 4.0 + 0.45 * 4.045) / 0.95, rel=1e-12) and nagree[4] == 2
    w = np.array([0.9, 0.3])
    zbar = (w * [3.0, 3.004]).sum() / w.sum()
    var = (w * (np.array([3.0, 3.004]) - zbar) ** 2).sum() / w.sum()
    neff = w.sum() ** 2 / (w ** 2).sum()
    floor = np.sqrt((w ** 2 * sig[[2, 7]] ** 2).sum()) / w.sum()
    np.testing.assert_allclose(z[:2], zbar, rtol=1e-12)
    np.testing.assert_allclose(zerr[:2], np.sqrt(var / neff + floor ** 2), rtol=1e-9)
    assert list(nagree[:3]) == [2, 2, 2]
    assert z[2] == pytest.approx((0.8 * 4.0 + 0.7 * 4.045) / 1.5, rel=1e-12)
    assert z[3] == 2.5 and zerr[3] == pytest.approx(sig[11], rel=1e-12) and nagree[3] == 1


def test_combine_lines_support_is_the_weight_of_the_mean(config):
    """A candidate's support counts exactly the lines averaged into Z_LBG: a line whose
    distance to the confident lines is just inside the tolerance relative to their
    redshift but outside it relative to its own cannot borrow their support and then
    stand alone (it once won with NLINES_AGREE = 1 over a 0.9 + 0.3 pair)."""
    from lbgnet.postprocess import combine_lines
    # |Δz| = 0.0398: 0.00995 of (1 + 3.0), 0.01005 of (1 + 2.9602)
    c, zl = line_table(config, [([0, 1, 2], [0.9, 0.5, 0.3], [3.0, 2.9602, 3.0]),
                                ([0, 1], [0.9, 0.5], [3.0, 2.9602])])
    z, zerr, nagree = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.05)
    # relative to the candidate 3.0 the 0.5 line agrees (0.00995): it joins that mean;
    # relative to its own 2.9602 the 0.9 line does not (0.01005): it has no support
    z3 = (0.9 * 3.0 + 0.5 * 2.9602 + 0.3 * 3.0) / 1.7
    z2 = (0.9 * 3.0 + 0.5 * 2.9602) / 1.4
    assert z[0] == pytest.approx(z3, rel=1e-12) and nagree[0] == 3
    assert z[1] == pytest.approx(z2, rel=1e-12) and nagree[1] == 2


def test_nan_inputs_do_not_poison_the_combination(config):
    """A NaN redshift on a line outside the agreeing set, or a NaN box confidence, leaves
    Z_LBG and the best box of that line as without it."""
    from lbgnet.postprocess import best_boxes, combine_lines
    nlines, nboxes = len(config.lines), config.nboxes
    c = np.zeros((1, nlines))
    zl = np.full((1, nlines), 1.0)
    c[0, [2, 7]], zl[0, [2, 7]] = [0.9, 0.8], [3.0, 3.001]
    zl[0, 9] = np.nan                                  # below the floor, NaN redshift
    z, zerr, nagree = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.05)
    assert z[0] == pytest.approx((0.9 * 3.0 + 0.8 * 3.001) / 1.7, rel=1e-12)
    assert np.isfinite(zerr[0]) and nagree[0] == 2
    conf = np.zeros((1, nlines, nboxes), dtype=np.float32)
    conf[0, 0, 5], conf[0, 0, 3] = 0.99, np.nan
    c_lines, _ = best_boxes(conf, np.full_like(conf, 0.5), config)
    assert c_lines[0, 0] == pytest.approx(0.99)


def test_thresholds_and_c_lbg(config):
    """C_LBG is the n_th highest line confidence and IS_LBG == C_LBG > c_thresh."""
    rng = np.random.default_rng(5)
    conf = rng.uniform(0, 1, (50, len(config.lines), config.nboxes)).astype(np.float32) ** 4
    off = rng.uniform(0, 1, conf.shape).astype(np.float32)
    for n in (1, 3):
        out = postprocess(conf, off, config, c_thresh=0.7, n_thresh=n)
        expect = np.sort(conf.max(axis=-1), axis=1)[:, -n]
        np.testing.assert_allclose(out['C_LBG'], expect)
        np.testing.assert_array_equal(out['IS_LBG'], expect > 0.7)
    # a confidence exactly at c_thresh is not selected (IS_LBG is C_LBG > c_thresh)
    edge = float(np.float32(0.7))
    conf_eq = np.zeros_like(conf[:1])
    conf_eq[0, :, 0] = edge
    out = postprocess(conf_eq, off[:1], config, c_thresh=edge, n_thresh=1)
    assert out['C_LBG'][0] == edge and not out['IS_LBG'][0]
    default = postprocess(conf, off, config)
    np.testing.assert_array_equal(default['IS_LBG'],
                                  np.sort(conf.max(axis=-1), axis=1)[:, -config.selection.n_thresh]
                                  > config.selection.c_thresh)


def test_empty_and_bad_shapes(config):
    empty = np.zeros((0, len(config.lines), config.nboxes), dtype=np.float32)
    out = postprocess(empty, empty, config)
    assert all(len(v) == 0 for v in out.values())
    with pytest.raises(ValueError, match='nboxes'):
        postprocess(empty[:, :, :3], empty[:, :, :3], config)
    with pytest.raises(ValueError, match='n_thresh'):
        postprocess(empty, empty, config, n_thresh=0)


def test_no_tensorflow_import():
    code = ('import sys, lbgnet.postprocess, lbgnet.evaluate; '
            'sys.exit(int("tensorflow" in sys.modules or "keras" in sys.modules))')
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0


def test_combine_lines_ties_to_rounding_and_no_line_above_the_floor(config):
    """Two lines of 0.3 and 0.6 tie a stray 0.9 only to rounding (0.3 + 0.6 =
    0.8999999999999999 in float64): the redshift with more lines still wins.  With no line
    above the floor Z_LBG is the most confident line's redshift (not the first line's)."""
    from lbgnet.postprocess import combine_lines
    nlines = len(config.lines)
    c = np.zeros((2, nlines))
    zl = np.full((2, nlines), 1.0)
    c[0, [0, 4, 6]], zl[0, [0, 4, 6]] = [0.9, 0.3, 0.6], [3.5, 3.0, 3.001]
    c[1, [2, 5]], zl[1, [2, 5]] = [0.02, 0.04], [2.0, 3.3]
    assert 0.3 + 0.6 < 0.9
    z, _, nagree = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.05)
    assert z[0] == pytest.approx((0.3 * 3.0 + 0.6 * 3.001) / 0.9, rel=1e-12) and nagree[0] == 2
    assert z[1] == 3.3


def test_combine_lines_boundaries_floor_kept_tolerance_excluded(config):
    """A line exactly at line_floor counts; a line exactly agree_tol away does not agree
    (|Δz|/(1+z) < agree_tol, strict, z the candidate's), as documented."""
    from lbgnet.postprocess import combine_lines
    # spectrum 0: lines at z 2.0 (0.5, 0.5) and z 3.0 (0.8): from the candidate 3.0,
    # 1.0 / 4.0 = 0.25 exactly (from 2.0, 1/3); spectrum 1: the only line above 0 sits
    # exactly at the floor: it is the redshift's
    c, zl = line_table(config, [([0, 3, 6], [0.5, 0.5, 0.8], [2.0, 2.0, 3.0]),
                                ([1, 2], [0.5, 0.25], [2.0, 2.2])], fill=9.0)
    z, _, nagree = combine_lines(c, zl, config, agree_tol=0.25, line_floor=0.5)
    assert z[0] == 2.0 and nagree[0] == 2          # 0.5 + 0.5 beat 0.8 alone
    assert nagree[1] == 1 and z[1] == 2.0
    z, _, nagree = combine_lines(c, zl, config, agree_tol=0.2500001, line_floor=0.5)
    assert nagree[0] == 3 and z[0] == pytest.approx(4.4 / 1.8)   # just inside: 3.0 + both
    _, _, nagree = combine_lines(c, zl, config, agree_tol=0.25, line_floor=0.5000001)
    assert nagree[1] == 0                           # just above: no line passes


def test_infinite_confidence_counts_as_certain(config):
    """A +inf line confidence (stored or edited arrays) weighs like 1, not like a weight whose
    0 x inf products blank every candidate's support (Z_LBG then came from line 0, below the
    floor, with NLINES_AGREE 0)."""
    from lbgnet.postprocess import combine_lines
    nlines = len(config.lines)
    ilya = config.lines.index('LYA')
    c = np.full((2, nlines), 0.3)
    zl = np.full((2, nlines), 3.0)
    c[:, 0], zl[:, 0] = 0.01, 2.5
    c[0, ilya], c[1, ilya] = np.inf, 1.0
    z, zerr, nagree = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.05)
    np.testing.assert_array_equal(z, [3.0, 3.0])
    np.testing.assert_array_equal(nagree, [nlines - 1] * 2)
    assert zerr[0] == zerr[1]


def test_offset_on_a_box_edge_stays_inside_the_box(config):
    """A line a rounding error below a box edge: float32 would round its offset to 1.0."""
    edge = config.grid.wave_min + 10 * config.box_width
    box, offset = encode_boxes(np.full((1, len(config.lines)), np.nextafter(edge, 0.0)), config)
    assert np.all(box[0, :, 9] == 1) and np.all(offset < 1.0)
