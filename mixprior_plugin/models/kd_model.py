"""KDModel: BasicSR's SRModel with a frozen teacher, output KD and feature KD.

This is the chassis every distillation method here runs on. Options beyond SRModel's::

    network_t: {type: EDSR, ...}            # teacher, any registered arch
    path:
      pretrain_network_t: teacher.pth       # required for training; loaded strictly
      teacher_param_key: params_ema          # falls back to 'params' (not named param_key_*,
      strict_load_t: true                    #   so BasicSR's resume rewrite leaves it alone)
    distill:                                # stage boundaries (see stages.py)
      num_stages: 4                         # or stages_t: [...] / stages_g: [...]
      feat_norm: auto                       # auto | teacher | per_network | false (distillers: feat_norm_mode)
    train:
      kd_opt: {type: L1Loss, loss_weight: 1.0}   # output ("logits") KD, L1 by default
      feat_opt: [{type: FitNetLoss, loss_weight: 1.0}, ...]   # feature-KD terms, per stage
      optim_extra: {type: Adam, lr: 1e-4}   # optimizer of connectors/mixers (default: optim_g)

The distillation machinery (recorders, connectors, feature normalisation, the loss terms) is the
model's distiller (``distiller_class``: :class:`~mixprior_plugin.distillers.kd_distiller.KDDistiller`);
this class is BasicSR's training lifecycle around it: teacher, optimizers, AMP, the DDP step,
save and resume, validation.

Teacher: built, loaded strictly, eval mode, requires_grad False, run under no_grad, never
DDP-wrapped, never saved. Extra trainable modules (connectors, mixers) live in ``net_extra``, have
their own optimizer (so their own scheduler), are saved as ``net_extra_<iter>.pth`` beside
``net_g`` and restored on resume. Validation, test and export see the plain student.
"""
import contextlib
import os
from copy import deepcopy

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from mixprior_plugin import options_schema
from mixprior_plugin.distillers.kd_distiller import KDDistiller
from mixprior_plugin.utils.checkpoint import CheckpointMixin, extract_state_dict, load_checkpoint, load_state_checked
from mixprior_plugin.utils.model_types import check_model_type
from mixprior_plugin.utils.networks import build_network_and_load
from mixprior_plugin.utils.options import OptionError, normalise_teacher_aliases
from mixprior_plugin.utils.validation.option_values import check_launcher, check_loss_terms, check_scales

# train.amp: the autocast dtype of the training step (its values and checks: options_schema)
AMP_DTYPES = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


# The teacher check at start-up (KDModel.check_teacher): this many images, centre LR crops of this side.
TEACHER_CHECK_IMAGES = 2
TEACHER_CHECK_CROP = 48


def teacher_check_pairs(opt, count=TEACHER_CHECK_IMAGES, crop=TEACHER_CHECK_CROP):
    """A few ``(lq, gt)`` pairs for the teacher check: the first validation images, else training patches.

    Args:
        opt (dict): Options with ``datasets``.
        count (int): Pairs wanted.
        crop (int): Side of the centre LR crop (HR: ``crop * scale``).

    Returns:
        tuple[list[tuple[Tensor, Tensor]], str]: The pairs (empty when no dataset gives LR/HR pairs)
        and what they are, for the log.
    """
    from basicsr.data import build_dataset
    datasets = opt.get('datasets') or {}
    scale = opt.get('scale', 1)
    phases = sorted(p for p in datasets if str(p).startswith('val')) + [p for p in datasets if p == 'train']
    for phase in phases:
        ds_opt = dict(deepcopy(datasets[phase]), phase=datasets[phase].get('phase', phase))
        ds_opt.setdefault('scale', scale)
        dataset = build_dataset(ds_opt)
        pairs = []
        for i in range(min(count, len(dataset))):
            item = dataset[i]
            if 'lq' not in item or 'gt' not in item:
                break
            lq, gt = item['lq'], item['gt']
            h, w = min(crop, lq.shape[-2]), min(crop, lq.shape[-1])
            top, left = (lq.shape[-2] - h) // 2, (lq.shape[-1] - w) // 2
            pairs.append((lq[:, top:top + h, left:left + w],
                          gt[:, top * scale:(top + h) * scale, left * scale:(left + w) * scale]))
        if pairs:
            kind = 'validation images' if phase != 'train' else 'training patches'
            return pairs, f'{len(pairs)} {kind} of datasets.{phase} (centre {crop}x{crop} LR crops)'
    return [], 'no dataset gives LR/HR pairs'


