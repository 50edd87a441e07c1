"""Export a distilled student to the formats SR practitioners run: BasicSR .pth, safetensors, ONNX.

The student comes from a training run's option file (``network_g``) and checkpoint (``params_ema``
by default). Formats:

* ``pth``: ``{'params': state_dict}`` that BasicSR's own arch loads with ``strict=True``.
* ``safetensors``: the same weights without pickle, with metadata (``utils.student_files.META_KEYS``): the arch
  (type and kwargs as JSON), scale, key layout, source option file and checkpoint, git commit.
  ``utils.student_files.load_student_safetensors`` rebuilds the student from the file alone.
* ``onnx``: opset :data:`DEFAULT_OPSET` (``--opset``), dynamic batch, height and width. Archs with
  a ``window_size`` (SwinIR) are wrapped so that the graph reflect-pads the input to a multiple of
  the window and crops the output, as BasicSR's SwinIRModel and tools/evaluate.py do; any input
  size works. Weights are stored inside the .onnx file.

``rcan_layout='original'`` writes RCAN with the original RCAN code's key names (``head.0``,
``body.i.body.j...``, ``tail``, ``sub_mean``/``add_mean``; weights unchanged) that spandrel detects.

Parity is measured at export on a real image: onnxruntime (CPU) and the reloaded safetensors file
against the PyTorch student, at two input sizes (the second not a multiple of the window), as max
absolute error and PSNR between the outputs; a max error above ``atol`` is an :class:`ExportError`.

onnx, onnxruntime, onnxscript and safetensors are optional (``pip install mixprior[export]``).
Reading these files back is :mod:`mixprior_plugin.utils.student_files`.
"""
import argparse
import contextlib
import copy
import json
import math
import os
import sys

import torch
from torch import nn
from torch.nn import functional as F

from basicsr.utils import img2tensor

from mixprior_plugin.inference import sr_tensor
from mixprior_plugin.utils.checkpoint import atomic_save, extract_state_dict, load_checkpoint
from mixprior_plugin.utils.image_io import ImageReadError, list_images, read_image
from mixprior_plugin.utils.networks import (
    DEFAULT_PARAM_KEY,
    arch_window,
    build_from_safetensors,
    build_network_and_load,
    net_in_channels,
)
from mixprior_plugin.utils.options import OptionError, yaml_load
from mixprior_plugin.utils.provenance import git_commit
from mixprior_plugin.utils.student_files import (
    FORMAT_TAG,
    LAYOUTS,
    ExportError,
    OnnxSR,
    check_rcan_original,
    rcan_to_original,
    require,
)

FORMATS = ('pth', 'safetensors', 'onnx')
EXTENSIONS = {'pth': '.pth', 'safetensors': '.safetensors', 'onnx': '.onnx'}
DEFAULT_OPSET = 18
DEFAULT_ATOL = 1e-4
DEFAULT_PARITY_CROP = 96
# Prefixes under which other KD code bases keep the student inside one checkpoint.
STUDENT_PREFIXES = ('module.', 'net_g.', 'student.', 'model.student.')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the student ------------------------------------------------------------------------------------
def student_state_dict(ckpt, key, path):
    """The student's weights from a checkpoint, with foreign entries dropped and reported.

    Args:
        ckpt (dict): Loaded checkpoint.
        key (str | None): Param key; None reads 'params_ema', falling back to 'params'. A key
            named explicitly must be in the checkpoint (the error lists the keys present).
        path (str): The checkpoint's path, for messages.

    Returns:
        tuple[dict, list[str], str]: State dict, dropped keys, key used.
    """
    state, used = extract_state_dict(ckpt, key or DEFAULT_PARAM_KEY, path, None if key is None else '--key')
    kept, dropped = {}, []
    has_prefixed = any(k.startswith(STUDENT_PREFIXES) for k in state)
    for k, v in state.items():
        for prefix in STUDENT_PREFIXES:
            if k.startswith(prefix):
                kept[k[len(prefix):]] = v
                break
        else:
            if has_prefixed:
                dropped.append(k)  # e.g. teacher./net_t./mixer. entries of a combined checkpoint
            else:
                kept[k] = v
    return kept, dropped, used


