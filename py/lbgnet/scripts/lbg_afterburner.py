"""
lbgnet.scripts.lbg_afterburner
==============================

``desi_lbg_afterburner``: run the LBG line finder on DESI coadds and write, per coadd,
an ``LBG_CNN`` catalogue in Redrock TARGETID order and a Redrock priors file;
optionally rerun Redrock on the selected targets with those priors.  Many files can be
processed in one job, spread over MPI ranks (``--mpi``).
"""
import argparse
import os
import time
import traceback
from dataclasses import dataclass

import numpy as np
from desiutil.log import get_logger

from ..afterburner import (DEFAULT_CHUNK, RerunSetup, catalog_header, default_template_path,
                           node_threads, predict_coadd, rerun_into, set_tensorflow_threads,
                           set_threads, templates_sha256)
from ..bitmask import DESI_CAMERAS
from ..catalog import assemble_catalog, match_targetids
from ..io import read_redrock
from ..io.atomic import raise_if_terminated
from ..io.catalog import (IS_A_DIRECTORY, OutputFileError, check_creatable, check_writable,
                          read_catalog, source_revision, write_outputs)
from ..io.coadd import check_grid_overlap, read_layout
from ..io.fitsutil import (REDROCK_FINGERPRINT_COLUMNS, check_input_path, header_fingerprint,
                           open_file_fingerprint, open_fits)
from ..io.discover import FileJob, expand_coadds, find_coadds, plan_jobs, redrock_path
from ..io.errors import InputFileError
from ..io.priors import priors_table
from ..modelspec import architecture
from ..network import (DEFAULT_BATCH, ENGINES, check_model_file, default_model_path,
                       load_network, training_zrange)
from ..npforward import BATCH
from ..parallel import RankZeroParser, run_command, split_work, stop_if_any_failed
from ..priors import PRIOR_FUNCTION, select_priors
from ..ranklog import run_wide
from ..redrock_rerun import (RerunError, check_rerunnable, template_files, template_zrange,
                              zrange_coverage)
from ..resume import run_settings, stale_reason
from ..tflog import KerasBackendError, import_tensorflow
from .refine_options import add_refine_arguments, check_refine_arguments, make_refiner

#: Failures reported as one line (anything else also gets its traceback logged).
EXPECTED_ERRORS = (InputFileError, OutputFileError, RerunError)


def parse(options=None):
    """Parse the command line of ``desi_lbg_afterburner``."""
    parser = RankZeroParser(
        description='Find Lyman Break Galaxies in DESI coadds with the lbgnet CNN; write an '
                    'LBG_CNN catalogue (Redrock TARGETID order) and Redrock priors per coadd.')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--coadd', nargs='+', metavar='COADD', help='coadd file(s) or glob pattern(s)')
    src.add_argument('--input-dir', help='reduction directory searched for coadd-*.fits '
                     '(healpix/ and tiles/ layouts)')
    src.add_argument('--example', action='store_true',
                     help='simulate two small mock files in a temporary directory (kept under '
                     '--outdir when given, DIR/mock and DIR/out remade on every run), run on '
                     'them and compare with the truth')
    parser.add_argument('--redrock', help='Redrock file of a single --coadd [coadd-X → redrock-X]')
    parser.add_argument('--output', help='output catalogue of a single --coadd '
                        '[lbg_cnn-X.fits beside the coadd or under --outdir]')
    parser.add_argument('--priors', help='output priors file of a single --coadd '
                        '[priors_lbg-X.fits beside the output]')
    parser.add_argument('--outdir', help='output directory: with --input-dir, a tree mirroring the '
                        'input tree; with --coadd, the outputs of all coadds directly in it '
                        '[beside the inputs]')
    parser.add_argument('--model', help='model file [the pretrained model shipped with lbgnet]')
    parser.add_argument('--c-thresh', type=float, help='line confidence threshold [from the model]')
    parser.add_argument('--n-thresh', type=int, help='lines above --c-thresh for IS_LBG [from the model]')
    parser.add_argument('--rerun-redrock', action='store_true',
                        help='rerun Redrock on IS_LBG targets with the CNN priors')
    parser.add_argument('--templates', nargs='+', help='Redrock template file(s)/directory for '
                        '--rerun-redrock [the LBG template shipped with lbgnet]')
    add_refine_arguments(parser)
    parser.add_argument('--overwrite', action='store_true',
                        help='redo files whose outputs exist; replace an existing --output/--priors')
    parser.add_argument('--chunk-size', type=int, default=DEFAULT_CHUNK,
                        help='spectra read and predicted at once [%(default)s]')
    parser.add_argument('--engine', choices=ENGINES, default=ENGINES[0],
                        help='forward pass of a line finder: numpy (weights read without '
                        'TensorFlow, which is not imported: a faster start and less memory per '
                        'rank; outputs independent of --threads) or keras (TensorFlow); direct '
                        'and hybrid networks always run in Keras [%(default)s]')
    parser.add_argument('--batch-size', type=int,
                        help=f'spectra per forward pass of the network [{BATCH} with the numpy '
                        f'engine, {DEFAULT_BATCH} with keras]')
    parser.add_argument('--threads', type=int, help='CPU threads of the network and of numpy\'s '
                        'BLAS per rank [the cores available to the rank, shared with the ranks '
                        'bound to the same cores]')
    parser.add_argument('--mpi', action='store_true', help='spread files over MPI ranks')
    args = parser.parse_args(options)
    single = (args.coadd is not None and len(args.coadd) == 1
              and (not any(c in args.coadd[0] for c in '*?[') or os.path.exists(args.coadd[0])))
    for opt in ('redrock', 'output', 'priors'):
        if getattr(args, opt) is not None and not single:
            parser.error(f'--{opt} needs exactly one --coadd file (no pattern, no --input-dir)')
    if args.example and (args.mpi or args.rerun_redrock):
        parser.error('--example runs alone (no --mpi or --rerun-redrock; --outdir DIR keeps '
                     'its files)')
    if args.output is not None and args.outdir is not None:
        parser.error('give --output or --outdir, not both')
    if args.templates and not args.rerun_redrock:
        parser.error('--templates only makes sense with --rerun-redrock')
    check_refine_arguments(parser, args)
    if args.threads is not None and args.threads < 1:
        parser.error('--threads must be >= 1')
    if args.chunk_size < 1 or (args.batch_size is not None and args.batch_size < 1):
        parser.error('--chunk-size and --batch-size must be >= 1')
    if args.c_thresh is not None and not 0.0 <= args.c_thresh <= 1.0:
        parser.error('--c-thresh must be in [0, 1]')
    if args.n_thresh is not None and args.n_thresh < 1:
        parser.error('--n-thresh must be >= 1')
    return args


