"""Shared helpers for the test suite: tiny data, tiny nets, option files, CLI runs."""
import contextlib
import logging
import os
import subprocess
import sys
from copy import deepcopy

import cv2
import numpy as np
import torch
import yaml

from basicsr.utils.matlab_functions import imresize

from mixprior_plugin.utils.tooling import deep_update  # noqa: F401  (tests import it from here)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The public test data some tests read (Set5 ... Urban100 under datasets/, BasicSR's own option files under
# basicsr_options/): $MIXPRIOR_TEST_DATA, by default the folder `shared` beside the checkout. Tests that need it
# take it through the `test_data` fixture (conftest.py), which skips them, saying what is missing, without it.
TEST_DATA = os.environ.get('MIXPRIOR_TEST_DATA') or os.path.join(os.path.dirname(REPO), 'shared')
SHARED_DATASETS = os.path.join(TEST_DATA, 'datasets')
BASICSR_OPTIONS = os.path.join(TEST_DATA, 'basicsr_options')


def require_test_data(*parts):
    """The path of ``parts`` under the test data, or a skip naming what is missing and where it was looked for."""
    import pytest
    path = os.path.join(TEST_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f'{os.path.join(*parts)} not found under {TEST_DATA} (set MIXPRIOR_TEST_DATA to the folder '
                    'holding datasets/ and basicsr_options/)')
    return path


def smooth_image(rng, h, w, channels=3):
    """A smooth random uint8 image (learnable by a tiny SR net, unlike white noise)."""
    small = rng.uniform(0, 255, size=(max(h // 8, 2), max(w // 8, 2), channels)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 6, size=img.shape).astype(np.float32)  # some texture
    return np.clip(img, 0, 255).astype(np.uint8)


def make_paired_folder(root, scale, num=4, size=96, seed=0):
    """Write HR/ and LR/ PNG folders (LR by MATLAB bicubic, name{x}.png style kept plain)."""
    rng = np.random.default_rng(seed)
    hr_dir, lr_dir = os.path.join(root, 'HR'), os.path.join(root, f'LR_x{scale}')
    os.makedirs(hr_dir, exist_ok=True)
    os.makedirs(lr_dir, exist_ok=True)
    size = size - size % scale
    for i in range(num):
        hr = smooth_image(rng, size, size)
        lr = imresize(hr.astype(np.float64) / 255.0, 1 / scale)
        lr = np.clip(np.round(lr * 255.0), 0, 255).astype(np.uint8)
        cv2.imwrite(os.path.join(hr_dir, f'img{i:03d}.png'), hr)
        cv2.imwrite(os.path.join(lr_dir, f'img{i:03d}.png'), lr)
    return hr_dir, lr_dir


# ---- tiny architectures ------------------------------------------------------------------------
def tiny_arch(family, role, scale):
    """Option dict of a tiny teacher ('t') or student ('g') of an arch family."""
    if family == 'EDSR':
        feat, blocks = (16, 4) if role == 't' else (8, 2)
        return dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=feat, num_block=blocks, upscale=scale,
                    res_scale=1, img_range=255.)
    if family == 'RCAN':
        groups, blocks = (4, 2) if role == 't' else (2, 1)
        return dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=16 if role == 't' else 8, num_group=groups,
                    num_block=blocks, squeeze_factor=4, upscale=scale, res_scale=1, img_range=255.)
    if family == 'SwinIR':
        dim, depths = (12, [1, 1, 1, 1]) if role == 't' else (6, [1, 1])
        return dict(type='SwinIR', upscale=scale, in_chans=3, img_size=16, window_size=8, img_range=1.,
                    depths=depths, embed_dim=dim, num_heads=[2] * len(depths), mlp_ratio=2,
                    upsampler='pixelshuffle' if role == 't' else 'pixelshuffledirect', resi_connection='1conv')
    raise ValueError(family)


FAMILIES = ('EDSR', 'RCAN', 'SwinIR')
SCALES = (2, 3, 4)


def lq_patch(family):
    """LR training patch size: a multiple of SwinIR's window (8)."""
    return 16


def save_random_teacher(path, arch_opt, seed=0):
    """Save a randomly initialised teacher in BasicSR's checkpoint format."""
    from basicsr.archs import build_network
    torch.manual_seed(seed)
    net = build_network(deepcopy(arch_opt))
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, path)
    return path


