"""The method benchmark: one teacher, students in three compression settings, every method, x4.

Teacher EDSR 128x16; students EDSR 128x4 (depth), 32x16 (width), 32x4 (compounded); methods
scratch, Logits-KD, FitNet, AT, FAKD, RKD, MiPKD, MiPKD FPM-only and BPM-only, and a second seed
of scratch as the noise floor. Trained on T91 + BSD200, evaluated on Set5, Set14, BSD100 and
Urban100 (PSNR/SSIM on Y, crop_border 4). Every run is defined by its option file in
options/train/Benchmark/ (tools/gen_options.py): same data, schedule, seed and initialisation.

Training runs the project's models (build_model / optimize_parameters, the exact code of
mixprior-train) on an in-memory data path instead of BasicSR's loader: the HR images and their
MATLAB-bicubic LR versions are held as uint8 tensors on the device and random aligned patches
with flips/rotations are cut there, because on a GPU the disk loader, not the network, is the
bottleneck for these small students. Optional bf16 autocast and channels_last.

Examples::

    # teacher (stored in pretrained/ in half precision) + one setting, within a 9-minute GPU run
    python tools/benchmark.py --settings compounded --bf16 --time-limit 500 --out benchmarks/results/bench_a
    # more settings later, reusing pretrained/EDSR_C128B16_x4_T91BSD200.pth
    python tools/benchmark.py --settings depth width --bf16 --out benchmarks/results/bench_b
    # one table from several runs
    python tools/benchmark.py --merge benchmarks/results/bench_a benchmarks/results/bench_b \\
        --out benchmarks/results/bench_all
    # CPU smoke test (tiny nets, a few iterations)
    python tools/benchmark.py --smoke --train-dirs X/HR --test-root Y --sets Tiny --out /tmp/smoke

Outputs in --out: results.json (provenance + every run), results.md (tables, delta-PSNR over
scratch, noise floor = |scratch seed 1 - scratch seed 0|), delta_psnr.png (one panel per setting),
students/*.pth (EMA weights), and for a newly trained teacher pretrained/<name>.pth + .md.
"""
import argparse
import json
import os
import sys
import time
from copy import deepcopy

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(REPO, '..', 'shared', 'datasets'))
OPTIONS = os.path.join(REPO, 'options', 'train', 'Benchmark')
SETTINGS = ('depth', 'width', 'compounded')
METHODS = ('Scratch', 'Scratch_seed1', 'LogitsKD', 'FitNet', 'AT', 'FAKD', 'RKD', 'MiPKD', 'MiPKD_fpm_only',
           'MiPKD_bpm_only')
LABELS = {'Scratch': 'scratch', 'Scratch_seed1': 'scratch (seed 1)', 'LogitsKD': 'Logits-KD',
          'MiPKD_fpm_only': 'MiPKD FPM only', 'MiPKD_bpm_only': 'MiPKD BPM only'}
SCALE = 4
DEFAULT_TEACHER = os.path.join(REPO, 'pretrained', 'EDSR_C128B16_x4_T91BSD200.pth')
# --smoke: tiny archs with the same roles (teacher deeper and wider than every student)
SMOKE_ARCHS = {'teacher': (16, 4), 'depth': (16, 2), 'width': (8, 4), 'compounded': (8, 2)}


class BenchmarkError(ValueError):
    pass


