"""
lbgnet.sim.mock
===============

Compose the simulator into DESI-like mock data: population → noiseless spectra per
arm (emission and absorption lines broadened by the arm's LSF; the continuum, forest
and breaks are not convolved) → noise at a random effective exposure time → flux, ivar,
mask and resolution per arm, with a FIBERMAP, EXP_FIBERMAP, SCORES, a simulated
Redrock REDSHIFTS table and a truth table.  Pure functions (randomness through
``rng``); :mod:`lbgnet.io.mock` writes the result.
"""
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from ..config import ConfigError, config_from_dict
from .instrument import build_instrument, observe, resolution_for
from .mockcheck import check_mock_ranges
from .rrmock import simulate_redrock

#: Default configuration of the mock (instrument, files, Redrock outcome, physics).
DEFAULT_MOCK_CONFIG = 'lbgnet-mock.yaml'
#: Longest effective exposure time (s) of a mock spectrum: ~280 h, 70 times the deepest
#: default mock (4 h) and deeper than any DESI coadd.  It keeps COADD_NUMEXP (int16, one
#: exposure per ``mock.efftime_per_exposure``) and the EXP_FIBERMAP (one row per exposure)
#: of a sane size.
MAX_EFFTIME = 1.0e6


@dataclass(frozen=True, eq=False)
class MockSetup:
    """Everything the mock needs besides randomness, loaded once.

    Attributes
    ----------
    config : lbgnet.config.Config
        Grid, lines, instrument, ``mock`` and ``redrock_mock`` sections.
    simcfg : dict
        The same file as :func:`lbgnet.sim.population.load_sim_config` returns it.
    instrument : lbgnet.sim.instrument.Instrument
    templates : lbgnet.io.templates.SimTemplates or None
        Optional empirical inputs of the physics.
    sky_lines : str or None
        Digest of the sky-line spectrum when it is not desispec's default (a given file),
        ``'none'`` without sky lines, None for the default.
    """

    config: object
    simcfg: dict
    instrument: object
    templates: object = None
    sky_lines: object = None


#: Configuration sections that define the simulated spectra (the training augmentation,
#: selection thresholds and box count do not).
SIMULATOR_SECTIONS = ('grid', 'lines', 'instrument', 'simulation', 'mock', 'redrock_mock')
#: Sampling choices left out of the fingerprint: the same simulator makes test sets of
#: other mixes, redshift or magnitude ranges, depths and file layouts.
SAMPLING_KEYS = (('simulation', 'class_fractions'), ('simulation', 'rmag_range'),
                 ('simulation', 'lbg', 'zrange'), ('mock', 'efftime_range'), ('mock', 'files'))


#: Version of the simulator's code (its physics and instrument model), part of
#: :func:`simulator_hash`: bump it with every change of the code that changes the
#: simulated spectra of a given configuration and seed (``tests/test_mock.py`` pins the
#: spectra of one seed, and fails until it is bumped).  1: lbgnet before 2026-12-07
#: (commit f9f1205), whose fingerprints leave it out; 2: the Shapley composite
#: interpolated, the β and Δv(Lyα) trends pivoting on the mean W(Lyα) drawn.
SIMULATOR_VERSION = 2


def simulator_hash(setup):
    """Fingerprint of the simulator a :class:`MockSetup` describes.

    SHA-256 (first 16 hex digits) of the configuration sections that define the simulated
    spectra (:data:`SIMULATOR_SECTIONS`), of the content of the optional empirical inputs
    (LBG composite, Redrock templates), of the sky-line spectrum when it is not
    desispec's default (so that the default simulator keeps one fingerprint) and of the
    code's :data:`SIMULATOR_VERSION` (left out for version 1, so that files made before
    it keep their fingerprint).
    Sampling choices (:data:`SAMPLING_KEYS`: class mix, magnitude and LBG redshift ranges,
    depth range, file layout) are left out, so test sets drawn differently from the same
    models share it; a change of any physical or instrumental parameter changes it.
    Written as ``SIMHASH`` into the headers of mock files and into the model card of
    trained networks, so that ``desi_lbg_evaluate`` can warn when test files come from
    another simulator.

    Returns
    -------
    str
    """
    import copy
    import hashlib
    import json
    content = copy.deepcopy({k: setup.simcfg.get(k) for k in SIMULATOR_SECTIONS})
    for path in SAMPLING_KEYS:
        node = content
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    templates = setup.templates
    content['templates'] = None if templates is None else {
        'lbg_composite': (None if templates.lbg_composite is None
                          else array_digest(*templates.lbg_composite)),
        'rr': {key: array_digest(t.wave, t.basis) for key, t in sorted(templates.rr.items())}}
    if setup.sky_lines is not None:
        content['sky_lines'] = setup.sky_lines
    if SIMULATOR_VERSION != 1:
        content['simulator_version'] = SIMULATOR_VERSION
    text = json.dumps(content, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]


