"""
lbgnet.io.fitsutil
==================

Small helpers around :mod:`fitsio` that turn its errors into :class:`InputFileError`.
"""
import os
import re

import fitsio
import numpy as np
from astropy.table import Table

from .errors import InputFileError, MissingInputError

#: Header keywords that say where a file's spectra come from, copied when present from the
#: input files into the outputs (FAPRGRM: the fiberassign program of a tile, which stands
#: in for PROGRAM where a tile file lacks it; a tile coadd may carry it in its FIBERMAP
#: header only) and kept in ``Table.meta`` by :func:`read_table`.
LOCATION_KEYS = ('SURVEY', 'PROGRAM', 'FAPRGRM', 'SPGRP', 'SPGRPVAL', 'TILEID', 'PETAL',
                 'NIGHT', 'HPXPIXEL', 'HPXNSIDE', 'HPXNEST')

#: Integers below this bound (64-bit signed) are written as FITS integer cards that every
#: reader reads back as an integer; cfitsio writes a larger one too, but fitsio reads it
#: back as a string (astropy as an integer), so a seed written into a header must stay below it.
FITS_INT_LIMIT = 2 ** 63


#: Path text that cfitsio reads as its extended file-name syntax rather than as part of the
#: name: brackets (HDU / filter / section), parentheses (output-file template), a trailing
#: ``+N`` (HDU number), a leading ``!`` (clobber) and surrounding blanks (stripped).
_CFITSIO_SYNTAX = re.compile(r'[\[\]()]|\+\d+$|^!|^\s|\s$')


def cfitsio_name_problem(path):
    """Why cfitsio would not open `path` as written, or None.

    cfitsio (under :mod:`fitsio`) parses file names: ``out[v2]/cat.fits`` opens ``out``
    and, for writing with clobber, replaces that other file.  Such paths are refused
    before any file is touched.

    Parameters
    ----------
    path : str

    Returns
    -------
    str or None
        A message naming the offending text.
    """
    found = _CFITSIO_SYNTAX.search(str(path))
    if found is None:
        return None
    what = repr(found.group()) if found.group().strip() else 'a leading or trailing blank'
    return (f'the path contains {what}, which cfitsio reads as extended file-name syntax '
            '(brackets, parentheses, a trailing +N, a leading !); rename the file or '
            'directory, or link it under another name')


def check_input_path(path):
    """Check, without opening it, that `path` names a file :func:`open_fits` can open.

    Raises
    ------
    MissingInputError
        If `path` does not exist (naming its compressed or uncompressed twin when that
        one is there).
    InputFileError
        If it is a directory, cannot be read (permissions) or its name holds cfitsio
        syntax (:func:`cfitsio_name_problem`).
    """
    path = str(path)
    if not os.path.exists(path):
        # a coadd compressed without its Redrock file (or the reverse): say what is there
        twin = path[:-3] if path.endswith('.gz') else path + '.gz'
        if os.path.isfile(twin):
            raise MissingInputError(path, f'no such file ({os.path.basename(twin)} is there: '
                                    'compress both files of a pair, or neither)')
        if os.path.islink(path):          # listed by ls, so 'no such file' puzzles
            target = os.path.join(os.path.dirname(path), os.readlink(path))
            if os.path.lexists(target):   # a chain of links that ends nowhere, or a loop
                raise MissingInputError(path, 'a symbolic link that leads nowhere (a chain '
                                        'of links ending at a missing file, or a loop)')
            raise MissingInputError(path, f'a symbolic link to {os.path.normpath(target)}, '
                                    'which does not exist')
        raise MissingInputError(path)
    if os.path.isdir(path):
        raise InputFileError(path, 'is a directory, not a FITS file')
    problem = cfitsio_name_problem(path)
    if problem:
        raise InputFileError(path, problem)
    if not os.access(path, os.R_OK):      # cfitsio says only 'could not open the named file'
        raise InputFileError(path, 'cannot read it (permission denied)')


