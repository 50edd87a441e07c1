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

NON_STRICT_FLAG = '--non-strict'


def main(argv=None):
    import sys
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
    import mixprior_plugin  # noqa: F401
    from mixprior_plugin import basicsr_fixes
    basicsr_fixes.apply()
    # a flag of ours: taken out before BasicSR's argparse, which would refuse it
    basicsr_fixes.ENTRY_FLAGS['non_strict'] = NON_STRICT_FLAG in sys.argv
    sys.argv = [arg for arg in sys.argv if arg != NON_STRICT_FLAG]
    from mixprior_plugin.export import enable_safetensors_in_test
    enable_safetensors_in_test()  # path.pretrain_network_g may be a .safetensors from mixprior-export
    from basicsr.test import test_pipeline
    basicsr_fixes.report_errors('mixprior-test', lambda: test_pipeline(os.getcwd()))


if __name__ == '__main__':
    main()
