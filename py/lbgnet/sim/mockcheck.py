"""
lbgnet.sim.mockcheck
====================

Range and key checks of a mock configuration (``instrument``, ``mock`` and
``redrock_mock`` sections of ``etc/lbgnet-mock.yaml``, and the spreads, widths and depth
caps of its ``simulation`` physics), run once when it is loaded.

:func:`lbgnet.sim.mock.check_mock_numbers` makes sure that every value is a number where
the shipped file has one; the checks here make sure that it is a number the simulator can
use.  Without them a negative ``redrock_mock.failure_mix`` entry or an even
``instrument.resolution_ndiag`` failed inside every file's simulation with a traceback
that blamed the pixel file, and a negative ``mock.exptime_per_efftime`` or a ``p_max``
of 1.5 was written into the mock files without a word.  Pure functions of the
configuration mapping; every error names the file and the key.
"""
import re

from ..config import ConfigError

#: Tests a number must pass, by name: (test, what the message says it must be).
NUMBER_TESTS = {
    'positive': (lambda v: v > 0, 'a number > 0'),
    'nonneg': (lambda v: v >= 0, 'a number >= 0'),
    'fraction': (lambda v: 0 <= v <= 1, 'in [0, 1]'),
}

#: (key path, test) of every number with a range.  ``*`` stands for every key of a
#: mapping, an integer for an element of a list; a list value is tested element by element.
#: Paths absent from a configuration are skipped (their presence is checked elsewhere).
NUMBER_RANGES = (
    ('instrument.noise.read_noise_var.*', 'nonneg'),
    ('instrument.noise.noise_excess.*', 'positive'),
    ('instrument.noise.sky_residual.*', 'nonneg'),
    ('instrument.noise.sky_line_scale.*', 'nonneg'),
    ('instrument.noise.sky_line_sigma_factor', 'positive'),
    ('instrument.noise.sky_continuum.flux', 'nonneg'),
    ('mock.exptime_per_efftime', 'positive'),
    ('mock.tsnr2_per_efftime.*', 'nonneg'),
    ('redrock_mock.success.*.p_max', 'fraction'),
    ('redrock_mock.success.*.width', 'positive'),
    ('redrock_mock.lbg.width', 'positive'),
    ('redrock_mock.lbg.qso_right_max', 'fraction'),
    ('redrock_mock.lbg.oii_max', 'fraction'),
    ('redrock_mock.lbg.qso_right_ew.1', 'positive'),
    ('redrock_mock.lbg.oii_ew.1', 'positive'),
    ('redrock_mock.lbg.lya_dv.1', 'nonneg'),
    ('redrock_mock.failure_mix.*.*', 'nonneg'),
    ('redrock_mock.wrong_z.*', 'nonneg'),
    ('redrock_mock.star_vr_sigma', 'nonneg'),
    ('redrock_mock.qso_dv_sigma', 'nonneg'),
    ('redrock_mock.zerr.*', 'positive'),
    ('redrock_mock.zerr_dex', 'nonneg'),
    ('redrock_mock.deltachi2.right', 'positive'),
    ('redrock_mock.deltachi2.dex', 'nonneg'),
    ('redrock_mock.deltachi2.wrong_mean', 'positive'),
    ('redrock_mock.small_deltachi2', 'nonneg'),
    ('redrock_mock.chi2_mismatch.*', 'nonneg'),
    # the physics' spreads, widths and depth caps: a negative spread failed inside numpy's
    # random draws with a message naming neither file nor key ('scale < 0'), and a negative
    # width or a depth cap above 1 was simulated without a word
    ('simulation.igm.scale_sigma', 'nonneg'),
    ('simulation.lbg.beta_sigma', 'nonneg'),
    ('simulation.lbg.dv_lya_sigma', 'nonneg'),
    ('simulation.lbg.dv_ism_sigma', 'nonneg'),
    ('simulation.lbg.sigma_ism', 'positive'),
    ('simulation.lbg.sigma_lya', 'positive'),
    ('simulation.lbg.ism_depth_max', 'fraction'),
    ('simulation.lbg.lya_abs_sigma_min', 'positive'),
    ('simulation.lbg.lya_abs_depth_max', 'fraction'),
    ('simulation.lbg.lya_red_wing', 'fraction'),
    ('simulation.lbg.ism_scale_sigma', 'nonneg'),
    ('simulation.lbg.high_scale_sigma', 'nonneg'),
    ('simulation.qso.alpha_sigma', 'nonneg'),
    ('simulation.qso.line_scale_dex', 'nonneg'),
    ('simulation.galaxy.absorption_sigma', 'positive'),
    ('simulation.galaxy.ism_scale_sigma', 'nonneg'),
    ('simulation.galaxy.ism_sigma', 'positive'),
    ('simulation.galaxy.max_absorption_depth', 'fraction'),
    ('simulation.star.max_absorption_depth', 'fraction'),
    ('simulation.star.vr_sigma', 'nonneg'),
)

