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
   registered names, paths, data layouts, LR/HR sizes; utils/validation/).
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

The code of each fix lives in ``mixprior_plugin/fixes/`` by concern: ``resume`` (0, 1, 6),
``distributed`` (2, 4), ``options`` (3, 10), ``errors`` (8), ``messages`` (9), ``data`` (11); fix 7 is
:func:`mixprior_plugin.utils.validation.checked_getitem`. This module is the one entry that installs
them, and keeps their names importable from here.
"""
import sys

from mixprior_plugin.fixes.common import ORIGINALS, cuda_available
from mixprior_plugin.fixes.data import fix_jpg_quality
from mixprior_plugin.fixes.distributed import (
    EntryPointModelMixin,
    init_dist,
    strip_local_rank_arg,
    with_fixes,
    wrap_build_model,
)
from mixprior_plugin.fixes.errors import ARCHIVED, report_errors, undo_archiving, wrap_mkdir_and_rename
from mixprior_plugin.fixes.messages import wrap_message_logger
from mixprior_plugin.fixes.options import (
    ENTRY_FLAGS,
    default_test_param_key,
    normalise_device_options,
    normalise_test_options,
    wrap_parse_options,
)
from mixprior_plugin.fixes.resume import (
    ResumableSampler,
    exact_resume_requested,
    load_resume_state,
    portable_load_resume_state,
    wrap_build_dataloader,
    wrap_create_train_val_dataloader,
)
from mixprior_plugin.utils.options import yaml_load
from mixprior_plugin.utils.validation import checked_getitem

__all__ = ['ARCHIVED', 'ENTRY_FLAGS', 'ORIGINALS', 'EntryPointModelMixin', 'ResumableSampler', 'apply',
           'cuda_available', 'default_test_param_key', 'exact_resume_requested', 'fix_jpg_quality', 'init_dist',
           'install_on_import', 'load_resume_state', 'normalise_device_options', 'normalise_test_options',
           'portable_load_resume_state', 'report_errors', 'strip_local_rank_arg', 'undo_archiving', 'with_fixes',
           'wrap_build_dataloader', 'wrap_build_model', 'wrap_create_train_val_dataloader', 'wrap_message_logger',
           'wrap_mkdir_and_rename', 'wrap_parse_options']

_APPLIED = False


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
    from basicsr.data.paired_image_dataset import PairedImageDataset  # basicsr.data registers every dataset
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
