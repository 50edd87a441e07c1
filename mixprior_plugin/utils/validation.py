"""Checks of a whole option file before anything is built, and of data samples as they load.

BasicSR fails late and obscurely on many option mistakes (``int('abc')`` at iteration 0, a
ZeroDivisionError for an empty data folder, a tensor-size mismatch for a wrong scale). These
checks run in the entry points right after parsing, and each error names the offending key, file
or shape. They agree with BasicSR on everything BasicSR accepts: names are looked up in the
registries as ``Registry.get`` does (with its ``_basicsr`` suffix fallback), and data folders are
checked only for what the named dataset type reads; where a check cannot know (an unknown dataset
type, a custom backend) it stays silent.

Two stages, both run by the entry points before any folder is created:

* :func:`validate_options`: the option values themselves (types, ranges, registered names, files).
* :func:`validate_files`: the files they name: weights, training state, and the data folders of
  every dataset phase (layout, stray files, LR/HR sizes against the scale, the training crop
  against the smallest image).
"""
import difflib
import functools
import os
import warnings

from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from mixprior_plugin.utils.checkpoint import missing_key_error
from mixprior_plugin.utils.image_io import ImageReadError, read_image
from mixprior_plugin.utils.model_types import check_model_type
from mixprior_plugin.utils.options import OptionError
from mixprior_plugin.utils.registry import is_model_type, registry_lookup

# Extensions OpenCV decodes (BasicSR reads every file of a folder with cv2.imdecode).
DECODABLE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.jpe', '.bmp', '.dib', '.tif', '.tiff', '.webp', '.jp2', '.ppm',
                        '.pgm', '.pbm', '.pnm', '.pxm', '.pfm', '.sr', '.ras', '.exr', '.hdr', '.pic', '.avif')
# Top-level sections whose near-misses (``distil:``, ``vall:``) are typos, not new options.
KNOWN_SECTIONS = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'path', 'train', 'val',
                  'logger', 'dist_params', 'distill', 'mixer')
# Plugin keys of ``path`` (BasicSR's own are pretrain_network_*, param_key_*, strict_load_*, ...).
PLUGIN_PATH_KEYS = ('pretrain_network_t', 'teacher_param_key', 'strict_load_t')
# Dataset types by the layout they read (BasicSR's own; others are left unchecked).
PAIRED_TYPES = {'PairedImageDataset': 'meta_info_file', 'RealESRGANPairedDataset': 'meta_info'}
SINGLE_TYPES = {'SingleImageDataset': ('dataroot_lq', 'meta_info_file'), 'FFHQDataset': ('dataroot_gt', None),
                'RealESRGANDataset': ('dataroot_gt', 'meta_info')}
VIDEO_TYPES = {  # type: meta_info_file required
    'REDSDataset': True, 'REDSRecurrentDataset': True, 'Vimeo90KDataset': True, 'Vimeo90KRecurrentDataset': True,
    'VideoTestVimeo90KDataset': True, 'VideoTestDataset': False, 'VideoTestDUFDataset': False,
    'VideoRecurrentTestDataset': False
}
MAX_LISTED = 5  # files named in one message
# Arch arguments that are widths, counts or sizes in BasicSR's archs: 0 (or less) builds a network
# that fails only at its first forward, deep inside a convolution.
POSITIVE_ARCH_KEYS = ('num_in_ch', 'num_out_ch', 'num_feat', 'num_grow_ch', 'in_chans', 'embed_dim', 'num_heads',
                      'upscale', 'window_size', 'img_size', 'patch_size', 'squeeze_factor')
# What the training dataset types of BasicSR yield, when not both LR and HR.
LR_ONLY_DATASETS = ('SingleImageDataset', )
HR_ONLY_DATASETS = ('FFHQDataset', 'RealESRGANDataset')


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


def _listing(items, total=None):
    items = list(items)
    total = len(items) if total is None else total
    shown = ', '.join(str(i) for i in items[:MAX_LISTED])
    return shown + (f' ... ({total} in all)' if total > MAX_LISTED else '')


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


def _check_loss_terms(train, model_cls):
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


