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
``--`` is passed to desi_lbg_train (same data, seeds and budget for every γ).  Writes
``OUTDIR/gamma.csv``, ``OUTDIR/gamma.rst`` and ``OUTDIR/gamma.png`` (score against
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
    return args


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from desiutil.log import get_logger
    from lbgnet.config import etc_dir
    from lbgnet.experiments import evaluate_model, plot_tradeoff, rst_table, summary_row
    from lbgnet.io.experiments import write_config_yaml, write_table_csv
    from lbgnet.scripts.lbg_train import main as train
    log = get_logger()
    tests = regime_pairs(args.tests)            # before hours of training
    base = os.path.abspath(args.config if os.path.isfile(args.config)
                           else os.path.join(str(etc_dir()), args.config))
    rows = []
    val_dir = args.val_dir
    for gamma in args.gammas:
        name = f'gamma-{gamma:g}'
        rundir = os.path.join(args.outdir, name)
        cfg = write_config_yaml(os.path.join(args.outdir, f'{name}.yaml'),
                                {'base': base, 'name': name, 'loss': {'gamma': gamma}},
                                f'gamma study: {os.path.basename(base)} with loss.gamma = {gamma:g}')
        model = os.path.join(rundir, f'{name}.weights.h5')
        if not os.path.exists(model):
            opts = ['--config', cfg, '--outdir', rundir, '--verbose', '2'] + args.train_options
            if val_dir:
                opts += ['--val-dir', val_dir]
            if train(opts) != 0:
                log.error('training failed for gamma = %g', gamma)
                return 1
        val_dir = val_dir or os.path.join(rundir, 'validation')
        metrics = evaluate_model(model, tests, rundir)
        rows.append(summary_row(name, model, metrics))
    write_table_csv(os.path.join(args.outdir, 'gamma.csv'), rows)
    with open(os.path.join(args.outdir, 'gamma.rst'), 'w') as fx:
        fx.write(rst_table(rows, GAMMA_COLUMNS))
    plot_tradeoff(rows, os.path.join(args.outdir, 'gamma.png'),
                  title=f'γ study, {os.path.basename(base)}')
    log.info('wrote %s/gamma.csv, gamma.rst and gamma.png (%d values of gamma)', args.outdir,
             len(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
