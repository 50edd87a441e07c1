"""The options schema is the one home of the plugin's options: docs table, defaults, checks, every key read."""
import copy
import os
import sys

import pytest
import torch

from basicsr.models import build_model
from basicsr.utils.registry import MODEL_REGISTRY

import mixprior_plugin
from helpers import REPO, base_model_opt, save_random_teacher, tiny_arch
from mixprior_plugin import options_schema
from mixprior_plugin.models.kd_model import KDModel
from mixprior_plugin.models.mipkd_model import MiPKDModel, mixer_settings
from mixprior_plugin.utils.options import OptionError
from test_realworld import MODEL_TYPES, draw_batch, hr_data, random_vgg  # noqa: F401  (fixtures)
from test_realworld import model_opt as realworld_options


def test_docs_option_table_is_the_schemas():
    doc = open(os.path.join(REPO, 'docs', 'options.md'), encoding='utf-8').read()
    table = options_schema.options_table()
    assert table in doc, 'docs/options.md option table is stale: run python tools/gen_options.py --table'
    rows = [line for line in table.splitlines() if line.startswith('| `')]
    assert len(rows) == sum(len(opts) for opts in options_schema.SCHEMA.values())
    assert '| `mixer.route.prob` | `0.5` | number [0, 1] | MiPKDModel |' in table
    assert '| `train.bpm_opt` | `{type: L1Loss, loss_weight: 0.1}` |' in table


def test_replace_table_rewrites_only_between_the_markers():
    text = f'intro\n{options_schema.TABLE_START}\nold rows\n{options_schema.TABLE_END}\noutro\n'
    new = options_schema.replace_table(text)
    assert new.startswith('intro\n') and new.endswith('\noutro\n') and 'old rows' not in new
    assert options_schema.replace_table(new) == new
    with pytest.raises(ValueError, match='no option table markers'):
        options_schema.replace_table('no table here')


def _mipkd(tmp_path, **sections):
    teacher = save_random_teacher(str(tmp_path / 'teacher.pth'), tiny_arch('EDSR', 't', 2))
    opt = base_model_opt(tiny_arch('EDSR', 'g', 2), tiny_arch('EDSR', 't', 2), 2, teacher, model_type='MiPKDModel',
                         distill=dict(num_stages=2))
    opt.update(sections)
    return build_model(opt)


def test_a_default_changed_in_the_schema_reaches_a_built_model(tmp_path, monkeypatch):
    """No second copy: the model reads mixer, distill and loss defaults from the schema when it is built."""
    before = _mipkd(tmp_path)
    assert before.net_extra['mixers'][0].mask_ratio == 0.5 and before.cri_bpm.loss_weight == 0.1
    monkeypatch.setattr(options_schema.get('mixer', 'mask.ratio'), 'default', 0.25)
    monkeypatch.setattr(options_schema.get('mixer', 'encoder.type'), 'default', 'mlp')
    monkeypatch.setattr(options_schema.get('train', 'bpm_opt'), 'default', dict(type='L1Loss', loss_weight=0.3))
    monkeypatch.setattr(options_schema.get('train', 'kd_opt'), 'default', dict(type='MSELoss', loss_weight=2.0))
    monkeypatch.setattr(options_schema.get('distill', 'feat_norm_momentum'), 'default', 0.9)
    model = _mipkd(tmp_path)
    mixer = model.net_extra['mixers'][0]
    assert mixer.mask_ratio == 0.25
    assert mixer.enc_t[0].kernel_size == (1, 1)  # mlp encoders
    assert model.cri_bpm.loss_weight == 0.3
    assert type(model.cri_kd).__name__ == 'MSELoss' and model.cri_kd.loss_weight == 2.0
    assert model.net_extra['feat_norm'].momentum == 0.9
    # an explicit value still wins over the default
    assert _mipkd(tmp_path, mixer=dict(mask=dict(ratio=0.75))).net_extra['mixers'][0].mask_ratio == 0.75


