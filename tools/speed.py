"""Training cost of every method on the product path, and the exported student's inference latency.

For the paper's pairs (EDSR 256x32 -> 64x32, RCAN 10x20 -> 10x6, SwinIR 180/6 -> 60/4; x4), every
method is built by ``build_model`` from its committed option file (options/train/MiPKD,
options/train/Baselines) with the precision options of ``train`` set from the flags
(``--amp`` -> ``train.amp``, ``--channels-last`` -> ``train.channels_last``), and timed through
``optimize_parameters``, as ``mixprior-train`` runs it. Teacher weights are random (cost does not
depend on them).

Timing is interleaved: each round runs one step of every method on the same batch, in a rotated
order, so that load from other processes hits every method alike; ratios are taken per round
(MiPKD / Logits-KD of the same round) and summarised by their median and interquartile range.
The *floor* is what any output-KD method must pay, measured in the same rounds: one teacher
forward (no grad) plus one student forward/backward and optimizer step, on the Logits-KD model's
own networks. Variants:

* ``MiPKD-before``: MiPKD with the block path of the previous commit (feature-recorder hooks on
  during the hybrid); same losses, so the pair before/after is measured in one run.
* ``MiPKD-bpm-half``: ``mixer.route.batch_fraction: 0.5``; ``MiPKD-bpm-every2``:
  ``train.block_path_every: 2`` (both change what is computed; off by default).

Peak memory: ``torch.cuda.max_memory_allocated`` per step on GPU; on CPU the growth of the
process's resident set during the step (sampled every millisecond), max over steps.
``--profile`` adds the exclusive time of the parts of a MiPKD step (teacher forward, student
forward, mixers, hybrid stages, losses, backward, optimizer, EMA) from separate timed steps.

Examples::

    python tools/speed.py --device cuda --amp bf16 --batch 16 --out benchmarks/results/speed_h200_bf16
    python tools/speed.py --device cpu --threads 1 --batch 2 --steps 20 --profile --out benchmarks/results/speed_cpu
    python tools/speed.py --smoke --out /tmp/speed                       # CPU smoke test (tiny nets)

Outputs in --out: speed.json (provenance + every step time), speed.md and speed.png.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time

from mixprior_plugin.utils.tooling import deep_update, load_options, synchronize, training_options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = ('EDSR_C256B32-C64B32', 'RCAN_G10B20-G10B6', 'SwinIR_C180D6-C60D4')
BASELINES = ('FitNet', 'AT', 'FAKD', 'RKD')
# method -> (option file method, option overrides, model attributes)
VARIANTS = {
    'MiPKD-before': ('MiPKD', {}, dict(pause_recorders_in_block_path=False)),
    'MiPKD-bpm-half': ('MiPKD', dict(mixer=dict(route=dict(batch_fraction=0.5))), {}),
    'MiPKD-bpm-every2': ('MiPKD', dict(train=dict(block_path_every=2)), {}),
}
METHODS = ('floor', 'Scratch', 'LogitsKD') + BASELINES + ('MiPKD', ) + tuple(VARIANTS)
DEFAULT_METHODS = ('floor', 'LogitsKD', 'MiPKD', 'MiPKD-before', 'MiPKD-bpm-half', 'MiPKD-bpm-every2')
# The training-cost budget this project holds MiPKD to (docs/speed.md): a MiPKD step at the default settings costs
# at most this many Logits-KD steps of the same pair (the spec expects about 1.6x before the savings of this code).
TARGET_RATIO = 1.25
MIN_STEPS = 20  # fewer timed steps do not average out the random route (k0 and the stage owners)
# --smoke: tiny versions of each pair (same families and stage counts)
SMOKE = {
    'EDSR': (dict(num_feat=16, num_block=4), dict(num_feat=8, num_block=4)),
    'RCAN': (dict(num_feat=16, num_group=5, num_block=2, squeeze_factor=4),
             dict(num_feat=16, num_group=5, num_block=1, squeeze_factor=4)),
    'SwinIR': (dict(embed_dim=12, depths=[1] * 6, num_heads=[2] * 6), dict(embed_dim=6, depths=[1] * 4,
                                                                          num_heads=[2] * 4)),
}


def option_file(method, pair):
    folder = 'Baselines' if method in BASELINES else 'MiPKD'
    return os.path.join(REPO, 'options', 'train', folder, f'train_{method}_{pair}_x4.yml')


def run_options(method, pair, smoke, device, tmp, amp='off', channels_last=False):
    """Options of ``method`` (a variant: its base file plus overrides) for the timing run."""
    base = 'LogitsKD' if method == 'floor' else VARIANTS[method][0] if method in VARIANTS else method
    path = option_file(base, pair)
    opt = load_options(path, plain=True)
    if method in VARIANTS:
        deep_update(opt, json.loads(json.dumps(VARIANTS[method][1])))
    family = pair.split('_')[0]
    if smoke:
        opt['network_g'].update(SMOKE[family][1])
        if 'network_t' in opt:
            opt['network_t'].update(SMOKE[family][0])
    opt = training_options(opt, device, tmp, teacher_weights=teacher_path(tmp, pair) if 'network_t' in opt else None)
    if amp != 'off':
        opt['train']['amp'] = amp
    if channels_last:
        opt['train']['channels_last'] = True
    return path, opt


def teacher_path(tmp, pair):
    return os.path.join(tmp, f'teacher_{pair}.pth')


def rss_bytes():
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return 0


class RssPeak:
    """Samples the resident set every millisecond while active: ``growth`` is peak minus start."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.growth = self.peak - self.start


