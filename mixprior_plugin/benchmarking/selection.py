"""The run plan: which runs a study needs and in which order, the weight choice on the selection seeds, the
variants' promotion, the extra reported seeds of unresolved comparisons, and the claims that let several worker
processes share one plan."""
import contextlib
import json
import os
import shutil
import socket

from mixprior_plugin.utils.tooling import write_json
from .profiles import (
    METHODS,
    PROFILES,
    REPO,
    VAL_SET,
    BenchmarkError,
    feature_weight_path,
    load_options,
    profile_runs,
    scaled_feature_weight,
)
from .stats import unresolved_comparisons


def sweep_setting(setting, scope, settings):
    """The setting whose sweep chooses the weights of ``setting``: itself with ``--sweep-scope each``, else the
    first of ``settings`` (the plan's, in order)."""
    return setting if scope == 'each' else settings[0]


class Plan:
    """Every run of a profile, in order, with the sweep's choices resolved from finished records."""

    def __init__(self, args):
        self.args = args
        self.teacher_file, self.files = profile_runs(args.profile)
        self.settings = [s for s in PROFILES[args.profile]['settings'] if s in (args.settings or self.files)]
        self.seeds = list(args.seeds)
        self.profile = PROFILES[args.profile]
        self.selection_seeds = [] if args.smoke and not self.profile.get('selection_seeds') else list(
            args.selection_seeds if args.selection_seeds is not None else self.profile.get('selection_seeds', ()))
        if set(self.selection_seeds) & set(self.seeds):
            raise BenchmarkError(f'Selection seeds {self.selection_seeds} must not be reported seeds {self.seeds}')
        extra = getattr(args, 'extra_seeds', None)
        self.extra_seeds = list(extra if extra is not None else self.profile.get('extra_seeds', ()))
        clash = set(self.extra_seeds) & (set(self.seeds) | set(self.selection_seeds))
        if clash:
            raise BenchmarkError(f'Extra seeds {self.extra_seeds} must be neither reported seeds {self.seeds} nor '
                                 f'selection seeds {self.selection_seeds} (both hold {sorted(clash)})')
        self.out = os.path.abspath(args.out)

    def record_path(self, setting, method, seed, factor=None):
        tag = '' if factor is None else f'_w{factor:g}'
        return os.path.join(self.out, 'runs', setting, f'{method}_seed{seed}{tag}.json')

    def load(self, path):
        return json.load(open(path)) if os.path.isfile(path) else None

    def methods(self, setting, role=None):
        """Methods of ``setting`` with an option file, in table order; ``role``: 'main' (compared at the reported
        seeds), 'ablation' (MiPKD's ablations, at the reported seeds), 'variant' (hypotheses tried on the selection
        seeds). The profile's option folder decides which setting has which."""
        wanted = self.args.methods or METHODS
        found = [m for m in METHODS if m in self.files[setting] and m in wanted]
        ablations, variants = self.profile.get('ablations'), self.profile.get('variants', ())
        if role is None:
            return found
        if role == 'variant':
            return [m for m in found if m in variants]
        if ablations is None:  # older profiles: every method everywhere
            return [m for m in found if m not in variants] if role == 'main' else []
        if role == 'ablation':
            return [m for m in found if m in ablations]
        return [m for m in found if m not in ablations and m not in variants]

    def base_options(self, setting, method):
        return load_options(self.files[setting][method], self.args.smoke)

    def weight_source(self, method):
        """The method whose sweep sets ``method``'s feature weight: MiPKD for its cost variant (and, in profiles
        with ablations, for its ablations and variants), else the method itself."""
        if method == 'MiPKD_bpm_quarter_batch':
            return 'MiPKD'
        if method.startswith('MiPKD_') and method in (self.profile.get('ablations') or ()) + \
                self.profile.get('variants', ()):
            return 'MiPKD'
        return method

    def swept(self, setting, method):
        return (len(self.args.sweep_factors) > 1 and self.weight_source(method) == method
                and method not in self.profile.get('variants', ())
                and feature_weight_path(self.base_options(setting, method)) is not None)

    def sweep_setting(self, setting):
        """The setting whose sweep chooses the weights of ``setting`` (``--sweep-scope``)."""
        return sweep_setting(setting, self.args.sweep_scope, self.settings)

    @property
    def sweep_seeds(self):
        """Selection seeds (never reported) where the profile has them, else the first reported seed."""
        return list(self.selection_seeds) or self.seeds[:1]

    def sweep_runs(self):
        """``(setting, method, seed, factor)`` of the weight sweep (selection seeds; first or every setting)."""
        settings = self.settings if self.args.sweep_scope == 'each' else self.settings[:1]
        return [(setting, m, seed, f) for seed in self.sweep_seeds for setting in settings
                for m in self.methods(setting, 'main') if self.swept(setting, m) for f in self.args.sweep_factors]

    def sweep_scores(self, method, setting):
        """``{(seed, factor): validation PSNR}`` of the finished sweep runs of ``method`` in ``setting``."""
        scores = {}
        for seed in self.sweep_seeds:
            for f in self.args.sweep_factors:
                rec = self.load(self.record_path(setting, method, seed, f))
                if rec is not None and VAL_SET in rec['sets']:
                    scores[(seed, f)] = rec['sets'][VAL_SET]['psnr']
        return scores

    def selection(self, method, setting):
        """The sweep of ``method`` in ``setting`` (see :func:`select_weight`), or None until it is complete."""
        setting = self.sweep_setting(setting)
        return select_weight(self.sweep_scores(method, setting), self.sweep_seeds, self.args.sweep_factors)

    def chosen_factor(self, method, setting):
        """The sweep's chosen factor (see :meth:`selection`); 1 when not swept; None until the sweep is complete."""
        source = self.weight_source(method)
        if source not in self.files[self.sweep_setting(setting)] or not self.swept(self.sweep_setting(setting),
                                                                                   source):
            return 1
        sel = self.selection(source, setting)
        return None if sel is None else sel['chosen']

    def variant_runs(self):
        """``(setting, variant, seed)`` of the hypothesis variants, on the selection seeds."""
        return [(setting, v, seed) for seed in self.sweep_seeds for setting in self.settings
                for v in self.methods(setting, 'variant')]

    def variant_result(self, setting, variant):
        """:func:`judge_variant` of ``variant`` against its base method (the part of its name before '_')."""
        sel = self.selection(variant.split('_')[0], setting)
        if sel is None:
            return None
        scores = {}
        for seed in sel['seeds']:
            rec = self.load(self.record_path(setting, variant, seed))
            if rec is not None and VAL_SET in rec['sets']:
                scores[seed] = rec['sets'][VAL_SET]['psnr']
        return judge_variant(scores, sel)

    def promoted(self, setting, variant):
        """Whether ``variant`` won on the selection seeds (then it runs at the reported seeds too); None until
        decided."""
        result = self.variant_result(setting, variant)
        return None if result is None else result['promoted']

    def main_runs(self):
        """``(setting, method, seed)`` of the comparison, seed-major so partial results are paired."""
        return [(setting, m, seed) for seed in self.seeds for setting in self.settings
                for m in self.methods(setting, 'main') + self.methods(setting, 'ablation')]

    def unresolved(self, setting, sets):
        """:func:`~.stats.unresolved_comparisons` of ``setting`` on the reported seeds, from the finished records;
        None until every compared method has every reported seed evaluated on ``sets``."""
        methods = compared_methods(self.profile, self.files[setting])
        psnr = {}
        for m in methods:
            for k in self.seeds:
                rec = self.load(self.record_path(setting, m, k))
                if rec is not None and rec.get('sets'):
                    psnr[(m, k)] = {s: v['psnr'] for s, v in rec['sets'].items()}
        return unresolved_comparisons(psnr, methods, self.seeds, sets)

    def needs_extra_seeds(self, setting, method, sets):
        """Whether ``method`` takes part in a comparison of ``setting`` that the reported seeds left unresolved;
        None until decided."""
        pairs = self.unresolved(setting, sets)
        return None if pairs is None else any(method in (a, b) for a, b, _ in pairs)

    def run_options(self, setting, method, factor):
        return scaled_feature_weight(self.base_options(setting, method), factor)


