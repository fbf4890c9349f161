"""
lbgnet.scripts.lbg_tune
=======================

``desi_lbg_tune``: Bayesian hyper-parameter search (optuna TPE) of the network of a
configuration, on a fixed simulated training set and a fixed validation set (files).

The study lives in an optuna storage (``--storage``, default an SQLite file in
``--workdir``): running the same command again resumes it, and ``--trials N`` is the
number of finished trials the study should hold in the end.  After the trials,
``<study>-trials.csv`` (one row per trial) and ``<study>-best.yaml`` (the best point as an
override of ``--config``) are written to ``--outdir``.
"""
import argparse
import math
import os
import shutil

from desiutil.log import get_logger

from ..config import (ConfigError, check_names, etc_dir, load_config, mapping_sha256,
                      read_yaml_config)
from ..io import InputFileError
from ..io.atomic import owner_tag, remove_leftovers
from ..io.catalog import OutputFileError, check_outdir
from ..tflog import import_tensorflow


def parse(options=None):
    """Parse the command line of ``desi_lbg_tune``."""
    parser = argparse.ArgumentParser(description='Bayesian hyper-parameter search (optuna) of '
                                     'the LBG network; resumable.')
    parser.add_argument('--config', required=True, help='base configuration (etc/lbgnet-*.yaml); '
                        'its optional "tune" section overrides the search space')
    parser.add_argument('--trials', type=int, required=True,
                        help='finished (complete or pruned) trials the study should hold')
    parser.add_argument('--budget-minutes', type=float,
                        help='stop starting new trials after this many minutes [none]')
    parser.add_argument('--study-name', help='optuna study name [<config name>-tune]')
    parser.add_argument('--storage', help='optuna storage URL [sqlite:///WORKDIR/study.sqlite3]')
    parser.add_argument('--outdir', required=True,
                        help='where the results table and best config go')
    parser.add_argument('--workdir', help='study database, validation files, per-trial '
                        'histories (WORKDIR/<study name>/trial_<nnnn>) [./tune-<study name>]')
    parser.add_argument('--val-dir', help='existing validation coadd-*/truth-* files '
                        '[simulated once into WORKDIR/validation-n<NVAL>-seed<SEED>-sim<HASH>]')
    parser.add_argument('--ntrain', type=int, default=20000,
                        help='spectra of the fixed training set [%(default)s]')
    parser.add_argument('--nval', type=int, default=3000,
                        help='validation spectra when simulated [%(default)s]')
    parser.add_argument('--trial-epochs', type=int, default=8,
                        help='training epochs per trial [%(default)s]')
    parser.add_argument('--trial-minutes', type=float,
                        help='wall-clock cap of each trial\'s training [none]')
    parser.add_argument('--batch-size', type=int, help='batch size [training.batch_size]')
    parser.add_argument('--seed', type=int, default=1,
                        help='seed of the data, the sampler and the networks [%(default)s]')
    parser.add_argument('--startup-trials', type=int, default=10,
                        help='random trials before TPE takes over [%(default)s]')
    parser.add_argument('--no-prune', action='store_true',
                        help='never stop a trial early (median pruner off)')
    args = parser.parse_args(options)
    if args.trials < 1 or args.ntrain < 1 or args.nval < 1 or args.trial_epochs < 1:
        parser.error('--trials, --ntrain, --nval and --trial-epochs must be >= 1')
    for flag in ('--trial-minutes', '--budget-minutes'):
        value = getattr(args, flag[2:].replace('-', '_'))
        if value is not None and not (math.isfinite(value) and value > 0):
            parser.error(f'{flag} must be a finite number > 0 (leave it out for no limit), '
                         f'not {value:g}')
    if not 0 <= args.seed < 2 ** 32:          # as desi_lbg_train (numpy's and optuna's range)
        parser.error(f'--seed must be in [0, 2**32 - 1], not {args.seed}')
    if args.startup_trials < 0:
        parser.error(f'--startup-trials must be >= 0, not {args.startup_trials}')
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, not {args.batch_size}')
    name = args.study_name
    if name is not None and (not name.strip() or name in ('.', '..')
                             or any(sep and sep in name for sep in (os.sep, os.altsep))):
        # it names the trials' folder and the result files: a path would put them
        # outside --workdir and --outdir
        parser.error(f'--study-name must be a plain name (it names files and a folder), '
                     f'not {args.study_name!r}')
    return args


