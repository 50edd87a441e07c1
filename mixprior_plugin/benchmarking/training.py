"""Training one benchmark run in memory (the project's models, as mixprior-train runs them), its learning curve,
weights and evaluation; the profile's teacher."""
import os
import time

import torch
from tqdm import tqdm

from basicsr.models import build_model
from basicsr.utils import set_random_seed

from mixprior_plugin.evaluation import BICUBIC, Method, build_method, evaluate
from mixprior_plugin.utils.checkpoint import atomic_save
from mixprior_plugin.utils.tooling import write_json
from .data import tensor_sha
from .profiles import REPO, prepare_model_options
from .report import plot_curves


def train(opt, data, batch, device, label='', max_steps=None, validator=None, curve_points=0):
    """Train one run in memory.

    Args:
        validator (ValidationCurve | None): Scores the EMA student for the learning curve.
        curve_points (int): Points of the learning curve (every ``iters // curve_points`` iterations: the
            mean of each logged loss term since the last point, the learning rate and, with a validator,
            the validation PSNR of the EMA weights). 0: no curve.

    Returns:
        tuple: (model, seconds of training without the curve's validation, mean step ms, pairing dict with
        ``init_sha`` and ``first_batch_sha``, curve list).
    """
    set_random_seed(opt['manual_seed'])  # as parse_options: same seed, same student initialisation
    model = build_model(opt)
    pairing = dict(init_sha=tensor_sha(model.get_bare_model(model.net_g).state_dict().values()))
    generator = torch.Generator().manual_seed(opt['manual_seed'])
    iters = max_steps or opt['train']['total_iter']
    curve, sums, count = [], {}, 0
    every = max(iters // curve_points, 1) if curve_points else 0
    start, val_seconds = time.time(), 0.0
    bar = tqdm(range(1, iters + 1), desc=label, mininterval=30, disable=max_steps is not None)
    for it in bar:
        lq, gt = data.batch(batch, generator)
        if it == 1:
            pairing['first_batch_sha'] = tensor_sha([lq, gt])
        model.update_learning_rate(it, warmup_iter=opt['train'].get('warmup_iter', -1))
        model.feed_data(dict(lq=lq, gt=gt))
        model.optimize_parameters(it)
        if every:
            count += 1
            for k, v in model.log_dict.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if it % every == 0 or it == iters:
                point = dict(iter=it, lr=model.get_current_learning_rate()[0],
                             **{k: round(v / count, 6) for k, v in sums.items()})
                if validator is not None:
                    t = time.time()
                    point['val_psnr'] = round(validator.psnr(model.get_bare_model(model.net_g_ema)), 4)
                    val_seconds += time.time() - t
                curve.append(point)
                bar.set_postfix({k: f'{v:.4g}' for k, v in point.items() if k.startswith(('l_', 'val'))})
                sums, count = {}, 0
        elif it % max(iters // 20, 1) == 0:
            bar.set_postfix({k: f'{v:.3g}' for k, v in model.log_dict.items() if k.startswith('l_')})
    if device.type == 'cuda':
        torch.cuda.synchronize()
    seconds = time.time() - start - val_seconds
    return model, seconds, 1000 * seconds / iters, pairing, curve


def plateau(curve, fraction=0.25):
    """Rise of the validation PSNR over the last ``fraction`` of a curve: ``(rise dB, from iter, to iter)``.

    Measured from the curve point nearest to the start of that last part to the final point; None without
    a validation curve.
    """
    points = [p for p in curve or [] if 'val_psnr' in p]
    if len(points) < 2:
        return None
    last = points[-1]['iter']
    start = min(points, key=lambda p: abs(p['iter'] - (1 - fraction) * last))
    return round(points[-1]['val_psnr'] - start['val_psnr'], 4), start['iter'], last


def save_weights(net, path, half=False, key='params_ema'):
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in net.state_dict().items()}
    atomic_save({key: state}, path)


def evaluate_net(label, ckpt, arch, roots, sets, device, scale):
    """PSNR/SSIM of one checkpoint on ``sets``; ``roots`` maps a set to the folder holding it."""
    method = Method(BICUBIC) if ckpt is None else build_method(label, ckpt, arch, scale, device)
    out = {}
    for s in sets:
        res = evaluate([method], roots[s], [s], scale, device)['sets'][s]['methods'][method.label]
        out[s] = dict(psnr=res['psnr'], ssim=res['ssim'])
    return out


def train_teacher(args, plan, t_opt, teacher_ckpt, data, validator, roots, eval_sets, device, this_meta):
    """Train the profile's teacher, store its EMA weights, evaluation, learning curve and plateau check beside
    the checkpoint (``<name>.json``, ``<name>.md``, ``<name>_curve.png``)."""
    scale = t_opt['scale']
    batch = t_opt['datasets']['train']['batch_size_per_gpu']
    lq_patch = t_opt['datasets']['train']['gt_size'] // scale
    iters = args.teacher_iters or t_opt['train']['total_iter']
    print(f'Training the teacher ({os.path.relpath(plan.teacher_file, REPO)}, {iters} iterations)', flush=True)
    model, seconds, _, _, curve = train(prepare_model_options(t_opt, iters, device, plan.out, None, 0, args.bf16,
                                                              args.channels_last), data, batch, device, 'teacher',
                                        validator=validator, curve_points=args.curve_points)
    ref = dict(name=os.path.basename(teacher_ckpt), params=sum(p.numel() for p in model.net_g.parameters()),
               iters=iters, seconds=round(seconds, 1), option_file=os.path.relpath(plan.teacher_file, REPO),
               command=this_meta['command'], git_commit=this_meta['git_commit'], device=this_meta['device'],
               curve=curve, plateau=plateau(curve))
    os.makedirs(os.path.dirname(teacher_ckpt), exist_ok=True)
    save_weights(model.net_g_ema, teacher_ckpt + '.tmp', half=args.half_teacher)
    del model
    ref['sets'] = evaluate_net('teacher', teacher_ckpt + '.tmp', t_opt['network_g'], roots, eval_sets, device, scale)
    stem = os.path.splitext(teacher_ckpt)[0]
    rise = ref['plateau']
    plateau_line = '' if rise is None else (
        f'\n\nPlateau check: the validation PSNR (EMA weights, the {args.val_count} held-out images) rose '
        f'{rise[0]:+.3f} dB from iteration {rise[1]} to {rise[2]} (the last quarter); learning curve in '
        f'{os.path.basename(stem)}_curve.png.')
    with open(stem + '.md', 'w') as f:
        f.write(f'# {os.path.basename(teacher_ckpt)}\n\nEDSR x{scale} teacher of the method benchmark '
                f'({args.profile} profile), trained by `{this_meta["command"]}` from {ref["option_file"]} '
                f'({iters} iterations, batch {batch}, LR patch {lq_patch}, {seconds:.0f} s on '
                f'{this_meta["device"]}, commit {this_meta["git_commit"]}), on T91 + BSD200 without the '
                f'{args.val_count} validation images. EMA weights (params_ema)'
                f'{", half precision" if args.half_teacher else ""}.{plateau_line}\n\n'
                '| set | PSNR | SSIM |\n|---|---|---|\n' +
                ''.join(f'| {s} | {v["psnr"]:.2f} | {v["ssim"]:.4f} |\n' for s, v in ref['sets'].items()))
    write_json(ref, stem + '.json')
    if curve:
        plot_curves({'teacher': [curve]}, f'Teacher {ref["name"]}: validation PSNR (EMA)', stem + '_curve.png')
    os.replace(teacher_ckpt + '.tmp', teacher_ckpt)
