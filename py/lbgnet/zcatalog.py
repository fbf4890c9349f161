"""
lbgnet.zcatalog
===============

Stack per-file ``LBG_CNN`` catalogues into one table for clustering: location columns,
every row of every file, the best of a target's rows (``ZCAT_PRIMARY``) and the
quality-selection column ``GOOD_LBG``.
Pure astropy/numpy; files are read and written by :mod:`lbgnet.scripts.lbg_zcatalog`.
The header keywords that must agree between stacked catalogues (:data:`CONSISTENT_KEYS`)
are compared here (:func:`shared_keys`, :func:`differing_keys`), also by the afterburner
for the outputs a rerun would skip.

``GOOD_LBG`` is True when all of these hold:

* IS_LBG (at least n_th lines above c_th; the thresholds are in the header);
* ``Z`` and ``ZERR`` (:func:`best_redshift`) are finite;
* LBG_FLAG has none of the bits in :data:`BAD_FOR_CLUSTERING` (NODATA, NOT_SCIENCE,
  NOT_IN_COADD, Z_OUT_OF_RANGE, LOW_COVERAGE, SMALL_DELTA_CHI2).
  MISSING_CAMERA alone is allowed: the arms present were used, the redshift is still
  measured.  RERUN_FAILED is allowed too: ``Z`` does not come from the Redrock rerun.
  SMALL_DELTA_CHI2 (the template refinement does not single out the redshift)
  is what makes GOOD_LBG a sample of reliable redshifts: on the held-out mock tests 99 %
  of its true LBGs have ``|Δz| < 0.05`` against 85–96 % of all IS_LBG (``doc/model_card.rst``).
  Catalogues made with ``--no-refine`` never carry that bit (header ``REFINE = F``).

Every row of every catalogue is kept — one per TARGETID per file, as desispec's tile
catalogues keep one per tile (a healpix production has one file per survey/program/pixel,
so one row per survey/program) —, so the complete sample of candidates (IS_LBG, any row)
can be drawn from the stacked table.  ``ZCAT_NSPEC`` counts the target's spectra in the
whole catalogue, as desispec's column of that name counts its rows (rows flagged
NOT_IN_COADD have no spectrum and are not counted, so it can be 0).  ``ZCAT_PRIMARY``
marks the best row of each TARGETID, the first of: no bad bit (as desispec's zcatalog
prefers ZWARN = 0; the redshift bits Z_OUT_OF_RANGE and SMALL_DELTA_CHI2 count only for
IS_LBG rows, as a non-candidate's ``Z_LBG`` means nothing: :func:`ranking_bad`), largest
``TSNR2_LRG`` (the depth of the spectrum, from the coadd's SCORES, desispec's choice),
largest DELTACHI2_RR (a depth proxy for files without SCORES), first SURVEY/PROGRAM in
sorted order, first file in the order given (sorted with ``--input-dir``): select
``GOOD_LBG & ZCAT_PRIMARY`` to count each target once.
"""
import re

import numpy as np
from astropy.table import Column, MaskedColumn, Table

from .bitmask import REDROCK_ZWARN, LBGWarnMask
from .catalog import TARGET_BIT_COLUMN, describe_columns

#: LBG_FLAG bits that exclude a row from GOOD_LBG.
BAD_FOR_CLUSTERING = ('NODATA', 'NOT_SCIENCE', 'NOT_IN_COADD', 'Z_OUT_OF_RANGE',
                      'LOW_COVERAGE', 'SMALL_DELTA_CHI2')

#: Columns every input catalogue must have: the selection (:func:`good_lbg`) and the
#: choice of each target's primary row (:func:`stack_catalogs`) read them, and no value
#: could stand in for a missing one (a filled TARGETID would merge different targets).
REQUIRED_COLUMNS = ('TARGETID', 'IS_LBG', 'Z_LBG', 'ZERR_LBG', 'LBG_FLAG', 'DELTACHI2_RR')

#: Location columns and their fill values (absent in a file's header).
#: SPGRPVAL is desispec's value of the spectra grouping (the night of a cumulative or
#: pernight coadd, the EXPID of a perexp one, the pixel of a healpix one): with TILEID and
#: PETAL it names the file a tile row comes from.
LOCATION_COLUMNS = (('SURVEY', 'unknown', 'U16'), ('PROGRAM', 'unknown', 'U16'),
                    ('SPGRP', 'unknown', 'U16'), ('SPGRPVAL', -1, 'i4'), ('HPXPIXEL', -1, 'i8'),
                    ('TILEID', -1, 'i8'), ('PETAL', -1, 'i2'))


