"""The benchmark's profiles, methods and option files: which runs exist and the exact options each uses."""
import glob
import hashlib
import json
import os
from copy import deepcopy

from mixprior_plugin import options_schema
from mixprior_plugin.models.mipkd_model import mixer_settings
from mixprior_plugin.utils.options import yaml_load
from mixprior_plugin.utils.tooling import training_options

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# sweep_factors: the CPU profile's sweep reaches two decades each side of the option files' weights, because
# with 0.01 / 0.1 / 1 the best factor of five of six methods was an end of the range; the GPU profile keeps
# three factors to fit its time budget.
PROFILES = {
    'cpu': dict(folder='BenchmarkCPU', settings=('compounded', 'depth'), seeds=(0, 1, 2), threads=1,
                sweep_factors=(0.001, 0.01, 0.1, 1.0, 3.0, 10.0)),
    'gpu': dict(folder='Benchmark', settings=('depth', 'width', 'compounded'), seeds=(0, 1), threads=None,
                sweep_factors=(0.01, 0.1, 1.0)),
    # converged: students trained to their plateau; weights chosen on selection seeds that are never reported;
    # MiPKD's ablations (where their option files are) at the reported seeds; hypothesis variants on the
    # selection seeds, promoted to the reported seeds when they win there (tools/gen_options.py decides which
    # setting has which files); extra_seeds: reported seeds added for the methods of a comparison that the
    # reported seeds left within two paired standard deviations (decided once, on the reported seeds)
    # (settings run in this order, cheapest first, so that a partial study has whole settings; each setting
    # chooses its own weights: sweep_scope 'each')
    'converged': dict(folder='BenchmarkConverged', settings=('compounded', 'width', 'depth'), seeds=(0, 1, 2),
                      selection_seeds=(100, 101), extra_seeds=(3, 4), threads=1, sweep_factors=(0.1, 1.0, 10.0),
                      curve_points=24, sweep_scope='each',
                      ablations=('MiPKD_fpm_only', 'MiPKD_bpm_only', 'MiPKD_bpm_quarter_batch'),
                      variants=('MiPKD_detach_teacher_latent', 'MiPKD_ae_warmup', 'MiPKD_latent_teacher_width',
                                'MiPKD_mlp_encoders', 'FitNet_fpm_gradient')),
}


# Order of the runs and of the table rows; a method with no option file in the profile is left out.
METHODS = ('Scratch', 'LogitsKD', 'MiPKD', 'MiPKD_bpm_only', 'MiPKD_fpm_only', 'MiPKD_bpm_quarter_batch', 'FitNet',
           'AT', 'FAKD', 'RKD', 'MiPKD_detach_teacher_latent', 'MiPKD_ae_warmup', 'MiPKD_latent_teacher_width',
           'MiPKD_mlp_encoders', 'FitNet_fpm_gradient')


LABELS = {'Scratch': 'scratch', 'LogitsKD': 'Logits-KD', 'MiPKD_fpm_only': 'MiPKD FPM only',
          'MiPKD_bpm_only': 'MiPKD BPM only', 'MiPKD_bpm_quarter_batch': 'MiPKD BPM on 1/4 batch',
          'MiPKD_detach_teacher_latent': 'MiPKD detached teacher latent', 'MiPKD_ae_warmup': 'MiPKD AE warm-up',
          'MiPKD_latent_teacher_width': 'MiPKD C_z = C_T', 'MiPKD_mlp_encoders': 'MiPKD MLP encoders',
          'FitNet_fpm_gradient': 'FitNet at the FPM\'s gradient'}


VAL_SET = 'Val'


# The plateau criterion of the converged profile: scratch's validation PSNR (EMA weights) rises by less than
# this over the last quarter of its schedule, in every setting.
PLATEAU_RULE = dict(fraction=0.25, max_rise_db=0.03)


# --smoke: tiny archs with the same roles (teacher deeper and wider than every student)
SMOKE_ARCHS = {'teacher': (16, 4), 'depth': (16, 2), 'width': (8, 4), 'compounded': (8, 2)}


