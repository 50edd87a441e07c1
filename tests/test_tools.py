"""Command-line tools: prepare_data, complexity, inspect_stages (tools/evaluate.py: test_evaluation.py).

Each tool is loaded from tools/<name>.py and its ``main(argv)`` called in-process; errors are the
``SystemExit`` message the tool prints. "Bicubic" LR is :func:`helpers.matlab_resize`.
"""
import json
import os
import subprocess
import sys
from copy import deepcopy

import cv2
import numpy as np
import pytest
import torch
import yaml

from basicsr.archs import build_network
from basicsr.models import build_model
from basicsr.utils.registry import MODEL_REGISTRY

from helpers import (
    REPO,
    base_model_opt,
    crop,
    exit_message,
    load_tool,
    matlab_resize,
    smooth_image,
    tiny_arch,
    write_sources,
    write_yaml,
)
from mixprior_plugin.models.kd_model import KDModel

prepare_data = load_tool('prepare_data')
complexity = load_tool('complexity')
inspect_stages = load_tool('inspect_stages')


def paired_dataset(entry, phase='train', gt_size=None):
    from basicsr.data.paired_image_dataset import PairedImageDataset
    opt = dict(entry, phase=phase, scale=entry.get('scale', 4))
    if gt_size:
        opt['gt_size'] = gt_size
    return PairedImageDataset(opt)


# ---- prepare_data -------------------------------------------------------------------------------------
def test_prepare_whole_images_png_jpeg_bmp_gray(tmp_path):
    src = write_sources(str(tmp_path / 'src'), np.random.default_rng(0),
                        {'a.png': (38, 50, False), 'b.jpg': (45, 41, False), 'c.bmp': (40, 40, False),
                         'g.png': (37, 36, True)})
    out = str(tmp_path / 'out')
    summary = prepare_data.main(['--hr-dir', str(tmp_path / 'src'), '-o', out, '--scale', '4'])
    assert summary['gray'] == ['g'] and summary['generated_lr'] == 4 and summary['official_lr'] == 0
    for name, path in src.items():
        want_hr = crop(cv2.imread(path, cv2.IMREAD_COLOR), 4)  # gray -> 3 equal channels
        hr = cv2.imread(os.path.join(out, 'HR', f'{name}.png'), cv2.IMREAD_UNCHANGED)
        lr = cv2.imread(os.path.join(out, 'LR_bicubic', 'X4', f'{name}x4.png'), cv2.IMREAD_UNCHANGED)
        assert hr.shape == want_hr.shape and hr.shape[0] % 4 == 0 and hr.shape[1] % 4 == 0
        assert np.array_equal(hr, want_hr), name
        assert np.array_equal(lr, matlab_resize(want_hr, 1 / 4)), name
    gray = cv2.imread(os.path.join(out, 'HR', 'g.png'), cv2.IMREAD_UNCHANGED)
    assert gray.ndim == 3 and gray.shape[2] == 3 and np.array_equal(gray[..., 0], gray[..., 2])
    meta = open(os.path.join(out, 'meta_info.txt')).read().splitlines()
    assert meta[0] == 'a.png (36,48,3) 1' and len(meta) == 4
    # the written dataset options read the pairs with BasicSR's own dataset
    entry = yaml.safe_load(open(os.path.join(out, 'dataset_options.yml')))['disk']
    assert entry['filename_tmpl'] == '{}x4'
    item = paired_dataset(dict(entry, scale=4), phase='val')[0]
    assert tuple(item['gt'].shape) == (3, 36, 48) and tuple(item['lq'].shape) == (3, 9, 12)


