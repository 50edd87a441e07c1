"""Checks of an option file's values before anything is built: types, ranges, registered names.

BasicSR fails late and obscurely on many option mistakes (``int('abc')`` at iteration 0, a
tensor-size mismatch for a wrong scale). :func:`validate_options` runs in the entry points right
after parsing, and each error names the offending key. Names are looked up in the registries as
``Registry.get`` does (with its ``_basicsr`` suffix fallback), so everything BasicSR accepts passes.
"""
import difflib
import warnings

from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from mixprior_plugin import options_schema
from mixprior_plugin.utils.model_types import check_model_type
from mixprior_plugin.utils.options import OptionError
from mixprior_plugin.utils.registry import is_model_type, registry_lookup
from mixprior_plugin.utils.validation.dataset_types import HR_ONLY_DATASETS, LR_ONLY_DATASETS, PAIRED_TYPES

# Top-level sections whose near-misses (``distil:``, ``vall:``) are typos, not new options.
KNOWN_SECTIONS = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'path', 'train', 'val',
                  'logger', 'dist_params') + options_schema.PLUGIN_SECTIONS + tuple(
                      o.key for o in options_schema.SCHEMA[options_schema.TOP] if o.owner == options_schema.PLUGIN)
# Plugin keys of ``path`` (BasicSR's own are pretrain_network_*, param_key_*, strict_load_*, ...).
PLUGIN_PATH_KEYS = tuple(o.key for o in options_schema.SCHEMA['path'] if o.owner == options_schema.PLUGIN)
# Arch arguments that are widths, counts or sizes in BasicSR's archs: 0 (or less) builds a network
# that fails only at its first forward, deep inside a convolution.
POSITIVE_ARCH_KEYS = ('num_in_ch', 'num_out_ch', 'num_feat', 'num_grow_ch', 'in_chans', 'embed_dim', 'num_heads',
                      'upscale', 'window_size', 'img_size', 'patch_size', 'squeeze_factor')


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(opt, key, check, what, prefix=''):
    """Raise OptionError unless ``opt[key]`` passes ``check``; missing keys are left alone."""
    if key in opt and opt[key] is not None and not check(opt[key]):
        raise OptionError(f'Option {prefix}{key} must be {what}, got {opt[key]!r} ({type(opt[key]).__name__})')


def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _non_negative_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _registered(registry, kind, type_name, key):
    if registry_lookup(registry, type_name) is None:
        close = difflib.get_close_matches(str(type_name), [n for n, _ in registry], n=1)
        hint = f'; did you mean {close[0]}?' if close else ''
        raise OptionError(f'Option {key}={type_name!r} is not a registered {kind} (import mixprior_plugin '
                          f'registers the plugin\'s; BasicSR and the plugin have {len(list(registry))}){hint}')


def _is_kd_model(model_cls):
    return is_model_type(model_cls, 'KDModel')


def _check_sections(opt, model_cls):
    """Misspelt top-level sections and plugin sections the model does not read."""
    for key in opt:
        if key in KNOWN_SECTIONS or not isinstance(key, str) or key.startswith('network_'):
            continue
        close = difflib.get_close_matches(key, KNOWN_SECTIONS, n=1, cutoff=0.8)
        if close:
            raise OptionError(f'Unknown top-level option {key!r}: did you mean {close[0]!r}? (BasicSR would ignore '
                              'it silently and use the defaults)')
    plugin_sections = {s for _, cls in MODEL_REGISTRY for s in getattr(cls, 'EXTRA_SECTIONS', {})}
    read = set(getattr(model_cls, 'EXTRA_SECTIONS', {}))
    for section in sorted(plugin_sections - read):
        if opt.get(section) is not None:
            readers = sorted(n for n, cls in MODEL_REGISTRY if section in getattr(cls, 'EXTRA_SECTIONS', {}))
            raise OptionError(f'Option section {section!r} is not read by model_type={opt.get("model_type")!r} '
                              f'(only by {", ".join(readers)}): change model_type or remove the section')
    path = opt.get('path') or {}
    for key in path:
        if key in PLUGIN_PATH_KEYS or not isinstance(key, str):
            continue
        close = difflib.get_close_matches(key, PLUGIN_PATH_KEYS, n=1, cutoff=0.85)
        if close and not key.startswith(('pretrain_network_', 'param_key_', 'strict_load_')):
            raise OptionError(f'Unknown option path.{key}: did you mean path.{close[0]}?')


