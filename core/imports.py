"""The project's import graph read from the source (ast, nothing imported): which module imports which.

tests/test_imports.py holds it to the layout's rules; `python studies/import_graph.py` draws it."""

import ast
import os

from core.paths import REPO

ROOT_LIBRARIES = ('model', 'configurator')  # the two root files that are imported, not run
SKIP = ('.git', '.venv', 'venv', 'node_modules', '__pycache__', 'tests')


def project_modules(repo=REPO):
    """{dotted module name: path} for every .py file of the project outside tests/."""
    modules = {}
    for folder, dirs, files in os.walk(repo):
        dirs[:] = sorted(d for d in dirs if d not in SKIP and not d.startswith(('.', 'out')))
        for name in files:
            if name.endswith('.py'):
                rel = os.path.relpath(os.path.join(folder, name), repo)[:-3].split(os.sep)
                if rel[-1] == '__init__':
                    rel = rel[:-1]
                modules['.'.join(rel)] = os.path.join(folder, name)
    return modules


def imports_of(path, modules):
    """The project modules that the file at path imports, at any depth of its code."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from core.data import chat` names the module core.data.chat; `from model import GPT` names model
            names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in modules else node.module
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def import_graph(repo=REPO):
    """{module: set of project modules it imports}."""
    modules = project_modules(repo)
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def cycles(graph):
    """Every strongly connected group of two or more modules (each holds an import circle), sorted."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def backward_imports(graph):
    """(package module, root script) pairs where the package imports a script it should only be run by."""
    return sorted((m, t) for m, targets in graph.items() if m.startswith('core') for t in targets
                  if '.' not in t and not t.startswith('core') and t not in ROOT_LIBRARIES)