def sr_options(name, root, scale, network_g, hr_dir, lr_dir, total_iter=20, val=True, model_type='SRModel',
               batch=2, extra=None):
    """BasicSR training options for a tiny run on a paired folder."""
    opt = dict(
        name=name, model_type=model_type, scale=scale, num_gpu=0, manual_seed=0,
        datasets=dict(
            train=dict(name='tiny', type='PairedImageDataset', dataroot_gt=hr_dir, dataroot_lq=lr_dir,
                       io_backend=dict(type='disk'), gt_size=16 * scale, use_hflip=True, use_rot=True,
                       num_worker_per_gpu=0, batch_size_per_gpu=batch, dataset_enlarge_ratio=1, prefetch_mode=None)),
        network_g=network_g,
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None,
                  experiments_root=os.path.join(root, 'experiments')),
        train=dict(ema_decay=0.999, optim_g=dict(type='Adam', lr=2e-4, weight_decay=0, betas=[0.9, 0.99]),
                   scheduler=dict(type='MultiStepLR', milestones=[10000], gamma=0.5), total_iter=total_iter,
                   warmup_iter=-1, pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean')),
        logger=dict(print_freq=5, save_checkpoint_freq=10, use_tb_logger=True, wandb=dict(project=None)),
        dist_params=dict(backend='nccl', port=29500),
    )
    if val:
        opt['datasets']['val'] = dict(name='tinyval', type='PairedImageDataset', dataroot_gt=hr_dir,
                                      dataroot_lq=lr_dir, io_backend=dict(type='disk'))
        opt['val'] = dict(val_freq=10, save_img=False,
                          metrics=dict(psnr=dict(type='calculate_psnr', crop_border=scale, test_y_channel=True)))
    if extra:
        deep_update(opt, extra)
    return opt


@contextlib.contextmanager
def captured_log():
    """Messages of BasicSR's root logger (``basicsr``) while the block runs, as ``[(level, text)]``."""
    from basicsr.utils import get_root_logger
    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append((record.levelname, record.getMessage()))
    logger = get_root_logger()
    level = logger.level
    logger.setLevel(logging.INFO)  # initialised without a log file, BasicSR's logger drops INFO
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def write_yaml(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def run_cli(args, cwd, timeout=600, env=None, check=True):
    """Run ``python -m <module> args`` in ``cwd``; return the CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.setdefault('PYTHONUNBUFFERED', '1')
    full_env['OMP_NUM_THREADS'] = full_env.get('OMP_NUM_THREADS', '2')
    if env:
        full_env.update(env)
    proc = subprocess.run([sys.executable] + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}')
    return proc


def console_script(name):
    """Path of an installed console script beside this Python (tools/setup_env.sh installs them)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    assert os.path.isfile(path), f'{name} is not installed beside {sys.executable}: run tools/setup_env.sh'
    return path


def run_script(name, args, cwd, timeout=300, env=None):
    """Run the installed console script ``name`` with ``args`` in ``cwd``; return the CompletedProcess (text)."""
    return subprocess.run([console_script(name)] + list(args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS='1', **(env or {})))


def base_model_opt(network_g, network_t, scale, teacher_path, model_type='KDModel', train=None, **extra):
    """In-process options for build_model (no argparse)."""
    opt = dict(model_type=model_type, is_train=True, dist=False, rank=0, world_size=1, num_gpu=0, scale=scale,
               network_g=deepcopy(network_g), network_t=deepcopy(network_t),
               path=dict(pretrain_network_t=teacher_path, models='/nonexistent', training_states='/nonexistent'),
               train=dict(ema_decay=0.999, optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.99]),
                          scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5), total_iter=10,
                          pixel_opt=dict(type='L1Loss', loss_weight=1.0)),
               val=dict(metrics=None))
    if train:
        opt['train'].update(train)
    deep_update(opt, extra)
    return opt


def state_equal(a, b):
    """Exact equality of nested state dicts / lists of tensors (optimizer, scheduler states)."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(state_equal(x, y) for x, y in zip(a, b))
    return a == b
