"""
lbgnet.afterburner
==================

The steps of ``desi_lbg_afterburner`` for one coadd, kept apart from the command line
(see :mod:`lbgnet.scripts.lbg_afterburner`): run the network (:mod:`lbgnet.network`,
loaded once) on a coadd block by block, refine the selected targets' redshifts with a
template fit (:mod:`lbgnet.refine`), build the catalogue header, rerun Redrock on the
selected targets, and size TensorFlow's thread pool for the CPUs of an MPI rank.
"""
import dataclasses
import os
from dataclasses import dataclass

import numpy as np
from desiutil.log import get_logger

from . import __version__
from .bitmask import LBGWarnMask
from .catalog import (add_rerun_columns, apply_model_range, apply_small_deltachi2,
                      spectrum_flags)
from .io.catalog import file_sha256, provenance_header
from .io.chunks import iter_coadd_chunks
from .io.discover import file_metadata
from .io.errors import InputFileError
from .io.fitsutil import LOCATION_KEYS
from .io.mock import MOCK_KEYS
from .parallel import threads_per_rank
from .postprocess import postprocess_options
from .preprocess import coadd_to_grid
from .priors import PRIOR_FUNCTION
from .redrock_rerun import check_rerunnable, rerun_redrock
from .refine import (DEFAULT_ARCH_SKIP, DEFAULT_DLOGZ, DEFAULT_PRIOR_WEIGHT, DEFAULT_WINDOW,
                     MIN_DELTACHI2, REFINE_KEYS)
from .targets import target_class

#: Spectra per block read and gridded at once (bounds the memory of the arrays).
DEFAULT_CHUNK = 1000
#: Noise of the refinement's χ²: the pipeline ivar, or the calibrated noise model
#: (:mod:`lbgnet.noise`: scatter excess and sky-line residuals), the default since
#: 2026-12-01 (doc/afterburner.rst, *A calibrated noise model*).
REFINE_NOISES = ('pipeline', 'calibrated')
DEFAULT_REFINE_NOISE = 'calibrated'

@dataclass
class FilePrediction:
    """Network results for the spectra of one coadd, coadd order.

    Attributes
    ----------
    results : dict
        :func:`lbgnet.postprocess.postprocess` output, arrays of shape (nspec, ...).
    flags : numpy.ndarray of int32
        LBG_FLAG bits, shape (nspec,).
    layout : lbgnet.io.chunks.CoaddLayout
    """

    results: dict
    flags: np.ndarray
    layout: object


def predict_coadd(path, network, c_thresh, n_thresh, chunk_size=DEFAULT_CHUNK,
                  batch_size=None, refiner=None):
    """Read, grid, predict and post-process a coadd, `chunk_size` spectra at a time.

    Parameters
    ----------
    path : str
        Coadd file.
    network : lbgnet.network.Network
    c_thresh : float
    n_thresh : int
    chunk_size : int, optional
        Spectra read and gridded at once.
    batch_size : int, optional
        Spectra per forward pass [the engine's, :meth:`lbgnet.network.Network.predict`].
    refiner : lbgnet.refine.Refiner, optional
        Template refinement of the IS_LBG targets' redshifts (``Z_TPL``, ``ZERR_TPL``,
        ``DELTACHI2_TPL``; NaN for the other targets, and for all without a refiner).

    Returns
    -------
    FilePrediction

    Notes
    -----
    Spectra without a single valid pixel get NaN confidences and redshifts and
    IS_LBG = False (their network output would be meaningless).
    """
    cfg = network.config
    blocks, flags, layout = [], [], None
    for layout, _, block in iter_coadd_chunks(path, chunk_size):
        X, info = coadd_to_grid(block, cfg.grid, None if refiner is None else refiner.noise)
        raw = network.raw_outputs(X, batch_size)
        res = network.catalog(raw, c_thresh, n_thresh)
        blank_empty(res, info.empty)
        res.update(refine_selected(refiner, info, res, raw.get('conf')))
        blocks.append(res)
        flags.append(spectrum_flags(info, block.fibermap, cfg.grid.nbins))
    results = {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]}
    flags = apply_model_range(np.concatenate(flags), (results['Z_LBG'], results['Z_TPL']),
                              network.zrange)
    if refiner is not None:
        flags = apply_small_deltachi2(flags, results['IS_LBG'], results['DELTACHI2_TPL'],
                                      results['ZERR_TPL'])
    return FilePrediction(results, flags, layout)