def main(args=None, comm=None):
    """Run ``desi_lbg_tune``; return 0 on success, 1 on an input, configuration, storage or
    output error (one line, logged)."""
    if not isinstance(args, argparse.Namespace):
        args = parse(args)
    log = get_logger()
    try:
        import_tensorflow(train=True)
    except ConfigError as err:          # a Keras backend that cannot train here
        log.error('%s', err)
        return 1
    from ..io.catalog import missing_directories, remove_empty
    # the default --workdir depends on the study name: the directories made before a
    # failure are found as those that did not exist, and removed if still empty
    candidates = [os.path.join(d, 'x') for d in (args.outdir, args.workdir) if d]
    created = missing_directories(candidates)
    try:
        return _tune(args, log)
    except (InputFileError, ConfigError, OutputFileError) as err:
        log.error('%s', err)
        remove_empty(created)          # a run that failed early leaves no empty directory
        return 1


def study_setup(args, config):
    """The simulator set-up of the study (``training.simulation`` of the configuration),
    checked against the configuration (grid, lines)."""
    from ..train import training_options
    from .lbg_train import check_compatible, simulation_setup
    opts = training_options(config, batch_size=args.batch_size)
    setup = simulation_setup(config, opts, args.config)
    check_compatible(config, setup.config)
    return setup


def validation_dir(args, workdir, setup):
    """``--val-dir``, or the folder of the simulated validation set of this ``--nval``,
    ``--seed`` and simulator configuration (:func:`lbgnet.tune.simulation_hash`):
    ``WORKDIR/validation-n<NVAL>-seed<SEED>-sim<HASH>``."""
    from ..tune import simulation_hash
    if args.val_dir:
        return args.val_dir
    return os.path.join(workdir, f'validation-n{args.nval}-seed{args.seed}-sim'
                        f'{simulation_hash(setup)}')


