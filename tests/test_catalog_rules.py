"""
Rules of the afterburner catalogue and of the Redrock priors that the other tests left open.

Each test here pins one property of :mod:`lbgnet.catalog` or :mod:`lbgnet.priors` that a
single plausible edit of the code (a mutation: a dropped condition, a flipped comparison,
a narrower type, a changed constant) broke without any other test noticing.  Inputs are
small hand-built tables and arrays; nothing here runs the network.

Notes
-----
The mutation audit that produced this file is summarised in its report; the rules are
those of the docstrings of :mod:`lbgnet.catalog`, :mod:`lbgnet.priors` and
``doc/afterburner.rst``.
"""
import dataclasses

import numpy as np
import pytest
from astropy.table import Table

from lbgnet.bitmask import LBGWarnMask
from lbgnet.catalog import (BAD_FIBERSTATUS_BITS, NCOEFF, RERUN_COLUMNS, TARGET_BIT_COLUMN,
                            add_rerun_columns, apply_model_range, assemble_catalog,
                            bad_fiberstatus_mask, column_description, describe_columns,
                            match_targetids, not_science, spectrum_flags, take_rows)
from lbgnet.config import LineList
from lbgnet.preprocess import GridInfo
from lbgnet.priors import PRIOR_FUNCTION, prior_width, select_priors

MASK = LBGWarnMask()
LINES = ('LYA', 'CIV')


def _results(nspec):
    """Network outputs of `nspec` coadd spectra, every value distinct."""
    base = np.arange(nspec, dtype=np.float64)
    c_lines = np.column_stack([0.1 + base / 100, 0.2 + base / 100]).astype(np.float32)
    z_lines = np.column_stack([2.0 + base / 10, 2.5 + base / 10])
    return dict(C_LINES=c_lines.reshape(nspec, 2), Z_LINES=z_lines.reshape(nspec, 2),
                C_LBG=c_lines.max(axis=1) if nspec else np.zeros(0, np.float32),
                IS_LBG=np.ones(nspec, bool), Z_LBG=3.0 + base / 10, ZERR_LBG=1e-3 + base / 1e4)


def _redshifts(tid, spectype='GALAXY'):
    """A Redrock REDSHIFTS table of the TARGETIDs `tid`."""
    n = len(tid)
    return Table(dict(TARGETID=np.asarray(tid, dtype=np.int64),
                      SPECTYPE=np.array([spectype] * n if isinstance(spectype, str) else spectype,
                                        dtype=str),
                      Z=np.linspace(0.1, 1.0, n), ZERR=np.full(n, 1e-4),
                      ZWARN=np.zeros(n, np.int64), DELTACHI2=np.full(n, 100.0)))


def _catalog(tid, coadd_tid, fibermap=None, **kwargs):
    """assemble_catalog of Redrock rows `tid` against a coadd of `coadd_tid`."""
    idx = match_targetids(np.asarray(tid, dtype=np.int64), np.asarray(coadd_tid, dtype=np.int64))
    n = len(coadd_tid)
    return assemble_catalog(_redshifts(tid, kwargs.pop('spectype', 'GALAXY')), idx, fibermap,
                            kwargs.pop('results', _results(n)), np.zeros(n, np.int32), LINES,
                            **kwargs)


def _rerun(tid, ncoeff=3):
    """A Redrock-rerun table of the TARGETIDs `tid` with `ncoeff` coefficients."""
    n = len(tid)
    return Table(dict(TARGETID=np.asarray(tid, dtype=np.int64), Z=3.0 + np.arange(n) / 10,
                      ZERR=np.full(n, 1e-4), ZWARN=np.arange(n) + 1,
                      SPECTYPE=np.array(['GALAXY'] * n), SUBTYPE=np.array(['LBG'] * n),
                      CHI2=np.full(n, 10.0), DELTACHI2=np.full(n, 50.0),
                      COEFF=np.arange(n * ncoeff, dtype=np.float64).reshape(n, ncoeff)))


# --- target-bit columns -------------------------------------------------------------------

