"""Training-step precision and cost options (train.amp, train.channels_last, train.block_path_every)
and the cheaper MiPKD step, checked against a straightforward reference computation."""
import os
import random

import pytest
import torch

from basicsr.models import build_model

from helpers import base_model_opt, save_random_teacher, tiny_arch
from mixprior_plugin.utils.options import OptionError


def edsr(feat, blocks, scale=4):
    return dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=feat, num_block=blocks, upscale=scale, res_scale=1,
                img_range=255.)


def build(tmp_path, model_type='MiPKDModel', family='EDSR', train=None, net_t=None, net_g=None, num_stages=2,
          seed=0, mixer=None):
    net_t = net_t or tiny_arch(family, 't', 4)
    net_g = net_g or tiny_arch(family, 'g', 4)
    teacher = str(tmp_path / f'teacher_{family}.pth')
    if not os.path.exists(teacher):
        save_random_teacher(teacher, net_t)
    opt = base_model_opt(net_g, net_t, 4, teacher, model_type=model_type, train=train or {},
                         distill=dict(num_stages=num_stages), manual_seed=seed)
    if mixer is not None:
        opt['mixer'] = mixer
    for key in ('models', 'training_states'):
        opt['path'][key] = str(tmp_path / key)
        os.makedirs(opt['path'][key], exist_ok=True)
    torch.manual_seed(seed)
    return build_model(opt)


def batch(seed=0, size=16, n=2):
    g = torch.Generator().manual_seed(seed)
    return dict(lq=torch.rand(n, 3, size, size, generator=g), gt=torch.rand(n, 3, 4 * size, 4 * size, generator=g))


def step_losses(model, data, current_iter=1, seed=0):
    """Losses and gradients of one step on ``data`` (no optimizer step), masks drawn from ``seed``."""
    model.feed_data(data)
    for p in list(model.net_g.parameters()) + list(model.net_extra.parameters()):
        p.grad = None
    torch.manual_seed(seed)
    with model.autocast():
        teacher = model.run_teacher(model.lq)
        losses, _ = model.train_step(model.lq, model.gt, teacher, current_iter)
    sum(losses.values()).backward()
    return {k: float(v.detach()) for k, v in losses.items()}


def trainable_grads(model):
    params = list(model.net_g.named_parameters()) + list(model.net_extra.named_parameters())
    return {name: p.grad.clone() for name, p in params if p.grad is not None}


# ---------------------------------------------------------------------------- the cheaper MiPKD step
def reference_losses(model, lq, gt, current_iter):
    """MiPKD's losses written out term by term, reusing nothing between terms.

    Both networks run stage by stage (no recorder hooks), every term encodes and decodes its own
    latents, and the hybrid decodes Z_M itself. The route comes from the model's generator and the
    masks from torch's, in the model's order (points 0..K-1), so both see the same draws.
    """
    norm, mixers = model.net_extra['feat_norm'], model.net_extra['mixers']
    num_points = len(mixers)
    with torch.no_grad():
        out_t, _, feats_t = model.adapter_t.forward_staged(lq)
    out_s, head_s, feats_s = model.adapter_g.forward_staged(lq)
    norm.update(feats_t, feats_s)
    f_t = [f / norm.scale_of('t')[k] for k, f in enumerate(feats_t)]
    f_s = [f / norm.scale_of('s')[k] for k, f in enumerate(feats_s)]
    losses = {'l_pix': model.cri_pix(out_s, gt), 'l_kd': model.cri_kd(out_s, out_t)}
    k0, owners, tail = model.draw_hybrid(num_points)
    mixed = [mixers[k](f_t[k], f_s[k]) for k in range(num_points)]
    losses['l_fpm'] = sum(model.cri_fpm(mixers[k].decode(mixed[k]['z_m'], 't'), f_t[k]) for k in range(num_points))

    scale = {'s': norm.scale_of('s'), 't': norm.scale_of('t')}
    adapters, ctx = {'s': model.adapter_g, 't': model.adapter_t}, dict(lq=lq)
    feat, side = None, None

    def cross(point, target):
        if feat is None:
            return mixers[point].decode(mixed[k0]['z_m'], target) * scale[target][point]
        if target == side:
            return feat
        latent = mixers[point].encode(feat / scale[side][point], side)
        return mixers[point].decode(latent, target) * scale[target][point]

    for stage in range(k0 + 1, num_points):
        feat = cross(stage - 1, owners[stage])
        side = owners[stage]
        feat = adapters[side].run_stages(feat, stage, stage, ctx)
    feat = cross(num_points - 1, tail)
    assert tail == 's'  # the default tail; its global residual is the student's head feature
    losses['l_bpm'] = model.cri_bpm(adapters['s'].run_tail(feat, head_s, ctx), out_t)

    total = 0
    for k, mixer in enumerate(mixers):
        total = total + model.cri_ae(mixer.decode(mixer.encode(f_t[k], 't'), 't'), f_t[k])
        detached = f_s[k].detach()
        total = total + model.cri_ae(mixer.decode(mixer.encode(detached, 's'), 's'), detached)
    losses['l_ae'] = total
    return losses


