"""
lbgnet.io.catalog
=================

Write and read the afterburner catalogue (``lbg_cnn-*.fits``, HDU ``LBG_CNN``) with
its provenance header.  Files are written under a temporary name and renamed, so a
crash never leaves a partial file under the final name.
"""
import hashlib
import importlib
import os

import numpy as np
from astropy.io import fits
from astropy.table import Table
from desiutil.depend import add_dependencies, setdep

from .atomic import atomic_path
from .errors import InputFileError
from .fitsutil import open_fits

#: Modules whose versions go into DEPNAMnn/DEPVERnn (a fixed list, so that the header
#: does not depend on what happens to be imported, e.g. mpi4py under MPI only).
PROVENANCE_MODULES = ('numpy', 'scipy', 'astropy', 'fitsio', 'desiutil', 'desispec',
                      'desitarget', 'redrock', 'tensorflow', 'keras')

#: Header keywords copied from the input files when present.
LOCATION_KEYS = ('SURVEY', 'PROGRAM', 'SPGRP', 'SPGRPVAL', 'TILEID', 'PETAL', 'NIGHT',
                 'HPXPIXEL', 'HPXNSIDE', 'HPXNEST')


class OutputFileError(OSError):
    """An output file cannot be written (directory not creatable or not writable).

    Parameters
    ----------
    path : str
    problem : str
    """

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f'{path}: {problem}')


def file_sha256(path, blocksize=1 << 20):
    """Hex SHA-256 digest of a file (a directory: of its files, in sorted order)."""
    digest = hashlib.sha256()
    paths = [path]
    if os.path.isdir(path):
        paths = sorted(os.path.join(root, f) for root, _, files in os.walk(path) for f in files)
    for name in paths:
        with open(name, 'rb') as fx:
            for block in iter(lambda: fx.read(blocksize), b''):
                digest.update(block)
    return digest.hexdigest()


def check_writable(path):
    """Create the directory of `path` if needed and check that it is writable.

    Raises
    ------
    OutputFileError
        If the directory cannot be created or is not writable.
    """
    outdir = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as err:
        raise OutputFileError(path, f'cannot create output directory ({err.strerror or err})') from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise OutputFileError(path, f'output directory {outdir} is not writable')


def provenance_header(cards=(), dependencies=None):
    """A FITS header with code versions (``desiutil.depend``) and run parameters.

    Parameters
    ----------
    cards : sequence of (key, value, comment)
        Run parameters (model file, sha256, thresholds, input files, ...).
    dependencies : dict, optional
        Extra ``name -> version`` pairs for ``DEPNAMnn/DEPVERnn`` (e.g. lbgnet).

    Returns
    -------
    astropy.io.fits.Header
    """
    header = fits.Header()
    modules = [m for m in PROVENANCE_MODULES if importlib.util.find_spec(m) is not None]
    for module in modules:
        importlib.import_module(module)
    add_dependencies(header, module_names=modules, envvar_names=[])
    for name, version in (dependencies or {}).items():
        setdep(header, name, str(version))
    for key, value, comment in cards:
        if value is None:
            continue
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            value = value.item()
        header[key] = (value, comment)
    return header


def write_catalog(path, table, header, extname='LBG_CNN'):
    """Write a catalogue atomically: primary HDU + one binary table, both with `header`.

    Parameters
    ----------
    path : str
    table : astropy.table.Table
        Columns with ``.unit`` set where they have units.
    header : astropy.io.fits.Header
        Provenance (see :func:`provenance_header`).
    extname : str, optional
        Table HDU name [``LBG_CNN``].

    Raises
    ------
    OutputFileError
        If the output directory is not writable.
    """
    check_writable(path)
    hdu = fits.table_to_hdu(table)
    hdu.name = extname
    for card in header.cards:
        if card.keyword not in hdu.header:
            hdu.header.append(card)
    hdulist = fits.HDUList([fits.PrimaryHDU(header=header), hdu])
    with atomic_path(path) as tmp:
        hdulist.writeto(tmp, checksum=True)
    return path


def read_catalog(path, extname='LBG_CNN'):
    """Read a catalogue written by :func:`write_catalog`.

    Returns
    -------
    table : astropy.table.Table
        With units; ``table.meta`` holds the table header keywords.
    header : dict
        Primary header keywords.

    Raises
    ------
    InputFileError
        Missing / non-FITS / truncated file, or no `extname` HDU.
    """
    with open_fits(path) as fx:
        names = [h.get_extname().upper() for h in fx]
        if extname not in names:
            raise InputFileError(path, f'no {extname} HDU')
        header = {k: fx[0].read_header()[k] for k in fx[0].read_header().keys()}
    with fits.open(path, memmap=False) as hdul:
        table = Table.read(hdul[extname])
    table.meta['EXTNAME'] = extname
    return table, header
