"""Distillation on BasicSR's real-world and GAN models: the model type is the YAML edit.

Each model type is one of BasicSR's models with a frozen teacher, and the distillation terms of
:class:`~mixprior_plugin.models.kd_model.KDModel` (Logits-KD ``kd_opt``, the feature terms
``feat_opt``) or :class:`~mixprior_plugin.models.mipkd_model.MiPKDModel` (plus the mixers)::

    BasicSR model     Logits-KD and feature KD    MiPKD
    RealESRNetModel   RealESRNetKDModel           RealESRNetMiPKDModel     L1 on synthesised degradations
    RealESRGANModel   RealESRGANKDModel           RealESRGANMiPKDModel     + perceptual + GAN (U-Net discriminator)
    ESRGANModel       ESRGANKDModel               ESRGANMiPKDModel         paired data, relativistic GAN

The distillation code is KDModel's and MiPKDModel's (their distillers, ``mixprior_plugin/distillers/``);
these classes only combine it with the base:

* Real-world bases synthesise the LR of each batch once, in ``feed_data`` (BasicSR's code, made to
  run on any device by :class:`~mixprior_plugin.models.synthesis.SynthesisOnDevice`); the teacher
  and the student both read that ``self.lq``.
* RealESRNet trains like KDModel (its loss is L1 to the HR, plus the distillation terms).
* The GAN bases keep BasicSR's own ``optimize_parameters``: generator loss (pixel, perceptual,
  GAN) and step, then the discriminator's loss and step, then the EMA. :class:`GANDistillMixin`
  only adds the distillation terms to the generator's loss: a forward hook on the student sees the
  output of BasicSR's own generator forward, computes the terms from it (and from the stage
  features recorded in that same forward) and returns the output joined to their sum, so that
  BasicSR's ``l_g_total.backward()`` also back-propagates them. The discriminator, its optimizer,
  its schedule and ``net_d_iters`` / ``net_d_init_iters`` are BasicSR's; on iterations where
  BasicSR does not update the generator, no distillation term is computed.

Extra modules (connectors, mixers) have their own optimizer after BasicSR's (``optim_g``,
``optim_d``, then ``optim_extra``), are saved as ``net_extra_<iter>.pth`` and resumed; the
exported student is ``network_g`` alone. The GAN models train in fp32 on one process
(``train.amp`` and torchrun launches are refused).
"""
import torch

from basicsr.models.esrgan_model import ESRGANModel
from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.models.realesrnet_model import RealESRNetModel
from basicsr.utils.registry import MODEL_REGISTRY

from mixprior_plugin import options_schema
from mixprior_plugin.utils.options import OptionError
from .kd_model import KDModel
from .mipkd_model import MiPKDModel
from .synthesis import SynthesisOnDevice


class _JoinLoss(torch.autograd.Function):
    """``out`` unchanged; its backward also sends gradient 1 into ``loss``.

    Any loss built from the returned tensor then back-propagates ``loss`` too, once, however often
    the tensor is used (autograd sums the incoming gradients before calling this backward).
    """

    @staticmethod
    def forward(ctx, out, loss):
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, grad.new_ones(())


class GANDistillMixin:
    """The distillation terms inside BasicSR's own GAN update (see the module docstring).

    Put in front of KDModel or MiPKDModel, with a BasicSR SRGANModel subclass behind them.
    """

    adds_pixel_loss = False  # BasicSR's generator loss has the pixel term

    @classmethod
    def check_options(cls, opt, check_files=True):
        super().check_options(opt, check_files)
        amp = options_schema.value(opt, 'train', 'amp')
        if amp != 'off':
            raise OptionError(f'Option train.amp={amp!r}: {cls.__name__} trains in fp32 (BasicSR\'s GAN update has no '
                              'autocast or gradient scaler); set train.amp: off')
        if opt.get('dist'):
            raise OptionError(f'{cls.__name__} trains on one process: BasicSR\'s GAN update and the distillation '
                              'terms are not synchronised across torchrun ranks; start it without --launcher')

    def updates_generator(self, current_iter):
        """Whether BasicSR's update steps the generator at ``current_iter`` (its own condition)."""
        return current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters

    def optimize_parameters(self, current_iter):
        """BasicSR's generator and discriminator update, with the distillation terms in the generator's loss."""
        base_update = super(KDModel, self).optimize_parameters  # the BasicSR model's own
        if not self.updates_generator(current_iter):
            base_update(current_iter)
            return
        teacher = self.run_teacher(self.lq)
        if self.optimizer_extra is not None:
            self.optimizer_extra.zero_grad(set_to_none=True)
        if self.distiller.recorder_g is not None:
            self.distiller.recorder_g.clear()
        terms = {}

        def join(module, inputs, output):
            if terms:  # one generator forward per step is BasicSR's; anything later is left alone
                return output
            student = self.distiller.recorded_student(output, self.lq)
            terms['losses'], terms['logs'] = self.distill_losses(student, teacher, self.gt, current_iter)
            if not terms['losses']:
                return output
            total = sum(terms['losses'].values())
            self.check_finite(total, terms['losses'], current_iter)
            return _JoinLoss.apply(output, total)

        handle = self.get_bare_model(self.net_g).register_forward_hook(join)
        try:
            base_update(current_iter)
        finally:
            handle.remove()
        if self.optimizer_extra is not None and terms.get('losses'):
            self.optimizer_extra.step()
        self.log_dict.update(self.reduce_loss_dict(terms.get('losses') or {}))
        self.log_dict.update(terms.get('logs') or {})


@MODEL_REGISTRY.register()
class RealESRNetKDModel(KDModel, SynthesisOnDevice, RealESRNetModel):
    """BasicSR's RealESRNetModel (L1 on synthesised degradations) with Logits-KD and feature KD."""


@MODEL_REGISTRY.register()
class RealESRNetMiPKDModel(MiPKDModel, SynthesisOnDevice, RealESRNetModel):
    """BasicSR's RealESRNetModel with MiPKD."""


@MODEL_REGISTRY.register()
class RealESRGANKDModel(GANDistillMixin, KDModel, SynthesisOnDevice, RealESRGANModel):
    """BasicSR's RealESRGANModel (pixel + perceptual + GAN on synthesised degradations) with Logits-KD and
    feature KD."""


@MODEL_REGISTRY.register()
class RealESRGANMiPKDModel(GANDistillMixin, MiPKDModel, SynthesisOnDevice, RealESRGANModel):
    """BasicSR's RealESRGANModel with MiPKD."""


@MODEL_REGISTRY.register()
class ESRGANKDModel(GANDistillMixin, KDModel, ESRGANModel):
    """BasicSR's ESRGANModel (pixel + perceptual + relativistic GAN on paired data) with Logits-KD and
    feature KD."""


@MODEL_REGISTRY.register()
class ESRGANMiPKDModel(GANDistillMixin, MiPKDModel, ESRGANModel):
    """BasicSR's ESRGANModel with MiPKD."""