#: Header cards naming the ``LBG_FLAG`` bits (:meth:`lbgnet.bitmask.LBGWarnMask.header_cards`).
BIT_CARD = re.compile(r'^LBGBIT\d{2}$')

#: Bits of :data:`BAD_FOR_CLUSTERING` that judge a row's LBG redshift, not its spectrum.
REDSHIFT_BITS = ('Z_OUT_OF_RANGE', 'SMALL_DELTA_CHI2')


#: Header keywords that must agree between the stacked catalogues (model: its weights,
#: its configuration and redshift range, which sets Z_OUT_OF_RANGE; thresholds,
#: rerun, refinement template and settings — its noise included, which sets what
#: DELTACHI2_TPL and hence GOOD_LBG mean —, error calibration).
CONSISTENT_KEYS = ('LBGMSHA', 'LBGCSHA', 'LBGZMIN', 'LBGZMAX', 'CTHRESH', 'NTHRESH', 'ZERRSCL',
                   'ZERRFLR', 'RERUNRR', 'RRTSHA',
                   'REFINE', 'REFTSHA', 'REFWGT', 'REFWIN', 'REFSTEP', 'REFNOISE', 'REFASHA',
                   'REFAWGT', 'REFABAS', 'REFASKP', 'MINDCHI2', 'ZTPLSCL', 'ZTPLFLR')
#: Values of keywords that catalogues written before lbgnet recorded them hold implicitly
#: (uncalibrated redshift errors; a refinement weighted by the pipeline ivar, without
#: archetypes or with the archetype stage run for every spectrum).
IMPLICIT_VALUES = {'ZERRSCL': 1.0, 'ZERRFLR': 0.0, 'ZTPLSCL': 1.0, 'ZTPLFLR': 0.0,
                   'REFNOISE': 'pipeline', 'REFASHA': '', 'REFAWGT': 0.0, 'REFABAS': 0.0,
                   'REFASKP': 0.0}
#: Keywords only a refined catalogue has (``REFINE = T``): their absence from a
#: ``--no-refine`` catalogue is explained by REFINE, not by an older lbgnet.
REFINEMENT_KEYS = ('REFTSHA', 'REFWGT', 'REFWIN', 'REFSTEP', 'REFNOISE', 'REFASHA', 'REFAWGT',
                   'REFABAS', 'REFASKP', 'MINDCHI2', 'ZTPLSCL', 'ZTPLFLR')
#: Further provenance copied to the stacked header when every input has the same value.
PROVENANCE_KEYS = ('LBGMODEL', 'LBGCONF', 'LBGTARG', 'NBOXES', 'GRIDWMIN', 'GRIDDW', 'GRIDNBIN',
                   'REFTEMPL', 'REFARCH', 'HPXNSIDE', 'HPXNEST', 'ZERRCAL', 'ZTPLCAL')


def ranking_bad(table):
    """Rows ranked last among a target's repeats: a bad spectrum, or a bad redshift of an
    LBG candidate (:data:`REDSHIFT_BITS` of a non-candidate say nothing), shape (nrow,)."""
    mask = LBGWarnMask()
    redshift = int(sum(mask.mask(name) for name in REDSHIFT_BITS))
    flag = np.asarray(table['LBG_FLAG'], dtype=np.int64)
    is_lbg = np.asarray(table['IS_LBG'], dtype=bool)
    return ((flag & (bad_bits() & ~redshift)) != 0) | (is_lbg & ((flag & redshift) != 0))


def bad_bits():
    """Integer mask of :data:`BAD_FOR_CLUSTERING`."""
    mask = LBGWarnMask()
    return int(sum(mask.mask(name) for name in BAD_FOR_CLUSTERING))


