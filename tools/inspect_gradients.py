"""Which loss term drives the student? The gradient norm of each term, before a long run.

For a training option file of a distillation model (KDModel, MiPKDModel or another subclass
whose ``train_step`` returns its loss dict), this tool builds the model as ``mixprior-train``
does (the options parsed and validated by the same ``parse_options``, the seed set from
``manual_seed``, ``basicsr.models.build_model``), draws a few batches from the file's training set
(or random LR/HR tensors with ``--random-data``), and for each batch runs one training forward
(teacher, then the model's ``train_step``: every term of its loss dict on one graph, so MiPKD's
random mask and route are shared by its terms) and takes, for each term separately, the gradient
on the student's parameters and on the extra modules (connectors, feature normaliser, mixers).
Nothing is updated, saved or created.

Printed per term, averaged over the batches: the term's weight (its loss module's
``loss_weight``), its value (already weighted), the L2 norm of its gradient on the student and on
the extra modules, and its share of the student's total gradient ``g = sum_t g_t``, defined as
``<g_t, g> / |g|^2``: the shares sum to 1, a term with a negative share pulls against the others.
Feature terms are easy to get wrong by 10x when features are normalised: this shows it in seconds.

Terms come from the model's own loss dict (``l_pix``, ``l_kd``, the feature terms such as
``l_fitnet``; MiPKD's ``l_fpm``, ``l_bpm``, ``l_ae``); a term whose weight is 0 is skipped by the
model and absent here. ``--iter`` is the iteration the terms see (MiPKD's ``ae_warmup_iters``
switches l_fpm and l_bpm off before it). The student is as built at iteration 0
(``path.pretrain_network_g`` loaded when set; ``path.resume_state`` is not applied).

Examples::

    python tools/inspect_gradients.py -opt options/train/MiPKD/train_MiPKD_EDSR_C256B32-C64B32_x4.yml
    python tools/inspect_gradients.py -opt kd.yml --teacher-random --random-data --batch-size 4 --json grads.json
"""
import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile
from collections import OrderedDict

from mixprior_plugin import options_schema
from mixprior_plugin.utils.tooling import count_params, run_and_report

RANDOM_DATASET = 'InspectGradientsRandomPairs'


class InspectError(ValueError):
    """A mistake in the arguments or the option file, reported as one line."""


def register_random_dataset():
    """Register (once) the dataset ``--random-data`` puts in place of the training set.

    It yields uniform random LR/HR pairs, ``lq`` of shape ``(C, gt_size/scale, gt_size/scale)`` and
    ``gt`` of ``(C, gt_size, gt_size)``, sample i drawn from a generator seeded with ``seed + i``;
    it goes through BasicSR's build_dataset/build_dataloader like a real training set.
    """
    import torch
    from torch.utils import data

    from basicsr.utils.registry import DATASET_REGISTRY
    if RANDOM_DATASET in DATASET_REGISTRY:
        return

    class RandomPairs(data.Dataset):

        def __init__(self, opt):
            self.size, self.scale = opt['gt_size'], opt['scale']
            self.channels, self.seed, self.length = opt.get('channels', 3), opt.get('seed', 0), opt.get('length', 64)

        def __len__(self):
            return self.length

        def __getitem__(self, index):
            g = torch.Generator().manual_seed(self.seed + index)
            lr_size = self.size // self.scale
            return dict(lq=torch.rand(self.channels, lr_size, lr_size, generator=g),
                        gt=torch.rand(self.channels, self.size, self.size, generator=g), lq_path=f'random_{index}',
                        gt_path=f'random_{index}')

    RandomPairs.__name__ = RANDOM_DATASET
    DATASET_REGISTRY.register(RandomPairs)


def _plain(value):
    """Nested OrderedDicts (the safe loader's) as plain dicts and lists, for yaml.safe_dump."""
    return json.loads(json.dumps(value))


