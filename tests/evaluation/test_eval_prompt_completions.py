"""eval.py --prompts: a prompt longer than the model's window is completed from its last block_size tokens (the
text nearest the completion), greedy, as model.generate gives it when handed those tokens here; and the markdown
report escapes a '|' in a prompt, which would otherwise split its table cell."""

import torch

from conftest import run_inprocess
import json

from core.training import checkpoint


def test_a_long_prompt_is_completed_from_its_last_window_and_pipes_are_escaped(tiny_run, tmp_path):
    long = 'First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.'
    piped = 'a | b'
    (tmp_path / 'prompts.txt').write_text(f'{long}\n\n{piped}\n', encoding='utf-8')
    report = tmp_path / 'report.md'
    code, out, err = run_inprocess('eval.py', f'--out_dir={tiny_run}', '--tasks=none', f'--prompts={tmp_path / "prompts.txt"}',
                                   '--max_new_tokens=12', '--json=True', '--device=cpu', f'--markdown={report}')
    assert code == 0, err
    got = json.loads(out)['prompts'][0]['completions']
    (completion,) = got.values()

    model, state = checkpoint.load_model(checkpoint.resolve(tiny_run, 'best'))
    tok, _ = checkpoint.load_tokenizer(state, tiny_run)
    model.eval()
    ids = tok.encode(long)
    T = model.config.block_size
    assert len(ids) > T

    def greedy(window):
        with torch.no_grad():
            y = model.generate(torch.tensor([window]), 12, temperature=0)
        return tok.decode(y[0, len(window):].tolist())
    assert greedy(ids[-T:]) != greedy(ids[:T])  # so the window taken shows in the text
    assert completion == greedy(ids[-T:])
    assert '| a \\| b |' in report.read_text(encoding='utf-8')
