"""Which model type reads which keys: option files whose keys the model type would never read are refused.

BasicSR ignores keys that its model does not read. Three such silences hide a broken distillation
setup; each is refused with one line that names the model type to use:

* A teacher (:data:`TEACHER_KEYS`) under a model type that builds none (SRModel, ESRGANModel,
  RealESRNetModel, ... any model that is not one of the plugin's distillation models).
* GAN or perceptual keys (:data:`GAN_KEYS`) under a distillation model whose base trains neither:
  all of them in one statement.
* A training set that does not fit the model: RealESRGANDataset gives HR images and blur kernels
  only (the model synthesises the LR), so it needs a model that synthesises; such a model needs it
  (or ``high_order_degradation: false`` for paired data), and its synthesis settings must fit the
  batch and the blur kernels (:func:`check_synthesis_options`).

:data:`COUNTERPARTS` maps BasicSR's model types to their distillation model types.
"""
import math

from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.models.realesrnet_model import RealESRNetModel
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils.registry import DATASET_REGISTRY

from mixprior_plugin import options_schema
from mixprior_plugin.utils.options import OptionError
from mixprior_plugin.utils.registry import is_model_type, registry_lookup

# BasicSR model type -> (Logits-KD / feature-KD model type, MiPKD model type)
COUNTERPARTS = {
    'SRModel': ('KDModel', 'MiPKDModel'),
    'SwinIRModel': ('KDModel', 'MiPKDModel'),
    'RealESRNetModel': ('RealESRNetKDModel', 'RealESRNetMiPKDModel'),
    'RealESRGANModel': ('RealESRGANKDModel', 'RealESRGANMiPKDModel'),
    'ESRGANModel': ('ESRGANKDModel', 'ESRGANMiPKDModel'),
}
# What a synthesising base becomes with a GAN, and a non-synthesising one with synthesis
WITH_GAN = {'SRModel': 'ESRGANModel', 'SwinIRModel': 'ESRGANModel', 'RealESRNetModel': 'RealESRGANModel'}
WITH_SYNTHESIS = {'SRModel': 'RealESRNetModel', 'SwinIRModel': 'RealESRNetModel', 'ESRGANModel': 'RealESRGANModel'}
TEACHER_KEYS = ('network_t', 'path.pretrain_network_t', 'train.kd_opt', 'train.feat_opt', 'distill', 'mixer')
MIPKD_KEYS = ('mixer', 'train.fpm_opt', 'train.bpm_opt', 'train.ae_opt')
GAN_KEYS = ('network_d', 'path.pretrain_network_d', 'train.optim_d', 'train.gan_opt', 'train.perceptual_opt',
            'train.ldl_opt', 'train.net_d_iters', 'train.net_d_init_iters')
SYNTHESIS_DATASETS = ('RealESRGANDataset', )
# The smallest image BasicSR's 21x21 blur kernels can reflect-pad (filter2D pads by 10 per side).
MIN_BLUR_SIZE = 11


def present(opt, keys):
    """The dotted ``keys`` that are set (not ``~``) in ``opt``, in the given order."""
    found = []
    for key in keys:
        node = opt
        for part in key.split('.'):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            found.append(key)
    return found


def basicsr_base(model_cls):
    """The BasicSR model type ``model_cls`` is or extends, when it has a counterpart (a key of COUNTERPARTS), or None.

    The nearest BasicSR class counts: EDVRModel (an SRModel subclass) has none.
    """
    for cls in model_cls.__mro__:
        if cls.__module__.startswith('basicsr.'):
            return cls.__name__ if cls.__name__ in COUNTERPARTS else None
    return None


def counterpart(base, mipkd):
    """The distillation model type for a BasicSR base ('KDModel'-like or 'MiPKDModel'-like), or None."""
    pair = COUNTERPARTS.get(base)
    return pair[1 if mipkd else 0] if pair else None


def _listed(keys):
    return ', '.join(keys) + (' is' if len(keys) == 1 else ' are')


def _train_dataset_class(opt):
    train = (opt.get('datasets') or {}).get('train')
    if not isinstance(train, dict):
        return None
    found = registry_lookup(DATASET_REGISTRY, train.get('type'))
    return found.__name__ if found is not None else None


