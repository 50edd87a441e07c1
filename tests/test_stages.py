"""mixprior_plugin.stages: stage adapters for any teacher and student, the cross-family pairs they distil."""
# Cross-family pairs through MiPKD and Logits-KD + FitNet, and a non-paper arch pair through the generic
# adapter. Each term must teach the student; the exported student loads strictly into its own arch.
import os
import subprocess
import sys

import pytest
import torch

from basicsr.archs import build_network
from basicsr.models import build_model

from helpers import FAMILIES, REPO, base_model_opt, save_random_teacher, tiny_arch, write_yaml
from mixprior_plugin.stages import GenericBodyAdapter, build_adapters
from mixprior_plugin.utils.options import OptionError

SCALE = 4
ZERO = dict(type='L1Loss', loss_weight=0.0)
ONE = dict(type='L1Loss', loss_weight=1.0)


def rrdbnet(feat=8, blocks=2):
    return dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, scale=SCALE, num_feat=feat, num_block=blocks, num_grow_ch=4)


def msrresnet(feat=6, blocks=2):
    return dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=feat, num_block=blocks, upscale=SCALE)


def srvgg(feat=6, convs=4):
    return dict(type='SRVGGNetCompact', num_in_ch=3, num_out_ch=3, num_feat=feat, num_conv=convs, upscale=SCALE)


PAIRS = {
    'SwinIR->EDSR': (tiny_arch('SwinIR', 't', SCALE), tiny_arch('EDSR', 'g', SCALE)),
    'RCAN->EDSR': (tiny_arch('RCAN', 't', SCALE), tiny_arch('EDSR', 'g', SCALE)),
    'RRDBNet->MSRResNet': (rrdbnet(), msrresnet()),
    # Real-ESRGAN's teacher into its compact arch (cross-family), and into a narrower RRDBNet (cross-width)
    'RRDBNet->SRVGGNetCompact': (rrdbnet(), srvgg()),
    'RRDBNet->RRDBNet': (rrdbnet(), rrdbnet(feat=6)),
}
MIPKD_TERMS = {'l_kd': 'kd_opt', 'l_fpm': 'fpm_opt', 'l_bpm': 'bpm_opt'}


def model_for(tmp_path, pair, model_type='MiPKDModel', train=None, net_g=None, **extra):
    net_t, default_g = PAIRS[pair]
    net_g = net_g or default_g
    teacher = save_random_teacher(str(tmp_path / 'teacher.pth'), net_t)
    opt = base_model_opt(net_g, net_t, SCALE, teacher, model_type=model_type, train=train or {},
                         distill=dict(num_stages=2), **extra)
    for key in ('models', 'training_states'):
        opt['path'][key] = str(tmp_path / key)
        os.makedirs(opt['path'][key], exist_ok=True)
    torch.manual_seed(0)
    return build_model(opt)


def step(model, it=1):
    g = torch.Generator().manual_seed(it)
    model.feed_data(dict(lq=torch.rand(2, 3, 16, 16, generator=g), gt=torch.rand(2, 3, 64, 64, generator=g)))
    for p in model.net_g.parameters():
        p.grad = None
    model.optimize_parameters(it)


def student_grad_norm(model):
    return sum(float(p.grad.norm()) for p in model.net_g.parameters() if p.grad is not None)


@pytest.mark.parametrize('pair', sorted(PAIRS))
def test_generic_or_family_adapters_reproduce_each_forward(pair):
    net_t, net_g = (build_network(dict(a)) for a in PAIRS[pair])
    adapter_t, adapter_g = build_adapters(dict(num_stages=2), net_t, net_g)
    for adapter in (adapter_t, adapter_g):
        adapter.check_matches_forward()  # raises when the staged forward differs from net(x)
    if pair == 'RRDBNet->MSRResNet':
        assert isinstance(adapter_t, GenericBodyAdapter) and isinstance(adapter_g, GenericBodyAdapter)
        assert (adapter_t.channels, adapter_g.channels) == (8, 6)


