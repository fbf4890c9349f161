"""
lbgnet.io.redrock
=================

Read Redrock output files (``redrock-*.fits``).
"""
from dataclasses import dataclass

import numpy as np

from .errors import InputFileError
from .fitsutil import extnames, open_fits, read_table
from .targetid import as_targetids

#: Columns of the REDSHIFTS HDU that lbgnet uses.
REDSHIFT_COLUMNS = ('TARGETID', 'Z', 'ZERR', 'ZWARN', 'SPECTYPE', 'SUBTYPE',
                    'DELTACHI2', 'CHI2', 'COEFF')


@dataclass
class RedrockData:
    """Contents of one Redrock file.

    Attributes
    ----------
    path : str
    redshifts : astropy.table.Table
        REDSHIFTS HDU, columns :data:`REDSHIFT_COLUMNS` (SPECTYPE/SUBTYPE as str).
    fibermap : astropy.table.Table or None
        FIBERMAP HDU when present.
    """

    path: str
    redshifts: object
    fibermap: object = None

    @property
    def targetid(self):
        """TARGETID per row, in file order."""
        return np.asarray(self.redshifts['TARGETID'])


def read_redrock(path, read_fibermap=True):
    """Read the REDSHIFTS (and FIBERMAP) HDUs of a Redrock file.

    Parameters
    ----------
    path : str
        Redrock FITS file.
    read_fibermap : bool, optional
        Also read FIBERMAP when present [True].

    Returns
    -------
    RedrockData

    Raises
    ------
    InputFileError
        Missing, non-FITS or truncated file; no REDSHIFTS HDU; a required column
        missing; duplicated TARGETIDs.
    """
    path = str(path)
    with open_fits(path) as fx:
        names = extnames(fx)
        if 'REDSHIFTS' not in names:
            raise InputFileError(path, 'no REDSHIFTS HDU: not a Redrock file')
        zbest = read_table(fx, 'REDSHIFTS', path, columns=list(REDSHIFT_COLUMNS))
        fibermap = read_table(fx, 'FIBERMAP', path) if read_fibermap and 'FIBERMAP' in names else None
    for col in ('SPECTYPE', 'SUBTYPE'):
        if zbest[col].dtype.kind == 'S':
            zbest[col] = np.char.decode(zbest[col], 'ascii')
        zbest[col] = np.char.strip(np.asarray(zbest[col], dtype=str))
    tid = as_targetids(zbest['TARGETID'], path, 'REDSHIFTS TARGETID')
    if np.unique(tid).size != tid.size:
        raise InputFileError(path, 'REDSHIFTS has duplicated TARGETIDs')
    if fibermap is not None and len(fibermap) != len(zbest):
        raise InputFileError(path, f'FIBERMAP has {len(fibermap)} rows but REDSHIFTS has {len(zbest)}')
    return RedrockData(path, zbest, fibermap)