def floor_step(model):
    """Teacher forward (no grad) + student forward/backward + optimizer step, nothing else."""
    import torch
    import torch.nn.functional as F
    model.optimizer_g.zero_grad(set_to_none=True)
    with model.autocast():
        with torch.no_grad():
            target = model.net_t(model.lq)
        out = model.net_g(model.lq)
        loss = F.l1_loss(out, model.gt) + F.l1_loss(out, target)
    loss.backward()
    model.optimizer_g.step()


class Runner:
    """One method's model and its step, timed one step at a time."""

    def __init__(self, method, model, device):
        self.method, self.model, self.device = method, model, device
        self.times, self.peaks, self.iter = [], [], 0

    def step(self, timed):
        import torch
        self.iter += 1
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
        synchronize(self.device)
        with RssPeak() as rss:
            start = time.perf_counter()
            if self.method == 'floor':
                floor_step(self.model)
            else:
                self.model.optimize_parameters(self.iter)
            synchronize(self.device)
            seconds = time.perf_counter() - start
        if timed:
            self.times.append(seconds)
            peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == 'cuda' else rss.growth
            self.peaks.append(max(peak, 0))


def build_runner(method, pair, args, device, tmp):
    import torch

    from basicsr.models import build_model
    from basicsr.utils import set_random_seed
    path, opt = run_options(method, pair, args.smoke, device, tmp, args.amp, args.channels_last)
    set_random_seed(0)  # one initial student and one route stream for every method
    model = build_model(opt)
    for name, value in (VARIANTS[method][2] if method in VARIANTS else {}).items():
        setattr(model, name, value)
    runner = Runner(method, model, device)
    runner.option_file = os.path.relpath(path, REPO)
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return runner


def quartiles(values):
    q = statistics.quantiles(values, n=4, method='inclusive') if len(values) > 1 else [values[0]] * 3
    return q[0], q[1], q[2]


def summary(values, scale=1.0):
    p25, med, p75 = quartiles(values)
    return dict(mean=round(scale * statistics.fmean(values), 3),
                std=round(scale * (statistics.stdev(values) if len(values) > 1 else 0.0), 3),
                median=round(scale * med, 3), p25=round(scale * p25, 3), p75=round(scale * p75, 3))


