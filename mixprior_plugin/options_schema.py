"""Every option key the plugin reads, in one place: its own keys, and the keys of BasicSR it reads too.

Every key has a type, a default, its allowed values or range and a one-line meaning. The code
reads option values through here (:func:`settings` for a section, :func:`value` for one key,
:func:`check_section` for the checks), the option generator (tools/gen_options.py) and the demo
write the defaults from here (:func:`defaults`), and docs/options.md's table is
:func:`options_table` (kept current by ``tools/gen_options.py --check``). A default changed here is
changed everywhere; a test reads every key a model reads and fails on one not declared here.

Sections are ``distill``, ``mixer``, ``train``, ``path`` and the top level (``''``). Keys are dotted
paths inside their section (``mask.ratio`` is ``mixer: {mask: {ratio: ...}}``). A key is the
plugin's own (checked here) or BasicSR's (``owner='BasicSR'``: its default and checks are BasicSR's;
declared because the plugin reads it too).
"""
import copy
import re
from collections import OrderedDict

from basicsr.utils.registry import MODEL_REGISTRY

from mixprior_plugin.archs.prior_mixer_arch import ENCODER_TYPES, MASK_TYPES, SHARING_MODES
from mixprior_plugin.utils.options import (
    TEACHER_NETWORK_ALIASES,
    TEACHER_PATH_ALIASES,
    OptionError,
    check_known_keys,
    check_type,
)

ROUTE_MODES = ('per_stage', 'single_switch')
TAIL_OWNERS = ('student', 'last_stage')
K0_MODES = ('routed', 'any')
FEAT_NORM_MODES = ('auto', 'teacher', 'per_network', 'off')
L1 = 'L1Loss'
PLUGIN, BASICSR = 'plugin', 'BasicSR'
TOP = ''  # the section name of top-level keys


class Option:
    """One plugin option.

    Args:
        key (str): Dotted path inside its section, e.g. 'mask.ratio'.
        types (type | tuple[type]): Accepted Python types of a set value (bool is never a number).
        default: Value used when the key is absent or ``~`` (None: no value, the code decides).
        meaning (str): One line for the README table.
        choices (tuple | None): Allowed values (for strings and booleans).
        low (float | None): Smallest allowed value (inclusive unless ``low_open``).
        high (float | None): Largest allowed value (inclusive unless ``high_open``).
        low_open (bool): The range excludes ``low``.
        high_open (bool): The range excludes ``high``.
        nullable (bool): ``~`` is a value of its own (not replaced by the default).
        when (tuple[str, object] | None): ``(key, value)``: the option is read only when that key of
            the same section has that value (left out of generated option files otherwise).
        name (str | None): Flat name in :func:`settings`'s result (default: the key with dots as
            underscores).
        models (tuple[str]): Model types that read it (a model type reads the options of its base
            classes too; every KD model is a KDModel; 'BaseModel': every model type).
        owner (str): 'plugin' (checked by :meth:`check`) or 'BasicSR' (BasicSR's key and default,
            checked by BasicSR and utils/validation).
        synonyms (dict | None): Values read as another, e.g. ``{False: 'off'}`` (YAML reads a bare
            ``off`` as false).
        spellings (tuple[str]): Other keys read as this one (renamed on reading, with a notice).
    """

    def __init__(self, key, types, default, meaning, choices=None, low=None, high=None, low_open=False,
                 high_open=False, nullable=False, when=None, name=None, models=('KDModel', ), owner=PLUGIN,
                 synonyms=None, spellings=()):
        self.key, self.types, self.default, self.meaning = key, types, default, meaning
        self.choices, self.low, self.high = choices, low, high
        self.low_open, self.high_open, self.nullable, self.when = low_open, high_open, nullable, when
        self.name = name or key.replace('.', '_')
        self.models, self.owner = models, owner
        self.synonyms, self.spellings = synonyms or {}, spellings

    def read(self, value):
        """A set ``value`` as the code reads it (a synonym replaced)."""
        for synonym, meant in self.synonyms.items():
            if value is synonym or (value == synonym and type(value) is type(synonym)):
                return meant
        return value

    def range_text(self):
        """The allowed range as text, e.g. '(0, 1]' or '>= 1'; '' without bounds."""
        if self.low is not None and self.high is not None:
            return f'{"(" if self.low_open else "["}{_num(self.low)}, {_num(self.high)}{")" if self.high_open else "]"}'
        if self.low is not None:
            return f'{">" if self.low_open else ">="} {_num(self.low)}'
        if self.high is not None:
            return f'{"<" if self.high_open else "<="} {_num(self.high)}'
        return ''

    def check(self, value, section):
        """Raise OptionError naming ``section.key`` when a set ``value`` is not allowed (BasicSR's keys: never)."""
        full = f'{section}.{self.key}' if section else self.key
        if self.owner != PLUGIN:
            return value
        value = self.read(value)
        if self.choices is not None:
            if not any(c == value and type(c) is type(value) for c in self.choices):
                raise OptionError(f'Option {full}={value!r} is not one of {", ".join(map(_yaml, self.choices))}')
            return value
        if self.types is int and self.low == 1 and (not isinstance(value, int) or isinstance(value, bool) or
                                                    value < 1):
            none = re.search(r'\(~: ([^)]*)\)', self.meaning)
            raise OptionError(f'Option {full}={value!r} must be a positive integer'
                              + (f' (or ~ for {none.group(1)})' if self.nullable and none else ''))
        check_type(value, self.types, full)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
            too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
            if too_low or too_high:
                text = self.range_text()
                raise OptionError(f'Option {full}={value} must lie in {text}' if text.startswith(('[', '('))
                                  else f'Option {full}={value} must be {text}')
        return value