def test_target_bit_columns_are_exactly_the_desi_ones():
    """TARGET_BIT_COLUMN takes the main, SV1-3 and CMX target-bit columns, SCND included,
    and nothing that merely starts like one (a ``DESI_TARGET_<x>`` column is not copied)."""
    for name in ('DESI_TARGET', 'BGS_TARGET', 'MWS_TARGET', 'SCND_TARGET', 'SV1_SCND_TARGET',
                 'SV3_DESI_TARGET', 'CMX_TARGET'):
        assert TARGET_BIT_COLUMN.match(name), name
    for name in ('DESI_TARGET_OLD', 'SCND_TARGET_INIT', 'SV4_DESI_TARGET', 'CMX_TARGETX',
                 'NUMOBS_TARGET', 'XDESI_TARGET'):
        assert not TARGET_BIT_COLUMN.match(name), name
    fm = Table(dict(TARGETID=[1, 2], SCND_TARGET=[4, 8], SV1_SCND_TARGET=[16, 32],
                    DESI_TARGET_OLD=[1, 1]))
    cat = _catalog([2, 1], [1, 2], fm)
    assert cat['SCND_TARGET'].tolist() == [8, 4]
    assert cat['SV1_SCND_TARGET'].tolist() == [32, 16]
    assert 'DESI_TARGET_OLD' not in cat.colnames


def test_target_bits_keep_all_64_bits():
    """Target bits up to bit 63 (DESI_TARGET's MWS_ANY / SCND_ANY are bits 61-62) survive
    the copy: the columns are int64, not a narrower integer."""
    high = np.array([2 ** 62 + 1, 2 ** 61], dtype=np.int64)
    fm = Table(dict(TARGETID=[1, 2], DESI_TARGET=high))
    cat = _catalog([2, 1, 7], [1, 2], fm)
    assert cat['DESI_TARGET'].dtype == np.int64
    assert cat['DESI_TARGET'].tolist() == [2 ** 61, 2 ** 62 + 1, 0]


def test_large_targetids_are_kept_exactly():
    """DESI TARGETIDs exceed 2**31 (and 2**53): the TARGETID column is the exact int64."""
    tid = np.array([39627745693731234, 39627745693731235, 2 ** 62 + 3], dtype=np.int64)
    cat = _catalog(tid, tid[::-1])
    assert cat['TARGETID'].dtype == np.int64
    assert cat['TARGETID'].tolist() == tid.tolist()


# --- NaN / fill rules -----------------------------------------------------------------------

def test_take_rows_integers_with_nan_fill_become_float():
    """take_rows of an integer column with a NaN fill gives float64 with NaN on the rows not
    in the coadd (an integer array cannot hold the fill); an integer fill keeps the dtype."""
    idx = np.array([1, -1, 0])
    out = take_rows(np.array([5, 6], dtype=np.int32), idx, np.nan)
    assert out.dtype == np.float64
    assert out[0] == 6 and np.isnan(out[1]) and out[2] == 5
    kept = take_rows(np.array([5, 6], dtype=np.int32), idx, 0)
    assert kept.dtype == np.int32 and kept.tolist() == [6, 0, 5]


def test_take_rows_booleans_with_nan_fill_become_float():
    """Booleans filled with NaN become float64 like integers: kept as bool, the rows not in
    the coadd would read True (bool(NaN) is True); a boolean fill keeps the dtype."""
    idx = np.array([1, -1, 0])
    out = take_rows(np.array([True, False]), idx, np.nan)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [0.0, np.nan, 1.0])
    kept = take_rows(np.array([True, False]), idx, False)
    assert kept.dtype == bool and kept.tolist() == [False, False, True]