def test_prepare_subimages_small_image_and_lmdb(tmp_path, capsys):
    src = write_sources(str(tmp_path / 'src'), np.random.default_rng(1),
                        {'big.png': (56, 72, False), 'tiny.jpg': (20, 20, False)})
    out = str(tmp_path / 'out')
    summary = prepare_data.main(['--hr-dir', str(tmp_path / 'src'), '-o', out, '--scale', '2', '--crop-size', '32',
                                 '--step', '16', '--lmdb', '--lr-names', 'plain'])
    assert 'tiny' in capsys.readouterr().out and summary['skipped_small'] == ['tiny']
    # BasicSR's extract_subimages windows: rows 0, 16, 24 (flush) x columns 0, 16, 32, 40 (flush)
    hr_files = sorted(os.listdir(os.path.join(out, 'HR')))
    assert hr_files == [f'big_s{i:03d}.png' for i in range(1, 13)]
    big = cv2.imread(src['big'])
    big_lr = matlab_resize(big, 1 / 2)  # LR of the whole image, then aligned crops
    s7 = cv2.imread(os.path.join(out, 'HR', 'big_s007.png'))  # row 16, column 32
    assert np.array_equal(s7, big[16:48, 32:64])
    assert np.array_equal(cv2.imread(os.path.join(out, 'LR_bicubic', 'X2', 'big_s007.png')), big_lr[8:24, 16:32])
    s12 = cv2.imread(os.path.join(out, 'HR', 'big_s012.png'))  # row 24, column 40 (both flush)
    assert np.array_equal(s12, big[24:56, 40:72])
    # lmdb: same keys on both sides, read by BasicSR's PairedImageDataset
    info = summary['splits']['all']
    for lmdb_dir in (info['hr_lmdb'], info['lr_lmdb']):
        keys = [line.split(' ')[0] for line in open(os.path.join(lmdb_dir, 'meta_info.txt'))]
        assert keys == hr_files
    entry = yaml.safe_load(open(os.path.join(out, 'dataset_options.yml')))['lmdb']
    item = paired_dataset(dict(entry, scale=2), gt_size=16)[3]
    assert tuple(item['gt'].shape) == (3, 16, 16) and tuple(item['lq'].shape) == (3, 8, 8)
    # --small keep writes the small image whole
    summary = prepare_data.main(['--hr-dir', str(tmp_path / 'src'), '-o', out, '--scale', '2', '--crop-size', '32',
                                 '--small', 'keep', '--overwrite'])
    assert summary['kept_whole'] == ['tiny']
    assert cv2.imread(os.path.join(out, 'HR', 'tiny.png')).shape == (20, 20, 3)
    assert len(os.listdir(os.path.join(out, 'HR'))) == 13 and not os.path.exists(info['hr_lmdb'])


def test_prepare_split_is_deterministic_and_disjoint(tmp_path):
    names = [f'im{i}' for i in range(7)]
    write_sources(str(tmp_path / 'src'), np.random.default_rng(2), {f'{n}.png': (40, 40, False) for n in names})
    vals = []
    for run in ('a', 'b'):
        out = tmp_path / run
        prepare_data.main(['--hr-dir', str(tmp_path / 'src'), '-o', str(out), '--scale', '2', '--crop-size', '32',
                           '--val-count', '2', '--seed', '3'])
        val = sorted(os.path.splitext(f)[0] for f in os.listdir(out / 'val' / 'HR'))
        train = {f.split('_s')[0] for f in os.listdir(out / 'train' / 'HR')}
        assert len(val) == 2 and not set(val) & train and set(val) | train == set(names)
        assert all(cv2.imread(str(out / 'val' / 'HR' / f'{v}.png')).shape == (40, 40, 3) for v in val)  # whole
        vals.append(val)
    assert vals[0] == vals[1]
    assert prepare_data.split_names(names, val_ratio=0.3, seed=3)[1] == vals[0]


