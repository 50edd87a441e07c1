"""Parameters, FLOPs and latency of SR archs at a given LR input size.

* Parameters: all parameters of the built arch (random init; no weights needed).
* FLOPs: ``mmengine.analysis.FlopAnalyzer`` (fvcore's counter) on one forward. Like fvcore it
  counts one fused multiply-add as one FLOP, so the figure is what SR papers call Multi-Adds /
  MACs. Pooling counts one per input element; ops it has no formula for (element-wise adds,
  activations, pixel_shuffle, softmax) count 0 and are listed in the JSON (``uncounted_ops``,
  with ``flops_by_operator``); convolutions, linear layers and matmuls dominate SR nets.
* Latency: ``torch.no_grad`` eval-mode forward of a random input, ``--warmup`` runs then the median
  of ``--runs`` timed runs (CUDA synchronised), on the CPU and, when available, the GPU
  (``--devices``). CPU figures depend on the thread count (``--threads``).
* Archs with a ``window_size`` (SwinIR) need LR sizes that are multiples of it: the input is
  padded up, as inference pads, and the table says so.

Archs: ``-opt`` takes an option file's ``network_g`` and, in a KD option file, ``network_t`` too
(teacher and student side by side, with the student/teacher ratios); ``--arch`` adds any arch as
``'{"type": "EDSR", ...}'``, ``LABEL={json}`` or a .json file (repeatable).

Examples::

    python tools/complexity.py -opt options/train/kd_edsr_x4.yml --lr-size 64
    python tools/complexity.py --arch '{"type": "EDSR", "num_in_ch": 3, "num_out_ch": 3, "upscale": 4}' \\
        --input-size 3 320 180 --runs 20 --json edsr.json
    python tools/complexity.py -opt kd.yml --arch big=teacher_arch.json --devices cpu --no-latency
"""
import argparse
import json
import math
import sys
from collections import OrderedDict

from mixprior_plugin.utils.tooling import count_params, forward_latency, write_json

NETWORK_LABELS = OrderedDict([('network_t', 'teacher'), ('network_g', 'student')])


class ComplexityError(ValueError):
    """Bad arguments or archs; the message names them."""


def archs_from_args(opt_path, arch_specs, networks):
    """[(label, arch dict)] from an option file's network keys and ``--arch`` specs."""
    from mixprior_plugin.utils.options import load_arch_spec, normalise_teacher_aliases, yaml_load
    archs = []
    if opt_path:
        opt = yaml_load(opt_path)
        if 'network_teacher' in opt or 'network_g_teacher' in opt:
            normalise_teacher_aliases(opt)
        keys = networks or [k for k in NETWORK_LABELS if k in opt]
        if not keys:
            raise ComplexityError(f'{opt_path} has neither network_g nor network_t')
        for key in keys:
            if key not in opt:
                raise ComplexityError(f'{opt_path} has no {key}')
            label = NETWORK_LABELS.get(key, key) if len(keys) > 1 else key
            archs.append((label, json.loads(json.dumps(opt[key]))))
    for i, spec in enumerate(arch_specs or []):
        label = None
        if not spec.lstrip().startswith('{') and '=' in spec:
            label, spec = spec.split('=', 1)
        arch = load_arch_spec(spec, '--arch')
        archs.append((label or f'{arch["type"]}#{i + 1}', arch))
    if not archs:
        raise ComplexityError('No arch: give -opt and/or --arch')
    labels = [a[0] for a in archs]
    if len(set(labels)) != len(labels):
        raise ComplexityError(f'Arch labels must be unique: {labels}')
    return archs


def build(arch):
    from basicsr.archs import build_network

    import mixprior_plugin  # noqa: F401  (registers the plugin's archs)
    try:
        net = build_network(dict(arch))
    except Exception as err:
        raise ComplexityError(f'Cannot build {arch}: {err.__class__.__name__}: {err}') from err
    return net.eval().requires_grad_(False)


def input_shape_for(arch, net, shape):
    """Input (C, H, W) padded up to the window size if the arch has one; returns (shape, note)."""
    window = arch.get('window_size') or getattr(net, 'window_size', None)
    c, h, w = shape
    if window and (h % window or w % window):
        ph, pw = math.ceil(h / window) * window, math.ceil(w / window) * window
        return (c, ph, pw), f'padded {h}x{w} -> {ph}x{pw} (window {window})'
    return (c, h, w), ''


def count_flops(net, x):
    """(FLOPs (MACs) by mmengine's FlopAnalyzer, FLOPs per operator, ops it could not count)."""
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(net, (x, ))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
    by_operator = {k: int(v) for k, v in analyzer.by_operator().items()}
    return int(analyzer.total()), by_operator, dict(analyzer.unsupported_ops())