# train.amp without CUDA: autocast slower than this many times fp32 on a probe step is a warning.
CPU_AUTOCAST_TOLERANCE = 1.2


def cpu_autocast_slowdown(dtype, repeats=3):
    """How many times longer a convolution step (forward and backward) takes on this CPU under autocast.

    CPUs differ: with native bf16 (AVX512-BF16, AMX) bf16 autocast can be faster than fp32, without
    it slower; fp16 was far slower on the CPUs tried. Measured, not assumed: 64 channels, a batch
    of 4 at 48x48, the median of ``repeats`` runs each; the global random state is left untouched.

    Args:
        dtype (torch.dtype): The autocast dtype.
        repeats (int): Timed runs per precision.

    Returns:
        float: Autocast time over fp32 time.
    """
    from mixprior_plugin.utils.tooling import median_seconds
    with torch.random.fork_rng(devices=[]):  # the layer's initialisation must not shift the run's random stream
        conv = nn.Conv2d(64, 64, 3, padding=1)
    x = torch.rand(4, 64, 48, 48, generator=torch.Generator().manual_seed(0))

    def step(enabled):
        with torch.autocast('cpu', dtype=dtype, enabled=enabled):
            out = conv(x)
        out.float().mean().backward()

    return median_seconds(lambda: step(True), repeats, 1) / median_seconds(lambda: step(False), repeats, 1)


def report_cpu_autocast(name, dtype):
    """Log what ``train.amp: <name>`` costs without CUDA: a warning when autocast is slower than fp32."""
    slowdown = cpu_autocast_slowdown(dtype)
    message = (f'train.amp={name} on a machine without CUDA: a convolution step under {name} autocast takes '
               f'{slowdown:.2f}x the fp32 time on this CPU')
    if slowdown > CPU_AUTOCAST_TOLERANCE:
        get_root_logger().warning(f'{message}: training will be slower, not faster; set train.amp: off.')
    else:
        get_root_logger().info(f'{message}: no slower than fp32 here.')
    return slowdown


def build_frozen_teacher(opt, device='cpu'):
    """Build ``network_t``, load ``path.pretrain_network_t`` strictly, freeze it, eval mode.

    Args:
        opt (dict): Options (``network_t``, ``path.pretrain_network_t``, ``path.teacher_param_key``
            (default 'params_ema', falling back to 'params'), ``path.strict_load_t`` (default True)).
        device: Where to put it.

    Returns:
        nn.Module: The teacher, ``requires_grad`` False everywhere, in eval mode.

    Raises:
        OptionError: The weights do not fit, with the missing / unexpected / mismatched keys.
    """
    weights = os.path.expanduser(opt['path']['pretrain_network_t'])
    explicit_key = options_schema.is_set(opt, 'path', 'teacher_param_key')
    loaded = build_network_and_load(opt['network_t'], weights,
                                    options_schema.value(opt, 'path', 'teacher_param_key') if explicit_key else None,
                                    'path.teacher_param_key', strict=options_schema.value(opt, 'path', 'strict_load_t'),
                                    device=device, source=f'path.pretrain_network_t={weights}',
                                    target=f'network_t ({opt["network_t"]["type"]})')
    report, net_t = loaded.report, loaded.net
    filled = '' if report['loaded'] == report['total'] else \
        f' ({report["loaded"]} of {report["total"]} parameter tensors: a partial load)'
    get_root_logger().info(f'Teacher {opt["network_t"]["type"]} loaded from {weights} [{loaded.param_key}]{filled}, '
                           f'{sum(p.numel() for p in net_t.parameters()):,d} parameters, frozen.')
    return net_t


FEAT_NORM_MODES = options_schema.FEAT_NORM_MODES


