"""Plugin models (registered in BasicSR's MODEL_REGISTRY on import)."""
from .kd_model import KDModel
from .mipkd_model import MiPKDModel
from .realworld_kd_model import (
    ESRGANKDModel,
    ESRGANMiPKDModel,
    RealESRGANKDModel,
    RealESRGANMiPKDModel,
    RealESRNetKDModel,
    RealESRNetMiPKDModel,
)

__all__ = ['KDModel', 'MiPKDModel', 'RealESRNetKDModel', 'RealESRNetMiPKDModel', 'RealESRGANKDModel',
           'RealESRGANMiPKDModel', 'ESRGANKDModel', 'ESRGANMiPKDModel']
