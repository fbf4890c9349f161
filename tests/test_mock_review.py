"""Tests of the mock files' DESI metadata and of desi_lbg_mock's early checks: ZWARN and
TSNR2 of dead fibres, NIGHT vs MJD, PHOTSYS, the EFFTIME limit, --sky-lines and --outdir."""
import logging
import os

import numpy as np
import pytest
from astropy.table import Table

from lbgnet.io.errors import InputFileError
from lbgnet.io.mock import write_mock
from lbgnet.scripts.lbg_mock import main, parse
from lbgnet.sim.mock import MAX_EFFTIME, check_efftime_range, load_mock_setup, make_mock
from lbgnet.sim.rrmock import ZWARN_BITS


@pytest.fixture(scope='module')
def setup():
    return load_mock_setup()


@pytest.fixture(scope='module')
def dead_mock(setup):
    """Six spectra, two of them dead fibres (BROKENFIBER), in a northern-sky pixel."""
    return make_mock(setup, 6, np.random.default_rng(1), pixel=6709, with_resolution=False)


def _dead(mock):
    from desispec.maskbits import fibermask
    return (np.asarray(mock.fibermap['COADD_FIBERSTATUS']) & fibermask.BROKENFIBER) != 0


def test_dead_fibres_have_redrock_zwarn(setup, dead_mock):
    """rrdesi gives a fibre without data ZWARN = LITTLE_COVERAGE|UNPLUGGED|NODATA (642), and
    no SMALL_DELTA_CHI2 although its DELTACHI2 is 0 (the mock drew that bit at random)."""
    dead = _dead(dead_mock)
    assert dead.sum() == 2
    rr = dead_mock.redshifts
    expected = ZWARN_BITS['LITTLE_COVERAGE'] | ZWARN_BITS['UNPLUGGED'] | ZWARN_BITS['NODATA']
    assert np.all(rr['ZWARN'][dead] == expected) and np.all(rr['DELTACHI2'][dead] == 0)
    small = (rr['ZWARN'] & ZWARN_BITS['SMALL_DELTA_CHI2']) != 0
    assert np.array_equal(small[~dead], rr['DELTACHI2'][~dead] < 9)
    # many draws: no dead row ever gets SMALL_DELTA_CHI2; NPIXELS = 0 alone (no fibre
    # status) gives LITTLE_COVERAGE|NODATA, as Redrock sets them from the data
    from lbgnet.sim.rrmock import simulate_redrock
    n = 200
    truth = Table({'TARGETID': np.arange(n), 'CLASS': np.full(n, 'GALAXY'),
                   'Z_TRUE': np.full(n, 0.5), 'RMAG': np.full(n, 23.0)})
    npix = np.where(np.arange(n) % 2 == 0, 0, 5000)
    rrcfg = setup.config.extra['redrock_mock']
    out = simulate_redrock(truth, np.full(n, 4000.0), 8711.0, npix, np.ones(n), np.ones(n),
                           np.zeros(n, dtype=np.int32), rrcfg, np.random.default_rng(0))
    zwarn = np.asarray(out['ZWARN'])
    assert np.all(zwarn[npix == 0] == ZWARN_BITS['LITTLE_COVERAGE'] | ZWARN_BITS['NODATA'])
    assert np.all((zwarn[npix > 0] & (ZWARN_BITS['LITTLE_COVERAGE'] | ZWARN_BITS['NODATA'])) == 0)


def test_dead_fibres_have_zero_tsnr2(tmp_path, dead_mock):
    """desispec's TSNR2 sums over ivar > 0 pixels: 0 for a dead fibre, in SCORES and in the
    redrock file's TSNR2 HDU alike."""
    dead = _dead(dead_mock)
    sc = dead_mock.scores
    tsnr2 = [c for c in sc.colnames if c.startswith('TSNR2_')]
    assert len(tsnr2) == 8
    factors = {'TSNR2_LRG': 0.08218, 'TSNR2_ELG': 0.1163}
    eff = np.asarray(dead_mock.truth['EFFTIME'], dtype=np.float64)
    for col in tsnr2:
        assert np.all(sc[col][dead] == 0) and np.all(sc[col][~dead] > 0), col
        if col in factors:
            np.testing.assert_allclose(sc[col][~dead], factors[col] * eff[~dead], rtol=1e-5)
    paths = write_mock(str(tmp_path), dead_mock)
    written = Table.read(paths['redrock'], 'TSNR2')
    scores = Table.read(paths['coadd'], 'SCORES')
    for col in tsnr2:
        assert np.array_equal(written[col], scores[col]) and np.array_equal(written[col], sc[col])