def refine_selected(refiner, info, results, conf=None):
    """``Z_TPL``, ``ZERR_TPL``, ``DELTACHI2_TPL`` of the IS_LBG spectra (NaN elsewhere).

    Parameters
    ----------
    refiner : lbgnet.refine.Refiner or None
        None: all NaN.
    info : lbgnet.preprocess.GridInfo
        With the rebinned flux and ivar, and ``noise_ivar`` when the refiner has a noise
        model (:attr:`lbgnet.refine.Refiner.noise`; gridded by
        :func:`lbgnet.preprocess.coadd_to_grid` with that model), which then weights χ².
    results : dict
        ``IS_LBG`` and ``Z_LBG``, shape (nspec,).
    conf : numpy.ndarray, optional
        The network's box confidences (nspec, nlines, nboxes), the prior of
        :mod:`lbgnet.refine`; None: no prior.

    Returns
    -------
    dict of numpy.ndarray
    """
    nspec = len(results['IS_LBG'])
    if refiner is None:
        return {key: np.full(nspec, np.nan) for key in REFINE_KEYS}
    z_start = np.where(results['IS_LBG'], results['Z_LBG'], np.nan)
    if (refiner.noise is None) != (info.noise_ivar is None):
        raise ValueError('the refiner and the gridded spectra disagree on the noise model: '
                         'grid with coadd_to_grid(..., refiner.noise)')
    ivar = info.ivar if refiner.noise is None else info.noise_ivar
    return refiner.run(info.flux, ivar, z_start, conf)


def load_refiner(path, config, zrange, window=DEFAULT_WINDOW, prior_weight=DEFAULT_PRIOR_WEIGHT,
                 dlogz=DEFAULT_DLOGZ, calibrate=True, noise='pipeline', archetypes=None,
                 arch_skip=DEFAULT_ARCH_SKIP):
    """Template refinement for a model's grid and redshift range.

    Parameters
    ----------
    path : str
        Redrock-format template without IGM (``desi_lbg_make_template``; the mean IGM of
        the simulator's published law is applied at each trial redshift).
    config : lbgnet.config.Config
        The model's configuration (grid).
    zrange : (float, float)
        The model's LBG redshift range (:attr:`lbgnet.network.Network.zrange`).
    window : float, optional
        Half width of the search window around ``Z_LBG``, in Δz/(1+z).
    prior_weight : float, optional
        Weight of the network's box confidences against χ² in the basis fit (0 and no
        `archetypes`: the plain χ² minimum in the window).
    dlogz : float, optional
        Step of the trial redshifts in log10(1+z).
    calibrate : bool, optional
        Calibrate ``ZERR_TPL`` with the configuration's ``postprocess.zerr_tpl_scale`` and
        ``zerr_tpl_floor`` (:mod:`lbgnet.zerr`); False: the formal error.
    noise : {'pipeline', 'calibrated'}, optional
        Noise of the χ² (:data:`REFINE_NOISES`): with 'calibrated' the refiner carries
        :func:`lbgnet.noise.load_noise_model`, and the spectra must be gridded with it
        (:func:`lbgnet.preprocess.coadd_to_grid`, ``refiner.noise``).  The library
        default is the pipeline ivar; the commands default to
        :data:`DEFAULT_REFINE_NOISE`.
    archetypes : str, optional
        Archetype file (``RRMETHOD = ARCHETYPE``, ``desi_lbg_make_template --archetypes``)
        for the archetype stage of :mod:`lbgnet.refine`, which picks the basin of
        ``Z_TPL``; None (the library default): no archetype stage.  The commands use
        :func:`default_archetype_path`.
    arch_skip : float, optional
        Skip the archetype stage where the template fit with the network's prior is this
        decisive (:attr:`lbgnet.refine.Refiner.arch_skip`; 0: never).

    Returns
    -------
    lbgnet.refine.Refiner

    Raises
    ------
    InputFileError
        Unreadable template or archetypes, a PCA file given as archetypes, or files that
        cannot cover the grid at the model's redshifts.
    ValueError
        If `noise` is not one of :data:`REFINE_NOISES`.
    """
    from .io.templates import read_rr_template
    from .refine import Refiner, template_from_basis
    from .sim.population import load_sim_config
    model = refine_noise_model(noise)
    rrt = read_rr_template(path)
    igm = load_sim_config()['simulation']['igm']
    opts = postprocess_options(config)
    scale, floor = ((opts['zerr_tpl_scale'], opts['zerr_tpl_floor']) if calibrate
                    else (1.0, 0.0))
    if rrt.method != 'PCA':
        raise InputFileError(path, f'not a PCA template (RRMETHOD {rrt.method}); archetypes '
                             'go to --refine-archetypes')
    try:
        template = template_from_basis(rrt.wave, rrt.basis, igm=igm)
        refiner = Refiner.build(template, config, zrange, prior_weight, window, dlogz=dlogz,
                                source=os.path.abspath(path), sha256=file_sha256(path),
                                zerr_scale=scale, zerr_floor=floor)
    except ValueError as err:
        raise InputFileError(path, f'unusable refinement template: {err}') from None
    if archetypes is not None:
        rra = read_rr_template(archetypes)
        if rra.method != 'ARCHETYPE':
            raise InputFileError(archetypes, f'not an archetype file (RRMETHOD {rra.method}; '
                                 'make one with desi_lbg_make_template --archetypes)')
        try:
            arch = template_from_basis(rra.wave, rra.basis, nbasis=rra.basis.shape[0], igm=igm)
            refiner = refiner.with_archetypes(arch, config, source=os.path.abspath(archetypes),
                                              sha256=file_sha256(archetypes), skip=arch_skip)
        except ValueError as err:
            raise InputFileError(archetypes, f'unusable archetypes: {err}') from None
    return refiner if model is None else dataclasses.replace(refiner, noise=model)


