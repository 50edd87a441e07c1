"""Real-world and GAN distillation: BasicSR's RealESRNetModel, RealESRGANModel and ESRGANModel with a teacher.

Everything runs on the CPU with BasicSR's own degradation pipeline (RealESRGANDataset's kernels, the
model's second-order synthesis, the training pair pool), scaled down: tiny networks, 80x80
synthesis crops, gt_size 64 (32 for the pool test), batch 2. The perceptual loss needs VGG19
weights, which cannot be downloaded here: ``random_vgg`` gives BasicSR's PerceptualLoss VGG19's first
two convolution blocks (torchvision's layers) with random weights, so its path runs, not its
trained features.
"""
import copy
import os
import random

import numpy as np
import pytest
import torch

from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.models import build_model
from basicsr.utils.misc import check_resume

from helpers import (
    BASICSR_OPTIONS,
    REPO,
    base_model_opt,
    load_tool,
    make_paired_folder,
    save_random_teacher,
    state_equal,
)
from mixprior_plugin.models.synthesis import DEGRADATIONS, KERNELS
from mixprior_plugin.utils.options import OptionError, normalise_teacher_aliases

SCALE = 4
TEACHER = dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, scale=SCALE, num_feat=8, num_block=2, num_grow_ch=4)
STUDENT = dict(type='SRVGGNetCompact', num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=4, upscale=SCALE)
ONE = dict(type='L1Loss', loss_weight=1.0)
ZERO = dict(type='L1Loss', loss_weight=0.0)
GAN_TRAIN = dict(optim_d=dict(type='Adam', lr=1e-3, betas=[0.9, 0.99]),
                 perceptual_opt=dict(type='PerceptualLoss', layer_weights={'conv1_2': 0.1, 'conv2_2': 1},
                                     vgg_type='vgg19', use_input_norm=True, perceptual_weight=1.0, style_weight=0,
                                     range_norm=False, criterion='l1'),
                 gan_opt=dict(type='GANLoss', gan_type='vanilla', real_label_val=1.0, fake_label_val=0.0,
                              loss_weight=0.1),
                 net_d_iters=1, net_d_init_iters=0)
REAL_ESRGAN_D = dict(type='UNetDiscriminatorSN', num_in_ch=3, num_feat=8, skip_connection=True)
ESRGAN_D = dict(type='VGGStyleDiscriminator', num_in_ch=3, num_feat=8, input_size=128)
MODEL_TYPES = ('RealESRNetKDModel', 'RealESRNetMiPKDModel', 'RealESRGANKDModel', 'RealESRGANMiPKDModel',
               'ESRGANKDModel', 'ESRGANMiPKDModel')


@pytest.fixture
def random_vgg(monkeypatch):
    """BasicSR's PerceptualLoss on VGG19's first two blocks (torchvision's layers) with random weights: no
    pretrained VGG can be downloaded here, and the tests' losses read conv1_2 and conv2_2 only."""
    import torchvision

    from basicsr.archs import vgg_arch

    def vgg19(pretrained=False, **kwargs):
        net = torch.nn.Module()
        net.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs['E'][:6])
        return net

    monkeypatch.setattr(vgg_arch, 'VGG_PRETRAIN_PATH', '/nonexistent/vgg19.pth')
    monkeypatch.setattr(vgg_arch.vgg, 'vgg19', vgg19)


@pytest.fixture(scope='module')
def hr_data(tmp_path_factory):
    """Tiny HR images, their RealESRGANDataset meta_info, and a RealESRGANDataset reading them."""
    root = tmp_path_factory.mktemp('realworld')
    hr_dir, lr_dir = make_paired_folder(str(root), SCALE, num=4, size=96, seed=4)
    meta = root / 'meta_info.txt'
    meta.write_text(''.join(f'{n}\n' for n in sorted(os.listdir(hr_dir))))
    dataset = build_dataset(dict(name='rw', type='RealESRGANDataset', dataroot_gt=hr_dir, meta_info=str(meta),
                                 io_backend=dict(type='disk'), use_hflip=True, use_rot=False, phase='train',
                                 scale=SCALE, **copy.deepcopy(KERNELS)))
    teacher = save_random_teacher(str(root / 'teacher.pth'), TEACHER)
    return dict(hr=hr_dir, lr=lr_dir, meta=str(meta), dataset=dataset, teacher=teacher, root=root)


def model_opt(model_type, hr_data, tmp_path=None, train=None, gt_size=64, queue_size=4, **extra):
    """In-process options of a tiny real-world or GAN distillation run (BasicSR's degradation settings)."""
    train = copy.deepcopy(dict(GAN_TRAIN, **(train or {})) if 'GAN' in model_type else dict(train or {}))
    opt = base_model_opt(STUDENT, TEACHER, SCALE, hr_data['teacher'], model_type=model_type, train=train,
                         distill=dict(num_stages=2), **copy.deepcopy(DEGRADATIONS))
    if model_type.startswith('Real'):
        opt.update(gt_size=gt_size, queue_size=queue_size, synth_crop_size=80, gt_usm=True, l1_gt_usm=True,
                   percep_gt_usm=True, gan_gt_usm=False)
    if 'GAN' in model_type:
        opt['network_d'] = copy.deepcopy(REAL_ESRGAN_D if model_type.startswith('Real') else ESRGAN_D)
    if tmp_path is not None:
        for key in ('models', 'training_states'):
            opt['path'][key] = str(tmp_path / key)
            os.makedirs(opt['path'][key], exist_ok=True)
    opt.update(extra)
    return opt