def compared_methods(profile, files):
    """The main methods of a setting (its option files ``files``, without the profile's ablations and variants),
    whatever ``--methods`` picks: the comparisons that decide on more seeds are a property of the study, not of one
    worker's command line."""
    variants, ablations = profile.get('variants', ()), profile.get('ablations') or ()
    return [m for m in METHODS if m in files and m not in variants and m not in ablations]


def teacher_setup(plan, args):
    """The teacher's options, the profile's scale, batch and LR patch, and the teacher checkpoint path."""
    t_opt = load_options(plan.teacher_file, args.smoke)
    scale = t_opt['scale']
    batch = t_opt['datasets']['train']['batch_size_per_gpu']
    lq_patch = t_opt['datasets']['train']['gt_size'] // scale
    if args.teacher_ckpt:
        ckpt = args.teacher_ckpt
    elif args.smoke:
        ckpt = os.path.join(plan.out, 'teacher_smoke.pth')
    else:
        kd_files = [f for setting in plan.settings for f in plan.files[setting].values()
                    if (load_options(f).get('path') or {}).get('pretrain_network_t')]
        if not kd_files:
            raise BenchmarkError('No option file of the profile names path.pretrain_network_t')
        ckpt = os.path.join(REPO, load_options(kd_files[0])['path']['pretrain_network_t'])
    return t_opt, scale, batch, lq_patch, ckpt


