"""The options schema is the one home of the plugin's options: README table, defaults, checks."""
import os

import pytest

from basicsr.models import build_model

from helpers import REPO, base_model_opt, save_random_teacher, tiny_arch
from mixprior_plugin import options_schema
from mixprior_plugin.models.kd_model import KDModel
from mixprior_plugin.models.mipkd_model import MiPKDModel, mixer_settings
from mixprior_plugin.utils.options import OptionError


def test_readme_option_table_is_the_schemas():
    readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
    table = options_schema.options_table()
    assert table in readme, 'README option table is stale: run python tools/gen_options.py --readme'
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
