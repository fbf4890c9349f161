"""
lbgnet.io.catalog
=================

Write and read the afterburner catalogue (``lbg_cnn-*.fits``, HDU ``LBG_CNN``) with
its provenance header.  Files are written under a temporary name and renamed, so a
crash never leaves a partial file under the final name.
"""
import contextlib
import functools
import hashlib
import importlib.metadata
import os
import re
import shutil
import sys

import fitsio
import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from desiutil.depend import setdep

from .atomic import atomic_path, private_directory
from .errors import InputFileError
from .fitsutil import (_first_line, cfitsio_name_problem, check_table_hdu, clear_cfitsio_errors,
                       open_fits)

#: Packages whose versions go into DEPNAMnn/DEPVERnn -> their distribution names.  A
#: fixed list read from the installed metadata (nothing is imported), so that the
#: header does not depend on what a run happened to import (e.g. mpi4py under MPI).
PROVENANCE_MODULES = {'numpy': ('numpy',), 'scipy': ('scipy',), 'astropy': ('astropy',),
                      'fitsio': ('fitsio',), 'desiutil': ('desiutil',), 'desispec': ('desispec',),
                      'desitarget': ('desitarget',), 'redrock': ('redrock',),
                      'tensorflow': ('tensorflow', 'tensorflow-cpu'), 'keras': ('keras',)}


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


def _dist_version(dists):
    """Installed version of the first distribution found in `dists`, or 'not installed'."""
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return 'not installed'


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


def check_outdir(outdir, name=None):
    """Create an output directory if needed and check that files can be written in it.

    Parameters
    ----------
    outdir : str
    name : str, optional
        What the error names [`outdir`] (e.g. the output file that needs the directory).

    Raises
    ------
    OutputFileError
        If `outdir` is an existing non-directory, cannot be created or is not writable.
    """
    outdir = str(outdir)
    name = outdir if name is None else name
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise OutputFileError(name, f'{outdir} exists and is not a directory')
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as err:
        raise OutputFileError(name, f'cannot create output directory ({err.strerror or err})') from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise OutputFileError(name, f'output directory {outdir} is not writable')


def check_creatable(directory, name=None):
    """Check, creating nothing, that `directory` could be made and written: its deepest
    existing ancestor (or itself) must be a writable directory.

    Raises
    ------
    OutputFileError
        Naming `name` [`directory`].
    """
    name = directory if name is None else name
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputFileError(name, f'cannot create output directory ({existing} is not '
                              'a directory)')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputFileError(name, f'output directory {existing} is not writable')


def check_not_an_input(path, inputs):
    """Raise :class:`OutputFileError` when the output `path` is one of the `inputs` (the
    same file by its real path: ``--overwrite`` would replace an input)."""
    check_not_inputs([path], inputs)


def check_not_inputs(paths, inputs):
    """:func:`check_not_an_input` for each of the outputs `paths` (the inputs' real paths
    computed once: linear, not quadratic, in the number of files)."""
    real = {os.path.realpath(p) for p in inputs}
    for path in paths:
        if os.path.realpath(path) in real:
            raise OutputFileError(path, 'is an input file; refusing to overwrite it')


#: Why an output path that is a directory cannot be written (every command says it alike).
IS_A_DIRECTORY = 'is a directory; cannot write the output there'

#: Why an output path that exists but is neither a regular file nor a directory (a device
#: such as /dev/null, a pipe, a socket) is refused: the rename of the written file would
#: replace it (as root, /dev/null with a FITS file).
NOT_A_REGULAR_FILE = 'exists and is not a regular file (a device, pipe or socket); give a file name'


def special_file(path):
    """Whether `path` exists (through links) and is neither a regular file nor a directory."""
    return os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path))


