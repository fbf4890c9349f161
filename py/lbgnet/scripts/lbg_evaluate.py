"""
lbgnet.scripts.lbg_evaluate
===========================

``desi_lbg_evaluate``: metrics of the line finder on mock files with known truth.

Input: coadd files (run through a model, optionally with their Redrock files for a
Redrock comparison) or afterburner catalogues, each paired with its truth file (same
order).  Output, in ``--outdir``: ``metrics.json`` (``regimes``: per regime purity = efficiency score,
purity/efficiency curves, efficiency vs z and magnitude, redshift accuracy of Z_LBG and of
the best line, confusion by class; ``inputs``; ``redrock``: Redrock's redshift accuracy on
the true LBGs when Redrock files are given) and PNG figures.  Coadd input gets the
afterburner's template refinement (``Z_TPL``, :mod:`lbgnet.refine`) unless ``--no-refine``;
catalogue input uses the catalogue's Z_TPL column when it has one.  Its accuracy is
reported as ``redshift_template`` (and ``by_depth_template``) beside that of Z_LBG.
"""
import argparse
import json
import os
import shutil

import numpy as np
from desiutil.log import get_logger

from ..evalinputs import (check_catalog_network, check_catalogs_held_out, check_held_out,
                          collect, compare_simulators, redrock_metrics)
from ..io import InputFileError
from ..io.atomic import private_directory, remove_leftovers
from ..io.catalog import OutputFileError, check_outdir, write_failure_reason
from ..network import ENGINES
from ..tflog import KerasBackendError, import_tensorflow
from .refine_options import (add_refine_arguments, check_refine_arguments, make_refiner,
                             refine_options_given)

#: Output file names inside --outdir.
OUTPUTS = {'metrics': 'metrics.json', 'pe': 'purity_efficiency.png', 'z': 'redshift.png',
           'eff': 'efficiency.png', 'examples': 'examples.png', 'reliability': 'reliability.png',
           'pulls': 'pulls.png'}

#: The name the hidden staging directory of a run's files is made after, inside --outdir:
#: ``.evaluate.tmp<pid>-<host>.XXXXXXXX`` (:func:`lbgnet.io.atomic.private_directory`).
STAGE = 'evaluate'


#: Most example spectra ``--nexamples`` draws (one panel each in one PNG: 100 made a
#: 16,000-pixel-tall image).
MAX_EXAMPLES = 24