def build_student(opt_path, ckpt_path, key=None):
    """Build ``network_g`` of an option file and load the student's weights strictly.

    Args:
        opt_path (str): Option file with ``network_g``.
        ckpt_path (str): Checkpoint holding the student (see :func:`student_state_dict`).
        key (str | None): Param key (None: 'params_ema', falling back to 'params'; named: must exist).

    Returns:
        tuple[nn.Module, dict, str, list[str]]: Network (eval mode), arch dict, key used, dropped keys.
    """
    opt = yaml_load(opt_path)
    if 'network_g' not in opt:
        raise OptionError(f'{opt_path} has no network_g (the student arch)')
    arch = json.loads(json.dumps(opt['network_g']))  # plain JSON-able dict
    state, dropped, used = student_state_dict(load_checkpoint(ckpt_path), key, ckpt_path)
    net = build_network_and_load(arch, state, source=f'{ckpt_path} [{used}]', target=f'network_g of {opt_path}').net
    return net, arch, used, dropped


def arch_scale(arch):
    """The upscale factor of an arch dict (``upscale`` or ``scale``)."""
    scale = arch.get('upscale', arch.get('scale'))
    if not isinstance(scale, int) or scale < 1:
        raise ExportError(f'Arch {arch.get("type")} has no integer upscale/scale (got {scale!r})')
    return scale


# ---- safetensors ---------------------------------------------------------------------------------------
def save_safetensors(state, path, meta):
    """Write ``state`` to ``path`` (atomically) with string metadata.

    Args:
        state (dict[str, Tensor]): Weights (made contiguous CPU copies).
        path (str): Destination .safetensors file.
        meta (dict): Values are stored as JSON strings where not already strings.
    """
    st = require('safetensors.torch', 'Writing .safetensors')
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        st.save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---- ONNX --------------------------------------------------------------------------------------------
class WindowPaddedSR(nn.Module):
    """Reflect-pad the LR input to a multiple of ``window``, super-resolve, crop to ``scale`` x input.

    Exported inside the ONNX graph so that any input size works.

    Args:
        net (nn.Module): SR network that needs inputs in multiples of ``window``.
        scale (int): Its upscale factor.
        window (int): The multiple.
    """

    def __init__(self, net, scale, window):
        super().__init__()
        self.net, self.scale, self.window = net, scale, window

    def forward(self, x):
        """(N, C, H, W) -> (N, C, H * scale, W * scale); H and W at least ``window``."""
        h, w = x.shape[-2:]
        # ceil-to-multiple minus size: a form torch.export's shape reasoning simplifies exactly
        pad_h = (h + self.window - 1) // self.window * self.window - h
        pad_w = (w + self.window - 1) // self.window * self.window - w
        out = self.net(F.pad(x, (0, pad_w, 0, pad_h), mode='reflect'))
        return out[..., :h * self.scale, :w * self.scale]


def _window_reverse_any_batch(windows, window_size, h, w):
    """BasicSR's SwinIR ``window_reverse`` with the batch inferred by ``view(-1, ...)``.

    BasicSR computes the batch with ``int(...)``, which fixes it to the example's batch under
    torch.export; the result is the same tensor.
    """
    c = windows.shape[-1]
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, h, w, c)


@contextlib.contextmanager
def exportable(net):
    """A copy of ``net`` ready for torch.export with dynamic sizes (SwinIR needs two changes).

    SwinIR blocks compare the input size with their training resolution to reuse a stored mask;
    the copy always computes the mask from the input size (same values), and ``window_reverse``
    infers the batch (see :func:`_window_reverse_any_batch`) while the context is open.
    """
    net = copy.deepcopy(net)
    patched = []
    for module in net.modules():
        if hasattr(module, 'attn_mask') and hasattr(module, 'input_resolution'):
            module.input_resolution = (0, 0)  # never equals a real size: no shape-dependent branch
            patched.append(sys.modules.get(type(module).__module__))
    originals = {}
    for mod in patched:
        if mod is not None and hasattr(mod, 'window_reverse') and mod not in originals:
            originals[mod] = mod.window_reverse
            mod.window_reverse = _window_reverse_any_batch
    try:
        yield net
    finally:
        for mod, func in originals.items():
            mod.window_reverse = func


