"""Evaluation of SR networks on paired test sets (used by tools/evaluate.py, the demo and the
benchmark). The protocol is described in tools/evaluate.py's docstring: BasicSR's PSNR/SSIM on the
Y channel with crop_border = scale, HR cropped to a multiple of the scale, official LR when
present and MATLAB-bicubic LR otherwise. Running a network on an image (padding, tiles) is
:mod:`mixprior_plugin.inference`.
"""
import json
import os
from collections import OrderedDict

import cv2
import numpy as np
from tqdm import tqdm

from basicsr.metrics import calculate_psnr, calculate_ssim

from mixprior_plugin.inference import EvalError, super_resolve
from mixprior_plugin.utils.image_io import (
    ImageReadError,
    check_lr_fits,
    crop_to_multiple,
    find_lr_file,
    imresize_uint8,
    list_images,
    read_image,
    stem,
    write_image,
)
from mixprior_plugin.utils.networks import arch_window, build_network_and_load
from mixprior_plugin.utils.options import load_arch_spec, yaml_load
from mixprior_plugin.utils.student_files import OnnxSR, load_student_safetensors

DEFAULT_SETS = ('Set5', 'Set14', 'BSD100', 'Urban100')
BICUBIC = 'bicubic'


# ---- networks -----------------------------------------------------------------------------------
def load_arch(opt_path=None, arch_json=None, network_key='network_g'):
    """Arch dict from an option file (``network_key``) or a JSON string / .json file."""
    if arch_json is not None:
        return load_arch_spec(arch_json, '--arch-json')
    if opt_path is not None:
        opt = yaml_load(opt_path)
        if network_key not in opt:
            raise EvalError(f'{opt_path} has no {network_key}')
        return json.loads(json.dumps(opt[network_key]))  # plain dicts
    return None


def arch_from_spec(spec, network_key):
    """Arch of a ``--compare`` entry's ``@ARCH`` part: option file (.yml/.yaml) or JSON file/string."""
    if spec.endswith(('.yml', '.yaml')):
        if not os.path.isfile(spec):
            raise EvalError(f'Option file not found: {spec}')
        return load_arch(opt_path=spec, network_key=network_key)
    return load_arch(arch_json=spec)


class Method:
    """One column of the table: a network or the bicubic pseudo-method."""

    def __init__(self, label, ckpt=None, arch=None, net=None):
        self.label, self.ckpt, self.arch, self.net = label, ckpt, arch, net
        self.window = None
        self.params = None
        if net is not None:
            self.window = arch_window(arch or {}, net)
            self.params = sum(p.numel() for p in net.parameters())

    @property
    def is_bicubic(self):
        return self.net is None

    def describe(self):
        return dict(label=self.label, kind=BICUBIC if self.is_bicubic else 'network', ckpt=self.ckpt,
                    arch=self.arch, params=self.params)


def build_method(label, ckpt, arch, scale, device, param_key=None, strict=True):
    """Build ``arch`` and load ``ckpt`` (``param_key``) into it, frozen in eval mode, as a :class:`Method`.

    A ``.safetensors`` file from mixprior-export brings its own arch (``arch`` may be None; when
    given, its type must match); an ``.onnx`` file runs in onnxruntime on CPU (``arch`` unused).

    Args:
        label (str): The method's column in the table, and its name in messages.
        ckpt (str): Weights: a BasicSR .pth (an RCAN one may be in the original layout), or a
            .safetensors / .onnx file from mixprior-export.
        arch (dict | None): The arch of ``ckpt`` (``type`` and its arguments).
        scale (int): The evaluation's upscale factor; the arch's must be the same.
        device: Where the network runs (an .onnx file runs on CPU).
        param_key (str | None): Weights key; None reads 'params_ema', falling back to 'params'.
            A key named explicitly must be in the checkpoint (the error lists the keys present).
        strict (bool): Refuse weights that do not fit the arch exactly. False (``--non-strict``)
            loads the matching tensors, names the skipped ones and still refuses a load that fills
            less than ``checkpoint.MIN_PARTIAL_LOAD_SHARE`` of the network.
    """
    if ckpt.endswith('.onnx'):
        return onnx_method(label, ckpt, scale)
    if ckpt.endswith('.safetensors'):
        meta_arch = load_student_safetensors(ckpt)[0]
        if arch is not None and arch.get('type') != meta_arch.get('type'):
            raise EvalError(f'{label}: {ckpt} holds a {meta_arch.get("type")} but the arch given is {arch.get("type")}')
        arch = meta_arch
    if arch is None:
        raise EvalError(f'No arch for checkpoint {ckpt}: give -opt (network_g) or --arch-json, '
                        'or LABEL=CKPT@ARCH in --compare')
    upscale = arch.get('upscale', arch.get('scale'))
    if upscale is not None and upscale != scale:
        raise EvalError(f'{label}: the arch has upscale={upscale} but --scale is {scale}')
    hint = '; --non-strict evaluates a partial load' if strict else ''
    net = build_network_and_load(arch, ckpt, param_key, '--param-key', strict, device=device,
                                 target=f'{arch["type"]} ({label}{hint})').net
    return Method(label, ckpt=ckpt, arch=arch, net=net)


