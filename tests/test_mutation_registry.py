"""studies/mutate.py's registry stays live: a planted bug whose code has moved is reported as stale and counts as not
caught, so the check would go quietly blind to it. Each entry's code must occur once in its file, and the tests named
to catch it must exist."""

import ast
import os
import shlex

from conftest import REPO


def registry():
    tree = ast.parse(open(os.path.join(REPO, 'studies', 'mutate.py')).read())
    (node,) = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], 'id', '') == 'MUTATIONS']
    return ast.literal_eval(node.value)


def test_every_planted_bug_names_code_that_is_there_once_and_tests_that_exist():
    mutations = registry()
    assert len(mutations) > 250
    stale, missing = [], []
    for name, (path, code, bug, tests, what) in mutations.items():
        with open(os.path.join(REPO, path)) as f:
            if f.read().count(code) != 1 or code == bug:
                stale.append(name)
        test_file = shlex.split(tests)[0].split('::')[0]
        if not os.path.isfile(os.path.join(REPO, test_file)):
            missing.append((name, test_file))
    assert not stale, f"code moved or repeated: update these entries of studies/mutate.py: {stale}"
    assert not missing, missing
