"""Feature-KD losses (FitNet, AT, FAKD, RKD), one stage point at a time, at their papers' settings.

Contract with KDModel (``train.feat_opt``): a loss is called as ``loss(feat_s, feat_t)`` for each
distillation point with maps ``(N, C, H, W)`` already divided by the point's teacher scale, and
returns a scalar already multiplied by ``loss_weight`` (BasicSR's convention); the model sums the
points. A loss whose ``connector_kernel`` is set gets a trainable FeatureConnector (student width
-> teacher width) per point, built, optimised, saved and resumed by the model; ``feat_s`` then
arrives connected. AT, FAKD and RKD compare width-free statistics, so they work with C_S != C_T
and need no connector.

Every default below is the setting of the method's paper or of its authors' public code, with the
source in the class docstring; docs/baselines.md lists them side by side, with what differs here.
"""
import torch
from torch import nn
from torch.nn import functional as F

from basicsr.utils.registry import LOSS_REGISTRY


@LOSS_REGISTRY.register()
class FitNetLoss(nn.Module):
    """FitNet hint loss (Romero et al., ICLR 2015): distance between the hint regressor's output
    and the teacher's hint.

    The regressor r (here a FeatureConnector per point, ``connector``; FitNet's convolutional
    regressor is 1x1 when both maps have the same spatial size, as here) maps the student's guided
    feature to the teacher's width, and the loss is the squared L2 distance of FitNet's Eq. (3),
    ``1/2 * ||u_h - r(v_g)||^2``, taken here as the **mean** of the squared differences over all
    ``N*C_T*H*W`` entries (so the value does not grow with the map or batch size; the mean is
    ``2 / (N*C_T*H*W)`` times the paper's sum).

    FitNet trains in two stages (hints first, then KD with the hint-pretrained student); here the
    hint term is trained jointly with the pixel and output-KD terms, as the SR-KD comparisons do,
    and the paper gives no weight for that joint use: ``loss_weight`` 1 on teacher-scale-normalised
    features (``distill.feat_norm``) is this project's choice.

    Args:
        loss_weight (float): Weight of the term. Default: 1.0.
        criterion (str): 'l2' (mean squared error, FitNet's choice) or 'l1'. Default: 'l2'.
        connector (str): 'conv1x1' or 'conv3x3' regressor from student to teacher width.
            Default: 'conv1x1'.
    """

    CONNECTORS = {'conv1x1': 1, 'conv3x3': 3}

    def __init__(self, loss_weight=1.0, criterion='l2', connector='conv1x1'):
        super().__init__()
        if criterion not in ('l1', 'l2'):
            raise ValueError(f"FitNetLoss criterion must be 'l1' or 'l2', got {criterion!r}")
        if connector not in self.CONNECTORS:
            raise ValueError(f'FitNetLoss connector must be one of {sorted(self.CONNECTORS)}, got {connector!r}')
        self.loss_weight = loss_weight
        self.criterion = criterion
        self.connector_kernel = self.CONNECTORS[connector]

    def forward(self, feat_s, feat_t):
        """Args: feat_s (Tensor): connected student feature (N, C_T, H, W); feat_t (Tensor): (N, C_T, H, W)."""
        dist = F.mse_loss if self.criterion == 'l2' else F.l1_loss
        return self.loss_weight * dist(feat_s, feat_t)


# ---------------------------------------------------------------------------------- helpers
def _check_pair(name, feat_s, feat_t, same_size=True):
    """Raise a ValueError naming the loss unless both are 4-D maps of the same batch (and size)."""
    if feat_s.dim() != 4 or feat_t.dim() != 4:
        raise ValueError(f'{name} expects feature maps (N, C, H, W), got student {tuple(feat_s.shape)} '
                         f'and teacher {tuple(feat_t.shape)}')
    if feat_s.shape[0] != feat_t.shape[0]:
        raise ValueError(f'{name}: student batch {feat_s.shape[0]} != teacher batch {feat_t.shape[0]}')
    if same_size and feat_s.shape[-2:] != feat_t.shape[-2:]:
        raise ValueError(f'{name}: student map {tuple(feat_s.shape[-2:])} and teacher map '
                         f'{tuple(feat_t.shape[-2:])} must have the same spatial size')


def _check_pool_size(name, pool_size, allow_none=True):
    if pool_size is None and allow_none:
        return
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ValueError(f'{name} pool_size must be a positive int{" or None" if allow_none else ""}, '
                         f'got {pool_size!r}')


