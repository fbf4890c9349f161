"""
lbgnet.scripts.lbg_train
========================

``desi_lbg_train``: train the line finder on simulated spectra.

* Training batches are simulated afresh every epoch by :class:`lbgnet.sim.generator.MockBatches`
  (new objects at continuous redshift and magnitude, new noise at a random exposure time,
  online augmentation), with the simulation configuration named in ``training.simulation``.
* Validation uses a fixed mock set written to files (coadd, redrock, truth) and read back
  through the production reader (:func:`lbgnet.preprocess.load_coadd_grid`); it drives
  early stopping and the best checkpoint, and then fixes the default selection thresholds.
* Output in ``--outdir``: ``<name>.weights.h5`` + ``<name>.json`` (model and model card),
  ``history.csv``, ``loss.png``, ``checkpoint.weights.h5`` and ``validation/``.

Seeds: training batch ``i`` of epoch ``e`` uses the stream ``(seed, e, i)``; the validation
files use ``(seed + VALIDATION_SEED_OFFSET, file)``, never a training stream.
"""
import argparse
import dataclasses
import glob
import os
import platform
import time

import numpy as np
from desiutil.log import get_logger

from ..config import ConfigError, Selection, load_config
from ..io import InputFileError

#: Offset between the training seed and the seed of the validation files.
VALIDATION_SEED_OFFSET = 10_000
#: Spectra per validation file.
VALIDATION_FILE_SIZE = 1000


