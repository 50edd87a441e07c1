"""Smoke modes of the method benchmark and the training-cost tool (tiny nets, CPU)."""
import glob
import json
import os
import shutil
import sys

import pytest

from helpers import REPO, make_paired_folder

sys.path.insert(0, os.path.join(REPO, 'tools'))
import benchmark  # noqa: E402
import speed  # noqa: E402

from mixprior_plugin import benchmarking  # noqa: E402


def smoke_data(tmp_path):
    """A training folder and a one-set test root (tmp_path/test/Tiny) for --smoke; returns (train HR, out)."""
    train_hr, _ = make_paired_folder(str(tmp_path / 'train'), 4, num=5, size=128, seed=1)
    test_hr, _ = make_paired_folder(str(tmp_path / 'testsrc'), 4, num=2, size=64, seed=2)
    shutil.copytree(test_hr, tmp_path / 'test' / 'Tiny' / 'HR')
    return train_hr, tmp_path / 'out'


def test_benchmark_cpu_profile_smoke_pairs_seeds_sweeps_and_resumes(tmp_path):
    train_hr, out = smoke_data(tmp_path)
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
    # provenance: each invocation's wall time, each run's training and evaluation time
    meta = json.load(open(out / 'meta.json'))
    assert len(meta['commands']) == 1 and meta['commands'][0]['wall_seconds'] > 0
    assert all(r['train_seconds'] >= 0 and r['eval_seconds'] >= 0 for r in result['runs'] + result['sweep'])
    assert 'wall time' in md and 'evaluation time summed over the 12 runs that recorded it' in md
    assert open(out / 'paired_deltas.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    # resumable: a second call trains nothing again
    before = {p: os.path.getmtime(p) for p in glob.glob(str(out / 'runs' / '*' / '*.pth'))}
    benchmark.main(argv)
    assert before == {p: os.path.getmtime(p) for p in glob.glob(str(out / 'runs' / '*' / '*.pth'))}
    # a changed option re-runs (here: more iterations)
    benchmark.main(argv[:-2] + ['--methods', 'Scratch', '--seeds', '0', '--iters', '4', '--out', str(out)])
    rec = json.load(open(out / 'runs' / 'compounded' / 'Scratch_seed0.json'))
    assert rec['iters'] == 4


def test_benchmark_sweep_scope_each_chooses_weights_per_setting(tmp_path):
    train_hr, out = smoke_data(tmp_path)
    result = benchmark.main(['--smoke', '--profile', 'cpu', '--train-dirs', train_hr, '--test-root',
                             str(tmp_path / 'test'), '--sets', 'Tiny', '--val-count', '1', '--data-workers', '1',
                             '--methods', 'Scratch', 'FitNet', '--seeds', '0', '--sweep-factors', '0.1', '1',
                             '--sweep-scope', 'each', '--out', str(out)])
    sweep = {(r['setting'], r['sweep_factor']): r for r in result['sweep']}
    assert set(sweep) == {(st, f) for st in ('compounded', 'depth') for f in (0.1, 1.0)}
    for setting in ('compounded', 'depth'):  # each setting's run uses the weight its own sweep chose
        best = max((0.1, 1.0), key=lambda f: sweep[(setting, f)]['sets']['Val']['psnr'])
        main = [r for r in result['runs'] if r['setting'] == setting and r['method'] == 'FitNet']
        assert len(main) == 1 and main[0]['feature_weight'] == sweep[(setting, best)]['feature_weight']
    md = open(out / 'results.md').read()
    assert 'first seed, every setting' in md and '| depth | FitNet |' in md
    assert json.load(open(out / 'meta.json'))['sweep_scope'] == 'each'


@pytest.mark.parametrize('profile, scope', [('converged', 'each'), ('cpu', 'first'), ('gpu', 'first')])
def test_benchmark_profile_decides_the_sweep_scope_and_sweeps_only_where_they_choose(tmp_path, profile, scope):
    """The converged study chooses each setting's weights on that setting's own sweep; a sweep is planned only in
    a setting whose choice it makes."""
    from mixprior_plugin.benchmarking.selection import Plan, selection_plan
    args = benchmark.parse_args(['--profile', profile, '--out', str(tmp_path), '--selection-seeds', '100', '101'])
    assert args.sweep_scope == scope
    assert benchmark.parse_args(['--profile', profile, '--out', str(tmp_path),
                                 '--sweep-scope', 'first']).sweep_scope == 'first'
    plan = Plan(args)
    first = plan.settings[0]
    for setting in plan.settings:
        assert plan.sweep_setting(setting) == (setting if scope == 'each' else first)
    swept_in = {job.setting for job in selection_plan(plan, ['Set5'], ['Val']) if job.role == 'sweep'}
    assert swept_in == (set(plan.settings) if scope == 'each' else {first})


def test_report_of_a_first_scope_study_gives_later_settings_the_first_settings_choice(tmp_path):
    """With --sweep-scope first, a later setting's section names where its weights came from and shows no sweep
    of its own (records of one would be misleading: they chose nothing)."""
    out = tmp_path / 'study'
    shutil.copytree(os.path.join(REPO, 'benchmarks', 'results', 'bench_converged'), out,
                    ignore=shutil.ignore_patterns('*.pth', '*.png'))
    meta = json.load(open(out / 'meta.json'))
    assert meta['sweep_scope'] == 'each'  # the committed study chooses per setting
    md_each = benchmarking.report(str(out))
    width_each = md_each[md_each.index('## width compression'):]
    assert 'Weight selection' in width_each and "compounded setting's choice" not in width_each
    meta['sweep_scope'] = 'first'
    json.dump(meta, open(out / 'meta.json', 'w'))
    md_first = benchmarking.report(str(out))
    width_first = md_first[md_first.index('## width compression'):]
    assert "Weights: the compounded setting's choice" in width_first and 'Weight selection' not in width_first
    compounded = md_first[md_first.index('## compounded compression'):md_first.index('## width compression')]
    assert 'Weight selection' in compounded


def test_speed_smoke_interleaved_floor_ratios_profile(tmp_path):
    """Every pair and method on the product path (build_model + optimize_parameters), ratios per round."""
    methods = ('floor', 'LogitsKD', 'MiPKD', 'MiPKD-bpm-half')
    result = speed.main(['--smoke', '--profile', '--methods', *methods, '--out', str(tmp_path)])
    rows = {(r['pair'], r['method']): r for r in result['training']}
    assert set(rows) == {(p, m) for p in speed.PAIRS for m in methods}
    for pair in speed.PAIRS:
        logits, mipkd = rows[(pair, 'LogitsKD')], rows[(pair, 'MiPKD')]
        assert logits['ratio_to_logits_kd']['median'] == 1.0
        assert len(mipkd['step_ms_raw']) == 2 and mipkd['step_ms']['mean'] > 0 and mipkd['rss_growth_gib'] >= 0
        # per-round ratios: the median ratio is the median of step_i(MiPKD) / step_i(Logits-KD)
        ratios = [a / b for a, b in zip(mipkd['step_ms_raw'], logits['step_ms_raw'])]
        assert abs(mipkd['ratio_to_logits_kd']['median'] - sum(ratios) / 2) < 0.01
        assert rows[(pair, 'floor')]['ratio_to_floor']['median'] == 1.0
    # a variant is its base option file plus overrides (here route.batch_fraction 0.5)
    assert rows[(speed.PAIRS[0], 'MiPKD-bpm-half')]['option_file'].endswith('train_MiPKD_EDSR_C256B32-C64B32_x4.yml')
    profiles = {(p['pair'], p['method']): p for p in result['profile']}
    parts = profiles[(speed.PAIRS[0], 'MiPKD')]['parts']
    assert {'teacher forward', 'student forward', 'mixers', 'hybrid stages', 'losses', 'backward'} <= set(parts)
    assert abs(sum(parts.values()) - profiles[(speed.PAIRS[0], 'MiPKD')]['step_ms']) < 1.0
    assert {r['pair'] for r in result['inference']} == set(speed.PAIRS)
    assert all(r['exported_ms'] > 0 and r['direct_ms'] > 0 for r in result['inference'])
    md = open(tmp_path / 'speed.md').read()
    assert '| / Logits-KD | / floor |' in md and 'MiPKD / Logits-KD' in md and '## Where the time goes' in md
    assert open(tmp_path / 'speed.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert json.load(open(tmp_path / 'speed.json'))['meta']['git_commit']
    with pytest.raises(SystemExit):  # too few timed rounds for the random route to average out
        speed.main(['--steps', '3', '--out', str(tmp_path)])


def test_select_weight_confirms_the_first_seeds_best_against_the_file_weight():
    scores = {(100, 0.1): 30.0, (100, 1.0): 30.1, (100, 10.0): 30.3}
    assert benchmarking.select_weight(scores, [100, 101], [0.1, 1.0, 10.0]) is None  # seed 101 still to run
    scores.update({(101, 1.0): 30.2, (101, 10.0): 30.42})  # factor 0.1 lost on seed 100: never rerun
    choice = benchmarking.select_weight(scores, [100, 101], [0.1, 1.0, 10.0])
    assert choice['chosen'] == 10.0 and set(choice['per_seed']) == {1.0, 10.0}
    assert choice['first_scan'] == {0.1: 30.0, 1.0: 30.1, 10.0: 30.3}


def test_judge_variant_stops_a_loser_on_the_first_seed_and_promotes_a_clear_winner():
    base = benchmarking.choose_factor({1.0: [30.0, 30.1]})
    base.update(seeds=[100, 101], first_scan={1.0: 30.0})
    lost = benchmarking.judge_variant({100: 29.99}, base)
    assert lost['promoted'] is False and lost['seeds'] == [100] and 'not above' in lost['reason']
    assert benchmarking.judge_variant({100: 30.2}, base) is None  # won the first seed: the second decides
    assert benchmarking.judge_variant({100: 30.2, 101: 30.3}, base)['promoted'] is True  # lead 0.2 > spread 0.1
    assert benchmarking.judge_variant({100: 30.05, 101: 30.1}, base)['promoted'] is False  # lead 0.025


def test_choose_factor_keeps_the_file_weight_unless_the_lead_beats_the_seed_spread():
    # factor 10 leads by 0.02 dB but the seeds disagree by 0.1 dB: the option file's weight stands
    close = benchmarking.choose_factor({0.1: [30.0, 30.1], 1.0: [30.05, 30.15], 10.0: [30.07, 30.17]})
    assert close['best'] == 10.0 and close['chosen'] == 1.0 and 'weight stands' in close['reason']
    assert abs(close['spread'] - 0.1) < 1e-9
    # a lead of 0.3 dB with a spread of 0.02 dB is a choice
    clear = benchmarking.choose_factor({0.1: [30.0, 30.02], 1.0: [30.1, 30.12], 10.0: [30.4, 30.42]})
    assert clear['chosen'] == 10.0 and 'more than the seed-to-seed spread' in clear['reason']


def test_unresolved_comparisons_decide_on_the_reported_seeds_only():
    """A comparison within two paired standard deviations on any set is unresolved; seeds beyond the reported ones
    do not change the decision (no stopping at a lucky moment); a missing run leaves it undecided."""
    from mixprior_plugin.benchmarking.stats import unresolved_comparisons, verdict_pairs
    methods = ['Scratch', 'LogitsKD', 'FitNet']
    assert verdict_pairs(methods) == [('LogitsKD', 'Scratch'), ('FitNet', 'Scratch'), ('FitNet', 'LogitsKD')]
    sets = ['A', 'B']
    psnr = {('Scratch', k): {'A': 30.0, 'B': 28.0} for k in (0, 1, 2)}
    psnr.update({('FitNet', k): {'A': 30.3 + 0.01 * k, 'B': 28.2 + 0.01 * k} for k in (0, 1, 2)})  # clear lead
    psnr.update({('LogitsKD', k): {'A': 30.0 + d, 'B': 28.1 + 0.01 * k} for k, d in enumerate((0.1, -0.1, 0.05))})
    assert unresolved_comparisons(psnr, methods, [0, 1, 2], sets) == [('LogitsKD', 'Scratch', ['A'])]
    psnr.update({('LogitsKD', 3): {'A': 30.1, 'B': 28.1}, ('Scratch', 3): {'A': 30.0, 'B': 28.0}})
    assert unresolved_comparisons(psnr, methods, [0, 1, 2], sets) == [('LogitsKD', 'Scratch', ['A'])]
    del psnr[('FitNet', 2)]
    assert unresolved_comparisons(psnr, methods, [0, 1, 2], sets) is None


def test_learning_curves_average_the_reported_seeds_only():
    """Once extra seeds land for some methods, each line of a setting's curve plot still averages the reported
    seeds, so the lines compare like with like."""
    from mixprior_plugin.benchmarking.report import reported_curves
    curve = lambda k: [{'iter': 100, 'val_psnr': 30.0 + k}]  # noqa: E731
    rows = {'Scratch': {k: {'curve': curve(k)} for k in (0, 1, 2, 3, 4)},
            'FitNet': {k: {'curve': curve(k)} for k in (0, 1, 2)}}
    curves = reported_curves(rows, [0, 1, 2])
    assert curves == {'scratch': [curve(0), curve(1), curve(2)], 'FitNet': [curve(0), curve(1), curve(2)]}
    assert reported_curves(rows, [0, 1, 2, 3]) == {'scratch': [curve(k) for k in range(4)],
                                                   'FitNet': [curve(k) for k in range(3)]}


def test_extra_seeds_go_to_the_methods_of_unresolved_comparisons_after_every_reported_seed(tmp_path):
    """The converged plan adds seeds 3 and 4 at the end of its job list; they wait until the setting has every main
    method at every reported seed, then run only for methods in an unresolved comparison, whatever --methods a
    worker was given; the report names the same methods."""
    from mixprior_plugin.benchmarking.selection import ExtraSeedJob, Plan, selection_plan
    from mixprior_plugin.utils.tooling import write_json
    out = tmp_path / 'study'
    args = benchmark.parse_args(['--profile', 'converged', '--out', str(out), '--methods', 'FitNet', 'Scratch'])
    plan = Plan(args)
    assert plan.extra_seeds == [3, 4]
    jobs = selection_plan(plan, ['Set5', 'Set14'], ['Val'])
    extra = [j for j in jobs if isinstance(j, ExtraSeedJob)]
    assert extra and jobs[-len(extra):] == extra  # after every setting's reported seeds
    assert {(j.method, j.seed) for j in extra if j.setting == 'compounded'} == {
        (m, k) for m in ('Scratch', 'FitNet') for k in (3, 4)}
    first = [j for j in extra if j.setting == 'compounded' and j.method == 'FitNet'][0]
    assert not first.ready()
    assert first.dropped()  # Logits-KD, MiPKD and FAKD are missing and outside --methods: this command cannot decide
    args.methods = None
    assert not first.dropped()  # a command that runs them waits for them
    # FitNet clearly above every method; FAKD within the seed spread of scratch, Logits-KD and MiPKD
    gains = {'Scratch': (0, 0, 0), 'LogitsKD': (0.1, 0.11, 0.12), 'MiPKD': (0.2, 0.21, 0.22),
             'FitNet': (0.5, 0.51, 0.52), 'FAKD': (0.3, -0.2, 0.1)}
    for method, per_seed in gains.items():
        for k, g in enumerate(per_seed):
            write_json(dict(setting='compounded', method=method, seed=k, role='main', feature_weight=None,
                            student='EDSR 16x2', params=1, iters=10, batch=1, lq_patch=8, curve=[], plateau=None,
                            pairing=dict(init_sha=str(k), first_batch_sha=str(k)),
                            sets={s: dict(psnr=30.0 + g + 0.001 * k, ssim=0.9) for s in ('Set5', 'Set14')}),
                       plan.record_path('compounded', method, k))
    assert plan.unresolved('compounded', ['Set5', 'Set14']) == [
        ('FAKD', 'Scratch', ['Set5', 'Set14']), ('FAKD', 'LogitsKD', ['Set5', 'Set14']),
        ('FAKD', 'MiPKD', ['Set5', 'Set14'])]
    assert first.dropped()  # FitNet's comparisons are all resolved
    scratch = [j for j in extra if j.setting == 'compounded' and j.method == 'Scratch'][0]
    assert scratch.ready() and not scratch.dropped()  # scratch has no weight to choose: ready now
    meta = dict(profile='converged', seeds=[0, 1, 2], selection_seeds=[100, 101], extra_seeds=[3, 4],
                sets=['Set5', 'Set14'], settings=['compounded'])
    write_json(meta, str(out / 'meta.json'))
    md = benchmarking.report(str(out))
    line = next(x for x in md.splitlines() if x.startswith('Extra seeds'))
    assert line.startswith('Extra seeds [3, 4] for scratch (done: none), Logits-KD (done: none), MiPKD (done: none), '
                           'FAKD (done: none); unresolved over seeds [0, 1, 2]: FAKD vs scratch (Set5, Set14)')
    with pytest.raises(benchmarking.BenchmarkError, match='Extra seeds'):
        Plan(benchmark.parse_args(['--profile', 'converged', '--out', str(out), '--extra-seeds', '2', '5']))
    # a profile without selection seeds plans them too when asked (none by default)
    from mixprior_plugin.benchmarking.selection import first_seed_sweep_plan
    for asked, planned in (([], 0), (['--extra-seeds', '3'], 1)):
        cpu = Plan(benchmark.parse_args(['--profile', 'cpu', '--out', str(tmp_path / 'cpu'), *asked]))
        cpu_jobs = first_seed_sweep_plan(cpu, ['Set5'], ['Val'])
        cpu_extra = [j for j in cpu_jobs if isinstance(j, ExtraSeedJob)]
        assert len(cpu_extra) == planned * sum(len(cpu.methods(st, 'main')) for st in cpu.settings)
        assert not cpu_extra or cpu_jobs[-len(cpu_extra):] == cpu_extra


def test_benchmark_converged_profile_selects_on_unreported_seeds_and_keeps_curves_and_mixers(tmp_path):
    train_hr, out = smoke_data(tmp_path)
    result = benchmark.main(['--smoke', '--profile', 'converged', '--train-dirs', train_hr, '--test-root',
                             str(tmp_path / 'test'), '--sets', 'Tiny', '--val-count', '1', '--data-workers', '1',
                             '--settings', 'depth', '--methods', 'Scratch', 'LogitsKD', 'MiPKD', 'FitNet',
                             'MiPKD_detach_teacher_latent', '--sweep-factors', '0.1', '1', '--iters', '4',
                             '--curve-points', '2', '--out', str(out)])
    # the sweep ran on the selection seeds only (every factor on the first, the file's weight and the first seed's
    # best on the second), and no reported run is one of its runs
    sweep = {(r['method'], r['seed'], r['sweep_factor']): r['sets']['Val']['psnr'] for r in result['sweep']}
    for m in ('MiPKD', 'FitNet'):
        assert {f for (m_, s, f) in sweep if m_ == m and s == 100} == {0.1, 1.0}
        best = max((0.1, 1.0), key=lambda f: sweep[(m, 100, f)])
        assert {f for (m_, s, f) in sweep if m_ == m and s == 101} == {1.0, best}
    assert {(r['method'], r['seed']) for r in result['runs']} == {
        (m, s) for m in ('Scratch', 'LogitsKD', 'MiPKD', 'FitNet') for s in (0, 1)}
    variant = {r['seed']: r['sets']['Val']['psnr'] for r in result['variants']}
    mipkd = result['summary']['selection']['depth']['MiPKD']
    won_first = variant[100] > sweep[('MiPKD', 100, mipkd['chosen'])]
    assert set(variant) == ({100, 101} if won_first else {100})  # a variant that lost on seed 100 stops there
    assert all(set(r['sets']) == {'Val'} for r in result['sweep'] + result['variants'])
    selection = result['summary']['selection']['depth']
    for r in result['runs']:
        # learning curves with the validation PSNR; every run's chosen weight comes from the selection seeds
        assert [p['iter'] for p in r['curve']] == [2, 4] and all('val_psnr' in p and 'l_pix' in p for p in r['curve'])
        if r['method'] in ('MiPKD', 'FitNet'):
            chosen = selection[r['method']]['chosen']
            sweep_run = next(s for s in result['sweep'] if s['method'] == r['method'] and s['sweep_factor'] == chosen)
            assert r['feature_weight'] == sweep_run['feature_weight']
    mipkd = next(r for r in result['runs'] if r['method'] == 'MiPKD')
    assert mipkd['extra_weights'] and os.path.isfile(out / mipkd['extra_weights'])
    assert next(r for r in result['runs'] if r['method'] == 'Scratch')['extra_weights'] is None
    md = open(out / 'results.md').read()
    assert 'Plateau: scratch' in md and 'Weight selection (validation split, selection seeds [100, 101]' in md
    assert '## Which method?' in md and md.index('## Which method?') < md.index('## depth compression')
    assert 'Variants on the selection seeds' in md and 'Verdicts:' in md and '- depth: MiPKD' in md
    assert open(out / 'curves_depth.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    # the mixers of a committed run can be inspected from its record alone
    import inspect_mixers
    os.makedirs(out / 'mixers')
    info = inspect_mixers.main(['--record', str(out / 'runs' / 'depth' / 'MiPKD_seed0.json'), '--images',
                                str(tmp_path / 'test' / 'Tiny' / 'HR'), '--patch', '16',
                                '--json', str(out / 'mixers' / 'depth_MiPKD_seed0.json')])
    assert len(info['points']) == 2 and all(p['l_fpm'] > 0 for p in info['points'])
    # ... and the report shows what it found, per run and point
    md = benchmarking.report(str(out))
    assert 'Inside the mixers' in md
    rows = [line for line in md.splitlines() if line.startswith('| MiPKD_seed0 | ')]
    assert [row.split(' | ')[1] for row in rows] == ['1', '2']
    assert f'{info["points"][0]["zeroed_over_true"]:.2f}' in rows[0]
    # step times: the settings timed now replace theirs and the others stay (one setting can be re-timed alone)
    (out / 'step_times.json').write_text(json.dumps({'width': {'Scratch': {'ms': 1.0}}}))
    benchmark.main(['--smoke', '--profile', 'converged', '--train-dirs', train_hr, '--val-count', '1',
                    '--data-workers', '1', '--settings', 'depth', '--methods', 'Scratch', 'MiPKD', '--time-steps', '2',
                    '--out', str(out)])
    times = json.load(open(out / 'step_times.json'))
    assert times['width'] == {'Scratch': {'ms': 1.0}}
    assert {'Scratch', 'MiPKD'} <= set(times['depth']) and all(t['ms'] > 0 for t in times['depth'].values())


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(REPO, 'options', 'train', 'Benchmark*', '*.yml'))))
def test_step_times_are_taken_past_any_warm_up_phase(path):
    """A method whose first iterations skip terms (MiPKD's ae_warmup_iters) is timed at its steady-state step."""
    import yaml
    opt = yaml.safe_load(open(path))
    timed = benchmarking.runner.timed_iterations(opt, 30)
    assert len(timed) == 33 and timed[-1] <= opt['train']['total_iter']
    assert timed[0] > (opt.get('mixer') or {}).get('ae_warmup_iters', 0)


def test_a_run_on_some_settings_keeps_the_studys_other_settings():
    from mixprior_plugin.benchmarking.runner import study_settings
    meta = dict(profile='converged', settings=['compounded', 'width', 'depth'])
    assert study_settings(meta, 'converged', ['depth']) == ['compounded', 'width', 'depth']
    assert study_settings(dict(profile='converged', settings=['depth']), 'converged', ['width']) == ['width', 'depth']
    assert study_settings({}, 'converged', ['depth']) == ['depth']
    # another profile's meta.json contributes nothing
    assert study_settings(dict(profile='cpu', settings=['compounded']), 'converged', ['depth']) == ['depth']
