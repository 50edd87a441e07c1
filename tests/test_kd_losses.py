"""Feature-KD baselines (FitNet, AT, FAKD, RKD): values computed by hand from each paper's formula
on fixed tiny inputs (stored numbers), values against slow reference loops on random inputs,
gradients through KDModel for each term alone, FitNet connectors (optimised, saved, resumed, not
exported), and FAKD's memory bound with pooling (measured in a subprocess)."""
import copy
import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models import build_model
from basicsr.utils.misc import check_resume
from basicsr.utils.registry import LOSS_REGISTRY

from helpers import REPO, base_model_opt, state_equal, tiny_arch, write_yaml
from mixprior_plugin.losses import kd_loss
from mixprior_plugin.utils.options import normalise_teacher_aliases

# Every feature loss of kd_loss.py, with the option sets checked against the reference loops.
FEATURE_LOSSES = {
    'FitNetLoss': [dict(), dict(criterion='l1'), dict(criterion='l2', connector='conv3x3')],
    'ATLoss': [dict(), dict(p=1), dict(p=3, eps=1e-3), dict(beta=2e3)],
    'FAKDLoss': [dict(), dict(pool_size=2), dict(pool_size=3), dict(pool_size=4), dict(pool_size=7)],
    'RKDLoss': [dict(), dict(pool_size=2), dict(pool_size=None), dict(distance_weight=1.0, angle_weight=0.0),
                dict(distance_weight=0.0, angle_weight=1.0, pool_size=1)],
}
LOG_NAMES = {'FitNetLoss': 'l_fitnet', 'ATLoss': 'l_at', 'FAKDLoss': 'l_fakd', 'RKDLoss': 'l_rkd'}
N, C_S, C_T, H, W = 3, 4, 6, 5, 5
LOSS_WEIGHT = 0.7  # not 1, so a forgotten loss_weight shows


def make_loss(name, **kwargs):
    return build_loss(dict(type=name, loss_weight=kwargs.pop('loss_weight', LOSS_WEIGHT), **kwargs))


def feature_pair(name, seed=0, n=N):
    """Seeded student/teacher maps; FitNet's student is a connector output (teacher width)."""
    g = torch.Generator().manual_seed(seed)
    feat_s = torch.randn(n, C_T if name == 'FitNetLoss' else C_S, H, W, generator=g)
    feat_t = torch.randn(n, C_T, H, W, generator=g)
    return feat_s, feat_t


# ---- slow references: plain Python floats and loops, written from the papers' definitions ----
def smooth_l1(x):
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def ref_pool(fmap, size):
    """Adaptive average pooling of one [C][H][W] list to at most size x size (bins as PyTorch's)."""
    c, h, w = len(fmap), len(fmap[0]), len(fmap[0][0])
    if size is None:
        return fmap
    oh, ow = min(h, size), min(w, size)
    out = [[[0.0] * ow for _ in range(oh)] for _ in range(c)]
    for ch in range(c):
        for i in range(oh):
            h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
            for j in range(ow):
                w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
                cells = [fmap[ch][y][x] for y in range(h0, h1) for x in range(w0, w1)]
                out[ch][i][j] = sum(cells) / len(cells)
    return out


def positions(fmap):
    """[C][H][W] -> list of per-position channel vectors."""
    return [[fmap[c][y][x] for c in range(len(fmap))] for y in range(len(fmap[0])) for x in range(len(fmap[0][0]))]


def ref_fitnet(s, t, criterion='l2', **_):
    total, count = 0.0, 0
    for a_n, b_n in zip(s, t):
        for a_c, b_c in zip(a_n, b_n):
            for a_y, b_y in zip(a_c, b_c):
                for a, b in zip(a_y, b_y):
                    total += (a - b) ** 2 if criterion == 'l2' else abs(a - b)
                    count += 1
    return total / count


def ref_at(s, t, p=2, eps=1e-6, beta=1000.0):
    def att(fmap):
        q = [sum(abs(v) ** p for v in vec) / len(vec) for vec in positions(fmap)]
        norm = math.sqrt(sum(v * v for v in q))
        return [v / max(norm, eps) for v in q]

    total, count = 0.0, 0
    for fs, ft in zip(s, t):
        for a, b in zip(att(fs), att(ft)):
            total += (a - b) ** 2
            count += 1
    return beta / 2 * total / count  # beta/2 times the mean over samples and positions


