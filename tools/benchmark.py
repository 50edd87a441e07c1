"""The method benchmark: one teacher, students in several compression settings, every method, paired seeds.

Three profiles of one design, each defined by its option files (written by tools/gen_options.py):

* ``--profile converged`` (options/train/BenchmarkConverged/): x2, EDSR 32x8 teacher trained to its
  validation plateau, EDSR 32x2 (depth), 8x8 (width, K = 4) and 16x2 (compounded) students trained until
  scratch's validation PSNR stops rising; weights chosen on selection seeds that are never reported;
  learning curves and MiPKD's mixers kept with every run. The study that answers "which method?".
* ``--profile cpu`` (options/train/BenchmarkCPU/): the short-schedule study (1000 student iterations): how
  fast each method speeds up early optimisation.
* ``--profile gpu`` (options/train/Benchmark/): x4, EDSR 128x16 teacher, 128x4 / 32x16 / 32x4 students.

Methods: every ``train_<method>_<setting>_x<scale>.yml`` of the profile (scratch, Logits-KD, FitNet, AT,
FAKD, RKD, MiPKD; MiPKD's ablations FPM-only / BPM-only / block path on a quarter of the batch; hypothesis
variants). Trained on T91 + BSD200 minus a held-out validation split (the last ``--val-count`` images of the
last training folder, never a test set), evaluated on Set5, Set14, BSD100, Urban100 (PSNR/SSIM on Y,
crop_border = scale) and on the validation split. Data: ``--data-root`` (default ``datasets/``) holds T91/HR,
BSD200/HR and the test sets as <Set>/HR (+ LR_bicubic/X<scale>).

Pairing: seed s gives every method the same student initialisation (the seed is set right before
the model is built, and KD models build the student first) and the same sequence of training
batches (a generator of its own, seeded with s, that nothing else draws from). Each run records a
hash of its initial student weights and of its first batch, so the pairing is checked, not assumed.

Loss weights: each method's feature-term weight (MiPKD's FPM weight; each baseline's feature weight) is
swept over ``--sweep-factors`` times its option-file value. With selection seeds (the converged profile),
every factor runs on the first selection seed, the option file's weight and that seed's best on the others;
the best mean wins unless its lead over the file's weight is within the seed-to-seed spread, and reported
seeds never take part. Without (the older profiles), the sweep runs on the first reported seed.
``--sweep-scope each`` chooses per setting (the converged profile's default), ``first`` on the first setting
for all (the cpu and gpu profiles' default). Variants (hypotheses)
run on the first selection seed, on the others only if they beat their base there, and at the reported
seeds only if they then lead by more than the base's seed spread.

More seeds where a comparison is unresolved (``--extra-seeds``, converged: 3 and 4): once a setting has every
main method at every reported seed, each verdict comparison (every method against scratch, Logits-KD and MiPKD)
whose mean paired difference is within two paired standard deviations on any set gives both of its methods the
extra seeds. The decision is taken once, on the reported seeds, so the added seeds cannot stop at a lucky moment;
the extra runs come after every setting's reported seeds.

Resumable: each run writes ``runs/<setting>/<method>_seed<s>[_w<factor>].json`` with the exact options it
used (and their hash), its learning curve (each logged loss term and the EMA student's validation PSNR at
``--curve-points`` points) and the student's EMA weights (MiPKD: its mixers beside them, ``*_extra.pth``); a
run whose record exists with the same options is skipped, so a killed command continues where it stopped.
Several processes share one plan: each claims the next ready run (a ``.claim`` file beside its record).
The report (results.md/json, paired_deltas.png, curves_<setting>.png) is rebuilt from whatever has finished.

Training runs the project's models (build_model / optimize_parameters, the code of mixprior-train)
on an in-memory data path: HR images and their MATLAB-bicubic LR versions are held as uint8
tensors and random aligned patches with flips/rotations are cut there.

Examples::

    # the converged study, two processes with one thread each (run both; they share the plan)
    python tools/benchmark.py --profile converged --out benchmarks/results/bench_converged &
    python tools/benchmark.py --profile converged --worker 1/2 --out benchmarks/results/bench_converged &
    # report only (after or during the runs), with a quiet step-time measurement
    python tools/benchmark.py --profile converged --report-only --out benchmarks/results/bench_converged
    python tools/benchmark.py --profile converged --time-steps 30 --out benchmarks/results/bench_converged
    # GPU profile
    python tools/benchmark.py --profile gpu --bf16 --out benchmarks/results/bench_gpu
    # smoke test (tiny nets, a few iterations, two seeds)
    python tools/benchmark.py --smoke --train-dirs X/HR --test-root Y --sets Tiny --out /tmp/smoke
"""
import argparse
import json
import os
import sys

from mixprior_plugin.benchmarking import METHODS, PROFILES, report, run, time_steps