def test_prepare_uses_official_lr_and_makes_missing_ones(tmp_path):
    src = write_sources(str(tmp_path / 'HR'), np.random.default_rng(3), {'a.png': (50, 50, False),
                                                                          'b.png': (48, 40, False)})
    lr_dir = tmp_path / 'LR_bicubic' / 'X4'
    lr_dir.mkdir(parents=True)
    official = cv2.resize(crop(cv2.imread(src['a']), 4), (12, 12), interpolation=cv2.INTER_AREA)
    assert not np.array_equal(official, matlab_resize(crop(cv2.imread(src['a']), 4), 1 / 4))
    cv2.imwrite(str(lr_dir / 'ax4.png'), official)
    out = tmp_path / 'out'
    summary = prepare_data.main(['--hr-dir', str(tmp_path / 'HR'), '--lr-dir', str(lr_dir), '-o', str(out),
                                 '--scale', '4'])
    assert summary['official_lr'] == 1 and summary['generated_lr'] == 1
    assert np.array_equal(cv2.imread(str(out / 'LR_bicubic' / 'X4' / 'ax4.png')), official)
    assert np.array_equal(cv2.imread(str(out / 'LR_bicubic' / 'X4' / 'bx4.png')),
                          matlab_resize(cv2.imread(src['b']), 1 / 4))
    cv2.imwrite(str(lr_dir / 'bx4.png'), official)  # 12x12 is not the LR of a 40x48 image
    msg = exit_message(prepare_data.main, ['--hr-dir', str(tmp_path / 'HR'), '--lr-dir', str(lr_dir), '-o',
                                           str(tmp_path / 'out2'), '--scale', '4'])
    assert 'bx4.png' in msg and '10x12' in msg


@pytest.mark.parametrize('kind', ['garbage_png', 'truncated_jpeg'])
def test_prepare_corrupt_file_is_named(tmp_path, kind):
    write_sources(str(tmp_path / 'src'), np.random.default_rng(4), {'ok.png': (32, 32, False)})
    if kind == 'garbage_png':
        bad = tmp_path / 'src' / 'broken.png'
        bad.write_bytes(b'not an image at all' * 20)
    else:
        good = tmp_path / 'whole.jpg'
        cv2.imwrite(str(good), smooth_image(np.random.default_rng(5), 64, 64))
        bad = tmp_path / 'src' / 'broken.jpg'
        bad.write_bytes(good.read_bytes()[:-400])
    msg = exit_message(prepare_data.main, ['--hr-dir', str(tmp_path / 'src'), '-o', str(tmp_path / 'o'),
                                           '--scale', '2'])
    assert str(bad) in msg and 'corrupt' in msg
    assert 'not found' in exit_message(prepare_data.main, ['--hr-dir', str(tmp_path / 'nope'), '-o',
                                                           str(tmp_path / 'o'), '--scale', '2'])


def test_prepare_on_shared_layouts(tmp_path, test_data):
    root = test_data('datasets')
    s14 = prepare_data.main(['--hr-dir', f'{root}/Set14/HR', '--lr-dir', f'{root}/Set14/LR_bicubic/X4', '-o',
                             str(tmp_path / 'set14'), '--scale', '4'])
    assert s14['official_lr'] == 14 and s14['gray'] == ['bridge']
    bridge_lr = cv2.imread(str(tmp_path / 'set14' / 'LR_bicubic' / 'X4' / 'bridgex4.png'), cv2.IMREAD_UNCHANGED)
    official = cv2.imread(f'{root}/Set14/LR_bicubic/X4/bridgex4.png', cv2.IMREAD_UNCHANGED)
    assert bridge_lr.shape == official.shape + (3, ) and np.array_equal(bridge_lr[..., 1], official)
    t91 = prepare_data.main(['--hr-dir', f'{root}/T91/HR', '-o', str(tmp_path / 't91'), '--scale', '4',
                             '--crop-size', '96', '--step', '48', '--limit', '3'])
    assert t91['splits']['all']['count'] > 3 and t91['generated_lr'] + len(t91['skipped_small']) >= 3
    bsd = prepare_data.main(['--hr-dir', f'{root}/BSD200/HR', '-o', str(tmp_path / 'bsd'), '--scale', '3',
                             '--limit', '2'])
    for f in os.listdir(tmp_path / 'bsd' / 'HR'):  # 481x321 JPEGs cropped to 480x321 -> multiples of 3
        h, w = cv2.imread(str(tmp_path / 'bsd' / 'HR' / f)).shape[:2]
        assert h % 3 == 0 and w % 3 == 0 and {h, w} <= {480, 321}
    assert bsd['splits']['all']['count'] == 2