def _num(v):
    return f'{v:g}' if isinstance(v, float) else str(v)


def _yaml(v):
    """A value as YAML writes it (for messages and the README)."""
    if v is None:
        return '~'
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, dict):
        return '{' + ', '.join(f'{k}: {_yaml(x)}' for k, x in v.items()) + '}'
    return repr(v) if isinstance(v, (int, float)) else str(v)


def _spellings_of(path_key):
    return tuple(alias for alias, key in TEACHER_PATH_ALIASES.items() if key == path_key)


def _loss(weight):
    return dict(type=L1, loss_weight=weight)


MIPKD = ('MiPKDModel', )
GAN = ('SRGANModel', )  # BasicSR's base of ESRGANModel and RealESRGANModel
SYNTHESIS = ('RealESRNetModel', 'RealESRGANModel')
EVERY = ('BaseModel', )
# section -> options, in the order option files write them
SCHEMA = OrderedDict(
    distill=(
        Option('num_stages', int, None, 'distillation points: equal split of both bodies (~: the family default, '
               'EDSR 4, RCAN 5, SwinIR 2)', low=1),
        Option('stages_t', (list, tuple), None, 'teacher block index (1-based) ending each stage; overrides '
               'num_stages'),
        Option('stages_g', (list, tuple), None, 'student block index ending each stage (as many as stages_t)'),
        Option('adapter_t', dict, None, 'teacher stage adapter for archs other than EDSR/RCAN/SwinIR ({type: '
               'GenericBodyAdapter or SequentialBodyAdapter, ...})'),
        Option('adapter_g', dict, None, 'student stage adapter (as adapter_t)'),
        Option('feat_norm', (bool, str), 'auto', 'divide features by a running scale: auto = teacher for one arch '
               'class, else per_network; true = teacher; false or ~ = off',
               choices=(True, False) + FEAT_NORM_MODES, nullable=True),
        Option('feat_norm_momentum', (int, float), 0.99, 'momentum of the running feature scale', low=0, high=1,
               high_open=True),
        Option('check_adapters', bool, True, 'check that the stage adapters reproduce each network\'s forward',
               choices=(True, False)),
    ),
    mixer=(
        Option('latent_channels', int, None, 'C_z, width of the common latent (~: the student width)', low=1,
               nullable=True, models=MIPKD),
        Option('encoder.type', str, 'cnn', 'encoders and decoders: cnn (3x3 convs) or mlp (1x1 convs)',
               choices=ENCODER_TYPES, name='encoder_type', models=MIPKD),
        Option('encoder.sharing', str, 'separate', 'one encoder per network, one shared, or none (mix features '
               'directly)', choices=SHARING_MODES, name='sharing', models=MIPKD),
        Option('mask.type', str, 'random3d', 'mixing mask: i.i.d. per element (the paper), per pixel, per channel, '
               'per grid cell, or where latents differ most', choices=MASK_TYPES, name='mask_type', models=MIPKD),
        Option('mask.ratio', (int, float), 0.5, 'expected share of teacher latents in the mask', low=0, high=1,
               name='mask_ratio', models=MIPKD),
        Option('mask.grid_size', int, 4, 'cell size in pixels of the grid mask', low=1, when=('mask.type', 'grid'),
               name='grid_size', models=MIPKD),
        Option('route.mode', str, 'per_stage', 'block mixer: each stage after k0 drawn on its own, or one draw for '
               'all', choices=ROUTE_MODES, name='route_mode', models=MIPKD),
        Option('route.prob', (int, float), 0.5, 'probability that a routed stage is the student\'s', low=0, high=1,
               name='route_prob', models=MIPKD),
        Option('route.tail', str, 'student', 'owner of the hybrid\'s tail: the student, or the last stage\'s '
               'network', choices=TAIL_OWNERS, name='tail', models=MIPKD),
        Option('route.batch_fraction', (int, float), 1.0, 'share of the batch the block path runs on', low=0,
               high=1, low_open=True, name='batch_fraction', models=MIPKD),
        Option('route.k0', str, 'routed', 'k0 leaves at least one routed stage (routed), or may be the last point '
               '(any)', choices=K0_MODES, name='k0_mode', models=MIPKD),
        Option('detach_teacher_latent', bool, False, 'mix Z_T detached: L_FPM and L_BPM do not train the teacher '
               'encoder', choices=(True, False), models=MIPKD),
        Option('ae_warmup_iters', int, 0, 'first iterations with only the pixel, KD and auto-encoder terms', low=0,
               models=MIPKD),
    ),
    train=(
        Option('kd_opt', dict, _loss(1.0), 'output (logits) KD loss; loss_weight 0 switches it off'),
        Option('feat_opt', (dict, list), None, 'feature-KD loss(es) at every distillation point (FitNetLoss, ATLoss, '
               'FAKDLoss, RKDLoss)'),
        Option('optim_extra', dict, None, 'optimizer of connectors and mixers (~: a copy of optim_g)'),
        Option('amp', str, 'off', 'autocast dtype of the training step (validation and saved weights stay fp32; a '
               'bare off, which YAML reads as false, is off)', choices=('off', 'bf16', 'fp16'),
               synonyms={False: 'off'}),
        Option('channels_last', bool, False, 'networks and batches in the channels_last memory format',
               choices=(True, False)),
        Option('block_path_every', int, 1, 'run the Block Prior Mixer\'s hybrid every N-th step (1: every step, as '
               'published)', low=1, models=MIPKD),
        Option('fpm_opt', dict, _loss(1.0), 'Feature Prior Mixer loss L_FPM', models=MIPKD),
        Option('bpm_opt', dict, _loss(0.1), 'Block Prior Mixer loss L_BPM', models=MIPKD),
        Option('ae_opt', dict, _loss(1.0), 'auto-encoder loss L_AE (trains the mixers only)', models=MIPKD),
        # BasicSR's: SRModel's, then the GAN models'
        Option('ema_decay', (int, float), 0, 'EMA decay of net_g_ema (0: no EMA)', owner=BASICSR),
        Option('optim_g', dict, None, 'the student\'s optimizer', owner=BASICSR),
        Option('scheduler', dict, None, 'learning-rate schedule of every optimizer', owner=BASICSR),
        Option('total_iter', (int, float), None, 'training iterations', owner=BASICSR),
        Option('warmup_iter', int, -1, 'learning-rate warm-up iterations (-1: none)', owner=BASICSR),
        Option('pixel_opt', dict, None, 'pixel loss to the HR image', owner=BASICSR),
        Option('optim_d', dict, None, 'the discriminator\'s optimizer', models=GAN, owner=BASICSR),
        Option('perceptual_opt', dict, None, 'perceptual (VGG feature) loss', models=GAN, owner=BASICSR),
        Option('gan_opt', dict, None, 'adversarial loss', models=GAN, owner=BASICSR),
        Option('net_d_iters', int, 1, 'the generator is updated every net_d_iters iterations', models=GAN,
               owner=BASICSR),
        Option('net_d_init_iters', int, 0, 'first iterations that update the discriminator only', models=GAN,
               owner=BASICSR),
        Option('ldl_opt', dict, None, 'artifact map (LDL) loss', models=('RealESRGANModel', ), owner=BASICSR),
    ),
    path=(
        Option('pretrain_network_t', str, None, 'the teacher\'s trained weights (a BasicSR checkpoint); required '
               'for training', spellings=_spellings_of('pretrain_network_t')),
        Option('teacher_param_key', str, 'params_ema', 'key of the teacher\'s weights in its checkpoint (params_ema '
               'falls back to params)'),
        Option('strict_load_t', bool, True, 'load the teacher strictly (false: a partial load, reported)',
               choices=(True, False), spellings=_spellings_of('strict_load_t')),
        # BasicSR's
        Option('ignore_resume_networks', list, None, 'networks whose weights a resume leaves alone (the plugin '
               'adds network_t)', models=EVERY, owner=BASICSR),
        Option('models', str, None, 'folder of the saved networks (set by BasicSR)', models=EVERY, owner=BASICSR),
        Option('training_states', str, None, 'folder of the training states (set by BasicSR)', models=EVERY,
               owner=BASICSR),
        Option('resume_state', str, None, 'training state to resume from', models=EVERY, owner=BASICSR),
        Option('pretrain_network_g', str, None, 'the student\'s weights (testing: the ones evaluated)', models=EVERY,
               owner=BASICSR),
        Option('param_key_g', str, 'params', 'key of the student\'s weights in its checkpoint', models=EVERY,
               owner=BASICSR),
        Option('strict_load_g', bool, True, 'load the student strictly', models=EVERY, owner=BASICSR),
        Option('pretrain_network_d', str, None, 'the discriminator\'s weights', models=GAN, owner=BASICSR),
    ),
    **{TOP: (
        Option('network_t', dict, None, 'the teacher\'s arch ({type: <registered arch>, ...its arguments}); '
               'required', spellings=TEACHER_NETWORK_ALIASES),
        Option('exact_resume', bool, None, 'a resumed run trains on the batches and random draws the interrupted '
               'run would have (~: on for the plugin\'s models, off for BasicSR\'s)', choices=(True, False),
               nullable=True, models=EVERY),
        Option('find_unused_parameters', bool, True, 'DDP looks for parameters a step leaves unused (true: a '
               'distillation step\'s trainable set changes from step to step and with zero loss weights)',
               choices=(True, False), models=EVERY),
        Option('synth_crop_size', int, None, 'random HR crop taken before the degradation synthesis (~: the whole '
               '400x400 sample)', low=1, nullable=True, models=SYNTHESIS),
        # BasicSR's
        Option('model_type', str, None, 'registered model class', models=EVERY, owner=BASICSR),
        Option('scale', int, None, 'upscaling factor', models=EVERY, owner=BASICSR),
        Option('num_gpu', (int, str), None, 'GPUs (0: the CPU)', models=EVERY, owner=BASICSR),
        Option('manual_seed', int, None, 'random seed', models=EVERY, owner=BASICSR),
        Option('is_train', bool, None, 'training or testing (set by BasicSR)', models=EVERY, owner=BASICSR),
        Option('dist', bool, False, 'launched by torchrun (set by BasicSR)', models=EVERY, owner=BASICSR),
        Option('rank', int, 0, 'this process\'s rank (set by BasicSR)', models=EVERY, owner=BASICSR),
        Option('world_size', int, 1, 'processes (set by BasicSR)', models=EVERY, owner=BASICSR),
        Option('network_g', dict, None, 'the student\'s arch', models=EVERY, owner=BASICSR),
        Option('network_d', dict, None, 'the discriminator\'s arch', models=GAN, owner=BASICSR),
        Option('datasets', dict, None, 'data sets by phase (train, val, test_1, ...)', models=EVERY, owner=BASICSR),
        Option('val', dict, None, 'validation settings', models=EVERY, owner=BASICSR),
        Option('gt_size', int, None, 'HR training crop of the synthesised pairs', models=SYNTHESIS, owner=BASICSR),
        Option('queue_size', int, 180, 'training pair pool', models=SYNTHESIS, owner=BASICSR),
        Option('high_order_degradation', bool, True, 'synthesise the LR (false: train on the data set\'s pairs)',
               models=SYNTHESIS, owner=BASICSR),
        Option('resize_range', list, None, 'first resize of the synthesis (its low end limits synth_crop_size)',
               models=SYNTHESIS, owner=BASICSR),
    )},
)
SECTIONS = tuple(SCHEMA)
# The plugin's own sections (read by the models that list them in EXTRA_SECTIONS).
PLUGIN_SECTIONS = ('distill', 'mixer')
# Sections that hold BasicSR's keys too: unknown keys there are BasicSR's business (see utils/validation).
OPEN_SECTIONS = ('path', TOP)


