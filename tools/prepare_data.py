"""Write BasicSR's paired HR/LR layout for one scale from a folder of HR images.

Reads PNG, JPEG, BMP (and TIFF/WebP) HR images and writes::

    OUT/HR/<name>.png                      HR cropped top-left to a multiple of the scale
    OUT/LR_bicubic/X<s>/<name>x<s>.png     LR (``--lr-names plain``: <name>.png)
    OUT/meta_info.txt                      '<name>.png (h,w,3) 1' per HR image
    OUT/HR.lmdb, OUT/LR_bicubic_X<s>.lmdb  with --lmdb (BasicSR's make_lmdb_from_imgs, meta_info.txt
                                           inside; LR keys = HR keys, as BasicSR's lmdb pairing needs)
    OUT/dataset_options.yml                BasicSR `datasets:` entries that read what was written

With ``--val-count`` / ``--val-ratio`` the same layout is written under OUT/train and OUT/val
(split by source image, deterministic for a given ``--seed``, sorted names).

Conventions:

* LR images are MATLAB-style bicubic downscales of the cropped HR
  (``basicsr.utils.matlab_functions.imresize``, rounded to uint8), i.e. the benchmark LR.
  With ``--lr-dir`` (e.g. ``Set14/LR_bicubic/X4``) an official LR file ``<name>x<s>.*`` or
  ``<name>.*`` is used instead when present (its size must be floor(HR/s)); missing ones are made.
* LR names: ``<name>x<s>.png`` by default (BasicSR ``filename_tmpl: '{}x<s>'``, the EDSR/DIV2K
  convention); ``--lr-names plain`` writes ``<name>.png`` (``filename_tmpl: '{}'``).
* Grayscale inputs (Set14's bridge) are written as 3-channel images (the gray value replicated):
  BasicSR reads every image as 3-channel BGR anyway and SR networks take 3 channels. An alpha
  channel is dropped. 16-bit images are refused.
* Sub-images (``--crop-size``, training split only) follow BasicSR's scripts/extract_subimages.py:
  windows every ``--step`` pixels, plus a last window flush with the border when more than
  ``--thresh-size`` pixels would be left out; names ``<name>_s001.png``. LR sub-images are the
  aligned crops of the whole LR image. Images smaller than the crop size are skipped with a
  warning (``--small keep`` writes them whole instead; they must still be at least as large as
  the training ``gt_size``). Validation images are always written whole, as BasicSR validates.
* A file that cannot be decoded stops the run with an error naming it.

Examples::

    # training set: 96x96 HR sub-images (x4), 5 validation images, lmdb as well
    python tools/prepare_data.py --hr-dir /data/T91/HR -o datasets/T91_x4 --scale 4 \\
        --crop-size 96 --step 48 --val-count 5 --lmdb
    # test set with its official LR files (grayscale bridge.png becomes 3-channel)
    python tools/prepare_data.py --hr-dir /data/Set14/HR \\
        --lr-dir /data/Set14/LR_bicubic/X4 -o datasets/Set14_x4 --scale 4
    # JPEG training set, whole images, LR named like the HR
    python tools/prepare_data.py --hr-dir /data/BSD200/HR -o datasets/BSD200_x2 \\
        --scale 2 --lr-names plain
"""
import argparse
import os
import random
import shutil
import sys
from collections import OrderedDict


def subimage_positions(length, crop_size, step, thresh_size):
    """Top-left offsets along one axis, exactly as BasicSR's extract_subimages.py computes them."""
    import numpy as np
    space = np.arange(0, length - crop_size + 1, step)
    if length - (space[-1] + crop_size) > thresh_size:
        space = np.append(space, length - crop_size)
    return [int(v) for v in space]


def split_names(names, val_count=None, val_ratio=None, seed=0):
    """Deterministic train/val split of sorted names: (train, val), both sorted."""
    names = sorted(names)
    if val_count is None and val_ratio is None:
        return names, []
    k = val_count if val_count is not None else int(round(len(names) * val_ratio))
    if not 0 < k < len(names):
        raise ValueError(f'The validation split must leave at least one image on each side: asked for {k} of '
                         f'{len(names)} images')
    val = set(random.Random(seed).sample(names, k))
    return [n for n in names if n not in val], [n for n in names if n in val]


