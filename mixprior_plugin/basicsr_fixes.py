"""The few fixes BasicSR master needs on today's PyTorch, and what mixprior's entry points add.

What ``import mixprior_plugin`` changes in BasicSR (so that a project's own train.py calling
``basicsr.train.train_pipeline`` after the import gets a KD run that trains, saves and resumes):

0. ``basicsr.train.load_resume_state`` only (:func:`install_on_import`): without CUDA it loads the
   training state to the CPU, where BasicSR's calls ``torch.cuda.current_device()`` and crashes;
   and before BasicSR's ``check_resume`` repoints every ``network_*`` to ``net_<x>_<iter>.pth`` it
   lists the teacher in ``path.ignore_resume_networks``, so the teacher keeps its weights file.
   It first refuses keys that the model type would never use (a teacher under SRModel, GAN keys
   under KDModel, ...: ``utils/model_types.py``); with CUDA it then runs BasicSR's function.

The model-level behaviour (atomic saves with BasicSR's retries, strict weights-only loads, every
rank's RNG states and the model's extras in training states) is :class:`CheckpointMixin` on the
plugin's own model classes; BaseModel is never patched. The plugin's models also validate their
own sections (``distill``, ``mixer``, their ``train`` keys) when they are built.

``mixprior-train`` / ``mixprior-test`` then apply the rest explicitly (:func:`apply`), each
replacing one BasicSR function in the module namespace where ``train_pipeline`` /
``test_pipeline`` look it up at call time:

1. ``load_resume_state``: as above, and ``--auto_resume`` takes the newest training state that
   loads (with its network files), naming each newer one it skipped.
2. ``init_dist``: rank and world size come from torchrun's environment (``LOCAL_RANK``,
   ``RANK``, ``WORLD_SIZE``), with NCCL on GPUs and gloo on CPU. BasicSR assumes CUDA/NCCL.
3. ``parse_options``: torch < 2 launchers pass ``--local-rank=N``, which BasicSR's argparse
   rejects; we move it into ``LOCAL_RANK``. A ``num_gpu`` that asks for GPUs on a machine
   without CUDA falls back to CPU with a warning, so any existing option file runs here.
   Teacher-option aliases are normalised before BasicSR's resume logic rewrites paths. Options and
   the files they name are validated before anything is built or created (types, ranges,
   registered names, paths, data layouts, LR/HR sizes; utils/validation.py).
4. ``build_model``: the model class gets :class:`CheckpointMixin` (BasicSR's own models too, for
   this run only) and a ``model_to_device`` that wraps DDP on CPU (``device_ids=None``); BasicSR's
   RealESRNetModel and RealESRGANModel also get their degradation synthesis on the model's device
   (``models/synthesis.py``: BasicSR's ``.cuda()`` calls fail without CUDA).
5. ``yaml_load``: BasicSR uses PyYAML's full loader; ours is the safe loader and names the
   file and line of a syntax error or a duplicate key.
6. Exact resume, on for the plugin's models and off for BasicSR's (``exact_resume: true|false``
   overrides), so a plain BasicSR run keeps BasicSR's random stream: the train sampler skips the
   batches the interrupted run had already consumed, data loaders draw their base seed from their
   own generator and the RNG states are restored, so the same batches, augmentations and masks
   follow (exact with ``num_worker_per_gpu: 0``; with workers, which BasicSR reseeds every epoch,
   the augmentations of the resumed epoch differ). A training state without mixprior's record of
   the train loader (written by plain BasicSR, or for another batch size or data set) resumes as
   in BasicSR: the interrupted epoch restarts from its first batch.
7. A paired-image sample that cannot be read, or whose LR and HR sizes disagree, raises an error
   naming the files (``PairedImageDataset.__getitem__``).
8. A mistake in the options or data ends the run with one line naming the key or file (the
   traceback with ``--debug`` or for an unexpected error), and an experiment folder BasicSR
   archived before the error is put back when the failed run saved nothing (``mkdir_and_rename``).
9. ``MessageLogger``: the ETA is never negative (BasicSR's counts one iteration too few, so at
   the last iteration of a slow run it prints "-1 day, 23:59:59").
10. Testing (``mixprior-test``): the student loads strictly unless ``--non-strict`` is given
   (``strict_load_g: false`` in a training file is ignored, with a notice), an explicit
   ``path.param_key_g`` must be in the checkpoint, and a training option file's training set is
   skipped (only its val/test sets are evaluated), with a notice.
11. ``basicsr.data.degradations.add_jpg_compression`` passes its (float) quality to OpenCV, which
   OpenCV 5 refuses; the quality is rounded to an integer first (:func:`fix_jpg_quality`).
"""
import os
import sys
import warnings
from os import path as osp

