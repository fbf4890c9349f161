"""One mpiexec -n 2 smoke test: files spread over ranks, one bad file, same output as 1 rank."""
import filecmp
import importlib
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from lbg_testdata import save_tiny_model, write_test_coadd, write_test_redrock

from lbgnet.refine import REFINE_KEYS
from lbgnet.scripts.lbg_afterburner import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mpiexec():
    """The launcher of the pinned ``mpich`` wheel (a requirement: its absence fails)."""
    for cand in (os.path.join(os.path.dirname(sys.executable), 'mpiexec'), shutil.which('mpiexec')):
        if cand and os.path.exists(cand):
            return cand
    pytest.fail('mpiexec not found: install requirements.txt (the mpich wheel)')


def launch_env(tmp_path, **extra):
    """Environment of an ``mpiexec`` run: this checkout's package, and TMPDIR in the test's
    directory (TensorFlow's autograph files went to /tmp).  MPICH's launcher writes its
    hwloc topology file to a fixed ``/tmp/hydra_hwloc_xmlfile_*`` path whatever TMPDIR
    says, and leaves it when a run aborts (as these tests make it do)."""
    return dict(os.environ, PYTHONPATH=os.path.join(ROOT, 'py'), TMPDIR=str(tmp_path), **extra)


def two_ranks(tmp_path, script, *options):
    """Run `script` (a driver or a ``bin/`` command) with ``--mpi`` and `options` under
    ``mpiexec -n 2`` (one thread a rank); return the process and its log."""
    proc = subprocess.run([mpiexec(), '-n', '2', sys.executable, str(script), '--mpi',
                           *options], env=launch_env(tmp_path, OMP_NUM_THREADS='1'),
                          capture_output=True, text=True, timeout=120)
    return proc, proc.stdout + proc.stderr


def test_two_ranks_equal_one_rank(tmp_path):
    importlib.import_module('mpi4py')     # a requirement: its absence fails
    launcher = mpiexec()
    model = save_tiny_model(str(tmp_path / 'tiny.weights.h5'))
    redux = tmp_path / 'redux'
    for i, (pix, nspec) in enumerate([(201, 30), (202, 7), (203, 15), (204, 9)]):
        d = redux / 'healpix' / 'sv3' / 'dark' / '2' / str(pix)
        d.mkdir(parents=True)
        tid, _ = write_test_coadd(str(d / f'coadd-sv3-dark-{pix}.fits'), nspec, seed=i)
        rr_tid = tid[::-1] if pix != 203 else tid + 1      # 203: TARGETID mismatch
        write_test_redrock(str(d / f'redrock-sv3-dark-{pix}.fits'), rr_tid)
    common = ['--input-dir', str(redux), '--model', model, '--chunk-size', '8']
    assert main(common + ['--outdir', str(tmp_path / 'one')]) == 1

    env = launch_env(tmp_path, TF_CPP_MIN_LOG_LEVEL='2', OMP_NUM_THREADS='1')
    proc = subprocess.run([launcher, '-n', '2', sys.executable,
                           os.path.join(ROOT, 'bin', 'desi_lbg_afterburner'), '--mpi',
                           *common, '--outdir', str(tmp_path / 'two')],
                          env=env, capture_output=True, text=True, timeout=120)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log
    assert 'FAILED' in log and 'TARGETID mismatch' in log and 'sv3-dark-203' in log
    assert '3 files done' in log and 'Traceback' not in log
    # largest first by size: rank 0 takes 201 (30 spectra), rank 1 203, 204, 202 (15+9+7).
    assert 'files per rank: 1, 3' in log
    # each line says which rank wrote it (rank 1 had 203); the summary is the run's, not
    # rank 0's own (it read 'rank 0: 3 files done ...', 'rank 0: FAILED ...')
    assert re.search(r'rank 1: \S+sv3-dark-203\.fits: .*TARGETID mismatch', log), log
    assert re.search(r'summarise: run: 3 files done', log) and 'rank 1: rank 1' not in log
    assert re.search(r'summarise: run: FAILED \S+sv3-dark-203\.fits', log), log
    assert re.search(r'run_ranks: run: processing: ', log), log
    assert not re.search(r'rank 0: .*(files done|FAILED)', log), log
    one = sorted(p.relative_to(tmp_path / 'one') for p in (tmp_path / 'one').rglob('*.fits'))
    two = sorted(p.relative_to(tmp_path / 'two') for p in (tmp_path / 'two').rglob('*.fits'))
    assert one == two and len(one) == 6          # catalogue + priors for 3 good files
    for rel in one:
        if filecmp.cmp(tmp_path / 'one' / rel, tmp_path / 'two' / rel, shallow=False):
            continue
        # The template refinement's matrix products go through BLAS, whose summation order
        # depends on its thread count (2 here, 1 per rank under mpiexec): those columns may
        # differ in the last bits; everything else, headers included (but the checksums
        # of those bits), must be identical.
        a, b = fits.open(tmp_path / 'one' / rel), fits.open(tmp_path / 'two' / rel)
        assert ([_without_checksums(h.header) for h in a]
                == [_without_checksums(h.header) for h in b]), rel
        ta, tb = a['LBG_CNN'].data, b['LBG_CNN'].data
        for col in ta.names:
            if col in REFINE_KEYS:
                assert np.allclose(ta[col], tb[col], rtol=1e-9, atol=0, equal_nan=True), col
            else:
                assert np.array_equal(ta[col], tb[col], equal_nan=ta[col].dtype.kind == 'f'), col
    # the same tree read at another path: the 3 catalogues are kept, the ranks check a share
    # each, and the run warns once about all of them (not once per rank)
    shutil.copytree(str(redux), str(tmp_path / 'mount'))
    common[1] = str(tmp_path / 'mount')
    proc = subprocess.run([launcher, '-n', '2', sys.executable,
                           os.path.join(ROOT, 'bin', 'desi_lbg_afterburner'), '--mpi',
                           *common, '--outdir', str(tmp_path / 'two')],
                          env=env, capture_output=True, text=True, timeout=120)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1 and '3 skipped, 1 failed' in log, log
    assert log.count('existing catalogues kept were made from a coadd of the same name') == 1, log
    assert '3 of the 3 existing catalogues kept were made from a coadd' in log


