"""Shared helpers for the test suite: tiny data, tiny nets, option files, CLI runs, tools."""
import contextlib
import importlib.util
import logging
import os
import subprocess
import sys
import time
from copy import deepcopy

import cv2
import numpy as np
import torch
import yaml

from basicsr.archs import build_network
from basicsr.utils.matlab_functions import imresize

from mixprior_plugin.utils.tooling import deep_update  # noqa: F401  (tests import it from here)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, 'tests')
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


def eval_net(arch, seed=0):
    """A network of ``arch`` initialised with ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return build_network(dict(arch)).eval()


def save_random_teacher(path, arch_opt, seed=0):
    """Save a randomly initialised teacher in BasicSR's checkpoint format."""
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


def tiny_sr_run(tmp_path, tiny_data, name, total_iter, extra=None):
    """An SRModel option file of a tiny EDSR x2 on ``tiny_data``, written as ``<name>.yml``."""
    hr, lr = tiny_data[2]
    opt = sr_options(name, str(tmp_path), 2, tiny_arch('EDSR', 'g', 2), hr, lr, total_iter=total_iter, extra=extra)
    return write_yaml(str(tmp_path / f'{name}.yml'), opt)


def mipkd_options(tmp_path, tiny_data, name, total_iter, family='EDSR', scale=2, save_freq=5, extra=None):
    """A MiPKDModel option file of a tiny teacher and student on ``tiny_data`` (several iterations per epoch, so a
    resume lands mid-epoch), written as ``<name>.yml``."""
    hr, lr = tiny_data[scale]
    teacher = save_random_teacher(str(tmp_path / f'teacher_{family}.pth'), tiny_arch(family, 't', scale))
    opt = sr_options(name, str(tmp_path), scale, tiny_arch(family, 'g', scale), hr, lr, total_iter=total_iter,
                     model_type='MiPKDModel', val=False,
                     extra=dict(network_t=tiny_arch(family, 't', scale), distill=dict(num_stages=2),
                                logger=dict(print_freq=5, save_checkpoint_freq=save_freq, use_tb_logger=False)))
    opt['path']['pretrain_network_t'] = teacher
    opt['datasets']['train']['dataset_enlarge_ratio'] = 3  # several iterations per epoch: resume mid-epoch
    if extra:
        deep_update(opt, extra)
    return write_yaml(str(tmp_path / f'{name}.yml'), opt)


def kd_options(tmp_path, tiny_data, name, total_iter=4, model_type='KDModel'):
    """Options (a dict) of a tiny EDSR x2 distillation run on ``tiny_data``, validated and saved every 2 iterations."""
    hr, lr = tiny_data[2]
    teacher = save_random_teacher(str(tmp_path / 'teacher.pth'), tiny_arch('EDSR', 't', 2))
    opt = sr_options(name, str(tmp_path), 2, tiny_arch('EDSR', 'g', 2), hr, lr, total_iter=total_iter,
                     model_type=model_type,
                     extra=dict(network_t=tiny_arch('EDSR', 't', 2), distill=dict(num_stages=2),
                                logger=dict(print_freq=2, save_checkpoint_freq=2, use_tb_logger=False)))
    opt['path']['pretrain_network_t'] = teacher
    opt['val']['val_freq'] = 2
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


def start_training(opt_file, cwd, env=None, extra_args=()):
    """Start tests/train_runner.py (mixprior-train with test hooks) on ``opt_file``; return the Popen."""
    return subprocess.Popen([sys.executable, os.path.join(TESTS, 'train_runner.py'), '-opt', opt_file, *extra_args],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO, **(env or {})))


def wait_for_file(path, proc, timeout=300):
    """Wait until ``path`` exists; fail if the training process ``proc`` ends first or ``timeout`` passes."""
    start = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f'training ended before {path} appeared:\n{proc.stdout.read()[-3000:]}')
        if time.time() - start > timeout:
            raise AssertionError(f'{path} did not appear in {timeout} s')
        time.sleep(0.02)


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


# ---- the command-line tools (tools/<name>.py) and their images ---------------------------------------------
def load_tool(name):
    """tools/<name>.py as a module, whose ``main(argv)`` a test calls in-process."""
    spec = importlib.util.spec_from_file_location(f'tool_{name}', os.path.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exit_message(func, argv):
    """The message of the SystemExit a tool's ``main(argv)`` ends with (a non-zero exit)."""
    import pytest
    with pytest.raises(SystemExit) as info:
        func(argv)
    assert info.value.code not in (0, None)
    return str(info.value.code)


def matlab_resize(img, factor):
    """The reference resize, written out with BasicSR's imresize (independent of the tools).

    "Bicubic upsampling" in the tool tests and in tools/evaluate.py means
    ``uint8(clip(round(imresize(lr / 255., s) * 255)))`` with BasicSR's MATLAB-style ``imresize`` on the
    official LR image read by ``cv2.imread`` (3-channel BGR).
    """
    return np.clip(np.round(imresize(img.astype(np.float64) / 255., factor) * 255.), 0, 255).astype(np.uint8)


def crop(img, s):
    """``img`` cropped to a multiple of ``s`` (as HR images are for scale ``s``)."""
    return img[:img.shape[0] // s * s, :img.shape[1] // s * s]


def write_sources(folder, rng, spec):
    """Write images {file name: (h, w, gray)}; returns {name: path}."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for fname, (h, w, gray) in spec.items():
        img = smooth_image(rng, h, w, 1 if gray else 3)
        img = img.reshape(h, w) if gray else img
        path = os.path.join(folder, fname)
        assert cv2.imwrite(path, img)
        paths[os.path.splitext(fname)[0]] = path
    return paths