def onnx_method(label, path, scale):
    """A method that runs an exported .onnx student in onnxruntime (CPU; window padding is in the graph)."""
    net = OnnxSR(path)
    onnx_scale = net.meta.get('scale')
    if onnx_scale is not None and onnx_scale != scale:
        raise EvalError(f'{label}: {path} was exported at x{onnx_scale} but --scale is {scale}')
    method = Method(label, ckpt=path, arch=net.meta.get('arch'), net=net)
    method.window = None  # padded to the window inside the graph
    method.params = net.meta.get('num_params')
    return method


def parse_compare(entries, default_arch, network_key):
    """``LABEL=CKPT[@ARCH]`` entries -> [(label, ckpt, arch)]; CKPT 'bicubic' is the pseudo-method."""
    out, labels = [], set()
    for entry in entries:
        if '=' not in entry:
            raise EvalError(f'--compare entries are LABEL=CKPT[@ARCH], got {entry!r}')
        label, rest = entry.split('=', 1)
        ckpt, arch = rest, default_arch
        if '@' in rest and not os.path.isfile(rest):
            ckpt, spec = rest.rsplit('@', 1)
            arch = arch_from_spec(spec, network_key)
        if not label or label in labels:
            raise EvalError(f'--compare labels must be unique and non-empty, got {label!r}')
        labels.add(label)
        out.append((label, ckpt, arch))
    return out


# ---- data -------------------------------------------------------------------------------------------
def test_set_items(root, name, scale):
    """[(image name, HR path, official LR path or None)] of a test set in the shared layout."""
    set_dir = os.path.join(root, name)
    if not os.path.isdir(set_dir):
        raise EvalError(f'Test set {name} not found: {set_dir} does not exist (--data-root {root})')
    try:
        hr_paths = list_images(os.path.join(set_dir, 'HR'))
    except ImageReadError as err:
        raise EvalError(f'{err} (test set {name} needs HR/)') from err
    lr_dir = os.path.join(set_dir, 'LR_bicubic', f'X{scale}')
    return [(stem(p), p, find_lr_file(lr_dir, stem(p), scale)) for p in hr_paths]


def load_pair(hr_path, lr_path, scale):
    """(HR cropped to a multiple of ``scale``, LR, 'official' | 'generated')."""
    hr = crop_to_multiple(read_image(hr_path)[0], scale)
    if hr.shape[0] < scale or hr.shape[1] < scale:
        raise EvalError(f'{hr_path} is smaller than the scale {scale}')
    if lr_path is None:
        return hr, imresize_uint8(hr, 1 / scale), 'generated'
    lr = read_image(lr_path)[0]
    check_lr_fits(lr, hr, scale, lr_path, hr_path)
    return hr, lr, 'official'


# ---- evaluation ---------------------------------------------------------------------------------------
def evaluate(methods, root, sets, scale, device='cpu', tile=None, overlap=0, save_dir=None, keep=None,
             inexact_ok=False):
    """Evaluate every method on every set.

    Args:
        keep (tuple[str, str] | None): (set, image) whose HR and SR images are returned in
            ``results['kept']`` (for the crop figure).
        inexact_ok (bool): Accept tiles that overlap less than the receptive field (a warning,
            not an error; see :func:`sr_tensor`).

    Returns:
        dict: JSON-ready results (``sets`` -> method -> psnr/ssim/per-image values).
    """
    all_items = OrderedDict((s, test_set_items(root, s, scale)) for s in sets)  # fail early on a missing set
    results = OrderedDict(scale=scale, crop_border=scale, metric='PSNR/SSIM on Y (BasicSR calculate_psnr/'
                          'calculate_ssim, test_y_channel=True)', datasets_root=os.path.abspath(root),
                          methods=[m.describe() for m in methods], sets=OrderedDict())
    kept = {}
    for set_name, items in all_items.items():
        per = OrderedDict((m.label, OrderedDict()) for m in methods)
        lr_sources = {'official': 0, 'generated': 0}
        for name, hr_path, lr_path in tqdm(items, desc=f'{set_name} x{scale}', unit='img'):
            hr, lr, source = load_pair(hr_path, lr_path, scale)
            lr_sources[source] += 1
            if keep == (set_name, name):
                kept['HR'] = hr
            for m in methods:
                sr = super_resolve(m, lr, scale, device, tile, overlap, inexact_ok)
                per[m.label][name] = dict(psnr=float(calculate_psnr(sr, hr, crop_border=scale, test_y_channel=True)),
                                          ssim=float(calculate_ssim(sr, hr, crop_border=scale, test_y_channel=True)))
                if save_dir:
                    write_image(os.path.join(save_dir, m.label, set_name, f'{name}.png'), sr)
                if keep == (set_name, name):
                    kept[m.label] = sr
        entry = OrderedDict(num_images=len(items), lr=lr_sources, methods=OrderedDict())
        for label, values in per.items():
            n = len(values)
            entry['methods'][label] = OrderedDict(psnr=sum(v['psnr'] for v in values.values()) / n,
                                                  ssim=sum(v['ssim'] for v in values.values()) / n, images=values)
        results['sets'][set_name] = entry
    base = methods[0].label
    results['deltas'] = OrderedDict(
        (m.label, OrderedDict((s, dict(psnr=e['methods'][m.label]['psnr'] - e['methods'][base]['psnr'],
                                       ssim=e['methods'][m.label]['ssim'] - e['methods'][base]['ssim']))
                              for s, e in results['sets'].items())) for m in methods[1:])
    results['delta_base'] = base
    if keep:
        results['kept'] = kept
    return results