def parse(options=None):
    """Parse the command line of ``desi_lbg_evaluate``."""
    parser = argparse.ArgumentParser(description='Evaluate the LBG line finder on mock files '
                                     'with known truth: JSON metrics and PNG figures.')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--coadd', nargs='+', help='coadd FITS file(s) to run the model on')
    src.add_argument('--catalog', nargs='+', help='afterburner catalogue(s) (HDU LBG_CNN)')
    parser.add_argument('--truth', nargs='+', required=True,
                        help='truth file(s) (HDU TRUTH), one per coadd/catalogue, same order')
    parser.add_argument('--redrock', nargs='+',
                        help='Redrock file(s), one per coadd, for a Redrock comparison')
    parser.add_argument('--model', help='model file (.weights.h5 or .json) [shipped model]')
    parser.add_argument('--engine', choices=ENGINES,
                        help="forward pass of a line finder for --coadd, as the afterburner's "
                        '--engine (numpy: no TensorFlow; keras); direct and hybrid networks '
                        f'always run in Keras [{ENGINES[0]}]')
    parser.add_argument('--threads', type=int,
                        help='threads of the numpy forward pass (outputs do not depend on it) '
                        '[the cores available]')
    parser.add_argument('--outdir', required=True, help='output directory')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the results of another evaluation (other input files, '
                        'truth files or model) in --outdir; those of the same inputs are '
                        'replaced without it')
    parser.add_argument('--c-thresh', type=float,
                        help='line confidence threshold [model default; for --catalog, the '
                        "catalogue's CTHRESH]")
    parser.add_argument('--n-thresh', type=int,
                        help='number of lines required [model default]; not with --catalog, '
                        'whose C_LBG was computed for its NTHRESH')
    parser.add_argument('--include-bad-fibres', action='store_true',
                        help='keep spectra flagged NODATA (no valid pixel), NOT_SCIENCE '
                        "(OBJTYPE != 'TGT' or a bad COADD_FIBERSTATUS bit) or NOT_IN_COADD; "
                        'left out by default (one rule: LBG_FLAG of a catalogue, the same '
                        'flags computed for a coadd)')
    parser.add_argument('--record-as', metavar='NAME',
                        help='also store a summary of the metrics in the model card (the '
                        "model's JSON, metadata.heldout_tests.NAME); needs --model")
    add_refine_arguments(parser)
    parser.add_argument('--title', default='', help='title of the figures [%(default)s]')
    parser.add_argument('--nexamples', type=int, default=4,
                        help='example spectra to draw, at most %d (coadd input; line finders '
                        'and hybrids, since a direct network has no line boxes) '
                        '[%%(default)s]' % MAX_EXAMPLES)
    args = parser.parse_args(options)
    if not 0 <= args.nexamples <= MAX_EXAMPLES:      # one panel each, in one PNG
        parser.error(f'--nexamples must be in [0, {MAX_EXAMPLES}], got {args.nexamples}')
    inputs = args.coadd or args.catalog
    for path in [*inputs, *args.truth, *(args.redrock or [])]:
        if any(c in os.path.basename(path) for c in '*?[') and not os.path.exists(path):
            parser.error(f'{path}: a pattern (quoted?): give the files, e.g. let the shell '
                         'expand it; --coadd, --truth and --redrock are paired in order')
    if len(args.truth) != len(inputs):
        parser.error(f'{len(inputs)} input file(s) but {len(args.truth)} truth file(s)')
    if args.redrock and (args.catalog or len(args.redrock) != len(inputs)):
        parser.error('--redrock needs --coadd, with one Redrock file per coadd')
    if args.record_as and not args.model:
        parser.error('--record-as needs an explicit --model')
    if args.catalog and args.n_thresh is not None:
        parser.error("--n-thresh needs --coadd: a catalogue's C_LBG was computed for its NTHRESH")
    if args.c_thresh is not None and not 0.0 <= args.c_thresh <= 1.0:
        parser.error(f'--c-thresh must be in [0, 1], not {args.c_thresh}')
    if args.n_thresh is not None and args.n_thresh < 1:
        parser.error(f'--n-thresh must be >= 1, not {args.n_thresh}')
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be >= 1, not {args.threads}')
    if args.catalog and (args.engine is not None or args.threads is not None):
        parser.error('--engine and --threads need --coadd: a catalogue holds the outputs of '
                     'the engine it was made with (its header, recorded in the metrics)')
    if os.path.exists(args.outdir) and not os.path.isdir(args.outdir):
        parser.error(f'--outdir {args.outdir} exists and is not a directory')
    problem = check_title(args.title)
    if problem:
        parser.error(problem)
    check_refine_arguments(parser, args)
    if args.catalog and refine_options_given(args):
        given = refine_options_given(args)
        parser.error(f'{", ".join(given)} need{"" if len(given) > 1 else "s"} --coadd: a catalogue '
                     'holds the refinement it was made with (its header, recorded in the '
                     'metrics)')
    return args