OUTPUTS = ('HR', 'LR_bicubic', 'meta_info.txt', 'dataset_options.yml', 'train', 'val')


def prepare(hr_dir, out, scale, lr_dir=None, lr_names='suffix', crop_size=None, step=None, thresh_size=0,
            small='skip', make_lmdb=False, val_count=None, val_ratio=None, seed=0, limit=None, overwrite=False,
            log=print):
    """Write the paired layout; returns a summary dict (counts, skipped and gray names, folders)."""
    from tqdm import tqdm

    from mixprior_plugin.utils import image_io
    if scale < 2:
        raise ValueError(f'--scale must be at least 2, got {scale}')
    if crop_size is None and step is not None:
        raise ValueError('--step needs --crop-size')
    if crop_size is not None:
        step = step or crop_size // 2
        for key, value in (('--crop-size', crop_size), ('--step', step)):
            if value <= 0 or value % scale:
                raise ValueError(f'{key}={value} must be a positive multiple of the scale {scale} '
                                 '(LR sub-images must align with HR ones)')
    if lr_dir is not None and not os.path.isdir(lr_dir):
        raise FileNotFoundError(f'LR folder not found: {lr_dir}')
    paths = image_io.list_images(hr_dir)
    by_name = OrderedDict()
    for p in paths:
        if image_io.stem(p) in by_name:
            raise ValueError(f'Two HR files have the same name: {by_name[image_io.stem(p)]} and {p}')
        by_name[image_io.stem(p)] = p
    if limit:
        by_name = OrderedDict(list(by_name.items())[:limit])
    if make_lmdb:
        bad = [p for n, p in by_name.items() if not n.isascii() or ' ' in n]
        if bad:
            raise ValueError(f'lmdb keys must be ASCII without spaces; rename {", ".join(bad[:5])}')
    train_names, val_names = split_names(list(by_name), val_count, val_ratio, seed)

    existing = [o for o in OUTPUTS + tuple(f for f in (os.listdir(out) if os.path.isdir(out) else [])
                                           if f.endswith('.lmdb')) if os.path.exists(os.path.join(out, o))]
    if existing:
        if not overwrite:
            raise FileExistsError(f'{out} already holds {", ".join(existing)}; choose another -o or pass --overwrite')
        for o in existing:
            target = os.path.join(out, o)
            shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)

    lr_sub = os.path.join('LR_bicubic', f'X{scale}')
    tmpl = f'{{}}x{scale}' if lr_names == 'suffix' else '{}'
    splits = [('train', train_names), ('val', val_names)] if val_names else [('', train_names)]
    summary = dict(scale=scale, out=out, filename_tmpl=tmpl, gray=[], skipped_small=[], kept_whole=[],
                   skipped_tiny=[], official_lr=0, generated_lr=0, splits=OrderedDict())
    for split, names in splits:
        root = os.path.join(out, split)
        hr_out, lr_out = os.path.join(root, 'HR'), os.path.join(root, lr_sub)
        os.makedirs(hr_out, exist_ok=True)
        os.makedirs(lr_out, exist_ok=True)
        records = []  # (hr file name, lr file name, key, shape)
        sub_images = crop_size is not None and split != 'val'
        for name in tqdm(names, desc=f'{split or "images"} x{scale}', unit='img'):
            path = by_name[name]
            hr, gray = image_io.read_image(path)
            if gray:
                summary['gray'].append(name)
            hr = image_io.crop_to_multiple(hr, scale)
            if hr.shape[0] == 0 or hr.shape[1] == 0:
                summary['skipped_tiny'].append(name)
                tqdm.write(f'WARNING: {path} is smaller than the scale {scale}: skipped')
                continue
            lr_path = image_io.find_lr_file(lr_dir, name, scale)
            if lr_path is not None:
                lr, _ = image_io.read_image(lr_path)
                image_io.check_lr_fits(lr, hr, scale, lr_path, path)
                summary['official_lr'] += 1
            else:
                lr = image_io.imresize_uint8(hr, 1 / scale)
                summary['generated_lr'] += 1
            if not sub_images:
                pieces = [(name, hr, lr)]
            elif hr.shape[0] < crop_size or hr.shape[1] < crop_size:
                if small == 'skip':
                    summary['skipped_small'].append(name)
                    tqdm.write(f'WARNING: {path} ({hr.shape[1]}x{hr.shape[0]} after cropping to x{scale}) is smaller '
                               f'than --crop-size {crop_size}: skipped (--small keep writes it whole)')
                    continue
                summary['kept_whole'].append(name)
                pieces = [(name, hr, lr)]
            else:
                pieces, index = [], 0
                for y in subimage_positions(hr.shape[0], crop_size, step, thresh_size):
                    for x in subimage_positions(hr.shape[1], crop_size, step, thresh_size):
                        index += 1
                        ly, lx, lc = y // scale, x // scale, crop_size // scale
                        pieces.append((f'{name}_s{index:03d}', hr[y:y + crop_size, x:x + crop_size],
                                       lr[ly:ly + lc, lx:lx + lc]))
            for key, hr_piece, lr_piece in pieces:
                hr_file, lr_file = f'{key}.png', f'{tmpl.format(key)}.png'
                image_io.write_image(os.path.join(hr_out, hr_file), hr_piece)
                image_io.write_image(os.path.join(lr_out, lr_file), lr_piece)
                records.append((hr_file, lr_file, key, hr_piece.shape))
        with open(os.path.join(root, 'meta_info.txt'), 'w') as f:
            f.writelines(f'{hr_file} ({h},{w},{c}) 1\n' for hr_file, _, _, (h, w, c) in records)
        info = dict(root=root, hr=hr_out, lr=lr_out, count=len(records), images=len(names))
        if make_lmdb and records:
            info['hr_lmdb'], info['lr_lmdb'] = write_lmdbs(root, hr_out, lr_out, records, scale)
        summary['splits'][split or 'all'] = info
    write_dataset_options(out, summary, crop_size)
    report(summary, log)
    return summary


