"""
Rules of the post-processing, the error calibration and the threshold choice.

Each test pins one behaviour that a mutation audit of :mod:`lbgnet.postprocess`,
:mod:`lbgnet.zerr`, :mod:`lbgnet.thresholds` and :mod:`lbgnet.config` (selection
ranges) found unpinned by the rest of the suite: the tie tolerance of the candidate
choice, sub-floor lines as centres, the options reaching :func:`combine_lines`, the
error with no line above the floor, the NaN ranking of ``BESTLINE``, the ``n_thresh``
and shape checks, the option defaults and range ends, the non-finite values of
:func:`right_redshifts`, :func:`pull_stats` without right redshifts, the per-bin median
and the logarithmic residual of :func:`fit_calibration`, the three answers of
:func:`calibration_status` and the mean over regimes of :func:`choose_from_scores`.

All inputs are small hand-built numpy arrays (no TensorFlow, no files).
"""
import dataclasses
import warnings

import numpy as np
import pytest

from lbgnet.config import ConfigError, config_from_dict, load_config
from lbgnet.evaluate import pe_score
from lbgnet.labels import encode_boxes
from lbgnet.postprocess import (DEFAULT_OPTIONS, check_options, combine_lines, postprocess,
                                postprocess_options)
from lbgnet.thresholds import choose_from_scores
from lbgnet.zerr import (NMAD_FACTOR, calibrated_error, calibration_status, fit_calibration,
                         pull_stats, right_redshifts)


def line_table(config, rows, fill=1.0):
    """Line confidences and redshifts (nspec, nlines): row i is ``{line: (conf, z)}``;
    the other lines have confidence 0 and redshift `fill`."""
    nlines = len(config.lines)
    c = np.zeros((len(rows), nlines))
    zl = np.full((len(rows), nlines), fill)
    for i, row in enumerate(rows):
        for line, (conf, z) in row.items():
            c[i, line], zl[i, line] = conf, z
    return c, zl


def network_outputs(config, rows):
    """Box confidences and offsets (nspec, nlines, nboxes) of a line finder that puts
    line ``l`` of row i at redshift ``z`` with confidence ``conf`` (``rows[i] = {l: (conf,
    z)}``) and gives every other box confidence 0."""
    nlines = len(config.lines)
    c = np.zeros((len(rows), nlines))
    z = np.full((len(rows), nlines), np.nan)
    for i, row in enumerate(rows):
        for line, (conf, zl) in row.items():
            c[i, line], z[i, line] = conf, zl
    box, offset = encode_boxes(config.lines.wave_array * (1.0 + z), config)
    conf = (box * c[..., None]).astype(np.float32)
    off = np.repeat(offset[..., None], config.nboxes, axis=-1).astype(np.float32)
    return conf, off


def with_postprocess(config, **options):
    """`config` with a ``postprocess`` section holding `options`."""
    return dataclasses.replace(config, extra=dict(config.extra, postprocess=options),
                               source='rules-test-config')


# -- lbgnet.postprocess ------------------------------------------------------------------


def test_equal_support_tolerance_is_one_millionth_relative(config):
    """Supports within 1e-6 (relative) of the largest tie, and the candidate with more
    lines wins; a larger margin is not a tie, at any scale of the confidences."""
    lya, cii, civ = (config.lines.index(n) for n in ('LYA', 'CII', 'CIV'))
    stray, pair = 3.5, {cii: 3.0, civ: 3.001}

    def spectrum(c_stray, c_pair):
        return {lya: (c_stray, stray), **{k: (c_pair, z) for k, z in pair.items()}}

    # 0.45 + 0.45 = 0.9 exactly; 0.05 + 0.05 = 0.1 exactly
    c, zl = line_table(config, [spectrum(0.9 + 0.9e-7, 0.45),     # 1e-7 relative: a tie
                                spectrum(0.9 + 0.9e-5, 0.45),     # 1e-5 relative: not a tie
                                spectrum(0.1 + 3e-7, 0.05),       # 3e-6 relative, 3e-7 absolute
                                spectrum(0.1 + 0.5e-7, 0.05)])    # 5e-7 relative: a tie
    z, _, nagree = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.01)
    z_pair = 0.5 * (3.0 + 3.001)
    assert z[0] == pytest.approx(z_pair, rel=1e-12) and nagree[0] == 2
    assert z[1] == stray and nagree[1] == 1
    assert z[2] == stray and nagree[2] == 1                   # the tolerance is relative
    assert z[3] == pytest.approx(z_pair, rel=1e-12) and nagree[3] == 2


