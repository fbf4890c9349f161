"""Line-finder loss on hand-computed tiny tensors."""
import math

import numpy as np
import pytest

from lbgnet.losses import (LineFinderLoss, box_crossentropy, line_finder_loss,
                           offset_squared_error, resolve_pos_weight)


def _tensors():
    """2 spectra x 1 line x 3 boxes: spectrum 0 has the line in box 1 at offset 0.25,
    spectrum 1 is a non-LBG (all boxes 0)."""
    y_true = np.zeros((2, 1, 3, 2), dtype=np.float32)
    y_true[0, 0, 1] = [1.0, 0.25]
    y_pred = np.zeros((2, 1, 3, 2), dtype=np.float32)
    y_pred[0, 0, :, 0] = [0.2, 0.7, 0.1]
    y_pred[0, 0, :, 1] = [0.9, 0.5, 0.3]      # only 0.5 (box 1) counts
    y_pred[1, 0, :, 0] = [0.1, 0.6, 0.3]
    y_pred[1, 0, :, 1] = [0.0, 1.0, 0.8]      # never counts
    return y_true, y_pred


def test_hand_computed_values():
    y_true, y_pred = _tensors()
    bce0 = -(math.log(0.8) + 2.0 * math.log(0.7) + math.log(0.9)) / 3   # pos_weight 2
    off0 = (0.5 - 0.25) ** 2
    bce1 = -(math.log(0.9) + math.log(0.4) + math.log(0.7)) / 3
    got = np.asarray(line_finder_loss(y_true, y_pred, gamma=3.0, pos_weight=2.0))
    np.testing.assert_allclose(got, [bce0 + 3.0 * off0, bce1], rtol=1e-5)
    # the Keras wrapper averages over spectra
    loss = LineFinderLoss(gamma=3.0, pos_weight=2.0)
    assert float(loss(y_true, y_pred)) == pytest.approx((bce0 + 3 * off0 + bce1) / 2, rel=1e-5)


def test_lines_are_averaged_not_summed():
    """With two lines the loss is the mean of the two single-line losses."""
    y_true, y_pred = _tensors()
    other_true, other_pred = y_true[::-1].copy(), y_pred[::-1].copy()   # another line's boxes
    both_true = np.concatenate([y_true, other_true], axis=1)
    both_pred = np.concatenate([y_pred, other_pred], axis=1)
    one = np.asarray(line_finder_loss(y_true, y_pred, gamma=3.0, pos_weight=2.0))
    two = np.asarray(line_finder_loss(other_true, other_pred, gamma=3.0, pos_weight=2.0))
    got = np.asarray(line_finder_loss(both_true, both_pred, gamma=3.0, pos_weight=2.0))
    assert not np.allclose(one, two)
    np.testing.assert_allclose(got, (one + two) / 2, rtol=1e-6)


def test_components_and_masking():
    y_true, y_pred = _tensors()
    off = np.asarray(offset_squared_error(y_true[..., 0], y_true[..., 1], y_pred[..., 1]))
    np.testing.assert_allclose(off, [[0.0625], [0.0]], atol=1e-7)
    bce = np.asarray(box_crossentropy(y_true[..., 0], y_pred[..., 0], 1.0))
    assert bce.shape == (2, 1)
    # gamma only scales the offset term; the non-LBG row does not depend on gamma or offsets
    a = np.asarray(line_finder_loss(y_true, y_pred, gamma=0.0))
    b = np.asarray(line_finder_loss(y_true, y_pred, gamma=10.0))
    assert b[1] == pytest.approx(a[1]) and b[0] - a[0] == pytest.approx(0.625, rel=1e-5)


def test_offsets_outside_the_true_box_never_count_even_when_not_finite():
    """The offset term was masked by a product (0 x NaN = NaN): a NaN or infinite offset
    in a box that is not the true one made the whole loss NaN (review 2026-12-05)."""
    y_true, y_pred = _tensors()
    expected = np.asarray(line_finder_loss(y_true, y_pred, gamma=3.0, pos_weight=2.0))
    y_pred[0, 0, 0, 1] = np.nan                 # spectrum 0: not its true box
    y_pred[1, 0, :, 1] = [np.inf, -np.inf, np.nan]   # a non-LBG: no true box at all
    got = np.asarray(line_finder_loss(y_true, y_pred, gamma=3.0, pos_weight=2.0))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_perfect_prediction_is_near_zero_and_clipping():
    y_true, _ = _tensors()
    y_pred = y_true.copy()
    assert np.all(np.asarray(line_finder_loss(y_true, y_pred, 1.0, 39.0)) < 1e-5)
    # fully wrong confident predictions stay finite thanks to clipping
    y_bad = 1.0 - y_true
    assert np.all(np.isfinite(np.asarray(line_finder_loss(y_true, y_bad))))


def test_resolve_pos_weight():
    assert resolve_pos_weight('balanced', 40) == 39.0
    assert resolve_pos_weight('balanced', 1) == 1.0       # one box: 0 would never learn it
    assert resolve_pos_weight(2, 40) == 2.0
    with pytest.raises(ValueError, match='balanced'):
        resolve_pos_weight('auto', 40)
    with pytest.raises(ValueError):
        resolve_pos_weight(0, 40)


def test_get_config_round_trip():
    loss = LineFinderLoss(gamma=0.5, pos_weight=7.0)
    clone = LineFinderLoss.from_config(loss.get_config())
    y_true, y_pred = _tensors()
    assert float(clone(y_true, y_pred)) == pytest.approx(float(loss(y_true, y_pred)))
    assert clone.gamma == 0.5 and clone.pos_weight == 7.0


def test_box_crossentropy_is_a_mean_over_any_number_of_boxes():
    """Every other test has 3 boxes, where a mean and a sum / 3 agree."""
    y_true = np.zeros((1, 1, 4), dtype=np.float32)
    y_true[0, 0, 2] = 1.0
    y_pred = np.array([[[0.2, 0.1, 0.6, 0.3]]], dtype=np.float32)
    want = -(math.log(0.8) + math.log(0.9) + 5.0 * math.log(0.6) + math.log(0.7)) / 4
    got = np.asarray(box_crossentropy(y_true, y_pred, 5.0))
    np.testing.assert_allclose(got, [[want]], rtol=1e-5)
