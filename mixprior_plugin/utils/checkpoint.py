"""Checkpoint I/O: atomic writes, weights-only loads, per-rank training states.

A checkpoint is written to a temporary file in the same folder, flushed to disk and renamed over
the target, so a process killed mid-write leaves the previous file intact (rename is atomic on
POSIX). Loads use ``weights_only=True``: a .pth file cannot run code.
"""
import collections
import os
import random
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist

from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only

from mixprior_plugin.utils.options import OptionError
from mixprior_plugin.utils.student_files import state_for_checkpoint

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


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be loaded (missing, truncated, foreign); the message names it."""

    user_error = True


class CheckpointMismatchError(OptionError, RuntimeError):
    """Weights that do not fit the network built from the options.

    An OptionError for the plugin's reporting and a RuntimeError like the one BasicSR's
    ``load_state_dict`` raises, so code written for plain BasicSR still catches it.
    """


class ResumeMismatchError(OptionError, AssertionError):
    """A training state whose optimizer/scheduler counts differ from the options (BasicSR asserts)."""


# Exact resume (see basicsr_fixes, fix 6): on for the plugin's models unless `exact_resume: false`,
# off for BasicSR's own unless `exact_resume: true`, so plain runs keep BasicSR's random stream.
# `loader` is what the training state records about the train loader, so that a resumed run skips
# only batches of a loader that still has the same shape.
EXACT_RESUME = {'enabled': False, 'loader': None}


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
        raise CheckpointError(f'Cannot load checkpoint {path}: {err.__class__.__name__}: {err}. '
                              'The file is corrupt, truncated or not a PyTorch weights file.') from err


def extract_state_dict(ckpt, param_key, path='<checkpoint>', key_option=None):
    """Pick a state dict out of a BasicSR checkpoint and drop DDP's ``module.`` prefixes.

    Args:
        ckpt (dict): Loaded checkpoint, either ``{param_key: state_dict, ...}`` or a bare
            state dict.
        param_key (str | None): Key to read ('params', 'params_ema'). When it is missing and
            'params' exists, 'params' is used (BasicSR's convention) unless ``key_option`` is given.
        path (str): Only for error messages.
        key_option (str | None): The option or flag that named ``param_key`` explicitly (e.g.
            'path.param_key_g'): then a missing key is an error listing the keys present, never a
            silent fallback to 'params'.

    Returns:
        tuple[dict, str | None]: The state dict and the key actually used.
    """
    if not isinstance(ckpt, dict):
        raise ValueError(f'{path} does not hold a dict of weights.')
    is_bare = any(isinstance(v, torch.Tensor) for v in ckpt.values())
    used = None
    if param_key is not None and param_key in ckpt:
        used = param_key
    elif key_option is not None and param_key is not None and not is_bare:
        raise missing_key_error(key_option, param_key, path, ckpt)
    elif param_key is not None and 'params' in ckpt:
        used = 'params'
    elif is_bare:
        used = None
    else:
        raise KeyError(f'{path} has no key {param_key!r} (keys: {sorted(ckpt)})')
    state = ckpt[used] if used is not None else ckpt
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}
    return state, used


def missing_key_error(key_option, key, path, ckpt):
    """The error for a param key named explicitly but absent from a checkpoint (lists the keys present)."""
    named = f'{key_option} {key!r}' if key_option.startswith('--') else f'Option {key_option}={key!r}'
    return OptionError(f'{named} is not in {path} (keys: {", ".join(sorted(map(str, ckpt)))})')


# A non-strict load (strict_load_*: false, --non-strict) must fill at least this share of the
# network's parameter values; below it the "partially loaded" network is essentially its random
# initialisation, which no run means to use.
MIN_PARTIAL_LOAD_SHARE = 0.5


def load_state_checked(net, state, source, target=None, strict=True):
    """Load ``state`` into ``net``; when they do not fit, say exactly how.

    Args:
        net (nn.Module): Destination.
        state (dict): State dict (e.g. from :func:`extract_state_dict`).
        source (str): Where the weights come from, for the message (a path, an option key).
        target (str | None): What ``net`` is, for the message (default: its class name).
        strict (bool): A mismatch raises CheckpointMismatchError (an OptionError and a RuntimeError)
            listing missing / unexpected / mismatched keys. With False the matching keys are loaded
            and the skipped ones are logged as a warning; a load that fills less than
            :data:`MIN_PARTIAL_LOAD_SHARE` of the network's parameters (none at all, e.g. a
            checkpoint of another width) is still a CheckpointMismatchError, naming both shapes.

    Returns:
        dict: :func:`partial_load_report` of what was loaded.
    """
    target = target or net.__class__.__name__
    mismatch = describe_state_dict_mismatch(net, state)
    own = net.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    report = partial_load_report(net, fitting)
    if mismatch:
        msg = f'{source} does not fit {target}:\n{mismatch}'
        if strict:
            raise CheckpointMismatchError(msg)
        if report['share'] < MIN_PARTIAL_LOAD_SHARE:
            raise CheckpointMismatchError(
                f'{source} fills only {report["loaded"]} of the {report["total"]} parameter tensors of {target} '
                f'({report["share"]:.1%} of its parameters; a non-strict load needs {MIN_PARTIAL_LOAD_SHARE:.0%}): '
                f'{first_mismatch(own, state)}')
        skipped = sorted(set(own) - set(fitting))
        unused = len(set(state) - set(fitting))
        get_root_logger().warning(
            f'{msg}\nNon-strict load: {report["loaded"]} of {report["total"]} parameter tensors of {target} loaded '
            f'({report["share"]:.1%} of its parameters); left as initialised: {", ".join(skipped) or "none"}; '
            f'{unused} tensor(s) of the file unused.')
        state = fitting
    net.load_state_dict(state, strict=strict)
    return report


def partial_load_report(net, fitting):
    """How much of ``net``'s parameters the tensors in ``fitting`` (names and shapes that match) fill.

    Returns:
        dict: ``loaded`` / ``total`` parameter tensors and ``share``, the fraction of parameter values.
    """
    params = dict(net.named_parameters())
    loaded = [k for k in fitting if k in params]
    return dict(loaded=len(loaded), total=len(params),
                share=sum(params[k].numel() for k in loaded) / max(sum(p.numel() for p in params.values()), 1))


def first_mismatch(own, state):
    """The first way ``state`` does not fit a network's ``own`` state dict, as one phrase (both shapes)."""
    for key in own:
        if key in state and tuple(own[key].shape) != tuple(state[key].shape):
            return f'{key}: network {tuple(own[key].shape)} vs file {tuple(state[key].shape)}'
    missing = [k for k in own if k not in state]
    if len(missing) == len(own):
        return (f'no tensor name in common (network: {", ".join(list(own)[:3])}, ...; '
                f'file: {", ".join(list(state)[:3]) or "none"}, ...)')
    return f'{len(missing)} tensors of the network are not in the file ({", ".join(missing[:3])}, ...)'


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


