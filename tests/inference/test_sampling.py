"""model.sample's distribution against one worked out by hand: temperature first, then top-k, then top-p
over the tempered probabilities, each row of a batch with its own settings; both the exact
distribution it draws from and the frequencies of many draws."""

import math

import pytest
import torch

import model as model_lib

LOGITS = [3.0, 2.0, 1.0, 0.0, -1.0]


def by_hand(logits, temperature, top_k, top_p):
    """The distribution over ids, written out: divide by temperature, keep the top_k largest (0: all),
    then keep tokens from the most likely down until the ones kept before a token cover top_p."""
    if temperature == 0:
        best = max(range(len(logits)), key=lambda i: logits[i])
        return [1.0 if i == best else 0.0 for i in range(len(logits))]
    z = [x / temperature for x in logits]
    order = sorted(range(len(z)), key=lambda i: -z[i])
    kept = order[:top_k] if top_k else order
    total = sum(math.exp(z[i]) for i in kept)
    p = {i: math.exp(z[i]) / total for i in kept}
    nucleus, covered = [], 0.0
    for i in kept:
        if nucleus and covered >= top_p:
            break
        nucleus.append(i)
        covered += p[i]
    total = sum(p[i] for i in nucleus)
    return [p[i] / total if i in nucleus else 0.0 for i in range(len(logits))]


# (temperature, top_k, top_p): each setting changes the answer, and the order matters: top_p=0.9 keeps
# two tokens of the tempered distribution at T=0.5 but three of the untempered one
ROWS = [(0.5, 0, 0.9), (1.0, 2, 1.0), (2.0, 4, 0.8), (1.0, 0, 0.7), (0.7, 3, 0.95), (0, 0, 1.0)]


def drawn_from(monkeypatch, **settings):
    """The probabilities model.sample hands to torch.multinomial, and the ids it returns."""
    seen = []
    real = torch.multinomial

    def spy(probs, *args, **kw):
        seen.append(probs.detach().clone())
        return real(probs, *args, **kw)
    monkeypatch.setattr(torch, 'multinomial', spy)
    ids = model_lib.sample(**settings)
    monkeypatch.setattr(torch, 'multinomial', real)
    return (seen[0] if seen else None), ids


def test_hand_distributions_differ_for_each_setting():
    # the fixture's point: a bug that drops or reorders any one filter changes some row
    assert by_hand(LOGITS, 0.5, 0, 0.9) != by_hand(LOGITS, 1.0, 0, 0.9)
    assert sum(p > 0 for p in by_hand(LOGITS, 0.5, 0, 0.9)) == 2
    assert sum(p > 0 for p in by_hand([x / 0.5 for x in LOGITS], 1.0, 0, 0.9)) == 2
    assert sum(p > 0 for p in by_hand(LOGITS, 1.0, 0, 0.9)) == 3


@pytest.mark.parametrize('temperature, top_k, top_p', ROWS[:-1])
def test_one_setting_draws_from_the_hand_distribution(monkeypatch, temperature, top_k, top_p):
    probs, _ = drawn_from(monkeypatch, logits=torch.tensor([LOGITS]), temperature=temperature, top_k=top_k or None,
                          top_p=top_p)
    torch.testing.assert_close(probs[0].double(), torch.tensor(by_hand(LOGITS, temperature, top_k, top_p),
                                                               dtype=torch.double), atol=1e-6, rtol=0)


def test_each_row_of_a_batch_draws_with_its_own_settings(monkeypatch):
    t, k, p = (torch.tensor(c) for c in zip(*ROWS))
    logits = torch.tensor([LOGITS] * len(ROWS))
    probs, ids = drawn_from(monkeypatch, logits=logits, temperature=t.float(), top_k=k, top_p=p.float())
    for row, (temperature, top_k, top_p) in enumerate(ROWS[:-1]):
        want = torch.tensor(by_hand(LOGITS, temperature, top_k, top_p), dtype=torch.double)
        torch.testing.assert_close(probs[row].double(), want, atol=1e-6, rtol=0, msg=f"row {row}")
    assert ids[-1].item() == 0  # temperature 0: greedy