# ---------------------------------------------------------------------------- profile
class PartTimer:
    """Exclusive wall time of named parts of a step (a part's time excludes the parts it calls)."""

    def __init__(self, device):
        self.device, self.totals, self._stack = device, {}, []

    def wrap(self, name, fn):

        def timed(*a, **kw):
            synchronize(self.device)
            self._stack.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                synchronize(self.device)
                elapsed = time.perf_counter() - start
                children = self._stack.pop()
                self.totals[name] = self.totals.get(name, 0.0) + elapsed - children
                if self._stack:
                    self._stack[-1] += elapsed

        return timed


def profile_parts(runner, steps):
    """Mean exclusive ms per part of ``steps`` MiPKD (or KD) steps, by wrapping the model's parts."""
    import torch
    model, device = runner.model, runner.device
    timer = PartTimer(device)
    originals = []

    def patch(obj, attr, name):
        originals.append((obj, attr, obj.__dict__.get(attr)))
        setattr(obj, attr, timer.wrap(name, getattr(obj, attr)))

    patch(model, 'run_teacher', 'teacher forward')
    patch(model, 'student_forward', 'student forward')
    patch(model.distiller, 'normalised_features', 'feature scale')
    if hasattr(model.distiller, 'block_path'):
        patch(model.distiller, 'block_path', 'hybrid stages')
    for k, mixer in enumerate(model.net_extra['mixers'] if 'mixers' in model.net_extra else []):
        for attr in ('forward', 'encode', 'decode'):
            patch(mixer, attr, 'mixers')
    for attr in ('cri_pix', 'cri_kd', 'cri_fpm', 'cri_bpm', 'cri_ae'):
        if getattr(model, attr, None) is not None:
            patch(getattr(model, attr), 'forward', 'losses')
    for optimizer in model.optimizers:
        patch(optimizer, 'step', 'optimizer')
    if hasattr(model, 'model_ema'):
        patch(model, 'model_ema', 'EMA')
    backward = torch.Tensor.backward
    torch.Tensor.backward = timer.wrap('backward', backward)
    total = 0.0
    try:
        for _ in range(steps):
            synchronize(device)
            start = time.perf_counter()
            runner.iter += 1
            model.optimize_parameters(runner.iter)
            synchronize(device)
            total += time.perf_counter() - start
    finally:
        torch.Tensor.backward = backward
        for obj, attr, original in reversed(originals):
            if original is None:
                delattr(obj, attr)
            else:
                setattr(obj, attr, original)
    parts = {name: 1000 * t / steps for name, t in timer.totals.items()}
    parts['other (log, checks, glue)'] = 1000 * total / steps - sum(parts.values())
    return dict(step_ms=round(1000 * total / steps, 1), steps=steps,
                parts={k: round(v, 1) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])})


# ---------------------------------------------------------------------------- inference
def latency(net, x, runs, device):
    import torch
    net.eval()
    times = []
    with torch.no_grad():
        for i in range(runs + 3):
            synchronize(device)
            start = time.perf_counter()
            net(x)
            synchronize(device)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def inference_row(pair, runner, tmp, args, device, generator):
    import torch

    from basicsr.archs import build_network

    from mixprior_plugin.export import export_student
    model = runner.model
    model.save_network(model.net_g_ema if hasattr(model, 'net_g_ema') else model.net_g, 'net_g', 0)
    opt_file = os.path.join(tmp, f'{pair}.yml')
    with open(opt_file, 'w') as f:
        json.dump({'network_g': model.opt['network_g']}, f)
    exported = os.path.join(tmp, f'{pair}_student.pth')
    export_student(opt_file, os.path.join(model.opt['path']['models'], 'net_g_0.pth'), exported, log=lambda *a: None)
    net_exported = build_network(model.opt['network_g']).to(device)
    net_exported.load_state_dict(torch.load(exported, weights_only=True)['params'], strict=True)
    net_direct = build_network(model.opt['network_g']).to(device)
    x = torch.rand(1, 3, args.infer_size, args.infer_size, generator=generator).to(device)
    a, b = latency(net_exported, x, args.infer_runs, device), latency(net_direct, x, args.infer_runs, device)
    a2 = latency(net_exported, x, args.infer_runs, device)  # a second pass shows the noise
    print(f'{pair:22s} inference {1000 * a:.2f} ms exported vs {1000 * b:.2f} ms direct', flush=True)
    return dict(pair=pair, lq_size=args.infer_size, exported_ms=round(1000 * a, 3), direct_ms=round(1000 * b, 3),
                exported_repeat_ms=round(1000 * a2, 3), ratio=round(a / b, 3))


