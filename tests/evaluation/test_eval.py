"""eval.py and core/evaluation/hellaswag.py: HellaSwag scoring by hand and through transformers, runs side by side,
bad inputs, and --ckpt steps."""

import json
import math
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import assert_one_line_error, run_script
from core.training import checkpoint
from core.evaluation import hellaswag
from core.interop import hf
from core.data import tokenizer
from core.errors import UserError
from core.data.loader import Dataset
from core.evaluation.exact import exact_eval
from model import GPT, GPTConfig

# endings of very different lengths, so the summed loss (acc) and the mean loss (acc_norm) disagree; the labels
# are not the sensible endings but ones that the tiny random model below gets right by one rule and wrong by the
# other (acc 2/3, acc_norm 1/3), so a swap of the two, or of either with a constant, shows
EXAMPLES = [
    dict(ctx="A man is sitting on a roof. He", label=2,
         endings=["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "jumps.",
                  "starts pulling up roofing on a roof, one shingle at a time, carefully and slowly."]),
    dict(ctx="The cook cracks two eggs into a bowl and", label=1,
         endings=["whisks them.", "sings a long song about the sea to every guest in the dining room tonight.",
                  "flies.", "puts the bowl in the car and drives to the beach with the dog."]),
    dict(ctx="Then, the girl lifts the violin to her chin. She", label=0,
         endings=["eats it.", "begins to play a slow tune.", "is a dog.",
                  "throws the violin out of the window and across the street into the river."]),
]


def write_jsonl(path, examples):
    with open(path, 'w') as f:
        for i, ex in enumerate(examples):
            f.write(json.dumps(dict(ind=i, activity_label='x', split='val', **ex)) + '\n')
    return str(path)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A tiny random GPT-2-shaped model over GPT-2's tokenizer, and the same weights as a HF folder."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50257, dropout=0.0))
    folder = str(tmp_path_factory.mktemp('hs') / 'hf')
    hf.save_hf_folder(model, folder, {'kind': 'gpt2'})
    return model.eval(), folder


def by_hand(logits_of, tok, examples):
    """build-nanogpt's scoring written out one ending at a time: (sums, means, acc, acc_norm)."""
    sums, means, right, right_norm = [], [], 0, 0
    for ex in examples:
        s, m = [], []
        ctx = tok.encode_ordinary(ex['ctx'])
        for ending in ex['endings']:
            end = tok.encode_ordinary(' ' + ending)
            seq = torch.tensor(ctx + end)
            logp = F.log_softmax(logits_of(seq[None, :-1])[0].double(), dim=-1)
            nll = [-logp[len(ctx) - 1 + k, end[k]].item() for k in range(len(end))]
            s.append(sum(nll))
            m.append(sum(nll) / len(nll))
        right += int(np.argmin(s) == ex['label'])
        right_norm += int(np.argmin(m) == ex['label'])
        sums.append(s)
        means.append(m)
    return sums, means, right / len(examples), right_norm / len(examples)


def test_hellaswag_scores_by_hand_and_through_transformers(exported, tmp_path):
    transformers = pytest.importorskip('transformers')
    model, folder = exported
    tok = tokenizer.gpt2()
    got = hellaswag.evaluate(model, tok, hellaswag.load_examples(write_jsonl(tmp_path / 'hs.jsonl', EXAMPLES)))
    with torch.no_grad():
        ours = by_hand(lambda x: model.head(model.hidden_states(x)), tok, EXAMPLES)
        theirs_model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
        theirs = by_hand(lambda x: theirs_model(x).logits, tok, EXAMPLES)
    # the two definitions pick differently on this file, so a swap of acc and acc_norm would show
    assert any(np.argmin(s) != np.argmin(m) for s, m in zip(ours[0], ours[1]))
    assert ours[2] != ours[3] and 0 < ours[2] < 1 and 0 < ours[3] < 1
    for ref in (ours, theirs):
        for ex, s, m in zip(got['examples'], ref[0], ref[1]):
            assert ex['sum_loss'] == pytest.approx(s, abs=1e-4)
            assert ex['mean_loss'] == pytest.approx(m, abs=1e-4)
        assert (got['acc'], got['acc_norm']) == (ref[2], ref[3])
    assert got['n'] == 3 and got['skipped'] == 0 and got['cut'] == 0

    # and end to end through eval.py on the exported folder
    r = run_script('eval.py', f'--init_from=hf:{folder}', '--tasks=hellaswag', f'--hellaswag_file={tmp_path / "hs.jsonl"}',
                   '--json=True', '--device=cpu')
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)['runs'][0]['hellaswag']
    assert (row['acc'], row['acc_norm'], row['n']) == (ours[2], ours[3], 3)


