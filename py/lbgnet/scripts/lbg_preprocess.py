"""
lbgnet.scripts.lbg_preprocess
=============================

``desi_lbg_preprocess``: grid DESI coadds into the network input and save it as
``.npz`` (X, TARGETID, EMPTY, WAVE, ...), or run on a built-in example.  With ``--outdir``
each coadd gets its own ``lbg_input-X.npz`` (files shared over MPI ranks with ``--mpi``;
the outputs of an earlier run of the same inputs and configuration are kept).
"""
import argparse
import os
import re
import tempfile
import traceback
import zipfile

import numpy as np
from desiutil.log import get_logger

from ..config import ConfigError, load_config
from ..example import example_spectra
from ..io import InputFileError, minimal_fibermap, write_coadd
from ..io.atomic import atomic_path, raise_if_terminated, remove_leftovers
from ..io.catalog import (NOT_A_REGULAR_FILE, OutputFileError, check_not_an_input,
                          check_not_inputs, check_outdir, missing_directories, remove_empty,
                          special_file)
from ..io.discover import expand_coadds, input_array_paths
from ..parallel import (RankZeroParser, problem_on_rank_zero, run_command, split_work,
                        stop_if_any_failed)
from ..preprocess import load_coadd_grid
from ..progress import Progress
from ..ranklog import run_wide


def parse(options=None):
    """Parse the command line of ``desi_lbg_preprocess``."""
    parser = RankZeroParser(description='Grid DESI coadd spectra into the lbgnet input '
                            '(normalised flux and S/N on the 800-bin grid).')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--coadd', nargs='+', help='coadd FITS file(s) or glob pattern(s)')
    src.add_argument('--example', action='store_true',
                     help='write a small example coadd to a temporary directory and grid it')
    parser.add_argument('--output', help='output .npz (one input file only) [no output]')
    parser.add_argument('--outdir', help='output directory: one lbg_input-X.npz per coadd-X.fits '
                        '(created if needed); one of an earlier run of the same coadd and '
                        'configuration is kept, another is replaced only with --overwrite')
    parser.add_argument('--mpi', action='store_true',
                        help='share the --coadd files among MPI ranks (with --outdir)')
    parser.add_argument('--config', default='lbgnet-base.yaml',
                        help='configuration (grid) [%(default)s]')
    parser.add_argument('--seed', type=int, help='seed of the example [0]')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing --output, or redo --outdir files that '
                        'cannot be kept')
    args = parser.parse_args(options)
    if args.output is not None and not args.output:
        parser.error('--output must name a file')
    if args.output and args.coadd and len(args.coadd) > 1:
        parser.error('--output needs exactly one --coadd file (--outdir takes several)')
    if args.output and args.outdir is not None:
        parser.error('--output and --outdir exclude each other: --output names the file of '
                     'one coadd, --outdir holds one file per coadd')
    if args.outdir is not None and not args.outdir:
        parser.error('--outdir must name a directory')
    if args.overwrite and not (args.output or args.outdir):
        parser.error('--overwrite replaces an existing output: give --output or --outdir')
    if args.mpi and not (args.coadd and args.outdir):
        parser.error('--mpi shares --coadd files among ranks, each writing into --outdir: '
                     'give both')
    if args.seed is not None and not args.example:
        parser.error('--seed draws the --example spectra: it does not apply to --coadd')
    args.seed = 0 if args.seed is None else args.seed
    if args.seed < 0:
        parser.error(f'--seed must be >= 0, got {args.seed}')
    return args


#: Names of FITS files (an ``.npz`` written under one would pass for a FITS file).
FITS_NAME = re.compile(r'\.(fits|fit|fts)(\.gz|\.fz|\.bz2)?$', re.IGNORECASE)


