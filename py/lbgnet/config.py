"""
lbgnet.config
=============

The single source of the input grid, the line list, the number of boxes and the
selection thresholds.  Values live in ``etc/*.yaml``; this module loads them once
into frozen dataclasses that every other module receives as an argument.

A configuration file may name another one with ``base: <file>``; keys of the
including file override those of the base (recursively for mappings, except ``lines`` and
``target.lines``, which replace the base's line list as a whole).  ``base_sha256:``
(optional) pins the base: :func:`mapping_sha256` of the base as read must equal it.
"""
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

DEFAULT_CONFIG = 'lbgnet-base.yaml'


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Grid:
    """Linear wavelength grid of the network input.

    Parameters
    ----------
    wave_min : float
        Lower edge of the first bin (Å).
    dwave : float
        Bin width (Å).
    nbins : int
        Number of bins.
    """

    wave_min: float
    dwave: float
    nbins: int

    @property
    def wave_max(self):
        """Upper edge of the last bin (Å)."""
        return self.wave_min + self.dwave * self.nbins

    @property
    def edges(self):
        """Bin edges, shape (nbins+1,), Å."""
        return self.wave_min + self.dwave * np.arange(self.nbins + 1)

    @property
    def centers(self):
        """Bin centres, shape (nbins,), Å."""
        return self.wave_min + self.dwave * (np.arange(self.nbins) + 0.5)

    def bin_index(self, wave):
        """Index of the bin holding each wavelength.

        Parameters
        ----------
        wave : array_like
            Wavelengths (Å).

        Returns
        -------
        numpy.ndarray of int
            Bin index, -1 below the grid and ``nbins`` or more above it.

        Notes
        -----
        ``(wave - wave_min) / dwave`` is rounded to 6 decimals before the floor, so that a
        DESI pixel lying exactly on a bin edge (e.g. 5800.0 Å, stored as 5799.99999999…)
        lands in the bin that starts at that edge, never in its neighbour.
        """
        pos = np.round((np.asarray(wave, dtype=np.float64) - self.wave_min) / self.dwave, 6)
        idx = np.floor(pos).astype(np.int64)
        return np.where(idx < 0, -1, idx)


@dataclass(frozen=True)
class LineList:
    """Rest-frame line list, in a fixed order.

    Parameters
    ----------
    names : tuple of str
        Upper-case line names, used in FITS columns (``C_<NAME>``, ``Z_<NAME>``).
    waves : tuple of float
        Rest-frame vacuum wavelengths (Å), same order as `names`.
    """

    names: tuple
    waves: tuple

    def __len__(self):
        return len(self.names)

    @property
    def wave_array(self):
        """Rest wavelengths as a float64 array, shape (nlines,)."""
        return np.asarray(self.waves, dtype=np.float64)

    def index(self, name):
        """Position of line `name` in the list."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f'unknown line {name!r}; known: {", ".join(self.names)}') from None


@dataclass(frozen=True)
class Selection:
    """LBG selection thresholds: >= `n_thresh` lines with confidence > `c_thresh`."""

    c_thresh: float
    n_thresh: int


@dataclass(frozen=True)
class Config:
    """A loaded lbgnet configuration.

    Attributes
    ----------
    grid : Grid
    lines : LineList
    nboxes : int
        Boxes per line over the grid.
    selection : Selection
    extra : dict
        Every other top-level key of the file (model, training, simulation sections),
        untouched.
    source : str
        Path of the file that was loaded.
    """

    grid: Grid
    lines: LineList
    nboxes: int
    selection: Selection
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    source: str = field(default='', compare=False)

    @property
    def box_width(self):
        """Width of one box in wavelength (Å)."""
        return self.grid.dwave * self.grid.nbins / self.nboxes

    def sha256(self):
        """SHA-256 (hex) of :meth:`to_dict` without ``selection``, as canonical JSON.

        What the catalogues record as ``LBGCSHA``: the weights' SHA-256 does not cover the
        description that decodes them (line wavelengths, line agreement, error
        calibration); the thresholds are recorded on their own (``CTHRESH``, ``NTHRESH``)
        and may be overridden on the command line.
        """
        data = self.to_dict()
        data.pop('selection', None)
        return mapping_sha256(data)

    def to_dict(self):
        """Plain-dict form, suitable for YAML/JSON and FITS-header echo."""
        out = dict(self.extra)
        out['grid'] = dict(wave_min=self.grid.wave_min, dwave=self.grid.dwave,
                           nbins=self.grid.nbins)
        out['lines'] = dict(zip(self.lines.names, self.lines.waves))
        out['nboxes'] = self.nboxes
        out['selection'] = dict(c_thresh=self.selection.c_thresh,
                                n_thresh=self.selection.n_thresh)
        return out


def as_int(value):
    """`value` as an int if it is an integer (or an integral float, or a string of one);
    ValueError otherwise (booleans included)."""
    if isinstance(value, str):
        return int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)) \
            or not float(value).is_integer():
        raise ValueError(value)
    return int(value)


def as_float(value):
    """`value` as a finite float; ValueError otherwise (booleans and None included)."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise ValueError(value)
    out = float(value)
    if not np.isfinite(out):
        raise ValueError(value)
    return out