def _without_checksums(header):
    """A FITS header without its CHECKSUM/DATASUM cards."""
    header = header.copy()
    for key in ('CHECKSUM', 'DATASUM'):
        header.remove(key, ignore_missing=True)
    return header


def run_two_ranks_with(tmp_path, driver_code, pixels, options=('--no-refine',)):
    """Run the afterburner under ``mpiexec -n 2`` through a driver script that patches it
    (`driver_code` ends by calling ``script.main``) on two small files; return the process
    and its log."""
    importlib.import_module('mpi4py')     # a requirement: its absence fails
    launcher = mpiexec()
    model = save_tiny_model(str(tmp_path / 'tiny.weights.h5'))
    for pix in pixels:
        tid, _ = write_test_coadd(str(tmp_path / f'coadd-sv3-dark-{pix}.fits'), 5, seed=pix)
        write_test_redrock(str(tmp_path / f'redrock-sv3-dark-{pix}.fits'), tid)
    driver = tmp_path / 'driver.py'
    driver.write_text(driver_code)
    env = launch_env(tmp_path, TF_CPP_MIN_LOG_LEVEL='2', OMP_NUM_THREADS='1')
    proc = subprocess.run([launcher, '-n', '2', sys.executable, str(driver), '--mpi',
                           '--coadd', str(tmp_path / 'coadd-*.fits'), '--model', model,
                           *options], env=env, capture_output=True, text=True, timeout=180)
    return proc, proc.stdout + proc.stderr


def failing_on_rank_1(function, exception, command='lbg_afterburner'):
    """Driver code for :func:`run_two_ranks_with` (or any ``mpiexec`` run): the script
    module `command` with its `function` raising `exception` (source text, which may use
    the call's ``args``) on rank 1 only."""
    return ('import sys\n'
            'from mpi4py import MPI\n'
            f'import lbgnet.scripts.{command} as script\n'
            f'real = script.{function}\n'
            'def broken(*args, **kwargs):\n'
            '    if MPI.COMM_WORLD.rank == 1:\n'
            f'        raise {exception}\n'
            '    return real(*args, **kwargs)\n'
            f'script.{function} = broken\n'
            'sys.exit(script.main(sys.argv[1:]))\n')


