"""No wrong number with exit status 0: non-strict loads, the keys and data sets a test evaluates, tiles, the
teacher check at start-up, train.amp without CUDA and the ETA."""
import json
import os
import random
import re
import sys
import time

import numpy as np
import pytest
import torch

from basicsr.archs import build_network
from basicsr.models import build_model

from helpers import (
    REPO,
    base_model_opt,
    captured_log,
    make_paired_folder,
    save_random_teacher,
    sr_options,
    tiny_arch,
    write_yaml,
)
from mixprior_plugin.inference import EvalError, receptive_radius, sr_tensor
from mixprior_plugin.utils.checkpoint import CheckpointMismatchError, load_state_checked

SCALE = 2
sys.path.insert(0, os.path.join(REPO, 'tools'))
import evaluate  # noqa: E402  (tools/evaluate.py)

sys.path.pop(0)


def _net(arch, seed=0):
    torch.manual_seed(seed)
    return build_network(dict(arch)).eval()


# ---- non-strict loads report what they loaded ----------------------------------------------------------------
@pytest.mark.bad_input
def test_non_strict_load_of_another_width_is_refused_naming_both_shapes(bad_case):
    teacher = _net(tiny_arch('EDSR', 't', SCALE))
    wider = _net(dict(tiny_arch('EDSR', 't', SCALE), num_feat=12)).state_dict()
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_checked(teacher, wider, 'teacher.pth', 'network_t (EDSR)', strict=False)
    message = bad_case.message(info.value)
    assert '\n' not in message
    assert 'teacher.pth fills only 1 of the 24 parameter tensors of network_t (EDSR) (0.0% of its parameters; ' \
        'a non-strict load needs 50%)' in message  # conv_last.bias (3 values) alone fits
    assert 'conv_first.weight: network (16, 3, 3, 3) vs file (12, 3, 3, 3)' in message
    # no name in common at all: the network keeps its initialisation, nothing is loaded
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    renamed = {f'model.{k}': v for k, v in teacher.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r'no tensor name in common \(network: conv_first.weight, '):
        load_state_checked(teacher, renamed, 'other.pth', strict=False)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


@pytest.mark.bad_input
def test_partial_non_strict_load_names_what_it_skipped_and_needs_half_the_network(bad_case):
    """BasicSR's fine-tuning recipe (x2 weights into an x4 EDSR, strict_load_g: false) loads, naming the rest."""
    x4 = _net(tiny_arch('EDSR', 'g', 4))
    x2 = _net(tiny_arch('EDSR', 'g', 2), seed=1).state_dict()
    with captured_log() as log:
        report = load_state_checked(x4, x2, 'x2.pth', 'network_g (EDSR)', strict=False)
    assert report['loaded'] == report['total'] - 2 and 0.5 < report['share'] < 1
    warning = [text for level, text in log if level == 'WARNING'][0]
    assert f'Non-strict load: {report["loaded"]} of {report["total"]} parameter tensors of network_g (EDSR) ' \
        'loaded' in warning and 'left as initialised: upsample.2.bias, upsample.2.weight' in warning, warning
    assert torch.equal(x4.state_dict()['body.1.conv2.weight'], x2['body.1.conv2.weight'])
    # the head alone is below half the network: refused
    head = {k: v for k, v in x2.items() if k.startswith('conv_first.')}
    with pytest.raises(CheckpointMismatchError, match=r'fills only 2 of the \d+ parameter tensors') as info:
        load_state_checked(x4, head, 'head.pth', strict=False)
    assert 'tensors of the network are not in the file (body.0.conv1.weight' in bad_case.message(info.value)


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


# ---- tools/evaluate.py ----------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def eval_files(tmp_path_factory):
    """A datasets root with a set 'Tiny' (HR only: LR made by bicubic), a tiny EDSR student and weights."""
    root = tmp_path_factory.mktemp('eval')
    make_paired_folder(str(root / 'data' / 'Tiny'), SCALE, num=2, size=96, seed=5)
    arch = tiny_arch('EDSR', 'g', SCALE)
    student = _net(arch, seed=3)
    torch.save({'params': student.state_dict(), 'params_ema': student.state_dict()}, root / 'student.pth')
    wide = _net(dict(arch, num_feat=12))
    torch.save({'params_ema': wide.state_dict()}, root / 'wide.pth')
    partial = {k: v for k, v in student.state_dict().items() if not k.startswith('conv_last.')}
    torch.save({'params_ema': partial}, root / 'partial.pth')
    swin = tiny_arch('SwinIR', 'g', SCALE)
    torch.save({'params': _net(swin).state_dict()}, root / 'swin.pth')
    return dict(root=root, data=str(root / 'data'), arch=arch, swin=swin)


def _evaluate_args(files, tmp_path, ckpt='student.pth', arch=None):
    return ['--scale', str(SCALE), '--arch-json', json.dumps(arch or files['arch']), '--ckpt',
            str(files['root'] / ckpt), '--data-root', files['data'], '--sets', 'Tiny', '--out-dir', str(tmp_path)]


