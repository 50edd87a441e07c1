"""Run mixprior-train under torchrun and dump what each rank ends with (for test_reliability).

Usage (as torchrun's script): ddp_runner.py OUT_DIR -opt X.yml --launcher pytorch
Writes OUT_DIR/rank<r>.pth with the student and extra-module states and how the model wrapped
its networks.
"""
import os
import sys

import torch


def main():
    out_dir = sys.argv.pop(1)
    import basicsr.train

    import mixprior_plugin  # noqa: F401
    from mixprior_plugin import basicsr_fixes
    basicsr_fixes.apply()
    built = {}
    original = basicsr.train.build_model

    def capture(opt):
        built['model'] = original(opt)
        return built['model']

    sys.modules['basicsr.train'].build_model = capture
    sys.modules['basicsr.train'].train_pipeline(os.getcwd())
    model = built['model']
    rank = torch.distributed.get_rank()
    ddp = torch.nn.parallel.DistributedDataParallel
    torch.save(
        dict(rank=rank, world_size=torch.distributed.get_world_size(),
             teacher_wrapped=isinstance(model.net_t, ddp), train_step_wrapped=isinstance(model.train_step, ddp),
             net_g=model.get_bare_model(model.net_g).state_dict(), net_extra=model.net_extra.state_dict(),
             log=model.log_dict), os.path.join(out_dir, f'rank{rank}.pth'))


if __name__ == '__main__':
    main()