def _model_names(model):
    """Class names a model type answers to: its class and base classes (a name not registered: a KD model's)."""
    if isinstance(model, str):
        model = dict(iter(MODEL_REGISTRY)).get(model, model)
    if isinstance(model, type):
        return {c.__name__ for c in model.__mro__}
    return {model, 'KDModel', 'SRModel', 'BaseModel'}


def options_of(section, model='MiPKDModel'):
    """The options of ``section`` read by ``model``.

    Args:
        section (str): 'distill', 'mixer', 'train', 'path' or '' (the top level).
        model (str | type): Model type name ('KDModel', 'MiPKDModel') or class (its base classes
            count: a subclass of MiPKDModel reads MiPKD's options).
    """
    if section not in SCHEMA:
        raise KeyError(f'no plugin section {section!r} (sections: {", ".join(SECTIONS)})')
    names = _model_names(model)
    return tuple(o for o in SCHEMA[section] if names.intersection(o.models))


def get(section, key):
    """The :class:`Option` at ``section.key``."""
    for o in SCHEMA[section]:
        if o.key == key:
            return o
    raise KeyError(f'no option {section}.{key}')


def default(section, key):
    """A fresh copy of the default of ``section.key``."""
    value = get(section, key).default
    return copy.deepcopy(value)


def allowed_keys(section, model='MiPKDModel'):
    """Allowed keys of ``section`` as :func:`~mixprior_plugin.utils.options.check_known_keys` takes them.

    Returns:
        dict: Key -> None, or -> tuple of sub-keys for a nested group (``mask``: ('type', 'ratio', ...)).
    """
    out = OrderedDict()
    for o in options_of(section, model):
        head, _, tail = o.key.partition('.')
        if tail:
            out[head] = (out.get(head) or ()) + (tail, )
        else:
            out[head] = None
    return out