def markdown(results):
    """Markdown table: one row per set, PSNR/SSIM per method, then deltas against the first."""
    labels = [m['label'] for m in results['methods']]
    base = results['delta_base']
    head = ['Set', 'LR'] + labels + [f'Δ {lbl} vs {base}' for lbl in labels[1:]]
    lines = [f'PSNR (dB) / SSIM, Y channel, crop_border {results["crop_border"]}, x{results["scale"]}', '',
             '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for set_name, e in results['sets'].items():
        src = e['lr']
        lr = 'official' if not src['generated'] else ('bicubic (made)' if not src['official'] else
                                                      f'{src["official"]} official, {src["generated"]} made')
        row = [f'{set_name} ({e["num_images"]})', lr]
        row += [f'{e["methods"][lbl]["psnr"]:.2f}/{e["methods"][lbl]["ssim"]:.4f}' for lbl in labels]
        row += [f'{results["deltas"][lbl][set_name]["psnr"]:+.2f}/{results["deltas"][lbl][set_name]["ssim"]:+.4f}'
                for lbl in labels[1:]]
        lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines) + '\n'


def plot_deltas(results, path):
    """Bar chart of delta PSNR against the first method, per test set (matplotlib, Agg)."""
    import matplotlib  # only the plots need it (slow to import)
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sets = list(results['sets'])
    labels = list(results['deltas'])
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(sets), 3.6))
    for i, lbl in enumerate(labels):
        values = [results['deltas'][lbl][s]['psnr'] for s in sets]
        bars = ax.bar(np.arange(len(sets)) + (i - (len(labels) - 1) / 2) * width, values, width, label=lbl)
        ax.bar_label(bars, fmt='%+.2f', fontsize=7)
    ax.axhline(0, color='black', linewidth=0.8)
    ax.set_xticks(np.arange(len(sets)), sets)
    ax.set_ylabel(f'Δ PSNR vs {results["delta_base"]} (dB)')
    ax.set_title(f'x{results["scale"]}, Y channel')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_crop(kept, per_image, name, x, y, size, path):
    """HR with the crop marked, then the zoomed crop of HR and of every method (PSNR in titles)."""
    import matplotlib  # only the plots need it (slow to import)
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    hr = kept['HR']
    if x < 0 or y < 0 or x + size > hr.shape[1] or y + size > hr.shape[0]:
        raise EvalError(f'--crop-figure box x={x} y={y} size={size} lies outside {name} '
                        f'({hr.shape[1]}x{hr.shape[0]} after cropping to the scale)')
    panels = [('HR', hr)] + [(k, v) for k, v in kept.items() if k != 'HR']
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.6 * (len(panels) + 1), 3.0))
    axes[0].imshow(cv2.cvtColor(hr, cv2.COLOR_BGR2RGB))
    axes[0].add_patch(Rectangle((x, y), size, size, fill=False, edgecolor='red', linewidth=1.5))
    axes[0].set_title(name, fontsize=9)
    for ax, (label, img) in zip(axes[1:], panels):
        ax.imshow(cv2.cvtColor(img[y:y + size, x:x + size], cv2.COLOR_BGR2RGB), interpolation='nearest')
        title = label if label == 'HR' else f'{label}\n{per_image[label]["psnr"]:.2f} dB'
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def find_image(root, sets, scale, name):
    """(set, image) of ``--crop-figure``'s IMAGE_NAME ('name' or 'Set/name')."""
    want_set, _, want = name.rpartition('/')
    hits = [(s, n) for s in sets if not want_set or s == want_set for n, _, _ in test_set_items(root, s, scale)
            if n == want]
    if not hits:
        raise EvalError(f'--crop-figure: no image {name!r} in {", ".join(sets)}')
    if len(hits) > 1:
        raise EvalError(f'--crop-figure: {want!r} is in several sets ({", ".join(s for s, _ in hits)}); '
                        'write SET/NAME')
    return hits[0]
