"""Run mixprior-train under torchrun and dump what each rank ends with (for test_basicsr_fixes).

Usage (as torchrun's script): ddp_runner.py OUT_DIR -opt X.yml --launcher pytorch
Writes OUT_DIR/rank<r>.pth with the student and extra-module states, how the model wrapped
its networks and, for MiPKD, the hybrid drawn at each iteration of this process (``routes``).
MIXPRIOR_TEST_SLOW_ITER=<seconds> sleeps once per iteration, so a test can kill the run at a chosen
point (as in train_runner.py).
"""
import os
import sys
import time

import torch


def main():
    out_dir = sys.argv.pop(1)
    import basicsr.train

    import mixprior_plugin  # noqa: F401
    from mixprior_plugin import basicsr_fixes
    basicsr_fixes.apply()
    built = {}
    original = basicsr.train.build_model

    slow_iter = float(os.environ.get('MIXPRIOR_TEST_SLOW_ITER', 0))
    routes = []

    def capture(opt):
        model = built['model'] = original(opt)
        step = model.optimize_parameters

        def recording_step(current_iter):
            if slow_iter:
                time.sleep(slow_iter)
            step(current_iter)
            route = getattr(model, 'last_route', None)
            routes.append((current_iter, None if route is None else repr(route)))

        model.optimize_parameters = recording_step
        return model

    sys.modules['basicsr.train'].build_model = capture
    sys.modules['basicsr.train'].train_pipeline(os.getcwd())
    model = built['model']
    rank = torch.distributed.get_rank()
    ddp = torch.nn.parallel.DistributedDataParallel
    torch.save(
        dict(rank=rank, world_size=torch.distributed.get_world_size(),
             teacher_wrapped=isinstance(model.net_t, ddp), train_step_wrapped=isinstance(model.train_step, ddp),
             net_g=model.get_bare_model(model.net_g).state_dict(), net_extra=model.net_extra.state_dict(),
             log=model.log_dict, routes=routes), os.path.join(out_dir, f'rank{rank}.pth'))


if __name__ == '__main__':
    main()
