"""SIGTERM (Slurm's time limit, scancel) must not leave temporary outputs behind."""
import glob
import os
import signal
import subprocess
import sys

import pytest

from lbg_testdata import save_tiny_model, write_test_coadd, write_test_redrock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRAPPERS = sorted(glob.glob(os.path.join(ROOT, 'bin', 'desi_lbg_*')))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, 'py'), TF_CPP_MIN_LOG_LEVEL='2')


def run_driver(code, *args, timeout=120):
    return subprocess.run([sys.executable, '-c', code, *args], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_all_eight_commands_are_covered():
    assert len(WRAPPERS) == 8


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=['TERM', 'INT'])
@pytest.mark.parametrize('wrapper', WRAPPERS, ids=os.path.basename)
def test_sigterm_mid_write_removes_the_temporary(tmp_path, wrapper, signum):
    """Each bin/ wrapper, with its command's main replaced by one that is killed while an
    output is half written: the process exits 128 + signum and neither file is left; Ctrl-C
    (SIGINT) too, with one line instead of a KeyboardInterrupt traceback."""
    script = 'lbgnet.scripts.lbg_' + os.path.basename(wrapper)[len('desi_lbg_'):]
    code = (
        'import os, runpy, signal, sys, time, types\n'
        # a shell starts background jobs with SIGINT ignored (which the wrapper respects):
        # give this process Python's own Ctrl-C handling, as in a terminal
        'signal.signal(signal.SIGINT, signal.default_int_handler)\n'
        'from lbgnet.io.atomic import atomic_path\n'
        'def main(*args):\n'
        '    with atomic_path(sys.argv[1]) as tmp:\n'
        '        open(tmp, "w").write("half")\n'
        f'        os.kill(os.getpid(), {int(signum)})\n'
        '        time.sleep(60)\n'
        '    return 0\n'
        f'fake = types.ModuleType({script!r})\n'
        'fake.main, fake.parse = main, lambda *a: None\n'
        f'sys.modules[{script!r}] = fake\n'
        f'runpy.run_path({wrapper!r}, run_name="__main__")\n')
    out = tmp_path / 'out.fits'
    proc = run_driver(code, str(out), timeout=60)
    assert proc.returncode == 128 + signum, proc.stderr
    assert f'stopped by {signal.Signals(signum).name}; removing temporary outputs' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert os.listdir(tmp_path) == []


def test_afterburner_killed_before_rename_leaves_nothing(tmp_path):
    """The real command: SIGTERM arrives when the catalogue is written but not yet renamed."""
    model = save_tiny_model(str(tmp_path / 'tiny.weights.h5'))
    data = tmp_path / 'data'
    data.mkdir()
    tid, _ = write_test_coadd(str(data / 'coadd-main-dark-7.fits'), 4)
    write_test_redrock(str(data / 'redrock-main-dark-7.fits'), tid)
    before = sorted(os.listdir(data))
    code = (
        'import os, runpy, signal, sys, time\n'
        'real = os.replace\n'
        'def replace(src, dst):\n'
        '    if ".tmp" in os.path.basename(src):\n'
        '        os.kill(os.getpid(), signal.SIGTERM)\n'
        '        time.sleep(60)\n'
        '    real(src, dst)\n'
        'os.replace = replace\n'
        f'sys.argv = [{WRAPPERS[0]!r}] + sys.argv[1:]\n'
        f'runpy.run_path({WRAPPERS[0]!r}, run_name="__main__")\n')
    assert os.path.basename(WRAPPERS[0]) == 'desi_lbg_afterburner'
    proc = run_driver(code, '--coadd', str(data / 'coadd-main-dark-7.fits'), '--model', model,
                      '--no-refine', '--threads', '1')
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert sorted(os.listdir(data)) == before          # no catalogue, priors or temporary


