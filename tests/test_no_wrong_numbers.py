"""No wrong number with exit status 0: the key and the data sets mixprior-test evaluates, the teacher check at
start-up, train.amp without CUDA.

Non-strict loads are tested in test_checkpoint.py, tools/evaluate.py and tiles in test_evaluation.py, the ETA in
test_basicsr_fixes.py."""
import os
import random
import re

import numpy as np
import pytest
import torch

from basicsr.models import build_model

from helpers import (
    REPO,
    base_model_opt,
    captured_log,
    save_random_teacher,
    sr_options,
    tiny_arch,
    write_yaml,
)

SCALE = 2


# ---- mixprior-test: the key and the data sets it evaluates ---------------------------------------------------
def _kd_training_file(tmp_path, tiny_data, **path):
    hr, lr = tiny_data[SCALE]
    opt = sr_options('kdtest', str(tmp_path), SCALE, tiny_arch('EDSR', 'g', SCALE), hr, lr, model_type='KDModel',
                     extra=dict(network_t=tiny_arch('EDSR', 't', SCALE)))
    student = save_random_teacher(str(tmp_path / 'student.pth'), tiny_arch('EDSR', 'g', SCALE))
    opt['path'].update(pretrain_network_t=str(tmp_path / 'no_teacher_needed.pth'), pretrain_network_g=student,
                       **path)
    return opt


def _test_error(opt, tmp_path, monkeypatch, capsys, bad_case):
    from mixprior_plugin.test import main as test_main
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        test_main(['-opt', write_yaml(str(tmp_path / 'test.yml'), opt)])
    assert info.value.code == 1
    assert not (tmp_path / 'results').exists(), 'nothing may be created before the error'
    return bad_case.error_line(capsys.readouterr().err, 'mixprior-test')


@pytest.mark.bad_input
def test_param_key_g_named_must_be_in_the_checkpoint(tmp_path, tiny_data, monkeypatch, capsys, bad_case):
    """A misspelt key was read as 'params' (a plausible, wrong PSNR); now it is refused like teacher_param_key."""
    opt = _kd_training_file(tmp_path, tiny_data, param_key_g='param_ema')
    line = _test_error(opt, tmp_path, monkeypatch, capsys, bad_case)
    assert f"Option path.param_key_g='param_ema' is not in {tmp_path / 'student.pth'} (keys: params, params_ema)" \
        in line, line


@pytest.mark.bad_input
def test_mixprior_test_on_a_training_set_alone_is_refused(tmp_path, tiny_data, monkeypatch, capsys, bad_case):
    opt = _kd_training_file(tmp_path, tiny_data)
    del opt['datasets']['val']
    line = _test_error(opt, tmp_path, monkeypatch, capsys, bad_case)
    assert 'Option datasets holds only the training set (train): add a val or test_1 dataset' in line, line


# ---- the teacher check at start-up -------------------------------------------------------------------------
def _kd_model(teacher_arch, teacher_path, datasets, **train):
    opt = base_model_opt(tiny_arch('EDSR', 'g', SCALE), teacher_arch, SCALE, teacher_path, train=train,
                         datasets=datasets)
    return build_model(opt)


@pytest.fixture(scope='module')
def photo_val(tmp_path_factory):
    """Validation options over two of scikit-image's sample photos (HR and MATLAB-bicubic LR at x2)."""
    from mixprior_plugin.demo import TEST_IMAGES, write_pairs
    root = tmp_path_factory.mktemp('photos')
    write_pairs(TEST_IMAGES[:2], str(root / 'HR'), str(root / 'LR'), SCALE)
    return dict(val=dict(name='photos', type='PairedImageDataset', dataroot_gt=str(root / 'HR'),
                         dataroot_lq=str(root / 'LR'), io_backend=dict(type='disk')))


