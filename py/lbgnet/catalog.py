"""
lbgnet.catalog
==============

Assemble the afterburner catalogue (HDU ``LBG_CNN``) in the Redrock file's TARGETID
order, and compute the per-spectrum ``LBG_FLAG`` bits.  Pure numpy / astropy Tables:
reading and writing live in :mod:`lbgnet.io.catalog`.

The column list and units are documented in ``doc/afterburner.rst``.
"""
import re

import numpy as np
from astropy.table import Table

from .bitmask import DESI_CAMERAS, REDROCK_ZWARN, LBGWarnMask
from .io.errors import InputFileError
from .io.targetid import as_targetids
from .refine import REFINE_KEYS as REFINE_COLUMNS
from .refine import reliable_redshift

#: FIBERMAP target-bit columns copied when present (main, SV1-3, CMX).
TARGET_BIT_COLUMN = re.compile(r'^((SV[1-3])_)?(DESI|BGS|MWS|SCND)_TARGET$|^CMX_TARGET$')

#: COADD_FIBERSTATUS bits for which Redrock itself sets a ZWARN bit (NODATA/POORDATA/
#: LITTLE_COVERAGE, see ``redrock.external.desi``): such a fibre is "not science".
BAD_FIBERSTATUS_BITS = ('UNASSIGNED', 'BROKENFIBER', 'BADPOSITION', 'POORPOSITION',
                        'BADAMPB', 'BADAMPR', 'BADAMPZ')

#: Redrock columns copied as ``<NAME>_RR``.
RR_COLUMNS = ('SPECTYPE', 'Z', 'ZERR', 'ZWARN', 'DELTACHI2')

#: Redrock-rerun columns written as ``<NAME>_NEW``.
RERUN_COLUMNS = ('Z', 'ZERR', 'ZWARN', 'SPECTYPE', 'SUBTYPE', 'CHI2', 'DELTACHI2', 'COEFF')

#: Types of the ``*_NEW`` columns (fixed, so that catalogues of different files stack).
RERUN_DTYPES = dict(Z='f8', ZERR='f8', ZWARN='i8', SPECTYPE='U6', SUBTYPE='U20', CHI2='f8',
                    DELTACHI2='f8', COEFF='f8')

#: Coefficients kept in COEFF_NEW (Redrock's standard width).
NCOEFF = 10

#: Column descriptions, written as the comments of the TTYPEn cards (the convention of
#: :mod:`desiutil.annotate`, which keeps them within 46 characters so that no FITS
#: reader truncates them); the per-line, target-bit, Redrock and rerun columns follow
#: patterns (:func:`column_description`).
COLUMN_DESCRIPTIONS = {
    'TARGETID': 'DESI target id (Redrock row order)',
    'TARGET_RA': 'target right ascension (FIBERMAP)',
    'TARGET_DEC': 'target declination (FIBERMAP)',
    'TSNR2_LRG': 'coadd depth, SCORES TSNR2_LRG (NaN: none)',
    'C_LBG': 'LBG score: IS_LBG = C_LBG > CTHRESH',
    'IS_LBG': 'selected as LBG (C_LBG > CTHRESH)',
    'Z_LBG': 'redshift of the agreeing lines (all rows)',
    'ZERR_LBG': '1-sigma error of Z_LBG (ZERRSCL, ZERRFLR)',
    'Z_TPL': 'template-refined redshift (IS_LBG rows)',
    'ZERR_TPL': '1-sigma error of Z_TPL (ZTPLSCL, ZTPLFLR)',
    'DELTACHI2_TPL': 'chi2(best other z) - chi2(Z_TPL)',
    'LBG_FLAG': 'warning bits (header LBGBITnn), 0 = normal',
    'SURVEY': 'DESI survey of the file',
    'PROGRAM': 'DESI program of the file',
    'SPGRP': 'spectra grouping (healpix, cumulative...)',
    'SPGRPVAL': 'SPGRP value: night, EXPID or pixel (-1: none)',
    'HPXPIXEL': 'healpix pixel of the file (-1: none)',
    'TILEID': 'tile of the file (-1: none)',
    'PETAL': 'petal of the file (-1: none)',
    'ZCAT_NSPEC': 'spectra of this target in the catalogue',
    'Z': 'best LBG redshift: Z_TPL, else Z_LBG',
    'ZERR': '1-sigma error of Z (ZERR_TPL or ZERR_LBG)',
    'ZCAT_PRIMARY': 'best row of this TARGETID',
    'GOOD_LBG': 'IS_LBG, finite Z and ZERR, no GOODBITS flag',
}
_RR_DESCRIPTIONS = {'SPECTYPE': 'spectral type', 'SUBTYPE': 'subtype', 'Z': 'redshift',
                    'ZERR': 'redshift error', 'ZWARN': 'ZWARN bits', 'CHI2': 'chi2',
                    'DELTACHI2': 'delta chi2 to the next minimum', 'COEFF': 'template coefficients'}


