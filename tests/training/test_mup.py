"""muP (GPTConfig.mup): the coordinate check, the base width as the standard model, and every reader of a
muP model (export folds the multipliers into the weights, so Hugging Face and GGUF readers compute our logits)."""

import os

import pytest
import torch

from conftest import SWITCHES, TINY, make_char_dataset, run_script, switch_id
from model import GPT, GPTConfig

WIDTHS = (32, 64, 128, 256)


def build(width, mup, base=32, seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(block_size=32, vocab_size=65, n_layer=2, n_head=4, n_embd=width, bias=False, mup=mup,
                mup_base_width=base)
    args.update(kw)
    return GPT(GPTConfig(**args))


def layer_outputs(model, x):
    """The RMS-able outputs of every layer on batch x: the embedding, each attention and MLP, the logits."""
    out, hooks = {}, []

    def grab(name):
        return lambda module, inputs, output: out.__setitem__(name, output.detach().float())
    hooks.append(model.transformer.wte.register_forward_hook(grab('wte')))
    for i, block in enumerate(model.transformer.h):
        hooks.append(block.attn.register_forward_hook(grab(f'attn{i}')))
        hooks.append(block.mlp.register_forward_hook(grab(f'mlp{i}')))
    with torch.no_grad():
        out['logits'] = model(x, x)[0].float()
    for h in hooks:
        h.remove()
    return out


def coordinates(width, mup, optimizer, steps=3, lr=1e-2):
    """{layer: (RMS of its output at init, RMS of how much that output moved after `steps` steps)}: the
    coordinate check of Tensor Programs V, on a fixed batch, at a fixed learning rate."""
    model = build(width, mup)
    opt = model.configure_optimizers(0.0, lr, (0.9, 0.95), 'cpu', optimizer, muon_lr=lr)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 65, (8, 32), generator=gen)
    before = layer_outputs(model, x)
    for _ in range(steps):
        batch = torch.randint(0, 65, (8, 33), generator=gen)
        model(batch[:, :-1], batch[:, 1:])[1].backward()
        opt.step()
        opt.zero_grad()
    after = layer_outputs(model, x)
    rms = lambda t: t.pow(2).mean().sqrt().item()
    return {k: (rms(before[k]), rms(after[k] - before[k])) for k in before}


@pytest.mark.parametrize('optimizer', ['adamw', 'muon'])
def test_coordinate_check_flat_under_mup_growing_without(optimizer):
    # 8x the width: under muP no layer's output (at init) or its change (after 3 steps) grows by more than 1.5x;
    # under the standard parametrisation every hidden layer's grows 4x or more
    grown = {}
    for mup in (True, False):
        rows = {w: coordinates(w, mup, optimizer) for w in WIDTHS}
        grown[mup] = {(k, i): rows[WIDTHS[-1]][k][i] / rows[WIDTHS[0]][k][i] for k in rows[WIDTHS[0]] for i in (0, 1)}
    for (layer, i), g in grown[True].items():
        assert g < 1.5, (layer, 'update' if i else 'init', g)
    for (layer, i), g in grown[False].items():
        if layer.startswith(('attn', 'mlp')):
            assert g > 4, (layer, 'update' if i else 'init', g)
    if optimizer == 'adamw':  # the standard logits' change grows too (Muon leaves the head to AdamW in both)
        assert grown[False][('logits', 1)] > 2.5


def test_the_base_width_is_the_standard_model():
    sp, mup = build(64, False), build(64, True, base=64)
    for (name, a), (_, b) in zip(sp.state_dict().items(), mup.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    x = torch.randint(0, 65, (2, 32))
    torch.testing.assert_close(mup(x, x)[1], sp(x, x)[1], atol=1e-6, rtol=0)
    lrs = lambda m: sorted(g['initial_lr'] for g in m.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu').param_groups)
    assert set(lrs(mup)) == set(lrs(sp)) == {1e-3}


def test_the_rules_by_hand():
    # width 128 over base 32: hidden matrices start at 0.02 / sqrt(4) and learn at lr / 4, the head's logits are
    # divided by 4, attention scores take 1/head size with the base head size's 1/sqrt at the base width
    model = build(128, True, n_layer=8)
    fc = model.transformer.h[0].mlp.c_fc.weight
    assert abs(fc.std().item() - 0.01) < 0.0005
    assert abs(model.transformer.wte.weight.std().item() - 0.02) < 0.001  # embeddings keep theirs
    assert model.config.attention_scale == pytest.approx(8 ** -0.5 * 8 / 32)
    groups = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu').param_groups
    hidden = {id(p) for n, p in model.named_parameters() if n.startswith('transformer.h.') and p.dim() == 2}
    for g in groups:
        kinds = {id(p) in hidden for p in g['params']}
        assert len(kinds) == 1 and g['initial_lr'] == pytest.approx(2.5e-4 if kinds == {True} else 1e-3)
    x = torch.randint(0, 65, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], model.lm_head(model.hidden_states(x)[:, -1:]) / 4)
    muon = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu', 'muon', muon_lr=0.02)
    assert muon.optimizers[0].param_groups[0]['initial_lr'] == 0.02  # Muon's update is sized by shape already


@pytest.mark.parametrize('switch', SWITCHES, ids=switch_id)
def test_folding_mup_away_keeps_the_logits(switch):
    model = build(64, True, base=16, **{'bias': True, **switch})
    with torch.no_grad():  # gains and biases away from 1 and 0, so a misplaced fold would show
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    plain = model.without_mup()
    assert not plain.config.mup and plain is not model
    x = torch.randint(0, 65, (3, 32))
    with torch.no_grad():
        torch.testing.assert_close(plain(x, x)[0], model(x, x)[0], atol=1e-5, rtol=1e-5)
        # and generation with its KV cache, which goes through the same head
        out = model.eval().generate(x[:, :5], 8, temperature=0)
        torch.testing.assert_close(plain.eval().generate(x[:, :5], 8, temperature=0), out, atol=0, rtol=0)
        assert torch.equal(model.generate(x[:, :5], 8, temperature=0, use_cache=False), out)
    assert build(64, False).without_mup().config.mup is False


def test_export_and_readers_of_a_mup_run(tmp_path):
    transformers = pytest.importorskip('transformers')
    data = make_char_dataset(str(tmp_path / 'data'), 20_000)
    out = tmp_path / 'run'
    args = [a for a in TINY if not a.startswith('--n_embd')]
    r = run_script('train.py', *args, '--n_embd=64', '--mup=True', '--mup_base_width=32', f'--dataset={data}',
                   f'--out_dir={out}', '--max_iters=4', '--eval_interval=4', timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    from core.training import checkpoint
    state = checkpoint.load(os.path.join(out, 'ckpt.pt'))
    assert state['model_args']['mup'] is True
    ours = checkpoint.build_model(state, str(out)).eval()
    r = run_script('export.py', f'--out_dir={out}', timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out / 'hf')
    assert type(theirs).__name__ == 'GPT2LMHeadModel'  # the folded model is plain GPT-2 with an untied head
    idx = torch.randint(0, ours.config.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(theirs(idx).logits, ours.head(ours.hidden_states(idx)), atol=1e-4, rtol=0)
    r = run_script('sample.py', f'--out_dir={out}', '--num_samples=1', '--max_new_tokens=5', '--device=cpu',
                   '--compile=False', timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
