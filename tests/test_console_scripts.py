"""The console scripts as installed (.venv/bin/mixprior-train, mixprior-test, mixprior-export, torchrun):
exit status 0 and the output a user reads on success, a non-zero status and one line on a mistake."""
import glob
import os
import re

import pytest
import torch
import yaml

from basicsr.archs import build_network

from helpers import run_script, save_random_teacher, sr_options, tiny_arch, write_yaml

SCALE = 2


def _kd_options(root, tiny_data, name, total_iter=2):
    hr, lr = tiny_data[SCALE]
    opt = sr_options(name, root, SCALE, tiny_arch('EDSR', 'g', SCALE), hr, lr, total_iter=total_iter,
                     model_type='KDModel',
                     extra=dict(network_t=tiny_arch('EDSR', 't', SCALE),
                                logger=dict(print_freq=1, save_checkpoint_freq=total_iter, use_tb_logger=False)))
    opt['path']['pretrain_network_t'] = save_random_teacher(os.path.join(root, 'teacher.pth'),
                                                            tiny_arch('EDSR', 't', SCALE))
    opt['val']['val_freq'] = 100
    return opt


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_data):
    """A 2-iteration KD run trained by the installed mixprior-train; its option file, student and output."""
    root = tmp_path_factory.mktemp('console')
    opt = _kd_options(str(root), tiny_data, 'kdcli')
    opt_file = write_yaml(str(root / 'kdcli.yml'), opt)
    proc = run_script('mixprior-train', ['-opt', opt_file], cwd=str(root))
    return dict(root=root, opt=opt, opt_file=opt_file, proc=proc,
                student=str(root / 'experiments' / 'kdcli' / 'models' / 'net_g_latest.pth'))


def test_mixprior_train_installed_trains_with_status_0(trained):
    proc = trained['proc']
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'End of training' in proc.stderr and 'Traceback' not in proc.stderr  # BasicSR logs to stderr
    assert re.search(r'Teacher check on 2 validation images of datasets\.val .*: teacher [\d.]+ dB, bicubic [\d.]+ dB',
                     proc.stderr), proc.stderr[-3000:]
    assert torch.load(trained['student'], weights_only=True)['params_ema']


def test_mixprior_test_installed_evaluates_only_the_val_sets_of_a_training_file(trained):
    """The documented recipe (docs/usage.md): mixprior-test on the training option file, with the trained student."""
    opt = dict(trained['opt'], path=dict(trained['opt']['path'], pretrain_network_g=trained['student']))
    opt_file = write_yaml(str(trained['root'] / 'kdcli_test.yml'), opt)
    proc = run_script('mixprior-test', ['-opt', opt_file], cwd=str(trained['root']))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'mixprior-test: evaluating datasets val of the option file; its training set datasets.train is skipped.' \
        in proc.stdout, proc.stdout[-2000:]
    assert re.search(r'Validation tinyval\s+# psnr: \d+\.\d+', proc.stderr), proc.stderr[-3000:]
    assert 'Testing tinyval...' in proc.stderr and 'Testing tiny...' not in proc.stderr
    assert 'with param key: [params_ema]' in proc.stderr and 'Traceback' not in proc.stderr


