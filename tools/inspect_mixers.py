"""Does a trained MiPKD run's Feature Prior Mixer use the student at all? A look inside the mixers.

The FPM decodes the mixed latent ``Z_M = I * Z_T + (1 - I) * Z_S`` back to the teacher feature. A
decoder that rebuilds ``F_T`` from the teacher half alone would give the student no lesson (the
shortcut that ``mixer.detach_teacher_latent`` is meant to remove). For a trained run this tool
measures, per distillation point, on LR patches of held-out images and one fixed mask per point:

* ``L_FPM`` (L1, as trained) with the true student latent, with the student latent zeroed and
  with the student latent of another image (the batch rolled by one): when the decoder relies on
  the student, the last two are clearly larger than the first;
* the same three divided by the mean ``|F_T|`` (relative errors);
* the auto-encoders' relative errors per side, ``|D(E(F)) - F|_1 / mean |F|`` for teacher and student;
* the realised mask (share of latent elements taken from the teacher).

A run whose FPM term is off (``train.fpm_opt.loss_weight: 0``, the ``bpm_only`` ablation) is refused: its FPM
decoder was never trained. Features are normalised with the run's stored running scale (nothing is updated);
the teacher is the run's own (``path.pretrain_network_t``), the student and the mixers its saved weights.

Examples::

    # a benchmark run record (options, EMA student and mixers beside it)
    python tools/inspect_mixers.py --record benchmarks/results/bench_converged/runs/depth/MiPKD_seed0.json \\
        --images datasets/BSD200/HR --num-images 10
    # a mixprior-train run
    python tools/inspect_mixers.py -opt options/train/MiPKD/my_run.yml \\
        --student experiments/x/models/net_g_latest.pth --extra experiments/x/models/net_extra_latest.pth \\
        --images datasets/Set14/HR
"""
import argparse
import json
import os
import tempfile

from mixprior_plugin import options_schema
from mixprior_plugin.utils.tooling import load_options, run_and_report, training_options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class InspectError(ValueError):
    """A mistake in the arguments, the record or the option file, reported as one line."""


def run_inputs(record=None, opt_path=None, student=None, extra=None):
    """``(options, student weights, mixer weights, label)`` of a benchmark record or of an option file."""
    if record is not None:
        if not os.path.isfile(record):
            raise InspectError(f'Run record not found: {record}')
        rec = json.load(open(record))
        if rec.get('options', {}).get('model_type') != 'MiPKDModel':
            raise InspectError(f'{record} is a {rec.get("method")} run, not MiPKD: it has no mixers')
        out = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(record))))
        if not rec.get('extra_weights'):
            raise InspectError(f'{record} has no extra_weights (its mixers were not kept)')
        return rec['options'], os.path.join(out, rec['weights']), os.path.join(out, rec['extra_weights']), \
            os.path.relpath(record)
    if opt_path is None or student is None or extra is None:
        raise InspectError('Give --record, or -opt with --student and --extra')
    opt = load_options(opt_path, plain=True)
    if opt.get('model_type') != 'MiPKDModel':
        raise InspectError(f'{opt_path}: model_type is {opt.get("model_type")!r}, not MiPKDModel')
    return opt, student, extra, os.path.relpath(opt_path)


def build_trained_model(opt, student, extra, device):
    """The MiPKD model of ``opt`` with the saved student (EMA weights where present) and mixers loaded."""
    from basicsr.models import build_model

    import mixprior_plugin  # noqa: F401  (registers the models)
    from mixprior_plugin.utils.checkpoint import extract_state_dict, load_checkpoint, load_state_checked
    teacher = options_schema.value(opt, 'path', 'pretrain_network_t')
    if teacher and not os.path.isabs(teacher) and not os.path.isfile(teacher):
        teacher = os.path.join(REPO, teacher)  # records name the teacher relative to the repository
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(training_options(opt, device, tmp, teacher_weights=teacher))
    for net, path, label in ((model.get_bare_model(model.net_g), student, 'the student'),
                             (model.get_bare_model(model.net_extra), extra, 'the mixers (net_extra)')):
        if not os.path.isfile(path):
            raise InspectError(f'Weights of {label} not found: {path}')
        state, used = extract_state_dict(load_checkpoint(path), 'params_ema' if net is not model.get_bare_model(
            model.net_extra) else 'params', path)
        load_state_checked(net, state, f'{path} [{used}]', label)
    model.net_g.eval()
    model.net_extra.eval()
    return model


def lr_patches(images, num_images, patch, scale):
    """Central LR patches ``(N, 3, patch, patch)`` in [0, 1] of the first ``num_images`` HR images of a folder."""
    import torch

    from basicsr.utils import img2tensor

    from mixprior_plugin.utils.image_io import hr_lr_pair, list_images
    if not os.path.isdir(images):
        raise InspectError(f'Image folder not found: {images}')
    paths = sorted(list_images(images))[:num_images]
    if len(paths) < 2:
        raise InspectError(f'{images}: need at least 2 images (the "other image" test), found {len(paths)}')
    out = []
    for p in paths:
        lr = hr_lr_pair(p, scale)[1]
        h, w = lr.shape[:2]
        if min(h, w) < patch:
            raise InspectError(f'{p}: its LR image ({w}x{h}) is smaller than --patch {patch}')
        y, x = (h - patch) // 2, (w - patch) // 2
        out.append(img2tensor(lr[y:y + patch, x:x + patch].astype('float32') / 255., bgr2rgb=True, float32=True))
    return torch.stack(out), paths


def mixer_table(model, lq, seed=0):
    """Per-point measurements (see the module docstring) for LR batch ``lq``."""
    import torch
    with torch.no_grad():
        return _mixer_table(model, lq, seed)


