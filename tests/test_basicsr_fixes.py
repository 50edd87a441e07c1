"""mixprior_plugin.basicsr_fixes and mixprior_plugin.fixes: BasicSR runs on CPU and under torchrun, resumed exactly."""
import glob
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from helpers import REPO, TESTS, captured_log, mipkd_options, run_cli, start_training, tiny_sr_run, wait_for_file
from mixprior_plugin.utils.checkpoint import load_checkpoint


# ---- plain BasicSR option files and resume without CUDA ----------------------------------------------------
def test_auto_resume_without_cuda(tmp_path, tiny_data):
    assert not torch.cuda.is_available() or os.environ.get('CUDA_VISIBLE_DEVICES') == ''
    opt_file = tiny_sr_run(tmp_path, tiny_data, 'resume', 10)
    run_cli(['-m', 'mixprior_plugin.train', '-opt', opt_file], cwd=str(tmp_path))
    state = torch.load(tmp_path / 'experiments' / 'resume' / 'training_states' / '10.state', weights_only=False)
    assert state['iter'] == 10
    # longer run, same name: auto-resume must pick up iteration 10 on CPU
    opt_file = tiny_sr_run(tmp_path, tiny_data, 'resume', 20)
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


# ---- torchrun: gloo on CPU, each rank's random state -------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_torchrun_gloo_two_processes_mipkd(tmp_path, tiny_data):
    opt_file = mipkd_options(tmp_path, tiny_data, 'ddp', 10, save_freq=10)
    out = tmp_path / 'ranks'
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
         os.path.join(TESTS, 'ddp_runner.py'), str(out), '-opt', opt_file, '--launcher', 'pytorch'],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    r0, r1 = (torch.load(out / f'rank{r}.pth', weights_only=False) for r in (0, 1))
    assert (r0['rank'], r1['rank'], r0['world_size']) == (0, 1, 2)
    assert not r0['teacher_wrapped'] and not r1['teacher_wrapped']
    assert r0['train_step_wrapped'] and r1['train_step_wrapped']
    for part in ('net_g', 'net_extra'):
        assert r0[part].keys() == r1[part].keys()
        for key in r0[part]:
            assert torch.equal(r0[part][key], r1[part][key]), f'{part}.{key} differs across ranks'
    assert any(k.startswith('mixers.') for k in r0['net_extra'])
    # and it trained: the student moved away from its initialisation, identically on both ranks
    assert (tmp_path / 'experiments' / 'ddp' / 'models' / 'net_g_10.pth').exists()


def _torchrun(opt_file, cwd, out, extra_args=(), env=None):
    out.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
         os.path.join(TESTS, 'ddp_runner.py'), str(out), '-opt', opt_file, '--launcher', 'pytorch', *extra_args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO, **(env or {})))