def check_output(path, overwrite, inputs=()):
    """Check before any work that `path` can be written; create its directory.

    Raises
    ------
    lbgnet.io.catalog.OutputFileError
        If `path` is a directory or names one (a trailing ``/``), or another file that
        is not a regular one (a device, a pipe), has a FITS name (an ``.npz`` archive is
        written under the name as given), is one of the `inputs`, exists without
        `overwrite`, or its directory cannot be created or written to.
    """
    if os.path.isdir(path):
        raise OutputFileError(path, 'is a directory')
    if path.endswith(os.sep):
        raise OutputFileError(path, 'names a directory (ends with /), not a file')
    if special_file(path):
        raise OutputFileError(path, NOT_A_REGULAR_FILE)
    if FITS_NAME.search(path):
        raise OutputFileError(path, 'a FITS name, but the output is an .npz archive (written '
                              'under the name as given): name it .npz')
    check_not_an_input(path, inputs)
    if os.path.lexists(path) and not overwrite:
        raise OutputFileError(path, 'exists; use --overwrite to replace it')
    check_outdir(os.path.dirname(os.path.abspath(path)))


def summarise(path, X, info):
    """Log a one-paragraph summary of one gridded file."""
    log = get_logger()
    nspec = X.shape[0]
    log.info('%s: %d spectra, bands %s, %d empty', path, nspec, ''.join(info.bands),
             int(info.empty.sum()))
    filled = info.nvalid_bins > 0
    if filled.any():            # the spectra with data (an empty one would count as 0)
        per_bin = np.abs(X[filled, :, 1]).sum(1) / info.nvalid_bins[filled]
        log.info('%s: valid bins per spectrum %d-%d, median |S/N| per valid bin %.2f (of '
                 'the %d spectra with data)', path, info.nvalid_bins.min(),
                 info.nvalid_bins.max(), np.median(per_bin), int(filled.sum()))


def npz_extras(info, path, config):
    """What ``--output`` saves beside the network input: the rebinned flux and ivar
    (float32; channel 0 of ``X`` is normalised), the arms and which have data, and the
    provenance (input file, lbgnet version, configuration), as plain arrays (no pickle)."""
    from .. import __version__
    nspec, nbins = info.empty.shape[0], config.grid.nbins
    def grid(values):
        return (np.zeros((nspec, nbins), np.float32) if values is None
                else np.asarray(values, dtype=np.float32))
    return dict(FLUX=grid(info.flux), IVAR=grid(info.ivar),
                BANDS=np.asarray(list(info.bands), dtype=str),
                BAND_VALID=np.asarray(info.band_valid, dtype=bool),
                SOURCE=np.asarray(os.path.abspath(path)), LBGNET=np.asarray(str(__version__)),
                CONFIG=np.asarray(str(config.source)))


#: The first bytes of a zip archive (an ``.npz``; numpy's test too).
ZIP_MAGIC = b'PK\x03\x04'