def confirm_factors(first_scan):
    """The factors the later selection seeds run: the option file's weight (1) and the first seed's best."""
    return sorted({1.0, max(first_scan, key=first_scan.get)} & set(first_scan))


def select_weight(scores, seeds, factors):
    """The weight choice of a sweep run in two stages: every factor on the first selection seed, then the
    option file's weight and the first seed's best factor on the other seeds (a bad factor is not rerun).

    Args:
        scores (dict): ``(seed, factor) -> validation PSNR`` of the finished sweep runs.
        seeds (list[int]): Selection seeds, in order.
        factors (list[float]): Swept factors.

    Returns:
        dict | None: :func:`choose_factor`'s result over the confirmed factors, with ``first_scan`` (factor ->
        PSNR on the first seed) and ``seeds``; None while a needed run is missing.
    """
    if any((seeds[0], f) not in scores for f in factors):
        return None
    first_scan = {f: scores[(seeds[0], f)] for f in factors}
    confirmed = confirm_factors(first_scan) if len(seeds) > 1 else list(factors)
    if any((seed, f) not in scores for seed in seeds for f in confirmed):
        return None
    choice = choose_factor({f: [scores[(seed, f)] for seed in seeds] for f in confirmed})
    return dict(choice, first_scan=first_scan, seeds=list(seeds))


def judge_variant(scores, selection):
    """Does a variant beat its base method at the base's chosen weight on the selection seeds?

    The first selection seed first: a variant that does not beat the base there is not run again. Otherwise,
    once it has every selection seed, it is promoted when its mean lead exceeds the base's seed-to-seed spread.

    Args:
        scores (dict): Selection seed -> the variant's validation PSNR (finished runs).
        selection (dict): The base's :func:`select_weight` result.

    Returns:
        dict | None: ``mean``, ``base``, ``lead``, ``spread``, ``promoted`` and ``reason``; None until decided.
    """
    seeds, chosen = selection['seeds'], selection['chosen']
    base_first = selection['per_seed'][chosen][0]
    if seeds[0] not in scores:
        return None
    out = dict(spread=selection['spread'], base=selection['scores'][chosen])
    if scores[seeds[0]] <= base_first:
        return dict(out, mean=scores[seeds[0]], base=base_first, lead=scores[seeds[0]] - base_first, seeds=seeds[:1],
                    promoted=False, reason=f'not above the base on seed {seeds[0]}')
    if any(k not in scores for k in seeds):
        return None
    mean = sum(scores[k] for k in seeds) / len(seeds)
    lead = mean - out['base']
    promoted = lead > out['spread']
    return dict(out, mean=mean, lead=lead, seeds=seeds, promoted=promoted,
                reason=('lead above' if promoted else 'lead within') + ' the base\'s seed-to-seed spread')


