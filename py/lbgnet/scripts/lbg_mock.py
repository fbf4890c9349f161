"""
lbgnet.scripts.lbg_mock
=======================

``desi_lbg_mock``: write DESI-like mock data sets (coadd, Redrock and truth files)
of LBGs and their contaminants with the lbgnet simulator.
"""
import argparse
import glob
import hashlib
import json
import os
import traceback

import numpy as np
from desiutil.log import get_logger

from ..config import ConfigError
from ..io import InputFileError
from ..io.atomic import raise_if_terminated, remove_leftovers
from ..io.catalog import OutputFileError, check_outdir, missing_directories, remove_empty
from ..io.fitsutil import FITS_INT_LIMIT, cfitsio_name_problem
from ..io.mock import mock_filenames, mock_keywords, write_mock
from ..memory import physical_memory
from ..parallel import RankZeroParser, run_command, stop_if_any_failed
from ..progress import Progress
from ..ranklog import run_wide
from ..sim.mock import (DEFAULT_MOCK_CONFIG, MAX_EFFTIME, check_efftime_range, load_mock_setup,
                        make_mock, mock_settings, simulator_hash)
from ..sim.population import CLASSES, RMAG_LIMITS


def parse(options=None):
    """Parse the command line of ``desi_lbg_mock``."""
    parser = RankZeroParser(
        description='Simulate DESI coadd, Redrock and truth files of LBGs and contaminants.')
    parser.add_argument('--outdir', required=True, help='output directory')
    parser.add_argument('--nspec', type=int, required=True, help='number of spectra in total')
    parser.add_argument('--config', default=DEFAULT_MOCK_CONFIG,
                        help='mock configuration (instrument, files, physics) [%(default)s]')
    parser.add_argument('--seed', type=int, default=0,
                        help='random seed in [0, 2**63 - 1] [%(default)s]; give each data '
                             'set its own: file k of two runs with one seed holds the same '
                             'objects when it holds as many spectra, whatever --nspec/--nfiles')
    parser.add_argument('--nfiles', type=int, default=None,
                        help='number of files (healpix pixels) [enough for '
                        'mock.files.max_spectra_per_file per file]')
    parser.add_argument('--classes', nargs='+', choices=CLASSES, default=None,
                        help='simulate only these classes (fractions renormalised) [all]')
    parser.add_argument('--zmin', type=float, default=None,
                        help='minimum LBG redshift (with --zmax) [config]')
    parser.add_argument('--zmax', type=float, default=None,
                        help='maximum LBG redshift (with --zmin) [config]')
    parser.add_argument('--rmag-min', type=float, default=None,
                        help='brightest r AB (with --rmag-max) [config]')
    parser.add_argument('--rmag-max', type=float, default=None,
                        help='faintest r AB (with --rmag-min) [config]')
    parser.add_argument('--efftime-min', type=float, default=None,
                        help='shortest effective exposure time, s (with --efftime-max) '
                        '[config]')
    parser.add_argument('--efftime-max', type=float, default=None,
                        help='longest effective exposure time, s (with --efftime-min; at '
                        f'most {MAX_EFFTIME:g}) [config]')
    parser.add_argument('--lbg-composite', default=None,
                        help='LBG composite spectrum (file or directory) to refine the LBG model')
    parser.add_argument('--rr-template-dir', default=None,
                        help='directory of Redrock QSO/STAR templates to refine those models')
    parser.add_argument('--sky-lines', default=None,
                        help='sky-line spectrum [desispec/data/spec-sky.dat]')
    parser.add_argument('--no-resolution', action='store_true',
                        help='omit the RESOLUTION HDUs (files ~4.6x smaller; Redrock needs them)')
    exist = parser.add_mutually_exclusive_group()
    exist.add_argument('--overwrite', action='store_true', help='replace existing files')
    exist.add_argument('--skip-existing', action='store_true',
                       help='keep the files an earlier run with the same options and '
                       'configuration wrote (to finish an interrupted run)')
    parser.add_argument('--mpi', action='store_true',
                        help='spread the files over MPI ranks (required when started by an '
                        'MPI launcher)')
    args = parser.parse_args(options)
    if not 0 <= args.seed < FITS_INT_LIMIT:       # MOCKSEED: a 64-bit FITS integer card
        parser.error(f'--seed must be in [0, 2**63 - 1] (the MOCKSEED header card is a '
                     f'64-bit integer), got {args.seed}')
    if args.nspec < 1:
        parser.error(f'--nspec must be >= 1, got {args.nspec}')
    if args.classes and len(set(args.classes)) != len(args.classes):
        parser.error(f'--classes names a class twice: {" ".join(args.classes)}')
    if args.nfiles is not None and not 1 <= args.nfiles <= args.nspec:
        parser.error(f'--nfiles must be in [1, nspec], got {args.nfiles}')
    for lo, hi in (('zmin', 'zmax'), ('rmag_min', 'rmag_max'), ('efftime_min', 'efftime_max')):
        if (getattr(args, lo) is None) != (getattr(args, hi) is None):
            parser.error(f'--{lo.replace("_", "-")} and --{hi.replace("_", "-")} go together')
        if getattr(args, lo) is None:
            continue
        if not (np.isfinite(getattr(args, lo)) and np.isfinite(getattr(args, hi))):
            parser.error(f'--{lo.replace("_", "-")} and --{hi.replace("_", "-")} must be finite')
        if not getattr(args, lo) < getattr(args, hi):
            parser.error(f'--{lo.replace("_", "-")} must be below --{hi.replace("_", "-")}')
    if args.rmag_min is not None and not (RMAG_LIMITS[0] <= args.rmag_min
                                          and args.rmag_max <= RMAG_LIMITS[1]):
        parser.error(f'--rmag-min and --rmag-max must lie within r = {RMAG_LIMITS[0]:g}..'
                     f'{RMAG_LIMITS[1]:g}, got {args.rmag_min:g}..{args.rmag_max:g}')
    if args.zmin is not None and args.zmin <= 0:
        parser.error(f'--zmin must be positive (an LBG redshift), got {args.zmin}')
    if args.zmin is not None and args.classes and not {'LBG', 'GALAXY'} & set(args.classes):
        # the LBG range also places the [OII]-as-Lya galaxies (a contaminant-only set of
        # one redshift regime)
        parser.error(f'--zmin/--zmax set the LBG redshifts (and those of the galaxies '
                     f'whose [OII] mimics their Lya), but --classes {" ".join(args.classes)} '
                     'has neither LBG nor GALAXY (they would be ignored, yet recorded in the '
                     'headers)')
    if args.efftime_min is not None and args.efftime_min <= 0:
        parser.error('--efftime-min must be positive')
    if args.efftime_max is not None and args.efftime_max > MAX_EFFTIME:
        parser.error(f'--efftime-max must be at most {MAX_EFFTIME:g} s '
                     f'(~{MAX_EFFTIME / 3600:.0f} h), got {args.efftime_max:g}')
    return args