_ABSENT = object()


def _lookup(section_opt, key):
    """The value at dotted ``key``, or _ABSENT when the key (or a group above it) is not set."""
    node = section_opt
    for part in key.split('.'):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _section(opt, section):
    """The dict holding ``section``'s keys: ``opt[section]``, or ``opt`` itself for the top level."""
    return opt if section == TOP else opt.get(section)


def _full(section, key):
    return f'{section}.{key}' if section else key


def check_section(opt, section, model='MiPKDModel'):
    """Refuse unknown keys and values of a wrong type or out of range in ``opt[section]``.

    Errors name the key (``Option mixer.mask.ratio=1.5 must lie in [0, 1]``). In the sections that
    hold BasicSR's keys too (``path``, the top level) unknown keys are left to utils/validation; the
    loss and optimizer dicts of ``train`` are checked by utils/validation and BasicSR.

    Args:
        opt (dict): Options.
        section (str): A section of :data:`SCHEMA`.
        model (str | type): Model type whose options apply (see :func:`options_of`).

    Raises:
        OptionError: The first unknown or bad key.
    """
    sec = _section(opt, section)
    if section not in OPEN_SECTIONS:
        check_known_keys(sec, allowed_keys(section, model), section)
    for o in options_of(section, model):
        found = _lookup(sec, o.key)
        if found is not _ABSENT and found is not None:
            o.check(found, section)


