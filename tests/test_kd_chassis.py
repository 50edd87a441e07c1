"""Distillation chassis: KDModel, teacher handling, save/resume, export, validation (stage adapters: test_stages.py)."""
import copy
import os
import subprocess
import sys

import pytest
import torch

from basicsr.archs import build_network
from basicsr.models import build_model
from basicsr.utils.misc import check_resume

from helpers import (
    FAMILIES,
    REPO,
    SCALES,
    base_model_opt,
    run_cli,
    state_equal,
    tiny_arch,
    write_yaml,
)
from mixprior_plugin.utils.options import OptionError, normalise_teacher_aliases


def kd_opt(family, scale, teacher_path, tmp_path=None, **extra):
    opt = base_model_opt(tiny_arch(family, 'g', scale), tiny_arch(family, 't', scale), scale, teacher_path,
                         distill=dict(num_stages=2), **extra)
    if tmp_path is not None:
        opt['path']['models'] = str(tmp_path / 'models')
        opt['path']['training_states'] = str(tmp_path / 'training_states')
        os.makedirs(opt['path']['models'], exist_ok=True)
        os.makedirs(opt['path']['training_states'], exist_ok=True)
    return opt


def feed(model, scale, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch, 3, 16, 16, generator=g)
    gt = torch.rand(batch, 3, 16 * scale, 16 * scale, generator=g)
    model.feed_data(dict(lq=lq, gt=gt))


def student_grads(model):
    return {n: p.grad for n, p in model.get_bare_model(model.net_g).named_parameters()}


@pytest.mark.parametrize('scale', SCALES)
@pytest.mark.parametrize('family', FAMILIES)
def test_kd_step_teacher_frozen_student_learns(family, scale, teacher_file):
    torch.manual_seed(0)
    opt = kd_opt(family, scale, teacher_file(family, scale),
                 train=dict(feat_opt=[dict(type='FitNetLoss', loss_weight=1.0)]))
    model = build_model(opt)
    feed(model, scale)
    model.optimize_parameters(1)

    assert not model.net_t.training and all(not m.training for m in model.net_t.modules())
    assert all(p.grad is None and not p.requires_grad for p in model.net_t.parameters())
    grads = student_grads(model)
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert sum(g.abs().sum().item() for g in grads.values()) > 0
    assert {'l_pix', 'l_kd', 'l_fitnet'} <= set(model.log_dict)

    # recorded stage features: (B, C, h, w) at LR size for every stage of both networks
    c_t, c_s = model.adapter_t.channels, model.adapter_g.channels
    assert len(model.recorder_t.features) == len(model.recorder_g.features) == 2
    for f_t, f_s in zip(model.recorder_t.features, model.recorder_g.features):
        assert tuple(f_t.shape) == (2, c_t, 16, 16)
        assert tuple(f_s.shape) == (2, c_s, 16, 16)
        assert not f_t.requires_grad and f_s.requires_grad
    # the connector (extra module) trained too
    conn = model.net_extra['connectors']['0']
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conn.parameters())


def test_output_kd_changes_student_gradient(teacher_file):
    path = teacher_file('EDSR', 4)
    grads = []
    for kd_weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = build_model(kd_opt('EDSR', 4, path, train=dict(kd_opt=dict(type='L1Loss', loss_weight=kd_weight))))
        feed(model, 4)
        model.optimize_parameters(1)
        assert ('l_kd' in model.log_dict) == (kd_weight > 0)
        grads.append(student_grads(model))
    diff = sum((grads[0][n] - grads[1][n]).abs().sum().item() for n in grads[0])
    assert diff > 0


def test_student_init_identical_to_sr_model(teacher_file):
    """Fair comparison: same seed -> the KD student starts from the same weights as SRModel's."""
    opt = kd_opt('EDSR', 4, teacher_file('EDSR', 4))
    torch.manual_seed(0)
    kd = build_model(opt)
    sr_opt = copy.deepcopy(opt)
    sr_opt['model_type'] = 'SRModel'
    for k in ('network_t', 'distill'):
        sr_opt.pop(k)
    torch.manual_seed(0)
    sr = build_model(sr_opt)
    for (n, a), (_, b) in zip(kd.net_g.state_dict().items(), sr.net_g.state_dict().items()):
        assert torch.equal(a, b), n