#: Mappings whose keys are fixed: a key the shipped file lacks there is a misspelling
#: the simulator would ignore (``*`` as in :data:`NUMBER_RANGES`).
FIXED_KEY_MAPPINGS = ('instrument.noise', 'mock.files', 'redrock_mock.lbg',
                      'redrock_mock.success.*', 'redrock_mock.deltachi2',
                      'redrock_mock.chi2_mismatch')

#: Largest number of RESOLUTION diagonals: 99 span ±49 pixels (±39 Å), far wider than any
#: DESI LSF (σ ≈ 1–1.5 pixels; DESI coadds store 11), and ~4 MB per mock spectrum.
MAX_NDIAG = 99

#: What ``mock.files.survey`` and ``program`` may hold: they make the file names
#: ``coadd-<survey>-<program>-<pixel>.fits``, parsed at the dashes.
NAME_PATTERN = re.compile(r'[A-Za-z0-9_]+')


def _nodes(data, path):
    """``(dotted path, value)`` of every node `path` (with ``*`` and list indices) names
    in `data`; missing keys yield nothing."""
    found = [('', data)]
    for key in path.split('.'):
        step = []
        for where, node in found:
            if key == '*' and isinstance(node, dict):
                step.extend((f'{where}.{k}', v) for k, v in node.items())
            elif isinstance(node, dict) and key in node:
                step.append((f'{where}.{key}', node[key]))
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                step.append((f'{where}[{key}]', node[int(key)]))
        found = step
    return [(where.lstrip('.'), node) for where, node in found]


def _fail(name, path, need, value):
    raise ConfigError(f'{name}: {path} must be {need}, not {value!r}')


def check_mock_ranges(simcfg, shipped, name):
    """Refuse mock configuration values the simulator cannot use.

    Run after :func:`lbgnet.sim.mock.check_mock_numbers` (which makes the values numbers).

    Parameters
    ----------
    simcfg : dict
        The configuration mapping (:func:`lbgnet.sim.population.load_sim_config`).
    shipped : dict
        The shipped mock configuration (its keys are the known keys of
        :data:`FIXED_KEY_MAPPINGS`).
    name : str
        The configuration file, for the message.

    Raises
    ------
    lbgnet.config.ConfigError
        Naming `name`, the key and what it must be:

        * a number outside its range (:data:`NUMBER_RANGES`);
        * an unknown key in a mapping of :data:`FIXED_KEY_MAPPINGS`;
        * ``instrument.resolution_ndiag`` not an odd integer in 3.. :data:`MAX_NDIAG`;
        * ``redrock_mock.failure_mix`` without an entry per class, with a solution that is
          not a Redrock SPECTYPE, or with probabilities summing to zero;
        * ``redrock_mock.success`` of a class other than QSO, GALAXY or STAR;
        * ``redrock_mock.zerr`` / ``ncoeff`` not one entry per SPECTYPE (``ncoeff`` an
          integer in 1..NCOEFF_MAX), ``wrong_z`` not [min, max] pairs with min <= max,
          ``star_subtypes`` not a non-empty list of names;
        * ``mock.files.survey`` / ``program`` not a plain name, ``mock.files.dec_range``
          not a [min, max] pair with -90 <= min < max <= 90.
    """
    from .population import CLASSES
    from .rrmock import NCOEFF_MAX, SPECTYPES
    for path, test in NUMBER_RANGES:
        ok, need = NUMBER_TESTS[test]
        for where, value in _nodes(simcfg, path):
            for item in (value if isinstance(value, list) else [value]):
                if isinstance(item, bool) or not isinstance(item, (int, float)) or not ok(item):
                    _fail(name, where, need, value)
    for path in FIXED_KEY_MAPPINGS:
        allowed = set()
        for _, node in _nodes(shipped, path):
            allowed.update(node if isinstance(node, dict) else ())
        for where, node in _nodes(simcfg, path):
            unknown = sorted(set(map(str, node)) - allowed) if isinstance(node, dict) else []
            if unknown:
                raise ConfigError(f'{name}: unknown key(s) '
                                  f'{", ".join(f"{where}.{k}" for k in unknown)} '
                                  f'(known: {", ".join(sorted(allowed))})')
    inst = simcfg.get('instrument') or {}
    if 'resolution_ndiag' in inst:
        ndiag = inst['resolution_ndiag']
        if isinstance(ndiag, bool) or not isinstance(ndiag, (int, float)) \
                or ndiag != int(ndiag) or int(ndiag) % 2 != 1 or not 3 <= ndiag <= MAX_NDIAG:
            _fail(name, 'instrument.resolution_ndiag', f'an odd integer in 3..{MAX_NDIAG}',
                  ndiag)
        inst['resolution_ndiag'] = int(ndiag)
    _check_redrock_mock(simcfg.get('redrock_mock') or {}, name, CLASSES, SPECTYPES, NCOEFF_MAX)
    _check_files(((simcfg.get('mock') or {}).get('files')) or {}, name)


