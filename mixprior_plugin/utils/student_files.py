"""Reading the student files that mixprior-export writes, and the formats they convert between.

* safetensors with metadata (:data:`META_KEYS`, tagged :data:`FORMAT_TAG`): the weights and the
  arch they fit, so that :func:`load_student_safetensors` needs no option file.
* RCAN in the original RCAN code's key layout (spandrel, chaiNNer): :func:`rcan_to_original` and
  back (:func:`rcan_from_original`), weights unchanged.
* ONNX: :class:`OnnxSR` runs an exported graph in onnxruntime like a PyTorch network.

Everything that loads a student (evaluation, mixprior-test, the export's own parity check) reads
through this module; writing stays in :mod:`mixprior_plugin.export`. onnx, onnxruntime and
safetensors are optional (``pip install mixprior[export]``) and imported on first use only.
"""
import importlib
import json
import os
import re

import torch
from torch import nn

INSTALL_HINT = 'pip install mixprior[export]'
# Identifies our safetensors / ONNX metadata (a version, so that readers can refuse a future layout).
FORMAT_TAG = 'mixprior.student.v1'
META_KEYS = ('format', 'arch', 'arch_type', 'scale', 'layout', 'source_options', 'source_checkpoint', 'param_key',
             'git_commit', 'git_dirty')
LAYOUTS = ('basicsr', 'original')


class ExportError(ValueError):
    """A student that cannot be written to or read from these formats; the message names the file or key."""


def require(module, purpose):
    """Import an optional dependency, or say how to install it.

    Args:
        module (str): Module name ('onnx', 'onnxruntime', 'safetensors.torch', 'spandrel').
        purpose (str): What it is needed for, for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ExportError(f'{purpose} needs the Python package {module.split(".")[0]!r}, which is not installed '
                          f'({err}). Install the export extras: {INSTALL_HINT}') from err


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


def state_for_checkpoint(path, arch):
    """BasicSR-layout weights of a .safetensors student file, for ``arch``.

    Args:
        path (str): A weights file of any kind.
        arch (dict | None): The arch the weights are for (None: whatever the file holds); its type
            must be the one in the file's metadata.

    Returns:
        dict[str, Tensor] | None: The weights, or None for any file but a .safetensors one (the
        caller loads it as a BasicSR checkpoint).
    """
    if path.endswith('.safetensors'):
        meta_arch, state, _ = load_student_safetensors(path)
        if arch is not None and arch.get('type') != meta_arch.get('type'):
            raise ExportError(f'{path} holds a {meta_arch.get("type")} but the options ask for {arch.get("type")}')
        return state
    return None


# ---- ONNX --------------------------------------------------------------------------------------------
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