def open_fits(path):
    """Open a FITS file read-only, checking that it exists and is complete.

    Parameters
    ----------
    path : str
        File to open.

    Returns
    -------
    fitsio.FITS

    Raises
    ------
    MissingInputError
        If `path` does not exist.
    InputFileError
        If it cannot be read (permissions), is not FITS, is shorter than its headers say
        (truncated), or its name holds cfitsio syntax (:func:`cfitsio_name_problem`).
    """
    path = str(path)
    check_input_path(path)
    clear_cfitsio_errors()
    try:
        fx = fitsio.FITS(path)
    except (OSError, UnicodeDecodeError, ValueError) as err:     # damaged headers: decode errors
        raise InputFileError(path, unreadable_reason(path, err)) from None
    try:
        size = os.path.getsize(path)
        data_end = max(hdu.get_offsets()['data_end'] for hdu in fx)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        fx.close()
        raise InputFileError(path, f'corrupt FITS structure ({_first_line(err)})') from None
    try:
        size, after = _content_extent(path, data_end)
    except (OSError, EOFError) as err:                # a .gz file cut short or damaged
        fx.close()
        raise InputFileError(path, f'truncated or damaged gzip file ({_first_line(err)})') from None
    problem = None
    if data_end > size:
        problem = f'truncated FITS file ({size} bytes, headers need {data_end})'
    elif after.startswith(b'XTENSION'):
        # fitsio stops listing HDUs at a header cut short: a file truncated there would
        # otherwise pass as a smaller, valid one
        problem = (f'truncated or damaged FITS file: an HDU header at byte {data_end} '
                   f'(after HDU {len(fx) - 1}) cannot be read')
    if problem:
        fx.close()
        raise InputFileError(path, problem)
    return fx


def header_fingerprint(path, columns=None):
    """A short fingerprint of a FITS file's content, from a few header values (and columns).

    Per HDU its name, data shape (``NAXISn``, ``PCOUNT``) and, in files written by
    desispec, ``DATASUM`` and ``CHECKSUM``: a coadd rewritten with other content
    (re-reduced, or a cumulative tile coadd with new exposures) changes them, while a copy
    of the same file elsewhere (another mount, ``cp`` without ``-p``, gzip) keeps them.
    Files without ``DATASUM`` (Redrock's) add `columns`, read and hashed in fixed dtypes;
    without `columns` (a coadd), the data of every HDU without ``DATASUM`` is hashed
    (a stripped or hand-made coadd rewritten with other values of the same shapes was not
    told apart; this reads the whole HDU, a cost only such files pay).  Values, not the
    header text, are hashed, so that another fitsio version (which renders headers
    differently) gives the same fingerprint.  A file without ``DATASUM`` rewritten with the
    same shapes and `columns` is not told apart.

    The file is opened without :func:`open_fits`'s completeness check (a gzipped file is
    not decompressed twice): a truncated file still fails when it is processed.

    Parameters
    ----------
    path : str
    columns : (str, list of str), optional
        An HDU name and columns of it to hash as well (those the HDU has).

    Returns
    -------
    str
        16 hexadecimal digits (of a SHA-256).

    Raises
    ------
    MissingInputError, InputFileError
        A missing file, or one whose headers or columns cannot be read.
    """
    path = str(path)
    if not os.path.exists(path):
        raise MissingInputError(path)
    clear_cfitsio_errors()
    try:
        with fitsio.FITS(path) as fx:
            return open_file_fingerprint(fx, path, columns)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputFileError(path, unreadable_reason(path, err)) from None


#: Header keywords of each HDU in :func:`header_fingerprint`.
FINGERPRINT_KEYS = re.compile(r'^(NAXIS\d*|PCOUNT|DATASUM|CHECKSUM)$')


