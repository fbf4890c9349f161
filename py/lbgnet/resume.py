"""
lbgnet.resume
=============

Whether the outputs an earlier ``desi_lbg_afterburner`` run left may be kept by this one.

A file whose catalogue and priors file both exist is not processed again without
``--overwrite``.  Its catalogue header records what it was made from and with what
(``INCOADD``, ``INREDROC`` and the keywords of :data:`lbgnet.zcatalog.CONSISTENT_KEYS`:
model, thresholds, rerun, refinement, error calibration), and that is compared with this
run before the file counts as done:

* another model or other settings: the file fails (the outputs are not what this run
  was asked for: a rerun adding ``--rerun-redrock`` to a production would otherwise
  change nothing and report success; ``desi_lbg_zcatalog`` would refuse to stack them);
* made from a coadd of another name (an explicit ``--output`` reused for another coadd):
  the file fails;
* made from another version of the same coadd or Redrock file (``INCOSUM``/``INRRSUM``,
  fingerprints of their headers, differ from the files now there: a re-reduced coadd, a
  cumulative tile coadd with new exposures, a new Redrock run): the file fails (catalogues
  written before these keywords are not checked);
* made from a coadd of the same name at another path (a tree read through another mount,
  as ``/dvs_ro/cfs`` for ``/global/cfs`` at NERSC, or moved): kept, and counted in one
  warning, since a coadd's name identifies it within a production;
* an unreadable catalogue: the file fails.

In every failing case the message says to remove the pair to redo that file
(``--overwrite`` redoes every file of the run: a production's other files too).
"""
import os
from types import SimpleNamespace

from .afterburner import catalog_header
from .io.catalog import printable_ascii, read_catalog_header
from .io.errors import InputFileError
from .io.fitsutil import REDROCK_FINGERPRINT_COLUMNS, header_fingerprint
from .zcatalog import CONSISTENT_KEYS, describe_difference, differing_keys, shared_keys


#: How a file that fails the resume check is redone (the end of every such message).
REDO = ('remove it and its priors file to redo this file (--overwrite redoes every file '
        'of the run)')
#: ... when the priors file does not belong to the catalogue.
REDO_PAIR = 'remove both to redo this file (--overwrite redoes every file of the run)'

#: Input keywords of a catalogue header and the job attribute each must name.
INPUT_KEYS = (('INCOADD', 'coadd'), ('INREDROC', 'redrock'))
#: Fingerprint keywords of the inputs (:func:`lbgnet.io.fitsutil.header_fingerprint`),
#: with the job attribute, what the message calls the file and the columns hashed too.
FINGERPRINT_KEYS = (('INCOSUM', 'coadd', 'coadd', None),
                    ('INRRSUM', 'redrock', 'Redrock file', REDROCK_FINGERPRINT_COLUMNS))


def run_settings(job, model_path, sha256, config, zrange, c_thresh, n_thresh, rerun=None,
                 refiner=None):
    """The :data:`lbgnet.zcatalog.CONSISTENT_KEYS` values this run would write.

    Built with :func:`lbgnet.afterburner.catalog_header` itself, without loading the network.

    Parameters
    ----------
    job : lbgnet.io.discover.FileJob
        Any file of the run (the settings do not depend on it).
    model_path, sha256 : str
        The model file and the SHA-256 of its weights.
    config : lbgnet.config.Config
        The model's configuration.
    zrange : (float, float)
        The model's redshift range.
    c_thresh, n_thresh : float, int
        The thresholds of this run.
    rerun : lbgnet.afterburner.RerunSetup, optional
    refiner : lbgnet.refine.Refiner, optional

    Returns
    -------
    dict
    """
    network = SimpleNamespace(path=os.path.abspath(model_path), sha256=sha256, config=config,
                              zrange=zrange)
    header = catalog_header(job, network, c_thresh, n_thresh, None, rerun, refiner)
    values, _ = shared_keys({key: header[key] for key in header})
    return {key: values[key] for key in CONSISTENT_KEYS}


