"""The package's import graph: no circle, and the lower layers (utils/, archs/, losses/) import nothing above them.

Every ``import`` / ``from ... import`` of the package's own modules counts, at module level and inside functions
(a function-level import is still a dependency, only a later one), relative imports resolved.
"""
import ast
import os
import textwrap

from helpers import REPO

PACKAGE = 'mixprior_plugin'
# The lower layers, and what they must never import: the models, the commands and the package itself (whose
# __init__ imports the models to register them).
LOWER_LAYERS = ('utils', 'archs', 'losses')
ABOVE_LOWER_LAYERS = ('models', 'export', 'evaluation', 'benchmarking', 'demo', 'train', 'test')


def module_names(root, package):
    """{dotted module name: file path} of every .py file of ``package`` under ``root`` (packages by __init__)."""
    found = {}
    for folder, _, files in os.walk(os.path.join(root, package)):
        for name in files:
            if not name.endswith('.py'):
                continue
            parts = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
            if parts[-1] == '__init__':
                parts = parts[:-1]
            found['.'.join(parts)] = os.path.join(folder, name)
    return found


def _existing(name, modules):
    """The longest prefix of dotted ``name`` that is a module of the package, or None."""
    parts = name.split('.')
    while parts and '.'.join(parts) not in modules:
        parts.pop()
    return '.'.join(parts) or None


def imports_of(module, path, modules):
    """[(imported module of the package, line)] of every import statement in one file, wherever it stands.

    ``from X import name`` counts as an import of ``X.name`` when that is a module, else of ``X``.
    """
    tree = ast.parse(open(path, encoding='utf-8').read(), path)
    is_package = os.path.basename(path) == '__init__.py'
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = module.split('.')
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = '.'.join(anchor + ([base] if base else []))
            targets = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _existing(target, modules)
            if resolved is not None:
                found.append((resolved, node.lineno))
    return found


def import_graph(root, package):
    """{module: {imported module: first line}} over the package's own modules."""
    modules = module_names(root, package)
    graph = {}
    for module, path in sorted(modules.items()):
        edges = graph.setdefault(module, {})
        for target, line in imports_of(module, path, modules):
            edges.setdefault(target, line)
    return graph


def find_circle(graph):
    """One import circle as ``[m0, m1, ..., m0]``, or None (depth-first search for an edge back)."""
    state = {}  # module -> 'open' while on the search path, 'done' after
    path = []

    def visit(module):
        state[module] = 'open'
        path.append(module)
        for target in sorted(graph.get(module, {})):
            if state.get(target) == 'open':
                return path[path.index(target):] + [target]
            if target not in state:
                circle = visit(target)
                if circle:
                    return circle
        path.pop()
        state[module] = 'done'
        return None

    for module in sorted(graph):
        if module not in state:
            circle = visit(module)
            if circle:
                return circle
    return None


def describe_circle(graph, circle):
    return ' -> '.join(f'{a} (line {graph[a][b]})' for a, b in zip(circle, circle[1:])) + f' -> {circle[-1]}'


def upward_imports(graph, package):
    """['lower module line N imports upper module'] for every import of the lower layers that goes up."""
    lower = tuple(f'{package}.{layer}' for layer in LOWER_LAYERS)
    upper = tuple(f'{package}.{name}' for name in ABOVE_LOWER_LAYERS)
    found = []
    for module, edges in sorted(graph.items()):
        if not any(module == m or module.startswith(m + '.') for m in lower):
            continue
        for target, line in sorted(edges.items()):
            if target == package or any(target == m or target.startswith(m + '.') for m in upper):
                found.append(f'{module} line {line} imports {target}')
    return found


def test_the_package_has_no_import_circle():
    graph = import_graph(REPO, PACKAGE)
    # the walk sees the package's real imports (the registration import of __init__, a command's import)
    assert f'{PACKAGE}.models' in graph[PACKAGE] and f'{PACKAGE}.inference' in graph[f'{PACKAGE}.export']
    circle = find_circle(graph)
    assert circle is None, f'import circle: {describe_circle(graph, circle)}'


def test_utils_archs_and_losses_import_nothing_above_them():
    assert upward_imports(import_graph(REPO, PACKAGE), PACKAGE) == []


def _write_package(root, files):
    for name, text in files.items():
        path = os.path.join(root, *name.split('/'))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as f:
            f.write(textwrap.dedent(text))


def test_the_walk_finds_circles_and_upward_imports_at_any_depth(tmp_path):
    """A fake package: a circle closed by a function-level relative import, a utility that imports a model
    inside a function, and one that imports the package itself."""
    _write_package(str(tmp_path), {
        'fake/__init__.py': 'from . import models  # noqa\n',
        'fake/a.py': 'import os\n\n\ndef f():\n    from . import b\n    return b, os\n',
        'fake/b.py': 'from fake.c import g\n',
        'fake/c.py': 'def g():\n    from .a import f\n    return f\n',
        'fake/models/__init__.py': '',
        'fake/models/net.py': 'from ..utils.low import helper\n',
        'fake/utils/__init__.py': '',
        'fake/utils/low.py': 'def helper():\n    from ..models import net\n    return net\n',
        'fake/utils/registered.py': 'import fake  # noqa\nfrom fake.utils import low  # noqa\n',
    })
    graph = import_graph(str(tmp_path), 'fake')
    assert graph['fake.a'] == {'fake.b': 5} and graph['fake.b'] == {'fake.c': 1} and graph['fake.c'] == {'fake.a': 2}
    assert graph['fake.utils.low'] == {'fake.models.net': 2}
    assert graph['fake.utils.registered'] == {'fake': 1, 'fake.utils.low': 2}
    circle = find_circle(graph)
    assert circle is not None and circle[0] == circle[-1]
    assert set(circle) in ({'fake.a', 'fake.b', 'fake.c'}, {'fake.models.net', 'fake.utils.low'})
    assert 'line' in describe_circle(graph, circle)
    assert upward_imports(graph, 'fake') == ['fake.utils.low line 2 imports fake.models.net',
                                             'fake.utils.registered line 1 imports fake']
    # without the closing imports there is no circle
    del graph['fake.c']['fake.a'], graph['fake.utils.low']['fake.models.net']
    assert find_circle(graph) is None
