"""Scale-out and reliability: torchrun DDP, kill -9 + exact resume, atomic writes, bad input."""
import glob
import os
import signal
import socket
import subprocess
import sys
import time

import cv2
import pytest
import torch

from helpers import REPO, run_cli, save_random_teacher, sr_options, tiny_arch, write_yaml
from mixprior_plugin.utils.checkpoint import atomic_save, load_checkpoint

TESTS = os.path.dirname(os.path.abspath(__file__))


def mipkd_options(tmp_path, tiny_data, name, total_iter, family='EDSR', scale=2, save_freq=5, extra=None):
    hr, lr = tiny_data[scale]
    teacher = save_random_teacher(str(tmp_path / f'teacher_{family}.pth'), tiny_arch(family, 't', scale))
    opt = sr_options(name, str(tmp_path), scale, tiny_arch(family, 'g', scale), hr, lr, total_iter=total_iter,
                     model_type='MiPKDModel', val=False,
                     extra=dict(network_t=tiny_arch(family, 't', scale), distill=dict(num_stages=2),
                                logger=dict(print_freq=5, save_checkpoint_freq=save_freq, use_tb_logger=False)))
    opt['path']['pretrain_network_t'] = teacher
    opt['datasets']['train']['dataset_enlarge_ratio'] = 3  # several iterations per epoch: resume mid-epoch
    if extra:
        from helpers import deep_update
        deep_update(opt, extra)
    return write_yaml(str(tmp_path / f'{name}.yml'), opt)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ---- DDP -----------------------------------------------------------------------------------------
def test_torchrun_gloo_two_processes_mipkd(tmp_path, tiny_data):
    opt_file = mipkd_options(tmp_path, tiny_data, 'ddp', 10, save_freq=10)
    out = tmp_path / 'ranks'
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
         os.path.join(TESTS, 'ddp_runner.py'), str(out), '-opt', opt_file, '--launcher', 'pytorch'],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    r0, r1 = (torch.load(out / f'rank{r}.pth', weights_only=False) for r in (0, 1))
    assert (r0['rank'], r1['rank'], r0['world_size']) == (0, 1, 2)
    assert not r0['teacher_wrapped'] and not r1['teacher_wrapped']
    assert r0['train_step_wrapped'] and r1['train_step_wrapped']
    for part in ('net_g', 'net_extra'):
        assert r0[part].keys() == r1[part].keys()
        for key in r0[part]:
            assert torch.equal(r0[part][key], r1[part][key]), f'{part}.{key} differs across ranks'
    assert any(k.startswith('mixers.') for k in r0['net_extra'])
    # and it trained: the student moved away from its initialisation, identically on both ranks
    assert (tmp_path / 'experiments' / 'ddp' / 'models' / 'net_g_10.pth').exists()


def _torchrun(opt_file, cwd, out, extra_args=(), env=None):
    out.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
         os.path.join(TESTS, 'ddp_runner.py'), str(out), '-opt', opt_file, '--launcher', 'pytorch', *extra_args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO, **(env or {})))


