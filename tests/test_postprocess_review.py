"""Post-processing, catalogue writing, targets and error calibration: tests that kill the
mutants which survived a hand-mutation review (2026-12-07); each failed on a mutant."""
import dataclasses
import warnings

import numpy as np
import pytest

from lbgnet.postprocess import combine_lines, lbg_score, postprocess


def test_c_lbg_ranks_a_nan_line_last(config):
    """C_LBG is the n-th highest of the lines that have a confidence (a NaN line ranks
    lowest, as in BESTLINE); with fewer such lines than n_thresh it is NaN (not selected)."""
    c = np.array([[0.9, 0.8, np.nan, 0.1], [np.nan, np.nan, np.nan, 0.7],
                  [np.nan] * 4], dtype=np.float32)
    np.testing.assert_array_equal(lbg_score(c, 1), np.array([0.9, 0.7, np.nan], np.float32))
    np.testing.assert_array_equal(lbg_score(c, 2), np.array([0.8, np.nan, np.nan], np.float32))
    # through postprocess: one line's boxes all NaN does not unselect a confident spectrum
    nlines, nboxes = len(config.lines), config.nboxes
    conf = np.zeros((1, nlines, nboxes), np.float32)
    conf[0, 0, 10] = 0.9
    conf[0, 1, :] = np.nan
    out = postprocess(conf, np.full_like(conf, 0.5), config, c_thresh=0.5, n_thresh=1)
    assert out['C_LBG'][0] == np.float32(0.9) and out['IS_LBG'][0]


def test_ones_complement_sum_carries_twice():
    """the end-around carry can itself carry (0xFFFFFFFF + 1); a single fold gives
    0x100000000 and a good catalogue would be refused as not matching its DATASUM."""
    from astropy.io import fits
    from lbgnet.io.catalog import ones_complement_sum
    raw = b'\xff' * 8 + b'\x00\x00\x00\x01'
    assert ones_complement_sum(raw) == 1
    assert ones_complement_sum(raw) == fits.PrimaryHDU()._compute_checksum(
        np.frombuffer(raw, dtype='ubyte'))
    assert ones_complement_sum(b'\xff\xff\xff\xff', start=0xFFFFFFFF + 1) == 1


def test_n_thresh_may_equal_the_number_of_target_lines(config):
    """target.lines with as many lines as n_thresh is accepted (one more is refused)."""
    from lbgnet.config import ConfigError
    from lbgnet.targets import apply_target

    def with_target(nlines, n_thresh):
        lines = dict(list(zip(config.lines.names, map(float, config.lines.waves)))[:nlines])
        return dataclasses.replace(
            config, selection=dataclasses.replace(config.selection, n_thresh=n_thresh),
            extra=dict(config.extra, target={'class': 'LBG', 'lines': lines}), source='t')
    assert len(apply_target(with_target(2, 2)).lines) == 2
    with pytest.raises(ConfigError, match='n_thresh > 2 target lines'):
        apply_target(with_target(2, 3))


def test_postprocess_accepts_both_ends_of_c_thresh(config):
    """c_thresh 0 and 1 are accepted by postprocess as by the configuration."""
    nlines, nboxes = len(config.lines), config.nboxes
    conf = np.zeros((1, nlines, nboxes), np.float32)
    conf[0, 0, 3] = 0.2
    off = np.full_like(conf, 0.5)
    assert postprocess(conf, off, config, c_thresh=0.0)['IS_LBG'][0]
    assert not postprocess(conf, off, config, c_thresh=1.0)['IS_LBG'][0]
    for bad in (-1e-12, 1 + 1e-12, np.nan):
        with pytest.raises(ValueError, match='c_thresh'):
            postprocess(conf, off, config, c_thresh=bad)


def test_header_values_with_control_characters_are_escaped():
    """a tab or DEL in a path is escaped (astropy refuses such a header value)."""
    from lbgnet.io.catalog import printable_ascii, provenance_header
    assert printable_ascii('a\tb\x7fc\u00e9') == 'a\\tb\\x7fc\\xe9'
    header = provenance_header([('INCOADD', '/data/a\tb/coadd.fits', 'input coadd')])
    assert header['INCOADD'] == '/data/a\\tb/coadd.fits'


def test_no_usable_redshift_no_z_lbg(config):
    """every line has a confidence but none a redshift above -1: Z_LBG is NaN, as
    BESTLINE is -1 (the fallback must not report an impossible redshift)."""
    nlines = len(config.lines)
    c = np.full((1, nlines), 0.9)
    zl = np.full((1, nlines), -2.0)
    z, zerr, nagree = combine_lines(c, zl, config, agree_tol=0.01, line_floor=0.05)
    assert np.isnan(z[0]) and np.isnan(zerr[0]) and nagree[0] == 0


def test_bestline_with_an_infinite_confidence(config):
    """+inf counts as a confidence for BESTLINE too (as for Z_LBG)."""
    from lbgnet.postprocess import best_line
    nlines = len(config.lines)
    c = np.full((1, nlines), np.nan)
    c[0, 2] = np.inf
    best, zbest = best_line(c, np.full((1, nlines), 3.0))
    assert best[0] == 2 and zbest[0] == 3.0


def test_short_string_cards_keep_long_comments_without_warning():
    """values are padded to column 30; the comment is cut to fit, with no
    'Card is too long' warning."""
    from lbgnet.io.catalog import provenance_header
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        header = provenance_header([('LBGMODEL', 'x', 'c' * 70)])
        assert len(str(header.cards['LBGMODEL'])) == 80


def test_a_table_written_short_is_an_error(tmp_path, monkeypatch):
    """a file whose table holds fewer rows than asked (a silent partial write) is
    refused by the read-back, not renamed into place."""
    from astropy.io import fits
    from astropy.table import Table
    import lbgnet.io.catalog as iocat
    real = iocat._write_table

    def short(path, table, header, extname):
        real(path, table[:-1], header, extname)
    monkeypatch.setattr(iocat, '_write_table', short)
    path = str(tmp_path / 'lbg_cnn-x.fits')
    with pytest.raises(iocat.OutputFileError, match='incomplete after writing'):
        iocat.write_outputs([(path, Table({'TARGETID': np.arange(5)}), 'LBG_CNN')],
                            fits.Header())
    assert not (tmp_path / 'lbg_cnn-x.fits').exists()


def test_calibration_needs_forty_right_redshifts():
    """MIN_OBJECTS is 40 (documented): 39 right redshifts are refused."""
    from lbgnet.zerr import MIN_OBJECTS, fit_calibration
    assert MIN_OBJECTS == 40
    rng = np.random.default_rng(0)
    zerr = rng.uniform(1e-4, 1e-3, 39)
    z_true = np.full(39, 3.0)
    z = z_true + rng.normal(0, 1, 39) * zerr * 4
    with pytest.raises(ValueError, match='39 right redshifts'):
        fit_calibration(z, zerr, z_true)