def parent_step_problem(path):
    """Why the system cannot follow a ``..`` in `path`, or None.

    ``os.path.abspath`` drops ``x/..`` without looking, but the system resolves ``x``
    first: ``out/x/../cat.fits`` with no ``out/x`` passed every check made on the
    normalised name and failed only at the write, after the file's work was done; and
    after a symbolic link ``x`` the system goes up from the link's target, not to the
    directory holding the link.
    """
    parts = str(path).split(os.sep)
    for i, part in enumerate(parts):
        head = os.sep.join(parts[:i])
        if part != '..' or not head.strip(os.sep):
            continue
        if not os.path.isdir(head):
            return (f"'..' follows {head}, which is not an existing directory (give the path "
                    "without '..')")
        system = os.path.dirname(os.path.realpath(head))
        written = os.path.realpath(os.path.dirname(os.path.abspath(head)))
        if system != written:
            return (f"'..' follows {head}, a symbolic link: the system goes up to {system}, "
                    f"not {written} (give the path without '..')")
    return None


def check_writable(path, create=True):
    """Check that `path` can be written, creating its directory if needed.

    Parameters
    ----------
    path : str
    create : bool, optional
        Create the missing directories [True]; False: only check that the deepest
        existing one is a writable directory (an early check that leaves nothing behind
        when the job fails before writing).

    Raises
    ------
    OutputFileError
        If the directory cannot be created or is not writable, `path` is a directory (or
        ends with a path separator) or another file that is not a regular one (a device,
        a pipe), or
        its name holds cfitsio syntax (:func:`lbgnet.io.fitsutil.cfitsio_name_problem`) or
        a ``..`` the system cannot follow (:func:`parent_step_problem`; both checked
        first, before any directory is created), naming `path`.
    """
    problem = cfitsio_name_problem(path) or parent_step_problem(path)
    if problem:
        raise OutputFileError(path, problem)
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        # abspath would drop the separator and check the directory's parent
        raise OutputFileError(path, 'names a directory (ends with a path separator); give '
                              'a file name')
    outdir = os.path.dirname(os.path.abspath(path))
    if create:
        check_outdir(outdir, name=path)
    else:
        check_creatable(outdir, name=path)
    if os.path.isdir(path):                # os.replace onto it would fail after the others
        raise OutputFileError(path, IS_A_DIRECTORY)
    if special_file(path):
        raise OutputFileError(path, NOT_A_REGULAR_FILE)


@functools.lru_cache(maxsize=1)
def source_revision():
    """``git describe --always`` of the lbgnet source (``-dirty`` when tracked files
    changed), when it runs from its git checkout (an editable install); None otherwise
    (a wheel, no git).

    The version string alone does not change between commits, so this is what tells
    which code wrote a file during development.  Computed once per process.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    top = os.path.dirname(os.path.dirname(package))          # <top>/py/lbgnet
    if not os.path.exists(os.path.join(top, '.git')):
        return None
    commit = _git(top, 'describe', '--always', '--abbrev=12')
    if commit is None:
        return None
    changes = _git(top, 'status', '--porcelain', '--untracked-files=no')
    return commit + ('-dirty' if changes else '')


def _git(top, *command):
    """Output of a read-only git command on the checkout `top` (None when it fails).

    The checkout is named explicitly (a ``GIT_DIR`` in the environment, set inside git
    hooks, would point elsewhere), trusted even when another user owns it (a shared
    install), and never has its index rewritten (``--no-optional-locks``).
    """
    import subprocess
    env = {k: v for k, v in os.environ.items() if not k.startswith('GIT_')}
    try:
        run = subprocess.run(['git', '-c', f'safe.directory={top}', '--no-optional-locks',
                              '--git-dir', os.path.join(top, '.git'), '--work-tree', top,
                              *command], capture_output=True, text=True, timeout=10, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return run.stdout.strip() if run.returncode == 0 else None


def set_dependencies(header):
    """Add python's and the :data:`PROVENANCE_MODULES` versions to `header`
    (``DEPNAMnn/DEPVERnn``), the same whatever the run imported."""
    setdep(header, 'python', '.'.join(map(str, sys.version_info[:3])))
    for module, dists in PROVENANCE_MODULES.items():
        setdep(header, module, _dist_version(dists))


def fix_dependencies(hdul, keep=None, extnames=('PRIMARY', 'FIBERMAP')):
    """Replace the ``DEPNAMnn/DEPVERnn`` keywords desispec's writers add to the HDUs
    `extnames` of an open FITS file (desiutil's ``add_dependencies``: the modules the run
    happened to import, mpi4py under MPI) with :func:`set_dependencies`, in place.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        Opened for update.
    keep : astropy.io.fits.Header, optional
        Dependencies the caller set (e.g. ``lbgnet``), written back into the primary HDU.
    extnames : sequence of str, optional
    """
    from desiutil.depend import iterdep
    for hdu in hdul:
        if hdu.name not in extnames and not (hdu is hdul[0] and 'PRIMARY' in extnames):
            continue
        header = hdu.header
        for key in [k for k in header if k.startswith(('DEPNAM', 'DEPVER'))]:
            del header[key]
        set_dependencies(header)
        if hdu is hdul[0] and keep is not None:
            for name, version in iterdep(keep):
                setdep(header, name, version)


def provenance_header(cards=(), dependencies=None):
    """A FITS header with code versions (``desiutil.depend`` keywords) and run parameters.

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
    revision = source_revision()
    if revision is not None:
        header['LBGGIT'] = (revision, 'lbgnet source revision (git describe)')
    set_dependencies(header)
    for name, version in (dependencies or {}).items():
        setdep(header, name, str(version))
    for key, value, comment in cards:
        if value is None:
            continue
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            value = value.item()
        if isinstance(value, str):
            value = printable_ascii(value)
        header[key] = (value, _fit_comment(key, value, comment))
    return header


