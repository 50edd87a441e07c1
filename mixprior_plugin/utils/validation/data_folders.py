"""Checks of the files an option file names: weights, training state and the data folders of every phase.

:func:`validate_files` runs in the entry points after :func:`~.option_values.validate_options`,
before any folder is created. Data folders are checked only for what the named dataset type reads;
where a check cannot know (an unknown dataset type, a custom backend) it stays silent.
"""
import os

from mixprior_plugin.utils.checkpoint import missing_key_error
from mixprior_plugin.utils.image_io import ImageReadError
from mixprior_plugin.utils.options import OptionError
from mixprior_plugin.utils.validation.dataset_types import PAIRED_TYPES, SINGLE_TYPES, VIDEO_TYPES
from mixprior_plugin.utils.validation.option_values import _positive_int

# Extensions OpenCV decodes (BasicSR reads every file of a folder with cv2.imdecode).
DECODABLE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.jpe', '.bmp', '.dib', '.tif', '.tiff', '.webp', '.jp2', '.ppm',
                        '.pgm', '.pbm', '.pnm', '.pxm', '.pfm', '.sr', '.ras', '.exr', '.hdr', '.pic', '.avif')
MAX_LISTED = 5  # files named in one message


def _listing(items, total=None):
    items = list(items)
    total = len(items) if total is None else total
    shown = ', '.join(str(i) for i in items[:MAX_LISTED])
    return shown + (f' ... ({total} in all)' if total > MAX_LISTED else '')


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
