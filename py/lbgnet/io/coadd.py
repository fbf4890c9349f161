"""
lbgnet.io.coadd
===============

Read DESI coadd files (healpix or tile; written by ``desispec.io.write_spectra``)
into plain arrays.  RESOLUTION is never read: the network does not use it.
"""
import re
from dataclasses import dataclass, field

import numpy as np
from desiutil.log import get_logger

from .errors import InputFileError
from .fitsutil import _first_line, check_image_hdu, extnames, open_fits, read_image, read_table
from .targetid import as_targetids

_FLUX_EXT = re.compile(r'^([A-Z]+)_FLUX$')
_ARM_PART = re.compile(r'^([A-Z]+)_(IVAR|WAVELENGTH|MASK|RESOLUTION)$')


@dataclass
class CoaddData:
    """Arrays of one coadd file.

    Attributes
    ----------
    path : str
    bands : tuple of str
        Lower-case band names present, in file order (e.g. ``('b', 'r', 'z')``).
    wave : dict
        band -> wavelength array, shape (nwave,), Å.
    flux : dict
        band -> flux, shape (nspec, nwave), 1e-17 erg/s/cm²/Å (float32).
    ivar : dict
        band -> inverse variance, shape (nspec, nwave) (float32).  Pixels whose flux or
        ivar is NaN/inf, or whose ivar is negative, have been set to ivar = 0 (and flux 0).
    mask : dict
        band -> integer mask, shape (nspec, nwave), or None when the file has no
        ``<BAND>_MASK`` HDU.
    fibermap, exp_fibermap, scores : astropy.table.Table or None
        The corresponding HDUs when present.
    nbad : dict
        band -> number of pixels masked because of non-finite or negative values.
    """

    path: str
    bands: tuple
    wave: dict
    flux: dict
    ivar: dict
    mask: dict
    fibermap: object = None
    exp_fibermap: object = None
    scores: object = None
    nbad: dict = field(default_factory=dict)

    @property
    def nspec(self):
        """Number of spectra."""
        return self.flux[self.bands[0]].shape[0]

    @property
    def targetid(self):
        """TARGETID per spectrum (int64), or None when the file has no FIBERMAP.

        Raises
        ------
        InputFileError
            For a column that does not hold exact integer ids
            (:func:`lbgnet.io.targetid.as_targetids`: text, floats, unsigned values
            beyond int64).
        """
        if self.fibermap is None:
            return None
        return as_targetids(self.fibermap['TARGETID'], self.path, 'FIBERMAP TARGETID')

    def require_targetid(self):
        """TARGETID per spectrum; raise a clear error when the file has no FIBERMAP.

        Raises
        ------
        InputFileError
            If the coadd has no FIBERMAP HDU (e.g. a stripped file).
        """
        if self.fibermap is None:
            raise InputFileError(self.path, 'no FIBERMAP HDU, so no TARGETID for the catalogue')
        return self.targetid