@dataclass
class Outcome:
    """What happened to one file: status is 'done', 'skipped' or 'failed'."""

    coadd: str
    status: str
    reason: str = ''
    nspec: int = 0
    nlbg: int = 0
    seconds: float = 0.0
    rank: int = 0
    #: Failed before any rank processed it: by the check of its existing outputs
    #: (:func:`check_skipped`) or by :func:`check_job` before the model was loaded.
    unprocessed: bool = False
    #: Skipped, its existing catalogue made from a coadd of the same name at this other path.
    elsewhere: str = ''
    #: Skipped, its existing catalogue written by this other lbgnet revision (``LBGGIT``).
    revision: str = ''


def plan(args):
    """File jobs of this run, and the inputs that failed before any file: ``'WHAT: why'``
    for patterns that matched nothing and directories of the tree that could not be listed.

    Raises
    ------
    InputFileError
        If ``--input-dir`` does not exist, or ``--output`` / ``--priors`` would overwrite an
        input or each other, or (without ``--overwrite``) an existing file given by them
        that is not half of this run's complete catalogue + priors pair (such a pair is
        skipped), or, with one of them given, the other output's default name when it is
        half of another complete pair.
    """
    if args.input_dir is not None:
        unreadable = []               # failed inputs, the rest of the tree is processed
        coadds = find_coadds(args.input_dir, unreadable)
        unmatched = [f'{path}: {reason}' for path, reason in unreadable]
        if not coadds and not unreadable:
            unmatched.append(os.path.join(args.input_dir, '**/coadd-*.fits: matched no coadd file'))
    else:
        coadds, unmatched = expand_coadds(args.coadd)
        unmatched = [f'{pattern}: matched no coadd file' for pattern in unmatched]
    jobs = plan_jobs(coadds, root=args.input_dir, outdir=args.outdir)
    if len(jobs) == 1 and args.input_dir is None:
        job = jobs[0]
        output = args.output or job.output
        priors = args.priors or os.path.join(os.path.dirname(output),
                                             os.path.basename(job.priors))
        jobs = [FileJob(job.coadd, args.redrock or job.redrock, output, priors, job.size)]
        # realpath: an input reached through a symbolic link is still an input
        inputs = {os.path.realpath(p) for p in (jobs[0].coadd, jobs[0].redrock) if p}
        if os.path.realpath(output) == os.path.realpath(priors):
            raise InputFileError(output, 'given as both the catalogue and the priors output')
        if compression_twin(os.path.realpath(output)) == os.path.realpath(priors):
            raise InputFileError(priors, f'the priors output differs from the catalogue '
                                 f'{output} only by its compression: name it otherwise')
        for out in (output, priors):
            if os.path.realpath(out) in inputs:
                raise InputFileError(out, 'is an input file; refusing to overwrite it')
        for given in (args.output, args.priors):
            if given is not None and os.path.isdir(given):
                raise InputFileError(given, IS_A_DIRECTORY)
        # a named output that exists is refused unless it is half of this run's complete
        # pair; so is the other output's default name when it is half of another complete
        # pair (--priors P beside an earlier run's lbg_cnn-X.fits + priors_lbg-X.fits
        # replaced that catalogue, out of step with its priors), while a lone half an
        # interrupted run left is redone, as without --output/--priors
        if not args.overwrite and not outputs_exist(jobs[0]):
            for out, given, option, mate in (
                    (output, args.output, '--output', os.path.basename(job.priors)),
                    (priors, args.priors, '--priors', os.path.basename(job.output))):
                if not os.path.exists(out):
                    continue
                if given is not None:
                    raise InputFileError(out, 'exists; refusing to overwrite it (use '
                                         '--overwrite)')
                mate = os.path.join(os.path.dirname(out), mate)
                other = args.priors if option == '--output' else args.output
                if (other is not None and os.path.exists(mate)
                        and os.path.realpath(mate) != os.path.realpath(other)):
                    raise InputFileError(out, f'exists, with {os.path.basename(mate)} beside '
                                         'it (an earlier run\'s pair); refusing to overwrite '
                                         f'it (use --overwrite, or name this run\'s '
                                         f'{option[2:]} output with {option})')
    return jobs, unmatched