# ---- complexity ---------------------------------------------------------------------------------------
def conv_macs(net, x):
    """Multiply-adds of every Conv2d / Linear, counted with forward hooks (independent of mmengine)."""
    total = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total.append(output.numel() * k)
        else:
            total.append(output.numel() * module.in_features)

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return sum(total)


def test_complexity_kd_option_file_and_arch_json(tmp_path):
    teacher, student = tiny_arch('EDSR', 't', 4), tiny_arch('RCAN', 'g', 4)
    opt = base_model_opt(student, teacher, 4, '/unused.pth')
    opt['network_teacher'] = opt.pop('network_t')  # community alias
    opt_file = write_yaml(str(tmp_path / 'kd.yml'), opt)
    swin = tiny_arch('SwinIR', 'g', 4)
    rows = complexity.main(['-opt', opt_file, '--arch', f'swin={json.dumps(swin)}', '--lr-size', '12', '--runs', '2',
                            '--warmup', '1', '--json', str(tmp_path / 'c.json')])
    assert [r['label'] for r in rows] == ['teacher', 'student', 'swin']
    for row, arch in zip(rows[:2], (teacher, student)):
        net = build_network(deepcopy(arch)).eval()
        assert row['params'] == sum(p.numel() for p in net.parameters())
        assert row['flops_by_operator']['conv'] == conv_macs(net, torch.rand(1, 3, 12, 12))
        assert row['flops'] == sum(row['flops_by_operator'].values())
        assert row['output_shape'] == [1, 3, 48, 48]
        assert row['latency_s']['cpu'] > 0 and ('cuda' in row['latency_s']) == torch.cuda.is_available()
    assert rows[2]['input_shape'] == [1, 3, 16, 16] and 'window 8' in rows[2]['note']
    assert rows[2]['flops'] > conv_macs(build_network(deepcopy(swin)).eval(), torch.rand(1, 3, 16, 16))  # + attention
    saved = json.load(open(tmp_path / 'c.json'))
    assert saved['input_size'] == [3, 12, 12] and saved['rows'][0]['flops'] == rows[0]['flops']


def test_complexity_errors(tmp_path):
    assert 'not valid JSON' in exit_message(complexity.main, ['--arch', '{"type": EDSR}', '--no-latency'])
    broken = tmp_path / 'broken.yml'
    broken.write_text('network_g: {type: EDSR\n  num_feat: [\n')
    msg = exit_message(complexity.main, ['-opt', str(broken), '--no-latency'])
    assert str(broken) in msg and 'line' in msg
    msg = exit_message(complexity.main, ['--arch', '{"type": "NoSuchArch"}', '--no-latency'])
    assert 'NoSuchArch' in msg


# ---- inspect_stages -----------------------------------------------------------------------------------
@MODEL_REGISTRY.register()
class ToolsProbeKDModel(KDModel):
    """A KDModel subclass with one extra module, as MiPKDModel adds its mixers."""

    @classmethod
    def extra_modules_for(cls, opt, adapter_t, adapter_g, feat_terms):
        extra = super().extra_modules_for(opt, adapter_t, adapter_g, feat_terms)
        extra['probe'] = torch.nn.Conv2d(adapter_g.channels, adapter_t.channels, 3)
        return extra


def kd_option_file(tmp_path, teacher_path, family='EDSR', model_type='KDModel', **distill):
    opt = base_model_opt(tiny_arch(family, 'g', 4), tiny_arch(family, 't', 4), 4, teacher_path,
                         model_type=model_type, distill=distill or dict(num_stages=2),
                         train=dict(feat_opt=[dict(type='FitNetLoss', loss_weight=1.0)]))
    return opt, write_yaml(str(tmp_path / f'{family}_{model_type}.yml'), {k: v for k, v in opt.items()
                                                                          if k != 'is_train'})