def adaptive_pool(feat, pool_size):
    """Adaptive average pooling to at most ``pool_size x pool_size`` (never upsamples).

    Args:
        feat (Tensor): ``(N, C, H, W)``.
        pool_size (int | None): Target side; None keeps the map as it is.

    Returns:
        Tensor: ``(N, C, min(H, pool_size), min(W, pool_size))``; ``feat`` itself when that is its size.
    """
    if pool_size is None:
        return feat
    size = (min(feat.shape[-2], pool_size), min(feat.shape[-1], pool_size))
    if tuple(feat.shape[-2:]) == size:
        return feat
    return F.adaptive_avg_pool2d(feat, size)


# ---------------------------------------------------------------------------------- AT
@LOSS_REGISTRY.register()
class ATLoss(nn.Module):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017) between stage features.

    The attention map of a feature ``F`` of shape ``(N, C, H, W)`` is ``Q = mean_c |F_c|^p``
    (the paper's ``F_sum^p`` uses the sum over channels; the mean, as in the authors' code, differs
    by the factor C, which the normalisation removes), flattened to ``(N, H*W)`` and divided by its
    L2 norm per sample (``max(||Q||, eps)``, as ``F.normalize``). The loss is the paper's Eq. (2)
    term ``beta/2 * || Q_S/||Q_S|| - Q_T/||Q_T|| ||_2`` in the form of the authors' code
    (szagoruyko/attention-transfer, ``at_loss``: the difference squared, averaged over the batch
    and the H*W positions)::

        loss = loss_weight * beta / 2 * mean_{n, i} (q_S[n, i] - q_T[n, i])^2

    The paper sets beta to 1e3 divided by the number of elements of the attention map and the
    batch size, which is what the mean over (n, i) does; ``beta`` defaults to that 1e3, so
    ``loss_weight`` stays 1 in option files. The authors' code multiplies by ``beta`` without the
    1/2 (``beta=2e3`` here reproduces it). Channel counts may differ (the maps are channel-free),
    so no connector is used. The teacher side is computed without gradients. Memory: two
    ``(N, H*W)`` maps per point, negligible next to the features.

    Args:
        loss_weight (float): Weight of the term. Default: 1.0.
        p (float): Exponent of ``|F|`` (2 in the paper). Must be > 0. Default: 2.
        beta (float): The paper's beta (1e3), used as ``beta / 2``. Must be > 0. Default: 1000.
        eps (float): Lower bound of the norm in the normalisation. Default: 1e-6.
    """

    def __init__(self, loss_weight=1.0, p=2, beta=1000.0, eps=1e-6):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or p <= 0:
            raise ValueError(f'ATLoss p must be a positive number, got {p!r}')
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0:
            raise ValueError(f'ATLoss beta must be a positive number (the paper uses 1e3), got {beta!r}')
        if not eps > 0:
            raise ValueError(f'ATLoss eps must be > 0, got {eps!r}')
        self.loss_weight = loss_weight
        self.p = p
        self.beta = float(beta)
        self.eps = eps

    def attention(self, feat):
        """Normalised attention map.

        Args:
            feat (Tensor): ``(N, C, H, W)``.

        Returns:
            Tensor: ``(N, H*W)``, unit L2 norm per row (or zero for an all-zero map).
        """
        att = feat.abs().pow(self.p).mean(dim=1).flatten(1)
        return F.normalize(att, p=2, dim=1, eps=self.eps)

    def forward(self, feat_s, feat_t):
        """Args: feat_s (Tensor): student feature (N, C_S, H, W); feat_t (Tensor): teacher feature
        (N, C_T, H, W). Returns: Tensor: scalar, ``loss_weight * beta / 2 * mean (Q_s - Q_t)^2``."""
        _check_pair('ATLoss', feat_s, feat_t)
        with torch.no_grad():
            att_t = self.attention(feat_t.detach())
        att_s = self.attention(feat_s)
        return self.loss_weight * self.beta / 2 * (att_s - att_t).pow(2).mean()


# ---------------------------------------------------------------------------------- FAKD
@LOSS_REGISTRY.register()
class FAKDLoss(nn.Module):
    """Feature-affinity KD (FAKD, He et al., ICIP 2020): match spatial affinity matrices.

    Per sample, the map ``(C, H, W)`` is flattened to ``(C, P)`` with ``P = H*W`` positions, each
    position's channel vector is divided by its L2 norm plus 1e-7 (as the authors' code,
    Vincent-Hoo/Knowledge-Distillation-for-Super-resolution, ``spatial_similarity``; an all-zero
    position has zero affinity with everything), and the affinity is ``A = F^T F`` of shape
    ``(P, P)``: the cosine similarity of every pair of positions, at the full resolution of the
    distilled feature. The loss is the L1 distance of the paper and code (``nn.L1Loss``: the mean
    absolute difference over all ``N*P*P`` entries) between the student's and the teacher's
    affinities; the model sums it over the distillation points, as the authors' code sums its
    three feature points. Channel counts may differ; no connector is used. The teacher side is
    computed without gradients.

    Weight: the authors' runs use ``0.5 * L1(S, HR) + 0.5 * L1(S, T) + 10 * sum_k L_SA^k``
    (``--alpha 0.5 --feature_distilation_type 10*SA``). On this chassis, with pixel and output-KD
    weights 1, the same ratio is ``loss_weight: 20`` (Adam's steps do not depend on a common
    factor of all terms), which the option files in options/train/Baselines use.

    Memory grows as ``N * P^2``: one affinity of a batch of 16 LR patches of 48x48 is
    ``16 * 2304^2`` floats, 324 MiB in float32. Measured on CPU (float32, C=64): forward and
    backward of one point peak at 1.3 GiB above the inputs, four points at 2.3 GiB (each point
    keeps one affinity-sized tensor for the backward, ~1 GiB more is transient); bf16 autocast
    halves it. ``pool_size`` is an opt-in memory saver, not FAKD: it adaptive-average-pools both
    maps to at most ``pool_size x pool_size`` first (a side already at most ``pool_size`` is not
    resized, so the map is never upsampled).

    Args:
        loss_weight (float): Weight of the term. Default: 1.0.
        pool_size (int | None): Side of the pooled map before the affinity; None: full
            resolution (the paper's choice). Default: None.
    """

    EPS = 1e-7  # added to the norm, as the authors' code

    def __init__(self, loss_weight=1.0, pool_size=None):
        super().__init__()
        _check_pool_size('FAKDLoss', pool_size)
        self.loss_weight = loss_weight
        self.pool_size = pool_size

    def affinity(self, feat):
        """Spatial affinity.

        Args:
            feat (Tensor): ``(N, C, H, W)``.

        Returns:
            Tensor: ``(N, P, P)`` with ``P = H'*W'`` after pooling; entries are cosines in [-1, 1].
        """
        feat = adaptive_pool(feat, self.pool_size).flatten(2)  # (N, C, P)
        feat = feat / (feat.norm(p=2, dim=1, keepdim=True) + self.EPS)
        return torch.bmm(feat.transpose(1, 2), feat)

    def forward(self, feat_s, feat_t):
        """Args: feat_s (Tensor): student feature (N, C_S, H, W); feat_t (Tensor): teacher feature
        (N, C_T, H, W). Returns: Tensor: scalar, ``loss_weight * mean |A_s - A_t|``."""
        _check_pair('FAKDLoss', feat_s, feat_t)
        with torch.no_grad():
            aff_t = self.affinity(feat_t.detach())
        aff_s = self.affinity(feat_s)
        return self.loss_weight * F.l1_loss(aff_s, aff_t)


# ---------------------------------------------------------------------------------- RKD
@LOSS_REGISTRY.register()
class RKDLoss(nn.Module):
    """Relational KD (Park et al., CVPR 2019) on pooled stage features.

    RKD relates per-sample embeddings; here each stage map is adaptive-average-pooled to
    ``pool_size x pool_size`` (a side already at most ``pool_size`` is kept; None keeps the whole
    map) and flattened to one embedding per sample, ``(N, C * h * w)`` (this project's choice of
    embedding for SR features); student and teacher embeddings may have different lengths.

    Distance term (RKD-D): ``d_ij = ||e_i - e_j||`` for every pair, divided by the
    mean of the non-zero ``d_ij`` (i != j) of the same network (1e-12 at least, so a batch of
    identical samples gives zeros, not NaN); Huber loss (smooth L1, delta 1) between the student's
    and the teacher's normalised distances.

    Angle term (RKD-A): for every triplet of distinct samples (i, j, k), the cosine of
    the angle at ``e_j``: ``<u(e_i - e_j), u(e_k - e_j)>`` with ``u`` the L2 normalisation; Huber
    loss between the student's and the teacher's cosines.

    Reduction, as the authors' code (lenscloth/RKD, ``RkdDistance`` / ``RKdAngle``: an elementwise
    mean over the full ``N x N`` distance and ``N x N x N`` angle tensors, whose degenerate entries
    (a repeated index) are zero on both sides): the sums over the ``N(N-1)`` ordered pairs and the
    ``N(N-1)(N-2)`` triplets of distinct samples are divided by ``N^2`` and ``N^3``::

        l_dist = sum_{i != j} huber(d_S_ij - d_T_ij) / N^2
        l_angle = sum_{i, j, k distinct} huber(cos_S_ijk - cos_T_ijk) / N^3
        loss = loss_weight * (distance_weight * l_dist + angle_weight * l_angle)

    Weights: 25 and 50, the paper's setting for its classification experiments (beside KD, as
    here beside the output KD) and the defaults of the authors' ``run_distill_classification.py``;
    its metric-learning runs use 1 and 2.

    Batch size: N >= 2 is required (ValueError otherwise). With N == 2 there is no triplet of
    distinct samples, so the angle term is exactly 0 and only the distance term trains. Relations
    are taken within the batch the loss sees (under DDP: each GPU's own batch). The teacher side
    is computed without gradients. Memory: ``N^2 * C*h*w`` for the pairwise differences and
    ``N^3`` for the angles (pool_size=None on large maps makes the first one big).

    Args:
        loss_weight (float): Weight of the whole term. Default: 1.0.
        distance_weight (float): Weight of the distance term (Park et al.: 25). Default: 25.0.
        angle_weight (float): Weight of the angle term (Park et al.: 50). Default: 50.0.
        pool_size (int | None): Side of the pooled map. Default: 4.
    """

    def __init__(self, loss_weight=1.0, distance_weight=25.0, angle_weight=50.0, pool_size=4):
        super().__init__()
        _check_pool_size('RKDLoss', pool_size)
        if distance_weight < 0 or angle_weight < 0 or distance_weight == angle_weight == 0:
            raise ValueError('RKDLoss distance_weight and angle_weight must be >= 0 and not both 0, got '
                             f'{distance_weight!r} and {angle_weight!r}')
        self.loss_weight = loss_weight
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight
        self.pool_size = pool_size

    def embed(self, feat):
        """``(N, C, H, W)`` -> pooled, flattened embeddings ``(N, C*h*w)``."""
        return adaptive_pool(feat, self.pool_size).flatten(1)

    @staticmethod
    def distances(emb):
        """Normalised pairwise distances.

        Args:
            emb (Tensor): ``(N, D)``.

        Returns:
            Tensor: ``(N, N)``, ``||e_i - e_j||`` divided by the mean non-zero off-diagonal distance.
        """
        sq = (emb.unsqueeze(0) - emb.unsqueeze(1)).pow(2).sum(dim=-1)
        # sqrt has an infinite derivative at 0: take it only where the distance is non-zero
        positive = sq > 0
        dist = torch.where(positive, sq.clamp_min(1e-30).sqrt(), torch.zeros_like(sq))
        count = positive.sum().clamp_min(1)
        mean = (dist.sum() / count).clamp_min(1e-12)
        return dist / mean

    @staticmethod
    def angles(emb):
        """Cosines of the angle at ``e_j`` of every triplet.

        Args:
            emb (Tensor): ``(N, D)``.

        Returns:
            Tensor: ``(N, N, N)``, entry ``[j, i, k] = <u(e_i - e_j), u(e_k - e_j)>`` (zero where
            ``i == j`` or ``k == j``).
        """
        diff = F.normalize(emb.unsqueeze(0) - emb.unsqueeze(1), p=2, dim=-1)  # [j, i] = u(e_i - e_j)
        return torch.bmm(diff, diff.transpose(1, 2))

    def forward(self, feat_s, feat_t):
        """Args: feat_s (Tensor): student feature (N, C_S, H, W); feat_t (Tensor): teacher feature
        (N, C_T, H', W'), N >= 2. Returns: Tensor: scalar (see the class docstring).

        Raises:
            ValueError: N < 2 (no pair to relate).
        """
        _check_pair('RKDLoss', feat_s, feat_t, same_size=False)
        n = feat_s.shape[0]
        if n < 2:
            raise ValueError(f'RKDLoss needs a batch of at least 2 samples (3 for the angle term), got {n}: '
                             'raise datasets.train.batch_size_per_gpu')
        emb_s = self.embed(feat_s)
        with torch.no_grad():
            emb_t = self.embed(feat_t.detach())
        eye = torch.eye(n, dtype=torch.bool, device=feat_s.device)
        loss = feat_s.new_zeros(())
        if self.distance_weight:
            with torch.no_grad():
                dist_t = self.distances(emb_t)
            dist_s = self.distances(emb_s)
            pairs = ~eye
            l_dist = F.smooth_l1_loss(dist_s[pairs], dist_t[pairs], beta=1.0, reduction='sum') / n ** 2
            loss = loss + self.distance_weight * l_dist
        if self.angle_weight and n >= 3:
            with torch.no_grad():
                ang_t = self.angles(emb_t)
            ang_s = self.angles(emb_s)
            distinct = ~(eye.unsqueeze(2) | eye.unsqueeze(1) | eye.unsqueeze(0))  # j != i, j != k, i != k
            l_angle = F.smooth_l1_loss(ang_s[distinct], ang_t[distinct], beta=1.0, reduction='sum') / n ** 3
            loss = loss + self.angle_weight * l_angle
        return self.loss_weight * loss
