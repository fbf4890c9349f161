"""
lbgnet.redrock_rerun
====================

Rerun Redrock in-process on the targets the CNN selected, with the CNN redshift as a
prior and an LBG template (``desi_lbg_make_template``).

redrock 0.21 still uses ``np.NaN``, removed in numpy 2: :func:`import_rrdesi` restores
the alias before importing redrock, and only here.  ``rrdesi`` is always called with
``comm=None`` (one file per MPI rank), so it raises instead of calling
``comm.Abort()`` — which would make ``mpiexec`` exit 0 — and its output file is checked
before use.
"""
import contextlib
import io
import os
import tempfile
import traceback

import numpy as np
from desiutil.log import get_logger

from .io import read_redrock
from .io.atomic import Terminated, raise_if_terminated
from .io.errors import InputFileError
from .io.fitsutil import extnames, open_fits
from .io.priors import priors_table, write_priors


class RerunError(RuntimeError):
    """The Redrock rerun failed (message names the coadd and the reason)."""


#: What to do with a file Redrock cannot be rerun on (its catalogue then has RERUNRR = F,
#: which desi_lbg_zcatalog stacks with the others' only with --allow-mixed).
NO_RERUN_ADVICE = ('run without --rerun-redrock for this file; desi_lbg_zcatalog stacks it '
                   'with --allow-mixed')
#: What to do with a file whose rrdesi run failed.
RERUN_ADVICE = f'--overwrite retries it, or {NO_RERUN_ADVICE}'


def failed_at(err):
    """`` at FILE:LINE`` of the innermost frame of `err`'s traceback ('' without one)."""
    frames = traceback.extract_tb(err.__traceback__) if err.__traceback__ else []
    return f' at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}' if frames else ''


def import_rrdesi():
    """Import :func:`redrock.external.desi.rrdesi` on numpy 2 (``np.NaN`` shim)."""
    if 'NaN' not in np.__dict__:
        np.NaN = np.nan
    from redrock.external.desi import rrdesi
    return rrdesi


def template_files(templates):
    """Expand Redrock template arguments (files, directories, ``.txt`` lists) to files.

    Parameters
    ----------
    templates : sequence of str

    Returns
    -------
    list of str

    Raises
    ------
    InputFileError
        If an entry does not exist or a directory holds no ``rrtemplate-*.fits``.
    """
    import_rrdesi()
    from redrock.templates import find_templates
    files = []
    for entry in templates:
        if not os.path.exists(entry):
            raise InputFileError(entry, 'Redrock template file or directory not found')
        try:
            with contextlib.redirect_stdout(io.StringIO()):     # redrock prints a DEBUG line
                found = (find_templates(entry) if (os.path.isdir(entry) or entry.endswith('.txt'))
                         else [entry])
        except (ValueError, OSError) as err:       # a .txt list naming a missing file
            raise InputFileError(entry, str(err).strip().splitlines()[0] if str(err).strip()
                                 else 'unreadable template list') from None
        if not found:
            raise InputFileError(entry, 'no rrtemplate-*.fits Redrock template found')
        files.extend(found)
    # one file named twice (itself and its directory, or a link) is one template: Redrock
    # would hold two templates of one type
    unique = {}
    for name in files:
        unique.setdefault(os.path.realpath(name), name)
    return list(unique.values())


def zrange_coverage(ranges, zrange):
    """Fraction of the redshift interval `zrange` that the union of `ranges` covers.

    Parameters
    ----------
    ranges : sequence of (float, float)
        :func:`template_zrange` of the rerun templates.
    zrange : (float, float)
        The model's LBG redshift range.

    Returns
    -------
    float
        In [0, 1] (1 for an empty `zrange` inside a range, 0 outside every one).
    """
    lo, hi = float(zrange[0]), float(zrange[1])
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in ranges if min(b, hi) >= max(a, lo))
    if hi <= lo:
        return 1.0 if clipped else 0.0
    covered, end = 0.0, lo
    for a, b in clipped:
        a = max(a, end)
        if b > a:
            covered, end = covered + b - a, b
    return covered / (hi - lo)


def template_zrange(files):
    """Redshift range scanned by each of a set of Redrock templates.

    Parameters
    ----------
    files : sequence of str
        Template files.

    Returns
    -------
    list of (float, float)
        Smallest and largest redshift of each template, in `files` order: a prior must
        overlap one of them (a prior in a gap between them leaves Redrock no finite χ²).

    Raises
    ------
    InputFileError
        Naming the file, for what rrdesi would fail on in every coadd after the network
        has run: an unreadable template, an IGM model Redrock does not know, a rest grid
        that misses DESI's pixels at a redshift it scans
        (:func:`lbgnet.io.rrtemplate.check_coverage`), or two files of one Redrock type.
    """
    import_rrdesi()
    from redrock.igm import igm_models
    from redrock.templates import Template
    from .io.rrtemplate import check_coverage
    ranges, types = [], {}
    with contextlib.redirect_stdout(io.StringIO()):
        for name in files:
            try:
                template = Template(name)
                redshifts = np.asarray(template.redshifts, dtype=np.float64)
            except Exception as err:    # redrock's reader fails in many ways on a bad HDU
                raise InputFileError(name, f'not a Redrock template ({type(err).__name__}: '
                                           f'{(str(err).strip().splitlines() or ["unreadable"])[0]})') from None
            if redshifts.ndim != 1 or redshifts.size == 0 or not np.all(np.isfinite(redshifts)):
                raise InputFileError(name, 'not a Redrock template (REDSHIFTS is not a '
                                           'non-empty 1-d array of finite redshifts)')
            if template.igm_model not in igm_models:
                # rrdesi would fail on it for every coadd, after the network has run
                raise InputFileError(name, f'RRIGM {template.igm_model!r} is not an IGM model '
                                           f'this Redrock knows ({", ".join(map(str, igm_models))})')
            try:
                check_coverage(np.asarray(template.wave, dtype=np.float64), redshifts)
            except ValueError as err:
                raise InputFileError(name, str(err)) from None
            if template.full_type in types:     # rrdesi keys its templates by type
                raise InputFileError(name, f'{name} and {types[template.full_type]} are both '
                                           f'Redrock template {template.full_type}: give one '
                                           'file per RRTYPE/RRSUBTYP')
            types[template.full_type] = name
            ranges.append((float(redshifts.min()), float(redshifts.max())))
    return ranges