def printable_ascii(text):
    """`text` with every character FITS headers cannot hold (non-ASCII, control
    characters) written as a Python escape, e.g. ``données`` → ``donn\\xe9es``.

    FITS header values must be printable ASCII; a path with other characters would
    otherwise fail the write of a file after all its work was done.
    """
    return ''.join(c if ' ' <= c <= '~' else c.encode('unicode_escape').decode('ascii')
                   for c in text)


def _fit_comment(key, value, comment):
    """Shorten `comment` so that the card fits in 80 characters (no astropy warning)."""
    used = len(str(fits.Card(key, value)).rstrip())
    room = 80 - max(used, 30) - 3
    return comment[:max(room, 0)] if used <= 80 else ''


def write_catalog(path, table, header, extname='LBG_CNN'):
    """Write a catalogue atomically: primary HDU + one binary table, both with `header`.

    Parameters
    ----------
    path : str
    table : astropy.table.Table
        Columns with ``.unit`` set where they have units (written as TUNITn) and
        ``.description`` where they have one (written as the TTYPEn comment, the
        convention of :mod:`desiutil.annotate`).
    header : astropy.io.fits.Header
        Provenance (see :func:`provenance_header`).
    extname : str, optional
        Table HDU name [``LBG_CNN``].

    Raises
    ------
    OutputFileError
        If the output directory is not writable or the write fails (e.g. disk full).
    """
    return write_outputs([(path, table, extname)], header)[0]


def write_outputs(files, header):
    """Write several tables so that either all of them appear or none does.

    Each goes to a temporary name first; they are renamed only when every one was written
    (in reverse order, so the first path appears last: a run that finds it can take the
    others as complete).  An existing first path is removed before the renames, so that
    a failure or a kill between two renames never leaves an old first file beside new
    others (it would be taken as complete).  On a write error all temporaries are removed
    and no existing file is touched.

    Parameters
    ----------
    files : sequence of (path, astropy.table.Table, extname)
    header : astropy.io.fits.Header
        Provenance cards for every HDU.

    Raises
    ------
    OutputFileError
        If a directory is not writable or a write fails (e.g. disk full).
    """
    created = missing_directories(path for path, _, _ in files)
    renamed = []

    def rename(tmp, path):
        """The last step of :func:`atomic_path`, recording what it renamed."""
        os.replace(tmp, path)
        renamed.append(path)

    try:
        for path, _, _ in files:
            check_writable(path)
        _write_all(files, header, rename, renamed)
    except BaseException:           # a write error, or a signal (Terminated) mid-write
        if not renamed:             # nothing written: no empty directory either
            remove_empty(created)
        raise
    return [path for path, _, _ in files]