def etc_dir():
    """Directory holding the shipped configuration files.

    Looks, in order, at ``$LBGNET_ETC``, the source tree's ``etc/`` (editable install)
    and ``<prefix>/share/lbgnet/etc`` (regular install).
    """
    candidates = []
    if os.environ.get('LBGNET_ETC'):
        candidates.append(Path(os.environ['LBGNET_ETC']))
    candidates.append(Path(__file__).resolve().parents[2] / 'etc')
    candidates.append(Path(sys.prefix) / 'share' / 'lbgnet' / 'etc')
    for cand in candidates:
        if (cand / DEFAULT_CONFIG).is_file():
            return cand
    raise ConfigError('cannot find the lbgnet etc/ directory (looked in '
                      + ', '.join(str(c) for c in candidates) + '); set $LBGNET_ETC')


#: The keys each configuration section may hold (first level).  Sections not listed here
#: are free-form (``lines``: name -> rest wavelength) or scalars (``name``, ``nboxes``);
#: ``tune`` is checked by :mod:`lbgnet.tune`.
SECTION_KEYS = {
    'grid': ('wave_min', 'dwave', 'nbins'),
    'selection': ('c_thresh', 'n_thresh'),
    'instrument': ('arms', 'noise', 'pixel', 'resolution', 'resolution_ndiag'),
    'model': ('architecture', 'channels', 'conv_layers', 'dense_units', 'direct', 'dropout',
              'filters', 'kernel_size', 'offset_margin', 'padding', 'snr_softening', 'strides'),
    'loss': ('direct', 'gamma', 'pos_weight'),
    'postprocess': ('agree_tol', 'hybrid_score', 'line_floor', 'zerr_floor', 'zerr_scale',
                    'zerr_tpl_floor', 'zerr_tpl_scale'),
    'training': ('batch_size', 'epochs', 'learning_rate', 'lr_final_fraction', 'lr_schedule',
                 'depth_min', 'max_minutes', 'monitor', 'ntrain', 'nval', 'patience', 'seed',
                 'sim_fraction', 'simulation'),
    'simulation': ('class_fractions', 'galaxy', 'igm', 'lbg', 'normalisation', 'qso',
                   'rmag_range', 'star'),
    'mock': ('dead_arm_fraction', 'dead_fibre_fraction', 'efftime_per_exposure',
             'efftime_range', 'exptime_per_efftime', 'files', 'target_bits', 'tsnr2_per_efftime'),
    'redrock_mock': ('chi2_mismatch', 'deltachi2', 'failure_mix', 'lbg', 'ncoeff',
                     'qso_dv_sigma', 'qso_hiz_min', 'small_deltachi2', 'star_subtypes',
                     'star_vr_sigma', 'success', 'wrong_z', 'zerr', 'zerr_dex', 'zerr_mag'),
    'generator': ('augment', 'batch_size', 'batches_per_epoch', 'efftime_range',
                  'fibre_failures'),
    'target': ('class', 'lines'),
}
FREE_SECTIONS = ('lines', 'name', 'nboxes', 'tune')
#: The keys of nested mappings (``section.key``) whose allowed keys are fixed.
NESTED_KEYS = {
    'model.direct': ('units', 'z_range'),
    'loss.direct': ('dz_scale', 'gamma', 'weight'),
}
#: The shipped simulator configuration, and its ``simulation`` sub-sections whose keys are
#: checked against it (a key the shipped file lacks is one the simulator never reads).
DEFAULT_SIM_CONFIG = 'lbgnet-sim.yaml'
SIM_SUBSECTIONS = ('galaxy', 'igm', 'lbg', 'qso', 'star')


