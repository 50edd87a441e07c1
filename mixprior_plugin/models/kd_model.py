"""KDModel: BasicSR's SRModel with a frozen teacher, output KD and feature KD.

This is the chassis every distillation method here runs on. Options beyond SRModel's::

    network_t: {type: EDSR, ...}            # teacher, any registered arch
    path:
      pretrain_network_t: teacher.pth       # required for training; loaded strictly
      teacher_param_key: params_ema          # falls back to 'params' (not named param_key_*,
      strict_load_t: true                    #   so BasicSR's resume rewrite leaves it alone)
    distill:                                # stage boundaries (see stages.py)
      num_stages: 4                         # or stages_t: [...] / stages_g: [...]
      feat_norm: auto                       # auto | teacher | per_network | false (see feat_norm_mode)
    train:
      kd_opt: {type: L1Loss, loss_weight: 1.0}   # output ("logits") KD, L1 by default
      feat_opt: [{type: FitNetLoss, loss_weight: 1.0}, ...]   # feature-KD terms, per stage
      optim_extra: {type: Adam, lr: 1e-4}   # optimizer of connectors/mixers (default: optim_g)

Teacher: built, loaded strictly, eval mode, requires_grad False, run under no_grad, never
DDP-wrapped, never saved. Extra trainable modules (connectors, mixers) live in ``net_extra``, have
their own optimizer (so their own scheduler), are saved as ``net_extra_<iter>.pth`` beside
``net_g`` and restored on resume. Validation, test and export see the plain student.
"""
import contextlib
import functools
import os
from collections import OrderedDict
from copy import deepcopy

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from mixprior_plugin import options_schema
from mixprior_plugin.stages import FeatureRecorder, build_adapters
from mixprior_plugin.utils.checkpoint import CheckpointMixin, extract_state_dict, load_checkpoint, load_state_checked
from mixprior_plugin.utils.model_types import check_model_type
from mixprior_plugin.utils.options import OptionError, check_known_keys, normalise_teacher_aliases

# train.amp: the autocast dtype of the training step (YAML reads a bare `off` as False).
AMP_DTYPES = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}

# BasicSR's SRModel train keys; a distillation model adds its own (a typo such as `fmp_opt` would
# otherwise silently switch a term off).
# (perceptual_opt is SRModel's too, but KDModel's losses are its own: utils/model_types.py refuses it, with the
# GAN models that train it.)
SR_TRAIN_KEYS = ('ema_decay', 'optim_g', 'scheduler', 'total_iter', 'warmup_iter', 'pixel_opt')


def precision_settings(train_opt):
    """Resolve ``train.amp`` and ``train.channels_last`` (errors name the key).

    Args:
        train_opt (dict): The ``train`` section.

    Returns:
        tuple[torch.dtype | None, bool]: The autocast dtype (None: fp32) and whether nets and
        batches use the channels_last memory format.
    """
    amp = train_opt.get('amp', 'off')
    amp = 'off' if amp is False or amp is None else amp
    if not isinstance(amp, str) or amp not in AMP_DTYPES:
        raise OptionError(f'Option train.amp={amp!r} is not one of {", ".join(AMP_DTYPES)}')
    channels_last = train_opt.get('channels_last', False)
    if not isinstance(channels_last, bool):
        raise OptionError(f'Option train.channels_last={channels_last!r} must be true or false')
    return AMP_DTYPES[amp], channels_last


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


def loss_weight(loss):
    """The weight of a BasicSR loss module (0 switches the term off)."""
    return float(getattr(loss, 'loss_weight', 1.0)) if loss is not None else 0.0


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
    logger = get_root_logger()
    net_t = build_network(opt['network_t']).to(device)
    path_opt = opt['path']
    weights = os.path.expanduser(path_opt['pretrain_network_t'])
    key = path_opt.get('teacher_param_key', 'params_ema')
    strict = path_opt.get('strict_load_t', True)
    state, used = extract_state_dict(load_checkpoint(weights), key, weights,
                                     'path.teacher_param_key' if 'teacher_param_key' in path_opt else None)
    report = load_state_checked(net_t, state, f'path.pretrain_network_t={weights} (key {used!r})',
                                f'network_t ({opt["network_t"]["type"]})', strict)
    filled = '' if report['loaded'] == report['total'] else \
        f' ({report["loaded"]} of {report["total"]} parameter tensors: a partial load)'
    logger.info(f'Teacher {opt["network_t"]["type"]} loaded from {weights} [{used}]{filled}, '
                f'{sum(p.numel() for p in net_t.parameters()):,d} parameters, frozen.')
    net_t.eval()
    net_t.requires_grad_(False)
    return net_t