def analyse(archs, shape, devices=('cpu', 'cuda'), runs=10, warmup=3, latency=True):
    """One row per arch: params, FLOPs, output shape and latency per device."""
    import torch
    from tqdm import tqdm
    available = [d for d in devices if d == 'cpu' or (d.startswith('cuda') and torch.cuda.is_available())]
    if latency and len(available) < len(devices):
        missing = ', '.join(sorted(set(devices) - set(available)))
        print(f'Latency on {", ".join(available) or "no device"} only: {missing} not available here', file=sys.stderr)
    devices = available
    rows = []
    for label, arch in tqdm(archs, desc='archs', unit='arch', disable=len(archs) < 2):
        net = build(arch)
        in_shape, note = input_shape_for(arch, net, shape)
        x = torch.rand(1, *in_shape)
        with torch.no_grad():
            out = net(x)
        flops, by_operator, unsupported = count_flops(net, x)
        row = OrderedDict(label=label, type=arch['type'], arch=arch, params=count_params(net),
                          flops=flops, flops_by_operator=by_operator, input_shape=[1, *in_shape],
                          output_shape=list(out.shape), note=note,
                          uncounted_ops=unsupported, latency_s=OrderedDict())
        if latency:
            for device in devices:
                dev_net, dev_x = net.to(device), x.to(device)
                row['latency_s'][device] = forward_latency(dev_net, dev_x, runs, warmup)
                net.to('cpu')
        rows.append(row)
    return rows


def human(n, unit=''):
    for div, suffix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
        if abs(n) >= div:
            return f'{n / div:.3f}{suffix}{unit}'
    return f'{n}{unit}'


def table(rows):
    devices = sorted({d for r in rows for d in r['latency_s']}, key=lambda d: (d != 'cpu', d))
    head = ['arch', 'type', 'params', 'FLOPs (MACs)', 'input', 'output'] + [f'latency {d} (ms)' for d in devices]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [r['label'], r['type'], f'{r["params"]:,d}', human(r['flops']),
                 'x'.join(map(str, r['input_shape'][1:])) + (' *' if r['note'] else ''),
                 'x'.join(map(str, r['output_shape'][1:]))]
        cells += [f'{r["latency_s"][d] * 1000:.2f}' if d in r['latency_s'] else '-' for d in devices]
        lines.append('| ' + ' | '.join(cells) + ' |')
    notes = [f'* {r["label"]}: {r["note"]}' for r in rows if r['note']]
    labels = [r['label'] for r in rows]
    if 'teacher' in labels and 'student' in labels:
        t, s = rows[labels.index('teacher')], rows[labels.index('student')]
        notes.append(f'student/teacher: params {s["params"] / t["params"]:.3f}, '
                     f'FLOPs {s["flops"] / max(t["flops"], 1):.3f}'
                     + ''.join(f', latency {d} {s["latency_s"][d] / t["latency_s"][d]:.3f}'
                               for d in devices if d in s['latency_s'] and d in t['latency_s']))
    notes.append('FLOPs: mmengine FlopAnalyzer, one multiply-add = 1 (Multi-Adds); element-wise ops not counted.')
    return '\n'.join(lines + [''] + notes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', '--opt', help='option file: network_g, and network_t when present (KD)')
    parser.add_argument('--networks', nargs='+', help='network keys of -opt to analyse (default: network_t and '
                        'network_g when present)')
    parser.add_argument('--arch', action='append', metavar='[LABEL=]JSON',
                        help='an arch as JSON, or a .json file (repeatable)')
    size = parser.add_mutually_exclusive_group()
    size.add_argument('--input-size', type=int, nargs=3, metavar=('C', 'H', 'W'), help='LR input size, e.g. 3 64 64')
    size.add_argument('--lr-size', type=int, help='square LR input with 3 channels (default 64)')
    parser.add_argument('--runs', type=int, default=10, help='timed runs per device (default 10; median reported)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed warm-up runs (default 3)')
    parser.add_argument('--devices', nargs='+', default=['cpu', 'cuda'],
                        help='latency devices (default: cpu and cuda; cuda is skipped when unavailable)')
    parser.add_argument('--threads', type=int, help='torch CPU threads for the latency (default: torch default)')
    parser.add_argument('--no-latency', action='store_true', help='parameters and FLOPs only')
    parser.add_argument('--json', help='also write the rows as JSON to this file')
    args = parser.parse_args(argv)
    shape = tuple(args.input_size) if args.input_size else (3, args.lr_size or 64, args.lr_size or 64)
    if min(shape) < 1 or args.runs < 1 or args.warmup < 0:
        parser.error('sizes and --runs must be positive, --warmup non-negative')
    try:
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        archs = archs_from_args(args.opt, args.arch, args.networks)
        rows = analyse(archs, shape, args.devices, args.runs, args.warmup, not args.no_latency)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        sys.exit(f'complexity: {err}')
    print(table(rows))
    if args.json:
        write_json(dict(input_size=list(shape), threads=torch.get_num_threads(), runs=args.runs, warmup=args.warmup,
                        rows=rows), args.json, announce=True)
    return rows


if __name__ == '__main__':
    main()
