"""mixprior_plugin.evaluation and mixprior_plugin.inference, through tools/evaluate.py: the figures, tiles, refusals."""
import json
import os
from copy import deepcopy

import cv2
import numpy as np
import pytest
import torch

from basicsr.archs import build_network
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img

from helpers import (
    SHARED_DATASETS,
    base_model_opt,
    captured_log,
    crop,
    eval_net,
    exit_message,
    load_tool,
    make_paired_folder,
    matlab_resize,
    tiny_arch,
    write_sources,
    write_yaml,
)
from mixprior_plugin.inference import EvalError, receptive_radius, sr_tensor

SCALE = 2
evaluate = load_tool('evaluate')


# ---- the protocol: BasicSR's PSNR/SSIM, official or MATLAB-bicubic LR --------------------------------------
def sr_by_hand(net, lr):
    x = img2tensor(lr.astype(np.float32) / 255., bgr2rgb=True, float32=True)[None]
    with torch.no_grad():
        return tensor2img(net(x))


def test_evaluate_bicubic_set5_x4_matches_basicsr(tmp_path, test_data):
    set5 = os.path.dirname(os.path.dirname(test_data('datasets', 'Set5', 'LR_bicubic', 'X4')))
    psnrs, ssims = [], []
    for fname in sorted(os.listdir(os.path.join(set5, 'HR'))):
        name = os.path.splitext(fname)[0]
        hr = crop(cv2.imread(os.path.join(set5, 'HR', fname)), 4)
        lr = cv2.imread(os.path.join(set5, 'LR_bicubic', 'X4', f'{name}x4.png'))
        sr = matlab_resize(lr, 4)
        psnrs.append(calculate_psnr(sr, hr, crop_border=4, test_y_channel=True))
        ssims.append(calculate_ssim(sr, hr, crop_border=4, test_y_channel=True))
    results = evaluate.main(['--scale', '4', '--bicubic', '--sets', 'Set5', '--data-root', SHARED_DATASETS,
                             '--out-dir', str(tmp_path)])
    got = results['sets']['Set5']
    assert got['num_images'] == 5 and got['lr'] == {'official': 5, 'generated': 0}
    assert got['methods']['bicubic']['psnr'] == pytest.approx(np.mean(psnrs), abs=1e-9)
    assert got['methods']['bicubic']['ssim'] == pytest.approx(np.mean(ssims), abs=1e-9)
    assert 28.0 < got['methods']['bicubic']['psnr'] < 29.0  # published: 28.42 dB
    saved = json.load(open(tmp_path / 'results.json'))
    assert saved['sets']['Set5']['methods']['bicubic']['psnr'] == got['methods']['bicubic']['psnr']
    print(f'Set5 x4 bicubic: {np.mean(psnrs):.4f} dB / {np.mean(ssims):.4f}')


