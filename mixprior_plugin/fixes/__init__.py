"""The fixes BasicSR needs on today's PyTorch, one concern per module.

:func:`mixprior_plugin.basicsr_fixes.apply` is the one entry that installs them (its docstring
lists every fix); each module here holds the code of one concern:

* ``common``: BasicSR's functions as they were before the fixes, and whether CUDA is usable.
* ``resume``: resuming on any device, ``--auto_resume`` past broken states, exact resume.
* ``distributed``: torchrun launches on any device and the model classes the entry points build.
* ``options``: parsing, normalising and validating options before anything is built.
* ``errors``: one-line errors, and BasicSR's folder archiving undone after a failed start.
* ``messages``: the progress line's ETA.
* ``data``: the JPEG degradation's quality.
"""