def _write_all(files, header, rename, renamed):
    """The writes and renames of :func:`write_outputs` (its error messages included);
    `rename` records in `renamed` the files it put in place."""
    from contextlib import ExitStack
    current, removed = files[0][0], False
    try:
        with ExitStack() as stack:
            tmps = [stack.enter_context(atomic_path(path, rename)) for path, _, _ in files]
            for tmp, (current, table, extname) in zip(tmps, files):
                try:
                    _write_table(tmp, table, header, extname)
                    _check_written(tmp, extname, len(table))
                except OSError as err:   # reason taken while the temporaries still fill the disk
                    raise OutputFileError(current, f'cannot write ({write_failure_reason(err, tmp)}); '
                                          'no output of this file was written') from None
            removed = len(files) > 1 and remove_marker(files[0][0])
    except OutputFileError:
        raise
    except OSError as err:           # a rename failed: name the file that failed, and the others
        failed = next((path for path, _, _ in files[::-1] if path not in renamed), current)
        done = f'; {", ".join(renamed)} already written' if renamed else \
            '; no output of this file was written'
        if removed:
            done += f' (the earlier {files[0][0]} was removed: a rerun redoes the file)'
        raise OutputFileError(failed, f'cannot rename the output into place '
                              f'({err.strerror or err}){done}') from None


def missing_directories(paths):
    """The directories above `paths` that do not exist yet, deepest first."""
    out = []
    for path in paths:
        directory = os.path.dirname(os.path.abspath(path))
        while directory and not os.path.exists(directory) and directory not in out:
            out.append(directory)
            directory = os.path.dirname(directory)
    return sorted(out, key=lambda d: -d.count(os.sep))


def remove_empty(directories):
    """Remove those of `directories` (deepest first) that are empty; others are kept."""
    for directory in directories:
        try:
            os.rmdir(directory)
        except OSError:
            pass


def remove_marker(path):
    """Remove `path` (the file whose presence marks a complete set), if it exists; return
    whether there was one."""
    try:
        if os.path.lexists(path):
            os.remove(path)
            return True
    except OSError as err:
        raise OutputFileError(path, f'cannot replace it ({err.strerror or err}); no output '
                              'of this file was written') from None
    return False


#: Below this many free bytes, a failed write is reported as a full device.
LOW_SPACE_BYTES = 1 << 20


def write_failure_reason(err, path):
    """One line saying why writing `path` failed.

    fitsio raises an ``OSError`` without ``strerror`` whose text is cfitsio's whole error
    stack, often a dozen lines starting with a misleading one ("1st key not SIMPLE or
    XTENSION"); the last ``FITSIO status = ...`` line about writing is the real reason.
    cfitsio does not say "no space left on device", so the free space of the device is
    checked too.

    Parameters
    ----------
    err : OSError
    path : str
        The file being written.

    Returns
    -------
    str
    """
    if getattr(err, 'strerror', None):
        reason = err.strerror
    else:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        status = [line for line in lines if line.startswith('FITSIO status')]
        writing = [line for line in status if 'writ' in line.lower()]
        if status:
            reason = (writing or status)[-1]
        else:
            reason = lines[0] if lines else type(err).__name__
    try:
        usage = shutil.disk_usage(os.path.dirname(os.path.abspath(path)))
        # pseudo file systems (/proc, /sys) have no size at all: not a full device
        free = usage.free if usage.total > 0 else None
    except OSError:
        free = None
    if free is not None and free < LOW_SPACE_BYTES and 'space' not in reason.lower():
        reason = f'no space left on device ({free} bytes free); {reason}'
    return reason