def test_generated_option_files_write_the_schema_defaults():
    import yaml
    path = os.path.join(REPO, 'options', 'train', 'MiPKD', 'train_MiPKD_EDSR_C256B32-C64B32_x4.yml')
    opt = yaml.safe_load(open(path))
    assert opt['mixer'] == options_schema.defaults('mixer')
    assert 'grid_size' not in opt['mixer']['mask']  # read only by the grid mask
    for key, loss in options_schema.loss_defaults('MiPKDModel').items():
        assert opt['train'][key] == loss


@pytest.mark.parametrize('section,value,text', [
    ('mixer', dict(mask=dict(ratio=1.5)), 'Option mixer.mask.ratio=1.5 must lie in [0, 1]'),
    ('mixer', dict(route=dict(batch_fraction=0)), 'Option mixer.route.batch_fraction=0 must lie in (0, 1]'),
    ('mixer', dict(route=dict(k0='all')), "Option mixer.route.k0='all' is not one of routed, any"),
    ('mixer', dict(mask=dict(grid_size=0)), 'Option mixer.mask.grid_size=0 must be a positive integer'),
    ('mixer', dict(latent_channels=True), 'mixer.latent_channels=True must be a positive integer (or ~'),
    ('mixer', dict(ae_warmup_iters=-1), 'Option mixer.ae_warmup_iters=-1 must be >= 0'),
    ('mixer', dict(detach_teacher_latent=1), 'Option mixer.detach_teacher_latent=1 is not one of true, false'),
    ('mixer', dict(mask=dict(ratio='half')), 'Option mixer.mask.ratio must be int/float'),
    ('mixer', dict(encoder=dict(kind='cnn')), 'Unknown option mixer.encoder.kind (allowed: sharing, type)'),
    ('distill', dict(feat_norm='yes'), "Option distill.feat_norm='yes' is not one of true, false, auto, teacher"),
    ('distill', dict(feat_norm_momentum=1.0), 'Option distill.feat_norm_momentum=1.0 must lie in [0, 1)'),
    ('distill', dict(num_stages=0), 'Option distill.num_stages=0 must be a positive integer'),
    ('distill', dict(stages_t=8), 'Option distill.stages_t must be list/tuple'),
    ('distill', dict(check_adapters='no'), "Option distill.check_adapters='no' is not one of true, false"),
])
def test_bad_values_are_refused_before_anything_is_built(section, value, text):
    opt = dict(model_type='MiPKDModel', network_t=dict(type='EDSR'), network_g=dict(type='EDSR'),
               path=dict(pretrain_network_t='teacher.pth'), train={}, **{section: value})
    with pytest.raises(OptionError) as info:
        MiPKDModel.check_options(opt, check_files=False)
    assert text in str(info.value)


def test_models_read_their_keys_from_the_schema():
    assert set(KDModel.EXTRA_SECTIONS['distill']) == {o.key for o in options_schema.SCHEMA['distill']}
    assert set(MiPKDModel.EXTRA_SECTIONS['mixer']) == {o.key.split('.')[0] for o in options_schema.SCHEMA['mixer']}
    assert {'fpm_opt', 'bpm_opt', 'ae_opt'} <= set(MiPKDModel.TRAIN_KEYS)
    assert not {'fpm_opt', 'bpm_opt', 'ae_opt'} & set(KDModel.TRAIN_KEYS)
    settings = mixer_settings({})
    assert settings == {o.name: o.default for o in options_schema.SCHEMA['mixer']}
    assert mixer_settings(dict(mixer=dict(latent_channels=None)))['latent_channels'] is None


def test_no_reference_to_files_outside_the_repository():
    """Package, tools, README and docs name no file outside the repository (such as ../shared/...)."""
    found = []
    for top in ('mixprior_plugin', 'tools', 'docs', 'README.md'):
        path = os.path.join(REPO, top)
        files = [path] if os.path.isfile(path) else [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                                                       if f.endswith(('.py', '.md', '.sh', '.yml'))]
        for name in files:
            for i, line in enumerate(open(name, encoding='utf-8'), 1):
                if 'shared/' in line:
                    found.append(f'{os.path.relpath(name, REPO)}:{i}: {line.strip()}')
    assert not found, '\n'.join(found)