@pytest.mark.parametrize('family', ['EDSR', 'SwinIR'])
def test_mipkd_step_equals_the_straightforward_reference(family, tmp_path):
    """Four consecutive steps (different k0 and routes, teacher- and student-first hybrids): the
    model's step and the reference give the same losses and gradients to 1e-6."""
    net_t, net_g = (edsr(8, 4), edsr(6, 4)) if family == 'EDSR' else (None, None)
    model = build(tmp_path, family=family, net_t=net_t, net_g=net_g, num_stages=4 if family == 'EDSR' else 2)
    routes = set()
    for it in range(1, 5):
        data = batch(seed=it)
        norm_state = {k: v.clone() for k, v in model.net_extra['feat_norm'].state_dict().items()}
        rng_state = model.route_rng.getstate()
        got = step_losses(model, data, it, seed=it)
        got_grads = trainable_grads(model)
        routes.add((model.last_route['k0'], tuple(model.last_route['owners'])))
        # the recorders hold the plain forward's features, not the hybrid's, and record again next step
        assert all(f is not None for f in model.recorder_g.features)

        model.net_extra['feat_norm'].load_state_dict(norm_state)
        model.route_rng.setstate(rng_state)
        for p in list(model.net_g.parameters()) + list(model.net_extra.parameters()):
            p.grad = None
        torch.manual_seed(it)
        ref = reference_losses(model, model.lq, model.gt, it)
        sum(ref.values()).backward()
        ref_grads = trainable_grads(model)

        assert got.keys() == ref.keys()
        for name in got:
            ref_value = float(ref[name].detach())
            assert abs(got[name] - ref_value) <= 1e-6 * max(1.0, abs(got[name])), (name, got[name], ref_value)
        assert got_grads.keys() == ref_grads.keys()
        for name, g in got_grads.items():
            err = (g - ref_grads[name]).abs().max().item()
            assert err <= 1e-6 * max(1.0, ref_grads[name].abs().max().item()), (name, err)
        # next step from the same state on both paths: take a plain optimizer step
        for optimizer in model.optimizers:
            optimizer.step()
    if family == 'EDSR':
        assert len(routes) > 1


def test_block_path_every_n_steps(tmp_path):
    model = build(tmp_path, train=dict(block_path_every=2))
    present = []
    for it in range(1, 6):
        model.feed_data(batch(seed=it))
        model.optimize_parameters(it)
        present.append('l_bpm' in model.log_dict)
    assert present == [True, False, True, False, True]
    default = build(tmp_path)
    default.feed_data(batch())
    default.optimize_parameters(2)
    assert 'l_bpm' in default.log_dict


@pytest.mark.parametrize('train,key', [(dict(amp='fp8'), 'train.amp'), (dict(amp=True), 'train.amp'),
                                       (dict(channels_last='yes'), 'train.channels_last'),
                                       (dict(block_path_every=0), 'train.block_path_every')])
def test_option_errors_name_the_key(train, key, tmp_path):
    with pytest.raises(OptionError, match=key.replace('.', r'\.')):
        build(tmp_path, train=train)