def _read(opt, section, o):
    found = _lookup(_section(opt, section), o.key)
    missing = found is _ABSENT or (found is None and not o.nullable)
    return default(section, o.key) if missing else o.read(found)


def settings(opt, section, model='MiPKDModel'):
    """``opt[section]`` checked, with every default filled in, as a flat dict.

    Args:
        opt (dict): Options.
        section (str): A section of :data:`SCHEMA`.
        model (str | type): Model type whose options apply.

    Returns:
        dict: Option name (:attr:`Option.name`, e.g. 'mask_ratio') -> value.
    """
    check_section(opt, section, model)
    return {o.name: _read(opt, section, o) for o in options_of(section, model)}


def value(opt, section, key):
    """The value of one key, checked, or its default when it is not set.

    Args:
        opt (dict): Options.
        section (str): A section of :data:`SCHEMA` ('' for the top level).
        key (str): Dotted key inside the section.

    Raises:
        OptionError: The set value is not allowed (the message names the key).
    """
    o = get(section, key)
    found = _lookup(_section(opt, section), key)
    if found is not _ABSENT and found is not None:
        o.check(found, section)
    return _read(opt, section, o)


def is_set(opt, section, key):
    """Whether ``section.key`` is set in ``opt`` (not absent, not ``~``)."""
    get(section, key)  # a key the schema does not declare is a mistake of the caller
    found = _lookup(_section(opt, section), key)
    return found is not _ABSENT and found is not None