def _save_random_teacher(opt, folder):
    """Save a randomly initialised ``network_t`` (seed ``manual_seed``) under the teacher's param key."""
    import torch

    from basicsr.archs import build_network
    if 'network_t' not in opt:
        raise InspectError('--teacher-random: the option file has no network_t (nor network_teacher / '
                           'network_g_teacher)')
    torch.manual_seed(opt.get('manual_seed') or 0)
    state = build_network(dict(opt['network_t'])).state_dict()
    path = os.path.join(folder, 'random_teacher.pth')
    torch.save({'params': state, 'params_ema': state}, path)
    return path


def parse_training_options(opt_path, folder, teacher_random=False, random_data=False, cpu=False, batch_size=None):
    """The options ``mixprior-train -opt opt_path`` would train with, with this tool's overrides.

    The file (or, when an override is asked, a copy of it with the override in ``folder``) goes
    through BasicSR's ``parse_options`` with the plugin's fixes applied, exactly as the training
    entry point parses it: validation, teacher aliases, CPU fallback, seed.

    Args:
        opt_path (str): Training option file.
        folder (str): Temporary folder for the overridden copy and a random teacher.
        teacher_random (bool): Use a random teacher instead of ``path.pretrain_network_t``.
        random_data (bool): Replace the datasets with random LR/HR pairs of the training set's
            ``gt_size`` and ``batch_size_per_gpu`` (see :func:`register_random_dataset`).
        cpu (bool): Run on CPU (``num_gpu: 0``).
        batch_size (int | None): Override ``datasets.train.batch_size_per_gpu``.

    Returns:
        dict: Parsed options.
    """
    import yaml

    import mixprior_plugin  # noqa: F401  (registers archs, losses, models)
    from mixprior_plugin import basicsr_fixes
    from mixprior_plugin.utils.options import normalise_teacher_aliases, yaml_load
    if not os.path.isfile(opt_path):
        raise InspectError(f'Option file not found: {opt_path}')
    raw = _plain(yaml_load(opt_path))
    if not isinstance(raw, dict):
        raise InspectError(f'{opt_path} is not a mapping of options')
    normalise_teacher_aliases(raw)
    overridden = teacher_random or random_data or cpu or batch_size is not None
    if teacher_random:
        raw.setdefault('path', {})['pretrain_network_t'] = _save_random_teacher(raw, folder)
    if random_data:
        register_random_dataset()
        train_set = (raw.get('datasets') or {}).get('train') or {}
        scale = raw.get('scale') or 1
        arch = raw.get('network_g') or {}
        raw['datasets'] = dict(train=dict(
            name='random', type=RANDOM_DATASET, gt_size=train_set.get('gt_size') or 48 * scale,
            channels=arch.get('num_in_ch', arch.get('in_chans', 3)), seed=raw.get('manual_seed') or 0,
            batch_size_per_gpu=train_set.get('batch_size_per_gpu') or 4, num_worker_per_gpu=0,
            dataset_enlarge_ratio=1))
    if batch_size is not None:
        if 'train' not in (raw.get('datasets') or {}):
            raise InspectError(f'--batch-size: {opt_path} has no datasets.train (use --random-data)')
        raw['datasets']['train']['batch_size_per_gpu'] = batch_size
    if cpu:
        raw['num_gpu'] = 0
    path = opt_path
    if overridden:
        path = os.path.join(folder, os.path.basename(opt_path))
        with open(path, 'w', encoding='utf-8') as f:
            yaml.safe_dump(raw, f, sort_keys=False)

    basicsr_fixes.apply()
    parse_options = sys.modules['basicsr.train'].parse_options  # the wrapped one mixprior-train calls
    argv = sys.argv
    sys.argv = ['mixprior-train', '-opt', path]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # BasicSR prints 'Disable distributed.'
            opt, _ = parse_options(os.getcwd(), is_train=True)
    except (OSError, ValueError, KeyError) as err:
        raise InspectError(str(err).replace(path, opt_path)) from err
    finally:
        sys.argv = argv
    return opt