def usable_location(values):
    """The :data:`LOCATION_COLUMNS` values of `values` (a header, or what a file name says)
    that can fill their column: text not blank, integers that fit their column's type
    (not a bool, a fraction, inf or NaN); the others are left out.

    Returns
    -------
    dict
        Column name -> value (str or int).
    """
    out = {}
    for name, _, dtype in LOCATION_COLUMNS:
        value = values.get(name)
        if value is None or isinstance(value, bool):
            continue
        if np.dtype(dtype).kind != 'i':
            if str(value).strip():
                out[name] = str(value).strip()
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        info = np.iinfo(dtype)
        if np.isfinite(number) and number.is_integer() and info.min <= number <= info.max:
            out[name] = int(number)
    return out


def add_location(table, location):
    """Add the :data:`LOCATION_COLUMNS` from a location (:func:`usable_location` of a
    catalogue header or its file name; in place); missing or unusable values get the
    column's fill value."""
    values = usable_location(location)
    for name, fill, dtype in LOCATION_COLUMNS:
        table[name] = np.full(len(table), values.get(name, fill), dtype=dtype)
    return table


def spectra_key(location, spgrp):
    """Which coadd of a production a catalogue was made from, as far as its location says.

    Two catalogues with the same key hold the same spectra (or, for cumulative tile
    coadds, a later coadd holds the exposures of the earlier one): stacking both would
    count a target's spectra twice.

    Parameters
    ----------
    location : dict
        SURVEY, PROGRAM, HPXPIXEL, TILEID, PETAL, SPGRPVAL of the catalogue (header, else
        file name; absent keys allowed).
    spgrp : str
        Its spectra grouping (lower case).

    Returns
    -------
    tuple or None
        `spgrp` followed by, for healpix: SURVEY, PROGRAM, HPXPIXEL; cumulative: TILEID,
        PETAL; pernight and perexp: TILEID, PETAL, SPGRPVAL.  None when the location does
        not identify the coadd (another grouping, or a value missing or -1).
    """
    def number(key):
        try:
            return int(location[key])
        except (KeyError, TypeError, ValueError):
            return None

    def text(key):
        value = str(location.get(key) or '').strip().lower()
        return value or None

    if spgrp == 'healpix':
        key = (spgrp, text('SURVEY'), text('PROGRAM'), number('HPXPIXEL'))
    elif spgrp == 'cumulative':
        key = (spgrp, number('TILEID'), number('PETAL'))
    elif spgrp in ('pernight', 'perexp'):
        key = (spgrp, number('TILEID'), number('PETAL'), number('SPGRPVAL'))
    else:
        return None
    return None if any(v is None or v == -1 for v in key[1:]) else key


def good_lbg(table):
    """The clustering selection (see the module docstring), shape (nrow,) bool."""
    z, zerr = best_redshift(table)
    flag = np.asarray(table['LBG_FLAG'], dtype=np.int64)
    return (np.asarray(table['IS_LBG'], dtype=bool) & np.isfinite(z) & np.isfinite(zerr)
            & ((flag & bad_bits()) == 0))


def best_redshift(table):
    """The catalogue's best LBG redshift per row: ``Z_TPL`` where refined, else ``Z_LBG``.

    Parameters
    ----------
    table : astropy.table.Table
        With ``Z_LBG``, ``ZERR_LBG`` and, when refined, ``Z_TPL``, ``ZERR_TPL`` (an absent
        column, or a masked entry, counts as NaN).

    Returns
    -------
    z, zerr : numpy.ndarray
        Shape (nrow,); the pair comes from the same column set (``ZERR_TPL`` with
        ``Z_TPL``), NaN where neither redshift is finite.
    """
    def column(name):           # masked entries (a MaskedColumn) count as NaN
        if name in table.colnames:
            return np.ma.filled(np.ma.asarray(table[name], dtype=np.float64), np.nan)
        return np.full(len(table), np.nan)
    z, zerr = column('Z_LBG'), column('ZERR_LBG')
    refined = np.isfinite(column('Z_TPL'))
    return (np.where(refined, column('Z_TPL'), z), np.where(refined, column('ZERR_TPL'), zerr))


#: Fills that differ from :func:`fill_value`'s default for their type: a row of a
#: catalogue made without ``--rerun-redrock`` was not rerun, which the afterburner marks
#: with Redrock's NODATA bit (:func:`lbgnet.catalog.add_rerun_columns`).
SPECIAL_FILLS = {'ZWARN_NEW': REDROCK_ZWARN['NODATA']}


