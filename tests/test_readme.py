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
    assert tests.startswith(setup) and ' -m pytest ' in tests


def test_ci_runs_the_readme_test_command():
    test_command = _commands()[1].split(' && ')[-1]
    with open(os.path.join(ROOT, '.ci', 'run')) as fx:
        lines = [line.strip() for line in fx]
    assert test_command in lines
    assert 'venv/bin/pip install -r requirements.txt -e .' in lines