# ---------------------------------------------------------------------------- measurement
def measure_pair(pair, args, device, tmp, meta):
    import torch

    from basicsr.archs import build_network
    from basicsr.utils import set_random_seed
    _, t_opt = run_options('LogitsKD', pair, args.smoke, device, tmp)
    set_random_seed(0)
    torch.save({'params_ema': build_network(t_opt['network_t']).state_dict()}, teacher_path(tmp, pair))
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(args.batch, 3, args.lq_patch, args.lq_patch, generator=g).to(device)
    gt = torch.rand(args.batch, 3, args.lq_patch * 4, args.lq_patch * 4, generator=g).to(device)
    runners = [build_runner(m, pair, args, device, tmp) for m in args.methods]
    if 'floor' in args.methods and 'LogitsKD' in args.methods:
        # the floor runs on the Logits-KD model's own networks (one copy of each in memory)
        floor = next(r for r in runners if r.method == 'floor')
        floor.model = next(r for r in runners if r.method == 'LogitsKD').model
    for r in runners:
        r.model.feed_data(dict(lq=lq, gt=gt))
    rounds = args.warmup + args.steps
    for i in range(rounds):
        shift = i % len(runners)  # rotate the order: no method always runs first (or after the heaviest)
        for r in runners[shift:] + runners[:shift]:
            r.model.feed_data(dict(lq=lq, gt=gt))
            r.step(timed=i >= args.warmup)
        print(f'{pair:22s} round {i + 1}/{rounds}: '
              + ' '.join(f'{r.method} {1000 * r.times[-1]:.0f}' for r in runners if r.times), flush=True)

    by_method = {r.method: r for r in runners}
    rows = []
    for r in runners:
        row = dict(pair=pair, method=r.method, option_file=r.option_file, steps=len(r.times),
                   step_ms=summary(r.times, 1000), step_ms_raw=[round(1000 * t, 2) for t in r.times])
        row['peak_gib' if device.type == 'cuda' else 'rss_growth_gib'] = round(max(r.peaks) / 2**30, 3)
        for ref, key in (('LogitsKD', 'ratio_to_logits_kd'), ('floor', 'ratio_to_floor')):
            if ref in by_method:
                row[key] = summary([a / b for a, b in zip(r.times, by_method[ref].times)])
        rows.append(row)
        ratio = row.get('ratio_to_logits_kd', {}).get('median')
        print(f'{pair:22s} {r.method:18s} {row["step_ms"]["mean"]:9.1f} +- {row["step_ms"]["std"]:.1f} ms/step'
              + (f'  / Logits-KD {ratio:.3f}' if ratio is not None else ''), flush=True)
    result = dict(rows=rows)
    if args.profile and 'MiPKD' in by_method:
        result['profile'] = dict(pair=pair, method='MiPKD', **profile_parts(by_method['MiPKD'], args.profile_steps))
        if 'LogitsKD' in by_method:
            result['profile_logits_kd'] = dict(pair=pair, method='LogitsKD',
                                               **profile_parts(by_method['LogitsKD'], args.profile_steps))
        print(f'{pair:22s} profile: {result["profile"]["parts"]}', flush=True)
    if args.infer_runs > 0:
        student = by_method.get('LogitsKD') or next(r for r in runners if r.method != 'floor')
        result['inference'] = inference_row(pair, student, tmp, args, device, g)
    return result


