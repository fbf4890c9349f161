"""Calibrate the redshift errors of an existing model on its validation set.

``desi_lbg_train`` fits the calibration of ``ZERR_LBG`` and ``ZERR_TPL``
(:mod:`lbgnet.zerr`) at the end of every training; this script does the same for a model
trained before that step existed, and records it in the model's JSON (configuration
``postprocess.zerr_*`` and ``metadata.error_calibration``; the weights are untouched)::

    python benchmarks/calibrate_errors.py --model py/lbgnet/data/lbgnet-default.weights.h5 \\
        --val-dir runs/val3000

Without ``--write`` it only prints the fit.  A calibration that cannot be fitted (e.g. too
few right redshifts; ``ZERR_TPL`` of a network whose target is not LBG) is not written: the
model keeps the values it has for it.  The script exits with status 1 when no fit could
be made (nothing is written then).
"""
import argparse
import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def main(options=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--model', required=True, help='model file (.weights.h5 or .json)')
    parser.add_argument('--val-dir', required=True, help='the validation set of the model')
    parser.add_argument('--write', action='store_true', help='record the fit in the model JSON')
    parser.add_argument('--refine-noise', choices=('pipeline', 'calibrated'), default=None,
                        help='noise of the refinement\'s chi2 [the commands\' default, '
                        'lbgnet.afterburner.DEFAULT_REFINE_NOISE]')
    args = parser.parse_args(options)

    from lbgnet.afterburner import DEFAULT_REFINE_NOISE
    from lbgnet.io.modelfile import load_model, update_model_metadata
    from lbgnet.network import training_zrange
    from lbgnet.postprocess import postprocess_options
    from lbgnet.predict import catalog_from_raw, predict_raw
    from lbgnet.scripts.lbg_train import error_calibration, find_validation, read_labelled
    from lbgnet.targets import metric_truth
    model, config, metadata = load_model(args.model)
    coadds, truths = find_validation(args.val_dir)
    noise = args.refine_noise or DEFAULT_REFINE_NOISE
    X, _, truth, grid = read_labelled(coadds, truths, config, with_grid=True, noise=noise)
    truth = metric_truth(truth, config)
    raw = predict_raw(model, X, config)
    res = catalog_from_raw(raw, config, calibrate=False)
    # the refinement's redshift range is the afterburner's: the model card's training range
    calib = error_calibration(res, truth, config, grid, raw.get('conf'), noise,
                              zrange=training_zrange(config, metadata))
    calib['validation_files'] = [os.path.basename(c) for c in coadds]
    print(json.dumps(calib, indent=1))
    prefixes = {'ZERR_LBG': 'zerr_', 'ZERR_TPL': 'zerr_tpl_'}
    failed = [key for key in prefixes if calib[key]['fit'] is None]
    if len(failed) == len(prefixes):
        print('no calibration could be fitted; nothing written')
        return 1
    # scale 1 / floor 0 stand for "not fitted": the model keeps its values for those, and
    # the record of how they were fitted (for ZERR_TPL also the refinement's noise and
    # archetypes, which the commands compare with their own settings)
    current = postprocess_options(config)
    previous = (metadata or {}).get('error_calibration') or {}
    options = dict(calib['postprocess'])
    for key in failed:
        for part in ('scale', 'floor'):
            options[prefixes[key] + part] = current[prefixes[key] + part]
        if key in previous:
            calib[key] = previous[key]
        if key == 'ZERR_TPL':
            for setting in ('refine_noise', 'refine_archetypes'):
                calib[setting] = previous.get(setting)
        print(f'{key} not fitted: the model keeps scale {current[prefixes[key] + "scale"]:g}, '
              f'floor {current[prefixes[key] + "floor"]:g}')
    calib['postprocess'] = options
    if args.write:
        print('wrote', update_model_metadata(args.model, {'error_calibration': calib},
                                             {'postprocess': options}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
