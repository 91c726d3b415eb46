"""The layout's import rules, read from the source: no circles, and the package never imports a root script."""

import os
import textwrap

from core import imports


def test_the_project_has_no_import_circles():
    assert imports.cycles(imports.import_graph()) == []


def test_the_package_imports_no_root_script_but_model_and_configurator():
    assert imports.backward_imports(imports.import_graph()) == []


def test_model_py_never_imports_the_engine():
    graph = imports.import_graph()
    assert not any(m.startswith('core.inference') for m in graph['model'])


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(textwrap.dedent(text))


def test_the_graph_sees_lazy_imports_circles_and_backward_imports(tmp_path):
    # a made-up project: the rules must catch what the real one no longer has
    root = str(tmp_path)
    write(root, 'model.py', 'import torch\ndef generate():\n    from core.inference import engine\n')
    write(root, 'train.py', 'from core.data import loader\n')
    write(root, 'core/__init__.py', '')
    write(root, 'core/inference/__init__.py', '')
    write(root, 'core/inference/engine.py', 'from model import GPT\n')
    write(root, 'core/data/__init__.py', '')
    write(root, 'core/data/loader.py', 'import os\nfrom core.data import tokenizer\n')
    write(root, 'core/data/tokenizer.py', 'def f():\n    import core.data.loader\n    import train\n')
    graph = imports.import_graph(root)
    assert graph['model'] == {'core.inference.engine'}
    assert graph['core.data.loader'] == {'core.data.tokenizer'}
    assert imports.cycles(graph) == [['core.data.loader', 'core.data.tokenizer', 'train'], ['core.inference.engine', 'model']]
    assert imports.backward_imports(graph) == [('core.data.tokenizer', 'train')]