# ---- data ------------------------------------------------------------------------------------------
class InMemoryPairs:
    """HR/LR training pairs as uint8 tensors on the device; random aligned patches cut there.

    Args:
        folders (list[str]): Folders of HR images (PNG/JPEG/BMP).
        device (torch.device): Where the images live.
        lq_patch (int): LR patch side.
        workers (int): Processes for the MATLAB-bicubic downscaling.
    """

    def __init__(self, folders, device, lq_patch, workers=None):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from functools import partial

        import torch
        from tqdm import tqdm

        from mixprior_plugin.utils.image_io import hr_lr_pair, list_images
        paths = [p for folder in folders for p in list_images(folder)]
        workers = workers or min(16, os.cpu_count() or 1)
        # spawn, not fork: a forked child of a process that already ran torch/OpenCV threads can hang
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
            pairs = list(tqdm(pool.map(partial(hr_lr_pair, scale=SCALE), paths, chunksize=4), total=len(paths),
                              desc='LR images'))
        self.hr, self.lq = [], []
        for hr, lq in pairs:
            if min(lq.shape[:2]) < lq_patch:
                continue
            # BGR -> RGB, HWC -> CHW (BasicSR's img2tensor convention)
            self.hr.append(torch.from_numpy(hr[..., ::-1].copy()).permute(2, 0, 1).to(device))
            self.lq.append(torch.from_numpy(lq[..., ::-1].copy()).permute(2, 0, 1).to(device))
        if not self.hr:
            raise BenchmarkError(f'No training image of at least {lq_patch * SCALE} px in {folders}')
        self.device, self.lq_patch = device, lq_patch

    def batch(self, size, generator):
        """``(lq (B, 3, p, p), gt (B, 3, 4p, 4p))`` in [0, 1] with random flips and rotations."""
        import torch
        p, s = self.lq_patch, SCALE
        picks = torch.randint(len(self.hr), (size, ), generator=generator).tolist()
        lqs, gts = [], []
        for i in picks:
            lq, hr = self.lq[i], self.hr[i]
            y = int(torch.randint(lq.shape[1] - p + 1, (1, ), generator=generator))
            x = int(torch.randint(lq.shape[2] - p + 1, (1, ), generator=generator))
            a, b = lq[:, y:y + p, x:x + p], hr[:, y * s:(y + p) * s, x * s:(x + p) * s]
            flip, rot = torch.randint(2, (2, ), generator=generator).tolist()
            if flip:
                a, b = a.flip(-1), b.flip(-1)
            if rot:
                a, b = a.transpose(1, 2), b.transpose(1, 2)
            lqs.append(a)
            gts.append(b)
        return torch.stack(lqs).float().div_(255), torch.stack(gts).float().div_(255)


# ---- runs --------------------------------------------------------------------------------------------
def load_run_options(name, smoke):
    from mixprior_plugin.utils.options import yaml_load
    path = os.path.join(OPTIONS, f'{name}.yml')
    if not os.path.isfile(path):
        raise BenchmarkError(f'Option file not found: {path} (run tools/gen_options.py)')
    opt = json.loads(json.dumps(yaml_load(path)))  # plain dicts
    if smoke:
        role = 'teacher' if name.startswith('train_teacher') else name.rsplit('_', 2)[-2]
        feat, blocks = SMOKE_ARCHS[role]
        opt['network_g'].update(num_feat=feat, num_block=blocks)
        if 'network_t' in opt:
            opt['network_t'].update(num_feat=SMOKE_ARCHS['teacher'][0], num_block=SMOKE_ARCHS['teacher'][1])
        if 'distill' in opt:
            opt['distill']['num_stages'] = 2
    return path, opt


