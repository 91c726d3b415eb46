"""Details of model.py checked against values written out by hand: the rotary tables past the window, SwiGLU's
hidden width, and what the optimizers' parameter groups hold."""

import math

import torch

from model import GPT, GPTConfig


def tiny(**kw):
    torch.manual_seed(0)
    args = dict(block_size=8, vocab_size=32, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=False)
    args.update(kw)
    return GPT(GPTConfig(**args))


def hand_angles(position, head_dim, base):
    """The rotary angle of each (first half, second half) pair at one position: position * base^(-2i/d)."""
    return [position * base ** (-2 * i / head_dim) for i in range(head_dim // 2)]


def test_rope_tables_grown_past_the_window_continue_the_positions():
    # a sliding-window decode asks for positions past block_size; the grown rows must be those positions' angles
    model = tiny(pos_encoding='rope', rope_base=100.0)
    head_dim = 16 // 2
    far = 8 + 5  # past the 8 rows built with the model
    cos, sin = model._rope(torch.tensor([[far]]), far + 1, torch.float32)
    want = hand_angles(far, head_dim, 100.0)
    assert torch.allclose(cos.flatten(), torch.tensor([math.cos(a) for a in want]), atol=1e-5)
    assert torch.allclose(sin.flatten(), torch.tensor([math.sin(a) for a in want]), atol=1e-5)
    # and the rows the model was built with are unchanged
    assert torch.allclose(model.rope_cos[3], torch.tensor([math.cos(a) for a in hand_angles(3, head_dim, 100.0)]),
                          atol=1e-5)


def test_swiglu_hidden_width_is_eight_thirds_rounded_to_nearest():
    # 8 * 64 / 3 = 170.67 -> 171; 8 * 40 / 3 = 106.67 -> 107; 8 * 48 / 3 = 128 exactly; gelu keeps 4x
    assert GPTConfig(n_embd=64, n_head=4, mlp='swiglu').mlp_hidden == 171
    assert GPTConfig(n_embd=40, n_head=4, mlp='swiglu').mlp_hidden == 107
    assert GPTConfig(n_embd=48, n_head=4, mlp='swiglu').mlp_hidden == 128
    assert GPTConfig(n_embd=64, n_head=4, mlp='gelu').mlp_hidden == 256
    model = tiny(n_embd=64, n_head=4, mlp='swiglu', n_layer=1)
    assert tuple(model.transformer.h[0].mlp.c_fc.weight.shape) == (2 * 171, 64)  # gate and value in one matmul
    assert tuple(model.transformer.h[0].mlp.c_proj.weight.shape) == (64, 171)


def test_muon_momentum_given_reaches_the_muon_optimizer():
    model = tiny()
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu', optimizer='muon', muon_lr=0.03,
                                     muon_momentum=0.8)
    muon = opt.optimizers[0]
    assert [g['momentum'] for g in muon.param_groups] == [0.8]
    assert [g['lr'] for g in muon.param_groups] == [0.03]
    # the momentum acts: after one step from a zero buffer, the buffer holds (1 - momentum) * gradient
    torch.manual_seed(1)
    x = torch.randint(0, 32, (2, 8))
    model(x, x)[1].backward()
    w = model.transformer.h[0].attn.c_proj.weight
    g = w.grad.clone()
    opt.step()
    assert torch.allclose(muon.state[w]['momentum_buffer'], 0.2 * g, atol=1e-6)


def test_chunked_loss_under_mup_matches_the_plain_loss():
    # muP divides the logits by the width multiplier; the chunked loss must apply the same multiplier
    model = tiny(mup=True, mup_base_width=8, n_embd=32)  # width multiplier 4
    assert model.config.mup_width_mult == 4
    torch.manual_seed(2)
    x = torch.randint(0, 32, (2, 8))
    y = torch.randint(0, 32, (2, 8))
    plain = model.set_memory_savers(chunked_ce=False)(x, y)[1]
    with torch.no_grad():  # the reference written out: the head's logits over 4, then cross-entropy
        h = model.hidden_states(x)
        ref = torch.nn.functional.cross_entropy((h @ model.lm_head.weight.t() / 4).reshape(-1, 32), y.reshape(-1))
    assert torch.allclose(plain, ref, atol=1e-5)
    chunked = model.set_memory_savers(chunked_ce=True)(x, y)[1]
    assert torch.allclose(chunked, ref, atol=1e-5)