def outputs_exist(job):
    """True when both outputs of `job` exist, i.e. the file was done earlier.

    The catalogue is renamed last, so a catalogue without its priors file means that the
    priors file was removed since: the file is then redone, not skipped.
    """
    return os.path.isfile(job.output) and os.path.isfile(job.priors)


def run_thresholds(args, config):
    """``(c_thresh, n_thresh)`` of this run: the options, else the model's own."""
    return (config.selection.c_thresh if args.c_thresh is None else args.c_thresh,
            config.selection.n_thresh if args.n_thresh is None else args.n_thresh)


def process_one(job, network, args, rerun=None, refiner=None):
    """Read → preprocess → predict → post-process → catalogue → write, for one coadd.

    Parameters
    ----------
    job : lbgnet.io.discover.FileJob
    network : lbgnet.network.Network
    args : argparse.Namespace
        Thresholds and chunk size.
    rerun : RerunSetup, optional
        Redrock templates for ``--rerun-redrock``.
    refiner : lbgnet.refine.Refiner, optional
        Template refinement (None with ``--no-refine``).

    Returns
    -------
    (int, int)
        Number of catalogue rows and of IS_LBG targets.
    """
    log = get_logger()
    cfg = network.config
    c_thresh, n_thresh = run_thresholds(args, cfg)
    check_job(job)                    # again: a file can go after setup's check
    if rerun is not None:
        check_rerunnable(job.coadd)   # from the HDU names: fail before the network runs
    with open_fits(job.coadd) as fx:       # the layout only: the spectra are read once, below
        layout = read_layout(fx, job.coadd)
        coadd_fingerprint = open_file_fingerprint(fx, job.coadd)
    if layout.fibermap is None:
        raise InputFileError(job.coadd, 'no FIBERMAP HDU, so no TARGETID for the catalogue')
    if 'TARGETID' not in layout.fibermap.colnames:
        raise InputFileError(job.coadd, 'FIBERMAP has no TARGETID column')
    check_grid_overlap(layout, cfg.grid)
    warn_missing_cameras(layout, job.coadd)
    redrock = read_redrock(job.redrock)
    fingerprints = (coadd_fingerprint,
                    header_fingerprint(job.redrock, REDROCK_FINGERPRINT_COLUMNS))
    idx = match_targetids(redrock.targetid, layout.fibermap['TARGETID'], job.redrock, job.coadd)
    pred = predict_coadd(job.coadd, network, c_thresh, n_thresh, args.chunk_size,
                         args.batch_size, refiner)
    catalog = assemble_catalog(redrock.redshifts, idx, pred.layout.fibermap, pred.results,
                               pred.flags, cfg.lines.names, tsnr2_lrg=pred.layout.tsnr2_lrg,
                               line_waves=cfg.lines.wave_array)
    tid, zprior, sigma = select_priors(catalog, cfg)
    if rerun is not None:
        rerun_into(catalog, job.coadd, select_priors(catalog, cfg, rerun.zrange), rerun.files)
    header = catalog_header(job, network, c_thresh, n_thresh, pred.layout, rerun, refiner,
                            fingerprints)
    # both or neither: the catalogue, renamed last, marks the file as done
    write_outputs([(job.output, catalog, 'LBG_CNN'),
                   (job.priors, priors_table(tid, zprior, sigma, PRIOR_FUNCTION), 'PRIORS')],
                  header)
    nlbg = int(np.count_nonzero(catalog['IS_LBG']))
    nspec = int(pred.layout.nspec)
    rows = '' if len(catalog) == nspec else f' ({len(catalog)} catalogue rows)'
    log.info('%s: %d spectra%s, %d LBG candidates -> %s', job.coadd, nspec, rows, nlbg,
             job.output)
    return nspec, nlbg


