"""The bad-input suite checks itself: a silent case, a case that does not report, a traceback and a suite
with fewer than BAD_INPUT_MINIMUM cases each fail the run (conftest.py, run on a small suite of its own)."""
import os
import shutil
import subprocess
import sys

from conftest import BAD_INPUT_MINIMUM

TESTS = os.path.dirname(os.path.abspath(__file__))

CASES = '''
import pytest


@pytest.mark.bad_input
def test_says_one_line(bad_case):
    bad_case.error_line('mixprior-train: error: OptionError: Option x must be y', 'mixprior-train')


@pytest.mark.bad_input
def test_silent(bad_case):
    pass


@pytest.mark.bad_input
def test_does_not_report():
    pass


@pytest.mark.bad_input
def test_traceback(bad_case):
    bad_case.error_line('Traceback (most recent call last):\\nmixprior-train: error: KeyError', 'mixprior-train')
'''


def _run_suite(folder, cases):
    shutil.copy(os.path.join(TESTS, 'conftest.py'), folder / 'conftest.py')
    (folder / 'test_cases.py').write_text(cases)
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-rA'], cwd=str(folder),
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS='1', COLUMNS='300'))
    return proc.returncode, proc.stdout + proc.stderr


def test_silent_cases_tracebacks_and_a_short_suite_fail(tmp_path):
    (tmp_path / 'all').mkdir()
    status, out = _run_suite(tmp_path / 'all', CASES)
    assert status == 1, out[-3000:]
    assert 'PASSED test_cases.py::test_says_one_line' in out, out[-3000:]
    assert 'ERROR test_cases.py::test_silent - AssertionError: a bad-input case that says nothing: silent' in out
    assert 'ERROR test_cases.py::test_does_not_report - Failed: a bad_input case must report' in out
    assert 'FAILED test_cases.py::test_traceback - AssertionError: a traceback instead of one line' in out
    # every case passes, but there are too few of them
    (tmp_path / 'short').mkdir()
    status, out = _run_suite(tmp_path / 'short', CASES.split('@pytest.mark.bad_input\ndef test_silent')[0])
    assert status == 1 and '1 passed' in out, out[-3000:]
    assert f'bad-input suite: only 1 cases, at least {BAD_INPUT_MINIMUM} are required: FAILED' in out, out[-3000:]
