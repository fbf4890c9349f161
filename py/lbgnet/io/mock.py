"""
lbgnet.io.mock
==============

Write (and read back) the files of a mock data set: ``coadd-*.fits`` (desispec
format, via :func:`lbgnet.io.write_coadd`), ``redrock-*.fits`` (Redrock's layout:
REDSHIFTS, FIBERMAP, EXP_FIBERMAP, TSNR2) and ``truth-*.fits`` (TRUTH).  The three
files are written under temporary names and renamed as a set, coadd last
(:func:`write_mock`).
"""
import os

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .atomic import atomic_path
from .errors import InputFileError
from .fitsutil import extnames, open_fits, read_table
from .spectra import write_coadd

#: Columns a truth file must have.
TRUTH_COLUMNS = ('TARGETID', 'CLASS', 'Z_TRUE', 'RMAG')


def mock_filenames(outdir, survey, program, pixel):
    """Paths of the coadd, redrock and truth files of one healpix pixel.

    Returns
    -------
    dict
        'coadd', 'redrock', 'truth' -> ``<outdir>/<kind>-<survey>-<program>-<pixel>.fits``.
    """
    stem = f'{survey}-{program}-{int(pixel)}.fits'
    return {kind: os.path.join(outdir, f'{kind}-{stem}') for kind in ('coadd', 'redrock', 'truth')}


def provenance_header(meta, config_name=None):
    """Primary header: the mock's keywords plus desiutil.depend versions.

    The versions are those of a fixed list (:func:`lbgnet.io.catalog.set_dependencies`),
    not of the modules a run happened to import: with desiutil's ``add_dependencies``
    a ``--mpi`` run added mpi4py, so its files (and their fingerprints) differed from a
    serial run's.
    """
    from desiutil.depend import setdep
    from .._version import __version__
    from .catalog import set_dependencies
    header = fits.Header()
    for key, val in (meta or {}).items():
        header[key] = val
    set_dependencies(header)
    setdep(header, 'lbgnet', __version__)
    if config_name:
        setdep(header, 'LBGNET_MOCK_CONFIG', os.path.basename(str(config_name)))
    return header


def _table_hdu(table, extname):
    hdu = fits.table_to_hdu(Table(table, copy=False))
    hdu.name = extname
    return hdu


def write_tables(path, header, tables):
    """Write a primary header and named tables to one FITS file, atomically.

    Parameters
    ----------
    path : str
    header : astropy.io.fits.Header
    tables : list of (str, astropy.table.Table)
        (EXTNAME, table) in HDU order.
    """
    hdus = fits.HDUList([fits.PrimaryHDU(header=header)]
                        + [_table_hdu(tab, name) for name, tab in tables])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        hdus.writeto(tmp)
    return path


def write_redrock(path, redshifts, fibermap, exp_fibermap, scores, header):
    """Redrock-format file: REDSHIFTS, FIBERMAP, EXP_FIBERMAP and TSNR2 HDUs.

    REDSHIFTS must be in the coadd's TARGETID order (checked).

    Raises
    ------
    ValueError
        If REDSHIFTS and FIBERMAP disagree on TARGETID order.
    """
    if not np.array_equal(np.asarray(redshifts['TARGETID']), np.asarray(fibermap['TARGETID'])):
        raise ValueError(f'{path}: REDSHIFTS and FIBERMAP TARGETIDs differ in order or content')
    tsnr2 = Table()
    tsnr2['TARGETID'] = scores['TARGETID']
    for col in scores.colnames:
        if col.startswith('TSNR2_'):
            tsnr2[col] = scores[col]
    return write_tables(path, header, [('REDSHIFTS', redshifts), ('FIBERMAP', fibermap),
                                       ('EXP_FIBERMAP', exp_fibermap), ('TSNR2', tsnr2)])


def write_truth(path, truth, header):
    """Truth file: primary header + TRUTH table."""
    return write_tables(path, header, [('TRUTH', truth)])


#: Provenance keywords of mock files (:func:`truth_checksum`,
#: :func:`lbgnet.sim.mock.simulator_hash`); the afterburner copies them into its catalogues.
MOCK_KEYS = ('SIMHASH', 'TRUTHSUM')