def compression_twin(path):
    """`path` with ``.gz`` removed, or added: the same catalogue under the other
    compression."""
    return path[:-3] if path.endswith('.gz') else path + '.gz'


def check_job(job):
    """The checks of one file that read nothing: the coadd can be opened, a Redrock file
    is named, both outputs can be written.  Rank 0 runs them on every file before the model is loaded
    (:func:`setup`: a run whose files all fail them loads no model), and
    :func:`process_one` again.

    Raises
    ------
    InputFileError
        If the coadd is missing, a directory or unreadable, or no Redrock file name could
        be derived from the coadd's (whether that file exists is checked once the coadd
        is read: a coadd without FIBERMAP says that first).
    OutputFileError
        If an output cannot be written (:func:`lbgnet.io.catalog.check_writable`; no
        directory is made), or the catalogue of this coadd under the other compression
        exists (the coadd was gzipped or gunzipped since: desi_lbg_zcatalog would count
        both).
    """
    if os.path.isdir(job.coadd):
        raise InputFileError(job.coadd, 'is a directory, not a coadd file (--input-dir '
                             'processes the coadds below a directory)')
    check_input_path(job.coadd)
    if not job.redrock:               # plan_jobs could not derive it from the coadd's name
        redrock_path(job.coadd)       # raises the InputFileError that says so
    check_writable(job.output, create=False)     # directories are made by the writing
    check_writable(job.priors, create=False)
    twin = compression_twin(job.output)
    if os.path.exists(twin):
        how = 'compressed' if twin.endswith('.gz') else 'uncompressed'
        raise OutputFileError(job.output, f'{os.path.basename(twin)} exists beside it, the '
                              f'catalogue of this coadd {how} (desi_lbg_zcatalog refuses the '
                              'pair): remove it and its priors file to write this one')


def check_jobs(jobs):
    """Split `jobs` by :func:`check_job`: ``(passed, outcomes)``, the outcomes 'failed'
    (each error logged once)."""
    passed, failed = [], []
    for job in jobs:
        try:
            check_job(job)
        except EXPECTED_ERRORS as err:
            get_logger().error('%s', err)
            failed.append(Outcome(job.coadd, 'failed', str(err), unprocessed=True))
        else:
            passed.append(job)
    return passed, failed


def run_files(jobs, network, args, rerun=None, refiner=None):
    """Process `jobs` one after the other; return a list of :class:`Outcome`."""
    log = get_logger()
    outcomes = []
    for job in jobs:
        raise_if_terminated()     # a signal a library swallowed whole stops before the next file
        t0 = time.time()
        if outputs_exist(job) and not args.overwrite:
            log.info('%s: output %s exists, skipped (use --overwrite)', job.coadd, job.output)
            outcomes.append(Outcome(job.coadd, 'skipped'))
            continue
        try:
            nspec, nlbg = process_one(job, network, args, rerun, refiner)
        except EXPECTED_ERRORS as err:
            raise_if_terminated()     # a library may turn the signal's exception into another
            log.error('%s', err)
            outcomes.append(Outcome(job.coadd, 'failed', str(err), seconds=time.time() - t0))
        except Exception as err:  # noqa: BLE001 -- one bad file must not stop the others
            raise_if_terminated()
            log.error('%s: unexpected %s: %s\n%s', job.coadd, type(err).__name__, err,
                      traceback.format_exc())
            outcomes.append(Outcome(job.coadd, 'failed', f'{type(err).__name__}: {err}',
                                    seconds=time.time() - t0))
        else:
            outcomes.append(Outcome(job.coadd, 'done', '', nspec, nlbg, time.time() - t0))
    return outcomes


def check_skipped(jobs, settings):
    """Outcomes of files whose outputs exist: 'skipped' when their catalogue may be kept
    (:func:`lbgnet.resume.stale_reason`), 'failed' with the reason otherwise.  Catalogues
    made from a coadd of the same name at another path are kept, the path in
    ``Outcome.elsewhere`` (counted in one warning of :func:`summarise`)."""
    log = get_logger()
    outcomes = []
    current = source_revision()      # None outside a git checkout: nothing to compare
    for job in jobs:
        reason, elsewhere, made_by = stale_reason(job, settings)
        if reason is None:
            log.info('%s: output %s exists, skipped (use --overwrite)', job.coadd, job.output)
            other = bool(current and made_by and made_by != current)
            outcomes.append(Outcome(job.coadd, 'skipped', elsewhere=elsewhere or '',
                                    revision=made_by if other else ''))
        else:
            log.error('%s', reason)
            outcomes.append(Outcome(job.coadd, 'failed', reason, unprocessed=True))
    return outcomes