def test_inspect_matches_what_training_builds(tmp_path, teacher_file, capsys):
    opt, opt_file = kd_option_file(tmp_path, teacher_file('EDSR', 4))
    info = inspect_stages.main(['-opt', opt_file, '--lr-size', '16', '--json', str(tmp_path / 'i.json')])
    torch.manual_seed(0)
    model = build_model(deepcopy(opt))
    model.run_teacher(torch.rand(1, 3, 16, 16))
    model.student_forward(torch.rand(1, 3, 16, 16))
    for side, recorder, adapter in (('teacher', model.recorder_t, model.adapter_t),
                                    ('student', model.recorder_g, model.adapter_g)):
        assert info[side]['stage_ends'] == adapter.stage_ends
        assert [s['shape'] for s in info[side]['stages']] == [list(f.shape) for f in recorder.features]
        assert info[side]['head_shape'] == list(recorder.head.shape)
    assert [s['blocks'] for s in info['teacher']['stages']] == [[1, 2], [3, 4]]
    assert [s['blocks'] for s in info['student']['stages']] == [[1, 1], [2, 2]]
    assert info['extra_params'] == sum(p.numel() for p in model.net_extra.parameters()) > 0
    assert {m['name'] for m in info['extra_modules']} == {n for n, _ in model.net_extra.named_modules()
                                                          if n and n.count('.') <= 1}
    out = capsys.readouterr().out
    assert '| 2 | 3-4 | (1, 16, 16, 16) | 2-2 | (1, 8, 16, 16) |' in out
    assert json.load(open(tmp_path / 'i.json'))['student']['params'] == info['student']['params']


def test_inspect_subclass_extra_modules_and_swinir(tmp_path, teacher_file, capsys):
    _, opt_file = kd_option_file(tmp_path, teacher_file('SwinIR', 4), family='SwinIR', model_type='ToolsProbeKDModel')
    info = inspect_stages.main(['-opt', opt_file, '--lr-size', '12'])
    assert info['input_size'] == 16  # rounded up to the window
    probe = next(m for m in info['extra_modules'] if m['name'] == 'probe')
    assert probe['type'] == 'Conv2d' and probe['params'] == 12 * 6 * 9 + 12
    assert info['teacher']['stages'][-1]['shape'] == [1, 12, 16, 16]
    assert 'probe: Conv2d, 660 params' in capsys.readouterr().out


def test_inspect_fails_with_the_chassis_errors(tmp_path, teacher_file):
    teacher = teacher_file('EDSR', 4)
    _, opt_file = kd_option_file(tmp_path, teacher, stages_t=[2, 5], stages_g=[1, 2])
    msg = exit_message(inspect_stages.main, ['-opt', opt_file])
    assert 'distill.stages_t' in msg and '1..4' in msg
    _, opt_file = kd_option_file(tmp_path, str(tmp_path / 'nope.pth'))
    assert 'path.pretrain_network_t' in exit_message(inspect_stages.main, ['-opt', opt_file])
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(open(teacher, 'rb').read()[:200])
    _, opt_file = kd_option_file(tmp_path, str(corrupt))
    assert str(corrupt) in exit_message(inspect_stages.main, ['-opt', opt_file])
    _, opt_file = kd_option_file(tmp_path, teacher, model_type='SRModel')
    assert 'not a distillation model' in exit_message(inspect_stages.main, ['-opt', opt_file])
    # as a script: the message on stderr, exit status 1
    _, opt_file = kd_option_file(tmp_path, teacher, num_stage=2)
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'inspect_stages.py'), '-opt', opt_file],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and 'distill.num_stage' in proc.stderr


@pytest.mark.parametrize('tool', ['prepare_data', 'evaluate', 'complexity', 'inspect_stages'])
def test_tool_help_runs_as_a_script(tool):
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'tools', f'{tool}.py'), '--help'], capture_output=True,
                          text=True, timeout=120, cwd='/')
    assert proc.returncode == 0, proc.stderr
    assert 'Examples' in proc.stdout and f'python tools/{tool}.py' in proc.stdout
