"""Export a distilled student: BasicSR .pth, safetensors and/or ONNX (mmrazor's "export" step).

Thin wrapper of ``mixprior_plugin.export`` (also installed as ``mixprior-export``); see
docs/export.md. The .pth holds ``{'params': state_dict}`` that BasicSR's own arch (``network_g``
of the option file) loads with ``strict=True``: no teacher, connector or mixer weights.

Examples::

    python tools/export_student.py -opt options/train/MiPKD/train_MiPKD_EDSR_x4.yml \\
        --ckpt experiments/MiPKD_EDSR_x4/models/net_g_latest.pth -o student_x4.pth
    python tools/export_student.py -opt X.yml --ckpt net_g_250000.pth -o student --formats pth safetensors onnx
    python tools/export_student.py -opt rcan.yml --ckpt net_g_latest.pth -o rcan --formats safetensors \\
        --rcan-layout original
"""

from mixprior_plugin.export import STUDENT_PREFIXES, export_student, student_state_dict  # noqa: F401


def export(opt_path, ckpt_path, out_path, key=None, formats=None, **kwargs):
    """Export the student to ``out_path`` (its extension picks the format); returns its parameter count."""
    return export_student(opt_path, ckpt_path, out_path, formats, key, **kwargs)['num_params']


def main(argv=None):
    from mixprior_plugin.export import main as export_main
    export_main(argv, prog='export_student')


if __name__ == '__main__':
    main()