def draw_batch(model_type, hr_data, it):
    """The next batch: RealESRGANDataset samples (HR + kernels; consume Python/NumPy RNG) or LR/HR pairs."""
    if model_type.startswith('Real'):
        items = [hr_data['dataset'][random.randrange(4)] for _ in range(2)]
        return {k: torch.stack([x[k] for x in items]) for k in ('gt', 'kernel1', 'kernel2', 'sinc_kernel')}
    g = torch.Generator().manual_seed(it)
    return dict(lq=torch.rand(2, 3, 32, 32, generator=g), gt=torch.rand(2, 3, 128, 128, generator=g))


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def params(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


# ---- training on each base --------------------------------------------------------------------------
@pytest.mark.parametrize('model_type', MODEL_TYPES)
def test_distillation_trains_on_each_base_with_its_losses(model_type, hr_data, random_vgg):
    seed_all(0)
    model = build_model(model_opt(model_type, hr_data, train=dict(feat_opt=[dict(type='FitNetLoss', loss_weight=1.0)])
                                  if 'MiPKD' not in model_type else None))
    g0, t0 = params(model.net_g), params(model.net_t)
    d0 = params(model.net_d) if hasattr(model, 'net_d') else None
    for it in (1, 2, 3):
        model.feed_data(draw_batch(model_type, hr_data, it))
        model.optimize_parameters(it)
    logs = set(model.log_dict)
    assert 'l_kd' in logs
    assert ({'l_fpm', 'l_bpm', 'l_ae'} if 'MiPKD' in model_type else {'l_fitnet'}) <= logs
    if 'GAN' in model_type:  # BasicSR's own generator and discriminator terms, ours beside them
        assert {'l_g_pix', 'l_g_percep', 'l_g_gan', 'l_d_real', 'l_d_fake'} <= logs and 'l_pix' not in logs
        assert not state_equal(d0, params(model.net_d))
    else:
        assert 'l_pix' in logs
    assert all(np.isfinite(v) for k, v in model.log_dict.items() if k.startswith('l_'))
    assert not state_equal(g0, params(model.net_g))
    assert state_equal(t0, params(model.net_t)) and not model.net_t.training
    assert all(p.grad is None and not p.requires_grad for p in model.net_t.parameters())
    extra = [p for p in model.net_extra.parameters() if p.requires_grad]
    assert extra and model.optimizer_extra is model.optimizers[-1]
    assert all(p.grad is not None for p in extra)  # the extra modules were trained by this step
    if model_type.startswith('Real'):
        assert model.lq.device == model.usm_sharpener.kernel.device == torch.device('cpu')  # no .cuda() anywhere
        assert all(p.device == model.device for p in model.jpeger.parameters())
        assert model.queue_ptr == 4  # the pool is full after two batches of 2; the third came out of it


@pytest.mark.parametrize('model_type', ('RealESRNetKDModel', 'RealESRGANMiPKDModel'))
def test_teacher_receives_exactly_the_lr_the_student_gets(model_type, hr_data, random_vgg):
    """One synthesis per batch (feed_data), and the teacher's every input is that LR (MiPKD's hybrid tail, run
    through RRDBNet's own forward, gets its first rows)."""
    seed_all(1)
    model = build_model(model_opt(model_type, hr_data))
    seen = {'t': [], 'g': []}
    model.net_t.register_forward_pre_hook(lambda m, i: seen['t'].append(i[0].detach().clone()))
    model.get_bare_model(model.net_g).register_forward_pre_hook(lambda m, i: seen['g'].append(i[0].detach().clone()))
    for it in (1, 2, 3, 4):  # from the third batch on, the LR comes out of the pair pool
        model.feed_data(draw_batch(model_type, hr_data, it))
        lq = model.lq.clone()
        seen['t'].clear()
        seen['g'].clear()
        model.optimize_parameters(it)
        assert seen['t'] and len(seen['g']) == 1
        assert torch.equal(seen['g'][0], lq)
        for x in seen['t']:
            assert torch.equal(x, lq[:x.shape[0]])
        assert torch.equal(seen['t'][0], lq)  # run_teacher: the whole batch


@pytest.mark.parametrize('model_type', ('ESRGANKDModel', 'RealESRGANMiPKDModel'))
def test_discriminator_update_is_basicsrs(model_type, hr_data, random_vgg):
    """From the same weights and batch, one step of the distillation model and one of BasicSR's own model
    update the discriminator identically; the generator differs by the distillation terms, and is BasicSR's
    when they are all off."""
    from basicsr.utils.registry import MODEL_REGISTRY

    from mixprior_plugin.basicsr_fixes import with_fixes
    base_type = 'ESRGANModel' if model_type.startswith('ESRGAN') else 'RealESRGANModel'
    off = dict(kd_opt=ZERO, fpm_opt=ZERO, bpm_opt=ZERO, ae_opt=ZERO) if 'MiPKD' in model_type else dict(kd_opt=ZERO)
    for train, generator_equal in ((None, False), (off, True)):
        kd = build_model(model_opt(model_type, hr_data, train=train))
        opt = model_opt(base_type, hr_data)
        for key in ('network_t', 'distill'):
            opt.pop(key)
        base = with_fixes(MODEL_REGISTRY.get(base_type))(opt)  # BasicSR's model (device-safe synthesis)
        for name in ('net_g', 'net_g_ema', 'net_d', 'cri_perceptual'):  # the random VGG too
            getattr(base, name).load_state_dict(getattr(kd, name).state_dict())
        for model in (kd, base):
            seed_all(7)
            model.feed_data(draw_batch(model_type, hr_data, 1))
            model.optimize_parameters(1)
        assert torch.equal(kd.lq, base.lq)
        assert state_equal(params(kd.net_d), params(base.net_d))
        assert state_equal(kd.optimizer_d.state_dict(), base.optimizer_d.state_dict())
        assert state_equal(params(kd.net_g), params(base.net_g)) == generator_equal
        for key in ('l_d_real', 'l_d_fake', 'l_g_gan', 'l_g_percep'):
            assert kd.log_dict[key] == base.log_dict[key], key


def test_generator_steps_on_basicsrs_schedule(hr_data, random_vgg):
    """net_d_init_iters: no generator update and no distillation term before it, BasicSR's discriminator step."""
    model = build_model(model_opt('ESRGANKDModel', hr_data, train=dict(net_d_init_iters=1)))
    g0, d0 = params(model.net_g), params(model.net_d)
    model.feed_data(draw_batch('ESRGANKDModel', hr_data, 1))
    model.optimize_parameters(1)
    assert state_equal(g0, params(model.net_g)) and not state_equal(d0, params(model.net_d))
    assert 'l_kd' not in model.log_dict and 'l_d_real' in model.log_dict
    model.optimize_parameters(2)
    assert 'l_kd' in model.log_dict and not state_equal(g0, params(model.net_g))


def test_resume_is_exact_with_the_pair_pool(hr_data, tmp_path, random_vgg, monkeypatch):
    """Save after 2 of 4 steps, rebuild from the training state as train_pipeline does, run steps 3-4: the
    weights (student, EMA, discriminator, mixers) and the pool equal those of the uninterrupted run."""
    from mixprior_plugin.utils.checkpoint import EXACT_RESUME
    monkeypatch.setitem(EXACT_RESUME, 'enabled', True)
    model_type = 'RealESRGANMiPKDModel'
    opt = model_opt(model_type, hr_data, tmp_path, queue_size=2, gt_size=32)

    def run(model, iters):
        for it in iters:
            model.feed_data(draw_batch(model_type, hr_data, it))
            model.optimize_parameters(it)

    seed_all(3)
    straight = build_model(copy.deepcopy(opt))
    run(straight, (1, 2))
    straight.save(0, 2)
    run(straight, (3, 4))
    state = torch.load(tmp_path / 'training_states' / '2.state', weights_only=True)
    assert set(state['extras']['pair_pool']) == {'lq', 'gt', 'ptr'}
    resumed_opt = copy.deepcopy(opt)
    resumed_opt['path']['resume_state'] = str(tmp_path / 'training_states' / '2.state')
    normalise_teacher_aliases(resumed_opt)
    check_resume(resumed_opt, 2)
    seed_all(99)  # whatever the new process draws first is replaced by the training state's RNG
    resumed = build_model(resumed_opt)
    resumed.resume_training(state)
    resumed.cri_perceptual.load_state_dict(straight.cri_perceptual.state_dict())  # the stand-in VGG is random
    run(resumed, (3, 4))
    for name in ('net_g', 'net_g_ema', 'net_d', 'net_extra'):
        assert state_equal(params(getattr(straight, name)), params(getattr(resumed, name))), name
    assert torch.equal(straight.queue_lr, resumed.queue_lr) and straight.queue_ptr == resumed.queue_ptr


def test_basicsr_realesrnet_model_builds_on_cpu_through_the_entry_point(hr_data):
    """mixprior-train gives BasicSR's own RealESRNetModel (the scratch baseline) the device-safe synthesis."""
    from basicsr.utils.registry import MODEL_REGISTRY

    from mixprior_plugin.basicsr_fixes import with_fixes
    from mixprior_plugin.models.synthesis import SynthesisOnDevice
    opt = model_opt('RealESRNetModel', hr_data)
    for key in ('network_t', 'distill'):
        opt.pop(key)
    cls = with_fixes(MODEL_REGISTRY.get('RealESRNetModel'))
    assert issubclass(cls, SynthesisOnDevice) and cls.__name__ == 'RealESRNetModel'
    model = cls(opt)
    seed_all(0)
    model.feed_data(draw_batch('RealESRNetModel', hr_data, 1))
    model.optimize_parameters(1)
    assert tuple(model.lq.shape) == (2, 3, 16, 16) and 'l_pix' in model.log_dict


def test_synthesis_crop_and_pool_options_are_checked(hr_data):
    from mixprior_plugin.models.synthesis import random_crops
    from mixprior_plugin.utils.model_types import check_synthesis_options
    opt = model_opt('RealESRNetKDModel', hr_data, datasets=dict(train=dict(batch_size_per_gpu=2)))
    check_synthesis_options(opt)
    with pytest.raises(OptionError, match=r'synth_crop_size=64 is too small: it must be >= 74 \(set by '
                                          r'resize_range\[0\]=0.15'):
        check_synthesis_options(dict(opt, synth_crop_size=64))
    with pytest.raises(OptionError, match='synth_crop_size=80 .* >= 128 .*gt_size'):
        check_synthesis_options(dict(opt, synth_crop_size=80, gt_size=128))
    with pytest.raises(OptionError, match='queue_size=5 is not a multiple of datasets.train.batch_size_per_gpu=2'):
        check_synthesis_options(dict(opt, queue_size=5))
    images = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).reshape(2, 3, 10, 10)
    crops = random_crops(images, 4)
    assert crops.shape == (2, 3, 4, 4)
    for crop, img in zip(crops, images):  # each crop is a window of its own image
        top, left = divmod(int(crop[0, 0, 0]) - int(img[0, 0, 0]), 10)
        assert torch.equal(crop, img[:, top:top + 4, left:left + 4])