def population_options(args):
    """Keyword arguments of :func:`lbgnet.sim.mock.make_mock`'s ``population``."""
    out = {}
    if args.classes:
        out['classes'] = list(args.classes)
    if args.zmin is not None:
        out['zrange'] = (args.zmin, args.zmax)
    if args.rmag_min is not None:
        out['rmag_range'] = (args.rmag_min, args.rmag_max)
    if args.efftime_min is not None:
        out['efftime_range'] = (args.efftime_min, args.efftime_max)
    return out


def normalisable_lbg_zmax(simcfg):
    """The highest LBG redshift whose Lyα (1215.67 Å rest) lies inside the normalisation
    filter (``simulation.normalisation``: its red half-transmission edge), above which
    an LBG's r magnitude would be set by the forest-absorbed flux blueward of Lyα.

    Parameters
    ----------
    simcfg : dict
        Simulator configuration.

    Returns
    -------
    float
        4.89 for DECam r.
    """
    from ..sim.igm import LYA
    from ..sim.photometry import filter_grid
    norm = simcfg['simulation']['normalisation']
    wave, weights = filter_grid(str(norm['filter']), float(norm['step']))
    red = float(np.max(wave[weights >= 0.5 * np.max(weights)]))
    return red / LYA - 1.0


def check_population(simcfg, population, n=64):
    """Draw `n` objects of each requested class with the population options, once.

    The simulator checks the options only when it draws a class, so a range it cannot
    serve would otherwise fail in every file.  Drawing `n` objects of each class
    separately (each galaxy subtype has a fraction of 0.15 or more in ``lbgnet-sim.yaml``,
    so all of them are drawn) runs those checks before any file is written.  The drawn objects
    are also normalised to their r magnitude, with the LBG range's two ends among the
    LBGs, so that a range the renderer cannot serve (LBGs so distant that no flux
    reaches the r band) fails here too; and an LBG range beyond
    :func:`normalisable_lbg_zmax` is refused (their r-band flux is forest-absorbed).

    Parameters
    ----------
    simcfg : dict
        Simulator configuration (``MockSetup.simcfg``).
    population : dict
        :func:`population_options` (``efftime_range`` is ignored).
    n : int, optional
        Objects per class [64].

    Raises
    ------
    ValueError
        The simulator's message when it cannot draw a class with these options.
    """
    from ..sim.population import draw_population
    from ..sim.render import build_components, normalisation
    options = {k: v for k, v in population.items() if k != 'efftime_range'}
    classes = options.pop('classes', None) or [
        c for c in CLASSES if float(simcfg['simulation']['class_fractions'].get(c, 0.0)) > 0]
    if 'LBG' in classes and options.get('zrange') is not None:
        zmax = normalisable_lbg_zmax(simcfg)
        if options['zrange'][1] > zmax:
            raise ValueError(f'LBGs above z = {zmax:.2f} have Lya redward of the '
                             f'{simcfg["simulation"]["normalisation"]["filter"]} band (its '
                             'red half-transmission edge): their r magnitude would rest on '
                             'the flux the IGM leaves below Lya, scaling them up by up to '
                             'thousands')
    rng = np.random.default_rng(0)
    for name in classes:
        truth = draw_population(simcfg, n, rng, classes=[name], **options)
        if name == 'LBG' and options.get('zrange') is not None and len(truth) >= 2:
            truth['Z_TRUE'][:2] = options['zrange']
        normalisation(build_components(truth, simcfg, None), truth, simcfg)


