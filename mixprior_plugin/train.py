"""Training entry point: BasicSR's train_pipeline with the plugin registered.

Usage::

    mixprior-train -opt options/train/MiPKD/xxx.yml [--auto_resume] [--launcher pytorch]
    python -m mixprior_plugin.train -opt xxx.yml

Any BasicSR option file runs unchanged. Outputs go under the current directory following
BasicSR's conventions: experiments/<name>/, tb_logger/<name>/. A mistake in the options or data
stops the run with one line naming the key or file (exit status 1; the traceback with --debug).
"""
import os
import sys

from mixprior_plugin import basicsr_fixes


def main(argv=None):
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
    basicsr_fixes.apply()
    from basicsr.train import train_pipeline
    basicsr_fixes.report_errors('mixprior-train', lambda: train_pipeline(os.getcwd()))


if __name__ == '__main__':
    main()
