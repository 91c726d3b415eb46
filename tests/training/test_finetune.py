"""Chat fine-tuning with LoRA through train.py: the committed example dialogues prepared with GPT-2's
tokenizer plus the chat tokens, a pretrained base (a tiny GPT-2 folder) grown for them, doc_aware
windows, adapters alone in the checkpoint, the base untouched, merged.pt and the checkpoint's own
rebuild giving the adapted logits; LoRA mistakes are one line."""

import os

import torch

from conftest import REPO, assert_one_line_error, run_script
from core.training import checkpoint
from core.data import prepare as P
from core.data import tokenizer as tk


def test_lora_chat_finetune(tmp_path):
    from core.interop import hf
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    base = GPT(GPTConfig(vocab_size=50257, n_layer=2, n_head=2, n_embd=32, block_size=64, gelu='tanh'))
    hf.save_hf_folder(base, str(tmp_path / 'base'), tk.gpt2().state())
    data = str(tmp_path / 'chat')
    P.prepare(os.path.join(REPO, 'data', 'shakespeare_chat', 'dialogues.jsonl'), data, format='chat', progress=False)
    out = str(tmp_path / 'run')
    args = [f'--init_from=hf:{tmp_path / "base"}', f'--dataset={data}', f'--out_dir={out}', '--lora_rank=4',
            '--lora_targets=attn,mlp', '--doc_aware=True', '--merge_lora=True', '--max_iters=3', '--eval_interval=3',
            '--eval_iters=1', '--batch_size=2', '--block_size=32', '--gradient_accumulation_steps=1',
            '--learning_rate=1e-2', '--warmup_iters=0', '--device=cpu', '--compile=False']
    r = run_script('train.py', *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'vocabulary grown to 50261' in r.stdout and 'trainable adapter parameters' in r.stdout
    ckpt = checkpoint.load(os.path.join(out, 'ckpt.pt'))
    assert set(ckpt['model']) == {f'transformer.h.{i}.{m}.lora_{w}' for i in range(2)
                                  for m in ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj') for w in 'AB'}
    assert len(ckpt['optimizer']['state']) == 16  # the optimizer holds the adapters alone
    assert ckpt['lora']['base'] == f'hf:{tmp_path / "base"}' and ckpt['model_args']['vocab_size'] == 50261
    adapted = checkpoint.build_model(ckpt, 'ckpt.pt', merge=False).eval()
    merged, _ = checkpoint.load_model(os.path.join(out, 'merged.pt'))
    # the base's weights are those of the folder it came from, bit for bit
    state = adapted.state_dict()
    loaded = hf.from_pretrained(f'hf:{tmp_path / "base"}').state_dict()
    assert set(loaded) == {k for k in state if 'lora_' not in k}
    for k, v in loaded.items():
        n = min(len(v), len(state[k]))  # the embedding grew by the chat tokens, wpe was cropped to block_size
        assert torch.equal(state[k][:n], v[:n]), k
    assert any(ckpt['model'][k].abs().sum() > 0 for k in ckpt['model'] if k.endswith('lora_B'))  # they trained
    x = torch.randint(50261, (2, 24))
    with torch.no_grad():
        a = adapted.head(adapted.hidden_states(x))
        b = merged.eval().head(merged.hidden_states(x))
    assert torch.allclose(a, b, atol=1e-5)

    bad = run_script('train.py', *args[:-1], '--lora_rank=33', f'--out_dir={tmp_path / "bad"}')
    assert_one_line_error(bad, 'lora_rank=33', 'at most 32')
    bad = run_script('train.py', f'--dataset={data}', '--lora_rank=4', f'--out_dir={tmp_path / "bad"}', '--device=cpu')
    assert_one_line_error(bad, 'LoRA adapts a pretrained model')
    bad = run_script('train.py', '--init_from=gpt2', '--lora_rank=4', '--fsdp=True', f'--out_dir={tmp_path / "bad"}')
    assert_one_line_error(bad, 'LoRA does not work with fsdp=True')
    assert bad.returncode == 2


def test_lora_run_that_is_its_own_base(tmp_path):
    # a LoRA run trained from a run folder, then started over in that same folder (--overwrite=True moves the old run
    # aside): its base now names the adapters' own checkpoint, and rebuilding it recursed until Python's limit
    from model import GPT, GPTConfig
    from core.training import lora
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, n_layer=1, n_head=2, n_embd=16, block_size=16))
    lora.add(model, 2, 4, 'attn')
    run = tmp_path / 'run'
    run.mkdir()
    spec = {'rank': 2, 'alpha': 4, 'targets': 'attn', 'base': str(run)}
    ckpt = {'model': lora.adapter_state(model), 'model_args': model.config.to_dict(), 'lora': spec,
            'iter_num': 1, 'best_val_loss': 1.0, 'config': {}}
    torch.save(ckpt, run / 'ckpt.pt')
    state = checkpoint.load(str(run / 'ckpt.pt'))
    try:
        checkpoint.build_model(state, str(run / 'ckpt.pt'))
    except Exception as e:  # noqa: B902
        assert type(e).__name__ == 'UserError' and 'was replaced' in str(e) and str(run) in str(e), repr(e)[:300]
    else:
        raise AssertionError('a LoRA run whose base is itself was built')
    r = run_script('sample.py', f'--out_dir={run}', '--ckpt=latest', '--max_new_tokens=2', '--device=cpu')
    assert_one_line_error(r, 'was replaced')
