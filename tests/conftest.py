import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(2)

import mixprior_plugin  # noqa: E402,F401  (registers everything)


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long test, run only with --runslow')
    config.addinivalue_line('markers', 'bad_input: one case of the bad-input suite (counted in the summary)')


def pytest_terminal_summary(terminalreporter):
    """Say how many bad-input cases ran, and how they ended."""
    counts = {}
    for outcome in ('passed', 'failed', 'skipped'):
        for report in terminalreporter.stats.get(outcome, []):
            if report.when == 'call' and 'bad_input' in report.keywords:
                counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        total = sum(counts.values())
        detail = ', '.join(f'{n} {k}' for k, n in counts.items())
        terminalreporter.write_line(f'bad-input suite: tried {total} cases ({detail})')


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
def tiny_data(tmp_path_factory):
    """Paired folders for scales 2, 3, 4: {scale: (hr_dir, lr_dir)}."""
    from helpers import make_paired_folder
    root = tmp_path_factory.mktemp('tiny_data')
    return {s: make_paired_folder(str(root / f'x{s}'), s, num=4, size=96, seed=s) for s in (2, 3, 4)}
