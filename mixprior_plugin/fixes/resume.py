"""Fixes 0, 1 and 6: resuming on any device, ``--auto_resume`` past broken states, exact resume.

* :func:`portable_load_resume_state` (fix 0, installed on import): the teacher keeps its weights file
  through BasicSR's ``check_resume``, keys the model type never reads are refused, and without CUDA
  the training state is loaded by :func:`load_resume_state`.
* :func:`load_resume_state` (fix 1): on the CPU when there is no GPU; ``--auto_resume`` takes the
  newest training state that loads (with its network files), naming each newer one it skipped.
* :class:`ResumableSampler`, :func:`wrap_create_train_val_dataloader`, :func:`wrap_build_dataloader`
  (fix 6): the resumed run skips the batches already trained on and draws the same random numbers.
"""
import os
import re
import sys
from os import path as osp

import torch

from basicsr.utils import check_resume, scandir
from basicsr.utils.registry import MODEL_REGISTRY

from mixprior_plugin import options_schema
from mixprior_plugin.fixes.common import ORIGINALS, cuda_available
from mixprior_plugin.utils.checkpoint import EXACT_RESUME, load_checkpoint
from mixprior_plugin.utils.model_types import check_model_type
from mixprior_plugin.utils.options import normalise_teacher_aliases
from mixprior_plugin.utils.validation import registry_lookup

_RESUME_POSITION = {}


def _training_state_problem(path, opt, device):
    """(state, None) when ``path`` and the network files of its iteration load, else (None, why)."""
    try:
        state = load_checkpoint(path, map_location=device)
    except Exception as err:  # noqa: BLE001  (any unreadable state is skipped, with the reason)
        return None, str(err).split('. The file')[0]
    if not isinstance(state, dict) or not isinstance(state.get('iter'), int):
        return None, 'not a BasicSR training state'
    models = opt['path'].get('models') or osp.join(osp.dirname(osp.dirname(path)), 'models')
    labels = set()
    if osp.isdir(models):
        labels = {m.group(1) for m in (re.match(r'(net_\w+?)_\d+\.pth$', f) for f in os.listdir(models)) if m}
    for label in sorted(labels):
        weights = osp.join(models, f'{label}_{state["iter"]}.pth')
        try:
            torch.load(weights, map_location='cpu', weights_only=True, mmap=True)
        except Exception as err:  # noqa: BLE001
            return None, f'its {osp.basename(weights)} cannot be loaded ({err.__class__.__name__})'
    return state, None


def load_resume_state(opt):
    """Find and load the training state to resume from, on CPU when there is no GPU.

    With ``--auto_resume`` the newest training state whose file and network files load is used;
    newer ones that do not load (a copy cut short, a disk that filled up) are skipped, each named
    with the reason. An explicit ``path.resume_state`` is loaded as given.

    Args:
        opt (dict): Parsed options (``auto_resume``, ``path.resume_state``,
            ``path.training_states``).

    Returns:
        dict | None: The training state, or None when starting fresh.
    """
    device = torch.device('cuda', torch.cuda.current_device()) if cuda_available() else torch.device('cpu')
    resume_state = None
    if opt['auto_resume']:
        state_dir = opt['path'].get('training_states') or osp.join('experiments', opt['name'], 'training_states')
        if osp.isdir(state_dir):
            iters = sorted((int(osp.splitext(v)[0]) for v in scandir(state_dir, suffix='.state', recursive=False)
                            if osp.splitext(v)[0].isdigit()), reverse=True)
            for it in iters:
                path = osp.join(state_dir, f'{it}.state')
                resume_state, problem = _training_state_problem(path, opt, device)
                if resume_state is not None:
                    opt['path']['resume_state'] = path
                    break
                print(f'Auto-resume: skipping {path}: {problem}', file=sys.stderr, flush=True)
            if iters and resume_state is None:
                print(f'Auto-resume: no loadable training state in {state_dir}: starting afresh.', file=sys.stderr,
                      flush=True)
    elif opt['path'].get('resume_state'):
        resume_state = load_checkpoint(opt['path']['resume_state'], map_location=device)

    if resume_state is None:
        return None
    check_resume(opt, resume_state['iter'])
    _RESUME_POSITION.clear()
    _RESUME_POSITION.update(iter=resume_state['iter'], epoch=resume_state['epoch'],
                            record=resume_state.get('exact_resume'))
    return resume_state