# ---- every method on Real-ESRGAN's teacher and compact students ---------------------------------------
PAIRS = {
    'RRDBNet->SRVGGNetCompact': (TEACHER, STUDENT),
    'RRDBNet->RRDBNet': (TEACHER, dict(TEACHER, num_feat=6)),  # narrower
    'SRVGGNetCompact->SRVGGNetCompact': (dict(STUDENT, num_feat=12, num_conv=6), STUDENT),  # the compact arch teaching
}
METHODS = ('LogitsKD', 'FitNet', 'AT', 'FAKD', 'RKD', 'MiPKD')


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('pair', sorted(PAIRS))
def test_every_method_distils_rrdbnet_and_compact_pairs(pair, method, tmp_path):
    """Each method's own term (at the generated option files' settings) alone moves the student; the teacher
    stays frozen."""
    baselines = load_tool('gen_options').BASELINES
    net_t, net_g = PAIRS[pair]
    teacher = save_random_teacher(str(tmp_path / 't.pth'), net_t)
    off = dict(pixel_opt=ZERO, kd_opt=ZERO)
    if method == 'LogitsKD':
        train = dict(off, kd_opt=ONE)
    elif method == 'MiPKD':
        train = dict(off, fpm_opt=ONE, bpm_opt=ONE, ae_opt=ZERO)
    else:
        train = dict(off, feat_opt=[dict(baselines[method])])
    model_type = 'MiPKDModel' if method == 'MiPKD' else 'KDModel'
    seed_all(0)
    model = build_model(base_model_opt(net_g, net_t, SCALE, teacher, model_type=model_type, train=train,
                                       distill=dict(num_stages=2)))
    g = torch.Generator().manual_seed(0)  # a batch of 3: RKD's normalised distances of 2 samples are both 1
    model.feed_data(dict(lq=torch.rand(3, 3, 16, 16, generator=g), gt=torch.rand(3, 3, 64, 64, generator=g)))
    model.optimize_parameters(1)
    grad = sum(float(p.grad.abs().sum()) for p in model.net_g.parameters() if p.grad is not None)
    assert grad > 0, (pair, method)
    assert all(p.grad is None for p in model.net_t.parameters())
    assert model.adapter_g.check_matches_forward() is None and model.adapter_t.check_matches_forward() is None