def ref_fakd(s, t, pool_size=None):
    def affinity(fmap):
        vecs = []
        for vec in positions(ref_pool(fmap, pool_size)):
            norm = math.sqrt(sum(v * v for v in vec)) + 1e-7
            vecs.append([v / norm for v in vec])
        return [[sum(a * b for a, b in zip(u, v)) for v in vecs] for u in vecs]

    total, count = 0.0, 0
    for fs, ft in zip(s, t):
        a_s, a_t = affinity(fs), affinity(ft)
        for row_s, row_t in zip(a_s, a_t):
            for x, y in zip(row_s, row_t):
                total += abs(x - y)
                count += 1
    return total / count


def ref_rkd(s, t, distance_weight=25.0, angle_weight=50.0, pool_size=4):
    def embed(fmap):  # any fixed order of the coordinates gives the same distances and angles
        return [v for vec in positions(ref_pool(fmap, pool_size)) for v in vec]

    def dist(u, v):
        return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v)))

    def cos_at(e_i, e_j, e_k):
        u = [a - b for a, b in zip(e_i, e_j)]
        v = [a - b for a, b in zip(e_k, e_j)]
        return sum(a * b for a, b in zip(u, v)) / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))

    emb_s, emb_t = [embed(f) for f in s], [embed(f) for f in t]
    n = len(s)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    d_s = {ij: dist(emb_s[ij[0]], emb_s[ij[1]]) for ij in pairs}
    d_t = {ij: dist(emb_t[ij[0]], emb_t[ij[1]]) for ij in pairs}
    mean_s = sum(d_s.values()) / len(pairs)  # all pairs are distinct samples here: no zero distance
    mean_t = sum(d_t.values()) / len(pairs)
    # the authors' code averages over all N^2 (N^3) entries; those with a repeated index are 0
    l_dist = sum(smooth_l1(d_s[ij] / mean_s - d_t[ij] / mean_t) for ij in pairs) / n ** 2
    triplets = [(i, j, k) for i in range(n) for j in range(n) for k in range(n) if len({i, j, k}) == 3]
    l_angle = 0.0
    if triplets:
        l_angle = sum(smooth_l1(cos_at(emb_s[i], emb_s[j], emb_s[k]) - cos_at(emb_t[i], emb_t[j], emb_t[k]))
                      for i, j, k in triplets) / n ** 3
    return distance_weight * l_dist + angle_weight * l_angle


REFERENCES = {'FitNetLoss': ref_fitnet, 'ATLoss': ref_at, 'FAKDLoss': ref_fakd, 'RKDLoss': ref_rkd}
CASES = [(name, kwargs) for name, options in FEATURE_LOSSES.items() for kwargs in options]


def case_id(case):
    name, kwargs = case
    return name + ''.join(f'-{k}={v}' for k, v in kwargs.items())


# ---- values computed by hand from each paper's formula on fixed inputs (N=3, C=2, H=W=2) --------
# Maps are written as [channel][row][column] per sample; positions are read row by row.
R2 = math.sqrt(2)


def test_fitnet_by_hand():
    """FitNet: mean of (r(v_g) - u_h)^2 over all N*C*H*W = 24 entries.

    Student entries k/4 for k = 0..23 against a teacher of 2s: sum (k/4 - 2)^2 = sum_k (k - 8)^2 / 16
    = (1^2 + ... + 8^2 + 1^2 + ... + 15^2) / 16 = (204 + 1240) / 16, over 24 entries. L1: (36 + 120) / 4 / 24.
    """
    feat_s = torch.arange(24, dtype=torch.float32).view(3, 2, 2, 2) / 4
    feat_t = torch.full((3, 2, 2, 2), 2.0)
    assert make_loss('FitNetLoss')(feat_s, feat_t).item() == pytest.approx(LOSS_WEIGHT * 1444 / 16 / 24, rel=1e-5)
    assert make_loss('FitNetLoss', criterion='l1')(feat_s, feat_t).item() == pytest.approx(
        LOSS_WEIGHT * 156 / 4 / 24, rel=1e-5)


