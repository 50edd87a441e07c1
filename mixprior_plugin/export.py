"""Export a distilled student to the formats SR practitioners run: BasicSR .pth, safetensors, ONNX.

The student comes from a training run's option file (``network_g``) and checkpoint (``params_ema``
by default). Formats:

* ``pth``: ``{'params': state_dict}`` that BasicSR's own arch loads with ``strict=True``.
* ``safetensors``: the same weights without pickle, with metadata (:data:`META_KEYS`): the arch
  (type and kwargs as JSON), scale, key layout, source option file and checkpoint, git commit.
  :func:`load_student_safetensors` rebuilds the student from the file alone.
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
"""
import argparse
import contextlib
import copy
import json
import math
import os
import re
import sys

import torch
from torch import nn
from torch.nn import functional as F

FORMATS = ('pth', 'safetensors', 'onnx')
EXTENSIONS = {'pth': '.pth', 'safetensors': '.safetensors', 'onnx': '.onnx'}
INSTALL_HINT = 'pip install mixprior[export]'
DEFAULT_OPSET = 18
DEFAULT_ATOL = 1e-4
DEFAULT_PARITY_CROP = 96
# Identifies our safetensors / ONNX metadata (a version, so that readers can refuse a future layout).
FORMAT_TAG = 'mixprior.student.v1'
META_KEYS = ('format', 'arch', 'arch_type', 'scale', 'layout', 'source_options', 'source_checkpoint', 'param_key',
             'git_commit', 'git_dirty')
LAYOUTS = ('basicsr', 'original')
# Prefixes under which other KD code bases keep the student inside one checkpoint.
STUDENT_PREFIXES = ('module.', 'net_g.', 'student.', 'model.student.')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ExportError(ValueError):
    """A student that cannot be exported or loaded back; the message names the file or key."""


def require(module, purpose):
    """Import an optional dependency, or say how to install it.

    Args:
        module (str): Module name ('onnx', 'onnxruntime', 'safetensors.torch', 'spandrel').
        purpose (str): What it is needed for, for the message.
    """
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ExportError(f'{purpose} needs the Python package {module.split(".")[0]!r}, which is not installed '
                          f'({err}). Install the export extras: {INSTALL_HINT}') from err