#: FIBERMAP columns rrdesi reads after its fit (its DESI ZWARN bits): missing, it fails
#: only once the whole Redrock fit is done.
RRDESI_FIBERMAP_COLUMNS = ('TARGETID', 'COADD_FIBERSTATUS', 'OBJTYPE')


def check_rerunnable(coadd):
    """Check that a coadd has what rrdesi needs (RESOLUTION, FIBERMAP with
    :data:`RRDESI_FIBERMAP_COLUMNS`, EXP_FIBERMAP, SCORES).

    Raises
    ------
    InputFileError
        Naming the first missing HDU or FIBERMAP column.
    """
    with open_fits(coadd) as fx:
        names = extnames(fx)
        columns = fx['FIBERMAP'].get_colnames() if 'FIBERMAP' in names else []
    bands = [n[:-len('_FLUX')] for n in names if n.endswith('_FLUX')]
    need = [f'{b}_RESOLUTION' for b in bands] + ['FIBERMAP', 'EXP_FIBERMAP', 'SCORES']
    missing = [n for n in need if n not in names]
    if missing:
        raise InputFileError(coadd, f'cannot rerun Redrock: no {missing[0]} HDU '
                                    f'({NO_RERUN_ADVICE})')
    absent = [c for c in RRDESI_FIBERMAP_COLUMNS if c not in columns]
    if absent:
        raise InputFileError(coadd, f'cannot rerun Redrock: FIBERMAP has no {", ".join(absent)} '
                                    f'column ({NO_RERUN_ADVICE})')


def rerun_redrock(coadd, targetid, z, sigma, templates, function='tophat', workdir=None):
    """Run Redrock on `targetid` of `coadd` with priors, return its REDSHIFTS rows.

    Parameters
    ----------
    coadd : str
        Coadd file (with RESOLUTION, EXP_FIBERMAP and SCORES HDUs).
    targetid : numpy.ndarray of int
        Targets to refit, shape (n,), n >= 1.
    z, sigma : numpy.ndarray of float
        Prior centre and width (see :mod:`lbgnet.priors`), shape (n,).
    templates : sequence of str
        Redrock template files (see :func:`template_files`).
    function : str, optional
        Prior shape [tophat].
    workdir : str, optional
        Where the temporary priors and Redrock files go [system temporary directory].

    Returns
    -------
    astropy.table.Table
        Redrock REDSHIFTS columns (TARGETID, Z, ZERR, ZWARN, SPECTYPE, SUBTYPE, CHI2,
        DELTACHI2, COEFF), one row per requested TARGETID, in the order of `targetid`.

    Raises
    ------
    RerunError
        If Redrock fails or writes no output, or returns other TARGETIDs.
    """
    log = get_logger()
    rrdesi = import_rrdesi()
    targetid = np.asarray(targetid, dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix='lbg-rerun-', dir=workdir) as tmp:
        prior_file = os.path.join(tmp, 'priors.fits')
        outfile = os.path.join(tmp, 'redrock.fits')
        write_priors(prior_file, priors_table(targetid, z, sigma, function))
        # A leading space keeps argparse from reading a negative TARGETID as an option.
        options = ['--infiles', coadd, '--templates', *templates, '--priors', prior_file,
                   '--targetids', ' ' + ','.join(str(t) for t in targetid),
                   '--outfile', outfile, '--mp', '1']
        log.info('%s: rerunning Redrock on %d targets with %s', coadd, targetid.size,
                 ', '.join(os.path.basename(t) for t in templates))
        chatter = io.StringIO()
        try:
            with contextlib.redirect_stdout(chatter):
                rrdesi(options, comm=None)
        except Terminated:      # SIGTERM/SIGHUP (a SystemExit): stop the run, not this file
            raise
        # rrdesi is third-party code that may raise anything, or call sys.exit(1) on bad
        # options: turn every failure into one RerunError naming the coadd.
        except (Exception, SystemExit) as err:  # noqa: BLE001
            raise_if_terminated()     # rrdesi (or what it calls) turned the signal into this
            log.debug('Redrock output:\n%s', chatter.getvalue())
            raise RerunError(f'{coadd}: Redrock rerun failed ({type(err).__name__}: {err}'
                             f'{failed_at(err)}); {RERUN_ADVICE}') from None
        if not os.path.isfile(outfile):
            raise RerunError(f'{coadd}: Redrock rerun wrote no output')
        try:
            redshifts = read_redrock(outfile, read_fibermap=False).redshifts
        except InputFileError as err:   # its path is a temporary, gone with this directory
            raise RerunError(f'{coadd}: Redrock rerun output unreadable ({err.problem})') from None
    tid = np.asarray(redshifts['TARGETID'], dtype=np.int64)
    order = np.argsort(tid)
    pos = np.minimum(np.searchsorted(tid[order], targetid), max(tid.size - 1, 0))
    if (tid.size != targetid.size or tid.size == 0
            or not np.array_equal(tid[order][pos], targetid)):
        raise RerunError(f'{coadd}: Redrock rerun returned TARGETIDs that differ from the request')
    return redshifts[order[pos]]
