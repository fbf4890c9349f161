"""
lbgnet.io.priors
================

Write and read Redrock redshift-prior files: one binary table, EXTNAME ``PRIORS``, with
columns TARGETID (int64), FUNCTION (str: ``tophat`` or ``gaussian``), Z and SIGMA
(float64), as read by :class:`redrock.priors.Priors` (``rrdesi --priors``).

Note that :class:`redrock.priors.Priors` reads the function name from the first row,
so it cannot read a file with zero rows; such a file is still written (a valid, empty
table) so that every processed coadd has its priors file.
"""
import numpy as np
from astropy.io import fits
from astropy.table import Table

from .catalog import write_catalog
from .errors import InputFileError
from .fitsutil import check_table_hdu, open_fits

#: Prior shapes understood by redrock 0.21 (its ``Priors.<function>`` methods).
PRIOR_FUNCTIONS = ('tophat', 'gaussian', 'lorentzien')


#: Descriptions of the PRIORS columns.
PRIOR_COLUMNS = {'TARGETID': 'DESI target id',
                 'FUNCTION': 'prior shape, a redrock.priors.Priors method',
                 'Z': 'prior centre (redshift)',
                 'SIGMA': 'full width (tophat) or sigma (gaussian) in z'}


def priors_table(targetid, z, sigma, function='tophat'):
    """The PRIORS table.

    Parameters
    ----------
    targetid : array_like of int
        Shape (n,).
    z, sigma : array_like of float
        Prior centre and width, shape (n,); for ``tophat`` SIGMA is the full width
        (Redrock keeps ``|z - Z| < SIGMA / 2``), for ``gaussian`` the standard deviation.
    function : str, optional
        One of :data:`PRIOR_FUNCTIONS` [tophat].

    Returns
    -------
    astropy.table.Table

    Raises
    ------
    ValueError
        Unknown function, inconsistent shapes, non-finite Z/SIGMA or SIGMA <= 0.
    """
    if function not in PRIOR_FUNCTIONS:
        raise ValueError(f'prior function {function!r} not in {PRIOR_FUNCTIONS}')
    targetid = np.asarray(targetid, dtype=np.int64)
    z = np.asarray(z, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if not targetid.shape == z.shape == sigma.shape or targetid.ndim != 1:
        raise ValueError(f'shapes differ: TARGETID {targetid.shape}, Z {z.shape}, SIGMA {sigma.shape}')
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(sigma)) and np.all(sigma > 0)):
        raise ValueError('Z and SIGMA must be finite and SIGMA > 0')
    table = Table(meta={'EXTNAME': 'PRIORS'})
    table['TARGETID'] = targetid
    table['FUNCTION'] = np.full(targetid.size, function, dtype=f'U{len(function)}')
    table['Z'] = z
    table['SIGMA'] = sigma
    for name, text in PRIOR_COLUMNS.items():     # written as the TTYPEn comments
        table[name].description = text
    return table


def write_priors(path, table, header=None):
    """Write a PRIORS table atomically (primary HDU + ``PRIORS``).

    Parameters
    ----------
    path : str
    table : astropy.table.Table
        From :func:`priors_table`.
    header : astropy.io.fits.Header, optional
        Provenance cards for both HDUs.
    """
    return write_catalog(path, table, fits.Header() if header is None else header, extname='PRIORS')


def read_priors(path):
    """Read a priors file into a Table (TARGETID, FUNCTION, Z, SIGMA).

    Raises
    ------
    InputFileError
        Missing / not FITS / no PRIORS HDU / a column missing.
    """
    with open_fits(path) as fx:
        if 'PRIORS' not in [h.get_extname().upper() for h in fx]:
            raise InputFileError(path, 'no PRIORS HDU: not a Redrock priors file')
        check_table_hdu(fx, 'PRIORS', path)
        cols = set(fx['PRIORS'].get_colnames())
        missing = {'TARGETID', 'FUNCTION', 'Z', 'SIGMA'} - cols
        if missing:
            raise InputFileError(path, f'PRIORS lacks column(s) {", ".join(sorted(missing))}')
    with fits.open(path, memmap=False) as hdul:
        table = Table.read(hdul['PRIORS'], mask_invalid=False)
    table['FUNCTION'] = np.char.strip(np.asarray(table['FUNCTION']).astype(str))
    return table
