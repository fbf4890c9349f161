"""
lbgnet.io.skymodel
==================

Read the night-sky emission-line spectrum that desispec ships
(``desispec/data/spec-sky.dat``: vacuum wavelength in Å on a 0.1 Å grid, and
line flux density in arbitrary units, zero between the lines).  The simulator
scales it with a factor fitted to a real DESI coadd (see ``doc/sim_instrument.rst``).
"""
import importlib.resources

import numpy as np
from desiutil.log import get_logger

from .errors import InputFileError, MissingInputError
from .templates import load_text_table

#: Location of the sky-line spectrum inside the desispec package.
SKY_LINES_RESOURCE = ('desispec', 'data/spec-sky.dat')
#: Wavelengths DESI observes (Å): a sky spectrum needs lines there.
DESI_RANGE = (3600.0, 9824.0)


def sky_lines_path():
    """Path of ``desispec/data/spec-sky.dat``, or None when desispec lacks it."""
    package, name = SKY_LINES_RESOURCE
    try:
        path = importlib.resources.files(package).joinpath(name)
    except ModuleNotFoundError:
        return None
    return str(path) if path.is_file() else None


def read_sky_lines(path=None, positive_only=True):
    """Read a two-column sky-line spectrum.

    Parameters
    ----------
    path : str, optional
        Text file with columns wavelength (Å, vacuum) and flux density (any unit)
        [``desispec/data/spec-sky.dat``].
    positive_only : bool, optional
        Keep only the samples with positive flux (the lines) and their neighbours [True].
        The neighbours (zero flux) keep the grid step visible, which
        :func:`lbgnet.sim.lsf.convolve_lines` takes from the samples: lines one sample
        wide would otherwise be weighted by the distance between lines.

    Returns
    -------
    wave, flux : numpy.ndarray
        Shape (nsample,) each, float64, wave increasing.

    Raises
    ------
    MissingInputError
        If `path` does not exist, or is omitted and desispec does not ship the file.
    InputFileError
        If `path` is a directory or cannot be read, or the file has no data rows or is
        not a two-column numeric table with increasing wavelengths and finite fluxes, or
        has no positive flux between 3600 and 9824 Å (e.g. wavelengths in nm).
    """
    log = get_logger()
    if path is None:
        path = sky_lines_path()
        if path is None:
            raise MissingInputError('desispec/data/spec-sky.dat',
                                    'not found in the desispec package')
    try:
        data = load_text_table(path, dtype=np.float64, ndmin=2)
    except FileNotFoundError:
        raise MissingInputError(path) from None
    except IsADirectoryError:
        raise InputFileError(path, 'is a directory, not a sky-line spectrum') from None
    except OSError as err:                      # unreadable (permissions, I/O error, ...)
        raise InputFileError(path, f'cannot read ({err.strerror or err})') from None
    except ValueError as err:
        raise InputFileError(path, f'not a numeric two-column table ({err})') from None
    if data.size == 0:
        raise InputFileError(path, 'no data rows (the file is empty or holds only comments)')
    if data.shape[1] < 2 or data.shape[0] < 2:
        raise InputFileError(path, f'expected two columns and several rows, got shape {data.shape}')
    wave, flux = data[:, 0], data[:, 1]
    if not np.all(np.diff(wave) > 0):
        raise InputFileError(path, 'wavelengths are not strictly increasing')
    if not np.all(np.isfinite(flux)):
        raise InputFileError(path, f'{int(np.sum(~np.isfinite(flux)))} non-finite flux value(s)')
    lo, hi = DESI_RANGE
    if not np.any((flux > 0) & (wave >= lo) & (wave <= hi)):
        raise InputFileError(path, f'no positive flux between {lo:g} and {hi:g} Å: no sky '
                             'line in DESI\'s range (wavelengths must be in Å)')
    if positive_only:
        line = flux > 0
        keep = line.copy()
        keep[1:] |= line[:-1]
        keep[:-1] |= line[1:]
        wave, flux = wave[keep], flux[keep]
    log.debug('read %d sky-line samples from %s', wave.size, path)
    return wave, flux