def fill_value(column, name=None):
    """What a catalogue without `column` contributes to it: 0 for integers (target bits),
    NaN for floats, False for booleans, '' for strings, or the :data:`SPECIAL_FILLS` value
    of the column `name`."""
    if name in SPECIAL_FILLS:
        return SPECIAL_FILLS[name]
    kind = np.asarray(column).dtype.kind
    return {'f': np.nan, 'b': False, 'U': '', 'S': b''}.get(kind, 0)


class CatalogColumns:
    """One catalogue's columns as plain numpy arrays, for stacking many catalogues.

    An astropy Table holds a Column object (with its ``info``) per column, about 100 KB
    per catalogue of ~70 columns whatever its length: some 160 MB for the 1,600
    catalogues of ``benchmarks/bench_zcatalog.py``, about 10 GB for 10^5.  This keeps
    only the arrays (in native byte order, contiguous, each its own copy, so that nothing
    holds the file's table), and each column's unit, description and display format in
    one mapping that catalogues with the same columns share.  It answers ``colnames``,
    ``len()`` and ``catalog[name]`` as a Table does; :func:`stack_catalogs` turns a
    list of them into one Table.

    Parameters
    ----------
    data : dict
        Column name -> numpy.ndarray (numpy.ma.MaskedArray where entries are masked),
        all of one length.
    attributes : dict
        Column name -> (unit, description, format) for (at least) the columns of `data`
        (shared with other catalogues: never modified).
    nrow : int
    """

    __slots__ = ('data', 'attributes', 'nrow')

    def __init__(self, data, attributes, nrow):
        self.data, self.attributes, self.nrow = data, attributes, int(nrow)

    @classmethod
    def from_table(cls, table, shared=None):
        """The columns of an astropy Table (a CatalogColumns is returned as it is).

        Parameters
        ----------
        table : astropy.table.Table or CatalogColumns
        shared : dict, optional
            Attribute mappings already seen (filled here): catalogues with the same
            columns then hold one mapping between them.
        """
        if isinstance(table, cls):
            return table
        data, attributes = {}, []
        for name in table.colnames:
            col = table[name]
            native = col.dtype.newbyteorder('=')
            if getattr(col, 'mask', None) is not None and np.any(col.mask):
                data[name] = np.ma.array(np.array(col.data.data, dtype=native),
                                         mask=np.array(col.mask), copy=False)
            else:
                data[name] = np.array(col, dtype=native)
            attributes.append((name, col.unit, col.description, col.format))
        key = tuple(attributes)
        attributes = {a[0]: a[1:] for a in key}
        if shared is not None:
            attributes = shared.setdefault(key, attributes)
        return cls(data, attributes, len(table))

    @property
    def colnames(self):
        """Column names, in order."""
        return list(self.data)

    def __getitem__(self, name):
        return self.data[name]

    def __len__(self):
        return self.nrow

    def replaced(self, name, values):
        """A CatalogColumns with the column `name` replaced by `values` (the others shared)."""
        data = dict(self.data)
        data[name] = values
        return CatalogColumns(data, self.attributes, self.nrow)


def concatenate_catalogs(catalogs):
    """Stack :class:`CatalogColumns` with the same column names into one Table.

    Each column is ``numpy.concatenate`` of the catalogues' arrays (masked where any
    entry is), with the unit, description and format of the first catalogue's column.
    """
    first = catalogs[0]
    columns = []
    for name in first.colnames:
        parts = [cat[name] for cat in catalogs]
        masked = any(isinstance(part, np.ma.MaskedArray) for part in parts)
        data = np.ma.concatenate(parts) if masked else np.concatenate(parts)
        unit, description, fmt = first.attributes[name]
        kind = MaskedColumn if masked else Column
        columns.append(kind(data, name=name, unit=unit, description=description, format=fmt,
                            copy=False))
    return Table(columns, copy=False)


#: Columns that only newer catalogues have and whose absence means "unknown": always
#: completed (NaN ranks a repeated spectrum last), like the target bits.
OPTIONAL_COLUMNS = ('TSNR2_LRG',)