def check_keys(data, source):
    """Reject unknown sections, unknown keys in a section, and sections that are not mappings.

    A misspelt key (``max_minute`` for ``max_minutes``) would otherwise be ignored and its
    default used without a word.  The nested mappings of :data:`NESTED_KEYS`
    (``model.direct``, ``loss.direct``) and the ``simulation`` sub-sections of
    :data:`SIM_SUBSECTIONS` (keys of the shipped ``lbgnet-sim.yaml``) are checked too.

    Parameters
    ----------
    data : dict
        A configuration mapping (as :func:`read_yaml_config` returns it).
    source : str
        Named in the error.

    Raises
    ------
    ConfigError
        Naming `source` and the offending section or keys.
    """
    for section, value in data.items():
        if section in FREE_SECTIONS:
            continue
        if section not in SECTION_KEYS:
            raise ConfigError(f'{source}: unknown section "{section}" (known: '
                              f'{", ".join(sorted(SECTION_KEYS) + list(FREE_SECTIONS))})')
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f'{source}: section "{section}" must be a mapping, '
                              f'not {type(value).__name__} {value!r}')
        _check_mapping(value, SECTION_KEYS[section], section, source)
    for path, known in NESTED_KEYS.items():
        section, key = path.split('.')
        value = (data.get(section) or {}).get(key)
        if value is not None:
            _check_mapping(value, known, path, source)
    simulation = data.get('simulation') or {}
    shipped = _shipped_simulation() if any(k in simulation for k in SIM_SUBSECTIONS) else {}
    for key in SIM_SUBSECTIONS:
        if simulation.get(key) is not None and isinstance(shipped.get(key), dict):
            _check_mapping(simulation[key], tuple(shipped[key]), f'simulation.{key}', source)


def _check_mapping(value, known, path, source):
    """`value` must be a mapping whose keys are all in `known` (see :func:`check_keys`)."""
    if not isinstance(value, dict):
        raise ConfigError(f'{source}: {path} must be a mapping, not {type(value).__name__} '
                          f'{value!r}')
    unknown = sorted(set(map(str, value)) - set(known))
    if unknown:
        raise ConfigError(f'{source}: unknown key(s) '
                          f'{", ".join(f"{path}.{k}" for k in unknown)} (known in '
                          f'{path}: {", ".join(known)})')


