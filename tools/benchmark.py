"""The method benchmark: one teacher, students in several compression settings, every method, paired seeds.

Two profiles of one design, each defined by its option files (written by tools/gen_options.py):

* ``--profile cpu`` (options/train/BenchmarkCPU/): x2, EDSR 32x8 teacher, EDSR 32x2 (depth) and 16x2
  (compounded) students, 3 seeds, sized for a 2-core machine with one torch thread per process.
* ``--profile gpu`` (options/train/Benchmark/): x4, EDSR 128x16 teacher, 128x4 / 32x16 / 32x4 students.

Methods: every ``train_<method>_<setting>_x4.yml`` of the profile (scratch, Logits-KD, FitNet, AT,
FAKD, RKD, MiPKD, MiPKD FPM-only / BPM-only / block path on a quarter of the batch). Trained on
T91 + BSD200 minus a held-out validation split (the last ``--val-count`` images of the last training
folder, never a test set), evaluated on Set5, Set14, BSD100, Urban100 (PSNR/SSIM on Y, crop_border =
scale) and on the validation split. Data: ``--data-root`` (default ``datasets/``) holds T91/HR, BSD200/HR
and the test sets as <Set>/HR (+ LR_bicubic/X<scale>).

Pairing: seed s gives every method the same student initialisation (the seed is set right before
the model is built, and KD models build the student first) and the same sequence of training
batches (a generator of its own, seeded with s, that nothing else draws from). Each run records a
hash of its initial student weights and of its first batch, so the pairing is checked, not assumed.

Loss weights: each method's feature-term weight (MiPKD's FPM weight; each baseline's feature
weight) is swept over ``--sweep-factors`` times its option-file value on the first seed, and the
factor with the best validation PSNR is used for every run of that method. ``--sweep-scope first``
(default) sweeps on the first setting and uses its choice in every setting; ``each`` sweeps and
chooses per setting (a weight chosen on one compression need not suit another). The sweep and the
choice are in the report.

Resumable: each run writes ``runs/<setting>/<method>_seed<s>[_w<factor>].json`` with the exact
options it used (and their hash) and the student's EMA weights; a run whose record exists with the
same options is skipped, so a killed command continues where it stopped, and a change of defaults
re-runs what it changes. ``--worker i/n`` splits the runs over n processes.

Training runs the project's models (build_model / optimize_parameters, the code of mixprior-train)
on an in-memory data path: HR images and their MATLAB-bicubic LR versions are held as uint8
tensors and random aligned patches with flips/rotations are cut there.

Examples::

    # CPU profile in the background, one thread per process, two processes
    python tools/benchmark.py --profile cpu --out benchmarks/results/bench_cpu            # one process, or
    python tools/benchmark.py --profile cpu --worker 0/2 --out benchmarks/results/bench_cpu &
    python tools/benchmark.py --profile cpu --worker 1/2 --out benchmarks/results/bench_cpu &
    # report only (after or during the runs), with a quiet step-time measurement
    python tools/benchmark.py --profile cpu --report-only --time-steps 30 --out benchmarks/results/bench_cpu
    # GPU profile
    python tools/benchmark.py --profile gpu --bf16 --out benchmarks/results/bench_gpu
    # smoke test (tiny nets, a few iterations, two seeds)
    python tools/benchmark.py --smoke --train-dirs X/HR --test-root Y --sets Tiny --out /tmp/smoke
"""
import argparse
import contextlib
import glob
import hashlib
import json
import math
import os
import shutil
import sys
import time
from copy import deepcopy

from mixprior_plugin.utils.tooling import write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# sweep_factors: the CPU profile's sweep reaches two decades each side of the option files' weights, because
# with 0.01 / 0.1 / 1 the best factor of five of six methods was an end of the range; the GPU profile keeps
# three factors to fit its time budget.
PROFILES = {
    'cpu': dict(folder='BenchmarkCPU', settings=('compounded', 'depth'), seeds=(0, 1, 2), threads=1,
                sweep_factors=(0.001, 0.01, 0.1, 1.0, 3.0, 10.0)),
    'gpu': dict(folder='Benchmark', settings=('depth', 'width', 'compounded'), seeds=(0, 1), threads=None,
                sweep_factors=(0.01, 0.1, 1.0)),
    # converged: students trained to their plateau; weights chosen on selection seeds that are never reported;
    # MiPKD's ablations (where their option files are) at the reported seeds; hypothesis variants on the
    # selection seeds, promoted to the reported seeds when they win there (tools/gen_options.py decides which
    # setting has which files)
    'converged': dict(folder='BenchmarkConverged', settings=('depth', 'width', 'compounded'), seeds=(0, 1, 2),
                      selection_seeds=(100, 101), threads=1, sweep_factors=(0.1, 1.0, 10.0), curve_points=24,
                      ablations=('MiPKD_fpm_only', 'MiPKD_bpm_only', 'MiPKD_bpm_quarter_batch'),
                      variants=('MiPKD_detach_teacher_latent', 'MiPKD_ae_warmup', 'MiPKD_latent_teacher_width',
                                'MiPKD_mlp_encoders', 'FitNet_fpm_gradient')),
}
# Order of the runs and of the table rows; a method with no option file in the profile is left out.
METHODS = ('Scratch', 'LogitsKD', 'MiPKD', 'MiPKD_bpm_only', 'MiPKD_fpm_only', 'MiPKD_bpm_quarter_batch', 'FitNet',
           'AT', 'FAKD', 'RKD', 'MiPKD_detach_teacher_latent', 'MiPKD_ae_warmup', 'MiPKD_latent_teacher_width',
           'MiPKD_mlp_encoders', 'FitNet_fpm_gradient')
LABELS = {'Scratch': 'scratch', 'LogitsKD': 'Logits-KD', 'MiPKD_fpm_only': 'MiPKD FPM only',
          'MiPKD_bpm_only': 'MiPKD BPM only', 'MiPKD_bpm_quarter_batch': 'MiPKD BPM on 1/4 batch',
          'MiPKD_detach_teacher_latent': 'MiPKD detached teacher latent', 'MiPKD_ae_warmup': 'MiPKD AE warm-up',
          'MiPKD_latent_teacher_width': 'MiPKD C_z = C_T', 'MiPKD_mlp_encoders': 'MiPKD MLP encoders',
          'FitNet_fpm_gradient': 'FitNet at the FPM\'s gradient'}
VAL_SET = 'Val'
# The plateau criterion of the converged profile: scratch's validation PSNR (EMA weights) rises by less than
# this over the last quarter of its schedule, in every setting.
PLATEAU_RULE = dict(fraction=0.25, max_rise_db=0.03)
# --smoke: tiny archs with the same roles (teacher deeper and wider than every student)
SMOKE_ARCHS = {'teacher': (16, 4), 'depth': (16, 2), 'width': (8, 4), 'compounded': (8, 2)}


class BenchmarkError(ValueError):
    pass


# ---- option files -----------------------------------------------------------------------------------
def options_dir(profile):
    return os.path.join(REPO, 'options', 'train', PROFILES[profile]['folder'])


def load_options(path, smoke=False):
    """An option file as plain dicts (with the --smoke arch shrink applied)."""
    from mixprior_plugin.utils.options import yaml_load
    if not os.path.isfile(path):
        raise BenchmarkError(f'Option file not found: {path} (run tools/gen_options.py)')
    opt = json.loads(json.dumps(yaml_load(path)))
    if smoke:
        stem = os.path.basename(path)
        role = 'teacher' if stem.startswith('train_teacher') else stem.rsplit('_', 2)[-2]
        feat, blocks = SMOKE_ARCHS[role]
        opt['network_g'].update(num_feat=feat, num_block=blocks)
        if 'network_t' in opt:
            opt['network_t'].update(num_feat=SMOKE_ARCHS['teacher'][0], num_block=SMOKE_ARCHS['teacher'][1])
        if 'distill' in opt:
            opt['distill']['num_stages'] = 2
    return opt


def profile_runs(profile):
    """``(teacher file, {setting: {method: file}})`` of a profile, from its option folder."""
    folder = options_dir(profile)
    teachers = sorted(glob.glob(os.path.join(folder, 'train_teacher_*.yml')))
    if len(teachers) != 1:
        raise BenchmarkError(f'{folder} must hold exactly one train_teacher_*.yml, found {len(teachers)}')
    files = {}
    for setting in PROFILES[profile]['settings']:
        files[setting] = {}
        for m in METHODS:
            found = sorted(glob.glob(os.path.join(folder, f'train_{m}_{setting}_x[0-9].yml')))
            if found:
                files[setting][m] = found[0]
        if 'Scratch' not in files[setting]:
            raise BenchmarkError(f'{folder}: no train_Scratch_{setting}_x<scale>.yml')
    return teachers[0], files


def feature_weight_path(opt):
    """Where the method's feature-term weight sits in its options, or None (nothing to sweep)."""
    train = opt.get('train', {})
    if opt.get('model_type') == 'MiPKDModel':
        if train.get('fpm_opt', {}).get('loss_weight', 1.0) == 0:
            return None
        return ('fpm_opt', )
    if train.get('feat_opt'):
        return ('feat_opt', 0)
    return None


def scaled_feature_weight(opt, factor):
    """Options with the feature-term weight multiplied by ``factor``."""
    opt = deepcopy(opt)
    where = feature_weight_path(opt)
    if where is None or factor == 1:
        return opt
    term = opt['train'][where[0]]
    term = term[where[1]] if len(where) > 1 else term
    term['loss_weight'] = round(term.get('loss_weight', 1.0) * factor, 6)
    return opt


