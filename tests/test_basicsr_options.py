""""Any BasicSR option file runs unchanged": BasicSR's own 70 option files through mixprior's parsing.

Each YAML under ../shared/basicsr_options (BasicSR master's options/, unchanged) is parsed by
plain BasicSR's ``parse_options`` and by mixprior's entry-point parsing (its ``parse_options``
with option validation); the options dicts must be equal. Datasets are not built from the
options (their folders do not exist here); the file checks, which do refuse these files here, are
run separately and each refusal is matched with BasicSR failing on the same file.
"""
import contextlib
import copy
import glob
import io
import os
import random
import sys
import warnings

import pytest
import torch

from helpers import BASICSR_OPTIONS

FILES = sorted(glob.glob(os.path.join(BASICSR_OPTIONS, '**', '*.yml'), recursive=True))
IDS = [os.path.relpath(f, BASICSR_OPTIONS) for f in FILES]

# Where mixprior's option checks refuse one of BasicSR's files, BasicSR fails on it too (stated per file).
REFUSED_AND_BASICSR_FAILS = {
    # HiFaceGANModel builds train.feature_matching_opt with build_loss, but no GANFeatLoss is
    # registered in BasicSR master: BasicSR stops with KeyError when it builds the model.
    'train/HiFaceGAN/train_hifacegan.yml': ('train.feature_matching_opt.type', 'GANFeatLoss'),
}


def _parse(parse, path, is_train, root):
    """Run a parse_options as a command line would (argv, seeded ``random`` for a missing seed)."""
    argv = sys.argv
    sys.argv = ['train.py' if is_train else 'test.py', '-opt', path]
    random.seed(1234)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return parse(root, is_train)[0]
    finally:
        sys.argv = argv


@pytest.fixture(scope='module')
def parsers():
    """(plain BasicSR's parse_options, mixprior's): BasicSR's with its own YAML loader."""
    from mixprior_plugin import basicsr_fixes
    basicsr_fixes.apply()
    options_mod = sys.modules['basicsr.utils.options']
    originals = basicsr_fixes.ORIGINALS

    def plain(root, is_train):
        ours = options_mod.yaml_load
        options_mod.yaml_load = originals['yaml_load']
        try:
            return originals['parse_options'](root, is_train)
        finally:
            options_mod.yaml_load = ours

    return plain, {True: sys.modules['basicsr.train'].parse_options, False: sys.modules['basicsr.test'].parse_options}


def test_all_basicsr_option_files_are_here():
    if not FILES:
        pytest.skip(f'BasicSR option files not found in {BASICSR_OPTIONS}')
    assert len(FILES) == 70, len(FILES)


def _basicsr_fails_on_files(opt, message):
    """Show that plain BasicSR fails on what mixprior's file checks refused (``message``)."""
    from basicsr.data import build_dataset
    for key, value in opt['path'].items():
        if f'path.{key}:' in message:
            with pytest.raises(FileNotFoundError):
                torch.load(value, weights_only=True)
            return f'torch.load({value}) raises FileNotFoundError'
    for phase, dataset_opt in opt['datasets'].items():
        if f'datasets.{phase}.' in message or f'datasets.{phase} ' in message:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    dataset = build_dataset(copy.deepcopy(dataset_opt))
            except Exception as err:  # noqa: BLE001  (any failure of BasicSR is what we want to see)
                return f'BasicSR build_dataset raises {err.__class__.__name__}'
            assert len(dataset) == 0, f'BasicSR builds {phase} with {len(dataset)} items, but mixprior refused it'
            return 'BasicSR builds an empty dataset (nothing to train or test on)'
    raise AssertionError(f'the refusal names neither a path nor a dataset phase: {message}')


@pytest.mark.parametrize('path', FILES, ids=IDS)
def test_basicsr_option_file_parses_to_the_same_options(path, parsers, tmp_path, monkeypatch):
    from mixprior_plugin.utils import validation
    from mixprior_plugin.utils.options import OptionError
    plain, ours = parsers
    rel = os.path.relpath(path, BASICSR_OPTIONS)
    is_train = rel.startswith('train')
    monkeypatch.chdir(tmp_path)
    expected = _parse(plain, path, is_train, str(tmp_path))
    file_checks, validate_files = [], validation.validate_files
    monkeypatch.setattr(validation, 'validate_files', lambda opt: file_checks.append(copy.deepcopy(opt)))

    if rel in REFUSED_AND_BASICSR_FAILS:
        key, name = REFUSED_AND_BASICSR_FAILS[rel]
        with pytest.raises(OptionError, match=key.replace('.', r'\.')):
            _parse(ours[is_train], path, is_train, str(tmp_path))
        from basicsr.losses import build_loss
        with pytest.raises(KeyError, match=name):
            build_loss(dict(type=name))
        return

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        got = _parse(ours[is_train], path, is_train, str(tmp_path))
    assert file_checks, 'the file checks were not run'
    if not torch.cuda.is_available() and expected['num_gpu'] != 0:
        # the one intended difference: no CUDA here, so GPUs asked for fall back to CPU (BasicSR's
        # model would stop at its first .to('cuda'))
        assert got['num_gpu'] == 0 and any('no CUDA device' in str(w.message) for w in caught)
        got['num_gpu'] = expected['num_gpu']
    assert got == expected
    assert not os.listdir(tmp_path), 'parsing must not create anything'

    # The file checks refuse these files here (BasicSR's datasets/ and pretrained models are absent):
    # each refusal must be one BasicSR would also fail on. Then again without the weight files, so
    # that the dataset checks are matched with BasicSR too.
    opt = file_checks[0]
    without_weights = copy.deepcopy(opt)
    without_weights['path'] = {k: v for k, v in opt['path'].items() if 'pretrain_network' not in k}
    for checked in (opt, without_weights):
        with pytest.raises(OptionError) as info:
            validate_files(copy.deepcopy(checked))
        print(f'{rel}: refused ({info.value}); {_basicsr_fails_on_files(checked, str(info.value))}')