class _UniqueKeyLoader(getattr(yaml, 'CSafeLoader', yaml.SafeLoader)):
    """The safe loader, refusing a mapping that names one key twice.

    PyYAML keeps the last of duplicated keys silently, so ``epochs: 3`` followed further down by
    ``epochs: 30`` trained for 30.  Keys brought in by a YAML merge (``<<: *anchor``) may still be
    overridden: only keys written in the mapping itself are compared.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key_node, _ in node.value:
                if key_node.tag == 'tag:yaml.org,2002:merge':
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    mark = first.setdefault(key, key_node.start_mark)
                except TypeError:        # an unhashable key: the base constructor says so
                    continue
                if mark is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        'while constructing a mapping', node.start_mark,
                        f'duplicate key {key!r} (first at line {mark.line + 1})',
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(stream):
    """Parse YAML as :func:`yaml.safe_load` does, with libyaml's parser when PyYAML has it.

    The C parser builds the same objects (the same safe constructor and resolver) about ten
    times faster, which matters to commands that read the configurations at start-up.  A key
    written twice in one mapping is an error (PyYAML would keep the last one silently).

    Parameters
    ----------
    stream : str or file object
        The YAML text or an open file.

    Returns
    -------
    object
        The parsed document (a dict for the configurations).

    Raises
    ------
    yaml.YAMLError
        On malformed YAML or a key written twice in one mapping.
    """
    return yaml.load(stream, Loader=_UniqueKeyLoader)


def yaml_error_line(err):
    """One line for a YAML (or file) error: PyYAML's problem and where it is.

    Parameters
    ----------
    err : Exception
        Raised by :func:`load_yaml` or while opening / decoding the file.

    Returns
    -------
    str
        E.g. ``did not find expected ',' or ']' at line 4, column 1``.
    """
    problem = getattr(err, 'problem', None)
    mark = getattr(err, 'problem_mark', None)
    if problem and mark is not None:
        return f'{problem} at line {mark.line + 1}, column {mark.column + 1}'
    return ' '.join(str(err).split())


def _shipped_simulation():
    """The ``simulation`` section of the shipped simulator configuration ({} if unreadable).

    Read directly (no ``base:`` includes, no key check): the sub-sections checked by
    :func:`check_keys` are all written out in that file.
    """
    try:
        with open(etc_dir() / DEFAULT_SIM_CONFIG) as fx:
            data = load_yaml(fx)
    except (OSError, yaml.YAMLError, ConfigError):
        return {}
    section = data.get('simulation') if isinstance(data, dict) else None
    return section if isinstance(section, dict) else {}


def resolve_beside(name, config_name):
    """A file named in a configuration: next to that configuration file if it is there.

    Parameters
    ----------
    name : str
        File name or path, as written in the configuration (e.g. ``training.simulation``).
    config_name : str
        The configuration, as given to :func:`load_config` (path or name in :func:`etc_dir`).

    Returns
    -------
    str
        ``<directory of config_name>/name`` when `name` is relative and that file exists
        (and is not the file the usual look-up finds anyway); otherwise `name` unchanged,
        to be looked up in the current directory, then by name in :func:`etc_dir`.
    """
    if name is None or os.path.isabs(str(name)):
        return name
    try:
        beside = _resolve(config_name).parent / str(name)
    except ConfigError:
        return name
    if not beside.is_file():
        return name
    try:
        usual = _resolve(name).resolve()
    except ConfigError:
        usual = None
    return name if beside.resolve() == usual else str(beside)


def _resolve(name, relative_to=None):
    """The file `name`: next to `relative_to` (the including file's directory) first,
    then as given (the current directory), then in :func:`etc_dir`; so a ``base:``
    means the same file wherever the command runs."""
    path = Path(name)
    if relative_to is not None and not path.is_absolute() and (Path(relative_to) / name).is_file():
        return Path(relative_to) / name
    if path.is_file():
        return path
    if (etc_dir() / name).is_file():
        return etc_dir() / name
    if path.is_dir():
        raise ConfigError(f'{name}: a directory, not a configuration file')
    raise ConfigError(f'{name}: configuration file not found')


#: Mappings a configuration replaces as a whole instead of merging with its ``base:``
#: (a line list names the lines to use, not changes to the inherited ones), as key paths.
REPLACED_SECTIONS = (('lines',), ('target', 'lines'))


def _merge(base, over, path=()):
    out = dict(base)
    for key, val in over.items():
        if val is None and isinstance(out.get(key), dict):
            # an empty block (``training:`` with its keys commented out) overrides nothing:
            # it replaced the base's whole section, silently falling back on code defaults
            continue
        if path + (key,) in REPLACED_SECTIONS:
            out[key] = val
        elif isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], val, path + (key,))
        else:
            out[key] = val
    return out


def file_sections(name):
    """Top-level keys written in the configuration file `name` itself (not those of its
    ``base:``); empty when it cannot be read (:func:`read_yaml_config` reports that)."""
    try:
        with open(_resolve(name)) as fx:
            data = load_yaml(fx)
    except (OSError, ConfigError, UnicodeDecodeError, yaml.YAMLError):
        return set()
    return set(data) if isinstance(data, dict) else set()


def read_yaml_config(name, _seen=None):
    """Read a YAML configuration, following ``base:`` includes.

    Parameters
    ----------
    name : str or path
        File path, or a file name inside :func:`etc_dir`.

    Returns
    -------
    dict
        The merged mapping (without the ``base`` key).
    """
    path = _resolve(name)
    seen = set() if _seen is None else _seen
    if path.resolve() in seen:
        raise ConfigError(f'{path}: circular "base:" include')
    seen.add(path.resolve())
    try:
        with open(path) as fx:
            data = load_yaml(fx)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f'{path}: cannot read YAML ({yaml_error_line(err)})') from None
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: top level must be a mapping')
    if data.get('format') == MODEL_FORMAT:        # JSON is YAML: a model file given as config
        raise ConfigError(f'{path}: a model description, not a configuration (give it to '
                          '--model or --init-from; its configuration is the "config" entry)')
    base = data.pop('base', None)
    base_sha = data.pop('base_sha256', None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f'{path}: base must be a configuration file name, not {base!r}')
    if base_sha is not None and base is None:
        raise ConfigError(f'{path}: base_sha256 without a base')
    if base is not None:
        try:
            resolved = _resolve(base, path.parent)
        except ConfigError:
            raise ConfigError(f'{path}: base {base!r}: configuration file not found (beside '
                              'the config, here or in etc/)') from None
        base_data = read_yaml_config(resolved, seen)
        if base_sha is not None and str(base_sha).strip().lower() != mapping_sha256(base_data):
            raise ConfigError(f'{path}: base {base!r} ({resolved}), or a file of its own '
                              'base: chain, is not the configuration this file was written '
                              'over (base_sha256 differs: edited since, or etc/ of another '
                              'lbgnet?); restore it, or remove base_sha256 to use it as it is')
        data = _merge(base_data, data)
    if _seen is None:
        check_keys(data, str(path))
    return data


def mapping_sha256(data):
    """SHA-256 of a configuration mapping, as canonical JSON.

    What ``base_sha256`` records of a base as read by :func:`read_yaml_config` (its
    ``base:`` chain merged), and :meth:`Config.sha256` of its plain-dict form.

    Parameters
    ----------
    data : dict

    Returns
    -------
    str
        Hex digest.
    """
    text = json.dumps(data, sort_keys=True, separators=(',', ':'), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


#: The ``format`` of a model description (:mod:`lbgnet.io.modelfile`), recognised when
#: one is given where a configuration is expected.
MODEL_FORMAT = 'lbgnet-model'
#: What a line name may hold (upper-cased): it names Keras layers (``fc_box_<LINE>``) and
#: FITS columns (``C_<LINE>``, ``Z_<LINE>``).
LINE_NAME = re.compile(r'^[A-Z][A-Z0-9_]*$')
#: What a model ``name`` may hold: it names the model files (``NAME.weights.h5``) and the
#: Keras model (spaces become underscores).
MODEL_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.+ -]*$')


def line_list(lines, where):
    """A :class:`LineList` from a mapping NAME -> rest wavelength (Å).

    Parameters
    ----------
    lines : dict
    where : str
        The file and key, for messages (e.g. ``'etc/x.yaml: lines'``).

    Raises
    ------
    ConfigError
        When `lines` is not a non-empty mapping, names repeat (case ignored) or a
        wavelength is not a finite number > 0.  (The form of the names is checked for a
        new training only, :func:`check_names`.)
    """
    if not isinstance(lines, dict) or not lines:
        what = 'an empty mapping' if isinstance(lines, dict) else f'a {type(lines).__name__}'
        raise ConfigError(f'{where} must map each line name to its rest wavelength '
                          f'(NAME: Angstrom), not {what}')
    names = tuple(str(k).strip().upper() for k in lines)
    if len(set(names)) != len(names):
        raise ConfigError(f'{where}: line names must be unique (case ignored)')
    waves = []
    for name, value in zip(names, lines.values()):
        try:
            wave = as_float(value)
        except (TypeError, ValueError):
            wave = np.nan
        if not wave > 0:
            raise ConfigError(f'{where}: the rest wavelength of {name} must be a finite '
                              f'number > 0 (Angstrom), not {value!r}')
        waves.append(wave)
    return LineList(names, tuple(waves))


def check_names(config):
    """Refuse line names and a model ``name`` that cannot name layers, FITS columns and
    model files (checked before a training; model files written earlier are still read).

    Raises
    ------
    ConfigError
        Naming the configuration's file.
    """
    bad = [n for n in config.lines.names if not LINE_NAME.match(n)]
    if bad:
        raise ConfigError(f'{config.source}: line names must be a letter followed by letters, '
                          f'digits or underscores (they name layers and FITS columns), not {bad}')
    name = config.extra.get('name')
    if name is not None and not (isinstance(name, str) and MODEL_NAME.match(name)):
        raise ConfigError(f'{config.source}: name must start with a letter or digit and hold '
                          'only letters, digits, spaces and _ . + - (it names the model '
                          f'files), not {name!r}')


def config_from_dict(data, source=''):
    """Build a :class:`Config` from a mapping (as read from YAML or a model file).

    Raises
    ------
    ConfigError
        If a required key is missing or a value is out of range.
    """
    try:
        grid = Grid(as_float(data['grid']['wave_min']), as_float(data['grid']['dwave']),
                    as_int(data['grid']['nbins']))
        nboxes = as_int(data['nboxes'])
        sel = Selection(as_float(data['selection']['c_thresh']),
                        as_int(data['selection']['n_thresh']))
        lines = data['lines']
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ConfigError(f'{source or "config"}: missing or invalid key ({err!r}; grid '
                          'wave_min, dwave and selection.c_thresh must be finite numbers, '
                          'nbins, nboxes and n_thresh integers)') from None
    linelist = line_list(lines, f'{source or "config"}: lines')
    if grid.nbins <= 0 or grid.dwave <= 0 or grid.wave_min <= 0:
        raise ConfigError(f'{source or "config"}: grid needs nbins > 0, dwave > 0 and wave_min > 0')
    if nboxes <= 0 or grid.nbins % nboxes != 0:
        raise ConfigError(f'{source or "config"}: nboxes={nboxes} must divide nbins={grid.nbins}')
    if not 1 <= sel.n_thresh <= len(linelist) or not 0.0 <= sel.c_thresh <= 1.0:
        raise ConfigError(f'{source or "config"}: selection thresholds out of range')
    extra = {k: v for k, v in data.items() if k not in ('grid', 'lines', 'nboxes', 'selection')}
    return Config(grid, linelist, nboxes, sel, extra, str(source))


def load_config(name=DEFAULT_CONFIG):
    """Load a configuration file into a frozen :class:`Config`.

    Parameters
    ----------
    name : str or path, optional
        Path or file name in :func:`etc_dir` [``lbgnet-base.yaml``].
    """
    return config_from_dict(read_yaml_config(name), source=str(name))


def arm_pixel(config):
    """Width (Å) of the DESI arm pixels, from the ``instrument`` section of a configuration.

    Raises
    ------
    ConfigError
        If the section or its ``pixel`` entry is missing or not a positive, finite number.
    """
    try:
        value = config.extra['instrument']['pixel']
        if isinstance(value, bool):               # float(True) is 1.0: a YAML slip
            raise TypeError(f'a boolean, {value}')
        pixel = float(value)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f'{config.source}: missing or invalid instrument pixel ({err!r})') from None
    if not (np.isfinite(pixel) and pixel > 0):     # inf made every arm a single pixel
        raise ConfigError(f'{config.source}: instrument pixel must be > 0 and finite, got {pixel}')
    return pixel


def arm_wavelengths(config):
    """DESI arm pixel grids from the ``instrument`` section of a configuration.

    Parameters
    ----------
    config : Config

    Returns
    -------
    dict
        band -> increasing wavelength array (Å), e.g. ``{'b': array([3600., 3600.8, …])}``.
    """
    pixel = arm_pixel(config)
    try:
        arms = {str(b): (float(lo), float(hi))
                for b, (lo, hi) in config.extra['instrument']['arms'].items()}
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f'{config.source}: missing or invalid instrument section ({err!r})') from None
    return {b: np.round(lo + pixel * np.arange(int(round((hi - lo) / pixel)) + 1), 4)
            for b, (lo, hi) in arms.items()}