def _mixer_table(model, lq, seed):
    import torch
    from torch.nn import functional as F
    lq = lq.to(model.device)
    teacher = model.run_teacher(lq)
    _, _, feats_s = model.student_forward(lq)
    norm, mixers = model.net_extra['feat_norm'], model.net_extra['mixers']
    f_ts, f_ss = norm(teacher['feats'], 't'), norm(feats_s, 's')
    gen = torch.Generator(device='cpu').manual_seed(seed)
    rows = []
    for k, (mixer, f_t, f_s) in enumerate(zip(mixers, f_ts, f_ss)):
        z_t, z_s = mixer.encode(f_t, 't'), mixer.encode(f_s, 's')
        torch.manual_seed(int(torch.randint(2**31 - 1, (1, ), generator=gen)))  # the mixer draws from torch's RNG
        mask = mixer.mask(z_t, z_s)
        scale_t, scale_s = f_t.abs().mean(), f_s.abs().mean()

        def fpm(z_student):
            return F.l1_loss(mixer.decode(mask * z_t + (1 - mask) * z_student, 't'), f_t)

        true, zeroed, other = fpm(z_s), fpm(torch.zeros_like(z_s)), fpm(z_s.roll(1, dims=0))
        ae_t = F.l1_loss(mixer.decode(z_t, 't'), f_t) / scale_t
        ae_s = F.l1_loss(mixer.decode(z_s, 's'), f_s) / scale_s
        rows.append(dict(point=k + 1, l_fpm=float(true), l_fpm_student_zeroed=float(zeroed),
                         l_fpm_other_image=float(other), rel_fpm=float(true / scale_t),
                         rel_fpm_student_zeroed=float(zeroed / scale_t), rel_fpm_other_image=float(other / scale_t),
                         zeroed_over_true=float(zeroed / true), other_over_true=float(other / true),
                         ae_rel_teacher=float(ae_t), ae_rel_student=float(ae_s), mask_teacher_share=float(mask.mean()),
                         mean_abs_f_t=float(scale_t), mean_abs_f_s=float(scale_s)))
    return rows


def inspect(record=None, opt_path=None, student=None, extra=None, images=None, num_images=10, patch=48, seed=0):
    import torch
    if images is None:
        raise InspectError('Give --images: a folder of HR images nobody trained on (e.g. the validation split)')
    opt, student, extra, label = run_inputs(record, opt_path, student, extra)
    model = build_trained_model(opt, student, extra, torch.device('cpu'))
    from mixprior_plugin.distillers.kd_distiller import loss_weight
    if loss_weight(model.cri_fpm) == 0:
        # The FPM decoder of such a run never received a gradient: its ratios would describe random weights.
        raise InspectError(f'{label}: train.fpm_opt.loss_weight is 0 (the FPM is off, as in the bpm_only ablation), '
                           'so its FPM decoder was never trained and the table would measure an untrained decoder')
    lq, paths = lr_patches(images, num_images, patch, opt['scale'])
    rows = mixer_table(model, lq, seed)
    s = model.mixer_opt
    return dict(run=label, images=os.path.relpath(images), num_images=len(paths), patch=patch, seed=seed,
                mask=dict(type=s['mask_type'], ratio=s['mask_ratio']),
                detach_teacher_latent=s['detach_teacher_latent'], points=rows)


def report(info):
    lines = [f'{info["run"]}: {info["num_images"]} LR patches of {info["patch"]} px from {info["images"]}, mask '
             f'{info["mask"]["type"]} p={info["mask"]["ratio"]:g} (seed {info["seed"]})', '',
             '| point | L_FPM | student zeroed | other image\'s student | zeroed / true | other / true | '
             'AE rel. error T | AE rel. error S | mask (teacher share) |', '|---' * 9 + '|']
    for r in info['points']:
        lines.append(f'| {r["point"]} | {r["l_fpm"]:.4f} ({r["rel_fpm"]:.3f}) | {r["l_fpm_student_zeroed"]:.4f} '
                     f'({r["rel_fpm_student_zeroed"]:.3f}) | {r["l_fpm_other_image"]:.4f} '
                     f'({r["rel_fpm_other_image"]:.3f}) | {r["zeroed_over_true"]:.2f} | {r["other_over_true"]:.2f} | '
                     f'{r["ae_rel_teacher"]:.3f} | {r["ae_rel_student"]:.3f} | {r["mask_teacher_share"]:.3f} |')
    lines += ['', 'L_FPM in the normalised feature space (in brackets: over the mean |F_T|). A ratio near 1 means the '
              'decoder ignores the student\'s latent; well above 1, it relies on it.']
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--record', help='a run record of tools/benchmark.py (runs/<setting>/<method>_seed<s>.json)')
    parser.add_argument('-opt', '--opt', help='training option file of a MiPKD run (with --student and --extra)')
    parser.add_argument('--student', help='the student\'s weights (params_ema, else params)')
    parser.add_argument('--extra', help='the run\'s net_extra weights (mixers and feature scales)')
    parser.add_argument('--images', help='folder of HR images (LR patches are cut from their bicubic downscales)')
    parser.add_argument('--num-images', type=int, default=10, help='images used (default 10)')
    parser.add_argument('--patch', type=int, default=48, help='LR patch side (default 48)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the masks (default 0)')
    parser.add_argument('--json', help='also write the result as JSON to this file')
    args = parser.parse_args(argv)
    for key in ('num_images', 'patch'):
        if getattr(args, key) < 1:
            parser.error(f'--{key.replace("_", "-")} must be >= 1, got {getattr(args, key)}')
    return run_and_report('inspect_mixers', lambda: inspect(args.record, args.opt, args.student, args.extra,
                                                             args.images, args.num_images, args.patch, args.seed),
                          report, args.json)


if __name__ == '__main__':
    main()
