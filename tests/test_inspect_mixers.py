"""tools/inspect_mixers.py on tiny trained MiPKD runs: one whose decoder cannot see the student's latent (mask
ratio 1: every latent element is the teacher's) and one that sees nothing else (mask ratio 0)."""
import json
import os
import sys

import pytest
import torch

from helpers import REPO, base_model_opt, make_paired_folder, save_random_teacher, tiny_arch, write_yaml

sys.path.insert(0, os.path.join(REPO, 'tools'))
import inspect_mixers  # noqa: E402


def trained_run(tmp_path, mask_ratio, steps=150, fpm_weight=1.0):
    """Train a tiny EDSR MiPKD run for ``steps`` steps; returns (option file, student, extras, image folder)."""
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed
    hr_dir, _ = make_paired_folder(str(tmp_path / 'data'), 2, num=4, size=64, seed=3)
    net_t, net_g = tiny_arch('EDSR', 't', 2), tiny_arch('EDSR', 'g', 2)
    teacher = save_random_teacher(str(tmp_path / 'teacher.pth'), net_t)
    opt = base_model_opt(net_g, net_t, 2, teacher, model_type='MiPKDModel',
                         train=dict(fpm_opt=dict(type='L1Loss', loss_weight=fpm_weight), bpm_opt=dict(type='L1Loss',
                                                                                              loss_weight=0.1)),
                         distill=dict(num_stages=2), mixer=dict(mask=dict(type='random3d', ratio=mask_ratio)))
    set_random_seed(0)
    model = build_model(opt)
    gen = torch.Generator().manual_seed(0)
    for it in range(1, steps + 1):
        lq = torch.rand(4, 3, 16, 16, generator=gen)
        model.feed_data(dict(lq=lq, gt=torch.nn.functional.interpolate(lq, scale_factor=2, mode='bicubic')))
        model.optimize_parameters(it)
    student, extras = str(tmp_path / 'net_g.pth'), str(tmp_path / 'net_extra.pth')
    torch.save({'params_ema': model.net_g_ema.state_dict()}, student)
    torch.save({'params': model.get_bare_model(model.net_extra).state_dict()}, extras)
    file_opt = {k: v for k, v in opt.items() if k not in ('is_train', 'dist', 'rank', 'world_size')}
    file_opt['name'] = f'mix{mask_ratio}'
    file_opt['path'] = dict(pretrain_network_t=teacher)
    return write_yaml(str(tmp_path / 'opt.yml'), file_opt), student, extras, hr_dir


def inspect_run(tmp_path, mask_ratio):
    opt, student, extras, images = trained_run(tmp_path, mask_ratio)
    out = tmp_path / 'mixers.json'
    info = inspect_mixers.main(['-opt', opt, '--student', student, '--extra', extras, '--images', images, '--patch',
                                '16', '--json', str(out)])
    assert json.load(open(out))['points'] == info['points']
    return info


def test_student_latent_never_mixed_in_changes_nothing(tmp_path):
    info = inspect_run(tmp_path, 1.0)
    assert len(info['points']) == 2
    for row in info['points']:
        assert row['mask_teacher_share'] == 1.0
        # the decoder sees only Z_T: replacing the student's latent cannot change the loss at all
        assert row['l_fpm_student_zeroed'] == row['l_fpm'] and row['l_fpm_other_image'] == row['l_fpm']
        assert row['zeroed_over_true'] == 1.0 and row['ae_rel_teacher'] > 0 and row['ae_rel_student'] > 0


def test_student_latent_alone_is_what_the_decoder_uses(tmp_path, capsys):
    info = inspect_run(tmp_path, 0.0)
    for row in info['points']:
        assert row['mask_teacher_share'] == 0.0
        assert row['zeroed_over_true'] > 1.15 and row["other_over_true"] > 1.15
    printed = capsys.readouterr().out
    assert '| point | L_FPM | student zeroed |' in printed and 'mask (teacher share)' in printed


def test_refuses_a_run_without_mixers(tmp_path):
    record = tmp_path / 'runs' / 'depth' / 'FitNet_seed0.json'
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps(dict(method='FitNet', options=dict(model_type='KDModel'))))
    with pytest.raises(SystemExit, match='not MiPKD'):
        inspect_mixers.main(['--record', str(record), '--images', str(tmp_path)])
    with pytest.raises(SystemExit, match='Give --record'):
        inspect_mixers.main(['--images', str(tmp_path)])


def test_refuses_a_run_whose_fpm_never_trained(tmp_path):
    # bpm_only: the FPM decoder gets no gradient, so its L_FPM ratios would describe random weights
    opt, student, extras, images = trained_run(tmp_path, 0.5, steps=3, fpm_weight=0.0)
    with pytest.raises(SystemExit, match=r'train\.fpm_opt\.loss_weight is 0'):
        inspect_mixers.main(['-opt', opt, '--student', student, '--extra', extras, '--images', images, '--patch', '16'])
