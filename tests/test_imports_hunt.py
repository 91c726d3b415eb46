"""core/imports.py on made-up projects: a package is named by its folder (its __init__ is the package), the tests
are not part of the graph, and a relative import is not mistaken for an absolute one."""

import os

from core import imports


def write(root, path, text):
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, 'w') as f:
        f.write(text)


def test_a_package_is_its_folder_and_a_circle_through_its_init_is_found(tmp_path):
    root = str(tmp_path)
    write(root, 'pkg/__init__.py', 'from pkg import a\n')
    write(root, 'pkg/a.py', 'import pkg\n')
    write(root, 'tests/test_x.py', 'import pkg\n')
    assert sorted(imports.project_modules(root)) == ['pkg', 'pkg.a']  # no pkg.__init__, no tests
    graph = imports.import_graph(root)
    assert graph == {'pkg': {'pkg.a'}, 'pkg.a': {'pkg'}}
    assert imports.cycles(graph) == [['pkg', 'pkg.a']]


def test_a_relative_import_is_not_read_as_a_root_module(tmp_path):
    root = str(tmp_path)
    write(root, 'helpers.py', '')
    write(root, 'core/__init__.py', '')
    write(root, 'core/helpers.py', '')
    write(root, 'core/b.py', 'from .helpers import thing\n')  # core/helpers.py, not the root helpers.py
    graph = imports.import_graph(root)
    assert 'helpers' not in graph['core.b']
    assert imports.backward_imports(graph) == []


def test_the_real_graph_leaves_the_tests_out():
    assert not [m for m in imports.project_modules() if m == 'tests' or m.startswith('tests.')]