#: `exception` of :func:`failing_on_rank_1` for ``check_outdir``: a node without the file
#: system.
UNMOUNTED = 'script.OutputFileError(args[0], "injected: not mounted on this node")'


def test_option_warnings_come_once_not_once_per_rank(tmp_path):
    """--refine-step away from the calibrated one: rank 0 warns while checking the options;
    the other ranks, building their own refinement, do not repeat it (64 times under
    srun -n 64)."""
    from lbgnet.io.modelfile import default_model_path
    proc, log = run_two_ranks_with(
        tmp_path, 'import sys\nimport lbgnet.scripts.lbg_afterburner as script\n'
                  'sys.exit(script.main(sys.argv[1:]))\n', (1, 2),
        options=('--refine-step', '4e-4', '--model', default_model_path()))   # calibrated
    assert proc.returncode == 0, log
    assert log.count('only approximately so') == 1, log


def test_a_setup_failure_is_every_ranks_not_rank_0s(tmp_path):
    """A failure rank 0 finds while it sets up for all (here a model file that does not
    exist) stops every rank; its line said 'rank 0: ...', as if rank 0 alone had failed."""
    missing = tmp_path / 'none.weights.h5'
    proc, log = run_two_ranks_with(
        tmp_path, 'import sys\nimport lbgnet.scripts.lbg_afterburner as script\n'
                  'sys.exit(script.main(sys.argv[1:]))\n', (5, 6),
        options=('--no-refine', '--model', str(missing)))
    assert proc.returncode == 1, log
    assert f'every rank: {tmp_path / "none.json"}: no such file' in log, log
    assert 'rank 0:' not in log and 'Traceback' not in log, log


def test_unexpected_error_on_one_rank_aborts_all(tmp_path):
    """An exception outside the per-file handling on one rank must end the job (MPI Abort),
    not leave the other ranks waiting at a barrier until the allocation runs out."""
    proc, log = run_two_ranks_with(
        tmp_path, failing_on_rank_1('run_files', 'RuntimeError("injected failure")'), (301, 302))
    assert proc.returncode != 0, log
    assert 'rank 1: unexpected error; aborting every rank' in log and 'injected failure' in log


def test_failure_before_the_files_on_one_rank_aborts_all(tmp_path):
    """A rank failing while it sets up (TensorFlow import under the keras engine) used to
    leave the other ranks waiting forever in the first collective: it must fail its files,
    not hang the job.  The numpy engine (the default) imports no TensorFlow at all."""
    proc, log = run_two_ranks_with(
        tmp_path, failing_on_rank_1('import_tensorflow',
                                    'ImportError("injected: no TensorFlow on this node")'),
        (311, 312), options=('--no-refine', '--engine', 'keras'))
    assert proc.returncode != 0, log
    assert 'rank 1: cannot load the model' in log and 'injected' in log
    proc, log = run_two_ranks_with(
        tmp_path, failing_on_rank_1('import_tensorflow',
                                    'ImportError("injected: no TensorFlow on this node")'),
        (311, 312), options=('--no-refine', '--overwrite'))
    assert proc.returncode == 0 and 'injected' not in log, log


