"""Student export: BasicSR .pth, safetensors (with metadata), ONNX (onnxruntime parity), RCAN in the
original layout for spandrel, loading back in tools/evaluate.py and mixprior-test, corrupt files."""
import importlib.util
import json
import os
import re
import sys

import numpy as np
import pytest
import torch

from basicsr.archs import build_network

from helpers import FAMILIES, REPO, SHARED_DATASETS, run_cli, tiny_arch, write_yaml
from mixprior_plugin import export
from mixprior_plugin.evaluation import build_method
from mixprior_plugin.inference import EvalError, sr_tensor
from mixprior_plugin.utils import student_files
from mixprior_plugin.utils.image_io import list_images, read_image
from mixprior_plugin.utils.networks import build_from_safetensors

SCALE = 2
ONNX_ATOL = 1e-4  # fp32 onnxruntime vs PyTorch, outputs in [0, 1] (docs/export.md)
SPANDREL_ATOL = 1e-5


def _missing_extras():
    return [m for m in ('onnx', 'onnxruntime', 'onnxscript', 'safetensors', 'spandrel')
            if importlib.util.find_spec(m) is None]


if _missing_extras():  # say why, loudly: the test environment (tools/setup_env.sh) installs them
    pytest.skip(f'export extras not installed ({", ".join(_missing_extras())}): run tools/setup_env.sh or '
                f'{student_files.INSTALL_HINT}', allow_module_level=True)


def _to_tensor(img):
    from basicsr.utils import img2tensor
    return img2tensor(img.astype('float32') / 255., bgr2rgb=True, float32=True)[None]


def _write_run(root, family, lr_dir, hr_dir, seed):
    """Option file and checkpoint of a tiny student whose params and params_ema differ."""
    arch = tiny_arch(family, 'g', SCALE)
    torch.manual_seed(seed)
    net = build_network(dict(arch))
    ema = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() and 'relative_position' not in k
           and 'attn_mask' not in k else v.clone() for k, v in net.state_dict().items()}
    ckpt = os.path.join(root, f'{family}_net_g.pth')
    torch.save({'params': net.state_dict(), 'params_ema': ema}, ckpt)
    opt = dict(name=f'export_{family}', model_type='SRModel', scale=SCALE, num_gpu=0, network_g=arch,
               datasets=dict(val=dict(name='val', type='PairedImageDataset', dataroot_gt=hr_dir, dataroot_lq=lr_dir,
                                      io_backend=dict(type='disk'))))
    return write_yaml(os.path.join(root, f'{family}.yml'), opt), ckpt, arch, ema


@pytest.fixture(scope='module')
def exported(tmp_path_factory, tiny_data):
    """Each family exported once to all three formats (RCAN also in the original layout)."""
    root = str(tmp_path_factory.mktemp('export'))
    hr_dir, lr_dir = tiny_data[SCALE]
    runs = {}
    for seed, family in enumerate(FAMILIES):
        opt_file, ckpt, arch, ema = _write_run(root, family, lr_dir, hr_dir, seed)
        lines = []
        result = export.export_student(opt_file, ckpt, os.path.join(root, f'{family}_student'), list(export.FORMATS),
                                       log=lines.append)
        runs[family] = dict(opt=opt_file, ckpt=ckpt, arch=arch, ema=ema, result=result, log='\n'.join(lines))
    original = export.export_student(runs['RCAN']['opt'], runs['RCAN']['ckpt'], os.path.join(root, 'RCAN_original'),
                                     ['pth', 'safetensors'], rcan_layout='original', log=lambda _: None)
    runs['RCAN']['original'] = original['files']
    runs['root'] = root
    return runs


def _student(run):
    net = build_network(dict(run['arch']))
    net.load_state_dict(run['ema'], strict=True)
    return net.eval()


