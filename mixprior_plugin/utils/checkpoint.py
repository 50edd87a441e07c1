"""Checkpoint I/O: atomic writes and weights-only loads.

A checkpoint is written to a temporary file in the same folder, flushed to disk and renamed over
the target, so a process killed mid-write leaves the previous file intact (rename is atomic on
POSIX). Loads use ``weights_only=True``: a .pth file cannot run code.
"""
import collections
import os
import tempfile

import torch

# Objects BasicSR puts into training states besides tensors (MultiStepRestartLR keeps its
# milestones in a Counter).
torch.serialization.add_safe_globals([collections.Counter])


def atomic_save(obj, path):
    """torch.save ``obj`` to ``path`` through a temporary file and an atomic rename.

    Args:
        obj: Anything torch.save accepts.
        path (str): Destination file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path, map_location='cpu'):
    """Load a .pth / .state file with weights_only=True and a clear error when it is unusable.

    Args:
        path (str): File to load.
        map_location: As for torch.load.

    Returns:
        The loaded object.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Checkpoint file not found: {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise RuntimeError(f'Cannot load checkpoint {path}: {err.__class__.__name__}: {err}. '
                           'The file is corrupt, truncated or not a PyTorch weights file.') from err


def extract_state_dict(ckpt, param_key, path='<checkpoint>'):
    """Pick a state dict out of a BasicSR checkpoint and drop DDP's ``module.`` prefixes.

    Args:
        ckpt (dict): Loaded checkpoint, either ``{param_key: state_dict, ...}`` or a bare
            state dict.
        param_key (str | None): Key to read ('params', 'params_ema'). When it is missing and
            'params' exists, 'params' is used (BasicSR's convention).
        path (str): Only for error messages.

    Returns:
        tuple[dict, str | None]: The state dict and the key actually used.
    """
    if not isinstance(ckpt, dict):
        raise ValueError(f'{path} does not hold a dict of weights.')
    used = None
    if param_key is not None and param_key in ckpt:
        used = param_key
    elif param_key is not None and 'params' in ckpt:
        used = 'params'
    elif any(isinstance(v, torch.Tensor) for v in ckpt.values()):
        used = None
    else:
        raise KeyError(f'{path} has no key {param_key!r} (keys: {sorted(ckpt)})')
    state = ckpt[used] if used is not None else ckpt
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}
    return state, used


def describe_state_dict_mismatch(net, state):
    """Readable list of missing / unexpected / shape-mismatched keys, or '' when they fit.

    Args:
        net (nn.Module): Network the weights are meant for.
        state (dict): State dict to check.
    """
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    lines = []

    def block(title, keys, fmt):
        if keys:
            lines.append(f'  {title} ({len(keys)}):')
            lines.extend('    ' + fmt(k) for k in keys[:20])
            if len(keys) > 20:
                lines.append(f'    ... and {len(keys) - 20} more')

    block('missing in file', missing, str)
    block('unexpected in file', unexpected, str)
    block('shape mismatch', mismatched,
          lambda k: f'{k}: network {tuple(own[k].shape)} vs file {tuple(state[k].shape)}')
    return '\n'.join(lines)