def test_srvgg_adapter_reproduces_its_forward_and_its_features():
    from mixprior_plugin.stages import FeatureRecorder, GenericBodyAdapter, SRVGGNetCompactAdapter, build_adapter
    for act in ('prelu', 'relu', 'leakyrelu'):
        net = build_network(dict(STUDENT, num_conv=6, act_type=act)).eval()
        adapter = build_adapter(net, [1, 4, 6], key='distill.stages_g')
        assert isinstance(adapter, SRVGGNetCompactAdapter) and adapter.channels == 8
        adapter.check_matches_forward()
        recorder = FeatureRecorder(adapter)
        x = torch.rand(2, 3, 11, 13)
        with torch.no_grad():
            ref = net(x)
            out, head, feats = adapter.forward_staged(x)
        assert torch.equal(out, ref) and torch.equal(head, recorder.head)
        assert all(torch.equal(a, b) for a, b in zip(feats, recorder.features))
        assert [tuple(f.shape) for f in feats] == [(2, 8, 11, 13)] * 3
    # GenericBodyAdapter used to crash with "object of type '_BodyCapture' has no len()"
    with pytest.raises(OptionError, match="has no len.*SRVGGNetCompact has one"):
        GenericBodyAdapter(build_network(dict(STUDENT)), [5, 11]).run_head(torch.rand(1, 3, 8, 8))
    with pytest.raises(OptionError, match=r'stage ends must lie in 1..4'):
        build_adapter(build_network(dict(STUDENT)), [2, 5])


# ---- refusals: keys a model type would never use --------------------------------------------------------
def _teacher(opt, **train):
    opt['network_t'] = copy.deepcopy(TEACHER)
    opt['path']['pretrain_network_t'] = '/no/teacher.pth'
    opt['train'].update(train)


def _realworld_data(opt):
    opt['datasets']['train'] = dict(name='rw', type='RealESRGANDataset', dataroot_gt='/data', meta_info='/data/m.txt',
                                    io_backend=dict(type='disk'), batch_size_per_gpu=2, **copy.deepcopy(KERNELS))