def test_exposure_night_matches_mjd(dead_mock):
    """EXP_FIBERMAP NIGHT is desispec.util.mjd2night(MJD) (Kitt Peak date at the noon
    before), also across a month end."""
    from desispec.util import mjd2night

    from lbgnet.sim.fibermap import make_exp_fibermap
    one = dead_mock.fibermap[:1].copy()
    one['COADD_NUMEXP'] = 100
    for ex in (dead_mock.exp_fibermap, make_exp_fibermap(one, 1)):
        assert len(ex) > 0
        derived = np.array([mjd2night(m) for m in ex['MJD']])
        np.testing.assert_array_equal(derived, ex['NIGHT'])
    assert dead_mock.exp_fibermap['NIGHT'].min() == 20230101


def test_photsys_follows_desitarget_resolve(setup, dead_mock):
    """PHOTSYS is 'N' in the BASS/MzLS area (Dec >= 32.375 north of the Galactic plane),
    so that desitarget.targets.resolve keeps every mock target."""
    from desitarget.targets import resolve

    from lbgnet.sim.fibermap import photsys_of
    south = make_mock(setup, 3, np.random.default_rng(2), pixel=1234, with_resolution=False)
    for mock, system in ((dead_mock, 'N'), (south, 'S')):
        fm = mock.fibermap
        assert set(fm['PHOTSYS']) == {system}
        t = np.zeros(len(fm), dtype=[('RA', 'f8'), ('DEC', 'f8'), ('PHOTSYS', 'U1')])
        t['RA'], t['DEC'], t['PHOTSYS'] = fm['TARGET_RA'], fm['TARGET_DEC'], fm['PHOTSYS']
        assert len(resolve(t)) == len(t)
    # Dec threshold, and the southern Galactic cap (M31 area) is DECaLS at any Dec
    ra = np.array([150.0, 150.0, 150.0, 10.0])
    dec = np.array([32.3, 32.375, 60.0, 40.0])
    assert list(photsys_of(ra, dec)) == ['S', 'N', 'N', 'S']
    assert photsys_of(np.zeros(0), np.zeros(0)).shape == (0,)


def test_efftime_limit_is_checked_before_simulating(setup):
    """COADD_NUMEXP is int16: an EFFTIME range beyond MAX_EFFTIME is a usage error of
    desi_lbg_mock and a ValueError of make_mock, before anything is simulated (it wrapped
    the exposure count, or failed in np.repeat after the simulation)."""
    for bad in (['--efftime-min', '4e7', '--efftime-max', '5e7'],
                ['--efftime-min', '1000', '--efftime-max', str(2 * MAX_EFFTIME)]):
        with pytest.raises(SystemExit) as exc:
            parse(['--outdir', 'x', '--nspec', '10'] + bad)
        assert exc.value.code == 2, bad
    args = parse(['--outdir', 'x', '--nspec', '10', '--efftime-min', '1000',
                  '--efftime-max', f'{MAX_EFFTIME:g}'])
    assert args.efftime_max == MAX_EFFTIME
    with pytest.raises(ValueError, match='1e\\+06'):
        make_mock(setup, 2, np.random.default_rng(0), with_resolution=False,
                  population=dict(efftime_range=(6.6e7, 6.7e7)))
    check_efftime_range((1000.0, MAX_EFFTIME), {'efftime_per_exposure': 1000.0})
    with pytest.raises(ValueError, match='int16'):     # a configuration with short exposures
        check_efftime_range((1000.0, MAX_EFFTIME), {'efftime_per_exposure': 10.0})