def load_mock_setup(name=DEFAULT_MOCK_CONFIG, lbg_composite=None, rr_template_dir=None,
                    sky_lines=None):
    """Load the configuration, the sky lines and the optional templates.

    Parameters
    ----------
    name : str, optional
        Mock configuration [``lbgnet-mock.yaml``].
    lbg_composite, rr_template_dir : str, optional
        Empirical inputs (:func:`lbgnet.io.templates.load_templates`).
    sky_lines : str, optional
        Sky-line spectrum [desispec's ``spec-sky.dat``; without it (an old desispec) the
        sky has no emission lines and a warning is logged].

    Returns
    -------
    MockSetup
    """
    from ..io.skymodel import read_sky_lines, sky_lines_path
    from .population import load_sim_config
    simcfg = load_sim_config(name)
    shipped = check_mock_numbers(simcfg, name)
    config = config_from_dict(simcfg, source=str(name))
    mock_settings(config)
    check_mock_ranges(simcfg, shipped, str(name))
    lines, sky_digest = None, 'none'
    if sky_lines is not None or sky_lines_path() is not None:
        lines = read_sky_lines(sky_lines)
        sky_digest = None
        if sky_lines is not None:          # another spectrum than the default: fingerprinted
            sky_digest = array_digest(*lines)
            if sky_lines_path() is not None and \
                    sky_digest == array_digest(*read_sky_lines(sky_lines_path())):
                sky_digest = None
    instrument = build_instrument(config, lines)
    templates = None
    if lbg_composite is not None or rr_template_dir is not None:
        from ..io.templates import load_templates
        templates = load_templates(lbg_composite=lbg_composite, rr_template_dir=rr_template_dir)
    return MockSetup(config, simcfg, instrument, templates, sky_digest)


#: Sections of a mock configuration whose numbers (and booleans) are checked against the
#: shipped :data:`DEFAULT_MOCK_CONFIG` (:func:`lbgnet.sim.population.check_numbers`).
CHECKED_SECTIONS = ('instrument', 'mock', 'redrock_mock', 'generator')


def check_mock_numbers(simcfg, name):
    """Refuse a non-number (or a non-boolean) where the shipped mock configuration has one.

    Parameters
    ----------
    simcfg : dict
        From :func:`lbgnet.sim.population.load_sim_config` (modified in place: numbers
        written as text become numbers).
    name : str
        Its file, for the message.

    Returns
    -------
    dict
        The shipped mock configuration (for :func:`lbgnet.sim.mockcheck.check_mock_ranges`).

    Raises
    ------
    lbgnet.config.ConfigError
        Naming the file and the key (``generator.fibre_failures: 'no'`` was taken as true,
        ``mock.dead_fibre_fraction: abc`` failed in numpy while the files were written).
    """
    import os
    from ..config import etc_dir, read_yaml_config
    from .population import check_numbers
    shipped = read_yaml_config(os.path.join(str(etc_dir()), DEFAULT_MOCK_CONFIG))
    for section in CHECKED_SECTIONS:
        values = simcfg.get(section)
        if section == 'generator' and isinstance(values, dict):
            # null there means "the default" (efftime_range: mock.efftime_range)
            given = {k: v for k, v in values.items() if v is not None}
            check_numbers(given, shipped.get(section), name, section)
            values.update(given)
        else:
            check_numbers(values, shipped.get(section), name, section)
    return shipped


def array_digest(*arrays):
    """SHA-256 (first 16 hex digits) of the content of numpy arrays."""
    import hashlib
    sha = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        sha.update(str((array.dtype.str, array.shape)).encode('ascii'))
        sha.update(array.tobytes())
    return sha.hexdigest()[:16]


