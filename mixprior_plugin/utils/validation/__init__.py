"""Checks of a whole option file before anything is built, and of data samples as they load.

Two stages, both run by the entry points before any folder is created, and one wrapper:

* :func:`validate_options` (``option_values``): the option values themselves (types, ranges,
  registered names).
* :func:`validate_files` (``data_folders``): the files they name: weights, training state, and the
  data folders of every dataset phase (layout, stray files, LR/HR sizes against the scale, the
  training crop against the smallest image).
* :func:`checked_getitem` (``samples``): errors of a paired-image sample name its files.
"""
from mixprior_plugin.utils.registry import registry_lookup
from mixprior_plugin.utils.validation.data_folders import validate_files
from mixprior_plugin.utils.validation.option_values import (
                                                            _is_kd_model,
                                                            synthesises_lr,
                                                            validate_dataset_options,
                                                            validate_options,
)
from mixprior_plugin.utils.validation.samples import checked_getitem

__all__ = ['checked_getitem', 'registry_lookup', 'synthesises_lr', 'validate_dataset_options', 'validate_files',
           'validate_options', '_is_kd_model']