def _gan_keys(opt):
    opt['network_d'] = copy.deepcopy(ESRGAN_D)
    opt['train'].update(copy.deepcopy(dict((k, GAN_TRAIN[k]) for k in ('optim_d', 'gan_opt', 'perceptual_opt'))))


def _case(model_type, *changes):
    def apply(opt):
        opt['model_type'] = model_type
        for change in changes:
            change(opt)
    return apply


REFUSALS = {  # case: (how the options are set, text the one-line error must contain)
    'SRModel_with_teacher': (_case('SRModel', lambda o: _teacher(o, kd_opt=ONE)),
                             ['network_t, path.pretrain_network_t, train.kd_opt are set', 'model_type=SRModel never '
                              'reads a teacher', 'use model_type: KDModel']),
    'SRModel_with_mixer': (_case('SRModel', lambda o: _teacher(o), lambda o: o.update(mixer=dict(mask=dict(ratio=.5)))),
                           ['mixer', 'use model_type: MiPKDModel']),
    'SRModel_with_feat_opt_only': (_case('SRModel', lambda o: o['train'].update(feat_opt=[dict(type='ATLoss')])),
                                   ['train.feat_opt is set', 'use model_type: KDModel']),
    'ESRGANModel_with_teacher': (_case('ESRGANModel', _gan_keys, lambda o: _teacher(o)),
                                 ['model_type=ESRGANModel never reads a teacher', 'use model_type: ESRGANKDModel']),
    'RealESRNetModel_with_teacher': (_case('RealESRNetModel', _realworld_data, lambda o: _teacher(o)),
                                     ['model_type=RealESRNetModel', 'use model_type: RealESRNetKDModel']),
    'RealESRGANModel_with_distill': (_case('RealESRGANModel', _realworld_data, _gan_keys,
                                           lambda o: o.update(distill=dict(num_stages=2))),
                                     ['distill is set', 'use model_type: RealESRGANKDModel']),
    'RealESRGANModel_with_bpm_and_teacher': (_case('RealESRGANModel', _realworld_data, _gan_keys,
                                                   lambda o: _teacher(o, bpm_opt=ONE)),
                                             ['use model_type: RealESRGANMiPKDModel']),
    'EDVRModel_with_teacher': (_case('EDVRModel', lambda o: _teacher(o)),
                               ['model_type=EDVRModel never reads a teacher', 'EDVRModel has no distillation '
                                'counterpart']),
    'KDModel_with_gan_keys': (_case('KDModel', lambda o: _teacher(o), _gan_keys),
                              ['network_d, train.optim_d, train.gan_opt, train.perceptual_opt are not used by KDModel',
                               'use model_type: ESRGANKDModel']),
    'MiPKDModel_with_perceptual_opt': (_case('MiPKDModel', lambda o: _teacher(o),
                                             lambda o: o['train'].update(perceptual_opt=GAN_TRAIN['perceptual_opt'])),
                                       ['train.perceptual_opt is not used by MiPKDModel',
                                        'use model_type: ESRGANMiPKDModel']),
    'RealESRNetKDModel_with_gan_keys': (_case('RealESRNetKDModel', _realworld_data, lambda o: _teacher(o), _gan_keys),
                                        ['are not used by RealESRNetKDModel', 'use model_type: RealESRGANKDModel']),
    'ESRGANKDModel_with_ldl_opt': (_case('ESRGANKDModel', lambda o: _teacher(o), _gan_keys,
                                         lambda o: o['train'].update(ldl_opt=ONE)),
                                   ['train.ldl_opt is not used by ESRGANKDModel', 'use model_type: RealESRGANKDModel']),
    'KDModel_with_RealESRGANDataset': (_case('KDModel', _realworld_data, lambda o: _teacher(o)),
                                       ['datasets.train.type=RealESRGANDataset gives HR images only',
                                        'use model_type: RealESRNetKDModel']),
    'RealESRNetKDModel_with_paired_data': (_case('RealESRNetKDModel', lambda o: _teacher(o)),
                                           ['datasets.train.type=PairedImageDataset',
                                            'set high_order_degradation: false']),
    'RealESRGANKDModel_with_amp': (_case('RealESRGANKDModel', _realworld_data, _gan_keys,
                                         lambda o: _teacher(o, amp='bf16')), ["train.amp='bf16'", 'trains in fp32']),
}


@pytest.mark.parametrize('case', sorted(REFUSALS))
def test_keys_the_model_type_never_uses_are_refused_in_one_line(case, tiny_data):
    from helpers import sr_options
    from mixprior_plugin.utils.validation import validate_options
    hr, lr = tiny_data[SCALE]
    opt = sr_options('refused', '/tmp', SCALE, copy.deepcopy(STUDENT), hr, lr, total_iter=4)
    opt['is_train'] = True
    change, expected = REFUSALS[case]
    change(opt)
    normalise_teacher_aliases(opt)
    with pytest.raises(OptionError) as info:
        validate_options(opt)
    message = str(info.value)
    assert '\n' not in message
    for text in expected:
        assert text in message, f'{case}: {text!r} not in {message!r}'