def export_onnx(net, arch, path, opset=DEFAULT_OPSET, metadata=None, optimize=False):
    """Export ``net`` to ONNX with dynamic batch, height and width.

    Args:
        net (nn.Module): The student (eval mode).
        arch (dict): Its arch dict (scale, window size).
        path (str): Destination .onnx file (weights inside).
        opset (int): ONNX opset.
        metadata (dict | None): Written to the model's metadata_props (values JSON-encoded).
        optimize (bool): Run onnxscript's graph optimizer (constant folding, pattern rewrites). Off
            by default: it takes most of the export time and grows fast with depth (minutes for a
            24-block SwinIR on 2 CPU cores), while onnxruntime and TensorRT optimise at load anyway.

    Returns:
        str: How sizes are handled (for the report).
    """
    onnx = require('onnx', 'ONNX export')
    require('onnxscript', 'ONNX export (torch.onnx dynamo exporter)')
    scale, window = arch_scale(arch), arch_window(arch, net)
    min_size = window or 1
    # batch 2 and sizes > 1 in the example: torch.export specialises dimensions of size 0 or 1
    example = torch.rand(2, net_in_channels(net, arch), max(16, 2 * min_size), max(16, 2 * min_size))
    dims = {0: torch.export.Dim('batch', min=1, max=1024), 2: torch.export.Dim('height', min=min_size, max=16384),
            3: torch.export.Dim('width', min=min_size, max=16384)}
    tmp = f'{path}.tmp{os.getpid()}'
    with exportable(net) as copy_net:
        model = WindowPaddedSR(copy_net, scale, window).eval() if window else copy_net
        try:
            with contextlib.redirect_stdout(sys.stderr if os.environ.get('MIXPRIOR_EXPORT_VERBOSE') else _NULL):
                program = torch.onnx.export(model, (example,), input_names=['input'], output_names=['output'],
                                            dynamic_shapes={'x': dims}, opset_version=opset, dynamo=True,
                                            optimize=optimize)
                _tidy_graph(program.model, optimize)
                program.save(tmp, external_data=False)
            proto = onnx.load(tmp)
            for key, value in (metadata or {}).items():
                proto.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value))
            onnx.checker.check_model(proto)
            onnx.save(proto, tmp)
            os.replace(tmp, path)
        except ExportError:
            raise
        except Exception as err:
            raise ExportError(f'ONNX export of {arch.get("type")} to {path} failed: {err.__class__.__name__}: '
                              f'{err}') from err
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    if window:
        return f'any size >= {window}: padded inside the graph to a multiple of the window ({window}), then cropped'
    return 'any size'


def _tidy_graph(model, optimized):
    """Cheap clean-up of the exporter's graph (onnx_ir): unique value names, constants folded, dead nodes gone.

    Without the full optimizer, BasicSR's ``self.mean = self.mean.type_as(x)`` leaves two values
    named ``mean``, which onnx.checker rejects (not single static assignment).
    """
    from onnx_ir.passes import common
    common.NameFixPass()(model)
    if not optimized:
        from onnxscript.optimizer import fold_constants
        fold_constants(model)
        common.RemoveUnusedNodesPass()(model)


class _Null:
    def write(self, text):
        return len(text)

    def flush(self):
        pass


_NULL = _Null()