def write_plots(args, metrics, pred, truth, config, extras, directory):
    """Figures of one evaluation, drawn into `directory`; returns the keys of
    :data:`OUTPUTS` written (``metrics`` included, written by the caller)."""
    from ..evaluate import LBG_CLASS, template_or_cnn
    from ..plots import (plot_efficiency_bins, plot_example_spectra, plot_pulls,
                         plot_purity_efficiency, plot_redshift, plot_reliability)
    from ..zerr import right_redshifts
    from ..refine import MIN_DELTACHI2
    out = {k: os.path.join(directory, v) for k, v in OUTPUTS.items()}
    written = {'metrics', 'pe', 'z', 'eff'}
    plot_purity_efficiency(metrics, out['pe'], title=args.title)
    sel = (np.asarray(truth['CLASS']).astype(str) == LBG_CLASS) & pred['IS_LBG']
    z_tpl = template_or_cnn(pred)[sel] if 'Z_TPL' in pred else None
    plot_redshift(truth['Z_TRUE'][sel], pred['Z_LBG'][sel], out['z'],
                  z_bestline=pred['Z_BESTLINE'][sel], title=args.title, z_template=z_tpl)
    plot_efficiency_bins(metrics, out['eff'], title=args.title)
    pulls = {}
    for zkey, ekey in (('Z_LBG', 'ZERR_LBG'), ('Z_TPL', 'ZERR_TPL')):
        if zkey in pred and ekey in pred:
            rel_dz, rel_err = right_redshifts(pred[zkey][sel], pred[ekey][sel],
                                              truth['Z_TRUE'][sel])
            pulls[ekey] = rel_dz / rel_err
    if any(v.size for v in pulls.values()):
        plot_pulls(pulls, out['pulls'], title=args.title)
        written.add('pulls')
    if 'DELTACHI2_TPL' in pred:
        chosen = np.asarray(pred['IS_LBG'], dtype=bool)
        z_true = np.asarray(truth['Z_TRUE'], dtype=np.float64)[chosen]
        plot_reliability(pred['DELTACHI2_TPL'][chosen],
                         np.abs(template_or_cnn(pred)[chosen] - z_true) / (1 + z_true),
                         np.asarray(truth['CLASS']).astype(str)[chosen] == LBG_CLASS,
                         out['reliability'], MIN_DELTACHI2, title=args.title)
        written.add('reliability')
    first = extras['first']
    if first is not None and first[1] is not None and args.nexamples > 0:
        X, conf, offset, tid = first
        rows = slice(extras['first_start'], extras['first_start'] + len(tid))
        classes = truth['CLASS'][rows].astype(str)
        lbg = np.flatnonzero(classes == LBG_CLASS)[:(args.nexamples + 1) // 2]
        other = np.flatnonzero(classes != LBG_CLASS)[:args.nexamples - lbg.size]
        idx = np.concatenate([lbg, other]).astype(int)
        if idx.size:
            z_true, c_lbg, z_lbg = (np.asarray(a)[rows] for a in
                                    (truth['Z_TRUE'], pred['C_LBG'], pred['Z_LBG']))
            titles = [f'{classes[i]} z={z_true[i]:.3f}  C_LBG={c_lbg[i]:.2f}  '
                      f'Z_LBG={z_lbg[i]:.3f}' for i in idx]
            plot_example_spectra(X[idx], conf[idx], offset[idx], config, out['examples'], titles,
                                 c_thresh=extras['selection'][0])
            written.add('examples')
    elif first is not None and args.nexamples > 0:
        get_logger().info('no %s: a direct network finds no lines to draw', OUTPUTS['examples'])
    return written


def publish(stage, outdir, written):
    """Move the files of one evaluation from `stage` into `outdir` (the figures, then
    ``metrics.json``: a set that ``metrics.json`` describes) and remove the files of an
    earlier run there that this one did not make (they would describe other inputs).

    An earlier ``metrics.json`` goes first: a publication interrupted halfway leaves new
    figures without a ``metrics.json``, never beside the earlier one."""
    stale = ['metrics'] + sorted(set(OUTPUTS) - set(written) - {'metrics'})
    for key in stale:
        path = os.path.join(outdir, OUTPUTS[key])
        if os.path.isfile(path):
            os.remove(path)
    for key in sorted(written, key=lambda k: k == 'metrics'):
        os.replace(os.path.join(stage, OUTPUTS[key]), os.path.join(outdir, OUTPUTS[key]))


def check_title(title):
    """A one-line message when matplotlib cannot draw `title` (e.g. bad TeX), else None."""
    if not title:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure()
    fig.suptitle(title)
    try:
        FigureCanvasAgg(fig).draw()
    except ValueError as err:
        return f'--title cannot be drawn: {" ".join(str(err).split())}'
    return None


def summarise(metrics):
    """Compact form of the metrics for the model card: the regimes with LBGs; for a test
    of contaminants alone, what its ``all`` regime selected."""
    inputs = {k: v for k, v in metrics['inputs'].items() if k != 'model'}
    for key in ('files', 'truth'):
        inputs[key] = [os.path.basename(p) for p in inputs[key]]
    out = {'inputs': inputs}
    for name, res in metrics['regimes'].items():
        if not res['nlbg']:
            if name == 'all' and res['ncontaminant']:
                out[name] = {k: res[k] for k in ('nlbg', 'ncontaminant', 'c_thresh', 'purity')}
                out[name]['errors'] = {'purity': res['errors']['purity']}
                out[name]['selected_fraction'] = {c: v['fraction_selected']
                                                  for c, v in res['confusion'].items()}
            continue
        out[name] = {k: res[k] for k in ('nlbg', 'ncontaminant', 'pe_score', 'pe_threshold',
                                         'efficiency', 'purity', 'errors')}
        out[name]['redshift'] = res['redshift']
        out[name]['sigma_nmad_bestline'] = res['redshift_bestline']['sigma_nmad']
        for key in ('redshift_template', 'by_depth_template', 'reliable', 'redshift_errors'):
            if key in res:
                out[name][key] = res[key]
        out[name]['selected_fraction'] = {c: v['fraction_selected']
                                          for c, v in res['confusion'].items()}
        if 'by_depth' in res:
            out[name]['by_depth'] = res['by_depth']
    if 'redrock' in metrics:
        out['redrock_on_true_lbgs'] = metrics['redrock']
    return out


def record_in_model_card(model_path, name, metrics):
    """Store :func:`summarise` of `metrics` as ``metadata.heldout_tests[name]`` of the model."""
    from ..io.modelfile import model_paths, read_model_description, update_model_metadata
    tests = dict(read_model_description(model_path)[0]['metadata'].get('heldout_tests') or {})
    if name in tests:               # a rerun on other files would silently lose the first
        get_logger().warning('%s: heldout_tests.%s existed; replaced by these metrics',
                             model_paths(model_path)[1], name)
    tests[name] = summarise(metrics)
    update_model_metadata(model_path, {'heldout_tests': tests})
    get_logger().info('recorded the metrics in %s as heldout_tests.%s', model_paths(model_path)[1],
                      name)


def _same_file(path):
    """`path` resolved (links followed); a model's ``NAME.json`` stands for its
    ``NAME.weights.h5``."""
    from ..io.modelfile import model_paths
    path = str(path)
    if path.endswith('.json') or path.endswith('.weights.h5'):
        path = model_paths(path)[0]
    return os.path.realpath(path)


def other_evaluation(outdir, files, truths, model_path):
    """Why the ``metrics.json`` in `outdir` is the result of another evaluation, or None
    (none there, or one of the same inputs: the same model and the same input and truth
    files, links followed and a model's ``NAME.json`` taken for its weights; the metrics
    record them as absolute paths, older ones as given, read from the current directory).

    Parameters
    ----------
    outdir : str
    files, truths : sequence of str
        ``--coadd`` or ``--catalog``, and ``--truth``.
    model_path : str
    """
    path = os.path.join(outdir, OUTPUTS['metrics'])
    if not os.path.lexists(path):
        return None
    try:
        with open(path) as fx:
            inputs = json.load(fx)['inputs']
        theirs = (_same_file(inputs['model']), sorted(map(_same_file, inputs['files'])),
                  sorted(map(_same_file, inputs['truth'])))
    except (OSError, ValueError, KeyError, TypeError):
        return f'{path} exists and is no metrics file of desi_lbg_evaluate'
    mine = (_same_file(model_path), sorted(map(_same_file, files)),
            sorted(map(_same_file, truths)))
    differ = [what for what, a, b in zip(('the model', 'the input files', 'the truth files'),
                                         theirs, mine) if a != b]
    if not differ:
        return None
    verb = 'differs' if differ == ['the model'] else 'differ'
    return (f'holds the results of another evaluation ({", ".join(differ)} {verb}; it '
            f'evaluated the model {theirs[0]}, {len(theirs[1])} input file(s), e.g. '
            f'{theirs[1][0] if theirs[1] else "none"})')


def main(args=None, comm=None):
    """Run ``desi_lbg_evaluate``; return 0 on success, 1 on an input error."""
    if not isinstance(args, argparse.Namespace):
        args = parse(args)
    from ..io.modelfile import default_model_path
    log = get_logger()
    model_path = args.model or default_model_path()
    outdir = os.path.abspath(args.outdir)      # normalised: 'a/../b' creates no 'a'
    made = []                         # the directories check_outdir creates, deepest first
    path = outdir
    while not os.path.exists(path):
        made.append(path)
        path = os.path.dirname(path)
    rc = 1
    try:
        try:        # before the work: a directory that cannot be written fails at once
            check_outdir(outdir, name=f'--outdir {args.outdir}')
            other = None if args.overwrite else other_evaluation(
                outdir, args.coadd or args.catalog, args.truth, model_path)
            if other:
                raise OutputFileError(f'--outdir {args.outdir}', f'{other}: use --overwrite '
                                      'to replace them, or another --outdir')
            if args.record_as:                  # and so does a model card that cannot be
                from ..io.modelfile import model_paths
                card = model_paths(model_path)[1]
                if not os.access(os.path.dirname(os.path.abspath(card)), os.W_OK | os.X_OK):
                    raise OutputFileError(card, '--record-as: the model card\'s directory is '
                                          'not writable (copy the model files elsewhere)')
        except OutputFileError as err:
            log.error('%s', err)
        else:
            rc = evaluate_into(args, model_path, log)
    finally:            # a failed or stopped (SIGTERM) evaluation leaves nothing behind
        if rc:
            for path in made:
                if os.path.isdir(path) and not os.listdir(path):
                    os.rmdir(path)
    return rc


def load_coadd_network(args, model_path):
    """The network that runs on coadd input, loaded as the afterburner loads it
    (:func:`lbgnet.network.load_network` with ``--engine`` and ``--threads``):
    TensorFlow is imported only when the network runs in Keras.

    Raises
    ------
    InputFileError
        A missing or unusable model file.
    lbgnet.tflog.KerasBackendError
        The network runs in Keras and its backend is not installed.
    """
    from ..io.modelfile import read_model_description
    from ..modelspec import architecture
    from ..network import load_network
    engine = args.engine or ENGINES[0]
    if model_path is None:
        raise InputFileError('--model', 'no model given and no pretrained model shipped')
    config = read_model_description(model_path)[1]    # load_network checks the weights
    if engine == 'keras' or architecture(config) != 'linefinder':
        import_tensorflow()           # a Keras backend not installed: one line
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                               else os.cpu_count() or 1)
    return load_network(model_path, engine, threads)


