"""sample.py end to end on models built to say one token whatever they read (the final norm's weight is zero, so
the logits are its bias through the head): the text they must print is then known by hand."""

import os

import torch

from conftest import run_inprocess


def constant_model_run(folder, tokenizer_state, vocab_size, token):
    """A checkpoint in folder whose model picks `token` at every step, greedy or sampled at temperature 1."""
    from core.training import checkpoint
    from model import GPT, GPTConfig
    config = GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=16, vocab_size=vocab_size)
    model = GPT(config)
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()  # tied: the embeddings too, which the output no longer reads
        model.lm_head.weight[token] = 10.0  # logit 80 for token, 0 for every other
    os.makedirs(folder, exist_ok=True)
    checkpoint.save({'model': model.state_dict(), 'model_args': config.to_dict(), 'iter_num': 0, 'best_val_loss': 1.0,
                     'tokenizer': tokenizer_state}, os.path.join(folder, 'ckpt.pt'))
    return str(folder)


def sample(*args):
    return run_inprocess('sample.py', '--device=cpu', '--compile=False', *args)


def test_a_sample_ends_at_endoftext_and_never_prints_it_cached_or_not(tmp_path):
    from core.data import tokenizer
    tok = tokenizer.char('ROMEO:abc', special_tokens=[tokenizer.EOT])  # 9 characters, <|endoftext|> is id 9
    folder = constant_model_run(tmp_path / 'run', tok.state(), 16, tok.eot_token)
    for extra in ([], ['--use_cache=False']):
        code, out, err = sample(f'--out_dir={folder}', '--start=ROMEO:', '--num_samples=2', '--max_new_tokens=5',
                                '--temperature=0', *extra)
        assert code == 0, err
        # the first token the model gives ends the text: each sample is the prompt alone
        assert out == 'ROMEO:\n---------------\n' * 2, (extra, out)
        assert '0 new tokens' in err, err


def test_a_streamed_sample_prints_the_half_character_it_held_back_at_the_end(tmp_path):
    from core.data import tokenizer
    tok = tokenizer.gpt2()
    half = tok._enc.encode_single_token(b'\xc3')  # the first byte of 'é' (c3 a9): alone it decodes to U+FFFD
    folder = constant_model_run(tmp_path / 'run', tok.state(), tok.vocab_size, half)
    code, out, err = sample(f'--out_dir={folder}', '--start=hi', '--num_samples=1', '--max_new_tokens=1',
                            '--temperature=0')
    assert code == 0, err
    # streaming held the U+FFFD back while a next byte could complete it; the run ended, so it is printed last
    assert out == 'hi\ufffd\n---------------\n', repr(out)


def char_run(tmp_path):
    from core.data import tokenizer
    tok = tokenizer.char('ROMEO:abc', special_tokens=[tokenizer.EOT])
    return constant_model_run(tmp_path / 'run', tok.state(), 16, tok.encode('a')[0])


def one_line_error(code, err, fragment):
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert code == 2 and 'Traceback' not in err and len(errors) == 1 and fragment in errors[0], (code, err)


def test_zero_samples_and_an_empty_prompt_are_one_line_errors(tmp_path):
    folder = char_run(tmp_path)
    code, out, err = sample(f'--out_dir={folder}', '--num_samples=0')
    one_line_error(code, err, 'num_samples must be positive')
    code, out, err = sample(f'--out_dir={folder}', '--start=')
    one_line_error(code, err, 'the prompt encodes to no tokens')


def test_the_memory_check_counts_every_sample(tmp_path, monkeypatch):
    from core.training import planner
    folder = char_run(tmp_path)
    # each sample holds 1024 + 8 x 6 prompt tokens + 40 x 4 new ones = 1,232 bytes; 64 of them are 78,848 bytes,
    # more than the 10,000 given here, though one alone fits
    monkeypatch.setattr(planner, 'device_budget', lambda device: 10_000)
    code, out, err = sample(f'--out_dir={folder}', '--start=ROMEO:', '--num_samples=64', '--max_new_tokens=4')
    one_line_error(code, err, '--num_samples=64 with --max_new_tokens=4 needs about')
    code, out, err = sample(f'--out_dir={folder}', '--start=ROMEO:', '--num_samples=1', '--max_new_tokens=4',
                            '--temperature=0')
    assert code == 0 and out == 'ROMEO:aaaa\n---------------\n', (out, err)


def test_a_chat_command_in_capitals_is_taken_as_a_mistyped_command_not_a_message(tmp_path, monkeypatch):
    import io
    import sys
    folder = char_run(tmp_path)
    monkeypatch.setattr(sys, 'stdin', io.StringIO('/Reset\n/quit\n'))
    code, out, err = sample(f'--out_dir={folder}', '--interactive=True', '--max_new_tokens=5')
    assert code == 0 and '(commands: /reset, /temp 0.7, /quit)' in out and 'bot>' not in out, out + err