# ---- the student ------------------------------------------------------------------------------------
DEFAULT_KEY = 'params_ema'


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
    from mixprior_plugin.utils.checkpoint import extract_state_dict
    state, used = extract_state_dict(ckpt, key or DEFAULT_KEY, path, None if key is None else '--key')
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

    Returns:
        tuple[nn.Module, dict, str, list[str]]: Network (eval mode), arch dict, key used, dropped keys.
    """
    from basicsr.archs import build_network

    import mixprior_plugin  # noqa: F401  (registers archs)
    from mixprior_plugin.utils.checkpoint import load_checkpoint, load_state_checked
    from mixprior_plugin.utils.options import OptionError, yaml_load
    opt = yaml_load(opt_path)
    if 'network_g' not in opt:
        raise OptionError(f'{opt_path} has no network_g (the student arch)')
    arch = json.loads(json.dumps(opt['network_g']))  # plain JSON-able dict
    net = build_network(dict(arch))
    state, dropped, used = student_state_dict(load_checkpoint(ckpt_path), key, ckpt_path)
    load_state_checked(net, state, f'{ckpt_path} [{used}]', f'network_g of {opt_path}')
    return net.eval().requires_grad_(False), arch, used, dropped


def arch_scale(arch):
    """The upscale factor of an arch dict (``upscale`` or ``scale``)."""
    scale = arch.get('upscale', arch.get('scale'))
    if not isinstance(scale, int) or scale < 1:
        raise ExportError(f'Arch {arch.get("type")} has no integer upscale/scale (got {scale!r})')
    return scale


def arch_window(arch, net=None):
    """The size LR inputs must be a multiple of (SwinIR's ``window_size``), or None."""
    return arch.get('window_size') or (getattr(net, 'window_size', None) if net is not None else None)


# ---- RCAN in the original layout -----------------------------------------------------------------------
_RCAN_RULES = (  # (BasicSR key pattern, original key template); {g} group, {b} block, {k} upsample index
    (r'conv_first\.(weight|bias)$', 'head.0.{p}'),
    (r'body\.(\d+)\.residual_group\.(\d+)\.rcab\.0\.(weight|bias)$', 'body.{g}.body.{b}.body.0.{p}'),
    (r'body\.(\d+)\.residual_group\.(\d+)\.rcab\.2\.(weight|bias)$', 'body.{g}.body.{b}.body.2.{p}'),
    (r'body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.1\.(weight|bias)$',
     'body.{g}.body.{b}.body.3.conv_du.0.{p}'),
    (r'body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.3\.(weight|bias)$',
     'body.{g}.body.{b}.body.3.conv_du.2.{p}'),
    (r'body\.(\d+)\.conv\.(weight|bias)$', 'body.{g}.body.{nb}.{p}'),
    (r'conv_after_body\.(weight|bias)$', 'body.{ng}.{p}'),
    (r'upsample\.(\d+)\.(weight|bias)$', 'tail.0.{k}.{p}'),
    (r'conv_last\.(weight|bias)$', 'tail.1.{p}'),
)


def check_rcan_original(arch):
    """Raise unless BasicSR's RCAN ``arch`` has an exact equivalent in the original RCAN code.

    The original code (and spandrel, which assumes it) works on [0, 255] with 3-channel mean shifts
    and ignores ``res_scale``.
    """
    problems = []
    if arch.get('type') != 'RCAN':
        problems.append(f'type is {arch.get("type")!r}, not RCAN')
    if float(arch.get('img_range', 255.)) != 255.:
        problems.append(f'img_range is {arch.get("img_range")} (must be 255)')
    if float(arch.get('res_scale', 1)) != 1.:
        problems.append(f'res_scale is {arch.get("res_scale")} (must be 1)')
    if arch.get('num_in_ch', 3) != 3 or arch.get('num_out_ch', 3) != 3:
        problems.append(f'num_in_ch/num_out_ch are {arch.get("num_in_ch")}/{arch.get("num_out_ch")} (must be 3/3)')
    if problems:
        raise ExportError('--rcan-layout original: the student has no exact original-RCAN equivalent: '
                          + '; '.join(problems))


def rcan_to_original(state, arch):
    """BasicSR RCAN state dict -> the original RCAN code's key names (weights unchanged).

    Args:
        state (dict[str, Tensor]): BasicSR RCAN weights.
        arch (dict): Its arch dict (``num_group``, ``num_block``, ``rgb_mean``, ``img_range``).

    Returns:
        dict[str, Tensor]: Original-layout weights, including the fixed ``sub_mean``/``add_mean``
        1x1 convolutions that hold the mean shift.
    """
    check_rcan_original(arch)
    num_group, num_block = arch.get('num_group', 10), arch.get('num_block', 16)
    out = {}
    for key, value in state.items():
        for pattern, template in _RCAN_RULES:
            m = re.match(pattern, key)
            if m:
                *idx, param = m.groups()
                fields = dict(p=param, ng=num_group, nb=num_block)
                if template.startswith('body.{g}'):
                    fields.update(g=idx[0], b=idx[1] if len(idx) > 1 else None)
                elif template.startswith('tail.0'):
                    fields.update(k=idx[0])
                out[template.format(**fields)] = value
                break
        else:
            raise ExportError(f'RCAN weight {key!r} has no place in the original RCAN layout')
    mean = torch.tensor(arch.get('rgb_mean', (0.4488, 0.4371, 0.4040)), dtype=torch.float32)
    img_range = float(arch.get('img_range', 255.))
    eye = torch.eye(3).view(3, 3, 1, 1)
    out.update({'sub_mean.weight': eye.clone(), 'sub_mean.bias': -img_range * mean,
                'add_mean.weight': eye.clone(), 'add_mean.bias': img_range * mean})
    return out


def rcan_from_original(state, arch):
    """Inverse of :func:`rcan_to_original` (the mean shifts are checked, then dropped)."""
    num_group, num_block = arch.get('num_group', 10), arch.get('num_block', 16)
    inverse = {}
    for g in range(num_group):
        for b in range(num_block):
            for src, dst in (('body.0', 'rcab.0'), ('body.2', 'rcab.2'), ('body.3.conv_du.0', 'rcab.3.attention.1'),
                             ('body.3.conv_du.2', 'rcab.3.attention.3')):
                inverse[f'body.{g}.body.{b}.{src}'] = f'body.{g}.residual_group.{b}.{dst}'
        inverse[f'body.{g}.body.{num_block}'] = f'body.{g}.conv'
    inverse.update({'head.0': 'conv_first', f'body.{num_group}': 'conv_after_body', 'tail.1': 'conv_last'})
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition('.')
        if module in ('sub_mean', 'add_mean'):
            continue
        if module.startswith('tail.0.'):
            out[f'upsample.{module[len("tail.0."):]}.{param}'] = value
        elif module in inverse:
            out[f'{inverse[module]}.{param}'] = value
        else:
            raise ExportError(f'{key!r} is not a weight of an original-layout RCAN with {num_group} groups of '
                              f'{num_block} blocks')
    expected = rcan_to_original({}, arch) if arch.get('type') == 'RCAN' else {}
    for name in ('sub_mean.bias', 'add_mean.bias'):
        if name in state and not torch.allclose(state[name].float(), expected[name], atol=1e-4):
            raise ExportError(f'{name} of the original-layout RCAN does not match rgb_mean/img_range of the arch')
    return out


def is_original_rcan(state):
    """Whether a state dict uses the original RCAN code's key names."""
    return 'head.0.weight' in state and 'tail.1.weight' in state


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


def load_safetensors(path):
    """Weights and metadata of a .safetensors file; a corrupt or truncated file names itself.

    Returns:
        tuple[dict[str, Tensor], dict[str, str]]: State dict and raw metadata.
    """
    st = require('safetensors', 'Reading .safetensors')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'safetensors file not found: {path}')
    try:
        with st.safe_open(path, framework='pt', device='cpu') as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # SafetensorError, OSError, ... for truncated or foreign files
        raise ExportError(f'Cannot read {path}: {err.__class__.__name__}: {err}. The file is corrupt, truncated or '
                          'not a safetensors file.') from err
    return state, meta


