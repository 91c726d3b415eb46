"""
HellaSwag (Zellers et al. 2019) scored the way build-nanogpt's hellaswag.py and llm.c's
dev/data/hellaswag.py score it: completion style, no answer letters.

Each example is a context and four endings. Every ending is encoded as ' ' + ending after the
context's tokens, and the model's cross-entropy over the ending's tokens alone is summed:
    acc       the ending with the lowest summed loss is the prediction
    acc_norm  the ending with the lowest mean loss per ending token is the prediction
These are not the lm-evaluation-harness definitions (there acc_norm divides by the ending's
length in bytes). Published with this scoring: GPT-2 124M acc 0.2859, acc_norm 0.2955 on the
10,042 validation examples.
"""

import os
import urllib.error
import urllib.request

import torch
from torch.nn import functional as F

from core import fileio
from core.errors import UserError

VAL_URL = 'https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl'
VAL_EXAMPLES = 10042


def cache_path():
    root = os.environ.get('NANOGPT_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'nanogpt-plus')
    return os.path.join(root, 'hellaswag', 'hellaswag_val.jsonl')


def download(path=None, url=VAL_URL, timeout=15):
    """The validation file in the cache, fetched once with a progress bar; a failure says how to go offline."""
    from tqdm import tqdm
    from core.fileio import write_bytes
    path = path or cache_path()
    if os.path.exists(path):
        return path
    offline = f"download it where there is a network ({url}) and pass --hellaswag_file=PATH"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            total = int(r.headers.get('content-length') or 0) or None
            chunks = []
            with tqdm(total=total, unit='B', unit_scale=True, desc='hellaswag_val.jsonl') as bar:
                while True:
                    chunk = r.read(1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"could not download HellaSwag ({getattr(e, 'reason', e)}); {offline}")
    data = b''.join(chunks)
    tmp = path + '.check'
    write_bytes(tmp, data)
    try:
        n = len(load_examples(tmp))
    finally:
        os.unlink(tmp)
    if n != VAL_EXAMPLES:
        raise UserError(f"the downloaded HellaSwag file has {n} examples, not {VAL_EXAMPLES}; {offline}")
    write_bytes(path, data)  # only a checked, complete file lands in the cache
    return path


def load_examples(path):
    """The examples of a HellaSwag jsonl file: dicts with ctx, endings (4 strings) and label (0-3).
    Anything else raises UserError naming the file and line."""
    if not os.path.isfile(path):
        raise UserError(f"HellaSwag file '{path}' not found")
    examples = []
    with open(path, encoding='utf-8', errors='replace') as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"HellaSwag file {path} line {n}"
            try:
                ex = fileio.read_json(line)
            except ValueError:
                raise UserError(f"{where} is not JSON; expected one example per line as in hellaswag_val.jsonl")
            if not isinstance(ex, dict) or not isinstance(ex.get('ctx'), str):
                raise UserError(f"{where} has no 'ctx' string; expected the jsonl of the original HellaSwag release")
            endings = ex.get('endings')
            if not (isinstance(endings, list) and len(endings) == 4 and all(isinstance(e, str) for e in endings)):
                raise UserError(f"{where}: 'endings' must be a list of 4 strings")
            if len({e.strip() for e in endings}) == 1:  # every ending would score the same: the pick would be index 0
                what = 'empty' if not endings[0].strip() else 'the same'
                raise UserError(f"{where}: its 4 endings are all {what}, so there is no choice to score; fix or drop "
                                f"this example")
            label = ex.get('label')
            if isinstance(label, str) and label.isdigit():
                label = int(label)
            if not (isinstance(label, int) and not isinstance(label, bool) and 0 <= label < 4):
                raise UserError(f"{where}: 'label' must be 0, 1, 2 or 3 (the test split has no labels; use the "
                                f"validation file)")
            examples.append(dict(ctx=ex['ctx'], endings=endings, label=label))
    if not examples:
        raise UserError(f"HellaSwag file {path} holds no examples")
    return examples


def render(example, tok, block_size):
    """Four (inputs, targets) rows, targets -1 outside the ending, cut on the left to fit block_size;
    and whether anything was cut."""
    ctx = tok.encode_ordinary(example['ctx'])
    rows, cut = [], False
    for ending in example['endings']:
        end = tok.encode_ordinary(' ' + ending)
        seq = ctx + end
        if len(seq) - 1 > block_size:
            seq, cut = seq[-(block_size + 1):], True
        scored = min(len(end), len(seq) - 1)  # an ending longer than the window loses its first tokens
        rows.append((seq[:-1], [-1] * (len(seq) - 1 - scored) + seq[len(seq) - scored:]))
    return rows, cut


@torch.no_grad()
def ending_losses(model, rows, device='cpu', ctx=None):
    """Summed and mean per-token loss of each ending (two tensors of len(rows)) in one forward."""
    import contextlib
    T = max(len(x) for x, _ in rows)
    x = torch.zeros((len(rows), T), dtype=torch.long)
    y = torch.full((len(rows), T), -1, dtype=torch.long)
    for i, (xi, yi) in enumerate(rows):
        x[i, :len(xi)] = torch.tensor(xi)
        y[i, :len(yi)] = torch.tensor(yi)
    x, y = x.to(device), y.to(device)
    with ctx or contextlib.nullcontext():
        logits = model.head(model.hidden_states(x))  # (B, T, vocab): every position, not just the last
    losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1, reduction='none').view(y.shape)
    total = losses.sum(1)
    return total.cpu(), (total / (y != -1).sum(1).clamp(min=1)).cpu()


def evaluate(model, tok, examples, device='cpu', ctx=None, examples_per_batch=8, progress=False):
    """acc and acc_norm over the examples that the tokenizer can encode. Returns a dict with acc,
    acc_norm, n (scored), skipped (characters a char vocabulary lacks), cut (contexts cut to fit
    block_size) and per-example sum/mean losses and predictions."""
    from tqdm import tqdm
    from core.data.tokenizer import TokenizerError
    model.eval()
    block_size = model.config.block_size
    rendered, skipped, cut = [], 0, 0
    for ex in examples:
        try:
            rows, was_cut = render(ex, tok, block_size)
        except TokenizerError:
            skipped += 1
            continue
        rendered.append((ex, rows))
        cut += was_cut
    details, correct, correct_norm = [], 0, 0
    bar = tqdm(total=len(rendered), desc='hellaswag', unit='ex', disable=not progress)
    for i in range(0, len(rendered), examples_per_batch):
        group = rendered[i:i + examples_per_batch]
        sums, means = ending_losses(model, [r for _, rows in group for r in rows], device, ctx)
        for j, (ex, _) in enumerate(group):
            s, m = sums[4 * j:4 * j + 4], means[4 * j:4 * j + 4]
            pred, pred_norm = int(s.argmin()), int(m.argmin())
            correct += pred == ex['label']
            correct_norm += pred_norm == ex['label']
            details.append(dict(label=ex['label'], pred=pred, pred_norm=pred_norm, sum_loss=s.tolist(),
                                mean_loss=m.tolist()))
        bar.update(len(group))
    bar.close()
    n = len(details)
    return dict(acc=correct / n if n else float('nan'), acc_norm=correct_norm / n if n else float('nan'), n=n,
                skipped=skipped, cut=cut, examples=details)
