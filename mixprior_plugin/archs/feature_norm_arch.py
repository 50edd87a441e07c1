"""Per-point feature scale, so feature losses are comparable to the pixel loss."""
import torch
from torch import nn

from basicsr.utils.registry import ARCH_REGISTRY


@ARCH_REGISTRY.register()
class FeatureNormalizer(nn.Module):
    """Running mean of |F_T| per distillation point (a detached scale, no parameters).

    BasicSR's EDSR and RCAN work on inputs multiplied by 255, so raw feature L1 is ~100x the
    pixel L1. Teacher and student features at point k are divided by ``scale[k]`` before any
    feature loss or mixer, and the block path multiplies it back before a network consumes a
    decoded feature (../shared/spec/MIPKD.md, "Feature scale").

    Args:
        num_points (int): Number of distillation points K.
        momentum (float): Weight of the old value in the running mean. Default: 0.99.
        enabled (bool): When False the scale stays 1 (raw features). Default: True.
    """

    def __init__(self, num_points, momentum=0.99, enabled=True):
        super().__init__()
        self.momentum = momentum
        self.enabled = enabled
        self.register_buffer('scale', torch.ones(num_points))
        self.register_buffer('initialized', torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, teacher_feats):
        """Update the running scale from the teacher's features (training only).

        Under torch.distributed the batch statistic is averaged over ranks, so every rank keeps
        the same scale.

        Args:
            teacher_feats (list[Tensor]): K maps ``(N, C_T, H, W)``.
        """
        if not self.enabled:
            return
        current = torch.stack([f.detach().abs().mean().float() for f in teacher_feats]).to(self.scale)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # one scale for all ranks (each sees its own batch): average the batch statistics
            torch.distributed.all_reduce(current)
            current /= torch.distributed.get_world_size()
        current = current.clamp_min(1e-6)
        if not bool(self.initialized):
            self.scale.copy_(current)
            self.initialized.fill_(True)
        else:
            self.scale.mul_(self.momentum).add_(current, alpha=1 - self.momentum)

    def forward(self, feats):
        """Divide each point's feature by its scale.

        Args:
            feats (list[Tensor]): K maps ``(N, C, H, W)``.

        Returns:
            list[Tensor]: The normalised maps.
        """
        return [f / self.scale[k] for k, f in enumerate(feats)]
