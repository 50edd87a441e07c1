"""The real-world CPU example: a Real-ESRNet teacher distilled into a compact student (a pipeline check).

A small RRDBNet teacher is trained with BasicSR's RealESRNetModel on T91 + BSD200 under BasicSR's
own second-order degradations; SRVGGNetCompact students are then trained from scratch
(RealESRNetModel), with Logits-KD (RealESRNetKDModel) and with MiPKD (RealESRNetMiPKDModel), all
from the option files in options/train/RealWorldCPU/ (tools/gen_options.py). Each is evaluated on
Set5 and Set14 degraded once, at a fixed seed, with BasicSR's numpy degradation functions: PSNR
(Y channel, crop 4) against the HR and BasicSR's NIQE (``basicsr.metrics.calculate_niqe``, no
download) of the output.

Usage::

    OMP_NUM_THREADS=1 python tools/realworld_example.py --datasets-root /data --work-dir /tmp/rw \\
        --out benchmarks/results/realworld_cpu

``--datasets-root`` holds ``T91/HR``, ``BSD200/HR``, ``Set5/HR`` and ``Set14/HR``. Steps (``--steps``):

* ``data``: ``WORK/datasets/`` gets links to T91 and BSD200, ``meta_info_T91_BSD200.txt`` (the list
  RealESRGANDataset reads) and ``<Set>_realworld_x4/{HR,LR}``: each HR cropped to a multiple of 4;
  its LR is a blur with a random kernel of Real-ESRGAN's kernel family (BasicSR's
  ``random_mixed_kernels``), a bicubic x4 downscale, Gaussian noise (sigma 1-15) and JPEG (quality
  50-90; BasicSR's ``random_add_jpg_compression``, which needs the plugin's OpenCV 5 fix), drawn
  from seed 1000 + the image's index (Python's and NumPy's generators).
* ``train``: ``mixprior-train`` on each option file, in ``WORK`` (teacher first).
* ``eval``: every network and bicubic on the degraded sets; ``results.json``, ``results.md`` and
  ``crops.png`` (crops of three test images) under ``--out``.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections import OrderedDict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = os.path.join(REPO, 'options', 'train', 'RealWorldCPU')
SCALE = 4
TEST_SETS = ('Set5', 'Set14')
TRAIN_SETS = ('T91', 'BSD200')
# (label, option file stem); the teacher first: the students read its weights
RUNS = (('teacher', 'train_teacher_RRDB_C32B4_x4'), ('Scratch', 'train_Scratch_RRDB_C32B4-SRVGG_C32N8_x4'),
        ('Logits-KD', 'train_LogitsKD_RRDB_C32B4-SRVGG_C32N8_x4'), ('MiPKD', 'train_MiPKD_RRDB_C32B4-SRVGG_C32N8_x4'))
CROPS = (('Set5', 'baby', 200, 120), ('Set14', 'zebra', 230, 150), ('Set14', 'comic', 60, 90))  # set, image, x, y (HR)
CROP_SIZE = 96


def degrade(hr, seed):
    """The LR of a test image: random kernel blur, bicubic x4 down, Gaussian noise, JPEG (uint8 BGR in and out).

    Python's and NumPy's generators are both seeded with ``seed`` (BasicSR's kernel functions draw from both).
    """
    import random

    import cv2
    import numpy as np

    from basicsr.data.degradations import random_add_gaussian_noise, random_add_jpg_compression, random_mixed_kernels

    from mixprior_plugin.models.synthesis import KERNELS
    random.seed(seed)
    np.random.seed(seed)
    kernel = random_mixed_kernels(KERNELS['kernel_list'], KERNELS['kernel_prob'], 21, KERNELS['blur_sigma'],
                                  KERNELS['blur_sigma'], [-math.pi, math.pi], KERNELS['betag_range'],
                                  KERNELS['betap_range'], noise_range=None)
    img = cv2.filter2D(hr.astype(np.float32) / 255., -1, kernel)
    h, w = hr.shape[:2]
    img = cv2.resize(img, (w // SCALE, h // SCALE), interpolation=cv2.INTER_CUBIC)
    img = random_add_gaussian_noise(img, sigma_range=(1, 15), gray_prob=0.4, clip=True)
    img = random_add_jpg_compression(np.clip(img, 0, 1).astype(np.float32), quality_range=(50, 90))
    return np.clip(np.round(img * 255.), 0, 255).astype(np.uint8)


def make_data(root, work):
    """Links, the training list and the degraded test sets under ``work/datasets`` (see the module docstring)."""
    from mixprior_plugin import basicsr_fixes
    from mixprior_plugin.utils.image_io import crop_to_multiple, list_images, read_image, stem, write_image
    basicsr_fixes.fix_jpg_quality()
    data = os.path.join(work, 'datasets')
    os.makedirs(data, exist_ok=True)
    lines = []
    for name in TRAIN_SETS:
        link = os.path.join(data, name)
        if not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(root, name)), link)
        lines += [os.path.relpath(p, data) for p in list_images(os.path.join(link, 'HR'))]
    with open(os.path.join(data, 'meta_info_T91_BSD200.txt'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    index = 0
    for name in TEST_SETS:
        out = os.path.join(data, f'{name}_realworld_x{SCALE}')
        for path in list_images(os.path.join(root, name, 'HR')):
            hr = crop_to_multiple(read_image(path)[0], SCALE)
            write_image(os.path.join(out, 'HR', f'{stem(path)}.png'), hr)
            write_image(os.path.join(out, 'LR', f'{stem(path)}.png'), degrade(hr, 1000 + index))
            index += 1
    print(f'data: {len(lines)} training images, {index} degraded test images under {data}', flush=True)


def train(work, log):
    """Run mixprior-train on each option file in ``work``; returns {label: seconds}."""
    times = OrderedDict()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    for label, stem_ in RUNS:
        start = time.time()
        cmd = [sys.executable, '-m', 'mixprior_plugin.train', '-opt', os.path.join(OPTIONS, f'{stem_}.yml')]
        with open(os.path.join(work, f'{stem_}.out'), 'w') as out:
            subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
        times[label] = round(time.time() - start, 1)
        log(f'[{label}] trained in {times[label]:.0f} s')
    return times


def methods(work):
    """The bicubic pseudo-method and each trained network (EMA weights of its last checkpoint)."""
    from mixprior_plugin.evaluation import Method, build_method
    from mixprior_plugin.utils.options import yaml_load
    out = [Method('bicubic')]
    for label, stem_ in RUNS:
        opt = yaml_load(os.path.join(OPTIONS, f'{stem_}.yml'))
        ckpt = os.path.join(work, 'experiments', opt['name'], 'models', 'net_g_latest.pth')
        out.append(build_method(label, ckpt, dict(opt['network_g']), SCALE, 'cpu'))
    return out


def evaluate(work):
    """PSNR and NIQE of every method on the degraded sets; the HR's NIQE for reference."""
    import numpy as np

    from basicsr.metrics import calculate_niqe, calculate_psnr

    from mixprior_plugin.inference import super_resolve
    from mixprior_plugin.utils.image_io import list_images, read_image, stem
    nets = methods(work)
    results = OrderedDict(sets=OrderedDict(), methods=[m.describe() for m in nets])
    kept = {}
    for set_name in TEST_SETS:
        folder = os.path.join(work, 'datasets', f'{set_name}_realworld_x{SCALE}')
        per = OrderedDict((label, OrderedDict()) for label in [m.label for m in nets] + ['HR'])
        for path in list_images(os.path.join(folder, 'HR')):
            name = stem(path)
            hr, lr = read_image(path)[0], read_image(os.path.join(folder, 'LR', f'{name}.png'))[0]
            per['HR'][name] = dict(niqe=float(calculate_niqe(hr, crop_border=SCALE)))
            for m in nets:
                sr = super_resolve(m, lr, SCALE)
                per[m.label][name] = dict(psnr=float(calculate_psnr(sr, hr, crop_border=SCALE, test_y_channel=True)),
                                          niqe=float(calculate_niqe(sr, crop_border=SCALE)))
                kept[(set_name, name, m.label)] = sr
            kept[(set_name, name, 'HR')], kept[(set_name, name, 'LR')] = hr, lr
        entry = results['sets'][set_name] = OrderedDict()
        for label, values in per.items():
            keys = [k for k in ('psnr', 'niqe') if k in next(iter(values.values()))]
            entry[label] = OrderedDict((k, float(np.mean([v[k] for v in values.values()]))) for k in keys)
            entry[label]['images'] = values
    return results, kept


def crops_figure(kept, labels, path):
    """One row per crop: LR (nearest), each method, HR; labels on top (uint8 BGR, written as PNG)."""
    import cv2
    import numpy as np
    zoom, pad, head = 2, 4, 22
    tile = CROP_SIZE * zoom
    columns = ['LR'] + labels + ['HR']
    rows = []
    for set_name, name, x, y in CROPS:
        tiles = []
        for col in columns:
            img = kept[(set_name, name, col)]
            if col == 'LR':
                img = cv2.resize(img, (img.shape[1] * SCALE, img.shape[0] * SCALE), interpolation=cv2.INTER_NEAREST)
            crop = img[y:y + CROP_SIZE, x:x + CROP_SIZE]
            crop = cv2.resize(crop, (tile, tile), interpolation=cv2.INTER_NEAREST)
            tiles.append(np.pad(crop, ((0, pad), (0, pad), (0, 0)), constant_values=255))
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    header = np.full((head, grid.shape[1], 3), 255, np.uint8)
    for i, col in enumerate(columns):
        cv2.putText(header, col, (i * (tile + pad) + 4, head - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                    cv2.LINE_AA)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, np.concatenate([header, grid], axis=0), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f'Cannot write image {path}')


def markdown(results, times):
    lines = ['PSNR (dB, Y channel, crop 4; higher is better) / NIQE (BasicSR calculate_niqe, crop 4; lower is '
             'better) on Set5 and Set14 degraded by BasicSR\'s numpy degradations (x4). One seed: a pipeline check, '
             'not a quality claim.', '',
             '| method | params | train time (s) | ' + ' | '.join(f'{s} PSNR / NIQE' for s in results['sets']) + ' |',
             '|---|---|---|' + '---|' * len(results['sets'])]
    for m in results['methods']:
        row = [m['label'], f'{m["params"]:,}' if m['params'] else '-', f'{times.get(m["label"], "-")}']
        row += [f'{e[m["label"]]["psnr"]:.2f} / {e[m["label"]]["niqe"]:.2f}' for e in results['sets'].values()]
        lines.append('| ' + ' | '.join(row) + ' |')
    lines.append('| HR (reference) | - | - | ' + ' | '.join(f'- / {e["HR"]["niqe"]:.2f}'
                                                         for e in results['sets'].values()) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--datasets-root', required=True, help='folder with T91/HR, BSD200/HR, Set5/HR, Set14/HR')
    parser.add_argument('--work-dir', required=True, help='where data links, experiments and logs go')
    parser.add_argument('--out', default=os.path.join(REPO, 'benchmarks', 'results', 'realworld_cpu'))
    parser.add_argument('--steps', nargs='+', default=['data', 'train', 'eval'], choices=['data', 'train', 'eval'])
    args = parser.parse_args(argv)
    import torch

    import mixprior_plugin  # noqa: F401  (registers the plugin's archs)
    from mixprior_plugin.utils.provenance import run_meta
    from mixprior_plugin.utils.tooling import write_json
    work, out = os.path.abspath(args.work_dir), os.path.abspath(args.out)
    os.makedirs(work, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    start = time.time()

    def log(msg):
        print(msg, flush=True)

    times_path = os.path.join(work, 'train_times.json')
    if 'data' in args.steps:
        make_data(args.datasets_root, work)
    if 'train' in args.steps:
        with open(times_path, 'w') as f:
            json.dump(train(work, log), f)
    if 'eval' in args.steps:
        times = json.load(open(times_path)) if os.path.exists(times_path) else {}
        results, kept = evaluate(work)
        results['train_seconds'] = times
        results['meta'] = run_meta(torch.device('cpu'), REPO)
        results['options'] = {label: os.path.relpath(os.path.join(OPTIONS, f'{s}.yml'), REPO) for label, s in RUNS}
        write_json(results, os.path.join(out, 'results.json'))
        with open(os.path.join(out, 'results.md'), 'w', encoding='utf-8') as f:
            f.write(markdown(results, times))
        crops_figure(kept, [m['label'] for m in results['methods']], os.path.join(out, 'crops.png'))
        print(markdown(results, times))
    log(f'Done in {(time.time() - start) / 60:.1f} min')


if __name__ == '__main__':
    main()
