"""Box encoding of line positions and its inverse."""
import numpy as np
import pytest

from lbgnet.labels import (box_position, decode_boxes, encode_boxes, line_waves_at,
                           make_targets)


def test_round_trip_redshift(config):
    """z -> observed wavelengths -> (box, offset) -> z, to |dz| < 1e-4 for every line inside the grid."""
    rng = np.random.default_rng(3)
    z = rng.uniform(1.8, 4.6, 500)
    waves = line_waves_at(z, config)
    box, offset = encode_boxes(waves, config)
    inside = box.sum(axis=-1) == 1
    assert inside.any() and (~inside).any()
    z_back = decode_boxes(np.argmax(box, axis=-1), offset, config)
    dz = np.abs(z_back - z[:, None])[inside]
    assert dz.max() < 1e-4
    # a scalar redshift is one spectrum (it raised IndexError)
    np.testing.assert_array_equal(line_waves_at(z[0], config), waves[:1])
    # the grid limits decide which lines are encoded
    expected = (waves >= config.grid.wave_min) & (waves < config.grid.wave_max)
    np.testing.assert_array_equal(inside, expected)


def test_box_edges_and_offsets(config):
    """Hand-made wavelengths: grid start, a box edge, the middle of a box, the last pixel, outside."""
    bw = config.box_width
    w0 = config.grid.wave_min
    nlines = len(config.lines)
    waves = np.full((1, nlines), np.nan)
    waves[0, :5] = [w0, w0 + 3 * bw, w0 + 7.5 * bw, config.grid.wave_max - 1e-6, w0 - 1.0]
    waves[0, 5] = config.grid.wave_max
    box, offset = encode_boxes(waves, config)
    assert box.shape == (1, nlines, config.nboxes)
    assert box[0, 0, 0] == 1 and offset[0, 0] == 0
    assert box[0, 1, 3] == 1 and offset[0, 1] == pytest.approx(0.0, abs=1e-6)
    assert box[0, 2, 7] == 1 and offset[0, 2] == pytest.approx(0.5)
    assert box[0, 3, config.nboxes - 1] == 1 and offset[0, 3] == pytest.approx(1.0, abs=1e-6)
    # below, at the upper edge, NaN: no box, zero offset
    assert box[0, 4:].sum() == 0 and np.all(offset[0, 4:] == 0)


def test_decode_inverts_position(config):
    """decode(box, offset) reproduces wavelength / rest - 1 for arbitrary fractional positions,
    including offsets slightly outside [0, 1) (the offset head's margin)."""
    rng = np.random.default_rng(0)
    nlines = len(config.lines)
    box = rng.integers(0, config.nboxes, (10, nlines))
    offset = rng.uniform(-0.1, 1.1, (10, nlines))
    z = decode_boxes(box, offset, config)
    wave = (1 + z) * config.lines.wave_array
    np.testing.assert_allclose(box_position(wave, config), box + offset, atol=1e-9)


def test_make_targets_layout(config):
    """Channel 0 is the one-hot box, channel 1 the offset in that box only; absent objects are all zero."""
    z = np.array([3.0, np.nan])
    y = make_targets(line_waves_at(z, config), config)
    assert y.shape == (2, len(config.lines), config.nboxes, 2)
    assert y.dtype == np.float32
    assert np.all(y[1] == 0)
    ilya = config.lines.index('LYA')
    b = np.argmax(y[0, ilya, :, 0])
    pos = box_position(1215.67 * 4.0, config)
    assert b == int(pos)
    assert y[0, ilya, b, 1] == pytest.approx(pos - int(pos), abs=1e-6)
    assert np.count_nonzero(y[0, ilya, :, 1]) == 1


def test_lines_beyond_the_grid_are_not_encoded(config):
    """A line just past wave_max or just below wave_min has no box and a zero offset and target."""
    bw = config.box_width
    nlines = len(config.lines)
    waves = np.full((1, nlines), np.nan)
    waves[0, :4] = [config.grid.wave_max + 0.5 * bw, config.grid.wave_max + 1.5 * bw,
                    config.grid.wave_min - 0.5 * bw, config.grid.wave_min - 1.5 * bw]
    box, offset = encode_boxes(waves, config)
    assert box.sum() == 0 and np.all(offset == 0)
    assert np.all(make_targets(waves, config) == 0)


def test_box_position_and_line_waves_by_hand(config):
    """box_position is (λ - wave_min) / box_width; line_waves_at is (1 + z) × rest wavelength."""
    bw = config.box_width
    w0 = config.grid.wave_min
    np.testing.assert_allclose(box_position([w0, w0 + 2.25 * bw], config), [0.0, 2.25])
    waves = line_waves_at([2.0, np.nan], config)
    np.testing.assert_allclose(waves[0], 3.0 * config.lines.wave_array)
    assert waves[0, config.lines.index('LYA')] == pytest.approx(3 * 1215.67)
    assert np.all(np.isnan(waves[1]))
