"""Super-resolving images with a network: window padding, tiles that are exact, the receptive-field probe.

:func:`sr_tensor` is how every part of the plugin runs a trained network on an LR image (tools/evaluate.py,
mixprior-test through ``KDModel.test``, the export's parity check, the benchmark): reflect-padded to
a multiple of the arch's window (SwinIR), cropped back, and optionally in tiles that equal the
untiled output (:func:`receptive_radius` measures how much overlap that takes).
"""
import copy
import warnings
import weakref

import torch
from torch.nn import functional as F

from basicsr.metrics import calculate_psnr
from basicsr.utils import img2tensor, tensor2img

from mixprior_plugin.utils.image_io import imresize_uint8
from mixprior_plugin.utils.networks import net_in_channels


class EvalError(ValueError):
    """Bad arguments, files or checkpoints of an evaluation (tiles, scale, arch); the message names them."""


def pad_to_multiple(x, multiple):
    """Reflect-pad ``(N, C, H, W)`` on the bottom/right to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (0, 0)
    mode = 'reflect' if ph < h and pw < w else 'replicate'
    return F.pad(x, (0, pw, 0, ph), mode=mode), (ph, pw)


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
    parameters (an ONNX Runtime model) is probed in float32 with a 1e-5 threshold. Cached per network and
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
    """SR image of ``lr`` by a method: its network through :func:`sr_tensor`, or MATLAB bicubic.

    Args:
        method: An evaluation method (``is_bicubic``, ``net``, ``window``; see ``evaluation.Method``).
        lr (ndarray): uint8 BGR (H, W, 3) LR image.
        scale (int): Upscale factor.
        device: Where the network runs.
        tile, overlap, inexact_ok: Tiling (see :func:`sr_tensor`).

    Returns:
        ndarray: uint8 BGR (H * scale, W * scale, 3).
    """
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
    net_psnr, bicubic_psnr = [], []
    for lq, gt in pairs:
        hr = tensor2img(gt)
        sr = tensor2img(sr_tensor(net, lq[None].to(device), scale, window))
        net_psnr.append(calculate_psnr(sr, hr, crop_border=scale, test_y_channel=True))
        bicubic_psnr.append(calculate_psnr(imresize_uint8(tensor2img(lq), scale), hr, crop_border=scale,
                                           test_y_channel=True))
    return sum(net_psnr) / len(net_psnr), sum(bicubic_psnr) / len(bicubic_psnr)