def choose_factor(per_seed):
    """The sweep's choice from ``per_seed`` (factor -> validation PSNR per selection seed, same seed order).

    The factor with the best mean, unless more than one seed was run and its lead over the option file's weight
    (factor 1) is within the seed-to-seed spread (the mean over factors of the range across seeds): then the
    option file's weight stands.

    Returns:
        dict: ``scores`` (factor -> mean), ``per_seed``, ``spread``, ``best``, ``chosen``, ``reason``.
    """
    scores = {f: sum(v) / len(v) for f, v in per_seed.items()}
    best = max(scores, key=scores.get)
    spread = sum(max(v) - min(v) for v in per_seed.values()) / len(per_seed)
    chosen, reason = best, 'best mean validation PSNR'
    if len(next(iter(per_seed.values()))) > 1 and best != 1 and 1 in scores:
        lead = scores[best] - scores[1]
        if lead <= spread:
            chosen = 1
            reason = (f'the best factor {best:g} leads the option file\'s weight by {lead:.3f} dB, within the '
                      f'seed-to-seed spread {spread:.3f} dB: the file\'s weight stands')
        else:
            reason = (f'leads the option file\'s weight by {lead:.3f} dB, more than the seed-to-seed spread '
                      f'{spread:.3f} dB')
    elif best == 1:
        reason = 'the option file\'s weight has the best mean validation PSNR'
    return dict(scores=scores, per_seed=per_seed, spread=spread, best=best, chosen=chosen, reason=reason)


