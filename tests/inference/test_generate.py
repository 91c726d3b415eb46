"""KV-cache generation (core/inference/engine.py) against the uncached path, against by-hand loops of full forwards,
and batched against one sequence at a time."""

import pytest
import torch

from conftest import SWITCHES, switch_id
from core.inference import engine
from core.inference.engine import Batch, Params, Sequence, run
from model import GPT, GPTConfig


def tiny(**kw):
    args = dict(block_size=16, vocab_size=61, n_layer=2, n_head=2, n_embd=32)
    args.update(kw)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**args)).eval()
    # larger weights than the init gives sharper logits, so a greedy choice is never a near tie
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model


def by_hand(model, idx, n):
    """Greedy continuation with one full forward of the last block_size tokens per new token."""
    for _ in range(n):
        logits = model.head(model.hidden_states(idx[:, -model.config.block_size:]))
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize('switch', SWITCHES, ids=switch_id)
def test_cached_greedy_equals_uncached_past_block_size(switch):
    model = tiny(**switch)
    prompt = torch.randint(0, 61, (2, 5), generator=torch.Generator().manual_seed(1))
    # 5 + 27 tokens: 16 inside the window, then 16 steps that slide it, recomputing it as nanoGPT does
    cached = model.generate(prompt, 27, temperature=0, use_cache=True)
    uncached = model.generate(prompt, 27, temperature=0, use_cache=False)
    engine_exact = engine.generate_tensor(model, prompt, 27, temperature=0, exact_window=True)
    assert cached.shape == (2, 32)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, by_hand(model, prompt, 27))
    assert torch.equal(engine_exact, cached)


@pytest.mark.parametrize('switch', [{}, dict(pos_encoding='rope', qk_norm=True)], ids=['learned', 'rope'])
def test_cached_logits_match_the_full_forward(switch):
    # the cache's logits at every step, not only their argmax, equal a full forward's
    model = tiny(**switch)
    idx = torch.randint(0, 61, (3, 16), generator=torch.Generator().manual_seed(2))
    full = model.head(model.hidden_states(idx))  # (B, T, V)
    caches = model.new_caches(3, idx.device, torch.float32)
    with torch.no_grad():
        first, _ = model(idx[:, :4], caches=caches, pos=0)  # prefill 4, then one token at a time
        assert torch.allclose(first[:, -1], full[:, 3], atol=1e-5)
        for t in range(4, 16):
            step, _ = model(idx[:, t:t + 1], caches=caches, pos=t)
            assert torch.allclose(step[:, -1], full[:, t], atol=1e-5), t