def spellings(section):
    """{other spelling: key} of ``section``'s keys (community names of the teacher options)."""
    return {alias: o.key for o in SCHEMA[section] for alias in o.spellings}


def declares(dotted):
    """Whether the schema declares the option at ``dotted`` (e.g. 'train.kd_opt', 'scale').

    A key inside a dict-valued option (a loss dict, an arch, a data set) is declared with it, and so
    is a group of nested keys (``mixer.mask``) and another spelling of a key.
    """
    for section, options in SCHEMA.items():
        if section and dotted == section:
            return True
        prefix = f'{section}.' if section else ''
        if not dotted.startswith(prefix):
            continue
        key = dotted[len(prefix):]
        for o in options:
            if key in (o.key, *o.spellings) or o.key.startswith(key + '.'):
                return True
            if o.types is dict or (isinstance(o.types, tuple) and dict in o.types):
                if key.startswith(o.key + '.'):
                    return True
    return False


def defaults(section, model='MiPKDModel', active_only=True):
    """The defaults of ``section`` as a nested option dict, in schema order (what option files write).

    Args:
        section (str): 'distill', 'mixer' or 'train'.
        model (str): Model type whose options apply.
        active_only (bool): Leave out options that the defaults do not read (``when`` not met).
    """
    flat = {o.key: o.default for o in options_of(section, model)}
    out = {}
    for o in options_of(section, model):
        if active_only and o.when is not None and flat.get(o.when[0]) != o.when[1]:
            continue
        node = out
        *parents, leaf = o.key.split('.')
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = default(section, o.key)
    return out


