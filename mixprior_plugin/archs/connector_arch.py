"""Connectors: small trainable adapters from student features to teacher features."""
from torch import nn

from basicsr.utils.registry import ARCH_REGISTRY


@ARCH_REGISTRY.register()
class FeatureConnector(nn.Module):
    """A convolution mapping student features to the teacher's width (FitNet's regressor).

    Args:
        in_channels (int): Student channels C_S.
        out_channels (int): Teacher channels C_T.
        kernel_size (int): 1 or 3. Default: 1.
    """

    def __init__(self, in_channels, out_channels, kernel_size=1):
        super().__init__()
        if kernel_size not in (1, 3):
            raise ValueError(f'FeatureConnector kernel_size must be 1 or 3, got {kernel_size}')
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2)

    def forward(self, x):
        """(N, C_S, H, W) -> (N, C_T, H, W)."""
        return self.conv(x)
