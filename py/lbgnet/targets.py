"""
lbgnet.targets
==============

Training targets of every architecture and target class, from a truth table.

By default the network looks for LBGs and their lines (``config.lines``).  A configuration
may name another target class and its own line list, e.g. to pretrain a QSO line finder on
simulated quasars (``etc/lbgnet-qso.yaml``), or a subset of the LBG lines::

    target:
      class: QSO
      lines: {LYA: 1215.67, CIV: 1549.06, CIII: 1908.73, MGII: 2798.75, HB: 4862.68, HA: 6564.61}

:func:`apply_target` puts ``target.lines`` in place of the (inherited) line list, so the
network gets one head per target line and the model file stores that list; everything
else (grid, boxes, encoding, losses) is unchanged.  The validation metrics of
:mod:`lbgnet.evaluate` count class ``'LBG'`` as positive: :func:`metric_truth` relabels the
target class as ``'LBG'`` and the true LBGs as ``'LBG*'`` (a contaminant) for them.

Pure numpy, vectorised over spectra; imports no Keras (``desi_lbg_evaluate`` uses it
under the numpy engine).
"""
import dataclasses

import numpy as np

from .config import ConfigError, line_list
from .evaluate import LBG_CLASS
from .labels import make_targets
from .modelspec import NDIRECT, architecture

#: Class name the real LBGs get in :func:`metric_truth` when another class is the target.
RELABELLED_LBG = 'LBG*'


def target_class(config):
    """Class the network is trained to find [``'LBG'``], upper case as the truth labels."""
    return str((config.extra.get('target') or {}).get('class', LBG_CLASS)).strip().upper()


def apply_target(config):
    """`config` with ``target.lines`` (when given) as its line list.

    Raises
    ------
    lbgnet.config.ConfigError
        For an unknown ``target.class``, an empty or invalid ``target.lines``, or n_thresh
        above the number of lines.
    """
    from .sim.population import CLASSES
    if target_class(config) not in CLASSES:
        raise ConfigError(f'{config.source}: target.class must be one of {", ".join(CLASSES)}, '
                          f'not {target_class(config)!r}')
    lines = (config.extra.get('target') or {}).get('lines')
    if lines is None:               # an empty list or mapping is refused by line_list
        return config
    linelist = line_list(lines, f'{config.source}: target.lines')
    if config.selection.n_thresh > len(linelist):
        raise ConfigError(f'{config.source}: selection.n_thresh > {len(linelist)} target lines')
    return dataclasses.replace(config, lines=linelist)


def check_target_lines(config, sim_config):
    """An LBG model may only look for lines that the simulator renders.

    Every (name, rest wavelength) of ``config.lines`` must be in ``sim_config.lines`` when
    the target class is LBG (a subset is allowed, e.g. for fast tests or ablations).  Other
    target classes take their lines from ``target.lines`` and are not checked here.

    Raises
    ------
    lbgnet.config.ConfigError
    """
    if target_class(config) != LBG_CLASS:
        return
    sim = dict(zip(sim_config.lines.names, sim_config.lines.waves))
    bad = [n for n, w in zip(config.lines.names, config.lines.waves) if sim.get(n) != w]
    if bad:
        raise ConfigError(f'{config.source}: line(s) {", ".join(bad)} are not lines of the '
                          f'simulation {sim_config.source} (same name and wavelength)')


def target_line_wavelengths(truth, config):
    """Observed wavelengths of the configuration's lines for the target class.

    Parameters
    ----------
    truth : astropy.table.Table or dict
        CLASS and Z_TRUE, shape (nspec,).
    config : lbgnet.config.Config

    Returns
    -------
    numpy.ndarray
        Shape (nspec, nlines), Å: rest × (1 + Z_TRUE) for target-class rows, NaN elsewhere.
    """
    is_target = np.asarray(truth['CLASS']).astype(str) == target_class(config)
    z = np.where(is_target, np.asarray(truth['Z_TRUE'], dtype=np.float64), np.nan)
    return (1.0 + z)[:, None] * config.lines.wave_array[None, :]


def lines_off_grid(z, config):
    """Whether an object of the target class at redshift `z` has none of the
    configuration's lines on the grid (the box encoding of :func:`lbgnet.labels.encode_boxes`).

    Such an object's line-box targets are all zero: it would be trained as a negative.
    The direct head needs no line, so for the ``direct`` architecture nothing is off.

    Parameters
    ----------
    z : array_like
        Redshifts, shape (nspec,).
    config : lbgnet.config.Config

    Returns
    -------
    numpy.ndarray of bool
        Shape (nspec,); False where `z` is not finite (checked elsewhere).
    """
    from .labels import box_position
    z = np.asarray(z, dtype=np.float64)
    if architecture(config) == 'direct':
        return np.zeros(z.shape, dtype=bool)
    pos = box_position((1.0 + z)[:, None] * config.lines.wave_array[None, :], config)
    inside = (pos >= 0) & (pos < config.nboxes)
    return np.isfinite(z) & ~np.any(inside, axis=1)


def direct_targets(truth, config):
    """Target of the direct head: (flag, z, 0), shape (nspec, 3), float32.

    The flag is 1 for the target class; z is its true redshift (0 for other classes, where
    the loss ignores it).
    """
    is_target = np.asarray(truth['CLASS']).astype(str) == target_class(config)
    out = np.zeros((is_target.size, NDIRECT), dtype=np.float32)
    out[:, 0] = is_target
    out[:, 1] = np.where(is_target, np.nan_to_num(np.asarray(truth['Z_TRUE'], dtype=np.float64)),
                         0.0)
    return out


def make_training_targets(truth, config):
    """Training targets for the configuration's architecture and target class.

    Returns
    -------
    numpy.ndarray or dict
        ``linefinder``: (nspec, nlines, nboxes, 2) (:func:`lbgnet.labels.make_targets`);
        ``direct``: (nspec, 3) (:func:`direct_targets`); ``hybrid``: both, as
        ``{'line_boxes': …, 'direct': …}``.
    """
    arch = architecture(config)
    if arch == 'direct':
        return direct_targets(truth, config)
    boxes = make_targets(target_line_wavelengths(truth, config), config)
    if arch == 'linefinder':
        return boxes
    return {'line_boxes': boxes, 'direct': direct_targets(truth, config)}


def metric_truth(truth, config):
    """Truth arrays relabelled so that the target class counts as ``'LBG'`` in the metrics.

    Parameters
    ----------
    truth : dict of numpy.ndarray
        ``CLASS``, ``Z_TRUE`` … per object.
    config : lbgnet.config.Config

    Returns
    -------
    dict
        `truth` itself when the target is LBG, else a copy with CLASS relabelled.
    """
    target = target_class(config)
    if target == LBG_CLASS:
        return truth
    classes = np.asarray(truth['CLASS']).astype(str)
    relabelled = np.where(classes == target, LBG_CLASS,
                          np.where(classes == LBG_CLASS, RELABELLED_LBG, classes))
    return dict(truth, CLASS=relabelled)