def check_loss_terms(train):
    """Every ``train.*_opt`` is a registered loss (or a list of them) with a usable weight and reduction.

    Args:
        train (dict): The ``train`` section.

    Raises:
        OptionError: Naming the key (``train.feat_opt[1].type``) and what is wrong.
    """
    for key, value in train.items():
        if not (isinstance(key, str) and key.endswith('_opt')) or value is None:
            continue
        for i, term in enumerate(value if isinstance(value, list) else [value]):
            where = f'train.{key}' + (f'[{i}]' if isinstance(value, list) else '')
            if not isinstance(term, dict):
                raise OptionError(f'Option {where} must be a loss mapping with a type')
            _registered(LOSS_REGISTRY, 'loss', term.get('type'), f'{where}.type')
            _require(term, 'loss_weight', lambda v: _is_number(v) and v >= 0, 'a number >= 0 (0 switches the term '
                     'off; a negative weight would maximise the loss)', f'{where}.')
            if term.get('reduction') == 'none':
                raise OptionError(f"Option {where}.reduction='none' gives a per-pixel loss map, but training needs "
                                  "one number: use 'mean' or 'sum'")


def check_scales(opt):
    """Teacher and student work at one scale, and every ``network_*.upscale`` equals ``scale``.

    Raises:
        OptionError: Naming both keys and their values.
    """
    scale_t, scale_g = (opt.get('network_t') or {}).get('upscale'), (opt.get('network_g') or {}).get('upscale')
    if scale_t is not None and scale_g is not None and scale_t != scale_g:
        raise OptionError(f'network_t.upscale={scale_t} differs from network_g.upscale={scale_g}: teacher and student '
                          'must work at the same scale')
    for key, net in opt.items():
        if isinstance(key, str) and key.startswith('network_') and isinstance(net, dict) and 'upscale' in net and \
                opt.get('scale') is not None and net['upscale'] != opt['scale']:
            raise OptionError(f'Option {key}.upscale={net["upscale"]} differs from scale={opt["scale"]}')


def check_launcher(opt, model_type):
    """A distillation model with ``num_gpu`` > 1 needs torchrun (it would train on one GPU otherwise).

    Args:
        opt (dict): Options (``num_gpu``, ``dist``).
        model_type (str): The model type, for the message.
    """
    num_gpu = opt.get('num_gpu')
    if _positive_int(num_gpu) and num_gpu > 1 and not opt.get('dist'):
        raise OptionError(f'num_gpu={num_gpu} without a launcher would train {model_type} on one GPU: start it with '
                          f'torchrun --nproc_per_node={num_gpu} -m mixprior_plugin.train -opt ... --launcher pytorch, '
                          'or set num_gpu: 1')


def validate_options(opt):
    """Validate BasicSR's own option sections and the plugin's; raise OptionError naming the first bad key.

    Args:
        opt (dict): Parsed options (after ``parse_options``).

    Returns:
        dict: The same options.
    """
    _require(opt, 'name', lambda v: isinstance(v, str) and v, 'a non-empty string')
    model_cls = None
    if 'model_type' in opt:
        _registered(MODEL_REGISTRY, 'model', opt['model_type'], 'model_type')
        model_cls = registry_lookup(MODEL_REGISTRY, opt['model_type'])
    check_model_type(opt, model_cls)  # teacher, GAN and data-set keys the model type would never use
    _check_sections(opt, model_cls)
    _require(opt, 'scale', _positive_int, 'a positive integer')
    _require(opt, 'num_gpu', lambda v: v == 'auto' or _non_negative_int(v), "an integer >= 0 or 'auto'")
    _require(opt, 'manual_seed', lambda v: isinstance(v, int) and not isinstance(v, bool), 'an integer')
    for key, net in opt.items():
        if isinstance(key, str) and key.startswith('network_'):
            if not isinstance(net, dict):
                raise OptionError(f'Option {key} must be a mapping with a type')
            _registered(ARCH_REGISTRY, 'arch', net.get('type'), f'{key}.type')
            for arg in POSITIVE_ARCH_KEYS:
                values = net.get(arg) if isinstance(net.get(arg), (list, tuple)) else [net.get(arg)]
                if any(v is not None and not _positive_int(v) for v in values):
                    raise OptionError(f'Option {key}.{arg} must be a positive integer (or a list of them), got '
                                      f'{net[arg]!r}: the network would fail at its first forward')
    check_scales(opt)
    validate_dataset_options(opt)
    if opt.get('is_train'):
        _check_training_data_fits_model(opt, model_cls)
    train = opt.get('train')
    if opt.get('is_train') and isinstance(train, dict):
        _require(train, 'total_iter', lambda v: _is_number(v) and v > 0, 'a positive number', 'train.')
        _require(train, 'ema_decay', lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)', 'train.')
        for key, value in train.items():
            if isinstance(key, str) and (key.startswith('optim_') or key == 'scheduler'):
                if not isinstance(value, dict) or 'type' not in value:
                    raise OptionError(f'Option train.{key} must be a mapping with a type')
                _require(value, 'lr', lambda v: _is_number(v) and v > 0, 'a positive number', f'train.{key}.')
        check_loss_terms(train)
    for name, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
        if not isinstance(metric, dict):
            raise OptionError(f'Option val.metrics.{name} must be a mapping with a type')
        _registered(METRIC_REGISTRY, 'metric', metric.get('type'), f'val.metrics.{name}.type')
    for section, keys in (('val', ('val_freq', )), ('logger', ('print_freq', 'save_checkpoint_freq'))):
        for key in keys:
            _require(opt.get(section) or {}, key, lambda v: _is_number(v) and v > 0, 'a positive number',
                     f'{section}.')
    if not opt.get('is_train'):
        _check_test_weights(opt, model_cls)
    # the model's own checks (teacher, distill, mixer, train keys), before any folder is created
    if opt.get('is_train') and hasattr(model_cls, 'check_options'):
        model_cls.check_options(opt, check_files=False)
    return opt