def test_at_by_hand():
    """AT: beta/2 * mean over samples and positions of (Q_S/|Q_S| - Q_T/|Q_T|)^2, Q = mean_c F^2, beta 1e3.

    For unit vectors a, b: sum_i (a_i - b_i)^2 = 2 - 2 <a, b>.
    sample 0: Q_S = (1, 1, 1, 1) -> (1/2, 1/2, 1/2, 1/2); Q_T = (2, 2, 0, 0) -> (1/R2, 1/R2, 0, 0);
              <,> = 1/R2, sum = 2 - R2.
    sample 1: Q_S = (9, 0, 0, 0) -> (1, 0, 0, 0); Q_T = (2, 0, 0, 0.5) -> (2, 0, 0, 0.5) / sqrt(4.25);
              <,> = 2 / sqrt(4.25), sum = 2 - 4 / sqrt(4.25).
    sample 2: Q_S = (0, 0, 0, 1), Q_T = (0.5, 0, 0, 0): orthogonal, sum = 2.
    Mean over 3 * 4 entries, times 1e3 / 2.
    """
    feat_s = torch.tensor([[[[1., 1.], [1., 1.]], [[1., -1.], [-1., 1.]]],
                           [[[3., 0.], [0., 0.]], [[-3., 0.], [0., 0.]]],
                           [[[0., 0.], [0., 1.]], [[0., 0.], [0., -1.]]]])
    feat_t = torch.tensor([[[[2., 0.], [0., 0.]], [[0., 2.], [0., 0.]]],
                           [[[-2., 0.], [0., 0.]], [[0., 0.], [0., 1.]]],
                           [[[1., 0.], [0., 0.]], [[0., 0.], [0., 0.]]]])
    by_hand = 1000 / 2 * ((2 - R2) + (2 - 4 / math.sqrt(4.25)) + 2) / 12
    assert make_loss('ATLoss')(feat_s, feat_t).item() == pytest.approx(LOSS_WEIGHT * by_hand, rel=1e-5)
    # the authors' code scale (beta without the 1/2) is beta=2e3 here
    assert make_loss('ATLoss', beta=2e3)(feat_s, feat_t).item() == pytest.approx(LOSS_WEIGHT * 2 * by_hand, rel=1e-5)


def test_fakd_by_hand():
    """FAKD: mean over N*P*P = 48 entries of |A_S - A_T|, A = cosines between positions' channel vectors.

    sample 0: student vectors at 0, 90, 45, 180 degrees; teacher vectors all at 0 degrees (every
              cosine 1). Off-diagonal student cosines (pairs 01 02 03 12 13 23): 0, 1/R2, -1, 1/R2, 0,
              -1/R2, so |A_S - A_T| sums to 2 * (1 + (1 - 1/R2) + 2 + (1 - 1/R2) + 1 + (1 + 1/R2))
              = 14 - 2/R2 = 14 - R2; the diagonals are 1 on both sides.
    sample 1: the same directions on both sides with other lengths: 0.
    sample 2: student (1, 0), (0, 0), (0, 1), (1, 0): the zero vector has affinity 0 with everything,
              itself included; teacher all at 0 degrees. Off-diagonal |differences|: 1, 1, 0, 1, 1, 1
              (twice each) = 10, diagonal entry of the zero vector: 1. Sum 11.
    """
    feat_s = torch.tensor([[[[1., 0.], [1., -1.]], [[0., 1.], [1., 0.]]],
                           [[[0., 1.], [-1., 2.]], [[1., 1.], [0., -2.]]],
                           [[[1., 0.], [0., 1.]], [[0., 0.], [1., 0.]]]])
    feat_t = torch.tensor([[[[1., 2.], [3., 0.5]], [[0., 0.], [0., 0.]]],
                           [[[0., 0.5], [-4., 1.]], [[3., 0.5], [0., -1.]]],
                           [[[1., 1.], [1., 1.]], [[0., 0.], [0., 0.]]]])
    by_hand = ((14 - R2) + 0 + 11) / 48
    assert make_loss('FAKDLoss')(feat_s, feat_t).item() == pytest.approx(LOSS_WEIGHT * by_hand, rel=1e-5)


