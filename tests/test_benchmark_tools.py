"""Smoke modes of the method benchmark and the training-cost tool (tiny nets, CPU)."""
import json
import os
import shutil
import sys

from helpers import REPO, make_paired_folder

sys.path.insert(0, os.path.join(REPO, 'tools'))
import benchmark  # noqa: E402
import speed  # noqa: E402


def test_benchmark_smoke_every_setting_and_method(tmp_path):
    train_hr, _ = make_paired_folder(str(tmp_path / 'train'), 4, num=5, size=128, seed=1)
    test_hr, _ = make_paired_folder(str(tmp_path / 'testsrc'), 4, num=2, size=64, seed=2)
    shutil.copytree(test_hr, tmp_path / 'test' / 'Tiny' / 'HR')
    out = tmp_path / 'out'
    result = benchmark.main(['--smoke', '--train-dirs', train_hr, '--test-root', str(tmp_path / 'test'), '--sets',
                             'Tiny', '--lq-patch', '16', '--batch', '4', '--out', str(out)])
    runs = {(r['setting'], r['method']) for r in result['runs']}
    assert runs == {(s, m) for s in benchmark.SETTINGS for m in benchmark.METHODS}
    saved = json.load(open(out / 'results.json'))
    assert saved['meta'][0]['git_commit'] and saved['meta'][0]['device'] and saved['meta'][0]['command']
    assert saved['teacher']['params'] > max(r['params'] for r in saved['runs'])
    for r in saved['runs']:
        assert r['option_file'].startswith('options/train/Benchmark/')
        assert 0 < r['sets']['Tiny']['psnr'] < 100
    md = open(out / 'results.md').read()
    assert 'Noise floor' in md and '## compounded compression' in md and 'MiPKD BPM only' in md
    assert open(out / 'delta_psnr.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert len(os.listdir(out / 'students')) == len(runs)
    # the table can be assembled from several runs
    part = tmp_path / 'part'
    part.mkdir()
    json.dump(dict(saved, runs=[r for r in saved['runs'] if r['setting'] == 'depth']), open(part / 'results.json', 'w'))
    merged = tmp_path / 'merged'
    benchmark.main(['--merge', str(part), str(out), '--out', str(merged)])
    assert len(json.load(open(merged / 'results.json'))['runs']) == len(runs)


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