def test_empty_coadd_gives_not_in_coadd_rows():
    """A coadd without spectra: every Redrock row is written, NOT_IN_COADD with NaN / False
    network outputs and NaN positions, instead of failing on the empty arrays."""
    cat = _catalog([4, 5], np.zeros(0, np.int64), Table(dict(TARGETID=np.zeros(0, np.int64),
                                                            TARGET_RA=np.zeros(0))))
    assert cat['TARGETID'].tolist() == [4, 5]
    assert cat['LBG_FLAG'].tolist() == [MASK.NOT_IN_COADD] * 2
    assert np.all(np.isnan(cat['C_LBG'])) and not np.any(cat['IS_LBG'])
    assert np.all(np.isnan(cat['Z_LYA'])) and np.all(np.isnan(cat['TARGET_RA']))


def test_absent_inputs_are_nan_not_zero():
    """Without SCORES (tsnr2_lrg None) TSNR2_LRG is NaN, and without the template
    refinement's outputs Z_TPL / ZERR_TPL / DELTACHI2_TPL are NaN, on every row: a 0 would
    read as a measured depth or redshift."""
    cat = _catalog([1, 2, 3], [3, 1])
    for col in ('TSNR2_LRG', 'Z_TPL', 'ZERR_TPL', 'DELTACHI2_TPL'):
        assert np.all(np.isnan(cat[col])), col
    assert np.isfinite(cat['Z_LBG'][0]) and np.isnan(cat['Z_LBG'][1])


def test_spectype_width_does_not_depend_on_the_rows():
    """SPECTYPE_RR is at least Redrock's 6 characters whatever the rows hold (only 'QSO', no
    row at all), so that catalogues stack, and a longer value is never truncated."""
    assert _catalog([1, 2], [1, 2], spectype='QSO')['SPECTYPE_RR'].dtype == np.dtype('U6')
    assert _catalog([], [])['SPECTYPE_RR'].dtype == np.dtype('U6')
    long = _catalog([1, 2], [1, 2], spectype=['GALAXY', 'GALAXYLONG'])
    assert long['SPECTYPE_RR'].tolist() == ['GALAXY', 'GALAXYLONG']


# --- rerun columns --------------------------------------------------------------------------

def test_rerun_columns_from_assemble_catalog():
    """assemble_catalog with a rerun table adds the ``*_NEW`` columns, matched on TARGETID
    (rows not rerun: NaN / blank / ZWARN_NEW = Redrock's NODATA, so that ZWARN_NEW == 0
    never selects a row without a rerun redshift)."""
    cat = _catalog([1, 2, 3], [1, 2, 3], rerun=_rerun([3, 1]))
    assert cat['ZWARN_NEW'].tolist() == [2, 512, 1]
    assert cat['Z_NEW'][0] == 3.1 and np.isnan(cat['Z_NEW'][1]) and cat['Z_NEW'][2] == 3.0
    assert cat['SPECTYPE_NEW'].tolist() == ['GALAXY', '', 'GALAXY']


def test_coeff_new_is_redrocks_ten_coefficients():
    """COEFF_NEW has Redrock's standard 10 coefficients: more are cut, fewer are NaN-padded,
    so that catalogues of different templates stack."""
    assert NCOEFF == 10
    cat = Table(dict(TARGETID=np.array([1, 2])))
    add_rerun_columns(cat, _rerun([2], ncoeff=12))
    assert cat['COEFF_NEW'].shape == (2, 10)
    assert cat['COEFF_NEW'][1].tolist() == list(range(10))
    assert np.all(np.isnan(cat['COEFF_NEW'][0]))


def test_empty_rerun_table_fills_every_row():
    """A rerun table without rows (nothing was rerun) gives the same filled columns as no
    rerun at all, instead of failing on its empty COEFF."""
    cat = Table(dict(TARGETID=np.array([1, 2])))
    add_rerun_columns(cat, _rerun([])[:0])
    assert np.all(np.isnan(cat['Z_NEW'])) and cat['ZWARN_NEW'].tolist() == [512, 512]
    assert cat['COEFF_NEW'].shape == (2, NCOEFF) and np.all(np.isnan(cat['COEFF_NEW']))
    assert cat['SPECTYPE_NEW'].tolist() == ['', '']
    # the same from a table made of empty columns (a 1-D, empty COEFF)
    bare = Table(dict(TARGETID=np.array([3])))
    add_rerun_columns(bare, Table({c: np.zeros(0) for c in ('TARGETID',) + RERUN_COLUMNS}))
    assert np.isnan(bare['Z_NEW'][0]) and np.all(np.isnan(bare['COEFF_NEW']))