def refine_noise_model(noise):
    """The noise model a refinement with `noise` weights χ² by.

    Parameters
    ----------
    noise : {'pipeline', 'calibrated'}
        :data:`REFINE_NOISES`.

    Returns
    -------
    lbgnet.noise.NoiseModel or None
        :func:`lbgnet.noise.load_noise_model` for 'calibrated'; None (the pipeline ivar)
        for 'pipeline'.
    """
    if noise not in REFINE_NOISES:
        raise ValueError(f'noise must be one of {REFINE_NOISES}, got {noise!r}')
    if noise == 'pipeline':
        return None
    from .noise import load_noise_model
    return load_noise_model()


def blank_empty(results, empty):
    """Set NaN / False in place for spectra without valid pixels."""
    if not np.any(empty):
        return
    for key, val in results.items():
        if val.dtype == bool:
            val[empty] = False
        elif val.dtype.kind == 'f':
            val[empty] = np.nan


def templates_sha256(paths):
    """One SHA-256 for the content of a set of template files, whatever their order."""
    import hashlib
    digests = sorted(file_sha256(p) for p in paths)
    return hashlib.sha256(''.join(digests).encode('ascii')).hexdigest()


def calibration_cards(metadata, refined):
    """``ZERRCAL`` (and with the refinement ``ZTPLCAL``): whether the model's ``ZERR_LBG``
    (``ZERR_TPL``) calibration was fitted (:func:`lbgnet.zerr.calibration_status`); no
    card where the model card does not say."""
    from .zerr import CALIBRATION_CARDS, calibration_status
    status = calibration_status(metadata)
    return [(card, bool(status[key]), f'{key} calibrated on validation (F: raw)')
            for key, card in CALIBRATION_CARDS
            if status[key] is not None and (key == 'ZERR_LBG' or refined)]


