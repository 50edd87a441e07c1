"""Test entry point: BasicSR's test_pipeline with the plugin registered.

Usage::

    mixprior-test -opt options/test/xxx.yml
    python -m mixprior_plugin.test -opt xxx.yml

For a KD / MiPKD option file only the student is built and evaluated. ``path.pretrain_network_g``
may be a .safetensors file written by mixprior-export; ``network_g`` can then be left out (it
comes from the file's metadata). Results go to results/<name>/ under the current directory.
"""
import os


def main(argv=None):
    import sys
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
    import mixprior_plugin  # noqa: F401
    from mixprior_plugin import basicsr_fixes
    basicsr_fixes.apply()
    from mixprior_plugin.export import enable_safetensors_in_test
    enable_safetensors_in_test()  # path.pretrain_network_g may be a .safetensors from mixprior-export
    from basicsr.test import test_pipeline
    basicsr_fixes.report_errors('mixprior-test', lambda: test_pipeline(os.getcwd()))


if __name__ == '__main__':
    main()