def population_flags(args):
    """The population options given on the command line, as text (for error messages)."""
    flags = []
    for name in ('classes', 'zmin', 'zmax', 'rmag_min', 'rmag_max', 'efftime_min', 'efftime_max'):
        value = getattr(args, name)
        if value is not None:
            text = ' '.join(value) if name == 'classes' else f'{value:g}'
            flags.append(f'--{name.replace("_", "-")} {text}')
    return ' '.join(flags) or 'the configuration\'s population'


def run_cards(args, nfiles):
    """Primary-header cards recording the command line a mock file was made with.

    Returns
    -------
    list of (str, object, str)
        MOCKSEED, MOCKNSPC, MOCKNFIL always; MOCKCLAS, MOCKZMIN/MOCKZMAX,
        MOCKRMIN/MOCKRMAX, MOCKTMIN/MOCKTMAX only when the option was given (absent:
        the configuration's value).
    """
    cards = [('MOCKSEED', int(args.seed), 'desi_lbg_mock --seed'),
             ('MOCKNSPC', int(args.nspec), 'desi_lbg_mock --nspec (all files)'),
             ('MOCKNFIL', int(nfiles), 'desi_lbg_mock number of files (--nfiles)')]
    if args.classes:
        cards.append(('MOCKCLAS', ' '.join(args.classes), 'desi_lbg_mock --classes'))
    for key, name in (('MOCKZMIN', 'zmin'), ('MOCKZMAX', 'zmax'), ('MOCKRMIN', 'rmag_min'),
                      ('MOCKRMAX', 'rmag_max'), ('MOCKTMIN', 'efftime_min'),
                      ('MOCKTMAX', 'efftime_max')):
        if getattr(args, name) is not None:
            cards.append((key, float(getattr(args, name)), f'desi_lbg_mock --{name.replace("_", "-")}'))
    return cards