def catalog_header(job, network, c_thresh, n_thresh, layout, rerun=None, refiner=None,
                   fingerprints=None):
    """Provenance header of one output catalogue / priors file.

    Parameters
    ----------
    job : lbgnet.io.discover.FileJob
    network : lbgnet.network.Network
    c_thresh, n_thresh : float, int
        Thresholds used.
    layout : lbgnet.io.chunks.CoaddLayout
        Its primary header and FIBERMAP header give SURVEY, PROGRAM, TILEID, ...
    rerun : RerunSetup, optional
        The Redrock rerun, if any (its templates and their SHA-256).
    refiner : lbgnet.refine.Refiner, optional
        The template refinement used, if any.
    fingerprints : (str, str), optional
        :func:`lbgnet.io.fitsutil.header_fingerprint` of the coadd and of the Redrock
        file (with its REDSHIFTS columns), written as ``INCOSUM`` and ``INRRSUM`` (a
        rerun redoes the file when its inputs changed since, :mod:`lbgnet.resume`).

    Returns
    -------
    astropy.io.fits.Header
    """
    cfg = network.config
    opts = postprocess_options(cfg)
    cards = [('LBGMODEL', network.path, 'lbgnet model file'),
             ('LBGMSHA', network.sha256, 'SHA-256 of the model file'),
             ('LBGCSHA', cfg.sha256(), 'SHA-256 of the model configuration'),
             ('LBGCONF', str(cfg.extra.get('name') or os.path.basename(cfg.source)),
              'model configuration name'),
             ('LBGTARG', target_class(cfg), 'class the network selects (IS_LBG)'),
             *([('LBGENGIN', network.engine, 'forward pass of the network: numpy or keras')]
               if getattr(network, 'engine', None) else []),
             ('CTHRESH', float(c_thresh), 'line confidence threshold c_th'),
             ('NTHRESH', int(n_thresh), 'lines above c_th for IS_LBG'),
             ('ZERRSCL', opts['zerr_scale'], 'ZERR_LBG calibration: scale'),
             ('ZERRFLR', opts['zerr_floor'], 'ZERR_LBG calibration: floor, dz/(1+z)'),
             *calibration_cards(getattr(network, 'metadata', None), refiner is not None),
             ('NBOXES', cfg.nboxes, 'boxes per line'),
             ('GRIDWMIN', cfg.grid.wave_min, '[Angstrom] input grid start'),
             ('GRIDDW', cfg.grid.dwave, '[Angstrom] input grid bin'),
             ('GRIDNBIN', cfg.grid.nbins, 'input grid bins'),
             ('LBGZMIN', network.zrange[0], 'model redshift range, low'),
             ('LBGZMAX', network.zrange[1], 'model redshift range, high'),
             ('INCOADD', os.path.abspath(job.coadd), 'input coadd'),
             ('INREDROC', os.path.abspath(job.redrock), 'input Redrock file'),
             *([('INCOSUM', fingerprints[0], 'input coadd: fingerprint of its headers'),
                ('INRRSUM', fingerprints[1], 'input Redrock file: fingerprint')]
               if fingerprints is not None else []),
             ('RERUNRR', rerun is not None, 'Redrock rerun with CNN priors'),
             ('REFINE', refiner is not None, 'Z_TPL: template refinement of Z_LBG')]
    if refiner is not None:
        cards += [('REFTEMPL', refiner.source, 'template of the refinement'),
                  ('REFTSHA', refiner.sha256, 'SHA-256 of the refinement template'),
                  ('ZTPLSCL', refiner.zerr_scale, 'ZERR_TPL calibration: scale'),
                  ('ZTPLFLR', refiner.zerr_floor, 'ZERR_TPL calibration: floor, dz/(1+z)'),
                  ('REFWGT', refiner.prior_weight, 'weight of the CNN box prior'),
                  ('REFWIN', refiner.window, 'search window, dz/(1+z) half width'),
                  ('REFSTEP', refiner.dlogz, 'trial redshift step in log10(1+z)'),
                  ('REFNOISE', 'pipeline' if refiner.noise is None else 'calibrated',
                   'noise of the refinement chi2 (lbgnet.noise)'),
                  ('REFARCH', refiner.arch_source or 'none', 'archetypes picking the basin'),
                  ('REFASHA', refiner.arch_sha256, 'SHA-256 of the archetypes'),
                  ('REFAWGT', refiner.arch_weight if refiner.archetypes is not None else 0.0,
                   'weight of the CNN box prior, archetypes'),
                  ('REFABAS', refiner.basin if refiner.archetypes is not None else 0.0,
                   'basin half width around their choice'),
                  ('REFASKP', refiner.arch_skip if refiner.archetypes is not None else 0.0,
                   'skip archetypes if fit margin >= this; 0 never'),
                  ('MINDCHI2', MIN_DELTACHI2, 'SMALL_DELTA_CHI2 if DELTACHI2_TPL below')]
    templates = rerun.files if rerun is not None else ()
    for i, name in enumerate(templates):
        cards.append((f'RRTEMP{i:02d}', os.path.abspath(name), 'Redrock template of the rerun'))
    if templates:
        cards.append(('RRTSHA', rerun.sha256, 'SHA-256 of the rerun templates'))
    cards += [(k, v, c) for k, v, c in LBGWarnMask().header_cards()]
    location = dict(file_metadata(job.coadd))
    if layout is not None:
        fmeta = layout.fibermap.meta if layout.fibermap is not None else {}
        location.update({k: fmeta[k] for k in LOCATION_KEYS if k in fmeta})
        location.update({k: layout.header[k] for k in LOCATION_KEYS if k in layout.header})
    cards += [(k, location[k], '') for k in LOCATION_KEYS if k in location]
    if layout is not None:                       # mock coadds: evaluation checks them
        cards += [(k, str(layout.header[k]).strip(), 'mock provenance (lbgnet.sim)')
                  for k in MOCK_KEYS if k in layout.header]
    return provenance_header(cards, dependencies={'lbgnet': __version__})