def write_validation_set(setup, val_dir, nval, seed, simulation):
    """Simulate the validation set `val_dir` (:func:`lbgnet.scripts.lbg_train.write_validation`)
    into a hidden directory beside it, ``.NAME.tmp<pid>-<host>``, renamed into place once
    complete: a resumed study finds its own set, another ``--nval``/``--seed``/simulator gets
    its own, and a run stopped while writing leaves nothing behind (nor anything a later run
    would take for a validation set).  The hidden directories of runs killed outright
    (``kill -9``) are removed first (:func:`lbgnet.io.atomic.remove_leftovers`)."""
    from .lbg_train import write_validation
    remove_leftovers([val_dir])
    head, name = os.path.split(val_dir)
    partial = os.path.join(head, f'.{name}.{owner_tag()}')
    shutil.rmtree(partial, ignore_errors=True)
    try:
        write_validation(setup, partial, nval, seed, simulation)
        os.rename(partial, val_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def tuning_data(args, config, workdir, setup=None):
    """The fixed training set (simulated) and validation set (files) of the study.

    `setup`: the simulator set-up (:func:`study_setup`, made here when None).  The
    validation truth keeps the classes of the files (:class:`lbgnet.tune.TuneData`).
    """
    from ..tune import TuneData, simulate_training_set
    from ..train import training_options
    from .lbg_train import check_validation_targets, find_validation, read_labelled
    opts = training_options(config, batch_size=args.batch_size)
    if setup is None:
        setup = study_setup(args, config)
    val_dir = validation_dir(args, workdir, setup)
    if not (args.val_dir or os.path.isdir(val_dir)):
        write_validation_set(setup, val_dir, args.nval, args.seed, opts['simulation'])
    coadds, truths = find_validation(val_dir)
    X_val, _, truth_val = read_labelled(coadds, truths, config)
    check_validation_targets(truth_val, config, val_dir)
    X_train, truth_train = simulate_training_set(setup, args.ntrain, args.seed, opts['batch_size'])
    log = get_logger()
    log.info('tuning data: %d training spectra (simulated, seed %d), %d validation spectra '
             'from %s', len(X_train), args.seed, len(X_val), val_dir)
    return TuneData(X_train, truth_train, X_val, truth_val)


def _tune(args, log):
    import dataclasses
    from ..io.atomic import Terminated
    from ..targets import apply_target
    from ..train import training_options
    from ..tune import (Objective, check_study_settings, config_hash, fail_stale, finished_trials,
                        results_storage, run_study, search_space, simulation_hash,
                        space_record, storage_label, validation_digest, write_results)
    config = apply_target(load_config(args.config))
    # the configuration as the study reads it now: its best YAML pins this base
    base_sha256 = mapping_sha256(read_yaml_config(_config_path(args.config)))
    check_names(config)                        # the trials name layers and files by them
    if args.batch_size:
        training = dict(config.extra.get('training') or {}, batch_size=args.batch_size)
        config = dataclasses.replace(config, extra=dict(config.extra, training=training))
    search_space(config)                       # fail now on a bad tune section, not later
    name = args.study_name or f'{config.extra.get("name") or "lbgnet"}-tune'
    workdir = os.path.abspath(args.workdir or f'tune-{name}')
    outdir = args.outdir
    # before the study and the trials (hours): the results go to --outdir at the end
    check_outdir(outdir, name=f'--outdir {outdir}')
    check_outdir(workdir, name=f'--workdir {workdir}')
    storage = args.storage or f'sqlite:///{os.path.join(workdir, "study.sqlite3")}'
    best_path = os.path.join(outdir, f'{name}-best.yaml')
    owner = results_storage(best_path)
    if owner is not None and owner != storage_label(storage):   # another study's: kept
        raise ConfigError(f'--outdir {outdir}: {os.path.basename(best_path)} holds the '
                          f'results of the study {name!r} in {owner}, not '
                          f'{storage_label(storage)}: use another --outdir or --study-name')
    if args.val_dir and not os.path.isdir(args.val_dir):     # before blaming the study
        raise InputFileError(args.val_dir, 'no such directory' if not os.path.exists(args.val_dir)
                             else 'not a directory (--val-dir takes a validation set directory)')
    setup = study_setup(args, config)          # the simulator, for its hash (and the data)
    study = _open_study(storage, name, args)
    check_study_settings(study, {
        'ntrain': args.ntrain, 'trial_epochs': args.trial_epochs,
        'trial_minutes': args.trial_minutes, 'seed': args.seed,
        'batch_size': training_options(config)['batch_size'],
        'val_dir': os.path.abspath(args.val_dir) if args.val_dir else None,
        # what --val-dir holds, not only its path: other files there score other trials
        'val_files': validation_digest(args.val_dir) if args.val_dir else None,
        'nval': None if args.val_dir else args.nval,
        'search_space': space_record(config), 'config_hash': config_hash(config),
        'simulation_hash': simulation_hash(setup)}, f'{storage_label(storage)} (study {name})')
    fail_stale(study)      # also when nothing is left to run: the table must not say RUNNING
    if len(finished_trials(study)) < args.trials:
        data = tuning_data(args, config, workdir, setup)
        objective = Objective(config, data, workdir, args.trial_epochs, args.trial_minutes,
                              args.seed)
        try:
            run_study(study, objective, args.trials, args.budget_minutes)
        except Terminated:         # the trials finished so far: their table and best config
            try:
                write_results(study, config, _config_path(args.config), outdir, storage,
                              base_sha256)
                log.info('results of the finished trials written to %s', outdir)
            except (OSError, ValueError) as err:
                log.error('--outdir %s: cannot write the results (%s)', outdir, err)
            raise
    try:
        paths = write_results(study, config, _config_path(args.config), outdir, storage,
                              base_sha256)
    except OSError as err:        # the study is safe in its storage: a rerun writes them
        log.error('--outdir %s: cannot write the results (%s); rerun the same command to '
                  'write them', outdir, err)
        return 1
    log.info('study %s (%s): %d trials, %d finished; table %s', name, storage_label(storage),
             len(study.trials), len(finished_trials(study)), paths['table'])
    if paths['best']:
        log.info('best trial %d: mean validation score %.4f, %s; config %s',
                 study.best_trial.number, study.best_value, study.best_params, paths['best'])
    return 0


def _open_study(storage, name, args):
    """Open or create the study (:func:`lbgnet.tune.open_study`) named `name` in `storage`.

    Parameters
    ----------
    storage : str
        Optuna storage URL (``--storage``).
    name : str
        Study name.
    args : argparse.Namespace
        ``seed``, ``startup_trials`` and ``no_prune`` of the command line.

    Returns
    -------
    optuna.Study

    Raises
    ------
    lbgnet.config.ConfigError
        When the storage cannot be opened (bad URL, missing driver, unreadable or foreign
        database): one line naming ``--storage``.
    """
    import sqlalchemy.exc
    from optuna.exceptions import OptunaError
    from ..tune import hide_password, open_study, storage_label
    try:
        return open_study(storage, name, seed=args.seed, startup_trials=args.startup_trials,
                          prune=not args.no_prune)
    except (sqlalchemy.exc.SQLAlchemyError, OptunaError, ValueError, ImportError,
            RuntimeError, OSError) as err:
        problem = hide_password((str(err).strip().splitlines() or [type(err).__name__])[0])
        hint = (f'; a database file is given as sqlite:///{os.path.abspath(storage)}'
                if '://' not in str(storage) else '')
        raise ConfigError(f'--storage {storage_label(storage)}: cannot open the study {name!r} '
                          f'({problem}){hint}') from None


def _config_path(name):
    """File path of a configuration given as a path or as a file name in etc/."""
    return name if os.path.isfile(name) else os.path.join(str(etc_dir()), name)
