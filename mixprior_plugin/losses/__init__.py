"""Plugin losses (registered in BasicSR's LOSS_REGISTRY on import)."""
from .kd_loss import FitNetLoss

__all__ = ['FitNetLoss']