def test_rkd_by_hand():
    """RKD: 25 * sum_{i != j} huber(d_S - d_T) / N^2 + 50 * sum_{i, j, k distinct} huber(cos_S - cos_T) / N^3.

    Embeddings (C*H*W = 8 values, all but one or two zero): student 0, (3, 0), (0, 4): a 3-4-5 right
    triangle; teacher 0, (6, 0), (0, 6): a right isosceles triangle.
    Distances over their mean (each pair counted twice): student (3, 4, 5) / 4; teacher
    (6, 6, 6 R2) / (4 + 2 R2). Huber = x^2 / 2 below 1; each unordered pair twice: sum of x^2.
    Angles: at sample 0 both are right angles (cosine 0); at 1: 3/5 against 1/R2; at 2: 4/5 against
    1/R2; each vertex has two ordered (i, k): sum of x^2 over the three vertices.
    """
    feat_s = torch.zeros(3, 2, 2, 2)
    feat_s[1, 0, 0, 0], feat_s[2, 0, 0, 1] = 3.0, 4.0
    feat_t = torch.zeros(3, 2, 2, 2)
    feat_t[1, 0, 0, 0], feat_t[2, 0, 0, 1] = 6.0, 6.0
    mean_t = 4 + 2 * R2
    l_dist = ((3 / 4 - 6 / mean_t) ** 2 + (4 / 4 - 6 / mean_t) ** 2 + (5 / 4 - 6 * R2 / mean_t) ** 2) / 9
    l_angle = ((0 - 0) ** 2 + (3 / 5 - 1 / R2) ** 2 + (4 / 5 - 1 / R2) ** 2) / 27
    assert make_loss('RKDLoss')(feat_s, feat_t).item() == pytest.approx(
        LOSS_WEIGHT * (25 * l_dist + 50 * l_angle), rel=1e-5)
    assert make_loss('RKDLoss', angle_weight=0.0)(feat_s, feat_t).item() == pytest.approx(
        LOSS_WEIGHT * 25 * l_dist, rel=1e-5)


# ---- values ----------------------------------------------------------------------------------
def test_every_registered_feature_loss_is_covered():
    """timm's idea: a feature loss added to kd_loss.py without a reference test fails here."""
    registered = {name for name, obj in LOSS_REGISTRY if getattr(obj, '__module__', None) == kd_loss.__name__}
    assert registered == set(FEATURE_LOSSES) == set(REFERENCES)
    import mixprior_plugin.losses as losses
    assert set(FEATURE_LOSSES) <= set(losses.__all__)


@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_loss_matches_slow_reference(case):
    name, kwargs = case
    feat_s, feat_t = feature_pair(name)
    loss = make_loss(name, **kwargs)
    value = loss(feat_s, feat_t)
    assert value.dim() == 0 and value.dtype == torch.float32
    ref_kwargs = {k: v for k, v in kwargs.items() if k != 'connector'}
    expected = LOSS_WEIGHT * REFERENCES[name](feat_s.double().tolist(), feat_t.double().tolist(), **ref_kwargs)
    assert expected > 1e-4  # a non-trivial case
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_fakd_pooling_variants():
    """pool_size >= the map side leaves it unchanged; smaller sizes pool (and change the value)."""
    feat_s, feat_t = feature_pair('FAKDLoss')
    full = make_loss('FAKDLoss')(feat_s, feat_t)
    assert make_loss('FAKDLoss', pool_size=H)(feat_s, feat_t).item() == full.item()
    assert make_loss('FAKDLoss', pool_size=H + 2)(feat_s, feat_t).item() == full.item()
    pooled = {p: make_loss('FAKDLoss', pool_size=p)(feat_s, feat_t).item() for p in (1, 2, 3, 4)}
    assert pooled[1] == pytest.approx(0, abs=1e-6)  # one position: both affinities are [[1]]
    assert len({round(v, 6) for v in pooled.values()} | {round(full.item(), 6)}) == 5
    # a non-square map pools each side to at most pool_size
    g = torch.Generator().manual_seed(3)
    rect_s, rect_t = torch.randn(2, C_S, 6, 3, generator=g), torch.randn(2, C_T, 6, 3, generator=g)
    loss = make_loss('FAKDLoss', pool_size=4)
    assert loss.affinity(rect_s).shape == (2, 12, 12)
    expected = LOSS_WEIGHT * ref_fakd(rect_s.double().tolist(), rect_t.double().tolist(), pool_size=4)
    assert loss(rect_s, rect_t).item() == pytest.approx(expected, rel=1e-5)


