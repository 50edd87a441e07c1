"""Running a study: the teacher, the plan's jobs shared by worker processes, the reference evaluations, step times."""
import contextlib
import json
import os
import time

import torch

from basicsr.models import build_model

from mixprior_plugin.utils.provenance import run_meta
from mixprior_plugin.utils.tooling import write_json
from .data import InMemoryPairs, ValidationCurve, prepare_eval_roots, split_paths
from .profiles import (
    PLATEAU_RULE,
    PROFILES,
    REPO,
    VAL_SET,
    BenchmarkError,
    feature_weight_path,
    prepare_model_options,
    resolved_settings,
    sha,
)
from .report import report
from .selection import Plan, claim, first_seed_sweep_plan, release, reuse_sweep_run, selection_plan, teacher_setup
from .training import evaluate_net, plateau, save_weights, train, train_teacher


@contextlib.contextmanager
def locked_meta(path):
    """meta.json as a dict, read and written back under an exclusive lock (workers share it)."""
    import fcntl  # POSIX only: imported where the workers' lock is taken
    with open(path + '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        meta = json.load(open(path)) if os.path.isfile(path) else dict(commands=[], reference={})
        yield meta
        write_json(meta, path)


def study_settings(meta, profile, settings):
    """The settings a study's meta.json records: those of earlier invocations and of this one, in the profile's
    order, so that a run restricted with ``--settings`` adds to the study rather than shrinking it (the report
    reads this list)."""
    known = set(settings) | (set(meta.get('settings', [])) if meta.get('profile') in (None, profile) else set())
    order = list(PROFILES[profile]['settings'])
    return [s for s in order if s in known] + sorted(known - set(order))


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device('cuda' if torch.cuda.is_available() and args.device != 'cpu' else 'cpu')
    if args.bf16 and device.type != 'cuda':
        raise BenchmarkError('--bf16 needs a GPU')
    plan = Plan(args)
    out = plan.out
    os.makedirs(out, exist_ok=True)
    index, count = (int(v) for v in args.worker.split('/'))
    this_meta = dict(run_meta(device), threads=torch.get_num_threads(), worker=args.worker)
    meta_path = os.path.join(out, 'meta.json')
    with locked_meta(meta_path) as meta:
        meta.update(profile=args.profile, settings=study_settings(meta, args.profile, plan.settings),
                    seeds=plan.seeds, sets=list(args.sets),
                    val_count=args.val_count, sweep_factors=list(args.sweep_factors), sweep_scope=args.sweep_scope,
                    smoke=args.smoke, selection_seeds=plan.selection_seeds, extra_seeds=plan.extra_seeds,
                    curve_points=args.curve_points, plateau_rule=PLATEAU_RULE)
        meta['commands'].append(this_meta)
    invocation_start = time.time()

    train_paths, val_paths = split_paths(args.train_dirs, args.val_count)
    roots = prepare_eval_roots(args, val_paths, out)
    eval_sets = list(args.sets) + ([VAL_SET] if val_paths else [])
    t_opt, scale, batch, lq_patch, teacher_ckpt = teacher_setup(plan, args)
    with locked_meta(meta_path) as meta:
        meta.update(scale=scale)
    print(f'Loading {len(train_paths)} training images ({len(val_paths)} held out for validation)', flush=True)
    data = InMemoryPairs(train_paths, device, lq_patch, scale, workers=args.data_workers)

    validator = ValidationCurve(val_paths, scale, device) if val_paths and args.curve_points else None
    needs_teacher = args.teacher_only or any(m != 'Scratch' for st in plan.settings for m in plan.methods(st))

    # teacher: trained once, by worker 0; others wait for it. Scratch-only plans do not need it.
    if needs_teacher and not os.path.isfile(teacher_ckpt):
        if index != 0:
            print(f'Waiting for worker 0 to train the teacher ({teacher_ckpt})', flush=True)
            while not os.path.isfile(teacher_ckpt):
                time.sleep(20)
        else:
            train_teacher(args, plan, t_opt, teacher_ckpt, data, validator, roots, eval_sets, device, this_meta)
    if args.teacher_only:
        return report(out)
    meta = json.load(open(meta_path))
    if index == 0 and ('bicubic' not in meta['reference'] or
                       ('teacher' not in meta['reference'] and os.path.isfile(teacher_ckpt))):
        ref = None
        if os.path.isfile(teacher_ckpt):
            info = os.path.splitext(teacher_ckpt)[0] + '.json'
            ref = json.load(open(info)) if os.path.isfile(info) else dict(
                name=os.path.basename(teacher_ckpt), params=None, iters=None)
            missing = [s for s in eval_sets if s not in ref.get('sets', {})]
            if missing:
                ref.setdefault('sets', {}).update(evaluate_net('teacher', teacher_ckpt, t_opt['network_g'], roots,
                                                               missing, device, scale))
            ref.pop('curve', None)  # kept beside the checkpoint
        bicubic = evaluate_net('bicubic', None, None, roots, eval_sets, device, scale)
        with locked_meta(meta_path) as meta:
            meta['reference'].update(bicubic=bicubic, **({'teacher': ref} if ref else {}))

    def run_spec(setting, method, seed, factor, role):
        """(record path, options, model options, options key) of one run."""
        path = plan.record_path(setting, method, seed, factor if role == 'sweep' else None)
        opt = plan.run_options(setting, method, factor)
        iters = args.iters or opt['train']['total_iter']
        mopt = prepare_model_options(opt, iters, device, out, teacher_ckpt, seed, args.bf16, args.channels_last)
        key = sha(dict(opt=mopt, settings=resolved_settings(mopt), batch=batch, lq_patch=lq_patch,
                       train=[os.path.basename(p) for p in train_paths], bf16=args.bf16))
        return path, opt, mopt, key

    def is_done(setting, method, seed, factor, role, sets_needed):
        path, _, _, key = run_spec(setting, method, seed, factor, role)
        rec = plan.load(path)
        return rec is not None and rec['options_sha'] == key and all(s in rec['sets'] for s in sets_needed)

    def do_run(setting, method, seed, factor, role, sets_needed):
        path, opt, mopt, key = run_spec(setting, method, seed, factor, role)
        iters = mopt['train']['total_iter']
        rec = plan.load(path)
        if rec is None or rec['options_sha'] != key:
            if rec is not None:
                print(f'{path}: options changed since it ran; running again', flush=True)
            model, seconds, step_ms, pairing, curve = train(
                mopt, data, batch, device,
                f'{setting}/{method}/seed{seed}' + (f'/w{factor:g}' if role == 'sweep' else ''),
                validator=validator, curve_points=args.curve_points)
            ckpt = os.path.splitext(path)[0] + '.pth'
            save_weights(model.net_g_ema, ckpt)
            extras = None
            if getattr(model, 'net_extra', None) is not None and len(list(model.net_extra.parameters())):
                # MiPKD's mixers (and any connector): small, kept so the run can be studied afterwards
                extras = os.path.splitext(path)[0] + '_extra.pth'
                save_weights(model.get_bare_model(model.net_extra), extras, key='params')
            where = feature_weight_path(opt)
            weight = None
            if where is not None:
                term = opt['train'][where[0]]
                weight = (term[where[1]] if len(where) > 1 else term).get('loss_weight', 1.0)
            rec = dict(setting=setting, method=method, seed=seed, role=role,
                       sweep_factor=factor if role == 'sweep' else None, feature_weight=weight,
                       option_file=os.path.relpath(plan.files[setting][method], REPO), options=mopt,
                       resolved_settings=resolved_settings(mopt), options_sha=key,
                       student=f'EDSR {opt["network_g"]["num_feat"]}x{opt["network_g"]["num_block"]}', iters=iters,
                       batch=batch, lq_patch=lq_patch, params=sum(p.numel() for p in model.net_g.parameters()),
                       train_seconds=round(seconds, 1), step_ms=round(step_ms, 2), pairing=pairing,
                       weights=os.path.relpath(ckpt, out),
                       extra_weights=os.path.relpath(extras, out) if extras else None, curve=curve,
                       plateau=plateau(curve), provenance=this_meta, sets={})
            del model
            write_json(rec, path)  # trained: an interrupted evaluation resumes from here, not from training
        missing = [s for s in sets_needed if s not in rec['sets']]
        if missing:
            eval_start = time.time()
            rec['sets'].update(evaluate_net(method, os.path.join(out, rec['weights']), rec['options']['network_g'],
                                            roots, missing, device, scale))
            rec['eval_seconds'] = round(rec.get('eval_seconds', 0) + time.time() - eval_start, 1)
        rec['role'] = role
        write_json(rec, path)
        return rec

    start = time.time()

    def out_of_time():
        return args.time_limit and time.time() - start > args.time_limit

    val_only = [VAL_SET] if val_paths else list(args.sets)
    if plan.selection_seeds:
        jobs = selection_plan(plan, eval_sets, val_only)
    else:
        jobs = first_seed_sweep_plan(plan, eval_sets, val_only)
    # Workers share the job list: each takes the first job that is ready (its sweep decided), not done and not
    # claimed by a live process (a claim file beside the record; a dead process's claim is taken over).
    while not out_of_time():
        todo = [j for j in jobs if not j.dropped() and not (j.ready() and is_done(*j.args()))]
        if not todo:
            break
        job = next((j for j in todo if j.ready() and claim(run_spec(*j.args()[:5])[0])), None)
        if job is None:
            print(f'{len(todo)} runs left, none ready or unclaimed: waiting for other workers', flush=True)
            time.sleep(30)
            continue
        setting, method, seed, factor, role, sets_needed = job.args()
        path = run_spec(setting, method, seed, factor, role)[0]
        try:
            if not plan.selection_seeds and role == 'main' and (factor != 1 or plan.swept(setting, method)):
                reuse_sweep_run(plan, setting, method, seed, factor, out)
            do_run(setting, method, seed, factor, role, sets_needed)
        finally:
            release(path)
    with locked_meta(meta_path) as meta:  # this invocation's wall time, for the report's provenance
        for entry in meta['commands']:
            if all(entry.get(k) == this_meta[k] for k in ('command', 'date', 'worker', 'git_commit')):
                entry['wall_seconds'] = round(time.time() - invocation_start, 1)
    return report(out)


def timed_iterations(opt, steps, warm_up=3):
    """The iteration numbers a step-time measurement passes to ``optimize_parameters``.

    Mid-schedule rather than from iteration 1, so that a method with an iteration-dependent phase
    (MiPKD's ``ae_warmup_iters``, which skips the student's mixer terms) is timed at its steady-state
    step, the one that costs most of its training time.

    Args:
        opt (dict): A run's options (``train.total_iter`` is read).
        steps (int): Timed steps.
        warm_up (int): Untimed steps before them. Default: 3.

    Returns:
        range: ``warm_up + steps`` consecutive iterations; the first ``warm_up`` are not timed.
    """
    first = max(1, opt['train']['total_iter'] // 2)
    return range(first, first + warm_up + steps)


def time_steps(args):
    """Quiet step-time measurement of every method (seed 0, chosen weights) into step_times.json.

    Settings measured now replace their entries; other settings already in the file are kept, so one
    setting can be re-timed alone (ratios are only ever taken within a setting).
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device('cuda' if torch.cuda.is_available() and args.device != 'cpu' else 'cpu')
    plan = Plan(args)
    train_paths, _ = split_paths(args.train_dirs, args.val_count)
    _, scale, batch, lq_patch, teacher_ckpt = teacher_setup(plan, args)
    data = InMemoryPairs(train_paths[:40], device, lq_patch, scale, workers=args.data_workers)
    result = dict(note=f'median of {args.time_steps} steps after 3 warm-up steps, {torch.get_num_threads()} '
                  f'torch threads, measured alone (not during the training runs)')
    for setting in plan.settings:
        result[setting] = {}
        for method in plan.methods(setting):
            factor = plan.chosen_factor(method, setting) or 1
            run_opt = plan.run_options(setting, method, factor)
            opt = prepare_model_options(run_opt, run_opt['train']['total_iter'], device, plan.out, teacher_ckpt,
                                        0, args.bf16, args.channels_last)
            model = build_model(opt)
            gen = torch.Generator().manual_seed(0)
            times = []
            iterations = timed_iterations(opt, args.time_steps)
            for i, it in enumerate(iterations):
                model.feed_data(dict(zip(('lq', 'gt'), data.batch(batch, gen))))
                t = time.perf_counter()
                model.optimize_parameters(it)
                if device.type == 'cuda':
                    torch.cuda.synchronize()
                if i >= len(iterations) - args.time_steps:
                    times.append(time.perf_counter() - t)
            times.sort()
            result[setting][method] = dict(ms=round(1000 * times[len(times) // 2], 2),
                                           spread_ms=[round(1000 * times[0], 2), round(1000 * times[-1], 2)])
            print(f'{setting}/{method}: {result[setting][method]["ms"]} ms', flush=True)
    path = os.path.join(plan.out, 'step_times.json')
    if os.path.exists(path):
        with open(path) as f:
            result = {**json.load(f), **result}
    write_json(result, path)