def term_weights(model):
    """{loss-dict name: weight} of the loss modules of the model and its distiller (``cri_<x>`` -> ``l_<x>``,
    feature terms)."""
    weights = {}
    for holder in (model, getattr(model, 'distiller', None)):
        for attr, value in (vars(holder) if holder is not None else {}).items():
            if attr.startswith('cri_') and value is not None and hasattr(value, 'loss_weight'):
                weights['l_' + attr[len('cri_'):]] = float(value.loss_weight)
    for i, term in enumerate(getattr(model, 'feat_terms', [])):
        weights[model.term_name(term, i)] = float(getattr(term, 'loss_weight', 1.0))
    return weights


def batches(opt, count):
    """``count`` batches of the training set (BasicSR's build_dataset and build_dataloader, no workers)."""
    from basicsr.data import build_dataloader, build_dataset
    if 'train' not in opt.get('datasets', {}):
        raise InspectError('the option file has no datasets.train (use --random-data)')
    dataset_opt = dict(opt['datasets']['train'], num_worker_per_gpu=0)  # a few batches: no workers
    dataset = build_dataset(dataset_opt)
    loader = build_dataloader(dataset, dataset_opt, num_gpu=opt['num_gpu'], dist=False, sampler=None,
                              seed=opt['manual_seed'])
    if len(loader) == 0:
        raise InspectError(f'the training set has {len(dataset)} samples, fewer than one batch')
    drawn = 0
    while drawn < count:
        for batch in loader:
            yield batch
            drawn += 1
            if drawn == count:
                return


def flat_norm(grads):
    """L2 norm of a list of gradients (None counts as zero)."""
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))


def add_grads(grad_lists):
    """Parameter-wise sum of several gradient lists (None where no list has a gradient)."""
    total = []
    for grads in zip(*grad_lists):
        present = [g for g in grads if g is not None]
        total.append(sum(present[1:], present[0]) if present else None)
    return total


def dot(a, b):
    return sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b) if x is not None and y is not None)


def term_gradients(model, batch, current_iter):
    """Per-term values and gradients of one training forward.

    Returns:
        tuple[OrderedDict, list, list]: {term: (value, student grads, extra grads)}, and the
        student's and extra modules' parameters.
    """
    import torch
    student = [p for p in model.get_bare_model(model.net_g).parameters() if p.requires_grad]
    extra = [p for p in model.get_bare_model(model.net_extra).parameters() if p.requires_grad]
    params = student + extra
    model.feed_data(batch)
    teacher = model.run_teacher(model.lq)
    losses, _ = model.train_step(model.lq, model.gt, teacher, current_iter)
    if not losses:
        raise InspectError('every loss weight is 0: the model has no term to inspect')
    out = OrderedDict()
    for name, loss in losses.items():
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        else:
            grads = [None] * len(params)
        out[name] = (float(loss.detach()), list(grads[:len(student)]), list(grads[len(student):]))
    return out, student, extra