def test_teacher_check_logs_the_teachers_psnr_beside_bicubics(photo_val):
    """The committed x2 teacher (37.1 dB on Set5) beats bicubic on two photos: no warning."""
    arch = dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=32, num_block=8, upscale=2, res_scale=1.0,
                img_range=255.)
    with captured_log() as log:
        _kd_model(arch, os.path.join(REPO, 'pretrained', 'EDSR_C32B8_x2_T91BSD200.pth'), photo_val)
    line = [text for _, text in log if text.startswith('Teacher check')][0]
    teacher, bicubic = (float(v) for v in
                        re.search(r'teacher ([\d.]+) dB, bicubic ([\d.]+) dB', line).groups())
    assert 'on 2 validation images of datasets.val' in line and teacher > bicubic + 0.5 and 25 < bicubic < 45, line
    assert not [text for level, text in log if level == 'WARNING'], log


@pytest.mark.bad_input
def test_teacher_below_bicubic_is_a_warning_naming_the_key_and_the_ema(tmp_path, photo_val, bad_case):
    arch = tiny_arch('EDSR', 't', SCALE)
    with captured_log() as log:
        _kd_model(arch, save_random_teacher(str(tmp_path / 'init.pth'), arch), photo_val)
    warnings = [text for level, text in log if level == 'WARNING' and 'below bicubic' in text]
    assert len(warnings) == 1, log
    message = bad_case.message(warnings[0])
    assert "path.teacher_param_key='params_ema'" in message and 'EMA' in message and 'init.pth' in message


def test_teacher_check_on_training_patches_keeps_the_random_stream(tmp_path, tiny_data):
    """Without a validation set the check crops training patches at random; the run's RNG is restored."""
    hr, lr = tiny_data[SCALE]
    arch = tiny_arch('EDSR', 't', SCALE)
    train = dict(name='tiny', type='PairedImageDataset', dataroot_gt=hr, dataroot_lq=lr, io_backend=dict(type='disk'),
                 gt_size=32, use_hflip=True, use_rot=True, phase='train', scale=SCALE)
    with captured_log() as log:
        model = _kd_model(arch, save_random_teacher(str(tmp_path / 't.pth'), arch), dict(train=train))
    assert any('Teacher check on 2 training patches of datasets.train' in text for _, text in log), log
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    model.check_teacher()
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


# ---- train.amp without CUDA ------------------------------------------------------------------------------
@pytest.mark.bad_input
@pytest.mark.parametrize('amp', [pytest.param('fp16', marks=pytest.mark.slow), 'bf16'])  # timing fp16 on a CPU: 25 s
def test_amp_without_cuda_says_what_it_costs_and_warns_when_slower(amp, tmp_path, bad_case):
    """CPUs differ (bf16 autocast is faster than fp32 on some, far slower on others): the cost is measured."""
    if torch.cuda.is_available():
        pytest.skip('a CUDA machine: train.amp is what it is for')
    from mixprior_plugin.models.kd_model import CPU_AUTOCAST_TOLERANCE, cpu_autocast_slowdown
    arch = tiny_arch('EDSR', 't', SCALE)
    with captured_log() as log:
        model = _kd_model(arch, save_random_teacher(str(tmp_path / 't.pth'), arch), {}, amp=amp)
    said = [(level, text) for level, text in log if text.startswith(f'train.amp={amp} on a machine without CUDA')]
    assert len(said) == 1 and model.amp_dtype == {'fp16': torch.float16, 'bf16': torch.bfloat16}[amp], log
    level, message = said[0]
    slowdown = float(re.search(r'takes ([\d.]+)x the fp32 time', bad_case.message(message)).group(1))
    assert (level == 'WARNING') == (slowdown > CPU_AUTOCAST_TOLERANCE), said
    assert ('training will be slower' in message) == (level == 'WARNING')
    state = torch.get_rng_state()  # the timing leaves the run's random stream alone
    cpu_autocast_slowdown(model.amp_dtype, repeats=1)
    assert torch.equal(state, torch.get_rng_state())