def safetensors_meta(path, meta):
    """Parsed metadata of a student file: arch (dict), scale (int), layout (str), the rest as stored."""
    if meta.get('format') != FORMAT_TAG or 'arch' not in meta:
        raise ExportError(f'{path} carries no mixprior arch metadata (format {meta.get("format")!r}, expected '
                          f'{FORMAT_TAG!r}): export it with mixprior-export, or load the weights with an option '
                          'file')
    try:
        arch = json.loads(meta['arch'])
        scale = int(meta['scale'])
    except (ValueError, KeyError, TypeError) as err:
        raise ExportError(f'{path}: unreadable arch/scale metadata: {err}') from err
    layout = meta.get('layout', 'basicsr')
    if layout not in LAYOUTS:
        raise ExportError(f'{path}: unknown key layout {layout!r} (known: {", ".join(LAYOUTS)})')
    return dict(meta, arch=arch, scale=scale, layout=layout)


def load_student_safetensors(path):
    """Arch, BasicSR-layout weights and metadata of a student exported to safetensors.

    Returns:
        tuple[dict, dict[str, Tensor], dict]: Arch dict, state dict, parsed metadata.
    """
    state, raw = load_safetensors(path)
    meta = safetensors_meta(path, raw)
    if meta['layout'] == 'original':
        state = rcan_from_original(state, meta['arch'])
    return meta['arch'], state, meta


def build_from_safetensors(path, device='cpu'):
    """The student network of a safetensors file (strict load, eval mode) and its metadata."""
    from basicsr.archs import build_network

    import mixprior_plugin  # noqa: F401
    from mixprior_plugin.utils.checkpoint import load_state_checked
    arch, state, meta = load_student_safetensors(path)
    net = build_network(dict(arch))
    load_state_checked(net, state, path, f'{arch["type"]} from the metadata of {path}')
    return net.eval().requires_grad_(False).to(device), meta


