"""
Evaluate runs, checkpoints or GPT-2 weights: exact loss, perplexity and bits per byte on a dataset's
split, HellaSwag, and completions of your prompts side by side.

    python eval.py --out_dir=out-a --tasks=val,hellaswag
    python eval.py --out_dir=out-a,out-b,out-c --tasks=val                  # one table, a row per run
    python eval.py --out_dir=out-a --ckpt=2000                              # the step checkpoint ckpt_00002000.pt
    python eval.py --init_from=gpt2 --tasks=hellaswag --hellaswag_file=hellaswag_val.jsonl
    python eval.py --out_dir=out-a,out-b --prompts=prompts.txt --max_new_tokens=100 --markdown=report.md

A run is scored on the dataset it was trained on unless --dataset names another prepared with the
same tokenizer. Bits per byte (bpb) is the summed loss in nats over ln 2 and over the UTF-8 bytes
the scored tokens decode to, so runs with different tokenizers compare on it; their losses and
perplexities are per token of different vocabularies and are marked as not comparable. A prompts
file holds prompts separated by blank lines; completions are greedy unless --temperature is set.
"""

import json as json_lib
import math
import os
import shutil
import sys
import textwrap

import torch

from configurator import config_keys, configure
from core import fileio, hardware
from core.errors import UserError, fail, install_excepthook
from core.training import checkpoint
from model import sampling_problem

# -----------------------------------------------------------------------------
init_from = 'resume'  # 'resume' (the runs in out_dir), 'gpt2', 'gpt2-medium', ... or 'hf:<folder>'
out_dir = 'out'  # a run folder or a checkpoint file; several, comma separated, give a row each
ckpt = 'best'  # 'best', 'latest' or a step number (a checkpoint kept by keep_checkpoints)
tasks = 'val'  # comma separated: val, hellaswag (none with only --prompts)
dataset = ''  # empty: each run's own dataset (GPT-2 weights need one for val)
split = 'val'  # the split to score: val, train or test
batch_size = 16
hellaswag_file = ''  # empty: the validation file of the original release, downloaded once into a cache
hellaswag_limit = 0  # score only the first N examples (0 = all)
prompts = ''  # a file of prompts separated by blank lines: completions side by side
max_new_tokens = 100
temperature = 0.0  # 0 is greedy, so reruns agree
top_k = 0
seed = 1337
markdown = ''  # also write the tables as markdown to this file
overwrite = False  # let --markdown replace a file eval.py did not write
json = False  # print one JSON object instead of tables
device = 'auto'
dtype = 'auto'
# -----------------------------------------------------------------------------
install_excepthook()
config = configure(globals(), config_keys(globals()))

from core.data import tokenizer as tokenizer_lib  # noqa: E402  (after the config, so --help stays fast)
from core.data.loader import Dataset  # noqa: E402
from core.evaluation.exact import exact_eval  # noqa: E402
from core.inference.prompts import prompts_in  # noqa: E402

TASKS = ('val', 'hellaswag')


def load(source):
    """(model, tokenizer, info) for one run folder, checkpoint file (ours or nanoGPT's) or pretrained name."""
    if source.startswith('gpt2') or source.startswith('hf:'):
        from core.interop import hf
        model = hf.from_pretrained(source, dropout=0.0)
        tok = (hf.folder_tokenizer(os.path.expanduser(source[3:])) if source.startswith('hf:') else None) \
            or tokenizer_lib.gpt2()
        return model, tok, dict(run=source, checkpoint=source, step=None, dataset=None, doc_aware=False)
    path = paths[source]
    model, state = checkpoint.load_model(path)
    tok, _ = checkpoint.load_tokenizer(state, path, dataset)
    trained_on = state.get('dataset') or (state.get('config') or {}).get('dataset')
    return model, tok, dict(run=source, checkpoint=path, step=state.get('iter_num'), dataset=trained_on,
                            doc_aware=bool((state.get('config') or {}).get('doc_aware')))


def score_val(model, tok, info):
    name = dataset or info['dataset']
    if not name:
        raise UserError(f"{info['run']} names no dataset; pass --dataset=NAME for the val task")
    data = Dataset(name)
    try:
        data_tok = tokenizer_lib.from_state(data.meta.get('tokenizer') or {}, base_dir=data.data_dir)
    except tokenizer_lib.TokenizerError as e:
        raise UserError(f"dataset '{name}': {e}")
    if data_tok.state() != tok.state():
        raise UserError(f"{info['run']} uses a {tok.kind} tokenizer of {tok.vocab_size} tokens, dataset '{name}' another "
                        f"({data_tok.kind}, {data_tok.vocab_size}); score it on a dataset prepared with its tokenizer")
    data.check_fits(model.config.vocab_size, 1, splits=(split,))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(data.split(split)) - 1, desc=f"{info['run']} {split}", unit='tok', unit_scale=True)
    # a document-aware run is scored as it was evaluated in training, attention kept inside documents
    result = exact_eval(model, data, split, batch_size=batch_size, device=device, ctx=ctx,
                        progress=bar.update if bar else None, doc_aware=info['doc_aware'])
    if bar:
        bar.close()
    return dict(dataset=name, split=split, **result)