def column_description(name, line_waves=None):
    """One-line description of a catalogue column.

    Parameters
    ----------
    name : str
        Column name.
    line_waves : dict, optional
        Line name -> rest wavelength (Å), for the ``C_<LINE>`` / ``Z_<LINE>`` columns.

    Returns
    -------
    str or None
        At most 46 characters; None for a column it does not know.
    """
    if name in COLUMN_DESCRIPTIONS:
        return COLUMN_DESCRIPTIONS[name]
    if TARGET_BIT_COLUMN.match(name):
        return 'target bits (FIBERMAP)'
    for suffix, source in (('_RR', 'Redrock'), ('_NEW', 'rerun Redrock')):
        base = name[:-len(suffix)]
        if name.endswith(suffix) and base in _RR_DESCRIPTIONS:
            return f'{source} {_RR_DESCRIPTIONS[base]}'
    for prefix, what in (('C_', 'best-box confidence'), ('Z_', 'best-box redshift')):
        line = name[len(prefix):]
        if name.startswith(prefix) and line_waves is not None and line in line_waves:
            return f'{what}, {line} {line_waves[line]:.1f} A'
    return None


def describe_columns(table, line_waves=None, overwrite=True):
    """Set ``.description`` of the columns :func:`column_description` knows, in place.

    Parameters
    ----------
    table : astropy.table.Table
    line_waves : dict, optional
        Line name -> rest wavelength (Å).
    overwrite : bool, optional
        False: only where a column has no description yet.

    Returns
    -------
    astropy.table.Table
        `table`.
    """
    for name in table.colnames:
        if not overwrite and table[name].description:
            continue
        text = column_description(name, line_waves)
        if text is not None:
            table[name].description = text
    return table


def match_targetids(rr_targetid, coadd_targetid, rr_path='', coadd_path=''):
    """Row of the coadd holding each Redrock TARGETID.

    Parameters
    ----------
    rr_targetid : numpy.ndarray of int
        TARGETID of the Redrock file, file order, shape (nrr,), unique.
    coadd_targetid : numpy.ndarray of int
        TARGETID of the coadd spectra, shape (nspec,).
    rr_path, coadd_path : str
        File names, for error messages.

    Returns
    -------
    numpy.ndarray of int
        Shape (nrr,): ``coadd_targetid[idx[i]] == rr_targetid[i]``, or -1 when the
        Redrock TARGETID is not in the coadd.

    Raises
    ------
    InputFileError
        If a coadd TARGETID is duplicated or absent from the Redrock file: the files do
        not belong together and no catalogue is written.
    """
    rr_targetid = as_targetids(rr_targetid, rr_path, 'REDSHIFTS TARGETID')
    coadd_targetid = as_targetids(coadd_targetid, coadd_path, 'FIBERMAP TARGETID')
    uniq, counts = np.unique(coadd_targetid, return_counts=True)
    if np.any(counts > 1):
        raise InputFileError(coadd_path, 'duplicated TARGETID(s) in the coadd, e.g. '
                             f'{uniq[counts > 1][:3].tolist()}')
    idx = lookup(coadd_targetid, rr_targetid)
    found = idx >= 0
    missing = np.setdiff1d(coadd_targetid, rr_targetid[found])
    if missing.size:
        raise InputFileError(rr_path, f'TARGETID mismatch with {coadd_path}: {missing.size} of '
                             f'{coadd_targetid.size} coadd TARGETIDs are not in the Redrock file '
                             f'(e.g. {missing[:3].tolist()})')
    if not np.array_equal(coadd_targetid[idx[found]], rr_targetid[found]):
        raise InputFileError(rr_path, f'TARGETID alignment with {coadd_path} failed')
    return idx


