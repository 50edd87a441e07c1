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
import contextlib
import random

import torch
from torch import nn

from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils.registry import MODEL_REGISTRY

from mixprior_plugin import options_schema
from mixprior_plugin.archs.prior_mixer_arch import MASK_TYPES
from mixprior_plugin.utils.checkpoint import python_rng_state, set_python_rng_state
from mixprior_plugin.utils.options import OptionError
from .kd_model import SR_TRAIN_KEYS, KDModel, loss_weight

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


def mixer_settings(opt):
    """The ``mixer`` section with defaults filled in and values checked (errors name the key).

    Returns:
        dict: Flat names (``mask_ratio``, ``route_prob``, ...; see options_schema) -> values.
    """
    return options_schema.settings(opt, 'mixer', 'MiPKDModel')


def draw_hybrid(rng, num_points, k0_mode='routed', route_mode='per_stage', prob=0.5, tail='student'):
    """Draw one teacher/student hybrid of the Block Prior Mixer.

    Args:
        rng (random.Random): Generator (its ``randrange`` draws k0, ``random`` the owners).
        num_points (int): K.
        k0_mode (str): 'routed': k0 uniform over the points that leave at least one later stage
            (0..K-2, 0-based), so at least one stage is routed; 'any': over all K points.
        route_mode (str): 'per_stage' (each later stage its own draw) or 'single_switch' (one
            draw for all later stages).
        prob (float): q, probability that a later stage is the student's.
        tail (str): 'student' or 'last_stage' (the owner of the last stage).

    Returns:
        tuple[int, list[str], str]: k0 (0-based), the owner ('s'/'t') of every stage (stages
        0..k0 are the student's) and the owner of the tail.
    """
    if k0_mode == 'routed' and num_points < 2:
        raise OptionError('mixer.route.k0=routed needs at least 2 distillation points (distill.num_stages >= 2), '
                          'got 1; set mixer.route.k0: any or add stages')
    k0 = rng.randrange(num_points - 1 if k0_mode == 'routed' else num_points)
    later = num_points - k0 - 1
    if route_mode == 'per_stage':
        routed = ['s' if rng.random() < prob else 't' for _ in range(later)]
    else:
        routed = ['s' if rng.random() < prob else 't'] * later
    owners = ['s'] * (k0 + 1) + routed
    return k0, owners, 's' if tail == 'student' else owners[-1]


