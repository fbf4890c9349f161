"""
lbgnet.io.spectra
=================

Write DESI-format coadd files with ``desispec.io.write_spectra``, atomically.
"""
import os

import numpy as np
from astropy.table import Table

from .atomic import atomic_path


def minimal_fibermap(targetid, ra=None, dec=None):
    """A FIBERMAP table with the columns lbgnet and Redrock need.

    Parameters
    ----------
    targetid : array_like of int
        Shape (nspec,).
    ra, dec : array_like of float, optional
        TARGET_RA / TARGET_DEC (deg) [0].

    Returns
    -------
    astropy.table.Table
    """
    targetid = np.asarray(targetid, dtype=np.int64)
    nspec = targetid.size
    zeros = np.zeros(nspec)
    fm = Table()
    fm['TARGETID'] = targetid
    fm['TARGET_RA'] = zeros if ra is None else np.asarray(ra, dtype=np.float64)
    fm['TARGET_DEC'] = zeros if dec is None else np.asarray(dec, dtype=np.float64)
    fm['OBJTYPE'] = np.full(nspec, 'TGT', dtype='U3')
    fm['COADD_FIBERSTATUS'] = np.zeros(nspec, dtype=np.int32)
    fm['FIBER'] = np.arange(nspec, dtype=np.int32)
    fm.meta['EXTNAME'] = 'FIBERMAP'
    return fm


def write_coadd(path, wave, flux, ivar, fibermap, mask=None, resolution=None,
                exp_fibermap=None, scores=None, meta=None, atomic=True):
    """Write a coadd file readable by ``desispec.io.read_spectra`` and Redrock.

    The file is written under a temporary name in the same directory and renamed,
    so `path` never holds a half-written file (unless ``atomic=False``: for a caller whose
    `path` is already a temporary name).  Its CHECKSUM/DATASUM cards carry no time stamp
    (:func:`lbgnet.io.catalog.add_checksums`), so that the same spectra give the same file.

    Parameters
    ----------
    path : str
        Output file.
    wave, flux, ivar : dict
        band -> arrays, shapes (nwave,) and (nspec, nwave).
    fibermap : astropy.table.Table
        One row per spectrum, with TARGETID.
    mask, resolution : dict, optional
        band -> int mask (nspec, nwave) and resolution data (nspec, ndiag, nwave).
    exp_fibermap, scores : astropy.table.Table, optional
    meta : dict, optional
        Primary header keywords (values, or (value, comment) pairs).
    atomic : bool, optional
        Write through a temporary name [True].

    Returns
    -------
    str
        `path`.
    """
    from desispec.io import write_spectra
    from desispec.spectra import Spectra
    bands = list(wave)
    if mask is None:
        mask = {b: np.zeros(flux[b].shape, dtype=np.int32) for b in bands}
    spec = Spectra(bands=bands, wave=wave, flux=flux, ivar=ivar, mask=mask,
                   resolution_data=resolution, fibermap=fibermap, exp_fibermap=exp_fibermap,
                   meta=dict(meta or {}), scores=scores)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    from astropy.io import fits
    from .catalog import add_checksums
    keep = fits.Header()                 # the versions the caller recorded
    for key, value in (meta or {}).items():
        if key.startswith(('DEPNAM', 'DEPVER')):
            keep[key] = value[0] if isinstance(value, tuple) else value

    def write(name):
        write_spectra(name, spec)
        # desispec's CHECKSUM comments hold the time of writing, and its DEPNAM cards the
        # modules this run imported (mpi4py under MPI): the same inputs would give other
        # headers, and other coadd fingerprints
        add_checksums(name, dependencies=keep)
    if not atomic:
        write(path)
        return path
    with atomic_path(path) as tmp:
        write(tmp)
    return path
