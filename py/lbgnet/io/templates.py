"""
lbgnet.io.templates
===================

Readers for the optional empirical inputs of the simulator (:mod:`lbgnet.sim`):

* the Shapley et al. (2003, ApJ 588, 65) composite of z~3 LBG spectra, a two-column
  text file (rest wavelength in Å, f_ν in arbitrary units);
* Redrock templates (``rrtemplate-<TYPE>-<SUBTYPE>-v*.fits``): HDU ``BASIS_VECTORS``
  of shape (nbasis, nwave) with the wavelength ``CRVAL1 + CDELT1·i`` (``10**`` of it
  when ``LOGLAM`` ≠ 0) and, for stars, ``ARCHETYPE_COEFF`` (narchetype, nbasis as read
  by fitsio): the coefficients of the real spectra the basis was built from.

The readers only read and check; what the simulator does with the arrays lives in
:mod:`lbgnet.sim`.
"""
import glob
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import InputFileError, MissingInputError
from .fitsutil import _first_line, open_fits


@dataclass(frozen=True)
class RRTemplate:
    """One Redrock template file.

    Attributes
    ----------
    rrtype, subtype : str
        ``RRTYPE`` and ``RRSUBTYP`` header values (upper case), e.g. ``'STAR'``, ``'K'``.
    wave : numpy.ndarray
        Template wavelengths (Å; rest frame for QSOs, vacuum), shape (nwave,).
    basis : numpy.ndarray
        Basis vectors, shape (nbasis, nwave), float64.
    coeff : numpy.ndarray or None
        Archetype coefficients, shape (narchetype, nbasis), when the file has them.
    path : str
    method : str
        ``RRMETHOD`` (upper case): 'PCA' (the default when absent) or 'ARCHETYPE' (each
        row of `basis` one spectrum).
    """

    rrtype: str
    subtype: str
    wave: np.ndarray
    basis: np.ndarray
    coeff: object
    path: str
    method: str = 'PCA'


@dataclass(frozen=True)
class SimTemplates:
    """Optional empirical inputs of the simulator.

    Attributes
    ----------
    lbg_composite : tuple or None
        (rest wavelength Å, f_ν) arrays of the LBG composite, or None.
    rr : dict
        ``'<RRTYPE>-<SUBTYPE>'`` (e.g. ``'QSO-HIZ'``, ``'STAR-WD'``) -> :class:`RRTemplate`.
    cache : dict
        Scratch space where :mod:`lbgnet.sim` keeps arrays derived once from the
        templates (smoothed star spectra, composite residual); not compared.
    """

    lbg_composite: object = None
    rr: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    def describe(self):
        """One-line summary of what is loaded (for logs and file headers)."""
        parts = ['LBG composite' if self.lbg_composite is not None else 'no LBG composite']
        parts.append('Redrock: ' + (', '.join(sorted(self.rr)) if self.rr else 'none'))
        return '; '.join(parts)


def load_text_table(path, **kwargs):
    """:func:`numpy.loadtxt` without its warning on a file with no data rows.

    numpy warns (``UserWarning: loadtxt: input contained no data``) when a file is empty
    or holds only comments, and returns an empty array; the readers here refuse that
    array in one line of their own, so the warning only repeated the problem above it.

    Parameters
    ----------
    path : str
        Text file.
    **kwargs
        Passed to :func:`numpy.loadtxt`.

    Returns
    -------
    numpy.ndarray
        What :func:`numpy.loadtxt` returns (size 0 for a file with no data rows).
    """
    with warnings.catch_warnings():
        # "input contained no data" (numpy >= 1.23), "Empty input file" before
        warnings.filterwarnings('ignore', category=UserWarning,
                                message='loadtxt: (input contained no data|Empty input file)')
        return np.loadtxt(path, **kwargs)


def read_lbg_composite(path):
    """Read the LBG composite text file (or the single ``*.txt`` in a directory).

    Parameters
    ----------
    path : str
        File, or directory holding exactly one ``*.txt`` composite.

    Returns
    -------
    wave, fnu : numpy.ndarray
        Rest wavelength (Å, increasing) and f_ν (arbitrary units), shape (nwave,).

    Raises
    ------
    MissingInputError, InputFileError
    """
    path = str(path)
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(glob.escape(path), '*.txt')))
        if len(files) != 1:
            raise InputFileError(path, f'expected one *.txt LBG composite in the directory, found {len(files)}')
        path = files[0]
    if not os.path.exists(path):
        raise MissingInputError(path)
    try:
        data = load_text_table(path, comments='#', ndmin=2)
    except (OSError, ValueError) as err:
        raise InputFileError(path, f'cannot read the LBG composite as two numeric columns ({err})') from None
    if data.size == 0:
        raise InputFileError(path, 'LBG composite has no data rows (the file is empty or '
                             'holds only comments)')
    if data.shape[1] < 2 or data.shape[0] < 10:
        raise InputFileError(path, f'LBG composite needs >= 10 rows of (wavelength, f_nu), got shape {data.shape}')
    wave, fnu = data[:, 0], data[:, 1]
    if np.any(np.diff(wave) <= 0) or not np.all(np.isfinite(data[:, :2])):
        raise InputFileError(path, 'LBG composite wavelengths must increase and all values be finite')
    if wave[0] <= 0:
        raise InputFileError(path, f'LBG composite wavelengths must be positive (rest-frame '
                             f'Angstrom; the first is {wave[0]:g})')
    if not (wave[0] < 1215.67 < wave[-1]):
        raise InputFileError(path, f'LBG composite must cover Lya 1215.67 A rest (covers {wave[0]}-{wave[-1]})')
    red = fnu[wave > 1215.67]
    if np.mean(red > 0) < 0.9:     # the simulator divides it by its continuum there
        raise InputFileError(path, f'LBG composite f_nu must be positive redward of Lya (it '
                             f'is <= 0 in {int(np.sum(red <= 0))} of {red.size} rows above '
                             '1215.67 A): a spectrum in f_nu, not a residual or a log?')
    return wave, fnu