def start_tensorflow(nthreads=None):
    """Import TensorFlow (its log level set) and, given `nthreads`, size its thread pools."""
    import_tensorflow()
    if nthreads:
        set_tensorflow_threads(nthreads)


def setup(args, nthreads=None):
    """Rank-0 work before any file: plan the jobs, check the model, options and templates,
    and load the model when there is work.

    Returns
    -------
    dict
        ``jobs`` (those to do), ``failed`` (outcomes of the files that failed
        :func:`check_job`), ``skipped`` (the jobs whose catalogue and priors file
        both exist, without ``--overwrite``), ``settings``
        (:func:`lbgnet.resume.run_settings` their catalogue headers must agree with; None
        without skipped jobs), ``unmatched`` (inputs failed before any file, ``'WHAT: why'``), ``model`` (path), ``rerun``
        (:class:`RerunSetup` or None), ``network`` (the loaded model; None when no job is
        left, and TensorFlow is then not imported: every option is checked from the model
        description), ``keras`` (whether the network runs in Keras: ``--engine keras``, or
        a direct or hybrid network; otherwise neither Keras nor TensorFlow is imported),
        ``refiner`` (:func:`lbgnet.scripts.refine_options.make_refiner`) and
        ``error`` (one line, or None).
    """
    out = dict(jobs=[], unmatched=[], model=None, rerun=None, error=None, network=None,
               refiner=None, skipped=[], settings=None, failed=[], keras=True)
    try:
        out['jobs'], out['unmatched'] = plan(args)
        out['model'] = args.model or default_model_path()
        # every option is checked without TensorFlow, also when no file is left to do
        description, config = check_model_file(out['model'])
        out['keras'] = args.engine == 'keras' or architecture(config) != 'linefinder'
        metadata = dict(description.get('metadata') or {})
        nlines = len(config.lines)
        if args.n_thresh is not None and args.n_thresh > nlines:
            raise InputFileError(out['model'], f'--n-thresh {args.n_thresh} exceeds the {nlines} '
                                 'lines of this model')
        out['refiner'] = make_refiner(args, config, training_zrange(config, metadata), metadata)
        warn_uncalibrated(out['model'], metadata, out['refiner'] is not None)
        warn_checkpoint(out['model'], metadata, args)
        if args.rerun_redrock:
            files = template_files(args.templates or [default_template_path()])
            out['rerun'] = RerunSetup(files, template_zrange(files), templates_sha256(files))
            check_template_coverage(out['rerun'], training_zrange(config, metadata))
        if not args.overwrite:        # decided once, before the split, so ranks share the rest
            done = [outputs_exist(j) for j in out['jobs']]
            out['skipped'] = [j for j, d in zip(out['jobs'], done) if d]
            out['jobs'] = [j for j, d in zip(out['jobs'], done) if not d]
            if out['skipped']:         # what their headers must say (checked by every rank)
                out['settings'] = run_settings(
                    out['skipped'][0], out['model'], description.get('weights_sha256'), config,
                    training_zrange(config, metadata), *run_thresholds(args, config),
                    out['rerun'], out['refiner'])
        if out['jobs'] and args.outdir is not None:
            # files to write: one check of --outdir for the run, before TensorFlow
            check_creatable(args.outdir, name=f'--outdir {args.outdir}')
        out['jobs'], out['failed'] = check_jobs(out['jobs'])
        remove_leftover_temporaries(out['jobs'])
        if out['jobs']:           # a resumed run with every output there: no TensorFlow
            if out['keras']:
                start_tensorflow(nthreads)
            out['network'] = load_network(out['model'], args.engine, nthreads or 1)
    except (InputFileError, OutputFileError, ValueError) as err:
        out['error'] = str(err)
    except Exception as err:  # noqa: BLE001 -- the other ranks wait for this answer
        raise_if_terminated()
        get_logger().error('setup: unexpected %s: %s\n%s', type(err).__name__, err,
                           traceback.format_exc())
        out['error'] = f'setup failed: {type(err).__name__}: {err}'
    return out


def remove_leftover_temporaries(jobs):
    """Remove, once for the run (rank 0, one listing per output directory), the temporaries
    that a run killed outright (``kill -9``, Slurm's SIGKILL, a lost node) left beside the
    outputs of the files this run writes, when their process has ended on this host; warn
    about the others (another host's or a live process's: another run may still be writing
    them).  :func:`lbgnet.io.atomic.remove_leftovers`."""
    from ..io.atomic import remove_leftovers
    remove_leftovers([path for job in jobs for path in (job.output, job.priors)])


