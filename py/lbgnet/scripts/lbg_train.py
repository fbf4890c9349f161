"""
lbgnet.scripts.lbg_train
========================

``desi_lbg_train``: train the line finder on simulated or labelled spectra.

* Training batches are simulated afresh every epoch by :class:`lbgnet.sim.generator.MockBatches`
  (new objects at continuous redshift and magnitude, new noise at a random exposure time,
  online augmentation), with the simulation configuration named in ``training.simulation``.
* With ``--train-dir``, they come instead from labelled spectra files (real spectra with
  labels, e.g. for fine-tuning with ``--init-from``), augmented afresh every epoch and
  optionally mixed with simulated spectra (``--sim-fraction``; :mod:`lbgnet.labelled`).
* Validation uses a fixed mock set written to files (coadd, redrock, truth) and read back
  through the production reader (:func:`lbgnet.preprocess.load_coadd_grid`); it drives
  early stopping and the best checkpoint, and then fixes the default selection thresholds
  and calibrates the redshift errors (:func:`error_calibration`).
* Output in ``--outdir``: ``<name>.weights.h5`` + ``<name>.json`` (model and model card),
  ``history.csv``, ``loss.png``, ``checkpoint.weights.h5`` + ``checkpoint.json`` (the
  best epoch so far as a whole model, which a killed or time-limited run leaves for
  ``--init-from``, ``--model`` and evaluation: :func:`lbgnet.train.save_checkpoint`) and
  ``validation/``.  An ``--outdir`` that holds a model already (any name, the checkpoint
  included: those files are one per directory) is refused without ``--overwrite`` (a stopped rerun would leave the old card beside the
  new run's history and validation).

Seeds: training batch ``i`` of epoch ``e`` (1-based, as the model card's ``best_epoch``;
``history.csv`` numbers epochs from 0, i.e. ``e - 1``) uses
the stream ``(seed, e, i)``: Keras draws batches of stream 0 to infer the tensor specs and
calls ``on_epoch_end`` before the first epoch (:data:`SEED_STREAMS`, ``doc/model.rst``).  The
validation files use ``(seed + VALIDATION_SEED_OFFSET, file, 0, 1)`` (:func:`validation_rng`),
never a training stream.
"""
import argparse
import dataclasses
import glob
import math
import os
import platform
import time

import numpy as np
from desiutil.log import get_logger

from ..config import ConfigError, Selection, file_sections, load_config, resolve_beside
from ..io import InputFileError
from ..tflog import import_tensorflow

#: Offset between the training seed and the seed of the validation files.
VALIDATION_SEED_OFFSET = 10_000


def validation_rng(seed, ifile):
    """The random generator of a validation file.

    numpy pads a seed sequence with zeros (``[a, b]`` draws as ``[a, b, 0]``), so the
    stream ``(seed + 10000, ifile)`` used before 2026-12-07 was also batch 0 of epoch
    `ifile` of a run with seed ``seed + 10000``; the last word 1 sets the validation
    streams apart from every training stream ``(seed, e, i)``.

    Parameters
    ----------
    seed : int
        The training seed.
    ifile : int
        The validation file's index.

    Returns
    -------
    numpy.random.Generator
        Of the stream ``(seed + VALIDATION_SEED_OFFSET, ifile, 0, 1)``.
    """
    return np.random.default_rng([seed + VALIDATION_SEED_OFFSET, int(ifile), 0, 1])


#: Spectra per validation file.
VALIDATION_FILE_SIZE = 1000
#: Primary-header keywords of the validation files :func:`write_validation` writes: the
#: set's size, its number of files and its seed, so that :func:`find_validation` can tell
#: a complete set from one a stopped run left behind.
VALIDATION_KEYS = ('VALNSPEC', 'VALNFILE', 'VALSEED')


def parse(options=None):
    """Parse the command line of ``desi_lbg_train``."""
    parser = argparse.ArgumentParser(
        description='Train the LBG line finder on simulated spectra, or on labelled spectra '
        'files (--train-dir).')
    parser.add_argument('--config', required=True, help='model configuration (etc/lbgnet-*.yaml)')
    parser.add_argument('--outdir', required=True, help='output directory')
    parser.add_argument('--epochs', type=int, help='maximum epochs [training.epochs]')
    parser.add_argument('--batch-size', type=int, help='spectra per batch [training.batch_size]')
    parser.add_argument('--seed', type=int, help='random seed [training.seed]')
    parser.add_argument('--ntrain', type=int, help='training spectra per epoch [training.ntrain]')
    parser.add_argument('--nval', type=int, help='validation spectra [training.nval]')
    parser.add_argument('--learning-rate', type=float, help='Adam learning rate [training.learning_rate]')
    parser.add_argument('--max-minutes', type=float,
                        help='wall-clock budget: stop after the epoch after which one more '
                        'epoch of mean length would end past it; 0: no limit, whatever the '
                        'configuration says [training.max_minutes, none]')
    parser.add_argument('--patience', type=int,
                        help='epochs without a better validation score before stopping '
                        '[training.patience]')
    parser.add_argument('--lr-schedule', choices=('constant', 'cosine', 'cosine_time'),
                        help='learning-rate schedule: cosine decays over the planned epochs, '
                        'cosine_time over --max-minutes [training.lr_schedule]')
    parser.add_argument('--val-dir', help='directory of validation coadd-*/truth-* files '
                        '[generate them under OUTDIR/validation]')
    parser.add_argument('--train-dir', nargs='+', metavar='DIR',
                        help='train on the labelled coadd-*/truth-* files of these directories '
                        '(truth: TRUTH HDU with TARGETID, CLASS, Z_TRUE, RMAG) instead of '
                        'simulated spectra; an epoch is one pass over them [simulate]')
    parser.add_argument('--sim-fraction', type=float,
                        help='with --train-dir: fraction of each batch simulated, the rest '
                        'labelled [training.sim_fraction]')
    parser.add_argument('--depth-min', type=float,
                        help='with --train-dir: labelled spectra get extra noise as if observed '
                        'to a depth fraction uniform in [DEPTH_MIN, 1]; 1: none '
                        '[training.depth_min]')
    parser.add_argument('--validation-only', action='store_true',
                        help='only write the validation set (--nval spectra, --seed) under '
                        'OUTDIR/validation and stop, for reuse with --val-dir')
    parser.add_argument('--init-from', help='initialise from this lbgnet model file or '
                        'QuasarNET-format Keras .h5 (layers with equal names and shapes; '
                        'lbgnet.transfer)')
    parser.add_argument('--init-layers', choices=('conv', 'dense', 'all'), default=None,
                        help='layers taken from --init-from: conv (+ batch norms), dense (conv '
                        'and fc_common), all [all]')
    parser.add_argument('--freeze', type=int, default=0, metavar='N',
                        help='freeze the first N trunk layers (conv_1.., then fc_common) '
                        '[%(default)s]')
    parser.add_argument('--unfreeze-epochs', type=int, default=0, metavar='K',
                        help='unfreeze everything for the last K of the epochs [%(default)s]')
    parser.add_argument('--unfreeze-lr-factor', type=float,
                        help='learning-rate factor of the unfrozen phase (with '
                        '--unfreeze-epochs) [0.1]')
    parser.add_argument('--workers', type=int, default=2,
                        help='threads simulating batches ahead of training [%(default)s]')
    parser.add_argument('--worker-processes', action='store_true',
                        help='simulate in --workers processes instead of threads (the '
                        'simulation holds the GIL part of the time: for machines with many '
                        'cores, e.g. a GPU node; same batches, same result)')
    parser.add_argument('--name', help='model file name (without extension) [config name]')
    parser.add_argument('--overwrite', action='store_true',
                        help='train into an --outdir that holds a model already (its '
                        'history, checkpoint and validation set are replaced as the new run '
                        'goes, a model of the same name at the end; models of other names '
                        'stay, with a warning)')
    parser.add_argument('--verbose', type=int, choices=(0, 1, 2), default=1,
                        help='Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch '
                        '[%(default)s]')
    args = parser.parse_args(options)
    if args.freeze < 0 or args.unfreeze_epochs < 0:
        parser.error('--freeze and --unfreeze-epochs must be >= 0')
    if args.workers < 1:
        parser.error(f'--workers must be >= 1, not {args.workers}')
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, not {args.batch_size}')
    if args.unfreeze_epochs and not args.freeze:
        parser.error('--unfreeze-epochs needs --freeze N > 0')
    if args.init_layers is not None and not args.init_from:
        parser.error('--init-layers needs --init-from')
    args.init_layers = args.init_layers or 'all'
    if args.unfreeze_lr_factor is not None and not args.unfreeze_epochs:
        parser.error('--unfreeze-lr-factor applies to the unfrozen phase: it needs '
                     '--unfreeze-epochs')
    if args.unfreeze_lr_factor is None:
        args.unfreeze_lr_factor = 0.1
    if not (math.isfinite(args.unfreeze_lr_factor) and args.unfreeze_lr_factor > 0):
        parser.error(f'--unfreeze-lr-factor must be a finite number > 0, not '
                     f'{args.unfreeze_lr_factor}')
    if args.validation_only and args.val_dir:
        parser.error('--validation-only writes a validation set; --val-dir reads one')
    if not args.train_dir and (args.sim_fraction is not None or args.depth_min is not None):
        parser.error('--sim-fraction and --depth-min apply to --train-dir')
    if args.validation_only and args.train_dir:
        parser.error('--validation-only trains nothing: --train-dir does not apply')
    if args.validation_only and (args.init_from or args.freeze):
        parser.error('--validation-only trains nothing: --init-from and --freeze do not apply')
    return args