def evaluate_into(args, model_path, log):
    """The evaluation of :func:`main` once ``--outdir`` exists; its return status."""
    from ..network import training_zrange
    from ..evaluate import evaluate_predictions
    from ..targets import target_class
    from ..io.evaluation import write_json
    from ..io.modelfile import read_model_description
    try:
        refiner, network = None, None
        if args.coadd:
            network = load_coadd_network(args, model_path)
            config, metadata = network.config, network.metadata
            from .lbg_afterburner import warn_checkpoint, warn_uncalibrated
            warn_checkpoint(model_path, metadata, args)     # its thresholds: untuned
            refiner = make_refiner(args, config, network.zrange, metadata)
            warn_uncalibrated(model_path, metadata, refiner is not None,
                              holder='the error statistics and pulls use')
            if args.record_as:               # before the work: a held-out test only
                check_held_out(args.coadd, metadata)
        else:
            description, config = read_model_description(model_path)
            metadata = description.get('metadata')
            if args.record_as:               # before the work, as for coadds
                check_catalogs_held_out(args.catalog, metadata)
        if args.n_thresh is not None and args.n_thresh > len(config.lines):
            raise InputFileError(model_path, f'--n-thresh {args.n_thresh} exceeds the '
                                 f'{len(config.lines)} lines of this model')
        pred, truth, extras = collect(args, config, network, refiner,
                                      training_zrange(config, metadata))
        if args.catalog:
            check_catalog_network(extras['network'], model_path,
                                  description.get('weights_sha256'), args.record_as)
        c_thresh, n_thresh = extras['selection']
        nomag = int(np.count_nonzero(~np.isfinite(np.asarray(truth['RMAG'], dtype=float))))
        if nomag:
            log.warning('%d object(s) of the truth without a finite RMAG are left out of the '
                        'efficiency vs magnitude and of by_depth', nomag)
        regimes = evaluate_predictions(truth, pred, float('nan') if c_thresh is None else c_thresh)
        metrics = {'regimes': regimes,
                   'inputs': {'files': [os.path.abspath(f) for f in args.coadd or args.catalog],
                              'truth': [os.path.abspath(f) for f in args.truth],
                              'model': os.path.abspath(model_path), 'c_thresh': c_thresh,
                              'nexcluded_bad_fibres': extras['nexcluded'],
                              'include_bad_fibres': bool(args.include_bad_fibres),
                              'n_thresh': n_thresh, 'target_class': target_class(config),
                              'engine': (network.engine if network is not None
                                         else extras['engine'])}}
        metrics['inputs']['simulator'] = compare_simulators(
            extras['simhash'], (metadata or {}).get('training', {}).get('simulator_hash'))
        # the network evaluated, by content: its file may be retrained in place later
        metrics['inputs']['network_sha256'] = (extras['network'][0] if args.catalog
                                               else network.sha256)   # catalogue: its header
        if extras['refine'] is not None:
            metrics['inputs']['refine'] = extras['refine']
        if refiner is not None:
            metrics['inputs']['refine'] = {'template': os.path.basename(refiner.source),
                                           'prior_weight': refiner.prior_weight,
                                           'window': refiner.window, 'step': refiner.dlogz,
                                           'noise': ('pipeline' if refiner.noise is None
                                                     else 'calibrated'),
                                           'archetypes': (os.path.basename(refiner.arch_source)
                                                          if refiner.archetypes is not None
                                                          else None),
                                           'arch_skip': (refiner.arch_skip
                                                         if refiner.archetypes is not None
                                                         else None)}
        if args.redrock:
            metrics['redrock'] = redrock_metrics(args.redrock, args.coadd, truth,
                                                 extras['targetid'])
    except (InputFileError, KerasBackendError) as err:
        log.error('%s', err)
        return 1
    stage = None
    try:              # all files drawn aside, then moved in: a failure leaves the old set
        # .evaluate.tmp<pid>-<host>.XXXXXXXX; those of a run killed outright removed first
        remove_leftovers([os.path.join(args.outdir, STAGE)])
        stage = private_directory(os.path.join(args.outdir, STAGE))
        write_json(os.path.join(stage, OUTPUTS['metrics']), metrics)
        written = write_plots(args, regimes, pred, truth, config, extras, stage)
        publish(stage, args.outdir, written)
    except OSError as err:
        log.error('%s: cannot write the results (%s)', args.outdir,
                  write_failure_reason(err, os.path.join(args.outdir, OUTPUTS['metrics'])))
        return 1
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    names = [OUTPUTS[k] for k in sorted(written, key=lambda k: (k != 'metrics', OUTPUTS[k]))]
    if args.record_as:
        try:
            record_in_model_card(args.model, args.record_as, metrics)
        except OSError as err:
            log.error('%s: --record-as: cannot update the model card (%s); the results in %s '
                      'are complete', args.model, err.strerror or err, args.outdir)
            return 1
    for name in ('lowz', 'midz', 'highz'):
        res = regimes[name]
        if not res['nlbg']:
            log.info('%s: no true LBG in this regime (%d contaminants, %d selected)', name,
                     res['ncontaminant'], sum(v['nselected'] for v in res['confusion'].values()))
            continue
        err = res['errors']
        log.info('%s: %d LBGs, %d contaminants; efficiency %s, purity %s at C_LBG > %s; '
                 'purity=efficiency score %s; |dz|<0.05 %s, '
                 'sigma_NMAD %s (Z_LBG) / %s (best line)', name, res['nlbg'], res['ncontaminant'],
                 _pm(res['efficiency'], err['efficiency']), _pm(res['purity'], err['purity']),
                 _threshold(res['c_thresh']), _pm(res['pe_score'], err['pe_score']),
                 _pm(res['redshift']['frac_dz_lt_0p05'], err['redshift']['frac_dz_lt_0p05']),
                 _pm(res['redshift']['sigma_nmad'], err['redshift']['sigma_nmad'], '.2e'),
                 _fmt(res['redshift_bestline']['sigma_nmad'], '.2e'))
        if 'redshift_template' in res:
            tpl, etpl = res['redshift_template'], err['redshift_template']
            log.info('%s: template-refined Z_TPL: |dz|<0.05 %s, sigma_NMAD %s', name,
                     _pm(tpl['frac_dz_lt_0p05'], etpl['frac_dz_lt_0p05']),
                     _pm(tpl['sigma_nmad'], etpl['sigma_nmad'], '.2e'))
        log_pilot_depth(log, name, res)
        for key, pulls in res.get('redshift_errors', {}).items():
            log.info('%s: %s of the %d right redshifts: pull NMAD %s, within 1 / 2 sigma %s / %s '
                     '(Gaussian: 1, 0.683 / 0.954)', name, key, pulls['n'],
                     _fmt(pulls['nmad_pull'], '.2f'),
                     _fmt(pulls['frac_within_1sigma'], '.3f'),
                     _fmt(pulls['frac_within_2sigma'], '.3f'))
        if 'reliable' in res:
            rel = res['reliable']
            log.info('%s: GOOD_LBG (no SMALL_DELTA_CHI2: DELTACHI2_TPL >= %g): efficiency %s, '
                     'purity %s, %s of the selected LBGs kept, |dz|<0.05 %s', name,
                     rel['min_deltachi2'], _fmt(rel['efficiency']), _fmt(rel['purity']),
                     _fmt(rel['kept']), _fmt(rel['redshift']['frac_dz_lt_0p05']))
    log.info('wrote %s in %s', ', '.join(names), args.outdir)
    return 0