def test_render_cuts_the_context_to_the_window():
    tok = tokenizer.char('abcdefghij ')
    ex = dict(ctx='abcdefghij', endings=['abc', 'a', 'abcdefghij', 'b'], label=0)
    rows, cut = hellaswag.render(ex, tok, block_size=8)
    assert cut
    x, y = rows[0]  # ' abc' after the context: 14 tokens, the last 9 kept, the ending's 4 scored
    assert x == tok.encode('fghij ab') and y == [-1] * 4 + tok.encode(' abc')
    x, y = rows[2]  # an ending longer than the window keeps its last 8 targets
    assert len(x) == 8 and y == tok.encode('bcdefghij')[1:]


def make_run(folder, data_folder, tok, seed):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=tok.vocab_size, dropout=0.0))
    state = {'model': model.state_dict(), 'model_args': model.config.to_dict(), 'iter_num': 10, 'config': {},
             'tokenizer': tok.state(), 'dataset': data_folder, 'best_val_loss': 9.0}
    checkpoint.save(state, os.path.join(folder, 'ckpt.pt'), os.path.join(folder, 'best.pt'),
                    checkpoint.step_path(folder, 10))
    return model.eval()


def make_data(folder, tok, text):
    ids = tok.encode(text)
    n = len(ids) * 3 // 4
    os.makedirs(folder, exist_ok=True)
    np.array(ids[:n], dtype=np.uint16).tofile(os.path.join(folder, 'train.bin'))
    np.array(ids[n:], dtype=np.uint16).tofile(os.path.join(folder, 'val.bin'))
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump({'vocab_size': tok.vocab_size, 'dtype': 'uint16', 'tokenizer': tok.state(),
                   'splits': {'train': n, 'val': len(ids) - n}}, f)
    return folder


def test_two_runs_side_by_side(tmp_path):
    """A char run and a bpe run: one table, bpb against exact_eval here, losses marked not comparable,
    and each prompt's greedy completion from each model."""
    from conftest import REPO
    with open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt')) as f:
        text = f.read()[:6000]
    char, bpe = tokenizer.char(text), tokenizer.train_bpe(text, 300)
    runs = {}
    for name, tok, seed in (('char', char, 1), ('bpe', bpe, 2)):
        data = make_data(str(tmp_path / f'data_{name}'), tok, text)
        runs[name] = (make_run(str(tmp_path / f'run_{name}'), data, tok, seed), tok, Dataset(data))
    with open(tmp_path / 'prompts.txt', 'w') as f:
        f.write("ROMEO:\nWhat\n\n\nFirst Citizen:\n")
    out_dirs = f"--out_dir={tmp_path / 'run_char'},{tmp_path / 'run_bpe'}"
    common = [out_dirs, '--tasks=val', f'--prompts={tmp_path / "prompts.txt"}', '--max_new_tokens=12', '--device=cpu']

    r = run_script('eval.py', *common, '--json=True')
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report['loss_comparable'] is False
    for row, name in zip(report['runs'], ('char', 'bpe')):
        model, tok, data = runs[name]
        ref = exact_eval(model, data, 'val', batch_size=16)
        assert row['val']['bpb'] == pytest.approx(ref['bpb'], rel=1e-5)
        assert row['val']['loss'] == pytest.approx(ref['loss'], rel=1e-5)
        assert row['step'] == 10 and row['checkpoint'].endswith('best.pt')
    assert [p['prompt'] for p in report['prompts']] == ["ROMEO:\nWhat", "First Citizen:"]
    for i, p in enumerate(report['prompts']):
        for (name, (model, tok, _)), completion in zip(runs.items(), p['completions'].values()):
            x = torch.tensor([tok.encode(p['prompt'])])
            expected = tok.decode(model.generate(x, 12, temperature=0)[0, x.size(1):].tolist())
            assert completion == expected

    r = run_script('eval.py', *common, '--ckpt=10', f'--markdown={tmp_path / "report.md"}')
    assert r.returncode == 0, r.stderr
    assert 'loss *' in r.stdout and 'not comparable' in r.stdout and 'ckpt_00000010.pt' in r.stdout
    assert report['prompts'][0]['completions'][f"{tmp_path / 'run_char'} @10"].split('\n')[0][:10] in r.stdout
    md = open(tmp_path / 'report.md').read()
    assert md.count('| ROMEO:<br>What |') == 1 and '| run | checkpoint |' in md
    # its own report is replaced by the next without --overwrite; someone else's file only with it
    r = run_script('eval.py', *common, '--ckpt=10', f'--markdown={tmp_path / "report.md"}', '--prompts=', '--json=True')
    assert r.returncode == 0 and '| ROMEO:<br>What |' not in open(tmp_path / 'report.md').read(), r.stderr
    (tmp_path / 'theirs.md').write_text('theirs')
    r = run_script('eval.py', *common, '--ckpt=10', f'--markdown={tmp_path / "theirs.md"}', '--prompts=', '--json=True',
                   '--overwrite=True')
    assert r.returncode == 0 and '| run | checkpoint |' in open(tmp_path / 'theirs.md').read(), r.stderr