@dataclass(eq=False)
class MockData:
    """One batch of mock spectra with everything a coadd/redrock/truth file holds.

    Attributes
    ----------
    wave, flux, ivar, mask, model : dict
        band -> arrays; wave (nwave,) Å, the others (nspec, nwave); flux and model in
        1e-17 erg/s/cm²/Å (model: noiseless; its lines are broadened by the LSF, the
        continuum and forest are not, so the model is sharper than the RESOLUTION
        data say on scales below the LSF: about 1 % of the forest flux after 8 Å bins).
    resolution : dict or None
        band -> (nspec, ndiag, nwave) RESOLUTION data.
    truth, fibermap, exp_fibermap, scores, redshifts : astropy.table.Table
        One row per spectrum (EXP_FIBERMAP: one per exposure), same TARGETID order.
    meta : dict
        Primary-header keywords (HPXPIXEL, SURVEY, ...).
    """

    wave: dict
    flux: dict
    ivar: dict
    mask: dict
    model: dict
    resolution: object
    truth: Table
    fibermap: Table
    exp_fibermap: Table
    scores: Table
    redshifts: Table
    meta: dict

    @property
    def nspec(self):
        """Number of spectra."""
        return len(self.truth)


def mock_settings(config):
    """The ``mock`` and ``redrock_mock`` sections of a configuration, checked.

    Raises
    ------
    lbgnet.config.ConfigError
        If a section or one of its required keys is missing, ``mock.efftime_range`` or
        ``generator.efftime_range`` is not a pair that passes :func:`check_efftime_range`,
        a dead fibre/arm fraction is outside [0, 1], or ``mock.files`` / ``target_bits``
        fail :func:`check_files_section`.
    """
    need = {'mock': ('efftime_range', 'efftime_per_exposure', 'exptime_per_efftime',
                     'dead_fibre_fraction', 'dead_arm_fraction', 'tsnr2_per_efftime', 'files',
                     'target_bits'),
            'redrock_mock': ('success', 'lbg', 'failure_mix', 'wrong_z', 'star_vr_sigma',
                             'star_subtypes', 'qso_dv_sigma', 'qso_hiz_min', 'zerr', 'zerr_mag',
                             'zerr_dex', 'deltachi2', 'small_deltachi2', 'chi2_mismatch',
                             'ncoeff')}
    for section, keys in need.items():
        sec = config.extra.get(section)
        if not isinstance(sec, dict):
            raise ConfigError(f'{config.source}: no "{section}" section (use lbgnet-mock.yaml)')
        missing = [k for k in keys if k not in sec]
        if missing:
            raise ConfigError(f'{config.source}: {section} lacks {", ".join(missing)}')
    mock = config.extra['mock']
    ranges = {'mock.efftime_range': mock['efftime_range']}
    generator = config.extra.get('generator') or {}
    if isinstance(generator, dict) and generator.get('efftime_range') is not None:
        ranges['generator.efftime_range'] = generator['efftime_range']
    for key, value in ranges.items():
        try:
            if isinstance(value, (str, dict)) or len(value) != 2:
                raise ValueError(f'{value!r}: must be a [min, max] pair of numbers')
            check_efftime_range(value, mock)
        except (TypeError, ValueError) as err:
            raise ConfigError(f'{config.source}: {key} {err}') from None
    for key in ('dead_fibre_fraction', 'dead_arm_fraction'):
        if not 0 <= float(mock[key]) <= 1:
            raise ConfigError(f'{config.source}: mock.{key} must be in [0, 1], not {mock[key]!r}')
    check_files_section(mock, config.source)
    return config.extra['mock'], config.extra['redrock_mock']


#: Largest healpix nside whose pixel numbers fit the 20-bit BRICKID field of a TARGETID
#: (the mock stores its pixel there), and the largest RELEASE (an int16 FIBERMAP column).
MAX_MOCK_NSIDE, MAX_MOCK_RELEASE = 256, 32767