@pytest.mark.parametrize('family', FAMILIES)
def test_three_formats_written_with_metadata_and_report(exported, family):
    run = exported[family]
    files, result = run['result']['files'], run['result']
    assert set(files) == set(export.FORMATS) and all(os.path.getsize(p) > 0 for p in files.values())
    # .pth: params only (EMA by default), strict-loadable into BasicSR's arch
    pth = torch.load(files['pth'], weights_only=True)
    assert set(pth) == {'params'}
    build_network(dict(run['arch'])).load_state_dict(pth['params'], strict=True)
    assert all(torch.equal(pth['params'][k], run['ema'][k]) for k in run['ema'])
    # .safetensors: same weights, metadata enough to rebuild the student without an option file
    arch, state, meta = student_files.load_student_safetensors(files['safetensors'])
    assert arch == run['arch'] and meta['scale'] == SCALE and meta['layout'] == 'basicsr'
    assert meta['source_checkpoint'] == os.path.abspath(run['ckpt']) and meta['param_key'] == 'params_ema'
    assert re.fullmatch(r'[0-9a-f]{40}', meta['git_commit'])
    assert all(torch.equal(state[k], run['ema'][k]) for k in run['ema'])
    # the report names parameters, sizes, the opset and parity
    num_params = sum(p.numel() for p in _student(run).parameters())
    assert result['num_params'] == num_params and f'{num_params:,d} parameters' in run['log']
    assert f'opset {export.DEFAULT_OPSET}' in run['log'] and 'MiB' in run['log'] and 'max abs' in run['log']
    assert len(result['parity']) == 4 and all(r['ok'] for r in result['parity'])


@pytest.mark.parametrize('family', FAMILIES)
def test_onnx_and_safetensors_match_pytorch_at_two_sizes(exported, family, tiny_data):
    run = exported[family]
    net = _student(run)
    window = run['arch'].get('window_size')
    onnx_net = student_files.OnnxSR(run['result']['files']['onnx'])
    reloaded, _ = build_from_safetensors(run['result']['files']['safetensors'])
    image = _to_tensor(read_image(list_images(tiny_data[SCALE][1])[1])[0])  # 48 x 48 LR
    # a window multiple, then sizes that are not (13 x 21 and a batch of 2 at 19 x 30)
    for x in (image[..., :16, :32], image[..., :13, :21], torch.cat([image, image.flip(-1)])[..., :19, :30]):
        ref = sr_tensor(net, x, SCALE, window)
        assert ref.shape[-2:] == (x.shape[-2] * SCALE, x.shape[-1] * SCALE)
        with torch.no_grad():
            onnx_out = onnx_net(x)
        assert onnx_out.shape == ref.shape
        assert (onnx_out - ref).abs().max().item() <= ONNX_ATOL, (family, tuple(x.shape))
        assert torch.equal(sr_tensor(reloaded, x, SCALE, window), ref)


def _spandrel_cases():
    return [('SwinIR', 'pth'), ('SwinIR', 'safetensors'), ('RCAN', 'pth'), ('RCAN', 'safetensors')]


@pytest.mark.parametrize('family,fmt', _spandrel_cases())
def test_spandrel_detects_arch_and_scale_and_matches_basicsr(exported, family, fmt, tiny_data):
    from spandrel import ModelLoader
    run = exported[family]
    path = run['original'][fmt] if family == 'RCAN' else run['result']['files'][fmt]
    model = ModelLoader().load_from_file(path)
    assert model.architecture.id == family and model.scale == SCALE
    model.model.eval()
    net = _student(run)
    window = run['arch'].get('window_size')
    image = _to_tensor(read_image(list_images(tiny_data[SCALE][1])[0])[0])
    for x in (image[..., :24, :24], image[..., :21, :27]):
        ours = sr_tensor(net, x, SCALE, window)
        with torch.no_grad():  # the bare network, then spandrel's call (which clamps to [0, 1])
            raw = model.model(x.clone())  # clone: spandrel's RCAN scales its input in place
            called = model(x.clone())
        assert (raw - ours).abs().max().item() <= SPANDREL_ATOL, (family, fmt, tuple(x.shape))
        assert (called - ours.clamp(0, 1)).abs().max().item() <= SPANDREL_ATOL, (family, fmt, tuple(x.shape))