def unify_columns(tables, allow_mixed=False, sources=None):
    """Give every table the union of the columns, in the first table's order then new ones.

    Target-bit columns (``DESI_TARGET``, ``SV1_DESI_TARGET``, …) differ between surveys and
    are always completed with 0, and :data:`OPTIONAL_COLUMNS` with NaN.  Any other
    difference (``*_NEW`` columns of ``--rerun-redrock``, another catalogue version) is
    refused unless `allow_mixed`, and then completed with :func:`fill_value`.

    Parameters
    ----------
    tables : sequence of astropy.table.Table or CatalogColumns
    allow_mixed : bool, optional
    sources : sequence of str, optional
        File of each table, for the error message.

    Returns
    -------
    list of CatalogColumns
        A :class:`CatalogColumns` given that already has every column in order is
        returned itself; the others share their arrays with it (a Table given is copied
        once, by :meth:`CatalogColumns.from_table`).  Modify them only through copies.

    Raises
    ------
    ValueError
        Naming the columns that differ and a file that lacks one, when they are not
        target bits or optional and not `allow_mixed`.
    """
    shared = {}
    tables = [CatalogColumns.from_table(tab, shared) for tab in tables]
    # sets and dicts, one pass each: a production stacks ~1e5 catalogues, and searching
    # the list of tables per missing column was quadratic (main-survey files lack the
    # SV*_ target bits of the sv files sorted after them)
    present = [set(tab.colnames) for tab in tables]
    names, seen = [], set()
    for tab in tables:
        for col in tab.colnames:
            if col not in seen:
                seen.add(col)
                names.append(col)
    missing = set().union(*(seen - cols for cols in present))
    other = sorted(c for c in missing
                   if not TARGET_BIT_COLUMN.match(c) and c not in OPTIONAL_COLUMNS)
    if other and not allow_mixed:
        where = ''
        if sources is not None:
            lacking = next(i for i, cols in enumerate(present) if other[0] not in cols)
            where = f' ({other[0]} absent from {sources[lacking]})'
        raise ValueError(f'catalogues differ in columns {", ".join(other[:6])}'
                         f'{" …" if len(other) > 6 else ""}{where} (mixed --rerun-redrock or '
                         'lbgnet versions?); use --allow-mixed to stack them anyway')
    ref = {col: next(tab for tab, cols in zip(tables, present) if col in cols)
           for col in missing}
    out, attributes = [], {}
    for tab, cols in zip(tables, present):
        if tab.colnames == names:
            out.append(tab)
            continue
        data = {}            # the table's own arrays are shared, not copied
        for col in names:
            if col in cols:
                data[col] = tab[col]
            else:            # vector columns (COEFF_NEW of --rerun-redrock) keep their shape
                like = np.asarray(ref[col][col])
                data[col] = np.full((len(tab),) + like.shape[1:], fill_value(like, col),
                                    dtype=like.dtype)
        key = (id(tab.attributes), tuple(names))
        if key not in attributes:
            merged = {col: ref[col].attributes[col] for col in missing}
            merged.update(tab.attributes)
            attributes[key] = merged
        out.append(CatalogColumns(data, attributes[key], len(tab)))
    return out


def missing_columns(table):
    """The :data:`REQUIRED_COLUMNS` that `table` lacks, in that order."""
    return [name for name in REQUIRED_COLUMNS if name not in table.colnames]


#: numpy dtype kinds each required column may have (LBG_FLAG a bit mask, IS_LBG a FITS
#: logical, the others numbers; TARGETID is checked by :func:`lbgnet.io.targetid.as_targetids`).
REQUIRED_KINDS = {'IS_LBG': ('b', 'a boolean'), 'LBG_FLAG': ('iu', 'an integer bit mask'),
                  'Z_LBG': ('iuf', 'a number'), 'ZERR_LBG': ('iuf', 'a number'),
                  'DELTACHI2_RR': ('iuf', 'a number')}


def column_kind_problems(table):
    """Words for each :data:`REQUIRED_KINDS` column of `table` whose values are of
    another kind (text, a float bit mask that NaN would turn into any bits), in order."""
    problems = []
    for name, (kinds, what) in REQUIRED_KINDS.items():
        if name in table.colnames:
            column = np.asarray(table[name])
            if column.dtype.kind not in kinds or column.ndim != 1:
                shape = f' {column.shape[1:]}' if column.ndim != 1 else ''
                problems.append(f'{name} must hold {what} per row, not {column.dtype}{shape}')
    return problems