def test_prompt_longer_than_the_window_and_sampling_agree():
    model = tiny(pos_encoding='rope')
    prompt = torch.randint(0, 61, (1, 20), generator=torch.Generator().manual_seed(3))  # longer than block_size 16
    cached = model.generate(prompt, 6, temperature=0, use_cache=True)
    assert torch.equal(cached, by_hand(model, prompt, 6))
    # seeded sampling draws the same tokens from the same distributions on both paths
    a = engine.generate_tensor(model, prompt[:, :3], 20, temperature=1.0, top_k=20,
                               generator=torch.Generator().manual_seed(4), exact_window=True)
    b = model.generate(prompt[:, :3], 20, temperature=1.0, top_k=20, use_cache=False,
                       generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def engine_greedy(model, prompts, n, rows=None, **kw):
    """Greedy continuations of prompts (lists of ids) generated together in one batch."""
    batch = Batch(model, rows or len(prompts), 'cpu', **kw)
    seqs = [Sequence(p, Params(max_tokens=n, temperature=0)) for p in prompts]
    with torch.no_grad():
        list(run(batch, seqs, sync_every=3))
    return [s.out for s in seqs]


def prompts_of(lengths, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 61, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize('switch', [{}, dict(pos_encoding='rope'), SWITCHES[-1]], ids=['learned', 'rope', 'modern'])
def test_batched_greedy_equals_one_at_a_time_row_by_row(switch):
    # prompts of different lengths, one longer than the window, generated past block_size (16)
    model = tiny(**switch)
    prompts = prompts_of([3, 9, 14, 1, 20])
    together = engine_greedy(model, prompts, 30)
    alone = [engine_greedy(model, [p], 30)[0] for p in prompts]
    assert together == alone
    # more sequences than rows: the later ones wait for a free row, and still get their own tokens
    assert engine_greedy(model, prompts, 30, rows=2) == alone
    # and in nanoGPT's exact mode the batch gives what full forwards of the last 16 tokens give
    exact = engine_greedy(model, prompts, 30, exact_window=True)
    for p, out in zip(prompts, exact):
        ref = by_hand(model, torch.tensor([p]), 30)[0, len(p):].tolist()
        assert out == ref


def test_prompts_of_very_different_lengths_are_prefilled_in_groups_and_keep_their_tokens():
    # by hand: [40, 1] padded is 2 x 40 + 32 = 112 token-costs, apart 1 + 32 + 40 + 32 = 105; with 40 a forward,
    # 120 against 121; three pairs with 10 a forward: 4 + 60 + 120 + 30 = 214, below any other split
    assert engine.prefill_groups([5, 5, 5], 32) == [[0, 1, 2]]
    assert engine.prefill_groups([40, 1], 32) == [[1], [0]]
    assert engine.prefill_groups([40, 1], 40) == [[1, 0]]
    assert engine.prefill_groups([60, 2, 30, 60, 2, 30], 10) == [[1, 4], [2, 5], [0, 3]]
    model = tiny(pos_encoding='rope')  # a sliding cache: every forward given `last` is a prompt's prefill
    prefills = []
    def forward(idx, **kw):
        if kw.get('last') is not None:
            prefills.append(tuple(idx.shape))
        return model(idx, **kw)
    prompts = prompts_of([16, 1, 16, 1, 1])  # one padded forward: 5 x 16 + 32; by length: 3 + 32 + 32 + 32
    together = engine_greedy(model, prompts, 20, forward=forward)
    assert prefills == [(3, 1), (2, 16)]
    assert together == [engine_greedy(model, [p], 20)[0] for p in prompts]


def test_learned_positions_refill_the_last_part_of_the_window():
    # by hand: one full forward per token of the tokens since the window last restarted; once it would
    # exceed block_size it restarts at the last `keep` tokens
    model, L, keep = tiny(), 16, 12
    for p in prompts_of([4, 19]):
        out = engine_greedy(model, [p], 40)[0]
        seq, start = list(p), max(0, len(p) - L)
        for _ in range(40):
            if len(seq) - start > L:
                start = len(seq) - keep
            logits = model.head(model.hidden_states(torch.tensor([seq[start:]])))
            seq.append(int(logits[0, -1].argmax()))
        assert out == seq[len(p):]


@pytest.mark.parametrize('kind', ['rope', 'none'])
def test_sliding_cache_of_one_layer_equals_recomputing_the_window(kind):
    # with one layer a cached key depends only on its token (and rope angle), so sliding the cache
    # is exactly attention over the last block_size tokens, what a full forward of them computes
    model = tiny(pos_encoding=kind, n_layer=1)
    prompt = prompts_of([6])[0]
    out = engine_greedy(model, [prompt], 40)[0]
    assert out == by_hand(model, torch.tensor([prompt]), 40)[0, 6:].tolist()


def test_padded_vocabulary_ids_are_never_sampled():
    # the embedding has 64 rows, the tokenizer 50 ids; the head strongly prefers the padding rows
    model = tiny(vocab_size=64)
    with torch.no_grad():
        model.lm_head.weight[50:] = model.lm_head.weight[50:].sign() * 3.0
    idx = torch.tensor([[1, 2, 3]])
    free = model.generate(idx, 30, temperature=0)
    assert free[0, 3:].max() >= 50  # unmasked, the padding wins
    for kw in (dict(temperature=0), dict(temperature=5.0, top_k=0), dict(temperature=1.5, top_p=0.99),
               dict(temperature=2.0, top_k=3)):
        out = engine.generate_tensor(model, idx.repeat(4, 1), 40, n_vocab=50, generator=torch.Generator().manual_seed(0), **kw)
        assert out[:, 3:].max() < 50, kw
    logits = torch.zeros(8, 64)
    logits[:, 50:] = 10.0
    per_row = engine.sample(logits, torch.full((8,), 3.0), torch.zeros(8, dtype=torch.long), torch.ones(8), n_vocab=50)
    assert per_row.max() < 50


def test_degenerate_sampling_settings_still_pick_a_token():
    logits = torch.tensor([[0.1, 2.0, 1.9, -3.0]])
    gen = torch.Generator().manual_seed(0)
    assert int(engine.sample(logits, 1e-45, generator=gen)) == 1  # a temperature that underflows: greedy
    assert int(engine.sample(logits, 1.0, top_p=1e-300, generator=gen)) == 1  # top_p rounds to 0: the top token stays
    # per-row settings give what each row's scalar settings give
    B = 3
    rows = engine.sample(logits.repeat(B, 1), torch.tensor([0.0, 1e-45, 1.0]), torch.tensor([0, 0, 1]),
                         torch.tensor([1.0, 1.0, 1.0]), generator=gen)
    assert rows.tolist() == [1, 1, 1]


def test_stop_strings_cut_the_text_and_hold_back_their_start():
    chars = list('abc\n')
    decode = lambda ids: ''.join(chars[i] for i in ids)
    seq = Sequence([0], Params(max_tokens=20, stop=('\n\n', 'cab')), decode=decode)
    deltas = [seq.feed(t) for t in [0, 1, 3, 2, 0, 3, 3, 1]]
    # '\n' is held (it may start '\n\n') until 'c' follows, which is held in turn (it may start 'cab'),
    # 'ca' until '\n' follows; '\n\n' stops, and nothing after it comes out
    assert deltas == ['a', 'b', '', '\n', '', 'ca', '', '']
    assert seq.text == 'ab\nca' and seq.finish_reason == 'stop'
    seq = Sequence([0], Params(max_tokens=3, stop_ids=(3,)), decode=decode)
    assert [seq.feed(t) for t in [0, 3, 1]] == ['a', '', ''] and seq.finish_reason == 'stop' and seq.out == [0]


def test_a_compiled_forward_is_what_generation_runs():
    # sample.py --compile=True used to compile nothing: generate called the plain module
    import torch._dynamo
    model = tiny()
    torch._dynamo.reset()
    calls = []
    def backend(gm, example_inputs):
        calls.append(gm)
        return gm.forward
    compiled = torch.compile(model, backend=backend)
    prompts = prompts_of([3, 7])
    out = engine_greedy(model, prompts, 8, forward=compiled, static=True)
    assert calls, 'the compiled forward never ran'
    assert out == engine_greedy(model, prompts, 8)
    torch._dynamo.reset()


def test_a_row_runs_no_step_past_its_max_tokens_and_ends_by_length():
    # by hand: a prompt's prefill gives the first token, each decode step one more: max_tokens=5 is 5 forwards,
    # whatever the read-back interval; the sequence then ends by 'length' with its 5 tokens
    model = tiny(pos_encoding='rope')
    for n in (1, 5):
        calls = []
        def forward(idx, **kw):
            calls.append(idx.shape[1])
            return model(idx, **kw)
        seq = Sequence(prompts_of([3])[0], Params(max_tokens=n, temperature=0))
        with torch.no_grad():
            list(run(Batch(model, 1, 'cpu', forward=forward), [seq], sync_every=16))
        assert calls == [3] + [1] * (n - 1), n
        assert len(seq.out) == n and seq.finish_reason == 'length'
        assert seq.out == engine_greedy(model, [seq.prompt], n)[0]


def test_a_prefill_group_samples_each_row_with_its_own_settings():
    # A (greedy) holds row 0; B (temperature 100: about uniform) and C (greedy) arrive together, into rows 1 and 2,
    # one prefill of mixed settings: C's tokens must be its greedy ones, read from row 2's settings (not row 1's)
    model = tiny(pos_encoding='rope')
    prompts = prompts_of([4, 6, 6])
    a, b, c = (Sequence(p, Params(max_tokens=n, temperature=t)) for p, n, t in zip(prompts, (12, 6, 6), (0, 100.0, 0)))
    runner = engine.Runner(Batch(model, 3, 'cpu', generator=torch.Generator().manual_seed(0)), sync_every=1)
    runner.submit(a)
    with torch.no_grad():
        runner.tick()
        runner.submit(b)
        runner.submit(c)
        while runner.busy():
            runner.tick()
    assert (a.slot, b.slot, c.slot) == (None, None, None) and len(b.out) == 6
    assert a.out == engine_greedy(model, [prompts[0]], 12)[0]
    assert c.out == engine_greedy(model, [prompts[2]], 6)[0]


def test_a_stop_token_releases_the_held_text_and_half_characters_wait():
    chars = list('abc\n')
    decode = lambda ids: ''.join(chars[i] for i in ids)  # noqa: E731
    # 'c' is held back (it may start 'cab'); the stop token ends the sequence, and the held 'c' is its text's end
    seq = Sequence([0], Params(max_tokens=20, stop=('cab',), stop_ids=(3,)), decode=decode)
    assert [seq.feed(t) for t in [0, 2, 3]] == ['a', '', 'c']
    assert seq.text == 'ac' and seq.finish_reason == 'stop' and seq.out == [0, 2]
    # byte tokens: the first byte of 'é' decodes to U+FFFD and waits for the second
    utf8 = lambda ids: bytes(ids).decode('utf-8', errors='replace')  # noqa: E731
    seq = Sequence([0], Params(max_tokens=3), decode=utf8)
    assert [seq.feed(t) for t in [0x61, 0xC3, 0xA9]] == ['a', '', 'é']
    assert seq.text == 'aé' and seq.finish_reason == 'length'