def kept_reason(output, coadd, config):
    """Why the existing `output` of `coadd` cannot be kept by this run, or None when it
    can: it was gridded from a coadd of the same name (at any path: another mount or a
    moved tree) whose headers still have the same fingerprint (``INCOSUM``,
    :func:`lbgnet.io.fitsutil.header_fingerprint`: a re-reduced coadd differs), onto the
    same grid, with a configuration file of the same name and this lbgnet version.

    Raises
    ------
    lbgnet.io.InputFileError
        When `coadd` is missing or its headers cannot be read.
    """
    from .. import __version__
    from ..io.fitsutil import header_fingerprint
    try:         # np.load would read anything else as a pickle, and say that it is one
        with open(output, 'rb') as fh:
            if fh.read(4) != ZIP_MAGIC:
                return 'exists and is not an .npz archive'
        data = np.load(output, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        return f'exists and cannot be read ({err})'
    try:
        with data:
            made = {key: (str(data[key]) if key != 'WAVE' else np.asarray(data[key]))
                    for key in ('SOURCE', 'INCOSUM', 'CONFIG', 'LBGNET', 'WAVE')
                    if key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:    # a damaged member
        return f'exists and cannot be read ({err})'
    if 'INCOSUM' not in made:
        return 'exists, written without the INCOSUM fingerprint of its coadd'
    if os.path.basename(made.get('SOURCE', '')) != os.path.basename(coadd):
        return f'exists, gridded from another coadd ({made.get("SOURCE")})'
    if made['INCOSUM'] != header_fingerprint(coadd):
        return f'exists, gridded from another version of {os.path.basename(coadd)} (INCOSUM differs)'
    if (os.path.basename(made.get('CONFIG', '')) != os.path.basename(str(config.source))
            or not np.array_equal(made.get('WAVE'), config.grid.centers)):
        return f'exists, gridded with another configuration ({made.get("CONFIG")})'
    if made.get('LBGNET') != str(__version__):
        return f'exists, written by lbgnet {made.get("LBGNET")} (this is {__version__})'
    return None


def write_arrays(output, X, info, path, config, fingerprint):
    """Save the gridded coadd `path` to `output` (an uncompressed ``.npz``, written under a
    temporary name and renamed; the name is kept as given), with the `fingerprint` of its
    headers taken before it was read (``INCOSUM``).

    Raises
    ------
    OSError
        When it cannot be written.
    """
    # native int64 whatever the FIBERMAP's byte order (torch refuses others)
    tid = np.asarray(info.targetid if info.targetid is not None else np.full(X.shape[0], -1),
                     dtype=np.int64)
    if info.targetid is None:
        get_logger().warning('%s: no FIBERMAP, so no TARGETIDs: written as -1 (rows in file '
                             'order)', path)
    # through a file handle: np.savez would add ".npz" to a name without it, and the
    # rename of the temporary file would then miss it
    with atomic_path(output) as tmp, open(tmp, 'wb') as fh:
        np.savez(fh, X=X, TARGETID=tid, EMPTY=info.empty, WAVE=config.grid.centers,
                 INCOSUM=np.asarray(fingerprint), **npz_extras(info, path, config))


def grid_file(path, output, config, overwrite=False):
    """Grid one coadd, summarise it and write `output` (None: no output).

    Returns
    -------
    str
        ``'done'``, ``'kept'`` (an `output` of an earlier run kept: :func:`kept_reason`) or
        ``'failed'`` (logged in one line; a traceback only for an unexpected error).
    """
    log = get_logger()
    if output is not None and special_file(output):      # reading it could block (a pipe)
        log.error('%s: %s', output, NOT_A_REGULAR_FILE)
        return 'failed'
    if output is not None and not overwrite and os.path.lexists(output):
        try:
            reason = kept_reason(output, path, config)
        except InputFileError as err:         # the coadd is gone or damaged
            log.error('%s', err)
            return 'failed'
        if reason is None:
            log.info('%s: kept (gridded from %s with this configuration by an earlier run)',
                     output, os.path.basename(path))
            return 'kept'
        log.error('%s: %s; use --overwrite to replace it', output, reason)
        return 'failed'
    from ..io.fitsutil import header_fingerprint
    try:
        # first: a coadd replaced while it is read leaves a fingerprint that differs
        fingerprint = header_fingerprint(path) if output is not None else ''
        X, info = load_coadd_grid(path, config)
    except InputFileError as err:
        log.error('%s', err)
        return 'failed'
    except Exception as err:   # noqa: BLE001 -- one bad file must not stop the others
        raise_if_terminated()
        log.error('%s: unexpected %s: %s\n%s', path, type(err).__name__, err,
                  traceback.format_exc())
        return 'failed'
    summarise(path, X, info)
    if output is None:
        return 'done'
    try:
        write_arrays(output, X, info, path, config, fingerprint)
    except OSError as err:
        raise_if_terminated()
        log.error('%s: cannot write (%s)', output, err.strerror or err)
        return 'failed'
    log.info('wrote %s', output)
    return 'done'


def main(args=None, comm=None):
    """Run ``desi_lbg_preprocess``; return 0 when every file succeeded, else 1.

    With ``--mpi`` (or a `comm`), the files are shared among the ranks (largest first,
    :func:`lbgnet.parallel.split_work`), each writing its own into ``--outdir``; every
    rank returns the status of the whole run, and a rank that fails unexpectedly or is
    stopped by a signal aborts them all (:func:`lbgnet.parallel.abort_all_on_failure`).
    Started by an MPI launcher without ``--mpi`` (and without `comm`), it refuses to run:
    every process would grid and write every file.
    """
    if not isinstance(args, argparse.Namespace):
        args = parse(args)
    return run_command(comm, args.mpi, run, args, 'grid and write the same files')


def run(args, comm=None):
    """The work of :func:`main` on each rank; its return status."""
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    log = get_logger() if rank == 0 else get_logger('CRITICAL')   # inputs and summary: once
    # rank 0 lists the files (and their sizes) for every rank: one list for all (a pattern
    # could match other files a moment later), and one stat per file, not one per rank
    found = None
    if rank == 0:
        found = expand_coadds(args.coadd or ())
        found += ([os.path.getsize(p) if os.path.isfile(p) else 0 for p in found[0]],)
    paths, unmatched, sizes = found if comm is None else comm.bcast(found, root=0)
    with run_wide():                    # the run's inputs: 'run: ...', not 'rank 0: ...'
        for pattern in unmatched:       # reported, as the afterburner does; the rest are run
            log.error('%s: matched no coadd file', pattern)
        if args.output and args.coadd and len(paths) != 1:
            log.error('--output needs exactly one coadd file; --coadd %s gives %d',
                      ' '.join(args.coadd), len(paths))
            return 1
    problem = None
    # the directories --outdir makes: removed again when the run writes nothing
    created = ([] if args.outdir is None or rank != 0
               else missing_directories([os.path.join(args.outdir, 'x')]))
    try:
        config = load_config(args.config)
        if args.output:
            check_output(args.output, args.overwrite, paths)
        if args.outdir is not None:
            outputs = input_array_paths(paths, args.outdir)
            check_outdir(args.outdir, name=f'--outdir {args.outdir}')
    except (ConfigError, OutputFileError, ValueError) as err:
        problem = ('--output ' if isinstance(err, OutputFileError) and args.output
                   else '') + str(err)
    if args.outdir is not None:     # one look (rank 0's) for all: the run's failure, not a rank's
        def no_input_overwritten():
            if problem is None:          # else the outputs may not be known
                check_not_inputs(outputs, paths)
        clash = problem_on_rank_zero(comm, no_input_overwritten, OutputFileError)  # every rank
        problem = problem or clash
    if problem is None and rank == 0 and (args.outdir is not None or args.output):
        # temporaries of a run killed outright: before any rank writes (they all wait for
        # stop_if_any_failed below), one listing per output directory
        with run_wide():
            remove_leftovers(outputs if args.outdir is not None else [args.output])
    if stop_if_any_failed(comm, problem, log):
        remove_empty(created)
        return 1
    with tempfile.TemporaryDirectory() as tmpdir:
        if args.example:
            wave, flux, ivar, _ = example_spectra(config, 8, np.random.default_rng(args.seed))
            nspec = flux['b'].shape[0]
            paths = [os.path.join(tmpdir, 'coadd-example.fits')]
            write_coadd(paths[0], wave, flux, ivar, minimal_fibermap(np.arange(nspec) + 1000))
            log.info('wrote example coadd %s', paths[0])
            sizes = [os.path.getsize(paths[0])]
            if args.outdir is not None:
                outputs = input_array_paths(paths, args.outdir)
        if args.outdir is None:
            outputs = [args.output or None] * len(paths)
        mine = split_work(list(range(len(paths))), size, rank, weights=sizes)
        counts = {'done': 0, 'kept': 0, 'failed': 0}
        # rank 0's own share, in files (with --outdir: a run over many files)
        progress = (Progress(len(mine), unit='files gridded (this rank)' if size > 1 else
                             'files gridded', min_interval=10.0)
                    if rank == 0 and args.outdir is not None else None)
        for i in mine:
            counts[grid_file(paths[i], outputs[i], config, args.overwrite)] += 1
            if progress is not None:
                progress.update()
    if comm is not None:
        counts = {key: comm.allreduce(value) for key, value in counts.items()}
    if args.outdir is not None:
        # a pattern that matched nothing is a failed input, as in the afterburner's summary
        with run_wide():
            log.info('%d of %d file(s) written in %s, %d kept from an earlier run, '
                     '%d failure(s)', counts['done'], len(paths), args.outdir, counts['kept'],
                     counts['failed'] + len(unmatched))
        if not counts['done'] and not counts['kept']:
            remove_empty(created)
    return 1 if counts['failed'] or unmatched else 0