def test_save_then_resume_restores_everything(tmp_path, teacher_file):
    teacher = teacher_file('RCAN', 2)
    opt = kd_opt('RCAN', 2, teacher, tmp_path, train=dict(feat_opt=dict(type='FitNetLoss', loss_weight=1.0)))
    opt['path']['teacher_param_key'] = 'params'
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(opt))
    for it in (1, 2):
        feed(model, 2, seed=it)
        model.update_learning_rate(it)
        model.optimize_parameters(it)
    model.save(epoch=0, current_iter=2)
    assert os.path.exists(tmp_path / 'models' / 'net_extra_2.pth')
    state = torch.load(tmp_path / 'training_states' / '2.state', weights_only=True)
    assert len(state['optimizers']) == 2  # student + extra modules

    # resume as train_pipeline does: BasicSR's check_resume rewrites paths, then resume_training
    resumed_opt = copy.deepcopy(opt)
    resumed_opt['path']['resume_state'] = str(tmp_path / 'training_states' / '2.state')
    normalise_teacher_aliases(resumed_opt)
    check_resume(resumed_opt, 2)
    assert resumed_opt['path']['pretrain_network_t'] == teacher  # teacher keeps its own path
    assert resumed_opt['path']['teacher_param_key'] == 'params'  # and key
    assert resumed_opt['path']['pretrain_network_g'].endswith('net_g_2.pth')
    torch.manual_seed(123)  # a different init must be overwritten by the resume
    resumed = build_model(resumed_opt)
    resumed.resume_training(state)

    assert state_equal(model.net_g.state_dict(), resumed.net_g.state_dict())
    assert state_equal(model.net_g_ema.state_dict(), resumed.net_g_ema.state_dict())
    assert state_equal(model.net_extra.state_dict(), resumed.net_extra.state_dict())
    assert state_equal(model.net_t.state_dict(), resumed.net_t.state_dict())
    for a, b in zip(model.optimizers, resumed.optimizers):
        assert state_equal(a.state_dict(), b.state_dict())
    for a, b in zip(model.schedulers, resumed.schedulers):
        assert state_equal(a.state_dict(), b.state_dict())


def test_teacher_aliases_are_accepted(teacher_file, capsys):
    opt = kd_opt('EDSR', 2, teacher_file('EDSR', 2))
    opt['network_g_teacher'] = opt.pop('network_t')
    opt['path']['pretrain_network_g_teacher'] = opt['path'].pop('pretrain_network_t')
    model = build_model(opt)
    assert model.net_t.__class__.__name__ == 'EDSR'
    out = capsys.readouterr().out
    assert 'network_g_teacher is read as network_t' in out
    assert 'network_t' in model.opt['path']['ignore_resume_networks']


def test_exported_student_loads_strict_and_matches_ema(tmp_path, teacher_file):
    opt = kd_opt('SwinIR', 4, teacher_file('SwinIR', 4), tmp_path,
                 train=dict(feat_opt=dict(type='FitNetLoss', loss_weight=1.0)))
    model = build_model(copy.deepcopy(opt))
    for it in (1, 2):
        feed(model, 4, seed=it)
        model.optimize_parameters(it)
    model.save(0, 2)
    opt_file = write_yaml(str(tmp_path / 'kd.yml'), {k: v for k, v in opt.items() if k != 'is_train'})
    out_file = str(tmp_path / 'student.pth')
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'export_student.py'), '-opt', opt_file,
                           '--ckpt', str(tmp_path / 'models' / 'net_g_2.pth'), '-o', out_file],
                          capture_output=True, text=True, check=True)
    n_params = sum(p.numel() for p in model.net_g.parameters())
    assert f'{n_params:,d} parameters' in proc.stdout

    ckpt = torch.load(out_file, weights_only=True)
    assert list(ckpt) == ['params']
    net = build_network(dict(opt['network_g']))
    net.load_state_dict(ckpt['params'], strict=True)  # BasicSR's own arch, strict
    extra_keys = set(model.net_extra.state_dict()) | {f'net_t.{k}' for k in model.net_t.state_dict()}
    assert not extra_keys & set(ckpt['params'])
    x = torch.rand(1, 3, 16, 16)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), model.net_g_ema.eval()(x))


