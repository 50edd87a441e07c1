"""MiPKDModel: Multi-granularity Mixture of Priors KD (Li et al., ICLR 2025).

Loss (docs/method.md)::

    L = w_pix |S(x) - y| + w_kd |S(x) - T(x)| + w_feat sum_k L_FPM^k + w_block L_BPM + w_ae sum_k L_AE^k

* Feature Prior Mixer (FPM), per distillation point k: encode teacher and student features to a
  common latent, mix with a random mask, decode to the teacher's space; the decoded mixture must
  reconstruct the teacher feature (``train.fpm_opt``, default L1, weight 1).
* Block Prior Mixer (BPM): one random teacher/student hybrid per step. The student runs its head
  and stages 1..k0 (k0 a random point that leaves at least one later stage, so every hybrid routes
  at least one stage: ``route.k0: routed``); the mixed latent Z_M at k0 continues through stages
  k0+1..K, each taken from the student with probability ``route.prob``, else from the teacher,
  crossing spaces through the mixer of the point where ownership changes; the tail is the
  student's by default. Its output must match the teacher's (``train.bpm_opt``, L1, weight 0.1).
  Teacher stages are frozen but NOT run under no_grad: gradients flow through them.
* Auto-encoder loss (``train.ae_opt``, L1, weight 1): D_T(E_T(F_T)) ~ F_T and
  D_S(E_S(F_S)) ~ F_S on detached features, so it trains the mixers only.

Options (top-level ``mixer:`` section; all optional, defaults shown)::

    mixer:
      latent_channels: ~          # C_z; ~ = student width
      encoder: {type: cnn, sharing: separate}      # cnn|mlp ; separate|shared|none
      mask: {type: random3d, ratio: 0.5, grid_size: 4}  # random3d|spatial|channel|grid|similarity
      route: {mode: per_stage, prob: 0.5, tail: student, batch_fraction: 1.0, k0: routed}
      detach_teacher_latent: false  # true: L_FPM / L_BPM do not train E_T (see PriorMixer)
      ae_warmup_iters: 0          # first N iterations: only pixel, KD and AE terms

Choices where the paper is silent (all options): ``route.mode: single_switch`` gives all stages
after k0 to one network, drawn once (student with probability ``prob``); ``route.tail:
last_stage`` gives the tail (and its global residual, from that network's own head feature) to
the owner of the last stage; ``route.batch_fraction`` runs the block path on the first part of
the batch only, to save time; ``route.k0: any`` also draws k0 = K, where the hybrid is the
student's tail on D_S(Z_M) and no stage is routed (not a block mixture; kept for comparison).
The teacher's features and output are computed once per step (under no_grad) and reused by every
term; the block path reuses the student's features, the FPM's Z_M at k0 and, when the first routed
stage is the teacher's, the FPM's D_T(Z_M), so it adds only the stages after k0 and one tail.
"""
from basicsr.utils.registry import MODEL_REGISTRY

from mixprior_plugin import options_schema
from mixprior_plugin.archs.prior_mixer_arch import MASK_TYPES
from mixprior_plugin.distillers.mipkd_distiller import MiPKDDistiller, draw_hybrid, mixer_settings
from .kd_model import KDModel, from_distiller

__all__ = ['ABLATIONS', 'MiPKDModel', 'draw_hybrid', 'mixer_settings']  # the last two: the distiller's

# The options' home is mixprior_plugin/options_schema.py; these names are kept for importers.
MIXER_KEYS = options_schema.allowed_keys('mixer', 'MiPKDModel')
ROUTE_MODES, TAIL_OWNERS, K0_MODES = options_schema.ROUTE_MODES, options_schema.TAIL_OWNERS, options_schema.K0_MODES

_OFF = dict(type='L1Loss', loss_weight=0.0)
# The paper's ablations as option deltas (merged into a MiPKD option file): README lists them,
# tools/gen_options.py writes option files from them and the tests run every one.
ABLATIONS = {
    'fpm_only': dict(train=dict(bpm_opt=_OFF)),
    'bpm_only': dict(train=dict(fpm_opt=_OFF)),
    'no_ae_loss': dict(train=dict(ae_opt=_OFF)),
    'shared_encoders': dict(mixer=dict(encoder=dict(sharing='shared'))),
    'no_encoders': dict(mixer=dict(encoder=dict(sharing='none'))),
    'mlp_encoders': dict(mixer=dict(encoder=dict(type='mlp'))),
    **{f'mask_{t}': dict(mixer=dict(mask=dict(type=t))) for t in MASK_TYPES},
    'route_single_switch': dict(mixer=dict(route=dict(mode='single_switch'))),
    'tail_last_stage': dict(mixer=dict(route=dict(tail='last_stage'))),
    'bpm_half_batch': dict(mixer=dict(route=dict(batch_fraction=0.5))),
    'bpm_quarter_batch': dict(mixer=dict(route=dict(batch_fraction=0.25))),
    'k0_any': dict(mixer=dict(route=dict(k0='any'))),
    'detach_teacher_latent': dict(mixer=dict(detach_teacher_latent=True)),
    'ae_warmup': dict(mixer=dict(ae_warmup_iters=5000)),
}


@MODEL_REGISTRY.register()
@from_distiller('cri_fpm', 'cri_bpm', 'cri_ae', 'mixer_opt', 'block_path_every', 'route_rng', 'last_route',
                'draw_hybrid', 'draw_route', 'block_path', 'recorders_paused', 'pause_recorders_in_block_path')
class MiPKDModel(KDModel):
    """MiPKD on the KD chassis. See the module docstring for the method and its options.

    The mixers, their loss terms and the block path are the distiller's
    (:class:`~mixprior_plugin.distillers.mipkd_distiller.MiPKDDistiller`); the model is KDModel's
    training lifecycle around it.

    Args:
        opt (dict): BasicSR options.
    """

    EXTRA_SECTIONS = {'distill': options_schema.allowed_keys('distill'), 'mixer': MIXER_KEYS}
    distiller_class = MiPKDDistiller
