"""options/test: the mixprior-test example of docs/usage.md runs as written on a student trained in the suite."""
import glob
import os
import re
import shutil

import yaml

from helpers import REPO, run_cli, run_script, save_random_teacher, sr_options, tiny_arch, write_yaml

TEST_FILE = 'options/test/MiPKD/test_MiPKD_EDSR_C256B32-C64B32_x4.yml'


def _basicsr_test_set(root, name, hr_dir, lr_dir, scale):
    """``datasets/<name>/HR`` and ``LR_bicubic/X<s>/<img>x<s>.png``: the layout the test files name."""
    hr, lr = os.path.join(root, 'datasets', name, 'HR'), os.path.join(root, 'datasets', name, 'LR_bicubic', f'X{scale}')
    os.makedirs(lr)
    shutil.copytree(hr_dir, hr)
    for f in sorted(os.listdir(lr_dir)):
        stem, ext = os.path.splitext(f)
        shutil.copy(os.path.join(lr_dir, f), os.path.join(lr, f'{stem}x{scale}{ext}'))


def test_readme_mixprior_test_example_runs_on_a_trained_student(tmp_path, tiny_data):
    readme = open(os.path.join(REPO, 'docs', 'usage.md'), encoding='utf-8').read()
    assert f'mixprior-test  -opt {TEST_FILE}' in readme
    test_opt = yaml.safe_load(open(os.path.join(REPO, TEST_FILE)))
    scale, run = test_opt['scale'], test_opt['path']['pretrain_network_g'].split('/')[1]
    assert os.path.isfile(os.path.join(REPO, 'options', 'train', 'MiPKD', f'train_{run}.yml'))
    # a tiny MiPKD student trained (2 iterations) under the run name the test file points at
    hr, lr = tiny_data[scale]
    student = tiny_arch('EDSR', 'g', scale)
    teacher = save_random_teacher(str(tmp_path / 'teacher.pth'), tiny_arch('EDSR', 't', scale))
    train = sr_options(run, str(tmp_path), scale, student, hr, lr, total_iter=2, model_type='MiPKDModel', val=False,
                       extra=dict(network_t=tiny_arch('EDSR', 't', scale), distill=dict(num_stages=2),
                                  logger=dict(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)))
    train['path'].update(pretrain_network_t=teacher)
    del train['path']['experiments_root']  # BasicSR's default: experiments/<name> under the current folder
    run_cli(['-m', 'mixprior_plugin.train', '-opt', write_yaml(str(tmp_path / 'train.yml'), train)], cwd=str(tmp_path))
    assert os.path.isfile(tmp_path / test_opt['path']['pretrain_network_g'])
    # the committed test file, with only the student arch swapped for the tiny one and CPU
    for ds in test_opt['datasets'].values():
        _basicsr_test_set(str(tmp_path), ds['name'], hr, lr, scale)
    test_opt.update(network_g=student, num_gpu=0)
    os.makedirs(tmp_path / os.path.dirname(TEST_FILE))
    write_yaml(str(tmp_path / TEST_FILE), test_opt)
    # the documented command: the installed console script
    proc = run_script('mixprior-test', ['-opt', TEST_FILE], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = open(glob.glob(str(tmp_path / 'results' / test_opt['name'] / f'test_{test_opt["name"]}_*.log'))[0]).read()
    assert 'with param key: [params_ema]' in log, log[-2000:]
    for ds in test_opt['datasets'].values():
        assert re.search(rf'Validation {ds["name"]}\s+# psnr: \d+\.\d+', log), log[-2000:]
        assert len(glob.glob(str(tmp_path / 'results' / test_opt['name'] / 'visualization' / ds['name'] / '*.png'))) \
            == len(os.listdir(hr))