# ---- every key a model reads is declared ----------------------------------------------------------------
PLUGIN_DIR = os.path.dirname(os.path.abspath(mixprior_plugin.__file__))


class ReadRecorder(dict):
    """An option dict that records the dotted key of every read by the plugin's own code.

    Reads are ``[]``, ``get``, ``in``, ``setdefault`` and ``pop``; nested dicts (also inside lists)
    are recorders too, and a deep copy records into the same log. Reads from BasicSR's code are
    BasicSR's business and not recorded.

    Args:
        data (dict): The options.
        log (set[tuple[str, str]]): Filled with ``(dotted key, reading file:line)``.
        prefix (str): Dotted path of this dict ('' at the top).
    """

    def __init__(self, data, log, prefix=''):
        super().__init__()
        self._log, self._prefix = log, prefix
        for key, value in data.items():
            dict.__setitem__(self, key, self._wrap(key, value))

    def _wrap(self, key, value):
        if isinstance(value, dict) and not isinstance(value, ReadRecorder):
            return ReadRecorder(value, self._log, f'{self._prefix}{key}.')
        if isinstance(value, list):
            return [self._wrap(key, v) if isinstance(v, dict) else v for v in value]
        return value

    def _note(self, key):
        caller = sys._getframe(2)
        if caller.f_code.co_filename.startswith(PLUGIN_DIR):
            where = f'{os.path.relpath(caller.f_code.co_filename, REPO)}:{caller.f_lineno}'
            self._log.add((f'{self._prefix}{key}', where))

    def __getitem__(self, key):
        self._note(key)
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        self._note(key)
        return dict.get(self, key, default)

    def __contains__(self, key):
        self._note(key)
        return dict.__contains__(self, key)

    def setdefault(self, key, default=None):
        self._note(key)
        return dict.setdefault(self, key, self._wrap(key, default))

    def pop(self, key, *default):
        self._note(key)
        return dict.pop(self, key, *default)

    def __setitem__(self, key, value):
        dict.__setitem__(self, key, self._wrap(key, value))

    def __deepcopy__(self, memo):
        return ReadRecorder(copy.deepcopy(dict(self), memo), self._log, self._prefix)


def _plugin_model_types():
    return sorted(name for name, cls in MODEL_REGISTRY if cls.__module__.startswith('mixprior_plugin.'))


@pytest.mark.parametrize('model_type', _plugin_model_types())
def test_every_key_a_model_reads_is_declared_in_the_schema(model_type, hr_data, random_vgg, tmp_path):  # noqa: F811
    """Build the model and train one step with its options in a :class:`ReadRecorder`: every key the
    plugin's code read must be declared in the schema (a new key read ad hoc fails here)."""
    if model_type in MODEL_TYPES:  # the real-world and GAN models, on their own data
        opt = realworld_options(model_type, hr_data, train=dict(feat_opt=dict(type='FitNetLoss', loss_weight=1.0))
                                if 'MiPKD' not in model_type else None)
        batch = draw_batch(model_type, hr_data, 1)
    else:
        teacher = save_random_teacher(str(tmp_path / 'teacher.pth'), tiny_arch('EDSR', 't', 2))
        opt = base_model_opt(tiny_arch('EDSR', 'g', 2), tiny_arch('EDSR', 't', 2), 2, teacher,
                             model_type=model_type, distill=dict(num_stages=2),
                             train=dict(feat_opt=dict(type='FitNetLoss', loss_weight=1.0)))
        g = torch.Generator().manual_seed(0)
        batch = dict(lq=torch.rand(2, 3, 16, 16, generator=g), gt=torch.rand(2, 3, 32, 32, generator=g))
    log = set()
    model = MODEL_REGISTRY.get(model_type)(ReadRecorder(opt, log))
    model.feed_data(batch)
    model.optimize_parameters(1)
    read = {key for key, _ in log}
    undeclared = sorted(f'{key} ({where})' for key, where in log if not options_schema.declares(key))
    assert not undeclared, 'keys read but not declared in mixprior_plugin/options_schema.py:\n' + '\n'.join(undeclared)
    assert {'train.kd_opt', 'path.pretrain_network_t', 'distill.num_stages'} <= read