def open_file_fingerprint(fx, path, columns=None):
    """:func:`header_fingerprint` of a file already open (`fx`, a fitsio.FITS of `path`)."""
    import hashlib
    digest = hashlib.sha256()
    try:
        for hdu in fx:
            hdr = hdu.read_header()
            values = [f'{key}={str(hdr[key]).strip()}' for key in sorted(hdr.keys())
                      if FINGERPRINT_KEYS.match(str(key))]
            digest.update('|'.join([hdu.get_extname().upper(), *values]).encode() + b'\n')
            if columns is None and 'DATASUM' not in hdr:
                data = hdu.read()
                if data is not None:
                    digest.update(np.ascontiguousarray(data).tobytes())
        if columns is not None and columns[0] in extnames(fx):
            hdu = fx[columns[0]]
            for name in [c for c in columns[1] if c in hdu.get_colnames()]:
                digest.update(_column_bytes(hdu.read_column(name)))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputFileError(path, f'unreadable header or table ({_first_line(err)})') from None
    return digest.hexdigest()[:16]


def _column_bytes(values):
    """Bytes of a column in a fixed form: strings stripped, integers int64, floats float64."""
    values = np.asarray(values)
    if values.dtype.kind in 'SU':
        text = '\0'.join(v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel())
        return ('\0'.join(t.strip() for t in text.split('\0'))).encode()
    kind = '<i8' if values.dtype.kind in 'iub' else '<f8'
    return np.ascontiguousarray(values.astype(kind)).tobytes()


#: Columns of a Redrock file's REDSHIFTS added to its fingerprint (Redrock writes no
#: DATASUM): those the catalogue copies.
REDROCK_FINGERPRINT_COLUMNS = ('REDSHIFTS', ['TARGETID', 'Z', 'ZERR', 'ZWARN', 'CHI2',
                                             'DELTACHI2', 'SPECTYPE', 'SUBTYPE', 'COEFF'])


def _content_extent(path, offset):
    """Size of the FITS content of `path` (decompressed for gzip) and its first 8 bytes at
    `offset` (b'' past the end)."""
    if not _is_gzip(path):
        with open(path, 'rb') as fh:
            fh.seek(offset)
            return os.path.getsize(path), fh.read(8)
    import gzip
    size, after = 0, b''
    with gzip.open(path, 'rb') as fh:                 # to the end: detects a cut stream
        while True:
            block = fh.read(1 << 22)
            if not block:
                return size, after
            if size <= offset + 8 and size + len(block) > offset:
                after += block[max(offset - size, 0):offset + 8 - size]
            size += len(block)


#: A path that never exists: opening it is a harmless cfitsio error (:func:`clear_cfitsio_errors`).
_NO_SUCH_FILE = os.path.join(os.sep, 'nonexistent-lbgnet-dir', 'no-such-file.fits')


def clear_cfitsio_errors():
    """Empty cfitsio's process-wide stack of error messages.

    Reading a header card with undecodable bytes can leave messages holding those bytes
    in the stack without raising.  The next error cfitsio reports — even the expected
    end-of-file that ends fitsio's scan of the HDUs of a good file, or the one of opening
    a new output file — then carries them and fails to decode, so one damaged file would
    make the next file of a batch fail.  Reporting an error empties the stack, so this
    provokes one (opening a file that does not exist) and ignores it.  Called before every
    file is opened for reading or writing.
    """
    try:
        fitsio.FITS(_NO_SUCH_FILE).close()
    except (OSError, UnicodeDecodeError, ValueError):
        pass


def _is_gzip(path):
    """True when `path` starts with the gzip magic bytes."""
    with open(path, 'rb') as fh:
        return fh.read(2) == b'\x1f\x8b'


def extnames(fx):
    """Upper-case EXTNAMEs of all HDUs of an open file (primary HDU excluded)."""
    return [hdu.get_extname().upper() for hdu in fx[1:]]


def check_table_hdu(fx, ext, path):
    """Raise :class:`InputFileError` unless HDU `ext` of an open file is a table."""
    if fx[ext].get_exttype() not in ('BINARY_TBL', 'ASCII_TBL'):
        raise InputFileError(path, f'HDU {ext} is an image, not a table')