def warn_missing_cameras(layout, path):
    """Warn once per file when a DESI camera has no HDU at all: DESI coadds hold all three
    (a dead camera as ivar 0), so a missing one is a reduced or damaged file (a copy cut
    short exactly at an HDU boundary reads as a valid smaller file); its spectra are
    still processed, each flagged MISSING_CAMERA."""
    present = [c for c in DESI_CAMERAS if any(c in band for band in layout.bands)]
    missing = [c for c in DESI_CAMERAS if c not in present]
    if missing and present:
        get_logger().warning('%s: no %s camera in the file (%s only): every spectrum is flagged '
                             'MISSING_CAMERA', path, ', '.join(missing), ', '.join(present))


def warn_uncalibrated(model, metadata, refined, holder='the catalogue holds'):
    """Warn when the model's training left ``ZERR_LBG`` (or, refining, ``ZERR_TPL``)
    uncalibrated: the catalogue then holds the raw errors, several times too small
    (header ``ZERRCAL``/``ZTPLCAL`` = F); `holder` says what holds them
    (``desi_lbg_evaluate``: its error statistics and pulls)."""
    from ..zerr import calibration_status
    status = calibration_status(metadata)
    for key in ('ZERR_LBG', 'ZERR_TPL') if refined else ('ZERR_LBG',):
        if status[key] is False:
            reason = ((metadata.get('error_calibration') or {}).get(key) or {}).get('reason', '')
            get_logger().warning('%s: its training left %s uncalibrated%s: %s the raw error, '
                                 'several times too small (benchmarks/calibrate_errors.py '
                                 '--write fits it on a validation set)',
                                 model, key, f' ({reason})' if reason else '', holder)


def warn_checkpoint(model, metadata, args):
    """Warn when the model is a training checkpoint (:func:`lbgnet.train.save_checkpoint`,
    e.g. of a killed run) and the selection thresholds are not both given: its thresholds
    are its configuration's, not chosen on a validation set as a finished run's are."""
    record = metadata.get('checkpoint')
    if not isinstance(record, dict) or (args.c_thresh is not None and args.n_thresh is not None):
        return
    get_logger().warning('%s: a training checkpoint (epoch %s, %s %s), not a finished model: '
                         'its selection thresholds are its configuration\'s, not chosen on a '
                         'validation set (--c-thresh and --n-thresh choose them)', model,
                         record.get('epoch'), record.get('monitor'), record.get('value'))


def summarise(outcomes, unmatched, size=1):
    """Log the end-of-run summary (rank 0); return the number of failures.

    The files per rank count the files a rank processed (done or failed), not those
    whose outputs existed (rank 0 left those out before the split; the ranks then checked
    their headers, a share each: kept ones are 'skipped', refused ones failed unprocessed).
    Kept catalogues made from a coadd of the same name at another path are counted in one
    warning for the whole run.
    """
    log = get_logger()
    if size > 1:
        per_rank = np.bincount(np.array([o.rank for o in outcomes
                                         if o.status != 'skipped' and not o.unprocessed],
                                        dtype=int), minlength=size)
        log.info('files per rank: %s', ', '.join(str(n) for n in per_rank))
    done = [o for o in outcomes if o.status == 'done']
    failed = [o for o in outcomes if o.status == 'failed']
    moved = [o.elsewhere for o in outcomes if o.elsewhere]
    if moved:
        log.warning('%d of the %d existing catalogues kept were made from a coadd of the same '
                    'name at another path (e.g. %s); --overwrite redoes them', len(moved),
                    sum(o.status == 'skipped' for o in outcomes), moved[0])
    revisions = sorted({o.revision for o in outcomes if o.revision})
    if revisions:           # same model and settings, but code of another revision
        log.warning('%d of the existing catalogues kept were written by another lbgnet '
                    'revision (%s; this run: %s); --overwrite redoes them',
                    sum(bool(o.revision) for o in outcomes), ', '.join(revisions[:3]),
                    source_revision())
    nspec = sum(o.nspec for o in done)
    secs = sum(o.seconds for o in done)
    log.info('%d %s done (%d spectra, %d LBG candidates, %.1f s of file processing summed '
             'over the files), %d skipped, %d failed',
             len(done), 'file' if len(done) == 1 else 'files', nspec, sum(o.nlbg for o in done), secs,
             sum(o.status == 'skipped' for o in outcomes), len(failed) + len(unmatched))
    for problem in unmatched:
        log.error('FAILED %s', problem)
    for o in failed:
        reason = o.reason.splitlines()[0] if o.reason else ''
        if reason.startswith(o.coadd + ': '):       # the error already names the coadd
            reason = reason[len(o.coadd) + 2:]
        log.error('FAILED %s: %s', o.coadd, reason)
    return len(failed) + len(unmatched)