# ---- random number generators (exact resume) ----------------------------------------------------
def rng_state():
    """Python, NumPy and torch (CPU, CUDA) RNG states as tensors/ints, loadable with weights_only."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = dict(python=dict(version=version, internal=list(internal), gauss=gauss),
                 numpy=dict(name=np_name, keys=torch.from_numpy(np_keys.astype(np.int64)), pos=int(np_pos),
                            has_gauss=int(np_has_gauss), gauss=float(np_gauss)),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what :func:`rng_state` captured."""
    py = state['python']
    random.setstate((py['version'], tuple(py['internal']), py['gauss']))
    n = state['numpy']
    np.random.set_state((n['name'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['gauss']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def python_rng_state(rng):
    """A ``random.Random``'s state in a weights_only-loadable form."""
    version, internal, gauss = rng.getstate()
    return dict(version=version, internal=list(internal), gauss=gauss)


def set_python_rng_state(rng, state):
    rng.setstate((state['version'], tuple(state['internal']), state['gauss']))


# ---- BasicSR model methods: atomic saves, strict weights-only loads, RNG in training states -------
def save_with_retries(obj, path, retries=3):
    """:func:`atomic_save` with BasicSR's policy on failure: retry (1 s apart), then warn and go on.

    BasicSR retries a failed save three times and then carries on training with a warning (a
    full disk or a network file system hiccup must not end a long run); the previous checkpoint
    stays intact because the write is atomic.
    """
    for attempt in range(retries):
        try:
            atomic_save(obj, path)
            return True
        except Exception as err:  # noqa: BLE001  (BasicSR catches every save error)
            get_root_logger().warning(f'Save model error: {err}, remaining retry times: {retries - attempt - 1}')
            if attempt + 1 < retries:
                time.sleep(1)
    get_root_logger().warning(f'Still cannot save {path}. Just ignore it.')
    return False


@master_only
def save_network(self, net, net_label, current_iter, param_key='params'):
    """BasicSR's ``BaseModel.save_network``, written atomically (temporary file + rename)."""
    label = 'latest' if current_iter == -1 else current_iter
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    save_dict = {}
    for net_, key in zip(nets, keys):
        state = self.get_bare_model(net_).state_dict()
        save_dict[key] = collections.OrderedDict(
            ((k[7:] if k.startswith('module.') else k), v.detach().cpu()) for k, v in state.items())
    save_with_retries(save_dict, os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))


def _gather_per_rank(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` (a collective under torch.distributed, else ``[obj]``)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def save_training_state(self, epoch, current_iter):
    """BasicSR's training state (optimizers, schedulers) plus every rank's RNG states, written atomically.

    Called on every rank (BasicSR's ``save`` is): the ranks' RNG states and model extras
    (``training_state_extras()``, e.g. MiPKD's route generator) are gathered, and rank 0 writes
    them as ``rng_per_rank`` / ``extras_per_rank`` (``rng`` / ``extras`` hold rank 0's, as
    before). With exact resume on, the train loader's shape is recorded too.
    """
    if current_iter == -1:
        return
    extras = getattr(self, 'training_state_extras', None)
    mine = dict(rng=rng_state(), extras=extras() if extras is not None else None)
    per_rank = _gather_per_rank(mine)
    if self.opt.get('rank', 0) != 0:
        return
    state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
             'schedulers': [s.state_dict() for s in self.schedulers], 'rng': per_rank[0]['rng'],
             'rng_per_rank': [r['rng'] for r in per_rank]}
    if extras is not None:
        state['extras'] = per_rank[0]['extras']
        state['extras_per_rank'] = [r['extras'] for r in per_rank]
    if EXACT_RESUME['enabled'] and EXACT_RESUME['loader'] is not None:
        state['exact_resume'] = dict(EXACT_RESUME['loader'])
    save_with_retries(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))


def _own_rank_entry(resume_state, key, rank, world_size, what):
    """This rank's entry of ``<key>_per_rank`` (falls back to rank 0's ``<key>`` with a warning)."""
    per_rank = resume_state.get(f'{key}_per_rank')
    if per_rank is not None and len(per_rank) == world_size:
        return per_rank[rank]
    if per_rank is not None or (world_size > 1 and resume_state.get(key) is not None):
        get_root_logger().warning(f'The training state holds the {what} of {len(per_rank or [None])} rank(s), '
                                  f'this run has {world_size}: every rank restores rank 0\'s.')
    return resume_state.get(key)


def resume_training(self, resume_state):
    """BasicSR's ``resume_training`` with clear count errors, then this rank's RNG states and extras.

    Without exact resume (basicsr_fixes, fix 6) the log says that the interrupted epoch restarts.
    """
    for what, have in (('optimizers', self.optimizers), ('schedulers', self.schedulers)):
        if len(resume_state[what]) != len(have):
            raise ResumeMismatchError(f'The training state has {len(resume_state[what])} {what} but the options '
                                      f'build {len(have)}: resume with the options of that run')
    for optimizer, state in zip(self.optimizers, resume_state['optimizers']):
        optimizer.load_state_dict(state)
    for scheduler, state in zip(self.schedulers, resume_state['schedulers']):
        scheduler.load_state_dict(state)
    rank, world_size = self.opt.get('rank', 0), self.opt.get('world_size', 1)
    rng = _own_rank_entry(resume_state, 'rng', rank, world_size, 'RNG states')
    if EXACT_RESUME['enabled'] and rng is not None:
        set_rng_state(rng)
    if not EXACT_RESUME['enabled']:
        get_root_logger().info(
            f'Resume: exact resume is off (BasicSR\'s own train_pipeline without mixprior-train, or '
            f'exact_resume: false): the interrupted epoch {resume_state["epoch"]} restarts from its first batch, as '
            'in BasicSR, so the run will not end with the weights of an uninterrupted one.')
    restore = getattr(self, 'restore_training_state_extras', None)
    extras = _own_rank_entry(resume_state, 'extras', rank, world_size, 'model extras') \
        if 'extras' in resume_state else None
    if restore is not None and extras is not None:
        restore(extras)


def load_network(self, net, load_path, strict=True, param_key='params'):
    """BasicSR's ``load_network``: weights_only, and a readable list of what does not fit.

    A ``.safetensors`` student written by mixprior-export loads too (its weights in BasicSR's layout).
    Testing (``is_train`` false) loads strictly unless mixprior-test was told ``--non-strict``
    (``basicsr_fixes.normalise_test_options``); the error then says so.
    """
    net = self.get_bare_model(net)
    target = f'{net.__class__.__name__} as built from the options (a checkpoint of another arch or size?' + \
        (')' if self.opt.get('is_train', True) else '; a test loads strictly: mixprior-test --non-strict evaluates '
         'a partial load)')
    if str(load_path).endswith('.safetensors'):
        get_root_logger().info(f'Loading {net.__class__.__name__} model from {load_path}.')
        load_state_checked(net, state_for_checkpoint(str(load_path), None), load_path, target, strict)
        return
    state, used = extract_state_dict(load_checkpoint(load_path), param_key, load_path)
    get_root_logger().info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{used}].')
    load_state_checked(net, state, f'{load_path} [{used}]', target, strict)


class CheckpointMixin:
    """Checkpoint behaviour for a BasicSR model class: put it before the BasicSR base class.

    ``class KDModel(CheckpointMixin, SRModel)`` gets atomic saves with BasicSR's retries, strict
    weights-only loads that list what does not fit, and training states holding every rank's RNG
    states and the model's extras (``training_state_extras()`` / ``restore_training_state_extras()``).
    The plugin's models inherit it; mixprior-train and mixprior-test give it to BasicSR's own models
    for their run only (``basicsr_fixes.with_fixes``). BaseModel itself is never changed.
    """

    save_network = save_network
    save_training_state = save_training_state
    resume_training = resume_training
    load_network = load_network