def test_rkd_batch_sizes():
    feat_s, feat_t = feature_pair('RKDLoss', n=2)
    with pytest.raises(ValueError, match='RKDLoss.*at least 2'):
        make_loss('RKDLoss')(feat_s[:1], feat_t[:1])
    # N == 2: no triplet of distinct samples, the angle term is exactly 0
    assert make_loss('RKDLoss', distance_weight=0.0, angle_weight=1.0)(feat_s, feat_t).item() == 0
    both = make_loss('RKDLoss')(feat_s, feat_t).item()
    assert both == pytest.approx(make_loss('RKDLoss', angle_weight=0.0)(feat_s, feat_t).item())
    assert both == pytest.approx(LOSS_WEIGHT * ref_rkd(feat_s.double().tolist(), feat_t.double().tolist()), rel=1e-5)
    # identical samples: zero distances are left out of the mean, no NaN
    same = feat_s[:1].expand(3, -1, -1, -1).clone().requires_grad_()
    value = make_loss('RKDLoss')(same, feature_pair('RKDLoss')[1])
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(same.grad).all()


@pytest.mark.parametrize('kwargs', [dict(type='ATLoss', p=0), dict(type='ATLoss', beta=0),
                                    dict(type='FAKDLoss', pool_size=0),
                                    dict(type='FAKDLoss', pool_size=2.5),
                                    dict(type='RKDLoss', distance_weight=0.0, angle_weight=0.0),
                                    dict(type='RKDLoss', pool_size=-1), dict(type='FitNetLoss', criterion='l3')],
                         ids=lambda kw: kw['type'])
def test_bad_options_name_the_loss(kwargs):
    with pytest.raises(ValueError, match=kwargs['type']):
        build_loss(dict(kwargs))


def test_spatial_size_mismatch_is_an_error():
    for name in ('ATLoss', 'FAKDLoss'):
        with pytest.raises(ValueError, match=name):
            make_loss(name)(torch.randn(2, C_S, 5, 5), torch.randn(2, C_T, 4, 5))


@pytest.mark.parametrize('name', ['ATLoss', 'FAKDLoss', 'RKDLoss'])
def test_width_free_losses_properties(name):
    """No connector; zero for identical features; invariant to the feature scale (so to feat_norm);
    exact gradients (gradcheck); the teacher gets no gradient even when it asks for one."""
    loss = make_loss(name)
    assert getattr(loss, 'connector_kernel', None) is None
    feat_s, feat_t = feature_pair(name)
    assert loss(feat_t, feat_t).item() == pytest.approx(0, abs=1e-6)
    assert loss(3.7 * feat_s, 0.2 * feat_t).item() == pytest.approx(loss(feat_s, feat_t).item(), rel=1e-4)

    # gradcheck on a smaller slice (it runs two forwards per input element)
    s64 = feat_s[:, :2, :4, :4].double().requires_grad_()
    t64 = feat_t[:, :3, :4, :4].double().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: loss(x, t64.detach()), (s64,))
    loss(s64, t64).backward()
    assert t64.grad is None and s64.grad.abs().sum() > 0


def test_fitnet_has_a_connector():
    assert make_loss('FitNetLoss').connector_kernel == 1
    assert make_loss('FitNetLoss', connector='conv3x3').connector_kernel == 3


# ---- through KDModel: each term alone trains the student, never the teacher --------------------


def term_only_opt(family, scale, teacher_path, term, tmp_path=None):
    opt = base_model_opt(tiny_arch(family, 'g', scale), tiny_arch(family, 't', scale), scale, teacher_path,
                         train=dict(pixel_opt=dict(type='L1Loss', loss_weight=0.0),
                                    kd_opt=dict(type='L1Loss', loss_weight=0.0), feat_opt=[term]),
                         distill=dict(num_stages=2))
    if tmp_path is not None:
        for key in ('models', 'training_states'):
            opt['path'][key] = str(tmp_path / key)
            os.makedirs(opt['path'][key], exist_ok=True)
    return opt


