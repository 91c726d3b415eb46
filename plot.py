"""
Loss curves from training runs, overlaid in one PNG.

    python plot.py out-shakespeare-char                           # one run -> loss.png
    python plot.py out-lr1e-3 out-lr3e-3 out-lr1e-2 --out=sweep.png --log=True
    python plot.py out-a --health=True                            # + gradient norms, update ratios, activations
    python plot.py out-char out-gpt2 out-bpe --metric=bpb         # bits per byte: runs with different tokenizers

Reads each run's out_dir/metrics.jsonl (written by train.py: a record at every log line and at every
eval) and draws train loss (dashed, from the log lines) and val loss (solid, from the evals) against
the step and against tokens seen, and against seconds for a run with a time budget (max_seconds),
with the learning rate each logged step used beneath; one colour per run, named by its folder.
--log=True puts the loss on a log scale. --metric=bpb draws bits per byte instead of the loss (from
the evals): the one measure on which runs with different tokenizers (characters, GPT-2 BPE, a
trained BPE) share an axis. --health=True adds the per-layer numbers that log_health=True recorded,
one column per run, each layer a colour from the first block (dark) to the last (light). --out never
replaces a file plot.py did not write unless --overwrite=True.
"""

import io
import json
import os
import sys

from configurator import ConfigError, parse
from core import fileio
from core.errors import fail, install_excepthook

OPTIONS = {'out': 'loss.png', 'log': False, 'health': False, 'metric': 'loss', 'overwrite': False}
MARK = 'plot.py, loss curves of training runs'  # in every image written here, so a re-run may replace it
METRICS = {'loss': 'loss', 'bpb': 'bits per byte'}
HEALTH_ROWS = (
    ('grad_norm', 'gradient norm'),
    ('update_ratio', 'update / weight'),
    ('act_rms', 'activation RMS'),
)


def read_run(path):
    """One metrics.jsonl as {'evals': the eval records, 'lines': the log-line records ('kind': 'train'), 'budget':
    the max_seconds of its last start (0 when none)}, each list in step order. Torn or foreign lines are skipped; a
    record for step i replaces those at i and later (a resume from an older checkpoint, or a fresh run in the same
    folder, rewrites what came after), and a run starting at step i drops what came after i."""
    run = {'evals': [], 'lines': [], 'budget': 0.0}
    with open(path, encoding='utf-8', errors='replace') as f:
        for line in f:
            r = read_record(line)
            if r is None:
                continue
            step, kind = r['iter'], r.get('kind', 'eval')
            if kind == 'start':
                run['evals'] = [x for x in run['evals'] if x['iter'] <= step]
                run['lines'] = [x for x in run['lines'] if x['iter'] <= step]
                budget = (r.get('config') or {}).get('max_seconds', 0)
                run['budget'] = budget if isinstance(budget, (int, float)) else 0.0
                continue
            key = 'lines' if kind == 'train' else 'evals'
            run[key] = [x for x in run[key] if x['iter'] < step] + [r]
    return run


def read_record(line):
    """One line of metrics.jsonl as a record whose fields draw() can read: its iter an int, its config and health
    dicts (health keyed 'kind/layer'); None for a torn, foreign or hand-edited line that is not a record at all."""
    try:
        r = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(r, dict):
        return None
    try:
        r['iter'] = int(r['iter'])
    except (ValueError, KeyError, TypeError, OverflowError):  # no step, or one like 1e400 or "five"
        return None
    if not isinstance(r.get('config'), (dict, type(None))):
        r['config'] = None
    health = r.get('health')
    if health is not None:
        r['health'] = {k: v for k, v in health.items() if isinstance(k, str) and '/' in k} \
            if isinstance(health, dict) else None
    return r


def read_metrics(path):
    """The eval records of one metrics.jsonl in step order (see read_run)."""
    return read_run(path)['evals']


