"""Write the project's option files from one table, so every method shares one schedule.

Usage::

    python tools/gen_options.py            # rewrites options/train/..., options/test/... and docs/options.md's table
    python tools/gen_options.py --check    # exit 1 if a committed file differs from the table
    python tools/gen_options.py --table    # only docs/options.md's table (from mixprior_plugin/options_schema.py)

For a fair comparison every student option file of a pair and scale has the same data, schedule,
seed and student arch (hence the same initial weights: KD models build the student first, as
SRModel does); only ``model_type`` and the KD terms differ. The schedule is the paper's
(docs/method.md): DIV2K, LR patches 48, batch 16, Adam 1e-4 (0.9, 0.99), 250k
iterations, lr x0.1 at 100k and 200k, EMA 0.999, Y-channel PSNR/SSIM with crop_border = scale.
"""
import argparse
import os
import sys
from copy import deepcopy

import yaml

from mixprior_plugin import options_schema
from mixprior_plugin.models.mipkd_model import ABLATIONS
from mixprior_plugin.models.synthesis import DEGRADATIONS, KERNELS
from mixprior_plugin.utils.model_types import counterpart
from mixprior_plugin.utils.tooling import deep_update

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = os.path.join(REPO, 'options', 'train')
TEST_OPTIONS = os.path.join(REPO, 'options', 'test')
OPTIONS_DOC = os.path.join(REPO, 'docs', 'options.md')
SCALES = (2, 3, 4)


def edsr(feat, blocks, scale, res_scale=1.0):
    return dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=feat, num_block=blocks, upscale=scale,
                res_scale=res_scale, img_range=255., rgb_mean=[0.4488, 0.4371, 0.4040])


def rcan(groups, blocks, scale):
    return dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=64, num_group=groups, num_block=blocks,
                squeeze_factor=16, upscale=scale, res_scale=1, img_range=255., rgb_mean=[0.4488, 0.4371, 0.4040])


def swinir(dim, rstbs, scale):
    return dict(type='SwinIR', upscale=scale, in_chans=3, img_size=48, window_size=8, img_range=1.,
                depths=[6] * rstbs, embed_dim=dim, num_heads=[6] * rstbs, mlp_ratio=2, upsampler='pixelshuffle',
                resi_connection='1conv')


# name -> (arch builder taking the scale, short description)
TEACHERS = {
    'EDSR_C256B32': (lambda s: edsr(256, 32, s, res_scale=0.1), 'EDSR 256 ch, 32 blocks (43.1M at x4)'),
    'RCAN_G10B20': (lambda s: rcan(10, 20, s), 'RCAN 10 groups x 20 blocks (15.6M)'),
    'SwinIR_C180D6': (lambda s: swinir(180, 6, s), 'SwinIR 180 ch, 6 RSTB (11.9M)'),
}
# pair -> (teacher, student arch builder, distillation stages, description)
PAIRS = {
    'EDSR_C256B32-C64B32': ('EDSR_C256B32', lambda s: edsr(64, 32, s), 4, 'width'),
    'EDSR_C256B32-C64B16': ('EDSR_C256B32', lambda s: edsr(64, 16, s), 4, 'compounded (width + depth)'),
    'RCAN_G10B20-G10B6': ('RCAN_G10B20', lambda s: rcan(10, 6, s), 5, 'depth'),
    'SwinIR_C180D6-C60D4': ('SwinIR_C180D6', lambda s: swinir(60, 4, s), 2, 'compounded (width + depth)'),
}
BASELINE_PAIRS = ('EDSR_C256B32-C64B32', 'RCAN_G10B20-G10B6', 'SwinIR_C180D6-C60D4')
# Each at its paper's setting (sources: mixprior_plugin/losses/kd_loss.py, docs/baselines.md). FAKD's
# runs weight it 10 against 0.5 pixel + 0.5 output KD: 20 against this chassis' 1 + 1.
BASELINES = {
    'FitNet': dict(type='FitNetLoss', loss_weight=1.0, criterion='l2', connector='conv1x1'),
    'AT': dict(type='ATLoss', loss_weight=1.0, p=2, beta=1000.0),
    'FAKD': dict(type='FAKDLoss', loss_weight=20.0, pool_size=None),
    'RKD': dict(type='RKDLoss', loss_weight=1.0, distance_weight=25.0, angle_weight=50.0, pool_size=4),
}
ABLATION_PAIR, ABLATION_SCALE = 'EDSR_C256B32-C64B32', 4