# ---- parity ------------------------------------------------------------------------------------------
def output_psnr(reference, candidate):
    """PSNR (dB, peak 1) between two outputs in [0, 1]; inf when equal."""
    mse = torch.mean((reference.double().clamp(0, 1) - candidate.double().clamp(0, 1)) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def parity_inputs(image, window, crop=DEFAULT_PARITY_CROP):
    """Two LR tensors from an image: a top-left crop and a smaller one that is not a window multiple.

    Args:
        image (ndarray): uint8 BGR (H, W, 3) LR image.
        window (int | None): Window size of the arch (None: any size).
        crop (int): Side of the first crop (0: the whole image).

    Returns:
        list[Tensor]: (1, 3, h, w) RGB tensors in [0, 1].
    """
    x = img2tensor(image.astype('float32') / 255., bgr2rgb=True, float32=True)[None]
    if crop:
        x = x[..., :crop, :crop]
    h, w = x.shape[-2:]
    multiple = window or 8
    # second size: drop a few rows/columns so that neither side is a multiple of the window
    h2 = h - 1 - (h - 1) % multiple - multiple // 2 - 1 if h > 2 * multiple else h - 1
    w2 = w - 1 - (w - 1) % multiple - multiple // 2 - 3 if w > 2 * multiple else w - 1
    h2, w2 = max(h2, window or 1), max(w2, window or 1)
    return [x.contiguous(), x[..., :h2, :w2].contiguous()]


def measure_parity(reference, candidates, inputs, scale, window, atol=DEFAULT_ATOL):
    """Compare candidates with the PyTorch student on each input.

    Args:
        reference (nn.Module): The PyTorch student.
        candidates (dict[str, callable]): Name -> callable (N, C, h, w) -> (N, C, h * scale, w * scale)
            that handles any size itself (the ONNX graph pads inside; PyTorch ones through sr_tensor).
        inputs (list[Tensor]): LR tensors.
        scale (int): Upscale factor.
        window (int | None): Window padding of the PyTorch reference (tools/evaluate.py's).
        atol (float): Largest accepted max absolute error.

    Returns:
        list[dict]: One row per (candidate, input): name, size, max_abs, psnr, ok.
    """
    rows = []
    for x in inputs:
        ref = sr_tensor(reference, x, scale, window)
        for name, run in candidates.items():
            with torch.no_grad():
                out = run(x)
            if out.shape != ref.shape:
                raise ExportError(f'Parity: {name} returned {tuple(out.shape)} for an input of {tuple(x.shape)}; '
                                  f'PyTorch returned {tuple(ref.shape)}')
            max_abs = (out.float() - ref.float()).abs().max().item()
            rows.append(dict(name=name, size=f'{x.shape[-2]}x{x.shape[-1]}', max_abs=max_abs,
                             psnr=output_psnr(ref, out), ok=bool(max_abs <= atol)))
    return rows


def default_parity_image(opt_path):
    """First LR image of a validation/test dataset of the option file (a real image of the run)."""
    opt = yaml_load(opt_path)
    for phase, ds in sorted((opt.get('datasets') or {}).items(), key=lambda kv: kv[0] == 'train'):
        folder = (ds or {}).get('dataroot_lq')
        if isinstance(folder, str) and os.path.isdir(folder):
            try:
                return list_images(folder)[0]
            except ImageReadError:
                continue
    return None


# ---- the command -------------------------------------------------------------------------------------
def output_paths(out, formats):
    """{format: path}: ``out`` with its known extension replaced by each format's."""
    base, ext = os.path.splitext(out)
    if ext not in EXTENSIONS.values():
        base = out
    return {fmt: base + EXTENSIONS[fmt] for fmt in formats}


def export_student(opt_path, ckpt_path, out, formats=None, key=None, rcan_layout='basicsr', image=None,
                   opset=DEFAULT_OPSET, atol=DEFAULT_ATOL, parity_crop=DEFAULT_PARITY_CROP, onnx_optimize=False,
                   log=print):
    """Export a run's student to ``formats`` and check the parity of the safetensors and ONNX files.

    Args:
        opt_path (str): Option file with ``network_g``.
        ckpt_path (str): Checkpoint holding the student.
        out (str): Output path; ``student.pth`` alone (no ``formats``) writes that format only,
            otherwise every format gets ``out`` with its extension.
        formats (list[str] | None): Subset of :data:`FORMATS` (default: the extension of ``out``).
        key (str | None): Param key (None: 'params_ema', falling back to 'params'; named: must exist).
        rcan_layout (str): 'basicsr' or 'original' (RCAN only; .pth and .safetensors).
        image (str | None): LR image for the parity check (default: the option file's first
            validation LR image).
        opset (int): ONNX opset.
        atol (float): Largest accepted max absolute error between outputs in [0, 1].
        parity_crop (int): Side of the top-left crop of ``image`` used for parity (0: whole image).
        onnx_optimize (bool): Run onnxscript's full graph optimizer on the ONNX graph (slow for deep nets).
        log (callable): Where the report lines go.

    Returns:
        dict: ``num_params``, ``files`` ({format: path}), ``sizes`` (bytes), ``parity`` rows, ``key``.
    """
    if formats is None:
        ext = os.path.splitext(out)[1]
        formats = [f for f, e in EXTENSIONS.items() if e == ext] or list(FORMATS)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f'Unknown format(s) {unknown}: choose from {", ".join(FORMATS)}')
    if rcan_layout not in LAYOUTS:
        raise ExportError(f'--rcan-layout must be one of {", ".join(LAYOUTS)}, got {rcan_layout!r}')
    # fail on missing extras before any work
    if 'safetensors' in formats:
        require('safetensors.torch', 'Writing .safetensors')
    if 'onnx' in formats:
        for module in ('onnx', 'onnxscript', 'onnxruntime'):
            require(module, 'ONNX export and its parity check')

    net, arch, used, dropped = build_student(opt_path, ckpt_path, key)
    scale, window = arch_scale(arch), arch_window(arch, net)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if rcan_layout == 'original':
        check_rcan_original(arch)
    commit, dirty = git_commit(REPO)
    meta = dict(format=FORMAT_TAG, arch=arch, arch_type=arch['type'], scale=scale, layout=rcan_layout,
                source_options=os.path.abspath(opt_path), source_checkpoint=os.path.abspath(ckpt_path),
                param_key=str(used), git_commit=commit or 'unknown', git_dirty=dirty)
    num_params = sum(p.numel() for p in net.parameters())
    log(f'Student {arch["type"]} x{scale} from {ckpt_path} [{used}]: {num_params:,d} parameters'
        + (f' ({len(dropped)} non-student entries dropped)' if dropped else ''))
    if arch['type'] == 'SRVGGNetCompact' and arch.get('act_type', 'prelu') != 'prelu':
        log(f'  note: act_type {arch["act_type"]!r}: spandrel (chaiNNer, ComfyUI) builds SRVGGNetCompact with PReLU '
            'only, so it cannot load this student; BasicSR, the .safetensors and the .onnx files are exact')

    files = output_paths(out, formats)
    notes = {}
    for fmt, path in files.items():
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if fmt == 'pth':
            if rcan_layout == 'original':  # bare state dict, as the original RCAN code saves it
                atomic_save(rcan_to_original(state, arch), path)
            else:
                atomic_save({'params': state}, path)
        elif fmt == 'safetensors':
            save_safetensors(rcan_to_original(state, arch) if rcan_layout == 'original' else state, path, meta)
        else:
            notes['onnx'] = export_onnx(net, arch, path, opset, dict(meta, num_params=num_params), onnx_optimize)
    sizes = {fmt: os.path.getsize(path) for fmt, path in files.items()}
    for fmt, path in files.items():
        extra = ''
        if fmt == 'onnx':
            extra = f' (opset {opset}, dynamic batch/height/width; {notes["onnx"]})'
        elif rcan_layout == 'original':
            extra = ' (original RCAN key layout)'
        log(f'  {fmt:12s} {path}  {sizes[fmt] / 2 ** 20:.2f} MiB{extra}')

    parity = []
    candidates = {}
    if 'safetensors' in files:
        reloaded, _ = build_from_safetensors(files['safetensors'])
        candidates['safetensors (reloaded)'] = lambda x, m=reloaded: sr_tensor(m, x, scale, window)
    if 'onnx' in files:
        candidates['onnxruntime (CPU)'] = OnnxSR(files['onnx'])
    if candidates:
        image = image or default_parity_image(opt_path)
        if image is None:
            raise ExportError(f'Parity needs a real LR image: give --image (no validation dataroot_lq in {opt_path})')
        inputs = parity_inputs(read_image(image)[0], window, parity_crop)
        parity = measure_parity(net, candidates, inputs, scale, window, atol)
        log(f'Parity against the PyTorch student on {image} (outputs in [0, 1], tolerance max abs <= {atol:g}):')
        for row in parity:
            log(f'  {row["name"]:24s} {row["size"]:>9s}  max abs {row["max_abs"]:.2e}  PSNR {row["psnr"]:.1f} dB  '
                + ('ok' if row['ok'] else 'FAILED'))
        failed = [r for r in parity if not r['ok']]
        if failed:
            raise ExportError('Parity failed: ' + ', '.join(f'{r["name"]} at {r["size"]} (max abs {r["max_abs"]:.2e} '
                                                            f'> {atol:g})' for r in failed))
    return dict(num_params=num_params, files=files, sizes=sizes, parity=parity, key=used, arch=arch)