def _check_mixer(opt):
    """Ranges of MiPKD's numeric mixer options (the model checks their types and choices)."""
    mixer = opt.get('mixer')
    if not isinstance(mixer, dict):
        return
    if mixer.get('latent_channels') is not None:
        _require(mixer, 'latent_channels', _positive_int, 'a positive integer (or ~ for the student width)',
                 'mixer.')
    mask = mixer.get('mask')
    if isinstance(mask, dict):
        _require(mask, 'grid_size', _positive_int, 'a positive integer (the cell size in pixels)', 'mixer.mask.')
    _require(mixer, 'ae_warmup_iters', _non_negative_int, 'an integer >= 0', 'mixer.')


def _check_param_key(opt, key_option, weights_option):
    """An explicit ``path.<key_option>`` must exist in ``path.<weights_option>`` (no silent fallback to 'params')."""
    path = opt.get('path') or {}
    key, weights = path.get(key_option), path.get(weights_option)
    if key is None or not isinstance(weights, str) or not os.path.isfile(os.path.expanduser(weights)):
        return
    if not isinstance(key, str):
        raise OptionError(f'Option path.{key_option} must be a string, got {key!r}')
    if weights.endswith('.safetensors'):  # one state dict, no keys to choose from
        return
    import torch
    try:  # memory-mapped: reads the keys, not the weights
        ckpt = torch.load(os.path.expanduser(weights), map_location='cpu', weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (the loader reports unreadable files with the file name)
        return
    if isinstance(ckpt, dict) and key not in ckpt and not any(hasattr(v, 'shape') for v in ckpt.values()):
        raise missing_key_error(f'path.{key_option}', key, weights, ckpt)


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
    if _is_kd_model(model_cls) and not opt.get('dist') and _positive_int(opt.get('num_gpu')) and opt['num_gpu'] > 1:
        raise OptionError(f'num_gpu={opt["num_gpu"]} without a launcher would train {opt["model_type"]} on one GPU: '
                          f'start it with torchrun --nproc_per_node={opt["num_gpu"]} -m mixprior_plugin.train '
                          '-opt ... --launcher pytorch, or set num_gpu: 1')
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
            if 'upscale' in net and opt.get('scale') is not None and net['upscale'] != opt['scale']:
                raise OptionError(f'Option {key}.upscale={net["upscale"]} differs from scale={opt["scale"]}')
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
        _check_loss_terms(train, model_cls)
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
        _check_mixer(opt)
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
    return issubclass(model_cls, (RealESRNetModel, RealESRGANModel)) and opt.get('high_order_degradation', True)


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


# ---- data folders ---------------------------------------------------------------------------------
def _scandir_files(folder):
    """File names BasicSR's ``scandir`` yields (not recursive, hidden files skipped)."""
    return sorted(e.name for e in os.scandir(folder) if not e.name.startswith('.') and e.is_file())


def _require_folder(ds, key, prefix):
    folder = ds.get(key)
    if not isinstance(folder, str):
        raise OptionError(f'Option {prefix}{key} is required by datasets type {ds.get("type")}')
    if not os.path.isdir(folder):
        raise OptionError(f'Option {prefix}{key}: folder not found: {folder}')
    return folder


def _require_meta_file(ds, key, prefix, required):
    value = ds.get(key)
    if value is None:
        if required:
            raise OptionError(f'Option {prefix}{key} is required by datasets type {ds.get("type")}')
        return None
    if not os.path.isfile(value):
        raise OptionError(f'Option {prefix}{key}: file not found: {value}')
    with open(value, encoding='utf-8') as f:
        return [line.strip().split(' ')[0] for line in f if line.strip()]


def _check_lmdb(ds, key, prefix, needs_meta):
    folder = _require_folder(ds, key, prefix)
    if not folder.rstrip('/').endswith('.lmdb'):
        raise OptionError(f'Option {prefix}{key}={folder}: an lmdb backend needs a folder named *.lmdb')
    for name in ('data.mdb', ) + (('meta_info.txt', ) if needs_meta else ()):
        if not os.path.isfile(os.path.join(folder, name)):
            raise OptionError(f'Option {prefix}{key}: {name} not found in {folder} (not an lmdb made by BasicSR\'s '
                              'create_lmdb / make_lmdb_from_imgs?)')


def _check_image_folder(folder, key, prefix):
    """Every file BasicSR would read from ``folder`` is an image; returns the file names."""
    names = _scandir_files(folder)
    stray = [n for n in names if not n.lower().endswith(DECODABLE_EXTENSIONS)]
    if stray:
        raise OptionError(f'Option {prefix}{key}: {len(stray)} file(s) in {folder} are not images, but BasicSR '
                          f'reads every file of the folder: {_listing(stray)}. Move them out')
    if not names:
        raise OptionError(f'Option {prefix}{key}: no image files in {folder} (empty data set)')
    return names


def _image_size(path):
    """(H, W) from the file header (PIL), or None when PIL cannot tell; ImageReadError when it is no image."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        if not path.lower().endswith(('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')):
            return None  # a format PIL does not read: BasicSR decodes it with OpenCV, leave it to that
        raise ImageReadError(f'Cannot decode image file {path}: {err}') from err


def _check_pair_sizes(pairs, ds, prefix, scale):
    """LR/HR sizes of every pair against the scale; the training crop against the smallest image."""
    train = ds.get('phase') == 'train'
    gt_size = ds.get('gt_size') if train else None
    bad_scale, too_small = [], []
    for lq_path, gt_path in pairs:
        gt_hw, lq_hw = _image_size(gt_path), _image_size(lq_path)
        if gt_hw is None or lq_hw is None:
            continue
        if train:  # paired_random_crop needs HR == LR x scale exactly
            ok = gt_hw == (lq_hw[0] * scale, lq_hw[1] * scale)
        else:  # validation crops HR down to LR x scale: only the remainder may differ
            ok = (gt_hw[0] // scale, gt_hw[1] // scale) == lq_hw
        if not ok:
            bad_scale.append(f'{os.path.basename(gt_path)} {gt_hw} / {os.path.basename(lq_path)} {lq_hw}')
        elif _positive_int(gt_size) and min(gt_hw) < gt_size:
            too_small.append(f'{os.path.basename(gt_path)} {gt_hw}')
    folders = f'(HR {ds.get("dataroot_gt")}, LR {ds.get("dataroot_lq")})'
    if bad_scale:
        rule = 'HR must be LR x scale' if train else 'HR // scale must equal LR'
        raise OptionError(f'LR/HR size mismatch at scale {scale} in {prefix[:-1]} {folders}; {rule} (an LR '
                          f'folder of another scale?): HR / LR {_listing(bad_scale)}')
    if too_small:
        raise OptionError(f'Option {prefix}gt_size={gt_size} is larger than {len(too_small)} HR image(s) in '
                          f'{ds.get("dataroot_gt")}: {_listing(too_small)}. Lower gt_size or remove those images')


def _check_paired(ds, prefix, scale):
    backend = (ds.get('io_backend') or {}).get('type', 'disk')
    if backend == 'lmdb':
        for key in ('dataroot_lq', 'dataroot_gt'):
            _check_lmdb(ds, key, prefix, needs_meta=True)
        return
    lq_dir, gt_dir = _require_folder(ds, 'dataroot_lq', prefix), _require_folder(ds, 'dataroot_gt', prefix)
    if backend != 'disk':
        return
    tmpl = ds.get('filename_tmpl', '{}')
    meta_key = PAIRED_TYPES[ds['type']]
    if ds.get(meta_key) is not None:
        if ds['type'] != 'PairedImageDataset':  # RealESRGANPairedDataset's meta_info has its own format
            _require_meta_file(ds, meta_key, prefix, required=False)
            return
        gt_names = _require_meta_file(ds, meta_key, prefix, required=False)
        if not gt_names:
            raise OptionError(f'Option {prefix}{meta_key}: {ds[meta_key]} lists no files (empty data set)')
    else:
        gt_names = _check_image_folder(gt_dir, 'dataroot_gt', prefix)
        lq_names = _check_image_folder(lq_dir, 'dataroot_lq', prefix)
        expected = {f'{tmpl.format(os.path.splitext(n)[0])}{os.path.splitext(n)[1]}': n for n in gt_names}
        unmatched_lq = sorted(set(lq_names) - set(expected))
        if unmatched_lq:
            raise OptionError(f'Option {prefix}dataroot_lq: {len(unmatched_lq)} LR file(s) in {lq_dir} have no HR '
                              f'partner in {gt_dir} (filename_tmpl={tmpl!r}): {_listing(unmatched_lq)}')
    pairs, missing = [], []
    for name in gt_names:
        stem, ext = os.path.splitext(os.path.basename(name))
        lq_path, gt_path = os.path.join(lq_dir, f'{tmpl.format(stem)}{ext}'), os.path.join(gt_dir, name)
        missing.extend(p for p in (gt_path, lq_path) if not os.path.isfile(p))
        pairs.append((lq_path, gt_path))
    if missing:
        raise OptionError(f'Datasets {prefix[:-1]}: {len(missing)} file(s) of its LR/HR pairs do not exist '
                          f'(filename_tmpl={tmpl!r}): {_listing(missing)}')
    if _positive_int(scale):
        _check_pair_sizes(pairs, ds, prefix, scale)


def _check_single(ds, prefix):
    key, meta_key = SINGLE_TYPES[ds['type']]
    backend = (ds.get('io_backend') or {}).get('type', 'disk')
    if backend == 'lmdb':
        _check_lmdb(ds, key, prefix, needs_meta=True)
        return
    folder = _require_folder(ds, key, prefix)
    if backend != 'disk':
        return
    if meta_key is not None and ds.get(meta_key) is not None:
        names = _require_meta_file(ds, meta_key, prefix, required=False)
        if ds['type'] == 'SingleImageDataset':  # RealESRGANDataset's meta_info paths are relative to dataroot_gt
            missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
            if missing:
                raise OptionError(f'Option {prefix}{meta_key}: {len(missing)} listed file(s) not found in {folder}: '
                                  f'{_listing(missing)}')
    elif ds['type'] == 'RealESRGANDataset':
        raise OptionError(f'Option {prefix}meta_info is required by datasets type RealESRGANDataset (disk backend)')
    else:
        _check_image_folder(folder, key, prefix)


def _check_video(ds, prefix):
    """Clip folders (one sub-folder of frames per clip) for BasicSR's video datasets."""
    backend = (ds.get('io_backend') or {}).get('type', 'disk')
    clips = _require_meta_file(ds, 'meta_info_file', prefix, required=VIDEO_TYPES[ds['type']])
    keys = [k for k in ('dataroot_gt', 'dataroot_lq') if k in ds]
    if ds.get('dataroot_flow') is not None:
        keys.append('dataroot_flow')
    for key in keys:
        if backend == 'lmdb':
            _check_lmdb(ds, key, prefix, needs_meta=False)
            continue
        folder = _require_folder(ds, key, prefix)
        if backend != 'disk' or key == 'dataroot_flow':
            continue
        if clips is not None:
            missing = sorted({c for c in clips if not os.path.isdir(os.path.join(folder, c))})
            if missing:
                raise OptionError(f'Option {prefix}{key}: {len(missing)} clip folder(s) listed in '
                                  f'{ds["meta_info_file"]} not found in {folder}: {_listing(missing)}')
        elif not any(e.is_dir() for e in os.scandir(folder)):
            raise OptionError(f'Option {prefix}{key}: no clip folders in {folder} (video datasets read one '
                              'sub-folder of frames per clip)')


def validate_files(opt):
    """Check the files the options name: weights, training state, and every dataset phase's folders.

    Weights (``path.pretrain_network_*``; only network_g's when testing) and ``path.resume_state``
    must exist; an explicit ``path.teacher_param_key`` must be in the teacher checkpoint. Data
    folders are checked for what their dataset type reads; paired image folders (disk) are
    scanned: stray non-image files, LR files without an HR partner, every LR/HR pair's size
    against ``scale`` (training: exact; validation: up to BasicSR's crop) and the training
    ``gt_size`` against the smallest HR image. Unknown dataset types are left alone.

    Args:
        opt (dict): Parsed options.
    """
    for key, value in (opt.get('path') or {}).items():
        if value is None:
            continue
        # testing builds network_g only: a teacher's weights may be absent there
        if key.startswith('pretrain_network') and (opt.get('is_train') or key == 'pretrain_network_g') or \
                key == 'resume_state':
            if not isinstance(value, str) or not os.path.isfile(os.path.expanduser(value)):
                raise OptionError(f'Option path.{key}: file not found: {value}')
    if opt.get('is_train'):
        _check_param_key(opt, 'teacher_param_key', 'pretrain_network_t')
    else:  # a test evaluates these weights: a misspelt key must not fall back to 'params'
        _check_param_key(opt, 'param_key_g', 'pretrain_network_g')
    for phase, ds in (opt.get('datasets') or {}).items():
        prefix = f'datasets.{phase}.'
        dataset_type = ds.get('type')
        if dataset_type in PAIRED_TYPES:
            _check_paired(ds, prefix, opt.get('scale'))
        elif dataset_type in SINGLE_TYPES:
            _check_single(ds, prefix)
        elif dataset_type in VIDEO_TYPES:
            _check_video(ds, prefix)
    return opt


# ---- samples as they load -------------------------------------------------------------------------
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
