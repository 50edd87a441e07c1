"""Names looked up in BasicSR's registries: how the utilities find the plugin's model classes without importing them."""
import pytest

from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

from mixprior_plugin.models import KDModel, MiPKDModel, RealESRGANMiPKDModel
from mixprior_plugin.utils.registry import is_model_type, registry_lookup


def test_registry_lookup_finds_basicsr_suffixed_names_and_never_raises():
    assert registry_lookup(MODEL_REGISTRY, 'KDModel') is KDModel
    assert registry_lookup(ARCH_REGISTRY, 'SRVGGNetCompact') is ARCH_REGISTRY.get('SRVGGNetCompact_basicsr')
    assert registry_lookup(MODEL_REGISTRY, 'NoSuchModel') is None and registry_lookup(MODEL_REGISTRY, None) is None


def test_is_model_type_follows_subclasses_of_the_registered_class():
    assert is_model_type(RealESRGANMiPKDModel, 'KDModel') and is_model_type(RealESRGANMiPKDModel, 'MiPKDModel')
    assert is_model_type(KDModel, 'KDModel') and not is_model_type(KDModel, 'MiPKDModel')
    assert not is_model_type(SRModel, 'KDModel') and not is_model_type(None, 'KDModel')
    assert is_model_type(MiPKDModel, 'SRModel')
    with pytest.raises(LookupError, match="No model type 'KDModle' in BasicSR's MODEL_REGISTRY"):
        is_model_type(KDModel, 'KDModle')