@dataclass
class RerunSetup:
    """Redrock templates of ``--rerun-redrock``, the redshift range each scans and one
    SHA-256 of their content (:func:`templates_sha256`, computed once per run)."""

    files: list
    zrange: list
    sha256: str = ''


def default_template_path():
    """The LBG Redrock template shipped with lbgnet (a clear error when there is none)."""
    from .io.rrtemplate import default_template_path as finder
    path = finder()
    if path is None:
        raise InputFileError('--templates', 'no LBG Redrock template shipped with lbgnet; '
                             'make one with desi_lbg_make_template')
    return path


def default_archetype_path():
    """The LBG archetypes shipped with lbgnet (a clear error when there are none)."""
    from .io.rrtemplate import default_template_path as finder
    path = finder('ARCHETYPE')
    if path is None:
        raise InputFileError('--refine-archetypes', 'no LBG archetypes shipped with lbgnet; '
                             'make them with desi_lbg_make_template --archetypes')
    return path


def rerun_into(catalog, coadd, priors, templates):
    """Rerun Redrock on the targets of `priors` and add the ``*_NEW`` columns to `catalog`.

    Selected targets without a rerun result get the RERUN_FAILED bit.
    """
    tid, zprior, sigma = priors
    rerun = None
    if tid.size:
        check_rerunnable(coadd)
        rerun = rerun_redrock(coadd, tid, zprior, sigma, templates, PRIOR_FUNCTION)
    add_rerun_columns(catalog, rerun)
    asked = np.asarray(catalog['IS_LBG'], dtype=bool) & np.isfinite(catalog['Z_LBG'])
    done = np.isin(catalog['TARGETID'], tid)
    catalog['LBG_FLAG'][asked & ~done] |= LBGWarnMask().RERUN_FAILED
    nfailed = int(np.count_nonzero(asked & ~done))
    if nfailed:
        get_logger().info('%s: %d of %d IS_LBG targets not rerun (prior outside the '
                          'templates\' redshift grids): RERUN_FAILED', coadd, nfailed,
                          int(asked.sum()))


def node_threads(comm):
    """Threads for this rank: its CPUs, divided among the ranks of its node that share them."""
    cpus = frozenset(os.sched_getaffinity(0))
    if comm is None:
        return len(cpus)
    from mpi4py import MPI
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    threads = threads_per_rank(node.allgather(cpus), node.rank)
    node.Free()
    return threads


def set_threads(nthreads, tensorflow=True):
    """Limit this process's threads: TensorFlow's intra-op pool and the BLAS / OpenMP pools.

    The template refinement's matrix products run in numpy's BLAS, which otherwise starts
    one thread per core in every MPI rank (``mpiexec -n 2`` on 2 cores then ran 4 BLAS
    threads and was slower than one process).  TensorFlow's setting only takes effect
    before it starts running (no-op afterwards); the BLAS limit applies at once.
    `tensorflow` False leaves TensorFlow alone (not even imported: a run that may need
    no network), for :func:`set_tensorflow_threads` once it is needed.
    """
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=int(nthreads))
    if tensorflow:
        set_tensorflow_threads(nthreads)


def set_tensorflow_threads(nthreads):
    """TensorFlow's thread pools for `nthreads` (see :func:`set_threads`); nothing under
    another Keras backend (:func:`lbgnet.tflog.keras_backend_name`), which has no
    TensorFlow to set."""
    from .tflog import keras_backend_name
    if keras_backend_name() != 'tensorflow':
        return
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(nthreads))
        tf.config.threading.set_inter_op_parallelism_threads(1 if nthreads == 1 else 2)
    except RuntimeError:
        get_logger().debug('TensorFlow already initialised; thread settings unchanged')