# ---------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize('model_type', ['KDModel', 'MiPKDModel'])
def test_bf16_step_runs_and_its_losses_are_near_fp32(model_type, tmp_path):
    """bf16 autocast keeps 8 mantissa bits: each loss term within 3% of fp32 on the same batch and
    draws; the teacher is held in bf16, the student (master weights) in fp32 with fp32 gradients."""
    data = batch(seed=3)
    random.seed(0)
    fp32 = step_losses(build(tmp_path, model_type), data)
    model = build(tmp_path, model_type, train=dict(amp='bf16'))
    bf16 = step_losses(model, data)
    assert fp32.keys() == bf16.keys() and len(fp32) >= (5 if model_type == 'MiPKDModel' else 2)
    for name in fp32:
        assert abs(bf16[name] - fp32[name]) <= 0.03 * abs(fp32[name]) + 1e-4, (name, fp32[name], bf16[name])
        assert bf16[name] != fp32[name] or name == 'l_bpm'  # it did run in bf16
    assert next(model.net_t.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
               for p in model.net_g.parameters())
    model.feed_data(data)
    model.optimize_parameters(2)
    assert torch.isfinite(torch.tensor(list(model.log_dict.values()))).all()


@pytest.mark.slow  # fp16 autocast on a CPU takes 20 s; the scaler is a GPU feature
def test_fp16_scaler_steps_saves_and_resumes_its_scale(tmp_path):
    model = build(tmp_path, train=dict(amp='fp16'))
    assert model.grad_scaler is not None
    before = [p.clone() for p in model.net_g.parameters()]
    model.feed_data(batch())
    model.optimize_parameters(1)
    assert model.log_dict['amp_scale'] == model.grad_scaler.get_scale()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net_g.parameters()))
    model.grad_scaler.update(new_scale=1024.0)  # a scale no fresh scaler starts with
    model.save(0, 7)  # weights, extra modules, then the training state
    state = torch.load(os.path.join(model.opt['path']['training_states'], '7.state'), weights_only=False)
    assert state['extras']['grad_scaler']['scale'] == 1024.0

    resumed = build(tmp_path, train=dict(amp='fp16'))
    assert resumed.grad_scaler.get_scale() != 1024.0
    resumed.resume_training(state)
    assert resumed.grad_scaler.get_scale() == 1024.0
    assert resumed.grad_scaler.state_dict() == model.grad_scaler.state_dict()
    # fp32 and bf16 runs hold no scaler and save none
    plain = build(tmp_path, 'KDModel', train=dict(amp='bf16'))
    assert plain.grad_scaler is None and plain.training_state_extras() == {}


@pytest.mark.parametrize('model_type', ['KDModel', 'MiPKDModel'])
def test_channels_last_gives_the_contiguous_losses(model_type, tmp_path):
    data = batch(seed=5)
    dense = build(tmp_path, model_type)
    ref = step_losses(dense, data)
    ref_grads = trainable_grads(dense)
    model = build(tmp_path, model_type, train=dict(channels_last=True))
    got = step_losses(model, data)
    assert model.lq.is_contiguous(memory_format=torch.channels_last)
    assert model.net_g.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    for name in ref:
        assert abs(got[name] - ref[name]) <= 1e-5 * max(1.0, abs(ref[name])), (name, got[name], ref[name])
    for name, g in trainable_grads(model).items():
        assert torch.allclose(g, ref_grads[name], rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_validation_of_an_amp_run_is_fp32(amp, tmp_path):
    model = build(tmp_path, 'KDModel', train=dict(amp=amp, channels_last=True))
    model.feed_data(batch())
    model.optimize_parameters(1)
    model.feed_data(batch(seed=9))
    with torch.autocast('cpu', dtype=torch.bfloat16):  # even inside someone else's autocast region
        model.test()
    assert model.output.dtype == torch.float32
    model.net_g_ema.eval()
    with torch.no_grad():
        expected = model.net_g_ema(model.lq.contiguous())
    assert torch.allclose(model.output, expected, atol=1e-5)
    # saved weights are fp32 and load into the plain arch
    model.save_network(model.net_g, 'net_g', 1)
    state = torch.load(os.path.join(model.opt['path']['models'], 'net_g_1.pth'), weights_only=True)['params']
    assert all(v.dtype == torch.float32 for v in state.values())
