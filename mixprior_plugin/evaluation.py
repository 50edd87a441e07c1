"""Evaluation of SR networks on paired test sets (used by tools/evaluate.py, the demo and the
benchmark). The protocol is described in tools/evaluate.py's docstring: BasicSR's PSNR/SSIM on the
Y channel with crop_border = scale, HR cropped to a multiple of the scale, official LR when
present and MATLAB-bicubic LR otherwise.
"""
import json
import os
import warnings
import weakref
from collections import OrderedDict

DEFAULT_SETS = ('Set5', 'Set14', 'BSD100', 'Urban100')
BICUBIC = 'bicubic'


class EvalError(ValueError):
    """Bad arguments, files or checkpoints; the message names them."""


# ---- networks -----------------------------------------------------------------------------------
def load_arch(opt_path=None, arch_json=None, network_key='network_g'):
    """Arch dict from an option file (``network_key``) or a JSON string / .json file."""
    if arch_json is not None:
        from mixprior_plugin.utils.options import load_arch_spec
        return load_arch_spec(arch_json, '--arch-json')
    if opt_path is not None:
        from mixprior_plugin.utils.options import yaml_load
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
            self.window = (arch or {}).get('window_size') or getattr(net, 'window_size', None)
            self.params = sum(p.numel() for p in net.parameters())

    @property
    def is_bicubic(self):
        return self.net is None

    def describe(self):
        return dict(label=self.label, kind=BICUBIC if self.is_bicubic else 'network', ckpt=self.ckpt,
                    arch=self.arch, params=self.params)


DEFAULT_PARAM_KEY = 'params_ema'


def build_method(label, ckpt, arch, scale, device, param_key=None, strict=True):
    """Build ``arch``, load ``ckpt`` (``param_key``), eval mode.

    A ``.safetensors`` file from mixprior-export brings its own arch (``arch`` may be None; when
    given, its type must match); an ``.onnx`` file runs in onnxruntime on CPU (``arch`` unused).

    Args:
        param_key (str | None): Weights key; None reads 'params_ema', falling back to 'params'.
            A key named explicitly must be in the checkpoint (the error lists the keys present).
        strict (bool): Refuse weights that do not fit the arch exactly. False (``--non-strict``)
            loads the matching tensors, names the skipped ones and still refuses a load that fills
            less than ``checkpoint.MIN_PARTIAL_LOAD_SHARE`` of the network.
    """
    from basicsr.archs import build_network

    import mixprior_plugin  # noqa: F401  (registers the plugin's archs)
    from mixprior_plugin import export
    from mixprior_plugin.utils.checkpoint import extract_state_dict, load_checkpoint, load_state_checked
    if ckpt.endswith('.onnx'):
        return onnx_method(label, ckpt, scale)
    if ckpt.endswith('.safetensors'):
        meta_arch = export.load_student_safetensors(ckpt)[0]
        if arch is not None and arch.get('type') != meta_arch.get('type'):
            raise EvalError(f'{label}: {ckpt} holds a {meta_arch.get("type")} but the arch given is {arch.get("type")}')
        arch = meta_arch
    if arch is None:
        raise EvalError(f'No arch for checkpoint {ckpt}: give -opt (network_g) or --arch-json, '
                        'or LABEL=CKPT@ARCH in --compare')
    upscale = arch.get('upscale', arch.get('scale'))
    if upscale is not None and upscale != scale:
        raise EvalError(f'{label}: the arch has upscale={upscale} but --scale is {scale}')
    try:
        net = build_network(dict(arch))
    except Exception as err:  # registry KeyError, wrong constructor arguments, ...
        raise EvalError(f'{label}: cannot build arch {arch}: {err.__class__.__name__}: {err}') from err
    state = export.state_for_checkpoint(ckpt, arch)
    used = None
    if state is None:
        state, used = extract_state_dict(load_checkpoint(ckpt), param_key or DEFAULT_PARAM_KEY, ckpt,
                                         None if param_key is None else '--param-key')
        if arch['type'] == 'RCAN' and export.is_original_rcan(state):  # --rcan-layout original export
            state = export.rcan_from_original(state, arch)
    hint = '; --non-strict evaluates a partial load' if strict else ''
    load_state_checked(net, state, f'{ckpt} [{used}]' if used else ckpt, f'{arch["type"]} ({label}{hint})', strict)
    net.eval().requires_grad_(False)
    return Method(label, ckpt=ckpt, arch=arch, net=net.to(device))


def onnx_method(label, path, scale):
    """A method that runs an exported .onnx student in onnxruntime (CPU; window padding is in the graph)."""
    from mixprior_plugin.export import OnnxSR
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


