"""BasicSR's real-world degradation synthesis (RealESRNetModel, RealESRGANModel) on the model's device.

BasicSR's two real-world models make each training batch's LR in ``feed_data``: a second-order
degradation of the HR (blur, resize, noise, JPEG, twice, then a sinc filter), a random crop to
``gt_size`` and a training pair pool (``queue_size``) that mixes batches. Their degradation
settings are top-level options (``resize_prob``, ``noise_range``, ``jpeg_range``, ...) and the
blur kernels come from ``RealESRGANDataset``. :class:`SynthesisOnDevice`, placed in front of either
class, keeps that code and changes only what ties it to CUDA or makes it needlessly slow on a CPU:

1. ``__init__`` builds the JPEG simulator and the USM sharpener on the model's device (BasicSR
   calls ``.cuda()``, which fails on a machine without CUDA).
2. The pair pool is allocated on the model's device (BasicSR allocates it with ``.cuda()``), and a
   ``queue_size`` that is not a multiple of the batch size is an error naming both options.
3. The JPEG simulator's output is made contiguous: on the CPU it is a strided view that BasicSR's
   ``filter2D`` cannot ``view`` (``RuntimeError: view size is not compatible``); values are unchanged.
4. ``synth_crop_size`` (top-level, default ``~``: off): RealESRGANDataset pads or crops every HR
   sample to 400x400, and the whole 400x400 is degraded before the crop to ``gt_size``. With
   ``synth_crop_size: S`` each sample is first cropped at a random position to S x S, so the
   synthesis costs (S / 400)^2 of BasicSR's. The degradations act the same everywhere in the image,
   so a crop taken before them is distributed as one taken after, up to the image borders.
5. The pool is part of the training state when exact resume is on (``training_state_extras``), so
   a resumed run draws the same pairs as an uninterrupted one. It holds ``queue_size`` LR/HR pairs
   in float32: about 150 MB at BasicSR's x4 settings (180 pairs, gt_size 256); ``exact_resume:
   false`` leaves it out and a resumed run refills it, as in BasicSR.

Everything else (the degradation draws, their order, the crop, the pool's shuffling, validation on
paired data) is BasicSR's code, run unchanged.
"""
import random

import torch

from basicsr.utils import DiffJPEG, USMSharp

from mixprior_plugin import options_schema
from mixprior_plugin.utils.model_types import synthesis_bases
from mixprior_plugin.utils.options import OptionError

# Real-ESRGAN's degradation settings (BasicSR's train_realesrnet_x4plus.yml / train_realesrgan_x4plus.yml):
# the model's top-level options, and the blur-kernel options of the RealESRGANDataset.
DEGRADATIONS = dict(
    resize_prob=[0.2, 0.7, 0.1], resize_range=[0.15, 1.5], gaussian_noise_prob=0.5, noise_range=[1, 30],
    poisson_scale_range=[0.05, 3], gray_noise_prob=0.4, jpeg_range=[30, 95],
    second_blur_prob=0.8, resize_prob2=[0.3, 0.4, 0.3], resize_range2=[0.3, 1.2], gaussian_noise_prob2=0.5,
    noise_range2=[1, 25], poisson_scale_range2=[0.05, 2.5], gray_noise_prob2=0.4, jpeg_range2=[30, 95])
_KERNELS = ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso']
KERNELS = dict(
    blur_kernel_size=21, kernel_list=list(_KERNELS), kernel_prob=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03], sinc_prob=0.1,
    blur_sigma=[0.2, 3], betag_range=[0.5, 4], betap_range=[1, 2],
    blur_kernel_size2=21, kernel_list2=list(_KERNELS), kernel_prob2=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    sinc_prob2=0.1, blur_sigma2=[0.2, 1.5], betag_range2=[0.5, 4], betap_range2=[1, 2], final_sinc_prob=0.8)


class ContiguousDiffJPEG(DiffJPEG):
    """BasicSR's DiffJPEG with a contiguous output (the same values; see the module docstring, item 3)."""

    def forward(self, x, quality):
        return super().forward(x, quality=quality).contiguous()


def random_crops(images, size):
    """A random ``size`` x ``size`` crop of each image of a batch (Python's ``random`` draws the positions).

    Args:
        images (Tensor): ``(N, C, H, W)``.
        size (int): Crop size; images already this small are returned as they are.

    Returns:
        Tensor: ``(N, C, size, size)``.
    """
    h, w = images.shape[-2:]
    if h <= size and w <= size:
        return images
    crops = []
    for img in images:
        top, left = random.randint(0, max(h - size, 0)), random.randint(0, max(w - size, 0))
        crops.append(img[:, top:top + size, left:left + size])
    return torch.stack(crops)


class SynthesisOnDevice:
    """Put in front of BasicSR's RealESRNetModel or RealESRGANModel: their synthesis on any device.

    See the module docstring for the five changes; BasicSR's ``feed_data``,
    ``_dequeue_and_enqueue`` and validation run unchanged around them.

    Args:
        opt (dict): BasicSR options.
    """

    def __init__(self, opt):
        base = next(c for c in type(self).__mro__ if c in synthesis_bases())
        super(base, self).__init__(opt)  # everything the base's __init__ does, up to its .cuda() lines
        self.jpeger = ContiguousDiffJPEG(differentiable=False).to(self.device)
        self.usm_sharpener = USMSharp().to(self.device)
        self.queue_size = options_schema.value(opt, options_schema.TOP, 'queue_size')

    @torch.no_grad()
    def feed_data(self, data):
        size = options_schema.value(self.opt, options_schema.TOP, 'synth_crop_size')
        if size and self.is_train and options_schema.value(self.opt, options_schema.TOP, 'high_order_degradation'):
            data = dict(data, gt=random_crops(data['gt'], size))
        super().feed_data(data)

    @torch.no_grad()
    def _dequeue_and_enqueue(self):
        if not hasattr(self, 'queue_lr'):
            b = self.lq.size(0)
            if self.queue_size % b:
                raise OptionError(f'Option queue_size={self.queue_size} is not a multiple of the batch size {b}')
            self.queue_lr = self.lq.new_zeros((self.queue_size, *self.lq.shape[1:]))
            self.queue_gt = self.gt.new_zeros((self.queue_size, *self.gt.shape[1:]))
            self.queue_ptr = 0
        super()._dequeue_and_enqueue()

    def training_state_extras(self):
        """The training pair pool, when exact resume is on (see the module docstring, item 5)."""
        from mixprior_plugin.utils.checkpoint import EXACT_RESUME
        extras = dict(getattr(super(), 'training_state_extras', dict)())
        if EXACT_RESUME['enabled'] and hasattr(self, 'queue_lr'):
            extras['pair_pool'] = dict(lq=self.queue_lr.cpu(), gt=self.queue_gt.cpu(), ptr=self.queue_ptr)
        return extras

    def restore_training_state_extras(self, extras):
        restore = getattr(super(), 'restore_training_state_extras', None)
        if restore is not None:
            restore(extras)
        pool = extras.get('pair_pool')
        if pool is not None:
            self.queue_lr, self.queue_gt = pool['lq'].to(self.device), pool['gt'].to(self.device)
            self.queue_ptr = pool['ptr']
