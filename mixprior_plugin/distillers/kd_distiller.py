"""KDDistiller: the distillation machinery of output KD and feature KD, as one component a model owns.

In the spirit of mmrazor's ConfigurableDistiller: feature recorders (forward hooks at the stage
boundaries of teacher and student), connectors (the student-to-teacher projections of feature terms
that ask for them), the running feature normalisation, and the loss terms (the pixel term the model
hands in, output KD ``train.kd_opt``, the feature terms ``train.feat_opt``) live here. The model that
owns it (:class:`~mixprior_plugin.models.kd_model.KDModel` and its subclasses) keeps BasicSR's
training lifecycle: it runs the networks (through :meth:`record_teacher` / :meth:`record_student`),
sums the terms this class returns, steps the optimizers and saves ``extra`` as ``net_extra``.

One step::

    teacher = distiller.record_teacher(net_t, lq)            # under no_grad
    out, head, feats = distiller.record_student(net_g, lq)   # with gradients
    losses, logs = distiller.losses(dict(out=out, head=head, feats=feats), teacher, gt, it, pixel_loss)
"""
from collections import OrderedDict

from torch import nn

from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger

from mixprior_plugin import options_schema
from mixprior_plugin.stages import FeatureRecorder, build_adapters


def loss_weight(loss):
    """The weight of a BasicSR loss module (0 switches the term off)."""
    return float(getattr(loss, 'loss_weight', 1.0)) if loss is not None else 0.0


def feat_norm_mode(value, net_t, net_g):
    """Resolve ``distill.feat_norm`` to 'teacher', 'per_network' or 'off'.

    ``true``/'teacher': one running teacher scale for both networks (the method's reading, right
    when both networks take their inputs on one numeric scale). 'per_network': each network its
    own running scale (needed across families: SwinIR features are ~1, EDSR's ~100). 'auto' (the
    default): 'teacher' when teacher and student are of one arch class, else 'per_network'.
    ``false``/'off': raw features.

    Args:
        value (bool | str | None): ``distill.feat_norm`` as checked by options_schema.
        net_t, net_g (nn.Module): Teacher and student (their classes decide 'auto').
    """
    if value is True:
        return 'teacher'
    if value is False or value is None:
        return 'off'
    if value == 'auto':
        return 'teacher' if type(net_t) is type(net_g) else 'per_network'
    return value