class ResumableSampler:
    """Mixin for BasicSR's EnlargedSampler: skip the first samples of one epoch (see fix 6)."""
    skip_epoch, skip_samples = None, 0

    def __iter__(self):
        indices = list(super().__iter__())
        if self.epoch == self.skip_epoch:
            indices = indices[self.skip_samples:]
            self.skip_epoch = None  # once
        return iter(indices)


def wrap_create_train_val_dataloader(original):

    def create_train_val_dataloader(opt, logger):
        result = original(opt, logger)
        train_loader, train_sampler = result[0], result[1]
        if train_loader is None:
            return result
        shape = dict(per_epoch=len(train_loader), batch_size=train_loader.batch_size,
                     world_size=opt.get('world_size', 1), num_samples=len(train_loader.dataset))
        EXACT_RESUME['loader'] = shape
        if not (_RESUME_POSITION and EXACT_RESUME['enabled']):
            return result
        record = _RESUME_POSITION.get('record')
        if record != shape:
            # a state written by plain BasicSR (or for another loader): BasicSR's own semantics
            logger.info('Resume: the training state has no record of this train loader '
                        f'({"written by plain BasicSR" if record is None else record}): the interrupted epoch '
                        'restarts from its first batch, as in BasicSR.')
            return result
        done = _RESUME_POSITION['iter'] - _RESUME_POSITION['epoch'] * shape['per_epoch']
        if 0 < done <= shape['per_epoch'] and isinstance(train_sampler, ResumableSampler):
            train_sampler.skip_epoch = _RESUME_POSITION['epoch']
            train_sampler.skip_samples = done * train_loader.batch_size
            logger.info(f'Resume: skipping the {done} batches of epoch {_RESUME_POSITION["epoch"]} '
                        'already trained on.')
        return result

    return create_train_val_dataloader


def wrap_build_dataloader(original):

    def build_dataloader(dataset, dataset_opt, num_gpu=1, dist=False, sampler=None, seed=None):
        loader = original(dataset, dataset_opt, num_gpu=num_gpu, dist=dist, sampler=sampler, seed=seed)
        if EXACT_RESUME['enabled']:
            # DataLoader draws a base seed per epoch; from the global torch RNG that would shift the
            # model's random draws (masks, routes) between an interrupted and a resumed run.
            loader.generator = torch.Generator().manual_seed(seed or 0)
        return loader

    return build_dataloader


def exact_resume_requested(opt):
    """Exact resume (fix 6) is on for the plugin's models, off for BasicSR's, unless ``exact_resume`` says."""
    value = options_schema.value(opt, options_schema.TOP, 'exact_resume')
    if value is not None:
        return value
    model_cls = registry_lookup(MODEL_REGISTRY, opt.get('model_type'))
    return getattr(model_cls, '__module__', '').startswith('mixprior_plugin.')


def portable_load_resume_state(opt):
    """Fix 0: BasicSR's ``load_resume_state`` where there is CUDA, else ours (which maps to the CPU).

    The teacher is first listed in ``path.ignore_resume_networks``, so that ``check_resume`` keeps its path,
    and keys the model type would never use are refused (``utils/model_types.py``: a teacher under
    SRModel, ...); train_pipeline calls this first thing after parsing the options.
    """
    normalise_teacher_aliases(opt)
    check_model_type(opt, registry_lookup(MODEL_REGISTRY, opt.get('model_type')))
    if cuda_available():
        return ORIGINALS['load_resume_state'](opt)
    return load_resume_state(opt)
