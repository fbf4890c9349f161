"""Temporaries left by a process killed outright (``kill -9``, Slurm's SIGKILL, the OOM
killer): named after their owner (process id and host), and removed by the next command
writing the same output once that process has ended on this host."""
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from lbgnet.io import atomic
from lbgnet.io.atomic import (atomic_path, find_leftovers, host_label, owner_tag,
                              private_directory, remove_leftovers)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, 'py'), TF_CPP_MIN_LOG_LEVEL='2')


def dead_pid():
    """The process id of a process that has ended (a child already waited for)."""
    child = subprocess.Popen(['true'])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid():
    """The process id of a sleeping child, ended after the test."""
    child = subprocess.Popen(['sleep', '120'])
    yield child.pid
    child.kill()
    child.wait()


def plant(directory, name, folder=False):
    """A leftover file (or folder holding a file) `name` in `directory`; its path."""
    path = os.path.join(directory, name)
    if folder:
        os.mkdir(path)
        with open(os.path.join(path, 'lbg_cnn-main-dark-100.fits'), 'w') as fx:
            fx.write('copy of the catalogue')
    else:
        with open(path, 'w') as fx:
            fx.write('half')
    return path


def test_temporary_names_carry_the_process_and_the_host(tmp_path):
    """atomic_path's temporary and a private directory (add_checksums') name their owner,
    with a dot first; a private directory of this process's temporary is not tagged twice."""
    host = host_label()
    assert owner_tag() == f'tmp{os.getpid()}-{host}'
    assert host and all(c.isalnum() or c == '-' for c in host)
    with atomic_path(str(tmp_path / 'lbg_cnn-x.fits')) as tmp:
        assert os.path.basename(tmp) == f'.lbg_cnn-x.tmp{os.getpid()}-{host}.fits'
        open(tmp, 'w').write('whole')
        inner = private_directory(tmp)
        assert os.path.basename(inner).startswith(f'..lbg_cnn-x.tmp{os.getpid()}-{host}.fits.')
        os.rmdir(inner)
    outer = private_directory(str(tmp_path / 'lbg_cnn-x.fits'))
    assert os.path.basename(outer).startswith(f'.lbg_cnn-x.fits.tmp{os.getpid()}-{host}.')
    os.rmdir(outer)
    assert os.listdir(tmp_path) == ['lbg_cnn-x.fits']


def test_dead_process_leftovers_are_removed_live_and_other_hosts_kept(tmp_path, live_pid,
                                                                       caplog):
    """Of the temporaries of an output: those of a process that has ended on this host go
    (files, a private directory holding a catalogue copy, desispec's own temporary inside
    the name); a live process's, another host's and one named without its host by an older
    lbgnet stay, with one warning; another output's and unrelated names are not looked at."""
    host, dead = host_label(), dead_pid()
    output = str(tmp_path / 'lbg_cnn-main-dark-100.fits')
    gone = [plant(tmp_path, f'.lbg_cnn-main-dark-100.tmp{dead}-{host}.fits'),
            plant(tmp_path, f'..lbg_cnn-main-dark-100.tmp{dead}-{host}.fits.k3j_x9ab', True),
            plant(tmp_path, f'.lbg_cnn-main-dark-100.fits.tmp{dead}-{host}.a1b2c3d4', True),
            plant(tmp_path, f'.lbg_cnn-main-dark-100.tmp{dead}-{host}_tmp{dead}.fits')]
    kept = [plant(tmp_path, f'.lbg_cnn-main-dark-100.tmp{live_pid}-{host}.fits'),
            plant(tmp_path, f'.lbg_cnn-main-dark-100.tmp{dead}-{host}2.fits'),     # other host
            plant(tmp_path, f'.lbg_cnn-main-dark-100.tmp{dead}-not-this-host.fits'),
            plant(tmp_path, f'.lbg_cnn-main-dark-100.tmp{dead}.fits')]          # no host
    ignored = [plant(tmp_path, f'.lbg_cnn-main-dark-999.tmp{dead}-{host}.fits'),  # other output
               plant(tmp_path, f'.lbg_cnn-main-dark-100.tmpx-{host}.fits'),       # not a pid
               plant(tmp_path, 'lbg_cnn-main-dark-100.fits')]                       # the output
    found = dict(find_leftovers([output, str(tmp_path / 'missing' / 'x.fits')]))
    assert sorted(found) == sorted(gone + kept)
    assert [found[path] for path in gone] == [None] * 4
    assert found[kept[0]] == f'process {live_pid}, still running on this host'
    assert found[kept[1]] == f'process {dead} on {host}2'
    assert found[kept[3]] == f'process {dead}, named without its host by an older lbgnet'
    with caplog.at_level(logging.INFO):
        removed = remove_leftovers([output])
    assert removed == sorted(gone)
    assert sorted(os.path.join(tmp_path, name) for name in os.listdir(tmp_path)) == sorted(
        kept + ignored)
    text = caplog.text
    assert (f'removed 4 temporary file(s) of interrupted writes left beside the outputs by '
            f'process(es) {dead} of this host, no longer running: {sorted(gone)[0]}, '
            f'{sorted(gone)[1]}, {sorted(gone)[2]} and 1 more') in text
    assert (f'4 temporary file(s) beside the outputs that may still be in use, e.g. '
            f'{sorted(kept)[0]} ({found[sorted(kept)[0]]}): kept; remove them once no other '
            'run writes there') in text