def measure(args):
    import torch

    import mixprior_plugin  # noqa: F401  (registers the models)
    from mixprior_plugin.utils.provenance import run_meta

    if args.device == 'cuda' and not torch.cuda.is_available():
        raise ValueError('--device cuda: no CUDA device is available')
    device = torch.device('cuda' if args.device == 'cuda' or (args.device == 'auto' and torch.cuda.is_available())
                          else 'cpu')
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = run_meta(device)
    meta.update(batch=args.batch, lq_patch=args.lq_patch, warmup=args.warmup, steps=args.steps, amp=args.amp,
                channels_last=args.channels_last, torch_threads=torch.get_num_threads(), methods=list(args.methods),
                load_average_start=list(os.getloadavg()), timing='interleaved rounds, rotated order')
    result = dict(meta=meta, training=[], profile=[], inference=[])
    tmp = tempfile.mkdtemp(prefix='speed_')
    start = time.time()
    for pair in args.pairs:
        part = measure_pair(pair, args, device, tmp, meta)
        result['training'] += part['rows']
        result['profile'] += [part[k] for k in ('profile', 'profile_logits_kd') if k in part]
        if 'inference' in part:
            result['inference'].append(part['inference'])
    meta.update(load_average_end=list(os.getloadavg()), wall_s=round(time.time() - start, 1))
    return result


# ---------------------------------------------------------------------------- report
def _ratio_text(stats):
    return f'{stats["median"]:.2f} [{stats["p25"]:.2f}, {stats["p75"]:.2f}]' if stats else '-'


def markdown(result):
    m = result['meta']
    cpu = all('rss_growth_gib' in r for r in result['training'])
    prec = f'amp {m["amp"]}' + (', channels_last' if m['channels_last'] else '')
    lines = [f'# Training cost (x4, batch {m["batch"]}, LR {m["lq_patch"]}x{m["lq_patch"]}, {prec})', '',
             f'`{m["command"]}` at {m["git_commit"]}{" (dirty)" if m["git_dirty"] else ""}, {m["device"]}, '
             f'{m["torch_threads"]} torch thread(s), {m["date"]}, torch {m["torch"]}; {m["steps"]} timed rounds after '
             f'{m["warmup"]} warm-up rounds, {m.get("wall_s", "?")} s. Load average (1, 5, 15 min) at the start '
             f'{m["load_average_start"]}, at the end {m.get("load_average_end")}.', '',
             'Each round runs one step of every method on the same batch, in a rotated order; the ratios are '
             'per round (same load), median [p25, p75]. The floor is one teacher forward plus one student '
             'forward/backward and optimizer step on the Logits-KD networks. '
             + ('Memory: growth of the resident set during a step (CPU).' if cpu else 'Memory: peak allocated '
                'during a step (GPU).'), '',
             f'| pair | method | mean ms | std | median [p25, p75] ms | / Logits-KD | / floor | '
             f'{"RSS growth GiB" if cpu else "peak GiB"} |', '|---|---|---|---|---|---|---|---|']
    for r in result['training']:
        s = r['step_ms']
        mem = r.get('rss_growth_gib', r.get('peak_gib'))
        lines.append(f'| {r["pair"]} | {r["method"]} | {s["mean"]:.1f} | {s["std"]:.1f} | {s["median"]:.1f} '
                     f'[{s["p25"]:.1f}, {s["p75"]:.1f}] | {_ratio_text(r.get("ratio_to_logits_kd"))} | '
                     f'{_ratio_text(r.get("ratio_to_floor"))} | {mem:.3f} |')
    verdicts = []
    for pair in dict.fromkeys(r['pair'] for r in result['training']):
        rows = {r['method']: r for r in result['training'] if r['pair'] == pair}
        mipkd = rows.get('MiPKD', {}).get('ratio_to_logits_kd')
        if not mipkd:
            continue
        holds = mipkd['median'] <= TARGET_RATIO
        text = (f'- {pair}: MiPKD / Logits-KD = {mipkd["median"]:.2f} (mean step {rows["MiPKD"]["step_ms"]["mean"]:.0f}'
                f' vs {rows["LogitsKD"]["step_ms"]["mean"]:.0f} ms): {"holds" if holds else "does not hold"} '
                f'(target <= {TARGET_RATIO})')
        before = rows.get('MiPKD-before', {}).get('ratio_to_logits_kd')
        if before:
            text += f'; before this change {before["median"]:.2f}'
        verdicts.append(text + '.')
    if verdicts:
        lines += ['', 'Verdicts (median of the per-round ratios):', ''] + verdicts
    if result.get('profile'):
        lines += ['', '## Where the time goes (exclusive ms per step, mean of separate profiled steps)', '']
        for p in result['profile']:
            lines += [f'{p["pair"]} {p["method"]}: {p["step_ms"]:.0f} ms/step over {p["steps"]} steps', '',
                      '| part | ms | share |', '|---|---|---|']
            for name, ms in p['parts'].items():
                lines.append(f'| {name} | {ms:.1f} | {100 * ms / p["step_ms"]:.0f}% |')
            lines.append('')
    if result['inference']:
        lines += ['', '| pair | LR size | exported student ms | same arch built directly ms | ratio | '
                  'exported again ms |', '|---|---|---|---|---|---|']
        for r in result['inference']:
            lines.append(f'| {r["pair"]} | {r["lq_size"]} | {r["exported_ms"]:.2f} | {r["direct_ms"]:.2f} | '
                         f'{r["ratio"]:.2f} | {r["exported_repeat_ms"]:.2f} |')
    return '\n'.join(lines) + '\n'