def loss_defaults(model='MiPKDModel', own=False):
    """{train key: default loss dict} of the loss terms that have a default, in schema order.

    Args:
        model (str | type): Model type (see :func:`options_of`).
        own (bool): Only the terms the model adds to KDModel's (MiPKDModel: fpm_opt, bpm_opt, ae_opt).
    """
    inherited = {o.key for o in options_of('train', 'KDModel')} if own else set()
    return dict((o.key, default('train', o.key)) for o in options_of('train', model)
                       if o.key.endswith('_opt') and o.default is not None and o.key not in inherited)


def train_keys(model):
    """The keys of ``train`` read by ``model`` (BasicSR's and the plugin's), in schema order."""
    return tuple(o.key for o in options_of('train', model))


# ---- the table of docs/options.md --------------------------------------------------------------------------
TABLE_START = '<!-- options table: generated from mixprior_plugin/options_schema.py by tools/gen_options.py -->'
TABLE_END = '<!-- end of options table -->'
# Who reads an option, in the table's words.
READERS = {('KDModel', ): 'KDModel, MiPKDModel', MIPKD: 'MiPKDModel', EVERY: 'every model',
           GAN: 'the GAN models', SYNTHESIS: 'the real-world models', ('RealESRGANModel', ): 'RealESRGAN models'}


def _allowed_text(o):
    if o.choices is not None:
        return ' \\| '.join(_yaml(c) for c in o.choices)
    text = o.range_text()
    kind = '/'.join(t.__name__ for t in (o.types if isinstance(o.types, tuple) else (o.types, )))
    kind = {'dict': 'loss dict' if o.key.endswith('_opt') and o.key != 'feat_opt' else 'mapping',
            'dict/list': 'loss dict or list', 'list/tuple': 'list of int', 'int/float': 'number',
            'int/str': 'int or auto'}.get(kind, kind)
    return f'{kind} {text}'.strip() + (' or ~' if o.nullable else '')


def _row(section, o):
    when = f' (read when {o.when[0]}: {o.when[1]})' if o.when else ''
    also = f' (also read as {", ".join(o.spellings)})' if o.spellings else ''
    return (f'| `{_full(section, o.key)}` | `{_yaml(o.default)}` | {_allowed_text(o)} | {READERS[o.models]} | '
            f'{o.meaning}{when}{also} |')


def options_table():
    """docs/options.md's Markdown tables (between TABLE_START and TABLE_END): the plugin's options, then
    BasicSR's keys that the plugin reads (with BasicSR's defaults)."""
    header = ['| key | default | allowed | read by | meaning |', '|---|---|---|---|---|']
    lines = [TABLE_START, ''] + header
    lines += [_row(section, o) for section, options in SCHEMA.items() for o in options if o.owner == PLUGIN]
    lines += ['', 'BasicSR\'s keys that the plugin reads too (their defaults and checks are BasicSR\'s):', ''] + header
    lines += [_row(section, o) for section, options in SCHEMA.items() for o in options if o.owner != PLUGIN]
    return '\n'.join(lines + ['', TABLE_END])


def replace_table(text):
    """``text`` (docs/options.md) with its option table replaced by :func:`options_table`.

    Raises:
        ValueError: The text lacks the markers.
    """
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f'no option table markers ({TABLE_START!r} ... {TABLE_END!r})')
    return text[:start] + options_table() + text[end + len(TABLE_END):]
