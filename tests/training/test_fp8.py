"""fp8=True (core/training/fp8.py) without an FP8 GPU: the refusals on every machine that cannot run it,
the choice of layers, and, where torchao is installed, its CPU emulation of the float8 matmuls against
the plain model. The speed and the 500-step loss are measured on a GPU by studies/gpu_round.py."""

import dataclasses
import subprocess
import sys
import types

import pytest
import torch
import torch.nn as nn

from conftest import REPO, assert_one_line_error
from core.errors import UserError
from core.training import fp8
from model import GPT, GPTConfig

HAVE_TORCHAO = fp8.torchao_float8() is not None


@pytest.fixture
def fake_gpu(monkeypatch):
    def install(capability=(9, 0), name='NVIDIA H100 80GB HBM3'):
        monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: name)
        monkeypatch.setattr(torch.version, 'hip', None)
    return install


def stand_in(with_fsdp_field=True):
    """A module shaped like torchao.float8 whose swap records its config and marks the layers it was given."""
    fields = [('emulate', bool, False)] + ([('enable_fsdp_float8_all_gather', bool, False)] if with_fsdp_field else [])
    Config = dataclasses.make_dataclass('Float8LinearConfig', fields)

    class Float8Linear(nn.Linear):
        pass

    def convert_to_float8_training(module, *, module_filter_fn=None, config=None):
        for fqn, m in list(module.named_modules()):
            if isinstance(m, nn.Linear) and module_filter_fn(m, fqn):
                parent, _, leaf = fqn.rpartition('.')
                new = Float8Linear(m.in_features, m.out_features, bias=m.bias is not None)
                new.weight, new.bias, new.config = m.weight, m.bias, config
                setattr(module.get_submodule(parent), leaf, new)
        return module
    return types.SimpleNamespace(Float8LinearConfig=Config, convert_to_float8_training=convert_to_float8_training)


def test_refused_off_an_fp8_gpu(fake_gpu, monkeypatch):
    for device in ('cpu', 'mps'):
        with pytest.raises(UserError, match=f'fp8=True needs an NVIDIA GPU.*on {device}: use --fp8=False'):
            fp8.check(True, device, 'bfloat16')
    for capability, name in (((8, 0), 'NVIDIA A100-SXM4-80GB'), ((8, 6), 'NVIDIA GeForce RTX 3090'),
                             ((7, 5), 'Tesla T4')):
        fake_gpu(capability, name)
        with pytest.raises(UserError, match=rf'{name} is {capability[0]}\.{capability[1]}: use --fp8=False'):
            fp8.check(True, 'cuda', 'bfloat16')
    fake_gpu((9, 4))
    monkeypatch.setattr(torch.version, 'hip', '6.2')
    with pytest.raises(UserError, match='ROCm'):
        fp8.check(True, 'cuda', 'bfloat16')
    fp8.check(False, 'cpu', 'float32')  # off: nothing is checked


def test_refused_with_what_it_does_not_mix_with(fake_gpu, monkeypatch):
    fake_gpu((8, 9), 'NVIDIA L4')
    monkeypatch.setattr(fp8, 'torchao_float8', lambda: stand_in())
    for dtype in ('float16', 'float32'):
        with pytest.raises(UserError, match=f'dtype={dtype} does not mix'):
            fp8.check(True, 'cuda', dtype)
    with pytest.raises(UserError, match='LoRA'):
        fp8.check(True, 'cuda', 'bfloat16', lora_rank=8)
    fp8.check(True, 'cuda', 'bfloat16')
    fp8.check(True, 'cuda:1', 'bfloat16', fsdp=True)  # FSDP2 with float8 all-gather
    monkeypatch.setattr(fp8, 'torchao_float8', lambda: stand_in(with_fsdp_field=False))
    fp8.check(True, 'cuda', 'bfloat16')
    with pytest.raises(UserError, match='fsdp=True needs torchao.s FSDP2 float8'):
        fp8.check(True, 'cuda', 'bfloat16', fsdp=True)
    monkeypatch.setattr(fp8, 'torchao_float8', lambda: None)
    with pytest.raises(UserError, match='needs torchao .pip install torchao'):
        fp8.check(True, 'cuda', 'bfloat16')


def test_a_refusal_is_one_line_and_exit_2():
    code = ("from core.errors import install_excepthook; install_excepthook()\n"
            "from core.training import fp8; fp8.check(True, 'cpu', 'bfloat16')")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert_one_line_error(r, 'fp8=True', 'on cpu', '--fp8=False')


def test_the_blocks_linear_layers_are_swapped_not_the_head():
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, mlp='swiglu'))
    keys = list(model.state_dict())
    want = [f'transformer.h.{i}.{m}' for i in range(2) for m in ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj')]
    # swiglu's hidden width round(8 * 32 / 3) = 85 is no multiple of 16: the MLP's two layers stay as they are
    assert fp8.targets(model) == [n for n in want if '.mlp.' not in n]
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64))
    assert fp8.targets(model) == want
    float8 = stand_in()
    assert fp8.convert(model, fsdp=True, float8=float8) == want
    assert fp8.converted(model) == want
    assert all(model.get_submodule(n).config.enable_fsdp_float8_all_gather for n in want)
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight is model.transformer.wte.weight
    assert list(model.state_dict()) == keys  # checkpoints keep their keys


@pytest.mark.skipif(not HAVE_TORCHAO, reason="torchao is not installed")
def test_torchao_emulation_trains_like_the_plain_model():
    # torchao's emulated float8 matmuls on the CPU: e4m3 keeps 3 mantissa bits, so the loss moves by well under
    # a percent and the gradients point the same way; a few steps of AdamW lower the loss as the plain model's do
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=96)
    plain = GPT(cfg)
    ours = GPT(cfg)
    ours.load_state_dict(plain.state_dict())
    names = fp8.convert(ours, emulate=True)
    assert fp8.converted(ours) == names and len(names) == 8
    x, y = torch.randint(0, 96, (4, 32)), torch.randint(0, 96, (4, 32))
    losses = {}
    for label, m in (('plain', plain), ('fp8', ours)):
        _, loss = m(x, y)
        loss.backward()
        losses[label] = loss.item()
    assert losses['fp8'] == pytest.approx(losses['plain'], rel=1e-2)
    for name in names:
        g, g8 = plain.get_submodule(name).weight.grad, ours.get_submodule(name).weight.grad
        assert torch.cosine_similarity(g.flatten(), g8.flatten(), dim=0) > 0.98, name
    assert list(ours.state_dict()) == list(plain.state_dict())
    opt = ours.configure_optimizers(0.0, 3e-3, (0.9, 0.95), 'cpu')
    first = None
    for _ in range(15):
        _, loss = ours(x, y)
        first = first or loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5