def run_fingerprint(setup, cards, with_resolution):
    """Fingerprint of a ``desi_lbg_mock`` run: what its files are a pure function of.

    SHA-256 (first 16 hex digits) of the whole configuration file, of the simulator's
    fingerprint (:func:`lbgnet.sim.mock.simulator_hash`, which also covers the content of
    the optional empirical inputs), of the command-line cards (:func:`run_cards`: seed,
    number of spectra and files, population options) and of whether RESOLUTION HDUs are
    written.  Recorded as ``MOCKRUN``; ``--skip-existing`` keeps only files carrying this
    run's value.

    Returns
    -------
    str
    """
    # the configuration's content, not the path it was named by (``_source``)
    config = {k: v for k, v in setup.simcfg.items() if k != '_source'}
    content = dict(config=config, simhash=simulator_hash(setup),
                   cards=[[key, value] for key, value, _ in cards],
                   resolution=bool(with_resolution))
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]


def existing_set(paths, fingerprint):
    """What to do with the files of one pixel already on disk, under ``--skip-existing``.

    Parameters
    ----------
    paths : dict
        :func:`lbgnet.io.mock.mock_filenames` of the pixel.
    fingerprint : str
        This run's ``MOCKRUN``.

    Returns
    -------
    action : str
        ``'skip'`` (the three files are there, all of this run), ``'write'`` (some are
        missing and those there are of this run: a set cut short between its renames, or a
        file removed since; rewriting gives the same content) or ``'refuse'``.
    problem : str or None
        With ``'refuse'``: the one-line reason (a file of another run, or unreadable).
    """
    for kind in ('coadd', 'redrock', 'truth'):
        path = paths[kind]
        if not os.path.exists(path):
            continue
        try:
            found = mock_keywords(path, ('MOCKRUN', 'MOCKSEED'))
        except InputFileError as err:
            return 'refuse', f'{err}; use --overwrite to replace it'
        if found.get('MOCKRUN') != fingerprint:
            return 'refuse', (f'{path} exists from another run (MOCKRUN '
                              f'{found.get("MOCKRUN", "absent")}, MOCKSEED '
                              f'{found.get("MOCKSEED", "absent")}; this run: MOCKRUN '
                              f'{fingerprint}); use --overwrite to replace it')
    return ('skip' if all(os.path.exists(p) for p in paths.values()) else 'write'), None


def other_runs(outdir, fingerprint):
    """Coadd files in `outdir` that another mock run (or another writer) put there.

    Returns
    -------
    list of (str, dict)
        (path, its ``MOCKRUN``/``MOCKSEED`` keywords) of each ``coadd-*.fits`` whose
        ``MOCKRUN`` is not `fingerprint`; unreadable files are left out (they are not this
        command's to judge).
    """
    out = []
    for path in sorted(glob.glob(os.path.join(glob.escape(outdir), 'coadd-*.fits'))):
        try:
            found = mock_keywords(path, ('MOCKRUN', 'MOCKSEED'))
        except InputFileError:
            continue
        if found.get('MOCKRUN') != fingerprint:
            out.append((path, found))
    return out


def strip_pixels(nside, dec_range):
    """The nested healpix pixels of a Dec strip (deg), touching it included."""
    import healpy
    dec = np.asarray(dec_range, dtype=np.float64)
    return healpy.query_strip(nside, np.radians(90.0 - dec[1]), np.radians(90.0 - dec[0]),
                              inclusive=True, nest=True)


def check_pixel_room(nfiles, nside, dec_range):
    """Raise ValueError when the Dec strip has fewer than `nfiles` healpix pixels (one
    file per pixel)."""
    npix = strip_pixels(nside, dec_range).size
    if nfiles > npix:
        raise ValueError(f'{nfiles} files need {nfiles} healpix pixels, but Dec '
                         f'{dec_range[0]:g}..{dec_range[1]:g} has {npix} at nside {nside}')