def test_a_tie_counts_only_the_lines_above_the_floor(config):
    """Equal support goes to the candidate with more agreeing lines *that count* (above
    the floor): lines below it, agreeing with the stray line, add no weight and must not
    win its tie either."""
    lya, cii, civ, siiv, aliii = (config.lines.index(n) for n in
                                  ('LYA', 'CII', 'CIV', 'SIIV1393', 'ALIII1854'))
    rows = [{lya: (0.5, 3.5), cii: (0.25, 3.0), civ: (0.25, 3.0),
             siiv: (0.01, 3.5), aliii: (0.01, 3.5)}]      # 0.01: below the 0.05 floor
    c, zl = line_table(config, rows)
    z, _, nagree = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.05)
    assert z[0] == pytest.approx(3.0) and nagree[0] == 2


def test_agreement_is_relative_to_the_candidates_redshift(config):
    """A line agrees with a candidate when |z_line - z_cand| / (1 + z_cand) < agree_tol (the
    candidate's 1 + z, as documented).  Lines A, B, C 0.0401 apart at z = 3: relative to
    B both A (0.0401 / 4.0401) and C agree, so B wins with all three; with the line's own
    1 + z in the denominator A would win with two."""
    zs = np.array([3.0, 3.0401, 3.0802])
    c, zl = line_table(config, [{0: (0.9, zs[0]), 1: (0.5, zs[1]), 2: (0.5, zs[2])}],
                       fill=10.0)
    z, _, nagree = combine_lines(c, zl, config, 0.01, 0.05)
    assert nagree.tolist() == [3]
    np.testing.assert_allclose(z, [np.average(zs, weights=[0.9, 0.5, 0.5])], rtol=0, atol=1e-12)


def test_a_line_below_the_floor_is_no_candidate(config):
    """A sub-floor line between two lines that do not agree with each other agrees with
    both: as a candidate it would gather their summed support (and average 3.0 with
    3.07); it proposes nothing, so the more confident of the two wins alone."""
    lya, cii, civ = (config.lines.index(n) for n in ('LYA', 'CII', 'CIV'))
    # 0.07 / 4 = 0.0175 apart; 0.035 / 4.035 = 0.0087 from the middle one
    c, zl = line_table(config, [{lya: (0.5, 3.0), cii: (0.01, 3.035), civ: (0.45, 3.07)}])
    z, _, nagree = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.05)
    assert z[0] == 3.0 and nagree[0] == 1


def test_configured_agree_tol_and_line_floor_reach_the_combination(config):
    """postprocess uses the configuration's agree_tol and line_floor, each in its place."""
    lya, cii, civ = (config.lines.index(n) for n in ('LYA', 'CII', 'CIV'))
    # 0.08 / 4 = 0.02 apart: two lines (0.4 + 0.3) outweigh Lyα (0.6) by default
    conf, off = network_outputs(config, [{lya: (0.6, 3.0), cii: (0.4, 3.08), civ: (0.3, 3.08)}])

    def run(**options):
        out = postprocess(conf, off, with_postprocess(config, **options), c_thresh=0.5, n_thresh=1)
        return out['Z_LBG'][0], out['NLINES_AGREE'][0]

    z, n = run()
    assert z == pytest.approx(3.08, abs=1e-6) and n == 2
    z, n = run(agree_tol=0.03)                                 # all three agree
    assert z == pytest.approx((0.6 * 3.0 + 0.7 * 3.08) / 1.3, abs=1e-6) and n == 3
    z, n = run(line_floor=0.35)                                # the 0.3 line drops out
    assert z == pytest.approx(3.0, abs=1e-6) and n == 1
    z, n = run(agree_tol=0.03, line_floor=0.35)                # both together
    assert z == pytest.approx((0.6 * 3.0 + 0.4 * 3.08) / 1.0, abs=1e-6) and n == 2


