"""MiPKDDistiller: KDDistiller plus MiPKD's Feature and Block Prior Mixers, their loss terms and the block path.

The method and its options are described in :mod:`mixprior_plugin.models.mipkd_model` and
docs/method.md. This class holds what MiPKD adds to the KD machinery: one PriorMixer per
distillation point (in ``extra['mixers']``), the FPM, BPM and auto-encoder terms, the route
generator that draws each step's teacher/student hybrid, and the hybrid's forward (the block path).
"""
import contextlib
import random

import torch
from torch import nn

from basicsr.archs import build_network
from basicsr.losses import build_loss

from mixprior_plugin import options_schema
from mixprior_plugin.distillers.kd_distiller import KDDistiller, loss_weight
from mixprior_plugin.utils.checkpoint import python_rng_state, set_python_rng_state
from mixprior_plugin.utils.options import OptionError


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


class MiPKDDistiller(KDDistiller):
    """KD's terms plus L_FPM, L_BPM and L_AE, with one PriorMixer per distillation point.

    Args:
        kd_loss, feat_terms, adapter_t, adapter_g, extra: As :class:`KDDistiller`; ``extra`` also
            holds ``mixers`` (a ModuleList of one PriorMixer per point).
        fpm_loss (nn.Module): Feature Prior Mixer loss (``train.fpm_opt``).
        bpm_loss (nn.Module): Block Prior Mixer loss (``train.bpm_opt``).
        ae_loss (nn.Module): Auto-encoder loss (``train.ae_opt``).
        mixer (dict): :func:`mixer_settings` (route, batch fraction, warm-up, ...).
        block_path_every (int): Run the hybrid every N-th step (``train.block_path_every``).
        route_seed (int): Seed of the route generator.
    """

    # Recorder hooks are off while the hybrid runs (it reuses stage blocks whose hooks would
    # record, and for SwinIR copy, features nobody reads). False restores the earlier path for
    # before/after timings in tools/speed.py; the losses are the same either way.
    pause_recorders_in_block_path = True

    def __init__(self, kd_loss, feat_terms, adapter_t, adapter_g, extra, fpm_loss, bpm_loss, ae_loss, mixer,
                 block_path_every=1, route_seed=0):
        super().__init__(kd_loss, feat_terms, adapter_t, adapter_g, extra)
        self.cri_fpm, self.cri_bpm, self.cri_ae = fpm_loss, bpm_loss, ae_loss
        self.mixer_opt, self.block_path_every = mixer, block_path_every
        self.last_route = None
        # Own generator for k0 and the route: drawing from Python's global `random` would shift
        # BasicSR's data augmentation and break equal-data comparisons with other methods.
        self.route_rng = random.Random(route_seed)

    # ------------------------------------------------------------------ parts, from options
    @classmethod
    def uses_features_for(cls, opt, feat_terms):
        return True

    @classmethod
    def extra_modules_for(cls, opt, adapter_t, adapter_g, feat_terms):
        """KD's extra modules plus one PriorMixer per distillation point (``mixers``)."""
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

    @classmethod
    def own_arguments(cls, opt, device):
        """The three MiPKD losses, the mixer settings, ``train.block_path_every`` and the route seed."""
        fpm, bpm, ae = (build_loss(options_schema.value(opt, 'train', key)).to(device)
                        for key in options_schema.loss_defaults('MiPKDModel', own=True))
        return dict(fpm_loss=fpm, bpm_loss=bpm, ae_loss=ae, mixer=mixer_settings(opt),
                    block_path_every=options_schema.value(opt, 'train', 'block_path_every'),
                    route_seed=(options_schema.value(opt, options_schema.TOP, 'manual_seed') or 0) +
                    options_schema.value(opt, options_schema.TOP, 'rank'))

    # ------------------------------------------------------------------ losses
    def add_losses(self, student, teacher, gt, normalised, losses, logs, current_iter):
        """KD's terms, then ``l_fpm``, ``l_bpm`` and ``l_ae`` (arguments as :meth:`KDDistiller.add_losses`)."""
        super().add_losses(student, teacher, gt, normalised, losses, logs, current_iter)
        feats_t, feats_s = normalised
        mixers = self.extra['mixers']
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
        """This step's hybrid (see :func:`draw_hybrid`), from the route generator; kept in ``last_route``."""
        o = self.mixer_opt
        k0, owners, tail_owner = draw_hybrid(self.route_rng, num_points, o['k0_mode'], o['route_mode'],
                                             o['route_prob'], o['tail'])
        self.last_route = dict(k0=k0, owners=owners, tail=tail_owner)
        return k0, owners, tail_owner

    def draw_route(self, k0, num_points):
        """Owners of all stages and of the tail for a given ``k0`` (stages 0..k0 are the student's)."""
        fixed = random.Random()
        fixed.randrange = lambda n: k0  # k0 given; owners drawn from the route generator
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
            n (int): Batch rows used (the first ``n`` of the recorded LR batch).
            decoded_t (Tensor | None): D_T(z_mixed) when already computed (the FPM's output),
                reused instead of decoding again.

        Returns:
            Tensor: ``(n, 3, sh, sw)``.
        """
        mixers, norm = self.extra['mixers'], self.extra['feat_norm']
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

    # ------------------------------------------------------------------ state
    def state(self):
        """The route generator's state, so a resumed run draws the same hybrids."""
        return dict(route_rng=python_rng_state(self.route_rng))

    def restore(self, extras):
        if 'route_rng' in extras:
            set_python_rng_state(self.route_rng, extras['route_rng'])
