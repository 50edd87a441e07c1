"""PSNR/SSIM of SR checkpoints (or bicubic) on Set5, Set14, BSD100 and Urban100.

Protocol (the usual one of SR papers, computed with BasicSR's own functions):

* HR: ``<root>/<Set>/HR/<name>.*`` (PNG or JPEG; grayscale replicated to 3 channels), cropped
  top-left to a multiple of the scale (BSD100 and Urban100 ship uncropped JPEGs).
* LR: the official ``<root>/<Set>/LR_bicubic/X<s>/<name>x<s>.png`` when present (its size must be
  floor(HR/s)); otherwise made from the cropped HR by MATLAB-style bicubic
  (``basicsr.utils.matlab_functions.imresize``, rounded to uint8). The output says which.
* SR: the network on the LR image (RGB in [0, 1], BasicSR's ``img2tensor``/``tensor2img``, output
  rounded to uint8). Archs with a ``window_size`` (SwinIR) get the LR reflect-padded to a multiple
  of it, and the output cropped back, as BasicSR's SwinIRModel does. ``--tile T --tile-overlap O``
  runs T x T LR tiles overlapping by O pixels and keeps the centre of each. That equals the untiled
  output (up to float rounding) when the network's receptive field radius is at most O // 2 LR
  pixels (and, for windowed archs, T and O are multiples of the window). The radius is measured
  once per network by a probe (one LR pixel changed, in float64: how far the output changes;
  ``mixprior_plugin.inference.receptive_radius``); a smaller overlap is an error that states the
  radius, or a warning with ``--tile-inexact``. Untiled (the default) is always exact.
* "bicubic" (``--bicubic``, or the checkpoint ``bicubic`` in ``--compare``) is no network: the LR
  image upscaled by MATLAB-style bicubic, ``imresize(lr / 255., s)``, rounded to uint8.
* Metrics: ``basicsr.metrics.calculate_psnr`` / ``calculate_ssim`` on the Y channel,
  ``crop_border = scale``, averaged over the images of a set.

Networks: ``--ckpt`` with the arch from ``-opt`` (an option file's ``network_g``, or another
``--network`` key such as ``network_t``) or ``--arch-json`` (a JSON dict or a .json file). A KD
option file works as is; a student exported by tools/export_student.py loads strictly. Weights
that do not fit the arch exactly are refused (``--non-strict`` loads the matching tensors, names
the skipped ones, and still refuses a load that fills less than half the network); ``--param-key``
named explicitly must be in the checkpoint (default: ``params_ema``, else ``params``). Exported
``.safetensors`` files bring their arch in their metadata (no option file needed) and ``.onnx``
files run in onnxruntime on CPU (window padding inside the graph); see docs/export.md.

Outputs (``--out-dir``, default ``results/evaluate_x<s>``): ``results.md`` (table, deltas against the
first method), ``results.json`` (means and per-image values), ``delta_psnr.png`` (bar chart of delta
PSNR per set, when comparing), ``images/<label>/<Set>/<name>.png`` with ``--save-images``,
``crop_<name>.png`` with ``--crop-figure``.

Examples::

    # bicubic baseline on the four sets at x4
    python tools/evaluate.py --scale 4 --bicubic --data-root datasets
    # an exported student (arch from the KD option file's network_g)
    python tools/evaluate.py --scale 4 -opt options/train/kd_edsr_x4.yml --ckpt student_x4.pth
    # what you ship: safetensors and ONNX need no option file
    python tools/evaluate.py --scale 4 --compare st=student_x4.safetensors onnx=student_x4.onnx --sets Set5
    # teacher, scratch and KD student side by side, with bicubic as an extra column
    python tools/evaluate.py --scale 4 -opt kd.yml --compare scratch=scratch.pth kd=kd.pth \\
        teacher=teacher.pth@teacher_arch.json --bicubic --sets Set5 Urban100 \\
        --crop-figure img092 300 200 64 --out-dir results/kd_x4
    # large images in tiles: an EDSR with 16 blocks at x4 reaches 36 LR pixels, so overlap 72 is exact
    python tools/evaluate.py --scale 4 -opt kd.yml --ckpt kd.pth --tile 128 --tile-overlap 72
"""
import argparse
import json
import os
import sys

from mixprior_plugin.evaluation import (
    BICUBIC,
    DEFAULT_SETS,
    EvalError,
    Method,
    build_method,
    evaluate,
    find_image,
    load_arch,
    markdown,
    parse_compare,
    plot_crop,
    plot_deltas,
)

DEFAULT_ROOT = 'datasets'  # BasicSR's layout, relative to the current folder (as option files' dataroot_*)