def metrics_path(run):
    if run.endswith('.jsonl') and os.path.isfile(run):
        return run
    path = os.path.join(run, 'metrics.jsonl')
    if not os.path.isdir(run):
        fail(f"{run} is not a folder; give the out_dir of a training run")
    if not os.path.isfile(path):
        fail(f"no metrics.jsonl in {run}; train.py writes it there at each eval (is this an out_dir?)")
    return path


def run_names(runs):
    # the folder name, or more of the path when two runs share one
    names = [os.path.basename(os.path.normpath(r if not r.endswith('.jsonl') else os.path.dirname(r) or '.'))
             for r in runs]
    if len(set(names)) < len(names):
        names = [os.path.relpath(os.path.abspath(r)) for r in runs]
    return names


# matplotlib's ticks overflow on an axis spanning values near a float's largest (1e308 and -1e308, or 1e308 and 3e307):
# no loss, rate, step or second comes near 1e300, so a value beyond it is a hand edit, left out like a NaN
PLACEABLE = 1e300


def number(v):
    """A value a plot can place: a finite number below PLACEABLE, an int too (JSON reads 1e400's digits whole)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= PLACEABLE and v == v


def finite(xs, ys):
    pts = [(x, y) for x, y in zip(xs, ys) if number(x) and number(y)]
    return [p[0] for p in pts], [p[1] for p in pts]


def series(records, key):
    return [r.get(key) for r in records]


def layer_color(layer, n_blocks, cmap):
    from core.training.tracking import layer_rank  # (group, key): embeddings, blocks by depth, the rest
    group, key = layer_rank(layer)
    if group == 0:
        return {'wte': '0.0', 'wpe': '0.45', 'emb': '0.0'}[layer]
    if group == 1:
        return cmap(0.05 + 0.85 * key / max(1, n_blocks - 1))
    return 'tab:red'


def draw(runs, names, data, out, log_scale, health, metric='loss'):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter
    from core.training.tracking import layer_rank

    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    n = len(runs)
    width = max(13.0, 4.2 * n) if health else 13.0
    height = 7.0 + (7.5 if health else 0.0)
    fig = plt.figure(figsize=(width, height), layout='constrained')
    if health:
        top, bottom = fig.subfigures(2, 1, height_ratios=[7.0, 7.5])
    else:
        top, bottom = fig, None
    # a third column against seconds of training when a run had a time budget: its schedule follows the clock
    columns = [('iter', 'step'), ('tokens', 'tokens')] + \
        ([('elapsed', 'seconds')] if any(run['budget'] > 0 for run in data) else [])
    axes = top.subplots(2, len(columns), sharex='col', gridspec_kw={'height_ratios': [3, 1]}, squeeze=False)
    for i, (name, run) in enumerate(zip(names, data)):
        c = colors[i % len(colors)]
        # train loss from every log line where the run wrote them, val loss from the evaluations
        train = run['lines'] if run['lines'] and metric == 'loss' else run['evals']
        lr_records = run['lines'] or run['evals']  # the learning rate each logged step used
        for col, (xkey, _) in enumerate(columns):
            for records, key, style in ((train, f'train_{metric}', '--'), (run['evals'], f'val_{metric}', '-')):
                x, y = finite(series(records, xkey), series(records, key))
                few = len(x) < 30  # markers show where the points are when there are few
                axes[0, col].plot(x, y, style, color=c, marker='o' if few else None, markersize=3,
                                  linewidth=1.6 if key.startswith('val') else 1.1)
            x, y = finite(series(lr_records, xkey), series(lr_records, 'lr'))
            axes[1, col].plot(x, y, color=c, linewidth=1.3)
    for col, (_, label) in enumerate(columns):
        axes[0, col].set_title(f"{METRICS[metric]} vs {label}")
        axes[0, col].grid(alpha=0.3)
        axes[1, col].grid(alpha=0.3)
        axes[1, col].set_xlabel(label)
        if log_scale:
            # losses span a decade or two: label the in-between values, not just powers of ten
            axes[0, col].set_yscale('log')
            axes[0, col].yaxis.set_major_locator(LogLocator(subs=(1, 1.5, 2, 2.5, 3, 4, 5, 6, 8)))
            axes[0, col].yaxis.set_minor_formatter(NullFormatter())
            axes[0, col].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes[1, 1].xaxis.set_major_formatter(EngFormatter(sep=''))  # 200k, 1.5M, 10G tokens
    axes[0, 0].set_ylabel(METRICS[metric] + (' (log)' if log_scale else ''))
    axes[1, 0].set_ylabel('learning rate')
    handles = [Line2D([], [], color=colors[i % len(colors)], linewidth=2, label=name) for i, name in enumerate(names)]
    handles += [Line2D([], [], color='0.3', linestyle='-', label='val'),
                Line2D([], [], color='0.3', linestyle='--', label='train')]
    axes[0, -1].legend(handles=handles, loc='upper right', fontsize=9, framealpha=0.85)

    if health:
        cmap = plt.get_cmap('viridis')
        # rows share their y axis so runs compare at a glance
        hax = bottom.subplots(len(HEALTH_ROWS), n, sharex='col', sharey='row', squeeze=False)
        legend = []
        for j, (name, run) in enumerate(zip(names, data)):
            records = run['evals']
            hax[0, j].set_title(f"{name}: network health", fontsize=10)
            layers = sorted({k.split('/', 1)[1] for r in records for k in (r.get('health') or {})}, key=layer_rank)
            n_blocks = sum(1 for l in layers if l.startswith('h.'))
            for row, (kind, label) in enumerate(HEALTH_ROWS):
                ax = hax[row, j]
                for layer in layers:
                    key = f"{kind}/{layer}"
                    steps = [r['iter'] for r in records if key in (r.get('health') or {})]
                    values = [r['health'][key] for r in records if key in (r.get('health') or {})]
                    steps, values = finite(steps, values)
                    if steps and all(v > 0 for v in values):
                        ax.plot(steps, values, color=layer_color(layer, n_blocks, cmap), linewidth=1.2,
                                marker='o' if len(steps) < 30 else None, markersize=2.5, label=layer)
                ax.grid(alpha=0.3)
                if j == 0:
                    ax.set_ylabel(label)
                if row == len(HEALTH_ROWS) - 1:
                    ax.set_xlabel('step')
                if not layers:
                    ax.text(0.5, 0.5, 'no health records\n(train with --log_health=True)', ha='center',
                            va='center', transform=ax.transAxes, color='0.4')
            items = list(zip(*hax[0, j].get_legend_handles_labels())) or \
                list(zip(*hax[-1, j].get_legend_handles_labels()))
            if len(items) > len(legend):
                legend = items
        for row in range(len(HEALTH_ROWS)):
            # a log scale only where the layers differ by orders of magnitude; else it blurs them
            lo = min((ax.dataLim.y0 for ax in hax[row] if ax.lines), default=0)
            hi = max((ax.dataLim.y1 for ax in hax[row] if ax.lines), default=0)
            if lo > 0 and hi / lo > 20:
                hax[row, 0].set_yscale('log')
                hax[row, 0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                hax[row, 0].yaxis.set_minor_formatter(NullFormatter())
        if legend:
            keep = _thin(legend, 12)
            hax[0, -1].legend([h for h, _ in keep], [t for _, t in keep], fontsize=8, loc='upper left',
                              bbox_to_anchor=(1.02, 1.0), title='layer', title_fontsize=8, frameon=False)
    fig.suptitle('training runs: ' + ', '.join(names), fontsize=12)

    buf = io.BytesIO()
    kind = image_format(out)
    if kind == 'png':
        # a 128-colour palette: line plots use few colours, and the file is a quarter of the size
        from PIL import Image, PngImagePlugin
        fig.savefig(buf, dpi=90, format='png')
        buf.seek(0)
        image, buf = Image.open(buf), io.BytesIO()
        info = PngImagePlugin.PngInfo()
        info.add_text('Software', MARK)
        image.convert('RGB').quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(buf, format='PNG', optimize=True,
                                                                                         pnginfo=info)
    elif kind == 'jpg':
        fig.savefig(buf, dpi=90, format=kind, pil_kwargs={'comment': MARK.encode()})
    else:
        fig.savefig(buf, dpi=90, format=kind, metadata={'Creator': MARK})
    plt.close(fig)
    try:
        fileio.write_bytes(out, buf.getvalue())
    except OSError as e:
        fail(f"cannot write {out} ({e.strerror or e}); choose another --out")


# what --out's extension asks for -> the format matplotlib writes
FORMATS = {'.png': 'png', '.jpg': 'jpg', '.jpeg': 'jpg', '.pdf': 'pdf', '.svg': 'svg'}


def image_format(out):
    """The format --out's extension names; anything else stops here, before the plot is drawn."""
    if os.path.isdir(out):
        fail(f"--out={out} is a folder; give a file name such as {os.path.join(out, 'loss.png')}")
    ext = os.path.splitext(out)[1].lower()
    if ext not in FORMATS:
        fail(f"--out={out}: cannot tell the image format from '{ext or 'no extension'}'; end it in "
             f"{', '.join(FORMATS)}")
    return FORMATS[ext]


