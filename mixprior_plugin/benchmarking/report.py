"""The benchmark's report: results.md / results.json, paired verdicts, learning curves and paired-delta plots, from
the run records alone."""
import glob
import json
import os

from mixprior_plugin.utils.tooling import write_json
from .profiles import LABELS, METHODS, PLATEAU_RULE, PROFILES, VAL_SET, profile_runs
from .selection import compared_methods, judge_variant, select_weight, sweep_setting
from .stats import BASES, mean_std, paired_outcome, unresolved_comparisons, verdict_pairs


def collect(out, variants=None):
    """Main-run records by (setting, method, seed) and the sweep records (and, given a list, the variant
    records of the selection seeds are appended to it)."""
    runs, sweep = {}, []
    for path in sorted(glob.glob(os.path.join(out, 'runs', '*', '*.json'))):
        rec = json.load(open(path))
        if not rec.get('sets'):  # trained, not evaluated yet
            continue
        if rec.get('role') == 'main':
            runs[(rec['setting'], rec['method'], rec['seed'])] = rec
        if rec.get('sweep_factor') is not None:
            sweep.append(rec)
        if rec.get('role') == 'variant' and variants is not None:
            variants.append(rec)
    return runs, sweep


def verdict(name_a, name_b, diffs, sets):
    """One line: on how many sets A beats B in every seed (diffs: set -> per-seed A - B)."""
    seeds = len(next(iter(diffs.values())))
    always = [s for s in sets if all(d > 0 for d in diffs[s])]
    never = [s for s in sets if all(d < 0 for d in diffs[s])]
    wins = sum(d > 0 for s in sets for d in diffs[s])
    word = (f'{name_a} > {name_b} on {len(always)}/{len(sets)} sets in {seeds}/{seeds} seeds'
            + (f' ({", ".join(always)})' if always else ''))
    if never:
        word += f'; {name_a} < {name_b} on {len(never)}/{len(sets)} sets in every seed ({", ".join(never)})'
    return word + f'; higher in {wins} of {seeds * len(sets)} (set, seed) pairs'