def prepare_model_options(opt, iters, device, out, teacher_ckpt, seed, bf16=False, channels_last=False):
    """Options as build_model wants them (what parse_options would add), with our iterations and seed;
    ``bf16`` / ``channels_last`` set the models' own ``train.amp`` / ``train.channels_last``."""
    opt = deepcopy(opt)
    if bf16:
        opt['train']['amp'] = 'bf16'
    if channels_last:
        opt['train']['channels_last'] = True
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=1 if device.type == 'cuda' else 0,
               manual_seed=seed)
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


def resolved_settings(opt):
    """The settings the model will use beyond the file (MiPKD's mixer defaults filled in)."""
    if opt.get('model_type') != 'MiPKDModel':
        return {}
    from mixprior_plugin.models.mipkd_model import mixer_settings
    return mixer_settings(opt)


def sha(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- data ------------------------------------------------------------------------------------------
def split_paths(folders, val_count):
    """Training image paths and the held-out validation paths (the last ``val_count`` of the last folder)."""
    from mixprior_plugin.utils.image_io import list_images
    per_folder = [sorted(list_images(f)) for f in folders]
    if not per_folder or not per_folder[-1]:
        raise BenchmarkError(f'No training images in {folders}')
    if val_count >= len(per_folder[-1]):
        raise BenchmarkError(f'--val-count {val_count} leaves no training image in {folders[-1]}')
    val = per_folder[-1][len(per_folder[-1]) - val_count:] if val_count else []
    train = [p for paths in per_folder for p in paths if p not in set(val)]
    return train, val


class InMemoryPairs:
    """HR/LR training pairs as uint8 tensors on the device; random aligned patches cut there.

    Args:
        paths (list[str]): HR images (PNG/JPEG/BMP).
        device (torch.device): Where the images live.
        lq_patch (int): LR patch side.
        scale (int): Upscaling factor.
        workers (int): Processes for the MATLAB-bicubic downscaling.
    """

    def __init__(self, paths, device, lq_patch, scale, workers=None):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from functools import partial

        import torch
        from tqdm import tqdm

        from mixprior_plugin.utils.image_io import hr_lr_pair
        workers = workers or min(16, os.cpu_count() or 1)
        if workers == 1:
            pairs = [hr_lr_pair(p, scale) for p in tqdm(paths, desc='LR images', mininterval=5)]
        else:
            # spawn, not fork: a forked child of a process that already ran torch/OpenCV threads can hang
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
                pairs = list(tqdm(pool.map(partial(hr_lr_pair, scale=scale), paths, chunksize=4), total=len(paths),
                                  desc='LR images', mininterval=5))
        self.hr, self.lq = [], []
        for hr, lq in pairs:
            if min(lq.shape[:2]) < lq_patch:
                continue
            # BGR -> RGB, HWC -> CHW (BasicSR's img2tensor convention)
            self.hr.append(torch.from_numpy(hr[..., ::-1].copy()).permute(2, 0, 1).to(device))
            self.lq.append(torch.from_numpy(lq[..., ::-1].copy()).permute(2, 0, 1).to(device))
        if not self.hr:
            raise BenchmarkError(f'No training image of at least {lq_patch * scale} px among {len(paths)} files')
        self.device, self.lq_patch, self.scale = device, lq_patch, scale

    def batch(self, size, generator):
        """``(lq (B, 3, p, p), gt (B, 3, sp, sp))`` in [0, 1] with random flips and rotations."""
        import torch
        p, s = self.lq_patch, self.scale
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


def tensor_sha(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---- training and evaluation -------------------------------------------------------------------------
def train(opt, data, batch, device, label='', max_steps=None, validator=None, curve_points=0):
    """Train one run in memory.

    Args:
        validator (ValidationCurve | None): Scores the EMA student for the learning curve.
        curve_points (int): Points of the learning curve (every ``iters // curve_points`` iterations: the
            mean of each logged loss term since the last point, the learning rate and, with a validator,
            the validation PSNR of the EMA weights). 0: no curve.

    Returns:
        tuple: (model, seconds of training without the curve's validation, mean step ms, pairing dict with
        ``init_sha`` and ``first_batch_sha``, curve list).
    """
    import torch
    from tqdm import tqdm

    from basicsr.models import build_model
    from basicsr.utils import set_random_seed
    set_random_seed(opt['manual_seed'])  # as parse_options: same seed, same student initialisation
    model = build_model(opt)
    pairing = dict(init_sha=tensor_sha(model.get_bare_model(model.net_g).state_dict().values()))
    generator = torch.Generator().manual_seed(opt['manual_seed'])
    iters = max_steps or opt['train']['total_iter']
    curve, sums, count = [], {}, 0
    every = max(iters // curve_points, 1) if curve_points else 0
    start, val_seconds = time.time(), 0.0
    bar = tqdm(range(1, iters + 1), desc=label, mininterval=30, disable=max_steps is not None)
    for it in bar:
        lq, gt = data.batch(batch, generator)
        if it == 1:
            pairing['first_batch_sha'] = tensor_sha([lq, gt])
        model.update_learning_rate(it, warmup_iter=opt['train'].get('warmup_iter', -1))
        model.feed_data(dict(lq=lq, gt=gt))
        model.optimize_parameters(it)
        if every:
            count += 1
            for k, v in model.log_dict.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if it % every == 0 or it == iters:
                point = dict(iter=it, lr=model.get_current_learning_rate()[0],
                             **{k: round(v / count, 6) for k, v in sums.items()})
                if validator is not None:
                    t = time.time()
                    point['val_psnr'] = round(validator.psnr(model.get_bare_model(model.net_g_ema)), 4)
                    val_seconds += time.time() - t
                curve.append(point)
                bar.set_postfix({k: f'{v:.4g}' for k, v in point.items() if k.startswith(('l_', 'val'))})
                sums, count = {}, 0
        elif it % max(iters // 20, 1) == 0:
            bar.set_postfix({k: f'{v:.3g}' for k, v in model.log_dict.items() if k.startswith('l_')})
    if device.type == 'cuda':
        torch.cuda.synchronize()
    seconds = time.time() - start - val_seconds
    return model, seconds, 1000 * seconds / iters, pairing, curve


class ValidationCurve:
    """PSNR (Y, crop_border = scale) of a network on held-out images, for learning curves.

    The pairs are read and downscaled once; only PSNR is computed (SSIM is for the final evaluation).

    Args:
        paths (list[str]): HR images.
        scale (int): Upscaling factor.
        device (torch.device): Where the network runs.
    """

    def __init__(self, paths, scale, device):
        from mixprior_plugin.utils.image_io import hr_lr_pair
        self.pairs = [hr_lr_pair(p, scale) for p in paths]
        self.scale, self.device = scale, device

    def psnr(self, net):
        from basicsr.metrics import calculate_psnr
        from basicsr.utils import img2tensor, tensor2img

        from mixprior_plugin.evaluation import sr_tensor
        was_training = net.training
        net.eval()
        total = 0.0
        for hr, lr in self.pairs:
            x = img2tensor(lr.astype('float32') / 255., bgr2rgb=True, float32=True)[None].to(self.device)
            sr = tensor2img(sr_tensor(net, x, self.scale))
            total += calculate_psnr(sr, hr, crop_border=self.scale, test_y_channel=True)
        net.train(was_training)
        return total / len(self.pairs)


def plateau(curve, fraction=0.25):
    """Rise of the validation PSNR over the last ``fraction`` of a curve: ``(rise dB, from iter, to iter)``.

    Measured from the curve point nearest to the start of that last part to the final point; None without
    a validation curve.
    """
    points = [p for p in curve or [] if 'val_psnr' in p]
    if len(points) < 2:
        return None
    last = points[-1]['iter']
    start = min(points, key=lambda p: abs(p['iter'] - (1 - fraction) * last))
    return round(points[-1]['val_psnr'] - start['val_psnr'], 4), start['iter'], last


def save_weights(net, path, half=False, key='params_ema'):
    from mixprior_plugin.utils.checkpoint import atomic_save
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in net.state_dict().items()}
    atomic_save({key: state}, path)


def evaluate_net(label, ckpt, arch, roots, sets, device, scale):
    """PSNR/SSIM of one checkpoint on ``sets``; ``roots`` maps a set to the folder holding it."""
    from mixprior_plugin.evaluation import BICUBIC, Method, build_method, evaluate
    method = Method(BICUBIC) if ckpt is None else build_method(label, ckpt, arch, scale, device)
    out = {}
    for s in sets:
        res = evaluate([method], roots[s], [s], scale, device)['sets'][s]['methods'][method.label]
        out[s] = dict(psnr=res['psnr'], ssim=res['ssim'])
    return out


# ---- the run plan -------------------------------------------------------------------------------------
class Plan:
    """Every run of a profile, in order, with the sweep's choices resolved from finished records."""

    def __init__(self, args):
        self.args = args
        self.teacher_file, self.files = profile_runs(args.profile)
        self.settings = [s for s in PROFILES[args.profile]['settings'] if s in (args.settings or self.files)]
        self.seeds = list(args.seeds)
        self.profile = PROFILES[args.profile]
        self.selection_seeds = [] if args.smoke and not self.profile.get('selection_seeds') else list(
            args.selection_seeds if args.selection_seeds is not None else self.profile.get('selection_seeds', ()))
        if set(self.selection_seeds) & set(self.seeds):
            raise BenchmarkError(f'Selection seeds {self.selection_seeds} must not be reported seeds {self.seeds}')
        self.out = os.path.abspath(args.out)

    def record_path(self, setting, method, seed, factor=None):
        tag = '' if factor is None else f'_w{factor:g}'
        return os.path.join(self.out, 'runs', setting, f'{method}_seed{seed}{tag}.json')

    def load(self, path):
        return json.load(open(path)) if os.path.isfile(path) else None

    def methods(self, setting, role=None):
        """Methods of ``setting`` with an option file, in table order; ``role``: 'main' (compared at the reported
        seeds), 'ablation' (MiPKD's ablations, at the reported seeds), 'variant' (hypotheses tried on the selection
        seeds). The profile's option folder decides which setting has which."""
        wanted = self.args.methods or METHODS
        found = [m for m in METHODS if m in self.files[setting] and m in wanted]
        ablations, variants = self.profile.get('ablations'), self.profile.get('variants', ())
        if role is None:
            return found
        if role == 'variant':
            return [m for m in found if m in variants]
        if ablations is None:  # older profiles: every method everywhere
            return [m for m in found if m not in variants] if role == 'main' else []
        if role == 'ablation':
            return [m for m in found if m in ablations]
        return [m for m in found if m not in ablations and m not in variants]

    def base_options(self, setting, method):
        return load_options(self.files[setting][method], self.args.smoke)

    def weight_source(self, method):
        """The method whose sweep sets ``method``'s feature weight: MiPKD for its cost variant (and, in profiles
        with ablations, for its ablations and variants), else the method itself."""
        if method == 'MiPKD_bpm_quarter_batch':
            return 'MiPKD'
        if method.startswith('MiPKD_') and method in (self.profile.get('ablations') or ()) + \
                self.profile.get('variants', ()):
            return 'MiPKD'
        return method

    def swept(self, setting, method):
        return (len(self.args.sweep_factors) > 1 and self.weight_source(method) == method
                and method not in self.profile.get('variants', ())
                and feature_weight_path(self.base_options(setting, method)) is not None)

    def sweep_setting(self, setting):
        """The setting whose sweep chooses the weights of ``setting`` (``--sweep-scope``)."""
        return setting if self.args.sweep_scope == 'each' else self.settings[0]

    @property
    def sweep_seeds(self):
        """Selection seeds (never reported) where the profile has them, else the first reported seed."""
        return list(self.selection_seeds) or self.seeds[:1]

    def sweep_runs(self):
        """``(setting, method, seed, factor)`` of the weight sweep (selection seeds; first or every setting)."""
        settings = self.settings if self.args.sweep_scope == 'each' else self.settings[:1]
        return [(setting, m, seed, f) for seed in self.sweep_seeds for setting in settings
                for m in self.methods(setting, 'main') if self.swept(setting, m) for f in self.args.sweep_factors]

    def selection(self, method, setting):
        """The sweep of ``method`` in ``setting``: ``dict(scores, per_seed, spread, best, chosen, reason)`` or None
        until every sweep run has its validation PSNR.

        One seed (the older profiles): the best factor. Selection seeds: the factor with the best mean validation
        PSNR over them, unless its lead over the option file's weight (factor 1) is within the seed-to-seed
        spread (the mean over factors of the range of the validation PSNR across the selection seeds): then the
        option file's weight stands.
        """
        setting, seeds = self.sweep_setting(setting), self.sweep_seeds
        per_seed = {}
        for f in self.args.sweep_factors:
            per_seed[f] = []
            for seed in seeds:
                rec = self.load(self.record_path(setting, method, seed, f))
                if rec is None or VAL_SET not in rec['sets']:
                    return None
                per_seed[f].append(rec['sets'][VAL_SET]['psnr'])
        return dict(choose_factor(per_seed), seeds=seeds)

    def chosen_factor(self, method, setting):
        """The sweep's chosen factor (see :meth:`selection`); 1 when not swept; None until the sweep is complete."""
        source = self.weight_source(method)
        if source not in self.files[self.sweep_setting(setting)] or not self.swept(self.sweep_setting(setting),
                                                                                   source):
            return 1
        sel = self.selection(source, setting)
        return None if sel is None else sel['chosen']

    def variant_runs(self):
        """``(setting, variant, seed)`` of the hypothesis variants, on the selection seeds."""
        return [(setting, v, seed) for seed in self.sweep_seeds for setting in self.settings
                for v in self.methods(setting, 'variant')]

    def promoted(self, setting, variant):
        """Whether ``variant`` beat its base method on the selection seeds by more than the spread (then it is
        run at the reported seeds too); None until its runs and the base's selection are complete."""
        sel = self.selection(variant.split('_')[0], setting)
        if sel is None:
            return None
        scores = []
        for seed in sel['seeds']:
            rec = self.load(self.record_path(setting, variant, seed))
            if rec is None or VAL_SET not in rec['sets']:
                return None
            scores.append(rec['sets'][VAL_SET]['psnr'])
        return sum(scores) / len(scores) - sel['scores'][sel['chosen']] > sel['spread']

    def main_runs(self):
        """``(setting, method, seed)`` of the comparison, seed-major so partial results are paired."""
        return [(setting, m, seed) for seed in self.seeds for setting in self.settings
                for m in self.methods(setting, 'main') + self.methods(setting, 'ablation')]

    def run_options(self, setting, method, factor):
        return scaled_feature_weight(self.base_options(setting, method), factor)


def teacher_setup(plan, args):
    """The teacher's options, the profile's scale, batch and LR patch, and the teacher checkpoint path."""
    t_opt = load_options(plan.teacher_file, args.smoke)
    scale = t_opt['scale']
    batch = t_opt['datasets']['train']['batch_size_per_gpu']
    lq_patch = t_opt['datasets']['train']['gt_size'] // scale
    if args.teacher_ckpt:
        ckpt = args.teacher_ckpt
    elif args.smoke:
        ckpt = os.path.join(plan.out, 'teacher_smoke.pth')
    else:
        kd_files = [f for setting in plan.settings for f in plan.files[setting].values()
                    if (load_options(f).get('path') or {}).get('pretrain_network_t')]
        if not kd_files:
            raise BenchmarkError('No option file of the profile names path.pretrain_network_t')
        ckpt = os.path.join(REPO, load_options(kd_files[0])['path']['pretrain_network_t'])
    return t_opt, scale, batch, lq_patch, ckpt


def choose_factor(per_seed):
    """The sweep's choice from ``per_seed`` (factor -> validation PSNR per selection seed, same seed order).

    The factor with the best mean, unless more than one seed was run and its lead over the option file's weight
    (factor 1) is within the seed-to-seed spread (the mean over factors of the range across seeds): then the
    option file's weight stands.

    Returns:
        dict: ``scores`` (factor -> mean), ``per_seed``, ``spread``, ``best``, ``chosen``, ``reason``.
    """
    scores = {f: sum(v) / len(v) for f, v in per_seed.items()}
    best = max(scores, key=scores.get)
    spread = sum(max(v) - min(v) for v in per_seed.values()) / len(per_seed)
    chosen, reason = best, 'best mean validation PSNR'
    if len(next(iter(per_seed.values()))) > 1 and best != 1 and 1 in scores:
        lead = scores[best] - scores[1]
        if lead <= spread:
            chosen = 1
            reason = (f'the best factor {best:g} leads the option file\'s weight by {lead:.3f} dB, within the '
                      f'seed-to-seed spread {spread:.3f} dB: the file\'s weight stands')
        else:
            reason = (f'leads the option file\'s weight by {lead:.3f} dB, more than the seed-to-seed spread '
                      f'{spread:.3f} dB')
    elif best == 1:
        reason = 'the option file\'s weight has the best mean validation PSNR'
    return dict(scores=scores, per_seed=per_seed, spread=spread, best=best, chosen=chosen, reason=reason)


# ---- reporting -------------------------------------------------------------------------------------------
def mean_std(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def collect(out, variants=None):
    """Main-run records by (setting, method, seed) and the sweep records (and, given a list, the variant
    records of the selection seeds are appended to it)."""
    runs, sweep = {}, []
    for path in sorted(glob.glob(os.path.join(out, 'runs', '*', '*.json'))):
        rec = json.load(open(path))
        if rec.get('role') == 'main':
            runs[(rec['setting'], rec['method'], rec['seed'])] = rec
        if rec.get('sweep_factor') is not None:
            sweep.append(rec)
        if rec.get('role') == 'variant' and variants is not None:
            variants.append(rec)
    return runs, sweep


def verdict(name_a, name_b, diffs, sets):
    """One line: on how many sets A beats B in every seed (diffs: set -> per-seed A - B)."""
    seeds = len(next(iter(diffs.values())))
    always = [s for s in sets if all(d > 0 for d in diffs[s])]
    never = [s for s in sets if all(d < 0 for d in diffs[s])]
    wins = sum(d > 0 for s in sets for d in diffs[s])
    word = (f'{name_a} > {name_b} on {len(always)}/{len(sets)} sets in {seeds}/{seeds} seeds'
            + (f' ({", ".join(always)})' if always else ''))
    if never:
        word += f'; {name_a} < {name_b} on {len(never)}/{len(sets)} sets in every seed ({", ".join(never)})'
    return word + f'; higher in {wins} of {seeds * len(sets)} (set, seed) pairs'


def report(out):
    """Write results.json, results.md and paired_deltas.png from the run records; returns the Markdown."""
    os.makedirs(out, exist_ok=True)
    meta = json.load(open(os.path.join(out, 'meta.json'))) if os.path.isfile(os.path.join(out, 'meta.json')) else {}
    if meta.get('selection_seeds'):
        return report_selection(out, meta)
    runs, sweep = collect(out)
    ref = meta.get('reference', {})
    sets = meta.get('sets', [])
    step = json.load(open(os.path.join(out, 'step_times.json'))) if os.path.isfile(
        os.path.join(out, 'step_times.json')) else None
    lines = [f'# Method benchmark, {meta.get("profile", "?")} profile (x{meta.get("scale", "?")}, PSNR dB on Y, '
             f'crop_border = scale)', '']
    for m in meta.get('commands', []):
        wall = f', wall time {m["wall_seconds"] / 60:.1f} min' if 'wall_seconds' in m else ''
        lines.append(f'- `{m["command"]}` at {m["git_commit"]}{" (dirty)" if m.get("git_dirty") else ""}, '
                     f'{m["device"]}, {m["date"]}{wall}')
    if runs or sweep:
        records = list(runs.values()) + sweep
        secs = sum(r.get('train_seconds', 0) for r in records)
        timed = [r['eval_seconds'] for r in records if 'eval_seconds' in r]
        evaluation = (f'; evaluation time summed over the {len(timed)} runs that recorded it {sum(timed) / 60:.0f} min'
                      if timed else ' (evaluation not included: these runs did not record it)')
        lines.append(f'- {len(runs)} comparison runs and {len(sweep)} sweep runs; training time summed over runs '
                     f'{secs / 60:.0f} min{evaluation}')
    teacher = ref.get('teacher')
    if teacher:
        lines += ['', f'Teacher {teacher["name"]} ({teacher["params"]:,} parameters, {teacher["iters"]} iterations). '
                  'Bicubic and teacher PSNR: ' + ', '.join(
                      f'{s} {ref["bicubic"][s]["psnr"]:.2f} / {teacher["sets"][s]["psnr"]:.2f}' for s in sets)]
    if sweep:
        scope = meta.get('sweep_scope', 'first')
        lines += ['', '## Feature-weight sweep (validation split, first seed, '
                  f'{"every setting" if scope == "each" else "first setting"})', '',
                  '| setting | method | factor | weight | val PSNR |', '|---|---|---|---|---|']
        for rec in sorted(sweep, key=lambda r: (r['setting'], METHODS.index(r['method']), r['sweep_factor'])):
            lines.append(f'| {rec["setting"]} | {LABELS.get(rec["method"], rec["method"])} | {rec["sweep_factor"]:g} | '
                         f'{rec["feature_weight"]:g} | {rec["sets"][VAL_SET]["psnr"]:.3f} |')
        spreads = {}
        for rec in sweep:
            spreads.setdefault((rec['setting'], rec['method']), []).append(rec['sets'][VAL_SET]['psnr'])
        lines += ['', 'Spread of the validation PSNR over the swept weights: ' + ', '.join(
            f'{LABELS.get(m, m)} ({st}) {max(v) - min(v):.3f} dB' for (st, m), v in spreads.items()) +
            ' (each method uses its best; compare the spreads with the per-seed differences below).']
    summary = dict(settings={}, verdicts=[])
    deltas_for_plot = {}
    # every setting with records, in the profile's order (a later command may have run fewer settings)
    order = list(PROFILES.get(meta.get('profile'), {}).get('settings', ())) + list(meta.get('settings', []))
    settings = [st for i, st in enumerate(order) if st not in order[:i] and any(k[0] == st for k in runs)]
    for setting in settings:
        rows = {}
        for (s, method, seed), rec in runs.items():
            if s == setting:
                rows.setdefault(method, {})[seed] = rec
        if 'Scratch' not in rows:
            continue
        seeds = sorted(rows['Scratch'])
        first = rows['Scratch'][seeds[0]]
        lines += ['', f'## {setting} compression: {first["student"]} ({first["params"]:,} parameters), '
                  f'{first["iters"]} iterations, seeds {seeds}', '']
        # regime check
        sc = {s: mean_std([rows['Scratch'][k]['sets'][s]['psnr'] for k in seeds])[0] for s in sets}
        if teacher:
            checks = []
            for s in sets:
                gap_t, gap_b = teacher['sets'][s]['psnr'] - sc[s], sc[s] - ref['bicubic'][s]['psnr']
                checks.append(f'{s}: teacher - scratch {gap_t:+.2f} ({"ok" if gap_t >= 0.3 else "FAILS >= 0.3"}), '
                              f'scratch - bicubic {gap_b:+.2f} ({"ok" if gap_b >= 0.5 else "FAILS >= 0.5"})')
            lines += ['Regime: ' + '; '.join(checks), '']
        lines += ['| method | seeds | ' + ' | '.join(f'{s} mean ± std' for s in sets) + ' | Δ scratch (per seed) | '
                  'Δ Logits-KD (per seed) | step time / Logits-KD |', '|---' * (len(sets) + 5) + '|']
        setting_summary = {}
        for method in METHODS:
            if method not in rows:
                continue
            done = sorted(rows[method])
            cells = []
            for s in sets:
                mean, std = mean_std([rows[method][k]['sets'][s]['psnr'] for k in done])
                cells.append(f'{mean:.3f} ± {std:.3f}')
            paired = {}
            for base in ('Scratch', 'LogitsKD'):
                common = [k for k in done if k in rows.get(base, {})]
                paired[base] = {s: [rows[method][k]['sets'][s]['psnr'] - rows[base][k]['sets'][s]['psnr']
                                    for k in common] for s in sets}
            fmt = lambda d: '<br>'.join(f'{s}: ' + ' '.join(f'{v:+.3f}' for v in d[s]) for s in sets)  # noqa: E731
            ratio = ''
            if step and setting in step and method in step[setting] and 'LogitsKD' in step[setting]:
                ratio = f'{step[setting][method]["ms"] / step[setting]["LogitsKD"]["ms"]:.2f}'
            lines.append(f'| {LABELS.get(method, method)} | {len(done)} | ' + ' | '.join(cells) + ' | ' +
                         (fmt(paired['Scratch']) if method != 'Scratch' else '-') + ' | ' +
                         (fmt(paired['LogitsKD']) if method != 'LogitsKD' else '-') + f' | {ratio} |')
            setting_summary[method] = dict(seeds=done, psnr={s: mean_std([rows[method][k]['sets'][s]['psnr']
                                                                         for k in done]) for s in sets},
                                           delta_scratch=paired['Scratch'], delta_logits_kd=paired['LogitsKD'])
            if method != 'Scratch':
                deltas_for_plot[(setting, method)] = paired['Scratch']
        summary['settings'][setting] = setting_summary
        pairing_ok = all(len({rows[m][k]['pairing']['init_sha'] for m in rows if k in rows[m]}) == 1 and
                         len({rows[m][k]['pairing']['first_batch_sha'] for m in rows if k in rows[m]}) == 1
                         for k in seeds)
        lines += ['', f'Pairing check (same initial student and first batch for every method of a seed): '
                  f'{"holds" if pairing_ok else "BROKEN"}.', '', 'Verdicts:']
        for a, b in (('MiPKD', 'Scratch'), ('MiPKD', 'LogitsKD'), ('LogitsKD', 'Scratch'),
                     ('MiPKD_bpm_only', 'LogitsKD'), ('MiPKD_fpm_only', 'LogitsKD'),
                     ('MiPKD_bpm_quarter_batch', 'MiPKD'), ('FitNet', 'LogitsKD'), ('AT', 'LogitsKD'),
                     ('FAKD', 'LogitsKD'), ('RKD', 'LogitsKD'), ('MiPKD', 'FitNet'), ('MiPKD', 'FAKD')):
            if a in rows and b in rows:
                common = [k for k in rows[a] if k in rows[b]]
                if not common:
                    continue
                diffs = {s: [rows[a][k]['sets'][s]['psnr'] - rows[b][k]['sets'][s]['psnr'] for k in common]
                         for s in sets}
                line = f'{setting}: ' + verdict(LABELS.get(a, a), LABELS.get(b, b), diffs, sets)
                lines.append(f'- {line}')
                summary['verdicts'].append(line)
    if step:
        lines += ['', f'Step times: {step.get("note", "")}']
    text = '\n'.join(lines) + '\n'
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write(text)
    write_json(dict(meta=meta, summary=summary, runs=[runs[k] for k in sorted(runs)], sweep=sweep, step_times=step),
               os.path.join(out, 'results.json'))
    plot(deltas_for_plot, sets, settings, os.path.join(out, 'paired_deltas.png'))
    return text


def paired_verdict(name_a, name_b, diffs, sets):
    """One line comparing A with B per set from paired per-seed differences (``diffs``: set -> A - B per seed).

    A set is resolved when the mean difference exceeds two paired standard deviations (with at least two
    seeds); otherwise the difference is within the seed spread and called unresolved, not a win.
    """
    seeds = len(next(iter(diffs.values())))
    groups = {'higher': [], 'lower': [], 'unresolved': []}
    for s in sets:
        mean, std = mean_std(diffs[s])
        word = 'unresolved' if seeds < 2 or abs(mean) <= 2 * std else ('higher' if mean > 0 else 'lower')
        groups[word].append(f'{s} {mean:+.3f} ± {std:.3f}')
    n = len(sets)
    if len(groups['higher']) == n:
        head = f'{name_a} > {name_b} on every set'
    elif len(groups['lower']) == n:
        head = f'{name_a} < {name_b} on every set'
    elif not groups['higher'] and not groups['lower']:
        head = f'{name_a} vs {name_b}: unresolved'
    else:
        head = f'{name_a} vs {name_b}: mixed'
    body = '; '.join(f'{word} on {len(v)}/{n} ({", ".join(v)})' for word, v in groups.items() if v)
    per_seed = ', '.join(f'{s} ' + ' '.join(f'{d:+.3f}' for d in diffs[s]) for s in sets)
    return f'{head} ({seeds} seeds, mean ± paired std): {body}; per seed: {per_seed}'


def report_selection(out, meta):
    """The report of a profile with selection seeds (the converged study): provenance, teacher plateau, per
    setting the plateau and regime checks, the weight selection on the unreported seeds, the variants, the
    comparison at the reported seeds with paired verdicts against scratch, Logits-KD and MiPKD, learning
    curves (``curves_<setting>.png``) and paired deltas (``paired_deltas.png``)."""
    variants = []
    runs, sweep = collect(out, variants)
    ref, sets = meta.get('reference', {}), meta.get('sets', [])
    step = json.load(open(os.path.join(out, 'step_times.json'))) if os.path.isfile(
        os.path.join(out, 'step_times.json')) else None
    rule = meta.get('plateau_rule', PLATEAU_RULE)
    lines = [f'# Method benchmark at convergence, {meta.get("profile", "?")} profile (x{meta.get("scale", "?")}, PSNR '
             'dB on Y, crop_border = scale)', '',
             f'Reported seeds {meta.get("seeds")}; weights chosen on the selection seeds {meta["selection_seeds"]}, '
             'which are never reported. A paired difference is resolved when its mean exceeds two paired standard '
             'deviations over the reported seeds; otherwise it is called unresolved.', '']
    for m in meta.get('commands', []):
        wall = f', wall time {m["wall_seconds"] / 60:.1f} min' if 'wall_seconds' in m else ''
        lines.append(f'- `{m["command"]}` at {m["git_commit"]}{" (dirty)" if m.get("git_dirty") else ""}, '
                     f'{m["device"]}, {m["date"]}{wall}')
    records = list(runs.values()) + sweep + variants
    if records:
        lines.append(f'- {len(runs)} comparison runs, {len(sweep)} selection runs, {len(variants)} variant runs; '
                     f'training time summed {sum(r.get("train_seconds", 0) for r in records) / 3600:.1f} h, '
                     f'evaluation {sum(r.get("eval_seconds", 0) for r in records) / 3600:.1f} h')
    teacher = ref.get('teacher')
    if teacher:
        rise = teacher.get('plateau')
        lines += ['', f'Teacher {teacher["name"]} ({teacher["params"]:,} parameters, {teacher["iters"]} iterations'
                  + (f'; validation PSNR {rise[0]:+.3f} dB over its last quarter, iterations {rise[1]}-{rise[2]}'
                     if rise else '') + '). Bicubic / teacher PSNR: ' + ', '.join(
                      f'{s} {ref["bicubic"][s]["psnr"]:.2f} / {teacher["sets"][s]["psnr"]:.2f}' for s in sets)]
    summary = dict(settings={}, verdicts=[], selection={}, variants={})
    deltas_for_plot = {}
    order = list(PROFILES.get(meta.get('profile'), {}).get('settings', ())) + list(meta.get('settings', []))
    with_records = {k[0] for k in runs} | {r['setting'] for r in sweep + variants}
    settings = [st for i, st in enumerate(order) if st not in order[:i] and st in with_records]
    for setting in settings:
        rows = {}
        for (st, method, seed), rec in runs.items():
            if st == setting:
                rows.setdefault(method, {})[seed] = rec
        lines += ['', f'## {setting} compression']
        some = next(iter(rows.get('Scratch', {}).values()), None) or next(
            (r for r in sweep if r['setting'] == setting), None)
        if some:
            lines += ['', f'Student {some["student"]} ({some["params"]:,} parameters), {some["iters"]} iterations, '
                      f'batch {some["batch"]}, LR patch {some["lq_patch"]}.']
        # plateau and regime
        if 'Scratch' in rows:
            seeds = sorted(rows['Scratch'])
            rises = [rows['Scratch'][k].get('plateau') for k in seeds]
            if all(rises):
                mean_rise = sum(r[0] for r in rises) / len(rises)
                ok = mean_rise < rule['max_rise_db']
                lines += ['', f'Plateau: scratch\'s validation PSNR rose {mean_rise:+.3f} dB on average over the last '
                          f'quarter (iterations {rises[0][1]}-{rises[0][2]}; per seed ' +
                          ', '.join(f'{r[0]:+.3f}' for r in rises) +
                          f'): {"holds" if ok else "FAILS"} (< {rule["max_rise_db"]} dB).']
                summary.setdefault('plateau', {})[setting] = dict(mean_rise=mean_rise, per_seed=[r[0] for r in rises],
                                                                  holds=ok)
            if teacher:
                checks = []
                for s_ in sets:
                    sc = mean_std([rows['Scratch'][k]['sets'][s_]['psnr'] for k in seeds])[0]
                    best = max(mean_std([rows[m][k]['sets'][s_]['psnr'] for k in rows[m]])[0] for m in rows)
                    gap, gap_best = teacher['sets'][s_]['psnr'] - sc, teacher['sets'][s_]['psnr'] - best
                    checks.append(f'{s_} teacher - scratch {gap:+.2f}, teacher - best student {gap_best:+.2f} '
                                  f'({"ok" if gap_best >= 0.3 else "FAILS >= 0.3"})')
                lines += ['', 'Regime (converged students at least 0.3 dB below the teacher): ' + '; '.join(checks)
                          + '.']
        # selection
        swept = {}
        for rec in sweep:
            if rec['setting'] == setting:
                swept.setdefault(rec['method'], {}).setdefault(rec['sweep_factor'], {})[rec['seed']] = rec
        if swept:
            sel_seeds = meta['selection_seeds']
            lines += ['', f'Weight selection (validation split, selection seeds {sel_seeds}):', '',
                      '| method | factor | weight | ' + ' | '.join(f'seed {k}' for k in sel_seeds) + ' | mean |',
                      '|---' * (4 + len(sel_seeds)) + '|']
            for method in [m for m in METHODS if m in swept]:
                for f in sorted(swept[method]):
                    recs = swept[method][f]
                    vals = [recs[k]['sets'][VAL_SET]['psnr'] if k in recs else None for k in sel_seeds]
                    done = [v for v in vals if v is not None]
                    weight = next(iter(recs.values()))['feature_weight']
                    cells = ' | '.join('-' if v is None else f'{v:.3f}' for v in vals)
                    lines.append(f'| {LABELS.get(method, method)} | {f:g} | {weight:g} | {cells} | '
                                 f'{sum(done) / len(done):.3f} |')
            lines.append('')
            for method in [m for m in METHODS if m in swept]:
                complete = all(len(r) == len(sel_seeds) for r in swept[method].values()) and \
                    len(swept[method]) == len(meta.get('sweep_factors', ()))
                if not complete:
                    lines.append(f'- {LABELS.get(method, method)}: selection incomplete')
                    continue
                choice = choose_factor({f: [swept[method][f][k]['sets'][VAL_SET]['psnr'] for k in sel_seeds]
                                        for f in sorted(swept[method])})
                summary['selection'].setdefault(setting, {})[method] = choice
                lines.append(f'- {LABELS.get(method, method)}: factor {choice["chosen"]:g} ({choice["reason"]})')
        # variants on the selection seeds
        var = [r for r in variants if r['setting'] == setting]
        if var:
            lines += ['', 'Variants on the selection seeds (validation PSNR; a variant that beats its base at the '
                      'chosen weight by more than the base\'s seed-to-seed spread is run at the reported seeds):', '',
                      '| variant | seeds | mean | base at its chosen weight | difference | spread | promoted |',
                      '|---|---|---|---|---|---|---|']
            by_variant = {}
            for r in var:
                by_variant.setdefault(r['method'], []).append(r)
            for method in [m for m in METHODS if m in by_variant]:
                vals = [r['sets'][VAL_SET]['psnr'] for r in sorted(by_variant[method], key=lambda r: r['seed'])]
                base = summary['selection'].get(setting, {}).get(method.split('_')[0])
                mean = sum(vals) / len(vals)
                if base is None:
                    lines.append(f'| {LABELS.get(method, method)} | {len(vals)} | {mean:.3f} | - | - | - | - |')
                    continue
                base_mean = base['scores'][base['chosen']]
                promoted = mean - base_mean > base['spread'] and len(vals) == len(meta['selection_seeds'])
                summary['variants'].setdefault(setting, {})[method] = dict(mean=mean, base=base_mean,
                                                                           spread=base['spread'], promoted=promoted)
                lines.append(f'| {LABELS.get(method, method)} | {len(vals)} | {mean:.3f} | {base_mean:.3f} | '
                             f'{mean - base_mean:+.3f} | {base["spread"]:.3f} | {"yes" if promoted else "no"} |')
        if not rows:
            continue
        # the comparison
        lines += ['', '| method | seeds | ' + ' | '.join(f'{s_} mean ± std' for s_ in sets) + ' | Δ scratch (per seed) '
                  '| Δ MiPKD (per seed) | step time / Logits-KD |', '|---' * (len(sets) + 5) + '|']
        setting_summary, paired = {}, {}
        for method in [m for m in METHODS if m in rows]:
            done = sorted(rows[method])
            cells = [('{:.3f} ± {:.3f}').format(*mean_std([rows[method][k]['sets'][s_]['psnr'] for k in done]))
                     for s_ in sets]
            paired[method] = {}
            for base in ('Scratch', 'LogitsKD', 'MiPKD'):
                common = [k for k in done if k in rows.get(base, {})]
                if common and base != method:
                    paired[method][base] = {s_: [rows[method][k]['sets'][s_]['psnr'] - rows[base][k]['sets'][s_]['psnr']
                                                 for k in common] for s_ in sets}
            fmt = lambda d: '<br>'.join(f'{s_}: ' + ' '.join(f'{v:+.3f}' for v in d[s_]) for s_ in sets) if d else '-'  # noqa: E731,E501
            ratio = ''
            if step and setting in step and method in step[setting] and 'LogitsKD' in step[setting]:
                ratio = f'{step[setting][method]["ms"] / step[setting]["LogitsKD"]["ms"]:.2f}'
            weight = rows[method][done[0]].get('feature_weight')
            label = LABELS.get(method, method) + (f' (w {weight:g})' if weight is not None else '')
            lines.append(f'| {label} | {len(done)} | ' + ' | '.join(cells) + f' | {fmt(paired[method].get("Scratch"))} '
                         f'| {fmt(paired[method].get("MiPKD"))} | {ratio} |')
            setting_summary[method] = dict(seeds=done, feature_weight=weight,
                                           psnr={s_: mean_std([rows[method][k]['sets'][s_]['psnr'] for k in done])
                                                 for s_ in sets},
                                           **{f'delta_{b}': d for b, d in paired[method].items()})
            if 'Scratch' in paired[method]:
                deltas_for_plot[(setting, method)] = paired[method]['Scratch']
        summary['settings'][setting] = setting_summary
        all_seeds = sorted({k for m in rows for k in rows[m]})
        pairing_ok = all(len({rows[m][k]['pairing']['init_sha'] for m in rows if k in rows[m]}) == 1 and
                         len({rows[m][k]['pairing']['first_batch_sha'] for m in rows if k in rows[m]}) == 1
                         for k in all_seeds)
        lines += ['', f'Pairing check (same initial student and first batch for every method of a seed): '
                  f'{"holds" if pairing_ok else "BROKEN"}.', '', 'Verdicts:']
        for method in [m for m in METHODS if m in rows and m != 'Scratch']:
            for base in ('Scratch', 'LogitsKD', 'MiPKD'):
                if base in paired[method] and not (method == 'LogitsKD' and base == 'MiPKD'):
                    line = f'{setting}: ' + paired_verdict(LABELS.get(method, method), LABELS.get(base, base),
                                                           paired[method][base], sets)
                    lines.append(f'- {line}')
                    summary['verdicts'].append(line)
        curves = {LABELS.get(m, m): [rows[m][k].get('curve') or [] for k in sorted(rows[m])] for m in METHODS
                  if m in rows}
        plot_curves(curves, f'{setting} compression: validation PSNR of the EMA student, mean over the reported seeds',
                    os.path.join(out, f'curves_{setting}.png'))
        lines += ['', f'Learning curves: curves_{setting}.png.']
    if step:
        lines += ['', f'Step times: {step.get("note", "")}']
    text = '\n'.join(lines) + '\n'
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write(text)
    write_json(dict(meta=meta, summary=summary, runs=[runs[k] for k in sorted(runs)], sweep=sweep, variants=variants,
                    step_times=step), os.path.join(out, 'results.json'))
    plot(deltas_for_plot, sets, settings, os.path.join(out, 'paired_deltas.png'))
    return text


def plot(deltas, sets, settings, path):
    """One panel per setting: PSNR - scratch per method and test set, one point per seed, bar = mean."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    settings = [s for s in settings if any(k[0] == s for k in deltas)]
    if not settings:
        return
    fig, axes = plt.subplots(len(settings), 1, figsize=(11, 3.6 * len(settings)), squeeze=False)
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for ax, setting in zip(axes[:, 0], settings):
        methods = [m for m in METHODS if (setting, m) in deltas]
        width = 0.8 / max(len(sets), 1)
        for j, s in enumerate(sets):
            for i, m in enumerate(methods):
                vals = deltas[(setting, m)][s]
                x = i + (j - (len(sets) - 1) / 2) * width
                ax.bar(x, sum(vals) / len(vals), width * 0.9, color=colors[j % len(colors)], alpha=0.35,
                       label=s if i == 0 else None)
                ax.scatter([x] * len(vals), vals, s=12, color=colors[j % len(colors)], zorder=3)
        ax.axhline(0, color='black', linewidth=0.8)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([LABELS.get(m, m) for m in methods], rotation=20, ha='right', fontsize=8)
        ax.set_ylabel('PSNR - scratch (dB)')
        ax.set_title(f'{setting} compression: paired difference to scratch (dots: seeds, bars: mean)')
        ax.legend(fontsize=8, ncol=len(sets))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(curves, title, path):
    """Validation PSNR against iteration, the mean over seeds per label (``curves``: label -> list of curves);
    left the whole run, right its second half."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for label, runs in curves.items():
        runs = [[p for p in c if 'val_psnr' in p] for c in runs]
        runs = [c for c in runs if c]
        if not runs:
            continue
        length = min(len(c) for c in runs)
        iters = [runs[0][i]['iter'] for i in range(length)]
        mean = [sum(c[i]['val_psnr'] for c in runs) / len(runs) for i in range(length)]
        for ax, lo in zip(axes, (0, length // 2)):
            ax.plot(iters[lo:], mean[lo:], marker='.', markersize=3, label=f'{label} ({len(runs)})')
    for ax, part in zip(axes, ('whole run', 'second half')):
        ax.set_xlabel('iteration')
        ax.set_ylabel('validation PSNR (dB), mean over seeds')
        ax.set_title(part, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main ----------------------------------------------------------------------------------------------
def prepare_eval_roots(args, val_paths, out):
    """Folders to evaluate on: the test sets, and the validation split as set 'Val'."""
    roots = {s: args.test_root for s in args.sets}
    if val_paths:
        val_hr = os.path.join(out, 'val_split', VAL_SET, 'HR')
        os.makedirs(val_hr, exist_ok=True)
        for p in val_paths:
            dst = os.path.join(val_hr, os.path.basename(p))
            if not os.path.exists(dst):
                shutil.copyfile(p, dst)
        roots[VAL_SET] = os.path.join(out, 'val_split')
    return roots


@contextlib.contextmanager
def locked_meta(path):
    """meta.json as a dict, read and written back under an exclusive lock (workers share it)."""
    import fcntl
    with open(path + '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        meta = json.load(open(path)) if os.path.isfile(path) else dict(commands=[], reference={})
        yield meta
        write_json(meta, path)


def claim(path):
    """Claim a run for this process (``<record>.claim`` holding host and pid, created exclusively); a claim of
    a process that no longer runs on this host is taken over. Returns whether this process holds it."""
    import socket
    claim_path = path + '.claim'
    me = f'{socket.gethostname()} {os.getpid()}'
    os.makedirs(os.path.dirname(claim_path), exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(claim_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                host, pid = open(claim_path).read().split()
            except (OSError, ValueError):
                return False
            if host != socket.gethostname() or pid_alive(int(pid)):
                return False
            with contextlib.suppress(OSError):
                os.remove(claim_path)
            continue
        with os.fdopen(fd, 'w') as f:
            f.write(me)
        return True
    return False


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release(path):
    with contextlib.suppress(OSError):
        os.remove(path + '.claim')


class Job:
    """One run of the plan. A sweep job has its factor; a main or variant job uses the sweep's choice, known
    once ``ready()`` (see :meth:`Plan.chosen_factor`)."""

    def __init__(self, plan, setting, method, seed, role, sets, factor=None, ready=None):
        self.plan, self.setting, self.method, self.seed, self.role, self.sets = plan, setting, method, seed, role, sets
        self._factor = factor
        self.ready = ready or (lambda: plan.chosen_factor(method, setting) is not None)

    def dropped(self):
        """A variant's run at a reported seed once the variant lost on the selection seeds."""
        return (self.role == 'main' and self.method in self.plan.profile.get('variants', ())
                and self.plan.promoted(self.setting, self.method) is False)

    def args(self):
        """``(setting, method, seed, factor, role, sets)`` for run_spec / do_run."""
        factor = self._factor if self._factor is not None else self.plan.chosen_factor(self.method, self.setting) or 1
        return self.setting, self.method, self.seed, factor, self.role, self.sets


def selection_plan(plan, eval_sets, val_only):
    """Jobs of a profile with selection seeds, setting by setting so that a partial study has whole settings:
    the sweep on the selection seeds, the hypothesis variants there, the comparison at the reported seeds once
    the weights are chosen, and the variants that won on the selection seeds at the reported seeds."""
    jobs = []
    for setting in plan.settings:
        for seed in plan.sweep_seeds:
            for method in plan.methods(setting, 'main'):
                if plan.swept(setting, method):
                    jobs += [Job(plan, setting, method, seed, 'sweep', val_only, f, lambda: True)
                             for f in plan.args.sweep_factors]
        jobs += [Job(plan, setting, v, seed, 'variant', val_only) for st, v, seed in plan.variant_runs()
                 if st == setting]
        jobs += [Job(plan, setting, m, seed, 'main', eval_sets) for st, m, seed in plan.main_runs() if st == setting]
        jobs += [Job(plan, setting, v, seed, 'main', eval_sets,
                     ready=lambda v=v, st=setting: plan.promoted(st, v) is True)
                 for seed in plan.seeds for v in plan.methods(setting, 'variant')]
    return jobs


def first_seed_sweep_plan(plan, eval_sets, val_only):
    """Jobs of the older profiles: the sweep on the first reported seed, then the comparison."""
    jobs = [Job(plan, setting, m, seed, 'sweep', val_only, f, lambda: True)
            for setting, m, seed, f in plan.sweep_runs()]
    return jobs + [Job(plan, setting, m, seed, 'main', eval_sets) for setting, m, seed in plan.main_runs()]


def reuse_sweep_run(plan, setting, method, seed, factor, out):
    """The chosen sweep run of the first seed is that seed's comparison run: copy its record and weights."""
    sweep_path = plan.record_path(setting, method, seed, factor)
    main_path = plan.record_path(setting, method, seed)
    main_rec, sweep_rec = plan.load(main_path), plan.load(sweep_path)
    if sweep_rec is not None and (main_rec is None or main_rec['options_sha'] != sweep_rec['options_sha']):
        for suffix in ('.pth', '_extra.pth'):
            if os.path.isfile(os.path.splitext(sweep_path)[0] + suffix):
                shutil.copyfile(os.path.splitext(sweep_path)[0] + suffix, os.path.splitext(main_path)[0] + suffix)
        rec = json.load(open(sweep_path))
        rec['weights'] = os.path.relpath(os.path.splitext(main_path)[0] + '.pth', out)
        if rec.get('extra_weights'):
            rec['extra_weights'] = os.path.relpath(os.path.splitext(main_path)[0] + '_extra.pth', out)
        rec['sweep_factor'] = None
        write_json(rec, main_path)


def train_teacher(args, plan, t_opt, teacher_ckpt, data, validator, roots, eval_sets, device, this_meta):
    """Train the profile's teacher, store its EMA weights, evaluation, learning curve and plateau check beside
    the checkpoint (``<name>.json``, ``<name>.md``, ``<name>_curve.png``)."""
    scale = t_opt['scale']
    batch = t_opt['datasets']['train']['batch_size_per_gpu']
    lq_patch = t_opt['datasets']['train']['gt_size'] // scale
    iters = args.teacher_iters or t_opt['train']['total_iter']
    print(f'Training the teacher ({os.path.relpath(plan.teacher_file, REPO)}, {iters} iterations)', flush=True)
    model, seconds, _, _, curve = train(prepare_model_options(t_opt, iters, device, plan.out, None, 0, args.bf16,
                                                              args.channels_last), data, batch, device, 'teacher',
                                        validator=validator, curve_points=args.curve_points)
    ref = dict(name=os.path.basename(teacher_ckpt), params=sum(p.numel() for p in model.net_g.parameters()),
               iters=iters, seconds=round(seconds, 1), option_file=os.path.relpath(plan.teacher_file, REPO),
               command=this_meta['command'], git_commit=this_meta['git_commit'], device=this_meta['device'],
               curve=curve, plateau=plateau(curve))
    os.makedirs(os.path.dirname(teacher_ckpt), exist_ok=True)
    save_weights(model.net_g_ema, teacher_ckpt + '.tmp', half=args.half_teacher)
    del model
    ref['sets'] = evaluate_net('teacher', teacher_ckpt + '.tmp', t_opt['network_g'], roots, eval_sets, device, scale)
    stem = os.path.splitext(teacher_ckpt)[0]
    rise = ref['plateau']
    plateau_line = '' if rise is None else (
        f'\n\nPlateau check: the validation PSNR (EMA weights, the {args.val_count} held-out images) rose '
        f'{rise[0]:+.3f} dB from iteration {rise[1]} to {rise[2]} (the last quarter); learning curve in '
        f'{os.path.basename(stem)}_curve.png.')
    with open(stem + '.md', 'w') as f:
        f.write(f'# {os.path.basename(teacher_ckpt)}\n\nEDSR x{scale} teacher of the method benchmark '
                f'({args.profile} profile), trained by `{this_meta["command"]}` from {ref["option_file"]} '
                f'({iters} iterations, batch {batch}, LR patch {lq_patch}, {seconds:.0f} s on '
                f'{this_meta["device"]}, commit {this_meta["git_commit"]}), on T91 + BSD200 without the '
                f'{args.val_count} validation images. EMA weights (params_ema)'
                f'{", half precision" if args.half_teacher else ""}.{plateau_line}\n\n'
                '| set | PSNR | SSIM |\n|---|---|---|\n' +
                ''.join(f'| {s} | {v["psnr"]:.2f} | {v["ssim"]:.4f} |\n' for s, v in ref['sets'].items()))
    write_json(ref, stem + '.json')
    if curve:
        plot_curves({'teacher': [curve]}, f'Teacher {ref["name"]}: validation PSNR (EMA)', stem + '_curve.png')
    os.replace(teacher_ckpt + '.tmp', teacher_ckpt)


def run(args):
    import torch

    import mixprior_plugin  # noqa: F401  (registers the models)
    from mixprior_plugin.utils.provenance import run_meta
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device('cuda' if torch.cuda.is_available() and args.device != 'cpu' else 'cpu')
    if args.bf16 and device.type != 'cuda':
        raise BenchmarkError('--bf16 needs a GPU')
    plan = Plan(args)
    out = plan.out
    os.makedirs(out, exist_ok=True)
    index, count = (int(v) for v in args.worker.split('/'))
    this_meta = dict(run_meta(device), threads=torch.get_num_threads(), worker=args.worker)
    meta_path = os.path.join(out, 'meta.json')
    with locked_meta(meta_path) as meta:
        meta.update(profile=args.profile, settings=plan.settings, seeds=plan.seeds, sets=list(args.sets),
                    val_count=args.val_count, sweep_factors=list(args.sweep_factors), sweep_scope=args.sweep_scope,
                    smoke=args.smoke, selection_seeds=plan.selection_seeds, curve_points=args.curve_points,
                    plateau_rule=PLATEAU_RULE)
        meta['commands'].append(this_meta)
    invocation_start = time.time()

    train_paths, val_paths = split_paths(args.train_dirs, args.val_count)
    roots = prepare_eval_roots(args, val_paths, out)
    eval_sets = list(args.sets) + ([VAL_SET] if val_paths else [])
    t_opt, scale, batch, lq_patch, teacher_ckpt = teacher_setup(plan, args)
    with locked_meta(meta_path) as meta:
        meta.update(scale=scale)
    print(f'Loading {len(train_paths)} training images ({len(val_paths)} held out for validation)', flush=True)
    data = InMemoryPairs(train_paths, device, lq_patch, scale, workers=args.data_workers)

    validator = ValidationCurve(val_paths, scale, device) if val_paths and args.curve_points else None
    needs_teacher = args.teacher_only or any(m != 'Scratch' for st in plan.settings for m in plan.methods(st))

    # teacher: trained once, by worker 0; others wait for it. Scratch-only plans do not need it.
    if needs_teacher and not os.path.isfile(teacher_ckpt):
        if index != 0:
            print(f'Waiting for worker 0 to train the teacher ({teacher_ckpt})', flush=True)
            while not os.path.isfile(teacher_ckpt):
                time.sleep(20)
        else:
            train_teacher(args, plan, t_opt, teacher_ckpt, data, validator, roots, eval_sets, device, this_meta)
    if args.teacher_only:
        return report(out)
    meta = json.load(open(meta_path))
    if index == 0 and ('bicubic' not in meta['reference'] or
                       ('teacher' not in meta['reference'] and os.path.isfile(teacher_ckpt))):
        ref = None
        if os.path.isfile(teacher_ckpt):
            info = os.path.splitext(teacher_ckpt)[0] + '.json'
            ref = json.load(open(info)) if os.path.isfile(info) else dict(
                name=os.path.basename(teacher_ckpt), params=None, iters=None)
            missing = [s for s in eval_sets if s not in ref.get('sets', {})]
            if missing:
                ref.setdefault('sets', {}).update(evaluate_net('teacher', teacher_ckpt, t_opt['network_g'], roots,
                                                               missing, device, scale))
            ref.pop('curve', None)  # kept beside the checkpoint
        bicubic = evaluate_net('bicubic', None, None, roots, eval_sets, device, scale)
        with locked_meta(meta_path) as meta:
            meta['reference'].update(bicubic=bicubic, **({'teacher': ref} if ref else {}))

    def run_spec(setting, method, seed, factor, role):
        """(record path, options, model options, options key) of one run."""
        path = plan.record_path(setting, method, seed, factor if role == 'sweep' else None)
        opt = plan.run_options(setting, method, factor)
        iters = args.iters or opt['train']['total_iter']
        mopt = prepare_model_options(opt, iters, device, out, teacher_ckpt, seed, args.bf16, args.channels_last)
        key = sha(dict(opt=mopt, settings=resolved_settings(mopt), batch=batch, lq_patch=lq_patch,
                       train=[os.path.basename(p) for p in train_paths], bf16=args.bf16))
        return path, opt, mopt, key

    def is_done(setting, method, seed, factor, role, sets_needed):
        path, _, _, key = run_spec(setting, method, seed, factor, role)
        rec = plan.load(path)
        return rec is not None and rec['options_sha'] == key and all(s in rec['sets'] for s in sets_needed)

    def do_run(setting, method, seed, factor, role, sets_needed):
        path, opt, mopt, key = run_spec(setting, method, seed, factor, role)
        iters = mopt['train']['total_iter']
        rec = plan.load(path)
        if rec is None or rec['options_sha'] != key:
            if rec is not None:
                print(f'{path}: options changed since it ran; running again', flush=True)
            model, seconds, step_ms, pairing, curve = train(
                mopt, data, batch, device,
                f'{setting}/{method}/seed{seed}' + (f'/w{factor:g}' if role == 'sweep' else ''),
                validator=validator, curve_points=args.curve_points)
            ckpt = os.path.splitext(path)[0] + '.pth'
            save_weights(model.net_g_ema, ckpt)
            extras = None
            if getattr(model, 'net_extra', None) is not None and len(list(model.net_extra.parameters())):
                # MiPKD's mixers (and any connector): small, kept so the run can be studied afterwards
                extras = os.path.splitext(path)[0] + '_extra.pth'
                save_weights(model.get_bare_model(model.net_extra), extras, key='params')
            where = feature_weight_path(opt)
            weight = None
            if where is not None:
                term = opt['train'][where[0]]
                weight = (term[where[1]] if len(where) > 1 else term).get('loss_weight', 1.0)
            rec = dict(setting=setting, method=method, seed=seed, role=role,
                       sweep_factor=factor if role == 'sweep' else None, feature_weight=weight,
                       option_file=os.path.relpath(plan.files[setting][method], REPO), options=mopt,
                       resolved_settings=resolved_settings(mopt), options_sha=key,
                       student=f'EDSR {opt["network_g"]["num_feat"]}x{opt["network_g"]["num_block"]}', iters=iters,
                       batch=batch, lq_patch=lq_patch, params=sum(p.numel() for p in model.net_g.parameters()),
                       train_seconds=round(seconds, 1), step_ms=round(step_ms, 2), pairing=pairing,
                       weights=os.path.relpath(ckpt, out),
                       extra_weights=os.path.relpath(extras, out) if extras else None, curve=curve,
                       plateau=plateau(curve), provenance=this_meta, sets={})
            del model
        missing = [s for s in sets_needed if s not in rec['sets']]
        if missing:
            eval_start = time.time()
            rec['sets'].update(evaluate_net(method, os.path.join(out, rec['weights']), rec['options']['network_g'],
                                            roots, missing, device, scale))
            rec['eval_seconds'] = round(rec.get('eval_seconds', 0) + time.time() - eval_start, 1)
        rec['role'] = role
        write_json(rec, path)
        return rec

    start = time.time()

    def out_of_time():
        return args.time_limit and time.time() - start > args.time_limit

    val_only = [VAL_SET] if val_paths else list(args.sets)
    if plan.selection_seeds:
        jobs = selection_plan(plan, eval_sets, val_only)
    else:
        jobs = first_seed_sweep_plan(plan, eval_sets, val_only)
    # Workers share the job list: each takes the first job that is ready (its sweep decided), not done and not
    # claimed by a live process (a claim file beside the record; a dead process's claim is taken over).
    while not out_of_time():
        todo = [j for j in jobs if not j.dropped() and not (j.ready() and is_done(*j.args()))]
        if not todo:
            break
        job = next((j for j in todo if j.ready() and claim(run_spec(*j.args()[:5])[0])), None)
        if job is None:
            print(f'{len(todo)} runs left, none ready or unclaimed: waiting for other workers', flush=True)
            time.sleep(30)
            continue
        setting, method, seed, factor, role, sets_needed = job.args()
        path = run_spec(setting, method, seed, factor, role)[0]
        try:
            if not plan.selection_seeds and role == 'main' and (factor != 1 or plan.swept(setting, method)):
                reuse_sweep_run(plan, setting, method, seed, factor, out)
            do_run(setting, method, seed, factor, role, sets_needed)
        finally:
            release(path)
    with locked_meta(meta_path) as meta:  # this invocation's wall time, for the report's provenance
        for entry in meta['commands']:
            if all(entry.get(k) == this_meta[k] for k in ('command', 'date', 'worker', 'git_commit')):
                entry['wall_seconds'] = round(time.time() - invocation_start, 1)
    return report(out)


def time_steps(args):
    """Quiet step-time measurement of every method (seed 0, chosen weights) into step_times.json."""
    import torch

    import mixprior_plugin  # noqa: F401
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device('cuda' if torch.cuda.is_available() and args.device != 'cpu' else 'cpu')
    plan = Plan(args)
    train_paths, _ = split_paths(args.train_dirs, args.val_count)
    _, scale, batch, lq_patch, teacher_ckpt = teacher_setup(plan, args)
    data = InMemoryPairs(train_paths[:40], device, lq_patch, scale, workers=args.data_workers)
    result = dict(note=f'median of {args.time_steps} steps after 3 warm-up steps, {torch.get_num_threads()} '
                  f'torch threads, measured alone (not during the training runs)')
    for setting in plan.settings:
        result[setting] = {}
        for method in plan.methods(setting):
            factor = plan.chosen_factor(method, setting) or 1
            opt = prepare_model_options(plan.run_options(setting, method, factor), 10, device, plan.out, teacher_ckpt,
                                        0, args.bf16, args.channels_last)
            from basicsr.models import build_model
            model = build_model(opt)
            gen = torch.Generator().manual_seed(0)
            times = []
            for it in range(1, args.time_steps + 4):
                model.feed_data(dict(zip(('lq', 'gt'), data.batch(batch, gen))))
                t = time.perf_counter()
                model.optimize_parameters(it)
                if device.type == 'cuda':
                    torch.cuda.synchronize()
                if it > 3:
                    times.append(time.perf_counter() - t)
            times.sort()
            result[setting][method] = dict(ms=round(1000 * times[len(times) // 2], 2),
                                           spread_ms=[round(1000 * times[0], 2), round(1000 * times[-1], 2)])
            print(f'{setting}/{method}: {result[setting][method]["ms"]} ms', flush=True)
    write_json(result, os.path.join(plan.out, 'step_times.json'))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='output folder (commit it under benchmarks/results/)')
    parser.add_argument('--profile', default='cpu', choices=sorted(PROFILES))
    parser.add_argument('--settings', nargs='+', help='default: all of the profile')
    parser.add_argument('--methods', nargs='+', choices=METHODS, help='default: all with an option file')
    parser.add_argument('--seeds', nargs='+', type=int, help='reported seeds (default: the profile\'s)')
    parser.add_argument('--selection-seeds', nargs='*', type=int,
                        help='seeds of the weight sweep and the variants, never reported (default: the profile\'s; '
                        'none: the sweep runs on the first reported seed)')
    parser.add_argument('--sweep-factors', nargs='+', type=float,
                        help='factors of the feature-term weight tried on the validation split (1 alone: no sweep; '
                        'default: the profile\'s)')
    parser.add_argument('--sweep-scope', choices=('first', 'each'), default='first',
                        help='sweep on the first setting and use its choice everywhere (default), or sweep and '
                        'choose per setting')
    parser.add_argument('--data-root', default='datasets',
                        help='folder holding T91/HR, BSD200/HR and the test sets (default: datasets/)')
    parser.add_argument('--train-dirs', nargs='+', help='HR training folders (default: <data-root>/T91/HR '
                        '<data-root>/BSD200/HR; the validation split comes from the last)')
    parser.add_argument('--val-count', type=int, default=10, help='images of the last training folder held out')
    parser.add_argument('--test-root', help='folder with <Set>/HR (+ LR_bicubic/X<scale>); default: --data-root')
    parser.add_argument('--sets', nargs='+', default=['Set5', 'Set14', 'BSD100', 'Urban100'])
    parser.add_argument('--teacher-ckpt', help='teacher weights (default: the option files\' pretrain_network_t; '
                        'trained and stored there when missing)')
    parser.add_argument('--iters', type=int, help='student iterations (default: the option files\')')
    parser.add_argument('--teacher-iters', type=int, help='teacher iterations (default: its option file\'s)')
    parser.add_argument('--half-teacher', action='store_true', help='store the teacher in half precision')
    parser.add_argument('--threads', type=int, help='torch threads per process (default: the profile\'s)')
    parser.add_argument('--worker', default='0/1', help='i/n: this process runs every n-th run from the i-th')
    parser.add_argument('--data-workers', type=int, help='processes for the LR downscaling')
    parser.add_argument('--bf16', action='store_true', help='train.amp: bf16 in every run (GPU)')
    parser.add_argument('--channels-last', action='store_true', help='train.channels_last: true in every run')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu'))
    parser.add_argument('--time-limit', type=float, help='seconds after which no new run starts')
    parser.add_argument('--time-steps', type=int, help='measure step times (this many steps per method) and exit')
    parser.add_argument('--report-only', action='store_true', help='only assemble the report from the records')
    parser.add_argument('--teacher-only', action='store_true', help='train (or check) the teacher, then stop')
    parser.add_argument('--curve-points', type=int,
                        help='learning-curve points per run (validation PSNR and mean loss terms; 0: none; '
                        'default: the profile\'s)')
    parser.add_argument('--smoke', action='store_true', help='tiny nets, a few iterations (CPU test)')
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    args.seeds = args.seeds if args.seeds is not None else list(profile['seeds'])
    args.threads = args.threads if args.threads is not None else profile['threads']
    args.curve_points = args.curve_points if args.curve_points is not None else profile.get('curve_points', 0)
    args.sweep_factors = args.sweep_factors or list(profile['sweep_factors'])
    args.train_dirs = args.train_dirs or [os.path.join(args.data_root, 'T91', 'HR'),
                                          os.path.join(args.data_root, 'BSD200', 'HR')]
    args.test_root = args.test_root or args.data_root
    if not args.worker.count('/') == 1 or not all(v.isdigit() for v in args.worker.split('/')) or \
            int(args.worker.split('/')[0]) >= int(args.worker.split('/')[1]):
        parser.error(f'--worker must be i/n with 0 <= i < n, got {args.worker!r}')
    try:
        if args.smoke:
            args.iters = args.iters or 3
            args.teacher_iters = args.teacher_iters or 4
            args.seeds = args.seeds[:2]
        if args.time_steps:
            return time_steps(args)
        if args.report_only:
            text = report(os.path.abspath(args.out))
            print(text)
            return text
        text = run(args)
        print(text, flush=True)
        return json.load(open(os.path.join(os.path.abspath(args.out), 'results.json')))
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        sys.exit(f'benchmark: {err}')


if __name__ == '__main__':
    main()
