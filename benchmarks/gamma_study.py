#!/usr/bin/env python
"""γ study: train one model per offset-loss weight γ and tabulate score vs σ_NMAD.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/gamma_study.py --config etc/lbgnet-default.yaml \
        --gammas 0.1 0.3 1 3 10 --outdir runs/gamma \
        --tests lowz=runs/test-lowz midz=runs/test-midz highz=runs/test-highz \
        [--val-dir runs/val3000] [-- desi_lbg_train options, e.g. --epochs 20 --ntrain 25600]

For each γ, ``OUTDIR/gamma-<γ>.yaml`` (``base:`` the config, ``loss.gamma: γ``) is written
and trained with desi_lbg_train into ``OUTDIR/gamma-<γ>/`` (skipped when its model exists,
so an interrupted study resumes), then evaluated on the test sets.  Everything after
``--`` is passed to desi_lbg_train (same data, seeds and budget for every γ).  Without a
``--val-dir`` (here or among those options), the first γ's validation set
(``OUTDIR/gamma-<γ>/validation``) is used by the others.  The test directories are
checked before any training.  A γ whose training or evaluation fails is reported in one
line and the others go on; the tables then hold the γ that worked and the exit status is 1.
Writes ``OUTDIR/gamma.csv``, ``OUTDIR/gamma.rst`` and ``OUTDIR/gamma.png`` (score against
σ_NMAD, one curve per regime, points labelled by γ).
"""
import argparse
import os
import sys

from experiment_table import regime_pairs

GAMMA_COLUMNS = (('gamma', 'γ', 'g'), ('score_lowz', 'score low', '.3f'),
                 ('score_midz', 'mid', '.3f'), ('score_highz', 'high', '.3f'),
                 ('sigma_nmad_lowz', 'σ_NMAD low', '.2e'), ('sigma_nmad_midz', 'mid', '.2e'),
                 ('sigma_nmad_highz', 'high', '.2e'), ('frac_dz_midz', '|Δz|<0.05 mid', '.3f'),
                 ('train_minutes', 'train min', '.1f'))


def parse(options=None):
    options = sys.argv[1:] if options is None else list(options)
    extra = options[options.index('--') + 1:] if '--' in options else []
    options = options[:options.index('--')] if '--' in options else options
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', required=True, help='base configuration')
    parser.add_argument('--gammas', nargs='+', type=float, required=True, help='γ values')
    parser.add_argument('--outdir', required=True)
    parser.add_argument('--tests', nargs='+', required=True, metavar='REGIME=DIR')
    parser.add_argument('--val-dir', help='shared validation files [written by the first run]')
    args = parser.parse_args(options)
    args.train_options = extra
    other = option_value(extra, '--val-dir')
    if args.val_dir and other is not None and \
            os.path.abspath(other) != os.path.abspath(args.val_dir):
        parser.error(f'--val-dir {args.val_dir} and, after "--", --val-dir {other}: give one')
    return args


def option_value(options, flag):
    """The value of `flag` in the command-line `options` (``--flag VALUE`` or
    ``--flag=VALUE``; the last one, as argparse takes it), None when absent."""
    value = None
    for i, opt in enumerate(options):
        if opt == flag:
            value = options[i + 1] if i + 1 < len(options) else ''
        elif opt.startswith(flag + '='):
            value = opt[len(flag) + 1:]
    return value


def check_tests(tests, outdir, gammas):
    """One line per test directory without test files (before hours of training), unless
    every γ has metrics made from it (:func:`lbgnet.experiments.metrics_are_of`: a resumed
    study whose test files are gone)."""
    from lbgnet.experiments import metrics_are_of, test_files
    from lbgnet.io import InputFileError
    problems = []
    for regime, test_dir in tests.items():
        try:
            test_files(test_dir)
        except InputFileError as err:
            rundirs = [os.path.join(outdir, f'gamma-{g:g}') for g in gammas]
            kept = all(metrics_are_of(os.path.join(d, f'eval-{regime}', 'metrics.json'),
                                      os.path.join(d, f'{os.path.basename(d)}.weights.h5'),
                                      None, test_dir) for d in rundirs)
            if not kept:
                problems.append(f'--tests {regime}={test_dir}: {err.problem}')
    return problems


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from desiutil.log import get_logger
    from lbgnet.config import etc_dir
    from lbgnet.experiments import evaluate_model, plot_tradeoff, rst_table, summary_row
    from lbgnet.io.catalog import OutputFileError, check_outdir
    from lbgnet.io.experiments import write_config_yaml, write_table_csv, write_text
    from lbgnet.scripts.lbg_train import main as train
    log = get_logger()
    tests = regime_pairs(args.tests)            # before hours of training
    problems = check_tests(tests, args.outdir, args.gammas)
    try:
        check_outdir(args.outdir, name=f'--outdir {args.outdir}')
    except OutputFileError as err:
        problems.append(str(err))
    for problem in problems:
        log.error('%s', problem)
    if problems:
        return 1
    base = os.path.abspath(args.config if os.path.isfile(args.config)
                           else os.path.join(str(etc_dir()), args.config))
    rows, status = [], 0
    # the validation set: --val-dir (before or after "--"), else the first trained γ's
    own_val = option_value(args.train_options, '--val-dir') is not None
    val_dir = args.val_dir
    for gamma in args.gammas:
        name = f'gamma-{gamma:g}'
        rundir = os.path.join(args.outdir, name)
        model = os.path.join(rundir, f'{name}.weights.h5')
        try:
            cfg = write_config_yaml(os.path.join(args.outdir, f'{name}.yaml'),
                                    {'base': base, 'name': name, 'loss': {'gamma': gamma}},
                                    f'gamma study: {os.path.basename(base)} with loss.gamma = '
                                    f'{gamma:g}')
            if not os.path.exists(model):
                opts = ['--config', cfg, '--outdir', rundir, '--verbose', '2'] + args.train_options
                if val_dir and not own_val:
                    opts += ['--val-dir', val_dir]
                if train(opts) != 0:
                    raise RuntimeError('desi_lbg_train failed (its error is above)')
            if not (val_dir or own_val) and os.path.isdir(os.path.join(rundir, 'validation')):
                val_dir = os.path.join(rundir, 'validation')
            metrics = evaluate_model(model, tests, rundir)
            rows.append(summary_row(name, model, metrics))
        except (RuntimeError, ValueError, OSError) as err:
            log.error('gamma = %g: %s; going on with the other values', gamma, err)
            status = 1
    if not rows:
        log.error('no value of gamma was trained and evaluated: no table written')
        return 1
    write_table_csv(os.path.join(args.outdir, 'gamma.csv'), rows)
    write_text(os.path.join(args.outdir, 'gamma.rst'), rst_table(rows, GAMMA_COLUMNS))
    plot_tradeoff(rows, os.path.join(args.outdir, 'gamma.png'),
                  title=f'γ study, {os.path.basename(base)}')
    log.info('wrote %s/gamma.csv, gamma.rst and gamma.png (%d of %d values of gamma)',
             args.outdir, len(rows), len(args.gammas))
    return status


if __name__ == '__main__':
    sys.exit(main())