def test_rcan_original_layout_round_trip_and_refusals(exported):
    run = exported['RCAN']
    original = torch.load(run['original']['pth'], weights_only=True)
    assert 'head.0.weight' in original and 'body.0.body.0.body.3.conv_du.0.weight' in original
    assert 'body.1.body.1.weight' in original and 'body.2.weight' in original and 'tail.1.weight' in original
    assert not any(k.startswith(('conv_first', 'upsample', 'conv_last')) for k in original)
    back = student_files.rcan_from_original(original, run['arch'])
    assert back.keys() == run['ema'].keys() and all(torch.equal(back[k], run['ema'][k]) for k in back)
    _, state, meta = student_files.load_student_safetensors(run['original']['safetensors'])
    assert meta['layout'] == 'original' and all(torch.equal(state[k], run['ema'][k]) for k in run['ema'])
    for change, word in ((dict(res_scale=0.5), 'res_scale'), (dict(img_range=1.), 'img_range'),
                         (dict(type='EDSR'), 'RCAN')):
        with pytest.raises(student_files.ExportError, match=word):
            student_files.rcan_to_original(run['ema'], dict(run['arch'], **change))


def test_evaluate_gives_same_psnr_for_pth_safetensors_onnx(exported, tmp_path, test_data):
    test_data('datasets', 'Set5')
    sys.path.insert(0, os.path.join(REPO, 'tools'))
    try:
        import evaluate
    finally:
        sys.path.pop(0)
    run = exported['EDSR']
    files = run['result']['files']
    # the .safetensors and .onnx entries need no arch: it comes from the files
    results = evaluate.main(['--scale', str(SCALE), '--data-root', SHARED_DATASETS, '--sets', 'Set5',
                             '--device', 'cpu', '--out-dir', str(tmp_path), '--compare',
                             f'pth={files["pth"]}@{run["opt"]}', f'safetensors={files["safetensors"]}',
                             f'onnx={files["onnx"]}'])
    psnr = {label: v['psnr'] for label, v in results['sets']['Set5']['methods'].items()}
    print('Set5 x2 PSNR by format:', json.dumps(psnr))
    assert abs(psnr['safetensors'] - psnr['pth']) <= 0.01 and abs(psnr['onnx'] - psnr['pth']) <= 0.01
    assert 10 < psnr['pth'] < 60  # a real measurement, not a constant
    params = {m['label']: m['params'] for m in results['methods']}
    assert params['pth'] == params['safetensors'] == params['onnx'] == run['result']['num_params']


def test_mixprior_test_runs_safetensors_without_network_g(exported, tiny_data, tmp_path):
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img
    run = exported['EDSR']
    hr_dir, lr_dir = tiny_data[SCALE]
    opt = dict(name='st_test', model_type='SRModel', scale=SCALE, num_gpu=0,
               datasets=dict(test_1=dict(name='tiny', type='PairedImageDataset', dataroot_gt=hr_dir,
                                         dataroot_lq=lr_dir, io_backend=dict(type='disk'))),
               path=dict(pretrain_network_g=run['result']['files']['safetensors'], strict_load_g=True),
               val=dict(save_img=False, metrics=dict(psnr=dict(type='calculate_psnr', crop_border=SCALE,
                                                               test_y_channel=True))))
    opt_file = write_yaml(str(tmp_path / 'test.yml'), opt)
    proc = run_cli(['-m', 'mixprior_plugin.test', '-opt', opt_file], cwd=str(tmp_path))
    logs = [os.path.join(dp, f) for dp, _, fs in os.walk(tmp_path / 'results') for f in fs if f.endswith('.log')]
    text = open(logs[0]).read() if logs else proc.stdout + proc.stderr
    logged = float(re.search(r'# psnr: ([0-9.]+)', text).group(1))
    net = _student(run)
    values = []
    for hr_path, lr_path in zip(list_images(hr_dir), list_images(lr_dir)):
        with torch.no_grad():
            sr = tensor2img(net(_to_tensor(read_image(lr_path)[0])))
        values.append(calculate_psnr(sr, read_image(hr_path)[0], crop_border=SCALE, test_y_channel=True))
    assert abs(logged - float(np.mean(values))) < 1e-3, (logged, values)