def bit_meaning_problems(header):
    """Words for each ``LBGBITnn`` card of `header` that gives an ``LBG_FLAG`` bit another
    name than this lbgnet's :class:`lbgnet.bitmask.LBGWarnMask` (whose bits GOOD_LBG and
    ZCAT_PRIMARY test), in order; absent cards (older catalogues) are no problem."""
    ours = {key: value for key, value, _ in LBGWarnMask().header_cards()}
    problems = []
    for key in sorted(str(k) for k in header if BIT_CARD.match(str(k))):
        theirs = str(header[key]).strip()
        if key not in ours:
            problems.append(f'{key} = {theirs!r}, a bit this lbgnet does not have')
        elif theirs != ours[key]:
            problems.append(f'{key} = {theirs!r}, which this lbgnet names {ours[key]!r}')
    return problems


def check_column_kinds(tables, sources=None):
    """Refuse a column that holds text in one catalogue and numbers in another, or
    entries of another shape (a vector column of another length).

    Parameters
    ----------
    tables : sequence of astropy.table.Table
        With the same column names (:func:`unify_columns`).
    sources : sequence of str, optional
        File of each table, for the error message.

    Raises
    ------
    ValueError
        Naming the column and the first file that differs from the first catalogue.
    """
    for name in tables[0].colnames:
        text = [np.asarray(tab[name]).dtype.kind in 'SU' for tab in tables]
        if any(text) != all(text):
            i = text.index(not text[0])
            kinds = ('numbers', 'text')
            files = (f' in {sources[i]}', f' in {sources[0]}') if sources is not None else ('', '')
            raise ValueError(f'column {name} holds {kinds[text[i]]}{files[0]} but '
                             f'{kinds[text[0]]}{files[1]}')
        shapes = [np.shape(tab[name])[1:] for tab in tables]
        for i, shape in enumerate(shapes):
            if shape != shapes[0]:
                files = (f' in {sources[i]}', f' in {sources[0]}') if sources is not None else ('', '')
                raise ValueError(f'column {name} has entries of shape {shape}{files[0]} but '
                                 f'{shapes[0]}{files[1]}')


def _first_of_groups(rank, group):
    """Sort rows by `group` then `rank` (lexsort keys, least significant first) and find
    the first row of each group.

    Returns
    -------
    order : numpy.ndarray of int
        The sorting permutation.
    starts : numpy.ndarray of int
        Positions in `order` where a group starts.
    """
    order = np.lexsort(tuple(rank) + tuple(group))
    ids = np.column_stack([np.unique(np.asarray(g)[order], return_inverse=True)[1]
                           for g in group[::-1]])
    first = np.ones(len(order), dtype=bool)
    first[1:] = np.any(ids[1:] != ids[:-1], axis=1)
    return order, np.flatnonzero(first)


def int32_flags(table, source=None):
    """`table` (a :class:`CatalogColumns`, or a Table made into one) with ``LBG_FLAG`` as
    native int32, the catalogue's type (an unsigned 64-bit one beside int32 ones would
    stack as float64).

    Raises
    ------
    ValueError
        If a value does not fit in 32 bits (no such ``LBG_FLAG`` bit exists), naming
        `source`.
    """
    table = CatalogColumns.from_table(table)
    flag = np.asarray(table['LBG_FLAG'])
    if flag.dtype == np.dtype(np.int32) and flag.dtype.isnative:
        return table
    limits = np.iinfo(np.int32)
    if flag.size and (flag.min() < limits.min or flag.max() > limits.max):
        raise ValueError(f'{source or "a catalogue"}: LBG_FLAG holds values beyond 32 bits '
                         f'({flag.min()} to {flag.max()}): not lbgnet warning bits')
    return table.replaced('LBG_FLAG', flag.astype(np.int32))