import torch

from mixprior_plugin.utils.checkpoint import CheckpointMixin

_APPLIED = False
# Command-line flags of the entry points that BasicSR's argparse does not know (set by mixprior-test).
ENTRY_FLAGS = {'non_strict': False}


def cuda_available():
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


_RESUME_POSITION = {}
# (folder, where BasicSR archived the previous one) for each mkdir_and_rename of this process
ARCHIVED = []
# BasicSR's functions as they were before apply() (for tests comparing plain BasicSR with the plugin)
ORIGINALS = {}


def _training_state_problem(path, opt, device):
    """(state, None) when ``path`` and the network files of its iteration load, else (None, why)."""
    import re

    from mixprior_plugin.utils.checkpoint import load_checkpoint
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
    from basicsr.utils import check_resume, scandir

    from mixprior_plugin.utils.checkpoint import load_checkpoint

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
        from mixprior_plugin.utils.checkpoint import EXACT_RESUME
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
        from mixprior_plugin.utils.checkpoint import EXACT_RESUME
        loader = original(dataset, dataset_opt, num_gpu=num_gpu, dist=dist, sampler=sampler, seed=seed)
        if EXACT_RESUME['enabled']:
            # DataLoader draws a base seed per epoch; from the global torch RNG that would shift the
            # model's random draws (masks, routes) between an interrupted and a resumed run.
            loader.generator = torch.Generator().manual_seed(seed or 0)
        return loader

    return build_dataloader


def wrap_mkdir_and_rename(original):
    """Record BasicSR's archiving of an existing experiment folder, so a failed start can undo it."""

    def mkdir_and_rename(path):
        before = set(os.listdir(osp.dirname(path) or '.')) if osp.exists(path) else None
        original(path)
        if before is not None:
            archived = sorted(set(os.listdir(osp.dirname(path) or '.')) - before)
            if archived:
                ARCHIVED.append((path, osp.join(osp.dirname(path), archived[-1])))

    return mkdir_and_rename


def undo_archiving():
    """Put back folders BasicSR archived in this run when the new ones hold no checkpoint.

    Returns:
        list[str]: The folders restored.
    """
    import shutil
    restored = []
    while ARCHIVED:
        path, archived = ARCHIVED.pop()
        saved = [f for sub in ('models', 'training_states') if osp.isdir(osp.join(path, sub))
                 for f in os.listdir(osp.join(path, sub))]
        if saved or not osp.isdir(archived):
            continue
        shutil.rmtree(path, ignore_errors=True)
        os.rename(archived, path)
        restored.append(path)
    return restored