def read_coadd(path, read_fibermap=True, read_extra=True, sanitize=True, fibermap_columns=None,
               grid=None):
    """Read a DESI coadd file.

    Parameters
    ----------
    path : str
        Coadd FITS file.
    read_fibermap : bool, optional
        Read FIBERMAP when present [True].
    read_extra : bool, optional
        Read EXP_FIBERMAP and SCORES when present [True].
    sanitize : bool, optional
        Set ivar = 0 (and flux = 0) for pixels with non-finite flux/ivar or negative ivar,
        and log their number [True].  :mod:`lbgnet.preprocess` ignores such pixels by
        itself, so :func:`lbgnet.preprocess.load_coadd_grid` skips this pass for speed.
    fibermap_columns : list of str, optional
        Read only these FIBERMAP columns [all].
    grid : lbgnet.config.Grid, optional
        When given, a file none of whose cameras overlaps this grid is refused
        (:func:`check_grid_overlap`: e.g. wavelengths in nm), before its spectra are read.

    Returns
    -------
    CoaddData

    Raises
    ------
    InputFileError
        Missing, non-FITS or truncated file; no ``<BAND>_FLUX`` HDU; a band with FLUX
        but no IVAR or WAVELENGTH; shapes that disagree between HDUs or bands, or with
        the FIBERMAP length; no camera on `grid`.

    Notes
    -----
    Non-finite flux or ivar values and negative ivar are not errors: with `sanitize`
    those pixels get ivar = 0 (so they carry no weight downstream), and their count is
    logged.
    A file with zero spectra is valid and yields arrays of shape (0, nwave).
    """
    path = str(path)
    with open_fits(path) as fx:
        layout = read_layout(fx, path, read_fibermap, fibermap_columns)
        if grid is not None:
            check_grid_overlap(layout, grid)
        coadd = read_block(fx, layout, 0, layout.nspec, sanitize)
        names = extnames(fx)
        if read_extra:
            if 'EXP_FIBERMAP' in names:
                coadd.exp_fibermap = read_table(fx, 'EXP_FIBERMAP', path)
            if 'SCORES' in names:
                coadd.scores = read_table(fx, 'SCORES', path)
    return coadd


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
    tsnr2_lrg : numpy.ndarray or None
        SCORES ``TSNR2_LRG`` per spectrum (desispec's depth measure, which its
        zcatalog uses to choose among repeated spectra), shape (nspec,); None when the
        file has no such column.
    """

    path: str
    bands: tuple
    wave: dict
    nspec: int
    fibermap: object
    header: dict
    tsnr2_lrg: object = None


def read_layout(fx, path, read_fibermap=True, fibermap_columns=None):
    """Check the HDUs of an open coadd and read its wavelengths, FIBERMAP and
    SCORES ``TSNR2_LRG``.

    Parameters
    ----------
    fx : fitsio.FITS
        The open file.
    path : str
        Its name, for error messages.
    read_fibermap : bool, optional
        Read FIBERMAP when present [True].
    fibermap_columns : list of str, optional
        Read only these FIBERMAP columns [all].

    Raises
    ------
    InputFileError
        No ``<BAND>_FLUX`` HDU, a band without IVAR/WAVELENGTH, image shapes that
        disagree, or a FIBERMAP or SCORES whose length differs from the number of
        spectra.
    """
    names = extnames(fx)
    bands = [m.group(1) for m in map(_FLUX_EXT.match, names) if m]
    if not bands:
        raise InputFileError(path, 'no <BAND>_FLUX HDU: not a DESI coadd/spectra file')
    orphans = sorted(name for name in names if _ARM_PART.match(name)
                     and _ARM_PART.match(name).group(1) not in bands)
    if orphans:           # an arm without its flux would be read as a camera not observed
        band = _ARM_PART.match(orphans[0]).group(1)
        raise InputFileError(path, f'has {orphans[0]} but no {band}_FLUX HDU')
    twice = sorted({f'{band}_{part}' for band in bands for part in ('FLUX', 'IVAR', 'WAVELENGTH',
                                                                     'MASK')
                    if names.count(f'{band}_{part}') > 1})
    if twice:             # fitsio reads the first of each: the arm would count twice
        raise InputFileError(path, f'HDU(s) {", ".join(twice)} present more than once')
    wave, nspecs = {}, {}
    for band in bands:
        for part in ('IVAR', 'WAVELENGTH'):
            if f'{band}_{part}' not in names:
                raise InputFileError(path, f'has {band}_FLUX but no {band}_{part} HDU')
        wav = np.asarray(read_image(fx, f'{band}_WAVELENGTH', path), dtype=np.float64)
        if wav.ndim != 1 or not np.all(np.isfinite(wav)) or np.any(np.diff(wav) <= 0):
            raise InputFileError(path, f'{band}_WAVELENGTH must be 1-D, finite and increasing')
        for part in ('FLUX', 'IVAR') + (('MASK',) if f'{band}_MASK' in names else ()):
            dims = _dims(fx, f'{band}_{part}', wav.size, path)
            shape = tuple(d for d in dims if d >= 0)
            if len(dims) != 2 or dims[1] != wav.size:
                raise InputFileError(path, f'{band}_{part} shape {shape} does not match '
                                     f'{band}_WAVELENGTH length {wav.size}')
            nband = nspecs.setdefault(band, dims[0])
            if dims[0] != nband:        # name both HDUs: either may be the one cut short
                raise InputFileError(path, f'{band}_{part} has {dims[0]} spectra but '
                                     f'{band}_FLUX has {nband}')
        wave[band.lower()] = wav
    if len(set(nspecs.values())) != 1:
        raise InputFileError(path, f'bands disagree on the number of spectra: {nspecs}')
    nspec = int(nspecs[bands[0]])
    fibermap = (read_table(fx, 'FIBERMAP', path, columns=fibermap_columns)
                if read_fibermap and 'FIBERMAP' in names else None)
    if fibermap is not None and len(fibermap) != nspec:
        raise InputFileError(path, f'FIBERMAP has {len(fibermap)} rows but flux has {nspec} spectra')
    hdr = fx[0].read_header()
    header = {k: hdr[k] for k in hdr.keys() if k not in ('COMMENT', 'HISTORY', '')}
    return CoaddLayout(path, tuple(b.lower() for b in bands), wave, nspec, fibermap, header,
                       _read_tsnr2(fx, path, names, nspec, fibermap))


def _read_tsnr2(fx, path, names, nspec, fibermap):
    """SCORES ``TSNR2_LRG`` per spectrum, or None (with a warning when SCORES is unusable).

    The column only ranks repeated spectra, so a SCORES HDU that is not a table, lacks the
    column, has another length or other TARGETIDs than the FIBERMAP does not fail the file.
    """
    if 'SCORES' not in names:
        return None
    cols = fx['SCORES'].get_colnames() if hasattr(fx['SCORES'], 'get_colnames') else []
    if 'TSNR2_LRG' not in cols:
        return None
    scores = read_table(fx, 'SCORES', path, columns=[c for c in ('TARGETID', 'TSNR2_LRG')
                                                     if c in cols])
    problem = None
    if len(scores) != nspec:
        problem = f'{len(scores)} rows for {nspec} spectra'
    elif ('TARGETID' in scores.colnames and fibermap is not None
          and 'TARGETID' in fibermap.colnames
          # TARGETIDs that are not integers fail the file where they are read: not here
          and np.asarray(fibermap['TARGETID']).dtype.kind in 'iu'
          and not np.array_equal(scores['TARGETID'], fibermap['TARGETID'])):
        problem = 'TARGETIDs in another order than the FIBERMAP'
    elif np.asarray(scores['TSNR2_LRG']).dtype.kind not in 'iuf':
        problem = f'a TSNR2_LRG column of {np.asarray(scores["TSNR2_LRG"]).dtype}, not numbers'
    if problem is not None:
        get_logger().warning('%s: SCORES has %s; TSNR2_LRG left NaN', path, problem)
        return None
    return np.asarray(scores['TSNR2_LRG'], dtype=np.float64)


def check_grid_overlap(layout, grid):
    """Refuse a coadd none of whose cameras overlaps the model's input grid.

    Wavelengths in other units (nm, log10 Å) would otherwise leave every spectrum
    without a valid pixel (NODATA) and the file would pass as done.

    Parameters
    ----------
    layout : CoaddLayout
    grid : lbgnet.config.Grid

    Raises
    ------
    InputFileError
        Naming the cameras' wavelength ranges and the grid's.
    """
    inside = [b for b, w in layout.wave.items()
              if w.size and w[-1] > grid.wave_min and w[0] < grid.wave_max]
    if layout.wave and not inside:
        ranges = ', '.join(f'{b} {w[0]:g}-{w[-1]:g}' for b, w in layout.wave.items() if w.size)
        raise InputFileError(layout.path, f'no camera overlaps the model grid '
                             f'{grid.wave_min:g}-{grid.wave_max:g} Angstrom ({ranges}): '
                             'wavelengths must be in Angstrom')


def _dims(fx, ext, nwave, path):
    check_image_hdu(fx, ext, path)
    dims = list(fx[ext].get_dims())
    if len(dims) == 0 or (len(dims) == 1 and dims[0] == 0):
        return [0, nwave]
    if len(dims) != 2:
        return dims + [-1]
    return dims


def _read_rows(fx, ext, start, stop, layout, band, dtype):
    nwave = layout.wave[band].size
    if stop <= start:
        return np.zeros((0, nwave), dtype=dtype or np.int32)
    try:
        data = fx[ext][start:stop, :]
    except (OSError, ValueError) as err:
        raise InputFileError(layout.path, f'cannot read {ext} rows {start}:{stop} '
                             f'({_first_line(err)})') from None
    if dtype is not None and np.dtype(dtype).kind == 'f':
        _check_float_range(data, np.dtype(dtype), layout.path, ext)
    return np.ascontiguousarray(data, dtype=dtype) if dtype is not None else data


def _check_float_range(data, dtype, path, ext):
    """Refuse finite values that `dtype` cannot hold (they would become inf, and the
    pixels be dropped as non-finite without a word)."""
    data = np.asarray(data)
    if data.dtype.kind != 'f' or data.dtype.itemsize <= dtype.itemsize or data.size == 0:
        return
    largest = np.nanmax(np.abs(np.where(np.isfinite(data), data, 0.0)))
    if largest > np.finfo(dtype).max:
        raise InputFileError(path, f'{ext} holds values up to {largest:.3g}, beyond the '
                             f'{dtype.name} range (DESI coadds are in 1e-17 erg/s/cm2/A units)')


def read_block(fx, layout, start, stop, sanitize=True):
    """Read spectra ``start:stop`` of every band of an open coadd.

    Parameters
    ----------
    fx : fitsio.FITS
    layout : CoaddLayout
        From :func:`read_layout` on the same file.
    start, stop : int
        Row range.
    sanitize : bool, optional
        Zero the weight of non-finite or negative-ivar pixels and log their number [True].

    Returns
    -------
    CoaddData
        Its ``fibermap`` is the matching FIBERMAP slice (or None).
    """
    log = get_logger()
    names = extnames(fx)
    flux, ivar, mask, nbad = {}, {}, {}, {}
    for b in layout.bands:
        B = b.upper()
        flux[b] = _read_rows(fx, f'{B}_FLUX', start, stop, layout, b, np.float32)
        ivar[b] = _read_rows(fx, f'{B}_IVAR', start, stop, layout, b, np.float32)
        mask[b] = (_read_rows(fx, f'{B}_MASK', start, stop, layout, b, None)
                   if f'{B}_MASK' in names else None)
        nbad[b] = sanitize_pixels(flux[b], ivar[b]) if sanitize else 0
        if nbad[b]:
            log.warning('%s: %d %s-band pixels with non-finite flux/ivar or negative ivar masked',
                        layout.path, nbad[b], b)
    fmap = layout.fibermap[start:stop] if layout.fibermap is not None else None
    return CoaddData(layout.path, layout.bands, layout.wave, flux, ivar, mask, fmap, None, None, nbad)


def sanitize_pixels(flux, ivar):
    """Zero the weight of non-finite or negative-ivar pixels, in place; return their count."""
    if flux.size == 0 or (np.isfinite(flux.sum(dtype=np.float64)) and np.isfinite(ivar.sum(dtype=np.float64))
                          and ivar.min() >= 0):
        return 0                     # fast path: nothing to mask
    bad = ~(np.isfinite(flux) & np.isfinite(ivar) & (ivar >= 0))
    nbad = int(np.count_nonzero(bad))
    if nbad:
        ivar[bad] = 0.0
        flux[bad] = 0.0
    return nbad