def check_files_section(mock, source):
    """Check ``mock.files`` and ``mock.target_bits`` before anything is simulated (each
    failed in every file, after its simulation, with a traceback).

    Raises
    ------
    lbgnet.config.ConfigError
        Naming `source` and the key.
    """
    from .fibermap import target_bits
    files = mock['files']
    if not isinstance(files, dict):
        raise ConfigError(f'{source}: mock.files must be a mapping')

    def integer(key, lo, hi):
        value = files.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or not lo <= value <= hi:
            raise ConfigError(f'{source}: mock.files.{key} must be an integer in [{lo}, {hi}], '
                              f'not {value!r}')
        return int(value)
    integer('max_spectra_per_file', 1, 2 ** 22)          # the OBJID field of a TARGETID
    integer('release', 0, MAX_MOCK_RELEASE)
    nside = integer('nside', 1, MAX_MOCK_NSIDE)
    if nside & (nside - 1):
        raise ConfigError(f'{source}: mock.files.nside must be a power of 2, not {nside}')
    try:
        target_bits(mock['target_bits'] or {}, 0)
    except (ConfigError, AttributeError, TypeError) as err:
        raise ConfigError(f'{source}: mock.target_bits: {err}') from None


def check_efftime_range(efftime_range, mockcfg):
    """Check a range of effective exposure times (s) before anything is simulated.

    Parameters
    ----------
    efftime_range : (float, float)
        Shortest and longest EFFTIME, s.
    mockcfg : dict
        The ``mock`` configuration section (``efftime_per_exposure``).

    Raises
    ------
    ValueError
        Unless 0 < min <= max <= :data:`MAX_EFFTIME` and the longest time makes a
        COADD_NUMEXP (EFFTIME / ``efftime_per_exposure``) that fits its int16 column.
    """
    lo, hi = (float(v) for v in efftime_range)
    if not 0 < lo <= hi <= MAX_EFFTIME:
        raise ValueError(f'{lo:g}..{hi:g} s: must satisfy 0 < min <= max <= {MAX_EFFTIME:g} s')
    per = float(mockcfg['efftime_per_exposure'])
    if not per > 0 or np.round(hi / per) > np.iinfo(np.int16).max:
        raise ValueError(f'{lo:g}..{hi:g} s: with mock.efftime_per_exposure = {per:g} s the '
                         f'exposure count (COADD_NUMEXP, int16) would exceed '
                         f'{np.iinfo(np.int16).max}')


def draw_efftime(n, efftime_range, rng):
    """Effective exposure times (s), uniform in `efftime_range`, shape (n,)."""
    lo, hi = (float(v) for v in efftime_range)
    return rng.uniform(lo, hi, n)


def fibre_failures(n, bands, dead_fraction, dead_arm_fraction, rng):
    """Broken fibres and dead arms.

    Returns
    -------
    fiberstatus : numpy.ndarray of int32
        COADD_FIBERSTATUS: BROKENFIBER for dead fibres, BADAMP<B|R|Z> for a dead arm.
    arm_dead : numpy.ndarray of bool
        Shape (n, narms): pixels of these arms get ivar = 0.
    """
    from desispec.maskbits import fibermask
    dead = rng.random(n) < dead_fraction
    one_arm = (rng.random(n) < dead_arm_fraction) & ~dead
    which = rng.integers(0, len(bands), n)
    arm_dead = dead[:, None] | (one_arm[:, None] & (which[:, None] == np.arange(len(bands))))
    status = np.where(dead, fibermask.BROKENFIBER, 0)
    for iarm, band in enumerate(bands):
        status |= np.where(one_arm & (which == iarm), fibermask.mask(f'BADAMP{band.upper()}'), 0)
    return status.astype(np.int32), arm_dead


def apply_failures(fluxes, ivars, masks, arm_dead):
    """Zero flux/ivar and set the mask of dead arms, in place."""
    from desispec.maskbits import specmask
    for iarm, band in enumerate(fluxes):
        rows = arm_dead[:, iarm]
        fluxes[band][rows] = 0.0
        ivars[band][rows] = 0.0
        masks[band][rows] = specmask.BADFIBER


def render_models(setup, truth):
    """Noiseless spectra on each arm's pixels, lines broadened by that arm's LSF
    (the continuum, forest and breaks are not convolved).

    Parameters
    ----------
    setup : MockSetup
    truth : astropy.table.Table
        From :func:`lbgnet.sim.population.draw_population`.

    Returns
    -------
    dict
        band -> float32 array (nspec, nwave), 1e-17 erg/s/cm²/Å.
    """
    from .render import render_arms
    inst = setup.instrument
    return render_arms(truth, inst.waves, lsf_sigma={b: a.lsf_sigma for b, a in inst.arms.items()},
                       templates=setup.templates, simcfg=setup.simcfg)