def lookup(keys, queries):
    """Position of each query in `keys` (unique values), -1 when absent.

    Parameters
    ----------
    keys : numpy.ndarray
        Shape (nkeys,), unique.
    queries : numpy.ndarray
        Shape (nq,).

    Returns
    -------
    numpy.ndarray of int64
        Shape (nq,), with ``keys[out[i]] == queries[i]`` where ``out[i] >= 0``.
    """
    keys = np.asarray(keys)
    queries = np.asarray(queries)
    out = np.full(queries.size, -1, dtype=np.int64)
    if keys.size == 0:
        return out
    order = np.argsort(keys, kind='stable')
    pos = np.minimum(np.searchsorted(keys[order], queries), keys.size - 1)
    hit = keys[order][pos] == queries
    out[hit] = order[pos[hit]]
    return out


def bad_fiberstatus_mask():
    """Integer mask of :data:`BAD_FIBERSTATUS_BITS` (desispec ``fibermask``)."""
    from desispec.maskbits import fibermask
    return int(sum(fibermask.mask(name) for name in BAD_FIBERSTATUS_BITS))


def spectrum_flags(info, fibermap, nbins):
    """``LBG_FLAG`` bits known before running the network, per coadd spectrum.

    Parameters
    ----------
    info : lbgnet.preprocess.GridInfo
        From :func:`lbgnet.preprocess.coadd_to_grid` (empty, bands, band_valid,
        nvalid_bins), shape (nspec,) arrays.
    fibermap : astropy.table.Table or None
        Coadd FIBERMAP (OBJTYPE, COADD_FIBERSTATUS used when present).
    nbins : int
        Bins of the input grid.

    Returns
    -------
    numpy.ndarray of int32
        Shape (nspec,): NODATA, MISSING_CAMERA, NOT_SCIENCE and LOW_COVERAGE bits.
    """
    mask = LBGWarnMask()
    nspec = info.empty.size
    flag = np.zeros(nspec, dtype=np.int32)
    flag[info.empty] |= mask.NODATA
    missing = any(cam not in info.bands for cam in DESI_CAMERAS)
    incomplete = ~np.all(info.band_valid, axis=1) if info.band_valid.size else np.zeros(nspec, bool)
    flag[incomplete | missing] |= mask.MISSING_CAMERA
    flag[info.nvalid_bins < nbins / 2] |= mask.LOW_COVERAGE
    flag[not_science(fibermap, nspec)] |= mask.NOT_SCIENCE
    return flag


def not_science(fibermap, nspec):
    """The NOT_SCIENCE rule: FIBERMAP ``OBJTYPE != 'TGT'`` or a ``COADD_FIBERSTATUS`` bit of
    :data:`BAD_FIBERSTATUS_BITS`; shape (nspec,) bool (all False without a FIBERMAP)."""
    bad = np.zeros(nspec, dtype=bool)
    if fibermap is not None:
        if 'OBJTYPE' in fibermap.colnames:
            bad |= np.char.strip(np.asarray(fibermap['OBJTYPE']).astype(str)) != 'TGT'
        if 'COADD_FIBERSTATUS' in fibermap.colnames:
            bad |= (np.asarray(fibermap['COADD_FIBERSTATUS']) & bad_fiberstatus_mask()) != 0
    return bad


def take_rows(values, idx, fill):
    """``values[idx]`` with `fill` where ``idx == -1`` (rows not in the coadd).

    The dtype of `values` is kept (float32 stays float32), except that integers filled
    with a non-integer (NaN) become float64.
    """
    values = np.asarray(values)
    dtype = values.dtype
    if dtype.kind in 'biu' and isinstance(fill, float):
        dtype = np.dtype(np.float64)
    if values.shape[0] == 0:
        out = np.empty((idx.size,) + values.shape[1:], dtype=dtype)
    else:
        out = values[np.clip(idx, 0, None)].astype(dtype, copy=True)
    out[idx < 0] = fill
    return out


def _fill_for(dtype):
    kind = np.dtype(dtype).kind
    return np.nan if kind == 'f' else ('' if kind in 'US' else 0)


