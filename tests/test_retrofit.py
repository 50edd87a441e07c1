"""Retrofitting BasicSR users: dataset layouts BasicSR reads, its random stream, and what a new user hits.

Each layout test builds a small folder of one of BasicSR's layouts (video clip folders, meta_info
lists, lmdb), shows that mixprior's file checks accept it and BasicSR reads it, then breaks it
and shows that both refuse it. The new-user tests follow docs/retrofit.md item by item.
"""
import contextlib
import copy
import glob
import io
import os
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
import yaml

from helpers import make_paired_folder, run_cli, save_random_teacher, sr_options, tiny_arch, write_yaml
from mixprior_plugin.utils.options import OptionError
from mixprior_plugin.utils.validation import validate_files, validate_options

TESTS = os.path.dirname(os.path.abspath(__file__))


def _frames(folder, num, size, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(num):
        cv2.imwrite(os.path.join(folder, f'{i:08d}.png'), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def _basicsr_dataset(ds):
    from basicsr.data import build_dataset
    with contextlib.redirect_stdout(io.StringIO()):
        return build_dataset(copy.deepcopy(ds))


def _both_refuse(ds, key_text, load_index=None):
    """mixprior's check names ``key_text``; BasicSR fails building the dataset or loading an item."""
    with pytest.raises(OptionError, match=key_text):
        validate_files(dict(datasets=dict(test=ds), scale=ds.get('scale'), path={}))
    with pytest.raises(Exception):  # noqa: B017  (any failure of BasicSR)
        dataset = _basicsr_dataset(ds)
        if load_index is not None:
            dataset[load_index]
        assert len(dataset) > 0  # an empty data set is a failure too


# ---- dataset layouts -------------------------------------------------------------------------------
def test_video_clip_folders_without_meta_info(tmp_path):
    """VideoTestDataset (Vid4/REDS4 style): one sub-folder of frames per clip, no meta_info_file."""
    for clip in ('calendar', 'city'):
        _frames(str(tmp_path / 'GT' / clip), 3, 32)
        _frames(str(tmp_path / 'LQ' / clip), 3, 8)
    ds = dict(name='Vid4', type='VideoTestDataset', dataroot_gt=str(tmp_path / 'GT'), dataroot_lq=str(tmp_path / 'LQ'),
              io_backend=dict(type='disk'), cache_data=False, num_frame=3, padding='reflection_circle', phase='test',
              scale=4)
    validate_files(dict(datasets=dict(test=ds), scale=4, path={}))  # clip folders, no images at the top: fine
    dataset = _basicsr_dataset(ds)
    assert len(dataset) == 6 and tuple(dataset[0]['lq'].shape) == (3, 3, 8, 8)
    empty = tmp_path / 'empty'
    empty.mkdir()
    _both_refuse(dict(ds, dataroot_lq=str(empty)), 'no clip folders')


def test_video_training_clips_listed_in_meta_info(tmp_path):
    """REDSDataset / Vimeo90KDataset: meta_info_file lists clip folders under dataroot_gt and dataroot_lq."""
    for clip in ('001', '002'):
        _frames(str(tmp_path / 'train_sharp' / clip), 2, 16)
        _frames(str(tmp_path / 'train_sharp_bicubic' / clip), 2, 4)
    meta = tmp_path / 'meta_info_REDS_GT.txt'
    meta.write_text('001 100 (720,1280,3)\n002 100 (720,1280,3)\n')
    ds = dict(name='REDS', type='REDSDataset', dataroot_gt=str(tmp_path / 'train_sharp'),
              dataroot_lq=str(tmp_path / 'train_sharp_bicubic'), dataroot_flow=None, meta_info_file=str(meta),
              val_partition='REDS4', io_backend=dict(type='disk'), num_frame=5, gt_size=256, interval_list=[1],
              random_reverse=False, use_hflip=True, use_rot=True, phase='train', scale=4)
    validate_files(dict(datasets=dict(train=ds), scale=4, path={}))
    assert len(_basicsr_dataset(ds)) == 200
    vimeo_meta = tmp_path / 'meta_info_Vimeo90K.txt'
    vimeo_meta.write_text('00001/0001 7 (256,448,3)\n')
    for root in ('GT', 'LQ'):
        _frames(str(tmp_path / 'vimeo' / root / '00001' / '0001'), 1, 8)
    vimeo = dict(name='Vimeo90K', type='Vimeo90KDataset', dataroot_gt=str(tmp_path / 'vimeo' / 'GT'),
                 dataroot_lq=str(tmp_path / 'vimeo' / 'LQ'), meta_info_file=str(vimeo_meta),
                 io_backend=dict(type='disk'), num_frame=7, gt_size=256, random_reverse=False, use_hflip=True,
                 use_rot=True, phase='train', scale=4)
    validate_files(dict(datasets=dict(train=vimeo), scale=4, path={}))
    assert len(_basicsr_dataset(vimeo)) == 1
    # a listed clip that is not there: refused by name (BasicSR fails when it reaches the clip)
    meta.write_text('001 100 (720,1280,3)\n003 100 (720,1280,3)\n')
    with pytest.raises(OptionError, match=r'clip folder\(s\) listed in .* not found in .*: 003'):
        validate_files(dict(datasets=dict(train=ds), scale=4, path={}))
    test_ds = dict(name='REDS4', type='VideoTestDataset', dataroot_gt=ds['dataroot_gt'], dataroot_lq=ds['dataroot_lq'],
                   meta_info_file=str(meta), io_backend=dict(type='disk'), cache_data=False, num_frame=3,
                   padding='reflection_circle', phase='test', scale=4)
    _both_refuse(test_ds, '003')


def test_paired_images_listed_in_meta_info(tmp_path):
    """PairedImageDataset with meta_info_file: HR names may hold sub-folders; LR names follow filename_tmpl."""
    hr, lr = make_paired_folder(str(tmp_path), 2, num=3, size=32)
    os.makedirs(os.path.join(hr, 'sub'))
    for name in sorted(os.listdir(hr)):
        if name.endswith('.png'):
            shutil.move(os.path.join(hr, name), os.path.join(hr, 'sub', name))
    for name in os.listdir(lr):
        os.rename(os.path.join(lr, name), os.path.join(lr, name.replace('.png', 'x2.png')))
    meta = tmp_path / 'meta_info.txt'
    meta.write_text(''.join(f'sub/img{i:03d}.png (32,32,3)\n' for i in range(3)))
    ds = dict(name='meta', type='PairedImageDataset', dataroot_gt=hr, dataroot_lq=lr, meta_info_file=str(meta),
              filename_tmpl='{}x2', io_backend=dict(type='disk'), phase='val', scale=2)
    validate_files(dict(datasets=dict(val=ds), scale=2, path={}))
    assert tuple(_basicsr_dataset(ds)[2]['gt'].shape) == (3, 32, 32)
    meta.write_text(meta.read_text() + 'sub/img009.png (32,32,3)\n')
    _both_refuse(ds, 'img009', load_index=3)


def test_paired_lmdb_and_hidden_files(tmp_path):
    """lmdb folders made by BasicSR's make_lmdb_from_imgs; hidden files in disk folders (BasicSR skips them)."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    hr, lr = make_paired_folder(str(tmp_path), 2, num=2, size=32)
    open(os.path.join(hr, '.DS_Store'), 'w').write('x')  # BasicSR's scandir skips hidden files: so do we
    os.makedirs(os.path.join(lr, 'thumbnails'))  # and sub-folders
    disk = dict(name='disk', type='PairedImageDataset', dataroot_gt=hr, dataroot_lq=lr, io_backend=dict(type='disk'),
                phase='val', scale=2)
    validate_files(dict(datasets=dict(val=disk), scale=2, path={}))
    assert len(_basicsr_dataset(disk)) == 2
    for folder, name in ((hr, 'hr.lmdb'), (lr, 'lr.lmdb')):
        names = sorted(f for f in os.listdir(folder) if f.endswith('.png'))
        with contextlib.redirect_stdout(io.StringIO()):
            make_lmdb_from_imgs(folder, str(tmp_path / name), names, [os.path.splitext(n)[0] for n in names],
                                map_size=1 << 24)
    ds = dict(name='lmdb', type='PairedImageDataset', dataroot_gt=str(tmp_path / 'hr.lmdb'),
              dataroot_lq=str(tmp_path / 'lr.lmdb'), io_backend=dict(type='lmdb'), phase='val', scale=2)
    validate_files(dict(datasets=dict(val=ds), scale=2, path={}))
    assert tuple(_basicsr_dataset(ds)[0]['gt'].shape) == (3, 32, 32)
    os.remove(tmp_path / 'lr.lmdb' / 'meta_info.txt')
    _both_refuse(ds, 'meta_info.txt not found')


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
def _kd_options(tmp_path, tiny_data, name, total_iter=4, model_type='KDModel'):
    hr, lr = tiny_data[2]
    teacher = save_random_teacher(str(tmp_path / 'teacher.pth'), tiny_arch('EDSR', 't', 2))
    opt = sr_options(name, str(tmp_path), 2, tiny_arch('EDSR', 'g', 2), hr, lr, total_iter=total_iter,
                     model_type=model_type,
                     extra=dict(network_t=tiny_arch('EDSR', 't', 2), distill=dict(num_stages=2),
                                logger=dict(print_freq=2, save_checkpoint_freq=2, use_tb_logger=False)))
    opt['path']['pretrain_network_t'] = teacher
    opt['val']['val_freq'] = 2
    return opt


@pytest.mark.bad_input
def test_num_gpu_above_one_without_launcher_names_torchrun(tmp_path, tiny_data, bad_case):
    opt = _kd_options(tmp_path, tiny_data, 'gpus')
    opt.update(num_gpu=4, dist=False, is_train=True)
    with pytest.raises(OptionError, match='num_gpu=4 without a launcher.*torchrun --nproc_per_node=4') as info:
        validate_options(opt)
    bad_case.message(info.value)
    validate_options(dict(opt, num_gpu=4, dist=True))  # under torchrun: fine
    # BasicSR's own models use DataParallel there: left alone (without the teacher, which SRModel never reads)
    plain = dict(opt, model_type='SRModel', path={k: v for k, v in opt['path'].items() if k != 'pretrain_network_t'})
    for key in ('network_t', 'distill'):
        plain.pop(key)
    validate_options(plain)


@pytest.mark.bad_input
def test_mixprior_test_refuses_a_kd_student_without_weights(tmp_path, tiny_data, monkeypatch, capsys, bad_case):
    from mixprior_plugin.test import main as test_main
    opt = _kd_options(tmp_path, tiny_data, 'untrained')
    opt_file = write_yaml(str(tmp_path / 'untrained.yml'), opt)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        test_main(['-opt', opt_file])
    line = bad_case.error_line(capsys.readouterr().err, 'mixprior-test')
    assert line.startswith('mixprior-test: error: OptionError: path.pretrain_network_g is not set'), line
    assert not (tmp_path / 'results').exists()


def test_mixprior_test_uses_params_ema_and_needs_no_suffix(tmp_path, tiny_data):
    """A KD training file tested as is: the student's EMA weights (as export and evaluate), images saved."""
    opt = _kd_options(tmp_path, tiny_data, 'kdtest')
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
    opt = _kd_options(root, tiny_data, 'kd', total_iter=4)
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
    opt = _kd_options(tmp_path, tiny_data, 'dbg')
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


# ---- a project's own train.py: `import mixprior_plugin` and BasicSR's train_pipeline -----------------------
OWN_TRAIN_PY = '''
import os
import basicsr.train
import mixprior_plugin  # noqa: F401  (the one line a BasicSR project adds)
basicsr.train.train_pipeline(os.getcwd())
'''


def _own_train_py_mipkd(tmp_path, tiny_data, total_iter, **mixer):
    opt = _kd_options(tmp_path, tiny_data, 'owntrain', total_iter=total_iter, model_type='MiPKDModel')
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


def test_basemodel_is_never_patched():
    """The entry points give BasicSR's models the checkpoint behaviour per run, through build_model only."""
    from basicsr.models.base_model import BaseModel
    from basicsr.models.sr_model import SRModel

    from mixprior_plugin import basicsr_fixes
    from mixprior_plugin.models import KDModel
    from mixprior_plugin.utils.checkpoint import CheckpointMixin
    basicsr_fixes.apply()
    for name in ('save_network', 'save_training_state', 'resume_training', 'load_network', 'model_to_device'):
        assert BaseModel.__dict__[name].__module__ == 'basicsr.models.base_model', name
    fixed = basicsr_fixes.with_fixes(SRModel)
    assert issubclass(fixed, CheckpointMixin) and issubclass(fixed, SRModel) and fixed.__name__ == 'SRModel'
    assert basicsr_fixes.with_fixes(SRModel) is fixed and basicsr_fixes.with_fixes(KDModel) is KDModel
    assert issubclass(KDModel, CheckpointMixin)
