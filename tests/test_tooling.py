"""The tools' shared helpers (mixprior_plugin.utils.tooling) and how tools are put together."""
import ast
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from helpers import REPO, write_yaml
from mixprior_plugin.utils import tooling

TOOLS = os.path.join(REPO, 'tools')
# Tools still to move to mixprior_plugin.utils.tooling (owned elsewhere right now); remove them from here when done.
PENDING = ()


def _tools():
    return sorted(f for f in os.listdir(TOOLS) if f.endswith('.py') and f not in PENDING)


def test_count_params_and_buffers():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert tooling.count_params(net) == 3 * 4 * 9 + 4 + 4 + 4
    net[1].requires_grad_(False)
    assert tooling.count_params(net, trainable=True) == 3 * 4 * 9 + 4
    assert tooling.count_params(list(net[0].parameters())) == 3 * 4 * 9 + 4
    assert tooling.count_buffers(net) == 4 + 4 + 1  # running mean, var, num_batches_tracked


def test_median_seconds_times_each_call_after_the_warmup():
    calls = []
    seconds = tooling.median_seconds(lambda: calls.append(1), runs=5, warmup=2)
    assert len(calls) == 7 and 0 <= seconds < 0.1
    with pytest.raises(ValueError, match='runs must be >= 1'):
        tooling.median_seconds(lambda: None, runs=0)
    net = nn.Conv2d(3, 3, 3, padding=1).train()
    assert tooling.forward_latency(net, torch.rand(1, 3, 8, 8), runs=2, warmup=0) > 0 and not net.training


def test_load_options_as_a_training_run_reads_them(tmp_path):
    path = write_yaml(str(tmp_path / 'kd.yml'), dict(name='kd', model_type='KDModel', network_teacher=dict(type='EDSR'),
                                                     path=dict(pretrain_network_g_teacher='t.pth'),
                                                     datasets=dict(train=dict(name='x'))))
    opt = tooling.load_options(path, plain=True)
    assert opt['network_t'] == dict(type='EDSR') and 'network_teacher' not in opt
    assert opt['path']['pretrain_network_t'] == 't.pth' and 'network_t' in opt['path']['ignore_resume_networks']
    run = tooling.training_options(opt, torch.device('cpu'), str(tmp_path / 'exp'), teacher_weights='other.pth')
    assert run['is_train'] and run['num_gpu'] == 0 and not run['dist'] and 'datasets' not in run
    assert run['path']['models'] == str(tmp_path / 'exp' / 'models')
    assert run['path']['pretrain_network_t'] == 'other.pth'
    assert opt['path']['pretrain_network_t'] == 't.pth'  # the input is left alone
    with pytest.raises(FileNotFoundError, match='Option file not found: .*missing.yml'):
        tooling.load_options(str(tmp_path / 'missing.yml'))


@pytest.mark.parametrize('name', _tools())
def test_tool_has_no_path_hack_and_imports_no_other_tool(name):
    source = open(os.path.join(TOOLS, name), encoding='utf-8').read()
    assert 'sys.path.insert' not in source and 'sys.path.append' not in source
    others = {os.path.splitext(f)[0] for f in os.listdir(TOOLS) if f.endswith('.py')} | {'tools'}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name.split('.')[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or '').split('.')[0]]
        else:
            continue
        assert not set(names) & others, f'{name} imports another tool: {names}'


def test_tools_run_as_scripts_from_any_folder(tmp_path):
    """`python tools/x.py` works without path hacks because the package is installed."""
    for name in ('inspect_stages.py', 'gen_options.py'):
        proc = subprocess.run([sys.executable, os.path.join(TOOLS, name), '--help'], cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert proc.returncode == 0 and 'usage:' in proc.stdout, proc.stderr[-2000:]
