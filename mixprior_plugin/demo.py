"""The README's main job: distil a small SR student on CPU, from photos scikit-image ships.

Usage::

    python -m mixprior_plugin.demo [--out demo_output] [--quick]

1. Writes a paired data set (MATLAB-bicubic LR) from scikit-image's sample photos: most for
   training (cut into sub-images), four held out for testing. No downloads.
2. Takes the small EDSR teacher the project trained on these photos (``pretrained/``, made by
   ``--train-teacher`` with this module's options); ``--train-teacher`` trains it anew
   (``mixprior-train``, a few minutes more).
3. Trains the same small EDSR student three ways with the same data, seed, initialisation and
   number of iterations: from scratch (SRModel), Logits-KD (KDModel) and MiPKD (MiPKDModel).
4. Evaluates bicubic, the teacher and the three students on the held-out photos (PSNR/SSIM on Y,
   crop_border = scale, BasicSR's metrics), prints a table and writes a PNG plot.

Everything is written under one output folder (options, experiments, tb_logger, results);
``--quick`` is a smoke run of a few iterations. Times measured on 2 idle CPU cores are in the README.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import cv2
import numpy as np
import torch
import yaml

from mixprior_plugin import options_schema
from mixprior_plugin.evaluation import Method, build_method, evaluate
from mixprior_plugin.utils.image_io import imresize_uint8
from mixprior_plugin.utils.provenance import run_meta

SCALE = 4  # x4: bicubic is weak, so a student trained for minutes clearly beats it
TRAIN_IMAGES = ('astronaut', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry', 'retina', 'brick',
                'grass', 'gravel', 'moon', 'cell')
TEST_IMAGES = ('chelsea', 'camera', 'coins', 'clock')
TEST_SET = 'SkimageHeldOut'


def edsr(feat, blocks):
    return dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=feat, num_block=blocks, upscale=SCALE, res_scale=1,
                img_range=255.)


TEACHER = edsr(32, 8)
# The teacher the default run reuses: EMA weights of `--train-teacher`'s teacher (its options: run_options()).
PRETRAINED_TEACHER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pretrained',
                                  'demo_EDSR_C32B8_x4_skimage.pth')
STUDENT = edsr(16, 4)
# iterations (teacher, each student) and LR patch / batch, per budget
BUDGETS = {'default': dict(teacher=1500, student=2000, lq_patch=24, batch=8),
           'quick': dict(teacher=6, student=4, lq_patch=16, batch=2)}


def load_sample(name):
    """A scikit-image sample as a uint8 BGR image (grayscale expanded to 3 channels)."""
    import skimage.data  # only the data step needs it (slow to import)
    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return cv2.cvtColor(img[..., :3].astype(np.uint8), cv2.COLOR_RGB2BGR)


def write_pairs(names, hr_dir, lr_dir, scale, crop=None, lr_suffix=''):
    """HR (cropped to a multiple of scale) and MATLAB-bicubic LR PNGs.

    With ``crop``, each photo is cut into ``crop`` x ``crop`` HR sub-images (step crop/2) so the
    training loader reads small files (BasicSR's extract_subimages idea).
    """
    os.makedirs(hr_dir, exist_ok=True)
    os.makedirs(lr_dir, exist_ok=True)
    for name in names:
        img = load_sample(name)
        h, w = img.shape[:2]
        if crop:
            steps = [(y, x) for y in range(0, h - crop + 1, crop // 2) for x in range(0, w - crop + 1, crop // 2)]
            tiles = [(f'{name}_s{i:03d}', img[y:y + crop, x:x + crop]) for i, (y, x) in enumerate(steps)]
        else:
            tiles = [(name, img[:h - h % scale, :w - w % scale])]
        for tile_name, hr in tiles:
            cv2.imwrite(os.path.join(hr_dir, f'{tile_name}.png'), hr)
            cv2.imwrite(os.path.join(lr_dir, f'{tile_name}{lr_suffix}.png'), imresize_uint8(hr, 1 / scale))


def base_options(name, model_type, network_g, data, budget, iters):
    hr, lr = data
    return dict(
        name=name, model_type=model_type, scale=SCALE, num_gpu=0, manual_seed=0,
        datasets=dict(train=dict(name='skimage_train', type='PairedImageDataset', dataroot_gt=hr, dataroot_lq=lr,
                                 io_backend=dict(type='disk'), gt_size=budget['lq_patch'] * SCALE, use_hflip=True,
                                 use_rot=True, num_worker_per_gpu=0, batch_size_per_gpu=budget['batch'],
                                 dataset_enlarge_ratio=1, prefetch_mode=None)),
        network_g=network_g,
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(ema_decay=0.99, optim_g=dict(type='Adam', lr=1e-3, weight_decay=0, betas=[0.9, 0.99]),
                   scheduler=dict(type='MultiStepLR', milestones=[int(iters * 0.75)], gamma=0.2), total_iter=iters,
                   warmup_iter=-1, pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean')),
        logger=dict(print_freq=max(iters // 5, 1), save_checkpoint_freq=iters, use_tb_logger=True,
                    wandb=dict(project=None)))


def run_options(data, budget, teacher_ckpt):
    """{label: options} of the four runs; the students differ only in model type and KD terms."""
    runs = {'teacher': base_options('demo_teacher_EDSR_C32B8', 'SRModel', TEACHER, data, budget, budget['teacher'])}
    n = budget['student']
    runs['scratch'] = base_options('demo_scratch_EDSR_C16B4', 'SRModel', STUDENT, data, budget, n)
    teacher = dict(network_t=TEACHER)
    teacher_path = dict(pretrain_network_t=teacher_ckpt, teacher_param_key='params_ema')
    logits = base_options('demo_logitskd_EDSR_C16B4', 'KDModel', STUDENT, data, budget, n)
    logits.update(teacher)
    logits['path'].update(teacher_path)
    logits['train']['kd_opt'] = options_schema.default('train', 'kd_opt')
    runs['Logits-KD'] = logits
    mipkd = base_options('demo_mipkd_EDSR_C16B4', 'MiPKDModel', STUDENT, data, budget, n)
    mipkd.update(teacher)
    mipkd['path'].update(teacher_path)
    mipkd['distill'] = dict(num_stages=2)  # 2 blocks per stage for this 4-block student (CPU budget)
    mipkd['train'].update(options_schema.loss_defaults('MiPKDModel'))  # kd, fpm, bpm, ae: the defaults, written out
    runs['MiPKD'] = mipkd
    return runs


def progress_of(line):
    """(iteration, losses text) of a BasicSR training log line, else None.

    BasicSR prints ``[epoch:  1, iter:   1,200, lr:(1.000e-03,)] [eta: ...] l_pix: ...``: the
    iteration has thousands separators.
    """
    found = re.search(r'\[epoch:\s*[\d,]+, iter:\s*([\d,]+),', line)
    if found is None:
        return None
    return int(found.group(1).replace(',', '')), line.rsplit(']', 1)[-1].strip()


def run_training(label, opt, out):
    """Write the option file and run mixprior-train on it, streaming its progress lines."""
    opt_path = os.path.join(out, 'options', f'{opt["name"]}.yml')
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    cmd = [sys.executable, '-m', 'mixprior_plugin.train', '-opt', opt_path]
    print(f'    $ mixprior-train -opt {os.path.relpath(opt_path, out)}', flush=True)
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))
    tail = []
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        progress = progress_of(line)
        if progress is not None:
            print(f'    [{label}] iter {progress[0]}/{opt["train"]["total_iter"]}  {progress[1]}', flush=True)
    if proc.wait() != 0:
        raise RuntimeError(f'{label} training failed: {" ".join(cmd)}\n' + ''.join(tail))
    print(f'    [{label}] done in {time.time() - start:.0f} s', flush=True)
    return os.path.join(out, 'experiments', opt['name'], 'models', 'net_g_latest.pth')


def plot_psnr(rows, path):
    import matplotlib  # only the plot needs it (slow to import)
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    labels = list(rows)
    values = [rows[k]['psnr'] for k in labels]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bars = ax.bar(labels, values, color=['#999999', '#444444', '#8cb4d9', '#4a7fb0', '#d9534f'][:len(labels)])
    ax.bar_label(bars, fmt='%.2f')
    ax.set_ylim(min(values) - 1.0, max(values) + 0.5)
    ax.set_ylabel('PSNR (dB, Y)')
    ax.set_title(f'x{SCALE} SR on held-out scikit-image photos')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='demo_output', help='output folder (default: demo_output)')
    parser.add_argument('--quick', action='store_true', help='a few iterations only (smoke test)')
    parser.add_argument('--train-teacher', action='store_true',
                        help=f'train the teacher in this run instead of reusing {os.path.relpath(PRETRAINED_TEACHER)}')
    args = parser.parse_args(argv)
    budget = BUDGETS['quick' if args.quick else 'default']
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, 'options'), exist_ok=True)
    start = time.time()
    print(f'[1/4] Data from scikit-image sample photos -> {out}/data (x{SCALE}, held out: '
          f'{", ".join(TEST_IMAGES)})', flush=True)
    train = (os.path.join(out, 'data', 'train', 'HR'), os.path.join(out, 'data', 'train', f'LR_bicubic_X{SCALE}'))
    write_pairs(TRAIN_IMAGES, *train, SCALE, crop=96)
    test_root = os.path.join(out, 'data', 'test')
    write_pairs(TEST_IMAGES, os.path.join(test_root, TEST_SET, 'HR'),
                os.path.join(test_root, TEST_SET, 'LR_bicubic', f'X{SCALE}'), SCALE, lr_suffix=f'x{SCALE}')

    train_teacher = args.train_teacher or not os.path.isfile(PRETRAINED_TEACHER)
    teacher_ckpt = (os.path.join(out, 'experiments', 'demo_teacher_EDSR_C32B8', 'models', 'net_g_latest.pth')
                    if train_teacher else PRETRAINED_TEACHER)
    runs = run_options(train, budget, teacher_ckpt)
    if train_teacher:
        print(f'[2/4] Teacher EDSR 32 ch x 8 blocks, {budget["teacher"]} iterations', flush=True)
        ckpts = {'teacher': run_training('teacher', runs.pop('teacher'), out)}
    else:
        runs.pop('teacher')
        print(f'[2/4] Teacher EDSR 32 ch x 8 blocks: {os.path.relpath(PRETRAINED_TEACHER)} (trained on these photos '
              f'with --train-teacher, {budget["teacher"]} iterations; reused)', flush=True)
        ckpts = {'teacher': PRETRAINED_TEACHER}
    print(f'[3/4] Student EDSR 16 ch x 4 blocks, {budget["student"]} iterations each: '
          f'{", ".join(runs)} (same data, seed and initialisation)', flush=True)
    for label, opt in runs.items():
        ckpts[label] = run_training(label, opt, out)

    print('[4/4] Evaluating on the held-out photos', flush=True)
    methods = [Method('bicubic')]
    methods += [build_method(label, path, TEACHER if label == 'teacher' else STUDENT, SCALE, torch.device('cpu'))
                for label, path in ckpts.items()]
    results = evaluate(methods, test_root, [TEST_SET], SCALE)['sets'][TEST_SET]['methods']
    params = {'teacher': TEACHER, 'scratch': STUDENT, 'Logits-KD': STUDENT, 'MiPKD': STUDENT}
    rows = {}
    for label, res in results.items():
        n_params = None
        if label in params:
            n_params = sum(p.numel() for p in next(m for m in methods if m.label == label).net.parameters())
        rows[label] = dict(psnr=res['psnr'], ssim=res['ssim'], params=n_params)
    lines = ['| method | params | PSNR (dB) | SSIM | PSNR vs scratch |', '|---|---|---|---|---|']
    for label, row in rows.items():
        delta = row['psnr'] - rows['scratch']['psnr']
        n_params = f'{row["params"]:,}' if row['params'] else '-'
        lines.append(f'| {label} | {n_params} | {row["psnr"]:.2f} | {row["ssim"]:.4f} | {delta:+.2f} |')
    table = '\n'.join(lines)
    print(table)
    results_dir = os.path.join(out, 'results')
    os.makedirs(results_dir, exist_ok=True)
    elapsed = time.time() - start
    with open(os.path.join(results_dir, 'demo_results.json'), 'w') as f:
        json.dump(dict(meta=run_meta(torch.device('cpu')), scale=SCALE, budget=budget, teacher=TEACHER, student=STUDENT,
                       teacher_weights=os.path.relpath(ckpts['teacher'], out), test_images=TEST_IMAGES,
                       rows=rows, seconds=round(elapsed, 1)), f, indent=2)
    with open(os.path.join(results_dir, 'demo_results.md'), 'w') as f:
        f.write(table + '\n')
    plot_psnr(rows, os.path.join(results_dir, 'demo_psnr.png'))
    print('One seed on four photos: this checks the pipeline end to end. Whether a method distils better is '
          'measured by tools/benchmark.py (paired seeds, four test sets); see "Which method should I use?" in '
          'the README.')
    print(f'Done in {elapsed / 60:.1f} min. Table and plot: {results_dir}/demo_results.md, demo_psnr.png; '
          f'everything is under {out}')
    return rows


if __name__ == '__main__':
    main()