def truth_checksum(truth, targetids=True):
    """Content fingerprint of a truth table (first 16 hex digits of a SHA-256).

    Computed from TARGETID, CLASS and Z_TRUE, so it survives a FITS round trip, and over
    the rows in TARGETID order (stable), so a truth file whose rows were reordered (sorted
    by redshift, say) keeps its checksum: truth is matched to spectra by TARGETID, never by
    row.  The mock writes its rows in increasing TARGETID, so this is also the checksum of
    the rows as written.  The mock writes it as ``TRUTHSUM`` into the coadd, Redrock and
    truth headers: a truth file whose content does not give its coadd's TRUTHSUM belongs to
    another mock run, even when the TARGETIDs agree (mocks written with the same pixel do
    reuse them).

    With `targetids` False the TARGETIDs are left out (the rows still taken in their
    order): the simulated objects alone, which a mock run again with the same ``--seed``
    repeats under the TARGETIDs of other healpix pixels (not a TRUTHSUM).
    """
    import hashlib
    targetid = np.asarray(truth['TARGETID'], dtype='<i8')
    order = np.argsort(targetid, kind='stable')
    digest = hashlib.sha256()
    if targetids:
        digest.update(np.ascontiguousarray(targetid[order]).tobytes())
    classes = np.char.strip(np.asarray(truth['CLASS']).astype(str))[order]
    digest.update('\n'.join(classes.tolist()).encode('ascii'))
    digest.update(np.ascontiguousarray(np.asarray(truth['Z_TRUE'], dtype='<f8')[order]).tobytes())
    return digest.hexdigest()[:16]


def mock_keywords(path, keys=MOCK_KEYS):
    """Keywords of a primary header: by default the mock's provenance (``SIMHASH``,
    ``TRUTHSUM``).

    Returns
    -------
    dict
        Only the keywords present, as stripped strings.
    """
    with open_fits(str(path)) as fx:
        header = fx[0].read_header()
    return {k: str(header[k]).strip() for k in keys if k in header}


def check_truth_matches(source_path, truth_path, truth):
    """Raise when a truth table does not belong to a mock coadd (or its catalogue).

    Parameters
    ----------
    source_path : str
        The mock coadd, or an afterburner catalogue made from it (which carries the
        coadd's ``TRUTHSUM``).
    truth_path : str
    truth : astropy.table.Table
        The table read from `truth_path`.

    Raises
    ------
    InputFileError
        When `source_path` has a ``TRUTHSUM`` that the truth content does not give.
        Files without the keyword (other writers, older mocks) are not checked.
    """
    expected = mock_keywords(source_path).get('TRUTHSUM')
    if expected is None:
        return
    found = truth_checksum(truth)
    if expected != found:
        raise InputFileError(str(truth_path),
                             f'does not belong to {os.path.basename(str(source_path))} '
                             f'(content checksum {found}, the coadd was written with '
                             f'TRUTHSUM {expected}): truth and coadd from '
                             'different mock runs?')


def read_truth(path):
    """Read the TRUTH table of a mock truth file.

    Raises
    ------
    InputFileError
        Missing/unreadable file, no TRUTH HDU or a column of :data:`TRUTH_COLUMNS` missing.
    """
    path = str(path)
    with open_fits(path) as fx:
        if 'TRUTH' not in extnames(fx):
            raise InputFileError(path, 'no TRUTH HDU: not an lbgnet truth file')
        table = read_table(fx, 'TRUTH', path)
    missing = [c for c in TRUTH_COLUMNS if c not in table.colnames]
    if missing:
        raise InputFileError(path, f'TRUTH lacks column(s) {", ".join(missing)}')
    for col in table.colnames:
        if table[col].dtype.kind == 'S':
            table[col] = np.char.strip(np.char.decode(table[col], 'ascii'))
    return table


