"""The few fixes BasicSR master needs on today's PyTorch, applied by mixprior's entry points.

Each replaces one BasicSR function in the module namespace where `train_pipeline` /
`test_pipeline` look it up at call time (see ../shared/spec/BASICSR_NOTES.md):

1. ``load_resume_state``: BasicSR calls ``torch.cuda.current_device()`` unconditionally, so
   resuming crashes without CUDA. Ours maps the state to the GPU when there is one, else to CPU.
2. ``init_dist``: rank and world size come from torchrun's environment (``LOCAL_RANK``,
   ``RANK``, ``WORLD_SIZE``), with NCCL on GPUs and gloo on CPU. BasicSR assumes CUDA/NCCL.
3. ``parse_options``: torch < 2 launchers pass ``--local-rank=N``, which BasicSR's argparse
   rejects; we move it into ``LOCAL_RANK``. A ``num_gpu`` that asks for GPUs on a machine
   without CUDA falls back to CPU with a warning, so any existing option file runs here.
   Teacher-option aliases are normalised before BasicSR's resume logic rewrites paths.
4. ``BaseModel.model_to_device``: DDP on CPU needs ``device_ids=None``.
5. ``yaml_load``: BasicSR uses PyYAML's full loader; ours is the safe loader and names the
   file and line of a syntax error.

Reliability (same mechanism):

6. Checkpoints and training states are written atomically (temporary file + rename); training
   states carry the RNG states; loads are ``weights_only`` and a checkpoint that does not fit the
   options is refused with a list of the offending keys (``BaseModel.save_network``,
   ``save_training_state``, ``resume_training``, ``load_network``).
7. Exact resume: BasicSR restarts the interrupted epoch from its first batch; the train sampler
   now skips the batches the interrupted run had already consumed, and data loaders draw their
   base seed from their own generator, so restoring the RNG states reproduces the same batches,
   augmentations and masks (exact with ``num_worker_per_gpu: 0``; with workers, which BasicSR
   reseeds every epoch, the augmentations of the resumed epoch differ).
8. Options are validated before anything is built (types, paths, scales; utils/validation.py)
   and a paired-image sample that cannot be read, or whose LR and HR sizes disagree, raises an
   error naming the files.
"""
import os
import sys
import warnings
from os import path as osp

import torch

_APPLIED = False


def cuda_available():
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


_RESUME_POSITION = {}


def load_resume_state(opt):
    """Find and load the training state to resume from, on CPU when there is no GPU.

    Args:
        opt (dict): Parsed options (``auto_resume``, ``path.resume_state``,
            ``path.training_states``).

    Returns:
        dict | None: The training state, or None when starting fresh.
    """
    from basicsr.utils import check_resume, scandir

    from mixprior_plugin.utils.checkpoint import load_checkpoint

    resume_state_path = None
    if opt['auto_resume']:
        state_dir = opt['path'].get('training_states') or osp.join('experiments', opt['name'], 'training_states')
        if osp.isdir(state_dir):
            iters = [int(osp.splitext(v)[0]) for v in scandir(state_dir, suffix='.state', recursive=False)
                     if osp.splitext(v)[0].isdigit()]
            if iters:
                resume_state_path = osp.join(state_dir, f'{max(iters)}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']

    if resume_state_path is None:
        return None
    if cuda_available():
        device = torch.device('cuda', torch.cuda.current_device())
    else:
        device = torch.device('cpu')
    resume_state = load_checkpoint(resume_state_path, map_location=device)
    check_resume(opt, resume_state['iter'])
    _RESUME_POSITION.update(iter=resume_state['iter'], epoch=resume_state['epoch'])
    return resume_state


class ResumableSampler:
    """Mixin for BasicSR's EnlargedSampler: skip the first samples of one epoch (see fix 7)."""

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
        if _RESUME_POSITION and train_loader is not None:
            per_epoch = len(train_loader)
            done = _RESUME_POSITION['iter'] - _RESUME_POSITION['epoch'] * per_epoch
            if 0 < done <= per_epoch and isinstance(train_sampler, ResumableSampler):
                train_sampler.skip_epoch = _RESUME_POSITION['epoch']
                train_sampler.skip_samples = done * train_loader.batch_size
                logger.info(f'Resume: skipping the {done} batches of epoch {_RESUME_POSITION["epoch"]} '
                            'already trained on.')
        return result

    return create_train_val_dataloader


