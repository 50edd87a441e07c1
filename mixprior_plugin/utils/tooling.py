"""What the command-line tools share: option files read as a training run reads them, parameter
counts, timing and provenance.

The tools in tools/ import from here (and from the package), never from each other; they run as
``python tools/<tool>.py`` because the package is installed (``pip install -e .``).
"""
import json
import os
import statistics
import sys
import time

import torch

from mixprior_plugin.utils.options import OptionError, normalise_teacher_aliases, yaml_load
from mixprior_plugin.utils.provenance import run_meta  # noqa: F401  (re-exported: tools take it from here)


def deep_update(base, delta):
    """Merge ``delta`` into ``base`` in place, dict by dict (other values replace); returns ``base``."""
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def count_params(module, trainable=False):
    """Number of parameters of ``module`` (with ``trainable``: those with ``requires_grad`` only).

    Args:
        module (nn.Module | Iterable[Tensor]): A module, or parameters.
        trainable (bool): Count only parameters that receive gradients.
    """
    params = module.parameters() if hasattr(module, 'parameters') else module
    return sum(p.numel() for p in params if p.requires_grad or not trainable)


def count_buffers(module):
    """Number of buffer values of ``module`` (running statistics, feature scales, ...)."""
    return sum(b.numel() for b in module.buffers())


def load_options(path, plain=False):
    """An option file read as mixprior-train reads it: safe YAML, duplicate keys refused, teacher aliases
    (``network_teacher``, ``pretrain_network_g_teacher``, ...) renamed to ``network_t`` / ``pretrain_network_t``.

    Args:
        path (str): The YAML file.
        plain (bool): Return plain dicts and lists (JSON-serialisable, comparable with ``==``).

    Returns:
        dict: The options.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        OptionError: Malformed YAML (file and line).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Option file not found: {path}')
    opt = yaml_load(path)
    normalise_teacher_aliases(opt)
    return json.loads(json.dumps(opt)) if plain else opt


def training_options(opt, device, experiments_root, teacher_weights=None, keep_datasets=False):
    """Options as ``build_model`` needs them in one process (what ``parse_options`` adds for a run).

    Args:
        opt (dict): Options from :func:`load_options` (not modified).
        device (torch.device): Where the model runs (``num_gpu`` follows it).
        experiments_root (str): Folder of ``models/`` and ``training_states/``.
        teacher_weights (str | None): Replaces ``path.pretrain_network_t`` when given.
        keep_datasets (bool): Keep the ``datasets`` section (tools that build the model alone drop it).

    Returns:
        dict: A new options dict.
    """
    opt = json.loads(json.dumps(opt))
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=1 if device.type == 'cuda' else 0)
    if not keep_datasets:
        opt.pop('datasets', None)
    path = opt.setdefault('path', {})
    path.update(experiments_root=experiments_root, models=os.path.join(experiments_root, 'models'),
                training_states=os.path.join(experiments_root, 'training_states'))
    if teacher_weights is not None:
        if 'network_t' not in opt:
            raise OptionError(f'{opt.get("name", "the options")} has no network_t, but teacher weights were given')
        path['pretrain_network_t'] = teacher_weights
    return opt


def synchronize(device):
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def median_seconds(fn, runs, warmup=3, device='cpu'):
    """Median wall time of ``fn()`` over ``runs`` calls after ``warmup`` untimed ones (device synchronised).

    Args:
        fn (Callable[[], object]): The work to time.
        runs (int): Timed calls (>= 1).
        warmup (int): Untimed calls first.
        device (str | torch.device): Device to synchronise around each call.

    Returns:
        float: Seconds.
    """
    if runs < 1:
        raise ValueError(f'runs must be >= 1, got {runs}')
    times = []
    for i in range(warmup + runs):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_latency(net, x, runs=10, warmup=3):
    """Median seconds of one forward of ``net`` on ``x`` in eval mode, without gradients.

    Args:
        net (nn.Module): The network (left in eval mode).
        x (Tensor): Input ``(N, C, H, W)`` on the network's device.
        runs (int): Timed forwards.
        warmup (int): Untimed forwards first.
    """
    net.eval()
    with torch.no_grad():
        return median_seconds(lambda: net(x), runs, warmup, x.device)


def write_json(obj, path, announce=False):
    """Write ``obj`` as JSON atomically (temporary file, then rename), creating the folder.

    Args:
        obj: JSON-serialisable object.
        path (str): Target file.
        announce (bool): Print ``Wrote <path>`` afterwards.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
    if announce:
        print(f'Wrote {path}')


def run_and_report(tool, compute, report, json_path=None):
    """The ending every inspection tool shares: compute, print the report, optionally write JSON.

    Args:
        tool (str): Tool name, prefixed to a one-line error (exit status 1).
        compute (callable): Returns the result dict.
        report (callable): Result -> printable text.
        json_path (str | None): Also write the result there.

    Returns:
        The result.
    """
    try:
        info = compute()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        sys.exit(f'{tool}: {err}')
    print(report(info))
    if json_path:
        write_json(info, json_path, announce=True)
    return info