@MODEL_REGISTRY.register()
class MiPKDModel(KDModel):
    """MiPKD on the KD chassis. See the module docstring for the method and its options.

    Args:
        opt (dict): BasicSR options.
    """

    EXTRA_SECTIONS = {'distill': options_schema.allowed_keys('distill'), 'mixer': MIXER_KEYS}
    TRAIN_KEYS = SR_TRAIN_KEYS + options_schema.train_keys('MiPKDModel') + ('block_path_every', )
    # Recorder hooks are off while the hybrid runs (it reuses stage blocks whose hooks would
    # record, and for SwinIR copy, features nobody reads). False restores the earlier path for
    # before/after timings in tools/speed.py; the losses are the same either way.
    pause_recorders_in_block_path = True

    @classmethod
    def uses_features_for(cls, opt, feat_terms):
        return True

    @classmethod
    def extra_modules_for(cls, opt, adapter_t, adapter_g, feat_terms):
        """KDModel's extra modules plus one PriorMixer per distillation point (``mixers``)."""
        extra = super().extra_modules_for(opt, adapter_t, adapter_g, feat_terms)
        s = mixer_settings(opt)
        try:
            extra['mixers'] = nn.ModuleList(
                build_network(
                    dict(type='PriorMixer', teacher_channels=adapter_t.channels, student_channels=adapter_g.channels,
                         latent_channels=s['latent_channels'], encoder_type=s['encoder_type'], sharing=s['sharing'],
                         mask_type=s['mask_type'], mask_ratio=s['mask_ratio'], grid_size=s['grid_size'],
                         detach_teacher_latent=s['detach_teacher_latent']))
                for _ in range(adapter_t.num_stages))
        except ValueError as err:
            raise OptionError(str(err)) from err
        if s['k0_mode'] == 'routed' and adapter_t.num_stages < 2:
            raise OptionError('mixer.route.k0=routed needs at least 2 distillation points, but distill gives '
                              f'{adapter_t.num_stages}: raise distill.num_stages or set mixer.route.k0: any')
        return extra

    def init_training_settings(self):
        self.mixer_opt = mixer_settings(self.opt)
        train_opt = self.opt['train']
        self.block_path_every = train_opt.get('block_path_every', 1)
        if isinstance(self.block_path_every, bool) or not isinstance(self.block_path_every, int) \
                or self.block_path_every < 1:
            raise OptionError(f'Option train.block_path_every={self.block_path_every!r} must be an integer >= 1 '
                              '(1: a hybrid every step, the method as published)')
        self.cri_fpm, self.cri_bpm, self.cri_ae = (
            build_loss(train_opt.get(key) or default).to(self.device)
            for key, default in options_schema.loss_defaults('MiPKDModel', own=True).items())
        self.last_route = None
        # Own generator for k0 and the route: drawing from Python's global `random` would shift
        # BasicSR's data augmentation and break equal-data comparisons with other methods.
        self.route_rng = random.Random((self.opt.get('manual_seed') or 0) + self.opt.get('rank', 0))
        super().init_training_settings()

    def training_state_extras(self):
        """The route generator's state, so a resumed run draws the same hybrids."""
        return dict(super().training_state_extras(), route_rng=python_rng_state(self.route_rng))

    def restore_training_state_extras(self, extras):
        super().restore_training_state_extras(extras)
        if 'route_rng' in extras:
            set_python_rng_state(self.route_rng, extras['route_rng'])

    # ------------------------------------------------------------------ losses
    def add_losses(self, student, teacher, gt, normalised, losses, logs, current_iter):
        super().add_losses(student, teacher, gt, normalised, losses, logs, current_iter)
        feats_t, feats_s = normalised
        mixers = self.net_extra['mixers']
        num_points = len(mixers)
        warm_up = current_iter <= self.mixer_opt['ae_warmup_iters']
        w_fpm = 0.0 if warm_up else loss_weight(self.cri_fpm)
        # train.block_path_every N > 1: the hybrid runs on iterations 1, N + 1, 2N + 1, ... only (a cost saver)
        off_step = (current_iter - 1) % self.block_path_every != 0
        w_bpm = 0.0 if warm_up or off_step else loss_weight(self.cri_bpm)

        # Mixed latents: at every point for the FPM, at k0 only when the BPM alone needs one.
        route = self.draw_hybrid(num_points) if w_bpm else None
        k0 = route[0] if route else None
        points = range(num_points) if w_fpm else ([k0] if w_bpm else [])
        mixed = {k: mixers[k](feats_t[k], feats_s[k]) for k in points}
        if mixed:
            logs['mask_ratio'] = float(torch.stack([m['mask'].mean() for m in mixed.values()]).mean())

        if w_fpm:
            losses['l_fpm'] = sum(self.cri_fpm(mixed[k]['recon_t'], feats_t[k]) for k in range(num_points))
        if w_bpm:
            _, owners, tail_owner = route
            n = max(1, round(student['out'].shape[0] * self.mixer_opt['batch_fraction']))
            with self.recorders_paused():
                out_mix = self.block_path(k0, mixed[k0]['z_m'][:n], owners, tail_owner, student, teacher, n,
                                          decoded_t=mixed[k0]['recon_t'][:n])
            losses['l_bpm'] = self.cri_bpm(out_mix, teacher['out'][:n])
            logs['bpm_teacher_stages'] = owners.count('t')
            logs['bpm_teacher_share'] = owners.count('t') / num_points
        if loss_weight(self.cri_ae):
            total = 0
            for k, mixer in enumerate(mixers):
                z_t = mixed[k]['z_t'] if k in mixed else mixer.encode(feats_t[k], 't')
                f_s = feats_s[k].detach()  # the AE term must not move the student
                total = total + self.cri_ae(mixer.decode(z_t, 't'), feats_t[k])
                total = total + self.cri_ae(mixer.decode(mixer.encode(f_s, 's'), 's'), f_s)
            losses['l_ae'] = total

    @contextlib.contextmanager
    def recorders_paused(self):
        """Remove the feature recorders' hooks for the duration; what they recorded is kept."""
        recorders = [r for r in (self.recorder_t, self.recorder_g) if r is not None]
        if not self.pause_recorders_in_block_path:
            recorders = []
        for recorder in recorders:
            recorder.remove()
        try:
            yield
        finally:
            for recorder in recorders:
                head, features = recorder.head, recorder.features
                recorder.__init__(recorder.adapter)  # registers the hooks again (and clears)
                recorder.head, recorder.features = head, features

    def draw_hybrid(self, num_points):
        """This step's hybrid (see :func:`draw_hybrid`), from the model's own route generator."""
        o = self.mixer_opt
        k0, owners, tail_owner = draw_hybrid(self.route_rng, num_points, o['k0_mode'], o['route_mode'],
                                             o['route_prob'], o['tail'])
        self.last_route = dict(k0=k0, owners=owners, tail=tail_owner)
        return k0, owners, tail_owner

    def draw_route(self, k0, num_points):
        """Owners of all stages and of the tail for a given ``k0`` (stages 0..k0 are the student's)."""
        fixed = random.Random()
        fixed.randrange = lambda n: k0  # k0 given; owners drawn from the model's generator
        fixed.random = self.route_rng.random
        o = self.mixer_opt
        _, owners, tail_owner = draw_hybrid(fixed, num_points, 'any', o['route_mode'], o['route_prob'], o['tail'])
        self.last_route = dict(k0=k0, owners=owners, tail=tail_owner)
        return owners, tail_owner

    def block_path(self, k0, z_mixed, owners, tail_owner, student, teacher, n, decoded_t=None):
        """Run the hybrid from the mixed latent at point ``k0`` to an SR image.

        Args:
            k0 (int): 0-based point where the mixed latent is formed (after stage k0).
            z_mixed (Tensor): Z_M at k0, ``(n, C_z, h, w)``.
            owners (list[str]): Owner of every stage ('s' / 't').
            tail_owner (str): Owner of the tail.
            student, teacher (dict): Outputs of the plain forward passes (heads are reused).
            n (int): Batch rows used.
            decoded_t (Tensor | None): D_T(z_mixed) when already computed (the FPM's output),
                reused instead of decoding again.

        Returns:
            Tensor: ``(n, 3, sh, sw)``.
        """
        mixers, norm = self.net_extra['mixers'], self.net_extra['feat_norm']
        scale = {'s': norm.scale_of('s'), 't': norm.scale_of('t')}
        adapters = {'s': self.adapter_g, 't': self.adapter_t}
        ctx = dict(lq=self.lq[:n])
        feat, owner = None, None  # None: the feature is still the latent z_mixed

        def cross(point, target):
            """Bring the running feature into ``target``'s space through the mixer at ``point``."""
            if feat is None:
                if target == 't' and decoded_t is not None:
                    return decoded_t * scale['t'][point]
                return mixers[point].decode(z_mixed, target) * scale[target][point]
            if target == owner:
                return feat
            latent = mixers[point].encode(feat / scale[owner][point], owner)
            return mixers[point].decode(latent, target) * scale[target][point]

        for stage in range(k0 + 1, len(owners)):
            feat = cross(stage - 1, owners[stage])
            owner = owners[stage]
            feat = adapters[owner].run_stages(feat, stage, stage, ctx)
        feat = cross(len(owners) - 1, tail_owner)
        head = (student if tail_owner == 's' else teacher)['head']
        return adapters[tail_owner].run_tail(feat, None if head is None else head[:n], ctx)