def inspect(opt_path, num_batches=3, teacher_random=False, random_data=False, cpu=False, batch_size=None,
            current_iter=1):
    """Everything the tool prints, as a dict (see the module docstring)."""
    from basicsr.models import build_model
    with tempfile.TemporaryDirectory(prefix='inspect_gradients_') as folder:
        opt = parse_training_options(opt_path, folder, teacher_random, random_data, cpu, batch_size)
        model = build_model(opt)
    if not callable(getattr(model, 'train_step', None)) or not hasattr(model, 'net_extra'):
        raise InspectError(f'model_type {opt["model_type"]} is not a distillation model (no train_step returning '
                           'its loss dict): use KDModel, MiPKDModel or a subclass')
    weights = term_weights(model)
    rows = OrderedDict()
    per_batch_total = []
    for batch in batches(opt, num_batches):
        terms, student, extra = term_gradients(model, batch, current_iter)
        total_s = add_grads([g for _, g, _ in terms.values()])
        total_e = add_grads([e for _, _, e in terms.values()])
        total_sq = flat_norm(total_s) ** 2
        per_batch_total.append(dict(loss=sum(v for v, _, _ in terms.values()), grad_student=math.sqrt(total_sq),
                                    grad_extras=flat_norm(total_e)))
        for name, (value, g_s, g_e) in terms.items():
            row = rows.setdefault(name, OrderedDict(term=name, weight=weights.get(name), per_batch=[]))
            row['per_batch'].append(dict(loss=value, grad_student=flat_norm(g_s), grad_extras=flat_norm(g_e),
                                         share=dot(g_s, total_s) / total_sq if total_sq > 0 else 0.0))
    for row in rows.values():
        for key in ('loss', 'grad_student', 'grad_extras', 'share'):
            row[key] = sum(b[key] for b in row['per_batch']) / len(row['per_batch'])
    total = OrderedDict(term='total', **{k: sum(b[k] for b in per_batch_total) / len(per_batch_total)
                                          for k in ('loss', 'grad_student', 'grad_extras')})
    return OrderedDict(
        option_file=opt_path, model_type=opt['model_type'], device=str(model.device), iter=current_iter,
        batches=len(per_batch_total), data='random LR/HR pairs' if random_data else 'the training set',
        batch_size=opt['datasets']['train']['batch_size_per_gpu'],
        teacher='random' if teacher_random else options_schema.value(opt, 'path', 'pretrain_network_t'),
        student_params=count_params(student), extra_params=count_params(extra),
        terms=list(rows.values()), total=total)


def report(info):
    lines = [f'{info["option_file"]}: {info["model_type"]} on {info["device"]}, {info["batches"]} batches of '
             f'{info["batch_size"]} ({info["data"]}), teacher {info["teacher"]}, iteration {info["iter"]}',
             f'student {info["student_params"]:,d} parameters, extra modules {info["extra_params"]:,d}', '',
             '| term | weight | loss | grad norm (student) | grad norm (extras) | share of the student\'s gradient |',
             '|---|---|---|---|---|---|']
    for row in info['terms']:
        weight = '-' if row['weight'] is None else f'{row["weight"]:g}'
        lines.append(f'| {row["term"]} | {weight} | {row["loss"]:.4g} | {row["grad_student"]:.4g} | '
                     f'{row["grad_extras"]:.4g} | {row["share"]:.3f} |')
    t = info['total']
    lines.append(f'| total | - | {t["loss"]:.4g} | {t["grad_student"]:.4g} | {t["grad_extras"]:.4g} | 1 |')
    lines += ['', 'Values are means over the batches; share = <g_term, g_total> / |g_total|^2 on the student '
              '(the shares sum to 1; a negative share pulls against the other terms).']
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', '--opt', required=True, help='training option file of a KD model (KDModel, '
                        'MiPKDModel or a subclass)')
    parser.add_argument('--batches', type=int, default=3, help='number of batches (default 3)')
    parser.add_argument('--teacher-random', action='store_true',
                        help='a random teacher instead of path.pretrain_network_t (a dry look)')
    parser.add_argument('--random-data', action='store_true',
                        help='random LR/HR tensors (size and batch from datasets.train) instead of the training set')
    parser.add_argument('--batch-size', type=int, help='override datasets.train.batch_size_per_gpu')
    parser.add_argument('--iter', type=int, default=1, help='iteration the terms see (default 1)')
    parser.add_argument('--cpu', action='store_true', help='run on CPU (num_gpu: 0)')
    parser.add_argument('--json', help='also write the result as JSON to this file')
    args = parser.parse_args(argv)
    for key in ('batches', 'iter', 'batch_size'):
        value = getattr(args, key)
        if value is not None and value < 1:
            parser.error(f'--{key.replace("_", "-")} must be >= 1, got {value}')
    return run_and_report('inspect_gradients', lambda: inspect(args.opt, args.batches, args.teacher_random,
                                                                args.random_data, args.cpu, args.batch_size,
                                                                args.iter), report, args.json)


if __name__ == '__main__':
    main()