def test_a_signal_ignored_at_start_stays_ignored(tmp_path):
    """Under ``nohup`` (SIGHUP ignored) a command survives SIGHUP and finishes its output;
    SIGTERM still stops it cleanly."""
    code = (
        'import os, runpy, signal, sys, time, types\n'
        # a shell starts background jobs with SIGINT ignored (which the wrapper respects):
        # give this process Python's own Ctrl-C handling, as in a terminal
        'signal.signal(signal.SIGINT, signal.default_int_handler)\n'
        'from lbgnet.io.atomic import atomic_path\n'
        'signal.signal(signal.SIGHUP, signal.SIG_IGN)       # what nohup does\n'
        'def main(*args):\n'
        '    with atomic_path(sys.argv[1]) as tmp:\n'
        '        open(tmp, "w").write("whole")\n'
        '        os.kill(os.getpid(), getattr(signal, sys.argv[2]))\n'
        '        time.sleep(0.5)\n'
        '    return 0\n'
        'fake = types.ModuleType("lbgnet.scripts.lbg_mock")\n'
        'fake.main, fake.parse = main, lambda *a: None\n'
        'sys.modules["lbgnet.scripts.lbg_mock"] = fake\n'
        f'runpy.run_path({os.path.join(ROOT, "bin", "desi_lbg_mock")!r}, run_name="__main__")\n')
    out = tmp_path / 'out.fits'
    proc = run_driver(code, str(out), 'SIGHUP', timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(tmp_path) == ['out.fits'] and out.read_text() == 'whole'
    out.unlink()
    proc = run_driver(code, str(out), 'SIGTERM', timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and os.listdir(tmp_path) == []


def test_atomic_path_removes_the_writers_own_temporary(tmp_path):
    """desispec.io.write_spectra writes its own temporary next to the name it is given and
    leaves it when interrupted: atomic_path removes it too, and nothing else."""
    from desispec.io.util import get_tempfilename
    from lbgnet.io.atomic import atomic_path, host_label
    pid, host = os.getpid(), host_label()
    others = [tmp_path / f'.coadd-x2.tmp{pid}-{host}.fits',    # another output's temporary
              tmp_path / f'.coadd-x.tmp{pid}7-{host}.fits',    # another process's, same output
              tmp_path / f'.coadd-x.tmp{pid}-{host}0.fits']    # a host named like this one
    for other in others:
        other.write_text('other')
    with pytest.raises(OSError, match='disk full'):
        with atomic_path(str(tmp_path / 'coadd-x.fits')) as tmp:
            inner = get_tempfilename(tmp)
            assert os.path.basename(inner).startswith(os.path.basename(tmp)[:-len('.fits')])
            open(inner, 'w').write('half')
            raise OSError('disk full')
    assert sorted(os.listdir(tmp_path)) == sorted(other.name for other in others)


def test_atomic_path_without_extension_leaves_nothing(tmp_path):
    """An output name without extension (``--output zcat``): its temporary is removed too
    when the rename fails."""
    from lbgnet.io.atomic import atomic_path
    with pytest.raises(OSError, match='cannot rename'):
        with atomic_path(str(tmp_path / 'zcat'), rename=lambda a, b: _refuse()) as tmp:
            open(tmp, 'w').write('written')
    assert os.listdir(tmp_path) == []


def _refuse():
    raise OSError('cannot rename')


def run_mock_patched(tmp_path, patch):
    """Run the real bin/desi_lbg_mock (20 spectra into tmp_path/out) after the Python code
    `patch` (which has os, signal, sys and time); return the process and the --outdir."""
    wrapper = os.path.join(ROOT, 'bin', 'desi_lbg_mock')
    code = ('import os, runpy, signal, sys, time\n' + patch +
            f'sys.argv = [{wrapper!r}] + sys.argv[1:]\n'
            f'runpy.run_path({wrapper!r}, run_name="__main__")\n')
    out = tmp_path / 'out'
    return run_driver(code, '--outdir', str(out), '--nspec', '20', '--no-resolution'), out


def test_mock_killed_inside_desispec_write_leaves_nothing(tmp_path):
    """The real desi_lbg_mock, SIGTERM while desispec's write_spectra has its own temporary
    written but not renamed, and a second SIGTERM (mpiexec forwards one as well) during the
    clean-up."""
    proc, out = run_mock_patched(tmp_path, (
        'from astropy.io import fits\n'
        'real = fits.HDUList.writeto\n'
        'def writeto(self, name, *args, **kwargs):\n'
        '    real(self, name, *args, **kwargs)\n'
        '    if "_tmp" in os.path.basename(str(name)):\n'
        '        os.kill(os.getpid(), signal.SIGTERM)\n'
        '        time.sleep(60)\n'
        'fits.HDUList.writeto = writeto\n'
        'remove = os.remove\n'
        'def again(path):\n'
        '    os.kill(os.getpid(), signal.SIGTERM)\n'
        '    remove(path)\n'
        'os.remove = again\n'))
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert proc.stderr.count('stopped by SIGTERM') == 1 and 'Traceback' not in proc.stderr
    assert not os.path.exists(out)            # nothing written: the --outdir it made is gone


# What TensorFlow does when the signal arrives while it traces a function: it catches the
# handler's exception and raises a TypeError in its place (seen in CI on 2026-12-04:
# "Failed to convert elements of (None, 16, 40, 1) to Tensor").
REPLACING = (
    'def replacing(*args, **kwargs):\n'
    '    try:\n'
    '        os.kill(os.getpid(), signal.SIGTERM)\n'
    '        time.sleep(60)\n'
    '    except BaseException:\n'
    '        raise TypeError("Failed to convert elements of (None, 16, 40, 1) to Tensor")\n')


SWALLOWING = (
    'import lbgnet.network\n'
    'real = lbgnet.network.Network.predict\n'
    'def swallowing(*args, **kwargs):\n'
    '    try:\n'
    '        os.kill(os.getpid(), signal.SIGTERM)\n'
    '        time.sleep(60)\n'
    '    except BaseException:\n'
    '        pass\n'
    '    return real(*args, **kwargs)\n')


@pytest.mark.parametrize('library', ['replacing', 'swallowing'])
def test_afterburner_signal_turned_into_another_error_still_stops_the_run(tmp_path, library):
    """A signal whose exception a library replaced by a TypeError stops the run with
    128 + signum: it is not logged as one failed file, and the next file is not begun.  One
    that a library swallowed whole lets the file finish, and stops the run before the next."""
    model = save_tiny_model(str(tmp_path / 'tiny.weights.h5'))
    data = tmp_path / 'data'
    data.mkdir()
    for n in (7, 8):
        tid, _ = write_test_coadd(str(data / f'coadd-main-dark-{n}.fits'), 4)
        write_test_redrock(str(data / f'redrock-main-dark-{n}.fits'), tid)
    before = sorted(os.listdir(data))
    code = (
        'import os, runpy, signal, sys, time\n'
        'import lbgnet.network\n' + REPLACING + SWALLOWING +
        f'lbgnet.network.Network.predict = {library}\n'
        f'sys.argv = [{WRAPPERS[0]!r}] + sys.argv[1:]\n'
        f'runpy.run_path({WRAPPERS[0]!r}, run_name="__main__")\n')
    proc = run_driver(code, '--coadd', str(data / 'coadd-main-dark-7.fits'),
                      str(data / 'coadd-main-dark-8.fits'), '--model', model, '--no-refine',
                      '--threads', '1')
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert 'TypeError' not in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
    assert proc.stderr.count('stopped by SIGTERM') == 1, proc.stderr
    written = sorted(set(os.listdir(data)) - set(before))
    assert written == ([] if library == 'replacing' else
                       ['lbg_cnn-main-dark-7.fits', 'priors_lbg-main-dark-7.fits']), written


def test_mock_signal_turned_into_another_error_still_stops_the_run(tmp_path):
    """desi_lbg_mock goes on after a failed healpix pixel, but not after a signal that a
    library turned into another exception."""
    proc, out = run_mock_patched(tmp_path, 'import lbgnet.scripts.lbg_mock as script\n'
                                 + REPLACING + 'script.make_mock = replacing\n')
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert 'TypeError' not in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
    assert not os.path.exists(out)            # nothing written: the --outdir it made is gone


def test_raise_if_terminated_only_after_a_handled_signal(monkeypatch):
    """raise_if_terminated does nothing before a signal, raises Terminated(128 + signum)
    after one the handler saw, and a new exit_on_termination starts afresh."""
    from lbgnet.io import atomic
    installed = {}                                       # no real handler is installed
    monkeypatch.setattr(atomic.signal, 'signal',
                        lambda signum, handler: installed.__setitem__(signum, handler))
    monkeypatch.setattr(atomic.signal, 'getsignal', lambda signum: signal.SIG_DFL)
    atomic.exit_on_termination()
    atomic.raise_if_terminated()                         # nothing received: no exception
    with pytest.raises(atomic.Terminated) as first:
        installed[signal.SIGHUP](signal.SIGHUP, None)
    assert first.value.code == 128 + signal.SIGHUP
    with pytest.raises(atomic.Terminated) as again:
        atomic.raise_if_terminated()
    assert again.value.code == 128 + signal.SIGHUP
    atomic.exit_on_termination()
    atomic.raise_if_terminated()                         # a fresh start forgets it


def test_forked_worker_ended_by_sigterm_dies_silently_and_keeps_the_temporary(tmp_path):
    """Keras ends the worker processes of ``desi_lbg_train --worker-processes`` with SIGTERM
    after every epoch: the inherited handler logged "stopped by SIGTERM; removing temporary
    outputs" each time, and a worker forked inside ``atomic_path`` removed the parent's
    temporary.  A forked process now dies of the signal as it would have."""
    code = (
        'import os, signal, sys\n'
        'from lbgnet.io.atomic import atomic_path, exit_on_termination\n'
        'exit_on_termination()\n'
        'with atomic_path(sys.argv[1]) as tmp:\n'
        '    open(tmp, "w").write("whole")\n'
        '    pid = os.fork()\n'
        '    if pid == 0:\n'
        '        os.kill(os.getpid(), signal.SIGTERM)\n'
        '        os._exit(0)              # not reached\n'
        '    _, status = os.waitpid(pid, 0)\n'
        '    print(os.WIFSIGNALED(status) and os.WTERMSIG(status), os.path.exists(tmp))\n')
    out = tmp_path / 'out.fits'
    proc = run_driver(code, str(out), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(int(signal.SIGTERM)), 'True']
    assert 'stopped by' not in proc.stderr
    assert out.read_text() == 'whole'
