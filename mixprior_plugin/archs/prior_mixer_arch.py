"""MiPKD's Feature Prior Mixer for one distillation point (docs/method.md).

    Z_T = E_T(F_T),  Z_S = E_S(F_S),  I ~ mask(B, C_z, H, W),  Z_M = I * Z_T + (1 - I) * Z_S
    F^_T = D_T(Z_M)  (trained to reconstruct F_T),  D_S maps latents back to the student's space.

The same encoders/decoders carry features across networks in the Block Prior Mixer.
"""
import torch
from torch import nn

from basicsr.utils.registry import ARCH_REGISTRY

ENCODER_TYPES = ('cnn', 'mlp')
SHARING_MODES = ('separate', 'shared', 'none')
MASK_TYPES = ('random3d', 'spatial', 'channel', 'grid', 'similarity')


def _coder(in_ch, out_ch, hidden_ch, kind):
    """conv3x3 -> LeakyReLU(0.1) -> conv3x3 ('cnn'), or the same with 1x1 convs ('mlp')."""
    k = 3 if kind == 'cnn' else 1
    return nn.Sequential(
        nn.Conv2d(in_ch, hidden_ch, k, 1, k // 2), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(hidden_ch, out_ch, k, 1, k // 2))


def make_mask(mask_type, ratio, z_t, z_s=None, grid_size=4):
    """Draw the binary mixing mask I (1 = take the teacher's latent).

    Args:
        mask_type (str): 'random3d' (i.i.d. per element, the paper's 3-D mask), 'spatial' (one
            draw per pixel, shared over channels), 'channel' (one draw per channel, shared over
            pixels), 'grid' (one draw per cell of a fixed ``grid_size`` x ``grid_size`` grid,
            shared over channels) or 'similarity' (the teacher where |Z_T - Z_S| is largest, the
            top ``ratio`` of each sample; deterministic given the latents).
        ratio (float): Expected share of ones, p.
        z_t (Tensor): Teacher latent ``(B, C_z, H, W)``; gives shape, device and dtype.
        z_s (Tensor | None): Student latent, needed by 'similarity'.
        grid_size (int): Cell size for 'grid'.

    Returns:
        Tensor: Mask of 0/1 values, ``(B, C_z, H, W)``, dtype of ``z_t``.
    """
    b, c, h, w = z_t.shape
    dev = z_t.device
    if mask_type == 'random3d':
        mask = torch.rand(b, c, h, w, device=dev) < ratio
    elif mask_type == 'spatial':
        mask = (torch.rand(b, 1, h, w, device=dev) < ratio).expand(b, c, h, w)
    elif mask_type == 'channel':
        mask = (torch.rand(b, c, 1, 1, device=dev) < ratio).expand(b, c, h, w)
    elif mask_type == 'grid':
        gh, gw = -(-h // grid_size), -(-w // grid_size)
        cells = torch.rand(b, 1, gh, gw, device=dev) < ratio
        mask = cells.repeat_interleave(grid_size, 2).repeat_interleave(grid_size, 3)[:, :, :h, :w]
        mask = mask.expand(b, c, h, w)
    elif mask_type == 'similarity':
        if z_s is None:
            raise ValueError("mask type 'similarity' needs the student latent")
        diff = (z_t - z_s).detach().abs().flatten(1)
        keep = int(round(ratio * diff.shape[1]))
        mask = torch.zeros_like(diff, dtype=torch.bool)
        if keep > 0:
            mask.scatter_(1, diff.topk(keep, dim=1).indices, True)
        mask = mask.view(b, c, h, w)
    else:
        raise ValueError(f'Unknown mask type {mask_type!r}; choose from {MASK_TYPES}')
    return mask.to(z_t.dtype)


@ARCH_REGISTRY.register()
class PriorMixer(nn.Module):
    """Encoders, decoders and mask of one distillation point.

    Args:
        teacher_channels (int): C_T.
        student_channels (int): C_S.
        latent_channels (int | None): C_z. None: C_S (the spec's default).
        encoder_type (str): 'cnn' (conv3x3 - LeakyReLU(0.1) - conv3x3) or 'mlp' (1x1 convs).
            Decoders use the same type.
        sharing (str): 'separate' (E_T and E_S, the default), 'shared' (one encoder for both;
            with C_T != C_S each side first gets a 1x1 projection to C_z) or 'none' (no
            encoders: features are mixed as they are, through a 1x1 projection where a width
            differs from C_z). Decoders D_T and D_S are always separate.
        mask_type (str): See :func:`make_mask`. Default: 'random3d'.
        mask_ratio (float): p, expected share of teacher latents. Default: 0.5.
        grid_size (int): Cell size of the 'grid' mask. Default: 4.
        detach_teacher_latent (bool): Mix ``Z_T`` detached, so that L_FPM and L_BPM do not train the
            teacher encoder E_T; E_T then learns from the auto-encoder term alone and stays a pure
            encoder of the teacher's feature. False (default, the paper's reading): every mixer
            part is trained jointly by every term it takes part in.
    """

    def __init__(self, teacher_channels, student_channels, latent_channels=None, encoder_type='cnn',
                 sharing='separate', mask_type='random3d', mask_ratio=0.5, grid_size=4, detach_teacher_latent=False):
        super().__init__()
        if encoder_type not in ENCODER_TYPES:
            raise ValueError(f'mixer.encoder.type must be one of {ENCODER_TYPES}, got {encoder_type!r}')
        if sharing not in SHARING_MODES:
            raise ValueError(f'mixer.encoder.sharing must be one of {SHARING_MODES}, got {sharing!r}')
        if mask_type not in MASK_TYPES:
            raise ValueError(f'mixer.mask.type must be one of {MASK_TYPES}, got {mask_type!r}')
        if not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f'mixer.mask.ratio must lie in [0, 1], got {mask_ratio}')
        if latent_channels is not None and (isinstance(latent_channels, bool) or not isinstance(latent_channels, int)
                                            or latent_channels < 1):
            raise ValueError(f'mixer.latent_channels must be a positive integer or ~ (student width), '
                             f'got {latent_channels!r}')
        if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 1:
            raise ValueError(f'mixer.mask.grid_size must be a positive integer, got {grid_size!r}')
        c_t, c_s = teacher_channels, student_channels
        c_z = latent_channels or c_s
        self.latent_channels = c_z
        self.mask_type, self.mask_ratio, self.grid_size = mask_type, mask_ratio, grid_size
        self.sharing = sharing
        self.detach_teacher_latent = detach_teacher_latent

        def project(c):
            return nn.Identity() if c == c_z else nn.Conv2d(c, c_z, 1)

        if sharing == 'separate':
            self.enc_t = _coder(c_t, c_z, c_z, encoder_type)
            self.enc_s = _coder(c_s, c_z, c_z, encoder_type)
        elif sharing == 'shared':
            if c_t == c_s:
                shared = _coder(c_t, c_z, c_z, encoder_type)
                self.enc_t = self.enc_s = shared
            else:
                shared = _coder(c_z, c_z, c_z, encoder_type)
                self.enc_t = nn.Sequential(project(c_t), shared)
                self.enc_s = nn.Sequential(project(c_s), shared)
        else:
            self.enc_t, self.enc_s = project(c_t), project(c_s)
        self.dec_t = _coder(c_z, c_t, c_z, encoder_type)
        self.dec_s = _coder(c_z, c_s, c_z, encoder_type)

    def encode(self, feat, side):
        """Latent of a (normalised) feature; ``side`` is 't' or 's'."""
        return (self.enc_t if side == 't' else self.enc_s)(feat)

    def decode(self, latent, side):
        """Feature in the space of network ``side`` ('t' or 's') from a latent."""
        return (self.dec_t if side == 't' else self.dec_s)(latent)

    def mask(self, z_t, z_s):
        """A fresh mask for these latents, ``(B, C_z, H, W)``."""
        return make_mask(self.mask_type, self.mask_ratio, z_t, z_s, self.grid_size)

    def forward(self, feat_t, feat_s):
        """Mix one point's features.

        Args:
            feat_t (Tensor): Teacher feature ``(B, C_T, H, W)`` (normalised, no gradient).
            feat_s (Tensor): Student feature ``(B, C_S, H, W)`` (normalised, with gradient).

        Returns:
            dict: ``z_t``, ``z_s`` (latents; ``z_t`` keeps its gradient even with
            ``detach_teacher_latent``, for the auto-encoder term), ``mask``, ``z_m`` (mixed latent)
            and ``recon_t`` = D_T(Z_M), all ``(B, C, H, W)``.
        """
        z_t = self.enc_t(feat_t)
        z_s = self.enc_s(feat_s)
        mask = self.mask(z_t, z_s)
        z_m = mask * (z_t.detach() if self.detach_teacher_latent else z_t) + (1 - mask) * z_s
        return dict(z_t=z_t, z_s=z_s, mask=mask, z_m=z_m, recon_t=self.dec_t(z_m))