def test_zerr_without_a_line_above_the_floor_is_that_lines_resolution(config):
    """No line passes line_floor: Z_LBG is the most confident line's redshift and ZERR_LBG
    its one-bin resolution floor dwave / sqrt(12) / λ_rest (finite), NLINES_AGREE 0."""
    oi = config.lines.index('OISIII')
    c, zl = line_table(config, [{2: (0.02, 2.0), oi: (0.04, 3.3)}])
    z, zerr, nagree = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.05)
    expected = config.grid.dwave / np.sqrt(12.0) / config.lines.wave_array[oi]
    assert z[0] == 3.3 and nagree[0] == 0
    assert np.isfinite(zerr[0]) and zerr[0] == pytest.approx(expected, rel=1e-12)


def test_bestline_never_names_a_line_without_a_confidence(config):
    """A line whose confidences are all NaN ranks below every number: BESTLINE is the
    most confident line with a confidence, and Z_BESTLINE its (finite) redshift."""
    lya, civ = config.lines.index('LYA'), config.lines.index('CIV')
    conf, off = network_outputs(config, [{0: (0.2, 3.0), civ: (0.7, 3.0)}, {0: (0.2, 3.0)}])
    conf[:, lya, :] = np.nan
    out = postprocess(conf, off, config, c_thresh=0.5, n_thresh=1)
    assert out['BESTLINE'].tolist() == [civ, 0]
    np.testing.assert_allclose(out['Z_BESTLINE'], 3.0, atol=1e-6)


def test_bestline_never_names_a_line_without_a_redshift(config):
    """A line whose best box has a NaN offset (a network gone wrong) has a NaN redshift:
    BESTLINE is the most confident line with a redshift, and Z_BESTLINE finite, as
    Z_LBG leaves such lines out."""
    lya, civ = config.lines.index('LYA'), config.lines.index('CIV')
    conf, off = network_outputs(config, [{lya: (0.9, 3.0), civ: (0.7, 3.0)}])
    off[:, lya, :] = np.nan
    out = postprocess(conf, off, config, c_thresh=0.5, n_thresh=1)
    assert out['BESTLINE'].tolist() == [civ]
    np.testing.assert_allclose(out['Z_BESTLINE'], 3.0, atol=1e-6)
    np.testing.assert_allclose(out['Z_LBG'], 3.0, atol=1e-6)


def test_bestline_follows_the_redshift_rule_of_z_lbg(config):
    """BESTLINE skipped only NaN redshifts: a line at z <= -1 (an infinite or corrupt
    offset; Z_LBG leaves such lines out, :func:`lbgnet.postprocess.line_members`) was
    named, with Z_BESTLINE -inf.  With no line holding a confidence and a redshift (every
    confidence NaN), BESTLINE was 0 and Z_BESTLINE the first line's redshift: now -1 and
    NaN, as for a direct network."""
    lya, civ = config.lines.index('LYA'), config.lines.index('CIV')
    conf, off = network_outputs(config, [{lya: (0.9, 3.0), civ: (0.7, 3.0)},
                                         {lya: (0.9, 3.0), civ: (0.7, 3.0)}])
    off[0, lya, :] = -np.inf                   # Lya at z = -inf
    conf[1] = np.nan                            # no confidence at all
    out = postprocess(conf, off, config, c_thresh=0.5, n_thresh=1)
    assert out['BESTLINE'].tolist() == [civ, -1]
    np.testing.assert_allclose(out['Z_BESTLINE'][0], 3.0, atol=1e-6)
    assert np.isnan(out['Z_BESTLINE'][1])
    np.testing.assert_allclose(out['Z_LBG'][0], 3.0, atol=1e-6)
    # z = -1 itself (1 + z = 0) is no redshift either, for BESTLINE and Z_LBG alike
    from lbgnet.postprocess import best_line
    best, z_best = best_line(np.array([[0.9, 0.5]]), np.array([[-1.0, 2.5]]))
    assert best.tolist() == [1] and z_best.tolist() == [2.5]
    c, zl = line_table(config, [{lya: (0.04, -1.0), civ: (0.03, 2.5)}])   # none above
    z, _, _ = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.05)  # the floor
    assert z.tolist() == [2.5]


