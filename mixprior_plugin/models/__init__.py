"""Plugin models (registered in BasicSR's MODEL_REGISTRY on import)."""
from .kd_model import KDModel
from .mipkd_model import MiPKDModel

__all__ = ['KDModel', 'MiPKDModel']