def stack_catalogs(tables, allow_mixed=False, sources=None, consume=False):
    """Stack catalogues: every row kept, the best of each TARGETID marked ``ZCAT_PRIMARY``.

    Parameters
    ----------
    tables : sequence of astropy.table.Table or CatalogColumns
        Catalogues with location columns (:func:`add_location`), in file order
        (``desi_lbg_zcatalog`` keeps each file's as :class:`CatalogColumns`).
    consume : bool, optional
        Empty the list `tables` once its rows are stacked, so that the per-file tables are
        freed while the stacked one is sorted and completed (``desi_lbg_zcatalog``: a
        production's catalogues would otherwise be held twice) [False].
    allow_mixed : bool, optional
        Complete columns that only some catalogues have (:func:`unify_columns`).
    sources : sequence of str, optional
        File of each table, for error messages.

    Returns
    -------
    astropy.table.Table
        Sorted by SURVEY, PROGRAM, TARGETID, then the order of `tables`, with
        ``ZCAT_NSPEC``, ``ZCAT_PRIMARY``, ``Z``, ``ZERR`` (:func:`best_redshift`) and
        ``GOOD_LBG``.

    Raises
    ------
    ValueError
        If the catalogues differ in other columns than target bits and not `allow_mixed`,
        or a column holds text in one catalogue and numbers in another.
    """
    given, tables = tables, list(tables)
    if not tables:
        raise ValueError('no catalogue to stack')
    tables = unify_columns(tables, allow_mixed, sources)
    check_column_kinds(tables, sources)
    tables = [int32_flags(tab, None if sources is None else sources[i])
              for i, tab in enumerate(tables)]
    stacked = concatenate_catalogs(tables)
    fileorder = np.concatenate([np.full(len(t), i) for i, t in enumerate(tables)])
    del tables                   # the stacked copy holds every row: free the per-file ones
    if consume and isinstance(given, list):
        given.clear()
    bad = ranking_bad(stacked)
    dchi2 = np.nan_to_num(np.asarray(stacked['DELTACHI2_RR'], dtype=np.float64), nan=-np.inf)
    tsnr2 = (np.nan_to_num(np.asarray(stacked['TSNR2_LRG'], dtype=np.float64), nan=-np.inf)
             if 'TSNR2_LRG' in stacked.colnames else np.zeros(len(stacked)))
    # every row is kept (one per TARGETID per file, as desispec's tile catalogues keep one
    # per tile): sorted by SURVEY, PROGRAM, TARGETID, then file order
    tid = np.asarray(stacked['TARGETID'])
    order = np.lexsort((fileorder, tid, np.asarray(stacked['PROGRAM']),
                        np.asarray(stacked['SURVEY'])))
    out = stacked[order]
    del stacked
    bad, dchi2, tsnr2, tid = bad[order], dchi2[order], tsnr2[order], tid[order]
    # spectra of the target in the whole catalogue: rows that carry a spectrum (not
    # NOT_IN_COADD)
    notin = (np.asarray(out['LBG_FLAG'], dtype=np.int64)
             & LBGWarnMask().mask('NOT_IN_COADD')) != 0
    _, target = np.unique(tid, return_inverse=True)
    out['ZCAT_NSPEC'] = np.bincount(target, weights=~notin)[target].astype(np.int16)
    # the best row of each TARGETID: no bad bit, then the deepest, then the first
    # SURVEY/PROGRAM in sorted order and the first file (the rows' order)
    rank = (np.arange(len(out)), -dchi2, -tsnr2, bad)
    primary_order, primary_starts = _first_of_groups(rank, (tid,))
    out['ZCAT_PRIMARY'] = np.zeros(len(out), dtype=bool)
    out['ZCAT_PRIMARY'][primary_order[primary_starts]] = True
    out['Z'], out['ZERR'] = best_redshift(out)
    out['GOOD_LBG'] = good_lbg(out)
    out.meta = {'EXTNAME': 'LBG_ZCAT'}
    out = describe_columns(Table(out, copy=False), overwrite=False)
    out['TARGETID'].description = 'DESI target id'       # sorted, not in Redrock's order
    return out


def code_revision(header):
    """The lbgnet that wrote a catalogue.

    Parameters
    ----------
    header : mapping
        The catalogue's header.

    Returns
    -------
    str or None
        Its source revision (``LBGGIT``), else its version (``DEPNAMnn``/``DEPVERnn`` of
        lbgnet, as ``'lbgnet X'``), else None (not recorded).
    """
    from desiutil.depend import getdep
    revision = str(header.get('LBGGIT') or '').strip()
    if revision:
        return revision
    try:
        return f'lbgnet {str(getdep(header, "lbgnet")).strip()}'
    except KeyError:
        return None