def _kill_tree(pid):
    """SIGKILL a process and all its descendants (torchrun starts its workers in their own sessions)."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                stat = open(f'/proc/{entry}/stat').read()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(')', 1)[1].split()[1]), []).append(int(entry))
    family, todo = [], [pid]
    while todo:
        current = todo.pop()
        family.append(current)
        todo.extend(children.get(current, []))
    for member in reversed(family):  # workers first, so the launcher cannot restart them
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_torchrun_kill_and_resume_restores_each_ranks_random_state(tmp_path, tiny_data):
    """2 gloo processes, killed after the state of iteration 5 and resumed: each rank restores its own RNG
    and route generator, so the ranks keep drawing different hybrids, and the run ends equal to an
    uninterrupted one."""
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    for root in (straight, killed):
        root.mkdir()
        mipkd_options(root, tiny_data, 'ddpres', 10, save_freq=5)
    proc = _torchrun(str(straight / 'ddpres.yml'), str(straight), straight / 'ranks')
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-5000:]

    proc = _torchrun(str(killed / 'ddpres.yml'), str(killed), killed / 'ranks_killed',
                     env=dict(MIXPRIOR_TEST_SLOW_ITER='0.5'))
    _wait_for(str(killed / 'experiments' / 'ddpres' / 'training_states' / '5.state'), proc)
    _kill_tree(proc.pid)
    proc.wait()
    time.sleep(0.5)
    assert not (killed / 'experiments' / 'ddpres' / 'training_states' / '10.state').exists()
    state = load_checkpoint(str(killed / 'experiments' / 'ddpres' / 'training_states' / '5.state'))
    assert len(state['rng_per_rank']) == 2 and len(state['extras_per_rank']) == 2
    assert not torch.equal(state['rng_per_rank'][0]['torch'], state['rng_per_rank'][1]['torch'])
    assert state['extras_per_rank'][0] != state['extras_per_rank'][1]

    proc = _torchrun(str(killed / 'ddpres.yml'), str(killed), killed / 'ranks', extra_args=('--auto_resume', ))
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-5000:]
    a = [torch.load(straight / 'ranks' / f'rank{r}.pth', weights_only=False) for r in (0, 1)]
    b = [torch.load(killed / 'ranks' / f'rank{r}.pth', weights_only=False) for r in (0, 1)]
    resumed = [dict(run['routes']) for run in b]
    assert sorted(resumed[0]) == list(range(6, 11))  # the resumed run trained iterations 6..10
    assert resumed[0] != resumed[1], 'both ranks drew the same hybrids after the resume'
    for rank in (0, 1):  # the same hybrids as the uninterrupted run, rank by rank
        assert resumed[rank] == {it: r for it, r in a[rank]['routes'] if it > 5}, f'rank {rank}'
    for part in ('net_g', 'net_extra'):
        for key in a[0][part]:
            assert torch.equal(a[0][part][key], b[0][part][key]), f'{part}.{key} differs from the straight run'


# ---- kill -9, exact resume --------------------------------------------------------------------------
def _train(opt_file, cwd, env=None, extra_args=()):
    return subprocess.Popen([sys.executable, os.path.join(TESTS, 'train_runner.py'), '-opt', opt_file, *extra_args],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO, **(env or {})))


def _wait_for(path, proc, timeout=300):
    start = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f'training ended before {path} appeared:\n{proc.stdout.read()[-3000:]}')
        if time.time() - start > timeout:
            raise AssertionError(f'{path} did not appear in {timeout} s')
        time.sleep(0.02)


def _final_weights(root, name, it):
    models = os.path.join(root, 'experiments', name, 'models')
    g = torch.load(os.path.join(models, f'net_g_{it}.pth'), weights_only=True)
    extra = torch.load(os.path.join(models, f'net_extra_{it}.pth'), weights_only=True)
    return g, extra


def test_kill9_then_auto_resume_matches_uninterrupted_run(tmp_path, tiny_data):
    """The resumed run ends with bit-identical weights (num_worker_per_gpu 0: see basicsr_fixes, fix 7)."""
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    straight.mkdir()
    killed.mkdir()
    for root in (straight, killed):
        mipkd_options(root, tiny_data, 'run', 20)

    proc = _train(str(straight / 'run.yml'), str(straight))
    assert proc.wait(timeout=600) == 0, proc.stdout.read()[-3000:]

    proc = _train(str(killed / 'run.yml'), str(killed), env=dict(MIXPRIOR_TEST_SLOW_ITER='0.15'))
    _wait_for(str(killed / 'experiments' / 'run' / 'training_states' / '10.state'), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    states = sorted(int(os.path.basename(p).split('.')[0])
                    for p in glob.glob(str(killed / 'experiments' / 'run' / 'training_states' / '*.state')))
    assert 10 in states and 20 not in states, states  # really interrupted mid-run

    proc = _train(str(killed / 'run.yml'), str(killed), extra_args=('--auto_resume', ))
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-3000:]
    assert 'Resuming training from epoch' in ''.join(
        open(f).read() for f in glob.glob(str(killed / 'experiments' / 'run' / 'train_*.log')))

    (g_a, e_a), (g_b, e_b) = _final_weights(straight, 'run', 20), _final_weights(killed, 'run', 20)
    for key in ('params', 'params_ema'):
        for name in g_a[key]:
            assert torch.equal(g_a[key][name], g_b[key][name]), f'{key}.{name}'
    for name in e_a['params']:
        assert torch.equal(e_a['params'][name], e_b['params'][name]), f'net_extra.{name}'


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
    proc = _train(opt_file, str(tmp_path),
                  env=dict(MIXPRIOR_TEST_SLOW_SAVE='30', MIXPRIOR_TEST_SLOW_SAVE_SUFFIX='.state'))
    states = tmp_path / 'experiments' / 'midsave' / 'training_states'
    models = tmp_path / 'experiments' / 'midsave' / 'models'
    _wait_for(str(states / '5.state.writing'), proc)  # the 5th-iteration state is half-way
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (states / '5.state').exists() and glob.glob(str(states / '5.state.*.tmp'))
    # the models of iteration 5 were written whole (atomically) before the state
    assert load_checkpoint(str(models / 'net_g_5.pth'))['params']
    # nothing to resume from yet: auto-resume starts afresh and finishes
    proc = _train(opt_file, str(tmp_path), extra_args=('--auto_resume', ))
    assert proc.wait(timeout=600) == 0, proc.stdout.read()[-3000:]
    assert load_checkpoint(str(states / '10.state'))['iter'] == 10


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


# ---- bad input: each a clear error naming the problem, losing nothing ----------------------------------
def _break_malformed_yaml(opt, root):
    return 'name: x\ndatasets: {train: [unclosed\n'


def _corrupt_one_hr(opt, root):
    hr_dir = opt['datasets']['train']['dataroot_gt']
    bad = os.path.join(hr_dir, sorted(os.listdir(hr_dir))[0])
    with open(bad, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + b'garbage' * 50)
    return bad


def _shrink_one_lr(opt, root):
    lr_dir = opt['datasets']['val']['dataroot_lq']
    bad = os.path.join(lr_dir, sorted(os.listdir(lr_dir))[0])
    img = cv2.imread(bad)
    cv2.imwrite(bad, img[:img.shape[0] - 4])
    return os.path.basename(bad)


def _empty_folder(opt, root):
    empty = os.path.join(root, 'empty_hr')
    os.makedirs(empty, exist_ok=True)
    opt['datasets']['train']['dataroot_gt'] = empty
    return 'empty_hr'


def _val_lr_of_another_scale(opt, root):
    """The validation LR folder holds x4 images while scale is 2 (BasicSR would crop HR silently)."""
    from helpers import make_paired_folder
    _, lr4 = make_paired_folder(os.path.join(root, 'x4data'), 4, num=4, size=96, seed=2)
    opt['datasets']['val']['dataroot_lq'] = lr4
    return 'LR_x4'


def _stray_file(opt, root):
    open(os.path.join(opt['datasets']['train']['dataroot_gt'], 'Thumbs.db'), 'wb').write(b'\0' * 64)
    return 'Thumbs.db'


def _duplicate_train_section(opt, root):
    import yaml
    text = yaml.safe_dump(opt, sort_keys=False)
    return text + 'train:\n  total_iter: 4\n'


def _kd_model_with_mixer(opt, root):
    opt['model_type'] = 'KDModel'
    opt['mixer'] = dict(mask=dict(ratio=0.3))


def _rename_section(old, new):
    def rename(opt, root):
        opt[new] = opt.pop(old, None) or dict(num_stages=2)
    return rename


def _single_image_training_set(opt, root):
    train = opt['datasets']['train']
    opt['datasets']['train'] = dict(name='lr_only', type='SingleImageDataset', dataroot_lq=train['dataroot_lq'],
                                    io_backend=dict(type='disk'), batch_size_per_gpu=2, num_worker_per_gpu=0)


def _real_esrgan_training_set(opt, root):
    """BasicSR's Real-ESRNet recipe's dataset under a KD model (which reads pairs, synthesises nothing)."""
    opt['datasets']['train'].update(type='RealESRGANDataset', meta_info=os.path.join(root, 'meta_info.txt'))


def _teacher_of_another_width(strict_key):
    def other_width(opt, root):
        from helpers import save_random_teacher
        opt['path']['pretrain_network_t'] = save_random_teacher(os.path.join(root, 'wide_teacher.pth'),
                                                                dict(opt['network_t'], num_feat=12))
        opt['path'][strict_key] = False
    return other_width


def _student_weights_of_another_width(opt, root):
    """Fine-tuning from weights of another width with strict_load_g: false (as BasicSR's EDSR files do)."""
    from helpers import save_random_teacher
    opt['path']['pretrain_network_g'] = save_random_teacher(os.path.join(root, 'wide_student.pth'),
                                                            dict(opt['network_g'], num_feat=12))
    opt['path']['strict_load_g'] = False


def _generic_adapter_on_srvgg(opt, root):
    """GenericBodyAdapter (docs/usage.md) for a student whose forward indexes its body (SRVGGNetCompact)."""
    opt['network_g'] = dict(type='SRVGGNetCompact', num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=4, upscale=2)
    opt['distill'] = dict(num_stages=2, adapter_g=dict(type='GenericBodyAdapter'))


BAD_INPUTS = {
    # case: (how to break the options/data, text the error must contain)
    'malformed_yaml': (_break_malformed_yaml, ['Malformed YAML', 'bad.yml', 'line 3']),
    'duplicate_top_level_train': (_duplicate_train_section, ['bad.yml', "duplicate key 'train'"]),
    'unknown_plugin_key': (lambda o, r: o.setdefault('mixer', {}).update(maks=dict(ratio=0.5)), ['mixer.maks']),
    'unknown_train_key': (lambda o, r: o['train'].update(fmp_opt=dict(type='L1Loss')), ['train.fmp_opt']),
    'misspelt_section_distil': (_rename_section('distill', 'distil'), ["'distil'", "did you mean 'distill'"]),
    'misspelt_section_mixers': (lambda o, r: o.update(mixers=dict(mask=dict(ratio=0.3))),
                                ["'mixers'", "did you mean 'mixer'"]),
    'kd_model_with_mixer_section': (_kd_model_with_mixer, ["section 'mixer'", 'MiPKDModel']),
    'wrong_type_batch': (lambda o, r: o['datasets']['train'].update(batch_size_per_gpu='2'),
                         ['datasets.train.batch_size_per_gpu', 'positive integer']),
    'wrong_type_ratio': (lambda o, r: o.setdefault('mixer', {}).update(mask=dict(ratio='half')), ['mixer.mask.ratio']),
    'wrong_type_total_iter': (lambda o, r: o['train'].update(total_iter='many'), ['train.total_iter']),
    'negative_loss_weight': (lambda o, r: o['train'].update(kd_opt=dict(type='L1Loss', loss_weight=-1.0)),
                             ['train.kd_opt.loss_weight', '>= 0']),
    'loss_reduction_none': (lambda o, r: o['train'].update(fpm_opt=dict(type='L1Loss', reduction='none')),
                            ["train.fpm_opt.reduction='none'"]),
    'perceptual_opt_in_kd_model': (lambda o, r: o['train'].update(perceptual_opt=dict(type='L1Loss')),
                                   ['train.perceptual_opt', 'not used by MiPKDModel']),
    'latent_channels_negative': (lambda o, r: o.setdefault('mixer', {}).update(latent_channels=-8),
                                 ['mixer.latent_channels', 'positive integer']),
    'latent_channels_zero': (lambda o, r: o.setdefault('mixer', {}).update(latent_channels=0),
                             ['mixer.latent_channels', 'positive integer']),
    'grid_size_zero': (lambda o, r: o.setdefault('mixer', {}).update(mask=dict(type='grid', grid_size=0)),
                       ['mixer.mask.grid_size', 'positive integer']),
    'misspelt_teacher_param_key_value': (lambda o, r: o['path'].update(teacher_param_key='param_ema'),
                                         ["teacher_param_key='param_ema'", 'params_ema']),
    'misspelt_teacher_param_key_name': (lambda o, r: o['path'].update(teacher_params_key='params'),
                                        ['path.teacher_params_key', 'did you mean path.teacher_param_key']),
    'missing_data_folder': (lambda o, r: o['datasets']['train'].update(dataroot_lq='/no/such/lr'),
                            ['datasets.train.dataroot_lq', '/no/such/lr']),
    'missing_teacher_file': (lambda o, r: o['path'].update(pretrain_network_t='/no/teacher.pth'),
                             ['path.pretrain_network_t', '/no/teacher.pth']),
    'unregistered_arch': (lambda o, r: o['network_g'].update(type='EDSRR'), ['network_g.type', 'EDSRR']),
    'unregistered_model': (lambda o, r: o.update(model_type='MIPKDModel'), ['model_type', 'did you mean MiPKDModel']),
    'corrupt_image': (_corrupt_one_hr, ['Cannot decode']),
    'lr_hr_size_mismatch': (_shrink_one_lr, ['LR/HR size mismatch']),
    'val_lr_of_another_scale': (_val_lr_of_another_scale, ['LR/HR size mismatch at scale 2 in datasets.val']),
    'stray_non_image_file': (_stray_file, ['datasets.train.dataroot_gt', 'not images']),
    'gt_size_larger_than_images': (lambda o, r: o['datasets']['train'].update(gt_size=128),
                                   ['datasets.train.gt_size=128', 'Lower gt_size']),
    'scale_mismatch': (lambda o, r: o.update(scale=4), ['network_g.upscale', 'scale=4']),
    'empty_dataset_folder': (_empty_folder, ['datasets.train.dataroot_gt', 'no image files']),
    'nan_loss': (lambda o, r: o['train']['optim_g'].update(lr=1e30), ['Non-finite loss', 'last saved checkpoint']),
    # the tracebacks of a first trial, each now one line naming the key
    'single_image_dataset_for_training': (_single_image_training_set,
                                          ['datasets.train.type=SingleImageDataset', 'LR images only',
                                           'PairedImageDataset']),
    'hr_only_dataset_for_a_kd_model': (_real_esrgan_training_set,
                                       ['datasets.train.type=RealESRGANDataset', 'HR images only',
                                        'model_type=MiPKDModel']),
    'student_width_zero': (lambda o, r: o['network_g'].update(num_feat=0), ['network_g.num_feat', 'got 0']),
    'teacher_width_negative': (lambda o, r: o['network_t'].update(num_feat=-16), ['network_t.num_feat', 'got -16']),
    'upscale_zero': (lambda o, r: o['network_g'].update(upscale=0), ['network_g.upscale', 'positive integer']),
    'launcher_pytorch_without_torchrun': (lambda o, r: None, ['--launcher pytorch', 'RANK', 'torchrun']),
    'generic_adapter_on_an_indexed_body': (_generic_adapter_on_srvgg,
                                           ['distill.adapter_g', 'SRVGGNetCompact.forward', 'TypeError']),
    # non-strict loads that would train from a random network
    'teacher_of_another_width_non_strict': (_teacher_of_another_width('strict_load_t'),
                                            ['path.pretrain_network_t', 'fills only 1 of the 24',
                                             'conv_first.weight: network (16, 3, 3, 3) vs file (12, 3, 3, 3)']),
    'student_weights_of_another_width_non_strict': (_student_weights_of_another_width,
                                                    ['wide_student.pth', 'fills only 1 of the 16',
                                                     'conv_first.weight: network (8, 3, 3, 3) vs file (12, 3, 3, 3)']),
}


DURING_TRAINING = ('nan_loss', )  # found only once data flows
# found when the model is built (after BasicSR has created the experiment folder): run as a process
WHEN_BUILT = ('generic_adapter_on_an_indexed_body', 'teacher_of_another_width_non_strict',
              'student_weights_of_another_width_non_strict')
EXTRA_ARGS = {'launcher_pytorch_without_torchrun': ['--launcher', 'pytorch']}


@pytest.mark.bad_input
@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_input_gives_clear_error(case, tmp_path, tiny_data, monkeypatch, capsys, bad_case):
    import shutil

    import yaml
    data = tmp_path / 'data'
    shutil.copytree(os.path.dirname(tiny_data[2][0]), data)  # private copy: some cases damage the data
    opt_file = mipkd_options(tmp_path, {2: (str(data / 'HR'), str(data / 'LR_x2'))}, 'bad', 4, save_freq=1)
    opt = yaml.safe_load(open(opt_file))
    opt['datasets']['val'] = dict(name='v', type='PairedImageDataset', dataroot_gt=str(data / 'HR'),
                                  dataroot_lq=str(data / 'LR_x2'), io_backend=dict(type='disk'))
    opt['val'] = dict(val_freq=2, save_img=False)
    breaker, expected = BAD_INPUTS[case]
    detail = breaker(opt, str(tmp_path))
    bad_file = str(tmp_path / 'bad.yml')
    if isinstance(detail, str) and detail.endswith('\n'):  # the breaker wrote the YAML text itself
        open(bad_file, 'w').write(detail)
        detail = None
    else:
        write_yaml(bad_file, opt)
    if case in DURING_TRAINING + WHEN_BUILT:
        proc = run_cli([os.path.join(TESTS, 'train_runner.py'), '-opt', bad_file], cwd=str(tmp_path),
                       env=dict(PYTHONPATH=REPO), check=False)
        assert proc.returncode == 1, f'{case}: training did not stop with status 1 ({proc.returncode})'
        error = proc.stderr
    else:  # rejected while the options are read: in-process through the same entry point (faster)
        from mixprior_plugin.train import main as train_main
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv('RANK', raising=False)
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            train_main(['-opt', bad_file] + EXTRA_ARGS.get(case, []))
        assert info.value.code == 1
        error = capsys.readouterr().err
        assert not (tmp_path / 'experiments' / 'bad').exists(), 'nothing may be created before the error'
    message = bad_case.error_line(error, 'mixprior-train')  # one readable line, no traceback
    for text in expected + ([detail] if case in ('corrupt_image', 'lr_hr_size_mismatch', 'stray_non_image_file',
                                                 'val_lr_of_another_scale') else []):
        assert text in message, f'{case}: {text!r} not in the error line:\n{error[-2500:]}'
    print(f'{case}: {message}')
    states = glob.glob(str(tmp_path / 'experiments' / 'bad' / 'training_states' / '*.state'))
    for state in states:  # losing nothing: whatever was saved before the failure loads and is finite
        load_checkpoint(state)
    if case == 'nan_loss':
        assert states, 'the good iterations before the NaN must have been saved'
        last = max(states, key=lambda p: int(os.path.basename(p).split('.')[0]))
        it = os.path.basename(last).split('.')[0]
        weights = load_checkpoint(str(tmp_path / 'experiments' / 'bad' / 'models' / f'net_g_{it}.pth'))
        assert all(torch.isfinite(v).all() for v in weights['params'].values())