def state_for_checkpoint(path, arch):
    """BasicSR-layout weights from a .safetensors file or an original-layout RCAN .pth, for ``arch``.

    Returns None for any other file (the caller loads it as a BasicSR checkpoint).
    """
    if path.endswith('.safetensors'):
        meta_arch, state, _ = load_student_safetensors(path)
        if arch is not None and arch.get('type') != meta_arch.get('type'):
            raise ExportError(f'{path} holds a {meta_arch.get("type")} but the options ask for {arch.get("type")}')
        return state
    return None


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


def net_in_channels(net, arch):
    """Input channels of an SR arch (``num_in_ch`` / ``in_chans``, else the first conv's)."""
    for key in ('num_in_ch', 'in_chans', 'in_channels'):
        if key in arch:
            return arch[key]
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


class OnnxSR(nn.Module):
    """An exported .onnx student run by onnxruntime on CPU, callable like the PyTorch network.

    Args:
        path (str): The .onnx file.
        threads (int | None): onnxruntime intra-op threads (default: torch's thread count).

    Attributes:
        meta (dict): The model's metadata_props (``arch`` and ``num_params`` parsed from JSON).
    """

    def __init__(self, path, threads=None):
        super().__init__()
        ort = require('onnxruntime', 'Running .onnx files')
        onnx = require('onnx', 'Reading .onnx files')
        if not os.path.isfile(path):
            raise FileNotFoundError(f'ONNX file not found: {path}')
        try:
            proto = onnx.load(path, load_external_data=False)
            onnx.checker.check_model(proto)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or torch.get_num_threads()
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        except Exception as err:  # DecodeError, ValidationError, onnxruntime's Fail/InvalidProtobuf ...
            raise ExportError(f'Cannot load ONNX model {path}: {err.__class__.__name__}: {err}. The file is corrupt, '
                              'truncated or not an ONNX model.') from err
        self.path = path
        self.input_name = self.session.get_inputs()[0].name
        self.meta = {p.key: p.value for p in proto.metadata_props}
        for key in ('arch', 'num_params', 'scale'):
            if key in self.meta:
                self.meta[key] = json.loads(self.meta[key])

    def forward(self, x):
        """(N, C, H, W) float tensor -> SR tensor on the same device."""
        out = self.session.run(None, {self.input_name: x.detach().cpu().float().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


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
    from basicsr.utils import img2tensor
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
    from mixprior_plugin.evaluation import sr_tensor
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
    from mixprior_plugin.utils.image_io import ImageReadError, list_images
    from mixprior_plugin.utils.options import yaml_load
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
    from mixprior_plugin.utils.checkpoint import atomic_save
    from mixprior_plugin.utils.image_io import read_image
    from mixprior_plugin.utils.provenance import git_commit
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
        candidates['safetensors (reloaded)'] = lambda x, m=reloaded: _padded_call(m, x, scale, window)
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


def _padded_call(net, x, scale, window):
    from mixprior_plugin.evaluation import sr_tensor
    return sr_tensor(net, x, scale, window)


# ---- mixprior-test ------------------------------------------------------------------------------------
def enable_safetensors_in_test():
    """Let BasicSR's test pipeline take a .safetensors student as ``path.pretrain_network_g``.

    ``network_g`` may then be left out of the option file (it comes from the file's metadata); when
    given, its type must match. The weights are loaded by ``CheckpointMixin.load_network``, which
    converts weights in the original RCAN layout back.
    """
    test_mod = sys.modules['basicsr.test']
    if getattr(test_mod.build_model, '_mixprior_safetensors', False):
        return
    original_build = test_mod.build_model

    def build_model(opt):
        weights = (opt.get('path') or {}).get('pretrain_network_g')
        if isinstance(weights, str) and weights.endswith('.safetensors'):
            arch, _, _ = load_student_safetensors(weights)
            if opt.get('network_g') is None:
                opt['network_g'] = arch
            elif opt['network_g'].get('type') != arch.get('type'):
                raise ExportError(f'{weights} holds a {arch.get("type")} but network_g is {opt["network_g"]["type"]}')
        return original_build(opt)

    build_model._mixprior_safetensors = True
    test_mod.build_model = build_model


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
