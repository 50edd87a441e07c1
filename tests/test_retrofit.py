"""Retrofitting BasicSR users: its random stream, what a new user hits, and a project's own train.py.

The new-user tests follow docs/retrofit.md item by item. The dataset layouts BasicSR reads are tested in
test_validation.py.
"""
import copy
import glob
import os
import re
import shutil

import pytest
import torch
import yaml

from helpers import kd_options, run_cli, save_random_teacher, sr_options, tiny_arch, write_yaml
from mixprior_plugin.utils.options import OptionError

TESTS = os.path.dirname(os.path.abspath(__file__))


# ---- plain BasicSR keeps its behaviour ---------------------------------------------------------------
PLAIN_RUNNER = '''
import os, sys
import basicsr.train
basicsr.train.train_pipeline(os.getcwd())
'''


def test_plain_basicsr_run_draws_the_same_random_stream(tmp_path, tiny_data):
    """An SRModel run through mixprior-train ends with the same weights as through plain BasicSR."""
    hr, lr = tiny_data[2]
    opt = sr_options('same', str(tmp_path), 2, tiny_arch('EDSR', 'g', 2), hr, lr, total_iter=6, val=False,
                     extra=dict(logger=dict(print_freq=3, save_checkpoint_freq=6, use_tb_logger=False)))
    results = {}
    for label, args in (('plain', ['-c', PLAIN_RUNNER]), ('mixprior', ['-m', 'mixprior_plugin.train'])):
        root = tmp_path / label
        root.mkdir()
        opt['path']['experiments_root'] = str(root / 'experiments')
        opt_file = write_yaml(str(root / 'same.yml'), opt)
        run_cli(args + ['-opt', opt_file], cwd=str(root))
        results[label] = torch.load(root / 'experiments' / 'same' / 'models' / 'net_g_6.pth', weights_only=True)
    for key in ('params', 'params_ema'):
        for name, value in results['plain'][key].items():
            assert torch.equal(value, results['mixprior'][key][name]), f'{key}.{name}'


def test_training_state_written_by_plain_basicsr_resumes_like_basicsr(tmp_path, tiny_data):
    """A state without mixprior's loader record (plain BasicSR's) resumes with BasicSR's semantics."""
    hr, lr = tiny_data[2]
    opt = sr_options('plainstate', str(tmp_path), 2, tiny_arch('EDSR', 'g', 2), hr, lr, total_iter=4, val=False,
                     extra=dict(logger=dict(print_freq=2, save_checkpoint_freq=4, use_tb_logger=False),
                                exact_resume=True))
    opt_file = write_yaml(str(tmp_path / 'plainstate.yml'), opt)
    run_cli(['-m', 'mixprior_plugin.train', '-opt', opt_file], cwd=str(tmp_path))
    state_file = tmp_path / 'experiments' / 'plainstate' / 'training_states' / '4.state'
    state = torch.load(state_file, weights_only=True)
    assert state['exact_resume']['per_epoch'] == 2 and len(state['rng_per_rank']) == 1
    plain = {k: state[k] for k in ('epoch', 'iter', 'optimizers', 'schedulers')}  # what BasicSR writes
    torch.save(plain, state_file)
    opt['train']['total_iter'] = 8
    write_yaml(opt_file, opt)
    run_cli(['-m', 'mixprior_plugin.train', '-opt', opt_file, '--auto_resume'], cwd=str(tmp_path))
    log = ''.join(open(f).read() for f in glob.glob(str(tmp_path / 'experiments' / 'plainstate' / 'train_*.log')))
    assert 'written by plain BasicSR' in log and 'restarts from its first batch' in log, log[-2000:]
    assert 'skipping the' not in log
    assert torch.load(tmp_path / 'experiments' / 'plainstate' / 'training_states' / '8.state',
                      weights_only=True)['iter'] == 8


# ---- what a new user hits (docs/retrofit.md) -------------------------------------------------------------


@pytest.mark.bad_input
def test_mixprior_test_refuses_a_kd_student_without_weights(tmp_path, tiny_data, monkeypatch, capsys, bad_case):
    from mixprior_plugin.test import main as test_main
    opt = kd_options(tmp_path, tiny_data, 'untrained')
    opt_file = write_yaml(str(tmp_path / 'untrained.yml'), opt)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        test_main(['-opt', opt_file])
    line = bad_case.error_line(capsys.readouterr().err, 'mixprior-test')
    assert line.startswith('mixprior-test: error: OptionError: path.pretrain_network_g is not set'), line
    assert not (tmp_path / 'results').exists()


