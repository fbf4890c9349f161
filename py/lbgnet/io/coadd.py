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
from .fitsutil import extnames, open_fits, read_image, read_table

_FLUX_EXT = re.compile(r'^([A-Z]+)_FLUX$')


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
        """TARGETID per spectrum, or None when the file has no FIBERMAP."""
        if self.fibermap is None:
            return None
        return np.asarray(self.fibermap['TARGETID'])

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


def read_coadd(path, read_fibermap=True, read_extra=True, sanitize=True, fibermap_columns=None):
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

    Returns
    -------
    CoaddData

    Raises
    ------
    InputFileError
        Missing, non-FITS or truncated file; no ``<BAND>_FLUX`` HDU; a band with FLUX
        but no IVAR or WAVELENGTH; shapes that disagree between HDUs or bands, or with
        the FIBERMAP length.

    Notes
    -----
    Non-finite flux or ivar values and negative ivar are not errors: with `sanitize`
    those pixels get ivar = 0 (so they carry no weight downstream), and their count is
    logged.
    A file with zero spectra is valid and yields arrays of shape (0, nwave).
    """
    log = get_logger()
    path = str(path)
    with open_fits(path) as fx:
        names = extnames(fx)
        bands = [m.group(1) for m in map(_FLUX_EXT.match, names) if m]
        if not bands:
            raise InputFileError(path, 'no <BAND>_FLUX HDU: not a DESI coadd/spectra file')
        wave, flux, ivar, mask, nbad = {}, {}, {}, {}, {}
        for band in bands:
            for part in ('IVAR', 'WAVELENGTH'):
                if f'{band}_{part}' not in names:
                    raise InputFileError(path, f'has {band}_FLUX but no {band}_{part} HDU')
            b = band.lower()
            wave[b] = np.asarray(read_image(fx, f'{band}_WAVELENGTH', path), dtype=np.float64)
            flux[b] = np.asarray(read_image(fx, f'{band}_FLUX', path), dtype=np.float32)
            ivar[b] = np.asarray(read_image(fx, f'{band}_IVAR', path), dtype=np.float32)
            mask[b] = read_image(fx, f'{band}_MASK', path) if f'{band}_MASK' in names else None
            _check_band_shapes(path, band, wave[b], flux[b], ivar[b], mask[b])
            nbad[b] = _sanitize(flux[b], ivar[b]) if sanitize else 0
        fibermap = (read_table(fx, 'FIBERMAP', path, columns=fibermap_columns)
                    if read_fibermap and 'FIBERMAP' in names else None)
        exp_fibermap = scores = None
        if read_extra:
            if 'EXP_FIBERMAP' in names:
                exp_fibermap = read_table(fx, 'EXP_FIBERMAP', path)
            if 'SCORES' in names:
                scores = read_table(fx, 'SCORES', path)
    bands = tuple(b.lower() for b in bands)
    nspecs = {b: flux[b].shape[0] for b in bands}
    if len(set(nspecs.values())) != 1:
        raise InputFileError(path, f'bands disagree on the number of spectra: {nspecs}')
    nspec = nspecs[bands[0]]
    if fibermap is not None and len(fibermap) != nspec:
        raise InputFileError(path, f'FIBERMAP has {len(fibermap)} rows but flux has {nspec} spectra')
    for b in bands:
        if nbad[b]:
            log.warning('%s: %d %s-band pixels with non-finite flux/ivar or negative ivar masked',
                        path, nbad[b], b)
    return CoaddData(path, bands, wave, flux, ivar, mask, fibermap, exp_fibermap, scores, nbad)


def _check_band_shapes(path, band, wave, flux, ivar, mask):
    if wave.ndim != 1:
        raise InputFileError(path, f'{band}_WAVELENGTH must be 1-D, has shape {wave.shape}')
    if flux.size == 0 and flux.ndim < 2:
        flux.shape = (0, wave.size)
    if ivar.size == 0 and ivar.ndim < 2:
        ivar.shape = (0, wave.size)
    if flux.ndim != 2 or flux.shape[1] != wave.size:
        raise InputFileError(path, f'{band}_FLUX shape {flux.shape} does not match '
                             f'{band}_WAVELENGTH length {wave.size}')
    if ivar.shape != flux.shape:
        raise InputFileError(path, f'{band}_IVAR shape {ivar.shape} != {band}_FLUX shape {flux.shape}')
    if mask is not None and mask.size and mask.shape != flux.shape:
        raise InputFileError(path, f'{band}_MASK shape {mask.shape} != {band}_FLUX shape {flux.shape}')
    if wave.size > 1 and not np.all(np.diff(wave) > 0):
        raise InputFileError(path, f'{band}_WAVELENGTH is not strictly increasing')
    if not np.all(np.isfinite(wave)):
        raise InputFileError(path, f'{band}_WAVELENGTH has non-finite values')


def _sanitize(flux, ivar):
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
