"""Per-point feature scale, so feature losses are comparable to the pixel loss."""
import torch
from torch import nn

from basicsr.utils.registry import ARCH_REGISTRY


def _batch_scale(feats, ref):
    """Mean |F| per point, averaged over ranks under torch.distributed (one scale on all ranks)."""
    current = torch.stack([f.detach().abs().mean().float() for f in feats]).to(ref)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(current)
        current /= torch.distributed.get_world_size()
    return current.clamp_min(1e-6)


@ARCH_REGISTRY.register()
class FeatureNormalizer(nn.Module):
    """Running mean of |F| per distillation point (a detached scale, no parameters).

    BasicSR's EDSR and RCAN work on inputs multiplied by 255, so raw feature L1 is ~100x the
    pixel L1. Features at point k are divided by a scale before any feature loss or mixer, and
    MiPKD's block path multiplies it back before a network consumes a decoded feature
    (docs/method.md, "Feature scale").

    Two modes:

    * one scale from the teacher for both networks (``per_network=False``, the method's default
      for networks of one family, whose features live on the same numeric scale);
    * each network its own running scale (``per_network=True``): for cross-family pairs, e.g. a
      SwinIR teacher (inputs in [0, 1]) and an EDSR student (inputs x255), whose features differ
      by two orders of magnitude.

    Args:
        num_points (int): Number of distillation points K.
        momentum (float): Weight of the old value in the running mean. Default: 0.99.
        enabled (bool): When False the scales stay 1 (raw features). Default: True.
        per_network (bool): Keep a separate student scale. Default: False.
    """

    def __init__(self, num_points, momentum=0.99, enabled=True, per_network=False):
        super().__init__()
        self.momentum = momentum
        self.enabled = enabled
        self.per_network = per_network
        self.register_buffer('scale', torch.ones(num_points))
        if per_network:
            self.register_buffer('scale_s', torch.ones(num_points))
        self.register_buffer('initialized', torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, teacher_feats, student_feats=None):
        """Update the running scales from this batch's features (training only).

        Args:
            teacher_feats (list[Tensor]): K maps ``(N, C_T, H, W)``.
            student_feats (list[Tensor] | None): K maps ``(N, C_S, H, W)``; used with
                ``per_network`` only.
        """
        if not self.enabled:
            return
        pairs = [(self.scale, teacher_feats)]
        if self.per_network:
            if student_feats is None:
                raise ValueError('FeatureNormalizer(per_network=True).update needs the student features')
            pairs.append((self.scale_s, student_feats))
        first = not bool(self.initialized)
        for buf, feats in pairs:
            current = _batch_scale(feats, buf)
            if first:
                buf.copy_(current)
            else:
                buf.mul_(self.momentum).add_(current, alpha=1 - self.momentum)
        self.initialized.fill_(True)

    def scale_of(self, side):
        """Scales ``(K,)`` of network ``side`` ('t' teacher, 's' student)."""
        return self.scale_s if side == 's' and self.per_network else self.scale

    def forward(self, feats, side='t'):
        """Divide each point's feature by its scale.

        Args:
            feats (list[Tensor]): K maps ``(N, C, H, W)``.
            side (str): Whose features: 't' or 's'.

        Returns:
            list[Tensor]: The normalised maps.
        """
        scale = self.scale_of(side)
        return [f / scale[k] for k, f in enumerate(feats)]