def test_mixprior_test_uses_params_ema_and_needs_no_suffix(tmp_path, tiny_data):
    """A KD training file tested as is: the student's EMA weights (as export and evaluate), images saved."""
    opt = kd_options(tmp_path, tiny_data, 'kdtest')
    torch.manual_seed(0)
    from basicsr.archs import build_network
    net = build_network(copy.deepcopy(opt['network_g']))
    ema = {k: v + 0.01 for k, v in net.state_dict().items()}
    torch.save({'params': net.state_dict(), 'params_ema': ema}, tmp_path / 'student.pth')
    opt['path']['pretrain_network_g'] = str(tmp_path / 'student.pth')
    opt['val'] = dict(save_img=True, metrics=opt['val']['metrics'])  # no suffix: BasicSR raises KeyError
    opt['datasets'] = dict(test_1=dict(opt['datasets']['val'], name='tinytest'))
    opt_file = write_yaml(str(tmp_path / 'kdtest.yml'), opt)
    proc = run_cli(['-m', 'mixprior_plugin.test', '-opt', opt_file], cwd=str(tmp_path))
    log = open(glob.glob(str(tmp_path / 'results' / 'kdtest' / 'test_kdtest_*.log'))[0]).read()
    assert 'with param key: [params_ema]' in log, log[-2000:]
    assert len(glob.glob(str(tmp_path / 'results' / 'kdtest' / 'visualization' / 'tinytest' / '*.png'))) == 4
    assert 'Traceback' not in proc.stderr


@pytest.fixture(scope='module')
def trained_kd(tmp_path_factory, tiny_data):
    """A finished 4-iteration KD run (states at 2 and 4), trained once for the tests that copy it."""
    root = tmp_path_factory.mktemp('trained_kd')
    opt = kd_options(root, tiny_data, 'kd', total_iter=4)
    opt['val']['val_freq'] = 100
    run_cli(['-m', 'mixprior_plugin.train', '-opt', write_yaml(str(root / 'kd.yml'), opt)], cwd=str(root))
    return root, opt


def _copy_run(trained_kd, tmp_path):
    root, opt = trained_kd
    shutil.copytree(root / 'experiments', tmp_path / 'experiments')
    opt = copy.deepcopy(opt)
    opt['path']['experiments_root'] = str(tmp_path / 'experiments')
    return opt