def run_example(args, comm=None):
    """``--example``: mock files (``desi_lbg_mock``) in a temporary directory (or under
    ``--outdir``, kept), run, summarise against the truth."""
    import tempfile
    from astropy.table import vstack
    from ..io.mock import read_truth
    from .lbg_mock import main as mock_main, parse as mock_parse, planned_files
    log = get_logger()
    with tempfile.TemporaryDirectory(prefix='lbgnet-example-') as tmp:
        top = args.outdir or tmp
        mockdir, outdir = os.path.join(top, 'mock'), os.path.join(top, 'out')
        # the example's files in DIR/mock and DIR/out are always remade (the mock is the
        # same for the same seed); only they are run and summarised, whatever else the
        # directories hold (other files made the summary an earlier run's, or failed it)
        mock_args = ['--outdir', mockdir, '--nspec', '400', '--nfiles', '2', '--seed', '1',
                     '--no-resolution', '--overwrite']
        if mock_main(mock_args) != 0:
            return 1
        files = planned_files(mock_parse(mock_args))
        opts = argparse.Namespace(**{**vars(args), 'example': False, 'input_dir': None,
                                     'coadd': [f['coadd'] for f in files], 'outdir': outdir,
                                     'rerun_redrock': False, 'overwrite': True})
        status = main(opts, comm)
        jobs = plan_jobs([f['coadd'] for f in files], outdir=outdir)
        done = [(job.output, f['truth']) for job, f in zip(jobs, files)
                if os.path.exists(job.output)]
        if done:
            cats = vstack([read_catalog(cat)[0] for cat, _ in done],
                          metadata_conflicts='silent')
            truth = vstack([read_truth(path) for _, path in done], metadata_conflicts='silent')
            summarise_example(cats, truth, len(done))
        if args.outdir:
            log.info('example files kept: mock inputs in %s, catalogues in %s', mockdir, outdir)
        else:
            log.info('example files were in %s (removed; --outdir DIR keeps them)', tmp)
    return status


def summarise_example(cat, truth, nfiles=1):
    """Log, per true class, how many objects the network selected, and the LBG redshift errors.

    Parameters
    ----------
    cat : astropy.table.Table
        Afterburner catalogue rows (any order).
    truth : astropy.table.Table
        Mock truth (``TARGETID``, ``CLASS``, ``Z_TRUE``) holding those targets.
    nfiles : int, optional
        Files the rows come from (for the title).
    """
    from ..bitmask import LBGWarnMask
    from ..catalog import lookup
    log = get_logger()
    row = lookup(np.asarray(truth['TARGETID']), np.asarray(cat['TARGETID']))
    cls = np.asarray(truth['CLASS']).astype(str)[row]
    ztrue = np.asarray(truth['Z_TRUE'], dtype=np.float64)[row]
    is_lbg = np.asarray(cat['IS_LBG'], dtype=bool)
    log.info('example result, %d spectra in %d files: true class, objects, selected as LBG '
             '(IS_LBG)', len(cat), nfiles)
    for name in np.unique(cls):
        sel = cls == name
        log.info('  %-6s %4d objects, %4d selected (%.0f%%)', name, sel.sum(),
                 np.count_nonzero(is_lbg[sel]), 100 * np.mean(is_lbg[sel]))
    good = (cls == 'LBG') & is_lbg
    for col in ('Z_LBG', 'Z_TPL'):
        if good.any() and np.isfinite(cat[col][good]).all():
            dz = np.abs(cat[col][good] - ztrue[good]) / (1 + ztrue[good])
            log.info('  selected true LBGs, %s: median |dz|/(1+z) = %.2e, %.0f%% within 0.005',
                     col, np.median(dz), 100 * np.mean(dz < 0.005))
    reliable = good & ((np.asarray(cat['LBG_FLAG']) & LBGWarnMask().SMALL_DELTA_CHI2) == 0)
    if reliable.any() and np.isfinite(cat['Z_TPL'][reliable]).all():
        dz = np.abs(cat['Z_TPL'][reliable] - ztrue[reliable]) / (1 + ztrue[reliable])
        log.info('  %d of the %d without SMALL_DELTA_CHI2, Z_TPL: %.0f%% within 0.005',
                 reliable.sum(), good.sum(), 100 * np.mean(dz < 0.005))


def check_template_coverage(rerun, zrange):
    """Refuse rerun templates that scan none of the model's LBG redshift range (every
    selected target would be flagged RERUN_FAILED, a run reporting success having rerun
    nothing); warn when they cover only part of it.

    Raises
    ------
    InputFileError
        Naming the templates and both ranges.
    """
    covered = zrange_coverage(rerun.zrange, zrange)
    scanned = ', '.join(f'{a:.3g}-{b:.3g}' for a, b in rerun.zrange)
    if covered == 0.0:
        raise InputFileError('--templates', f'the rerun templates scan z {scanned}, none of '
                             f'the model\'s LBG range {zrange[0]:.3g}-{zrange[1]:.3g}: every '
                             'selected target would be RERUN_FAILED (give an LBG or GALAXY '
                             'template)')
    if covered < 1.0:
        get_logger().warning('the rerun templates scan z %s, %.0f%% of the model\'s LBG range '
                             '%.3g-%.3g: selected targets outside them are RERUN_FAILED',
                             scanned, 100 * covered, zrange[0], zrange[1])


