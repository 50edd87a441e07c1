"""Smoke modes of the method benchmark and the training-cost tool (tiny nets, CPU)."""
import glob
import json
import os
import shutil
import sys

from helpers import REPO, make_paired_folder

sys.path.insert(0, os.path.join(REPO, 'tools'))
import benchmark  # noqa: E402
import speed  # noqa: E402


def test_benchmark_cpu_profile_smoke_pairs_seeds_sweeps_and_resumes(tmp_path):
    train_hr, _ = make_paired_folder(str(tmp_path / 'train'), 4, num=5, size=128, seed=1)
    test_hr, _ = make_paired_folder(str(tmp_path / 'testsrc'), 4, num=2, size=64, seed=2)
    shutil.copytree(test_hr, tmp_path / 'test' / 'Tiny' / 'HR')
    out = tmp_path / 'out'
    argv = ['--smoke', '--profile', 'cpu', '--train-dirs', train_hr, '--test-root', str(tmp_path / 'test'), '--sets',
            'Tiny', '--val-count', '1', '--data-workers', '1', '--settings', 'compounded', '--methods', 'Scratch',
            'LogitsKD', 'MiPKD', 'FitNet', '--sweep-factors', '0.1', '1', '--out', str(out)]
    result = benchmark.main(argv)
    runs = {(r['setting'], r['method'], r['seed']): r for r in result['runs']}
    assert set(runs) == {('compounded', m, s) for m in ('Scratch', 'LogitsKD', 'MiPKD', 'FitNet') for s in (0, 1)}
    # pairing: one seed, one initial student and one first batch for every method; seeds differ
    for seed in (0, 1):
        same_seed = [r for r in runs.values() if r['seed'] == seed]
        assert len({r['pairing']['init_sha'] for r in same_seed}) == 1
        assert len({r['pairing']['first_batch_sha'] for r in same_seed}) == 1
    assert runs[('compounded', 'MiPKD', 0)]['pairing'] != runs[('compounded', 'MiPKD', 1)]['pairing']
    # every run records the exact options it used; evaluated on the test set and the validation split
    for r in runs.values():
        assert r['options']['manual_seed'] == r['seed'] and r['options_sha']
        assert set(r['sets']) == {'Tiny', 'Val'} and 0 < r['sets']['Tiny']['psnr'] < 100
    # the sweep ran on the validation split and its best factor is the one used for every seed
    sweep = {(r['method'], r['sweep_factor']): r for r in result['sweep']}
    assert set(sweep) == {(m, f) for m in ('MiPKD', 'FitNet') for f in (0.1, 1.0)}
    for method in ('MiPKD', 'FitNet'):
        best = max((0.1, 1.0), key=lambda f: sweep[(method, f)]['sets']['Val']['psnr'])
        assert runs[('compounded', method, 1)]['feature_weight'] == sweep[(method, best)]['feature_weight']
    assert runs[('compounded', 'Scratch', 0)]['feature_weight'] is None
    md = open(out / 'results.md').read()
    assert 'Pairing check' in md and 'holds' in md and 'Verdicts:' in md and 'MiPKD > Logits-KD' in md
    assert 'Regime:' in md and '## Feature-weight sweep' in md
    assert open(out / 'paired_deltas.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    # resumable: a second call trains nothing again
    before = {p: os.path.getmtime(p) for p in glob.glob(str(out / 'runs' / '*' / '*.pth'))}
    benchmark.main(argv)
    assert before == {p: os.path.getmtime(p) for p in glob.glob(str(out / 'runs' / '*' / '*.pth'))}
    # a changed option re-runs (here: more iterations)
    benchmark.main(argv[:-2] + ['--methods', 'Scratch', '--seeds', '0', '--iters', '4', '--out', str(out)])
    rec = json.load(open(out / 'runs' / 'compounded' / 'Scratch_seed0.json'))
    assert rec['iters'] == 4


def test_speed_smoke_every_pair_and_method(tmp_path):
    result = speed.main(['--smoke', '--out', str(tmp_path)])
    rows = {(r['pair'], r['method']): r for r in result['training']}
    assert set(rows) == {(p, m) for p in speed.PAIRS for m in speed.METHODS}
    for pair in speed.PAIRS:
        assert rows[(pair, 'LogitsKD')]['ratio_to_logits_kd'] == 1.0
        assert rows[(pair, 'MiPKD')]['step_ms'] > 0
    assert {r['pair'] for r in result['inference']} == set(speed.PAIRS)
    assert all(r['exported_ms'] > 0 and r['direct_ms'] > 0 for r in result['inference'])
    assert '| pair | method | step ms | / Logits-KD | peak GiB |' in open(tmp_path / 'speed.md').read()
    assert json.load(open(tmp_path / 'speed.json'))['meta']['git_commit']