def _check_written(path, extname, nrows):
    """Check a file just written: cfitsio may fail silently when closing (disk full).

    Raises
    ------
    OSError
        If `path` is truncated, unreadable or lacks the `extname` table of `nrows` rows.
    """
    try:
        with open_fits(path) as fx:
            if extname not in fx or fx[extname].get_nrows() != nrows:
                raise OSError(f'{extname} HDU incomplete after writing')
    except InputFileError as err:
        raise OSError(f'file incomplete after writing: {err.problem}') from None


#: The comment cfitsio gives every TTYPEn card ("label for field   N").
CFITSIO_LABEL = re.compile(r'^label for field\s+\d+$')


def card_comment(text, name):
    """`text` as the comment of the ``TTYPEn = 'name'`` card: ASCII, and short enough
    that the card needs no continuation (which some readers take into the name).

    Parameters
    ----------
    text : str or None
        Column description.
    name : str
        Column name (the card's value).

    Returns
    -------
    str
        Possibly shortened; '' for no description.
    """
    if not text:
        return ''
    text = str(text).encode('ascii', 'ignore').decode().strip()
    return text[:max(0, min(47, 65 - len(name)))].rstrip()


def _write_table(path, table, header, extname):
    """Primary HDU + one binary table at `path` (overwritten), both with `header` and
    with ``CHECKSUM``/``DATASUM`` cards (last, so that they cover every other card).

    A ``.gz`` path is written uncompressed beside it first and then gzipped without a
    time stamp or file name in the gzip header (:func:`gzip_without_time`), so that two
    runs on the same inputs give identical compressed files too.
    """
    if path.endswith('.gz'):
        plain = f'{path[:-3]}.plain-{os.getpid()}'
        try:
            _write_table(plain, table, header, extname)
            gzip_without_time(plain, path)
        finally:
            if os.path.exists(plain):
                os.remove(plain)
        return
    records = [dict(name=card.keyword, value=card.value, comment=card.comment)
               for card in header.cards if card.keyword not in ('', 'COMMENT', 'HISTORY')]
    units = [str(table[col].unit) if table[col].unit is not None else '' for col in table.colnames]
    data = np.asarray(table.as_array())
    clear_cfitsio_errors()
    with fitsio.FITS(path, 'rw', clobber=True) as fx:
        fx.write(None, header=records)
        fx.write(data, extname=extname, header=records, units=units)
        for i, col in enumerate(table.colnames, 1):      # descriptions: TTYPEn comments
            text = card_comment(table[col].description, col)
            if text:
                fx[-1].write_key(f'TTYPE{i}', col, comment=text)
    add_checksums(path)


def gzip_without_time(src, dest):
    """Gzip the file `src` into `dest` with modification time 0 and no file name in the
    gzip header (what ``gzip -n`` does): the same content always gives the same bytes."""
    import gzip
    with open(src, 'rb') as fin, open(dest, 'wb') as raw:
        with gzip.GzipFile(filename='', mode='wb', fileobj=raw, mtime=0) as fout:
            shutil.copyfileobj(fin, fout)


def add_checksums(path, dependencies=None):
    """Add ``CHECKSUM``/``DATASUM`` cards to every HDU of a FITS file, in place.

    As desispec's writers do, so that a later corruption is detectable, but with a fixed
    card comment: cfitsio's (and astropy's default) comment holds the time of writing,
    which would make two runs on the same inputs write different files.  Cards already in
    the file (written by desispec) are removed first: astropy would write them again, with
    a time stamp, when the file is closed.

    Parameters
    ----------
    path : str
    dependencies : astropy.io.fits.Header, optional
        When given, the ``DEPNAMnn/DEPVERnn`` keywords of the primary and FIBERMAP
        headers are replaced in the same pass (:func:`fix_dependencies`, keeping these).

    Notes
    -----
    astropy rewrites a file whose headers grow through a temporary of its own beside it
    (named by tempfile: ``tmp`` and eight random characters), which a run stopped
    meanwhile (SIGTERM) left in the output directory: the file is updated inside a
    private hidden directory beside it, removed on the way out whatever happens, and
    moved back.  A process killed outright (``kill -9``) cannot remove it: its name says
    whose it is (:func:`lbgnet.io.atomic.private_directory`:
    ``.NAME.tmp<pid>-<host>.XXXXXXXX``, ``..ROOT.tmp<pid>-<host>.fits.XXXXXXXX`` for a
    temporary of :func:`lbgnet.io.atomic.atomic_path`), and the next command writing the
    same output removes it once that process has ended
    (:func:`lbgnet.io.atomic.remove_leftovers`).
    """
    path = str(path)
    name = os.path.basename(os.path.abspath(path))
    private = private_directory(path)
    inside = os.path.join(private, name)
    try:
        os.rename(path, inside)
        _add_checksums_in_place(inside, dependencies)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.rename(inside, path)
        shutil.rmtree(private, ignore_errors=True)


