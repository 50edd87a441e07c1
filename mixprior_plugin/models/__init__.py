"""Plugin models (registered in BasicSR's MODEL_REGISTRY on import)."""
from .kd_model import KDModel

__all__ = ['KDModel']