def fake_root(tmp_path, scale=4):
    """A datasets root with one test set 'Tiny': PNG, JPEG and grayscale HR (uncropped sizes), an
    official LR for 'a' only (made with INTER_AREA, so it differs from MATLAB bicubic)."""
    root = tmp_path / 'datasets'
    src = write_sources(str(root / 'Tiny' / 'HR'), np.random.default_rng(6),
                        {'a.png': (54, 70, False), 'g.png': (40, 42, True), 'j.jpg': (45, 47, False)})
    lr_dir = root / 'Tiny' / 'LR_bicubic' / f'X{scale}'
    lr_dir.mkdir(parents=True)
    hr_a = crop(cv2.imread(src['a']), scale)
    cv2.imwrite(str(lr_dir / f'ax{scale}.png'),
                cv2.resize(hr_a, (hr_a.shape[1] // scale, hr_a.shape[0] // scale), interpolation=cv2.INTER_AREA))
    return str(root), src


def save_student(path, arch, seed):
    torch.manual_seed(seed)
    net = build_network(deepcopy(arch))
    torch.save({'params': net.state_dict()}, path)
    return net.eval()


def test_evaluate_checkpoint_from_kd_option_file(tmp_path, teacher_file):
    root, src = fake_root(tmp_path)
    student = tiny_arch('EDSR', 'g', 4)
    net = save_student(str(tmp_path / 'student.pth'), student, seed=1)
    opt = base_model_opt(student, tiny_arch('EDSR', 't', 4), 4, teacher_file('EDSR', 4))
    opt_file = write_yaml(str(tmp_path / 'kd.yml'), opt)
    results = evaluate.main(['--scale', '4', '-opt', opt_file, '--ckpt', str(tmp_path / 'student.pth'), '--label',
                             'kd', '--data-root', root, '--sets', 'Tiny', '--out-dir', str(tmp_path / 'ev')])
    got = results['sets']['Tiny']
    assert got['lr'] == {'official': 1, 'generated': 2}
    for name, path in src.items():
        hr = crop(cv2.imread(path), 4)
        lr = (cv2.imread(os.path.join(root, 'Tiny', 'LR_bicubic', 'X4', 'ax4.png')) if name == 'a' else
              matlab_resize(hr, 1 / 4))
        sr = sr_by_hand(net, lr)
        assert got['methods']['kd']['images'][name]['psnr'] == pytest.approx(
            calculate_psnr(sr, hr, crop_border=4, test_y_channel=True), abs=1e-9), name
        assert got['methods']['kd']['images'][name]['ssim'] == pytest.approx(
            calculate_ssim(sr, hr, crop_border=4, test_y_channel=True), abs=1e-9), name
    assert '| Tiny (3) | 1 official, 2 made |' in open(tmp_path / 'ev' / 'results.md').read()


def test_evaluate_compare_chart_images_and_crop_figure(tmp_path):
    root, src = fake_root(tmp_path)
    arch = tiny_arch('EDSR', 'g', 4)
    arch_file = tmp_path / 'arch.json'
    arch_file.write_text(json.dumps(arch))
    for seed in (1, 2):
        save_student(str(tmp_path / f's{seed}.pth'), arch, seed)
    out = tmp_path / 'cmp'
    results = evaluate.main(['--scale', '4', '--arch-json', str(arch_file), '--compare', f'one={tmp_path}/s1.pth',
                             f'two={tmp_path}/s2.pth@{arch_file}', '--bicubic', '--data-root', root, '--sets',
                             'Tiny', '--out-dir', str(out), '--save-images', '--crop-figure', 'a', '8', '4', '24'])
    assert [m['label'] for m in results['methods']] == ['one', 'two', 'bicubic']
    means = results['sets']['Tiny']['methods']
    for label in ('two', 'bicubic'):
        assert results['deltas'][label]['Tiny']['psnr'] == pytest.approx(means[label]['psnr'] - means['one']['psnr'])
    assert means['one']['psnr'] != means['two']['psnr']
    table = open(out / 'results.md').read()
    assert 'Δ two vs one' in table and f'{results["deltas"]["two"]["Tiny"]["psnr"]:+.2f}' in table
    for fig in ('delta_psnr.png', 'crop_a.png'):
        img = cv2.imread(str(out / fig))
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100, fig
    for label in ('one', 'two', 'bicubic'):
        for name, path in src.items():
            sr = cv2.imread(str(out / 'images' / label / 'Tiny' / f'{name}.png'))
            assert sr.shape == crop(cv2.imread(path), 4).shape
    # a crop box outside the image, an unknown image name
    assert 'outside' in exit_message(evaluate.main, ['--scale', '4', '--bicubic', '--data-root', root, '--sets',
                                                     'Tiny', '--out-dir', str(out), '--crop-figure', 'g', '30', '0',
                                                     '16'])
    assert "'zzz'" in exit_message(evaluate.main, ['--scale', '4', '--bicubic', '--data-root', root, '--sets',
                                                   'Tiny', '--out-dir', str(out), '--crop-figure', 'zzz', '0', '0',
                                                   '8'])


def test_evaluate_tiles_are_exact_for_conv_nets_and_swinir_is_padded(tmp_path):
    torch.manual_seed(0)
    net = build_network(tiny_arch('EDSR', 'g', 2)).eval()
    x = torch.rand(1, 3, 40, 36)
    with torch.no_grad():
        ref = net(x)
    # receptive field radius of the tiny EDSR: 8 LR pixels <= overlap // 2 (the tiles tests below: smaller overlaps)
    tiled = sr_tensor(net, x, 2, tile=24, overlap=16)
    assert tiled.shape == ref.shape and torch.allclose(tiled, ref, atol=1e-5)
    assert torch.equal(sr_tensor(net, x, 2, tile=64, overlap=16), ref)  # image smaller than a tile
    swin = build_network(tiny_arch('SwinIR', 'g', 4)).eval()
    x = torch.rand(1, 3, 12, 20)
    out = sr_tensor(swin, x, 4, window=8)
    padded = torch.nn.functional.pad(x, (0, 4, 0, 4), mode='reflect')
    with torch.no_grad():
        assert torch.allclose(out, swin(padded)[..., :48, :80], atol=1e-6)
    with pytest.raises(ValueError, match='multiple of the window'):
        sr_tensor(swin, torch.rand(1, 3, 40, 40), 4, window=8, tile=20, overlap=4)
    # through the CLI: tiled and untiled EDSR give the same figures
    root, _ = fake_root(tmp_path, scale=2)
    save_student(str(tmp_path / 's.pth'), tiny_arch('EDSR', 'g', 2), 3)
    common = ['--scale', '2', '--arch-json', json.dumps(tiny_arch('EDSR', 'g', 2)), '--ckpt', str(tmp_path / 's.pth'),
              '--data-root', root, '--sets', 'Tiny']
    plain = evaluate.main(common + ['--out-dir', str(tmp_path / 'p')])['sets']['Tiny']['methods']['s']
    tiled = evaluate.main(common + ['--out-dir', str(tmp_path / 't'), '--tile', '24', '--tile-overlap', '16'])
    assert tiled['sets']['Tiny']['methods']['s']['psnr'] == pytest.approx(plain['psnr'], abs=1e-3)


def test_evaluate_errors_name_the_culprit(tmp_path):
    root, src = fake_root(tmp_path)
    arch = tiny_arch('EDSR', 'g', 4)
    save_student(str(tmp_path / 's.pth'), tiny_arch('EDSR', 't', 4), 0)  # a teacher's weights
    msg = exit_message(evaluate.main, ['--scale', '4', '--arch-json', json.dumps(arch),
                                       '--ckpt', str(tmp_path / 's.pth'),
                                       '--data-root', root, '--sets', 'Tiny', '--out-dir', str(tmp_path / 'o')])
    assert 's.pth' in msg and 'shape mismatch' in msg
    msg = exit_message(evaluate.main, ['--scale', '2', '--arch-json', json.dumps(arch),
                                       '--ckpt', str(tmp_path / 's.pth'),
                                       '--data-root', root, '--sets', 'Tiny', '--out-dir', str(tmp_path / 'o')])
    assert 'upscale=4' in msg
    msg = exit_message(evaluate.main, ['--scale', '4', '--bicubic', '--data-root', root, '--sets', 'Set5',
                                       '--out-dir', str(tmp_path / 'o')])
    assert os.path.join(root, 'Set5') in msg
    bad = os.path.join(root, 'Tiny', 'HR', 'zz.jpg')
    open(bad, 'wb').write(open(src['j'], 'rb').read()[:-300])
    msg = exit_message(evaluate.main, ['--scale', '4', '--bicubic', '--data-root', root, '--sets', 'Tiny',
                                       '--out-dir', str(tmp_path / 'o')])
    assert bad in msg and 'corrupt' in msg


# ---- refusals: no wrong number with exit status 0 ----------------------------------------------------------
@pytest.fixture(scope='module')
def eval_files(tmp_path_factory):
    """A datasets root with a set 'Tiny' (HR only: LR made by bicubic), a tiny EDSR student and weights."""
    root = tmp_path_factory.mktemp('eval')
    make_paired_folder(str(root / 'data' / 'Tiny'), SCALE, num=2, size=96, seed=5)
    arch = tiny_arch('EDSR', 'g', SCALE)
    student = eval_net(arch, seed=3)
    torch.save({'params': student.state_dict(), 'params_ema': student.state_dict()}, root / 'student.pth')
    wide = eval_net(dict(arch, num_feat=12))
    torch.save({'params_ema': wide.state_dict()}, root / 'wide.pth')
    partial = {k: v for k, v in student.state_dict().items() if not k.startswith('conv_last.')}
    torch.save({'params_ema': partial}, root / 'partial.pth')
    swin = tiny_arch('SwinIR', 'g', SCALE)
    torch.save({'params': eval_net(swin).state_dict()}, root / 'swin.pth')
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


# ---- tiles -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('blocks', [1, 3])
def test_receptive_radius_probe_agrees_with_the_arch(blocks):
    """EDSR x2: conv_first, 2 convs per block, conv_after_body, the upsampling conv (LR) and conv_last (at HR,
    at most one LR pixel): 2 * blocks + 4 LR pixels."""
    net = eval_net(dict(tiny_arch('EDSR', 'g', SCALE), num_block=blocks))
    assert receptive_radius(net, SCALE) == 2 * blocks + 4
    assert receptive_radius(net, SCALE, reach=2 * blocks + 3) is None  # beyond the reach asked


def test_tiles_equal_the_untiled_output_at_the_radius_and_are_refused_below():
    net = eval_net(tiny_arch('EDSR', 'g', SCALE))
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
    swin = eval_net(tiny_arch('SwinIR', 'g', SCALE))
    radius = receptive_radius(swin, SCALE, window=8)
    overlap = -(-2 * radius // 8) * 8
    x = torch.rand(1, 3, 3 * overlap, 2 * overlap + 8)
    ref = sr_tensor(swin, x, SCALE, window=8)
    tiled = sr_tensor(swin, x, SCALE, window=8, tile=overlap + 16, overlap=overlap)
    assert torch.allclose(tiled, ref, atol=1e-5)


def test_global_attention_is_never_tile_exact():
    """RCAN's channel attention pools the whole image: no overlap makes tiles exact."""
    rcan = eval_net(tiny_arch('RCAN', 't', SCALE))
    assert receptive_radius(rcan, SCALE) is None
    with pytest.raises(EvalError, match=r'more than 64 LR pixels away \(global pooling or attention\)'):
        sr_tensor(rcan, torch.rand(1, 3, 40, 40), SCALE, tile=32, overlap=16)