def prepare_model_options(opt, iters, device, out, teacher_ckpt):
    """Options as build_model wants them (what parse_options would add), with our iterations."""
    opt = deepcopy(opt)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=1 if device.type == 'cuda' else 0)
    opt.pop('datasets', None)
    exp = os.path.join(out, 'experiments', opt['name'])
    opt['path'].update(experiments_root=exp, models=os.path.join(exp, 'models'),
                       training_states=os.path.join(exp, 'training_states'))
    if 'network_t' in opt:
        opt['path']['pretrain_network_t'] = teacher_ckpt
    train = opt['train']
    if iters != train['total_iter']:  # keep the schedule's shape
        train['scheduler']['milestones'] = [max(1, m * iters // train['total_iter'])
                                            for m in train['scheduler']['milestones']]
        train['total_iter'] = iters
    return opt


def train(opt, data, batch, device, bf16=False, channels_last=False, label=''):
    """Train one run in memory; returns (model, seconds, mean step ms)."""
    import torch
    from tqdm import tqdm

    from basicsr.models import build_model
    from basicsr.utils import set_random_seed
    set_random_seed(opt['manual_seed'])  # as parse_options: same seed, same student initialisation
    model = build_model(opt)
    if channels_last:
        for name in ('net_g', 'net_t', 'net_extra'):
            if hasattr(model, name):
                getattr(model, name).to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(opt['manual_seed'])
    iters = opt['train']['total_iter']
    start = time.time()
    bar = tqdm(range(1, iters + 1), desc=label, mininterval=5)
    for it in bar:
        lq, gt = data.batch(batch, generator)
        if channels_last:
            lq, gt = lq.contiguous(memory_format=torch.channels_last), gt.contiguous(memory_format=torch.channels_last)
        model.update_learning_rate(it, warmup_iter=opt['train'].get('warmup_iter', -1))
        model.feed_data(dict(lq=lq, gt=gt))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model.optimize_parameters(it)
        if it % max(iters // 20, 1) == 0:
            bar.set_postfix({k: f'{v:.3g}' for k, v in model.log_dict.items() if k.startswith('l_')})
    if device.type == 'cuda':
        torch.cuda.synchronize()
    seconds = time.time() - start
    return model, seconds, 1000 * seconds / iters


def save_weights(net, path, half=False):
    from mixprior_plugin.utils.checkpoint import atomic_save
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in net.state_dict().items()}
    atomic_save({'params_ema': state}, path)


def evaluate_net(label, ckpt, arch, test_root, sets, device):
    from mixprior_plugin.evaluation import build_method, evaluate
    method = build_method(label, ckpt, arch, SCALE, device)
    res = evaluate([method], test_root, sets, SCALE, device)['sets']
    return {s: dict(psnr=res[s]['methods'][label]['psnr'], ssim=res[s]['methods'][label]['ssim']) for s in sets}


# ---- reporting ---------------------------------------------------------------------------------------
def report(result, out):
    """Write results.md and delta_psnr.png from a results dict (also used by --merge)."""
    runs, sets = result['runs'], result['sets']
    lines = ['# Method benchmark (x4, PSNR dB / SSIM on Y, crop_border 4)', '']
    for meta in result['meta']:
        lines.append(f'- `{meta["command"]}` at {meta["git_commit"]}{" (dirty)" if meta["git_dirty"] else ""}, '
                     f'{meta["device"]}, {meta["date"]}, torch {meta["torch"]}')
    if result.get('teacher'):
        t = result['teacher']
        lines += ['', f'Teacher {t["name"]} ({t["params"]:,} parameters): ' +
                  ', '.join(f'{s} {t["sets"][s]["psnr"]:.2f}/{t["sets"][s]["ssim"]:.4f}' for s in sets if s in t['sets'])]
    deltas = {}
    for setting in SETTINGS:
        rows = {r['method']: r for r in runs if r['setting'] == setting}
        if not rows:
            continue
        base = rows.get('Scratch')
        noise = ({s: abs(rows['Scratch_seed1']['sets'][s]['psnr'] - base['sets'][s]['psnr']) for s in sets}
                 if base and 'Scratch_seed1' in rows else None)
        student = next(iter(rows.values()))
        lines += ['', f'## {setting} compression: {student["student"]} ({student["params"]:,} parameters), '
                  f'{student["iters"]} iterations', '',
                  '| method | ' + ' | '.join(sets) + ' | ' + ' | '.join(f'Δ {s}' for s in sets) + ' | step ms |',
                  '|---' * (2 * len(sets) + 2) + '|']
        for method in METHODS:
            if method not in rows:
                continue
            r = rows[method]
            cells = [f'{r["sets"][s]["psnr"]:.2f}/{r["sets"][s]["ssim"]:.4f}' for s in sets]
            d = [r['sets'][s]['psnr'] - base['sets'][s]['psnr'] for s in sets] if base else [float('nan')] * len(sets)
            deltas[(setting, method)] = d
            lines.append(f'| {LABELS.get(method, method)} | ' + ' | '.join(cells) + ' | ' +
                         ' | '.join(f'{v:+.2f}' for v in d) + f' | {r["step_ms"]:.1f} |')
        if noise:
            lines.append('')
            lines.append('Noise floor |scratch seed 1 - seed 0|: ' + ', '.join(f'{s} {noise[s]:.2f}' for s in sets))
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    plot(deltas, sets, os.path.join(out, 'delta_psnr.png'))
    return '\n'.join(lines)


def plot(deltas, sets, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    settings = [s for s in SETTINGS if any(k[0] == s for k in deltas)]
    if not settings:
        return
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 3.8), squeeze=False, sharey=True)
    for ax, setting in zip(axes[0], settings):
        methods = [m for m in METHODS if (setting, m) in deltas and m != 'Scratch']
        width = 0.8 / max(len(sets), 1)
        for j, s in enumerate(sets):
            ax.bar([i + j * width for i in range(len(methods))], [deltas[(setting, m)][j] for m in methods], width,
                   label=s)
        ax.axhline(0, color='black', linewidth=0.8)
        ax.set_xticks([i + width * (len(sets) - 1) / 2 for i in range(len(methods))])
        ax.set_xticklabels([LABELS.get(m, m) for m in methods], rotation=40, ha='right', fontsize=8)
        ax.set_title(f'{setting} compression')
    axes[0][0].set_ylabel('PSNR - scratch (dB)')
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge(dirs, out):
    result = dict(meta=[], runs=[], sets=None, teacher=None)
    for d in dirs:
        path = os.path.join(d, 'results.json') if os.path.isdir(d) else d
        part = json.load(open(path))
        result['meta'] += part['meta']
        result['sets'] = result['sets'] or part['sets']
        result['teacher'] = result['teacher'] or part.get('teacher')
        done = {(r['setting'], r['method']) for r in part['runs']}
        result['runs'] = [r for r in result['runs'] if (r['setting'], r['method']) not in done] + part['runs']
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump(result, f, indent=1)
    return report(result, out)