def _add_checksums_in_place(path, dependencies):
    """:func:`add_checksums` on `path` itself (astropy's temporary beside it)."""
    with fits.open(path, mode='update', memmap=False, checksum=False) as hdul:
        # cards already there (desispec's writer) would be written again, with a time
        # stamp, when the file closes: removed first, in a pass of their own
        stamped = [hdu for hdu in hdul if 'CHECKSUM' in hdu.header or 'DATASUM' in hdu.header]
        for hdu in stamped:
            for key in ('CHECKSUM', 'DATASUM'):
                hdu.header.remove(key, ignore_missing=True)
        if dependencies is not None:
            fix_dependencies(hdul, dependencies)
    with fits.open(path, mode='update', memmap=False, checksum=False) as hdul:
        for hdu in hdul:
            hdu.add_checksum(when='checksum (no time stamp)')


def read_catalog(path, extname='LBG_CNN'):
    """Read a catalogue written by :func:`write_catalog`.

    The table is read with fitsio (a production stacks ~1e5 catalogues: astropy's FITS
    table reader took about 3 times as long per file), into the table astropy's reader
    gives: the same columns, types, units and header keywords in ``meta``.

    Returns
    -------
    table : astropy.table.Table
        With units and column descriptions (TTYPEn comments); ``table.meta`` holds the
        table header keywords (as :meth:`astropy.table.Table.read` gives them).
    header : dict
        Primary header keywords.

    Raises
    ------
    InputFileError
        Missing / non-FITS / truncated file, no `extname` HDU, or a header card or table
        that cannot be decoded (damaged file), or a table whose ``DATASUM`` no longer
        matches its data.
    """
    with open_fits(path) as fx:
        names = [h.get_extname().upper() for h in fx]
        if extname not in names:
            raise InputFileError(path, f'no {extname} HDU')
        check_table_hdu(fx, extname, path)
        header = _primary_header(fx, path)
        try:
            table = _read_table(fx, extname, path)
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError,
                fits.verify.VerifyError) as err:       # VerifyError is not a ValueError
            raise InputFileError(path, f'damaged {extname} HDU ({_first_line(err)})') from None
    table.meta['EXTNAME'] = extname
    return table, header


def read_catalog_header(path, extname='LBG_CNN'):
    """The primary header keywords of a catalogue, without reading its table.

    Raises
    ------
    InputFileError
        As :func:`read_catalog` for the file and its header (the table is not checked
        beyond the presence of the `extname` HDU).
    """
    with open_fits(path) as fx:
        if extname not in [h.get_extname().upper() for h in fx]:
            raise InputFileError(path, f'no {extname} HDU')
        return _primary_header(fx, path)


def _primary_header(fx, path):
    """Primary header keywords of an open fitsio file, as a dict."""
    try:
        primary = fx[0].read_header()
        return {k: primary[k] for k in primary.keys()}
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as err:
        raise InputFileError(path, f'damaged primary header ({_first_line(err)})') from None


#: Table header keywords that astropy's reader leaves out of ``Table.meta`` (besides
#: the column keywords :data:`COLUMN_KEYWORD`).
STRUCTURE_KEYWORDS = frozenset(('XTENSION', 'BITPIX', 'NAXIS', 'NAXIS1', 'NAXIS2', 'PCOUNT',
                                'GCOUNT', 'TFIELDS', 'THEAP'))