def _kill_tree(pid):
    """SIGKILL a process and all its descendants (torchrun starts its workers in their own sessions)."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                stat = open(f'/proc/{entry}/stat').read()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(')', 1)[1].split()[1]), []).append(int(entry))
    family, todo = [], [pid]
    while todo:
        current = todo.pop()
        family.append(current)
        todo.extend(children.get(current, []))
    for member in reversed(family):  # workers first, so the launcher cannot restart them
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_torchrun_kill_and_resume_restores_each_ranks_random_state(tmp_path, tiny_data):
    """2 gloo processes, killed after the state of iteration 5 and resumed: each rank restores its own RNG
    and route generator, so the ranks keep drawing different hybrids, and the run ends equal to an
    uninterrupted one."""
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    for root in (straight, killed):
        root.mkdir()
        mipkd_options(root, tiny_data, 'ddpres', 10, save_freq=5)
    proc = _torchrun(str(straight / 'ddpres.yml'), str(straight), straight / 'ranks')
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-5000:]

    proc = _torchrun(str(killed / 'ddpres.yml'), str(killed), killed / 'ranks_killed',
                     env=dict(MIXPRIOR_TEST_SLOW_ITER='0.5'))
    wait_for_file(str(killed / 'experiments' / 'ddpres' / 'training_states' / '5.state'), proc)
    _kill_tree(proc.pid)
    proc.wait()
    time.sleep(0.5)
    assert not (killed / 'experiments' / 'ddpres' / 'training_states' / '10.state').exists()
    state = load_checkpoint(str(killed / 'experiments' / 'ddpres' / 'training_states' / '5.state'))
    assert len(state['rng_per_rank']) == 2 and len(state['extras_per_rank']) == 2
    assert not torch.equal(state['rng_per_rank'][0]['torch'], state['rng_per_rank'][1]['torch'])
    assert state['extras_per_rank'][0] != state['extras_per_rank'][1]

    proc = _torchrun(str(killed / 'ddpres.yml'), str(killed), killed / 'ranks', extra_args=('--auto_resume', ))
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-5000:]
    a = [torch.load(straight / 'ranks' / f'rank{r}.pth', weights_only=False) for r in (0, 1)]
    b = [torch.load(killed / 'ranks' / f'rank{r}.pth', weights_only=False) for r in (0, 1)]
    resumed = [dict(run['routes']) for run in b]
    assert sorted(resumed[0]) == list(range(6, 11))  # the resumed run trained iterations 6..10
    assert resumed[0] != resumed[1], 'both ranks drew the same hybrids after the resume'
    for rank in (0, 1):  # the same hybrids as the uninterrupted run, rank by rank
        assert resumed[rank] == {it: r for it, r in a[rank]['routes'] if it > 5}, f'rank {rank}'
    for part in ('net_g', 'net_extra'):
        for key in a[0][part]:
            assert torch.equal(a[0][part][key], b[0][part][key]), f'{part}.{key} differs from the straight run'


# ---- kill -9, exact resume ---------------------------------------------------------------------------------
def _final_weights(root, name, it):
    models = os.path.join(root, 'experiments', name, 'models')
    g = torch.load(os.path.join(models, f'net_g_{it}.pth'), weights_only=True)
    extra = torch.load(os.path.join(models, f'net_extra_{it}.pth'), weights_only=True)
    return g, extra


# three training processes (20 s): slow tier. The default suite keeps a kill during a checkpoint write
# (test_checkpoint) and exact in-process resumes (test_kd_chassis, test_mipkd, test_realworld).
@pytest.mark.slow
def test_kill9_then_auto_resume_matches_uninterrupted_run(tmp_path, tiny_data):
    """The resumed run ends with bit-identical weights (num_worker_per_gpu 0: see basicsr_fixes, fix 7)."""
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    straight.mkdir()
    killed.mkdir()
    for root in (straight, killed):
        mipkd_options(root, tiny_data, 'run', 20)

    proc = start_training(str(straight / 'run.yml'), str(straight))
    assert proc.wait(timeout=600) == 0, proc.stdout.read()[-3000:]

    proc = start_training(str(killed / 'run.yml'), str(killed), env=dict(MIXPRIOR_TEST_SLOW_ITER='0.15'))
    wait_for_file(str(killed / 'experiments' / 'run' / 'training_states' / '10.state'), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    states = sorted(int(os.path.basename(p).split('.')[0])
                    for p in glob.glob(str(killed / 'experiments' / 'run' / 'training_states' / '*.state')))
    assert 10 in states and 20 not in states, states  # really interrupted mid-run

    proc = start_training(str(killed / 'run.yml'), str(killed), extra_args=('--auto_resume', ))
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-3000:]
    assert 'Resuming training from epoch' in ''.join(
        open(f).read() for f in glob.glob(str(killed / 'experiments' / 'run' / 'train_*.log')))

    (g_a, e_a), (g_b, e_b) = _final_weights(straight, 'run', 20), _final_weights(killed, 'run', 20)
    for key in ('params', 'params_ema'):
        for name in g_a[key]:
            assert torch.equal(g_a[key][name], g_b[key][name]), f'{key}.{name}'
    for name in e_a['params']:
        assert torch.equal(e_a['params'][name], e_b['params'][name]), f'net_extra.{name}'


# ---- the ETA, the JPEG quality, BaseModel left alone -------------------------------------------------------
def test_eta_is_never_negative():
    """BasicSR prints "-1 day, 23:59:59" at the last iteration of a run whose steps take over a second."""
    from basicsr.utils import MessageLogger

    from mixprior_plugin.basicsr_fixes import wrap_message_logger
    opt = dict(name='eta', logger=dict(print_freq=1, use_tb_logger=False), train=dict(total_iter=10))
    lines = {}
    for label, cls in (('basicsr', MessageLogger), ('mixprior', wrap_message_logger(MessageLogger))):
        logger = cls(opt, start_iter=0)
        logger.start_time = time.time() - 20  # 10 iterations in 20 s
        with captured_log() as log:
            logger(dict(epoch=0, iter=10, lrs=[1e-4], time=2.0, data_time=0.0))
        lines[label] = log[-1][1]
    assert 'eta: -1 day, 23:59:59' in lines['basicsr']  # the bug, as BasicSR has it
    assert 'eta: 0:00:00' in lines['mixprior'] and lines['mixprior'].replace('0:00:00', '') == \
        lines['basicsr'].replace('-1 day, 23:59:59', '')


def test_opencv5_jpeg_quality_fix():
    """BasicSR's add_jpg_compression passes a float quality, which OpenCV 5 refuses; the plugin rounds it."""
    import cv2

    from basicsr.data import degradations

    from mixprior_plugin.basicsr_fixes import ORIGINALS, fix_jpg_quality
    fix_jpg_quality()
    img = np.random.default_rng(0).uniform(0, 1, (16, 16, 3)).astype(np.float32)
    with pytest.raises(cv2.error):
        ORIGINALS['add_jpg_compression'](img, 55.4)  # BasicSR's own function, as shipped
    out = degradations.add_jpg_compression(img, 55.4)
    assert np.array_equal(out, ORIGINALS['add_jpg_compression'](img, 55))
    np.random.seed(0)
    assert degradations.random_add_jpg_compression(img, (50, 60)).shape == img.shape


def test_basemodel_is_never_patched():
    """The entry points give BasicSR's models the checkpoint behaviour per run, through build_model only."""
    from basicsr.models.base_model import BaseModel
    from basicsr.models.sr_model import SRModel

    from mixprior_plugin import basicsr_fixes
    from mixprior_plugin.models import KDModel
    from mixprior_plugin.utils.checkpoint import CheckpointMixin
    basicsr_fixes.apply()
    for name in ('save_network', 'save_training_state', 'resume_training', 'load_network', 'model_to_device'):
        assert BaseModel.__dict__[name].__module__ == 'basicsr.models.base_model', name
    fixed = basicsr_fixes.with_fixes(SRModel)
    assert issubclass(fixed, CheckpointMixin) and issubclass(fixed, SRModel) and fixed.__name__ == 'SRModel'
    assert basicsr_fixes.with_fixes(SRModel) is fixed and basicsr_fixes.with_fixes(KDModel) is KDModel
    assert issubclass(KDModel, CheckpointMixin)
