"""Strip a distillation checkpoint down to the student (mmrazor's "export" step).

Writes ``{'params': state_dict}`` that BasicSR's own arch (``network_g`` of the option file)
loads with ``strict=True``: no teacher, connector or mixer weights. Prints the parameter count.

Examples::

    python tools/export_student.py -opt options/train/MiPKD/train_MiPKD_EDSR_x4.yml \\
        --ckpt experiments/MiPKD_EDSR_x4/models/net_g_latest.pth -o student_x4.pth
    python tools/export_student.py -opt X.yml --ckpt net_g_250000.pth --key params -o student.pth
"""
import argparse
import sys


# Prefixes under which other KD code bases keep the student inside one checkpoint.
STUDENT_PREFIXES = ('module.', 'net_g.', 'student.', 'model.student.')


def student_state_dict(ckpt, key, path):
    """The student's weights from a checkpoint, with foreign entries dropped and reported.

    Returns:
        tuple[dict, list[str], str]: State dict, dropped keys, key used.
    """
    from mixprior_plugin.utils.checkpoint import extract_state_dict
    state, used = extract_state_dict(ckpt, key, path)
    kept, dropped = {}, []
    has_prefixed = any(k.startswith(STUDENT_PREFIXES) for k in state)
    for k, v in state.items():
        for prefix in STUDENT_PREFIXES:
            if k.startswith(prefix):
                kept[k[len(prefix):]] = v
                break
        else:
            if has_prefixed:
                dropped.append(k)  # e.g. teacher./net_t./mixer. entries of a combined checkpoint
            else:
                kept[k] = v
    return kept, dropped, used


def export(opt_path, ckpt_path, out_path, key='params_ema'):
    """Export the student; returns its parameter count."""
    from basicsr.archs import build_network

    import mixprior_plugin  # noqa: F401  (registers archs)
    from mixprior_plugin.utils.checkpoint import atomic_save, load_checkpoint, load_state_checked
    from mixprior_plugin.utils.options import OptionError, yaml_load
    opt = yaml_load(opt_path)
    if 'network_g' not in opt:
        raise OptionError(f'{opt_path} has no network_g (the student arch)')
    net = build_network(dict(opt['network_g']))
    state, dropped, used = student_state_dict(load_checkpoint(ckpt_path), key, ckpt_path)
    load_state_checked(net, state, f'{ckpt_path} [{used}]', f'network_g of {opt_path}')
    clean = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_save({'params': clean}, out_path)
    num_params = sum(p.numel() for p in net.parameters())
    print(f'Exported {opt["network_g"]["type"]} student from {ckpt_path} [{used}] to {out_path}: '
          f'{num_params:,d} parameters' + (f' ({len(dropped)} non-student entries dropped)' if dropped else ''))
    return num_params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', required=True, help='option file with network_g (training or test options)')
    parser.add_argument('--ckpt', required=True, help='checkpoint holding the student (e.g. net_g_latest.pth)')
    parser.add_argument('-o', '--out', required=True, help='output .pth')
    parser.add_argument('--key', default='params_ema', help="param key to export (default params_ema, "
                        "falling back to params)")
    args = parser.parse_args(argv)
    try:
        export(args.opt, args.ckpt, args.out, args.key)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        sys.exit(f'export_student: {err}')


if __name__ == '__main__':
    main()