def test_sky_lines_directory_is_one_line_error(tmp_path, monkeypatch, caplog):
    """--sky-lines <directory> (or an unreadable file) is an InputFileError naming the
    path, logged in one line; it was an IsADirectoryError traceback."""
    from lbgnet.io.skymodel import read_sky_lines
    with pytest.raises(InputFileError, match='is a directory'):
        read_sky_lines(str(tmp_path))
    sky = tmp_path / 'sky.dat'
    sky.write_text('5000 1\n5001 2\n')

    def unreadable(*args, **kwargs):
        raise PermissionError(13, 'Permission denied', str(sky))
    with monkeypatch.context() as mp:
        mp.setattr(np, 'loadtxt', unreadable)
        with pytest.raises(InputFileError, match='cannot read \\(Permission denied\\)'):
            read_sky_lines(str(sky))
    outdir = tmp_path / 'out'
    with caplog.at_level(logging.INFO):
        assert main(['--outdir', str(outdir), '--nspec', '2', '--no-resolution',
                     '--sky-lines', str(tmp_path)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f'{tmp_path}: is a directory, not a sky-line spectrum']
    assert not outdir.exists()


@pytest.mark.parametrize('option, problem', [
    ('--lbg-composite',
     'LBG composite has no data rows (the file is empty or holds only comments)'),
    ('--sky-lines', 'no data rows (the file is empty or holds only comments)')])
@pytest.mark.parametrize('text', ['', '# only a comment\n'])
def test_empty_text_input_is_only_our_error(tmp_path, caplog, option, problem, text):
    """An empty or comment-only --lbg-composite / --sky-lines file gives our one-line error
    and nothing else: numpy's "loadtxt: input contained no data" UserWarning was printed
    before it."""
    import warnings
    empty = tmp_path / 'empty.txt'
    empty.write_text(text)
    outdir = tmp_path / 'out'
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter('always')
        assert main(['--outdir', str(outdir), '--nspec', '2', '--nfiles', '1',
                     '--no-resolution', option, str(empty)]) == 1
    assert [str(w.message) for w in caught] == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f'{empty}: {problem}']
    assert not outdir.exists()


def test_rr_template_dir_that_is_a_file_says_so(tmp_path, caplog):
    """--rr-template-dir naming a regular file says it is not a directory, in one line (it
    said "Redrock template directory not found" although the path exists); a missing path
    still says not found."""
    afile = tmp_path / 'rrtemplate-QSO-HIZ-v1.1.fits'
    afile.write_text('not a directory')
    outdir = tmp_path / 'out'
    for path, problem in ((afile, 'is not a directory (the Redrock template directory, '
                                  'holding rrtemplate-*.fits files, is expected)'),
                          (tmp_path / 'nope', 'Redrock template directory not found')):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert main(['--outdir', str(outdir), '--nspec', '2', '--nfiles', '1',
                         '--no-resolution', '--rr-template-dir', str(path)]) == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [f'{path}: {problem}']
        assert not outdir.exists()


@pytest.mark.parametrize('seed', [2 ** 63, 2 ** 70])
def test_seed_beyond_a_fits_integer_is_refused(seed, capsys):
    """A --seed that does not fit the 64-bit MOCKSEED card is refused in parse (status 2): it
    was written as a card fitsio reads back as a string (astropy as an integer)."""
    with pytest.raises(SystemExit) as exc:
        parse(['--outdir', 'x', '--nspec', '2', '--seed', str(seed)])
    assert exc.value.code == 2
    assert (f'--seed must be in [0, 2**63 - 1] (the MOCKSEED header card is a 64-bit '
            f'integer), got {seed}') in capsys.readouterr().err


def test_largest_seed_is_an_integer_card(tmp_path):
    """--seed 2**63 - 1, the largest accepted, is read back from MOCKSEED as that integer."""
    import fitsio
    seed = 2 ** 63 - 1
    assert main(['--outdir', str(tmp_path), '--nspec', '2', '--nfiles', '1',
                 '--no-resolution', '--seed', str(seed)]) == 0
    for kind in ('coadd', 'redrock', 'truth'):
        (path,) = tmp_path.glob(f'{kind}-*.fits')
        assert fitsio.read_header(str(path))['MOCKSEED'] == seed


def test_cfitsio_outdir_is_refused_before_simulating(tmp_path, monkeypatch, caplog):
    """An --outdir that cfitsio would misread is refused once, before any file is simulated
    and before the directory is created (it failed in write_mock, once per file)."""
    import lbgnet.scripts.lbg_mock as script

    def no_simulation(*args, **kwargs):
        raise AssertionError('simulated although --outdir is refused')
    monkeypatch.setattr(script, 'make_mock', no_simulation)
    outdir = tmp_path / 'oc[v2]'
    with caplog.at_level(logging.INFO):
        assert main(['--outdir', str(outdir), '--nspec', '3', '--nfiles', '3',
                     '--no-resolution']) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(f'--outdir {outdir}/coadd-')
    assert "contains '['" in errors[0]
    assert not outdir.exists()


