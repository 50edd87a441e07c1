"""Feature-KD losses (FitNet, ...), one stage point at a time.

Contract with KDModel (``train.feat_opt``): a loss is called as ``loss(feat_s, feat_t)`` for each
distillation point with maps ``(N, C, H, W)`` already divided by the point's teacher scale, and
returns a scalar already multiplied by ``loss_weight`` (BasicSR's convention). A loss whose
``connector_kernel`` is set gets a trainable FeatureConnector (student width -> teacher width)
per point, built, optimised, saved and resumed by the model; ``feat_s`` then arrives connected.
"""
from torch import nn
from torch.nn import functional as F

from basicsr.utils.registry import LOSS_REGISTRY


@LOSS_REGISTRY.register()
class FitNetLoss(nn.Module):
    """FitNet hint loss: distance between connected student features and teacher features.

    Args:
        loss_weight (float): Weight of the term. Default: 1.0.
        criterion (str): 'l2' (mean squared error, FitNet's choice) or 'l1'. Default: 'l2'.
        connector (str): 'conv1x1' or 'conv3x3' regressor from student to teacher width.
            Default: 'conv1x1'.
    """

    CONNECTORS = {'conv1x1': 1, 'conv3x3': 3}

    def __init__(self, loss_weight=1.0, criterion='l2', connector='conv1x1'):
        super().__init__()
        if criterion not in ('l1', 'l2'):
            raise ValueError(f"FitNetLoss criterion must be 'l1' or 'l2', got {criterion!r}")
        if connector not in self.CONNECTORS:
            raise ValueError(f'FitNetLoss connector must be one of {sorted(self.CONNECTORS)}, got {connector!r}')
        self.loss_weight = loss_weight
        self.criterion = criterion
        self.connector_kernel = self.CONNECTORS[connector]

    def forward(self, feat_s, feat_t):
        """Args: feat_s (Tensor): connected student feature (N, C_T, H, W); feat_t (Tensor): (N, C_T, H, W)."""
        dist = F.mse_loss if self.criterion == 'l2' else F.l1_loss
        return self.loss_weight * dist(feat_s, feat_t)