def synthesises_lr(model_cls, opt):
    """Whether a model makes its LR inputs from HR images itself (BasicSR's Real-ESRNet/Real-ESRGAN models).

    A model class may say so with a ``SYNTHESISES_LQ`` attribute.
    """
    declared = getattr(model_cls, 'SYNTHESISES_LQ', None)
    if declared is not None:
        return bool(declared)
    from basicsr.models.realesrgan_model import RealESRGANModel
    from basicsr.models.realesrnet_model import RealESRNetModel
    return issubclass(model_cls, (RealESRNetModel, RealESRGANModel)) and \
        options_schema.value(opt, options_schema.TOP, 'high_order_degradation')


def _check_training_data_fits_model(opt, model_cls):
    """An SR model trains on LR/HR pairs: a training set of LR or HR images alone fails at its first step."""
    from basicsr.models.sr_model import SRModel
    train = (opt.get('datasets') or {}).get('train')
    if not (isinstance(model_cls, type) and issubclass(model_cls, SRModel) and isinstance(train, dict)):
        return
    dataset_type = train.get('type')
    if dataset_type in LR_ONLY_DATASETS:
        raise OptionError(f'Option datasets.train.type={dataset_type} gives LR images only, but '
                          f'model_type={opt.get("model_type")} trains on LR/HR pairs: use PairedImageDataset '
                          '(dataroot_gt and dataroot_lq)')
    if dataset_type in HR_ONLY_DATASETS and not synthesises_lr(model_cls, opt):
        raise OptionError(f'Option datasets.train.type={dataset_type} gives HR images only (Real-ESRGAN\'s models '
                          f'synthesise the LR), but model_type={opt.get("model_type")} reads LR/HR pairs: use '
                          'PairedImageDataset (dataroot_gt and dataroot_lq)')


def _check_test_weights(opt, model_cls):
    """Testing evaluates trained weights: a KD student needs them (BasicSR models get a warning)."""
    if (opt.get('path') or {}).get('pretrain_network_g'):
        return
    msg = ('path.pretrain_network_g is not set: the test would evaluate a randomly initialised network_g. '
           'Set it to the trained weights (e.g. experiments/<name>/models/net_g_latest.pth)')
    if _is_kd_model(model_cls):
        raise OptionError(msg)
    warnings.warn(msg)


def validate_dataset_options(opt):
    """Types and values of the dataset options (the folders are checked by :func:`validate_files`)."""
    datasets = opt.get('datasets')
    if not isinstance(datasets, dict) or not datasets:
        raise OptionError('Option datasets must be a mapping of phases (train, val, test_1, ...)')
    for phase, ds in datasets.items():
        prefix = f'datasets.{phase}.'
        if not isinstance(ds, dict):
            raise OptionError(f'Option datasets.{phase} must be a mapping')
        _registered(DATASET_REGISTRY, 'dataset', ds.get('type'), prefix + 'type')
        for key in ('dataroot_gt', 'dataroot_lq', 'dataroot_flow', 'meta_info_file', 'meta_info'):
            _require(ds, key, lambda v: isinstance(v, str), 'a path', prefix)
        if phase == 'train':
            for key in ('batch_size_per_gpu', 'gt_size'):
                _require(ds, key, _positive_int, 'a positive integer', prefix)
            _require(ds, 'num_worker_per_gpu', _non_negative_int, 'an integer >= 0', prefix)
            _require(ds, 'dataset_enlarge_ratio', lambda v: _is_number(v) and v > 0, 'a positive number', prefix)
            scale = opt.get('scale')
            if ds.get('type') in PAIRED_TYPES and _positive_int(scale) and _positive_int(ds.get('gt_size')) and \
                    ds['gt_size'] % scale:
                raise OptionError(f'Option {prefix}gt_size={ds["gt_size"]} is not a multiple of scale={scale}')