def read_rr_template(path):
    """Read one Redrock template file.

    Parameters
    ----------
    path : str

    Returns
    -------
    RRTemplate

    Raises
    ------
    MissingInputError, InputFileError
    """
    path = str(path)
    if not os.path.exists(path):
        raise MissingInputError(path)
    try:
        with open_fits(path) as fx:       # one line for a non-FITS or truncated file
            ext = 'BASIS_VECTORS' if 'BASIS_VECTORS' in fx else 0
            hdr = fx[ext].read_header()
            basis = np.asarray(fx[ext].read(), dtype=np.float64)
            coeff = fx['ARCHETYPE_COEFF'].read().astype(np.float64) if 'ARCHETYPE_COEFF' in fx else None
    except InputFileError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise InputFileError(path, f'cannot read Redrock template ({_first_line(err)})') from None
    # fitsio's KeyError reads "'unknown record: RRTYPE'": the missing cards are named here
    missing = [key for key in ('RRTYPE', 'CRVAL1', 'CDELT1') if key not in hdr]
    if missing:
        raise InputFileError(path, f'Redrock template header lacks {", ".join(missing)} '
                             '(not a Redrock template file?)')
    rrtype = str(hdr['RRTYPE']).strip().upper()
    subtype = str(hdr.get('RRSUBTYP', '')).strip().upper()
    method = str(hdr.get('RRMETHOD', 'PCA')).strip().upper()
    try:
        crval, cdelt = float(hdr['CRVAL1']), float(hdr['CDELT1'])
    except (TypeError, ValueError):
        raise InputFileError(path, f'Redrock template CRVAL1/CDELT1 are not numbers '
                             f'({hdr["CRVAL1"]!r}, {hdr["CDELT1"]!r})') from None
    if basis.ndim != 2:
        raise InputFileError(path, f'BASIS_VECTORS must be 2-d (nbasis, nwave), got shape {basis.shape}')
    wave = crval + cdelt * np.arange(basis.shape[1])
    if hdr.get('LOGLAM', 0):
        wave = 10.0 ** wave
    if coeff is not None and (coeff.ndim != 2 or coeff.shape[1] != basis.shape[0]):
        raise InputFileError(path, f'ARCHETYPE_COEFF shape {coeff.shape} does not match {basis.shape[0]} basis vectors')
    return RRTemplate(rrtype, subtype, wave, basis, coeff, path, method)


def load_templates(lbg_composite=None, rr_template_dir=None):
    """Load the optional empirical inputs of the simulator.

    Parameters
    ----------
    lbg_composite : str, optional
        LBG composite file or directory (see :func:`read_lbg_composite`).
    rr_template_dir : str, optional
        Directory of Redrock ``rrtemplate-*.fits`` files; the QSO (``HIZ``, ``LOZ``) and
        STAR templates found there are used, others ignored.

    Returns
    -------
    SimTemplates

    Raises
    ------
    MissingInputError
        If a path does not exist.
    InputFileError
        If a file cannot be read or is not in the expected format (see the readers), if
        `rr_template_dir` is not a directory or holds no QSO or STAR template.
    """
    from desiutil.log import get_logger
    log = get_logger()
    comp = read_lbg_composite(lbg_composite) if lbg_composite is not None else None
    rr = {}
    if rr_template_dir is not None:
        if not os.path.exists(rr_template_dir):
            raise MissingInputError(rr_template_dir, 'Redrock template directory not found')
        if not os.path.isdir(rr_template_dir):
            raise InputFileError(rr_template_dir, 'is not a directory (the Redrock template '
                                 'directory, holding rrtemplate-*.fits files, is expected)')
        for path in sorted(glob.glob(os.path.join(glob.escape(rr_template_dir), 'rrtemplate-*.fits'))):
            tmpl = read_rr_template(path)
            if tmpl.rrtype in ('QSO', 'STAR'):
                rr[f'{tmpl.rrtype}-{tmpl.subtype}'] = tmpl
        if not rr:
            raise InputFileError(rr_template_dir, 'no Redrock QSO or STAR rrtemplate-*.fits files in the directory')
    out = SimTemplates(comp, rr)
    log.info('Simulator templates: %s', out.describe())
    return out