def written_here(path):
    """Whether the file at path is a plot this script wrote (its mark is in the image's metadata)."""
    try:
        with open(path, 'rb') as f:
            return MARK.encode() in f.read(64 << 20)
    except OSError:
        return False


def _thin(items, limit):
    # a legend of 48 blocks says nothing more than one of the first, some middle ones and the last
    if len(items) <= limit:
        return items
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def main(argv):
    if any(a in ('-h', '--help') for a in argv):
        print(__doc__.strip())
        return
    runs = [a for a in argv if not a.startswith('-')]
    try:
        opts = parse([a for a in argv if a.startswith('-')], OPTIONS)
    except ConfigError as e:
        fail(str(e))
    if not runs:
        fail("give at least one run folder: python plot.py out-a [out-b ...] [--out=loss.png] [--log=True]")
    seen = {}
    for run in runs:  # a run named twice (out-a out-a/, or out-a/metrics.jsonl) is one curve with one name
        seen.setdefault(os.path.realpath(metrics_path(run)), run)
    if len(seen) < len(runs):
        print(f"drawing each run once: {', '.join(sorted(set(runs) - set(seen.values())))} named a run given before")
        runs = list(seen.values())
    data = []
    for run in runs:
        records = read_run(metrics_path(run))
        if not records['evals'] and not records['lines']:
            fail(f"{metrics_path(run)} holds no eval records or log lines yet; train longer (evals every eval_interval steps)")
        data.append(records)
    if opts['metric'] not in METRICS:
        fail(f"--metric must be loss or bpb, got '{opts['metric']}'")
    if opts['metric'] == 'bpb':
        lacking = [run for run, records in zip(runs, data) if not any('val_bpb' in r for r in records['evals'])]
        if lacking:
            fail(f"no bits per byte recorded in {', '.join(lacking)} (runs from before val_bpb was logged, or a dataset "
                 f"without a tokenizer in meta.json); plot them with --metric=loss")
    if opts['health'] and not any(r.get('health') for records in data for r in records['evals']):
        fail("no health metrics in these runs; train with --log_health=True")
    names = run_names(runs)
    image_format(opts['out'])
    owner = os.path.exists(opts['out']) and fileio.owned(opts['out'])
    if owner:
        fail(f"--out={opts['out']} is {owner}, which plot.py never replaces; choose another --out")
    if os.path.exists(opts['out']) and not opts['overwrite'] and not written_here(opts['out']):
        fail(f"--out={opts['out']} exists and plot.py did not write it; choose another --out, or pass "
             f"--overwrite=True to replace it")
    draw(runs, names, data, opts['out'], opts['log'], opts['health'], opts['metric'])
    print(f"wrote {opts['out']} ({len(runs)} run{'s' if len(runs) > 1 else ''}: {', '.join(names)})")


if __name__ == '__main__':
    install_excepthook()
    main(sys.argv[1:])