def parse(options=None):
    """Parse the command line of ``desi_lbg_train``."""
    parser = argparse.ArgumentParser(description='Train the LBG line finder on simulated spectra.')
    parser.add_argument('--config', required=True, help='model configuration (etc/lbgnet-*.yaml)')
    parser.add_argument('--outdir', required=True, help='output directory')
    parser.add_argument('--epochs', type=int, help='maximum epochs [training.epochs]')
    parser.add_argument('--batch-size', type=int, help='spectra per batch [training.batch_size]')
    parser.add_argument('--seed', type=int, help='random seed [training.seed]')
    parser.add_argument('--ntrain', type=int, help='training spectra per epoch [training.ntrain]')
    parser.add_argument('--nval', type=int, help='validation spectra [training.nval]')
    parser.add_argument('--learning-rate', type=float, help='Adam learning rate [training.learning_rate]')
    parser.add_argument('--max-minutes', type=float,
                        help='stop after the epoch that would end past this wall-clock budget '
                        '[training.max_minutes, none]')
    parser.add_argument('--patience', type=int,
                        help='epochs without a better validation score before stopping '
                        '[training.patience]')
    parser.add_argument('--lr-schedule', choices=('constant', 'cosine', 'cosine_time'),
                        help='learning-rate schedule: cosine decays over the planned epochs, '
                        'cosine_time over --max-minutes [training.lr_schedule]')
    parser.add_argument('--val-dir', help='directory of validation coadd-*/truth-* files '
                        '[generate them under OUTDIR/validation]')
    parser.add_argument('--validation-only', action='store_true',
                        help='only write the validation set (--nval spectra, --seed) under '
                        'OUTDIR/validation and stop, for reuse with --val-dir')
    parser.add_argument('--init-from', help='initialise from this lbgnet model file or '
                        'QuasarNET-format Keras .h5 (layers with equal names and shapes; '
                        'lbgnet.transfer)')
    parser.add_argument('--init-layers', choices=('conv', 'dense', 'all'), default='all',
                        help='layers taken from --init-from: conv (+ batch norms), dense (conv '
                        'and fc_common), all [%(default)s]')
    parser.add_argument('--freeze', type=int, default=0, metavar='N',
                        help='freeze the first N trunk layers (conv_1.., then fc_common) '
                        '[%(default)s]')
    parser.add_argument('--unfreeze-epochs', type=int, default=0, metavar='K',
                        help='unfreeze everything for the last K of the epochs [%(default)s]')
    parser.add_argument('--unfreeze-lr-factor', type=float, default=0.1,
                        help='learning-rate factor of the unfrozen phase [%(default)s]')
    parser.add_argument('--workers', type=int, default=2,
                        help='threads simulating batches ahead of training [%(default)s]')
    parser.add_argument('--name', help='model file name (without extension) [config name]')
    parser.add_argument('--verbose', type=int, choices=(0, 1, 2), default=1,
                        help='Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch '
                        '[%(default)s]')
    args = parser.parse_args(options)
    if args.freeze < 0 or args.unfreeze_epochs < 0:
        parser.error('--freeze and --unfreeze-epochs must be >= 0')
    if args.unfreeze_epochs and not args.freeze:
        parser.error('--unfreeze-epochs needs --freeze N > 0')
    if args.validation_only and args.val_dir:
        parser.error('--validation-only writes a validation set; --val-dir reads one')
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
    """Simulate the validation set into files; returns the coadd and truth paths."""
    from ..io.mock import write_mock
    from ..sim.mock import make_mock
    log = get_logger()
    coadds, truths = [], []
    nfiles = max(1, -(-nval // VALIDATION_FILE_SIZE))
    for ifile in range(nfiles):
        nspec = min(VALIDATION_FILE_SIZE, nval - ifile * VALIDATION_FILE_SIZE)
        rng = np.random.default_rng([seed + VALIDATION_SEED_OFFSET, ifile])
        mock = make_mock(setup, nspec, rng, pixel=ifile, with_resolution=False)
        paths = write_mock(outdir, mock, config_name)
        coadds.append(paths['coadd'])
        truths.append(paths['truth'])
    log.info('wrote %d validation spectra in %d files under %s', nval, nfiles, outdir)
    return coadds, truths


def find_validation(val_dir):
    """Coadd and truth files of an existing validation directory (paired by name)."""
    coadds = sorted(glob.glob(os.path.join(val_dir, 'coadd-*.fits')))
    truths = [os.path.join(val_dir, 'truth-' + os.path.basename(c)[len('coadd-'):]) for c in coadds]
    if not coadds:
        raise InputFileError(val_dir, 'no coadd-*.fits validation files')
    return coadds, truths


def read_labelled(coadds, truths, config):
    """Network input, targets and truth of mock files, through the production reader.

    Spectra of dead fibres (``COADD_FIBERSTATUS != 0``) or without valid pixels are left out.
    A truth file whose content does not match its coadd's ``TRUTHSUM`` is refused, as in
    ``desi_lbg_evaluate``.

    Returns
    -------
    X : numpy.ndarray
        (n, nbins, 2).
    y : numpy.ndarray
        (n, nlines, nboxes, 2).
    truth : dict of numpy.ndarray
        CLASS, Z_TRUE, RMAG in the order of `X`.
    """
    from astropy.table import vstack
    from ..io.evaluation import match_rows, read_coadd_for_evaluation
    from ..io.mock import check_truth_matches, read_truth
    Xs, tables = [], []
    for coadd, truth_path in zip(coadds, truths):
        X, targetid, good, _ = read_coadd_for_evaluation(coadd, config)
        truth = read_truth(truth_path)
        check_truth_matches(coadd, truth_path, truth)
        Xs.append(X[good])
        tables.append(truth[match_rows(np.asarray(truth['TARGETID']), targetid[good], truth_path)])
    truth = vstack(tables)
    y = TruthEncoder(config)(truth)
    return np.concatenate(Xs), y, {k: np.asarray(truth[k]) for k in ('CLASS', 'Z_TRUE', 'RMAG')}


def validation_summary(model, X, truth, config):
    """Choose the thresholds on the validation set and report its metrics at them."""
    from ..evaluate import evaluate_predictions
    from ..predict import catalog_from_raw, choose_catalog_thresholds, predict_raw
    raw = predict_raw(model, X, config)
    c_thresh, n_thresh, table = choose_catalog_thresholds(raw, truth, config)
    res = catalog_from_raw(raw, config, c_thresh=c_thresh, n_thresh=n_thresh)
    metrics = evaluate_predictions(truth, res, c_thresh)
    brief = {name: {'pe_score': m['pe_score'], 'efficiency': m['efficiency'],
                    'purity': m['purity'], **m['redshift']} for name, m in metrics.items()}
    return c_thresh, n_thresh, table, brief


def main(args=None, comm=None):
    """Run ``desi_lbg_train``; return 0 on success, 1 on an input or configuration error."""
    if not isinstance(args, argparse.Namespace):
        args = parse(args)
    log = get_logger()
    t_start = time.time()
    try:
        return _train(args, log, t_start)
    except (InputFileError, ConfigError) as err:
        log.error('%s', err)
        return 1


def training_setup(args):
    """Configuration with the command-line overrides, and the simulator setup."""
    from ..sim.mock import load_mock_setup
    from ..targets import apply_target
    from ..train import training_options
    config = apply_target(load_config(args.config))
    opts = training_options(config, epochs=args.epochs, batch_size=args.batch_size,
                            seed=args.seed, ntrain=args.ntrain, nval=args.nval,
                            learning_rate=args.learning_rate, max_minutes=args.max_minutes,
                            lr_schedule=args.lr_schedule, patience=args.patience)
    config = dataclasses.replace(config, extra=dict(config.extra, training=opts))
    if not opts['simulation']:
        raise ConfigError(f'{config.source}: training.simulation names no simulation config')
    setup = load_mock_setup(opts['simulation'])
    check_compatible(config, setup.config)
    return config, opts, setup


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
    report = transfer_init(model, init_from, init_layers) if init_from else None
    if report is not None and not report.loaded:
        raise InputFileError(init_from, f'no layer of {init_layers!r} fits this network '
                             f'({len(report.incompatible)} with other shapes, '
                             f'{len(report.missing)} absent): nothing to initialise from')
    return model, report


def model_card(args, config, opts, batches, coadds, info, thresholds, val_metrics, history,
               seconds):
    """Metadata stored with the model: training recipe, time, thresholds, validation metrics."""
    from ..sim.mock import simulator_hash
    c_thresh, n_thresh, table = thresholds
    return {
        'training': {'config': os.path.basename(config.source), 'options': opts,
                     'simulator_hash': simulator_hash(batches.setup),
                     'generator': {'batches_per_epoch': len(batches),
                                   'augment': dataclasses.asdict(batches.augment),
                                   'efftime_range': list(batches.efftime_range),
                                   'seed_streams': '(seed, epoch, batch)'},
                     'validation_files': [os.path.basename(c) for c in coadds],
                     'validation_dir': args.val_dir,
                     'validation_seed': (None if args.val_dir
                                         else opts['seed'] + VALIDATION_SEED_OFFSET),
                     'init_from': args.init_from, **info, 'total_seconds': seconds,
                     'cpu_count': os.cpu_count(), 'machine': platform.machine()},
        'thresholds': {'c_thresh': float(c_thresh), 'n_thresh': int(n_thresh),
                       'candidates': {str(k): v for k, v in table.items()},
                       'chosen_on': 'validation: n_thresh maximising the mean purity=efficiency '
                                    'score over the z regimes; c_thresh at purity=efficiency'},
        'validation_metrics': val_metrics,
        'history': history,
    }


def _train(args, log, t_start):
    from ..io.modelfile import save_model
    from ..sim.generator import MockBatches, as_pydataset
    from ..targets import metric_truth
    from ..train import set_seeds
    from ..transfer import fit_in_phases
    config, opts, setup = training_setup(args)
    set_seeds(opts['seed'])
    os.makedirs(args.outdir, exist_ok=True)
    if args.val_dir:
        coadds, truths = find_validation(args.val_dir)
    else:
        coadds, truths = write_validation(setup, os.path.join(args.outdir, 'validation'),
                                          opts['nval'], opts['seed'], opts['simulation'])
        if args.validation_only:
            log.info('validation set written (--validation-only); reuse it with --val-dir %s',
                     os.path.join(args.outdir, 'validation'))
            return 0
    X_val, y_val, truth_val = read_labelled(coadds, truths, config)
    truth_val = metric_truth(truth_val, config)
    batches = MockBatches(setup, encode=TruthEncoder(config), batch_size=opts['batch_size'],
                          batches_per_epoch=max(1, opts['ntrain'] // opts['batch_size']),
                          seed=opts['seed'])
    model, report = initial_model(config, args.init_from, args.init_layers)
    if args.freeze and not args.init_from:
        log.warning('--freeze %d without --init-from freezes randomly initialised layers',
                    args.freeze)
    log.info('training %s: %d parameters, %d batches of %d per epoch, %d validation spectra',
             config.extra.get('name', args.config), model.count_params(), len(batches),
             opts['batch_size'], len(X_val))
    history, info = fit_in_phases(model, as_pydataset(batches, workers=args.workers),
                                  (X_val, y_val), config, args.outdir, len(batches),
                                  nfrozen=args.freeze, unfreeze_epochs=args.unfreeze_epochs,
                                  unfreeze_lr_factor=args.unfreeze_lr_factor,
                                  val_truth=truth_val, verbose=args.verbose)
    info['transfer'] = None if report is None else dict(
        report.to_dict(), init_layers=args.init_layers, freeze=args.freeze,
        unfreeze_epochs=args.unfreeze_epochs, unfreeze_lr_factor=args.unfreeze_lr_factor)
    c_thresh, n_thresh, table, val_metrics = validation_summary(model, X_val, truth_val, config)
    final = dataclasses.replace(config, selection=Selection(float(c_thresh), int(n_thresh)))
    metadata = model_card(args, config, opts, batches, coadds, info, (c_thresh, n_thresh, table),
                          val_metrics, history, time.time() - t_start)
    name = args.name or str(config.extra.get('name') or os.path.splitext(
        os.path.basename(args.config))[0])
    wpath, _ = save_model(os.path.join(args.outdir, f'{name}.weights.h5'), model, final, metadata)
    log.info('thresholds c_thresh=%.3f n_thresh=%d; validation score low/mid/high z: %s',
             c_thresh, n_thresh, ' / '.join(str(val_metrics[r]['pe_score'])
                                            for r in ('lowz', 'midz', 'highz')))
    log.info('wrote %s (%.0f s in all)', wpath, time.time() - t_start)
    return 0