# --- descriptions ---------------------------------------------------------------------------

def test_describe_columns_without_overwrite_keeps_existing_text():
    """describe_columns(overwrite=False) (the zcatalogue's call) keeps a description a
    column already has and fills only the missing ones; overwrite=True replaces it."""
    table = Table(dict(TARGETID=[1], Z_LBG=[3.0]))
    table['TARGETID'].description = 'my own words'
    describe_columns(table, overwrite=False)
    assert table['TARGETID'].description == 'my own words'
    assert table['Z_LBG'].description == column_description('Z_LBG')
    describe_columns(table)
    assert table['TARGETID'].description == column_description('TARGETID')


def test_unknown_columns_have_no_description():
    """Only the real suffixes / prefixes describe a column: 'ZABC' is not a Redrock
    redshift, 'Q_LYA' is no line column; the true ones are described."""
    waves = {'LYA': 1215.67}
    for name in ('ZABC', 'ZWARNXYZ', 'Q_LYA', 'XZ_LYA'):
        assert column_description(name, waves) is None, name
    assert column_description('Z_RR') == 'Redrock redshift'
    assert column_description('Z_LYA', waves) == 'best-box redshift, LYA 1215.7 A'


# --- flags ----------------------------------------------------------------------------------

def test_bad_fiberstatus_bits_are_redrocks():
    """NOT_SCIENCE fibre-status bits: exactly UNASSIGNED, BROKENFIBER, BADPOSITION,
    POORPOSITION and BADAMPB/R/Z (bitmask.py's table), each alone enough (an independent
    list: a bit dropped from BAD_FIBERSTATUS_BITS went unnoticed by a test iterating it)."""
    from desispec.maskbits import fibermask
    names = ('UNASSIGNED', 'BROKENFIBER', 'BADPOSITION', 'POORPOSITION',
             'BADAMPB', 'BADAMPR', 'BADAMPZ')
    assert sorted(BAD_FIBERSTATUS_BITS) == sorted(names)
    assert bad_fiberstatus_mask() == sum(fibermask.mask(n) for n in names)
    status = [fibermask.mask(n) for n in names]
    assert not_science(Table(dict(COADD_FIBERSTATUS=status)), len(status)).all()


def test_not_science_with_one_of_its_columns():
    """A FIBERMAP with OBJTYPE but no COADD_FIBERSTATUS, or the reverse, is judged on the
    column it has (no KeyError); OBJTYPE padded with blanks (FITS strings) is still TGT."""
    from desispec.maskbits import fibermask
    only_type = Table(dict(OBJTYPE=np.array([b'TGT ', b'SKY ', b'TGT'])))
    assert not_science(only_type, 3).tolist() == [False, True, False]
    only_status = Table(dict(COADD_FIBERSTATUS=[0, fibermask.mask('BROKENFIBER')]))
    assert not_science(only_status, 2).tolist() == [False, True]
    assert not_science(None, 2).tolist() == [False, False]


def test_low_coverage_is_below_half_of_an_odd_grid():
    """LOW_COVERAGE: fewer than half of the bins, ``nvalid < nbins / 2`` in real numbers;
    400 of 801 bins is fewer than half (integer division would say exactly half)."""
    n = 3
    info = GridInfo(None, np.zeros(n, bool), ('b', 'r', 'z'), np.ones((n, 3), bool),
                    np.array([400, 401, 801]))
    flags = spectrum_flags(info, None, 801)
    assert flags.tolist() == [MASK.LOW_COVERAGE, 0, 0]