def test_a_leftover_that_cannot_be_removed_is_a_warning(tmp_path, monkeypatch, caplog):
    """A leftover the run may not remove (another user's, a read-only directory) is said in
    one warning; the others still go, and nothing is raised."""
    host, dead = host_label(), dead_pid()
    stuck = plant(tmp_path, f'.x.tmp{dead}-{host}.fits')
    folder = plant(tmp_path, f'..x.tmp{dead}-{host}.fits.abcdefgh', True)
    real = os.remove

    def refuse(path, *args, **kwargs):
        if path == stuck:
            raise PermissionError(13, 'Permission denied', path)
        real(path, *args, **kwargs)
    monkeypatch.setattr(atomic.os, 'remove', refuse)
    with caplog.at_level(logging.INFO):
        assert remove_leftovers([str(tmp_path / 'x.fits')]) == [folder]
    assert os.listdir(tmp_path) == [os.path.basename(stuck)]
    assert (f'{stuck}: cannot remove this temporary of an interrupted write (Permission '
            'denied)') in caplog.text


def test_add_checksums_killed_outright_is_cleared_by_the_next_write(tmp_path):
    """kill -9 while add_checksums updates the file inside its private directory left the
    directory (with the whole file in it) in the output directory for ever; it now names
    its process and host, so the next write of that output removes it."""
    path = tmp_path / 'lbg_cnn-main-dark-100.fits'
    ready = tmp_path / 'ready'
    code = (
        'import os, sys, time\n'
        'import numpy as np\n'
        'from astropy.table import Table\n'
        'import lbgnet.io.catalog as iocat\n'
        'Table({"A": np.arange(5)}).write(sys.argv[1])\n'
        'def stuck(path, dependencies):\n'
        '    open(sys.argv[2], "w").write(path)\n'
        '    time.sleep(120)\n'
        'iocat._add_checksums_in_place = stuck\n'
        'iocat.add_checksums(sys.argv[1])\n')
    proc = subprocess.Popen([sys.executable, '-c', code, str(path), str(ready)], env=ENV)
    try:
        for _ in range(600):
            if ready.exists() and ready.read_text():
                break
            assert proc.poll() is None, 'the writer ended early'
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    inside = ready.read_text()
    private = os.path.basename(os.path.dirname(inside))
    assert private.startswith(f'.lbg_cnn-main-dark-100.fits.tmp{proc.pid}-{host_label()}.')
    assert os.path.getsize(inside) > 0                  # the file itself, left inside
    assert find_leftovers([str(path)]) == [(str(tmp_path / private), None)]
    assert remove_leftovers([str(path)]) == [str(tmp_path / private)]
    assert sorted(os.listdir(tmp_path)) == ['ready']


# --- every command that writes outputs clears the leftovers of those outputs ------------

def plant_leftovers(directory, name, ext, live_pid):
    """Leftovers of the output NAME+EXT in `directory` (made if needed): a file and a private
    directory of a process that has ended on this host (to go), one of a live process and
    one of another host (to stay).  Returns (gone, kept) lists of paths."""
    os.makedirs(directory, exist_ok=True)
    host, dead = host_label(), dead_pid()
    gone = [plant(directory, f'.{name}.tmp{dead}-{host}{ext}'),
            plant(directory, f'..{name}.tmp{dead}-{host}{ext}.abcd_123', True)]
    kept = [plant(directory, f'.{name}.tmp{live_pid}-{host}{ext}'),
            plant(directory, f'.{name}.tmp{dead}-elsewhere{ext}')]
    return gone, kept


def check_cleared(gone, kept, text):
    """`gone` removed and said in one line, `kept` kept and said in one warning."""
    assert not any(os.path.lexists(path) for path in gone)
    assert all(os.path.exists(path) for path in kept)
    assert text.count('temporary file(s) of interrupted writes left beside the outputs') == 1
    assert f'no longer running: {", ".join(sorted(gone))}' in text
    assert text.count('2 temporary file(s) beside the outputs that may still be in use') == 1


def test_mock_clears_the_leftovers_of_its_files(tmp_path, live_pid, caplog):
    from lbgnet.scripts.lbg_mock import main, parse, planned_files
    outdir = str(tmp_path / 'out')
    args = ['--outdir', outdir, '--nspec', '6', '--nfiles', '1', '--seed', '4',
            '--no-resolution']
    coadd = planned_files(parse(args))[0]['coadd']
    gone, kept = plant_leftovers(outdir, os.path.basename(coadd)[:-len('.fits')], '.fits',
                                 live_pid)
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    check_cleared(gone, kept, caplog.text)
    assert os.path.exists(coadd)