def check_model_type(opt, model_cls):
    """Refuse keys and data sets that ``model_cls`` would never use (see the module docstring).

    Args:
        opt (dict): Options (teacher aliases already normalised).
        model_cls (type | None): The class ``model_type`` names (None: nothing to check).

    Raises:
        OptionError: One line naming the keys, the model type and the model type to use.
    """
    if not isinstance(model_cls, type):
        return
    name = model_cls.__name__
    base = basicsr_base(model_cls)
    distils = is_model_type(model_cls, 'KDModel')
    mipkd = is_model_type(model_cls, 'MiPKDModel') if distils else bool(present(opt, MIPKD_KEYS))
    if not distils:
        teacher = present(opt, TEACHER_KEYS)
        if teacher:
            target = counterpart(base, mipkd)
            fix = (f'use model_type: {target}' if target else
                   f'{name} has no distillation counterpart (there are for {", ".join(COUNTERPARTS)}): remove them')
            raise OptionError(f'{_listed(teacher)} set, but model_type={name} never reads a teacher (none would be '
                              f'built and the run would train without one): {fix}')
    else:
        readable = {f'train.{k}' for k in model_cls.TRAIN_KEYS}
        if issubclass(model_cls, SRGANModel):
            readable |= {'network_d', 'path.pretrain_network_d'}
        unread = [k for k in present(opt, GAN_KEYS) if k not in readable]
        if unread:
            gan_base = WITH_GAN.get(base, base)
            if 'train.ldl_opt' in unread:
                gan_base = 'RealESRGANModel'
            why = ('it trains no discriminator and no perceptual loss' if not issubclass(model_cls, SRGANModel)
                   else f'BasicSR\'s {base} does not read them')
            raise OptionError(f'{_listed(unread)} not used by {name} ({why}): use model_type: '
                              f'{counterpart(gan_base, mipkd)}, or remove them')
    synthesises = issubclass(model_cls, synthesis_bases())
    dataset = _train_dataset_class(opt)
    if dataset in SYNTHESIS_DATASETS and not synthesises:
        target = WITH_SYNTHESIS.get(base)
        target = counterpart(target, mipkd) if distils else target
        raise OptionError(f'datasets.train.type={dataset} gives HR images only (the LR of each batch is synthesised by '
                          f'the model), but model_type={name} does not synthesise it'
                          + (f': use model_type: {target}' if target else ''))
    if synthesises and options_schema.value(opt, options_schema.TOP, 'high_order_degradation'):
        if dataset is not None and dataset not in SYNTHESIS_DATASETS:
            raise OptionError(f'model_type={name} synthesises the LR from RealESRGANDataset\'s HR images and blur '
                              f'kernels, but datasets.train.type={dataset}: use RealESRGANDataset, or set '
                              'high_order_degradation: false to train on its pairs')
        check_synthesis_options(opt)


def synthesis_bases():
    """BasicSR's real-world model classes: they synthesise each batch's LR from its HR images.

    ``models.synthesis.SynthesisOnDevice`` replaces their ``__init__`` to run that synthesis on any device.
    """
    return RealESRNetModel, RealESRGANModel


def check_synthesis_options(opt):
    """Check ``synth_crop_size`` and ``queue_size`` against the batch and the degradation settings.

    Args:
        opt (dict): Options of a real-world model (top-level ``gt_size``, ``queue_size``,
            ``resize_range``, ``scale``; ``datasets.train.batch_size_per_gpu``).

    Raises:
        OptionError: Naming the key, its value and the limit.
    """
    if not options_schema.value(opt, options_schema.TOP, 'high_order_degradation'):
        return
    batch = ((opt.get('datasets') or {}).get('train') or {}).get('batch_size_per_gpu')
    queue = options_schema.value(opt, options_schema.TOP, 'queue_size')
    if isinstance(batch, int) and batch > 0 and isinstance(queue, int) and queue % batch:
        raise OptionError(f'Option queue_size={queue} is not a multiple of datasets.train.batch_size_per_gpu={batch}: '
                          'the training pair pool swaps whole batches')
    size = options_schema.value(opt, options_schema.TOP, 'synth_crop_size')  # a positive integer or ~ (schema)
    if size is None:
        return
    gt_size, scale = opt.get('gt_size'), opt.get('scale') or 1
    shrink = min((opt.get('resize_range') or [1])[0], 1)
    limits = {'gt_size': gt_size or 0, f'resize_range[0]={shrink}': math.ceil(MIN_BLUR_SIZE / shrink),
              f'scale={scale}': MIN_BLUR_SIZE * scale}
    key, low = max(limits.items(), key=lambda kv: kv[1])
    if size < low:
        raise OptionError(f'Option synth_crop_size={size} is too small: it must be >= {low} (set by {key}: the crop '
                          'must hold gt_size, and the images the 21x21 blur kernels see after the resizes must be '
                          f'at least {MIN_BLUR_SIZE} pixels)')