def report(out):
    """Write results.json, results.md and paired_deltas.png from the run records; returns the Markdown."""
    os.makedirs(out, exist_ok=True)
    meta = json.load(open(os.path.join(out, 'meta.json'))) if os.path.isfile(os.path.join(out, 'meta.json')) else {}
    if meta.get('selection_seeds'):
        return report_selection(out, meta)
    runs, sweep = collect(out)
    ref = meta.get('reference', {})
    sets = meta.get('sets', [])
    step = json.load(open(os.path.join(out, 'step_times.json'))) if os.path.isfile(
        os.path.join(out, 'step_times.json')) else None
    lines = [f'# Method benchmark, {meta.get("profile", "?")} profile (x{meta.get("scale", "?")}, PSNR dB on Y, '
             f'crop_border = scale)', '']
    for m in meta.get('commands', []):
        wall = f', wall time {m["wall_seconds"] / 60:.1f} min' if 'wall_seconds' in m else ''
        lines.append(f'- `{m["command"]}` at {m["git_commit"]}{" (dirty)" if m.get("git_dirty") else ""}, '
                     f'{m["device"]}, {m["date"]}{wall}')
    if runs or sweep:
        records = list(runs.values()) + sweep
        secs = sum(r.get('train_seconds', 0) for r in records)
        timed = [r['eval_seconds'] for r in records if 'eval_seconds' in r]
        evaluation = (f'; evaluation time summed over the {len(timed)} runs that recorded it {sum(timed) / 60:.0f} min'
                      if timed else ' (evaluation not included: these runs did not record it)')
        lines.append(f'- {len(runs)} comparison runs and {len(sweep)} sweep runs; training time summed over runs '
                     f'{secs / 60:.0f} min{evaluation}')
    teacher = ref.get('teacher')
    if teacher:
        lines += ['', f'Teacher {teacher["name"]} ({teacher["params"]:,} parameters, {teacher["iters"]} iterations). '
                  'Bicubic and teacher PSNR: ' + ', '.join(
                      f'{s} {ref["bicubic"][s]["psnr"]:.2f} / {teacher["sets"][s]["psnr"]:.2f}' for s in sets)]
    if sweep:
        scope = meta.get('sweep_scope', 'first')
        lines += ['', '## Feature-weight sweep (validation split, first seed, '
                  f'{"every setting" if scope == "each" else "first setting"})', '',
                  '| setting | method | factor | weight | val PSNR |', '|---|---|---|---|---|']
        for rec in sorted(sweep, key=lambda r: (r['setting'], METHODS.index(r['method']), r['sweep_factor'])):
            lines.append(f'| {rec["setting"]} | {LABELS.get(rec["method"], rec["method"])} | {rec["sweep_factor"]:g} | '
                         f'{rec["feature_weight"]:g} | {rec["sets"][VAL_SET]["psnr"]:.3f} |')
        spreads = {}
        for rec in sweep:
            spreads.setdefault((rec['setting'], rec['method']), []).append(rec['sets'][VAL_SET]['psnr'])
        lines += ['', 'Spread of the validation PSNR over the swept weights: ' + ', '.join(
            f'{LABELS.get(m, m)} ({st}) {max(v) - min(v):.3f} dB' for (st, m), v in spreads.items()) +
            ' (each method uses its best; compare the spreads with the per-seed differences below).']
    summary = dict(settings={}, verdicts=[])
    deltas_for_plot = {}
    # every setting with records, in the profile's order (a later command may have run fewer settings)
    order = list(PROFILES.get(meta.get('profile'), {}).get('settings', ())) + list(meta.get('settings', []))
    settings = [st for i, st in enumerate(order) if st not in order[:i] and any(k[0] == st for k in runs)]
    for setting in settings:
        rows = {}
        for (s, method, seed), rec in runs.items():
            if s == setting:
                rows.setdefault(method, {})[seed] = rec
        if 'Scratch' not in rows:
            continue
        seeds = sorted(rows['Scratch'])
        first = rows['Scratch'][seeds[0]]
        lines += ['', f'## {setting} compression: {first["student"]} ({first["params"]:,} parameters), '
                  f'{first["iters"]} iterations, seeds {seeds}', '']
        # regime check
        sc = {s: mean_std([rows['Scratch'][k]['sets'][s]['psnr'] for k in seeds])[0] for s in sets}
        if teacher:
            checks = []
            for s in sets:
                gap_t, gap_b = teacher['sets'][s]['psnr'] - sc[s], sc[s] - ref['bicubic'][s]['psnr']
                checks.append(f'{s}: teacher - scratch {gap_t:+.2f} ({"ok" if gap_t >= 0.3 else "FAILS >= 0.3"}), '
                              f'scratch - bicubic {gap_b:+.2f} ({"ok" if gap_b >= 0.5 else "FAILS >= 0.5"})')
            lines += ['Regime: ' + '; '.join(checks), '']
        lines += ['| method | seeds | ' + ' | '.join(f'{s} mean ± std' for s in sets) + ' | Δ scratch (per seed) | '
                  'Δ Logits-KD (per seed) | step time / Logits-KD |', '|---' * (len(sets) + 5) + '|']
        setting_summary = {}
        for method in METHODS:
            if method not in rows:
                continue
            done = sorted(rows[method])
            cells = []
            for s in sets:
                mean, std = mean_std([rows[method][k]['sets'][s]['psnr'] for k in done])
                cells.append(f'{mean:.3f} ± {std:.3f}')
            paired = {}
            for base in ('Scratch', 'LogitsKD'):
                common = [k for k in done if k in rows.get(base, {})]
                paired[base] = {s: [rows[method][k]['sets'][s]['psnr'] - rows[base][k]['sets'][s]['psnr']
                                    for k in common] for s in sets}
            fmt = lambda d: '<br>'.join(f'{s}: ' + ' '.join(f'{v:+.3f}' for v in d[s]) for s in sets)  # noqa: E731
            ratio = ''
            if step and setting in step and method in step[setting] and 'LogitsKD' in step[setting]:
                ratio = f'{step[setting][method]["ms"] / step[setting]["LogitsKD"]["ms"]:.2f}'
            lines.append(f'| {LABELS.get(method, method)} | {len(done)} | ' + ' | '.join(cells) + ' | ' +
                         (fmt(paired['Scratch']) if method != 'Scratch' else '-') + ' | ' +
                         (fmt(paired['LogitsKD']) if method != 'LogitsKD' else '-') + f' | {ratio} |')
            setting_summary[method] = dict(seeds=done, psnr={s: mean_std([rows[method][k]['sets'][s]['psnr']
                                                                         for k in done]) for s in sets},
                                           delta_scratch=paired['Scratch'], delta_logits_kd=paired['LogitsKD'])
            if method != 'Scratch':
                deltas_for_plot[(setting, method)] = paired['Scratch']
        summary['settings'][setting] = setting_summary
        pairing_ok = all(len({rows[m][k]['pairing']['init_sha'] for m in rows if k in rows[m]}) == 1 and
                         len({rows[m][k]['pairing']['first_batch_sha'] for m in rows if k in rows[m]}) == 1
                         for k in seeds)
        lines += ['', f'Pairing check (same initial student and first batch for every method of a seed): '
                  f'{"holds" if pairing_ok else "BROKEN"}.']
        if meta.get('extra_seeds'):
            lines += ['', extra_seed_line(meta, setting, rows, sets)]
        lines += ['', 'Verdicts:']
        for a, b in (('MiPKD', 'Scratch'), ('MiPKD', 'LogitsKD'), ('LogitsKD', 'Scratch'),
                     ('MiPKD_bpm_only', 'LogitsKD'), ('MiPKD_fpm_only', 'LogitsKD'),
                     ('MiPKD_bpm_quarter_batch', 'MiPKD'), ('FitNet', 'LogitsKD'), ('AT', 'LogitsKD'),
                     ('FAKD', 'LogitsKD'), ('RKD', 'LogitsKD'), ('MiPKD', 'FitNet'), ('MiPKD', 'FAKD')):
            if a in rows and b in rows:
                common = [k for k in rows[a] if k in rows[b]]
                if not common:
                    continue
                diffs = {s: [rows[a][k]['sets'][s]['psnr'] - rows[b][k]['sets'][s]['psnr'] for k in common]
                         for s in sets}
                line = f'{setting}: ' + verdict(LABELS.get(a, a), LABELS.get(b, b), diffs, sets)
                lines.append(f'- {line}')
                summary['verdicts'].append(line)
    if step:
        lines += ['', f'Step times: {step.get("note", "")}']
    text = '\n'.join(lines) + '\n'
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write(text)
    write_json(dict(meta=meta, summary=summary, runs=[runs[k] for k in sorted(runs)], sweep=sweep, step_times=step),
               os.path.join(out, 'results.json'))
    plot(deltas_for_plot, sets, settings, os.path.join(out, 'paired_deltas.png'))
    return text