@pytest.mark.parametrize('text, match', [
    ("generator: {efftime_range: [14400.0, 3600.0]}\n",
     r'generator.efftime_range 14400..3600 s: must satisfy 0 < min <= max'),
    ("generator: {efftime_range: [3600.0]}\n",
     r'generator.efftime_range \[3600.0\]: must be a \[min, max\] pair'),
    ("generator: {efftime_range: abc}\n", 'generator.efftime_range must be a list of finite'),
    ("generator: {fibre_failures: 'no'}\n", "generator.fibre_failures must be true or false"),
    ("mock: {dead_fibre_fraction: abc}\n", 'mock.dead_fibre_fraction must be a finite number'),
    ("mock: {dead_arm_fraction: 1.5}\n", r'mock.dead_arm_fraction must be in \[0, 1\]'),
    ("redrock_mock: {success: {QSO: {m50: x}}}\n", "redrock_mock.success.QSO.m50 must be a finite"),
    # values that failed inside every file's simulation, with a traceback blaming the pixel
    # file, or were written into the files without a word
    ("simulation: {class_fractions: {LBG: -0.5}}\n",
     r'simulation.class_fractions must be numbers >= 0 with a positive sum'),
    ("simulation: {class_fractions: {LBG: 0, QSO: 0, GALAXY: 0, STAR: 0}}\n",
     r'simulation.class_fractions must be numbers >= 0 with a positive sum'),
    ("redrock_mock: {failure_mix: {QSO: {GALAXY: -0.2}}}\n",
     r'redrock_mock.failure_mix.QSO.GALAXY must be a number >= 0, not -0.2'),
    ("redrock_mock: {failure_mix: {QSO: {GALAXY: 0, QSO: 0, STAR: 0}}}\n",
     r'redrock_mock.failure_mix.QSO must be probabilities with a positive sum'),
    ("redrock_mock: {failure_mix: {QSO: {LBG: 0.5}}}\n",
     r'redrock_mock.failure_mix.QSO must be a mapping with keys among GALAXY, QSO, STAR'),
    ("instrument: {resolution_ndiag: 4}\n",
     r'instrument.resolution_ndiag must be an odd integer in 3..99, not 4'),
    ("instrument: {resolution_ndiag: 0}\n", r'instrument.resolution_ndiag must be an odd'),
    ("mock: {exptime_per_efftime: -1}\n", r'mock.exptime_per_efftime must be a number > 0'),
    ("redrock_mock: {success: {QSO: {p_max: 1.5}}}\n",
     r'redrock_mock.success.QSO.p_max must be in \[0, 1\], not 1.5'),
    ("redrock_mock: {lbg: {width: 0}}\n", r'redrock_mock.lbg.width must be a number > 0'),
    ("redrock_mock: {success: {LBG: {p_max: 0.5, m50: 24.0, width: 0.3}}}\n",
     r'redrock_mock.success must be a mapping with keys among GALAXY, QSO, STAR'),
    ("redrock_mock: {wrong_z: {GALAXY: [1.7, 0.0]}}\n",
     r'redrock_mock.wrong_z.GALAXY must be a \[min, max\] pair with min <= max'),
    ("redrock_mock: {ncoeff: {QSO: 11}}\n", r'redrock_mock.ncoeff.QSO must be an integer in 1..10'),
    ("instrument: {noise: {sky_lines_scale: {b: 1.0}}}\n",
     r'unknown key\(s\) instrument.noise.sky_lines_scale \(known: '),
    ("redrock_mock: {deltachi2: {wrong: 3.0}}\n", r'unknown key\(s\) redrock_mock.deltachi2.wrong '),
    ("mock: {files: {survey: a/b}}\n", r"mock.files.survey must be a name of letters, digits and _"),
    ("mock: {files: {dec_range: [70.0, -10.0]}}\n",
     r'mock.files.dec_range must be a \[min, max\] pair of declinations'),
    # the physics' spreads and caps: numpy's 'scale < 0' named neither file nor key, and a
    # negative width or a depth cap above 1 was simulated without a word
    ("simulation: {lbg: {beta_sigma: -0.4}}\n",
     r'simulation.lbg.beta_sigma must be a number >= 0, not -0.4'),
    ("simulation: {lbg: {sigma_lya: -190.0}}\n",
     r'simulation.lbg.sigma_lya must be a number > 0, not -190'),
    ("simulation: {lbg: {ism_depth_max: 1.5}}\n",
     r'simulation.lbg.ism_depth_max must be in \[0, 1\], not 1.5'),
    ("simulation: {star: {vr_sigma: -1.0}}\n",
     r'simulation.star.vr_sigma must be a number >= 0, not -1'),
], ids=['efftime reversed', 'efftime one', 'efftime text', 'fibre text', 'dead text',
        'dead range', 'rr text', 'fraction negative', 'fractions zero', 'mix negative',
        'mix zero', 'mix kind', 'ndiag even', 'ndiag zero', 'exptime negative', 'p_max',
        'width zero', 'success class', 'wrong_z reversed', 'ncoeff', 'noise key',
        'deltachi2 key', 'survey slash', 'dec reversed', 'beta_sigma negative',
        'sigma_lya negative', 'ism depth above 1', 'vr_sigma negative'])