class TruthEncoder:
    """Picklable ``truth table -> targets`` callable for the simulator's generator.

    Parameters
    ----------
    config : lbgnet.config.Config
    """

    def __init__(self, config):
        self.config = config

    def __call__(self, truth):
        """Targets of a truth table (CLASS, Z_TRUE): (n, nlines, nboxes, 2) for line finders
        (lbgnet.targets: other architectures and target classes)."""
        from ..targets import make_training_targets
        return make_training_targets(truth, self.config)


def check_compatible(config, sim_config):
    """The model and simulation configurations must share the grid; an LBG model's lines
    must be lines the simulator renders (lbgnet.targets.check_target_lines)."""
    from ..targets import check_target_lines
    if config.grid != sim_config.grid:
        raise ConfigError(f'{config.source} and {sim_config.source} differ in grid')
    check_target_lines(config, sim_config)


def write_validation(setup, outdir, nval, seed, config_name):
    """Simulate the validation set into files; returns the coadd and truth paths.

    Validation files (``coadd-``, ``redrock-``, ``truth-*.fits``) already in `outdir` that
    this call did not write (e.g. from an earlier run with a larger ``nval``) are removed,
    so that ``--val-dir`` later reads this set only; other files are left alone, but for
    the temporaries of these files that a run killed outright left
    (:func:`lbgnet.io.atomic.remove_leftovers`).
    """
    from ..io.atomic import remove_leftovers
    from ..io.mock import write_mock
    from ..sim.mock import make_mock
    log = get_logger()
    coadds, truths, written = [], [], set()
    nfiles = max(1, -(-nval // VALIDATION_FILE_SIZE))
    cards = [(key, int(value), comment) for key, value, comment in zip(
        VALIDATION_KEYS, (nval, nfiles, seed),
        ('spectra in the validation set', 'files in the validation set',
         'seed of the validation set'))]
    for ifile in range(nfiles):
        nspec = min(VALIDATION_FILE_SIZE, nval - ifile * VALIDATION_FILE_SIZE)
        rng = validation_rng(seed, ifile)
        mock = make_mock(setup, nspec, rng, pixel=ifile, with_resolution=False)
        paths = write_mock(outdir, mock, config_name, cards=cards)
        coadds.append(paths['coadd'])
        truths.append(paths['truth'])
        written.update(os.path.abspath(p) for p in paths.values())
    stale = sorted(path for kind in ('coadd', 'redrock', 'truth')
                   for path in glob.glob(os.path.join(glob.escape(outdir), f'{kind}-*.fits'))
                   if os.path.abspath(path) not in written)
    for path in stale:
        os.remove(path)
    if stale:
        log.info('removed %d validation file(s) of an earlier run from %s: %s', len(stale),
                 outdir, ', '.join(os.path.basename(p) for p in stale))
    remove_leftovers(sorted(written))       # temporaries of a run killed outright (kill -9)
    log.info('wrote %d validation spectra in %d files under %s', nval, nfiles, outdir)
    return coadds, truths


def check_validation_kept(val_dir, nval, seed, setup):
    """Refuse to replace another validation set in `val_dir` (without ``--overwrite``):
    one written with ``--validation-only`` to be shared through ``--val-dir`` would change
    under the models trained on it (their cards name its files by SHA-256).  Files of the
    set this run writes again, file for file (same ``VALNSPEC``, ``VALNFILE``, ``VALSEED``
    and simulator, ``SIMHASH``), pass, also fewer than ``VALNFILE`` of them (a run stopped
    while writing it); so does a directory without coadds.

    Raises
    ------
    InputFileError
        Naming `val_dir` and the set it holds.
    """
    from ..io.mock import mock_keywords
    from ..sim.mock import simulator_hash
    coadds = sorted(glob.glob(os.path.join(glob.escape(val_dir), 'coadd-*.fits')))
    if not coadds:
        return
    nfiles = max(1, -(-nval // VALIDATION_FILE_SIZE))
    want = {'VALNSPEC': nval, 'VALNFILE': nfiles, 'VALSEED': seed,
            'SIMHASH': simulator_hash(setup)}
    found = [mock_keywords(path, VALIDATION_KEYS + ('SIMHASH',)) for path in coadds]
    mine = {k: str(v) for k, v in want.items()}
    other = [stamp for stamp in found if {key: str(stamp.get(key)) for key in want} != mine]
    if not other:
        return
    raise InputFileError(val_dir, f'holds another validation set ({len(coadds)} coadd '
                         'file(s); ' + ', '.join(f'{key} {other[0].get(key, "absent")}'
                                                 for key in want)
                         + f'; this run: {", ".join(f"{k} {v}" for k, v in want.items())}): '
                         'use --overwrite to replace it, or another --outdir')


def validation_simulators(coadds):
    """The distinct ``SIMHASH`` of validation coadds, sorted (files without: none)."""
    from ..io.mock import mock_keywords
    return sorted({h for h in (mock_keywords(path, ('SIMHASH',)).get('SIMHASH')
                               for path in coadds) if h})


def warn_other_simulator(coadds, setup, val_dir):
    """Warn when a ``--val-dir`` was simulated by another simulator (``SIMHASH``) than the
    one of this training: its thresholds and error calibration are then chosen on spectra
    of another simulator version (the card records both hashes)."""
    from ..sim.mock import simulator_hash
    mine = simulator_hash(setup)
    other = [h for h in validation_simulators(coadds) if h != mine]
    if other:
        get_logger().warning('--val-dir %s was simulated by another simulator (SIMHASH %s) '
                             'than this training (%s): the thresholds and error calibration '
                             'are chosen on spectra of another simulator version', val_dir,
                             ', '.join(other), mine)


def find_validation(val_dir):
    """Coadd and truth files of an existing validation directory (paired by name).

    A set written by :func:`write_validation` says in every coadd header how many files
    it has (:data:`VALIDATION_KEYS`): one a stopped run left incomplete, or files of two
    such sets, are refused.  Files without those keywords (labelled spectra, older sets,
    also beside such a set) are taken as they are.

    Raises
    ------
    InputFileError
        No such directory or no coadd in it; an incomplete or mixed validation set.
    """
    from ..io.labelled import find_labelled
    from ..io.mock import mock_keywords
    coadds, truths = find_labelled(val_dir, 'validation')
    stamps = [tuple(sorted(mock_keywords(path, VALIDATION_KEYS).items())) for path in coadds]
    stamps = [stamp for stamp in stamps if stamp]
    if len(set(stamps)) > 1:
        raise InputFileError(val_dir, 'files of different validation sets (VALNSPEC, '
                             'VALNFILE, VALSEED differ): write the set again')
    if stamps and int(dict(stamps[0])['VALNFILE']) != len(stamps):
        raise InputFileError(val_dir, f'incomplete validation set: {len(stamps)} of its '
                             f'{dict(stamps[0])["VALNFILE"]} files (a run stopped while '
                             'writing it?): write it again')
    return coadds, truths


def check_validation_targets(truth, config, val_dir):
    """Refuse a validation set without an object of the class the network finds: its
    score is undefined in every epoch, and the training would only fail at its end."""
    from ..targets import target_class
    target = target_class(config)
    if not np.any(np.char.strip(np.asarray(truth['CLASS']).astype(str)) == target):
        raise InputFileError(val_dir, f'no {target} in the validation set: its score (the '
                             'checkpoint criterion) is undefined')


def labelled_batches(args, config, opts, setup):
    """The :class:`lbgnet.labelled.FileBatches` of ``--train-dir`` (with the simulated part
    of ``training.sim_fraction``, and the simulator's masking augmentations)."""
    from ..io.labelled import find_labelled, read_labelled_spectra
    from ..labelled import FileBatches
    from ..sim.generator import MockBatches, generator_settings
    from ..targets import target_class
    log = get_logger()
    coadds, truths, seen = [], [], set()
    for directory in args.train_dir:
        if os.path.realpath(directory) in seen:
            log.warning('--train-dir %s is listed more than once: read once', directory)
            continue
        seen.add(os.path.realpath(directory))
        found = find_labelled(directory, 'labelled training')
        coadds += found[0]
        truths += found[1]
    nsim = int(round(opts['sim_fraction'] * opts['batch_size']))
    nfile = opts['batch_size'] - nsim
    if nfile < 1:
        raise ConfigError(f'training.sim_fraction {opts["sim_fraction"]} leaves no labelled '
                          f'spectrum in batches of {opts["batch_size"]}')
    if opts['sim_fraction'] > 0 and nsim == 0:
        log.warning('sim_fraction %g of batches of %d rounds to no simulated spectrum: '
                    'labelled spectra only', opts['sim_fraction'], opts['batch_size'])
    spectra = read_labelled_spectra(coadds, truths, target_class(config), config)
    classes, counts = np.unique(np.asarray(spectra.truth['CLASS']).astype(str),
                                return_counts=True)
    log.info('read %d labelled training spectra from %d file(s) (%s), %.0f MB in memory',
             len(spectra), len(coadds), ', '.join(f'{c} {n}' for c, n in zip(classes, counts)),
             spectra.nbytes / 2 ** 20)
    if target_class(config) not in classes:
        log.warning('no %s among the labelled training spectra: the network learns only '
                    'to reject', target_class(config))
    if args.ntrain is not None:
        log.warning('--ntrain %d is ignored with --train-dir: an epoch is one pass over the '
                    '%d labelled spectra', args.ntrain, len(spectra))
    nbatch = -(-len(spectra) // nfile)
    simulator = None if nsim == 0 else MockBatches(
        setup, encode=None, batch_size=nsim, batches_per_epoch=nbatch, seed=opts['seed'])
    augment = generator_settings(setup.config).get('augment')
    return FileBatches(spectra, config.grid, encode=TruthEncoder(config),
                       batch_size=opts['batch_size'], seed=opts['seed'], augment=augment,
                       depth_min=opts['depth_min'], simulator=simulator)


def check_disjoint(train_files, val_files, train_truths=(), val_truths=(), val_name='--val-dir'):
    """Refuse a coadd that is both a training and a validation file, also as a copy, and
    validation objects that are training objects.

    Parameters
    ----------
    train_files, val_files : sequence of str
        Coadds.
    train_truths, val_truths : sequence of str, optional
        Their truth files: a validation truth table with the content of a training one
        (:func:`lbgnet.evalinputs.check_not_a_copy`: also the same simulated objects under
        other TARGETIDs) is a copy under another name, and a validation object whose
        TARGETID and Z_TRUE are a training object's (a validation coadd holding some of
        the training targets) is one spectrum of a training object.
    val_name : str, optional
        What the validation files are, for the messages ['--val-dir'].

    Raises
    ------
    lbgnet.io.InputFileError
        Naming the first such file.
    """
    from ..evalinputs import check_not_a_copy, is_simulated, truth_keys
    from ..io.mock import read_truth
    shared = sorted(set(map(os.path.realpath, train_files)) & set(map(os.path.realpath, val_files)))
    if shared:
        raise InputFileError(shared[0], f'is both a --train-dir and a {val_name} file '
                             f'({len(shared)} such file(s)): the thresholds and error '
                             'calibration would be chosen on training spectra')
    seen, objects = {}, []
    for path in train_truths:         # copies within the training set only weigh more
        truth = read_truth(path)
        for _, key in truth_keys(truth, is_simulated(path)):
            seen.setdefault(key, path)
        objects.append(object_keys(truth))
    objects = np.concatenate(objects) if objects else object_keys(None)
    for path in val_truths:
        truth = read_truth(path)          # a missing or unreadable file says only that
        try:
            check_not_a_copy(truth, path, dict(seen))      # against the training files only
        except InputFileError as err:
            raise InputFileError(path, f'{err.problem} (a --train-dir file in the {val_name}): '
                                 'the thresholds and error calibration would be chosen on '
                                 'training spectra') from None
        shared = int(np.isin(object_keys(truth), objects).sum())
        if shared:
            raise InputFileError(path, f'{shared} of its {len(truth)} objects (TARGETID and '
                                 f'Z_TRUE) are --train-dir objects: the thresholds and error '
                                 'calibration would be chosen on training spectra')


def object_keys(truth):
    """One 16-byte key per row of a truth table (TARGETID and the bits of Z_TRUE), for
    :func:`numpy.isin`; none for None.  Two simulated objects that share a TARGETID (mocks
    of one healpix pixel) differ in Z_TRUE."""
    if truth is None:
        return np.zeros(0, dtype='V16')
    pairs = np.column_stack([np.asarray(truth['TARGETID'], dtype='<i8'),
                             np.asarray(truth['Z_TRUE'], dtype='<f8').view('<i8')])
    return np.ascontiguousarray(pairs).view('V16').ravel()


def read_labelled(coadds, truths, config, with_grid=False, noise=None):
    """Network input, targets and truth of mock files, through the production reader.

    Spectra flagged NODATA or NOT_SCIENCE (dead fibres, no valid pixel: the evaluation's
    rule, :func:`lbgnet.io.evaluation.is_evaluated`) are left out.
    A truth file whose content does not match its coadd's ``TRUTHSUM`` is refused, as in
    ``desi_lbg_evaluate``; labels are normalised and checked as for ``--train-dir``
    (:func:`lbgnet.io.labelled.check_labels`).

    Parameters
    ----------
    coadds, truths : sequence of str
    config : lbgnet.config.Config
    with_grid : bool, optional
        Also return the rebinned flux and ivar (for the template refinement).
    noise : {'pipeline', 'calibrated'}, optional
        With `with_grid`: the noise the returned grid ivar describes, that of a refinement
        with this noise (:func:`lbgnet.afterburner.refine_noise_model`; the calibrated
        model's is ``GridInfo.noise_ivar``); None:
        :data:`lbgnet.afterburner.DEFAULT_REFINE_NOISE`, as for :func:`error_calibration`.

    Returns
    -------
    X : numpy.ndarray
        (n, nbins, 2).
    y : numpy.ndarray
        (n, nlines, nboxes, 2).
    truth : dict of numpy.ndarray
        CLASS, Z_TRUE, RMAG in the order of `X`.
    grid : (numpy.ndarray, numpy.ndarray)
        Only with `with_grid`: flux and ivar on the grid, each (n, nbins).
    """
    from astropy.table import vstack
    from ..afterburner import DEFAULT_REFINE_NOISE, refine_noise_model
    from ..io.evaluation import match_rows, read_coadd_for_evaluation
    model = None
    if with_grid:
        model = refine_noise_model(DEFAULT_REFINE_NOISE if noise is None else noise)
    from ..evalinputs import check_truth_covered
    from ..io.labelled import LABEL_COLUMNS, check_labels
    from ..io.mock import check_truth_matches, read_truth
    from ..io.targetid import unique_targetids
    from ..targets import target_class
    Xs, tables, flux, ivar = [], [], [], []
    for coadd, truth_path in zip(coadds, truths):
        X, targetid, good, info, _ = read_coadd_for_evaluation(coadd, config, model)
        truth = read_truth(truth_path)
        # the labels first, as desi_lbg_evaluate: CLASS is normalised before the TRUTHSUM
        # comparison, which would otherwise call a lower-case CLASS another mock run
        check_labels(truth, truth_path, target_class(config), config)
        check_truth_covered(unique_targetids(truth['TARGETID'], truth_path), targetid, coadd,
                            truth_path, 'coadd')
        check_truth_matches(coadd, truth_path, truth)
        Xs.append(X[good])
        if with_grid:
            flux.append(info.flux[good])
            ivar.append((info.ivar if model is None else info.noise_ivar)[good])
        truth = truth[[c for c in LABEL_COLUMNS if c in truth.colnames]]   # others may clash
        tables.append(truth[match_rows(np.asarray(truth['TARGETID']), targetid[good], truth_path,
                                       f'the usable spectra of {os.path.basename(coadd)}')])
    truth = vstack(tables)
    y = TruthEncoder(config)(truth)
    out = (np.concatenate(Xs), y, {k: np.asarray(truth[k]) for k in ('CLASS', 'Z_TRUE', 'RMAG')})
    return out + ((np.concatenate(flux), np.concatenate(ivar)),) if with_grid else out


def validation_summary(model, X, truth, config, grid=None, noise=None, zrange=None):
    """Choose the thresholds on the validation set, report its metrics at them and
    calibrate the redshift errors (:func:`error_calibration`, with `noise` and `zrange`).

    Returns
    -------
    c_thresh, n_thresh, table
        :func:`lbgnet.predict.choose_catalog_thresholds`.
    brief : dict
        Validation metrics per regime.
    calibration : dict
        :func:`error_calibration`.
    """
    from ..evaluate import evaluate_predictions
    from ..predict import catalog_from_raw, choose_catalog_thresholds, predict_raw
    raw = predict_raw(model, X, config)
    c_thresh, n_thresh, table = choose_catalog_thresholds(raw, truth, config)
    res = catalog_from_raw(raw, config, c_thresh=c_thresh, n_thresh=n_thresh, calibrate=False)
    metrics = evaluate_predictions(truth, res, c_thresh)
    brief = {name: {'pe_score': m['pe_score'], 'efficiency': m['efficiency'],
                    'purity': m['purity'], **m['redshift']} for name, m in metrics.items()}
    calibration = error_calibration(res, truth, config, grid, raw.get('conf'), noise, zrange)
    return c_thresh, n_thresh, table, brief, calibration


def error_calibration(res, truth, config, grid=None, conf=None, noise=None, zrange=None):
    """Fit the calibration of ``ZERR_LBG`` and ``ZERR_TPL`` on the validation set.

    :func:`lbgnet.zerr.fit_calibration` on the selected true LBGs: for ``ZERR_LBG`` with
    the network's raw errors in `res` (for a hybrid network, also the direct head's
    errors of the rows without lines: one scale and floor for both); for ``ZERR_TPL``
    after refining their redshifts with the shipped template and archetypes at the default settings
    (needs `grid`; not for networks whose target is not LBG, nor when the template
    cannot cover the grid).  A calibration that cannot be fitted leaves the formal
    error (scale 1, floor 0) and records why.

    Parameters
    ----------
    res : dict
        Uncalibrated catalogue quantities of the validation spectra.
    truth : dict
        ``CLASS``, ``Z_TRUE``.
    config : lbgnet.config.Config
    grid : (numpy.ndarray, numpy.ndarray), optional
        Flux and ivar on the grid; None: ``ZERR_TPL`` stays uncalibrated.
    conf : numpy.ndarray, optional
        Box confidences (the refinement's prior).
    noise : {'pipeline', 'calibrated'}, optional
        Noise of the refinement's χ², as for the commands
        (:data:`lbgnet.afterburner.DEFAULT_REFINE_NOISE` when None); the ivar of `grid`
        must describe it (:func:`read_labelled` with the same `noise`).
    zrange : (float, float), optional
        LBG redshift range of the refinement [:func:`lbgnet.network.training_zrange` of
        `config`]; training passes that of its simulator (:func:`setup_zrange`).

    Returns
    -------
    dict
        ``refine_noise``: that noise; ``refine_archetypes``: SHA-256 of the archetypes of
        the refinement (None without); ``postprocess``: the four ``zerr_*`` options (scale 1 and floor 0 where a fit was
        impossible); ``ZERR_LBG`` / ``ZERR_TPL``: the fit (or the reason it failed) and
        :func:`lbgnet.zerr.pull_stats` before and after.
    """
    from ..afterburner import (DEFAULT_REFINE_NOISE, REFINE_NOISES, default_archetype_path,
                               default_template_path, load_refiner)
    from ..evaluate import LBG_CLASS
    from ..network import training_zrange
    from ..targets import target_class
    from ..zerr import calibrated_error, fit_calibration, pull_stats
    log = get_logger()
    noise = DEFAULT_REFINE_NOISE if noise is None else noise
    if noise not in REFINE_NOISES:
        raise ValueError(f'noise must be one of {REFINE_NOISES}, got {noise!r}')
    sel = np.asarray(res['IS_LBG'], dtype=bool) & (np.asarray(truth['CLASS']) == LBG_CLASS)
    z_true = np.asarray(truth['Z_TRUE'])[sel]
    measured = {'ZERR_LBG': (res['Z_LBG'][sel], res['ZERR_LBG'][sel])}
    reasons = {}
    if grid is None:
        reasons['ZERR_TPL'] = 'no rebinned validation spectra given'
    elif target_class(config) != LBG_CLASS:
        reasons['ZERR_TPL'] = f'the refinement template is for LBGs, not {target_class(config)}'
    elif not sel.any():
        reasons['ZERR_TPL'] = 'no selected true LBG in the validation set'
    else:
        try:
            zrange = training_zrange(config, {}) if zrange is None else zrange
            refiner = load_refiner(default_template_path(), config, zrange, calibrate=False,
                                   noise=noise, archetypes=default_archetype_path())
        except (InputFileError, ValueError) as err:      # e.g. a grid the template misses
            reasons['ZERR_TPL'] = f'no template refinement: {err}'
        else:
            out = refiner.run(grid[0][sel], grid[1][sel], res['Z_LBG'][sel],
                              None if conf is None else np.asarray(conf)[sel])
            measured['ZERR_TPL'] = (out['Z_TPL'], out['ZERR_TPL'])
    options = {'zerr_scale': 1.0, 'zerr_floor': 0.0, 'zerr_tpl_scale': 1.0, 'zerr_tpl_floor': 0.0}
    report = {}
    for key, prefix in (('ZERR_LBG', 'zerr_'), ('ZERR_TPL', 'zerr_tpl_')):
        if key not in measured:
            log.warning('%s left uncalibrated: %s', key, reasons[key])
            report[key] = {'fit': None, 'reason': reasons[key]}
            continue
        z, zerr = measured[key]
        try:
            fit = fit_calibration(z, zerr, z_true)
        except ValueError as err:
            log.warning('%s left uncalibrated: %s', key, err)
            report[key] = {'fit': None, 'reason': str(err)}
            continue
        options[prefix + 'scale'], options[prefix + 'floor'] = fit['scale'], fit['floor']
        cal = calibrated_error(zerr, z, fit['scale'], fit['floor'])
        report[key] = {'fit': fit, 'raw': pull_stats(z, zerr, z_true),
                       'calibrated': pull_stats(z, cal, z_true)}
        log.info('%s calibration on validation: scale %.3f, floor %.2e; pull NMAD %.2f -> %.2f',
                 key, fit['scale'], fit['floor'], report[key]['raw']['nmad_pull'],
                 report[key]['calibrated']['nmad_pull'])
    arch = None
    if 'ZERR_TPL' in measured and refiner.archetypes is not None:
        arch = refiner.arch_sha256
    return {'refine_noise': noise, 'refine_archetypes': arch, 'postprocess': options, **report}


def with_error_calibration(config, options):
    """`config` with the ``zerr_*`` options set in its ``postprocess`` section."""
    extra = dict(config.extra)
    extra['postprocess'] = {**(extra.get('postprocess') or {}), **options}
    return dataclasses.replace(config, extra=extra)


def main(args=None, comm=None):
    """Run ``desi_lbg_train``; return 0 on success, 1 on an input, configuration or output
    error (one line: e.g. a full disk under ``--outdir``)."""
    if not isinstance(args, argparse.Namespace):
        args = parse(args)
    log = get_logger()
    t_start = time.time()
    try:
        import_tensorflow(train=True)
    except ConfigError as err:          # a Keras backend that cannot train here
        log.error('%s', err)
        return 1
    from ..io.atomic import Terminated, raise_if_terminated
    from ..io.catalog import OutputFileError, missing_directories, remove_empty
    from ..train import TrainingDiverged
    created = missing_directories([os.path.join(args.outdir, 'x')]) if args.outdir else []
    try:
        return _train(args, log, t_start)
    except Terminated:         # where the run's best weights are, to continue from them
        say_checkpoint(args.outdir, t_start)
        raise
    except (InputFileError, ConfigError, TrainingDiverged, OutputFileError) as err:
        raise_if_terminated()      # a library may turn the signal's exception into another
        log.error('%s', err)
        remove_empty(created)      # a run that failed early leaves no empty --outdir
        return 1
    except Exception:      # noqa: BLE001 -- TensorFlow's TypeError in place of the signal's
        raise_if_terminated()
        raise


def training_setup(args):
    """Configuration with the command-line overrides, and the simulator setup.

    A relative ``training.simulation`` is looked for next to ``--config`` first, then in
    the current directory, then by name in ``etc/`` (:func:`lbgnet.config.resolve_beside`).
    Every option read later (model, loss, postprocess, augmentation) is checked here,
    before the validation set is simulated (:func:`lbgnet.train.check_config`).
    """
    from ..targets import apply_target
    from ..train import check_config, training_options
    config = apply_target(load_config(args.config))
    opts = training_options(config, epochs=args.epochs, batch_size=args.batch_size,
                            seed=args.seed, ntrain=args.ntrain, nval=args.nval,
                            learning_rate=args.learning_rate, max_minutes=args.max_minutes,
                            lr_schedule=args.lr_schedule, patience=args.patience,
                            sim_fraction=args.sim_fraction, depth_min=args.depth_min)
    config = dataclasses.replace(config, extra=dict(config.extra, training=opts))
    setup = simulation_setup(config, opts, args.config)
    warn_unused_generator(setup.config)
    check_config(config, setup.config)           # fail now, not after the first epoch
    check_compatible(config, setup.config)
    return config, opts, setup


def warn_unused_generator(sim_config):
    """Warn when the simulator configuration changes ``generator.batch_size`` or
    ``generator.batches_per_epoch`` from the shipped ones: they are the defaults of
    :class:`lbgnet.sim.generator.MockBatches` in Python, which ``desi_lbg_train`` replaces
    by ``training.batch_size`` and ``training.ntrain // batch_size``."""
    from ..sim.generator import generator_settings
    from ..sim.mock import DEFAULT_MOCK_CONFIG
    shipped = generator_settings(load_config(DEFAULT_MOCK_CONFIG))
    mine = generator_settings(sim_config)
    changed = [f'generator.{key} = {mine.get(key)!r}' for key in ('batch_size', 'batches_per_epoch')
               if mine.get(key) != shipped.get(key)]
    if changed:
        get_logger().warning('%s: %s not used by desi_lbg_train, which takes training.batch_size '
                             'and training.ntrain // batch_size batches per epoch',
                             sim_config.source, ', '.join(changed))


def simulation_setup(config, opts, config_arg):
    """The simulator set-up named by ``training.simulation`` (looked for beside the
    ``--config`` file `config_arg` first); a missing file is named with the key that
    asked for it."""
    from ..sim.mock import load_mock_setup
    if not opts['simulation']:
        if 'instrument' in config.extra or 'mock' in config.extra:
            raise ConfigError(f'{config.source}: a simulator (mock) configuration; --config '
                              'takes a model configuration (e.g. lbgnet-default.yaml), whose '
                              'training.simulation names the simulator')
        raise ConfigError(f'{config.source}: training.simulation names no simulation config')
    path = resolve_beside(opts['simulation'], config_arg)
    try:
        return load_mock_setup(path)
    except ConfigError as err:
        if str(err) == f'{path}: configuration file not found':
            raise ConfigError(f'{config.source}: training.simulation {opts["simulation"]!r}: '
                              'configuration file not found (beside the config, here or '
                              'in etc/)') from None
        raise


def initial_model(config, init_from, init_layers='all'):
    """The network of `config`, optionally initialised from a pretrained network file.

    Returns
    -------
    model : keras.Model
    report : lbgnet.transfer.TransferReport or None

    Raises
    ------
    InputFileError
        When `init_from` is given but none of the selected layers fits the network.
    """
    from ..model import build_model
    from ..transfer import init_from as transfer_init
    model = build_model(config)
    report = transfer_init(model, init_from, init_layers, config) if init_from else None
    if report is not None and not report.loaded:
        raise InputFileError(init_from, f'no layer of {init_layers!r} fits this network '
                             f'({len(report.incompatible)} with other shapes, '
                             f'{len(report.missing)} absent, {len(report.skipped)} skipped): '
                             'nothing to initialise from')
    return model, report


#: How the training batches draw their random streams, as recorded in the model card.
SEED_STREAMS = ('batch i of epoch e (1-based as best_epoch; history.csv row e - 1) uses '
                '(seed, e, i); Keras '
                'draws up to two batches of (seed, 0, .) to infer the tensor specs, then moves on '
                'before the first epoch; a second (unfrozen) phase is a new fit, which skips '
                'one more stream: its epochs use (seed, e + 1, i)')


def setup_zrange(setup):
    """LBG redshift range of a simulator set-up (``simulation.lbg.zrange``), the range the
    model card records as ``z_range`` (:func:`lbgnet.network.training_zrange`)."""
    zlo, zhi = setup.simcfg['simulation']['lbg']['zrange']
    return [float(zlo), float(zhi)]


def checkpoint_card(setup, args=None, init=None, seed=None):
    """What a training checkpoint's model card says of the training, as the finished
    model's card does (:func:`model_card`): ``z_range`` and ``training.simulator_hash``;
    given the run's `args`, also ``training.init_from`` / ``init_from_sha256`` (`init`,
    :func:`init_record`), the labelled ``train_dir`` (absolute paths), ``val_dir`` and
    the `seed`, so that a killed run's checkpoint says how it was trained."""
    from ..sim.mock import simulator_hash
    training = {'simulator_hash': simulator_hash(setup), 'simulation': simulation_record(setup)}
    if args is not None:
        training.update(init if init is not None else init_record(args.init_from))
        training.update(
            train_dir=[os.path.abspath(d) for d in args.train_dir] if args.train_dir else None,
            val_dir=os.path.abspath(args.val_dir) if args.val_dir else None, seed=seed)
    return {'z_range': setup_zrange(setup), 'training': training}


def model_card(args, config, opts, batches, coadds, info, thresholds, val_metrics, history,
               seconds, nval_used=None, setup=None, init=None):
    """Metadata stored with the model: training recipe, time, thresholds, validation metrics.

    ``training.options`` are the options as requested; ``training.ntrain_per_epoch``
    (whole batches) and ``training.nval_used`` (validation spectra read, after the dead
    fibres; from ``--val-dir`` when given) the numbers actually used.  With ``--train-dir``
    (`batches` a :class:`lbgnet.labelled.FileBatches`), ``training.labelled`` describes the
    labelled files and ``training.generator`` the simulated part of the batches (None when
    there is none); ``simulator_hash`` is that of `setup` (the simulator of the simulated
    batches and of a validation set this run simulated) [``batches.setup``], and
    ``validation_simulator_hash`` the ``SIMHASH`` values of the validation files (another
    simulator's for a ``--val-dir`` of another version; empty for files without).  `init` is :func:`init_record`
    taken when the weights were loaded (the ``--init-from`` file may be this run's own
    checkpoint, replaced since) [taken now].
    """
    from ..io.catalog import file_sha256
    from ..sim.mock import simulator_hash
    c_thresh, n_thresh, table = thresholds
    labelled = getattr(batches, 'spectra', None) is not None
    sim = batches.simulator if labelled else batches
    setup = setup if setup is not None else batches.setup
    return {
        'z_range': setup_zrange(setup),
        'training': {'config': os.path.basename(config.source), 'options': opts,
                     'ntrain_per_epoch': len(batches) * batches.batch_size,
                     'nval_used': None if nval_used is None else int(nval_used),
                     'simulator_hash': simulator_hash(setup),
                     'simulation': simulation_record(setup),
                     'labelled': labelled_record(batches) if labelled else None,
                     'generator': None if sim is None else {
                         'batches_per_epoch': len(batches),
                         'spectra_per_batch': sim.batch_size,
                         'augment': dataclasses.asdict(sim.augment),
                         'efftime_range': list(sim.efftime_range),
                         'seed_streams': SEED_STREAMS},
                     'validation_files': [os.path.basename(c) for c in coadds],
                     'validation_sha256': [file_sha256(c) for c in coadds],
                     'validation_simulator_hash': validation_simulators(coadds),
                     'validation_dir': os.path.abspath(args.val_dir) if args.val_dir else None,
                     'validation_seed': (None if args.val_dir
                                         else opts['seed'] + VALIDATION_SEED_OFFSET),
                     **(init_record(args.init_from) if init is None else init), **info,
                     'total_seconds': seconds,
                     'cpu_count': os.cpu_count(), 'machine': platform.machine()},
        'thresholds': {'c_thresh': float(c_thresh), 'n_thresh': int(n_thresh),
                       'candidates': {str(k): v for k, v in table.items()},
                       'chosen_on': 'validation: n_thresh maximising the mean purity=efficiency '
                                    'score over the z regimes; c_thresh at purity=efficiency'},
        'validation_metrics': val_metrics,
        'history': history,
    }


def simulation_record(setup):
    """Model-card record of the simulator configuration of a training (``training.simulation``
    resolved): the file read (absolute path), the fingerprint of its whole content, ``base:``
    chain merged (:func:`lbgnet.tune.simulation_hash`), and the magnitude range and class mix
    its spectra were drawn from.  ``simulator_hash`` (``SIMHASH``) leaves these sampling
    choices out, so without this record a model trained on another ``rmag_range`` had the
    same card as one trained on the shipped range."""
    from ..config import _resolve
    from ..tune import simulation_hash
    sim = setup.simcfg.get('simulation') or {}
    source = setup.simcfg.get('_source')
    try:                           # a name found in etc/ or a relative path: where it was read
        source = None if not source else str(_resolve(source).resolve())
    except ConfigError:            # gone since it was read
        source = os.path.abspath(source)
    rmag = sim.get('rmag_range')
    return {'file': source,
            'config_hash': simulation_hash(setup),
            'rmag_range': None if rmag is None else [float(v) for v in rmag],
            'class_fractions': {str(k): float(v)
                                for k, v in (sim.get('class_fractions') or {}).items()}}


def init_record(init_from):
    """Model-card record of ``--init-from``: the absolute path and the SHA-256 of the
    weights it named (an lbgnet ``NAME.json`` stands for its ``NAME.weights.h5``), so that
    the card says which starting point it was, wherever it was run from."""
    if not init_from:
        return {'init_from': None, 'init_from_sha256': None}
    from ..io.catalog import file_sha256
    from ..io.modelfile import model_paths
    weights = model_paths(init_from)[0] if str(init_from).endswith('.json') else init_from
    return {'init_from': os.path.abspath(init_from),
            'init_from_sha256': file_sha256(weights) if os.path.isfile(weights) else None}


def labelled_record(batches):
    """Model-card record of the labelled training spectra of a FileBatches."""
    from ..io.catalog import file_sha256
    from ..labelled import STREAM_TAG
    truth = batches.spectra.truth
    classes, counts = np.unique(np.asarray(truth['CLASS']).astype(str), return_counts=True)
    return {'files': [{'coadd': coadd, 'coadd_sha256': file_sha256(coadd),
                       'truth': tpath, 'truth_sha256': file_sha256(tpath)}
                      for coadd, tpath in zip(batches.spectra.files, batches.spectra.truth_files)],
            'nspec': len(truth), 'classes': {str(c): int(n) for c, n in zip(classes, counts)},
            'spectra_per_batch': batches.nfile, 'depth_min': batches.depth_min,
            'augment': dataclasses.asdict(batches.augment),
            'seed_streams': f'epoch order from (seed, {STREAM_TAG}, e); augmentations of batch '
                            f'i of epoch e from (seed, {STREAM_TAG}, e, i + 1)'}


def earlier_models(outdir):
    """Model files of earlier runs in `outdir`: ``NAME.json`` for each ``NAME.weights.h5``,
    or the weights themselves when their description is missing (a save killed between
    its renames leaves it under a temporary name); finished models first (the refusal
    names the first), then the best checkpoint."""
    from ..train import CHECKPOINT, CHECKPOINT_CARD
    found = []
    for weights in glob.glob(os.path.join(glob.escape(outdir), '*.weights.h5')):
        description = weights[:-len('.weights.h5')] + '.json'
        found.append(description if os.path.exists(description) else weights)
    return sorted(found, key=lambda p: (os.path.basename(p) in (CHECKPOINT_CARD, CHECKPOINT), p))


def model_name(args, config):
    """File name (without extension) of the model a run writes: ``--name``, the
    configuration's ``name`` or the configuration file's name.

    Raises
    ------
    lbgnet.config.ConfigError
        When that name cannot name the model files (:data:`lbgnet.config.MODEL_NAME`).
    """
    from ..config import MODEL_NAME
    name = args.name or str(config.extra.get('name') or os.path.splitext(
        os.path.basename(args.config))[0])
    if not MODEL_NAME.match(name):
        raise ConfigError(f'model name {name!r} (--name, the configuration\'s name or its '
                          'file name) must start with a letter or digit and hold only '
                          'letters, digits, spaces and _ . + -')
    from ..train import CHECKPOINT
    if name == CHECKPOINT[:-len('.weights.h5')]:
        raise ConfigError(f'model name {name!r} (--name, the configuration\'s name or its '
                          f'file name) is the name of the run\'s best checkpoint ({CHECKPOINT}, '
                          'which the finished model would replace): choose another')
    return name


def check_freeze(model, report, nfreeze, init_from):
    """Refuse a ``--freeze`` beyond the trunk; warn when it freezes random weights.

    Raises
    ------
    lbgnet.config.ConfigError
        When `nfreeze` exceeds the number of trunk blocks.
    """
    from ..transfer import trunk_blocks
    log = get_logger()
    blocks = trunk_blocks(model)
    if not 0 <= nfreeze <= len(blocks):
        raise ConfigError(f'--freeze {nfreeze}: this network has {len(blocks)} trunk blocks '
                          f'({len(blocks) - 1} conv layers + fc_common)')
    if nfreeze and not init_from:
        log.warning('--freeze %d without --init-from freezes randomly initialised layers',
                    nfreeze)
    elif nfreeze and report is not None:
        loaded = {name for name, _ in report.loaded}
        unloaded = [name for block in blocks[:nfreeze] for name in block
                    if model.get_layer(name).weights and name not in loaded]
        if unloaded:
            log.warning('--freeze %d also freezes layers that --init-from did not load '
                        '(random weights): %s', nfreeze, ', '.join(unloaded))


def _score_text(value):
    """A validation score for the log: 4 decimals, or n/a (a regime without LBGs)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 'n/a'
    return 'n/a' if not np.isfinite(value) else f'{value:.4f}'


def _train(args, log, t_start):
    from ..afterburner import DEFAULT_REFINE_NOISE
    from ..io.modelfile import save_model
    from ..sim.generator import MockBatches, as_pydataset
    from ..targets import metric_truth
    from ..train import CHECKPOINT_CARD, TRAINING_DEFAULTS, set_seeds
    from ..transfer import fit_in_phases
    config, opts, setup = training_setup(args)
    model_name(args, config)          # a name that cannot name the files fails now
    if 'selection' in file_sections(args.config):
        log.warning('%s: its selection section is not used by training: c_thresh and '
                    'n_thresh are chosen on the validation set and recorded with the model '
                    '(desi_lbg_afterburner --c-thresh/--n-thresh select otherwise)', args.config)
    earlier = earlier_models(args.outdir)
    if earlier and not args.overwrite:
        # its history, checkpoint and validation set (one per --outdir, whatever the
        # --name) would be replaced as this run goes: the two runs would be mixed
        what = ('the best checkpoint of an earlier run (--init-from it, into another '
                '--outdir, to start from its weights)'
                if os.path.basename(earlier[0]) == CHECKPOINT_CARD else 'weights of an earlier run, without their .json description'
                if earlier[0].endswith('.weights.h5')
                else 'a model of an earlier run')
        raise InputFileError(earlier[0], f'{what}; use --overwrite to train into this '
                             '--outdir again, or another --outdir')
    check_init_not_replaced(args, model_name(args, config))
    set_seeds(opts['seed'])
    if not args.validation_only:      # a bad --init-from / --freeze fails before any simulation
        model, report = initial_model(config, args.init_from, args.init_layers)
        init = init_record(args.init_from)      # before this run's checkpoint may replace it
        check_freeze(model, report, args.freeze, args.init_from)
        if args.freeze and not args.unfreeze_epochs < opts['epochs']:
            raise ConfigError(f'--unfreeze-epochs {args.unfreeze_epochs} must be in '
                              f'[0, epochs={opts["epochs"]})')
    batches = None
    if args.train_dir:                # bad labelled files fail before any simulation
        batches = labelled_batches(args, config, opts, setup)
    else:
        ignored = [f'{key} {opts[key]}' for key in ('sim_fraction', 'depth_min')
                   if opts[key] != TRAINING_DEFAULTS[key]]
        if ignored:
            log.warning('training.%s only appl%s to --train-dir: ignored',
                        ', training.'.join(ignored), 'ies' if len(ignored) == 1 else 'y')
    try:                              # bad options above leave no directory behind
        os.makedirs(args.outdir, exist_ok=True)
    except OSError as err:
        raise InputFileError(args.outdir, f'cannot create the output directory '
                             f'({err.strerror})') from None
    if args.val_dir:
        coadds, truths = find_validation(args.val_dir)
        warn_other_simulator(coadds, setup, args.val_dir)
        if batches is not None:
            check_disjoint(batches.spectra.files, coadds, batches.spectra.truth_files, truths)
        if args.nval is not None:
            log.warning('--nval %d is ignored with --val-dir: the validation set is every '
                        'file in %s', args.nval, args.val_dir)
    else:
        val_dir = os.path.join(args.outdir, 'validation')
        if batches is not None and any(os.path.realpath(d) == os.path.realpath(val_dir)
                                       for d in args.train_dir):
            raise InputFileError(val_dir, 'is a --train-dir and would be replaced by the new '
                                 'validation set: train into another --outdir')
        if not args.overwrite:
            check_validation_kept(val_dir, opts['nval'], opts['seed'], setup)
        coadds, truths = write_validation(setup, val_dir, opts['nval'], opts['seed'],
                                          opts['simulation'])
        if batches is not None:       # e.g. an earlier run's validation set, same seed
            check_disjoint(batches.spectra.files, coadds, batches.spectra.truth_files, truths,
                           val_name=f'validation set simulated with seed {opts["seed"]}; '
                           'use another --seed or a --val-dir')
        if args.validation_only:
            log.info('validation set written (--validation-only); reuse it with --val-dir %s',
                     os.path.join(args.outdir, 'validation'))
            return 0
    X_val, y_val, truth_val, grid_val = read_labelled(coadds, truths, config, with_grid=True,
                                                      noise=DEFAULT_REFINE_NOISE)
    check_validation_targets(truth_val, config,
                             args.val_dir or os.path.join(args.outdir, 'validation'))
    truth_val = metric_truth(truth_val, config)
    if batches is None:
        batches = MockBatches(setup, encode=TruthEncoder(config), batch_size=opts['batch_size'],
                              batches_per_epoch=max(1, opts['ntrain'] // opts['batch_size']),
                              seed=opts['seed'])
        split = 'simulated'
    else:
        split = (f'{batches.nfile} labelled + {opts["batch_size"] - batches.nfile} simulated, '
                 f'depth_min {batches.depth_min:g}')
    log.info('training %s: %d parameters, %d batches of %d per epoch (%s), %d validation '
             'spectra', config.extra.get('name', args.config), model.count_params(),
             len(batches), opts['batch_size'], split, len(X_val))
    init_score = starting_score(model, X_val, truth_val, config) if args.init_from else None
    history, info = fit_in_phases(model, as_pydataset(batches, workers=args.workers,
                                                          use_multiprocessing=args.worker_processes),
                                  (X_val, y_val), config, args.outdir, len(batches),
                                  nfrozen=args.freeze, unfreeze_epochs=args.unfreeze_epochs,
                                  unfreeze_lr_factor=args.unfreeze_lr_factor,
                                  val_truth=truth_val, verbose=args.verbose,
                                  checkpoint_card=checkpoint_card(setup, args, init,
                                                                  opts['seed']))
    info['init_val_score'] = compare_with_start(init_score, info, args.init_from)
    info['transfer'] = None if report is None and not args.freeze else dict(
        report.to_dict() if report is not None else {},
        # the selection applied (a QuasarNET file narrows 'all' to 'dense'), as requested
        init_layers=report.layers if report is not None else None,
        init_layers_requested=args.init_layers if report is not None else None,
        freeze=args.freeze,
        unfreeze_epochs=args.unfreeze_epochs, unfreeze_lr_factor=args.unfreeze_lr_factor)
    c_thresh, n_thresh, table, val_metrics, calibration = validation_summary(
        model, X_val, truth_val, config, grid_val, DEFAULT_REFINE_NOISE, setup_zrange(setup))
    final = dataclasses.replace(config, selection=Selection(float(c_thresh), int(n_thresh)))
    final = with_error_calibration(final, calibration['postprocess'])
    metadata = model_card(args, config, opts, batches, coadds, info, (c_thresh, n_thresh, table),
                          val_metrics, history, time.time() - t_start, nval_used=len(X_val),
                          setup=setup, init=init)
    metadata['error_calibration'] = calibration
    name = model_name(args, config)
    wpath, _ = save_model(os.path.join(args.outdir, f'{name}.weights.h5'), model, final, metadata)
    log.info('thresholds c_thresh=%.3f n_thresh=%d; validation score low/mid/high z: %s',
             c_thresh, n_thresh, ' / '.join(_score_text(val_metrics[r]['pe_score'])
                                            for r in ('lowz', 'midz', 'highz')))
    log.info('wrote %s (%.0f s in all)', wpath, time.time() - t_start)
    warn_left_models(earlier, name, args.outdir)
    return 0


def say_checkpoint(outdir, since):
    """Log where a stopped run's best checkpoint is, its epoch and score, and how to
    continue from it (nothing when the run wrote none after the time `since`)."""
    import json
    from ..train import CHECKPOINT, CHECKPOINT_CARD
    card = os.path.join(outdir or '', CHECKPOINT_CARD)
    try:
        if os.path.getmtime(card) < since:       # an earlier run's (--overwrite)
            return
        with open(card) as fx:
            meta = json.load(fx).get('metadata') or {}
    except (OSError, ValueError, AttributeError):
        return
    best = meta.get('checkpoint') or {}
    get_logger().info('the best checkpoint so far (epoch %s, %s %s) is kept in %s; continue '
                      'with --init-from it into another --outdir', best.get('epoch', '?'),
                      best.get('monitor', 'score'), best.get('value', '?'),
                      os.path.join(outdir, CHECKPOINT))


def check_init_not_replaced(args, name):
    """Refuse an ``--init-from`` file that this run would replace as it trains: the best
    checkpoint of its ``--outdir``, or the model of its own name there (``--overwrite``).

    The new run writes its first epoch's checkpoint over it, whether or not that epoch is
    better: the weights it continued from would be lost.

    Raises
    ------
    InputFileError
    """
    from ..train import CHECKPOINT, CHECKPOINT_CARD
    if not args.init_from or args.validation_only:
        return
    from ..io.modelfile import model_paths
    replaced = {os.path.realpath(os.path.join(args.outdir, f)) for f in (
        CHECKPOINT, CHECKPOINT_CARD, f'{name}.weights.h5',
        f'{name}.json')}
    named = {os.path.realpath(args.init_from)}
    if str(args.init_from).endswith(('.json', '.weights.h5')):
        named.update(os.path.realpath(p) for p in model_paths(args.init_from))
    if named & replaced:
        raise InputFileError(args.init_from, 'this run would replace it in --outdir as it '
                             'trains (its first epoch writes the checkpoint, better or not): '
                             'copy it elsewhere and --init-from the copy, or train into '
                             'another --outdir')


def starting_score(model, X_val, truth_val, config):
    """``val_score`` of `model` as loaded (``--init-from``), on the validation set."""
    from ..train import ValidationScore
    callback = ValidationScore(X_val, truth_val['CLASS'], truth_val['Z_TRUE'], config)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    return float(logs['val_score'])


def compare_with_start(init_score, info, init_from):
    """Warn when the ``--init-from`` weights scored better on the validation set than
    this run's best epoch (its model is then worse than what it started from); return the
    starting score for the card (None when not measured or not finite)."""
    if init_score is None or not np.isfinite(init_score):
        return None
    if info.get('monitor') == 'val_score' and init_score > info['best']:
        get_logger().warning('the starting network (the layers loaded from --init-from %s, '
                             'any others initialised from the seed) scored val_score %.4f '
                             'on this validation set, better than this run\'s best epoch '
                             '(%.4f): the run did not improve on it', init_from, init_score,
                             info['best'])
    return init_score


def warn_left_models(earlier, name, outdir):
    """Warn about models of an earlier run that ``--overwrite`` left under other names.

    They stay (this run replaced only the model of its own name and the checkpoint), but the
    directory's history, loss curve and validation set are now this run's.

    Parameters
    ----------
    earlier : list of str
        :func:`earlier_models` of `outdir` before the run.
    name : str
        This run's model name.
    outdir : str
    """
    from ..train import CHECKPOINT, CHECKPOINT_CARD
    mine = {f'{name}.json', f'{name}.weights.h5', CHECKPOINT,
            CHECKPOINT_CARD}
    for path in earlier:
        if os.path.basename(path) not in mine and os.path.exists(path):
            get_logger().warning("--overwrite: %s of an earlier run is still in %s; "
                                 "history.csv, loss.png and validation/ are this run's (%s)",
                                 path, outdir, name)
