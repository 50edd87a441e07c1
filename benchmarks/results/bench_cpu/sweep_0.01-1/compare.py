"""Paired differences to Logits-KD of the runs whose weight the wider sweep changed: before / after.

Run from benchmarks/results/bench_cpu: python sweep_0.01-1/compare.py
"""
import json
import statistics

SETS = ('Set5', 'Set14', 'BSD100', 'Urban100')


def psnr(path):
    rec = json.load(open(path))
    return rec, {s: rec['sets'][s]['psnr'] for s in SETS}


print('| setting | method | feature weight (0.01-1 sweep -> 0.001-10 sweep) | mean - Logits-KD, 0.01-1 sweep '
      '(Set5 / Set14 / BSD100 / Urban100) | same, 0.001-10 sweep | pairs above Logits-KD (before -> after) |')
print('|---|---|---|---|---|---|')
for setting in ('compounded', 'depth'):
    for method in ('MiPKD', 'MiPKD_bpm_quarter_batch', 'AT', 'RKD'):
        cols, weights, wins = [], [], []
        for source in ('sweep_0.01-1/' + setting, 'runs/' + setting):
            deltas = {s: [] for s in SETS}
            for seed in (0, 1, 2):
                rec, ours = psnr(f'{source}/{method}_seed{seed}.json')
                _, ref = psnr(f'runs/{setting}/LogitsKD_seed{seed}.json')
                for s in SETS:
                    deltas[s].append(ours[s] - ref[s])
            weights.append(f'{rec["feature_weight"]:g}')
            cols.append(' / '.join(f'{statistics.mean(deltas[s]):+.3f}' for s in SETS))
            wins.append(sum(d > 0 for s in SETS for d in deltas[s]))
        print(f'| {setting} | {method} | {weights[0]} -> {weights[1]} | {cols[0]} | {cols[1]} | '
              f'{wins[0]} -> {wins[1]} of 12 |')