def test_resolve_checkpoints(tmp_path):
    for name in ('best.pt', 'ckpt_00000100.pt', 'ckpt_00002000.pt'):
        (tmp_path / name).write_bytes(b'x')
    assert checkpoint.steps(str(tmp_path)) == [100, 2000]
    assert checkpoint.resolve(str(tmp_path)) == str(tmp_path / 'best.pt')
    assert checkpoint.resolve(str(tmp_path), 'latest') == str(tmp_path / 'best.pt')  # no ckpt.pt: the other
    assert checkpoint.resolve(str(tmp_path), '2000') == str(tmp_path / 'ckpt_00002000.pt')
    with pytest.raises(UserError, match='no checkpoint of step 300 .*steps saved there: 100, 2000'):
        checkpoint.resolve(str(tmp_path), 300)


def test_bad_inputs_are_one_line(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    for name in ('best.pt', 'ckpt_00000100.pt', 'ckpt_00000200.pt'):
        (run / name).write_bytes(b'x')
    r = run_script('eval.py', f'--out_dir={run}', '--ckpt=150')
    assert r.returncode == 2
    assert_one_line_error(r, 'step 150', '100, 200')
    r = run_script('eval.py', f'--out_dir={run}', f'--prompts={tmp_path / "nope.txt"}', '--tasks=none')
    assert r.returncode == 2
    assert_one_line_error(r, 'prompt file', 'not found')
    r = run_script('eval.py', f'--out_dir={run}', f'--prompts={tmp_path}', '--tasks=none')  # said "not found"
    assert_one_line_error(r, f"prompt file '{tmp_path}' is a folder")
    bad = tmp_path / 'bad.jsonl'
    bad.write_text(json.dumps(dict(ctx='a', endings=['b', 'c'], label=0)) + '\n')
    r = run_script('eval.py', f'--out_dir={run}', '--tasks=hellaswag', f'--hellaswag_file={bad}')
    assert r.returncode == 2
    assert_one_line_error(r, 'line 1', "'endings' must be a list of 4 strings")
    bad.write_text('{"ctx": "a", "endings": ["a", "b", "c", "d"], "label": 1}\nnot json\n')
    with pytest.raises(UserError, match='line 2 is not JSON'):
        hellaswag.load_examples(str(bad))


def test_download_caches_a_checked_file_once(tmp_path):
    """The download against a local server: a complete file lands in the cache; a short one or a dead
    address is one error naming --hellaswag_file, and nothing lands."""
    import http.server
    import threading
    line = json.dumps(dict(ctx='a b', endings=['c', 'd', 'e', 'f'], label=2)) + '\n'
    files = {'/full.jsonl': (line * hellaswag.VAL_EXAMPLES).encode(), '/short.jsonl': (line * 3).encode()}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files[self.path]
            self.send_response(200)
            self.send_header('content-length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f'http://127.0.0.1:{server.server_port}'
    try:
        cache = str(tmp_path / 'cache' / 'hellaswag_val.jsonl')
        with pytest.raises(UserError, match='has 3 examples, not 10042.*--hellaswag_file'):
            hellaswag.download(cache, url + '/short.jsonl')
        assert not os.path.exists(cache)
        assert hellaswag.download(cache, url + '/full.jsonl') == cache
        assert len(hellaswag.load_examples(cache)) == hellaswag.VAL_EXAMPLES
        assert hellaswag.download(cache, url + '/gone.jsonl') == cache  # cached: no second request
        assert sorted(os.listdir(tmp_path / 'cache')) == ['hellaswag_val.jsonl']
    finally:
        server.shutdown()
    with pytest.raises(UserError, match='could not download HellaSwag.*--hellaswag_file'):
        hellaswag.download(str(tmp_path / 'other.jsonl'), url + '/full.jsonl', timeout=2)
