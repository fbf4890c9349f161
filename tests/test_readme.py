"""README.rst's two fresh-machine commands, and .ci/run running the same test command."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _commands():
    with open(os.path.join(ROOT, 'README.rst')) as fx:
        return [line.strip() for line in fx if line.startswith('    python3 -m venv venv')]


def test_readme_starts_with_the_two_commands():
    install, tests = _commands()[:2]
    setup = 'python3 -m venv venv && venv/bin/pip install -r requirements.txt -e . && '
    assert install == setup + 'venv/bin/desi_lbg_afterburner --example'
    assert tests.startswith(setup + 'venv/bin/python -m pytest ')


def test_the_test_command_has_its_plugins_pinned():
    """A test command that runs the suite in several processes (``-n``) needs pytest-xdist,
    which a fresh venv has only from requirements.txt (pytest would stop at the unknown
    option); pinned, as every requirement."""
    import re
    words = _commands()[1].split(' && ')[-1].split()
    with open(os.path.join(ROOT, 'requirements.txt')) as fx:
        pins = dict(re.findall(r'^([A-Za-z0-9_.-]+)==(\S+)', fx.read(), flags=re.M))
    assert 'pytest' in pins
    if '-n' in words or any(w.startswith('--numprocesses') for w in words):
        assert 'pytest-xdist' in pins


def test_ci_runs_the_readme_test_command():
    test_command = _commands()[1].split(' && ')[-1]
    with open(os.path.join(ROOT, '.ci', 'run')) as fx:
        lines = [line.strip() for line in fx]
    assert test_command in lines
    assert 'venv/bin/pip install -r requirements.txt -e .' in lines


def test_a_hung_test_fails_instead_of_holding_ci(tmp_path):
    """pytest.ini sets a per-test timeout (pytest-timeout, in requirements.txt) well above
    the slowest test, and it works: a test sleeping past a 2 s limit fails, with a
    'Timeout' report, in seconds."""
    import configparser
    import subprocess
    import sys
    import time
    ini = configparser.ConfigParser()
    ini.read(os.path.join(ROOT, 'pytest.ini'))
    assert 300 <= float(ini['pytest']['timeout']) <= 1800
    (tmp_path / 'test_sleep.py').write_text('import time\n\n\ndef test_sleep():\n'
                                            '    time.sleep(60)\n')
    start = time.monotonic()
    run = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                          '-o', 'timeout=2', 'test_sleep.py'], cwd=tmp_path,
                         capture_output=True, text=True, timeout=50)
    assert run.returncode == 1 and 'Timeout' in run.stdout + run.stderr
    assert time.monotonic() - start < 40


def test_every_module_is_in_the_api_reference():
    """doc/api.rst documents every library module (a new one, such as lbgnet.io.targetid,
    was easy to forget: sphinx -W does not notice a module left out)."""
    import re
    with open(os.path.join(ROOT, 'doc', 'api.rst')) as fx:
        listed = set(re.findall(r'^\.\. automodule:: (\S+)$', fx.read(), flags=re.M))
    modules = set()
    for top, _, files in os.walk(os.path.join(ROOT, 'py', 'lbgnet')):
        for name in files:
            if name.endswith('.py') and name not in ('__init__.py', '_version.py'):
                rel = os.path.relpath(os.path.join(top, name[:-3]), os.path.join(ROOT, 'py'))
                modules.add(rel.replace(os.sep, '.'))
    assert len(modules) > 50 and modules - listed == set()


def test_the_documentation_builds_without_warnings(tmp_path):
    """sphinx-build -W on doc/ (a malformed table, a broken reference or a docstring that
    does not parse is an error), as the documentation is built for the users."""
    import shutil
    import subprocess
    import sys
    sphinx = os.path.join(os.path.dirname(sys.executable), 'sphinx-build')
    if not os.path.exists(sphinx):
        sphinx = shutil.which('sphinx-build')
    assert sphinx, 'sphinx-build is in requirements.txt'
    run = subprocess.run([sphinx, '-E', '-W', '-q', '-b', 'html', os.path.join(ROOT, 'doc'),
                          str(tmp_path / 'html')], capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    assert run.returncode == 0, run.stdout + run.stderr
