"""
Draw the project's import graph from the source (core/imports.py reads it with ast; nothing is imported).

    python studies/import_graph.py                       # a mermaid diagram on stdout
    python studies/import_graph.py --out=docs/architecture.md   # rewrite the diagram between the markers there

Modules are grouped as a reader meets them: the scripts at the root, studies/ and data/, each folder of
core/, and the two root files everything may import (model.py, configurator.py). An arrow A --> B says that
A imports B; its label counts the module pairs. Arrows should run one way: scripts -> core -> model.py.
An arrow that closes a circle, or that runs from core/ back to a script, is drawn red and named below.
"""

import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from core import fileio, imports  # noqa: E402
from core.errors import ArgumentParser, UserError, install_excepthook  # noqa: E402

BEGIN, END = '<!-- import graph: begin (python studies/import_graph.py --out=docs/architecture.md) -->', \
    '<!-- import graph: end -->'


def group(module):
    """The box a module is drawn in (None: config files, which import nothing and are not drawn)."""
    parts = module.split('.')
    if parts[0] == 'config':
        return None
    if parts[0] == 'core':
        if len(parts) == 1:
            return 'core'
        return 'core/' + parts[1] if len(parts) > 2 or os.path.isdir(os.path.join(imports.REPO, *parts)) else 'core'
    if parts[0] in ('studies', 'data'):
        return parts[0] + '/'
    if module in imports.ROOT_LIBRARIES:
        return module + '.py'
    return 'scripts'


def mermaid(graph):
    """The grouped graph as mermaid text, and the lines naming what breaks the rules."""
    bad_pairs = {(a, b) for cycle in imports.cycles(graph) for a in cycle for b in graph[a] if b in cycle}
    bad_pairs |= set(imports.backward_imports(graph))
    edges, bad_edges, members = Counter(), set(), {}
    for a, targets in graph.items():
        if group(a) is None:
            continue
        members.setdefault(group(a), []).append(a)
        for b in targets:
            ga, gb = group(a), group(b)
            if ga != gb and gb is not None:
                edges[ga, gb] += 1
                if (a, b) in bad_pairs:
                    bad_edges.add((ga, gb))
    ids = {g: g.replace('/', '_').replace('.', '_') or 'x' for g in members}
    lines = ['```mermaid', 'flowchart TD']
    for g in sorted(members, key=order):
        # a module's name inside its box; a package's own __init__ is the box itself
        names = sorted('/'.join(m.split('.')[1:]) if g == 'data/' else m.split('.')[-1]
                       for m in members[g] if m.replace('.', '/') != g.rstrip('/'))
        shown = ', '.join(names) if len(names) <= 12 else ', '.join(names[:12]) + f', ... ({len(names)})'
        lines.append(f'    {ids[g]}["<b>{g}</b><br/>{shown}"]')
    links = []
    for (ga, gb), n in sorted(edges.items(), key=lambda e: (order(e[0][0]), order(e[0][1]))):
        lines.append(f'    {ids[ga]} -->|{n}| {ids[gb]}')
        links.append((ga, gb))
    for i, link in enumerate(links):
        if link in bad_edges:
            lines.append(f'    linkStyle {i} stroke:red,stroke-width:3px')
    lines.append('```')
    below = [f'{a.replace(".", "/")}.py imports {", ".join(sorted(graph[a]))}' for a in imports.ROOT_LIBRARIES
             if graph.get(a)]
    problems = [f'circle: {" -> ".join(c)}' for c in imports.cycles(graph)]
    problems += [f'core imports a script: {a} -> {b}' for a, b in imports.backward_imports(graph)]
    return '\n'.join(lines), problems, below


def order(g):
    """Top to bottom: what is run, then the package, then what everything imports."""
    rank = ['scripts', 'studies/', 'data/', 'core/training', 'core/inference', 'core/interop', 'core/evaluation',
            'core/bench', 'core/data', 'core', 'configurator.py', 'model.py']
    return (rank.index(g) if g in rank else len(rank) - 2, g)


def main():
    install_excepthook()
    parser = ArgumentParser(description='draw the import graph (mermaid)')
    parser.add_argument('--out', default='', help='a markdown file whose diagram (between the markers) is replaced')
    args = parser.parse_args()
    text, problems, below = mermaid(imports.import_graph())
    summary = 'No circles, and core/ imports no script.' if not problems else \
        'What breaks the rules (red above):\n' + '\n'.join(f'- {p}' for p in problems)
    if below:
        summary += ' The arrows out of the two root files everything imports: ' + '; '.join(below) + '.'

    block = f'{BEGIN}\n{text}\n\n{summary}\n{END}'
    if not args.out:
        print(block)
        return
    try:
        with open(args.out, encoding='utf-8') as f:
            doc = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read --out={args.out} ({getattr(e, 'strerror', None) or e}); give the markdown file "
                        f"that holds the import graph markers")
    if BEGIN not in doc or END not in doc or doc.index(END) < doc.index(BEGIN):
        # an end marker above the begin marker would have the text between them written twice
        raise UserError(f"{args.out} has no import graph markers, in order; add the two lines {BEGIN} and {END}")
    doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    fileio.write_text(args.out, doc)
    print(f'wrote the import graph into {args.out}' + (f'; {len(problems)} problems' if problems else ''))


if __name__ == '__main__':
    main()
