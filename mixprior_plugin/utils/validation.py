"""Checks of a whole option file before anything is built, and of data samples as they load.

BasicSR fails late and obscurely on many option mistakes (``int('abc')`` at iteration 0, a
ZeroDivisionError for an empty data folder, a tensor-size mismatch for a wrong scale). These
checks run in the entry points right after parsing, and each error names the offending key, file
or shape. Model-specific keys (teacher, distill, mixer) are checked by the model classes.
"""
import functools
import os

from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from mixprior_plugin.utils.image_io import ImageReadError, is_image_file, read_image
from mixprior_plugin.utils.options import OptionError


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
    if not isinstance(type_name, str) or type_name not in registry:
        raise OptionError(f'Option {key}={type_name!r} is not a registered {kind} '
                          f'(import mixprior_plugin registers the plugin\'s; BasicSR has {len(list(registry))})')


def _check_folder(folder, key, backend):
    if not isinstance(folder, str):
        raise OptionError(f'Option {key} must be a folder path, got {folder!r}')
    if not os.path.isdir(folder):
        raise OptionError(f'Option {key}: folder not found: {folder}')
    if backend == 'disk' and not any(is_image_file(f) for f in os.listdir(folder)):
        raise OptionError(f'Option {key}: no image files in {folder} (empty data set)')


def validate_datasets(opt):
    datasets = opt.get('datasets')
    if not isinstance(datasets, dict) or not datasets:
        raise OptionError('Option datasets must be a mapping of phases (train, val, test_1, ...)')
    for phase, ds in datasets.items():
        prefix = f'datasets.{phase}.'
        if not isinstance(ds, dict):
            raise OptionError(f'Option datasets.{phase} must be a mapping')
        _registered(DATASET_REGISTRY, 'dataset', ds.get('type'), prefix + 'type')
        backend = (ds.get('io_backend') or {}).get('type', 'disk')
        for key in ('dataroot_gt', 'dataroot_lq'):
            if key in ds:
                _check_folder(os.path.expanduser(ds[key]) if isinstance(ds[key], str) else ds[key], prefix + key,
                              backend)
        if ds.get('meta_info_file') and not os.path.isfile(ds['meta_info_file']):
            raise OptionError(f'Option {prefix}meta_info_file: file not found: {ds["meta_info_file"]}')
        if phase == 'train':
            for key in ('batch_size_per_gpu', 'gt_size'):
                _require(ds, key, _positive_int, 'a positive integer', prefix)
            _require(ds, 'num_worker_per_gpu', _non_negative_int, 'an integer >= 0', prefix)
            _require(ds, 'dataset_enlarge_ratio', lambda v: _is_number(v) and v > 0, 'a positive number', prefix)
            scale = opt.get('scale')
            if _positive_int(scale) and _positive_int(ds.get('gt_size')) and ds['gt_size'] % scale:
                raise OptionError(f'Option {prefix}gt_size={ds["gt_size"]} is not a multiple of scale={scale}')