# ---- CLI ----------------------------------------------------------------------------------------------
EXAMPLES = """
Examples:
  # BasicSR .pth only (as before)
  mixprior-export -opt options/train/MiPKD/train_MiPKD_EDSR_x4.yml \\
      --ckpt experiments/MiPKD_EDSR_x4/models/net_g_latest.pth -o student_x4.pth
  # all three formats: student_x4.pth, student_x4.safetensors, student_x4.onnx, with parity checks
  mixprior-export -opt X.yml --ckpt net_g_latest.pth -o student_x4 --formats pth safetensors onnx
  # RCAN for spandrel / chaiNNer / ComfyUI (original RCAN key names)
  mixprior-export -opt rcan.yml --ckpt net_g_latest.pth -o rcan_x4 --formats pth safetensors --rcan-layout original
"""


def build_parser(prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__ + EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', required=True, help='option file with network_g (training or test options)')
    parser.add_argument('--ckpt', required=True, help='checkpoint holding the student (e.g. net_g_latest.pth)')
    parser.add_argument('-o', '--out', required=True, help='output file, or base name when --formats is given')
    parser.add_argument('--formats', nargs='+', choices=FORMATS,
                        help='formats to write (default: the extension of --out; no extension: all three)')
    parser.add_argument('--key', help='param key to export; named, it must be in the checkpoint (default: '
                        'params_ema, falling back to params)')
    parser.add_argument('--rcan-layout', choices=LAYOUTS, default='basicsr',
                        help='RCAN key names: basicsr (default) or original (the original RCAN code, spandrel)')
    parser.add_argument('--image', help='LR image for the parity check (default: first validation LR image of -opt)')
    parser.add_argument('--parity-crop', type=int, default=DEFAULT_PARITY_CROP,
                        help='top-left crop of --image for parity, in LR pixels (0: whole image; default %(default)s)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help='ONNX opset (default %(default)s)')
    parser.add_argument('--onnx-optimize', action='store_true',
                        help="run onnxscript's full graph optimizer (slow: minutes for deep SwinIR; by default only "
                        'constants are folded, runtimes optimise at load)')
    parser.add_argument('--atol', type=float, default=DEFAULT_ATOL,
                        help='largest accepted max abs error of reloaded/ONNX outputs in [0, 1] (default %(default)g)')
    return parser


def run(argv=None, prog=None):
    """Parse the command line and export; returns :func:`export_student`'s dict (for programs).

    A mistake ends the process with one line (exit status 1).
    """
    args = build_parser(prog).parse_args(argv)
    try:
        return export_student(args.opt, args.ckpt, args.out, args.formats, args.key, args.rcan_layout, args.image,
                              args.opset, args.atol, args.parity_crop, args.onnx_optimize)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        sys.exit(f'{prog or "mixprior-export"}: error: {err}')


def main(argv=None, prog=None):
    """``mixprior-export`` / ``tools/export_student.py``: exit status 0 after a successful export.

    A console script runs ``sys.exit(main())``, which would print a returned value and exit with
    status 1: the result dict is :func:`run`'s.
    """
    run(argv, prog)


if __name__ == '__main__':
    main()
