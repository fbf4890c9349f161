"""
lbgnet.sim.population
=====================

Draw a mixed population of mock objects (LBGs and their contaminants) as a truth
table holding every physical parameter :func:`lbgnet.sim.render.render_spectra`
needs, with one line-of-sight seed per object so that rendering is reproducible.
"""
import os

import numpy as np
from astropy.table import Table

from ..config import ConfigError, etc_dir, read_yaml_config
from .galaxy import draw_galaxy
from .lbg import draw_lbg
from .qso import NPCA, draw_qso
from .star import draw_star

#: Object classes of the simulator, in table order of the fractions.
CLASSES = ('LBG', 'QSO', 'GALAXY', 'STAR')
DEFAULT_SIM_CONFIG = 'lbgnet-sim.yaml'

#: Truth-table columns: name -> (dtype, fill value for classes that lack it, description).
COLUMNS = {
    'CLASS': ('U6', '', 'LBG, QSO, GALAXY or STAR'),
    'SUBTYPE': ('U8', '', 'class subtype (LBG; QSO/BAL; SF/OII_LYA/PASSIVE; B..M, WD)'),
    'Z_TRUE': ('f8', np.nan, 'systemic redshift (stars: v_r/c)'),
    'RMAG': ('f8', np.nan, 'r AB magnitude the spectrum is normalised to'),
    'LYA_EW': ('f8', np.nan, 'LBG Lya rest equivalent width, A (> 0 emission)'),
    'BETA': ('f8', np.nan, 'LBG UV slope, f_lambda ~ lambda^BETA'),
    'DV_LYA': ('f8', np.nan, 'LBG Lya emission velocity offset, km/s'),
    'DV_ISM': ('f8', np.nan, 'LBG interstellar absorption velocity offset, km/s'),
    'ISM_SCALE': ('f8', np.nan, 'LBG low-ion/HI, galaxy near-UV ISM absorption EW factor'),
    'HIGH_ION_SCALE': ('f8', np.nan, 'LBG SiIV/CIV absorption EW factor'),
    'IGM_SCALE': ('f8', np.nan, 'line-of-sight factor on the forest optical depth'),
    'IGM_SEED': ('i8', 0, 'seed of the line-of-sight forest realisation'),
    'ALPHA': ('f8', np.nan, 'QSO continuum slope, f_nu ~ nu^ALPHA'),
    'QSO_FWHM': ('f8', np.nan, 'QSO broad-line FWHM, km/s'),
    'LINE_SCALE': ('f8', np.nan, 'QSO emission-line EW factor'),
    'BAL_EW': ('f8', np.nan, 'BAL CIV trough rest EW, A (0: no BAL)'),
    'BAL_V': ('f8', np.nan, 'BAL trough outflow velocity, km/s'),
    'BAL_SIGMA': ('f8', np.nan, 'BAL trough velocity sigma, km/s'),
    'TAU_LL': ('f8', np.nan, 'QSO Lyman-limit optical depth'),
    **{f'QSO_PCA{k + 1}': ('f8', np.nan, 'Redrock QSO PCA coefficient deviate')
       for k in range(NPCA)},
    'Z_LYA_ALIAS': ('f8', np.nan, 'galaxy: LBG redshift whose Lya falls on [OII]'),
    'D4000': ('f8', np.nan, 'galaxy 4000 A break amplitude'),
    'BETA_BLUE': ('f8', np.nan, 'galaxy continuum slope below 4000 A'),
    'BETA_RED': ('f8', np.nan, 'galaxy continuum slope above 4000 A'),
    'OII_EW': ('f8', np.nan, 'galaxy [OII] doublet rest EW, A'),
    'OII_RATIO': ('f8', np.nan, 'galaxy [OII] 3729/3726 flux ratio'),
    'LOG_OII_HB': ('f8', np.nan, 'galaxy log10 [OII]/Hbeta'),
    'LOG_OIII_HB': ('f8', np.nan, 'galaxy log10 [OIII]5007/Hbeta'),
    'LOG_NII_HA': ('f8', np.nan, 'galaxy log10 [NII]6584/Halpha'),
    'LOG_SII_HA': ('f8', np.nan, 'galaxy log10 [SII]/Halpha'),
    'EBV': ('f8', np.nan, 'galaxy nebular E(B-V)'),
    'VDISP': ('f8', np.nan, 'galaxy emission-line sigma, km/s'),
    'TEFF': ('f8', np.nan, 'star effective temperature, K'),
    'METAL_SCALE': ('f8', np.nan, 'star metal-line EW factor'),
    'TEMPLATE_U': ('f8', np.nan, 'star archetype selector in [0, 1)'),
}

