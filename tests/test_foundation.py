"""Foundation: registration, entry points, train_pipeline (CPU resume, plain BasicSR options: test_basicsr_fixes.py)."""
import glob
import importlib
import inspect
import os
import pkgutil
import re

import pytest
from torch import nn

from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

from helpers import REPO, run_cli, tiny_sr_run


def plugin_components():
    """Every class defined in the plugin's archs/losses/models packages that should be registered."""
    found = []
    for pkg_name, registry, base in (('archs', ARCH_REGISTRY, nn.Module), ('losses', LOSS_REGISTRY, nn.Module),
                                     ('models', MODEL_REGISTRY, object)):
        pkg = importlib.import_module(f'mixprior_plugin.{pkg_name}')
        for info in pkgutil.iter_modules(pkg.__path__):
            suffix = {'archs': '_arch', 'losses': '_loss', 'models': '_model'}[pkg_name]
            if not info.name.endswith(suffix):
                continue
            module = importlib.import_module(f'{pkg.__name__}.{info.name}')
            for name, obj in vars(module).items():
                if (inspect.isclass(obj) and obj.__module__ == module.__name__ and issubclass(obj, base)
                        and not name.startswith('_') and getattr(obj, '_registered', True)):
                    if pkg_name == 'models' and not name.endswith('Model'):
                        continue
                    if pkg_name == 'losses' and not name.endswith('Loss'):
                        continue
                    if pkg_name == 'archs' and name not in registry:
                        # helper modules inside arch files must be private or registered
                        pytest.fail(f'{module.__name__}.{name} is public but not registered')
                    found.append((registry, name, obj))
    return found


COMPONENTS = plugin_components()


def test_components_found():
    names = {name for _, name, _ in COMPONENTS}
    assert {'KDModel', 'PriorMixer', 'FeatureConnector', 'FeatureNormalizer'} <= names


@pytest.mark.parametrize('registry,name,obj', COMPONENTS, ids=[c[1] for c in COMPONENTS])
def test_component_registered_and_unique(registry, name, obj):
    assert name in registry, f'{name} missing from {registry._name} registry'
    # the registered object is ours, not a BasicSR class of the same name
    assert registry.get(name) is obj
    assert obj.__module__.startswith('mixprior_plugin.')


def test_entry_points_declared():
    setup_py = open(os.path.join(REPO, 'setup.py')).read()
    assert 'mixprior-train=mixprior_plugin.train:main' in setup_py
    assert 'mixprior-test=mixprior_plugin.test:main' in setup_py
    # installed console scripts exist next to the interpreter running the tests
    import shutil
    import sys
    bindir = os.path.dirname(sys.executable)
    for script in ('mixprior-train', 'mixprior-test'):
        assert os.path.exists(os.path.join(bindir, script)) or shutil.which(script), script


def test_train_pipeline_20_iters_with_validation(tmp_path, tiny_data):
    opt_file = tiny_sr_run(tmp_path, tiny_data, 'sr20', 20)
    proc = run_cli(['-m', 'mixprior_plugin.train', '-opt', opt_file], cwd=str(tmp_path))
    exp = tmp_path / 'experiments' / 'sr20'
    log = open(glob.glob(str(exp / 'train_sr20_*.log'))[0]).read()
    assert 'Validation tinyval' in log and re.search(r'# psnr: \d+\.\d+', log), log[-2000:]
    assert (exp / 'models' / 'net_g_20.pth').exists()
    assert (exp / 'models' / 'net_g_latest.pth').exists()
    assert (exp / 'training_states' / '20.state').exists()
    assert (tmp_path / 'tb_logger' / 'sr20').is_dir()
    assert 'Traceback' not in proc.stderr
