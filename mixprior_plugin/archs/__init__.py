"""Plugin architectures (registered in BasicSR's ARCH_REGISTRY on import)."""
from .connector_arch import FeatureConnector
from .feature_norm_arch import FeatureNormalizer
from .prior_mixer_arch import PriorMixer

__all__ = ['FeatureConnector', 'FeatureNormalizer', 'PriorMixer']