def stale_reason(job, settings):
    """Why the existing outputs of `job` cannot count as done by this run.

    Parameters
    ----------
    job : lbgnet.io.discover.FileJob
        A file whose catalogue and priors file exist.
    settings : dict
        :func:`run_settings` of this run.

    Returns
    -------
    reason : str or None
        One line naming the catalogue, None when it may be kept.
    moved : str or None
        When it may be kept but was made from a file of the same name at another path:
        ``'<catalogue>: <recorded path>'``.
    revision : str
        The lbgnet revision that wrote the catalogue (header ``LBGGIT``; '' when absent or
        unreadable).
    """
    try:
        header = read_catalog_header(job.output)
    except InputFileError as err:
        return f'{err}: the existing output is not a readable catalogue; {REDO}', None, ''
    revision = str(header.get('LBGGIT') or '')
    reason = _pair_reason(job, header)
    if reason is not None:
        return reason, None, revision
    return (*_stale_reason(job, settings, header), revision)


#: Keywords a catalogue and its priors file of one run share: the inputs they were made
#: from (and their fingerprints) and the settings.
PAIR_KEYS = (tuple(key for key, _ in INPUT_KEYS) + tuple(key for key, *_ in FINGERPRINT_KEYS)
             + tuple(CONSISTENT_KEYS))


def _pair_reason(job, header):
    """Why the existing priors file of `job` is not the one written with its catalogue
    (primary `header`), or None.  A priors file of another run (an explicit ``--priors``
    reused for another coadd) would be kept as this coadd's priors."""
    try:
        theirs = read_catalog_header(job.priors, extname='PRIORS')
    except InputFileError as err:
        return f'{err}: the existing priors file is not readable; {REDO_PAIR}'
    differ = [key for key in PAIR_KEYS
              if str(theirs.get(key, '')).strip() != str(header.get(key, '')).strip()]
    if not differ:
        return None
    made = theirs.get('INCOADD')
    source = f'made from {made}' if made else 'written'
    return (f'{job.priors}: exists, {source}, not with the catalogue {job.output} '
            f'({", ".join(differ[:4])}{" …" if len(differ) > 4 else ""} differ); {REDO_PAIR}')


def _stale_reason(job, settings, header):
    """(reason, moved) of :func:`stale_reason`, from the catalogue's primary `header`."""
    moved = None
    for key, attr in INPUT_KEYS:
        made, given = header.get(key), getattr(job, attr)
        if not made or not given or _same_path(str(made), given):
            continue
        if os.path.basename(str(made)) != printable_ascii(os.path.basename(given)):
            return f'{job.output}: exists, made from {made}, not from {given}; {REDO}', None
        moved = moved or f'{job.output}: {made}'
    for key, attr, what, columns in FINGERPRINT_KEYS:
        made = header.get(key)
        if not made or not getattr(job, attr):
            continue
        try:
            now = header_fingerprint(getattr(job, attr), columns)
        except InputFileError as err:
            return f'{err}: cannot check it against the existing output {job.output}', None
        if str(made).strip() != now:
            return (f'{job.output}: exists, made from another version of the {what} '
                    f'{getattr(job, attr)} (header fingerprint {str(made).strip()} then, {now} '
                    f'now); {REDO}', None)
    values, absent = shared_keys(header)
    diff = differing_keys(values, settings)
    if diff:
        text = describe_difference(diff, (values, absent), (settings, set(), 'this run'))
        return f'{job.output}: exists, made with other settings ({text}); {REDO}', None
    return None, moved


def _same_path(made, given):
    """True when the path `made` recorded in a header (non-ASCII characters escaped,
    :func:`lbgnet.io.catalog.printable_ascii`) names the file `given` (as given, or once
    links are resolved)."""
    recorded = {os.path.abspath(given), printable_ascii(os.path.abspath(given)),
                printable_ascii(os.path.realpath(given))}
    return made in recorded or os.path.realpath(made) == os.path.realpath(given)