def claim(path):
    """Claim a run for this process (``<record>.claim`` holding host and pid, created exclusively); a claim of
    a process that no longer runs on this host is taken over. Returns whether this process holds it."""
    claim_path = path + '.claim'
    me = f'{socket.gethostname()} {os.getpid()}'
    os.makedirs(os.path.dirname(claim_path), exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(claim_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                host, pid = open(claim_path).read().split()
            except (OSError, ValueError):
                return False
            if host != socket.gethostname() or pid_alive(int(pid)):
                return False
            with contextlib.suppress(OSError):
                os.remove(claim_path)
            continue
        with os.fdopen(fd, 'w') as f:
            f.write(me)
        return True
    return False


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release(path):
    with contextlib.suppress(OSError):
        os.remove(path + '.claim')


class Job:
    """One run of the plan. A sweep job has its factor; a main or variant job uses the sweep's choice, known
    once ``ready()`` (see :meth:`Plan.chosen_factor`)."""

    def __init__(self, plan, setting, method, seed, role, sets, factor=None, ready=None):
        self.plan, self.setting, self.method, self.seed, self.role, self.sets = plan, setting, method, seed, role, sets
        self._factor = factor
        if ready is not None:
            self.ready = ready

    def ready(self):
        return self.plan.chosen_factor(self.method, self.setting) is not None

    def dropped(self):
        """A variant's run at a reported seed once the variant lost on the selection seeds."""
        return (self.role == 'main' and self.method in self.plan.profile.get('variants', ())
                and self.plan.promoted(self.setting, self.method) is False)

    def args(self):
        """``(setting, method, seed, factor, role, sets)`` for run_spec / do_run."""
        factor = self._factor if self._factor is not None else self.plan.chosen_factor(self.method, self.setting) or 1
        return self.setting, self.method, self.seed, factor, self.role, self.sets


class ConfirmJob(Job):
    """A sweep run on a later selection seed: ready once the first seed's scan is complete, and run only for the
    factors that scan leaves in the choice (see :func:`confirm_factors`)."""

    def first_scan(self):
        scores = self.plan.sweep_scores(self.method, self.plan.sweep_setting(self.setting))
        first = self.plan.sweep_seeds[0]
        if any((first, f) not in scores for f in self.plan.args.sweep_factors):
            return None
        return {f: scores[(first, f)] for f in self.plan.args.sweep_factors}

    def ready(self):
        return self.first_scan() is not None

    def dropped(self):
        scan = self.first_scan()
        return scan is not None and self._factor not in confirm_factors(scan)


class VariantConfirmJob(Job):
    """A variant's run on a later selection seed: ready once the first seed has decided, dropped when the variant
    did not beat its base there."""

    def ready(self):
        first = self.plan.record_path(self.setting, self.method, self.plan.sweep_seeds[0])
        return self.plan.chosen_factor(self.method, self.setting) is not None and os.path.isfile(first)

    def dropped(self):
        result = self.plan.variant_result(self.setting, self.method)
        return result is not None and len(result['seeds']) == 1


class ExtraSeedJob(Job):
    """A run at an extra reported seed: ready once the setting's comparison has every reported seed, run only for
    a method in a comparison that stayed within two paired standard deviations there (see
    :func:`~.stats.unresolved_comparisons`)."""

    def ready(self):
        return (self.plan.needs_extra_seeds(self.setting, self.method, self.sets) is not None
                and super().ready())

    def dropped(self):
        """Not needed, or undecidable by this command: a compared method outside ``--methods`` still lacks a
        reported seed (waiting for it would wait forever)."""
        needed = self.plan.needs_extra_seeds(self.setting, self.method, self.sets)
        if needed is not None:
            return not needed
        own = self.plan.methods(self.setting, 'main')
        return any(m not in own and not (self.plan.load(self.plan.record_path(self.setting, m, k)) or {}).get('sets')
                   for m in compared_methods(self.plan.profile, self.plan.files[self.setting]) for k in self.plan.seeds)


def selection_plan(plan, eval_sets, val_only):
    """Jobs of a profile with selection seeds, setting by setting so that a partial study has whole settings:
    the sweep on the selection seeds, the hypothesis variants there, the comparison at the reported seeds once
    the weights are chosen, and the variants that won on the selection seeds at the reported seeds."""
    jobs = []
    first, later = plan.sweep_seeds[0], plan.sweep_seeds[1:]
    for setting in plan.settings:
        # sweeps only where they choose (every setting with --sweep-scope each, else the first)
        swept = [m for m in plan.methods(setting, 'main') if plan.swept(setting, m)
                 and plan.sweep_setting(setting) == setting]
        jobs += [Job(plan, setting, m, first, 'sweep', val_only, f, lambda: True)
                 for m in swept for f in plan.args.sweep_factors]
        for m in swept:
            for seed in later:
                jobs += [ConfirmJob(plan, setting, m, seed, 'sweep', val_only, f) for f in plan.args.sweep_factors]
        for st, v, seed in plan.variant_runs():
            if st == setting:  # later selection seeds only for a variant that won on the first
                jobs.append(Job(plan, setting, v, seed, 'variant', val_only) if seed == first else
                            VariantConfirmJob(plan, setting, v, seed, 'variant', val_only))
        jobs += [Job(plan, setting, m, seed, 'main', eval_sets) for st, m, seed in plan.main_runs() if st == setting]
        jobs += [Job(plan, setting, v, seed, 'main', eval_sets,
                     ready=lambda v=v, st=setting: plan.promoted(st, v) is True)
                 for seed in plan.seeds for v in plan.methods(setting, 'variant')]
    return jobs + extra_seed_jobs(plan, eval_sets)


def extra_seed_jobs(plan, eval_sets):
    """The extra reported seeds of unresolved comparisons (every profile), after every setting's reported seeds,
    seed-major so partial results are paired."""
    return [ExtraSeedJob(plan, setting, m, seed, 'main', eval_sets) for seed in plan.extra_seeds
            for setting in plan.settings for m in plan.methods(setting, 'main')]


def first_seed_sweep_plan(plan, eval_sets, val_only):
    """Jobs of the older profiles: the sweep on the first reported seed, then the comparison (and any
    ``--extra-seeds``)."""
    jobs = [Job(plan, setting, m, seed, 'sweep', val_only, f, lambda: True)
            for setting, m, seed, f in plan.sweep_runs()]
    return (jobs + [Job(plan, setting, m, seed, 'main', eval_sets) for setting, m, seed in plan.main_runs()]
            + extra_seed_jobs(plan, eval_sets))


def reuse_sweep_run(plan, setting, method, seed, factor, out):
    """The chosen sweep run of the first seed is that seed's comparison run: copy its record and weights."""
    sweep_path = plan.record_path(setting, method, seed, factor)
    main_path = plan.record_path(setting, method, seed)
    main_rec, sweep_rec = plan.load(main_path), plan.load(sweep_path)
    if sweep_rec is not None and (main_rec is None or main_rec['options_sha'] != sweep_rec['options_sha']):
        for suffix in ('.pth', '_extra.pth'):
            if os.path.isfile(os.path.splitext(sweep_path)[0] + suffix):
                shutil.copyfile(os.path.splitext(sweep_path)[0] + suffix, os.path.splitext(main_path)[0] + suffix)
        rec = json.load(open(sweep_path))
        rec['weights'] = os.path.relpath(os.path.splitext(main_path)[0] + '.pth', out)
        if rec.get('extra_weights'):
            rec['extra_weights'] = os.path.relpath(os.path.splitext(main_path)[0] + '_extra.pth', out)
        rec['sweep_factor'] = None
        write_json(rec, main_path)
