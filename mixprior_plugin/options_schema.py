"""The plugin's options in one place: each key of ``distill``, ``mixer`` and a KD model's ``train``.

Every key has a type, a default, its allowed values or range and a one-line meaning. The models
read their defaults and checks from here (:func:`settings`, :func:`check_section`), the option
generator (tools/gen_options.py) and the demo write the defaults from here (:func:`defaults`), and
the README's option table is :func:`options_table` (kept current by a test). A default changed
here is changed everywhere.

Keys are dotted paths inside their section (``mask.ratio`` is ``mixer: {mask: {ratio: ...}}``).
"""
import copy
from collections import OrderedDict

from mixprior_plugin.archs.prior_mixer_arch import ENCODER_TYPES, MASK_TYPES, SHARING_MODES
from mixprior_plugin.utils.options import OptionError, check_known_keys, check_type

ROUTE_MODES = ('per_stage', 'single_switch')
TAIL_OWNERS = ('student', 'last_stage')
K0_MODES = ('routed', 'any')
FEAT_NORM_MODES = ('auto', 'teacher', 'per_network', 'off')
L1 = 'L1Loss'


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
            classes too; every KD model is a KDModel).
    """

    def __init__(self, key, types, default, meaning, choices=None, low=None, high=None, low_open=False,
                 high_open=False, nullable=False, when=None, name=None, models=('KDModel', )):
        self.key, self.types, self.default, self.meaning = key, types, default, meaning
        self.choices, self.low, self.high = choices, low, high
        self.low_open, self.high_open, self.nullable, self.when = low_open, high_open, nullable, when
        self.name = name or key.replace('.', '_')
        self.models = models

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
        """Raise OptionError naming ``section.key`` when a set ``value`` is not allowed."""
        full = f'{section}.{self.key}'
        if self.choices is not None:
            if not any(c == value and type(c) is type(value) for c in self.choices):
                raise OptionError(f'Option {full}={value!r} is not one of {", ".join(map(_yaml, self.choices))}')
            return value
        if self.types is int and self.low == 1 and (not isinstance(value, int) or isinstance(value, bool) or
                                                    value < 1):
            raise OptionError(f'Option {full}={value!r} must be a positive integer'
                              + (' (or ~ for the student width)' if self.nullable else ''))
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


def _loss(weight):
    return dict(type=L1, loss_weight=weight)


MIPKD = ('MiPKDModel', )
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
        Option('amp', str, 'off', 'autocast dtype of the training step (validation and saved weights stay fp32)',
               choices=('off', 'bf16', 'fp16')),
        Option('channels_last', bool, False, 'networks and batches in the channels_last memory format',
               choices=(True, False)),
        Option('block_path_every', int, 1, 'run the Block Prior Mixer\'s hybrid every N-th step (1: every step, as '
               'published)', low=1, models=MIPKD),
        Option('fpm_opt', dict, _loss(1.0), 'Feature Prior Mixer loss L_FPM', models=MIPKD),
        Option('bpm_opt', dict, _loss(0.1), 'Block Prior Mixer loss L_BPM', models=MIPKD),
        Option('ae_opt', dict, _loss(1.0), 'auto-encoder loss L_AE (trains the mixers only)', models=MIPKD),
    ),
)
SECTIONS = tuple(SCHEMA)


def _model_names(model):
    if isinstance(model, type):
        return {c.__name__ for c in model.__mro__}
    return {model, 'KDModel'}


def options_of(section, model='MiPKDModel'):
    """The options of ``section`` read by ``model``.

    Args:
        section (str): 'distill', 'mixer' or 'train'.
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


def check_section(opt, section, model='MiPKDModel'):
    """Refuse unknown keys and values of a wrong type or out of range in ``opt[section]``.

    Errors name the key (``Option mixer.mask.ratio=1.5 must lie in [0, 1]``). The loss and
    optimizer dicts of ``train`` are checked by the models (KDModel.check_options) and BasicSR.

    Args:
        opt (dict): Options.
        section (str): 'distill' or 'mixer'.
        model (str | type): Model type whose options apply (see :func:`options_of`).

    Raises:
        OptionError: The first unknown or bad key.
    """
    sec = opt.get(section)
    check_known_keys(sec, allowed_keys(section, model), section)
    for o in options_of(section, model):
        value = _lookup(sec, o.key)
        if value is not _ABSENT and value is not None:
            o.check(value, section)


def settings(opt, section, model='MiPKDModel'):
    """``opt[section]`` checked, with every default filled in, as a flat dict.

    Args:
        opt (dict): Options.
        section (str): 'distill' or 'mixer'.
        model (str): Model type whose options apply.

    Returns:
        dict: Option name (:attr:`Option.name`, e.g. 'mask_ratio') -> value.
    """
    check_section(opt, section, model)
    out = {}
    for o in options_of(section, model):
        value = _lookup(opt.get(section), o.key)
        missing = value is _ABSENT or (value is None and not o.nullable)
        out[o.name] = default(section, o.key) if missing else value
    return out


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
    """The plugin's keys of ``train`` read by ``model`` (added to SRModel's own), in schema order."""
    return tuple(o.key for o in options_of('train', model))


# ---- the README table --------------------------------------------------------------------------------------
TABLE_START = ('<!-- options table: generated from mixprior_plugin/options_schema.py by '
               'tools/gen_options.py --readme -->')
TABLE_END = '<!-- end of options table -->'


def _allowed_text(o):
    if o.choices is not None:
        return ' \\| '.join(_yaml(c) for c in o.choices)
    text = o.range_text()
    kind = '/'.join(t.__name__ for t in (o.types if isinstance(o.types, tuple) else (o.types, )))
    kind = {'dict': 'loss dict' if o.key.endswith('_opt') and o.key != 'feat_opt' else 'mapping',
            'dict/list': 'loss dict or list', 'list/tuple': 'list of int', 'int/float': 'number'}.get(kind, kind)
    return f'{kind} {text}'.strip() + (' or ~' if o.nullable else '')


def options_table():
    """The README's Markdown table of every plugin option (between TABLE_START and TABLE_END)."""
    lines = [TABLE_START, '', '| key | default | allowed | read by | meaning |', '|---|---|---|---|---|']
    for section, options in SCHEMA.items():
        for o in options:
            models = 'MiPKDModel' if o.models == MIPKD else 'KDModel, MiPKDModel'
            when = f' (read when {o.when[0]}: {o.when[1]})' if o.when else ''
            lines.append(f'| `{section}.{o.key}` | `{_yaml(o.default)}` | {_allowed_text(o)} | {models} | '
                         f'{o.meaning}{when} |')
    return '\n'.join(lines + ['', TABLE_END])


def replace_table(text):
    """``text`` (the README) with its option table replaced by :func:`options_table`.

    Raises:
        ValueError: The README lacks the markers.
    """
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f'README has no option table markers ({TABLE_START!r} ... {TABLE_END!r})')
    return text[:start] + options_table() + text[end + len(TABLE_END):]
