"""What the BasicSR fixes share: BasicSR's functions as they were, and whether CUDA is usable."""
import torch

# BasicSR's functions as they were before apply() (for tests comparing plain BasicSR with the plugin)
ORIGINALS = {}


def cuda_available():
    return torch.cuda.is_available() and torch.cuda.device_count() > 0