def _damaged(src, dst, how):
    data = open(src, 'rb').read()
    with open(dst, 'wb') as f:
        f.write(data[:len(data) // 2] if how == 'truncated' else b'\x00garbage' * 64)
    return dst


@pytest.mark.bad_input
@pytest.mark.parametrize('fmt', ['safetensors', 'onnx'])
@pytest.mark.parametrize('how', ['truncated', 'garbage'])
def test_corrupt_file_gives_clear_error_naming_it(exported, fmt, how, tmp_path, bad_case):
    bad = _damaged(exported['EDSR']['result']['files'][fmt], str(tmp_path / f'bad_student.{fmt}'), how)
    loader = student_files.load_student_safetensors if fmt == 'safetensors' else student_files.OnnxSR
    with pytest.raises(student_files.ExportError, match=re.escape(bad)):
        loader(bad)
    with pytest.raises((student_files.ExportError, EvalError)) as err:
        build_method('bad', bad, None, SCALE, 'cpu')
    assert bad in bad_case.message(err.value) and 'corrupt' in str(err.value)


@pytest.mark.bad_input
def test_safetensors_without_metadata_and_wrong_arch_are_refused(exported, tmp_path, bad_case):
    from safetensors.torch import save_file
    plain = str(tmp_path / 'plain.safetensors')
    save_file({k: v.contiguous() for k, v in exported['EDSR']['ema'].items()}, plain)
    with pytest.raises(student_files.ExportError, match='no mixprior arch metadata') as info:
        build_method('plain', plain, None, SCALE, 'cpu')
    bad_case.message(info.value)
    with pytest.raises(EvalError, match='holds a EDSR but the arch given is RCAN') as info:
        build_method('x', exported['EDSR']['result']['files']['safetensors'], exported['RCAN']['arch'], SCALE, 'cpu')
    bad_case.message(info.value)
    with pytest.raises(EvalError, match='exported at x2 but --scale is 4') as info:
        build_method('x', exported['EDSR']['result']['files']['onnx'], None, 4, 'cpu')
    bad_case.message(info.value)


@pytest.mark.bad_input
def test_missing_extras_name_the_install_command(exported, monkeypatch, capsys, tmp_path, bad_case):
    monkeypatch.setitem(sys.modules, 'onnx', None)  # import onnx now raises ImportError
    run = exported['EDSR']
    with pytest.raises(SystemExit) as err:
        export.main(['-opt', run['opt'], '--ckpt', run['ckpt'], '-o', str(tmp_path / 's.onnx')])
    assert 'pip install mixprior[export]' in bad_case.message(err.value) and "'onnx'" in str(err.value)
    assert not os.path.exists(tmp_path / 's.onnx')


def test_export_tool_keeps_pth_only_default(exported, tmp_path, capsys):
    run = exported['RCAN']
    spec = importlib.util.spec_from_file_location('export_student', os.path.join(REPO, 'tools', 'export_student.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['-opt', run['opt'], '--ckpt', run['ckpt'], '-o', str(tmp_path / 'student.pth'), '--key', 'params'])
    assert sorted(os.listdir(tmp_path)) == ['student.pth'] and 'parameters' in capsys.readouterr().out
    params = torch.load(tmp_path / 'student.pth', weights_only=True)['params']
    raw = torch.load(run['ckpt'], weights_only=True)['params']
    assert all(torch.equal(params[k], raw[k]) for k in raw)


@pytest.mark.bad_input
def test_parity_above_tolerance_is_an_error(exported, monkeypatch, tmp_path, bad_case):
    real_build = build_from_safetensors

    def perturbed(path, device='cpu'):  # a reload that does not reproduce the student
        net, meta = real_build(path, device)
        with torch.no_grad():
            net.conv_last.bias.add_(1.0)  # 1/255 at the output: far above the tolerance
        return net, meta

    monkeypatch.setattr(export, 'build_from_safetensors', perturbed)
    run = exported['EDSR']
    with pytest.raises(export.ExportError, match=r'Parity failed: safetensors \(reloaded\) at \d+x\d+') as info:
        export.export_student(run['opt'], run['ckpt'], str(tmp_path / 's'), ['safetensors'], log=lambda _: None)
    bad_case.message(info.value)
