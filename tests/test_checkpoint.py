"""mixprior_plugin.utils.checkpoint: atomic writes, checked loads (strict and non-strict), retried saves."""
import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import (
    REPO,
    TESTS,
    captured_log,
    eval_net,
    mipkd_options,
    run_cli,
    start_training,
    tiny_arch,
    wait_for_file,
    write_yaml,
)
from mixprior_plugin.utils.checkpoint import CheckpointMismatchError, atomic_save, load_checkpoint, load_state_checked
from mixprior_plugin.utils.options import OptionError

SCALE = 2


# ---- atomic writes: a process killed mid-write leaves the previous file ------------------------------------
def test_kill_during_atomic_write_keeps_previous_file(tmp_path):
    target = tmp_path / 'ckpt.pth'
    atomic_save({'params': {'w': torch.ones(3)}}, str(target))
    code = (f'import torch; from mixprior_plugin.utils.checkpoint import atomic_save; '
            f'atomic_save({{"params": {{"w": torch.zeros(160_000_000)}}}}, {str(target)!r})')
    proc = subprocess.Popen([sys.executable, '-c', code], env=dict(os.environ, PYTHONPATH=REPO))
    deadline = time.time() + 120
    while not glob.glob(str(tmp_path / 'ckpt.pth.*.tmp')):  # the big write has started
        assert proc.poll() is None and time.time() < deadline, 'the writer ended before it was killed'
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.equal(load_checkpoint(str(target))['params']['w'], torch.ones(3))


def test_kill_during_training_checkpoint_write_then_resume(tmp_path, tiny_data):
    opt_file = mipkd_options(tmp_path, tiny_data, 'midsave', 10)
    proc = start_training(opt_file, str(tmp_path),
                  env=dict(MIXPRIOR_TEST_SLOW_SAVE='30', MIXPRIOR_TEST_SLOW_SAVE_SUFFIX='.state'))
    states = tmp_path / 'experiments' / 'midsave' / 'training_states'
    models = tmp_path / 'experiments' / 'midsave' / 'models'
    wait_for_file(str(states / '5.state.writing'), proc)  # the 5th-iteration state is half-way
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (states / '5.state').exists() and glob.glob(str(states / '5.state.*.tmp'))
    # the models of iteration 5 were written whole (atomically) before the state
    assert load_checkpoint(str(models / 'net_g_5.pth'))['params']
    # nothing to resume from yet: auto-resume starts afresh and finishes
    proc = start_training(opt_file, str(tmp_path), extra_args=('--auto_resume', ))
    assert proc.wait(timeout=600) == 0, proc.stdout.read()[-3000:]
    assert load_checkpoint(str(states / '10.state'))['iter'] == 10


# ---- checked loads: what does not fit is refused, naming both shapes ---------------------------------------
def test_resume_refuses_checkpoint_that_does_not_fit(tmp_path, tiny_data):
    opt_file = mipkd_options(tmp_path, tiny_data, 'fit', 5)
    run_cli([os.path.join(TESTS, 'train_runner.py'), '-opt', opt_file], cwd=str(tmp_path),
            env=dict(PYTHONPATH=REPO))
    # same run name, wider student: the checkpoints of iteration 5 no longer fit
    import yaml
    opt = yaml.safe_load(open(opt_file))
    opt['network_g']['num_feat'] = 12
    opt['train']['total_iter'] = 10
    write_yaml(opt_file, opt)
    proc = run_cli([os.path.join(TESTS, 'train_runner.py'), '-opt', opt_file, '--auto_resume'], cwd=str(tmp_path),
                   env=dict(PYTHONPATH=REPO), check=False)
    assert proc.returncode != 0
    assert 'net_g_5.pth' in proc.stderr and 'does not fit EDSR' in proc.stderr
    assert 'conv_first.weight: network (12, 3, 3, 3) vs file (8, 3, 3, 3)' in proc.stderr
    # nothing was lost: the old checkpoints are untouched
    assert load_checkpoint(str(tmp_path / 'experiments' / 'fit' / 'training_states' / '5.state'))['iter'] == 5