# ---- inference ------------------------------------------------------------------------------------
def tile_starts(length, tile, stride):
    """Tile offsets covering ``length``: every ``stride``, the last one flush with the end."""
    return list(range(0, length - tile, stride)) + [length - tile]


def sr_tensor(net, x, scale, window=None, tile=None, overlap=0, inexact_ok=False):
    """Run ``net`` on ``x`` (N, C, h, w), padded to ``window`` multiples and tiled if asked.

    Tiles are ``tile`` x ``tile`` LR pixels, overlapping by ``overlap``; of each tile only the part
    farther than ``overlap // 2`` from an inner tile border is kept. That equals the untiled output
    exactly when the network's receptive field radius (:func:`receptive_radius`) is at most
    ``overlap // 2`` LR pixels; a smaller overlap is an :class:`EvalError` stating the condition,
    or with ``inexact_ok`` a warning.
    """
    import torch

    from mixprior_plugin.stages import pad_to_multiple
    h, w = x.shape[-2:]
    if window:
        x, _ = pad_to_multiple(x, window)
    big_h, big_w = x.shape[-2:]
    with torch.no_grad():
        if not tile or (big_h <= tile and big_w <= tile):
            out = net(x)
        else:
            if window and tile % window:
                raise EvalError(f'--tile {tile} must be a multiple of the window size {window}')
            if not 0 <= overlap < tile:
                raise EvalError(f'--tile-overlap {overlap} must be in [0, --tile {tile})')
            check_tile_overlap(net, scale, window, overlap, inexact_ok)
            th, tw = min(tile, big_h), min(tile, big_w)
            margin = overlap // 2
            out = None
            for y in tile_starts(big_h, th, tile - overlap):
                for x0 in tile_starts(big_w, tw, tile - overlap):
                    piece = net(x[..., y:y + th, x0:x0 + tw])
                    if out is None:
                        out = piece.new_zeros(piece.shape[0], piece.shape[1], big_h * scale, big_w * scale)
                    ya, yb = (y + margin if y else 0), (y + th - margin if y + th < big_h else big_h)
                    xa, xb = (x0 + margin if x0 else 0), (x0 + tw - margin if x0 + tw < big_w else big_w)
                    out[..., ya * scale:yb * scale, xa * scale:xb * scale] = \
                        piece[..., (ya - y) * scale:(yb - y) * scale, (xa - x0) * scale:(xb - x0) * scale]
    if out.shape[-2:] != (big_h * scale, big_w * scale):
        raise EvalError(f'The network returned {tuple(out.shape[-2:])} for an LR input of {(big_h, big_w)}: '
                        f'not x{scale} (wrong --scale or arch?)')
    return out[..., :h * scale, :w * scale]


# Largest receptive field radius (LR pixels) the error message measures, to suggest an overlap.
RADIUS_SEARCH_REACH = 64
_RADIUS_CACHE = weakref.WeakKeyDictionary()  # network -> {reach: radius or None}


