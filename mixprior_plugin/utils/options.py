"""Option-file helpers: safe YAML loading (duplicate keys refused), teacher-option aliases, user errors."""
import json
import os
from collections import OrderedDict

import yaml

from mixprior_plugin.utils.image_io import ImageReadError


class OptionError(ValueError):
    """An option file is wrong; the message names the offending key or file."""


def is_user_error(err):
    """Whether ``err`` is a mistake in the options or the data, reported as one line without a traceback.

    Args:
        err (BaseException): The exception a run stopped with.
    """
    return isinstance(err, (OptionError, ImageReadError, FloatingPointError, FileNotFoundError)) or \
        getattr(err, 'user_error', False)


class _OrderedSafeLoader(yaml.SafeLoader):
    """SafeLoader (no Python object construction) that keeps mapping order like BasicSR's."""


def _construct_ordered(loader, node):
    # YAML keeps the last of two equal keys; an option file with a key twice (two `train:`
    # sections) is a mistake whose first half would be dropped silently. Merged keys (`<<:`) may
    # be overridden, so only the mapping's own keys are compared.
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == 'tag:yaml.org,2002:merge':
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                f'while reading the mapping that starts at line {node.start_mark.line + 1}', node.start_mark,
                f'duplicate key {key!r} (first at line {seen[key].line + 1}; YAML would keep only the last)',
                key_node.start_mark)
        seen[key] = key_node.start_mark
    loader.flatten_mapping(node)
    return OrderedDict(loader.construct_pairs(node))


_OrderedSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_ordered)


def yaml_load(f):
    """Load a YAML file (or a YAML string) safely into OrderedDicts.

    Drop-in replacement for ``basicsr.utils.options.yaml_load``, which uses the full (unsafe)
    loader. Errors name the file and the line.

    Args:
        f (str): File path or YAML text.
    """
    is_file = os.path.isfile(f)
    if not is_file and (f.endswith(('.yml', '.yaml')) and '\n' not in f):
        raise FileNotFoundError(f'Option file not found: {f}')
    try:
        if is_file:
            with open(f, 'r', encoding='utf-8') as fh:
                data = yaml.load(fh, Loader=_OrderedSafeLoader)
        else:
            data = yaml.load(f, Loader=_OrderedSafeLoader)
    except yaml.YAMLError as err:
        where = ''
        mark = getattr(err, 'problem_mark', None)
        if mark is not None:
            where = f' at line {mark.line + 1}, column {mark.column + 1}'
        name = f if is_file else '<string>'
        raise OptionError(f'Malformed YAML in {name}{where}: {getattr(err, "problem", err)}') from err
    if is_file and not isinstance(data, dict):
        raise OptionError(f'Option file {f} must hold a mapping of options, got {type(data).__name__}.')
    return data


# Community spellings of the teacher options -> ours.
TEACHER_NETWORK_ALIASES = ('network_teacher', 'network_g_teacher')
TEACHER_PATH_ALIASES = {
    'pretrain_network_teacher': 'pretrain_network_t',
    'pretrain_network_g_teacher': 'pretrain_network_t',
    'strict_load_teacher': 'strict_load_t',
    'strict_load_g_teacher': 'strict_load_t',
}


def normalise_teacher_aliases(opt):
    """Rename community teacher keys to ``network_t`` / ``path.pretrain_network_t`` in place.

    Notices are printed (the root logger must not be initialised before train_pipeline sets its
    log file). Also lists ``network_t`` in ``path.ignore_resume_networks`` so that BasicSR's resume logic
    never repoints the teacher to a (non-existent) ``net_t_<iter>.pth``.

    Args:
        opt (dict): Options.

    Returns:
        dict: The same options.
    """
    for alias in TEACHER_NETWORK_ALIASES:
        if alias in opt:
            if 'network_t' in opt:
                raise OptionError(f'Both network_t and its alias {alias} are set; keep one.')
            print(f'Option {alias} is read as network_t.', flush=True)
            # keep the key order readable: rebuild with network_t in place of the alias
            items = [('network_t' if k == alias else k, v) for k, v in opt.items()]
            opt.clear()
            opt.update(items)
    path = opt.get('path') or {}
    for alias, ours in TEACHER_PATH_ALIASES.items():
        if alias in path:
            if ours in path and path[ours] != path[alias]:
                raise OptionError(f'Both path.{ours} and its alias path.{alias} are set; keep one.')
            print(f'Option path.{alias} is read as path.{ours}.', flush=True)
            path[ours] = path.pop(alias)
    if 'network_t' in opt:
        opt.setdefault('path', OrderedDict())
        ignore = list(opt['path'].get('ignore_resume_networks') or [])
        if 'network_t' not in ignore:
            ignore.append('network_t')
        opt['path']['ignore_resume_networks'] = ignore
    return opt


def check_known_keys(section, allowed, prefix):
    """Raise OptionError naming the first unknown key of a plugin section.

    Args:
        section (dict | None): The section (e.g. ``opt['distill']``).
        allowed (dict | Iterable[str]): Allowed keys; a dict maps a key to the allowed keys of
            its own sub-section (or None when the value is not a section).
        prefix (str): Dotted name of the section, for the message (e.g. 'distill').
    """
    if section is None:
        return
    if not isinstance(section, dict):
        raise OptionError(f'{prefix} must be a mapping, got {type(section).__name__}')
    allowed_map = allowed if isinstance(allowed, dict) else dict.fromkeys(allowed)
    for key, value in section.items():
        if key not in allowed_map:
            raise OptionError(f'Unknown option {prefix}.{key} (allowed: {", ".join(sorted(allowed_map))})')
        sub = allowed_map[key]
        if sub is not None and value is not None:
            check_known_keys(value, sub, f'{prefix}.{key}')


def check_type(value, types, key):
    """Raise OptionError when ``value`` is not of ``types`` (bool is not accepted as a number)."""
    types = types if isinstance(types, tuple) else (types, )
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = '/'.join(t.__name__ for t in types)
        raise OptionError(f'Option {key} must be {names}, got {value!r} ({type(value).__name__})')
    return value


def load_arch_spec(spec, what='--arch'):
    """An arch dict (``{'type': ..., **kwargs}``) from a JSON string or a .json file.

    Args:
        spec (str): JSON text, or the path of a file holding it.
        what (str): The argument's name, for error messages.
    """
    text = spec
    if os.path.isfile(spec):
        with open(spec, encoding='utf-8') as f:
            text = f.read()
    elif spec.endswith('.json'):
        raise OptionError(f'{what}: arch file not found: {spec}')
    try:
        arch = json.loads(text)
    except json.JSONDecodeError as err:
        raise OptionError(f'{what} is not valid JSON ({spec[:80]}): {err}') from err
    if not isinstance(arch, dict) or 'type' not in arch:
        raise OptionError(f'{what} must be a dict with a "type" (got {spec[:80]})')
    return dict(arch)
