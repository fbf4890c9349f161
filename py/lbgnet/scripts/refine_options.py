"""
lbgnet.scripts.refine_options
=============================

The template-refinement options shared by ``desi_lbg_afterburner`` and
``desi_lbg_evaluate`` (:mod:`lbgnet.refine`).
"""
import math

from desiutil.log import get_logger

from ..afterburner import DEFAULT_REFINE_NOISE, REFINE_NOISES
from ..refine import DEFAULT_ARCH_SKIP, DEFAULT_DLOGZ, DEFAULT_PRIOR_WEIGHT, DEFAULT_WINDOW

#: Finest ``--refine-step`` (log10(1+z)): ten times finer than the default.
MIN_REFINE_STEP = 2e-5


def add_refine_arguments(parser):
    """Add ``--no-refine``, ``--refine-template``, ``--refine-archetypes``,
    ``--refine-arch-skip``, ``--refine-prior-weight``, ``--refine-window``,
    ``--refine-noise`` and ``--refine-step`` to `parser`."""
    parser.add_argument('--no-refine', action='store_true',
                        help='skip the template refinement of the IS_LBG redshifts (Z_TPL, '
                        'ZERR_TPL, DELTACHI2_TPL left NaN)')
    parser.add_argument('--refine-template', help='Redrock-format template without IGM for '
                        'the refinement [the LBG template shipped with lbgnet]')
    parser.add_argument('--refine-archetypes', metavar='FILE',
                        help='archetype file (desi_lbg_make_template --archetypes) whose '
                        'evidence picks the basin of Z_TPL, or "none" for the template fit '
                        'alone (as before 2026-12-01) [the LBG archetypes shipped with lbgnet]')
    parser.add_argument('--refine-arch-skip', type=float, default=None, metavar='DCHI2',
                        help='skip the archetype stage where the template fit with the '
                        'network\'s prior prefers its basin by at least this much chi2 - w S '
                        'over the rest of the window '
                        '(it changed 1 Z_TPL in 4,254 on the validation and test sets, '
                        'doc/afterburner.rst); 0: never skip [%g]' % DEFAULT_ARCH_SKIP)
    parser.add_argument('--refine-prior-weight', type=float, default=DEFAULT_PRIOR_WEIGHT,
                        help='weight of the network\'s box confidences against chi2 in the '
                        'refinement\'s template fit; 0 with --refine-archetypes none: the '
                        'plain chi2 minimum in the window (the archetype stage weighs its basins by '
                        'the box confidences whatever this weight) [%(default)s]')
    parser.add_argument('--refine-window', type=float, default=DEFAULT_WINDOW,
                        help='half width of the refinement\'s search window around Z_LBG, '
                        'in dz/(1+z) [%(default)s]')
    parser.add_argument('--refine-noise', choices=REFINE_NOISES, default=None,
                        help='noise of the refinement\'s chi2: the calibrated noise model '
                        '(scatter excess and sky-line residuals, lbgnet.noise), which makes '
                        'DELTACHI2_TPL more honest, or the pipeline ivar (the default before '
                        '2026-12-01; doc/afterburner.rst) [%s]' % DEFAULT_REFINE_NOISE)
    parser.add_argument('--refine-step', type=float, default=DEFAULT_DLOGZ,
                        help='step of the refinement\'s trial redshifts in log10(1+z); 4e-4 makes '
                        'the refining afterburner about 1.3x faster (1.6x without archetypes) '
                        'and slightly less precise (doc/afterburner.rst) [%(default)s]')


def refine_options_given(args):
    """The refinement options of `args` that differ from their defaults (names)."""
    return [f'--{name}' for name, value, default in (
        ('no-refine', args.no_refine, False), ('refine-template', args.refine_template, None),
        ('refine-archetypes', args.refine_archetypes, None),
        ('refine-arch-skip', args.refine_arch_skip, None),
        ('refine-noise', args.refine_noise, None),
        ('refine-window', args.refine_window, DEFAULT_WINDOW),
        ('refine-prior-weight', args.refine_prior_weight, DEFAULT_PRIOR_WEIGHT),
        ('refine-step', args.refine_step, DEFAULT_DLOGZ)) if value != default]