class BenchmarkError(ValueError):
    pass


def options_dir(profile):
    return os.path.join(REPO, 'options', 'train', PROFILES[profile]['folder'])


def load_options(path, smoke=False):
    """An option file as plain dicts (with the --smoke arch shrink applied)."""
    if not os.path.isfile(path):
        raise BenchmarkError(f'Option file not found: {path} (run tools/gen_options.py)')
    opt = json.loads(json.dumps(yaml_load(path)))
    if smoke:
        stem = os.path.basename(path)
        role = 'teacher' if stem.startswith('train_teacher') else stem.rsplit('_', 2)[-2]
        feat, blocks = SMOKE_ARCHS[role]
        opt['network_g'].update(num_feat=feat, num_block=blocks)
        if 'network_t' in opt:
            opt['network_t'].update(num_feat=SMOKE_ARCHS['teacher'][0], num_block=SMOKE_ARCHS['teacher'][1])
        if 'distill' in opt:
            opt['distill']['num_stages'] = 2
    return opt


def profile_runs(profile):
    """``(teacher file, {setting: {method: file}})`` of a profile, from its option folder."""
    folder = options_dir(profile)
    teachers = sorted(glob.glob(os.path.join(folder, 'train_teacher_*.yml')))
    if len(teachers) != 1:
        raise BenchmarkError(f'{folder} must hold exactly one train_teacher_*.yml, found {len(teachers)}')
    files = {}
    for setting in PROFILES[profile]['settings']:
        files[setting] = {}
        for m in METHODS:
            found = sorted(glob.glob(os.path.join(folder, f'train_{m}_{setting}_x[0-9].yml')))
            if found:
                files[setting][m] = found[0]
        if 'Scratch' not in files[setting]:
            raise BenchmarkError(f'{folder}: no train_Scratch_{setting}_x<scale>.yml')
    return teachers[0], files


def feature_weight_path(opt):
    """Where the method's feature-term weight sits in its options, or None (nothing to sweep)."""
    if opt.get('model_type') == 'MiPKDModel':
        if options_schema.value(opt, 'train', 'fpm_opt').get('loss_weight', 1.0) == 0:  # 1.0: BasicSR's loss default
            return None
        return ('fpm_opt', )
    if options_schema.value(opt, 'train', 'feat_opt'):
        return ('feat_opt', 0)
    return None


def scaled_feature_weight(opt, factor):
    """Options with the feature-term weight multiplied by ``factor``."""
    opt = deepcopy(opt)
    where = feature_weight_path(opt)
    if where is None or factor == 1:
        return opt
    term = opt['train'][where[0]]
    term = term[where[1]] if len(where) > 1 else term
    term['loss_weight'] = round(term.get('loss_weight', 1.0) * factor, 6)
    return opt


def prepare_model_options(opt, iters, device, out, teacher_ckpt, seed, bf16=False, channels_last=False):
    """Options as build_model wants them (:func:`~mixprior_plugin.utils.tooling.training_options`, as every tool
    assembles them), with our iterations (the schedule's milestones scaled alike) and seed; ``bf16`` /
    ``channels_last`` set the models' own ``train.amp`` / ``train.channels_last``."""
    opt = training_options(opt, device, os.path.join(out, 'experiments', opt['name']),
                           teacher_weights=teacher_ckpt if 'network_t' in opt else None)
    opt['manual_seed'] = seed
    train = opt['train']
    if bf16:
        train['amp'] = 'bf16'
    if channels_last:
        train['channels_last'] = True
    if iters != train['total_iter']:  # keep the schedule's shape
        train['scheduler']['milestones'] = [max(1, m * iters // train['total_iter'])
                                            for m in train['scheduler']['milestones']]
        train['total_iter'] = iters
    return opt


def resolved_settings(opt):
    """The settings the model will use beyond the file (MiPKD's mixer defaults filled in)."""
    if opt.get('model_type') != 'MiPKDModel':
        return {}
    return mixer_settings(opt)


def sha(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
