"""Show the distillation points and extra modules a KD option file will build, without training.

For an option file whose ``model_type`` is KDModel or any subclass registered in BasicSR's
MODEL_REGISTRY (MiPKDModel, ...), this tool does what the model does before its first step:

1. validates the options with the model class's ``check_options`` (the same errors as training,
   printed, exit status 1);
2. builds the teacher with its weights (``build_frozen_teacher``: strict load) and the student
   (random init), and the stage adapters with ``build_adapters(opt['distill'], net_t, net_g)``,
   checked against each network's forward (unless ``distill.check_adapters: false``);
3. runs one real forward of each network on a random LR input with
   ``mixprior_plugin.stages.FeatureRecorder`` hooks and prints, per distillation point, the block
   indices of the teacher's and the student's stage and the feature shape (N, C, H, W) there;
4. builds the extra trainable modules with the class's ``extra_modules_for(opt, adapter_t,
   adapter_g, feat_terms)`` (feature normaliser, connectors, MiPKD's mixers, ...) and lists them
   with their parameter counts.

Block indices are 1-based and inclusive (``stage 1: blocks 1-8``). Archs with a ``window_size``
(SwinIR) get the LR size rounded up to a multiple of it.

Examples::

    python tools/inspect_stages.py -opt options/train/MiPKD/train_MiPKD_EDSR_x4.yml
    python tools/inspect_stages.py -opt kd.yml --lr-size 64 --json stages.json
"""
import argparse
import math
from collections import OrderedDict

from mixprior_plugin import options_schema
from mixprior_plugin.utils.tooling import count_buffers, count_params, load_options, run_and_report

REQUIRED_CLASSMETHODS = ('check_options', 'feat_terms_for', 'uses_features_for', 'extra_modules_for')