def paired_verdict(name_a, name_b, diffs, sets):
    """One line comparing A with B per set (see :func:`paired_outcome`), with the per-seed differences."""
    outcome = paired_outcome(diffs, sets)
    head = {'higher on every set': f'{name_a} > {name_b} on every set',
            'lower on every set': f'{name_a} < {name_b} on every set'}.get(
                outcome['overall'], f'{name_a} vs {name_b}: {outcome["overall"]}')
    n = len(sets)
    body = '; '.join(f'{word} on {len(v)}/{n} ({", ".join(v)})' for word, v in outcome['groups'].items() if v)
    per_seed = ', '.join(f'{s} ' + ' '.join(f'{d:+.3f}' for d in diffs[s]) for s in sets)
    if outcome['seeds'] == 1:  # no spread to judge by: the differences alone
        return f'{head} (1 seed, no spread to judge by): {per_seed}'
    return f'{head} ({outcome["seeds"]} seeds, mean ± paired std): {body}; per seed: {per_seed}'


def report_selection(out, meta):
    """The report of a profile with selection seeds (the converged study): provenance, teacher plateau, per
    setting the plateau and regime checks, the weight selection on the unreported seeds, the variants, the
    comparison at the reported seeds with paired verdicts against scratch, Logits-KD and MiPKD, learning
    curves (``curves_<setting>.png``) and paired deltas (``paired_deltas.png``)."""
    variants = []
    runs, sweep = collect(out, variants)
    ref, sets = meta.get('reference', {}), meta.get('sets', [])
    step = json.load(open(os.path.join(out, 'step_times.json'))) if os.path.isfile(
        os.path.join(out, 'step_times.json')) else None
    rule = meta.get('plateau_rule', PLATEAU_RULE)
    lines = [f'# Method benchmark at convergence, {meta.get("profile", "?")} profile (x{meta.get("scale", "?")}, PSNR '
             'dB on Y, crop_border = scale)', '',
             f'Reported seeds {meta.get("seeds")}; weights chosen on the selection seeds {meta["selection_seeds"]}, '
             'which are never reported. A paired difference is resolved when its mean exceeds two paired standard '
             'deviations over the reported seeds; otherwise it is called unresolved.' + (
                 f' A comparison unresolved on any set over seeds {meta.get("seeds")} gives both of its methods the '
                 f'extra seeds {meta["extra_seeds"]} (decided once, on seeds {meta.get("seeds")}); its verdict '
                 'is then taken over every seed both methods have.' if meta.get('extra_seeds') else ''), '']
    for m in meta.get('commands', []):
        wall = f', wall time {m["wall_seconds"] / 60:.1f} min' if 'wall_seconds' in m else ''
        lines.append(f'- `{m["command"]}` at {m["git_commit"]}{" (dirty)" if m.get("git_dirty") else ""}, '
                     f'{m["device"]}, {m["date"]}{wall}')
    records = list(runs.values()) + sweep + variants
    if records:
        lines.append(f'- {len(runs)} comparison runs, {len(sweep)} selection runs, {len(variants)} variant runs; '
                     f'training time summed {sum(r.get("train_seconds", 0) for r in records) / 3600:.1f} h, '
                     f'evaluation {sum(r.get("eval_seconds", 0) for r in records) / 3600:.1f} h')
    teacher = ref.get('teacher')
    if teacher:
        rise = teacher.get('plateau')
        lines += ['', f'Teacher {teacher["name"]} ({teacher["params"]:,} parameters, {teacher["iters"]} iterations'
                  + (f'; validation PSNR {rise[0]:+.3f} dB over its last quarter, iterations {rise[1]}-{rise[2]}'
                     if rise else '') + '). Bicubic / teacher PSNR: ' + ', '.join(
                      f'{s} {ref["bicubic"][s]["psnr"]:.2f} / {teacher["sets"][s]["psnr"]:.2f}' for s in sets)]
    summary = dict(settings={}, verdicts=[], selection={}, variants={})
    deltas_for_plot, which = {}, []
    header_end = len(lines)
    order = list(PROFILES.get(meta.get('profile'), {}).get('settings', ())) + list(meta.get('settings', []))
    with_records = {k[0] for k in runs} | {r['setting'] for r in sweep + variants}
    settings = [st for i, st in enumerate(order) if st not in order[:i] and st in with_records]
    for setting in settings:
        rows = {}
        for (st, method, seed), rec in runs.items():
            if st == setting:
                rows.setdefault(method, {})[seed] = rec
        lines += ['', f'## {setting} compression']
        some = next(iter(rows.get('Scratch', {}).values()), None) or next(
            (r for r in sweep if r['setting'] == setting), None)
        if some:
            lines += ['', f'Student {some["student"]} ({some["params"]:,} parameters), {some["iters"]} iterations, '
                      f'batch {some["batch"]}, LR patch {some["lq_patch"]}.']
        # plateau and regime
        if 'Scratch' in rows:
            seeds = sorted(rows['Scratch'])
            rises = [rows['Scratch'][k].get('plateau') for k in seeds]
            if all(rises):
                mean_rise = sum(r[0] for r in rises) / len(rises)
                ok = mean_rise < rule['max_rise_db']
                lines += ['', f'Plateau: scratch\'s validation PSNR rose {mean_rise:+.3f} dB on average over the last '
                          f'quarter (iterations {rises[0][1]}-{rises[0][2]}; per seed ' +
                          ', '.join(f'{r[0]:+.3f}' for r in rises) +
                          f'): {"holds" if ok else "FAILS"} (< {rule["max_rise_db"]} dB).']
                summary.setdefault('plateau', {})[setting] = dict(mean_rise=mean_rise, per_seed=[r[0] for r in rises],
                                                                  holds=ok)
            if teacher:
                checks = []
                for s_ in sets:
                    sc = mean_std([rows['Scratch'][k]['sets'][s_]['psnr'] for k in seeds])[0]
                    best = max(mean_std([rows[m][k]['sets'][s_]['psnr'] for k in rows[m]])[0] for m in rows)
                    gap, gap_best = teacher['sets'][s_]['psnr'] - sc, teacher['sets'][s_]['psnr'] - best
                    checks.append(f'{s_} teacher - scratch {gap:+.2f}, teacher - best student {gap_best:+.2f} '
                                  f'({"ok" if gap_best >= 0.3 else "FAILS >= 0.3"})')
                lines += ['', 'Regime (converged students at least 0.3 dB below the teacher): ' + '; '.join(checks)
                          + '.']
        # selection: the setting's own sweep, or with --sweep-scope first the first setting's
        chooser = sweep_setting(setting, meta.get('sweep_scope'), meta.get('settings') or settings)
        swept = {}
        for rec in sweep:
            if rec['setting'] == setting == chooser:
                swept.setdefault(rec['method'], {}).setdefault(rec['sweep_factor'], {})[rec['seed']] = rec
        if chooser != setting:
            lines += ['', f'Weights: the {chooser} setting\'s choice (sweep scope "first").']
            summary['selection'][setting] = summary['selection'].get(chooser, {})
        if swept:
            sel_seeds = meta['selection_seeds']
            lines += ['', f'Weight selection (validation split, selection seeds {sel_seeds}; every factor on seed '
                      f'{sel_seeds[0]}, then the option file\'s weight and that seed\'s best on the others):', '',
                      '| method | factor | weight | ' + ' | '.join(f'seed {k}' for k in sel_seeds) + ' | mean |',
                      '|---' * (4 + len(sel_seeds)) + '|']
            for method in [m for m in METHODS if m in swept]:
                for f in sorted(swept[method]):
                    recs = swept[method][f]
                    vals = [recs[k]['sets'][VAL_SET]['psnr'] if k in recs else None for k in sel_seeds]
                    done = [v for v in vals if v is not None]
                    weight = next(iter(recs.values()))['feature_weight']
                    cells = ' | '.join('-' if v is None else f'{v:.3f}' for v in vals)
                    lines.append(f'| {LABELS.get(method, method)} | {f:g} | {weight:g} | {cells} | '
                                 f'{sum(done) / len(done):.3f} |')
            lines.append('')
            for method in [m for m in METHODS if m in swept]:
                scores = {(k, f): rec['sets'][VAL_SET]['psnr'] for f, recs in swept[method].items()
                          for k, rec in recs.items()}
                choice = select_weight(scores, sel_seeds, meta.get('sweep_factors', sorted(swept[method])))
                if choice is None:
                    lines.append(f'- {LABELS.get(method, method)}: selection incomplete')
                    continue
                summary['selection'].setdefault(setting, {})[method] = choice
                lines.append(f'- {LABELS.get(method, method)}: factor {choice["chosen"]:g} ({choice["reason"]})')
        # variants on the selection seeds
        var = [r for r in variants if r['setting'] == setting]
        if var:
            lines += ['', 'Variants on the selection seeds (validation PSNR; a variant that beats its base at the '
                      'chosen weight on the first seed, and then by more than the base\'s seed-to-seed spread on '
                      'average, is run at the reported seeds):', '',
                      '| variant | seeds | mean | base at its chosen weight | difference | spread | promoted |',
                      '|---|---|---|---|---|---|---|']
            by_variant = {}
            for r in var:
                by_variant.setdefault(r['method'], {})[r['seed']] = r['sets'][VAL_SET]['psnr']
            for method in [m for m in METHODS if m in by_variant]:
                base = summary['selection'].get(setting, {}).get(method.split('_')[0])
                result = None if base is None else judge_variant(by_variant[method], base)
                vals = by_variant[method]
                if result is None:
                    lines.append(f'| {LABELS.get(method, method)} | {sorted(vals)} | '
                                 f'{sum(vals.values()) / len(vals):.3f} | - | - | - | undecided |')
                    continue
                summary['variants'].setdefault(setting, {})[method] = result
                lines.append(f'| {LABELS.get(method, method)} | {result["seeds"]} | {result["mean"]:.3f} | '
                             f'{result["base"]:.3f} | {result["lead"]:+.3f} | {result["spread"]:.3f} | '
                             f'{"yes" if result["promoted"] else "no"} ({result["reason"]}) |')
        if not rows:
            continue
        # the comparison
        lines += ['', '| method | seeds | ' + ' | '.join(f'{s_} mean ± std' for s_ in sets) + ' | Δ scratch (per seed) '
                  '| Δ MiPKD (per seed) | step time / Logits-KD |', '|---' * (len(sets) + 5) + '|']
        setting_summary, paired = {}, {}
        for method in [m for m in METHODS if m in rows]:
            done = sorted(rows[method])
            cells = [('{:.3f} ± {:.3f}').format(*mean_std([rows[method][k]['sets'][s_]['psnr'] for k in done]))
                     for s_ in sets]
            paired[method] = {}
            for base in ('Scratch', 'LogitsKD', 'MiPKD'):
                common = [k for k in done if k in rows.get(base, {})]
                if common and base != method:
                    paired[method][base] = {s_: [rows[method][k]['sets'][s_]['psnr'] - rows[base][k]['sets'][s_]['psnr']
                                                 for k in common] for s_ in sets}
            fmt = lambda d: '<br>'.join(f'{s_}: ' + ' '.join(f'{v:+.3f}' for v in d[s_]) for s_ in sets) if d else '-'  # noqa: E731,E501
            ratio = ''
            if step and setting in step and method in step[setting] and 'LogitsKD' in step[setting]:
                ratio = f'{step[setting][method]["ms"] / step[setting]["LogitsKD"]["ms"]:.2f}'
            weight = rows[method][done[0]].get('feature_weight')
            label = LABELS.get(method, method) + (f' (w {weight:g})' if weight is not None else '')
            lines.append(f'| {label} | {len(done)} | ' + ' | '.join(cells) + f' | {fmt(paired[method].get("Scratch"))} '
                         f'| {fmt(paired[method].get("MiPKD"))} | {ratio} |')
            setting_summary[method] = dict(seeds=done, feature_weight=weight,
                                           psnr={s_: mean_std([rows[method][k]['sets'][s_]['psnr'] for k in done])
                                                 for s_ in sets},
                                           **{f'delta_{b}': d for b, d in paired[method].items()})
            if 'Scratch' in paired[method]:
                deltas_for_plot[(setting, method)] = paired[method]['Scratch']
        summary['settings'][setting] = setting_summary
        all_seeds = sorted({k for m in rows for k in rows[m]})
        pairing_ok = all(len({rows[m][k]['pairing']['init_sha'] for m in rows if k in rows[m]}) == 1 and
                         len({rows[m][k]['pairing']['first_batch_sha'] for m in rows if k in rows[m]}) == 1
                         for k in all_seeds)
        lines += ['', f'Pairing check (same initial student and first batch for every method of a seed): '
                  f'{"holds" if pairing_ok else "BROKEN"}.']
        if meta.get('extra_seeds'):
            lines += ['', extra_seed_line(meta, setting, rows, sets)]
        lines += ['', 'Verdicts:']
        pairs = verdict_pairs([m for m in METHODS if m in rows])
        for method in [m for m in METHODS if m in rows and m != 'Scratch']:
            for base in BASES:
                if base in paired[method] and (method, base) in pairs:
                    line = f'{setting}: ' + paired_verdict(LABELS.get(method, method), LABELS.get(base, base),
                                                           paired[method][base], sets)
                    lines.append(f'- {line}')
                    summary['verdicts'].append(line)
            which.append(which_row(setting, method, rows[method], paired[method], sets, step))
        plot_curves(reported_curves(rows, meta['seeds']), f'{setting} compression: validation PSNR of the EMA '
                    f'student, mean over seeds {meta["seeds"]}', os.path.join(out, f'curves_{setting}.png'))
        lines += ['', f'Learning curves: curves_{setting}.png.']
        mixers = mixer_inspections(out, setting)
        if mixers:
            lines += mixer_table(mixers)
            summary.setdefault('mixers', {})[setting] = mixers
    if which:
        lines[header_end:header_end] = which_table(which, sets)
        summary['which_method'] = which
    if step:
        lines += ['', f'Step times: {step.get("note", "")}']
    text = '\n'.join(lines) + '\n'
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write(text)
    write_json(dict(meta=meta, summary=summary, runs=[runs[k] for k in sorted(runs)], sweep=sweep, variants=variants,
                    step_times=step), os.path.join(out, 'results.json'))
    plot(deltas_for_plot, sets, settings, os.path.join(out, 'paired_deltas.png'))
    return text


