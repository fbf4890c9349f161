#!/usr/bin/env python
"""Results table of doc/experiments.rst: evaluate models on the held-out tests, one row each.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/experiment_table.py --outdir runs/table \
        --tests lowz=runs/test-lowz midz=runs/test-midz highz=runs/test-highz \
        --model initial=runs/initial/lbgnet-initial.weights.h5 \
                shipped=py/lbgnet/data/lbgnet-default.weights.h5 ...

Each model is evaluated with desi_lbg_evaluate on every test directory (skipped when
``OUTDIR/<name>/eval-<regime>/metrics.json`` exists for that model and those test files;
``--force`` re-evaluates).  Writes
``OUTDIR/results.csv`` (every column of lbgnet.experiments.summary_row) and
``OUTDIR/results.rst`` (the table of doc/experiments.rst) and ``OUTDIR/purity_efficiency.png``
(purity against efficiency of every model, one panel per regime), each written under a
temporary name then renamed.  Returns 1 if a model fails, or (one line, before any
evaluation) when ``--outdir`` cannot be a writable directory.
"""
import argparse
import os
import sys


def pairs(values, what, names=None):
    """``NAME=PATH`` values as a dict; `names`: the allowed names (others are an error)."""
    out = {}
    for value in values:
        name, sep, path = value.partition('=')
        if not sep or not name or not path:
            raise SystemExit(f'{what} must be NAME=PATH, not {value!r}')
        if names is not None and name not in names:
            raise SystemExit(f'{what} {value}: {name!r} is not one of {", ".join(names)}')
        out[name] = path
    return out


def regime_pairs(values):
    """``--tests`` pairs; the regime names are those the tables have (a misspelt one gave
    an empty row after the whole evaluation)."""
    from lbgnet.evaluate import REGIMES
    return pairs(values, '--tests', tuple(REGIMES))


def parse(options=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', nargs='+', required=True, metavar='NAME=FILE',
                        help='models (NAME.weights.h5), in table order')
    parser.add_argument('--tests', nargs='+', required=True, metavar='REGIME=DIR',
                        help='held-out test directories (desi_lbg_mock output) per regime')
    parser.add_argument('--outdir', required=True, help='evaluations and tables')
    parser.add_argument('--force', action='store_true', help='re-evaluate existing metrics')
    return parser.parse_args(options)


def main(args=None):
    args = parse(args) if not isinstance(args, argparse.Namespace) else args
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from desiutil.log import get_logger
    from lbgnet.experiments import evaluate_model, plot_pe_comparison, rst_table, summary_row
    from lbgnet.io.catalog import OutputFileError, check_outdir
    from lbgnet.io.experiments import write_table_csv, write_text
    log = get_logger()
    tests = regime_pairs(args.tests)
    models = pairs(args.model, '--model')
    try:                                        # before the evaluations
        check_outdir(args.outdir, name=f'--outdir {args.outdir}')
    except OutputFileError as err:
        log.error('%s', err)
        return 1
    rows, status, curves = [], 0, {}
    for name, path in models.items():
        try:
            metrics = evaluate_model(path, tests, os.path.join(args.outdir, name), args.force)
            rows.append(summary_row(name, path, metrics))
            curves[name] = metrics
        except (RuntimeError, ValueError) as err:
            log.error('%s: %s', name, err)
            status = 1
    write_table_csv(os.path.join(args.outdir, 'results.csv'), rows)
    write_text(os.path.join(args.outdir, 'results.rst'), rst_table(rows))
    if curves:
        plot_pe_comparison(curves, os.path.join(args.outdir, 'purity_efficiency.png'))
    log.info('wrote %s/results.csv, results.rst and purity_efficiency.png (%d models)',
             args.outdir, len(rows))
    return status


if __name__ == '__main__':
    sys.exit(main())