def log_pilot_depth(log, name, res):
    """One log line of a regime's metrics down to r = :data:`lbgnet.evaluate.PILOT_DEPTH`
    (``by_depth``, ``by_depth_template``), the depth of DESI's LBG pilot selections."""
    from ..evaluate import PILOT_DEPTH
    key = f'r<={PILOT_DEPTH:g}'
    depth = res.get('by_depth', {}).get(key)
    if not depth or not depth['nlbg']:
        return
    tpl = res.get('by_depth_template', {}).get(key)
    log.info('%s: r <= %g (DESI LBG pilot depth): %d LBGs, %d contaminants; purity=efficiency '
             'score %s; at C_LBG > %s efficiency %s, purity %s; |dz|<0.05 %s (Z_LBG)%s', name,
             PILOT_DEPTH, depth['nlbg'], depth['ncontaminant'], _fmt(depth['pe_score']),
             _threshold(res['c_thresh']), _fmt(depth['efficiency']), _fmt(depth['purity']),
             _fmt(depth['frac_dz_lt_0p05']),
             '' if tpl is None else f', {_fmt(tpl["frac_dz_lt_0p05"])} (Z_TPL)')


def _fmt(value, spec='.4f'):
    """Format a metric that may be None (undefined, e.g. no LBG in the regime)."""
    return 'n/a' if value is None else format(value, spec)


def _threshold(value):
    """A C_LBG threshold that may be None, as the figures write it
    (:func:`lbgnet.plots.threshold_text`)."""
    from ..plots import threshold_text
    return 'n/a' if value is None else threshold_text(value)


def _pm(value, error, spec='.4f'):
    """A metric and its standard error (``0.9130 +- 0.0063``), either may be None."""
    return _fmt(value, spec) if error is None else f'{_fmt(value, spec)} +- {format(error, spec)}'