def extra_seed_line(meta, setting, rows, sets):
    """The report's account of the extra seeds of ``setting``: which comparisons the reported seeds left
    unresolved (see :func:`~.stats.unresolved_comparisons`) and which methods that sends to the extra seeds."""
    try:
        methods = compared_methods(PROFILES[meta['profile']], profile_runs(meta['profile'])[1][setting])
    except (KeyError, ValueError):  # a profile or setting this checkout no longer has: the records decide
        methods = [m for m in METHODS if m in rows]
    seeds, extra = meta['seeds'], meta['extra_seeds']
    psnr = {(m, k): {s: v['psnr'] for s, v in rows[m][k]['sets'].items()} for m in rows for k in rows[m]}
    pairs = unresolved_comparisons(psnr, methods, seeds, sets)
    if pairs is None:
        return f'Extra seeds {extra}: not decided until every main method has seeds {seeds}.'
    if not pairs:
        return f'Extra seeds {extra}: none needed; every comparison is resolved on every set over seeds {seeds}.'
    chosen = [m for m in methods if any(m in p[:2] for p in pairs)]
    done = {m: sorted(k for k in rows.get(m, {}) if k in extra) for m in chosen}
    return (f'Extra seeds {extra} for ' + ', '.join(f'{LABELS.get(m, m)} (done: {done[m] or "none"})' for m in chosen)
            + f'; unresolved over seeds {seeds}: ' + '; '.join(
                f'{LABELS.get(a, a)} vs {LABELS.get(b, b)} ({", ".join(s)})' for a, b, s in pairs) + '.')