def test_mock_configuration_values_are_checked_on_loading(tmp_path, text, match):
    """The training generator's and the mock writer's settings are checked when the
    configuration is loaded (before any simulation): 'no' was taken as true, the others
    were tracebacks from numpy after the validation set had been simulated."""
    from lbgnet.config import ConfigError
    from lbgnet.sim.mock import load_mock_setup
    path = tmp_path / 'my-mock.yaml'
    path.write_text('base: lbgnet-mock.yaml\n' + text)
    with pytest.raises(ConfigError, match=f'^{path}: {match}'):
        load_mock_setup(str(path))


def test_null_generator_settings_mean_the_defaults(tmp_path):
    """``generator.efftime_range: null`` takes mock.efftime_range (as the generator does);
    the number check must not refuse it."""
    from lbgnet.sim.generator import MockBatches
    path = tmp_path / 'my-mock.yaml'
    path.write_text('base: lbgnet-mock.yaml\ngenerator: {efftime_range: null, '
                    'fibre_failures: null}\n')
    setup = load_mock_setup(str(path))
    batches = MockBatches(setup, batch_size=2, batches_per_epoch=1)
    assert batches.efftime_range == tuple(setup.config.extra['mock']['efftime_range'])
    assert batches.fibre_failures is False


def test_sky_line_files_are_checked_and_one_sample_lines_keep_their_flux(tmp_path):
    """Lines one sample wide lost their zero neighbours, so convolve_lines took the
    distance between lines as the sample step (500 times the flux).  Non-finite flux,
    and a file with no line in DESI's range (wavelengths in nm), are refused."""
    from lbgnet.io.skymodel import read_sky_lines
    from lbgnet.sim.lsf import lsf_sigma, sky_line_spectrum
    grid = np.round(np.arange(3500.0, 10000.0, 0.1), 1)
    flux = np.zeros(grid.size)
    flux[np.searchsorted(grid, np.arange(4000.0, 5700.0, 50.0))] = 10.0    # integral 1 each
    sky = tmp_path / 'sky.dat'
    np.savetxt(sky, np.c_[grid, flux])
    wave = np.round(3600 + 0.8 * np.arange(2751), 4)
    sigma = lsf_sigma(wave, (2000.0, 3200.0))
    totals = [sky_line_spectrum(read_sky_lines(str(sky), positive_only=p), wave, sigma).sum() * 0.8
              for p in (False, True)]
    assert totals[1] == pytest.approx(totals[0], rel=1e-9)
    assert totals[0] == pytest.approx(34.0, rel=0.01)           # 34 lines of integral 1
    bad = flux.copy()
    bad[10] = np.inf
    np.savetxt(sky, np.c_[grid, bad])
    with pytest.raises(InputFileError, match='sky.dat: 1 non-finite flux value'):
        read_sky_lines(str(sky))
    np.savetxt(sky, np.c_[grid / 10, flux])
    with pytest.raises(InputFileError, match='no positive flux between 3600 and 9824'):
        read_sky_lines(str(sky))