EVALUATE_MISTAKES = {  # case: (extra arguments, file, arch key, texts of the message)
    'misspelt_param_key': (['--param-key', 'param_ema'], 'student.pth', None,
                           ["--param-key 'param_ema' is not in", '(keys: params, params_ema)']),
    'weights_of_another_width': ([], 'wide.pth', None,
                                 ['wide.pth [params_ema] does not fit EDSR (wide; --non-strict evaluates a partial '
                                  'load)', 'conv_first.weight: network (8, 3, 3, 3) vs file (12, 3, 3, 3)']),
    'non_strict_weights_of_another_width': (['--non-strict'], 'wide.pth', None,
                                            ['fills only 1 of the 16 parameter tensors of EDSR (wide)',
                                             'conv_first.weight: network (8, 3, 3, 3) vs file (12, 3, 3, 3)']),
    'tile_overlap_below_the_receptive_field': (['--tile', '16', '--tile-overlap', '14'], 'student.pth', None,
                                               ['--tile-overlap 14 is too small for EDSR', 'overlap // 2 >= the '
                                                'receptive field radius', 'changes its output 8 LR pixels away',
                                                'use --tile-overlap 16 or more']),
    'tile_overlap_off_the_window': (['--tile', '16', '--tile-overlap', '4'], 'swin.pth', 'swin',
                                    ['--tile-overlap 4 is not a multiple of the window size 8']),
}


@pytest.mark.bad_input
@pytest.mark.parametrize('case', sorted(EVALUATE_MISTAKES))
def test_evaluate_refuses_what_would_give_a_wrong_number(case, eval_files, tmp_path, bad_case):
    extra, ckpt, arch, expected = EVALUATE_MISTAKES[case]
    with pytest.raises(SystemExit) as info:
        evaluate.main(_evaluate_args(eval_files, tmp_path, ckpt, eval_files.get(arch)) + extra)
    message = bad_case.message(info.value.code)
    assert message.startswith('evaluate: ')
    for text in expected:
        assert text in message, f'{text!r} not in {message!r}'
    assert not (tmp_path / 'results.json').exists()


def test_evaluate_non_strict_evaluates_a_partial_student_naming_what_it_skipped(eval_files, tmp_path):
    with captured_log() as log:
        results = evaluate.main(_evaluate_args(eval_files, tmp_path, 'partial.pth') + ['--non-strict'])
    assert 10 < results['sets']['Tiny']['methods']['partial']['psnr'] < 60
    assert any('left as initialised: conv_last.bias, conv_last.weight' in text for _, text in log), log


def test_evaluate_data_root_flag_keeps_its_old_name(eval_files, tmp_path):
    common = ['--scale', str(SCALE), '--bicubic', '--sets', 'Tiny']
    new = evaluate.main(common + ['--data-root', eval_files['data'], '--out-dir', str(tmp_path / 'new')])
    old = evaluate.main(common + ['--datasets-root', eval_files['data'], '--out-dir', str(tmp_path / 'old')])
    assert new['sets'] == old['sets'] and new['datasets_root'] == os.path.abspath(eval_files['data'])


# ---- tiles --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('blocks', [1, 3])
def test_receptive_radius_probe_agrees_with_the_arch(blocks):
    """EDSR x2: conv_first, 2 convs per block, conv_after_body, the upsampling conv (LR) and conv_last (at HR,
    at most one LR pixel): 2 * blocks + 4 LR pixels."""
    net = _net(dict(tiny_arch('EDSR', 'g', SCALE), num_block=blocks))
    assert receptive_radius(net, SCALE) == 2 * blocks + 4
    assert receptive_radius(net, SCALE, reach=2 * blocks + 3) is None  # beyond the reach asked


def test_tiles_equal_the_untiled_output_at_the_radius_and_are_refused_below():
    net = _net(tiny_arch('EDSR', 'g', SCALE))
    x = torch.rand(1, 3, 40, 36)
    with torch.no_grad():
        ref = net(x)
    tiled = sr_tensor(net, x, SCALE, tile=24, overlap=16)  # radius 8 = overlap // 2
    assert tiled.shape == ref.shape and torch.allclose(tiled, ref, atol=1e-5)
    with pytest.raises(EvalError, match='use --tile-overlap 16 or more'):
        sr_tensor(net, x, SCALE, tile=24, overlap=14)
    with pytest.warns(UserWarning, match='tiled results are approximate'):
        rough = sr_tensor(net, x, SCALE, tile=24, overlap=14, inexact_ok=True)
    assert not torch.allclose(rough, ref, atol=1e-5)  # what the error protects against
    # SwinIR: exact with tile and overlap multiples of the window and overlap // 2 >= its measured radius
    swin = _net(tiny_arch('SwinIR', 'g', SCALE))
    radius = receptive_radius(swin, SCALE, window=8)
    overlap = -(-2 * radius // 8) * 8
    x = torch.rand(1, 3, 3 * overlap, 2 * overlap + 8)
    ref = sr_tensor(swin, x, SCALE, window=8)
    tiled = sr_tensor(swin, x, SCALE, window=8, tile=overlap + 16, overlap=overlap)
    assert torch.allclose(tiled, ref, atol=1e-5)


def test_global_attention_is_never_tile_exact():
    """RCAN's channel attention pools the whole image: no overlap makes tiles exact."""
    rcan = _net(tiny_arch('RCAN', 't', SCALE))
    assert receptive_radius(rcan, SCALE) is None
    with pytest.raises(EvalError, match=r'more than 64 LR pixels away \(global pooling or attention\)'):
        sr_tensor(rcan, torch.rand(1, 3, 40, 40), SCALE, tile=32, overlap=16)


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


# ---- train.amp without CUDA, the ETA ------------------------------------------------------------------------
@pytest.mark.bad_input
@pytest.mark.parametrize('amp', ['fp16', 'bf16'])
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
