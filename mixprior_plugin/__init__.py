"""mixprior: knowledge distillation for super-resolution as a BasicSR plugin.

Importing the package registers its architectures, losses and models in BasicSR's registries,
so ``type:`` / ``model_type:`` in any BasicSR option file can name them.
"""
from . import archs, losses, models  # noqa: F401  (registration side effects)

__version__ = '0.1.0'