def test_a_line_at_an_impossible_redshift_supports_nothing(config):
    """A line whose redshift is below -1 (an edited or corrupt offset) has 1 + z < 0, so
    |z_i - z_j| / (1 + z_i) < tol held for every j: it 'agreed' with every line and pulled
    Z_LBG off (review 2026-12-05).  It now counts as no line."""
    lya, cii, civ = (config.lines.index(n) for n in ('LYA', 'CII', 'CIV'))
    c, zl = line_table(config, [{lya: (0.3, -1.5), cii: (0.45, 3.0), civ: (0.45, 3.0)}])
    z, zerr, nagree = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.05)
    assert z[0] == pytest.approx(3.0) and nagree[0] == 2 and zerr[0] < 0.01


def test_the_fallback_line_has_a_redshift(config):
    """No line above the floor: Z_LBG is the most confident line *with a redshift*, as
    Z_BESTLINE (the fallback took a line with a NaN redshift: Z_LBG NaN, Z_BESTLINE finite)."""
    lya, civ = config.lines.index('LYA'), config.lines.index('CIV')
    conf, off = network_outputs(config, [{lya: (0.04, 3.0), civ: (0.03, 3.44)}])
    off[:, lya, :] = np.nan
    out = postprocess(conf, off, with_postprocess(config, line_floor=0.05), c_thresh=0.5,
                      n_thresh=1)
    assert out['BESTLINE'].tolist() == [civ]
    np.testing.assert_allclose(out['Z_LBG'], out['Z_BESTLINE'], atol=1e-6)
    assert np.isfinite(out['ZERR_LBG']).all()


def test_no_confidence_no_redshift(config):
    """Every confidence NaN: Z_LBG was the redshift of box 0 of line 0 (finite, with a
    small error); it is NaN, as when every offset is NaN."""
    c, zl = line_table(config, [{0: (0.5, 3.0)}, {0: (0.5, 3.0)}])
    c[0, :] = np.nan
    z, zerr, _ = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.05)
    assert np.isnan(z[0]) and np.isnan(zerr[0]) and z[1] == pytest.approx(3.0)


def test_n_thresh_may_equal_the_number_of_lines_not_exceed_it(config):
    """n_thresh = nlines is the lowest line confidence (no refusal); nlines + 1 is refused
    by the range check itself (not by numpy)."""
    nlines = len(config.lines)
    conf = np.zeros((2, nlines, config.nboxes), dtype=np.float32)
    conf[0, :, 3] = np.linspace(0.9, 0.3, nlines)
    conf[1, :, 7] = np.linspace(0.2, 0.8, nlines)
    off = np.full(conf.shape, 0.5, dtype=np.float32)
    out = postprocess(conf, off, config, c_thresh=0.25, n_thresh=nlines)
    np.testing.assert_allclose(out['C_LBG'], [0.3, 0.2], rtol=1e-6)
    assert out['IS_LBG'].tolist() == [True, False]
    with pytest.raises(ValueError, match=f'n_thresh={nlines + 1} must be between 1 and {nlines}'):
        postprocess(conf, off, config, n_thresh=nlines + 1)


def test_offsets_must_have_the_shape_of_the_confidences(config):
    """An offset array of another shape is refused, even one that would broadcast (the
    offsets of one spectrum used for all)."""
    nlines, nboxes = len(config.lines), config.nboxes
    conf = np.full((2, nlines, nboxes), 0.1, dtype=np.float32)
    for shape in [(1, nlines, nboxes), (3, nlines, nboxes), (2, nlines, nboxes - 1),
                  (2, nlines, nboxes, 1)]:
        with pytest.raises(ValueError, match='do not match'):
            postprocess(conf, np.full(shape, 0.5, dtype=np.float32), config)