def check_refine_arguments(parser, args):
    """``parser.error`` on inconsistent refinement options."""
    if args.no_refine:          # any other refinement option would be ignored silently
        # (--refine-window, --refine-prior-weight and --refine-step were until 2026-12-07);
        # one given at its default value changes nothing and is not told apart
        for name in refine_options_given(args):
            if name not in ('--no-refine', '--refine-arch-skip'):    # the latter: below
                parser.error(f'{name} and --no-refine exclude each other')
    if args.refine_arch_skip is not None:
        no_archetypes = (args.refine_archetypes is not None
                         and args.refine_archetypes.lower() == 'none')
        if args.no_refine or no_archetypes:
            parser.error('--refine-arch-skip needs the archetype stage (not --no-refine or '
                         '--refine-archetypes none)')
        if not args.refine_arch_skip >= 0:
            parser.error(f'--refine-arch-skip must be >= 0, got {args.refine_arch_skip}')
    for name in ('refine_window', 'refine_prior_weight', 'refine_step', 'refine_arch_skip'):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            parser.error(f'--{name.replace("_", "-")} must be finite, got {value}')
    if not 0 < args.refine_window < 1:
        parser.error(f'--refine-window must be in (0, 1), got {args.refine_window}')
    if args.refine_prior_weight < 0:
        parser.error(f'--refine-prior-weight must be >= 0, got {args.refine_prior_weight}')
    if not MIN_REFINE_STEP <= args.refine_step <= 2e-3:
        # finer steps only cost memory: the scan tables hold one row per trial redshift
        # (1e-9 asked for 2 TiB), and 2e-5 is ~17x finer than the grid's 8 A at 10000 A
        parser.error(f'--refine-step must be in [{MIN_REFINE_STEP:g}, 2e-3], got '
                     f'{args.refine_step:g}')


def calibration_settings(metadata):
    """The refinement under which a model's ``ZERR_TPL`` calibration was fitted.

    Parameters
    ----------
    metadata : dict or None
        The model card's metadata.

    Returns
    -------
    noise : str
        ``metadata['error_calibration']['refine_noise']``; 'pipeline' for calibrations
        fitted before it was recorded (they all used the pipeline ivar).
    archetypes : str or None
        ``…['refine_archetypes']``, the SHA-256 of the archetypes; None (no archetype
        stage) for calibrations fitted before it was recorded.
    """
    calib = (metadata or {}).get('error_calibration') or {}
    return calib.get('refine_noise', 'pipeline'), calib.get('refine_archetypes')


def make_refiner(args, config, zrange, metadata=None, warn=True):
    """The template refinement the options ask for, or None with ``--no-refine`` or for
    a network of another target class than LBG (with a warning).

    A warning says when an option differs from the settings ``ZERR_TPL`` was calibrated at:
    the defaults, and the noise and archetypes recorded in `metadata`, the model card's
    metadata (:func:`calibration_settings`); `warn` False leaves it out (MPI ranks other
    than 0, which rank 0 already warned for).

    Raises
    ------
    lbgnet.io.InputFileError
        Missing or unusable template.
    """
    from ..afterburner import default_archetype_path, default_template_path, load_refiner
    from ..evaluate import LBG_CLASS
    from ..postprocess import postprocess_options
    from ..targets import target_class
    if args.no_refine:
        return None
    if target_class(config) != LBG_CLASS:      # e.g. a QSO finder used for pretraining
        if warn:
            get_logger().warning('the network finds %s, not LBGs: no template refinement '
                                 '(its template and archetypes are LBGs)', target_class(config))
        return None
    noise = args.refine_noise or DEFAULT_REFINE_NOISE
    opts = postprocess_options(config)
    # noise and archetypes are compared with the calibration's own, below; skipping the
    # archetype stage at the default threshold, or never (0), leaves the redshifts, hence
    # the calibration, as they are (one Z_TPL in 4,254 differs); other thresholds may not
    changed = [name for name in refine_options_given(args)
               if name not in ('--refine-noise', '--refine-archetypes', '--refine-arch-skip')]
    if args.refine_arch_skip not in (None, 0.0, DEFAULT_ARCH_SKIP):
        changed.append(f'--refine-arch-skip {args.refine_arch_skip:g}')
    calibrated = (opts['zerr_tpl_scale'], opts['zerr_tpl_floor']) != (1.0, 0.0)
    cal_noise, cal_arch = calibration_settings(metadata)
    if calibrated and noise != cal_noise:
        changed.append(f'--refine-noise {noise} (calibrated with {cal_noise})')
    archetypes = args.refine_archetypes
    if archetypes is None:
        archetypes = default_archetype_path()
    elif archetypes.lower() == 'none':
        archetypes = None
    refiner = load_refiner(args.refine_template or default_template_path(), config, zrange,
                           args.refine_window, args.refine_prior_weight, args.refine_step,
                           noise=noise, archetypes=archetypes,
                           arch_skip=(DEFAULT_ARCH_SKIP if args.refine_arch_skip is None
                                      else args.refine_arch_skip))
    used = refiner.arch_sha256 if refiner.archetypes is not None else None
    if calibrated and used != cal_arch:
        changed.append(('no archetypes' if used is None else 'these archetypes')
                       + ' (ZERR_TPL calibrated '
                       + ('without archetypes)' if cal_arch is None else 'with other ones)'))
    if changed and calibrated and warn:
        get_logger().warning('ZERR_TPL is calibrated for the shipped template at the default '
                             'refinement settings; with %s it is only approximately so',
                             ', '.join(changed))
    return refiner
