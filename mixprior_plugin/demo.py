"""The README's main job: a short SR training on photos that scikit-image ships (no downloads).

Usage::

    python -m mixprior_plugin.demo [--out demo_output] [--iters 600]

It writes a paired HR/LR data set from scikit-image's sample photos (some held out for testing),
trains a small EDSR with BasicSR's pipeline through ``mixprior-train``, evaluates it and bicubic
upsampling on the held-out photos (PSNR/SSIM on Y, crop_border = scale) and prints a table.
Everything goes under one output folder.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np

SCALE = 4
TRAIN_IMAGES = ('astronaut', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry', 'retina', 'brick',
                'grass', 'gravel', 'moon', 'cell')
TEST_IMAGES = ('chelsea', 'camera', 'coins', 'clock')


def load_sample(name):
    """A scikit-image sample as a uint8 BGR image (grayscale expanded to 3 channels)."""
    import skimage.data
    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return cv2.cvtColor(img[..., :3].astype(np.uint8), cv2.COLOR_RGB2BGR)


def write_pairs(names, root, scale, crop=None):
    """HR (cropped to a multiple of scale) and MATLAB-bicubic LR PNGs; returns (hr_dir, lr_dir).

    With ``crop``, each photo is cut into ``crop`` x ``crop`` HR sub-images (step crop/2) so the
    training loader reads small files (BasicSR's extract_subimages idea).
    """
    from basicsr.utils.matlab_functions import imresize
    hr_dir, lr_dir = os.path.join(root, 'HR'), os.path.join(root, f'LR_bicubic_x{scale}')
    os.makedirs(hr_dir, exist_ok=True)
    os.makedirs(lr_dir, exist_ok=True)
    for name in names:
        img = load_sample(name)
        h, w = img.shape[:2]
        if crop:
            tiles = [(f'{name}_s{i:03d}', img[y:y + crop, x:x + crop]) for i, (y, x) in enumerate(
                (y, x) for y in range(0, h - crop + 1, crop // 2) for x in range(0, w - crop + 1, crop // 2))]
        else:
            tiles = [(name, img[:h - h % scale, :w - w % scale])]
        for tile_name, hr in tiles:
            lr = imresize(hr.astype(np.float64) / 255., 1 / scale)
            lr = np.clip(np.round(lr * 255.), 0, 255).astype(np.uint8)
            cv2.imwrite(os.path.join(hr_dir, f'{tile_name}.png'), hr)
            cv2.imwrite(os.path.join(lr_dir, f'{tile_name}.png'), lr)
    return hr_dir, lr_dir


def train_options(name, scale, data, iters, network_g):
    hr, lr = data['train']
    return dict(
        name=name, model_type='SRModel', scale=scale, num_gpu=0, manual_seed=0,
        datasets=dict(train=dict(name='skimage_train', type='PairedImageDataset', dataroot_gt=hr, dataroot_lq=lr,
                                 io_backend=dict(type='disk'), gt_size=24 * scale, use_hflip=True, use_rot=True,
                                 num_worker_per_gpu=0, batch_size_per_gpu=8, dataset_enlarge_ratio=1,
                                 prefetch_mode=None)),
        network_g=network_g,
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(ema_decay=0.99, optim_g=dict(type='Adam', lr=5e-4, weight_decay=0, betas=[0.9, 0.99]),
                   scheduler=dict(type='MultiStepLR', milestones=[int(iters * 0.8)], gamma=0.5), total_iter=iters,
                   warmup_iter=-1, pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean')),
        logger=dict(print_freq=max(iters // 10, 1), save_checkpoint_freq=iters, use_tb_logger=True,
                    wandb=dict(project=None)))


def run_training(opt_path, cwd):
    """Run mixprior-train in a subprocess, streaming its progress lines."""
    cmd = [sys.executable, '-m', 'mixprior_plugin.train', '-opt', opt_path]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))
    tail = []
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        if '[epoch:' in line or 'Error' in line:
            print('   ', line.rstrip()[-150:], flush=True)
    if proc.wait() != 0:
        raise RuntimeError(f'training failed: {" ".join(cmd)}\n' + ''.join(tail))


def evaluate(net, data_dir, scale):
    """Mean PSNR/SSIM (Y, crop_border = scale) of ``net`` (None: bicubic) on a paired folder."""
    import torch
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import img2tensor, tensor2img
    hr_dir, lr_dir = data_dir
    psnrs, ssims = [], []
    for fname in sorted(os.listdir(hr_dir)):
        hr = cv2.imread(os.path.join(hr_dir, fname))
        lr = cv2.imread(os.path.join(lr_dir, fname))
        if net is None:
            sr = cv2.resize(lr, (hr.shape[1], hr.shape[0]), interpolation=cv2.INTER_CUBIC)
        else:
            with torch.no_grad():
                out = net(img2tensor(lr.astype(np.float32) / 255., bgr2rgb=True, float32=True)[None])
            sr = tensor2img(out)
        psnrs.append(calculate_psnr(sr, hr, crop_border=scale, test_y_channel=True))
        ssims.append(calculate_ssim(sr, hr, crop_border=scale, test_y_channel=True))
    return float(np.mean(psnrs)), float(np.mean(ssims))


def load_net(network_g, ckpt):
    import torch
    from basicsr.archs import build_network
    net = build_network(dict(network_g))
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    net.load_state_dict(state.get('params_ema', state.get('params')), strict=True)
    return net.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='demo_output', help='output folder (default: demo_output)')
    parser.add_argument('--iters', type=int, default=600, help='training iterations (default: 600)')
    args = parser.parse_args(argv)
    import torch
    import yaml

    import mixprior_plugin  # noqa: F401
    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, 'options'), exist_ok=True)
    start = time.time()
    print(f'[1/3] Writing the data set from scikit-image samples to {out}/data', flush=True)
    data = {
        'train': write_pairs(TRAIN_IMAGES, os.path.join(out, 'data', 'train'), SCALE, crop=192),
        'test': write_pairs(TEST_IMAGES, os.path.join(out, 'data', 'test'), SCALE)
    }
    network_g = dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=32, num_block=4, upscale=SCALE, res_scale=1,
                     img_range=255.)
    name = 'demo_EDSR_f32b4_x4'
    opt_path = os.path.join(out, 'options', f'{name}.yml')
    with open(opt_path, 'w') as f:
        yaml.safe_dump(train_options(name, SCALE, data, args.iters, network_g), f, sort_keys=False)
    print(f'[2/3] Training EDSR 32x4 for {args.iters} iterations (mixprior-train -opt {opt_path})', flush=True)
    run_training(opt_path, out)
    print('[3/3] Evaluating on held-out photos: ' + ', '.join(TEST_IMAGES), flush=True)
    net = load_net(network_g, os.path.join(out, 'experiments', name, 'models', 'net_g_latest.pth'))
    rows = {'bicubic': evaluate(None, data['test'], SCALE), 'EDSR 32x4': evaluate(net, data['test'], SCALE)}
    lines = ['| method | PSNR (dB) | SSIM |', '|---|---|---|']
    lines += [f'| {k} | {p:.2f} | {s:.4f} |' for k, (p, s) in rows.items()]
    table = '\n'.join(lines)
    print(table)
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump({k: dict(psnr=p, ssim=s) for k, (p, s) in rows.items()}, f, indent=2)
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write(table + '\n')
    print(f'Done in {time.time() - start:.0f} s. Everything is under {out}')


if __name__ == '__main__':
    main()