def test_teacher_under_srmodel_stops_mixprior_train_and_a_plain_train_pipeline(tiny_data, tmp_path, monkeypatch,
                                                                               capsys):
    """The slip the retrofit recipe invites: a teacher added, model_type left at SRModel."""
    from helpers import sr_options, write_yaml
    from mixprior_plugin.basicsr_fixes import portable_load_resume_state
    from mixprior_plugin.train import main as train_main
    hr, lr = tiny_data[SCALE]
    opt = sr_options('slip', str(tmp_path), SCALE, copy.deepcopy(STUDENT), hr, lr, total_iter=4)
    _teacher(opt, kd_opt=ONE)
    opt['path']['pretrain_network_t'] = save_random_teacher(str(tmp_path / 't.pth'), TEACHER)
    opt_file = write_yaml(str(tmp_path / 'slip.yml'), opt)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        train_main(['-opt', opt_file])
    assert info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith('mixprior-train: error:')]
    assert len(lines) == 1 and 'use model_type: KDModel' in lines[0], lines
    assert not (tmp_path / 'experiments' / 'slip').exists()
    # a project's own train.py (import mixprior_plugin; basicsr.train.train_pipeline): BasicSR calls
    # load_resume_state right after parsing, before anything is built
    with pytest.raises(OptionError, match='model_type=SRModel never reads a teacher'):
        portable_load_resume_state(dict(opt, is_train=True, auto_resume=False))


def test_gan_distillation_refuses_torchrun(hr_data):
    opt = model_opt('ESRGANKDModel', hr_data, dist=True)
    from mixprior_plugin.models import ESRGANKDModel
    with pytest.raises(OptionError, match='ESRGANKDModel trains on one process'):
        ESRGANKDModel.check_options(opt, check_files=False)


# ---- export and the ecosystem ------------------------------------------------------------------------------
def test_compact_student_exports_and_spandrel_loads_it_as_compact(hr_data, tmp_path):
    """mixprior-export writes the SRVGGNetCompact student as .pth, .safetensors and .onnx (parity checked on a
    real image); spandrel detects the compact Real-ESRGAN arch and its outputs equal PyTorch's."""
    from spandrel import ModelLoader

    from helpers import write_yaml
    from mixprior_plugin import export
    from mixprior_plugin.utils import student_files
    seed_all(0)
    net = build_network(dict(STUDENT))
    with torch.no_grad():  # PReLU slopes away from their 0.25 init, so a wrong activation would show
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = str(tmp_path / 'net_g.pth')
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, ckpt)
    opt_file = write_yaml(str(tmp_path / 'student.yml'), dict(
        name='compact', model_type='RealESRNetKDModel', scale=SCALE, network_g=dict(STUDENT),
        datasets=dict(val=dict(name='v', type='PairedImageDataset', dataroot_gt=hr_data['hr'],
                               dataroot_lq=hr_data['lr'], io_backend=dict(type='disk')))))
    result = export.export_student(opt_file, ckpt, str(tmp_path / 'compact'), list(export.FORMATS), log=lambda _: None)
    assert all(r['ok'] for r in result['parity'])
    net.eval()
    x = torch.rand(1, 3, 16, 16)
    for fmt in ('pth', 'safetensors'):
        model = ModelLoader().load_from_file(result['files'][fmt])
        assert model.architecture.id == 'Compact' and model.scale == SCALE
        model.model.eval()
        for inp in (x, torch.rand(2, 3, 13, 21)):
            with torch.no_grad():
                ours, theirs = net(inp), model.model(inp)
            assert (ours - theirs).abs().max().item() <= 1e-5, fmt
    with torch.no_grad():
        assert (student_files.OnnxSR(result['files']['onnx'])(x) - net(x)).abs().max().item() <= 1e-4
    state = torch.load(result['files']['pth'], weights_only=True)['params']
    assert set(state) == set(net.state_dict())  # the student alone