def test_preprocess_clears_the_leftovers_of_its_output(tmp_path, live_pid, caplog):
    from lbgnet.scripts.lbg_preprocess import main
    gone, kept = plant_leftovers(str(tmp_path), 'grid', '.npz', live_pid)
    with caplog.at_level(logging.INFO):
        assert main(['--example', '--output', str(tmp_path / 'grid.npz')]) == 0
    check_cleared(gone, kept, caplog.text)


def test_zcatalog_clears_the_leftovers_of_its_output(tmp_path, live_pid, caplog):
    import numpy as np
    from test_zcatalog import write_cat
    from lbgnet.scripts.lbg_zcatalog import main
    write_cat(str(tmp_path / 'in' / 'lbg_cnn-main-dark-100.fits'), [1, 2], [1, 0],
              [3.0, np.nan], [0, 0], [5, 6])
    gone, kept = plant_leftovers(str(tmp_path), 'lbg-zcat', '.fits', live_pid)
    with caplog.at_level(logging.INFO):
        assert main(['--input-dir', str(tmp_path / 'in'), '--output',
                     str(tmp_path / 'lbg-zcat.fits')]) == 0
    check_cleared(gone, kept, caplog.text)


def test_make_template_clears_the_leftovers_of_its_output(tmp_path, live_pid, caplog):
    from lbgnet.scripts.lbg_make_template import main
    gone, kept = plant_leftovers(str(tmp_path), 'rrarchetype-GALAXY-LBG-v0.2', '.fits',
                                 live_pid)
    with caplog.at_level(logging.INFO):
        assert main(['--outdir', str(tmp_path), '--nspec', '3', '--dwave', '2',
                     '--archetypes']) == 0
    check_cleared(gone, kept, caplog.text)


def test_evaluate_clears_the_staging_directories_of_killed_runs(tmp_path, live_pid, caplog):
    """desi_lbg_evaluate stages its files in ``.evaluate.tmp<pid>-<host>.XXXXXXXX`` (it was
    ``.evaluate-tmp<pid>-XXXXXXXX``, which nothing recognised after a kill -9)."""
    from test_evaluate_review import _evaluate_with_truth_rows
    out = tmp_path / 'out'
    out.mkdir()
    host, dead = host_label(), dead_pid()
    gone = [plant(out, f'.evaluate.tmp{dead}-{host}.k3j_x9ab', True)]
    kept = [plant(out, f'.evaluate.tmp{live_pid}-{host}.k3j_x9ab', True),
            plant(out, f'.evaluate.tmp{dead}-elsewhere.k3j_x9ab', True)]
    rc, text = _evaluate_with_truth_rows(tmp_path, caplog, list(range(10)))
    assert rc == 0, text
    check_cleared(gone, kept, text)
    assert 'metrics.json' in os.listdir(out)


def test_validation_sets_clear_the_leftovers_of_killed_runs(tmp_path, live_pid, monkeypatch,
                                                            caplog):
    """desi_lbg_tune simulates its validation set in ``.NAME.tmp<pid>-<host>`` (it was
    ``.NAME.tmp<pid>``); desi_lbg_train writes it through temporaries of its files: the
    leftovers of runs killed outright are removed."""
    from lbgnet.scripts import lbg_train
    from lbgnet.scripts.lbg_tune import write_validation_set
    val_dir = str(tmp_path / 'validation-n5-seed1-simabc')
    gone, kept = plant_leftovers(str(tmp_path), os.path.basename(val_dir), '', live_pid)

    def write(setup, outdir, *args):
        assert os.path.basename(outdir) == f'.{os.path.basename(val_dir)}.{owner_tag()}'
        os.makedirs(outdir)
        open(os.path.join(outdir, 'coadd-lbgmock-dark-0.fits'), 'w').close()
    monkeypatch.setattr(lbg_train, 'write_validation', write)
    with caplog.at_level(logging.INFO):
        write_validation_set(None, val_dir, 5, 1, 'lbgnet-mock.yaml')
    check_cleared(gone, kept, caplog.text)
    assert os.listdir(val_dir) == ['coadd-lbgmock-dark-0.fits']
    monkeypatch.undo()

    from lbgnet.sim.mock import load_mock_setup
    setup, outdir = load_mock_setup(), str(tmp_path / 'val')
    coadds, _ = lbg_train.write_validation(setup, outdir, 5, 1, 'lbgnet-mock.yaml')
    gone, kept = plant_leftovers(outdir, os.path.basename(coadds[0])[:-len('.fits')], '.fits',
                                 live_pid)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        lbg_train.write_validation(setup, outdir, 5, 1, 'lbgnet-mock.yaml')
    check_cleared(gone, kept, caplog.text)
