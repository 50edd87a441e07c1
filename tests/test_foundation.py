"""Foundation: registration, entry points, train_pipeline, CPU resume, plain BasicSR options."""
import glob
import importlib
import inspect
import os
import pkgutil
import re

import pytest
import torch
from torch import nn

from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

from helpers import REPO, run_cli, sr_options, tiny_arch, write_yaml


def plugin_components():
    """Every class defined in the plugin's archs/losses/models packages that should be registered."""
    found = []
    for pkg_name, registry, base in (('archs', ARCH_REGISTRY, nn.Module), ('losses', LOSS_REGISTRY, nn.Module),
                                     ('models', MODEL_REGISTRY, object)):
        pkg = importlib.import_module(f'mixprior_plugin.{pkg_name}')
        for info in pkgutil.iter_modules(pkg.__path__):
            suffix = {'archs': '_arch', 'losses': '_loss', 'models': '_model'}[pkg_name]
            if not info.name.endswith(suffix):
                continue
            module = importlib.import_module(f'{pkg.__name__}.{info.name}')
            for name, obj in vars(module).items():
                if (inspect.isclass(obj) and obj.__module__ == module.__name__ and issubclass(obj, base)
                        and not name.startswith('_') and getattr(obj, '_registered', True)):
                    if pkg_name == 'models' and not name.endswith('Model'):
                        continue
                    if pkg_name == 'losses' and not name.endswith('Loss'):
                        continue
                    if pkg_name == 'archs' and name not in registry:
                        # helper modules inside arch files must be private or registered
                        pytest.fail(f'{module.__name__}.{name} is public but not registered')
                    found.append((registry, name, obj))
    return found


COMPONENTS = plugin_components()


def test_components_found():
    names = {name for _, name, _ in COMPONENTS}
    assert {'KDModel', 'PriorMixer', 'FeatureConnector', 'FeatureNormalizer'} <= names


@pytest.mark.parametrize('registry,name,obj', COMPONENTS, ids=[c[1] for c in COMPONENTS])
def test_component_registered_and_unique(registry, name, obj):
    assert name in registry, f'{name} missing from {registry._name} registry'
    # the registered object is ours, not a BasicSR class of the same name
    assert registry.get(name) is obj
    assert obj.__module__.startswith('mixprior_plugin.')


def test_entry_points_declared():
    setup_py = open(os.path.join(REPO, 'setup.py')).read()
    assert 'mixprior-train=mixprior_plugin.train:main' in setup_py
    assert 'mixprior-test=mixprior_plugin.test:main' in setup_py
    # installed console scripts exist next to the interpreter running the tests
    import shutil
    import sys
    bindir = os.path.dirname(sys.executable)
    for script in ('mixprior-train', 'mixprior-test'):
        assert os.path.exists(os.path.join(bindir, script)) or shutil.which(script), script


def _tiny_sr_run(tmp_path, tiny_data, name, total_iter, extra=None):
    hr, lr = tiny_data[2]
    opt = sr_options(name, str(tmp_path), 2, tiny_arch('EDSR', 'g', 2), hr, lr, total_iter=total_iter, extra=extra)
    return write_yaml(str(tmp_path / f'{name}.yml'), opt)


def test_train_pipeline_20_iters_with_validation(tmp_path, tiny_data):
    opt_file = _tiny_sr_run(tmp_path, tiny_data, 'sr20', 20)
    proc = run_cli(['-m', 'mixprior_plugin.train', '-opt', opt_file], cwd=str(tmp_path))
    exp = tmp_path / 'experiments' / 'sr20'
    log = open(glob.glob(str(exp / 'train_sr20_*.log'))[0]).read()
    assert 'Validation tinyval' in log and re.search(r'# psnr: \d+\.\d+', log), log[-2000:]
    assert (exp / 'models' / 'net_g_20.pth').exists()
    assert (exp / 'models' / 'net_g_latest.pth').exists()
    assert (exp / 'training_states' / '20.state').exists()
    assert (tmp_path / 'tb_logger' / 'sr20').is_dir()
    assert 'Traceback' not in proc.stderr


def test_auto_resume_without_cuda(tmp_path, tiny_data):
    assert not torch.cuda.is_available() or os.environ.get('CUDA_VISIBLE_DEVICES') == ''
    opt_file = _tiny_sr_run(tmp_path, tiny_data, 'resume', 10)
    run_cli(['-m', 'mixprior_plugin.train', '-opt', opt_file], cwd=str(tmp_path))
    state = torch.load(tmp_path / 'experiments' / 'resume' / 'training_states' / '10.state', weights_only=False)
    assert state['iter'] == 10
    # longer run, same name: auto-resume must pick up iteration 10 on CPU
    opt_file = _tiny_sr_run(tmp_path, tiny_data, 'resume', 20)
    proc = run_cli(['-m', 'mixprior_plugin.train', '-opt', opt_file, '--auto_resume'], cwd=str(tmp_path),
                   env={'CUDA_VISIBLE_DEVICES': ''})
    out = proc.stdout + proc.stderr
    log = ''.join(open(f).read() for f in glob.glob(str(tmp_path / 'experiments' / 'resume' / 'train_*.log')))
    assert 'Resuming training from epoch' in log and 'iter: 10' in log, out[-3000:]
    assert (tmp_path / 'experiments' / 'resume' / 'training_states' / '20.state').exists()


def test_plain_basicsr_option_file_runs_unchanged(tmp_path, tiny_data):
    """A stock BasicSR EDSR option file (num_gpu: 1, DIV2K-style paths) runs through mixprior-train.

    Only data paths and sizes are overridden on the command line with BasicSR's own --force_yml.
    """
    src = os.path.join(REPO, 'tests', 'data', 'train_EDSR_Mx2_basicsr.yml')
    hr, lr = tiny_data[2]
    force = [
        f'datasets:train:dataroot_gt={hr}', f'datasets:train:dataroot_lq={lr}', 'datasets:train:meta_info_file=~',
        'datasets:train:gt_size=32', 'datasets:train:batch_size_per_gpu=2', 'datasets:train:num_worker_per_gpu=0',
        f'datasets:val:dataroot_gt={hr}', f'datasets:val:dataroot_lq={lr}', 'network_g:num_feat=8',
        'network_g:num_block=2', 'train:total_iter=6', 'logger:print_freq=2', 'logger:save_checkpoint_freq=6',
        'val:val_freq=6'
    ]
    proc = run_cli(['-m', 'mixprior_plugin.train', '-opt', src, '--force_yml'] + force, cwd=str(tmp_path))
    exp = tmp_path / 'experiments' / 'EDSR_Mx2_f64b16_DIV2K_300k_B16G1_wandb'
    assert (exp / 'models' / 'net_g_6.pth').exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'Validation Set5' in open(glob.glob(str(exp / 'train_*.log'))[0]).read()
