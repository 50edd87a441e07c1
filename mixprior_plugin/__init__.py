"""mixprior: knowledge distillation for super-resolution as a BasicSR plugin.

Importing the package registers its architectures, losses and models in BasicSR's registries,
so ``type:`` / ``model_type:`` in any BasicSR option file can name them. A project's own train.py
may call ``basicsr.train.train_pipeline`` after ``import mixprior_plugin``; docs/retrofit.md says
what ``mixprior-train`` adds on top.
"""
from . import archs, basicsr_fixes, losses, models  # noqa: F401  (registration side effects)

# The one change the import makes in BasicSR: resume works without CUDA and keeps the teacher's
# weights file (basicsr_fixes, fix 0). mixprior-train / mixprior-test apply the rest explicitly.
basicsr_fixes.install_on_import()

__version__ = '0.1.0'