class FromDistiller:
    """A model attribute that is its distiller's: read, set and deleted there.

    Keeps ``model.cri_kd``, ``model.block_path = spy`` and the like working on the component that
    computes the terms; before training settings exist (testing) the attribute is absent.

    Args:
        name (str): The distiller's attribute.
    """

    def __init__(self, name):
        self.name = name

    def __get__(self, model, owner=None):
        if model is None:
            return self
        return getattr(model.distiller, self.name)

    def __set__(self, model, value):
        setattr(model.distiller, self.name, value)

    def __delete__(self, model):
        delattr(model.distiller, self.name)


def from_distiller(*names):
    """Class decorator: each of ``names`` becomes a :class:`FromDistiller` attribute of the model class."""

    def decorate(cls):
        for name in names:
            setattr(cls, name, FromDistiller(name))
        return cls

    return decorate


class DistillStep(nn.Module):
    """Everything that receives gradients in one step, as one module.

    DDP must see every use of a trainable parameter inside the forward of the module it wraps;
    the student's plain forward, the feature terms and MiPKD's mixed block path all use student
    and extra-module parameters, so they all run in here. The model (and the teacher) are held
    outside the module tree: the teacher is never wrapped, broadcast or saved.
    """

    def __init__(self, model):
        super().__init__()
        self.net_g = model.get_bare_model(model.net_g)
        self.net_extra = model.net_extra
        object.__setattr__(self, '_model', model)

    def forward(self, lq, gt, teacher, current_iter):
        return self._model.compute_losses(lq, gt, teacher, current_iter)


@MODEL_REGISTRY.register()
@from_distiller('adapter_t', 'adapter_g', 'recorder_t', 'recorder_g', 'cri_kd', 'feat_terms', 'normalised_features',
                'connectors_of', 'term_name')