@pytest.mark.bad_input
def test_non_strict_load_of_another_width_is_refused_naming_both_shapes(bad_case):
    teacher = eval_net(tiny_arch('EDSR', 't', SCALE))
    wider = eval_net(dict(tiny_arch('EDSR', 't', SCALE), num_feat=12)).state_dict()
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_checked(teacher, wider, 'teacher.pth', 'network_t (EDSR)', strict=False)
    message = bad_case.message(info.value)
    assert '\n' not in message
    assert 'teacher.pth fills only 1 of the 24 parameter tensors of network_t (EDSR) (0.0% of its parameters; ' \
        'a non-strict load needs 50%)' in message  # conv_last.bias (3 values) alone fits
    assert 'conv_first.weight: network (16, 3, 3, 3) vs file (12, 3, 3, 3)' in message
    # no name in common at all: the network keeps its initialisation, nothing is loaded
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    renamed = {f'model.{k}': v for k, v in teacher.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r'no tensor name in common \(network: conv_first.weight, '):
        load_state_checked(teacher, renamed, 'other.pth', strict=False)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


@pytest.mark.bad_input
def test_partial_non_strict_load_names_what_it_skipped_and_needs_half_the_network(bad_case):
    """BasicSR's fine-tuning recipe (x2 weights into an x4 EDSR, strict_load_g: false) loads, naming the rest."""
    x4 = eval_net(tiny_arch('EDSR', 'g', 4))
    x2 = eval_net(tiny_arch('EDSR', 'g', 2), seed=1).state_dict()
    with captured_log() as log:
        report = load_state_checked(x4, x2, 'x2.pth', 'network_g (EDSR)', strict=False)
    assert report['loaded'] == report['total'] - 2 and 0.5 < report['share'] < 1
    warning = [text for level, text in log if level == 'WARNING'][0]
    assert f'Non-strict load: {report["loaded"]} of {report["total"]} parameter tensors of network_g (EDSR) ' \
        'loaded' in warning and 'left as initialised: upsample.2.bias, upsample.2.weight' in warning, warning
    assert torch.equal(x4.state_dict()['body.1.conv2.weight'], x2['body.1.conv2.weight'])
    # the head alone is below half the network: refused
    head = {k: v for k, v in x2.items() if k.startswith('conv_first.')}
    with pytest.raises(CheckpointMismatchError, match=r'fills only 2 of the \d+ parameter tensors') as info:
        load_state_checked(x4, head, 'head.pth', strict=False)
    assert 'tensors of the network are not in the file (body.0.conv1.weight' in bad_case.message(info.value)


# ---- BasicSR's behaviour kept: its exception types, its retried saves --------------------------------------
def test_basicsr_exception_types_are_kept(tmp_path):
    """Code written for plain BasicSR catches what it caught before (RuntimeError, AssertionError)."""
    from torch import nn

    from mixprior_plugin.utils import checkpoint
    with pytest.raises(RuntimeError) as info:  # BasicSR: load_state_dict's RuntimeError
        checkpoint.load_state_checked(nn.Conv2d(3, 8, 3), {'weight': torch.zeros(4, 3, 3, 3)}, 'x.pth')
    assert isinstance(info.value, OptionError)
    assert 'weight: network (8, 3, 3, 3) vs file (4, 3, 3, 3)' in str(info.value)

    class Model:
        optimizers, schedulers, opt = [object()], [], {}

    with pytest.raises(AssertionError, match='1 optimizers but the options build 2'):  # BasicSR asserts the counts
        Model.optimizers = [object(), object()]
        checkpoint.resume_training(Model(), dict(optimizers=[{}], schedulers=[]))
    (tmp_path / 'bad.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(RuntimeError, match='Cannot load checkpoint .*bad.pth'):
        checkpoint.load_checkpoint(str(tmp_path / 'bad.pth'))


def test_failed_saves_are_retried_then_skipped_like_basicsr(tmp_path, monkeypatch):
    from mixprior_plugin.utils import checkpoint
    calls = []
    real_save = checkpoint.atomic_save

    def flaky(obj, path):
        calls.append(path)
        if len(calls) < 3:
            raise OSError('disk full')
        real_save(obj, path)

    monkeypatch.setattr(checkpoint, 'atomic_save', flaky)
    monkeypatch.setattr('time.sleep', lambda s: None)
    assert checkpoint.save_with_retries({'w': torch.ones(1)}, str(tmp_path / 'a.pth'))
    assert len(calls) == 3 and torch.load(tmp_path / 'a.pth', weights_only=True)['w'].item() == 1
    monkeypatch.setattr(checkpoint, 'atomic_save', lambda obj, path: (_ for _ in ()).throw(OSError('disk full')))
    assert not checkpoint.save_with_retries({'w': torch.ones(1)}, str(tmp_path / 'b.pth'))  # warns, goes on
    assert not (tmp_path / 'b.pth').exists()