def test_auto_resume_falls_back_to_the_newest_loadable_state(tmp_path, trained_kd):
    opt = _copy_run(trained_kd, tmp_path)
    opt_file = write_yaml(str(tmp_path / 'kd.yml'), opt)
    states = tmp_path / 'experiments' / 'kd' / 'training_states'
    data = (states / '4.state').read_bytes()
    (states / '4.state').write_bytes(data[:len(data) // 2])  # a copy cut short
    opt['train']['total_iter'] = 6
    write_yaml(opt_file, opt)
    proc = run_cli(['-m', 'mixprior_plugin.train', '-opt', opt_file, '--auto_resume'], cwd=str(tmp_path))
    assert f'Auto-resume: skipping {states / "4.state"}' in proc.stderr, proc.stderr[-3000:]
    log = ''.join(open(f).read() for f in glob.glob(str(tmp_path / 'experiments' / 'kd' / 'train_*.log')))
    assert 'Resuming training from epoch' in log and 'iter: 2' in log, log[-3000:]
    assert torch.load(states / '6.state', weights_only=True)['iter'] == 6


@pytest.mark.bad_input
def test_error_after_archiving_puts_the_old_experiment_back(tmp_path, trained_kd, bad_case):
    """A teacher that does not fit is found when the model is built (after BasicSR archived the old folder)."""
    opt = _copy_run(trained_kd, tmp_path)
    opt['path']['pretrain_network_t'] = save_random_teacher(str(tmp_path / 'wider_teacher.pth'),
                                                            dict(tiny_arch('EDSR', 't', 2), num_feat=12))
    opt_file = write_yaml(str(tmp_path / 'kd.yml'), opt)
    exp = tmp_path / 'experiments' / 'kd'
    before = sorted(os.listdir(exp / 'models'))
    proc = run_cli(['-m', 'mixprior_plugin.train', '-opt', opt_file], cwd=str(tmp_path), check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'does not fit network_t' in bad_case.error_line(proc.stderr, 'mixprior-train')
    assert f'restored {exp}' in proc.stderr
    assert sorted(os.listdir(exp / 'models')) == before
    assert not glob.glob(str(tmp_path / 'experiments' / 'kd_archived_*'))


def test_debug_flag_raises_instead_of_one_line(tmp_path, tiny_data, monkeypatch):
    """With --debug the exception propagates (Python prints its traceback); without, one line and status 1."""
    from mixprior_plugin.train import main as train_main
    opt = kd_options(tmp_path, tiny_data, 'dbg')
    opt['mixer'] = dict(latent_channels=-8)
    opt_file = write_yaml(str(tmp_path / 'dbg.yml'), opt)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError, match="Option section 'mixer' is not read by model_type='KDModel'"):
        train_main(['-opt', opt_file, '--debug'])
    with pytest.raises(SystemExit):
        train_main(['-opt', opt_file])


def test_duplicate_yaml_keys_name_both_lines(tmp_path):
    from mixprior_plugin.utils.options import yaml_load
    path = tmp_path / 'dup.yml'
    path.write_text('name: a\ntrain:\n  total_iter: 10\n  total_iter: 20\n')
    with pytest.raises(OptionError, match=r"dup\.yml at line 4.*duplicate key 'total_iter' \(first at line 3"):
        yaml_load(str(path))
    path.write_text('base: &b {lr: 1}\nother:\n  <<: *b\n  lr: 2\n')  # overriding a merged key is fine
    assert yaml_load(str(path))['other']['lr'] == 2
    assert yaml.safe_load(path.read_text())['other']['lr'] == 2


# ---- a project's own train.py: `import mixprior_plugin` and BasicSR's train_pipeline -----------------------
OWN_TRAIN_PY = '''
import os
import basicsr.train
import mixprior_plugin  # noqa: F401  (the one line a BasicSR project adds)
basicsr.train.train_pipeline(os.getcwd())
'''


def _own_train_py_mipkd(tmp_path, tiny_data, total_iter, **mixer):
    opt = kd_options(tmp_path, tiny_data, 'owntrain', total_iter=total_iter, model_type='MiPKDModel')
    opt['val']['val_freq'] = 2
    if mixer:
        opt['mixer'] = mixer
    assert 'ignore_resume_networks' not in opt['path']  # the import must protect the teacher's path itself
    return write_yaml(str(tmp_path / 'owntrain.yml'), opt)


def test_own_train_py_with_only_the_import_trains_validates_saves_and_resumes(tmp_path, tiny_data):
    """BasicSR's own train_pipeline after `import mixprior_plugin`: a MiPKD run on CPU, then --auto_resume."""
    opt_file = _own_train_py_mipkd(tmp_path, tiny_data, total_iter=4)
    first = run_cli(['-c', OWN_TRAIN_PY, '-opt', opt_file], cwd=str(tmp_path))
    exp = tmp_path / 'experiments' / 'owntrain'
    log = open(glob.glob(str(exp / 'train_*.log'))[0]).read()
    assert 'Model [MiPKDModel] is created.' in log
    assert log.count('Validation tinyval') >= 2 and '# psnr:' in log, log[-2000:]  # at iters 2, 4 and the end
    for name in ('net_g_4.pth', 'net_extra_4.pth'):
        assert (exp / 'models' / name).is_file(), name
    state = torch.load(exp / 'training_states' / '4.state', weights_only=True)
    assert len(state['rng_per_rank']) == 1 and 'extras' in state  # written by CheckpointMixin, not BaseModel
    assert not glob.glob(str(exp / '**' / '*.tmp'), recursive=True)  # atomic writes leave no temporary file
    assert 'Traceback' not in first.stderr

    opt = yaml.safe_load(open(opt_file))
    opt['train']['total_iter'] = 6
    write_yaml(opt_file, opt)
    resumed = run_cli(['-c', OWN_TRAIN_PY, '-opt', opt_file, '--auto_resume'], cwd=str(tmp_path))
    logs = sorted(glob.glob(str(exp / 'train_*.log')), key=os.path.getmtime)
    log = open(logs[-1]).read()
    assert 'Resuming training from epoch' in log and 'iter: 4.' in log, log[-2000:]
    # without mixprior-train the resume is BasicSR's, not exact: the log says so
    assert re.search(r'Resume: exact resume is off .*: the interrupted epoch \d+ restarts from its first batch', log), \
        log[-2000:]
    assert 'Set pretrain_network_t' not in resumed.stdout  # the teacher keeps its own weights file
    assert 'Set pretrain_network_g to' in resumed.stdout  # BasicSR's own resume logic ran
    assert (exp / 'models' / 'net_g_6.pth').is_file() and (exp / 'models' / 'net_extra_6.pth').is_file()
    assert torch.load(exp / 'training_states' / '6.state', weights_only=True)['iter'] == 6


def test_own_train_py_with_only_the_import_validates_the_plugin_options(tmp_path, tiny_data):
    """A project's own train.py gets the plugin's checks, and Python's traceback (its last line names the key)."""
    opt_file = _own_train_py_mipkd(tmp_path, tiny_data, total_iter=2, latent_channels=0)
    proc = run_cli(['-c', OWN_TRAIN_PY, '-opt', opt_file], cwd=str(tmp_path), check=False)
    assert proc.returncode != 0
    assert 'OptionError: Option mixer.latent_channels=0 must be a positive integer' in proc.stderr, proc.stderr[-2000:]
    assert not glob.glob(str(tmp_path / 'experiments' / 'owntrain' / 'models' / '*.pth'))