def validate_options(opt):
    """Validate BasicSR's own option sections; raise OptionError naming the first bad key.

    Args:
        opt (dict): Parsed options (after ``parse_options``).
    """
    _require(opt, 'name', lambda v: isinstance(v, str) and v, 'a non-empty string')
    if 'model_type' in opt:
        _registered(MODEL_REGISTRY, 'model', opt['model_type'], 'model_type')
    _require(opt, 'scale', _positive_int, 'a positive integer')
    _require(opt, 'num_gpu', lambda v: v == 'auto' or _non_negative_int(v), "an integer >= 0 or 'auto'")
    _require(opt, 'manual_seed', lambda v: isinstance(v, int) and not isinstance(v, bool), 'an integer')
    for key, net in opt.items():
        if key.startswith('network_'):
            if not isinstance(net, dict):
                raise OptionError(f'Option {key} must be a mapping with a type')
            _registered(ARCH_REGISTRY, 'arch', net.get('type'), f'{key}.type')
            if 'upscale' in net and opt.get('scale') is not None and net['upscale'] != opt['scale']:
                raise OptionError(f'Option {key}.upscale={net["upscale"]} differs from scale={opt["scale"]}')
    validate_datasets(opt)
    for key, value in (opt.get('path') or {}).items():
        if value is None:
            continue
        # testing builds network_g only: a teacher's weights may be absent there
        if key.startswith('pretrain_network') and (opt.get('is_train') or key == 'pretrain_network_g') or \
                key == 'resume_state':
            if not isinstance(value, str) or not os.path.isfile(value):
                raise OptionError(f'Option path.{key}: file not found: {value}')
    train = opt.get('train')
    if opt.get('is_train') and isinstance(train, dict):
        _require(train, 'total_iter', lambda v: _is_number(v) and v > 0, 'a positive number', 'train.')
        _require(train, 'ema_decay', lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)', 'train.')
        for key, value in train.items():
            if key.startswith('optim_') or key == 'scheduler':
                if not isinstance(value, dict) or 'type' not in value:
                    raise OptionError(f'Option train.{key} must be a mapping with a type')
                _require(value, 'lr', lambda v: _is_number(v) and v > 0, 'a positive number', f'train.{key}.')
            elif key.endswith('_opt') and value is not None:
                for i, term in enumerate(value if isinstance(value, list) else [value]):
                    where = f'train.{key}' + (f'[{i}]' if isinstance(value, list) else '')
                    if not isinstance(term, dict):
                        raise OptionError(f'Option {where} must be a loss mapping with a type')
                    _registered(LOSS_REGISTRY, 'loss', term.get('type'), f'{where}.type')
                    _require(term, 'loss_weight', _is_number, 'a number', f'{where}.')
    for name, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
        if not isinstance(metric, dict):
            raise OptionError(f'Option val.metrics.{name} must be a mapping with a type')
        _registered(METRIC_REGISTRY, 'metric', metric.get('type'), f'val.metrics.{name}.type')
    for section, keys in (('val', ('val_freq', )), ('logger', ('print_freq', 'save_checkpoint_freq'))):
        for key in keys:
            _require(opt.get(section) or {}, key, lambda v: _is_number(v) and v > 0, 'a positive number',
                     f'{section}.')
    # the model's own checks (teacher, distill, mixer, train keys), before any folder is created
    model_cls = MODEL_REGISTRY.get(opt['model_type']) if 'model_type' in opt else None
    if opt.get('is_train') and hasattr(model_cls, 'check_options'):
        model_cls.check_options(opt)
    return opt


def _size_mismatch(paths, gt_hw, lq_hw, scale):
    return ValueError(f'LR/HR size mismatch at scale {scale}: HR {paths["gt_path"]} is {tuple(gt_hw)}, LR '
                      f'{paths["lq_path"]} is {tuple(lq_hw)} (HR must be LR x {scale}; validation crops HR '
                      'down to that)')


def checked_getitem(getitem):
    """Wrap ``PairedImageDataset.__getitem__``: errors name the files; LR/HR sizes must agree."""

    @functools.wraps(getitem)
    def __getitem__(self, index):
        paths = self.paths[index]
        try:
            data = getitem(self, index)
        except Exception as err:
            scale = self.opt['scale']
            if all(os.path.isfile(paths[k]) for k in ('gt_path', 'lq_path')):  # disk backend (lmdb: keys)
                try:
                    gt_img, lq_img = read_image(paths['gt_path'])[0], read_image(paths['lq_path'])[0]
                except ImageReadError as read_err:
                    raise ImageReadError(f'{read_err} (pair {paths["gt_path"]} / {paths["lq_path"]})') from err
                if gt_img.shape[:2] != (lq_img.shape[0] * scale, lq_img.shape[1] * scale):
                    raise _size_mismatch(paths, gt_img.shape[:2], lq_img.shape[:2], scale) from err
            raise RuntimeError(f'Cannot load the pair {paths["gt_path"]} / {paths["lq_path"]}: '
                               f'{err.__class__.__name__}: {err}') from err
        scale = self.opt['scale']
        gt, lq = tuple(data['gt'].shape[-2:]), tuple(data['lq'].shape[-2:])
        if gt != (lq[0] * scale, lq[1] * scale):
            raise _size_mismatch(paths, gt, lq, scale)
        return data

    return __getitem__
