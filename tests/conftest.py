import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(2)

import mixprior_plugin  # noqa: E402,F401  (registers everything)

# The bad-input suite: every test marked bad_input is one mistake a user makes, and must end in a
# message (an error line, or a warning) without a traceback. A whole-suite run with fewer cases fails.
BAD_INPUT_MINIMUM = 60
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long test, run only with --runslow')
    config.addinivalue_line('markers', 'bad_input: one case of the bad-input suite (counted in the summary); it '
                            'reports what it said through the bad_case fixture')


class BadInputCase:
    """What one bad-input case said. Each case hands its message over; saying nothing fails the case."""

    def __init__(self):
        self.said = []

    def error_line(self, output, prog):
        """The one ``<prog>: error: ...`` line of a command's output (which must hold no traceback)."""
        assert 'Traceback' not in output, f'a traceback instead of one line:\n{output[-3000:]}'
        lines = [line for line in output.splitlines() if line.startswith(f'{prog}: error: ')]
        assert len(lines) == 1, f'expected one "{prog}: error:" line:\n{output[-3000:]}'
        self.said.append(lines[0])
        return lines[0]

    def message(self, text):
        """An error or warning message raised or logged in-process: its first line, non-empty."""
        text = str(text)
        assert text.strip() and 'Traceback' not in text, f'not a message: {text[-3000:]!r}'
        self.said.append(text.splitlines()[0])
        return text


@pytest.fixture
def bad_case():
    """The :class:`BadInputCase` of a bad-input case; it must have said something when the case ends."""
    case = BadInputCase()
    yield case
    assert case.said, 'a bad-input case that says nothing: silent'


def pytest_runtest_setup(item):
    if 'bad_input' in item.keywords and 'bad_case' not in item.fixturenames:
        pytest.fail('a bad_input case must report its message through the bad_case fixture')


def _whole_suite(config):
    """Whether this run collects the whole suite (no file, -k, -m or deselection narrows it)."""
    args = {os.path.normpath(os.path.join(str(config.invocation_params.dir), a.split('::')[0])) for a in config.args}
    return args == {TESTS_DIR} and not config.option.keyword and not config.option.markexpr and \
        not config.option.deselect and not config.getoption('lf', False)


def pytest_collection_finish(session):
    session.config.bad_input_collected = sum('bad_input' in item.keywords for item in session.items)


def pytest_sessionfinish(session, exitstatus):
    collected = getattr(session.config, 'bad_input_collected', 0)
    if _whole_suite(session.config) and collected < BAD_INPUT_MINIMUM and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    """Say how many bad-input cases ran, and how they ended (a whole-suite run needs BAD_INPUT_MINIMUM)."""
    counts = {}
    for outcome in ('passed', 'failed', 'skipped'):
        for report in terminalreporter.stats.get(outcome, []):
            if report.when == 'call' and 'bad_input' in report.keywords:
                counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        total = sum(counts.values())
        detail = ', '.join(f'{n} {k}' for k, n in counts.items())
        verdict = '; each said one line, without a traceback' if set(counts) == {'passed'} else ''
        terminalreporter.write_line(f'bad-input suite: tried {total} cases ({detail}){verdict}')
    collected = getattr(terminalreporter.config, 'bad_input_collected', 0)
    if _whole_suite(terminalreporter.config) and collected < BAD_INPUT_MINIMUM:
        terminalreporter.write_line(f'bad-input suite: only {collected} cases, at least {BAD_INPUT_MINIMUM} are '
                                    'required: FAILED', red=True)


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False, help='also run tests marked slow')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow'):
        return
    skip_slow = pytest.mark.skip(reason='slow: run with --runslow')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope='session')
def test_data():
    """``test_data('datasets', 'Set5')``: a path under the public test data ($MIXPRIOR_TEST_DATA), or a skip saying
    what is missing."""
    from helpers import require_test_data
    return require_test_data


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """Paired folders for scales 2, 3, 4: {scale: (hr_dir, lr_dir)}."""
    from helpers import make_paired_folder
    root = tmp_path_factory.mktemp('tiny_data')
    return {s: make_paired_folder(str(root / f'x{s}'), s, num=4, size=96, seed=s) for s in (2, 3, 4)}


@pytest.fixture
def teacher_file(tmp_path):
    """Factory: save a tiny random teacher for (family, scale) and return its path."""
    from helpers import save_random_teacher, tiny_arch

    def make(family, scale):
        return save_random_teacher(str(tmp_path / f'teacher_{family}_x{scale}.pth'), tiny_arch(family, 't', scale))

    return make
