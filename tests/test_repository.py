"""The repository speaks of the project alone: no words about how, by whom or under which arrangement it was
built (sessions, lending of machines, device time, issue numbers), and a README that stays a front door and
quotes the committed study as it printed it."""
import json
import os
import re
import subprocess

import pytest

from helpers import REPO
from mixprior_plugin.benchmarking import LABELS, METHODS

# Phrases that would describe the making of the project rather than the project (each with the reason it is
# not a false positive: an ONNX "session" or pytest's session hooks are fine, "the sessions so far" is not).
FORBIDDEN = re.compile(
    r'\b(the sessions|sessions so far|a session of|per session|lent to|was lent|is lent|when a GPU is lent|lending|'
    r'device time|issue goal|issue #?\d+|this task|workplace|CEO|assistant|subagent)\b', re.IGNORECASE)
TEXT_SUFFIXES = ('.py', '.md', '.yml', '.yaml', '.txt', '.sh', '.toml', '.ini', '.cfg')


def tracked_text_files():
    try:
        out = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f'not a git checkout ({err}): nothing to list')
    return [p for p in out.splitlines() if p.endswith(TEXT_SUFFIXES) or os.path.basename(p) in ('run', )]


def test_no_words_about_how_the_project_was_made():
    hits = []
    for rel in tracked_text_files():
        if rel == 'tests/test_repository.py':
            continue
        path = os.path.join(REPO, rel)
        if not os.path.isfile(path):
            continue
        for number, line in enumerate(open(path, encoding='utf-8', errors='replace'), 1):
            if FORBIDDEN.search(line):
                hits.append(f'{rel}:{number}: {line.strip()[:100]}')
    assert not hits, 'words about the making of the project:\n' + '\n'.join(hits)


def test_the_pattern_catches_what_it_is_for():
    for text in ('no GPU has been lent to the sessions so far', '15 minutes of device time', 'issue goal: 1.25x',
                 'see issue 21'):
        assert FORBIDDEN.search(text), text
    for text in ('an ONNX session', 'def pytest_sessionfinish(session, exitstatus):', 'a bug worth reporting'):
        assert not FORBIDDEN.search(text), text


def test_readme_is_a_front_door():
    readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
    lines = readme.splitlines()
    assert len(lines) <= 180, f'README has {len(lines)} lines; reference material belongs in docs/'
    for page in ('usage', 'options', 'retrofit', 'method', 'baselines', 'export', 'speed', 'benchmarks'):
        assert f'(docs/{page}.md' in readme, page
        assert os.path.isfile(os.path.join(REPO, 'docs', f'{page}.md')), page
    # the two set-up commands, the second one exactly what CI runs
    assert 'bash tools/setup_env.sh && .venv/bin/python -m mixprior_plugin.demo' in readme
    assert 'bash tools/setup_env.sh && .venv/bin/python -m pytest -q' in readme
    ci = open(os.path.join(REPO, '.ci', 'run'), encoding='utf-8').read()
    assert '.venv/bin/python -m pytest -q' in ci


def test_readme_which_method_table_quotes_the_committed_converged_report():
    """Every row of the README's "Which method should I use?" table carries the gains, weight and step-time
    ratio of results.json (the report of benchmarks/results/bench_converged), to the digits shown."""
    readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
    section = readme[readme.index('## Which method should I use?'):]
    section = section[:section.index('\n## ', 1)]
    results = json.load(open(os.path.join(REPO, 'benchmarks', 'results', 'bench_converged', 'results.json')))
    which = {(r['setting'], r['method']): r for r in results['summary']['which_method']}
    sets = results['meta']['sets']
    method_of = {LABELS.get(m, m): m for m in METHODS}
    rows = [line.split('|')[1:-1] for line in section.splitlines() if line.startswith('| ') and '---' not in line]
    quoted = 0
    for cells in rows[1:]:
        setting, label, gains, _, cost = (c.strip() for c in cells)
        name, _, weight = label.partition(' (')
        row = which[(setting, method_of[name])]
        assert gains == ' / '.join(f'{row["gain"][s]:+.3f}' for s in sets), (setting, label)
        assert cost == f'{row["cost"]:.2f}', (setting, label)
        if weight:
            assert float(weight.rstrip(')').split()[-1]) == row['weight'], (setting, label)
        quoted += 1
    assert quoted >= 12  # four methods in each of the three settings