def test_a_row_in_a_shuffled_batch_gets_the_same_distribution(monkeypatch):
    # per-row settings must follow their row, not their position among the settings
    order = [3, 0, 5, 1, 4, 2]
    rows = [ROWS[i] for i in order]
    scrambled = [LOGITS[::-1] if i % 2 else LOGITS for i in range(len(rows))]
    t, k, p = (torch.tensor(c) for c in zip(*rows))
    probs, _ = drawn_from(monkeypatch, logits=torch.tensor(scrambled), temperature=t.float(), top_k=k, top_p=p.float())
    for row, (temperature, top_k, top_p) in enumerate(rows):
        if temperature == 0:
            continue
        want = torch.tensor(by_hand(scrambled[row], temperature, top_k, top_p), dtype=torch.double)
        torch.testing.assert_close(probs[row].double(), want, atol=1e-6, rtol=0, msg=f"row {row}")


@pytest.mark.parametrize('temperature, top_k, top_p', [(0.5, 0, 0.9), (2.0, 4, 0.8), (0.7, 3, 0.95)])
def test_frequencies_of_many_draws_match_the_hand_distribution(temperature, top_k, top_p):
    # black-box: count what comes out, whatever sample draws with; 20,000 draws put each frequency
    # within 0.015 of its probability (over 4 standard errors)
    n = 20000
    ids = model_lib.sample(torch.tensor([LOGITS] * n), temperature, top_k or None, top_p,
                           generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(ids, minlength=len(LOGITS)).double() / n
    want = torch.tensor(by_hand(LOGITS, temperature, top_k, top_p), dtype=torch.double)
    assert ((freq - want).abs() < 0.015).all(), (freq, want)
    assert (freq[want == 0] == 0).all()  # a filtered token never comes out


def test_per_row_frequencies_match_too():
    n = 4000
    t, k, p = (torch.tensor(c).repeat_interleave(n) for c in zip(*ROWS))
    ids = model_lib.sample(torch.tensor([LOGITS] * (n * len(ROWS))), t.float(), k, p.float(),
                           generator=torch.Generator().manual_seed(1)).view(len(ROWS), n)
    for row, (temperature, top_k, top_p) in enumerate(ROWS):
        freq = torch.bincount(ids[row], minlength=len(LOGITS)).double() / n
        want = torch.tensor(by_hand(LOGITS, temperature, top_k, top_p), dtype=torch.double)
        assert ((freq - want).abs() < 0.035).all(), (row, freq, want)
        assert (freq[want == 0] == 0).all()


def test_first_argmax_is_the_first_index_of_the_largest_value():
    """model.first_argmax (greedy decoding's pick) against a plain Python scan, on rows with ties at the top
    (the first of them wins, as argmax), all -inf, inf, a single column, and a 50k vocabulary."""
    g = torch.Generator().manual_seed(0)
    inf = float('inf')
    rows = [[1.0, 3.0, 3.0, 2.0], [-inf, -inf, -inf, -inf], [0.0, inf, 5.0, inf], [2.0, 2.0, 2.0, 2.0],
            [-1.0, -3.0, -2.0, -1.0]]
    wide = torch.randint(0, 50, (6, 50257), generator=g).float()  # many ties in every row
    for x in [torch.tensor(rows), torch.tensor([[7.0], [-inf]]), wide, torch.randn(3, 50257, generator=g)]:
        want = [max(range(len(r)), key=lambda i: (r[i], -i)) for r in x.tolist()]
        assert model_lib.first_argmax(x).tolist() == want
        assert model_lib.first_argmax(x).dtype == torch.long
        assert model_lib.sample(x, 0).tolist() == want