def assemble_catalog(redshifts, idx, fibermap, results, flags, line_names, rerun=None,
                     tsnr2_lrg=None, line_waves=None):
    """The ``LBG_CNN`` table, one row per Redrock row, in Redrock order.

    Parameters
    ----------
    redshifts : astropy.table.Table
        Redrock REDSHIFTS (TARGETID, SPECTYPE, Z, ZERR, ZWARN, DELTACHI2), shape (nrr,).
    idx : numpy.ndarray of int
        From :func:`match_targetids`, shape (nrr,).
    fibermap : astropy.table.Table or None
        Coadd FIBERMAP, coadd order (TARGET_RA, TARGET_DEC, target bits).
    results : dict
        Network outputs in coadd order (:func:`lbgnet.postprocess.postprocess`):
        C_LINES, Z_LINES (nspec, nlines); C_LBG, IS_LBG, Z_LBG, ZERR_LBG (nspec,); the
        template refinement's :data:`REFINE_COLUMNS` when present (NaN otherwise).
    flags : numpy.ndarray of int
        ``LBG_FLAG`` per coadd spectrum, shape (nspec,).
    line_names : sequence of str
        Line names, order of the second axis of C_LINES / Z_LINES.
    rerun : astropy.table.Table, optional
        Redrock-rerun results (TARGETID + :data:`RERUN_COLUMNS`); adds the ``*_NEW``
        columns, NaN / blank / 0 for targets not in it.
    tsnr2_lrg : numpy.ndarray, optional
        SCORES ``TSNR2_LRG`` in coadd order, shape (nspec,); the ``TSNR2_LRG`` column
        (NaN without it or for rows not in the coadd).
    line_waves : sequence of float, optional
        Rest wavelengths of `line_names` (Å), for the column descriptions.

    Returns
    -------
    astropy.table.Table
        EXTNAME ``LBG_CNN``.  Rows not in the coadd carry the NOT_IN_COADD bit and NaN
        (False) network outputs.  Columns carry a ``.description`` (:func:`describe_columns`).
    """
    out = Table(meta={'EXTNAME': 'LBG_CNN'})
    out['TARGETID'] = np.asarray(redshifts['TARGETID'], dtype=np.int64)
    for col in ('TARGET_RA', 'TARGET_DEC'):
        src = fibermap[col] if fibermap is not None and col in fibermap.colnames else \
            np.full(len(flags), np.nan)
        out[col] = take_rows(np.asarray(src, dtype=np.float64), idx, np.nan)
        out[col].unit = 'deg'
    if fibermap is not None:
        for col in fibermap.colnames:
            if TARGET_BIT_COLUMN.match(col):
                out[col] = take_rows(np.asarray(fibermap[col], dtype=np.int64), idx, 0)
    nspec = len(flags)
    tsnr2 = np.full(nspec, np.nan) if tsnr2_lrg is None else tsnr2_lrg
    out['TSNR2_LRG'] = take_rows(np.asarray(tsnr2, dtype=np.float64), idx, np.nan)
    for col in RR_COLUMNS:
        values = np.asarray(redshifts[col])
        if values.dtype.kind in 'US':
            # a fixed minimum width (Redrock's SPECTYPE is 6 characters), so that a
            # catalogue's column does not depend on its rows (0 rows, only 'QSO', ...)
            values = values.astype(str)
            width = max(np.dtype(RERUN_DTYPES[col]).itemsize, values.dtype.itemsize) // 4
            values = values.astype(f'U{width}')
        out[f'{col}_RR'] = values
    for col, dtype, fill in (('C_LBG', np.float32, np.nan), ('IS_LBG', bool, False),
                             ('Z_LBG', np.float64, np.nan), ('ZERR_LBG', np.float64, np.nan)):
        out[col] = take_rows(np.asarray(results[col], dtype=dtype), idx, fill)
    for col in REFINE_COLUMNS:
        out[col] = take_rows(np.asarray(results.get(col, np.full(nspec, np.nan)),
                                        dtype=np.float64), idx, np.nan)
    out['LBG_FLAG'] = take_rows(np.asarray(flags, dtype=np.int32), idx, int(LBGWarnMask().NOT_IN_COADD))
    c_lines = take_rows(np.asarray(results['C_LINES'], dtype=np.float32), idx, np.nan)
    z_lines = take_rows(np.asarray(results['Z_LINES'], dtype=np.float64), idx, np.nan)
    for i, name in enumerate(line_names):
        out[f'C_{name}'] = c_lines[:, i]
        out[f'Z_{name}'] = z_lines[:, i]
    if rerun is not None:
        add_rerun_columns(out, rerun)
    return describe_columns(out, None if line_waves is None
                            else dict(zip(line_names, np.asarray(line_waves, dtype=float))))