def main(args=None, comm=None):
    """Run ``desi_lbg_afterburner``; return 0 only when every file succeeded on every rank.

    Parameters
    ----------
    args : list of str or argparse.Namespace, optional
    comm : mpi4py communicator, optional
        Used as given; with ``--mpi`` and no `comm`, ``MPI.COMM_WORLD``.
    """
    if not isinstance(args, argparse.Namespace):
        args = parse(args)
    # from here on, a failure on one rank aborts every rank
    return run_command(comm, args.mpi, run_all, args, 'run every file')


def run_all(args, comm=None):
    """Run the built-in example, or the files of this rank."""
    if args.example:
        if comm is not None and comm.size > 1:      # as parse refuses --example --mpi
            if comm.rank == 0:
                get_logger().error('--example runs in one process: it was given a '
                                   'communicator of %d ranks', comm.size)
            return 1
        try:
            if args.engine == 'keras':
                start_tensorflow()
        except KerasBackendError as err:
            get_logger().error('%s', err)
            return 1
        return run_example(args, comm)
    return run_ranks(args, comm)


def run_ranks(args, comm=None):
    """The work of :func:`main` on each rank (files split over the ranks of `comm`)."""
    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
    log = get_logger() if rank == 0 else get_logger('CRITICAL')
    nthreads = args.threads or node_threads(comm)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    if args.threads and cores and args.threads > cores:   # once (rank 0's log)
        log.warning('--threads %d exceeds the %d core(s) this process may use: the threads '
                    'will compete for them', args.threads, cores)
    set_threads(nthreads, tensorflow=False)        # TensorFlow's only if a network is loaded
    if rank == 0:
        with run_wide():           # rank 0 plans and checks for every rank: 'run: ...'
            state = setup(args, nthreads)
    else:
        state = None
    network = state.pop('network') if rank == 0 else None
    refiner = state.pop('refiner') if rank == 0 else None
    if comm is not None:
        state = comm.bcast(state, root=0)
    if stop_if_any_failed(comm, state['error'], log):     # rank 0's answer, every rank's:
        return 1                                          # one line, 'every rank: why'
    jobs = state['jobs']
    mine = split_work(jobs, size, rank, weights=[j.size for j in jobs])
    # the headers of the existing outputs are read by every rank, a share each
    kept = check_skipped(split_work(state['skipped'], size, rank), state['settings'])
    try:
        if network is None and mine:      # a rank without files loads nothing
            if state['keras']:
                start_tensorflow(nthreads)
            network = load_network(state['model'], args.engine, nthreads)
            refiner = make_refiner(args, network.config, network.zrange, network.metadata,
                                   warn=False)      # rank 0 warned in setup
        load_error = None
    except Exception as err:  # noqa: BLE001 -- a rank that cannot load must still reach the barrier
        raise_if_terminated()
        load_error = f'rank {rank}: {type(err).__name__}: {err}'
        get_logger().error('rank %d: cannot load the model or the refinement: %s\n%s', rank,
                           err, traceback.format_exc())
    if comm is not None:
        comm.barrier()
    t0 = time.time()
    if load_error is None:
        outcomes = run_files(mine, network, args, state['rerun'], refiner)
    else:
        outcomes = [Outcome(j.coadd, 'failed', load_error) for j in mine]
    if comm is not None:
        comm.barrier()
    wall = time.time() - t0
    outcomes += kept
    if rank == 0:
        outcomes += state['failed']
    for outcome in outcomes:
        outcome.rank = rank
    if comm is not None:
        gathered = comm.gather(outcomes, root=0)
        outcomes = [o for part in gathered for o in part] if rank == 0 else outcomes
    nfail = 0
    if rank == 0:
        with run_wide():           # the whole run's lines: 'run: ...', not 'rank 0: ...'
            nspec = sum(o.nspec for o in outcomes)
            rate = nspec / max(wall, 1e-9)
            log.info('processing: %d spectra in %.2f s on %d rank(s) = %.*f spectra/s (%s)',
                     nspec, wall, size, 0 if rate >= 10 else 2, rate,
                     'model loaded once per rank' if state['jobs'] else
                     'no file to process: no model loaded')
            nfail = summarise(outcomes, state['unmatched'], size)
    if comm is not None:
        nfail = comm.bcast(nfail, root=0)
    return 1 if nfail else 0