def check_image_hdu(fx, ext, path):
    """Raise :class:`InputFileError` unless HDU `ext` of an open file is an image."""
    if fx[ext].get_exttype() != 'IMAGE_HDU':
        raise InputFileError(path, f'HDU {ext} is a table, not an image')


def read_image(fx, ext, path):
    """Read one image HDU, returning an empty array for a zero-size image.

    Raises
    ------
    InputFileError
        The HDU is a table, or its data cannot be read.
    """
    check_image_hdu(fx, ext, path)
    hdu = fx[ext]
    try:
        dims = hdu.get_dims()
        if len(dims) == 0 or 0 in dims:
            return np.zeros(tuple(dims) if dims else (0,), dtype=np.float32)
        return hdu.read()
    except OSError as err:
        raise InputFileError(path, f'cannot read HDU {ext} ({_first_line(err)})') from None


def read_table(fx, ext, path, columns=None):
    """Read one table HDU into an :class:`astropy.table.Table`.

    Parameters
    ----------
    fx : fitsio.FITS
    ext : str
        EXTNAME.
    path : str
        File name, for error messages.
    columns : list of str, optional
        Columns to read; all when omitted.  Missing ones raise :class:`InputFileError`.

    Returns
    -------
    astropy.table.Table
        Column names in upper case (FITS names are case-insensitive); its ``meta`` holds
        ``EXTNAME`` and the HDU's :data:`LOCATION_KEYS` present.
    """
    check_table_hdu(fx, ext, path)
    hdu = fx[ext]
    if columns is not None:      # FITS column names are case-insensitive: the file's spelling
        have = {c.upper(): c for c in hdu.get_colnames()}
        missing = [c for c in columns if c.upper() not in have]
        if missing:
            raise InputFileError(path, f'HDU {ext} lacks column(s) {", ".join(missing)}')
        columns = [have[c.upper()] for c in columns]
    try:
        if hdu.get_nrows() == 0:
            data = np.zeros(0, dtype=hdu.get_rec_dtype()[0])
            if columns is not None:
                data = data[columns]
        else:
            data = hdu.read(columns=columns)
        header = hdu.read_header()
    except OSError as err:
        raise InputFileError(path, f'cannot read HDU {ext} ({_first_line(err)})') from None
    except UnicodeDecodeError as err:           # FITS text is ASCII; fitsio decodes it so
        raise InputFileError(path, f'cannot read HDU {ext} (a text column holds a non-ASCII '
                             f'byte: {err.reason})') from None
    table = Table(data)
    for name in table.colnames:   # DESI's upper-case names, whatever the writer's spelling
        if name != name.upper() and name.upper() not in table.colnames:
            table.rename_column(name, name.upper())
    table.meta['EXTNAME'] = ext
    for key in LOCATION_KEYS:
        if key in header:
            table.meta[key] = header[key]
    return table


def unreadable_reason(path, err):
    """Why fitsio could not open `path`, for the one-line error: an empty file, a damaged
    gzip stream and a FITS file cut short (its size not a whole number of 2880-byte blocks)
    named as such, else ``not a readable FITS file (<fitsio's line>)``."""
    try:
        empty = os.path.getsize(path) == 0
    except OSError:
        empty = False
    if empty:
        return 'empty file (0 bytes)'
    first = _first_line(err)
    if str(path).endswith('.gz') and 'uncompress' in first:
        return f'damaged gzip file ({first})'
    size = _plain_fits_size(path)
    if size is not None and size % FITS_BLOCK:
        return (f'truncated FITS file ({size} bytes, not a whole number of {FITS_BLOCK}-byte '
                'blocks)')
    return f'not a readable FITS file ({first})'


#: FITS files are a whole number of 2880-byte blocks.
FITS_BLOCK = 2880


def _plain_fits_size(path):
    """Size of `path` when it starts as a FITS file (``SIMPLE  =``), else None (a
    compressed or other file, or one that cannot be read)."""
    try:
        with open(path, 'rb') as fx:
            if fx.read(9) != b'SIMPLE  =':
                return None
        return os.path.getsize(path)
    except OSError:
        return None


def _first_line(err):
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