def complete(model, tok, prompt):
    try:
        ids = tok.encode(prompt)
    except tokenizer_lib.TokenizerError as e:
        return f"(cannot encode this prompt: {e})"
    if not ids:
        return "(the prompt encodes to no tokens)"
    ids = ids[-model.config.block_size:]
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.tensor([ids], dtype=torch.long, device=device)
    with torch.no_grad(), ctx:
        y = model.generate(x, max_new_tokens, temperature, top_k=top_k or None, stop_token=tok.eot_token,
                           generator=generator, n_vocab=tok.vocab_size)
    new = [t for t in y[0, len(ids):].tolist() if t != tok.eot_token]
    return tok.decode(new)


def json_safe(v):
    """v with every NaN or infinity as None: JSON has neither, and json.dumps would write NaN, which jq and most
    parsers refuse (a HellaSwag score over no examples, when a char vocabulary lacks every one's characters)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def fmt(v, digits=4):
    if v is None:
        return '-'
    if isinstance(v, float):
        return 'nan' if math.isnan(v) else f"{v:.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def results_table(rows, names, task_list, loss_comparable):
    """(header, rows of cells) of the scores."""
    mark = '' if loss_comparable else ' *'
    header = ['run', 'checkpoint', 'tokenizer']
    if 'val' in task_list:
        header += ['dataset', 'tokens', f'loss{mark}', f'ppl{mark}', 'bpb']
    if 'hellaswag' in task_list:
        header += ['hellaswag n', 'acc', 'acc_norm']
    cells = []
    for name, r in zip(names, rows):
        line = [name, os.path.basename(r['checkpoint']), r['tokenizer']]
        if 'val' in task_list:
            v = r['val']
            line += [f"{v['dataset']}/{v['split']}", fmt(v['tokens']), fmt(v['loss']), fmt(v['perplexity'], 2),
                     fmt(v['bpb'])]
        if 'hellaswag' in task_list:
            h = r['hellaswag']
            line += [fmt(h['n']), fmt(h['acc']), fmt(h['acc_norm'])]
        cells.append(line)
    return header, cells


def notes(rows, names, task_list, loss_comparable):
    out = []
    if 'val' in task_list and not loss_comparable:
        out.append("* loss and perplexity are per token of different tokenizers and are not comparable across "
                   "these rows; compare bpb")
    if 'hellaswag' in task_list:
        out.append("hellaswag: acc picks the ending of lowest summed loss, acc_norm of lowest mean loss per token")
        for name, r in zip(names, rows):
            h = r['hellaswag']
            if h['skipped'] or h['cut']:
                out.append(f"{name}: {h['skipped']} examples skipped (characters outside its vocabulary), "
                           f"{h['cut']} cut on the left to its block_size")
    return out


def text_table(header, cells):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *cells)]
    lines = ['  '.join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *cells]]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def md_cell(text):
    return str(text).replace('|', '\\|').replace('\n', '<br>') or ' '


def md_table(header, cells):
    lines = ['| ' + ' | '.join(md_cell(h) for h in header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(md_cell(c) for c in line) + ' |' for line in cells]
    return '\n'.join(lines)


def side_by_side(prompt, names, outputs, width):
    """A prompt and one column per model, each wrapped to its share of the terminal."""
    col = max(20, (width - 3 * (len(names) - 1)) // len(names))
    wrapped = []
    for text in outputs:
        lines = []
        for para in text.split('\n'):
            lines += textwrap.wrap(para, col, replace_whitespace=False, drop_whitespace=False) or ['']
        wrapped.append(lines)
    heads = [n[:col] for n in names]
    out = [f"prompt: {prompt!r}", ' | '.join(h.ljust(col) for h in heads), '-+-'.join('-' * col for _ in heads)]
    for i in range(max(len(w) for w in wrapped)):
        out.append(' | '.join((w[i] if i < len(w) else '').ljust(col) for w in wrapped).rstrip())
    return '\n'.join(out)


MARK = '<!-- written by eval.py -->'  # a report's first line: the next report may replace it


def check_markdown_path(path):
    """A --markdown that cannot be written, or would replace a file eval.py did not write (without --overwrite),
    stops before any model loads, not after the evaluation."""
    problem = fileio.unwritable(path)
    if problem:
        example = f" such as {os.path.join(path, 'report.md')}" if os.path.isdir(path) else ''
        raise UserError(f"--markdown={path}: {problem}; give another file name{example}")
    # a run's or a dataset's file (a checkpoint, metrics.jsonl, meta.json, a .bin) is never a report's file,
    # --overwrite or not (export.py's rule for its --dest)
    owner = os.path.isfile(path) and fileio.owned(path)
    if owner:
        raise UserError(f"--markdown={path} is {owner}, which a report never replaces; give a .md file name")
    if os.path.isfile(path) and not overwrite:
        try:
            ours = fileio.starts_with(path, MARK)
        except OSError as e:
            raise UserError(f"--markdown={path}: cannot read it ({e.strerror or e}); give another file name") from None
        if not ours:
            raise UserError(f"--markdown={path} exists and eval.py did not write it; give another file name, or pass "
                            f"--overwrite=True to replace it")


def main():
    global device, dtype, ctx, progress, paths
    task_list = [t.strip() for t in tasks.split(',') if t.strip() and t.strip() != 'none']
    for t in task_list:
        if t not in TASKS:
            raise UserError(f"unknown task '{t}'; tasks are {', '.join(TASKS)} (comma separated)")
    if not task_list and not prompts:
        raise UserError("nothing to do: give --tasks=val,hellaswag and/or --prompts=FILE")
    if batch_size <= 0 or max_new_tokens < 0 or hellaswag_limit < 0 or temperature < 0:
        raise UserError("batch_size must be positive; max_new_tokens, hellaswag_limit and temperature not negative")
    problem = sampling_problem(temperature, top_k)  # --top_k=-1 was taken as 'every token', where sample.py refuses it
    if problem:
        raise UserError(problem)
    if init_from != 'resume' and not (init_from.startswith('gpt2') or init_from.startswith('hf:')):
        raise UserError(f"init_from must be resume, gpt2[-medium|-large|-xl] or hf:<folder>, got '{init_from}'")
    if markdown:
        check_markdown_path(markdown)

    # read every input before the first model loads, so a mistake costs seconds, not a finished evaluation
    prompt_list = prompts_in(prompts) if prompts else []
    hellaswag_examples = None
    if 'hellaswag' in task_list:
        from core.evaluation import hellaswag
        hellaswag_examples = hellaswag.load_examples(hellaswag_file or hellaswag.download())
        if hellaswag_limit:
            hellaswag_examples = hellaswag_examples[:hellaswag_limit]

    sources = [init_from] if init_from != 'resume' else [s.strip() for s in out_dir.split(',') if s.strip()]
    if not sources:
        raise UserError("give --out_dir=RUN[,RUN...] or --init_from=gpt2")
    if 'val' in task_list and init_from != 'resume' and not dataset:
        raise UserError(f"{init_from} was not trained on a dataset of ours; pass --dataset=NAME for the val task")
    if 'val' in task_list and dataset:
        Dataset(dataset).split(split)  # a missing dataset or split stops here, before any model loads
    paths = {s: checkpoint.resolve(s, ckpt) for s in sources} if init_from == 'resume' else {}

    device = hardware.pick_device(device)
    dtype = hardware.pick_dtype(dtype, device)
    ctx = hardware.autocast_context(device, dtype)
    progress = not json and sys.stderr.isatty()

    rows, completions, tokenizers = [], [], []
    for source in sources:
        model, tok, info = load(source)
        model.eval()
        model.to(device)
        row = dict(**info, tokenizer=f"{tok.kind} {tok.vocab_size}")
        tokenizers.append(json_lib.dumps(tok.state(), sort_keys=True))
        if 'val' in task_list:
            row['val'] = score_val(model, tok, info)
        if 'hellaswag' in task_list:
            hs = hellaswag.evaluate(model, tok, hellaswag_examples, device, ctx, progress=progress)
            row['hellaswag'] = {k: v for k, v in hs.items() if k != 'examples'}
        if prompt_list:
            completions.append([complete(model, tok, p) for p in prompt_list])
        rows.append(row)
        del model

    names = [r['run'] if r['step'] is None else f"{r['run']} @{r['step']}" for r in rows]
    loss_comparable = len(set(tokenizers)) <= 1  # two char vocabularies of one size still differ
    table_args = (rows, names, task_list, loss_comparable)

    if json:
        report = dict(runs=[{**r, 'name': n} for n, r in zip(names, rows)], loss_comparable=loss_comparable)
        if prompt_list:
            report['prompts'] = [dict(prompt=p, completions={n: c[i] for n, c in zip(names, completions)})
                                 for i, p in enumerate(prompt_list)]
        print(json_lib.dumps(json_safe(report), indent=2))
    else:
        if task_list:
            print(text_table(*results_table(*table_args)))
            for line in notes(*table_args):
                print(line)
        width = shutil.get_terminal_size((120, 24)).columns
        for i, p in enumerate(prompt_list):
            print()
            print(side_by_side(p, names, [c[i] for c in completions], width))
    if markdown:
        parts = [MARK]
        if task_list:
            parts += [md_table(*results_table(*table_args)), ''] + [f"{line}  " for line in notes(*table_args)] + ['']
        if prompt_list:
            parts += [md_table(['prompt', *names], [[p, *(c[i] for c in completions)] for i, p in enumerate(prompt_list)]), '']
        try:
            fileio.write_bytes(markdown, '\n'.join(parts).encode('utf-8'))
        except OSError as e:
            raise UserError(f"cannot write --markdown={markdown} ({e.strerror or e}); choose another file")
        if not json:
            print(f"wrote {markdown}")


if __name__ == '__main__':
    try:
        main()
    except UserError as e:
        fail(str(e))