# ---- the option files ----------------------------------------------------------------------------------------
def test_cpu_example_runs_share_data_schedule_and_student():
    from mixprior_plugin.utils.options import yaml_load
    folder = os.path.join(REPO, 'options', 'train', 'RealWorldCPU')
    opts = {f: yaml_load(os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if 'teacher' not in f}
    assert len(opts) == 3
    ref = next(iter(opts.values()))
    for name, opt in opts.items():
        for key in ('scale', 'manual_seed', 'datasets', 'network_g', 'gt_size', 'queue_size', 'synth_crop_size',
                    *DEGRADATIONS):
            assert opt[key] == ref[key], (name, key)
        assert opt['train']['total_iter'] == ref['train']['total_iter'] and opt['train']['optim_g'] == \
            ref['train']['optim_g']
    assert {o['model_type'] for o in opts.values()} == {'RealESRNetModel', 'RealESRNetKDModel', 'RealESRNetMiPKDModel'}


# ---- the whole pipeline through mixprior-train --------------------------------------------------------------
def _cli_options(model_type, hr_data, root):
    opt = dict(name='rw', model_type=model_type, scale=SCALE, num_gpu=0, manual_seed=0, gt_usm=True, l1_gt_usm=True,
               percep_gt_usm=True, gan_gt_usm=False, **copy.deepcopy(DEGRADATIONS), gt_size=64, queue_size=4,
               synth_crop_size=80,
               datasets=dict(
                   train=dict(name='rw', type='RealESRGANDataset', dataroot_gt=hr_data['hr'], meta_info=hr_data['meta'],
                              io_backend=dict(type='disk'), **copy.deepcopy(KERNELS), gt_size=64, use_hflip=True,
                              use_rot=False, num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=2,
                              prefetch_mode=None),
                   val=dict(name='val', type='PairedImageDataset', dataroot_gt=hr_data['hr'], dataroot_lq=hr_data['lr'],
                            io_backend=dict(type='disk'))),
               network_g=dict(STUDENT), network_t=dict(TEACHER),
               path=dict(pretrain_network_t=hr_data['teacher'], strict_load_g=True, resume_state=None),
               train=dict(ema_decay=0.9, optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.99]),
                          scheduler=dict(type='MultiStepLR', milestones=[3], gamma=0.5), total_iter=4,
                          warmup_iter=-1, pixel_opt=dict(ONE)),
               val=dict(val_freq=4, save_img=False, metrics=dict(psnr=dict(type='calculate_psnr', crop_border=SCALE,
                                                                           test_y_channel=True))),
               logger=dict(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False, wandb=dict(project=None)),
               distill=dict(num_stages=2))
    if 'GAN' in model_type:  # the perceptual term is tested in-process (random_vgg); a subprocess has no VGG19
        opt['network_d'] = dict(REAL_ESRGAN_D)
        opt['train'].update({k: v for k, v in copy.deepcopy(GAN_TRAIN).items() if k != 'perceptual_opt'})
    from helpers import write_yaml
    return write_yaml(str(root / 'rw.yml'), opt)