def feed(model, scale, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch, 3, 16, 16, generator=g)
    model.feed_data(dict(lq=lq, gt=torch.rand(batch, 3, 16 * scale, 16 * scale, generator=g)))


@pytest.mark.parametrize('family', ['EDSR', 'SwinIR'])  # conv and transformer stages (RCAN: chassis tests)
@pytest.mark.parametrize('name', list(FEATURE_LOSSES))
def test_term_alone_trains_student_not_teacher(name, family, teacher_file):
    scale = 2
    torch.manual_seed(0)
    model = build_model(term_only_opt(family, scale, teacher_file(family, scale), dict(type=name, loss_weight=1.0)))
    feed(model, scale, batch=3)
    model.optimize_parameters(1)

    assert all(p.grad is None for p in model.net_t.parameters())
    grads = [p.grad for p in model.get_bare_model(model.net_g).parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum().item() for g in grads) > 0
    losses = {k for k in model.log_dict if k.startswith('l_')}
    assert losses == {LOG_NAMES[name]}  # the term alone (pixel and output KD are off)
    assert math.isfinite(model.log_dict[LOG_NAMES[name]]) and model.log_dict[LOG_NAMES[name]] > 0
    has_connectors = 'connectors' in model.net_extra
    assert has_connectors == (name == 'FitNetLoss')
    assert (model.optimizer_extra is None) == (name != 'FitNetLoss')  # nothing else to train


