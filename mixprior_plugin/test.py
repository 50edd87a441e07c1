"""Test entry point: BasicSR's test_pipeline with the plugin registered.

Usage::

    mixprior-test -opt options/test/xxx.yml [--non-strict]
    python -m mixprior_plugin.test -opt xxx.yml

For a KD / MiPKD option file only the student is built and evaluated. ``path.pretrain_network_g``
may be a .safetensors file written by mixprior-export; ``network_g`` can then be left out (it
comes from the file's metadata). Results go to results/<name>/ under the current directory.

The student loads strictly, whatever ``path.strict_load_g`` says (BasicSR's fine-tuning files set
it to false); ``--non-strict`` evaluates weights that fit only in part (at least half the network,
the skipped tensors named in the log). A training option file's training set is not evaluated.
"""
import os
import sys

from mixprior_plugin import basicsr_fixes
from mixprior_plugin.utils.student_files import ExportError, load_student_safetensors

NON_STRICT_FLAG = '--non-strict'


def enable_safetensors_in_test():
    """Let BasicSR's test pipeline take a .safetensors student as ``path.pretrain_network_g``.

    ``network_g`` may then be left out of the option file (it comes from the file's metadata); when
    given, its type must match. The weights are loaded by ``CheckpointMixin.load_network``, which
    converts weights in the original RCAN layout back.
    """
    test_mod = sys.modules['basicsr.test']
    if getattr(test_mod.build_model, '_mixprior_safetensors', False):
        return
    original_build = test_mod.build_model

    def build_model(opt):
        weights = (opt.get('path') or {}).get('pretrain_network_g')
        if isinstance(weights, str) and weights.endswith('.safetensors'):
            arch, _, _ = load_student_safetensors(weights)
            if opt.get('network_g') is None:
                opt['network_g'] = arch
            elif opt['network_g'].get('type') != arch.get('type'):
                raise ExportError(f'{weights} holds a {arch.get("type")} but network_g is {opt["network_g"]["type"]}')
        return original_build(opt)

    build_model._mixprior_safetensors = True
    test_mod.build_model = build_model


def main(argv=None):
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
    basicsr_fixes.apply()
    # a flag of ours: taken out before BasicSR's argparse, which would refuse it
    basicsr_fixes.ENTRY_FLAGS['non_strict'] = NON_STRICT_FLAG in sys.argv
    sys.argv = [arg for arg in sys.argv if arg != NON_STRICT_FLAG]
    enable_safetensors_in_test()  # path.pretrain_network_g may be a .safetensors from mixprior-export
    from basicsr.test import test_pipeline
    basicsr_fixes.report_errors('mixprior-test', lambda: test_pipeline(os.getcwd()))


if __name__ == '__main__':
    main()