#: Column keywords (``TTYPEn``, ``TUNITn``, …), which describe columns, not the table.
COLUMN_KEYWORD = re.compile(r'^(TTYPE|TFORM|TUNIT|TNULL|TSCAL|TZERO|TDISP|TBCOL|TDIM|TCTYP|'
                            r'TCUNI|TCRPX|TCRVL|TCDLT|TRPOS)\d+$')


def table_meta(cards):
    """``Table.meta`` of a table HDU from its header cards, as astropy's reader makes it:
    structure and column keywords left out, ``COMMENT`` cards as the list
    ``meta['comments']``, ``HISTORY`` cards and repeated keywords as lists.

    Parameters
    ----------
    cards : sequence of dict
        Each with ``name`` and ``value`` (:meth:`fitsio.hdu.base.HDUBase.read_header_list`).

    Returns
    -------
    dict
    """
    meta = {}
    for card in cards:
        key, value = card['name'], card['value']
        if key in ('COMMENT', 'HISTORY'):
            meta.setdefault('comments' if key == 'COMMENT' else key, []).append(value)
        elif key in meta:
            meta[key] = (meta[key] if isinstance(meta[key], list) else [meta[key]]) + [value]
        elif not (COLUMN_KEYWORD.match(key) or key in STRUCTURE_KEYWORDS):
            meta[key] = value
    return meta


def _read_table(fx, extname, path):
    """The table of HDU `extname` of an open fitsio file, with TTYPEn comments as column
    descriptions, TUNITn as units and the header keywords as ``meta``.

    A table whose ``DATASUM`` (written by :func:`add_checksums`) no longer matches its data
    is refused (a bad copy or a disk error would pass for a catalogue).  fitsio reads the
    table when its header still matches its ``CHECKSUM`` (as written); any other header
    (edited by another tool, damaged, or written without checksums) is read by astropy,
    which refuses a card it cannot parse where cfitsio would read a damaged card into a
    wrong column name.

    Raises
    ------
    ValueError
        The data do not match ``DATASUM``.
    OSError, UnicodeDecodeError, KeyError, TypeError, astropy.io.fits.verify.VerifyError
        The table cannot be read.
    """
    hdu = fx[extname]
    cards = hdu.read_header_list()
    sums = {c['name']: c['value'] for c in cards if c['name'] in ('CHECKSUM', 'DATASUM')}
    offsets = hdu.get_offsets()
    if 'DATASUM' in sums or 'CHECKSUM' in sums:
        raw = fx.read_raw()
        data_sum = ones_complement_sum(raw[offsets['data_start']:offsets['data_end']])
        if 'DATASUM' in sums and str(sums['DATASUM']).strip() != str(data_sum):
            raise ValueError('its data do not match its DATASUM: a damaged or partial copy?')
        whole = ones_complement_sum(raw[offsets['header_start']:offsets['data_start']], data_sum)
    if 'CHECKSUM' not in sums or whole != 0xFFFFFFFF:      # a right CHECKSUM sums to -0
        return _read_table_astropy(path, extname)
    unsigned = _unsigned_columns(cards)
    if unsigned is None:                # scaled or null-flagged columns: astropy's rules
        return _read_table_astropy(path, extname)
    if hdu.get_nrows() == 0:      # text as fitsio reads it from rows: str, not bytes
        dtype = hdu.get_rec_dtype()[0]
        fields = [(name, dtype[name].base, dtype[name].shape) for name in dtype.names]
        data = np.zeros(0, dtype=[(name, f'U{base.itemsize}' if base.kind == 'S' else base,
                                   shape) for name, base, shape in fields])
    else:
        data = hdu.read(trim_strings=True)
    if unsigned:            # astropy gives the offset (unsigned) columns in native order
        data = data.astype([(name, data.dtype[name].base.newbyteorder('=') if i in unsigned
                             else data.dtype[name].base, data.dtype[name].shape)
                            for i, name in enumerate(data.dtype.names, 1)])
    table = Table(data, copy=False, meta=table_meta(cards))
    column = {c['name']: c for c in cards if COLUMN_KEYWORD.match(c['name'])}
    for i, col in enumerate(table.colnames, 1):
        text = str(column[f'TTYPE{i}'].get('comment') or '').strip()
        # cfitsio's own default comment is no description
        table[col].description = None if CFITSIO_LABEL.match(text) else (text or None)
        unit = str(column.get(f'TUNIT{i}', {}).get('value') or '').strip()
        if unit:
            table[col].unit = _fits_unit(unit)
    return table