def report_errors(prog, run):
    """Run ``run()``; a mistake in the options or data ends the process with one readable line.

    The traceback is printed only with ``--debug`` or for an unexpected error. Folders BasicSR
    archived before the error are put back when the run saved nothing.

    Args:
        prog (str): Program name for the message (e.g. 'mixprior-train').
        run (callable): The pipeline.
    """
    from mixprior_plugin.utils.options import is_user_error
    ARCHIVED.clear()
    try:
        return run()
    except Exception as err:
        for path in undo_archiving():
            print(f'{prog}: nothing was saved: restored {path} as it was before this run.', file=sys.stderr)
        if '--debug' in sys.argv or not is_user_error(err):
            raise
        print(f'{prog}: error: {err.__class__.__name__}: {err}', file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def init_dist(launcher, backend='nccl', **kwargs):
    """Initialise torch.distributed from torchrun's environment; gloo when there is no GPU."""
    import torch.distributed as dist
    if launcher != 'pytorch':
        from basicsr.utils import dist_util
        return dist_util.init_dist(launcher, backend=backend, **kwargs)
    from mixprior_plugin.utils.options import OptionError
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
        from torch.nn.parallel import DataParallel, DistributedDataParallel
        net = net.to(self.device)
        if self.opt['dist']:
            find_unused = self.opt.get('find_unused_parameters', False)
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
        from copy import deepcopy

        from basicsr.utils import get_root_logger
        from basicsr.utils.registry import MODEL_REGISTRY
        opt = deepcopy(opt)
        model = with_fixes(MODEL_REGISTRY.get(opt['model_type']))(opt)
        get_root_logger().info(f'Model [{model.__class__.__name__}] is created.')
        return model

    return build_model


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


def exact_resume_requested(opt):
    """Exact resume (fix 6) is on for the plugin's models, off for BasicSR's, unless ``exact_resume`` says."""
    from basicsr.utils.registry import MODEL_REGISTRY

    from mixprior_plugin.utils.options import OptionError
    from mixprior_plugin.utils.validation import registry_lookup
    value = opt.get('exact_resume')
    if value is not None:
        if not isinstance(value, bool):
            raise OptionError(f'Option exact_resume must be true or false, got {value!r}')
        return value
    model_cls = registry_lookup(MODEL_REGISTRY, opt.get('model_type'))
    return getattr(model_cls, '__module__', '').startswith('mixprior_plugin.')


def normalise_test_options(opt):
    """Test-time defaults where BasicSR would fail or evaluate something else than asked (fix 10).

    * ``val.suffix`` missing with ``save_img`` on: BasicSR raises KeyError; it defaults to None.
    * The student loads strictly: ``path.strict_load_g: false`` (BasicSR's fine-tuning files set
      it) is ignored with a notice, unless mixprior-test got ``--non-strict``.
    * The training set of a training option file is not evaluated (it is often hours of patches);
      a notice names the sets that are.

    Runs before the options are validated; :func:`default_test_param_key` runs after.
    """
    from mixprior_plugin.utils.options import OptionError
    if opt.get('is_train'):
        return opt
    val = opt.get('val')
    if isinstance(val, dict) and val.get('save_img') and 'suffix' not in val:
        val['suffix'] = None
    path = opt.get('path')
    if isinstance(path, dict) and path.get('pretrain_network_g'):
        if ENTRY_FLAGS['non_strict']:
            path['strict_load_g'] = False
        elif path.get('strict_load_g', True) is False:
            print('mixprior-test: path.strict_load_g: false is ignored: a test loads the student strictly '
                  '(--non-strict evaluates a partial load).', flush=True)
            path['strict_load_g'] = True
    datasets = opt.get('datasets')
    if isinstance(datasets, dict):
        training = [phase for phase in datasets if str(phase).split('_')[0] == 'train']
        if training:
            for phase in training:
                del datasets[phase]
            if not datasets:
                raise OptionError(f'Option datasets holds only the training set ({", ".join(training)}): add a val '
                                  'or test_1 dataset to evaluate')
            print(f'mixprior-test: evaluating datasets {", ".join(datasets)} of the option file; its training set '
                  f'datasets.{training[0]} is skipped.', flush=True)
    return opt


def default_test_param_key(opt):
    """A KD student is evaluated with ``params_ema`` (falling back to ``params``), the key of
    mixprior-export and evaluate.py, unless ``path.param_key_g`` names one (checked to exist before)."""
    from basicsr.utils.registry import MODEL_REGISTRY

    from mixprior_plugin.utils.validation import _is_kd_model, registry_lookup
    path = opt.get('path')
    if not opt.get('is_train') and isinstance(path, dict) and \
            _is_kd_model(registry_lookup(MODEL_REGISTRY, opt.get('model_type'))):
        path.setdefault('param_key_g', 'params_ema')
    return opt


def normalise_device_options(opt):
    """Fall back to CPU (num_gpu 0) when the options ask for GPUs that this machine lacks."""
    if opt.get('num_gpu', 0) not in (0, None) and not cuda_available():
        warnings.warn(f"num_gpu={opt['num_gpu']} but no CUDA device is available: running on CPU.")
        opt['num_gpu'] = 0
    return opt


def wrap_parse_options(original):

    def parse_options(root_path, is_train=True):
        from mixprior_plugin.utils import validation
        from mixprior_plugin.utils.checkpoint import EXACT_RESUME
        from mixprior_plugin.utils.options import normalise_teacher_aliases
        sys.argv = _strip_local_rank_arg(sys.argv)
        opt, args = original(root_path, is_train=is_train)
        normalise_device_options(opt)
        normalise_teacher_aliases(opt)
        normalise_test_options(opt)
        validation.validate_options(opt)
        EXACT_RESUME.update(enabled=exact_resume_requested(opt), loader=None)
        validation.validate_files(opt)
        default_test_param_key(opt)
        return opt, args

    parse_options._mixprior_wrapped = True
    return parse_options


def wrap_message_logger(original):
    """BasicSR's MessageLogger with an ETA that is never negative (fix 9)."""

    class MessageLogger(original):
        """BasicSR's ETA is (total_iter - iter - 1) x the mean step: at the last iteration of a run whose
        steps take a second or more it is negative and prints as "-1 day, 23:59:59"."""

        def __call__(self, log_vars):
            max_iters = self.max_iters
            self.max_iters = max(max_iters, log_vars['iter'] + 1)  # (max - iter - 1) >= 0
            try:
                return super().__call__(log_vars)
            finally:
                self.max_iters = max_iters

    return MessageLogger


def portable_load_resume_state(opt):
    """Fix 0: BasicSR's ``load_resume_state`` where there is CUDA, else ours (which maps to the CPU).

    The teacher is first listed in ``path.ignore_resume_networks``, so that ``check_resume`` keeps its path,
    and keys the model type would never use are refused (``utils/model_types.py``: a teacher under
    SRModel, ...); train_pipeline calls this first thing after parsing the options.
    """
    from basicsr.utils.registry import MODEL_REGISTRY

    from mixprior_plugin.utils.model_types import check_model_type
    from mixprior_plugin.utils.options import normalise_teacher_aliases
    from mixprior_plugin.utils.validation import registry_lookup
    normalise_teacher_aliases(opt)
    check_model_type(opt, registry_lookup(MODEL_REGISTRY, opt.get('model_type')))
    if cuda_available():
        return ORIGINALS['load_resume_state'](opt)
    return load_resume_state(opt)


def fix_jpg_quality():
    """Fix 11 (idempotent): BasicSR's ``add_jpg_compression`` with an integer JPEG quality (OpenCV 5 needs one).

    ``random_add_jpg_compression`` draws a float quality and looks ``add_jpg_compression`` up in its
    module at call time, so replacing the module's function fixes both.
    """
    from basicsr.data import degradations
    if 'add_jpg_compression' in ORIGINALS:
        return
    original = ORIGINALS['add_jpg_compression'] = degradations.add_jpg_compression

    def add_jpg_compression(img, quality=90):
        return original(img, int(round(float(quality))))

    add_jpg_compression.__doc__ = original.__doc__
    degradations.add_jpg_compression = add_jpg_compression


def install_on_import():
    """Fix 0, the one change ``import mixprior_plugin`` makes in BasicSR (idempotent)."""
    train_mod = sys.modules.get('basicsr.train')
    if train_mod is None or 'load_resume_state' in ORIGINALS:
        return
    ORIGINALS['load_resume_state'] = train_mod.load_resume_state
    train_mod.load_resume_state = portable_load_resume_state


def apply():
    """Apply fixes 1-11 (idempotent). Called by mixprior-train / mixprior-test."""
    global _APPLIED
    if _APPLIED:
        return
    import basicsr  # noqa: F401  (imports the submodules below)
    from basicsr.data.paired_image_dataset import PairedImageDataset

    from mixprior_plugin.utils.options import yaml_load
    from mixprior_plugin.utils.validation import checked_getitem
    install_on_import()
    train_mod, test_mod = sys.modules['basicsr.train'], sys.modules['basicsr.test']
    options_mod = sys.modules['basicsr.utils.options']

    misc_mod = sys.modules['basicsr.utils.misc']
    ORIGINALS.update(yaml_load=options_mod.yaml_load, init_dist=options_mod.init_dist,
                     parse_options=options_mod.parse_options)
    train_mod.load_resume_state = load_resume_state  # the teacher's path: parse_options (fix 3) keeps it
    for module in (train_mod, test_mod, misc_mod):
        if hasattr(module, 'mkdir_and_rename'):
            module.mkdir_and_rename = wrap_mkdir_and_rename(module.mkdir_and_rename)
    options_mod.init_dist = init_dist
    options_mod.yaml_load = yaml_load
    train_mod.parse_options = wrap_parse_options(train_mod.parse_options)
    test_mod.parse_options = wrap_parse_options(test_mod.parse_options)
    train_mod.build_model = test_mod.build_model = wrap_build_model()
    train_mod.EnlargedSampler = type('EnlargedSampler', (ResumableSampler, train_mod.EnlargedSampler), {})
    train_mod.create_train_val_dataloader = wrap_create_train_val_dataloader(train_mod.create_train_val_dataloader)
    train_mod.build_dataloader = wrap_build_dataloader(train_mod.build_dataloader)
    train_mod.MessageLogger = wrap_message_logger(train_mod.MessageLogger)
    test_mod.build_dataloader = wrap_build_dataloader(test_mod.build_dataloader)
    PairedImageDataset.__getitem__ = checked_getitem(PairedImageDataset.__getitem__)
    fix_jpg_quality()
    _APPLIED = True