def choose_pixels(nfiles, nside, dec_range, rng, max_rounds=20):
    """Distinct random nested healpix pixels of points drawn uniformly in a Dec range (deg).

    After `max_rounds` draws (asking for nearly every pixel of the strip), the rest are
    chosen among the strip's pixels not drawn yet.

    Raises
    ------
    ValueError
        When the strip has fewer than `nfiles` pixels.
    """
    import healpy
    dec = np.asarray(dec_range, dtype=np.float64)
    strip = strip_pixels(nside, dec_range)
    check_pixel_room(nfiles, nside, dec_range)
    sin_lo, sin_hi = np.sin(np.radians(dec))
    pixels = np.zeros(0, dtype=np.int64)
    for _ in range(max_rounds):
        if pixels.size >= nfiles:
            return pixels[:nfiles]
        m = 4 * nfiles + 16
        dec_draw = np.degrees(np.arcsin(rng.uniform(sin_lo, sin_hi, m)))
        ra = rng.uniform(0.0, 360.0, m)
        new = healpy.ang2pix(nside, ra, dec_draw, nest=True, lonlat=True)
        _, first = np.unique(np.concatenate([pixels, new]), return_index=True)
        pixels = np.concatenate([pixels, new])[np.sort(first)]
    rest = rng.permutation(np.setdiff1d(strip, pixels))
    return np.concatenate([pixels, rest])[:nfiles]


