"""Plugin losses (registered in BasicSR's LOSS_REGISTRY on import)."""
from .kd_loss import ATLoss, FAKDLoss, FitNetLoss, RKDLoss

__all__ = ['FitNetLoss', 'ATLoss', 'FAKDLoss', 'RKDLoss']