#: r magnitudes (AB) the simulator serves: DESI's targets lie well within (bright stars
#: ~12, the faintest LBG candidates ~25); far outside, fluxes overflow to inf.
RMAG_LIMITS = (10.0, 30.0)


def load_sim_config(name=DEFAULT_SIM_CONFIG):
    """Read a simulator configuration (``base:`` includes followed).

    Parameters
    ----------
    name : str, optional
        Path, or file name in the ``etc/`` directory [``lbgnet-sim.yaml``].

    Returns
    -------
    dict
        The merged mapping, with the ``simulation`` section and the base ``lines``.

    Raises
    ------
    lbgnet.config.ConfigError
        If the file has no ``simulation`` section, lacks a class section, gives LBG
        line strengths for lines that are not in the line list, or class fractions that
        are negative or sum to zero.
    """
    cfg = read_yaml_config(name)
    sim = cfg.get('simulation')
    if not isinstance(sim, dict):
        raise ConfigError(f'{name}: no "simulation" section (is this a simulator configuration?)')
    missing = [k for k in ('class_fractions', 'rmag_range', 'normalisation', 'igm', 'lbg', 'qso',
                           'galaxy', 'star') if k not in sim]
    if missing or 'lines' not in cfg:
        raise ConfigError(f'{name}: simulation configuration lacks {missing or ["lines"]}')
    unknown = set(sim['class_fractions']) - set(CLASSES)
    if unknown:
        raise ConfigError(f'{name}: unknown classes {sorted(unknown)} in class_fractions; known {CLASSES}')
    unknown = set(sim['lbg'].get('lines', {})) - set(cfg['lines'])
    if unknown:
        raise ConfigError(f'{name}: simulation.lbg.lines has lines {sorted(unknown)} that are not '
                          f'in the line list {list(cfg["lines"])}')
    try:
        rlo, rhi = (float(v) for v in sim['rmag_range'])
        lbg_z = [float(v) for v in sim['lbg']['zrange']]
    except (TypeError, ValueError, KeyError):
        raise ConfigError(f'{name}: simulation.rmag_range and simulation.lbg.zrange must be '
                          f'[min, max] pairs of numbers') from None
    if not rlo < rhi or len(lbg_z) != 2 or not lbg_z[0] < lbg_z[1]:
        raise ConfigError(f'{name}: simulation.rmag_range and simulation.lbg.zrange need min < max')
    if not RMAG_LIMITS[0] <= rlo < rhi <= RMAG_LIMITS[1]:
        raise ConfigError(f'{name}: simulation.rmag_range must lie within r = '
                          f'{RMAG_LIMITS[0]:g}..{RMAG_LIMITS[1]:g}, got [{rlo:g}, {rhi:g}]')
    # the shipped file, never one of that name in the working directory
    shipped = read_yaml_config(os.path.join(str(etc_dir()), DEFAULT_SIM_CONFIG))
    check_numbers(sim, shipped['simulation'], name, 'simulation')
    fractions = sim['class_fractions']
    if not isinstance(fractions, dict) or any(v < 0 for v in fractions.values()) \
            or not sum(fractions.values()) > 0:
        raise ConfigError(f'{name}: simulation.class_fractions must be numbers >= 0 with a '
                          f'positive sum, not {fractions!r}')
    cfg['_source'] = str(name)
    return cfg


