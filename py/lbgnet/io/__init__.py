"""
lbgnet.io
=========

All file access of lbgnet: DESI coadd and Redrock readers, coadd writer (and, later,
catalogue, priors and model-file writers).  Nothing outside this package opens FITS files.
"""
from .errors import InputFileError, MissingInputError
from .coadd import CoaddData, read_coadd
from .redrock import RedrockData, read_redrock, REDSHIFT_COLUMNS
from .spectra import minimal_fibermap, write_coadd

__all__ = ['InputFileError', 'MissingInputError', 'CoaddData', 'read_coadd',
           'RedrockData', 'read_redrock', 'REDSHIFT_COLUMNS', 'minimal_fibermap', 'write_coadd']
