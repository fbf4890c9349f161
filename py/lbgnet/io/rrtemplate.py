"""
lbgnet.io.rrtemplate
====================

Write Redrock template files: HDU 0 ``BASIS_VECTORS`` (nbasis, nwave) on a linear
rest-frame grid ``CRVAL1 + CDELT1 * i`` (Å, ``LOGLAM = 0``) with ``RRTYPE``,
``RRSUBTYP``, ``VERSION``, ``RRMETHOD`` and the ``RRIGM`` keyword naming the IGM model
Redrock applies at each redshift, and HDU 1 ``REDSHIFTS`` holding the redshift grid that
Redrock scans.  This is the format :class:`redrock.templates.Template` reads.
"""
import numpy as np
from astropy.io import fits

from .atomic import atomic_path
from .catalog import check_writable

#: IGM models known to redrock 0.21 (:func:`redrock.igm.transmission_Lyman`).
IGM_MODELS = ('Inoue14', 'Calura12', 'Kamble20', 'None')
#: DESI's first and last pixel centres (Å) and half its pixel: Redrock rebins a template
#: onto the pixel edges, half a pixel beyond the centres.
DESI_RANGE, DESI_HALF_PIXEL = (3600.0, 9824.0), 0.4


def check_coverage(wave, redshifts, arms=DESI_RANGE, half_pixel=DESI_HALF_PIXEL):
    """Raise ValueError unless the rest grid `wave` covers DESI's pixel edges at every
    redshift of `redshifts` (Redrock fails on every spectrum otherwise: "edges must be
    within input x range").

    Parameters
    ----------
    wave : numpy.ndarray
        Rest-frame wavelengths of the template (Å), increasing.
    redshifts : numpy.ndarray
        Redshifts Redrock scans.
    arms : (float, float), optional
        First and last pixel centre of the spectra (Å).
    half_pixel : float, optional
        Half the pixel width (Å).
    """
    zmin, zmax = float(np.min(redshifts)), float(np.max(redshifts))
    need = ((arms[0] - half_pixel) / (1 + zmax), (arms[1] + half_pixel) / (1 + zmin))
    if wave[0] > need[0] or wave[-1] < need[1]:
        raise ValueError(f'the rest grid {wave[0]:g}-{wave[-1]:g} Å must cover '
                         f'{need[0]:.1f}-{need[1]:.1f} Å for z in {zmin:g}-{zmax:g} '
                         f'(DESI\'s pixel edges)')


def template_filename(spectype, subtype, version, method='PCA'):
    """Redrock's file-name convention, ``rrtemplate-{SPECTYPE}-{SUBTYPE}-v{VERSION}.fits``
    (``rrarchetype-…`` for archetypes, as Redrock names its archetype files)."""
    prefix = 'rrarchetype' if method == 'ARCHETYPE' else 'rrtemplate'
    return f'{prefix}-{spectype}-{subtype}-v{version}.fits'


def write_rr_template(path, wave, basis, redshifts, spectype='GALAXY', subtype='LBG',
                      version='0.1', igm='Inoue14', comments=(), cards=(), method='PCA'):
    """Write a Redrock PCA template file (or a set of archetypes) atomically.

    Parameters
    ----------
    path : str
    wave : numpy.ndarray
        Rest-frame wavelengths (Å), linear and increasing, shape (nwave,).
    basis : numpy.ndarray
        Basis vectors, shape (nbasis, nwave); written as float32 when given as float32
        (Redrock reads them as float64).
    redshifts : numpy.ndarray
        Redshift grid scanned by Redrock, increasing, shape (nz,).
    spectype, subtype, version : str, optional
        RRTYPE, RRSUBTYP and VERSION keywords [GALAXY, LBG, 0.1].
    igm : str, optional
        RRIGM keyword, one of :data:`IGM_MODELS` [Inoue14].
    comments : sequence of str, optional
        COMMENT cards (how the template was made).
    cards : sequence of (key, value, comment), optional
        Extra keywords (seed, number of spectra, ...).
    method : {'PCA', 'ARCHETYPE'}, optional
        RRMETHOD: the rows are a PCA basis, or archetypes (each row one spectrum, fitted
        alone; :func:`lbgnet.refine.archetype_curve`) [PCA].

    Raises
    ------
    ValueError
        Non-linear or non-increasing wavelengths, shape mismatch, unknown IGM model,
        non-finite values.
    """
    wave = np.asarray(wave, dtype=np.float64)
    basis = np.atleast_2d(np.asarray(basis))
    if basis.dtype not in (np.float32, np.float64):
        basis = basis.astype(np.float64)
    redshifts = np.asarray(redshifts, dtype=np.float64)
    step = np.diff(wave)
    if wave.ndim != 1 or wave.size < 2 or np.any(step <= 0) or not np.allclose(step, step[0], rtol=1e-6):
        raise ValueError('wave must be linear and increasing')
    if basis.shape[1] != wave.size:
        raise ValueError(f'basis shape {basis.shape} does not match {wave.size} wavelengths')
    if igm not in IGM_MODELS:
        raise ValueError(f'IGM model {igm!r} not in {IGM_MODELS}')
    if not (np.all(np.isfinite(basis)) and np.all(np.isfinite(redshifts))) or np.any(np.diff(redshifts) <= 0):
        raise ValueError('basis and redshifts must be finite, redshifts increasing')
    hdr = fits.Header()
    hdr['CRVAL1'] = (float(wave[0]), 'restframe starting wavelength [Angstrom]')
    hdr['CDELT1'] = (float(step[0]), 'restframe wavelength step [Angstrom]')
    hdr['CRPIX1'] = 1
    hdr['LOGLAM'] = (0, 'linear wavelength grid')
    hdr['RRTYPE'] = (spectype, 'Redrock spectral type')
    hdr['RRSUBTYP'] = (subtype, 'Redrock spectral subtype')
    hdr['VERSION'] = (str(version), 'template version')
    if method not in ('PCA', 'ARCHETYPE'):
        raise ValueError(f'method must be PCA or ARCHETYPE, got {method!r}')
    hdr['RRMETHOD'] = (method, 'basis vectors are a PCA' if method == 'PCA'
                       else 'each row is one archetype spectrum')
    hdr['RRIGM'] = (igm, 'IGM model Redrock applies at each redshift')
    hdr['EXTNAME'] = 'BASIS_VECTORS'
    for key, value, comment in cards:
        hdr[key] = (value, comment)
    for text in comments:
        hdr['COMMENT'] = text
    zhdu = fits.ImageHDU(redshifts, name='REDSHIFTS')
    check_writable(path)
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(basis, header=hdr), zhdu]).writeto(tmp)
    return path


def default_template_path(method='PCA'):
    """The LBG template (or, with method 'ARCHETYPE', the LBG archetypes) shipped in
    ``lbgnet/data`` (newest version), or None."""
    import glob
    import os
    datadir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
    pattern = template_filename('GALAXY', 'LBG', '*', method)
    found = sorted(glob.glob(os.path.join(glob.escape(datadir), pattern)), key=version_key)
    return found[-1] if found else None


def version_key(path):
    """Sort key of a template file by its version, numbers compared as numbers
    (``v0.10`` after ``v0.2``)."""
    import os
    import re
    version = os.path.basename(path).rsplit('-v', 1)[-1]
    return tuple((0, int(part), '') if part.isdigit() else (1, 0, part)
                 for part in re.split(r'(\d+)', version) if part)