@pytest.mark.parametrize('signalled', ['rank 1', 'every rank'])
def test_sigterm_aborts_all_and_leaves_no_temporaries(tmp_path, signalled):
    """srun signals every rank: none leaves a temporary (the signalled rank waits before the
    abort).  A rank signalled alone must not leave the others waiting at a barrier, and leaves
    no temporary of its own (another rank killed by the abort mid-write may)."""
    proc, log = run_two_ranks_with(tmp_path, (
        'import os, signal, sys, time\n'
        'from mpi4py import MPI\n'
        'from lbgnet.io.atomic import exit_on_termination\n'
        'import lbgnet.scripts.lbg_afterburner as script\n'
        'exit_on_termination()\n'
        'pids = MPI.COMM_WORLD.allgather(os.getpid())\n'
        'here = os.path.dirname(__file__)\n'
        'with open(os.path.join(here, f"rank{MPI.COMM_WORLD.rank}.pid"), "w") as fx:\n'
        '    fx.write(str(os.getpid()))\n'
        f'targets = pids if {signalled == "every rank"} else pids[1:]\n'
        'real = os.replace\n'
        'def replace(src, dst):\n'
        '    if MPI.COMM_WORLD.rank == 1 and ".tmp" in os.path.basename(src):\n'
        '        for pid in targets:\n'
        '            os.kill(pid, signal.SIGTERM)\n'
        '        time.sleep(60)\n'
        '    real(src, dst)\n'
        'os.replace = replace\n'
        'sys.exit(script.main(sys.argv[1:]))\n'), (401, 402))
    assert proc.returncode != 0, log
    assert 'rank 1: stopped by a signal; aborting every rank' in log, log
    # TensorFlow, signalled while tracing, raised a TypeError in place of Terminated (CI,
    # 2026-12-04): rank 0 logged a failed file with its traceback
    assert 'Traceback' not in log, log
    pid1 = (tmp_path / 'rank1.pid').read_text()
    temporaries = [f for f in os.listdir(tmp_path) if '.tmp' in f]
    if signalled == 'every rank':
        assert temporaries == []
    else:
        assert pid1 and not [f for f in temporaries if f'.tmp{pid1}-' in f]


def test_rank_signalled_while_importing_does_not_leave_the_others_waiting(tmp_path):
    """A SIGTERM to one rank while the command's modules are imported (before the ranks
    are joined under abort_all_on_failure) ended that rank with status 143; the launcher
    did not end the other, which waited in MPI for ever.  The wrapper's entry point now
    ends such a rank by the signal itself."""
    importlib.import_module('mpi4py')     # a requirement: its absence fails
    (tmp_path / 'slowimport.py').write_text(
        'import os, signal, time\n'
        'from mpi4py import MPI\n'
        'if MPI.COMM_WORLD.rank == 1:             # signalled while importing\n'
        '    os.kill(os.getpid(), signal.SIGTERM)\n'
        '    time.sleep(30)\n'
        'def main():\n'
        '    MPI.COMM_WORLD.barrier()              # rank 0 waits for rank 1 here\n'
        '    return 0\n')
    driver = tmp_path / 'driver.py'
    driver.write_text('import sys\nfrom lbgnet.parallel import run_entry_point\n'
                      'sys.exit(run_entry_point("slowimport"))\n')
    env = launch_env(tmp_path, OMP_NUM_THREADS='1')
    env['PYTHONPATH'] += os.pathsep + str(tmp_path)
    proc = subprocess.run([mpiexec(), '-n', '2', sys.executable, str(driver)], env=env,
                          capture_output=True, text=True, timeout=120)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and 'stopped by SIGTERM' in log, log


def test_mock_setup_failing_on_one_rank_stops_every_rank(tmp_path):
    """desi_lbg_mock --mpi: an --outdir that one rank cannot use (a node without the
    file system) stops every rank with that rank's reason; the other rank used to write
    its files and wait forever in the final allreduce, and the reason was never logged."""
    importlib.import_module('mpi4py')     # a requirement: its absence fails
    driver = tmp_path / 'driver.py'
    driver.write_text(failing_on_rank_1('check_outdir', UNMOUNTED, 'lbg_mock'))
    out = tmp_path / 'mock'
    proc, log = two_ranks(tmp_path, driver, '--outdir', str(out), '--nspec', '4',
                          '--nfiles', '2', '--no-resolution')
    assert proc.returncode == 1, log
    assert 'rank 1: --outdir' in log and 'injected: not mounted on this node' in log
    assert not list(out.glob('coadd-*.fits'))