FEAT_NORM_MODES = options_schema.FEAT_NORM_MODES


def feat_norm_mode(value, net_t, net_g):
    """Resolve ``distill.feat_norm`` to 'teacher', 'per_network' or 'off'.

    ``true``/'teacher': one running teacher scale for both networks (the method's reading, right
    when both networks take their inputs on one numeric scale). 'per_network': each network its
    own running scale (needed across families: SwinIR features are ~1, EDSR's ~100). 'auto' (the
    default): 'teacher' when teacher and student are of one arch class, else 'per_network'.
    ``false``/'off': raw features.
    """
    if value is True:
        return 'teacher'
    if value is False or value is None:
        return 'off'
    if value not in FEAT_NORM_MODES:
        raise OptionError(f'Option distill.feat_norm={value!r} is not one of true, false, '
                          f'{", ".join(FEAT_NORM_MODES)}')
    if value == 'auto':
        return 'teacher' if type(net_t) is type(net_g) else 'per_network'
    return value


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
class KDModel(CheckpointMixin, SRModel):
    """SR model distilled from a frozen teacher. See the module docstring for options.

    Args:
        opt (dict): BasicSR options.
    """

    # plugin sections and train keys this model reads (their defaults and checks: options_schema)
    EXTRA_SECTIONS = {'distill': options_schema.allowed_keys('distill', 'KDModel')}
    TRAIN_KEYS = SR_TRAIN_KEYS + options_schema.train_keys('KDModel')
    # False where the base model's own update computes the pixel loss (the GAN models)
    adds_pixel_loss = True

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
        for section in cls.EXTRA_SECTIONS:  # unknown keys, types, choices and ranges
            options_schema.check_section(opt, section, cls)
        for section in options_schema.SECTIONS:  # sections of other plugin models, silently unused here otherwise
            if section != 'train' and section not in cls.EXTRA_SECTIONS and opt.get(section) is not None:
                raise OptionError(f'Option section {section!r} is not read by {cls.__name__}: '
                                  'use model_type: MiPKDModel or remove the section')
        num_gpu = opt.get('num_gpu')
        if isinstance(num_gpu, int) and num_gpu > 1 and not opt.get('dist'):
            raise OptionError(f'num_gpu={num_gpu} without a launcher trains on one GPU: start with '
                              f'torchrun --nproc_per_node={num_gpu} -m mixprior_plugin.train -opt ... '
                              '--launcher pytorch')
        check_known_keys(opt.get('train'), cls.TRAIN_KEYS, 'train')
        if 'network_t' not in opt:
            raise OptionError(f'{cls.__name__} needs a teacher: set network_t (or network_teacher)')
        path = opt.get('path') or {}
        # ignore_resume_networks is added by normalise_teacher_aliases
        scale_t, scale_g = opt['network_t'].get('upscale'), opt.get('network_g', {}).get('upscale')
        if scale_t is not None and scale_g is not None and scale_t != scale_g:
            raise OptionError(f'network_t.upscale={scale_t} differs from network_g.upscale={scale_g}: '
                              'teacher and student must work at the same scale')
        if opt.get('scale') is not None and scale_g is not None and opt['scale'] != scale_g:
            raise OptionError(f'scale={opt["scale"]} differs from network_g.upscale={scale_g}')
        weights = path.get('pretrain_network_t')
        if not weights:
            raise OptionError('path.pretrain_network_t is missing: the teacher must be trained weights '
                              '(a random teacher teaches nothing)')
        if check_files and not os.path.isfile(os.path.expanduser(weights)):
            raise OptionError(f'path.pretrain_network_t={weights}: file not found')
        train = opt.get('train') or {}
        for key in (k for k in cls.TRAIN_KEYS if k.endswith('_opt') and train.get(k) is not None):
            terms = train[key] if isinstance(train[key], (list, tuple)) else [train[key]]
            for i, term in enumerate(terms):
                if not isinstance(term, dict) or 'type' not in term:
                    where = f'train.{key}[{i}]' if isinstance(train[key], (list, tuple)) else f'train.{key}'
                    raise OptionError(f'{where} must be a loss dict with a type, got {term!r}')

    @classmethod
    def feat_terms_for(cls, opt):
        """The feature-KD loss modules of ``train.feat_opt`` (one dict or a list)."""
        return [build_loss(t) for t in cls._as_list(opt.get('train', {}).get('feat_opt'))]

    @staticmethod
    def _as_list(value):
        if value is None:
            return []
        return list(value) if isinstance(value, (list, tuple)) else [value]

    # ------------------------------------------------------------------ building
    def model_to_device(self, net):
        """Only move to the device: DDP wraps :class:`DistillStep` instead of net_g."""
        return net.to(self.device)

    def init_training_settings(self):
        logger = get_root_logger()
        train_opt = self.opt['train']
        self.amp_dtype, self.channels_last = precision_settings(train_opt)
        if self.amp_dtype is not None and self.device.type != 'cuda':
            report_cpu_autocast(train_opt['amp'], self.amp_dtype)
        self.net_t = self.build_teacher()
        self.check_teacher()
        self.cri_kd = build_loss(train_opt.get('kd_opt') or options_schema.default('train', 'kd_opt')).to(self.device)
        self.feat_terms = [t.to(self.device) for t in self.feat_terms_for(self.opt)]

        self.adapter_t = self.adapter_g = self.recorder_t = self.recorder_g = None
        if self.uses_features_for(self.opt, self.feat_terms):
            distill_opt = self.opt.get('distill') or {}
            self.adapter_t, self.adapter_g = build_adapters(distill_opt, self.net_t, self.get_bare_model(self.net_g))
            if distill_opt.get('check_adapters', options_schema.default('distill', 'check_adapters')):
                self.adapter_t.check_matches_forward()
                self.adapter_g.check_matches_forward()
            self.recorder_t = FeatureRecorder(self.adapter_t)
            self.recorder_g = FeatureRecorder(self.adapter_g)
            logger.info('Distillation stages: teacher ends %s, student ends %s', self.adapter_t.stage_ends,
                        self.adapter_g.stage_ends)
        extra = self.extra_modules_for(self.opt, self.adapter_t, self.adapter_g, self.feat_terms)
        self.net_extra = extra.to(self.device)
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
                find_unused_parameters=self.opt.get('find_unused_parameters', True))

    @classmethod
    def uses_features_for(cls, opt, feat_terms):
        """Whether stage features are needed (feature terms, or an explicit distill section)."""
        return bool(feat_terms) or opt.get('distill') is not None

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
            path = self.opt['path']
            key = path.get('teacher_param_key', 'params_ema')
            logger.warning(f'The teacher is below bicubic ({teacher:.2f} < {bicubic:.2f} dB): distilling it teaches '
                           f'the student little. path.teacher_param_key={key!r}: an EMA (params_ema) of a short run '
                           'is still close to its initialisation (try params); or path.pretrain_network_t='
                           f'{path.get("pretrain_network_t")} is not the trained teacher.')

    @classmethod
    def extra_modules_for(cls, opt, adapter_t, adapter_g, feat_terms):
        """Trainable/stateful modules besides the student, from options (no weights loaded).

        KDModel: the per-point feature scale and the connectors of feature terms that ask for
        them. Subclasses add their own (MiPKDModel: the mixers). Also used by
        tools/inspect_stages.py to show what a run will build.

        Args:
            opt (dict): Options.
            adapter_t, adapter_g (StageAdapter | None): Adapters (None: no stage features).
            feat_terms (list[nn.Module]): Built ``train.feat_opt`` losses.

        Returns:
            nn.ModuleDict
        """
        extra = nn.ModuleDict()
        if adapter_t is None:
            return extra
        distill_opt = opt.get('distill') or {}
        k = adapter_t.num_stages
        distill_default = functools.partial(options_schema.default, 'distill')
        mode = feat_norm_mode(distill_opt.get('feat_norm', distill_default('feat_norm')), adapter_t.net, adapter_g.net)
        extra['feat_norm'] = build_network(
            dict(type='FeatureNormalizer', num_points=k, enabled=mode != 'off', per_network=mode == 'per_network',
                 momentum=distill_opt.get('feat_norm_momentum', distill_default('feat_norm_momentum'))))
        connectors = nn.ModuleDict()
        for i, term in enumerate(feat_terms):
            kernel = getattr(term, 'connector_kernel', None)
            if kernel:
                connectors[str(i)] = nn.ModuleList(
                    build_network(
                        dict(type='FeatureConnector', in_channels=adapter_g.channels, out_channels=adapter_t.channels,
                             kernel_size=kernel)) for _ in range(k))
        if len(connectors):
            extra['connectors'] = connectors
        return extra

    def setup_optimizers(self):
        train_opt = self.opt['train']
        extra_opt = deepcopy(train_opt.get('optim_extra') or train_opt['optim_g'])
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
        if self.recorder_t is not None:
            self.recorder_t.clear()
        out = self.net_t(lq)
        if self.recorder_t is None:
            return dict(out=out, head=None, feats=None)
        return dict(out=out, head=self.recorder_t.head, feats=list(self.recorder_t.features))

    def student_forward(self, lq):
        """Student output with its head and stage features recorded (with gradients)."""
        if self.recorder_g is not None:
            self.recorder_g.clear()
        out = self.get_bare_model(self.net_g)(lq)
        if self.recorder_g is None:
            return out, None, None
        return out, self.recorder_g.head, list(self.recorder_g.features)

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
        """The loss terms of one step given the student's forward pass (see :meth:`add_losses`).

        Returns:
            tuple[OrderedDict, dict]: Loss tensors and extra log values.
        """
        losses, logs = OrderedDict(), {}
        normalised = None
        if self.adapter_t is not None:
            normalised = self.normalised_features(teacher['feats'], student['feats'], logs)
        self.add_losses(student, teacher, gt, normalised, losses, logs, current_iter)
        return losses, logs

    def add_losses(self, student, teacher, gt, normalised, losses, logs, current_iter):
        """Add this method's terms to ``losses``. KDModel: pixel, output KD, feature terms.

        Args:
            student (dict): ``out``, ``head``, ``feats`` of the student (with gradients).
            teacher (dict): ``out``, ``head``, ``feats`` of the teacher (no gradients).
            gt (Tensor): HR batch.
            normalised (tuple[list, list] | None): Teacher and student stage features divided by
                the running teacher scale.
            losses (OrderedDict): Filled in place.
            logs (dict): Extra scalars to log, filled in place.
            current_iter (int): Iteration.
        """
        if self.adds_pixel_loss and loss_weight(self.cri_pix):
            losses['l_pix'] = self.cri_pix(student['out'], gt)
        if loss_weight(self.cri_kd):
            losses['l_kd'] = self.cri_kd(student['out'], teacher['out'])
        for i, term in enumerate(self.feat_terms):
            if not loss_weight(term):
                continue
            connectors = self.connectors_of(i)
            total = 0
            for k, (f_t, f_s) in enumerate(zip(*normalised)):
                total = total + term(connectors[k](f_s) if connectors is not None else f_s, f_t)
            losses[self.term_name(term, i)] = total

    def connectors_of(self, index):
        """The per-stage connectors of feature term ``index``, or None."""
        if 'connectors' in self.net_extra and str(index) in self.net_extra['connectors']:
            return self.net_extra['connectors'][str(index)]
        return None

    def normalised_features(self, feats_t, feats_s, logs):
        """Update the running teacher scale and divide both sides' features by it.

        Returns:
            tuple[list[Tensor], list[Tensor]]: Normalised teacher and student features.
        """
        norm = self.net_extra['feat_norm']
        norm.update(feats_t, feats_s)
        for k, s in enumerate(norm.scale.tolist()):
            logs[f'feat_scale_{k + 1}'] = s
        if norm.per_network:
            for k, s in enumerate(norm.scale_s.tolist()):
                logs[f'feat_scale_s_{k + 1}'] = s
        return norm(feats_t, 't'), norm(feats_s, 's')

    def term_name(self, term, index):
        name = term.__class__.__name__
        name = name[:-4] if name.endswith('Loss') else name
        names = [t.__class__.__name__ for t in self.feat_terms]
        suffix = f'_{index}' if names.count(term.__class__.__name__) > 1 else ''
        return f'l_{name.lower()}{suffix}'

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
        base model's own extras (the real-world models' pair pool)."""
        extras = dict(getattr(super(), 'training_state_extras', dict)())
        scaler = getattr(self, 'grad_scaler', None)
        if scaler is not None:
            extras['grad_scaler'] = scaler.state_dict()
        return extras

    def restore_training_state_extras(self, extras):
        restore = getattr(super(), 'restore_training_state_extras', None)
        if restore is not None:
            restore(extras)
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