# ---- main ----------------------------------------------------------------------------------------------
def run(args):
    import torch

    import mixprior_plugin  # noqa: F401  (registers the models)
    from mixprior_plugin.utils.provenance import run_meta
    device = torch.device('cuda' if torch.cuda.is_available() and args.device != 'cpu' else 'cpu')
    if args.bf16 and device.type != 'cuda':
        raise BenchmarkError('--bf16 needs a GPU')
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, 'students'), exist_ok=True)
    start = time.time()
    result = dict(meta=[run_meta(device)], sets=list(args.sets), runs=[], teacher=None)
    result['meta'][0].update(bf16=args.bf16, channels_last=args.channels_last, batch=args.batch,
                             lq_patch=args.lq_patch, smoke=args.smoke)

    def save():
        with open(os.path.join(out, 'results.json'), 'w') as f:
            json.dump(result, f, indent=1)
        print(report(result, out), flush=True)

    print(f'Loading training images from {args.train_dirs}', flush=True)
    data = InMemoryPairs(args.train_dirs, device, args.lq_patch)
    t_path, t_opt = load_run_options('train_teacher_EDSR_C128B16_x4', args.smoke)
    default_teacher = os.path.join(out, 'teacher_smoke.pth') if args.smoke else DEFAULT_TEACHER
    teacher_ckpt = args.teacher_ckpt or default_teacher
    if not os.path.isfile(teacher_ckpt):
        iters = args.teacher_iters or t_opt['train']['total_iter']
        print(f'Training the teacher ({os.path.relpath(t_path, REPO)}, {iters} iterations)', flush=True)
        model, seconds, step_ms = train(prepare_model_options(t_opt, iters, device, out, None), data, args.batch,
                                        device, args.bf16, args.channels_last, 'teacher')
        os.makedirs(os.path.dirname(teacher_ckpt), exist_ok=True)
        save_weights(model.net_g_ema, teacher_ckpt, half=not args.smoke)
        sets = evaluate_net('teacher', teacher_ckpt, t_opt['network_g'], args.test_root, args.sets, device)
        result['teacher'] = dict(name=os.path.basename(teacher_ckpt), params=sum(
            p.numel() for p in model.net_g.parameters()), iters=iters, seconds=round(seconds, 1), sets=sets)
        with open(os.path.splitext(teacher_ckpt)[0] + '.md', 'w') as f:
            f.write(f'# {os.path.basename(teacher_ckpt)}\n\nEDSR 128x16 x4 teacher of the method benchmark, trained '
                    f'by `{result["meta"][0]["command"]}` from {os.path.relpath(t_path, REPO)} ({iters} iterations, '
                    f'{seconds:.0f} s on {result["meta"][0]["device"]}, commit {result["meta"][0]["git_commit"]}). '
                    'Stored in half precision (params_ema).\n\n| set | PSNR | SSIM |\n|---|---|---|\n' +
                    ''.join(f'| {s} | {v["psnr"]:.2f} | {v["ssim"]:.4f} |\n' for s, v in sets.items()))
        del model
    for setting in args.settings:
        for method in args.methods:
            if args.time_limit and time.time() - start > args.time_limit:
                print(f'Time limit reached: {setting}/{method} and later runs are left out.', flush=True)
                save()
                return result
            path, opt = load_run_options(f'train_{method}_{setting}_x4', args.smoke)
            iters = args.iters or opt['train']['total_iter']
            mopt = prepare_model_options(opt, iters, device, out, teacher_ckpt)
            model, seconds, step_ms = train(mopt, data, args.batch, device, args.bf16, args.channels_last,
                                            f'{setting}/{method}')
            ckpt = os.path.join(out, 'students', f'{opt["name"]}.pth')
            save_weights(model.net_g_ema, ckpt)
            result['runs'].append(dict(
                setting=setting, method=method, option_file=os.path.relpath(path, REPO), seed=opt['manual_seed'],
                student=f'EDSR {opt["network_g"]["num_feat"]}x{opt["network_g"]["num_block"]}', iters=iters,
                params=sum(p.numel() for p in model.net_g.parameters()), train_seconds=round(seconds, 1),
                step_ms=round(step_ms, 2),
                sets=evaluate_net(method, ckpt, opt['network_g'], args.test_root, args.sets, device)))
            del model
            save()  # after every run: a killed command keeps what it finished
    save()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='output folder (commit it under benchmarks/results/)')
    parser.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument('--train-dirs', nargs='+', default=[os.path.join(SHARED, 'T91', 'HR'),
                                                            os.path.join(SHARED, 'BSD200', 'HR')])
    parser.add_argument('--test-root', default=SHARED, help='folder with <Set>/HR (+ LR_bicubic/X4)')
    parser.add_argument('--sets', nargs='+', default=['Set5', 'Set14', 'BSD100', 'Urban100'])
    parser.add_argument('--teacher-ckpt', help='teacher weights (default pretrained/EDSR_C128B16_x4_T91BSD200.pth; '
                        'trained and stored there when missing)')
    parser.add_argument('--iters', type=int, help='student iterations (default: the option files\')')
    parser.add_argument('--teacher-iters', type=int, help='teacher iterations (default: its option file\'s)')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--lq-patch', type=int, default=48)
    parser.add_argument('--bf16', action='store_true', help='bf16 autocast (GPU)')
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu'))
    parser.add_argument('--time-limit', type=float, help='seconds after which no new run starts')
    parser.add_argument('--smoke', action='store_true', help='tiny nets, a few iterations (CPU test)')
    parser.add_argument('--merge', nargs='+', metavar='DIR', help='only assemble the results of earlier runs')
    args = parser.parse_args(argv)
    try:
        if args.merge:
            print(merge(args.merge, args.out))
            return None
        if args.smoke:
            args.iters = args.iters or 3
            args.teacher_iters = args.teacher_iters or 4
        return run(args)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        sys.exit(f'benchmark: {err}')


if __name__ == '__main__':
    main()