@pytest.mark.parametrize('edit, message', [
    ('files: {max_spectra_per_file: 0}', 'mock.files.max_spectra_per_file must be an integer'),
    ('files: {release: 70000}', 'mock.files.release must be an integer in [0, 32767]'),
    ('files: {nside: 1024}', 'mock.files.nside must be an integer in [1, 256]'),
    ('files: {nside: 48}', 'mock.files.nside must be a power of 2'),
    ('target_bits: {DESI_TARGET: [NOT_A_BIT]}', "mock.target_bits: unknown DESI_TARGET bit"),
])
def test_bad_files_settings_are_one_error_before_any_simulation(tmp_path, caplog, edit,
                                                                 message):
    """A zero max_spectra_per_file was a ZeroDivisionError traceback; an unknown target
    bit, a RELEASE beyond the FIBERMAP's int16 or an nside whose pixels overflow the
    TARGETID's BRICKID field failed in every file, after its simulation, with a
    traceback.  Each is one line naming the configuration, and nothing is written."""
    from lbgnet.config import etc_dir
    cfg = tmp_path / 'bad-mock.yaml'
    cfg.write_text(f"base: {os.path.join(etc_dir(), 'lbgnet-mock.yaml')}\nmock:\n  {edit}\n")
    out = tmp_path / 'out'
    with caplog.at_level(logging.ERROR):
        assert main(['--config', str(cfg), '--outdir', str(out), '--nspec', '5',
                     '--no-resolution']) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(cfg) in errors[0] and message in errors[0], errors
    assert 'Traceback' not in caplog.text and not out.exists()


def test_too_many_files_for_the_strip_fail_before_any_per_file_work(tmp_path, caplog,
                                                                     monkeypatch):
    """An absurd --nspec (1e11 spectra: 1e8 files) spent minutes and gigabytes spawning
    one seed per file before the pixel count refused it; it is refused first."""
    def no_seeds(*args, **kwargs):
        raise AssertionError('seeds spawned before the pixel check')
    monkeypatch.setattr(np.random, 'SeedSequence', no_seeds)
    with caplog.at_level(logging.ERROR):
        assert main(['--outdir', str(tmp_path / 'm'), '--nspec', '100000000000']) == 1
    assert ('100000000 files need 100000000 healpix pixels, but Dec -10..70 has'
            in caplog.text)


def test_memory_problem_scales_with_the_largest_file():
    """A file needing more than the machine's memory is named, with the --nfiles that fits;
    RESOLUTION costs more per spectrum than its absence."""
    from lbgnet.scripts.lbg_mock import MOCK_BASE_BYTES, MOCK_BYTES_PER_SPECTRUM, memory_problem
    gib = 2.0 ** 30
    assert memory_problem(np.array([1000, 1000]), True, memory=24 * gib) is None
    problem = memory_problem(np.array([15000]), True, memory=24 * gib)
    assert 'files of up to 15000 spectra need about 25.3 GiB' in problem
    assert 'with RESOLUTION' in problem
    fits = (24 * gib - MOCK_BASE_BYTES) // MOCK_BYTES_PER_SPECTRUM[True]
    assert problem.endswith(f'give --nfiles {int(np.ceil(15000 / fits))} or more')
    assert memory_problem(np.array([15000]), False, memory=24 * gib) is None
    # the largest file counts, not the total
    assert memory_problem(np.array([7000, 7000, 7000]), True, memory=24 * gib) is None
    assert memory_problem(np.array([10, 15000]), True, memory=24 * gib) is not None


def test_a_file_beyond_the_memory_is_refused_before_simulating(tmp_path, caplog, monkeypatch):
    """--nspec 15000 --nfiles 1 with RESOLUTION (about 25 GiB) was simulated until the
    kernel killed the process, without a word; it is one error before any work, and
    --outdir is not created."""
    import lbgnet.scripts.lbg_mock as script

    def no_simulation(*args, **kwargs):
        raise AssertionError('simulated although the file does not fit in memory')
    monkeypatch.setattr(script, 'make_mock', no_simulation)
    monkeypatch.setattr(script, 'physical_memory', lambda: 4.0 * 2 ** 30)
    out = tmp_path / 'm'
    with caplog.at_level(logging.ERROR):
        assert main(['--outdir', str(out), '--nspec', '3000', '--nfiles', '1']) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ['--nspec 3000: files of up to 3000 spectra need about 5.2 GiB each '
                      "(1.7 MiB per spectrum with RESOLUTION), more than this machine's 4 GiB: "
                      'give --nfiles 2 or more']
    assert not out.exists()
