"""mixprior_plugin.utils.validation: option values and data folders checked before anything is built."""
import contextlib
import copy
import glob
import io
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from helpers import REPO, TESTS, kd_options, make_paired_folder, mipkd_options, run_cli, write_yaml
from mixprior_plugin.utils.checkpoint import load_checkpoint
from mixprior_plugin.utils.options import OptionError
from mixprior_plugin.utils.validation import validate_files, validate_options


# ---- bad input: each a clear error naming the problem, losing nothing --------------------------------------
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


# ---- option values: a distillation run on several GPUs needs torchrun --------------------------------------
@pytest.mark.bad_input
def test_num_gpu_above_one_without_launcher_names_torchrun(tmp_path, tiny_data, bad_case):
    opt = kd_options(tmp_path, tiny_data, 'gpus')
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


# ---- data folders: the layouts BasicSR reads ---------------------------------------------------------------
# Each layout test builds a small folder of one of BasicSR's layouts (video clip folders, meta_info lists, lmdb),
# shows that mixprior's file checks accept it and BasicSR reads it, then breaks it and shows that both refuse it.
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