def base(name, scale, network_g, model_type='SRModel'):
    """Options shared by every run: data, schedule, validation, logging."""
    return dict(
        name=name,
        model_type=model_type,
        scale=scale,
        num_gpu=1,  # 'auto' / 0 for CPU; total batch 16: batch_size_per_gpu 4 with torchrun on 4 GPUs
        manual_seed=0,
        datasets=dict(
            train=dict(name='DIV2K', type='PairedImageDataset', dataroot_gt='datasets/DIV2K/DIV2K_train_HR_sub',
                       dataroot_lq=f'datasets/DIV2K/DIV2K_train_LR_bicubic/X{scale}_sub', filename_tmpl='{}',
                       io_backend=dict(type='disk'), gt_size=48 * scale, use_hflip=True, use_rot=True,
                       num_worker_per_gpu=6, batch_size_per_gpu=16, dataset_enlarge_ratio=1, prefetch_mode=None),
            val=dict(name='Set5', type='PairedImageDataset', dataroot_gt='datasets/Set5/HR',
                     dataroot_lq=f'datasets/Set5/LR_bicubic/X{scale}', filename_tmpl=f'{{}}x{scale}',
                     io_backend=dict(type='disk'))),
        network_g=network_g,
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(ema_decay=0.999,
                   optim_g=dict(type='Adam', lr=1e-4, weight_decay=0, betas=[0.9, 0.99]),
                   scheduler=dict(type='MultiStepLR', milestones=[100000, 200000], gamma=0.1),
                   total_iter=250000, warmup_iter=-1,
                   pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean')),
        val=dict(val_freq=5000, save_img=False,
                 metrics=dict(psnr=dict(type='calculate_psnr', crop_border=scale, test_y_channel=True),
                              ssim=dict(type='calculate_ssim', crop_border=scale, test_y_channel=True))),
        logger=dict(print_freq=100, save_checkpoint_freq=5000, use_tb_logger=True, wandb=dict(project=None)),
        dist_params=dict(backend='nccl', port=29500),
    )


def teacher_weights(teacher, scale):
    return f'experiments/train_{teacher}_x{scale}/models/net_g_latest.pth'


def with_teacher(opt, teacher_arch, weights, num_stages=None):
    out = dict()
    for key, value in opt.items():  # network_t right after network_g, for readability
        out[key] = value
        if key == 'network_g':
            out['network_t'] = teacher_arch
    out['path'] = dict(opt['path'], pretrain_network_t=weights, teacher_param_key='params_ema', strict_load_t=True)
    if num_stages:
        out['distill'] = dict(num_stages=num_stages, feat_norm=True)
    return out


# MiPKD's option files write every default (the schema's), so a reader sees what a run uses.
MIXER_DEFAULTS = options_schema.defaults('mixer', 'MiPKDModel')
MIPKD_LOSSES = options_schema.loss_defaults('MiPKDModel')


def method_options(method, base_opt, teacher_arch, weights, num_stages):
    """One method's options on top of the shared ``base_opt`` (an SRModel option dict).

    Methods: 'Scratch', 'LogitsKD', 'MiPKD', the BASELINES keys, and 'MiPKD_<ablation>'.
    Every baseline is Logits-KD plus its feature term, as MiPKD is Logits-KD plus its mixers, so
    the comparison isolates what each method adds.
    """
    if method == 'Scratch':
        return deepcopy(base_opt)
    if method == 'LogitsKD':
        opt = with_teacher(dict(deepcopy(base_opt), model_type='KDModel'), teacher_arch, weights)
        opt['train']['kd_opt'] = dict(type='L1Loss', loss_weight=1.0)
        return opt
    if method in BASELINES:
        opt = with_teacher(dict(deepcopy(base_opt), model_type='KDModel'), teacher_arch, weights, num_stages)
        opt['train']['kd_opt'] = dict(type='L1Loss', loss_weight=1.0)
        opt['train']['feat_opt'] = [dict(BASELINES[method])]
        return opt
    if method == 'MiPKD' or method.startswith('MiPKD_'):
        opt = with_teacher(dict(deepcopy(base_opt), model_type='MiPKDModel'), teacher_arch, weights, num_stages)
        opt['mixer'] = deepcopy(MIXER_DEFAULTS)
        opt['train'].update(deepcopy(MIPKD_LOSSES))
        return merge(opt, ABLATIONS[method[len('MiPKD_'):]]) if method != 'MiPKD' else opt
    raise ValueError(f'unknown method {method!r}')


def merge(base_opt, delta):
    """A copy of ``base_opt`` with ``delta`` merged in (neither is changed)."""
    return deep_update(deepcopy(base_opt), deepcopy(delta))


# ---- the project's method benchmark (tools/benchmark.py): one teacher, students, every method ----
# Two profiles of the same design. 'gpu': x4, EDSR 128x16 teacher, three compressions, the schedule for
# one data-centre GPU. 'cpu': x2, small enough for 2 CPU cores (one torch thread per process), two compressions,
# three seeds; its regime is checked in the report (teacher >= scratch + 0.3 dB, scratch >= bicubic
# + 0.5 dB on every test set). x2, because EDSR (no bicubic skip) needs far more iterations at x4
# before it even reaches bicubic: a 3000-iteration x4 EDSR 32x8 teacher measured 28.03 dB on Set5
# against bicubic's 28.42. EMA decay 0.99 for these short schedules: at 0.999 the EMA of a
# 1000-iteration run still holds 37% of the random initial weights (0.999^1000). Each profile's files
# live in options/train/<folder>/; seeds and the swept feature weights are applied by
# tools/benchmark.py and recorded with each run.
BENCH_METHODS = ('Scratch', 'LogitsKD', 'FitNet', 'AT', 'FAKD', 'RKD', 'MiPKD', 'MiPKD_fpm_only', 'MiPKD_bpm_only',
                 'MiPKD_bpm_quarter_batch')
BENCH_PROFILES = {
    'gpu': dict(folder='Benchmark', scale=4, teacher=('EDSR_C128B16', lambda s: edsr(128, 16, s)),
                settings={'depth': ('EDSR_C128B4', lambda s: edsr(128, 4, s)),
                          'width': ('EDSR_C32B16', lambda s: edsr(32, 16, s)),
                          'compounded': ('EDSR_C32B4', lambda s: edsr(32, 4, s))},
                num_stages=4, teacher_iters=20000, student_iters=6000, batch=16, lq_patch=48, lr=2e-4, ema_decay=0.999),
    'cpu': dict(folder='BenchmarkCPU', scale=2, teacher=('EDSR_C32B8', lambda s: edsr(32, 8, s)),
                settings={'depth': ('EDSR_C32B2', lambda s: edsr(32, 2, s)),
                          'compounded': ('EDSR_C16B2', lambda s: edsr(16, 2, s))},
                num_stages=2, teacher_iters=3000, student_iters=1000, batch=8, lq_patch=24, lr=1e-3, ema_decay=0.99),
    # 'converged': the CPU profile trained until the students stop learning (benchmarks/results/bench_converged).
    # Its own teacher (trained to its validation plateau), a width setting with K = 4 (two blocks per stage on
    # both sides), EMA 0.999, and decays at 1/2 and 7/10 of the schedule so that the last quarter runs at the
    # final learning rate (the plateau criterion reads the validation curve over that quarter).
    'converged': dict(folder='BenchmarkConverged', scale=2, teacher=('EDSR_C32B8', lambda s: edsr(32, 8, s)),
                      teacher_file='pretrained/EDSR_C32B8_x2_T91BSD200_plateau.pth',
                      settings={'depth': ('EDSR_C32B2', lambda s: edsr(32, 2, s)),
                                # 8 channels: at 16, scratch alone came within 0.29 dB of the teacher on BSD100
                                'width': ('EDSR_C8B8', lambda s: edsr(8, 8, s)),
                                'compounded': ('EDSR_C16B2', lambda s: edsr(16, 2, s))},
                      num_stages={'depth': 2, 'width': 4, 'compounded': 2}, teacher_iters=60000,
                      student_iters=12000, batch=8, lq_patch=24, lr=1e-3, ema_decay=0.999, milestones=(0.5, 0.7),
                      gamma=0.3,
                      # the baselines' weights as the 1000-iteration study chose them (its sweep factors applied
                      # to the papers' weights); the converged study sweeps 0.1x / 1x / 10x around them
                      feature_weights={'FitNet': 0.1, 'AT': 0.001, 'FAKD': 0.2, 'RKD': 0.001},
                      # AT and RKD are left out: the budget of a CPU study at convergence does not cover them
                      methods=tuple(m for m in BENCH_METHODS if m not in ('AT', 'RKD')),
                      # MiPKD's ablations in the width setting only (K = 4: the block mixer routes 1-3 stages)
                      ablations=('MiPKD_fpm_only', 'MiPKD_bpm_only', 'MiPKD_bpm_quarter_batch'),
                      ablation_settings=('width', ),
                      # hypotheses about MiPKD and FitNet, tried on the selection seeds: name -> (base method,
                      # option delta, settings). Depth is where FitNet led MiPKD most in the 1000-iteration study;
                      # C_z = C_T goes to compounded, the setting with C_S < C_T (in depth C_S = C_T = 32 already,
                      # so the variant would change nothing there)
                      variants={
                          'MiPKD_detach_teacher_latent': ('MiPKD', ABLATIONS['detach_teacher_latent'], ('depth', )),
                          'MiPKD_ae_warmup': ('MiPKD', dict(mixer=dict(ae_warmup_iters=1200)), ('depth', )),
                          'MiPKD_latent_teacher_width': ('MiPKD', dict(mixer=dict(latent_channels=32)),
                                                         ('compounded', )),
                          'MiPKD_mlp_encoders': ('MiPKD', ABLATIONS['mlp_encoders'], ('depth', )),
                          # the weight at which FitNet's hint gives the student the gradient norm MiPKD's FPM gives
                          # it at iteration 1 (0.185 against 10.91 at weight 0.1: tools/inspect_gradients.py on the
                          # depth files, benchmarks/results/bench_converged/fitnet_fpm_gradient/)
                          'FitNet_fpm_gradient': ('FitNet', dict(train=dict(feat_opt=[
                              dict(BASELINES['FitNet'], loss_weight=0.0017)])), ('depth', )),
                      }),
}


def bench_teacher_weights(profile):
    p = BENCH_PROFILES[profile]
    return p.get('teacher_file') or f'pretrained/{p["teacher"][0]}_x{p["scale"]}_T91BSD200.pth'


def bench_base(name, network_g, iters, scale=4, batch=16, lq_patch=48, lr=2e-4, ema_decay=0.999,
               milestones=(0.5, 0.75), gamma=0.5):
    """T91 + BSD200 (tools/prepare_data.py layout), a short schedule (decays at ``milestones`` of it), Set5
    validation."""
    opt = base(name, scale, network_g)
    opt['datasets']['train'].update(name='T91_BSD200', dataroot_gt=f'datasets/T91_BSD200_x{scale}/HR',
                                    dataroot_lq=f'datasets/T91_BSD200_x{scale}/LR_bicubic/X{scale}',
                                    filename_tmpl=f'{{}}x{scale}', gt_size=lq_patch * scale, batch_size_per_gpu=batch)
    opt['train'].update(optim_g=dict(type='Adam', lr=lr, weight_decay=0, betas=[0.9, 0.99]),
                        scheduler=dict(type='MultiStepLR', milestones=[round(iters * m) for m in milestones],
                                       gamma=gamma),
                        total_iter=iters, ema_decay=ema_decay)
    opt['val']['val_freq'] = max(iters // 5, 1)
    opt['logger'].update(print_freq=max(iters // 50, 1), save_checkpoint_freq=max(iters // 5, 1))
    return opt


def same_run(opt_a, opt_b):
    """Whether two option dicts train the same student: equal apart from ``name``, once MiPKD's latent width
    default (``mixer.latent_channels: ~`` = the student's width C_S, which for the benchmark's EDSR students is
    ``network_g.num_feat``) is filled in."""
    def effective(opt):
        opt = deepcopy(opt)
        opt.pop('name', None)
        mixer = opt.get('mixer')
        if mixer is not None and mixer.get('latent_channels') is None:
            mixer['latent_channels'] = opt['network_g']['num_feat']
        return opt
    return effective(opt_a) == effective(opt_b)


def benchmark_options(profile):
    """{file stem: (header, options)} of one benchmark profile's teacher and students (seed 0)."""
    p = BENCH_PROFILES[profile]
    t_name, t_arch, scale = p['teacher'][0], p['teacher'][1], p['scale']
    t_weights = bench_teacher_weights(profile)
    schedule = dict(scale=scale, batch=p['batch'], lq_patch=p['lq_patch'], lr=p['lr'], ema_decay=p['ema_decay'],
                    milestones=p.get('milestones', (0.5, 0.75)), gamma=p.get('gamma', 0.5))
    files = {f'train_teacher_{t_name}_x{scale}': (
        f'Benchmark ({profile} profile) teacher {t_name} x{scale} on T91 + BSD200; tools/benchmark.py stores it as '
        f'{t_weights}.', bench_base(f'bench_{profile}_teacher_{t_name}_x{scale}', t_arch(scale), p['teacher_iters'],
                                    **schedule))}
    for setting, (s_name, s_arch) in p['settings'].items():
        stages = p['num_stages'][setting] if isinstance(p['num_stages'], dict) else p['num_stages']
        methods = [m for m in p.get('methods', BENCH_METHODS)
                   if m not in p.get('ablations', ()) or setting in p['ablation_settings']]
        variants = p.get('variants', {})
        methods += [m for m, (_, _, where) in variants.items() if setting in where]
        for method in methods:
            name = f'bench_{profile}_{method}_{setting}_{s_name}_x{scale}'
            base_method, delta, _ = variants.get(method, (method, {}, ()))
            opt = method_options(base_method, bench_base(name, s_arch(scale), p['student_iters'], **schedule),
                                 t_arch(scale), t_weights, stages)
            if base_method in p.get('feature_weights', {}):
                opt['train']['feat_opt'][0]['loss_weight'] = p['feature_weights'][base_method]
            variant_opt = merge(opt, delta)
            if method in variants and same_run(variant_opt, opt):
                raise ValueError(f'variant {method} changes nothing in the {setting} setting: its options {delta} '
                                 f'equal {base_method}\'s once defaults are filled in')
            opt = variant_opt
            files[f'train_{method}_{setting}_x{scale}'] = (
                f'Benchmark ({profile} profile), {setting} compression: {t_name} -> {s_name}, {method}, x{scale}.', opt)
    return files


# ---- real-world SR: Real-ESRNet / Real-ESRGAN / ESRGAN teachers into compact students ----------------------
# BasicSR's own recipes (train_realesrnet_x4plus.yml, train_realesrgan_x4plus.yml, train_ESRGAN_x4.yml) with a
# teacher: the degradations, data, losses, discriminator and schedules are BasicSR's; the model type becomes the
# base model's distillation counterpart (mixprior_plugin/utils/model_types.py).
def rrdbnet(feat, blocks, scale, grow=32):
    return dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=feat, num_block=blocks, num_grow_ch=grow,
                scale=scale)


def srvgg(feat, convs, scale):
    return dict(type='SRVGGNetCompact', num_in_ch=3, num_out_ch=3, num_feat=feat, num_conv=convs, upscale=scale,
                act_type='prelu')


def realworld_val(scale, name='Set14'):
    """Validation on a test set degraded by tools/realworld_example.py (HR and its degraded LR)."""
    root = f'datasets/{name}_realworld_x{scale}'
    return dict(name=f'{name}_realworld', type='PairedImageDataset', dataroot_gt=f'{root}/HR', dataroot_lq=f'{root}/LR',
                filename_tmpl='{}', io_backend=dict(type='disk'))


def realworld_base(name, scale, network_g, model_type, gan=False, iters=None, batch=12, gt_size=256, queue=180,
                   lr=None, ema_decay=0.999, synth_crop_size=None, train_root='datasets/DF2K',
                   meta_info='datasets/DF2K/meta_info/meta_info_DF2Kmultiscale+OST_sub.txt', workers=5):
    """BasicSR's Real-ESRNet (``gan=False``) or Real-ESRGAN recipe for ``network_g`` (an SRModel-style option dict)."""
    iters = iters or (400000 if gan else 1000000)
    opt = dict(name=name, model_type=model_type, scale=scale, num_gpu=1, manual_seed=0)
    opt.update(dict(l1_gt_usm=True, percep_gt_usm=True, gan_gt_usm=False) if gan else dict(gt_usm=True))
    opt.update(deepcopy(DEGRADATIONS), gt_size=gt_size, queue_size=queue)
    if synth_crop_size:
        opt['synth_crop_size'] = synth_crop_size
    opt['datasets'] = dict(
        train=dict(name='DF2K+OST' if train_root.endswith('DF2K') else 'T91+BSD200', type='RealESRGANDataset',
                   dataroot_gt=train_root, meta_info=meta_info, io_backend=dict(type='disk'), **deepcopy(KERNELS),
                   gt_size=gt_size, use_hflip=True, use_rot=False, num_worker_per_gpu=workers,
                   batch_size_per_gpu=batch, dataset_enlarge_ratio=1, prefetch_mode=None),
        val=realworld_val(scale))
    opt['network_g'] = network_g
    if gan:
        opt['network_d'] = dict(type='UNetDiscriminatorSN', num_in_ch=3, num_feat=64, skip_connection=True)
    opt['path'] = dict(pretrain_network_g=None, strict_load_g=True, resume_state=None)
    adam = dict(type='Adam', lr=lr or (1e-4 if gan else 2e-4), weight_decay=0, betas=[0.9, 0.99])
    train = dict(ema_decay=ema_decay, optim_g=deepcopy(adam))
    if gan:
        train['optim_d'] = deepcopy(adam)
    milestones = [iters] if iters >= 100000 else [round(iters * 0.5), round(iters * 0.75)]
    train.update(scheduler=dict(type='MultiStepLR', milestones=milestones, gamma=0.5), total_iter=iters,
                 warmup_iter=-1, pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'))
    if gan:
        train.update(
            perceptual_opt=dict(type='PerceptualLoss', layer_weights={'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1,
                                                                      'conv4_4': 1, 'conv5_4': 1},
                                vgg_type='vgg19', use_input_norm=True, perceptual_weight=1.0, style_weight=0,
                                range_norm=False, criterion='l1'),
            gan_opt=dict(type='GANLoss', gan_type='vanilla', real_label_val=1.0, fake_label_val=0.0, loss_weight=0.1),
            net_d_iters=1, net_d_init_iters=0)
    opt['train'] = train
    opt['val'] = dict(val_freq=min(5000, iters), save_img=False,
                      metrics=dict(psnr=dict(type='calculate_psnr', crop_border=scale, test_y_channel=True),
                                   niqe=dict(type='calculate_niqe', crop_border=scale)))
    opt['logger'] = dict(print_freq=min(100, max(iters // 20, 1)), save_checkpoint_freq=min(5000, iters),
                         use_tb_logger=True, wandb=dict(project=None))
    opt['dist_params'] = dict(backend='nccl', port=29500)
    return opt


def esrgan_base(name, network_g, model_type):
    """BasicSR's ESRGAN recipe (train_ESRGAN_x4.yml) for ``network_g``."""
    opt = base(name, 4, network_g, model_type)
    opt['datasets']['train'].update(gt_size=128, dataset_enlarge_ratio=100)
    opt['datasets']['val'] = dict(name='Set14', type='PairedImageDataset', dataroot_gt='datasets/Set14/GTmod12',
                                  dataroot_lq='datasets/Set14/LRbicx4', io_backend=dict(type='disk'))
    network_d = dict(type='VGGStyleDiscriminator', num_in_ch=3, num_feat=64)
    out = {}
    for key, value in opt.items():  # network_d right after network_g, as in BasicSR's file
        out[key] = value
        if key == 'network_g':
            out['network_d'] = network_d
    adam = dict(type='Adam', lr=1e-4, weight_decay=0, betas=[0.9, 0.99])
    out['train'] = dict(
        ema_decay=0.999, optim_g=deepcopy(adam), optim_d=deepcopy(adam),
        scheduler=dict(type='MultiStepLR', milestones=[50000, 100000, 200000, 300000], gamma=0.5),
        total_iter=400000, warmup_iter=-1, pixel_opt=dict(type='L1Loss', loss_weight=1e-2, reduction='mean'),
        perceptual_opt=dict(type='PerceptualLoss', layer_weights={'conv5_4': 1}, vgg_type='vgg19', use_input_norm=True,
                            range_norm=False, perceptual_weight=1.0, style_weight=0, criterion='l1'),
        gan_opt=dict(type='GANLoss', gan_type='vanilla', real_label_val=1.0, fake_label_val=0.0, loss_weight=5e-3),
        net_d_iters=1, net_d_init_iters=0)
    out['val'] = dict(val_freq=5000, save_img=False,
                      metrics=dict(psnr=dict(type='calculate_psnr', crop_border=4, test_y_channel=True)))
    return out


def distilled(method, base_opt, teacher_arch, weights, num_stages):
    """``method``'s options (Scratch, LogitsKD, MiPKD, a baseline) on a BasicSR real-world or GAN recipe.

    The distillation keys are those of :func:`method_options`; the model type becomes the recipe's
    base model's counterpart, the teacher keeps the default param key (params_ema, falling back to
    params), and features are normalised per network (``feat_norm: auto``) since the pairs cross families.
    """
    if method == 'Scratch':
        return deepcopy(base_opt)
    opt = method_options(method, dict(base_opt, model_type='SRModel'), teacher_arch, weights, num_stages)
    opt['model_type'] = counterpart(base_opt['model_type'], mipkd=method.startswith('MiPKD'))
    opt['path'].pop('teacher_param_key')
    if 'distill' in opt:
        opt['distill']['feat_norm'] = 'auto'
    return opt


REALWORLD_TEACHER = lambda s: rrdbnet(64, 23, s)  # noqa: E731  (Real-ESRNet / Real-ESRGAN / ESRGAN: RRDBNet 64x23)
REALWORLD_STUDENT = ('SRVGG_C64N32', lambda s: srvgg(64, 32, s))  # realesr-general-x4v3's size, 1.2M parameters
ESRGAN_STUDENT = ('RRDB_C64B6', lambda s: rrdbnet(64, 6, s))  # RealESRGAN_x4plus_anime_6B's size
REALWORLD_STAGES = 4
# The CPU example (tools/realworld_example.py, benchmarks/results/realworld_cpu): small nets, BasicSR's degradations
# on T91 + BSD200 (synthesised on 96x96 crops), one thread.
REALWORLD_CPU = dict(teacher=('RRDB_C32B4', rrdbnet(32, 4, 4, grow=16)), student=('SRVGG_C32N8', srvgg(32, 8, 4)),
                     teacher_iters=2000, student_iters=1500, batch=8, gt_size=64, queue=80, synth_crop_size=96, lr=5e-4,
                     ema_decay=0.99, num_stages=4)


def realworld_options():
    """{relative path: (header, options)}: BasicSR's real-world and ESRGAN recipes distilled, and the CPU example."""
    files = {}
    t_name = 'RRDB_C64B23'
    s_name, student = REALWORLD_STUDENT
    pretrained = 'experiments/pretrained_models'
    recipes = (  # (base model, scale, teacher weights, methods, student weights to start from)
        ('RealESRNetModel', 4, f'{pretrained}/RealESRNet_x4plus.pth', ('LogitsKD', 'MiPKD'), None),
        ('RealESRNetModel', 2, 'experiments/train_RealESRNetx2plus_1000k_B12G4/models/net_g_latest.pth',
         ('LogitsKD', ), None),
        ('RealESRGANModel', 4, f'{pretrained}/RealESRGAN_x4plus.pth', ('LogitsKD', 'MiPKD'),
         'experiments/{method}_RealESRNet_{pair}_x4/models/net_g_latest.pth'))
    for base_model, scale, weights, methods, init in recipes:
        gan = base_model == 'RealESRGANModel'
        short = base_model[:-len('Model')]
        for method in methods:
            pair = f'{t_name}-{s_name}'
            name = f'{method}_{short}_{pair}_x{scale}'
            opt = distilled(method, realworld_base(name, scale, student(scale), base_model, gan=gan),
                            REALWORLD_TEACHER(scale), weights, REALWORLD_STAGES)
            if init:
                opt['path']['pretrain_network_g'] = init.format(method=method, pair=pair)
            note = ('' if method != 'LogitsKD' or scale == 4 else ' Logits-KD only: RRDBNet at x2 pixel-unshuffles '
                    'its input, so its body features (LR/2) cannot be paired with the student\'s (LR).')
            stage = ' (stage 2: from the Real-ESRNet student)' if gan else ''
            header = f'{method} on BasicSR\'s {base_model}{stage}: Real-ESRGAN teacher {t_name} -> {s_name}, x{scale}.'
            files[f'RealWorld/train_{name}.yml'] = (header + note, opt)
    for method in ('LogitsKD', 'MiPKD'):
        s_name, student = ESRGAN_STUDENT
        name = f'{method}_ESRGAN_{t_name}-{s_name}_x4'
        opt = distilled(method, esrgan_base(name, student(4), 'ESRGANModel'), REALWORLD_TEACHER(4),
                        f'{pretrained}/ESRGAN/ESRGAN_SRx4_DF2KOST_official-ff704c30.pth', REALWORLD_STAGES)
        files[f'RealWorld/train_{name}.yml'] = (
            f'{method} on BasicSR\'s ESRGANModel: ESRGAN teacher {t_name} -> {s_name}, x4.', opt)
    p = REALWORLD_CPU
    (t_name, t_arch), (s_name, s_arch) = p['teacher'], p['student']
    common = dict(batch=p['batch'], gt_size=p['gt_size'], queue=p['queue'], lr=p['lr'], ema_decay=p['ema_decay'],
                  synth_crop_size=p['synth_crop_size'], train_root='datasets',
                  meta_info='datasets/meta_info_T91_BSD200.txt', workers=0)
    teacher_name = f'realworld_cpu_teacher_{t_name}_x4'
    files[f'RealWorldCPU/train_teacher_{t_name}_x4.yml'] = (
        f'CPU example (tools/realworld_example.py): Real-ESRNet teacher {t_name} on T91 + BSD200, x4.',
        realworld_base(teacher_name, 4, deepcopy(t_arch), 'RealESRNetModel', iters=p['teacher_iters'], **common))
    for method in ('Scratch', 'LogitsKD', 'MiPKD'):
        name = f'realworld_cpu_{method}_{t_name}-{s_name}_x4'
        opt = distilled(method, realworld_base(name, 4, deepcopy(s_arch), 'RealESRNetModel', iters=p['student_iters'],
                                               **common),
                        deepcopy(t_arch), f'experiments/{teacher_name}/models/net_g_latest.pth', p['num_stages'])
        files[f'RealWorldCPU/train_{method}_{t_name}-{s_name}_x4.yml'] = (
            f'CPU example (tools/realworld_example.py): {method}, Real-ESRNet {t_name} -> {s_name}, x4.', opt)
    return files


def all_options():
    """{relative path: (header comment, options)} for every generated file."""
    files = realworld_options()
    for teacher, (arch, desc) in TEACHERS.items():
        for s in SCALES:
            name = f'train_{teacher}_x{s}'
            files[f'Teachers/{name}.yml'] = (f'Teacher: {desc}, x{s}.', base(name, s, arch(s)))
    for pair, (teacher, student, k, kind) in PAIRS.items():
        for s in SCALES:
            stem = f'{pair}_x{s}'
            head = f'{TEACHERS[teacher][1]} -> {pair.split("-")[1]} ({kind} compression), x{s}.'
            methods = ['Scratch', 'LogitsKD', 'MiPKD']
            if s == 4 and pair in BASELINE_PAIRS:
                methods += list(BASELINES)
            if pair == ABLATION_PAIR and s == ABLATION_SCALE:
                methods += [f'MiPKD_{ab}' for ab in ABLATIONS]
            for method in methods:
                opt = method_options(method, base(f'{method}_{stem}', s, student(s)), TEACHERS[teacher][0](s),
                                     teacher_weights(teacher, s), k)
                folder = ('Baselines' if method in BASELINES else
                          'MiPKD/ablations' if method.startswith('MiPKD_') else 'MiPKD')
                label = {'Scratch': 'From scratch', 'LogitsKD': 'Logits-KD'}.get(method, method)
                if method.startswith('MiPKD_'):
                    label = f'MiPKD ablation {method[6:]}'
                files[f'{folder}/train_{method}_{stem}.yml'] = (f'{label}: {head}', opt)
    for profile, p in BENCH_PROFILES.items():
        for name, (header, opt) in benchmark_options(profile).items():
            files[f'{p["folder"]}/{name}.yml'] = (header, opt)
    return files


# ---- test option files (BasicSR's options/test layout): the MiPKD student of each paper pair at x4 ----
TEST_SETS = ('Set5', 'Set14')
TEST_SCALE = 4


def test_options(method='MiPKD', scale=TEST_SCALE):
    """{relative path: (header, options)}: the trained student of each pair on Set5 and Set14.

    ``pretrain_network_g`` is where mixprior-train leaves that training file's run (run from the same
    folder); the student is tested as BasicSR's own SRModel with its EMA weights, as exported.
    """
    files = {}
    for pair, (teacher, student, _, kind) in PAIRS.items():
        run = f'{method}_{pair}_x{scale}'
        train_opt = base(run, scale, student(scale))
        datasets = {f'test_{i}': dict(name=name, type='PairedImageDataset', dataroot_gt=f'datasets/{name}/HR',
                                      dataroot_lq=f'datasets/{name}/LR_bicubic/X{scale}',
                                      filename_tmpl=f'{{}}x{scale}', io_backend=dict(type='disk'))
                    for i, name in enumerate(TEST_SETS, 1)}
        opt = dict(name=f'test_{run}', model_type='SRModel', scale=scale, num_gpu=1, manual_seed=0, datasets=datasets,
                   network_g=train_opt['network_g'],
                   path=dict(pretrain_network_g=f'experiments/{run}/models/net_g_latest.pth', param_key_g='params_ema',
                             strict_load_g=True),
                   val=dict(save_img=True, suffix=None, metrics=train_opt['val']['metrics']))
        header = (f'Test of the {method} student {pair.split("-")[1]} of {teacher} ({kind} compression), x{scale}, '
                  f'trained by options/train/MiPKD/train_{run}.yml.')
        files[f'{method}/test_{run}.yml'] = (header, opt)
    return files


class _Dumper(yaml.SafeDumper):
    """Block style for mappings, flow style for lists: the look of BasicSR's own option files."""


_Dumper.add_representer(dict, lambda d, data: d.represent_mapping('tag:yaml.org,2002:map', data.items(),
                                                                  flow_style=False))
_Dumper.add_representer(list, lambda d, data: d.represent_sequence('tag:yaml.org,2002:seq', data, flow_style=True))


def render(header, opt, run='mixprior-train -opt options/train/<this file>'):
    text = yaml.dump(opt, Dumper=_Dumper, sort_keys=False, width=110)
    return (f'# {header}\n# Generated by tools/gen_options.py (edit the table there, then rerun it).\n'
            f'# Run: {run}\n' + text)


def generated_files():
    """{absolute path: text} of every file this tool writes (option files and docs/options.md)."""
    files = {os.path.join(OPTIONS, rel): render(header, opt) for rel, (header, opt) in all_options().items()}
    for rel, (header, opt) in test_options().items():
        files[os.path.join(TEST_OPTIONS, rel)] = render(header, opt, f'mixprior-test -opt options/test/{rel}')
    with open(OPTIONS_DOC, encoding='utf-8') as f:
        files[OPTIONS_DOC] = options_schema.replace_table(f.read())
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--check', action='store_true', help='only compare with the files on disk')
    parser.add_argument('--table', action='store_true', help='only docs/options.md\'s option table')
    args = parser.parse_args(argv)
    files = generated_files()
    if args.table:
        files = {OPTIONS_DOC: files[OPTIONS_DOC]}
    stale = []
    for path, text in files.items():
        current = open(path, encoding='utf-8').read() if os.path.exists(path) else None
        if current != text:
            stale.append(os.path.relpath(path, REPO))
            if not args.check:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, 'w', encoding='utf-8') as f:
                    f.write(text)
    if args.check and stale:
        sys.exit(f'{len(stale)} files differ from tools/gen_options.py (rerun it): {stale[:5]}')
    print(f'{len(files)} files {"checked" if args.check else "written"} under {REPO}'
          + (f' ({len(stale)} changed)' if stale else ''))


if __name__ == '__main__':
    main()
