"""Names in BasicSR's registries, looked up as ``Registry.get`` does, without its print or raise.

The plugin's models register themselves in BasicSR's MODEL_REGISTRY when the package is imported;
the utilities that need their classes (which model type distils, which mixes priors) find them
here instead of importing ``models/``, which imports the utilities.
"""
from basicsr.utils.registry import MODEL_REGISTRY


def registry_lookup(registry, name):
    """The object ``registry.get(name)`` returns (with BasicSR's ``_basicsr`` suffix fallback), or None.

    Unlike ``Registry.get`` it neither prints nor raises.

    Args:
        registry (Registry): One of BasicSR's registries.
        name (str): The name an option file gives.
    """
    if not isinstance(name, str):
        return None
    entries = dict(iter(registry))
    return entries.get(name, entries.get(f'{name}_basicsr'))


def is_model_type(model_cls, name):
    """Whether ``model_cls`` is the model registered as ``name`` or a subclass of it.

    Args:
        model_cls (type | None): A model class (anything else: False).
        name (str): A registered model type, e.g. 'KDModel' (every distillation model extends it)
            or 'MiPKDModel'.

    Raises:
        LookupError: ``name`` is not registered (the plugin's models are registered once
            ``mixprior_plugin`` is imported).
    """
    registered = registry_lookup(MODEL_REGISTRY, name)
    if registered is None:
        raise LookupError(f'No model type {name!r} in BasicSR\'s MODEL_REGISTRY (import mixprior_plugin first)')
    return isinstance(model_cls, type) and issubclass(model_cls, registered)