def parse_args(argv=None):
    """The command line with the profile's defaults filled in."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='output folder (commit it under benchmarks/results/)')
    parser.add_argument('--profile', default='cpu', choices=sorted(PROFILES))
    parser.add_argument('--settings', nargs='+', help='default: all of the profile')
    parser.add_argument('--methods', nargs='+', choices=METHODS, help='default: all with an option file')
    parser.add_argument('--seeds', nargs='+', type=int, help='reported seeds (default: the profile\'s)')
    parser.add_argument('--selection-seeds', nargs='*', type=int,
                        help='seeds of the weight sweep and the variants, never reported (default: the profile\'s; '
                        'none: the sweep runs on the first reported seed)')
    parser.add_argument('--extra-seeds', nargs='*', type=int,
                        help='reported seeds added, after every setting has its reported seeds, for the methods of '
                        'a comparison that stayed within two paired standard deviations on them (default: the '
                        'profile\'s: 3 4 for converged; none: no extra seeds)')
    parser.add_argument('--sweep-factors', nargs='+', type=float,
                        help='factors of the feature-term weight tried on the validation split (1 alone: no sweep; '
                        'default: the profile\'s)')
    parser.add_argument('--sweep-scope', choices=('first', 'each'),
                        help='sweep on the first setting and use its choice everywhere, or sweep and choose per '
                        'setting (default: the profile\'s: each for converged, first for cpu and gpu)')
    parser.add_argument('--data-root', default='datasets',
                        help='folder holding T91/HR, BSD200/HR and the test sets (default: datasets/)')
    parser.add_argument('--train-dirs', nargs='+', help='HR training folders (default: <data-root>/T91/HR '
                        '<data-root>/BSD200/HR; the validation split comes from the last)')
    parser.add_argument('--val-count', type=int, default=10, help='images of the last training folder held out')
    parser.add_argument('--test-root', help='folder with <Set>/HR (+ LR_bicubic/X<scale>); default: --data-root')
    parser.add_argument('--sets', nargs='+', default=['Set5', 'Set14', 'BSD100', 'Urban100'])
    parser.add_argument('--teacher-ckpt', help='teacher weights (default: the option files\' pretrain_network_t; '
                        'trained and stored there when missing)')
    parser.add_argument('--iters', type=int, help='student iterations (default: the option files\')')
    parser.add_argument('--teacher-iters', type=int, help='teacher iterations (default: its option file\'s)')
    parser.add_argument('--half-teacher', action='store_true', help='store the teacher in half precision')
    parser.add_argument('--threads', type=int, help='torch threads per process (default: the profile\'s)')
    parser.add_argument('--worker', default='0/1', help='i/n: process i of n (0 trains the teacher and the '
                        'references; all take the next ready run of the shared plan)')
    parser.add_argument('--data-workers', type=int, help='processes for the LR downscaling')
    parser.add_argument('--bf16', action='store_true', help='train.amp: bf16 in every run (GPU)')
    parser.add_argument('--channels-last', action='store_true', help='train.channels_last: true in every run')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu'))
    parser.add_argument('--time-limit', type=float, help='seconds after which no new run starts')
    parser.add_argument('--time-steps', type=int, help='measure step times (this many steps per method) and exit')
    parser.add_argument('--report-only', action='store_true', help='only assemble the report from the records')
    parser.add_argument('--teacher-only', action='store_true', help='train (or check) the teacher, then stop')
    parser.add_argument('--curve-points', type=int,
                        help='learning-curve points per run (validation PSNR and mean loss terms; 0: none; '
                        'default: the profile\'s)')
    parser.add_argument('--smoke', action='store_true', help='tiny nets, a few iterations (CPU test)')
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    args.seeds = args.seeds if args.seeds is not None else list(profile['seeds'])
    args.threads = args.threads if args.threads is not None else profile['threads']
    args.curve_points = args.curve_points if args.curve_points is not None else profile.get('curve_points', 0)
    args.sweep_factors = args.sweep_factors or list(profile['sweep_factors'])
    args.sweep_scope = args.sweep_scope or profile.get('sweep_scope', 'first')
    args.train_dirs = args.train_dirs or [os.path.join(args.data_root, 'T91', 'HR'),
                                          os.path.join(args.data_root, 'BSD200', 'HR')]
    args.test_root = args.test_root or args.data_root
    if not args.worker.count('/') == 1 or not all(v.isdigit() for v in args.worker.split('/')) or \
            int(args.worker.split('/')[0]) >= int(args.worker.split('/')[1]):
        parser.error(f'--worker must be i/n with 0 <= i < n, got {args.worker!r}')
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.smoke:
            args.iters = args.iters or 3
            args.teacher_iters = args.teacher_iters or 4
            args.seeds = args.seeds[:2]
        if args.time_steps:
            return time_steps(args)
        if args.report_only:
            text = report(os.path.abspath(args.out))
            print(text)
            return text
        text = run(args)
        print(text, flush=True)
        return json.load(open(os.path.join(os.path.abspath(args.out), 'results.json')))
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        sys.exit(f'benchmark: {err}')


if __name__ == '__main__':
    main()
