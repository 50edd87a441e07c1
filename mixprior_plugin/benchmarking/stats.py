"""Paired statistics of the benchmark: mean and sample std, the per-set verdict rule, and which comparisons are
still unresolved (they get more reported seeds)."""
import math

# Comparisons the report gives a verdict on: every method against these bases.
BASES = ('Scratch', 'LogitsKD', 'MiPKD')


def mean_std(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def paired_outcome(diffs, sets):
    """Per set, whether A is above or below B or unresolved, from paired per-seed differences.

    A set is resolved when the mean difference exceeds two paired standard deviations (with at least two
    seeds); otherwise the difference is within the seed spread and called unresolved, not a win.

    Args:
        diffs (dict): set -> A - B per seed.
        sets (list[str]): Sets in order.

    Returns:
        dict: ``overall`` ('higher on every set', 'lower on every set', 'unresolved' or 'mixed'), ``groups``
        ('higher' / 'lower' / 'unresolved' -> ['<set> <mean> ± <std>']), ``seeds``.
    """
    seeds = len(next(iter(diffs.values())))
    groups = {'higher': [], 'lower': [], 'unresolved': []}
    for s in sets:
        mean, std = mean_std(diffs[s])
        word = 'unresolved' if seeds < 2 or abs(mean) <= 2 * std else ('higher' if mean > 0 else 'lower')
        groups[word].append(f'{s} {mean:+.3f} ± {std:.3f}')
    n = len(sets)
    if len(groups['higher']) == n:
        overall = 'higher on every set'
    elif len(groups['lower']) == n:
        overall = 'lower on every set'
    elif not groups['higher'] and not groups['lower']:
        overall = 'unresolved'
    else:
        overall = 'mixed'
    return dict(overall=overall, groups=groups, seeds=seeds)


def verdict_pairs(methods):
    """``(method, base)`` of every verdict the report prints: each method against scratch, Logits-KD and MiPKD,
    each pair of methods once (MiPKD vs Logits-KD, not the other way round)."""
    return [(m, b) for m in methods if m != 'Scratch' for b in BASES
            if b in methods and b != m and not (m == 'LogitsKD' and b == 'MiPKD')]


def unresolved_comparisons(psnr, methods, seeds, sets):
    """The verdict comparisons still within the seed spread on the given seeds: the rule that adds reported
    seeds.

    The decision is taken once, on the first reported seeds (``seeds``), and is never revisited with the seeds it
    adds, so adding seeds cannot be stopped at a lucky moment.

    Args:
        psnr (dict): ``(method, seed) -> {set: PSNR}`` of finished runs (more seeds may be present; only ``seeds``
            count).
        methods (list[str]): The compared methods (main methods of the setting), in table order.
        seeds (list[int]): The first reported seeds, on which the decision is taken.
        sets (list[str]): Test sets; a comparison is unresolved when any set is.

    Returns:
        list[tuple] | None: ``(method, base, [unresolved sets])`` per unresolved comparison of
        :func:`verdict_pairs`; None while a run of ``methods`` x ``seeds`` is missing.
    """
    if any((m, k) not in psnr or any(s not in psnr[(m, k)] for s in sets) for m in methods for k in seeds):
        return None
    out = []
    for method, base in verdict_pairs(methods):
        diffs = {s: [psnr[(method, k)][s] - psnr[(base, k)][s] for k in seeds] for s in sets}
        groups = paired_outcome(diffs, sets)['groups']['unresolved']
        if groups:
            out.append((method, base, [g.split()[0] for g in groups]))
    return out