def test_model_range_keeps_other_bits_and_ignores_infinite():
    """Z_OUT_OF_RANGE is or-ed into the flags (an out-of-range row keeps its NODATA /
    MISSING_CAMERA bits), and only finite redshifts are judged (±inf, like NaN, is no
    redshift)."""
    flags = np.array([MASK.MISSING_CAMERA, MASK.NOT_SCIENCE, 0, 0], dtype=np.int32)
    z = np.array([6.0, 1.0, np.inf, -np.inf])
    out = apply_model_range(flags, [z], (1.5, 5.0))
    assert out.tolist() == [MASK.MISSING_CAMERA | MASK.Z_OUT_OF_RANGE,
                            MASK.NOT_SCIENCE | MASK.Z_OUT_OF_RANGE, 0, 0]
    assert flags.tolist() == [MASK.MISSING_CAMERA, MASK.NOT_SCIENCE, 0, 0]   # a new array


# --- priors ---------------------------------------------------------------------------------

def _width(config, name):
    return 2 * config.box_width / config.lines.wave_array[config.lines.index(name)]


def test_prior_function_is_the_top_hat():
    """The PRIORS file's function is Redrock's 'tophat' (SIGMA is a full width, not a
    Gaussian sigma)."""
    assert PRIOR_FUNCTION == 'tophat'


def test_line_exactly_at_the_floor_counts(config):
    """A line of confidence exactly ``line_floor`` counts (combine_lines uses ``>=``): it can
    be the line Z_LBG was made from, and a row whose best line sits at the floor is not a
    row without lines (which would get the widest top hat)."""
    from lbgnet.postprocess import postprocess_options
    floor = postprocess_options(config)['line_floor']
    nlines = len(config.lines)
    ilya, iciv = config.lines.index('LYA'), config.lines.index('CIV')
    c = np.full((2, nlines), floor / 5)
    z = np.full((2, nlines), 2.0)
    c[0, ilya], z[0, ilya] = floor, 3.0            # at the floor: the only line
    c[1, iciv] = floor
    width = prior_width(c, config, z)
    assert width[0] == pytest.approx(_width(config, 'LYA'))
    assert width[1] == pytest.approx(_width(config, 'CIV'))
    assert prior_width(c[1:], config)[0] == pytest.approx(_width(config, 'CIV'))


def test_window_line_is_the_most_confident_of_those_averaged(config):
    """The line giving the window is the most confident of those Z_LBG was averaged from:
    at Z_LBG = 2.4 (Lyα and CII outvote CIV) Lyα, at 4.0 (CIV outvotes Lyα) CIV."""
    nlines = len(config.lines)
    ilya, icii, iciv = (config.lines.index(n) for n in ('LYA', 'CII', 'CIV'))
    c = np.full((2, nlines), 0.01)
    z = np.full((2, nlines), 1.0)
    c[:, ilya], z[:, ilya] = 0.6, 2.4
    c[0, icii], z[0, icii] = 0.5, 2.4
    c[:, iciv], z[:, iciv] = 0.9, 4.0
    width = prior_width(c, config, z)
    assert width == pytest.approx([_width(config, 'LYA'), _width(config, 'CIV')])


def test_window_line_follows_the_averaged_lines_not_the_distance_to_z_lbg(config):
    """Agreement is not transitive: CIV at 3.030 agrees with CII/SiIV at 3.000 and with
    Lyβ at 3.070, so its proposal wins and all four make Z_LBG (3.027), although Lyβ is
    more than ``agree_tol`` from it.  The window is Lyβ's, the most confident of the
    averaged lines (judging agreement against Z_LBG gave CII's, 5 % narrower here;
    a review found two such rows in the example's 187 priors)."""
    from lbgnet.postprocess import combine_lines, postprocess_options
    opts = postprocess_options(config)
    nlines = len(config.lines)
    c = np.full((1, nlines), 0.01)
    z = np.full((1, nlines), 1.0)
    for name, conf, zline in (('CII', 0.5, 3.0), ('SIIV1393', 0.5, 3.0), ('CIV', 0.3, 3.03),
                              ('LYB', 0.6, 3.07)):
        c[0, config.lines.index(name)], z[0, config.lines.index(name)] = conf, zline
    z_lbg, _, nagree = combine_lines(c, z, config, opts['agree_tol'], opts['line_floor'])
    assert nagree[0] == 4 and abs(z[0, config.lines.index('LYB')] - z_lbg[0]) / (1 + z_lbg[0]) \
        > opts['agree_tol']
    assert prior_width(c, config, z)[0] == pytest.approx(_width(config, 'LYB'))


