"""The committed option files: up to date, valid, and fair (same schedule and student per pair)."""
import glob
import os
import re
import subprocess
import sys
from collections import defaultdict

import pytest

from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

from helpers import REPO, load_tool
from mixprior_plugin.stages import build_adapters
from mixprior_plugin.utils.options import normalise_teacher_aliases, yaml_load
from mixprior_plugin.utils.registry import registry_lookup

FILES = sorted(glob.glob(os.path.join(REPO, 'options', 'train', '**', '*.yml'), recursive=True))
SHARED_KEYS = ('scale', 'manual_seed', 'datasets', 'network_g')
SHARED_TRAIN_KEYS = ('ema_decay', 'optim_g', 'scheduler', 'total_iter', 'warmup_iter', 'pixel_opt')


def test_option_files_match_the_generator():
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'gen_options.py'), '--check'],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert len(FILES) >= 103


@pytest.mark.parametrize('path', FILES, ids=[os.path.relpath(f, REPO) for f in FILES])
def test_option_file_is_valid(path):
    opt = yaml_load(path)
    model_cls = MODEL_REGISTRY.get(opt['model_type'])
    for key in ('network_g', 'network_t', 'network_d'):
        if key in opt:  # BasicSR registers SRVGGNetCompact as SRVGGNetCompact_basicsr; Registry.get finds both
            assert registry_lookup(ARCH_REGISTRY, opt[key]['type']) is not None
    for term in opt['train'].get('feat_opt') or []:
        assert term['type'] in LOSS_REGISTRY
    assert opt['val']['metrics']['psnr']['crop_border'] == opt['scale']
    assert opt['network_g'].get('upscale', opt['network_g'].get('scale')) == opt['scale']  # RRDBNet: scale
    if hasattr(model_cls, 'check_options'):
        normalise_teacher_aliases(opt)
        model_cls.check_options(opt, check_files=False)


PAIR_RE = re.compile(r'((EDSR|RCAN|SwinIR)_\w+?-\w+?_x\d)\.yml$')
BENCH_RE = re.compile(r'(Benchmark\w*)/train_\w+?_(depth|width|compounded)_x\d\.yml$')


def _groups():
    """Student option files grouped by teacher-student pair and scale (teachers have no pair)."""
    groups = defaultdict(list)
    for path in FILES:
        match = PAIR_RE.search(os.path.basename(path))
        bench = BENCH_RE.search(path)
        if match:
            groups[match.group(1)].append(path)
        elif bench:
            groups[f'{bench.group(1)}_{bench.group(2)}'].append(path)
    return groups


@pytest.mark.parametrize('stem,paths', sorted(_groups().items()), ids=sorted(_groups()))
def test_methods_share_schedule_data_and_student(stem, paths):
    opts = [yaml_load(p) for p in paths]
    ref = next(o for o, p in zip(opts, paths) if '_seed' not in os.path.basename(p))
    assert len(opts) >= 3  # Scratch, LogitsKD, MiPKD at least
    for opt, path in zip(opts[1:], paths[1:]):
        for key in SHARED_KEYS:
            if key == 'manual_seed' and '_seed' in os.path.basename(path):
                assert opt[key] != ref[key], path  # the noise-floor run: a second seed on purpose
                continue
            assert opt[key] == ref[key], (path, key)
        for key in SHARED_TRAIN_KEYS:
            assert opt['train'][key] == ref['train'][key], (path, key)
    teachers = {str(o.get('network_t')) for o in opts if 'network_t' in o}
    assert len(teachers) == 1


ARCHS_X4 = sorted((PAIR_RE.search(p).group(1), p) for p in FILES
                  if os.path.basename(p).startswith('train_MiPKD_') and p.endswith('_x4.yml') and
                  os.path.basename(os.path.dirname(p)) == 'MiPKD')


@pytest.mark.parametrize('pair,path', ARCHS_X4, ids=[a for a, _ in ARCHS_X4])
def test_paper_pairs_build_and_split_into_stages(pair, path):
    """Full-size teacher and student of each paper pair build, and their stage adapters reproduce
    each network's forward."""
    opt = yaml_load(path)
    net_t, net_g = build_network(opt['network_t']), build_network(opt['network_g'])
    adapter_t, adapter_g = build_adapters(opt['distill'], net_t, net_g)
    assert adapter_t.num_stages == adapter_g.num_stages == opt['distill']['num_stages']
    adapter_t.check_matches_forward()
    adapter_g.check_matches_forward()


def test_benchmark_variants_change_their_base_run():
    """Every hypothesis variant's file trains something its base method's file does not; a variant that would
    repeat its base run (C_z = C_T where the student is as wide as the teacher: the default C_z is C_S) is
    refused, naming the variant and the setting."""
    gen = load_tool('gen_options')
    files = gen.benchmark_options('converged')
    variants = gen.BENCH_PROFILES['converged']['variants']
    checked = 0
    for name, (base, _, settings) in variants.items():
        for setting in settings:
            variant_opt, base_opt = files[f'train_{name}_{setting}_x2'][1], files[f'train_{base}_{setting}_x2'][1]
            assert not gen.same_run(variant_opt, base_opt), (name, setting)
            checked += 1
    assert checked == len(variants)
    variants['MiPKD_latent_teacher_width'] = variants['MiPKD_latent_teacher_width'][:2] + (('depth', ), )
    with pytest.raises(ValueError, match='MiPKD_latent_teacher_width changes nothing in the depth setting'):
        gen.benchmark_options('converged')