# ---- FitNet connectors: optimised, saved, resumed, not exported -------------------------------
def _load_export_tool():
    spec = importlib.util.spec_from_file_location('export_student', os.path.join(REPO, 'tools', 'export_student.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('connector', ['conv1x1', 'conv3x3'])
def test_fitnet_connectors_optimised_saved_resumed_not_exported(connector, tmp_path, teacher_file):
    family, scale = 'EDSR', 2
    teacher = teacher_file(family, scale)
    opt = term_only_opt(family, scale, teacher, dict(type='FitNetLoss', loss_weight=1.0, connector=connector),
                        tmp_path)
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(opt))
    connectors = list(model.net_extra['connectors'].parameters())
    kernel = 1 if connector == 'conv1x1' else 3
    assert model.net_extra['connectors']['0'][0].conv.kernel_size == (kernel, kernel)
    in_extra = {id(p) for group in model.optimizer_extra.param_groups for p in group['params']}
    in_g = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert connectors and {id(p) for p in connectors} == in_extra
    assert not in_extra & in_g

    before = [p.detach().clone() for p in connectors]
    for it in (1, 2):
        feed(model, scale, seed=it)
        model.update_learning_rate(it)
        model.optimize_parameters(it)
    assert all(not torch.equal(a, p) for a, p in zip(before, connectors))

    model.save(epoch=0, current_iter=2)
    saved = torch.load(tmp_path / 'models' / 'net_extra_2.pth', weights_only=True)['params']
    assert any(k.startswith('connectors.0.') for k in saved)
    assert state_equal(dict(saved), dict(model.net_extra.state_dict()))
    state = torch.load(tmp_path / 'training_states' / '2.state', weights_only=True)

    resumed_opt = copy.deepcopy(opt)
    resumed_opt['path']['resume_state'] = str(tmp_path / 'training_states' / '2.state')
    normalise_teacher_aliases(resumed_opt)
    check_resume(resumed_opt, 2)
    torch.manual_seed(123)
    resumed = build_model(resumed_opt)
    assert not state_equal(model.net_extra.state_dict(), resumed.net_extra.state_dict())  # fresh connectors
    resumed.resume_training(state)
    assert state_equal(model.net_extra.state_dict(), resumed.net_extra.state_dict())
    assert state_equal(model.net_g.state_dict(), resumed.net_g.state_dict())
    assert state_equal(model.optimizer_extra.state_dict(), resumed.optimizer_extra.state_dict())

    out_file = str(tmp_path / 'student.pth')
    yaml_opt = str(tmp_path / 'kd.yml')
    write_yaml(yaml_opt, {k: v for k, v in opt.items() if k != 'is_train'})
    _load_export_tool().export(yaml_opt, str(tmp_path / 'models' / 'net_g_2.pth'), out_file)
    exported = torch.load(out_file, weights_only=True)['params']
    assert set(exported) == set(model.net_g.state_dict())
    assert not any('connector' in k or k in saved for k in exported)
    build_network(dict(opt['network_g'])).load_state_dict(exported, strict=True)


# ---- FAKD memory: measured in a fresh process -------------------------------------------------
MEMORY_SCRIPT = textwrap.dedent('''
    import resource
    START_MAXRSS = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before anything is imported
    import json, os, sys, time
    import torch
    torch.set_num_threads(2)
    from mixprior_plugin.losses.kd_loss import FAKDLoss

    def maxrss_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    def rss_kib():
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024

    def measure(n, c, size, pool_size):
        loss_fn = FAKDLoss(pool_size=pool_size)
        # warm-up on a tiny pair: one-off lazy allocations (kernels, thread pools) are not the loss's
        loss_fn(torch.randn(1, c, 32, 32, requires_grad=True), torch.randn(1, c, 32, 32)).backward()
        g = torch.Generator().manual_seed(0)
        feat_s = torch.randn(n, c, size, size, generator=g).requires_grad_()
        feat_t = torch.randn(n, c, size, size, generator=g)
        max0, rss0, t0 = maxrss_kib(), rss_kib(), time.time()
        loss = loss_fn(feat_s, feat_t)
        loss.backward()
        max1, seconds = maxrss_kib(), time.time() - t0
        assert torch.isfinite(loss) and feat_s.grad.abs().sum() > 0
        # ru_maxrss is a high-water mark: max1 - max0 can miss a peak hidden under an earlier, higher
        # mark; max1 - rss0 cannot (an upper bound of the evaluation's own peak above its inputs)
        return dict(shape=[n, c, size, size], pool_size=pool_size, maxrss_increase_kib=max1 - max0,
                    peak_above_rss_kib=max1 - rss0, seconds=seconds)

    pooled = measure(4, 64, 96, int(sys.argv[1]))
    control = measure(4, 64, 48, None)  # full affinity, 2304 positions: a peak the measurement must see
    print(json.dumps(dict(start_maxrss_kib=START_MAXRSS, pooled=pooled, control=control)))
''')


@pytest.mark.parametrize('pool_size', [24])
def test_fakd_pooled_memory_is_bounded(pool_size):
    env = dict(os.environ, OMP_NUM_THREADS='2')
    # Linux carries ru_maxrss over exec: a child exec'd straight from pytest starts with pytest's own
    # peak. sh forks (the trailing `exit` keeps it from exec'ing), so python gets a fresh count.
    proc = subprocess.run(['/bin/sh', '-c', '"$0" -c "$1" "$2"; exit $?', sys.executable, MEMORY_SCRIPT,
                           str(pool_size)], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    pooled, control = result['pooled'], result['control']
    mib = 1024.0
    print(f"\nFAKD pool_size={pool_size}, 4x64x96x96, forward+backward: ru_maxrss "
          f"+{pooled['maxrss_increase_kib'] / mib:.1f} MiB (peak <= {pooled['peak_above_rss_kib'] / mib:.1f} MiB "
          f"above the inputs' RSS), {pooled['seconds']:.2f} s; pool_size=None, 4x64x48x48: ru_maxrss "
          f"+{control['maxrss_increase_kib'] / mib:.1f} MiB, {control['seconds']:.2f} s")
    assert result['start_maxrss_kib'] < 200 * 1024  # a fresh count, not pytest's peak
    assert pooled['maxrss_increase_kib'] < 1024 * 1024  # < 1 GiB
    assert pooled['peak_above_rss_kib'] < 1024 * 1024  # < 1 GiB even counting a hidden peak
    # the measurement sees large allocations: the unpooled control holds at least both 4x2304x2304
    # float32 affinities (2 x 81 MiB) at once
    assert control['maxrss_increase_kib'] > 2 * 4 * 2304 ** 2 * 4 / 1024
    assert control['maxrss_increase_kib'] > 4 * pooled['peak_above_rss_kib']