def write_mock(outdir, mock, config_name=None, cards=()):
    """Write the coadd, redrock and truth files of a :class:`lbgnet.sim.mock.MockData`.

    The set is all-or-nothing: the three files are written under temporary names
    (:func:`lbgnet.io.atomic.atomic_path`) and renamed only when all three were
    written, truth first and coadd last.  A coadd under its final name therefore always
    has its redrock and truth files next to it; on any error the temporaries are removed
    and no file of the set is created or replaced (only a failure between the renames
    can leave a new truth or redrock file without its coadd).

    Parameters
    ----------
    outdir : str
    mock : lbgnet.sim.mock.MockData
    config_name : str, optional
        Mock configuration, recorded as ``LBGNET_MOCK_CONFIG``.
    cards : sequence of (str, object, str), optional
        Extra primary-header keywords of the three files (key, value, comment), e.g. the
        command-line options of ``desi_lbg_mock``.

    Returns
    -------
    dict
        'coadd', 'redrock', 'truth' -> written paths.

    Raises
    ------
    lbgnet.io.catalog.OutputFileError
        If a file cannot be written (directory, disk full, ...).
    """
    from contextlib import ExitStack
    from .catalog import OutputFileError, check_writable, write_failure_reason
    meta = dict(mock.meta)
    meta['TRUTHSUM'] = truth_checksum(mock.truth)
    paths = mock_filenames(outdir, meta['SURVEY'], meta['PROGRAM'], meta['HPXPIXEL'])
    header = provenance_header(meta, config_name)
    for key, value, comment in cards:
        header[key] = (value, comment)
    fibermap = mock.fibermap.copy(copy_data=False)
    fibermap.meta.update({k: v for k, v in meta.items() if k != 'HPXNEST'})
    resolution = None
    if mock.resolution is not None:
        resolution = {b: np.ascontiguousarray(r) for b, r in mock.resolution.items()}
    rrheader = header.copy()
    rrheader['RRMOCK'] = ('lbgnet.sim.rrmock', 'simulated Redrock outcome, not a Redrock run')
    check_writable(paths['coadd'])
    current, written = paths['coadd'], False
    new = [kind for kind in ('truth', 'redrock', 'coadd') if not os.path.exists(paths[kind])]
    try:
        # entered coadd, redrock, truth: the renames run in reverse, the coadd's last
        with ExitStack() as stack:
            tmps = {kind: stack.enter_context(atomic_path(paths[kind]))
                    for kind in ('coadd', 'redrock', 'truth')}
            current = paths['coadd']
            write_coadd(tmps['coadd'], mock.wave, mock.flux, mock.ivar, fibermap,
                        mask=mock.mask, resolution=resolution, exp_fibermap=mock.exp_fibermap,
                        scores=mock.scores,
                        meta={k: (header[k], header.comments[k]) for k in header},
                        atomic=False)                # tmps['coadd'] is a temporary name already
            current = paths['redrock']
            write_redrock(tmps['redrock'], mock.redshifts, fibermap, mock.exp_fibermap,
                          mock.scores, rrheader)
            current = paths['truth']
            write_truth(tmps['truth'], mock.truth, header)
            written = True
    except OSError as err:
        if written:                  # a rename failed (truth, redrock, coadd in that order)
            failed = str(getattr(err, 'filename2', None) or paths['coadd'])
            order = ('truth', 'redrock', 'coadd')
            failed_kind = next((k for k in order
                                if os.path.abspath(paths[k]) == os.path.abspath(failed)), 'coadd')
            # only the renames before the failed one ran; an older file of a later kind
            # is still the older one
            done = [paths[k] for k in order[:order.index(failed_kind)]
                    if os.path.exists(paths[k])]
            removed = [p for p in done if any(p == paths[k] for k in new)]
            for path in removed:     # files this call created: take the partial set back
                os.remove(path)
            kept = [p for p in done if p not in removed and p != paths['coadd']]
            raise OutputFileError(failed, f'cannot rename into place ({err.strerror or err}); '
                                  'the coadd was not written'
                                  + (f'; already replaced: {", ".join(kept)}' if kept else '')
                                  ) from None
        raise OutputFileError(current, f'cannot write ({write_failure_reason(err, current)}); '
                              'no file of this set was written') from None
    return paths