class KDModel(CheckpointMixin, SRModel):
    """SR model distilled from a frozen teacher. See the module docstring for options.

    Args:
        opt (dict): BasicSR options.
    """

    # plugin sections and train keys this model reads (their defaults and checks: options_schema); a typo such as
    # `fmp_opt` would otherwise switch a term off silently
    EXTRA_SECTIONS = {'distill': options_schema.allowed_keys('distill', 'KDModel')}
    TRAIN_KEYS = options_schema.train_keys('KDModel')  # each subclass: its own (__init_subclass__)
    # False where the base model's own update computes the pixel loss (the GAN models)
    adds_pixel_loss = True
    # the distillation machinery: recorders, connectors, feature normalisation, loss terms
    distiller_class = KDDistiller

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.TRAIN_KEYS = options_schema.train_keys(cls)  # its base classes decide (the GAN models': optim_d, ...)

    def __init__(self, opt):
        normalise_teacher_aliases(opt)
        if opt.get('is_train'):
            self.check_options(opt)
        super().__init__(opt)

    # ------------------------------------------------------------------ options
    @classmethod
    def check_options(cls, opt, check_files=True):
        """Validate the plugin's options before anything is built; errors name the key.

        Args:
            opt (dict): Options.
            check_files (bool): Also require the teacher weights file to exist.
        """
        check_model_type(opt, cls)  # GAN keys it cannot train, a data set it cannot read
        # unknown keys, types, choices and ranges of the plugin's sections, train, path and top-level keys
        for section in (*cls.EXTRA_SECTIONS, 'train', 'path', options_schema.TOP):
            options_schema.check_section(opt, section, cls)
        for section in options_schema.PLUGIN_SECTIONS:  # sections of other plugin models, silently unused otherwise
            if section not in cls.EXTRA_SECTIONS and opt.get(section) is not None:
                raise OptionError(f'Option section {section!r} is not read by {cls.__name__}: '
                                  'use model_type: MiPKDModel or remove the section')
        check_launcher(opt, cls.__name__)
        if not options_schema.is_set(opt, options_schema.TOP, 'network_t'):
            raise OptionError(f'{cls.__name__} needs a teacher: set network_t (or network_teacher)')
        check_scales(opt)
        weights = options_schema.value(opt, 'path', 'pretrain_network_t')
        if not weights:
            raise OptionError('path.pretrain_network_t is missing: the teacher must be trained weights '
                              '(a random teacher teaches nothing)')
        if check_files and not os.path.isfile(os.path.expanduser(weights)):
            raise OptionError(f'path.pretrain_network_t={weights}: file not found')
        check_loss_terms(opt.get('train') or {})

    @classmethod
    def feat_terms_for(cls, opt):
        """The feature-KD loss modules of ``train.feat_opt`` (the distiller's; tools/inspect_stages.py reads it)."""
        return cls.distiller_class.feat_terms_for(opt)

    @classmethod
    def uses_features_for(cls, opt, feat_terms):
        """Whether stage features are needed (the distiller's answer)."""
        return cls.distiller_class.uses_features_for(opt, feat_terms)

    @classmethod
    def extra_modules_for(cls, opt, adapter_t, adapter_g, feat_terms):
        """Trainable/stateful modules besides the student, from options (no weights loaded).

        The distiller's (:meth:`KDDistiller.extra_modules_for`); a subclass may add its own here.
        Also used by tools/inspect_stages.py to show what a run will build.

        Args:
            opt (dict): Options.
            adapter_t, adapter_g (StageAdapter | None): Adapters (None: no stage features).
            feat_terms (list[nn.Module]): Built ``train.feat_opt`` losses.

        Returns:
            nn.ModuleDict
        """
        return cls.distiller_class.extra_modules_for(opt, adapter_t, adapter_g, feat_terms)

    # ------------------------------------------------------------------ building
    def model_to_device(self, net):
        """Only move to the device: DDP wraps :class:`DistillStep` instead of net_g."""
        return net.to(self.device)

    def init_training_settings(self):
        logger = get_root_logger()
        train_opt = self.opt['train']
        train = options_schema.settings(self.opt, 'train', type(self))
        self.amp_dtype, self.channels_last = AMP_DTYPES[train['amp']], train['channels_last']
        if self.amp_dtype is not None and self.device.type != 'cuda':
            report_cpu_autocast(train['amp'], self.amp_dtype)
        self.net_t = self.build_teacher()
        self.check_teacher()
        self.distiller = self.distiller_class.build(self.opt, self.net_t, self.get_bare_model(self.net_g), self.device,
                                                    parts=type(self))
        self.net_extra = self.distiller.extra  # saved as net_extra_<iter>.pth, optimised by optimizer_extra
        if self.channels_last:  # before the optimizers see the parameters (converted in place anyway)
            for net in (self.net_g, self.net_t, self.net_extra):
                net.to(memory_format=torch.channels_last)
        if self.amp_dtype is not None:
            # The frozen teacher only ever runs under autocast: holding it in the autocast dtype
            # halves its memory and saves casting its weights on every call.
            self.net_t.to(self.amp_dtype)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.grad_scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        pristine_train_opt = deepcopy(train_opt)
        super().init_training_settings()  # EMA, pixel loss, optimizers, schedulers
        # BasicSR pops 'type' out of optim_g/scheduler; keep self.opt usable (e.g. re-saving it).
        self.opt['train'] = pristine_train_opt
        if self.channels_last and hasattr(self, 'net_g_ema'):
            self.net_g_ema.to(memory_format=torch.channels_last)
        if self.amp_dtype is not None or self.channels_last:
            logger.info('Training step: autocast %s, channels_last %s; validation and saved weights stay fp32.',
                        self.amp_dtype or 'off', self.channels_last)

        self.train_step = DistillStep(self)
        if self.opt['dist']:
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            self.train_step = DistributedDataParallel(
                self.train_step, device_ids=device_ids,
                find_unused_parameters=options_schema.value(self.opt, options_schema.TOP, 'find_unused_parameters'))

    def build_teacher(self):
        """Build the teacher, load its weights strictly, freeze it and put it in eval mode."""
        return build_frozen_teacher(self.opt, self.device)

    def check_teacher(self):
        """Log the teacher's PSNR beside bicubic's on a few validation images (or training patches).

        A teacher below bicubic is a warning: its weights are still close to their initialisation
        (an early ``params_ema``) or are not the ones meant (``path.teacher_param_key``,
        ``path.pretrain_network_t``). Rank 0 only; one forward on small crops.
        """
        if self.opt.get('rank', 0) != 0:
            return
        from mixprior_plugin.inference import psnr_beside_bicubic
        from mixprior_plugin.utils.checkpoint import rng_state, set_rng_state
        logger = get_root_logger()
        before = rng_state()  # training patches are cropped at random: keep the run's random stream as it was
        try:
            pairs, source = teacher_check_pairs(self.opt)
        finally:
            set_rng_state(before)
        if not pairs:
            logger.info(f'Teacher check skipped: {source}.')
            return
        scale = self.opt.get('scale', 1)
        teacher, bicubic = psnr_beside_bicubic(self.net_t, pairs, scale, self.opt['network_t'].get('window_size'),
                                               self.device)
        logger.info(f'Teacher check on {source}: teacher {teacher:.2f} dB, bicubic {bicubic:.2f} dB '
                    f'(PSNR on Y, crop_border {scale}).')
        if teacher < bicubic:
            key = options_schema.value(self.opt, 'path', 'teacher_param_key')
            weights = options_schema.value(self.opt, 'path', 'pretrain_network_t')
            logger.warning(f'The teacher is below bicubic ({teacher:.2f} < {bicubic:.2f} dB): distilling it teaches '
                           f'the student little. path.teacher_param_key={key!r}: an EMA (params_ema) of a short run '
                           'is still close to its initialisation (try params); or path.pretrain_network_t='
                           f'{weights} is not the trained teacher.')

    def setup_optimizers(self):
        train_opt = self.opt['train']
        extra_opt = deepcopy(options_schema.value(self.opt, 'train', 'optim_extra') or train_opt['optim_g'])
        super().setup_optimizers()  # pops optim_g's type
        params = [p for p in self.net_extra.parameters() if p.requires_grad]
        self.optimizer_extra = None
        if params:
            optim_type = extra_opt.pop('type')
            self.optimizer_extra = self.get_optimizer(optim_type, params, **extra_opt)
            self.optimizers.append(self.optimizer_extra)

    # ------------------------------------------------------------------ training
    def feed_data(self, data):
        """BasicSR's feed_data; with ``train.channels_last`` the batches are channels_last too."""
        super().feed_data(data)
        if getattr(self, 'channels_last', False):
            self.lq = self.lq.contiguous(memory_format=torch.channels_last)
            if hasattr(self, 'gt'):
                self.gt = self.gt.contiguous(memory_format=torch.channels_last)

    def autocast(self):
        """The training step's autocast context (``train.amp``); a no-op context when it is off."""
        dtype = getattr(self, 'amp_dtype', None)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    @torch.no_grad()
    def run_teacher(self, lq):
        """Teacher output, head feature and stage features, without gradients.

        Returns:
            dict: ``out`` (N, 3, sH, sW), ``head`` and ``feats`` (maps, or None without stages).
        """
        self.net_t.eval()  # stays in eval even if someone called .train() on it
        return self.distiller.record_teacher(self.net_t, lq)

    def student_forward(self, lq):
        """Student output with its head and stage features recorded (with gradients)."""
        return self.distiller.record_student(self.get_bare_model(self.net_g), lq)

    def compute_losses(self, lq, gt, teacher, current_iter):
        """All loss terms of one step (called inside :class:`DistillStep`).

        Args:
            lq (Tensor): LR batch ``(N, 3, h, w)``.
            gt (Tensor): HR batch ``(N, 3, sh, sw)``.
            teacher (dict): :meth:`run_teacher`'s output.
            current_iter (int): Iteration (1-based).

        Returns:
            tuple[OrderedDict, dict]: Loss tensors (summed for backward) and extra log values.
        """
        out, head, feats = self.student_forward(lq)
        self.output = out
        return self.distill_losses(dict(out=out, head=head, feats=feats), teacher, gt, current_iter)

    def distill_losses(self, student, teacher, gt, current_iter):
        """The loss terms of one step given the student's forward pass (:meth:`KDDistiller.losses`).

        Returns:
            tuple[OrderedDict, dict]: Loss tensors and extra log values.
        """
        pixel_loss = self.cri_pix if self.adds_pixel_loss else None
        return self.distiller.losses(student, teacher, gt, current_iter, pixel_loss)

    def optimize_parameters(self, current_iter):
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        with self.autocast():  # the losses themselves run in fp32 under autocast
            teacher = self.run_teacher(self.lq)
            losses, logs = self.train_step(self.lq, self.gt, teacher, current_iter)
        if not losses:
            raise OptionError('Every loss weight is 0: nothing to train (check train.*_opt loss_weight)')
        l_total = sum(losses.values())
        self.check_finite(l_total, losses, current_iter)
        scaler = getattr(self, 'grad_scaler', None)
        if scaler is None:
            l_total.backward()
            for optimizer in self.optimizers:
                optimizer.step()
        else:
            scaler.scale(l_total).backward()
            for optimizer in self.optimizers:
                scaler.step(optimizer)  # skipped when a gradient overflowed; the scale then shrinks
            scaler.update()
            logs['amp_scale'] = scaler.get_scale()
        self.log_dict = self.reduce_loss_dict(losses)
        self.log_dict.update(logs)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def check_finite(self, l_total, losses, current_iter):
        """Stop with a message on a NaN/Inf loss (before the step corrupts the weights)."""
        if not torch.isfinite(l_total):
            bad = ', '.join(f'{k}={v.item():.4g}' for k, v in losses.items())
            raise FloatingPointError(f'Non-finite loss at iter {current_iter} ({bad}); stopping. The last saved '
                                     'checkpoint is intact: lower the learning rate or check the data, '
                                     'then resume with --auto_resume.')

    # ------------------------------------------------------------------ test
    def test(self):
        """Student-only inference (EMA weights when present); pads for window-based students."""
        from mixprior_plugin.inference import sr_tensor  # the same padding as tools/evaluate.py
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        # fp32 whatever train.amp says, also when called inside an autocast region
        with torch.autocast(self.device.type, enabled=False):
            self.output = sr_tensor(net, self.lq.float(), self.opt.get('scale', 1),
                                    self.opt['network_g'].get('window_size'))
        net.train(was_training)

    # ------------------------------------------------------------------ saving
    def save(self, epoch, current_iter):
        if len(self.net_extra.state_dict()):
            self.save_network(self.net_extra, 'net_extra', current_iter)
        super().save(epoch, current_iter)  # net_g (+ema), then the training state last

    def training_state_extras(self):
        """The fp16 gradient scaler's state (``train.amp: fp16``), so a resumed run keeps its scale, beside a
        base model's own extras (the real-world models' pair pool) and the distiller's (MiPKD's route)."""
        extras = dict(getattr(super(), 'training_state_extras', dict)(), **self.distiller.state())
        scaler = getattr(self, 'grad_scaler', None)
        if scaler is not None:
            extras['grad_scaler'] = scaler.state_dict()
        return extras

    def restore_training_state_extras(self, extras):
        restore = getattr(super(), 'restore_training_state_extras', None)
        if restore is not None:
            restore(extras)
        self.distiller.restore(extras)
        scaler = getattr(self, 'grad_scaler', None)
        if scaler is not None and extras.get('grad_scaler'):
            scaler.load_state_dict(extras['grad_scaler'])
        elif scaler is not None:
            get_root_logger().warning('The training state holds no gradient scaler (a run without train.amp: fp16): '
                                      f'starting from scale {scaler.get_scale():g}.')

    def resume_training(self, resume_state):
        """Restore extra modules, then optimizers, schedulers and RNG states (counts must match)."""
        if len(self.net_extra.state_dict()):
            path = os.path.join(self.opt['path']['models'], f'net_extra_{resume_state["iter"]}.pth')
            state, _ = extract_state_dict(load_checkpoint(path), 'params', path)
            load_state_checked(self.net_extra, state, path, 'the extra modules built from the options')
        super().resume_training(resume_state)  # CheckpointMixin: optimizers, schedulers, RNG, extras