def run(args):
    import torch
    device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available() else
                          ('cpu' if args.device == 'auto' else args.device))
    default_arch = load_arch(args.opt, args.arch_json, args.network)
    entries = []
    if args.ckpt:
        entries.append((args.label or os.path.splitext(os.path.basename(args.ckpt))[0], args.ckpt, default_arch))
    entries += parse_compare(args.compare or [], default_arch, args.network)
    if args.bicubic:
        entries.append((BICUBIC, BICUBIC, None))
    if not entries:
        raise EvalError('Nothing to evaluate: give --ckpt, --compare LABEL=CKPT ... or --bicubic')
    if len({e[0] for e in entries}) != len(entries):
        raise EvalError(f'Method labels must be unique: {[e[0] for e in entries]}')
    methods = []
    for label, ckpt, arch in entries:
        if ckpt.lower() == BICUBIC and not os.path.isfile(ckpt):
            methods.append(Method(label))
        else:
            methods.append(build_method(label, ckpt, arch, args.scale, device, args.param_key, not args.non_strict))
    sets = list(args.sets)
    keep = find_image(args.data_root, sets, args.scale, args.crop_figure[0]) if args.crop_figure else None
    out_dir = args.out_dir or os.path.join('results', f'evaluate_x{args.scale}')
    os.makedirs(out_dir, exist_ok=True)
    results = evaluate(methods, args.data_root, sets, args.scale, device, args.tile, args.tile_overlap,
                       os.path.join(out_dir, 'images') if args.save_images else None, keep, args.tile_inexact)
    kept = results.pop('kept', None)
    table = markdown(results)
    print(table)
    with open(os.path.join(out_dir, 'results.md'), 'w', encoding='utf-8') as f:
        f.write(table)
    with open(os.path.join(out_dir, 'results.json'), 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=1)
    written = ['results.md', 'results.json']
    if len(methods) > 1:
        plot_deltas(results, os.path.join(out_dir, 'delta_psnr.png'))
        written.append('delta_psnr.png')
    if keep:
        x, y, size = (int(v) for v in args.crop_figure[1:])
        per_image = {m.label: results['sets'][keep[0]]['methods'][m.label]['images'][keep[1]] for m in methods}
        fig = f'crop_{keep[1]}.png'
        plot_crop(kept, per_image, f'{keep[0]}/{keep[1]}', x, y, size, os.path.join(out_dir, fig))
        written.append(fig)
    if args.save_images:
        written.append('images/')
    print(f'Wrote {", ".join(written)} to {out_dir}')
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--scale', type=int, required=True, help='SR scale (2, 3, 4)')
    parser.add_argument('-opt', '--opt', help='option file whose network_g (or --network) is the arch')
    parser.add_argument('--network', default='network_g', help='arch key of -opt (default network_g; '
                        'network_t for the teacher of a KD option file)')
    parser.add_argument('--arch-json', help='arch as JSON (dict with "type") or a .json file; overrides -opt')
    parser.add_argument('--ckpt', help='checkpoint to evaluate: BasicSR .pth (e.g. from export_student.py), or '
                        '.safetensors / .onnx from mixprior-export (no arch needed)')
    parser.add_argument('--label', help='label of --ckpt (default: its file name)')
    parser.add_argument('--param-key', help='weights key; named, it must be in the checkpoint (default: '
                        'params_ema, falling back to params)')
    parser.add_argument('--non-strict', action='store_true', help='load weights that do not fit the arch exactly: '
                        'the matching tensors (at least half the network), naming the skipped ones')
    parser.add_argument('--compare', nargs='+', metavar='LABEL=CKPT[@ARCH]',
                        help='methods side by side; deltas are against the first method. ARCH: option file '
                        '(.yml, --network key) or JSON; default -opt/--arch-json. CKPT "bicubic": no network')
    parser.add_argument('--bicubic', action='store_true', help='add MATLAB-bicubic upsampling as a method '
                        '(last column; alone: evaluate bicubic only)')
    parser.add_argument('--data-root', '--datasets-root', dest='data_root', default=DEFAULT_ROOT,
                        help='folder with <Set>/HR and <Set>/LR_bicubic/X<s> (default: %(default)s, '
                        'relative to the current folder; --datasets-root is the old name)')
    parser.add_argument('--sets', nargs='+', default=list(DEFAULT_SETS), help='test sets (default: %(default)s)')
    parser.add_argument('--tile', type=int, help='LR tile size for large images (multiple of window_size)')
    parser.add_argument('--tile-overlap', type=int, default=16, help='overlap of tiles in LR pixels (default 16); '
                        'less than twice the receptive field radius is an error')
    parser.add_argument('--tile-inexact', action='store_true', help='accept an overlap below the receptive field '
                        '(approximate tiles; a warning instead of the error)')
    parser.add_argument('--device', default='auto', help='auto (cuda when available), cpu, cuda, cuda:1 ...')
    parser.add_argument('--out-dir', help='output folder (default results/evaluate_x<scale>)')
    parser.add_argument('--save-images', action='store_true', help='write SR images under OUT/images/<label>/<Set>/')
    parser.add_argument('--crop-figure', nargs=4, metavar=('IMAGE_NAME', 'X', 'Y', 'SIZE'),
                        help='zoomed-crop comparison of one image (name or Set/name; box in HR pixels, '
                        'X = column, Y = row)')
    args = parser.parse_args(argv)
    if args.crop_figure:
        try:
            [int(v) for v in args.crop_figure[1:]]
        except ValueError:
            parser.error(f'--crop-figure X Y SIZE must be integers, got {args.crop_figure[1:]}')
    try:
        return run(args)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        sys.exit(f'evaluate: {err}')


if __name__ == '__main__':
    main()