def bar_chart(result, path):
    """Mean step time per method and pair (error bars: std), the floor as a dashed line."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    pairs = list(dict.fromkeys(r['pair'] for r in result['training']))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.5 * len(pairs), 3.6), squeeze=False)
    for ax, pair in zip(axes[0], pairs):
        rows = [r for r in result['training'] if r['pair'] == pair and r['method'] != 'floor']
        ax.bar(range(len(rows)), [r['step_ms']['mean'] for r in rows], yerr=[r['step_ms']['std'] for r in rows],
               color=['tab:orange' if r['method'].startswith('MiPKD') else 'tab:blue' for r in rows], capsize=3)
        ax.set_xticks(range(len(rows)), [r['method'] for r in rows], rotation=40, ha='right', fontsize=8)
        floor = [r for r in result['training'] if r['pair'] == pair and r['method'] == 'floor']
        if floor:
            ax.axhline(floor[0]['step_ms']['mean'], color='k', ls='--', lw=1, label='floor')
            ax.legend(fontsize=8)
        ax.set_title(pair, fontsize=9)
        ax.set_ylabel('ms / step')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--pairs', nargs='+', default=list(PAIRS), choices=PAIRS)
    parser.add_argument('--methods', nargs='+', default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--lq-patch', type=int, default=48)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--steps', type=int, default=MIN_STEPS, help=f'timed rounds (>= {MIN_STEPS})')
    parser.add_argument('--amp', default='off', choices=('off', 'bf16', 'fp16'), help='train.amp of every method')
    parser.add_argument('--channels-last', action='store_true', help='train.channels_last of every method')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    parser.add_argument('--profile', action='store_true', help='also time the parts of a MiPKD step')
    parser.add_argument('--profile-steps', type=int, default=5)
    parser.add_argument('--infer-size', type=int, default=128, help='LR side for the inference latency')
    parser.add_argument('--infer-runs', type=int, default=20, help='0 skips the inference latency')
    parser.add_argument('--smoke', action='store_true', help='tiny nets, batch 2, LR 16, 2 rounds (CPU test)')
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.lq_patch, args.warmup, args.steps = 2, 16, 1, 2
        args.infer_size, args.infer_runs, args.profile_steps = 32, 3, 1
    elif args.steps < MIN_STEPS:
        parser.error(f'--steps {args.steps}: at least {MIN_STEPS} timed rounds, or the random route does not average '
                     'out (k0 and the stage owners change the cost of a MiPKD step)')
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
    bar_chart(result, os.path.join(args.out, 'speed.png'))
    print(table)
    return result


if __name__ == '__main__':
    main()