def test_widest_top_hat_is_the_bluest_lines_whatever_the_order(config):
    """Rows without a line above the floor (or without line outputs) get the top hat of the
    bluest line, found by wavelength, not by position in the line list."""
    lines = config.lines
    order = np.argsort(lines.wave_array)[::-1]                 # reddest first
    reversed_cfg = dataclasses.replace(config, lines=LineList(
        tuple(lines.names[i] for i in order), tuple(lines.waves[i] for i in order)))
    nlines = len(lines)
    c = np.vstack([np.full(nlines, 0.01), np.full(nlines, np.nan)])
    widest = 2 * config.box_width / lines.wave_array.min()
    assert prior_width(c, reversed_cfg) == pytest.approx([widest, widest])
    # with line_floor = 0 a row of NaN confidences (a direct network) still has no line
    floor0 = dataclasses.replace(reversed_cfg, extra={**reversed_cfg.extra,
                                                      'postprocess': {'line_floor': 0.0}})
    assert prior_width(c[1:], floor0)[0] == pytest.approx(widest)


def test_select_priors_with_some_line_redshifts_missing(config):
    """A catalogue with only some Z_<LINE> columns takes the most confident line for the
    width (as with none of them) instead of failing."""
    cat = Table(dict(TARGETID=[7], IS_LBG=[True], Z_LBG=[3.0]))
    for name in config.lines.names:
        cat[f'C_{name}'] = [0.9 if name == 'CIV' else 0.1]
    cat['Z_LYA'] = [3.0]
    tid, z, sigma = select_priors(cat, config)
    assert tid.tolist() == [7] and z.tolist() == [3.0]
    assert sigma[0] == pytest.approx(_width(config, 'CIV'))


def test_zrange_needs_overlap_not_contact(config):
    """A top hat that only touches ``[zmin, zmax]`` at its edge (upper edge == zmin, or lower
    edge == zmax) overlaps nothing and gets no prior; one a hair inside is kept."""
    zmin, zmax = 1.5, 4.5
    half = _width(config, 'LYA') / 2
    below, above = zmin - half, zmax + half
    assert below + half == zmin and above - half == zmax      # exact edges
    cat = Table(dict(TARGETID=[1, 2, 3, 4], IS_LBG=[True] * 4,
                     Z_LBG=[below, above, below + 1e-9, above - 1e-9]))
    for name in config.lines.names:
        cat[f'C_{name}'] = np.full(4, 0.9 if name == 'LYA' else 0.1)
    tid, _, sigma = select_priors(cat, config, zrange=(zmin, zmax))
    assert tid.tolist() == [3, 4]
    assert sigma == pytest.approx([2 * half] * 2)


def test_every_column_description_fits_a_ttype_comment():
    """Every description is at most 46 characters (desiutil.annotate's limit, so that no
    FITS reader truncates the TTYPEn comment): the fixed columns, the Redrock and rerun
    ones and the per-line columns of the shipped line list."""
    from lbgnet.catalog import COLUMN_DESCRIPTIONS
    from lbgnet.config import load_config
    lines = load_config().lines
    waves = dict(zip(lines.names, lines.waves))
    names = list(COLUMN_DESCRIPTIONS) + [f'{prefix}{line}' for line in lines.names
                                         for prefix in ('C_', 'Z_')]
    names += [f'{name}{suffix}' for name in ('SPECTYPE', 'SUBTYPE', 'Z', 'ZERR', 'ZWARN',
                                             'CHI2', 'DELTACHI2', 'COEFF')
              for suffix in ('_RR', '_NEW')] + ['DESI_TARGET', 'SV3_BGS_TARGET']
    described = {name: column_description(name, waves) for name in names}
    assert [name for name, text in described.items() if text is None] == []
    assert {name: text for name, text in described.items() if len(text) > 46} == {}