def seeds_text(count):
    return f'{count} seed' + ('s' if count != 1 else '')


def mixer_inspections(out, setting):
    """``tools/inspect_mixers.py --json`` results kept under ``<out>/mixers/`` for the MiPKD runs of ``setting``,
    as ``{run name: result}`` (the run is named by its record: ``runs/<setting>/<method>_seed<k>.json``)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(out, 'mixers', '*.json'))):
        info = json.load(open(path))
        run = info.get('run', '')
        if os.path.basename(os.path.dirname(run)) == setting:
            found[os.path.splitext(os.path.basename(run))[0]] = info
    return found


def mixer_table(mixers):
    """Report lines: per run and distillation point, does the FPM decoder use the student's latent (L_FPM with it
    zeroed or taken from another image, over L_FPM with the true latent), the auto-encoders' relative errors and
    the realised mask."""
    first = next(iter(mixers.values()))
    lines = ['', f'Inside the mixers (`tools/inspect_mixers.py` on the reported students, and on a variant\'s '
             f'selection-seed run where its name says so, {first["num_images"]} '
             f'{first["patch"]}-px LR patches of the validation split; a ratio near 1 means the decoder ignores the '
             'student\'s latent):', '',
             '| run | point | L_FPM (rel.) | zeroed / true | other image / true | AE rel. error T | AE rel. error S '
             '| mask (teacher share) |', '|---' * 8 + '|']
    for name, info in mixers.items():
        for p in info['points']:
            lines.append(f'| {name} | {p["point"]} | {p["l_fpm"]:.4f} ({p["rel_fpm"]:.3f}) | '
                         f'{p["zeroed_over_true"]:.2f} | {p["other_over_true"]:.2f} | {p["ae_rel_teacher"]:.3f} | '
                         f'{p["ae_rel_student"]:.3f} | {p["mask_teacher_share"]:.3f} |')
    return lines


def which_row(setting, method, records, paired, sets, step):
    """One line of the "which method?" table: weight, mean paired gain over scratch per set, the verdicts
    against scratch and MiPKD, and the step time relative to Logits-KD."""
    weight = next(iter(records.values())).get('feature_weight')
    row = dict(setting=setting, method=method, seeds=len(records), weight=weight,
               gain={s: mean_std(paired['Scratch'][s])[0] for s in sets} if 'Scratch' in paired else None)
    for base in ('Scratch', 'MiPKD'):
        if base in paired:
            row[f'vs_{base}'] = paired_outcome(paired[base], sets)['overall']
    if step and setting in step and method in step[setting] and 'LogitsKD' in step[setting]:
        row['cost'] = step[setting][method]['ms'] / step[setting]['LogitsKD']['ms']
    return row


def which_table(rows, sets):
    """The report's opening table: per setting and method, what it gains over scratch and how it compares."""
    lines = ['## Which method? (reported seeds; gains are mean paired differences to scratch, dB)', '',
             '| setting | method | weight | ' + ' / '.join(sets) + ' | vs scratch | vs MiPKD | step / Logits-KD |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        gain = ' / '.join(f'{r["gain"][s]:+.3f}' for s in sets) if r['gain'] else '-'
        weight = '-' if r['weight'] is None else f'{r["weight"]:g}'
        cost = f'{r["cost"]:.2f}' if 'cost' in r else '-'
        label = f'{LABELS.get(r["method"], r["method"])} ({seeds_text(r["seeds"])})'
        lines.append(f'| {r["setting"]} | {label} | {weight} | {gain} | {r.get("vs_Scratch", "-")} | '
                     f'{r.get("vs_MiPKD", "-")} | {cost} |')
    return lines + ['']


def plot(deltas, sets, settings, path):
    """One panel per setting: PSNR - scratch per method and test set, one point per seed, bar = mean."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    settings = [s for s in settings if any(k[0] == s for k in deltas)]
    if not settings:
        return
    fig, axes = plt.subplots(len(settings), 1, figsize=(11, 3.6 * len(settings)), squeeze=False)
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for ax, setting in zip(axes[:, 0], settings):
        methods = [m for m in METHODS if (setting, m) in deltas]
        width = 0.8 / max(len(sets), 1)
        for j, s in enumerate(sets):
            for i, m in enumerate(methods):
                vals = deltas[(setting, m)][s]
                x = i + (j - (len(sets) - 1) / 2) * width
                ax.bar(x, sum(vals) / len(vals), width * 0.9, color=colors[j % len(colors)], alpha=0.35,
                       label=s if i == 0 else None)
                ax.scatter([x] * len(vals), vals, s=12, color=colors[j % len(colors)], zorder=3)
        ax.axhline(0, color='black', linewidth=0.8)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([LABELS.get(m, m) for m in methods], rotation=20, ha='right', fontsize=8)
        ax.set_ylabel('PSNR - scratch (dB)')
        ax.set_title(f'{setting} compression: paired difference to scratch (dots: seeds, bars: mean)')
        ax.legend(fontsize=8, ncol=len(sets))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reported_curves(rows, seeds):
    """Each method's learning curves on ``seeds`` only (label -> list of curves), so that every line of a
    setting's plot averages the same seeds: the extra seeds of unresolved comparisons would otherwise mix
    three-seed and five-seed means in one figure.

    Args:
        rows (dict): Method -> seed -> run record.
        seeds (list[int]): The seeds to average (the reported seeds).
    """
    return {LABELS.get(m, m): [rows[m][k].get('curve') or [] for k in seeds if k in rows[m]]
            for m in METHODS if m in rows}


def plot_curves(curves, title, path):
    """Validation PSNR against iteration, the mean over seeds per label (``curves``: label -> list of curves);
    left the whole run, right its second half."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for label, runs in curves.items():
        runs = [[p for p in c if 'val_psnr' in p] for c in runs]
        runs = [c for c in runs if c]
        if not runs:
            continue
        length = min(len(c) for c in runs)
        iters = [runs[0][i]['iter'] for i in range(length)]
        mean = [sum(c[i]['val_psnr'] for c in runs) / len(runs) for i in range(length)]
        for ax, lo in zip(axes, (0, length // 2)):
            ax.plot(iters[lo:], mean[lo:], marker='.', markersize=3, label=f'{label} ({len(runs)})')
    for ax, part in zip(axes, ('whole run', 'second half')):
        ax.set_xlabel('iteration')
        ax.set_ylabel('validation PSNR (dB), mean over seeds')
        ax.set_title(part, fontsize=9)
        ax.grid(alpha=0.3)
    if axes[0].lines:  # records without curves (older runs) leave the plot empty: no legend to draw
        axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