# three processes each (25 s): slow tier. The default suite keeps the same steps in-process: every model type
# trains (test_distillation_trains_on_each_base_with_its_losses), RealESRGANMiPKDModel resumes exactly
# (test_resume_is_exact_with_the_pair_pool) and a compact student exports (test_compact_student_exports_...).
@pytest.mark.slow
@pytest.mark.parametrize('model_type', ('RealESRNetKDModel', 'RealESRGANMiPKDModel'))
def test_realworld_run_trains_validates_resumes_exactly_and_exports(model_type, hr_data, tmp_path):
    """mixprior-train on CPU with BasicSR's degradation pipeline: 4 iterations with validation and checkpoints
    every 2; a copy cut back to iteration 2 resumes with --auto_resume to the same weights; the student exports
    (pth, safetensors, onnx) and loads strictly into SRVGGNetCompact."""
    import glob
    import shutil
    import subprocess
    import sys
    straight = tmp_path / 'straight'
    straight.mkdir()
    opt_file = _cli_options(model_type, hr_data, straight)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')

    def train(cwd, *args):
        proc = subprocess.run([sys.executable, '-m', 'mixprior_plugin.train', '-opt', opt_file, *args], cwd=str(cwd),
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return ''.join(open(f).read() for f in glob.glob(str(cwd / 'experiments' / 'rw' / 'train_*.log')))

    log = train(straight)
    assert 'Validation val' in log and '# psnr:' in log and 'l_kd:' in log
    resumed = tmp_path / 'resumed'
    shutil.copytree(straight / 'experiments', resumed / 'experiments')
    for path in glob.glob(str(resumed / 'experiments' / 'rw' / '*' / '*_4.*')) + \
            glob.glob(str(resumed / 'experiments' / 'rw' / '*' / '*latest*')) + \
            glob.glob(str(resumed / 'experiments' / 'rw' / '*' / '4.state')):
        os.remove(path)
    log = train(resumed, '--auto_resume')
    assert 'Resuming training from epoch: 0, iter: 2' in log
    models = lambda root: root / 'experiments' / 'rw' / 'models'  # noqa: E731
    labels = ['net_g'] + (['net_d'] if 'GAN' in model_type else []) + ['net_extra']
    for label in labels:
        a = torch.load(models(straight) / f'{label}_4.pth', weights_only=True)
        b = torch.load(models(resumed) / f'{label}_4.pth', weights_only=True)
        assert a.keys() == b.keys() and all(state_equal(a[k], b[k]) for k in a), label
    out = tmp_path / 'student'
    proc = subprocess.run([sys.executable, '-m', 'mixprior_plugin.export', '-opt', opt_file, '--ckpt',
                           str(models(resumed) / 'net_g_4.pth'), '-o', str(out), '--formats', 'pth', 'safetensors',
                           'onnx'], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    net = build_network(dict(STUDENT))
    net.load_state_dict(torch.load(f'{out}.pth', weights_only=True)['params'], strict=True)
    assert os.path.getsize(f'{out}.onnx') > 0 and os.path.getsize(f'{out}.safetensors') > 0


# ---- docs/retrofit.md: the recipe as diffs of BasicSR's own option files -------------------------------------


def _retrofit_diffs():
    """[(BasicSR file, [hunk lines])] of the ```diff blocks with a ``--- options/...`` header in docs/retrofit.md."""
    import re
    text = open(os.path.join(REPO, 'docs', 'retrofit.md'), encoding='utf-8').read()
    blocks = re.findall(r'```diff\n--- (options/\S+\.yml)\n\+\+\+ \S+\n(.*?)```', text, re.S)
    return [(path, body.splitlines()) for path, body in blocks]


def apply_unified_diff(lines, hunks):
    """Apply a unified diff's hunks to ``lines``; each hunk's context and removed lines must match exactly."""
    import re
    out, pos, i = [], 0, 0
    while i < len(hunks):
        start = int(re.match(r'@@ -(\d+)', hunks[i]).group(1)) - 1
        out += lines[pos:start]
        pos = start
        i += 1
        while i < len(hunks) and not hunks[i].startswith('@@'):
            tag, line = hunks[i][:1], hunks[i][1:]
            if tag in (' ', '-'):
                assert lines[pos] == line, f'line {pos + 1}: {lines[pos]!r} != {line!r}'
                pos += 1
            if tag in (' ', '+'):
                out.append(line)
            i += 1
    return out + lines[pos:]


def test_retrofit_doc_diffs_apply_to_basicsrs_files_and_pass_the_checks():
    from basicsr.utils.registry import MODEL_REGISTRY

    from mixprior_plugin.stages import build_adapters
    from mixprior_plugin.utils.options import yaml_load
    from mixprior_plugin.utils.registry import registry_lookup
    from mixprior_plugin.utils.validation import validate_options
    diffs = _retrofit_diffs()
    assert [p for p, _ in diffs] == ['options/train/RealESRGAN/train_realesrnet_x4plus.yml',
                                     'options/train/RealESRGAN/train_realesrgan_x4plus.yml',
                                     'options/train/ESRGAN/train_ESRGAN_x4.yml']
    for path, hunks in diffs:
        source = os.path.join(BASICSR_OPTIONS, path[len('options/'):])
        if not os.path.isfile(source):
            pytest.skip(f'BasicSR\'s option files are not at {BASICSR_OPTIONS}')
        with open(source, encoding='utf-8') as f:
            opt = yaml_load('\n'.join(apply_unified_diff(f.read().splitlines(), hunks)) + '\n')
        opt.update(is_train=True, dist=False)
        normalise_teacher_aliases(opt)
        validate_options(opt)  # every option check, the model type's own included (not the files)
        model_cls = registry_lookup(MODEL_REGISTRY, opt['model_type'])
        assert model_cls.__module__.startswith('mixprior_plugin.')
        net_t, net_g = build_network(dict(opt['network_t'])), build_network(dict(opt['network_g']))
        adapter_t, adapter_g = build_adapters(opt['distill'], net_t, net_g)
        assert adapter_t.num_stages == adapter_g.num_stages == opt['distill']['num_stages']
        adapter_t.check_matches_forward()
        adapter_g.check_matches_forward()
        if net_g.__class__.__name__ == 'SRVGGNetCompact':
            assert (adapter_t.stage_ends, adapter_g.stage_ends) == ([6, 12, 17, 23], [8, 16, 24, 32])


def test_inspect_stages_shows_rrdbnet_and_compact_points(hr_data, tmp_path):
    """tools/inspect_stages.py on a real-world MiPKD file: RRDBNet's generic adapter records no head feature."""
    from helpers import write_yaml
    inspect_stages = load_tool('inspect_stages')
    opt = model_opt('RealESRNetMiPKDModel', hr_data)
    opt_file = write_yaml(str(tmp_path / 'rw.yml'), {k: v for k, v in opt.items() if k != 'is_train'})
    info = inspect_stages.main(['-opt', opt_file, '--lr-size', '16'])
    assert info['teacher']['adapter'] == 'GenericBodyAdapter' and info['teacher']['head_shape'] is None
    assert info['student']['adapter'] == 'SRVGGNetCompactAdapter' and info['student']['head_shape'] == [1, 8, 16, 16]
    assert [s['blocks'] for s in info['student']['stages']] == [[1, 2], [3, 4]]


def test_realworld_example_data_step(tmp_path):
    """tools/realworld_example.py's data step: the training list RealESRGANDataset reads, and test LR made once
    with BasicSR's numpy degradations (its JPEG through the OpenCV 5 fix), the same for the same seed."""
    import cv2
    example = load_tool('realworld_example')
    root = tmp_path / 'root'
    for name, size in (('T91', 40), ('BSD200', 50), ('Set5', 66), ('Set14', 70)):
        make_paired_folder(str(root / name), SCALE, num=2, size=size, seed=size)
    example.make_data(str(root), str(tmp_path / 'work'))
    data = tmp_path / 'work' / 'datasets'
    listed = (data / 'meta_info_T91_BSD200.txt').read_text().split()
    assert listed == ['T91/HR/img000.png', 'T91/HR/img001.png', 'BSD200/HR/img000.png', 'BSD200/HR/img001.png']
    assert all((data / p).is_file() for p in listed)
    hr = cv2.imread(str(data / 'Set14_realworld_x4' / 'HR' / 'img001.png'))
    lr = cv2.imread(str(data / 'Set14_realworld_x4' / 'LR' / 'img001.png'))
    assert hr.shape == (68, 68, 3) and lr.shape == (17, 17, 3)
    assert np.array_equal(example.degrade(hr, 1003), lr)  # Set5's two images come first: seed 1000 + 3
    assert not np.array_equal(example.degrade(hr, 1004), lr)
    # BasicSR draws the kernel type from Python's generator, its shape from NumPy's: both are seeded
    assert all(np.array_equal(example.degrade(hr, s), example.degrade(hr, s)) for s in range(6))
