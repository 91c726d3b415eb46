"""core/bench/report.py by hand: describe(), the model's shape in one line, then only the switches that differ from
GPT-2's defaults, in the order the config lists them; and the LoRA line's share of full fine-tuning's optimizer state
and gradients. The lines and figures are written out here."""

from core.bench.report import describe
from model import GPTConfig


def test_the_line_names_only_the_switches_that_are_not_gpt2s():
    shape = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50)
    assert describe(GPTConfig(**shape)) == "2 layers, 2 heads, 32 wide, block 16, vocab 50, bias True"
    assert describe(GPTConfig(**shape, bias=False, mlp='swiglu', pos_encoding='rope')) == \
        "2 layers, 2 heads, 32 wide, block 16, vocab 50, bias False, pos_encoding=rope, mlp=swiglu"


def test_the_lora_line_compares_adapter_state_with_full_fine_tunings_by_hand(capsys):
    from core.bench import report
    L, C, V, T, r = 2, 32, 50, 16, 4
    cfg = GPTConfig(n_layer=L, n_head=2, n_embd=C, block_size=T, vocab_size=V)
    settings = dict(optimizer='adamw', chunked_ce=False, activation_checkpointing=False, gradient_accumulation_steps=1,
                    lora_rank=r, lora_targets='attn')
    report.print_report(cfg, 2, 'cpu', 'float32', False, None, settings)
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith('LoRA:'))
    # GPT-2's parameters from the shapes; LoRA on attn adds A (r x C) and B (out x r) to qkv (out 3C) and the
    # projection (out C) of each layer. AdamW keeps two fp32 moments and an fp32 gradient: 12 bytes a trained one
    total = V * C + T * C + L * (2 * 2 * C + 3 * C * C + 3 * C + C * C + C + 4 * C * C + 4 * C + 4 * C * C + C) + 2 * C
    adapters = L * (r * C + 3 * C * r + r * C + C * r)
    assert (total, adapters) == (27584, 1536)
    assert f"are {adapters / total * 100:.2f}% of full fine-tuning's" in line
    assert f"({12 * adapters / 1024:.1f} KiB vs {12 * total / 1024:.1f} KiB)" in line