def test_mixprior_export_installed_exits_0_after_an_export(trained, tmp_path):
    out = tmp_path / 'student.pth'
    proc = run_script('mixprior-export', ['-opt', trained['opt_file'], '--ckpt', trained['student'], '-o', str(out)],
                      cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert re.search(r'Student EDSR x2 from .* \[params_ema\]: [\d,]+ parameters', proc.stdout), proc.stdout
    assert 'num_params' not in proc.stderr + proc.stdout  # the result dict is not printed (sys.exit(main()))
    net = build_network(tiny_arch('EDSR', 'g', SCALE))
    net.load_state_dict(torch.load(out, weights_only=True)['params'], strict=True)


def test_torchrun_from_the_venv_starts_a_run(tiny_data, tmp_path):
    """The DDP line of docs/usage.md with the .venv's torchrun (one process, gloo on CPU)."""
    opt_file = write_yaml(str(tmp_path / 'ddp.yml'), _kd_options(str(tmp_path), tiny_data, 'ddpcli'))
    proc = run_script('torchrun', ['--standalone', '--nproc_per_node=1', '-m', 'mixprior_plugin.train', '-opt',
                                   opt_file, '--launcher', 'pytorch'], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'world_size: 1' in proc.stderr and 'dist: True' in proc.stderr, proc.stderr[-3000:]
    assert (tmp_path / 'experiments' / 'ddpcli' / 'models' / 'net_g_2.pth').is_file()


def _student_of_another_width(trained, tmp_path):
    """The documented test recipe, with the checkpoint of a wider student and BasicSR's strict_load_g: false."""
    wide = save_random_teacher(str(tmp_path / 'wide.pth'), dict(tiny_arch('EDSR', 'g', SCALE), num_feat=12))
    opt = dict(trained['opt'], path=dict(trained['opt']['path'], pretrain_network_g=wide, strict_load_g=False))
    return ['-opt', write_yaml(str(tmp_path / 'wide.yml'), opt)]


def _misspelt_export_key(trained, tmp_path):
    return ['-opt', trained['opt_file'], '--ckpt', trained['student'], '-o', str(tmp_path / 's.pth'), '--key',
            'param_ema']


FAILURES = {  # script: (arguments, texts of the error line)
    'mixprior-train': (lambda trained, tmp: ['-opt', str(tmp / 'no_such_options.yml')],
                       ['Option file not found', 'no_such_options.yml']),
    'mixprior-test': (_student_of_another_width,
                      ['wide.pth [params_ema]', 'does not fit EDSR', 'a test loads strictly', '--non-strict']),
    'mixprior-export': (_misspelt_export_key, ["--key 'param_ema' is not in", 'keys: params, params_ema']),
}


@pytest.mark.bad_input
@pytest.mark.parametrize('script', sorted(FAILURES))
def test_installed_script_fails_with_one_line(script, trained, tmp_path, bad_case):
    make_args, expected = FAILURES[script]
    proc = run_script(script, make_args(trained, tmp_path), cwd=str(tmp_path))
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = bad_case.error_line(proc.stderr, script)
    for text in expected:
        assert text in line, f'{text!r} not in {line!r}'
    if script == 'mixprior-test':
        assert 'path.strict_load_g: false is ignored' in proc.stdout
        assert 'conv_first.weight: network (8, 3, 3, 3) vs file (12, 3, 3, 3)' in proc.stderr  # both shapes
        assert not glob.glob(str(tmp_path / 'results' / '*' / 'visualization' / '*' / '*.png'))


def test_mixprior_test_non_strict_evaluates_a_partial_student_naming_what_it_skipped(trained, tmp_path):
    """Told otherwise (--non-strict), a student missing its last convolution is evaluated, and the log says so."""
    state = torch.load(trained['student'], weights_only=True)
    partial = {key: {k: v for k, v in weights.items() if not k.startswith('conv_last.')}
               for key, weights in state.items()}
    torch.save(partial, tmp_path / 'partial.pth')
    opt = dict(trained['opt'], path=dict(trained['opt']['path'], pretrain_network_g=str(tmp_path / 'partial.pth')))
    opt_file = write_yaml(str(tmp_path / 'partial.yml'), opt)
    refused = run_script('mixprior-test', ['-opt', opt_file], cwd=str(tmp_path))
    assert refused.returncode == 1 and 'missing in file (2)' in refused.stderr, refused.stderr[-3000:]
    proc = run_script('mixprior-test', ['-opt', opt_file, '--non-strict'], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert re.search(r'Non-strict load: 14 of 16 parameter tensors of EDSR .* loaded \(\d+\.\d% of its parameters\); '
                     r'left as initialised: conv_last\.bias, conv_last\.weight', proc.stderr), proc.stderr[-3000:]
    assert re.search(r'Validation tinyval\s+# psnr: \d+\.\d+', proc.stderr)
    assert yaml.safe_load(open(opt_file))['path'].get('strict_load_g', True) is True  # the file said strict
