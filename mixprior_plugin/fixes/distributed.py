"""Fixes 2 and 4: torchrun launches on any device, and the model classes the entry points build.

* :func:`init_dist`: rank and world size from torchrun's environment, NCCL on GPUs and gloo on CPU.
* :func:`strip_local_rank_arg`: torch < 2 launchers' ``--local-rank=N`` moved into ``LOCAL_RANK``.
* :func:`wrap_build_model`: every model class gets :class:`EntryPointModelMixin` (checkpointing,
  and DDP on CPU) and, for BasicSR's real-world models, degradation synthesis on its device.
"""
import os
from copy import deepcopy

import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from mixprior_plugin import options_schema
from mixprior_plugin.fixes.common import cuda_available
from mixprior_plugin.utils.checkpoint import CheckpointMixin
from mixprior_plugin.utils.options import OptionError


def init_dist(launcher, backend='nccl', **kwargs):
    """Initialise torch.distributed from torchrun's environment; gloo when there is no GPU."""
    import torch.distributed as dist
    if launcher != 'pytorch':
        from basicsr.utils import dist_util
        return dist_util.init_dist(launcher, backend=backend, **kwargs)
    for var in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if var not in os.environ:
            raise OptionError(f'--launcher pytorch needs the environment variable {var}, which torchrun sets: start '
                              'the run with torchrun --nproc_per_node=N -m mixprior_plugin.train -opt X.yml '
                              '--launcher pytorch (or python -m torch.distributed.run ...), or drop --launcher')
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if cuda_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    else:
        backend = 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, **kwargs)


class EntryPointModelMixin(CheckpointMixin):
    """What mixprior-train / mixprior-test give every model class they build (see :func:`with_fixes`)."""

    def model_to_device(self, net):
        """BasicSR's BaseModel.model_to_device, valid on CPU under DDP too."""
        net = net.to(self.device)
        if self.opt['dist']:
            find_unused = options_schema.value(self.opt, options_schema.TOP, 'find_unused_parameters')
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net


_WITH_FIXES = {}


def with_fixes(model_cls):
    """``model_cls`` with :class:`EntryPointModelMixin` in front (same name; cached per class).

    The plugin's models already have :class:`CheckpointMixin` and their own ``model_to_device``:
    they are returned as they are.
    """
    from mixprior_plugin.models.synthesis import SynthesisOnDevice, synthesis_bases
    if issubclass(model_cls, CheckpointMixin):
        return model_cls
    if model_cls not in _WITH_FIXES:
        device_fix = (SynthesisOnDevice, ) if model_cls in synthesis_bases() else ()
        _WITH_FIXES[model_cls] = type(model_cls.__name__, (EntryPointModelMixin, *device_fix, model_cls),
                                      {'__module__': model_cls.__module__, '__doc__': model_cls.__doc__})
    return _WITH_FIXES[model_cls]


def wrap_build_model():
    """BasicSR's build_model, building the model class :func:`with_fixes`."""

    def build_model(opt):
        opt = deepcopy(opt)
        model = with_fixes(MODEL_REGISTRY.get(opt['model_type']))(opt)
        get_root_logger().info(f'Model [{model.__class__.__name__}] is created.')
        return model

    return build_model


def strip_local_rank_arg(argv):
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
