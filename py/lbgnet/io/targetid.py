"""
lbgnet.io.targetid
==================

TARGETID columns read from files: exact 64-bit integers or a clear error.
"""
import numpy as np

from .errors import InputFileError


def as_targetids(values, path, column='TARGETID'):
    """TARGETIDs as int64, refusing what would not compare exactly.

    DESI TARGETIDs exceed 2**53, so a float column (or a comparison of uint64 with
    int64, which numpy does in float64) would make neighbouring ids equal: such a file was
    reported as having duplicated TARGETIDs, or TARGETIDs missing from its partner file.

    Parameters
    ----------
    values : array-like
        The column.
    path : str
        Its file, for the message.
    column : str, optional
        How the message names the column (e.g. 'FIBERMAP TARGETID') ['TARGETID'].

    Returns
    -------
    numpy.ndarray of int64

    Raises
    ------
    InputFileError
        For a non-integer column (an empty float array, as ``np.asarray([])`` makes, is
        taken as no ids), or unsigned values beyond the int64 range.
    """
    values = np.asarray(values)
    if values.size == 0 and values.dtype.kind == 'f':
        return values.astype(np.int64)      # numpy's empty list: no id to lose digits of
    if values.dtype.kind == 'u':
        if values.size and values.max() > np.iinfo(np.int64).max:
            raise InputFileError(path, f'{column} values beyond the int64 range')
    elif values.dtype.kind != 'i':
        why = (' (DESI TARGETIDs above 2**53 lose their last digits in floating point)'
               if values.dtype.kind == 'f' else '')
        kind = 'text' if values.dtype.kind in 'US' else values.dtype.name
        raise InputFileError(path, f'{column} must be an integer column, not {kind}{why}')
    return values.astype(np.int64)


def unique_targetids(values, path, column='TARGETID'):
    """:func:`as_targetids`, refusing duplicated ids too (a table whose rows are matched
    by TARGETID: truth, evaluation coadd or catalogue).

    Raises
    ------
    InputFileError
        As :func:`as_targetids`, or ``duplicated TARGETIDs``.
    """
    ids = as_targetids(values, path, column)
    if np.unique(ids).size != ids.size:
        raise InputFileError(path, 'duplicated TARGETIDs')
    return ids
