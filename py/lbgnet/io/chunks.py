"""
lbgnet.io.chunks
================

Read a DESI coadd a block of spectra at a time, so that the afterburner's memory does
not grow with the file: only the FIBERMAP and the wavelength arrays are read whole.
Each block is a :class:`lbgnet.io.CoaddData` with the same sanitising as
:func:`lbgnet.io.read_coadd` (non-finite flux/ivar or negative ivar → ivar = 0).
"""
import re
from dataclasses import dataclass

import numpy as np
from desiutil.log import get_logger

from .coadd import CoaddData
from .errors import InputFileError
from .fitsutil import _first_line, extnames, open_fits, read_image, read_table

_FLUX_EXT = re.compile(r'^([A-Z]+)_FLUX$')


@dataclass
class CoaddLayout:
    """What a coadd holds, without its spectra.

    Attributes
    ----------
    path : str
    bands : tuple of str
        Lower-case bands present, file order.
    wave : dict
        band -> wavelength array (Å), shape (nwave,).
    nspec : int
    fibermap : astropy.table.Table or None
    header : dict
        Primary-header keywords (SURVEY, PROGRAM, TILEID, ... when present).
    """

    path: str
    bands: tuple
    wave: dict
    nspec: int
    fibermap: object
    header: dict


def read_layout(fx, path):
    """Check the HDUs of an open coadd and read its wavelengths and FIBERMAP.

    Raises
    ------
    InputFileError
        No ``<BAND>_FLUX`` HDU, a band without IVAR/WAVELENGTH, image shapes that
        disagree, or a FIBERMAP whose length differs from the number of spectra.
    """
    names = extnames(fx)
    bands = [m.group(1) for m in map(_FLUX_EXT.match, names) if m]
    if not bands:
        raise InputFileError(path, 'no <BAND>_FLUX HDU: not a DESI coadd/spectra file')
    wave, nspecs = {}, {}
    for band in bands:
        for part in ('IVAR', 'WAVELENGTH'):
            if f'{band}_{part}' not in names:
                raise InputFileError(path, f'has {band}_FLUX but no {band}_{part} HDU')
        wav = np.asarray(read_image(fx, f'{band}_WAVELENGTH', path), dtype=np.float64)
        if wav.ndim != 1 or not np.all(np.isfinite(wav)) or np.any(np.diff(wav) <= 0):
            raise InputFileError(path, f'{band}_WAVELENGTH must be 1-D, finite and increasing')
        for part in ('FLUX', 'IVAR') + (('MASK',) if f'{band}_MASK' in names else ()):
            dims = _dims(fx, f'{band}_{part}', wav.size)
            if dims[1] != wav.size or dims[0] != nspecs.setdefault(band, dims[0]):
                raise InputFileError(path, f'{band}_{part} shape {tuple(dims)} does not match '
                                     f'{band}_WAVELENGTH length {wav.size} / {nspecs[band]} spectra')
        wave[band.lower()] = wav
    if len(set(nspecs.values())) != 1:
        raise InputFileError(path, f'bands disagree on the number of spectra: {nspecs}')
    nspec = int(nspecs[bands[0]])
    fibermap = read_table(fx, 'FIBERMAP', path) if 'FIBERMAP' in names else None
    if fibermap is not None and len(fibermap) != nspec:
        raise InputFileError(path, f'FIBERMAP has {len(fibermap)} rows but flux has {nspec} spectra')
    hdr = fx[0].read_header()
    header = {k: hdr[k] for k in hdr.keys() if k not in ('COMMENT', 'HISTORY', '')}
    return CoaddLayout(path, tuple(b.lower() for b in bands), wave, nspec, fibermap, header)


def _dims(fx, ext, nwave):
    dims = list(fx[ext].get_dims())
    if len(dims) == 0 or (len(dims) == 1 and dims[0] == 0):
        return [0, nwave]
    if len(dims) != 2:
        return dims + [-1]
    return dims


def iter_coadd_chunks(path, chunk_size):
    """Yield the spectra of a coadd in blocks of at most `chunk_size` rows.

    Parameters
    ----------
    path : str
    chunk_size : int
        Spectra per block (>= 1).

    Yields
    ------
    layout : CoaddLayout
        Same object for every block.
    start : int
        Index of the block's first spectrum.
    block : lbgnet.io.CoaddData
        Rows ``start:start+n``; its ``fibermap`` is the matching FIBERMAP slice.
        A file with zero spectra yields one empty block.

    Raises
    ------
    InputFileError
        As :func:`read_layout`, or when an HDU cannot be read (truncated data).
    """
    log = get_logger()
    path = str(path)
    with open_fits(path) as fx:
        layout = read_layout(fx, path)
        names = extnames(fx)
        for start in range(0, max(layout.nspec, 1), int(chunk_size)):
            stop = min(start + int(chunk_size), layout.nspec)
            flux, ivar, mask, nbad = {}, {}, {}, {}
            for b in layout.bands:
                B = b.upper()
                flux[b] = _rows(fx, f'{B}_FLUX', start, stop, layout, b, np.float32)
                ivar[b] = _rows(fx, f'{B}_IVAR', start, stop, layout, b, np.float32)
                mask[b] = _rows(fx, f'{B}_MASK', start, stop, layout, b, None) \
                    if f'{B}_MASK' in names else None
                nbad[b] = sanitize(flux[b], ivar[b])
                if nbad[b]:
                    log.warning('%s: %d %s-band pixels with non-finite flux/ivar or negative ivar '
                                'masked', path, nbad[b], b)
            fmap = layout.fibermap[start:stop] if layout.fibermap is not None else None
            yield layout, start, CoaddData(path, layout.bands, layout.wave, flux, ivar, mask,
                                           fmap, None, None, nbad)


def _rows(fx, ext, start, stop, layout, band, dtype):
    nwave = layout.wave[band].size
    if stop <= start:
        return np.zeros((0, nwave), dtype=dtype or np.int32)
    try:
        data = fx[ext][start:stop, :]
    except (OSError, ValueError) as err:
        raise InputFileError(layout.path, f'cannot read {ext} rows {start}:{stop} '
                             f'({_first_line(err)})') from None
    return np.ascontiguousarray(data, dtype=dtype) if dtype is not None else data


def sanitize(flux, ivar):
    """Zero the weight (and flux) of non-finite or negative-ivar pixels in place; return their count."""
    bad = ~(np.isfinite(flux) & np.isfinite(ivar) & (ivar >= 0))
    nbad = int(np.count_nonzero(bad))
    if nbad:
        ivar[bad] = 0.0
        flux[bad] = 0.0
    return nbad
