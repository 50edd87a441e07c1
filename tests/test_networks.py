"""build_network_and_load: an arch built from its options and trained weights loaded into it, checked."""
import pytest
import torch

from basicsr.archs import build_network

from helpers import tiny_arch
from mixprior_plugin.utils.checkpoint import CheckpointMismatchError
from mixprior_plugin.utils.networks import build_network_and_load, read_weights
from mixprior_plugin.utils.options import OptionError
from mixprior_plugin.utils.student_files import rcan_to_original

SCALE = 2


def _weights(arch, seed):
    torch.manual_seed(seed)
    return build_network(dict(arch)).state_dict()


@pytest.fixture(scope='module')
def edsr_file(tmp_path_factory):
    """A tiny EDSR checkpoint whose params and params_ema differ."""
    arch = tiny_arch('EDSR', 'g', SCALE)
    path = str(tmp_path_factory.mktemp('networks') / 'edsr.pth')
    params, ema = _weights(arch, 1), _weights(arch, 2)
    torch.save({'params': params, 'params_ema': ema}, path)
    return dict(arch=arch, path=path, params=params, ema=ema)


def _equal(net, state):
    return all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


def test_the_ema_weights_by_default_frozen_in_eval_mode(edsr_file):
    loaded = build_network_and_load(edsr_file['arch'], edsr_file['path'])
    assert loaded.param_key == 'params_ema' and _equal(loaded.net, edsr_file['ema'])
    assert not loaded.net.training and not any(p.requires_grad for p in loaded.net.parameters())
    assert loaded.report['loaded'] == loaded.report['total'] and loaded.report['share'] == 1.0
    trainable = build_network_and_load(edsr_file['arch'], edsr_file['path'], 'params', freeze=False)
    assert trainable.param_key == 'params' and _equal(trainable.net, edsr_file['params'])
    assert trainable.net.training and all(p.requires_grad for p in trainable.net.parameters())


@pytest.mark.bad_input
def test_a_checkpoint_without_ema_falls_back_to_params_unless_the_key_is_named(edsr_file, tmp_path, bad_case):
    path = str(tmp_path / 'no_ema.pth')
    torch.save({'params': edsr_file['params']}, path)
    assert build_network_and_load(edsr_file['arch'], path).param_key == 'params'
    with pytest.raises(OptionError, match=r"Option path.teacher_param_key='params_ema' is not in .*no_ema.pth "
                                          r'\(keys: params\)') as info:
        build_network_and_load(edsr_file['arch'], path, 'params_ema', 'path.teacher_param_key')
    bad_case.message(info.value)


@pytest.mark.bad_input
def test_weights_that_do_not_fit_name_file_key_and_network(edsr_file, tmp_path, bad_case):
    wide = dict(edsr_file['arch'], num_feat=12)
    with pytest.raises(CheckpointMismatchError) as info:
        build_network_and_load(wide, edsr_file['path'], target='the wide student')
    message = bad_case.message(info.value)
    assert message.startswith(f'{edsr_file["path"]} [params_ema] does not fit the wide student')
    assert 'conv_first.weight: network (12, 3, 3, 3) vs file (8, 3, 3, 3)' in message
    partial = {k: v for k, v in edsr_file['ema'].items() if not k.startswith('conv_last.')}
    with pytest.raises(CheckpointMismatchError, match='missing in file'):
        build_network_and_load(edsr_file['arch'], partial, source='partial weights')
    loaded = build_network_and_load(edsr_file['arch'], partial, strict=False, source='partial weights')
    assert loaded.param_key is None and loaded.report['loaded'] == loaded.report['total'] - 2
    assert _equal(loaded.net, partial)


@pytest.mark.bad_input
def test_an_arch_that_cannot_be_built_is_one_line_naming_arch_and_weights(edsr_file, bad_case):
    with pytest.raises(OptionError) as info:
        build_network_and_load(dict(edsr_file['arch'], num_blocks=3), edsr_file['path'], target='network_t (EDSR)')
    message = bad_case.message(info.value)
    assert message.startswith(f'Cannot build network_t (EDSR) for {edsr_file["path"]}: arch ')
    assert 'num_blocks' in message and '\n' not in message
    with pytest.raises(OptionError, match=r'The arch for .*edsr.pth must be a mapping with a type, got None'):
        build_network_and_load(None, edsr_file['path'])
    with pytest.raises(ValueError, match='need a source'):
        build_network_and_load(edsr_file['arch'], edsr_file['ema'])


def test_rcan_weights_in_the_original_layout_are_read_back(tmp_path):
    arch = tiny_arch('RCAN', 'g', SCALE)
    state = _weights(arch, 3)
    path = str(tmp_path / 'rcan_original.pth')
    torch.save(rcan_to_original(state, arch), path)  # a bare state dict, as the original RCAN code saves it
    read, used = read_weights(path, arch)
    assert used is None and set(read) == set(state)
    assert _equal(build_network_and_load(arch, path).net, state)