def test_default_options_are_the_documented_ones(config):
    """agree_tol 0.01 and line_floor 0.05 (doc/model.rst, etc/lbgnet-default.yaml); the
    error calibration's defaults leave the formal errors unchanged; the values are floats."""
    expected = {'agree_tol': 0.01, 'line_floor': 0.05, 'zerr_scale': 1.0, 'zerr_floor': 0.0,
                'zerr_tpl_scale': 1.0, 'zerr_tpl_floor': 0.0}
    assert DEFAULT_OPTIONS == expected
    bare = dataclasses.replace(config, extra={k: v for k, v in config.extra.items()
                                              if k != 'postprocess'})
    assert postprocess_options(bare) == expected
    assert postprocess_options(with_postprocess(config)) == expected
    assert postprocess_options(dataclasses.replace(config, extra={'postprocess': None})) == expected
    partial = postprocess_options(with_postprocess(config, agree_tol=2, zerr_floor=0))
    assert partial == dict(expected, agree_tol=2.0)
    assert all(type(v) is float for v in partial.values())
    shipped = load_config('lbgnet-default.yaml').extra['postprocess']
    assert (shipped['agree_tol'], shipped['line_floor']) == (0.01, 0.05)
    zerr, z = np.array([1e-4, 3e-3]), np.array([2.5, 4.0])
    np.testing.assert_array_equal(
        calibrated_error(zerr, z, expected['zerr_scale'], expected['zerr_floor']), zerr)


def test_option_ranges_are_enforced_at_their_exact_ends(config):
    """postprocess options: line_floor 0 and 1 and zero floors are accepted, anything past
    them, a boolean (not taken as 1 or 0) or a non-finite number is not.  selection:
    c_thresh 0 and 1 and n_thresh = nlines are accepted, a hair outside is refused."""
    for good in [{'line_floor': 0}, {'line_floor': 1}, {'line_floor': 1.0}, {'zerr_floor': 0},
                 {'zerr_tpl_floor': 0.0}, {'agree_tol': 1e-12}, {'zerr_scale': 1e-12},
                 {'zerr_tpl_scale': 3}]:
        check_options(with_postprocess(config, **good))
    for bad, match in [({'line_floor': -1e-12}, r'line_floor must be in \[0, 1\]'),
                       ({'line_floor': 1 + 1e-12}, r'line_floor must be in \[0, 1\]'),
                       ({'zerr_tpl_floor': -1e-300}, 'zerr_tpl_floor must be >= 0'),
                       ({'agree_tol': True}, 'agree_tol must be a finite number'),
                       ({'line_floor': True}, 'line_floor must be a finite number'),
                       ({'zerr_floor': False}, 'zerr_floor must be a finite number'),
                       ({'zerr_floor': np.bool_(False)}, 'zerr_floor must be a finite number'),
                       ({'agree_tol': np.True_}, 'agree_tol must be a finite number'),
                       ({'zerr_scale': float('inf')}, 'zerr_scale must be a finite number'),
                       ({'zerr_floor': float('nan')}, 'zerr_floor must be a finite number')]:
        with pytest.raises(ConfigError, match='^rules-test-config: postprocess.' + match):
            check_options(with_postprocess(config, **bad))
    nlines = len(config.lines)

    def selection(**sel):
        data = config.to_dict()
        data['selection'] = dict(data['selection'], **sel)
        return config_from_dict(data, source='sel-test')

    for c_thresh in (0.0, 1.0, 0, 1):
        assert selection(c_thresh=c_thresh).selection.c_thresh == c_thresh
    assert selection(n_thresh=nlines).selection.n_thresh == nlines
    for bad in [{'c_thresh': -1e-12}, {'c_thresh': 1 + 1e-12}, {'n_thresh': nlines + 1},
                {'n_thresh': 0}]:
        with pytest.raises(ConfigError, match='^sel-test: selection thresholds out of range'):
            selection(**bad)


# -- lbgnet.zerr ---------------------------------------------------------------------------


def test_right_redshifts_leave_out_infinite_values():
    """An infinite redshift or an infinite error is never a right redshift (an infinite
    error would otherwise count as a pull of 0, inside 1σ)."""
    z_true = np.full(6, 3.0)
    z = np.array([3.004, np.inf, -np.inf, 3.004, 3.004, np.nan])
    zerr = np.array([4e-3, 4e-3, 4e-3, np.inf, 8e-3, 4e-3])
    rel_dz, rel_err = right_redshifts(z, zerr, z_true)
    np.testing.assert_allclose(rel_dz, [1e-3, 1e-3])
    np.testing.assert_allclose(rel_err, [1e-3, 2e-3])
    stats = pull_stats(z, zerr, z_true)
    assert stats['n'] == 2
    assert stats['frac_within_1sigma'] == 0.5 and stats['frac_within_2sigma'] == 1.0