# ---- option validation: each error names the offending key ------------------------------------
def _error(opt):
    with pytest.raises((OptionError, ValueError, KeyError)) as info:
        build_model(opt)
    return str(info.value)


def test_error_unknown_distill_key(teacher_file):
    opt = kd_opt('EDSR', 2, teacher_file('EDSR', 2))
    opt['distill']['num_stage'] = 2
    assert 'distill.num_stage' in _error(opt)


def test_error_different_stage_counts(teacher_file):
    opt = kd_opt('EDSR', 2, teacher_file('EDSR', 2))
    opt['distill'] = dict(stages_t=[2, 4], stages_g=[2])
    msg = _error(opt)
    assert 'distill.stages_t' in msg and 'distill.stages_g' in msg


def test_error_boundaries_out_of_range(teacher_file):
    opt = kd_opt('EDSR', 2, teacher_file('EDSR', 2))
    opt['distill'] = dict(stages_t=[2, 5], stages_g=[1, 2])
    msg = _error(opt)
    assert 'distill.stages_t' in msg and '1..4' in msg


def test_error_scales_differ(teacher_file):
    opt = kd_opt('EDSR', 2, teacher_file('EDSR', 2))
    opt['network_t']['upscale'] = 4
    msg = _error(opt)
    assert 'network_t.upscale' in msg and 'network_g.upscale' in msg


def test_error_missing_teacher_weights(teacher_file, tmp_path):
    opt = kd_opt('EDSR', 2, teacher_file('EDSR', 2))
    opt['path'].pop('pretrain_network_t')
    assert 'path.pretrain_network_t' in _error(opt)
    opt['path']['pretrain_network_t'] = str(tmp_path / 'nope.pth')
    msg = _error(opt)
    assert 'path.pretrain_network_t' in msg and 'nope.pth' in msg


def test_error_teacher_weights_do_not_fit(teacher_file):
    opt = kd_opt('EDSR', 2, teacher_file('EDSR', 2))
    opt['network_t']['num_feat'] = 24  # file holds a 16-channel teacher
    opt['network_t']['num_block'] = 5
    msg = _error(opt)
    assert 'path.pretrain_network_t' in msg
    assert 'shape mismatch' in msg and 'conv_first.weight: network (24, 3, 3, 3) vs file (16, 3, 3, 3)' in msg
    assert 'missing in file' in msg and 'body.4.conv1.weight' in msg


def test_mixprior_test_runs_student_only(tmp_path, tiny_data):
    """mixprior-test on a KD option file builds and evaluates the student; no teacher needed."""
    hr, lr = tiny_data[4]
    student = tiny_arch('SwinIR', 'g', 4)
    torch.manual_seed(0)
    torch.save({'params': build_network(dict(student)).state_dict()}, tmp_path / 'student.pth')
    opt = dict(name='kd_test', model_type='KDModel', scale=4, num_gpu=0, manual_seed=0,
               datasets=dict(test_1=dict(name='tinytest', type='PairedImageDataset', dataroot_gt=hr, dataroot_lq=lr,
                                         io_backend=dict(type='disk'))),
               network_g=student, network_t=tiny_arch('SwinIR', 't', 4),
               path=dict(pretrain_network_g=str(tmp_path / 'student.pth'), pretrain_network_t='/does/not/exist.pth',
                         strict_load_g=True),
               val=dict(save_img=True, suffix=None,
                        metrics=dict(psnr=dict(type='calculate_psnr', crop_border=4, test_y_channel=True))))
    opt_file = write_yaml(str(tmp_path / 'kd_test.yml'), opt)
    run_cli(['-m', 'mixprior_plugin.test', '-opt', opt_file], cwd=str(tmp_path))
    log = open(next((tmp_path / 'results' / 'kd_test').glob('test_*.log'))).read()
    assert 'Validation tinytest' in log and '# psnr:' in log
    assert 'Teacher' not in log
    # LR 24x24 is not a multiple of the window (8): the model padded and cropped back
    import cv2
    sr = cv2.imread(str(next((tmp_path / 'results' / 'kd_test' / 'visualization' / 'tinytest').glob('*.png'))))
    assert sr.shape[:2] == (96, 96)