def noise_statistics(fluxes, models, ivars):
    """Per-spectrum χ² of the noise, χ² of the signal and number of valid pixels."""
    chi2_noise = sum(np.sum((fluxes[b] - models[b]) ** 2 * ivars[b], axis=1, dtype=np.float64)
                     for b in fluxes)
    signal = sum(np.sum(models[b] ** 2 * ivars[b], axis=1, dtype=np.float64) for b in fluxes)
    npix = sum(np.count_nonzero(ivars[b] > 0, axis=1) for b in fluxes)
    return chi2_noise, signal, npix


def make_mock(setup, nspec, rng, pixel=0, population=None, with_resolution=True, truth=None):
    """Simulate one file's worth of mock spectra.

    Parameters
    ----------
    setup : MockSetup
    nspec : int
    rng : numpy.random.Generator
    pixel : int, optional
        Healpix pixel (nested, nside ``mock.files.nside``) holding the targets; also the
        brick id of their TARGETIDs [0].
    population : dict, optional
        Keyword arguments of :func:`lbgnet.sim.population.draw_population`
        (``classes``, ``zrange``, ``rmag_range``) plus ``efftime_range`` (s), which
        overrides the configuration's (:func:`check_efftime_range`).
    with_resolution : bool, optional
        Attach RESOLUTION data [True].
    truth : astropy.table.Table, optional
        Simulate these objects (``nspec`` rows from
        :func:`lbgnet.sim.population.draw_population`, not modified) instead of a new
        population; ``population`` then only supplies ``efftime_range``.

    Returns
    -------
    MockData

    Raises
    ------
    ValueError
        If the effective exposure times are out of range (:func:`check_efftime_range`).
    """
    from .fibermap import make_exp_fibermap, make_fibermap, make_scores
    from .population import draw_population
    mockcfg, rrcfg = mock_settings(setup.config)
    inst = setup.instrument
    population = dict(population or {})
    efftime_range = population.pop('efftime_range', None) or mockcfg['efftime_range']
    check_efftime_range(efftime_range, mockcfg)
    if truth is None:
        truth = draw_population(setup.simcfg, nspec, rng, **population)
    elif len(truth) != nspec:
        raise ValueError(f'truth has {len(truth)} rows, nspec is {nspec}')
    else:
        truth = truth.copy()
        # a truth read back from a file (read_truth) carries the columns made here
        truth.remove_columns([c for c in ('TARGETID', 'EFFTIME') if c in truth.colnames])
    efftime = draw_efftime(nspec, efftime_range, rng)
    models = render_models(setup, truth)
    fluxes, ivars = observe(inst, models, efftime, rng)
    masks = {b: np.zeros(f.shape, dtype=np.int32) for b, f in fluxes.items()}
    status, arm_dead = fibre_failures(nspec, inst.bands, mockcfg['dead_fibre_fraction'],
                                      mockcfg['dead_arm_fraction'], rng)
    apply_failures(fluxes, ivars, masks, arm_dead)
    fibermap = make_fibermap(truth, inst, models, status, efftime, pixel, mockcfg, rng)
    truth.add_column(fibermap['TARGETID'], name='TARGETID', index=0)
    truth['EFFTIME'] = efftime.astype(np.float32)
    truth['EFFTIME'].description = 'effective exposure time, s'
    exp_fibermap = make_exp_fibermap(fibermap, int(mockcfg['files']['tileid']))
    scores = make_scores(fibermap['TARGETID'], inst, fluxes, ivars, efftime, mockcfg)
    chi2_noise, signal, npix = noise_statistics(fluxes, models, ivars)
    redshifts = simulate_redrock(truth, efftime, inst.efftime_ref, npix, chi2_noise, signal,
                                 status, rrcfg, rng)
    files = mockcfg['files']
    meta = dict(SPGRP='healpix', SPGRPVAL=int(pixel), HPXPIXEL=int(pixel),
                HPXNSIDE=int(files['nside']), HPXNEST=True, SURVEY=str(files['survey']),
                PROGRAM=str(files['program']), SIMHASH=simulator_hash(setup))
    resolution = resolution_for(inst, nspec) if with_resolution else None
    return MockData(inst.waves, fluxes, ivars, masks, models, resolution, truth,
                    fibermap, exp_fibermap, scores, redshifts, meta)