def receptive_radius(net, scale, window=None, reach=RADIUS_SEARCH_REACH):
    """How far, in LR pixels, one input pixel reaches into the output of ``net``: measured by a probe.

    One LR pixel (every channel) at the centre of a random input of at least ``2 * reach + 3`` pixels
    a side is changed, and the radius is the largest Chebyshev distance from it to an LR position
    (output pixel // ``scale``) whose output changed. The probe runs in float64 on a copy of the
    network, where an output outside the receptive field is bitwise unchanged (in float32, fast
    convolution algorithms would spread rounding differences a little); a network without
    parameters (an ONNX session) is probed in float32 with a 1e-5 threshold. Cached per network and
    ``reach``.

    Args:
        net (nn.Module): The network, in eval mode.
        scale (int): Its upscale factor.
        window (int | None): Window size (the probe is a multiple of it, so it needs no padding).
        reach (int): The largest radius to measure.

    Returns:
        int | None: The radius, or None when it exceeds ``reach`` (global operations such as RCAN's
        channel attention or SwinIR's shifted-window attention reach every pixel).
    """
    import copy

    import torch

    from mixprior_plugin.export import net_in_channels
    cached = _RADIUS_CACHE.setdefault(net, {})
    if reach in cached:
        return cached[reach]
    params = list(net.parameters())
    device = params[0].device if params else torch.device('cpu')
    probe_net, dtype, threshold = net, torch.float32, 1e-5
    if params:
        probe_net, dtype, threshold = copy.deepcopy(net).to(torch.float64).eval(), torch.float64, 0.0
    side = 2 * reach + 3
    if window:  # a multiple of the window: no padding, which would mirror the changed pixel
        side = -(-(side + window) // window) * window
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, net_in_channels(net, {}), side, side, generator=generator, dtype=dtype).to(device)
    radius = 0
    start = (side // 2) // window * window if window else side // 2
    # with windows the reach depends on where the pixel sits in its window: probe its first and last position
    for centre in ((start, start + window - 1) if window else (start, )):
        changed = x.clone()
        changed[..., centre, centre] = 1 - changed[..., centre, centre]
        with torch.no_grad():
            diff = (probe_net(changed) - probe_net(x)).abs().amax(dim=(0, 1))
        rows, cols = torch.nonzero(diff > threshold, as_tuple=True)
        if len(rows):
            radius = max(radius, int((rows // scale - centre).abs().max()), int((cols // scale - centre).abs().max()))
    cached[reach] = radius if radius <= reach else None
    return cached[reach]


def check_tile_overlap(net, scale, window, overlap, inexact_ok=False):
    """Raise (or, with ``inexact_ok``, warn) unless tiles overlapping by ``overlap`` are exact for ``net``.

    Tiles are exact when the receptive field radius is at most ``overlap // 2`` LR pixels (see
    :func:`sr_tensor`); the radius comes from :func:`receptive_radius`.
    """
    margin = overlap // 2
    if window and overlap % window:
        msg = (f'--tile-overlap {overlap} is not a multiple of the window size {window}: the attention windows '
               'are laid from each tile\'s corner, so tiles are exact only when tile and overlap are multiples of '
               'the window (or pass --tile-inexact to accept approximate tiles)')
    elif receptive_radius(net, scale, window, reach=margin) is not None:
        return
    else:
        radius = receptive_radius(net, scale, window)
        if radius is None:
            reach = (f'more than {RADIUS_SEARCH_REACH} LR pixels away (global pooling or attention): tiles are '
                     'never exact for it; evaluate it untiled')
        else:
            step = window or 2
            reach = f'{radius} LR pixels away: use --tile-overlap {-(-2 * radius // step) * step} or more'
        msg = (f'--tile-overlap {overlap} is too small for {net.__class__.__name__}: tiles are exact only when '
               f'overlap // 2 >= the receptive field radius, and one LR pixel changes its output {reach} '
               '(or pass --tile-inexact to accept approximate tiles)')
    if not inexact_ok:
        raise EvalError(msg)
    warnings.warn(msg.split(' (or pass')[0] + ': tiled results are approximate (--tile-inexact).')


def super_resolve(method, lr, scale, device='cpu', tile=None, overlap=0, inexact_ok=False):
    """SR image (uint8 BGR) of ``lr`` (uint8 BGR) by a method (tiling: see :func:`sr_tensor`)."""
    from basicsr.utils import img2tensor, tensor2img

    from mixprior_plugin.utils.image_io import imresize_uint8
    if method.is_bicubic:
        return imresize_uint8(lr, scale)
    x = img2tensor(lr.astype('float32') / 255., bgr2rgb=True, float32=True)[None].to(device)
    return tensor2img(sr_tensor(method.net, x, scale, method.window, tile, overlap, inexact_ok))


def psnr_beside_bicubic(net, pairs, scale, window=None, device='cpu'):
    """Mean PSNR (Y, crop_border = scale) of ``net`` and of MATLAB bicubic on LR/HR tensor pairs.

    Args:
        net (nn.Module): The network (eval mode).
        pairs (list[tuple[Tensor, Tensor]]): ``(lq, gt)``, each ``(C, H, W)`` RGB in [0, 1], HR = LR x scale.
        scale (int): Upscale factor.
        window (int | None): Window size to pad to (SwinIR).
        device: Where ``net`` runs.

    Returns:
        tuple[float, float]: The network's and bicubic's PSNR in dB.
    """
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img

    from mixprior_plugin.utils.image_io import imresize_uint8
    net_psnr, bicubic_psnr = [], []
    for lq, gt in pairs:
        hr = tensor2img(gt)
        sr = tensor2img(sr_tensor(net, lq[None].to(device), scale, window))
        net_psnr.append(calculate_psnr(sr, hr, crop_border=scale, test_y_channel=True))
        bicubic_psnr.append(calculate_psnr(imresize_uint8(tensor2img(lq), scale), hr, crop_border=scale,
                                           test_y_channel=True))
    return sum(net_psnr) / len(net_psnr), sum(bicubic_psnr) / len(bicubic_psnr)


# ---- data -------------------------------------------------------------------------------------------
def test_set_items(root, name, scale):
    """[(image name, HR path, official LR path or None)] of a test set in the shared layout."""
    from mixprior_plugin.utils.image_io import ImageReadError, find_lr_file, list_images, stem
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
    from mixprior_plugin.utils.image_io import check_lr_fits, crop_to_multiple, imresize_uint8, read_image
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
    from tqdm import tqdm

    from basicsr.metrics import calculate_psnr, calculate_ssim

    from mixprior_plugin.utils.image_io import write_image
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
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
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
    import cv2
    import matplotlib
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