def test_rank_that_cannot_load_the_model_says_why(tmp_path):
    """A rank that cannot load the model (a node without the file) fails its files naming
    the exception, and logs the traceback itself (its reason was only in the summary,
    without the exception type)."""
    proc, log = run_two_ranks_with(tmp_path, (
        'import sys\n'
        'from mpi4py import MPI\n'
        'import lbgnet.scripts.lbg_afterburner as script\n'
        'real = script.load_network\n'
        'def load(path, *args):\n'
        '    if MPI.COMM_WORLD.rank == 1:\n'
        '        raise OSError("injected: cannot read on this node")\n'
        '    return real(path, *args)\n'
        'script.load_network = load\n'
        'sys.exit(script.main(sys.argv[1:]))\n'), (301, 302))
    assert proc.returncode == 1, log
    assert 'rank 1: cannot load the model or the refinement' in log and 'Traceback' in log
    assert 'rank 1: OSError: injected: cannot read on this node' in log


def test_preprocess_shares_files_among_ranks(tmp_path):
    """desi_lbg_preprocess --mpi under mpiexec -n 2: every file gridded once, by one rank,
    into the same arrays as a serial run; a bad file fails alone (its rank named), the
    summary is logged once and the status is 1 on every rank."""
    importlib.import_module('mpi4py')     # a requirement: its absence fails
    from lbgnet.scripts.lbg_preprocess import main as preprocess
    coadds = [str(tmp_path / f'coadd-sv3-dark-{pix}.fits') for pix in (21, 22, 23)]
    for i, path in enumerate(coadds):
        write_test_coadd(path, 4 + 3 * i, seed=i)
    bad = tmp_path / 'coadd-sv3-dark-24.fits'
    bad.write_text('not fits')
    assert preprocess(['--coadd', *coadds, '--outdir', str(tmp_path / 'serial')]) == 0
    proc, log = two_ranks(tmp_path, os.path.join(ROOT, 'bin', 'desi_lbg_preprocess'),
                          '--coadd', *coadds, str(bad), '--outdir', str(tmp_path / 'mpi'))
    assert proc.returncode == 1, log
    assert re.search(r'rank [01]: .*coadd-sv3-dark-24\.fits', log) and 'Traceback' not in log
    assert log.count('run: 3 of 4 file(s) written') == 1, log
    assert sorted(p.name for p in (tmp_path / 'mpi').iterdir()) == \
        sorted(p.name for p in (tmp_path / 'serial').iterdir())
    for name in os.listdir(tmp_path / 'serial'):
        with np.load(str(tmp_path / 'serial' / name)) as a, \
                np.load(str(tmp_path / 'mpi' / name)) as b:
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f'{name} {key}')
    # each rank gridded its own share: both wrote
    ranks = set(re.findall(r'rank ([01]): .*wrote ', log))
    assert ranks == {'0', '1'}, log


def test_preprocess_unexpected_error_on_one_rank_aborts_all(tmp_path):
    """desi_lbg_preprocess --mpi: an error escaping the file loop on one rank aborts every
    rank (the other used to wait forever in the final allreduce)."""
    importlib.import_module('mpi4py')     # a requirement: its absence fails
    coadds = [str(tmp_path / f'coadd-sv3-dark-{pix}.fits') for pix in (41, 42)]
    for i, path in enumerate(coadds):
        write_test_coadd(path, 3, seed=i)
    driver = tmp_path / 'driver.py'
    driver.write_text(failing_on_rank_1('grid_file', 'RuntimeError("injected failure")',
                                        'lbg_preprocess'))
    proc, log = two_ranks(tmp_path, driver, '--coadd', *coadds, '--outdir', str(tmp_path / 'out'))
    assert proc.returncode != 0, log
    assert 'rank 1: unexpected error; aborting every rank' in log and 'injected failure' in log


def test_preprocess_output_that_is_an_input_fails_every_rank_alike(tmp_path):
    """desi_lbg_preprocess --mpi: an --outdir output that is an input (looked for once, on
    rank 0) stops every rank with one line naming the file, not with 'rank 0: ...' as if
    one rank alone had failed."""
    importlib.import_module('mpi4py')     # a requirement: its absence fails
    out = tmp_path / 'grid'
    out.mkdir()
    target = out / 'lbg_input-a.npz'
    write_test_coadd(str(target), 3, seed=0)
    link = tmp_path / 'coadd-a.fits'
    link.symlink_to(target)
    before = target.read_bytes()
    proc, log = two_ranks(tmp_path, os.path.join(ROOT, 'bin', 'desi_lbg_preprocess'),
                          '--coadd', str(link), '--outdir', str(out))
    assert proc.returncode == 1, log
    assert f'every rank: {target}: is an input file; refusing to overwrite it' in log, log
    assert 'rank 0:' not in log and 'Traceback' not in log, log
    assert target.read_bytes() == before