def test_right_redshifts_leave_out_impossible_true_redshifts_silently():
    """A true redshift of -1 (1 + z = 0) or an infinite one is no right redshift, without a
    RuntimeWarning from the division."""
    z_true = np.array([-1.0, np.inf, -np.inf, 3.0])
    z = np.array([-1.0, 3.0, 3.0, 3.004])
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        rel_dz, rel_err = right_redshifts(z, np.full(4, 4e-3), z_true)
    np.testing.assert_allclose(rel_dz, [1e-3])
    np.testing.assert_allclose(rel_err, [1e-3])


def test_pull_stats_without_right_redshifts_is_none_and_silent():
    """No right redshift (an empty set, or none right, finite or with an error): n 0 and
    None for every statistic, without a RuntimeWarning (no mean of an empty array)."""
    cases = [([], [], []),
             ([3.5, np.nan, 3.0], [1e-3, 1e-3, 0.0], [3.0, 3.0, 3.0])]
    none = {'n': 0, 'nmad_pull': None, 'frac_within_1sigma': None, 'frac_within_2sigma': None}
    for z, zerr, z_true in cases:
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            out = pull_stats(np.asarray(z, dtype=float), np.asarray(zerr, dtype=float),
                             np.asarray(z_true, dtype=float))
        assert out == none


def symmetric_bins(widths):
    """Five Δz/(1+z) values per bin, ``(-a, -a, 0, a, a)``: median 0, NMAD exactly
    `width` (a = width / 1.4826)."""
    pattern = np.array([-1.0, -1.0, 0.0, 1.0, 1.0])
    return np.concatenate([pattern * w / NMAD_FACTOR for w in widths])


def test_calibration_bins_use_the_median_error():
    """Each bin of the raw error is placed at its median error, not its mean (bins with a
    long tail of large errors)."""
    zerr = np.array([1, 1, 1, 1, 6, 8, 8, 8, 8, 30]) * 1e-4    # means 2e-4 and 12.4e-4
    z_true = np.zeros(zerr.size)
    fit = fit_calibration(symmetric_bins([3e-4, 9e-4]), zerr, z_true, nbins=2, min_objects=1)
    np.testing.assert_allclose(fit['bins']['median_error'], [1e-4, 8e-4], rtol=1e-12)
    np.testing.assert_allclose(fit['bins']['nmad'], [3e-4, 9e-4], rtol=1e-12)


def test_calibration_fits_the_logarithm_of_the_width_ratio():
    """The shape of the calibration (floor / scale, which the final normalisation leaves
    alone) minimises Σ log²(model width / NMAD) over the bins: the profile over the ratio
    r = floor / scale, computed here independently, against a linear, relative or
    variance residual (each off by 3 % or more on these bins).  Errors and Δz are
    relative to 1 + z_true."""
    from scipy.optimize import minimize_scalar
    sigma = np.array([1, 2, 4, 8]) * 1e-4
    width = np.array([6, 5, 7, 12]) * 1e-4                     # no exact solution
    z_true = np.full(20, 2.0)
    fit = fit_calibration(3.0 * symmetric_bins(width) + z_true, 3.0 * np.repeat(sigma, 5),
                          z_true, nbins=4, min_objects=1)

    def cost(r):
        d = np.log(width ** 2) - np.log(sigma ** 2 + r ** 2)  # log scale² is their mean
        return np.sum((d - d.mean()) ** 2)

    best = minimize_scalar(cost, bounds=(0.0, 1e-2), method='bounded',
                           options={'xatol': 1e-13}).x
    assert best == pytest.approx(4.0136e-4, rel=1e-4)
    assert fit['floor'] / fit['scale'] == pytest.approx(best, rel=1e-4)