def write_lmdbs(root, hr_out, lr_out, records, scale):
    """HR and LR lmdb with BasicSR's make_lmdb_from_imgs; both use the HR key of each pair."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    keys = [key for _, _, key, _ in records]
    raw = sum(h * w * c for _, _, _, (h, w, c) in records)
    hr_lmdb, lr_lmdb = os.path.join(root, 'HR.lmdb'), os.path.join(root, f'LR_bicubic_X{scale}.lmdb')
    # map_size is an upper bound (sparse file): PNG of noise can exceed raw size slightly
    make_lmdb_from_imgs(hr_out, hr_lmdb, [r[0] for r in records], keys, map_size=2 * raw + (64 << 20))
    make_lmdb_from_imgs(lr_out, lr_lmdb, [r[1] for r in records], keys, map_size=2 * raw // scale**2 + (64 << 20))
    return hr_lmdb, lr_lmdb


def write_dataset_options(out, summary, crop_size):
    """BasicSR `datasets:` entries (disk, and lmdb when written) for what was just prepared."""
    import yaml
    entries = OrderedDict()
    for split, info in summary['splits'].items():
        phase = 'val' if split == 'val' else 'train'
        entry = OrderedDict(name=f'{os.path.basename(os.path.abspath(out))}_{split}', type='PairedImageDataset',
                            dataroot_gt=os.path.abspath(info['hr']), dataroot_lq=os.path.abspath(info['lr']),
                            filename_tmpl=summary['filename_tmpl'], io_backend=dict(type='disk'))
        if phase == 'train':
            entry.update(gt_size=min(crop_size or 96, 96) // summary['scale'] * summary['scale'], use_hflip=True,
                         use_rot=True)
        entries[f'{phase}_disk' if split != 'all' else 'disk'] = dict(entry)
        if 'hr_lmdb' in info:
            lmdb_entry = dict(entry, dataroot_gt=os.path.abspath(info['hr_lmdb']),
                              dataroot_lq=os.path.abspath(info['lr_lmdb']), io_backend=dict(type='lmdb'))
            lmdb_entry.pop('filename_tmpl')
            entries[f'{phase}_lmdb' if split != 'all' else 'lmdb'] = lmdb_entry
    with open(os.path.join(out, 'dataset_options.yml'), 'w') as f:
        f.write('# BasicSR dataset entries for this folder (copy one under `datasets:` as train / val)\n')
        yaml.safe_dump({k: dict(v) for k, v in entries.items()}, f, sort_keys=False)


def report(summary, log):
    for split, info in summary['splits'].items():
        log(f'{split}: {info["count"]} HR/LR pairs from {info["images"]} images -> {info["hr"]} , {info["lr"]}'
            + (f' (+ lmdb {info["hr_lmdb"]}, {info["lr_lmdb"]})' if 'hr_lmdb' in info else ''))
    log(f'LR: {summary["official_lr"]} official, {summary["generated_lr"]} made by MATLAB bicubic; '
        f"filename_tmpl '{summary['filename_tmpl']}'")
    for key, text in (('gray', 'grayscale, written as 3-channel'), ('skipped_small', 'smaller than the crop, skipped'),
                      ('kept_whole', 'smaller than the crop, written whole'),
                      ('skipped_tiny', 'smaller than the scale, skipped')):
        names = summary[key]
        if names:
            log(f'{len(names)} {text}: {", ".join(names[:10])}' + (' ...' if len(names) > 10 else ''))
    log(f'BasicSR dataset options: {os.path.join(summary["out"], "dataset_options.yml")}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hr-dir', required=True, help='folder of HR images (PNG, JPEG, BMP; not recursive)')
    parser.add_argument('-o', '--out', required=True, help='output folder')
    parser.add_argument('--scale', type=int, required=True, help='SR scale (2, 3, 4, ...)')
    parser.add_argument('--lr-dir', help='official LR images (e.g. Set5/LR_bicubic/X4), matched by name '
                        '(<name>x<s>.* or <name>.*); missing ones are made by MATLAB bicubic')
    parser.add_argument('--lr-names', choices=('suffix', 'plain'), default='suffix',
                        help="LR file names: <name>x<s>.png (filename_tmpl '{}x<s>', default) or <name>.png")
    parser.add_argument('--crop-size', type=int, help='HR sub-image size (multiple of the scale); '
                        'default: whole images')
    parser.add_argument('--step', type=int, help='sub-image stride (multiple of the scale; default crop-size/2)')
    parser.add_argument('--thresh-size', type=int, default=0,
                        help='add a border-flush window when more than this many pixels remain (default 0)')
    parser.add_argument('--small', choices=('skip', 'keep'), default='skip',
                        help='images smaller than --crop-size: skip with a warning (default) or write them whole')
    parser.add_argument('--lmdb', action='store_true', help='also write HR.lmdb and LR_bicubic_X<s>.lmdb')
    split = parser.add_mutually_exclusive_group()
    split.add_argument('--val-count', type=int, help='hold out this many images for validation')
    split.add_argument('--val-ratio', type=float, help='hold out this fraction of images for validation')
    parser.add_argument('--seed', type=int, default=0, help='seed of the train/val split (default 0)')
    parser.add_argument('--limit', type=int, help='only the first N images (sorted by name), for a quick look')
    parser.add_argument('--overwrite', action='store_true', help="replace this tool's outputs already in --out")
    args = parser.parse_args(argv)
    try:
        return prepare(args.hr_dir, args.out, args.scale, lr_dir=args.lr_dir, lr_names=args.lr_names,
                       crop_size=args.crop_size, step=args.step, thresh_size=args.thresh_size, small=args.small,
                       make_lmdb=args.lmdb, val_count=args.val_count, val_ratio=args.val_ratio, seed=args.seed,
                       limit=args.limit, overwrite=args.overwrite)
    except (OSError, ValueError) as err:
        sys.exit(f'prepare_data: {err}')


if __name__ == '__main__':
    main()