@pytest.mark.parametrize('family', FAMILIES)
def test_adapter_staged_forward_matches_network(family):
    torch.manual_seed(0)
    net_t, net_g = build_network(tiny_arch(family, 't', 4)), build_network(tiny_arch(family, 'g', 4))
    adapter_t, adapter_g = build_adapters(dict(num_stages=2), net_t, net_g)
    for adapter, net in ((adapter_t, net_t), (adapter_g, net_g)):
        net.eval()
        x = torch.rand(1, 3, 16, 16)
        out, head, feats = adapter.forward_staged(x)
        assert torch.allclose(out, net(x), atol=1e-5)
        # stages run piecewise from the middle reproduce the rest of the network
        rest = adapter.run_tail(adapter.run_stages(feats[0], 1, 1, {}), head, {})
        assert torch.allclose(rest, out, atol=1e-5)



@pytest.mark.parametrize('pair', sorted(PAIRS))
def test_mipkd_across_families_every_term_teaches_the_student_and_exports(pair, tmp_path):
    model = model_for(tmp_path, pair)
    # features on different numeric scales (SwinIR ~1, EDSR ~100): each network keeps its own scale
    per_network = type(model.net_t) is not type(model.net_g)
    assert model.net_extra['feat_norm'].per_network == per_network
    for it in (1, 2):
        step(model, it)
    assert {'l_pix', 'l_kd', 'l_fpm', 'l_bpm', 'l_ae'} <= set(model.log_dict)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in model.log_dict.items() if k.startswith('l_'))
    for term, key in MIPKD_TERMS.items():
        train = dict(pixel_opt=ZERO, kd_opt=ZERO, fpm_opt=ZERO, bpm_opt=ZERO, ae_opt=ZERO)
        train[key] = ONE
        single = model_for(tmp_path, pair, train=train)
        step(single)
        assert student_grad_norm(single) > 0, term
        assert all(p.grad is None for p in single.net_t.parameters())
    model.save(0, 2)
    opt_file = write_yaml(str(tmp_path / 'opt.yml'), {k: v for k, v in model.opt.items() if k != 'is_train'})
    subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'export_student.py'), '-opt', opt_file, '--ckpt',
                    str(tmp_path / 'models' / 'net_g_2.pth'), '-o', str(tmp_path / 's.pth')], check=True,
                   capture_output=True)
    student = build_network(dict(PAIRS[pair][1]))
    student.load_state_dict(torch.load(tmp_path / 's.pth', weights_only=True)['params'], strict=True)


@pytest.mark.parametrize('pair', sorted(PAIRS))
def test_logits_kd_plus_fitnet_across_families(pair, tmp_path):
    train = dict(feat_opt=[dict(type='FitNetLoss', loss_weight=1.0)])
    model = model_for(tmp_path, pair, model_type='KDModel', train=train)
    step(model)
    assert {'l_pix', 'l_kd', 'l_fitnet'} <= set(model.log_dict)
    only_fitnet = model_for(tmp_path, pair, model_type='KDModel',
                            train=dict(pixel_opt=ZERO, kd_opt=ZERO,
                                       feat_opt=[dict(type='FitNetLoss', loss_weight=1.0)]))
    step(only_fitnet)
    assert student_grad_norm(only_fitnet) > 0


def test_unpairable_networks_name_the_fix(tmp_path):
    # RRDBNet at x2 unshuffles its input: body features at half the LR size
    net_t = build_network(dict(rrdbnet(), scale=2))
    net_g = build_network(dict(msrresnet(), upscale=2))
    with pytest.raises(OptionError, match='cannot be paired'):
        build_adapters(dict(num_stages=2), net_t, net_g)
    with pytest.raises(OptionError, match=r'distill.num_stages <= 2'):
        build_adapters(dict(num_stages=3), build_network(rrdbnet()), build_network(msrresnet()))
    with pytest.raises(OptionError, match='same scale'):
        model_for(tmp_path, 'RCAN->EDSR', net_g=tiny_arch('EDSR', 'g', 2))