def test_preprocess_setup_failing_on_one_rank_stops_every_rank(tmp_path):
    """desi_lbg_preprocess --mpi: an --outdir that one rank cannot use (a node without
    the file system) stops every rank with that rank's reason, before any file is
    gridded."""
    importlib.import_module('mpi4py')     # a requirement: its absence fails
    coadd = tmp_path / 'coadd-sv3-dark-51.fits'
    write_test_coadd(str(coadd), 3, seed=0)
    driver = tmp_path / 'driver.py'
    driver.write_text(failing_on_rank_1('check_outdir', UNMOUNTED, 'lbg_preprocess'))
    out = tmp_path / 'grid'
    proc, log = two_ranks(tmp_path, driver, '--coadd', str(coadd), '--outdir', str(out))
    assert proc.returncode == 1, log
    assert f'rank 1: {out}: injected: not mounted on this node' in log, log
    assert not list(out.glob('lbg_input-*.npz'))


def test_mock_headers_do_not_depend_on_what_was_imported():
    """desiutil's add_dependencies recorded mpi4py once a --mpi run had imported it, so a
    mock written under MPI had other headers (and coadd fingerprints) than a serial one."""
    import sys
    from lbgnet.io.mock import provenance_header
    importlib.import_module('mpi4py')
    assert 'mpi4py' in sys.modules
    header = provenance_header({'MOCKSEED': 1}, 'lbgnet-mock.yaml')
    names = [header[k] for k in header if k.startswith('DEPNAM')]
    assert 'mpi4py' not in names
    assert {'python', 'numpy', 'desispec', 'lbgnet', 'LBGNET_MOCK_CONFIG'} <= set(names)


def test_coadd_headers_do_not_depend_on_what_was_imported(tmp_path):
    """desispec's write_spectra adds desiutil's add_dependencies to the coadd's primary
    and FIBERMAP headers: under --mpi they gained mpi4py, so a mock coadd written under
    MPI had another fingerprint than a serial one.  The caller's versions are kept."""
    from lbgnet.io.mock import provenance_header
    from lbgnet.io.spectra import minimal_fibermap, write_coadd
    importlib.import_module('mpi4py')
    assert 'mpi4py' in sys.modules
    header = provenance_header({'MOCKSEED': 1}, 'lbgnet-mock.yaml')
    wave = {'b': np.linspace(3600.0, 5800.0, 50)}
    flux = {'b': np.ones((3, 50), np.float32)}
    path = str(tmp_path / 'coadd-x.fits')
    write_coadd(path, wave, flux, flux, minimal_fibermap(np.arange(3) + 10),
                meta={k: (header[k], header.comments[k]) for k in header})
    with fits.open(path) as hdul:
        for name in ('PRIMARY', 'FIBERMAP'):
            names = [hdul[name].header[k] for k in hdul[name].header if k.startswith('DEPNAM')]
            assert 'mpi4py' not in names and {'python', 'numpy', 'desispec'} <= set(names), name
            if name == 'PRIMARY':
                assert {'lbgnet', 'LBGNET_MOCK_CONFIG'} <= set(names)
        assert all(hdu.verify_checksum() == 1 for hdu in hdul)


def test_example_is_refused_with_a_communicator_of_several_ranks(caplog):
    """--example runs in one process: main(['--example'], comm) with 2 ranks made every
    rank refuse in the mock with a misleading 'without --mpi' error (each in its own
    temporary directory)."""
    import logging
    from lbgnet.scripts.lbg_afterburner import parse, run_all

    class TwoRanks:
        rank, size = 0, 2
    with caplog.at_level(logging.ERROR):
        assert run_all(parse(['--example']), TwoRanks()) == 1
    assert '--example runs in one process: it was given a communicator of 2 ranks' in caplog.text