def wrap_build_dataloader(original):

    def build_dataloader(dataset, dataset_opt, num_gpu=1, dist=False, sampler=None, seed=None):
        loader = original(dataset, dataset_opt, num_gpu=num_gpu, dist=dist, sampler=sampler, seed=seed)
        # DataLoader draws a base seed per epoch; from the global torch RNG that would shift the
        # model's random draws (masks, routes) between an interrupted and a resumed run.
        loader.generator = torch.Generator().manual_seed(seed or 0)
        return loader

    return build_dataloader


def init_dist(launcher, backend='nccl', **kwargs):
    """Initialise torch.distributed from torchrun's environment; gloo when there is no GPU."""
    import torch.distributed as dist
    if launcher != 'pytorch':
        from basicsr.utils import dist_util
        return dist_util.init_dist(launcher, backend=backend, **kwargs)
    for var in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if var not in os.environ:
            raise RuntimeError(f'--launcher pytorch needs the environment variable {var}; '
                               'start the run with torchrun (see README, "Several GPUs").')
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if cuda_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    else:
        backend = 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, **kwargs)


def model_to_device(self, net):
    """BasicSR's BaseModel.model_to_device, valid on CPU under DDP too."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    net = net.to(self.device)
    if self.opt['dist']:
        find_unused = self.opt.get('find_unused_parameters', False)
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


def _strip_local_rank_arg(argv):
    """Remove ``--local-rank N`` / ``--local_rank=N`` from argv, exporting LOCAL_RANK instead."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        for flag in ('--local-rank', '--local_rank'):
            if arg == flag and i + 1 < len(argv):
                os.environ.setdefault('LOCAL_RANK', argv[i + 1])
                i += 2
                break
            if arg.startswith(flag + '='):
                os.environ.setdefault('LOCAL_RANK', arg.split('=', 1)[1])
                i += 1
                break
        else:
            out.append(arg)
            i += 1
    return out


def normalise_device_options(opt):
    """Fall back to CPU (num_gpu 0) when the options ask for GPUs that this machine lacks."""
    if opt.get('num_gpu', 0) not in (0, None) and not cuda_available():
        warnings.warn(f"num_gpu={opt['num_gpu']} but no CUDA device is available: running on CPU.")
        opt['num_gpu'] = 0
    return opt


def wrap_parse_options(original):

    def parse_options(root_path, is_train=True):
        from mixprior_plugin.utils.options import normalise_teacher_aliases
        from mixprior_plugin.utils.validation import validate_options
        sys.argv = _strip_local_rank_arg(sys.argv)
        opt, args = original(root_path, is_train=is_train)
        normalise_device_options(opt)
        normalise_teacher_aliases(opt)
        validate_options(opt)
        return opt, args

    parse_options._mixprior_wrapped = True
    return parse_options


def apply():
    """Apply the fixes (idempotent). Called by mixprior-train / mixprior-test."""
    global _APPLIED
    if _APPLIED:
        return
    import basicsr  # noqa: F401  (imports the submodules below)
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from basicsr.models.base_model import BaseModel

    from mixprior_plugin.utils import checkpoint
    from mixprior_plugin.utils.options import yaml_load
    from mixprior_plugin.utils.validation import checked_getitem
    train_mod, test_mod = sys.modules['basicsr.train'], sys.modules['basicsr.test']
    options_mod = sys.modules['basicsr.utils.options']

    train_mod.load_resume_state = load_resume_state
    options_mod.init_dist = init_dist
    options_mod.yaml_load = yaml_load
    train_mod.parse_options = wrap_parse_options(train_mod.parse_options)
    test_mod.parse_options = wrap_parse_options(test_mod.parse_options)
    BaseModel.model_to_device = model_to_device
    BaseModel.save_network = checkpoint.save_network
    BaseModel.save_training_state = checkpoint.save_training_state
    BaseModel.resume_training = checkpoint.resume_training
    BaseModel.load_network = checkpoint.load_network
    train_mod.EnlargedSampler = type('EnlargedSampler', (ResumableSampler, train_mod.EnlargedSampler), {})
    train_mod.create_train_val_dataloader = wrap_create_train_val_dataloader(train_mod.create_train_val_dataloader)
    train_mod.build_dataloader = wrap_build_dataloader(train_mod.build_dataloader)
    test_mod.build_dataloader = wrap_build_dataloader(test_mod.build_dataloader)
    PairedImageDataset.__getitem__ = checked_getitem(PairedImageDataset.__getitem__)
    _APPLIED = True