def file_plan(nspec, nfiles, seed, mockcfg):
    """Spectra per file, healpix pixel per file and one seed sequence per file."""
    files = mockcfg['files']
    if nfiles is None:
        nfiles = int(np.ceil(nspec / int(files['max_spectra_per_file'])))
    # the pixel count is checked before any per-file work (an absurd --nspec spent minutes
    # and gigabytes spawning seeds before choose_pixels refused it)
    check_pixel_room(nfiles, int(files['nside']), files['dec_range'])
    counts = np.full(nfiles, nspec // nfiles)
    counts[:nspec % nfiles] += 1
    seeds = np.random.SeedSequence(seed).spawn(nfiles + 1)
    pixels = choose_pixels(nfiles, int(files['nside']), files['dec_range'],
                           np.random.default_rng(seeds[0]))
    return counts, pixels, seeds[1:]


#: Peak resident memory of one ``desi_lbg_mock`` process per spectrum of the file it
#: simulates, with and without the RESOLUTION HDUs, and at no spectrum (bytes; measured with
#: ``/usr/bin/time`` on files of 200 and 1,600 spectra of the default configuration,
#: 2026-12-07: 1.76 MB and 0.39 MB per spectrum, 0.15 GB at none), for the memory check.
MOCK_BYTES_PER_SPECTRUM = {True: 1.8e6, False: 4.0e5}
MOCK_BASE_BYTES = 1.6e8


def memory_problem(counts, with_resolution, memory=None):
    """Why files of `counts` spectra cannot be simulated here, or None when they can.

    Each process holds one file at a time (:data:`MOCK_BYTES_PER_SPECTRUM` per spectrum);
    a file that needs more than the machine's physical memory (`memory`, bytes; that of
    this machine by default) would get the process killed by the kernel, without a word,
    after minutes of work.  Under MPI, ranks sharing a node share its memory: the check is
    that of one rank.
    """
    memory = physical_memory() if memory is None else memory
    per = MOCK_BYTES_PER_SPECTRUM[bool(with_resolution)]
    largest = int(np.max(counts))
    need = MOCK_BASE_BYTES + per * largest
    if need <= memory:
        return None
    fits = max(int((memory - MOCK_BASE_BYTES) // per), 1)
    nfiles = int(np.ceil(int(np.sum(counts)) / fits))
    what = 'with RESOLUTION' if with_resolution else 'without RESOLUTION'
    return (f'files of up to {largest} spectra need about {need / 2**30:.1f} GiB each '
            f'({per / 2**20:.1f} MiB per spectrum {what}), more than this machine\'s '
            f'{memory / 2**30:.0f} GiB: give --nfiles {nfiles} or more')


def prepare(args):
    """Load the simulator, plan the files and check the population and ``--outdir``
    (its file names free of cfitsio syntax, then created if needed and writable).

    Returns
    -------
    plan : tuple or None
        ``(setup, mockcfg, counts, pixels, seeds)``; None when a check failed.
    problem : str or None
        The one-line reason of the failure.
    """
    try:
        setup = load_mock_setup(args.config, args.lbg_composite, args.rr_template_dir,
                                args.sky_lines)
        mockcfg, _ = mock_settings(setup.config)
        counts, pixels, seeds = file_plan(args.nspec, args.nfiles, args.seed, mockcfg)
    except (ConfigError, InputFileError, ValueError) as err:
        return None, str(err)
    problem = memory_problem(counts, not args.no_resolution)
    if problem:
        return None, f'--nspec {args.nspec}: {problem}'
    if args.efftime_min is not None:         # also against mock.efftime_per_exposure
        try:
            check_efftime_range((args.efftime_min, args.efftime_max), mockcfg)
        except ValueError as err:
            return None, f'--efftime-min/--efftime-max {err}'
    try:
        check_population(setup.simcfg, population_options(args))
    except ValueError as err:
        return None, (f'{population_flags(args)}: the simulator cannot draw this population '
                      f'({err})')
    try:
        for pixel in pixels:            # as write_mock's check_writable, before mkdir
            for path in mock_filenames(args.outdir, mockcfg['files']['survey'],
                                       mockcfg['files']['program'], pixel).values():
                problem = cfitsio_name_problem(path)
                if problem:
                    raise OutputFileError(path, problem)
        check_outdir(args.outdir)
    except OutputFileError as err:
        return None, f'--outdir {err}'
    return (setup, mockcfg, counts, pixels, seeds), None


def planned_files(args):
    """The files a run with `args` (:func:`parse`'s) writes, without simulating anything:
    one dict (``coadd``, ``redrock``, ``truth`` -> path) per healpix pixel, in the order of
    :func:`file_plan`.

    Raises
    ------
    lbgnet.config.ConfigError, lbgnet.io.InputFileError, ValueError
        As :func:`prepare` for the configuration and the file plan.
    """
    from ..config import config_from_dict
    from ..sim.population import load_sim_config
    mockcfg, _ = mock_settings(config_from_dict(load_sim_config(args.config),
                                                source=str(args.config)))
    _, pixels, _ = file_plan(args.nspec, args.nfiles, args.seed, mockcfg)
    return [mock_filenames(args.outdir, mockcfg['files']['survey'],
                           mockcfg['files']['program'], pixel) for pixel in pixels]


def main(args=None, comm=None):
    """Run ``desi_lbg_mock``; return 0 when every file of every rank was written, else 1.

    Files are dealt round-robin to the MPI ranks (``comm``, or ``MPI.COMM_WORLD`` with
    ``--mpi``); rank 0 logs the progress of its own share.  Started by an MPI launcher
    without ``--mpi`` (and without `comm`), it refuses to run and returns 1: every
    process would simulate and write the same files.
    """
    if not isinstance(args, argparse.Namespace):
        args = parse(args)
    # an error escaping one rank, or a signal to one, aborts every rank
    return run_command(comm, args.mpi, run, args, 'simulate and write the same files')


def run(args, comm=None):
    """The work of :func:`main` on each rank; its return status.  A run stopped (SIGTERM,
    Ctrl-C) before it wrote a file leaves no empty ``--outdir`` (rank 0 removes the
    directories it made when they are empty)."""
    rank = 0 if comm is None else comm.rank
    created = missing_directories([os.path.join(args.outdir, 'x')])
    try:
        return _run(args, comm, created)
    except BaseException:
        if rank == 0:
            remove_empty(created)
        raise


def _run(args, comm, created):
    """:func:`run` once the directories it may make (`created`) are known."""
    log = get_logger()
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    plan, problem = prepare(args)
    if rank == 0 and problem is None:
        # temporaries of a run killed outright: before any rank writes (they all wait for
        # stop_if_any_failed below), one listing of --outdir
        _, mockcfg, _, pixels, _ = plan
        with run_wide():
            remove_leftovers([path for pixel in pixels for path in mock_filenames(
                args.outdir, mockcfg['files']['survey'], mockcfg['files']['program'],
                pixel).values()])
    # every rank stops (one waiting alone in a collective hangs); rank 0 says why
    if stop_if_any_failed(comm, problem, log if rank == 0 else get_logger('CRITICAL')):
        return 1
    setup, mockcfg, counts, pixels, seeds = plan
    files = mockcfg['files']
    cards = run_cards(args, counts.size)
    fingerprint = run_fingerprint(setup, cards, not args.no_resolution)
    cards.append(('MOCKRUN', fingerprint, 'desi_lbg_mock run fingerprint'))
    if rank == 0:
        others = other_runs(args.outdir, fingerprint)
        if others:                 # about the run's --outdir: 'run: ...', not 'rank 0: ...'
            path, found = others[0]
            with run_wide():       # e.g. a test set written over another one's directory
                log.warning('--outdir %s already holds %d coadd file(s) of other runs (e.g. '
                            '%s, MOCKSEED %s): they are kept and will be read together with '
                            "this run's files", args.outdir, len(others),
                            os.path.basename(path), found.get('MOCKSEED', 'absent'))
    mine = np.arange(rank, counts.size, size)
    progress = (Progress(int(counts[mine].sum()),
                         unit='spectra (this rank)' if size > 1 else 'spectra')
                if rank == 0 else None)
    nfail = nskip = 0
    for k in mine:
        paths = mock_filenames(args.outdir, files['survey'], files['program'], pixels[k])
        existing = [p for p in paths.values() if os.path.exists(p)]
        if args.skip_existing and existing:
            action, problem = existing_set(paths, fingerprint)
            if action == 'skip':
                nskip += 1
                if progress is not None:
                    progress.update(int(counts[k]))
                continue
            if action == 'refuse':
                log.error('%s', problem)
                nfail += 1
                continue
        elif not args.overwrite and existing:
            log.error('%s exists; use --overwrite to replace it (or --skip-existing to '
                      'keep the files of an interrupted run)', existing[0])
            nfail += 1
            continue
        try:
            mock = make_mock(setup, int(counts[k]), np.random.default_rng(seeds[k]),
                             pixel=int(pixels[k]), population=population_options(args),
                             with_resolution=not args.no_resolution)
            write_mock(args.outdir, mock, args.config, cards=cards)
        except OutputFileError as err:               # expected (disk full, ...): one line
            raise_if_terminated()
            log.error('healpix %d: %s', pixels[k], err)
            nfail += 1
            continue
        except Exception as err:                     # noqa: BLE001 -- log, count, go on
            raise_if_terminated()     # a library may turn the signal's exception into another
            log.error('healpix %d (%s): %s\n%s', pixels[k], paths['coadd'], err,
                      traceback.format_exc())
            nfail += 1
            continue
        log.debug('wrote %s', paths['coadd'])
        if progress is not None:
            progress.update(int(counts[k]))
    if comm is not None:
        nfail, nskip = comm.allreduce(nfail), comm.allreduce(nskip)
    if rank == 0:
        with run_wide():           # the run's summary: 'run: ...', not 'rank 0: ...'
            log.info('%d of %d file(s) written (%d spectra asked) in %s, %d kept from an '
                     'earlier run, %d failure(s)', counts.size - nfail - nskip, counts.size,
                     args.nspec, args.outdir, nskip, nfail)
        if nfail == counts.size:      # nothing written (a full disk): no empty --outdir left
            remove_empty(created)
    return 1 if nfail else 0