def test_calibration_status_true_false_and_unknown():
    """True: a fit was stored; False: the training recorded no fit; None: the card does
    not say (no metadata, no or a malformed error_calibration, no entry for the key)."""
    fitted = {'fit': {'scale': 4.3, 'floor': 0.0}}
    unfitted = {'fit': None, 'reason': '1 right redshifts, need at least 40'}
    assert calibration_status({'error_calibration': {'ZERR_LBG': fitted, 'ZERR_TPL': unfitted}}) \
        == {'ZERR_LBG': True, 'ZERR_TPL': False}
    assert calibration_status({'error_calibration': {'ZERR_LBG': unfitted}}) \
        == {'ZERR_LBG': False, 'ZERR_TPL': None}
    for metadata in [None, {}, {'error_calibration': None}, {'error_calibration': 'yes'},
                     {'error_calibration': ['ZERR_LBG']}, {'error_calibration': {}},
                     {'error_calibration': {'ZERR_LBG': 'fitted', 'ZERR_TPL': None}}]:
        assert calibration_status(metadata) == {'ZERR_LBG': None, 'ZERR_TPL': None}


# -- lbgnet.thresholds ---------------------------------------------------------------------


def test_n_thresh_choice_is_the_mean_over_the_regimes():
    """The n_thresh with the best MEAN of the low/mid/high-z scores wins; its minimum,
    median or first regime would each pick another one; equal means go to the smaller
    n_thresh; c_thresh is the purity = efficiency threshold of all objects."""
    zs = (2.2, 3.0, 4.0)                                     # one per regime, 10 LBGs each
    classes = np.array(['LBG'] * 30 + ['QSO'] * 10)
    z_true = np.concatenate([np.full(10, z) for z in zs] + [np.full(10, 1.0)])
    contaminants = np.linspace(0.5, 0.59, 10)

    def scores(fractions):
        """k = 10 p of each regime's LBGs above every contaminant, the others below: the
        regime's purity = efficiency score is p."""
        parts = [np.where(np.arange(10) < round(10 * p), 0.9, 0.01) for p in fractions]
        return np.concatenate(parts + [contaminants])

    regime_scores = {1: (0.4, 0.8, 1.0),      # mean 0.733 (best)  min 0.4  median 0.8
                     2: (0.7, 0.7, 0.7),      # mean 0.7  min 0.7 (best)
                     3: (0.9, 0.5, 0.5),      # mean 0.633  first 0.9 (best)
                     4: (0.0, 0.9, 0.9),      # mean 0.6  median 0.9 (best)
                     5: (0.4, 0.8, 1.0)}      # as n = 1: the tie goes to n = 1
    table_scores = {n: scores(f) for n, f in regime_scores.items()}
    c_thresh, n_thresh, table = choose_from_scores(classes, z_true, table_scores.get,
                                                   (5, 4, 3, 2, 1))
    assert n_thresh == 1
    for n, fractions in regime_scores.items():
        assert table[n]['mean_score'] == pytest.approx(np.mean(fractions), rel=1e-12)
    assert c_thresh == pe_score(classes == 'LBG', table_scores[1])[1]


def test_calibration_needs_two_right_redshifts_per_bin_whatever_min_objects():
    """The least number of right redshifts is max(min_objects, 2 nbins): with
    min_objects=1, 15 right redshifts cannot fill 8 bins with two each (an NMAD of one
    value is 0, no width) and are refused by count; 16 are enough."""
    rel = 1e-4 * np.arange(1, 17) * (-1.0) ** np.arange(16)      # each pair scatters
    zerr = np.linspace(1, 16, 16) * 1e-4
    z_true = np.zeros(16)
    with pytest.raises(ValueError, match='15 right redshifts with an error: need at least 16'):
        fit_calibration(rel[:15], zerr[:15], z_true[:15], nbins=8, min_objects=1)
    assert fit_calibration(rel, zerr, z_true, nbins=8, min_objects=1)['nobj'] == 16


def test_calibration_refuses_a_single_bin_without_scatter():
    """One bin of the raw error whose right redshifts do not scatter (NMAD 0) is enough to
    refuse the fit with the reason: its width would enter the fit as log(0)."""
    zerr = np.array([1, 1, 1, 1, 1, 8, 8, 8, 8, 8]) * 1e-4
    rel_dz = symmetric_bins([3e-4, 0.0])                  # second bin: all Δz = 0
    with pytest.raises(ValueError, match='do not scatter'):
        fit_calibration(rel_dz, zerr, np.zeros(10), nbins=2, min_objects=1)