def _as_number(value):
    """`value` as a finite number, or None.  Text that reads as one counts: YAML 1.1 (PyYAML)
    reads ``1e-3``, without a dot, as a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and np.isfinite(value):
        return value
    return None


def check_numbers(section, default, name, where):
    """Refuse a value that is not a finite number where the shipped configuration has one
    (or not true/false where it has a boolean).

    A string or ``null`` given for, say, ``simulation.lbg.beta_mean`` otherwise reached numpy
    and failed mid-run with a traceback that named neither the file nor the key.  Text that
    reads as a number (``1e-3``, which YAML 1.1 leaves a string) is replaced by the number.

    Parameters
    ----------
    section : dict
        Part of the configuration read from `name` (modified in place).
    default : dict
        The same part of the shipped configuration (:data:`DEFAULT_SIM_CONFIG`): a key
        holding a number, or a list of numbers, there must hold one here.  An entry that
        the shipped mapping lacks (a new line, say) is compared with the shipped entries
        when these are all mappings of one kind (``lines``, ``emission``).
    name : str
        Configuration file, for the message.
    where : str
        Dotted path of `section`, for the message.

    Raises
    ------
    lbgnet.config.ConfigError
        Naming the file and the key.
    """
    if not isinstance(section, dict) or not isinstance(default, dict) or not default:
        return
    entries = all(isinstance(v, dict) for v in default.values())
    for key, value in section.items():
        ref = default.get(key, next(iter(default.values())) if entries else None)
        path = f'{where}.{key}'
        if isinstance(ref, dict):
            check_numbers(value, ref, name, path)
        elif isinstance(ref, bool):
            if not isinstance(value, bool):             # bool('no') is True
                raise ConfigError(f'{name}: {path} must be true or false, not {value!r}')
        elif _as_number(ref) is not None and not isinstance(ref, str):
            number = _as_number(value)
            if number is None:
                raise ConfigError(f'{name}: {path} must be a finite number, not {value!r}')
            section[key] = number
        elif (isinstance(ref, list) and ref
              and all(_as_number(v) is not None and not isinstance(v, str) for v in ref)):
            numbers = [_as_number(v) for v in value] if isinstance(value, list) else [None]
            if not numbers or any(v is None for v in numbers):
                raise ConfigError(f'{name}: {path} must be a list of finite numbers, '
                                  f'not {value!r}')
            section[key] = numbers


def class_counts(fractions, n, rng, classes=None):
    """Number of objects per class: multinomial draw with the (renormalised) fractions."""
    names = list(CLASSES if classes is None else classes)
    bad = [c for c in names if c not in CLASSES]
    if bad:
        raise ValueError(f'unknown classes {bad}; known {CLASSES}')
    prob = np.array([float(fractions.get(c, 0.0)) for c in names])
    if prob.sum() <= 0:
        raise ValueError(f'class fractions of {names} sum to zero')
    return dict(zip(names, rng.multinomial(n, prob / prob.sum())))


def _draw_class(name, sim, n, rng, zrange):
    lbg_z = tuple(zrange) if zrange is not None else tuple(sim['lbg']['zrange'])
    if name == 'LBG':
        cols = draw_lbg(sim['lbg'], n, rng, zrange=lbg_z)
        cols['SUBTYPE'] = np.full(n, 'LBG')
    elif name == 'QSO':
        cols = draw_qso(sim['qso'], n, rng)
    elif name == 'GALAXY':
        cols = draw_galaxy(sim['galaxy'], n, rng, lbg_z)
    else:
        cols = draw_star(sim['star'], n, rng)
    if name in ('LBG', 'QSO'):
        sig = float(sim['igm']['scale_sigma'])
        cols['IGM_SCALE'] = np.exp(rng.normal(-0.5 * sig ** 2, sig, n))
        cols['IGM_SEED'] = rng.integers(1, 2 ** 62, n)
    cols['CLASS'] = np.full(n, name)
    return cols


def draw_population(simcfg, n, rng, classes=None, zrange=None, rmag_range=None):
    """Draw a mixed population of mock objects.

    Parameters
    ----------
    simcfg : dict
        From :func:`load_sim_config`.
    n : int
        Number of objects.
    rng : numpy.random.Generator
    classes : sequence of str, optional
        Restrict to these classes (fractions renormalised).
    zrange : (float, float), optional
        LBG redshift range overriding the configuration (also sets the LBG redshifts
        mimicked by the ``OII_LYA`` galaxies).
    rmag_range : (float, float), optional
        r AB range of all classes overriding the configuration.

    Returns
    -------
    astropy.table.Table
        One row per object, in random class order, with the columns of :data:`COLUMNS`
        (fill values where a parameter does not apply).  ``meta['SIMCFG']`` names the
        configuration.
    """
    sim = simcfg['simulation']
    if n < 0:
        raise ValueError(f'number of objects must be >= 0, got {n}')
    if zrange is not None and not zrange[0] < zrange[1]:
        raise ValueError(f'zrange must be (min, max) with min < max, got {zrange}')
    rlo, rhi = sim['rmag_range'] if rmag_range is None else rmag_range
    if not rlo <= rhi:
        raise ValueError(f'rmag_range must be (min, max), got {(rlo, rhi)}')
    counts = class_counts(sim['class_fractions'], n, rng, classes)
    parts = [_draw_class(name, sim, k, rng, zrange) for name, k in counts.items() if k > 0]
    data = {}
    for col, (dtype, fill, _) in COLUMNS.items():
        if col == 'RMAG':
            continue
        vals = [p[col] if col in p else np.full(len(p['CLASS']), fill) for p in parts]
        data[col] = np.concatenate(vals).astype(dtype) if vals else np.zeros(0, dtype=dtype)
    order = rng.permutation(n)
    truth = Table({k: v[order] for k, v in data.items()})
    truth['RMAG'] = rng.uniform(rlo, rhi, n)
    truth = truth[list(COLUMNS)]
    for col, (_, _, desc) in COLUMNS.items():
        truth[col].description = desc
    truth.meta['SIMCFG'] = str(simcfg.get('_source', DEFAULT_SIM_CONFIG))
    return truth
