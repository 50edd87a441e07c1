"""Training cost of every method, and the exported student's inference latency.

For the paper's pairs (EDSR 256x32 -> 64x32, RCAN 10x20 -> 10x6, SwinIR 180/6 -> 60/4; x4, batch
16, LR patches 48x48), one process measures the training step time (median over timed steps
after warm-up, synchronised) and peak GPU memory of scratch, Logits-KD, FitNet, AT, FAKD, RKD and
MiPKD, built from the committed option files (options/train/MiPKD, options/train/Baselines), with
ratios to Logits-KD; then the inference latency of the student exported by
tools/export_student.py against the same arch built directly. Teacher weights are random (cost
does not depend on them).

Examples::

    python tools/speed.py --bf16 --out benchmarks/results/speed_h200      # GPU
    python tools/speed.py --smoke --out /tmp/speed                       # CPU smoke test (tiny nets)

Outputs in --out: speed.json (provenance + every measurement) and speed.md.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = ('EDSR_C256B32-C64B32', 'RCAN_G10B20-G10B6', 'SwinIR_C180D6-C60D4')
METHODS = ('Scratch', 'LogitsKD', 'FitNet', 'AT', 'FAKD', 'RKD', 'MiPKD')
# --smoke: tiny versions of each pair (same families and stage counts)
SMOKE = {
    'EDSR': (dict(num_feat=16, num_block=4), dict(num_feat=8, num_block=4)),
    'RCAN': (dict(num_feat=16, num_group=5, num_block=2, squeeze_factor=4),
             dict(num_feat=16, num_group=5, num_block=1, squeeze_factor=4)),
    'SwinIR': (dict(embed_dim=12, depths=[1] * 6, num_heads=[2] * 6), dict(embed_dim=6, depths=[1] * 4,
                                                                          num_heads=[2] * 4)),
}


def option_file(method, pair):
    folder = 'Baselines' if method in ('FitNet', 'AT', 'FAKD', 'RKD') else 'MiPKD'
    return os.path.join(REPO, 'options', 'train', folder, f'train_{method}_{pair}_x4.yml')


def load_options(method, pair, smoke, device, tmp):
    from mixprior_plugin.utils.options import yaml_load
    path = option_file(method, pair)
    opt = json.loads(json.dumps(yaml_load(path)))
    family = pair.split('_')[0]
    if smoke:
        opt['network_g'].update(SMOKE[family][1])
        if 'network_t' in opt:
            opt['network_t'].update(SMOKE[family][0])
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=1 if device.type == 'cuda' else 0)
    opt.pop('datasets', None)
    opt['path'].update(models=tmp, training_states=tmp)
    if 'network_t' in opt:
        opt['path']['pretrain_network_t'] = teacher_path(tmp, pair)
    return path, opt


def teacher_path(tmp, pair):
    return os.path.join(tmp, f'teacher_{pair}.pth')


def sync(device):
    import torch
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_steps(model, lq, gt, warmup, steps, device, bf16):
    """Median seconds of ``optimize_parameters`` and peak memory (bytes, GPU) over the timed steps."""
    import torch
    model.feed_data(dict(lq=lq, gt=gt))
    times = []
    for it in range(1, warmup + steps + 1):
        if it == warmup + 1 and device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model.optimize_parameters(it)
        sync(device)
        if it > warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == 'cuda' else None
    return statistics.median(times), peak


def latency(net, x, runs, device):
    import torch
    net.eval()
    times = []
    with torch.no_grad():
        for i in range(runs + 3):
            sync(device)
            start = time.perf_counter()
            net(x)
            sync(device)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(args):
    import torch

    import mixprior_plugin  # noqa: F401,E501  (registers the models)
    from basicsr.archs import build_network
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed
    from mixprior_plugin.utils.provenance import run_meta
    sys.path.insert(0, os.path.join(REPO, 'tools'))
    from export_student import export

    device = torch.device('cuda' if torch.cuda.is_available() and args.device != 'cpu' else 'cpu')
    if args.bf16 and device.type != 'cuda':
        raise ValueError('--bf16 needs a GPU')
    meta = run_meta(device)
    meta.update(batch=args.batch, lq_patch=args.lq_patch, warmup=args.warmup, steps=args.steps, bf16=args.bf16)
    result = dict(meta=meta, training=[], inference=[])
    tmp = tempfile.mkdtemp(prefix='speed_')
    for pair in args.pairs:
        _, t_opt = load_options('LogitsKD', pair, args.smoke, device, tmp)
        set_random_seed(0)
        torch.save({'params_ema': build_network(t_opt['network_t']).state_dict()}, teacher_path(tmp, pair))
        g = torch.Generator().manual_seed(0)
        lq = torch.rand(args.batch, 3, args.lq_patch, args.lq_patch, generator=g).to(device)
        gt = torch.rand(args.batch, 3, args.lq_patch * 4, args.lq_patch * 4, generator=g).to(device)
        rows = {}
        for method in args.methods:
            path, opt = load_options(method, pair, args.smoke, device, tmp)
            set_random_seed(0)
            model = build_model(opt)
            seconds, peak = time_steps(model, lq, gt, args.warmup, args.steps, device, args.bf16)
            rows[method] = dict(pair=pair, method=method, option_file=os.path.relpath(path, REPO),
                                step_ms=round(1000 * seconds, 2), peak_gib=round(peak / 2**30, 3) if peak else None)
            print(f'{pair:22s} {method:9s} {1000 * seconds:9.1f} ms/step'
                  + (f'  peak {peak / 2**30:.2f} GiB' if peak else ''), flush=True)
            student_opt, student_model = opt, model  # the last one is exported below
            del model
            if device.type == 'cuda':
                torch.cuda.empty_cache()
        ref = rows.get('LogitsKD')
        for row in rows.values():
            row['ratio_to_logits_kd'] = round(row['step_ms'] / ref['step_ms'], 3) if ref else None
            result['training'].append(row)

        # the exported student against the same arch built directly
        student_model.save_network(student_model.net_g_ema, 'net_g', 0)
        opt_file = os.path.join(tmp, f'{pair}.yml')
        with open(opt_file, 'w') as f:
            json.dump({'network_g': student_opt['network_g']}, f)
        exported = os.path.join(tmp, f'{pair}_student.pth')
        export(opt_file, os.path.join(student_opt['path']['models'], 'net_g_0.pth'), exported)
        net_exported = build_network(student_opt['network_g']).to(device)
        net_exported.load_state_dict(torch.load(exported, weights_only=True)['params'], strict=True)
        net_direct = build_network(student_opt['network_g']).to(device)
        x = torch.rand(1, 3, args.infer_size, args.infer_size, generator=g).to(device)
        a, b = latency(net_exported, x, args.infer_runs, device), latency(net_direct, x, args.infer_runs, device)
        a2 = latency(net_exported, x, args.infer_runs, device)  # a second pass shows the noise
        result['inference'].append(dict(pair=pair, lq_size=args.infer_size, exported_ms=round(1000 * a, 3),
                                        direct_ms=round(1000 * b, 3), exported_repeat_ms=round(1000 * a2, 3),
                                        ratio=round(a / b, 3)))
        print(f'{pair:22s} inference {1000 * a:.2f} ms exported vs {1000 * b:.2f} ms direct', flush=True)
    return result


def markdown(result):
    m = result['meta']
    lines = ['# Training cost (x4, batch {batch}, LR {lq_patch}x{lq_patch}{bf})'.format(
        bf=', bf16 autocast' if m['bf16'] else '', **m), '',
        f'`{m["command"]}` at {m["git_commit"]}{" (dirty)" if m["git_dirty"] else ""}, {m["device"]}, {m["date"]}, '
        f'torch {m["torch"]}; median of {m["steps"]} steps after {m["warmup"]} warm-up steps.', '',
        '| pair | method | step ms | / Logits-KD | peak GiB |', '|---|---|---|---|---|']
    for r in result['training']:
        ratio = f'{r["ratio_to_logits_kd"]:.2f}' if r['ratio_to_logits_kd'] is not None else '-'
        peak = f'{r["peak_gib"]:.2f}' if r['peak_gib'] is not None else '-'
        lines.append(f'| {r["pair"]} | {r["method"]} | {r["step_ms"]:.1f} | {ratio} | {peak} |')
    lines += ['', '| pair | LR size | exported student ms | same arch built directly ms | ratio | exported again ms |',
              '|---|---|---|---|---|---|']
    for r in result['inference']:
        lines.append(f'| {r["pair"]} | {r["lq_size"]} | {r["exported_ms"]:.2f} | {r["direct_ms"]:.2f} | '
                     f'{r["ratio"]:.2f} | {r["exported_repeat_ms"]:.2f} |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--pairs', nargs='+', default=list(PAIRS), choices=PAIRS)
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--lq-patch', type=int, default=48)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--infer-size', type=int, default=128, help='LR side for the inference latency')
    parser.add_argument('--infer-runs', type=int, default=20)
    parser.add_argument('--bf16', action='store_true', help='bf16 autocast (GPU)')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu'))
    parser.add_argument('--smoke', action='store_true', help='tiny nets, batch 2, LR 16, 2 steps (CPU test)')
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.lq_patch, args.warmup, args.steps = 2, 16, 1, 2
        args.infer_size, args.infer_runs = 32, 3
    try:
        result = measure(args)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        sys.exit(f'speed: {err}')
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'speed.json'), 'w') as f:
        json.dump(result, f, indent=1)
    table = markdown(result)
    with open(os.path.join(args.out, 'speed.md'), 'w') as f:
        f.write(table)
    print(table)
    return result


if __name__ == '__main__':
    main()