def describe_revisions(revisions, unknown=0):
    """``INLBGGIT`` and the warning for the lbgnet revisions of the stacked catalogues.

    Code changes (a refinement fix, say) can move columns without changing the model's
    SHA-256, so stacking catalogues of several revisions is said.

    Parameters
    ----------
    revisions : dict
        Number of catalogues per :func:`code_revision` (those that record one).
    unknown : int, optional
        Number of catalogues that record none.

    Returns
    -------
    inlbggit : str or None
        The common revision, ``'mixed'``, or None when no catalogue records one.
    warning : str or None
        Naming each revision with its count, when there are several.
    """
    if len(revisions) <= 1:
        return (next(iter(revisions)) if revisions else None), None
    listed = ', '.join(f'{rev} ({n})' for rev, n in sorted(revisions.items(),
                                                          key=lambda item: -item[1]))
    return 'mixed', (f'the stacked catalogues were written by {len(revisions)} lbgnet '
                     f'revisions: {listed}'
                     + (f' ({unknown} record none)' if unknown else '')
                     + '; code changes between them may move columns without changing the '
                     'model (rerun the afterburner with one revision for a uniform '
                     'catalogue); header INLBGGIT = mixed')


def shared_keys(header):
    """Provenance keywords of one catalogue header.

    Parameters
    ----------
    header : dict
        Primary header of a catalogue.

    Returns
    -------
    values : dict
        :data:`CONSISTENT_KEYS`, :data:`PROVENANCE_KEYS` and the ``LBGBITnn`` bit names;
        an absent keyword is None, or its :data:`IMPLICIT_VALUES` entry.
    absent : set of str
        The keywords the header does not have.
    """
    names = CONSISTENT_KEYS + PROVENANCE_KEYS
    names += tuple(sorted(k for k in header if str(k).startswith('LBGBIT')))
    # a --no-refine catalogue lacks the refinement keywords because of REFINE, not because
    # an older lbgnet held their implicit values
    implied = {k: v for k, v in IMPLICIT_VALUES.items()
               if header.get('REFINE') is not False or k not in REFINEMENT_KEYS}
    return ({k: header.get(k, implied.get(k)) for k in names},
            {k for k in names if k not in header})


def describe_difference(keys, here, first):
    """What differs from the first catalogue, one phrase per keyword.

    Parameters
    ----------
    keys : sequence of str
        Keywords whose values differ.
    here, first : (dict, set, str)
        :func:`shared_keys` of this and of the first catalogue, and the first's path.

    Returns
    -------
    str
    """
    (values, absent), (first_values, first_absent, first_path) = here, first
    if 'REFINE' in keys and 'REFINE' not in absent | first_absent:
        # one was made with --no-refine: its missing refinement keywords follow from that
        keys = [k for k in keys if k not in REFINEMENT_KEYS]
    if 'RERUNRR' in keys and 'RERUNRR' not in absent | first_absent:
        # one was made without --rerun-redrock: it has no rerun template to record
        keys = [k for k in keys if k != 'RRTSHA']
    def short(key, value):       # a SHA-256 is told apart by its first digits
        return f'{value[:12]}...' if key.endswith('SHA') and isinstance(value, str) \
            and len(value) > 12 else value
    values = {k: short(k, v) for k, v in values.items()}
    first_values = {k: short(k, v) for k, v in first_values.items()}
    parts = []
    for k in keys:
        if k in first_absent:
            parts.append(f'{k} absent from {first_path}' + (
                f' (taken as {first_values[k]!r}), {values[k]!r} here'
                if first_values[k] is not None else ''))
        elif k in absent:
            parts.append(f'{k} absent here' + (f' (taken as {values[k]!r})'
                                               if values[k] is not None else '')
                         + f', {first_values[k]!r} in {first_path}')
        else:
            parts.append(f'{k} = {values[k]!r} here, {first_values[k]!r} in {first_path}')
    text = '; '.join(parts)
    if any(k in first_absent or k in absent for k in keys):
        text += ' (a catalogue written by an older lbgnet: run the afterburner on it again)'
    return text


def differing_keys(values, reference, keys=CONSISTENT_KEYS):
    """The `keys` whose values differ between two :func:`shared_keys` results (numbers
    equal to 1e-12 relative, as a FITS card may round the last digit), in `keys` order."""
    def same(a, b):
        numbers = (int, float, np.integer, np.floating)
        if (isinstance(a, numbers) and isinstance(b, numbers)
                and not isinstance(a, bool) and not isinstance(b, bool)):
            return bool(np.isclose(float(a), float(b), rtol=1e-12, atol=0.0))
        return a == b
    return [k for k in keys if not same(values.get(k), reference.get(k))]