def _check_keys_are(mapping, keys, name, path, every=True):
    """`mapping` must be a mapping with keys among `keys` (all of them when `every`)."""
    if not isinstance(mapping, dict):
        _fail(name, path, 'a mapping', mapping)
    unknown = sorted(set(map(str, mapping)) - set(keys))
    missing = [k for k in keys if k not in mapping] if every else []
    if unknown or missing:
        _fail(name, path, f'a mapping with {"one entry per" if every else "keys among"} '
              f'{", ".join(keys)}', mapping)


def _check_redrock_mock(rr, name, classes, spectypes, ncoeff_max):
    """The class-keyed entries of ``redrock_mock`` (see :func:`check_mock_ranges`)."""
    if 'failure_mix' in rr:
        mix = rr['failure_mix']
        _check_keys_are(mix, classes, name, 'redrock_mock.failure_mix')
        for cls, kinds in mix.items():
            path = f'redrock_mock.failure_mix.{cls}'
            _check_keys_are(kinds, spectypes, name, path, every=False)
            if not sum(kinds.values()) > 0:
                _fail(name, path, 'probabilities with a positive sum', kinds)
    if 'success' in rr:
        _check_keys_are(rr['success'], spectypes, name, 'redrock_mock.success', every=False)
    for key in ('zerr', 'ncoeff', 'wrong_z'):
        if key in rr:
            keys = ('GALAXY', 'QSO') if key == 'wrong_z' else spectypes
            _check_keys_are(rr[key], keys, name, f'redrock_mock.{key}')
    for stype, value in (rr.get('ncoeff') or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or value != int(value) or not 1 <= value <= ncoeff_max:
            _fail(name, f'redrock_mock.ncoeff.{stype}', f'an integer in 1..{ncoeff_max}', value)
    for stype, pair in (rr.get('wrong_z') or {}).items():
        if not isinstance(pair, list) or len(pair) != 2 or not pair[0] <= pair[1]:
            _fail(name, f'redrock_mock.wrong_z.{stype}', 'a [min, max] pair with min <= max',
                  pair)
    if 'star_subtypes' in rr:
        subtypes = rr['star_subtypes']
        if not isinstance(subtypes, list) or not subtypes \
                or not all(isinstance(s, str) and s for s in subtypes):
            _fail(name, 'redrock_mock.star_subtypes', 'a non-empty list of names', subtypes)


def _check_files(files, name):
    """``mock.files.survey``, ``program`` and ``dec_range`` (see :func:`check_mock_ranges`)."""
    for key in ('survey', 'program'):
        if key in files and not (isinstance(files[key], str) and NAME_PATTERN.fullmatch(files[key])):
            _fail(name, f'mock.files.{key}', 'a name of letters, digits and _ (it makes the '
                  'file names)', files[key])
    if 'dec_range' in files:
        dec = files['dec_range']
        if not isinstance(dec, list) or len(dec) != 2 or not -90 <= dec[0] < dec[1] <= 90:
            _fail(name, 'mock.files.dec_range', 'a [min, max] pair of declinations (deg) with '
                  '-90 <= min < max <= 90', dec)