#: TFORMn letter -> the TZEROn that makes it an unsigned integer column (FITS 4.0, 7.3.2).
UNSIGNED_ZERO = {'I': 32768, 'J': 2 ** 31, 'K': 2 ** 63}


def _unsigned_columns(cards):
    """Numbers (1-based) of the columns whose ``TZEROn`` makes them unsigned integers
    (``TFORMn`` B with -128 is signed bytes), or None when a column is scaled otherwise,
    has a ``TSCALn`` other than 1, ``TNULLn`` or ``TDISPn`` (left to astropy's reader,
    which applies them).

    Parameters
    ----------
    cards : sequence of dict
        Header cards, each with ``name`` and ``value``.
    """
    values = {c['name']: c['value'] for c in cards}
    unsigned = set()
    for key, value in values.items():
        kind = COLUMN_KEYWORD.match(key)
        kind = kind.group(1) if kind else None
        if kind == 'TSCAL' and _number(value) == 1:    # fitsio writes TSCALn = 1 beside
            continue                                    # the TZEROn of unsigned columns
        if kind in ('TSCAL', 'TNULL', 'TDISP'):
            return None
        if kind != 'TZERO':
            continue
        number = int(key[5:])
        form = str(values.get(f'TFORM{number}', '')).strip().lstrip('0123456789')[:1]
        if {'B': -128, **UNSIGNED_ZERO}.get(form) != _number(value):
            return None
        unsigned.add(number)
    return unsigned


def _number(value):
    """A header value as an exact number (fitsio gives a TZEROn of 2**63 as text), or
    None."""
    try:
        return int(str(value).strip()) if not isinstance(value, float) else value
    except ValueError:
        return None


@functools.lru_cache(maxsize=256)
def _fits_unit(text):
    """A TUNITn value as astropy's FITS reader reads it (an unknown unit kept as text)."""
    return u.Unit(text, format='fits', parse_strict='silent')


def ones_complement_sum(raw, start=0):
    """The 32-bit ones' complement sum of `raw` read as big-endian unsigned words (FITS
    standard 4.0, appendix J): the ``DATASUM`` of a data unit; a header and data unit
    whose ``CHECKSUM`` is right sum to 0xFFFFFFFF.

    Parameters
    ----------
    raw : bytes
        A whole number of 2880-byte blocks (any multiple of 4 bytes).
    start : int, optional
        A sum to add to (that of the data unit, for the whole HDU) [0].

    Returns
    -------
    int
    """
    words = np.frombuffer(raw, dtype='>u4')
    total = start
    for start in range(0, len(words), 1 << 30):   # 2**30 words sum below 2**62: no overflow
        total += int(words[start:start + (1 << 30)].sum(dtype=np.uint64))
    while total >> 32:                             # end-around carry
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def _read_table_astropy(path, extname):
    """The table of HDU `extname` read by astropy (a header that no ``CHECKSUM`` vouches
    for), with TTYPEn comments as column descriptions."""
    with fits.open(path, memmap=False) as hdul:
        table = Table.read(hdul[extname], mask_invalid=False)
        comments = hdul[extname].header.comments
        for i, col in enumerate(table.colnames, 1):       # TTYPEn comments -> descriptions
            text = comments[f'TTYPE{i}'].strip()
            table[col].description = None if CFITSIO_LABEL.match(text) else (text or None)
    return table
