"""Library API: defects found by a researcher's review (each test failed on the code it was
written against).

Each test states the property it checks; all use pure numpy inputs (the loss test imports
Keras), and none needs a trained model or a file.
"""
import numpy as np
import pytest

from lbgnet.config import load_config
from lbgnet.labels import decode_boxes, encode_boxes, line_waves_at


@pytest.fixture(scope='module')
def config():
    return load_config()


def _outputs(config, z, conf_true=0.9, floor=0.001):
    """conf / offset a perfect line finder gives for redshifts `z` (shape (nspec,))."""
    box, offset = encode_boxes(line_waves_at(np.asarray(z, dtype=float), config), config)
    conf = np.where(box > 0, conf_true, floor).astype(np.float32)
    off = np.broadcast_to(offset[..., None], conf.shape).astype(np.float32).copy()
    return conf, off


def test_postprocess_rejects_c_thresh_out_of_range(config):
    """postprocess's docstring promises ValueError when 'the thresholds are out of range';
    a line confidence threshold outside [0, 1] (or NaN) must be refused as n_thresh is
    (and as config_from_dict and desi_lbg_afterburner --c-thresh refuse it), not select
    everything (c_thresh < 0) or nothing (> 1, NaN) silently."""
    from lbgnet.postprocess import postprocess
    conf, off = _outputs(config, [3.0, np.nan])
    for bad in (-0.1, 1.5, np.nan):
        with pytest.raises(ValueError):
            postprocess(conf, off, config, c_thresh=bad, n_thresh=1)


def test_purity_efficiency_rejects_mismatched_lengths():
    """purity_efficiency takes is_true and score of the same shape (n,); a mismatched
    is_true must raise, not broadcast into an 'efficiency' above 1."""
    from lbgnet.evaluate import purity_efficiency
    score = np.linspace(0.0, 1.0, 10)
    with pytest.raises(ValueError):
        purity_efficiency(np.array([True]), score, [0.5])


def test_pe_score_rejects_mismatched_lengths():
    """pe_score takes is_true and score of the same shape (n,); a length-1 is_true must
    raise, not be broadcast to every object (which reports a perfect score)."""
    from lbgnet.evaluate import pe_score
    with pytest.raises(ValueError):
        pe_score(np.array([True]), np.linspace(0.0, 1.0, 10))


def test_redshift_metrics_rejects_mismatched_lengths():
    """redshift_metrics takes z_true and z_pred of the same shape (n,); mismatched arrays
    must raise, not report n = len(z_true) with rates computed over len(z_pred) objects."""
    from lbgnet.evaluate import redshift_metrics
    with pytest.raises(ValueError):
        redshift_metrics(np.array([2.0]), np.array([2.0, 3.0, 4.0]))


def test_line_finder_loss_rejects_mismatched_shapes():
    """line_finder_loss documents y_true and y_pred of the same shape
    (nspec, nlines, nboxes, 2); targets made for another number of boxes or spectra must
    raise, not be broadcast into a finite, meaningless loss."""
    from lbgnet.losses import line_finder_loss
    y_pred = np.full((3, 2, 4, 2), 0.5, np.float32)
    for y_true in (np.zeros((3, 2, 1, 2), np.float32),      # one box instead of 4
                   np.zeros((1, 2, 4, 2), np.float32)):     # one spectrum instead of 3
        with pytest.raises(Exception):
            np.asarray(line_finder_loss(y_true, y_pred))


def test_decode_boxes_keeps_shape_or_refuses(config):
    """decode_boxes returns 'redshift per line, same shape' as box_index, whose last axis
    runs over config.lines; a (nspec, 1) input must raise, not be silently broadcast to
    (nspec, nlines) redshifts of every line."""
    with pytest.raises(ValueError):
        decode_boxes(np.zeros((3, 1), dtype=int), np.zeros((3, 1)), config)


def test_plot_example_spectra_empty_input(config, tmp_path):
    """plot_example_spectra on zero spectra writes a (blank) figure like the other plots
    of lbgnet.plots do on empty input, instead of failing with IndexError."""
    from lbgnet.plots import plot_example_spectra
    nl, nb = len(config.lines), config.nboxes
    path = str(tmp_path / 'ex.png')
    out = plot_example_spectra(np.zeros((0, config.grid.nbins, 2), np.float32),
                               np.zeros((0, nl, nb), np.float32),
                               np.zeros((0, nl, nb), np.float32), config, path)
    assert out == path


def test_plot_example_spectra_draws_lines_postprocess_finds_despite_nan(config, tmp_path,
                                                                          monkeypatch):
    """A NaN box ranks lowest in postprocess (nan_argmax); the example-spectra figure must
    mark the same lines as found: a LYA head at 0.99 in one box and NaN in another is
    C_LINES = 0.99 for postprocess, and must be labelled in the figure."""
    from lbgnet import plots
    from lbgnet.postprocess import postprocess
    conf, off = _outputs(config, [3.0], conf_true=0.0, floor=0.0)
    lya = config.lines.index('LYA')
    conf[0, lya, 10] = 0.99
    conf[0, lya, 5] = np.nan
    res = postprocess(conf, off, config, c_thresh=0.5, n_thresh=1)
    assert res['C_LINES'][0, lya] == np.float32(0.99)
    figures = []
    monkeypatch.setattr(plots, 'save_png', lambda fig, path: figures.append(fig) or path)
    X = np.zeros((1, config.grid.nbins, 2), np.float32)
    plots.plot_example_spectra(X, conf, off, config, str(tmp_path / 'ex.png'), c_thresh=0.5)
    labels = [t.get_text() for t in figures[0].axes[0].texts]
    assert 'LYA' in labels