def model_class(opt, opt_path):
    """The registered model class of ``opt['model_type']``; it must offer the KD classmethods."""
    from basicsr.utils.registry import MODEL_REGISTRY

    import mixprior_plugin  # noqa: F401  (registers the plugin's models)
    from mixprior_plugin.utils.options import OptionError
    name = opt.get('model_type')
    if not name:
        raise OptionError(f'{opt_path} has no model_type')
    try:
        cls = MODEL_REGISTRY.get(name)
    except KeyError as err:
        raise OptionError(f'model_type {name!r} of {opt_path} is not registered in BasicSR\'s MODEL_REGISTRY') from err
    missing = [m for m in REQUIRED_CLASSMETHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise OptionError(f'model_type {name} is not a distillation model (it lacks {", ".join(missing)}; '
                          'use KDModel or one of its subclasses)')
    return cls


def record(net, adapter, x):
    """Head, stage and output shapes of one real forward, through FeatureRecorder hooks."""
    import torch

    from mixprior_plugin.stages import FeatureRecorder
    recorder = FeatureRecorder(adapter)
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        recorder.remove()
    head = None if recorder.head is None else list(recorder.head.shape)  # GenericBodyAdapter records no head
    return OrderedDict(head_shape=head, output_shape=list(out.shape),
                       stages=[OrderedDict(stage=k + 1, blocks=[adapter.stage_blocks(k).start + 1,
                                                                adapter.stage_blocks(k).stop],
                                           shape=list(f.shape)) for k, f in enumerate(recorder.features)])


def window_of(arch, net):
    return arch.get('window_size') or getattr(net, 'window_size', None)


def inspect(opt_path, lr_size=48, device='cpu'):
    """Everything the tool prints, as a dict."""
    import torch

    from basicsr.archs import build_network

    from mixprior_plugin.models.kd_model import build_frozen_teacher
    from mixprior_plugin.stages import build_adapters, num_body_blocks
    from mixprior_plugin.utils.options import OptionError
    opt = load_options(opt_path)
    cls = model_class(opt, opt_path)
    cls.check_options(opt)
    if 'network_g' not in opt:
        raise OptionError(f'{opt_path} has no network_g (the student)')
    feat_terms = cls.feat_terms_for(opt)
    net_t = build_frozen_teacher(opt, device)
    net_g = build_network(dict(opt['network_g'])).to(device).eval()
    used = cls.uses_features_for(opt, feat_terms)
    distill = options_schema.settings(opt, 'distill', cls)

    multiple = 1
    for arch, net in ((opt['network_t'], net_t), (opt['network_g'], net_g)):
        window = window_of(arch, net)
        multiple = math.lcm(multiple, window) if window else multiple
    size = math.ceil(lr_size / multiple) * multiple
    info = OrderedDict(option_file=opt_path, model_type=opt['model_type'], lr_size=lr_size, input_size=size,
                       uses_features=used, feat_terms=[OrderedDict(type=t.__class__.__name__,
                                                                   loss_weight=getattr(t, 'loss_weight', None))
                                                       for t in feat_terms])
    adapter_t = adapter_g = None
    note = None
    try:
        adapter_t, adapter_g = build_adapters(distill, net_t, net_g)
        if used and distill['check_adapters']:
            adapter_t.check_matches_forward()
            adapter_g.check_matches_forward()
    except OptionError as err:
        if used:
            raise
        note = f'no stage boundaries: {err}'
    x = torch.rand(1, adapter_t.in_channels if adapter_t else 3, size, size, device=device)
    for side, net, adapter, arch in (('teacher', net_t, adapter_t, opt['network_t']),
                                     ('student', net_g, adapter_g, opt['network_g'])):
        entry = OrderedDict(type=arch['type'], params=count_params(net))
        if adapter is not None:
            entry.update(num_blocks=len(adapter.blocks), channels=adapter.channels, adapter=type(adapter).__name__,
                         stage_ends=list(adapter.stage_ends))
            entry.update(record(net, adapter, x))
        else:
            try:
                entry['num_blocks'] = num_body_blocks(net, distill[f'adapter_{side[0]}'])
            except OptionError:
                pass
        info[side] = entry
    if used:
        extra = cls.extra_modules_for(opt, adapter_t, adapter_g, feat_terms)
    else:
        extra = cls.extra_modules_for(opt, None, None, feat_terms)
    info['extra_params'] = count_params(extra)
    info['extra_modules'] = [
        OrderedDict(name=name, type=type(m).__name__, params=count_params(m),
                    buffers=count_buffers(m))
        for name, m in extra.named_modules() if name and name.count('.') <= 1]
    # every plugin option the run will use, defaults filled in from the schema
    info['settings'] = OrderedDict((section, options_schema.settings(opt, section, cls))
                                   for section in cls.EXTRA_SECTIONS)
    info['note'] = note if note else (None if used else 'this configuration records no stage features (no '
                                      'distill section, no train.feat_opt): the boundaries are shown for '
                                      'reference only')
    return info


def shape_str(shape):
    return '-' if shape is None else '(' + ', '.join(map(str, shape)) + ')'


def report(info):
    t, g = info['teacher'], info['student']
    size = info['input_size']
    lines = [f'{info["option_file"]}: model_type {info["model_type"]}, LR input {size}x{size}'
             + (f' (asked {info["lr_size"]}, rounded up to the window size)'
                if info['input_size'] != info['lr_size'] else ''),
             'feature terms: ' + (', '.join(f'{ft["type"]} (weight {ft["loss_weight"]})' for ft in info['feat_terms'])
                                  or 'none')]
    for side in ('teacher', 'student'):
        e = info[side]
        lines.append(f'{side}: {e["type"]}, {e["params"]:,d} parameters'
                     + (f', {e["num_blocks"]} body blocks' if 'num_blocks' in e else '')
                     + (f', {e["channels"]} channels ({e["adapter"]})' if 'channels' in e else ''))
    if 'stages' in t:
        head = ['point', 'teacher blocks', 'teacher feature', 'student blocks', 'student feature']
        lines += ['', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head),
                  f'| head | - | {shape_str(t["head_shape"])} | - | {shape_str(g["head_shape"])} |']
        for st, sg in zip(t['stages'], g['stages']):
            lines.append(f'| {st["stage"]} | {st["blocks"][0]}-{st["blocks"][1]} | {shape_str(st["shape"])} | '
                         f'{sg["blocks"][0]}-{sg["blocks"][1]} | {shape_str(sg["shape"])} |')
        lines.append(f'| output | - | {shape_str(t["output_shape"])} | - | {shape_str(g["output_shape"])} |')
    if info['note']:
        lines += ['', f'note: {info["note"]}']
    lines += ['', f'extra modules ({info["model_type"]}.extra_modules_for): {info["extra_params"]:,d} trainable '
              'parameters' + ('' if info['extra_modules'] else ' (none)')]
    for m in info['extra_modules']:
        indent = '  ' * (1 + m['name'].count('.'))
        lines.append(f'{indent}{m["name"]}: {m["type"]}, {m["params"]:,d} params'
                     + (f', {m["buffers"]:,d} buffer values' if m['buffers'] else ''))
    for section, values in info.get('settings', {}).items():
        lines.append(f'{section} (defaults filled in): ' + ', '.join(f'{k}={v}' for k, v in values.items()))
    lines.append(f'student + extra modules: {g["params"] + info["extra_params"]:,d} trainable parameters; '
                 f'student/teacher parameters {g["params"] / max(t["params"], 1):.3f}')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', '--opt', required=True, help='KD option file (model_type KDModel or a subclass)')
    parser.add_argument('--lr-size', type=int, default=48, help='square LR input of the probe forward (default 48)')
    parser.add_argument('--device', default='cpu', help='device of the probe forward (default cpu)')
    parser.add_argument('--json', help='also write the result as JSON to this file')
    args = parser.parse_args(argv)
    if args.lr_size < 1:
        parser.error('--lr-size must be positive')
    return run_and_report('inspect_stages', lambda: inspect(args.opt, args.lr_size, args.device), report, args.json)


if __name__ == '__main__':
    main()