def as_list(value):
    """``value`` as a list: [] for None, the items of a list or tuple, else [value]."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class KDDistiller:
    """Recorders, connectors, feature normalisation and the loss terms of output and feature KD.

    Args:
        kd_loss (nn.Module): Output KD loss between student and teacher SR images (``train.kd_opt``).
        feat_terms (list[nn.Module]): Feature-KD losses applied at every distillation point
            (``train.feat_opt``).
        adapter_t (StageAdapter | None): The teacher's stage adapter (None: no stage features).
        adapter_g (StageAdapter | None): The student's stage adapter.
        extra (nn.ModuleDict | None): Trainable and stateful modules: ``feat_norm`` (the running
            feature scale), ``connectors`` (per feature term, one per point); the owning model saves
            and optimises it as ``net_extra``.
    """

    def __init__(self, kd_loss, feat_terms, adapter_t=None, adapter_g=None, extra=None):
        self.cri_kd, self.feat_terms = kd_loss, list(feat_terms)
        self.adapter_t, self.adapter_g = adapter_t, adapter_g
        self.recorder_t = FeatureRecorder(adapter_t) if adapter_t is not None else None
        self.recorder_g = FeatureRecorder(adapter_g) if adapter_g is not None else None
        self.extra = extra if extra is not None else nn.ModuleDict()
        self.lq = None  # the LR batch of the last recorded student forward (block paths read it)

    # ------------------------------------------------------------------ parts, from options
    @classmethod
    def feat_terms_for(cls, opt):
        """The feature-KD loss modules of ``train.feat_opt`` (one dict or a list)."""
        return [build_loss(t) for t in as_list(options_schema.value(opt, 'train', 'feat_opt'))]

    @classmethod
    def uses_features_for(cls, opt, feat_terms):
        """Whether stage features are needed (feature terms, or an explicit distill section)."""
        return bool(feat_terms) or opt.get('distill') is not None

    @classmethod
    def extra_modules_for(cls, opt, adapter_t, adapter_g, feat_terms):
        """Trainable/stateful modules besides the student, from options (no weights loaded).

        KD: the per-point feature scale and the connectors of feature terms that ask for them
        (``connector_kernel``). Subclasses add their own (MiPKDDistiller: the mixers).

        Args:
            opt (dict): Options.
            adapter_t, adapter_g (StageAdapter | None): Adapters (None: no stage features).
            feat_terms (list[nn.Module]): Built ``train.feat_opt`` losses.

        Returns:
            nn.ModuleDict: ``feat_norm`` and, when a term asks for them, ``connectors`` ({term index:
            ModuleList of one connector per point}); empty without stage features.
        """
        extra = nn.ModuleDict()
        if adapter_t is None:
            return extra
        distill = options_schema.settings(opt, 'distill', 'KDModel')
        k = adapter_t.num_stages
        mode = feat_norm_mode(distill['feat_norm'], adapter_t.net, adapter_g.net)
        extra['feat_norm'] = build_network(
            dict(type='FeatureNormalizer', num_points=k, enabled=mode != 'off', per_network=mode == 'per_network',
                 momentum=distill['feat_norm_momentum']))
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

    @classmethod
    def own_arguments(cls, opt, device):
        """Constructor arguments a subclass adds to KDDistiller's, from options (KD: none)."""
        return {}

    @classmethod
    def build(cls, opt, net_t, net_g, device, parts=None):
        """The distiller of a run: losses, adapters (checked against each network's forward), recorders, extra.

        Args:
            opt (dict): Options (checked by the model's ``check_options``).
            net_t (nn.Module): The frozen teacher.
            net_g (nn.Module): The bare student.
            device (torch.device): Where losses and extra modules go.
            parts (type | None): Class whose ``feat_terms_for``, ``uses_features_for`` and
                ``extra_modules_for`` build the parts (the owning model class, which may extend them);
                None: this class.
        """
        parts = parts or cls
        own = cls.own_arguments(opt, device)
        kd_loss = build_loss(options_schema.value(opt, 'train', 'kd_opt')).to(device)
        feat_terms = [t.to(device) for t in parts.feat_terms_for(opt)]
        adapter_t = adapter_g = None
        if parts.uses_features_for(opt, feat_terms):
            distill = options_schema.settings(opt, 'distill', 'KDModel')
            adapter_t, adapter_g = build_adapters(distill, net_t, net_g)
            if distill['check_adapters']:
                adapter_t.check_matches_forward()
                adapter_g.check_matches_forward()
            get_root_logger().info('Distillation stages: teacher ends %s, student ends %s', adapter_t.stage_ends,
                                   adapter_g.stage_ends)
        extra = parts.extra_modules_for(opt, adapter_t, adapter_g, feat_terms).to(device)
        return cls(kd_loss, feat_terms, adapter_t, adapter_g, extra, **own)

    # ------------------------------------------------------------------ recording
    def record_teacher(self, net_t, lq):
        """Teacher output, head feature and stage features of one forward (call it under no_grad).

        Args:
            net_t (nn.Module): The teacher.
            lq (Tensor): LR batch ``(N, 3, h, w)``.

        Returns:
            dict: ``out`` ``(N, 3, sh, sw)``, ``head`` ``(N, C_t, h, w)`` and ``feats`` (a list of
            ``(N, C_t, h, w)`` per point); ``head`` and ``feats`` None without stages.
        """
        if self.recorder_t is not None:
            self.recorder_t.clear()
        out = net_t(lq)
        if self.recorder_t is None:
            return dict(out=out, head=None, feats=None)
        return dict(out=out, head=self.recorder_t.head, feats=list(self.recorder_t.features))

    def record_student(self, net_g, lq):
        """Student output with its head and stage features recorded (with gradients).

        Args:
            net_g (nn.Module): The bare student.
            lq (Tensor): LR batch ``(N, 3, h, w)``.

        Returns:
            tuple[Tensor, Tensor | None, list[Tensor] | None]: ``(N, 3, sh, sw)``, the head feature
            ``(N, C_s, h, w)`` and the stage features (``(N, C_s, h, w)`` per point).
        """
        if self.recorder_g is not None:
            self.recorder_g.clear()
        student = self.recorded_student(net_g(lq), lq)
        return student['out'], student['head'], student['feats']

    def recorded_student(self, out, lq):
        """The student's forward that has just run (its output ``out`` on ``lq``) as :meth:`losses` takes it."""
        self.lq = lq
        rec = self.recorder_g
        return dict(out=out, head=rec.head if rec else None, feats=list(rec.features) if rec else None)

    # ------------------------------------------------------------------ losses
    def losses(self, student, teacher, gt, current_iter, pixel_loss=None):
        """The loss terms of one step given both forward passes.

        Args:
            student (dict): ``out`` ``(N, 3, sh, sw)``, ``head``, ``feats`` of the student (with gradients).
            teacher (dict): The same of the teacher (no gradients), from :meth:`record_teacher`.
            gt (Tensor): HR batch ``(N, 3, sh, sw)``.
            current_iter (int): Iteration (1-based).
            pixel_loss (nn.Module | None): The model's pixel loss to ``gt`` (None: the model's own update
                adds it, as the GAN models do).

        Returns:
            tuple[OrderedDict, dict]: Loss tensors in a fixed order (``l_pix``, ``l_kd``, the feature
            terms, the subclass's terms), summed for backward, and extra scalars to log.
        """
        losses, logs = OrderedDict(), {}
        normalised = None
        if self.adapter_t is not None:
            normalised = self.normalised_features(teacher['feats'], student['feats'], logs)
        if loss_weight(pixel_loss):
            losses['l_pix'] = pixel_loss(student['out'], gt)
        self.add_losses(student, teacher, gt, normalised, losses, logs, current_iter)
        return losses, logs

    def add_losses(self, student, teacher, gt, normalised, losses, logs, current_iter):
        """Add this method's terms to ``losses``. KD: output KD, then the feature terms.

        Args:
            student (dict): ``out``, ``head``, ``feats`` of the student (with gradients).
            teacher (dict): ``out``, ``head``, ``feats`` of the teacher (no gradients).
            gt (Tensor): HR batch.
            normalised (tuple[list, list] | None): Teacher and student stage features divided by
                the running scale.
            losses (OrderedDict): Filled in place.
            logs (dict): Extra scalars to log, filled in place.
            current_iter (int): Iteration.
        """
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
        if 'connectors' in self.extra and str(index) in self.extra['connectors']:
            return self.extra['connectors'][str(index)]
        return None

    def normalised_features(self, feats_t, feats_s, logs):
        """Update the running scale and divide both sides' features by it.

        Args:
            feats_t, feats_s (list[Tensor]): Teacher and student stage features, ``(N, C, h, w)`` each.
            logs (dict): Receives ``feat_scale_<k>`` (and ``feat_scale_s_<k>`` per network).

        Returns:
            tuple[list[Tensor], list[Tensor]]: Normalised teacher and student features (same shapes).
        """
        norm = self.extra['feat_norm']
        norm.update(feats_t, feats_s)
        for k, s in enumerate(norm.scale.tolist()):
            logs[f'feat_scale_{k + 1}'] = s
        if norm.per_network:
            for k, s in enumerate(norm.scale_s.tolist()):
                logs[f'feat_scale_s_{k + 1}'] = s
        return norm(feats_t, 't'), norm(feats_s, 's')

    def term_name(self, term, index):
        """The log name of feature term ``index`` (``l_fitnet``; ``l_fitnet_1`` when a type repeats)."""
        name = term.__class__.__name__
        name = name[:-4] if name.endswith('Loss') else name
        names = [t.__class__.__name__ for t in self.feat_terms]
        suffix = f'_{index}' if names.count(term.__class__.__name__) > 1 else ''
        return f'l_{name.lower()}{suffix}'

    # ------------------------------------------------------------------ state
    def state(self):
        """Training-state extras of the distiller (KD: none; see the subclasses)."""
        return {}

    def restore(self, extras):
        """Restore what :meth:`state` saved (missing keys: left as they are)."""
