"""mixprior-train with test hooks, set by environment variables (test_checkpoint, test_validation, test_basicsr_fixes).

MIXPRIOR_TEST_SLOW_ITER=<seconds>: sleep once per iteration, so a test can kill -9 the run at a
    chosen point (the arithmetic is unchanged).
MIXPRIOR_TEST_SLOW_SAVE=<seconds>: sleep inside atomic checkpoint writes (of files whose name ends
    with MIXPRIOR_TEST_SLOW_SAVE_SUFFIX, default any), after the temporary file is complete and
    before the rename, announcing it with a `<target>.writing` marker file, so a test can kill the
    process while a checkpoint is being written.
"""
import os
import time

from basicsr.models.base_model import BaseModel

from mixprior_plugin.utils import checkpoint

slow_iter = float(os.environ.get('MIXPRIOR_TEST_SLOW_ITER', 0))
if slow_iter:
    original_update = BaseModel.update_learning_rate

    def slow_update(self, current_iter, warmup_iter=-1):
        time.sleep(slow_iter)
        return original_update(self, current_iter, warmup_iter)

    BaseModel.update_learning_rate = slow_update

slow_save = float(os.environ.get('MIXPRIOR_TEST_SLOW_SAVE', 0))
slow_suffix = os.environ.get('MIXPRIOR_TEST_SLOW_SAVE_SUFFIX', '')
if slow_save:
    original_replace = os.replace

    def slow_replace(src, dst):
        if src.endswith('.tmp') and dst.endswith(slow_suffix):
            open(dst + '.writing', 'w').close()
            time.sleep(slow_save)
        return original_replace(src, dst)

    checkpoint.os.replace = slow_replace

from mixprior_plugin.train import main  # noqa: E402

main()