def add_rerun_columns(table, rerun):
    """Add ``<COL>_NEW`` columns from a Redrock-rerun table, matched on TARGETID.

    Parameters
    ----------
    table : astropy.table.Table
        Catalogue with TARGETID; modified in place.
    rerun : astropy.table.Table or None
        TARGETID + :data:`RERUN_COLUMNS`, any order; None when nothing was rerun.

    Notes
    -----
    Column types are fixed (:data:`RERUN_DTYPES`, COEFF_NEW padded to
    :data:`NCOEFF` coefficients) whatever the templates, so that catalogues stack.
    Rows not rerun get NaN, blank strings and ZWARN_NEW = Redrock's NODATA bit (512), so
    that a ``ZWARN_NEW == 0`` selection takes rerun rows only.
    """
    nrow = len(table)
    idx = np.full(nrow, -1, dtype=np.int64)
    if rerun is not None and len(rerun):
        idx = lookup(np.asarray(rerun['TARGETID'], dtype=np.int64),
                     np.asarray(table['TARGETID'], dtype=np.int64))
    for col in RERUN_COLUMNS:
        dtype = RERUN_DTYPES[col]
        shape = (nrow, NCOEFF) if col == 'COEFF' else (nrow,)
        fill = REDROCK_ZWARN['NODATA'] if col == 'ZWARN' else _fill_for(dtype)
        out = np.full(shape, fill, dtype=dtype)
        if rerun is not None and len(rerun):
            values = np.asarray(rerun[col]).astype(dtype)
            if col == 'COEFF':
                values = values.reshape(len(rerun), -1)[:, :NCOEFF]
                out[idx >= 0, :values.shape[1]] = values[idx[idx >= 0]]
            else:
                out[idx >= 0] = values[idx[idx >= 0]]
        table[f'{col}_NEW'] = out
        table[f'{col}_NEW'].description = column_description(f'{col}_NEW')


def apply_small_deltachi2(flags, is_lbg, deltachi2, zerr=None):
    """Set SMALL_DELTA_CHI2 on the IS_LBG rows whose refined redshift is not singled out.

    Parameters
    ----------
    flags : array_like of int
        LBG_FLAG, shape (nspec,).
    is_lbg : array_like of bool
        Shape (nspec,).
    deltachi2 : array_like
        ``DELTACHI2_TPL`` of a run with the template refinement, shape (nspec,).
    zerr : array_like, optional
        ``ZERR_TPL`` of that run (NaN: χ² is not convex at ``Z_TPL``, or an edge of the search pins it), shape (nspec,).

    Returns
    -------
    numpy.ndarray of int32
        A new array (:func:`lbgnet.refine.reliable_redshift` decides).
    """
    out = np.array(flags, dtype=np.int32, copy=True)
    is_lbg = np.asarray(is_lbg, dtype=bool)
    out[is_lbg & ~reliable_redshift(is_lbg, deltachi2, zerr)] |= LBGWarnMask().SMALL_DELTA_CHI2
    return out


def apply_model_range(flags, redshifts, zrange):
    """Set Z_OUT_OF_RANGE where any finite redshift of a row is outside `zrange`.

    Parameters
    ----------
    flags : array_like of int
        LBG_FLAG, shape (nspec,).
    redshifts : sequence of array_like
        The catalogue's redshifts of each row (``Z_LBG``, ``Z_TPL``: the refinement's
        window reaches beyond the range), each of shape (nspec,); NaN is ignored.
    zrange : (float, float)
        The model's redshift range.

    Returns
    -------
    numpy.ndarray of int32
        A new array.
    """
    out = np.array(flags, dtype=np.int32, copy=True)
    for z in redshifts:
        z = np.asarray(z, dtype=np.float64)
        with np.errstate(invalid='ignore'):
            bad = np.isfinite(z) & ((z < zrange[0]) | (z > zrange[1]))
        out[bad] |= LBGWarnMask().Z_OUT_OF_RANGE
    return out
