"""Trained networks outside training: build an arch from its options and load its weights, checked.

:func:`build_network_and_load` is the one way the plugin does it (export, evaluation): the arch
dict goes to BasicSR's ``build_network``, the weights go through the checked load of
:mod:`mixprior_plugin.utils.checkpoint` (a param key named explicitly must exist; a strict load
lists what does not fit; a non-strict one still needs :data:`~.checkpoint.MIN_PARTIAL_LOAD_SHARE`
of the network), and the network is frozen in eval mode unless asked otherwise.
"""
from typing import NamedTuple, Optional

from torch import nn

from basicsr.archs import build_network

from mixprior_plugin.utils.checkpoint import extract_state_dict, load_checkpoint, load_state_checked
from mixprior_plugin.utils.options import OptionError
from mixprior_plugin.utils.student_files import (
    is_original_rcan,
    load_student_safetensors,
    rcan_from_original,
    state_for_checkpoint,
)

# The weights read when no param key is named: the EMA weights, falling back to 'params' (BasicSR's).
DEFAULT_PARAM_KEY = 'params_ema'


class LoadedNetwork(NamedTuple):
    """What :func:`build_network_and_load` returns.

    Attributes:
        net (nn.Module): The network with the weights loaded.
        param_key (str | None): The checkpoint key the weights came from (None: a bare state dict,
            a .safetensors file or weights handed over as a dict).
        report (dict): ``load_state_checked``'s report: ``loaded`` / ``total`` parameter tensors and
            ``share``, the fraction of parameter values filled.
    """

    net: nn.Module
    param_key: Optional[str]
    report: dict


def read_weights(path, arch, param_key=None, key_option='param_key'):
    """The BasicSR-layout weights of a weights file, for ``arch``.

    Args:
        path (str): A BasicSR checkpoint (.pth), an RCAN .pth in the original RCAN layout (converted),
            or a .safetensors student file from mixprior-export (its arch type must be ``arch``'s).
        arch (dict): The arch the weights are for.
        param_key (str | None): Checkpoint key; None reads :data:`DEFAULT_PARAM_KEY`, falling back to
            'params'. A key named here must be in the checkpoint (the error lists the keys present).
        key_option (str): The option or flag that names ``param_key``, for that error
            ('--param-key', 'path.teacher_param_key').

    Returns:
        tuple[dict[str, Tensor], str | None]: The weights and the key they came from.
    """
    state = state_for_checkpoint(path, arch)
    if state is not None:
        return state, None
    state, used = extract_state_dict(load_checkpoint(path), param_key or DEFAULT_PARAM_KEY, path,
                                     None if param_key is None else key_option)
    if arch.get('type') == 'RCAN' and is_original_rcan(state):  # mixprior-export --rcan-layout original
        state = rcan_from_original(state, arch)
    return state, used


def build_network_and_load(arch, weights, param_key=None, key_option='param_key', strict=True, freeze=True,
                           device=None, source=None, target=None):
    """Build ``arch`` with BasicSR's ``build_network`` and load ``weights`` into it, checked.

    Args:
        arch (dict): Arch options with ``type`` (a ``network_*`` section); not modified.
        weights (str | dict[str, Tensor]): A weights file (see :func:`read_weights`), or weights
            already read (then ``source`` names where they came from).
        param_key (str | None): Checkpoint key of a weights file (see :func:`read_weights`).
        key_option (str): The option or flag that names ``param_key``, for messages.
        strict (bool): Refuse weights that do not fit exactly (the error lists the missing,
            unexpected and mismatched tensors). False loads the tensors that fit and logs the
            skipped ones, and still refuses a load that fills too little of the network.
        freeze (bool): Eval mode and ``requires_grad`` False on every parameter.
        device (torch.device | str | None): Where to put the network (None: where it was built, CPU).
        source (str | None): How messages name the weights (default: the file's path); the key
            used is appended as `` [key]``.
        target (str | None): How messages name the network (default: the arch type).

    Returns:
        LoadedNetwork: The network, the param key used and the load report.

    Raises:
        OptionError: The arch is not a dict with a type, or cannot be built (one line naming the
            arch and the weights); ``CheckpointMismatchError`` (an OptionError) for weights that do
            not fit; FileNotFoundError / ``CheckpointError`` for a missing or unreadable file.
    """
    if isinstance(weights, dict) and source is None:
        raise ValueError('build_network_and_load: weights handed over as a dict need a source (where they came from)')
    source = source or str(weights)
    if not isinstance(arch, dict) or not isinstance(arch.get('type'), str):
        raise OptionError(f'The arch for {source} must be a mapping with a type, got {arch!r}')
    target = target or arch['type']
    try:
        net = build_network(dict(arch))
    except Exception as err:  # registry KeyError, wrong constructor arguments, ...
        raise OptionError(f'Cannot build {target} for {source}: arch {arch}: {err.__class__.__name__}: '
                          f'{err}') from err
    used = None
    if isinstance(weights, dict):
        state = weights
    else:
        state, used = read_weights(weights, arch, param_key, key_option)
    report = load_state_checked(net, state, f'{source} [{used}]' if used else source, target, strict)
    if freeze:
        net.eval().requires_grad_(False)
    if device is not None:
        net = net.to(device)
    return LoadedNetwork(net, used, report)


def build_from_safetensors(path, device='cpu'):
    """The student network of a mixprior-export .safetensors file (strict load, frozen) and its metadata.

    Returns:
        tuple[nn.Module, dict]: The network and the file's parsed metadata (``arch``, ``scale``, ...).
    """
    arch, state, meta = load_student_safetensors(path)
    net = build_network_and_load(arch, state, device=device, source=path,
                                 target=f'{arch["type"]} from the metadata of {path}').net
    return net, meta


def arch_window(arch, net=None):
    """The size LR inputs must be a multiple of (SwinIR's ``window_size``), or None."""
    return arch.get('window_size') or (getattr(net, 'window_size', None) if net is not None else None)


def net_in_channels(net, arch):
    """Input channels of an SR arch (``num_in_ch`` / ``in_chans``, else the first conv's)."""
    for key in ('num_in_ch', 'in_chans', 'in_channels'):
        if key in arch:
            return arch[key]
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3
