"""A checkpoint of ours from before model_args had a 'gelu' key was trained with GPT-2's tanh GELU: it loads with
that one, and gives the logits of a model built with gelu='tanh' from its weights."""

import torch

from core.training import checkpoint
from model import GPT, GPTConfig


def test_a_checkpoint_without_the_gelu_key_loads_with_the_tanh_gelu(tmp_path):
    from core.data import tokenizer
    torch.manual_seed(0)
    tanh = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11, gelu='tanh')).eval()
    with torch.no_grad():
        for p in tanh.parameters():
            p.add_(torch.randn(p.shape))  # large enough that the two GELUs differ in the logits
    args = tanh.config.to_dict()
    del args['gelu']  # as written before the key existed; 'mlp' and the other switches were there
    path = str(tmp_path / 'ckpt.pt')
    checkpoint.save({'model': tanh.state_dict(), 'model_args': args, 'iter_num': 5, 'best_val_loss': 2.0,
                     'config': {}, 'tokenizer': tokenizer.char('abcdefghijk').state()}, path)
    model, _ = checkpoint.load_model(path)
    assert model.config.gelu == 'tanh'
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = tanh.head(tanh.hidden_states(idx))
        erf = GPT(GPTConfig(**dict(args, gelu='erf'))).eval()
        erf.load_state_dict(tanh.state_dict())
        assert (erf.head(erf.hidden_states(idx)) - want).abs().max() > 1e-4
        torch.testing.assert_close(model.eval().head(model.hidden_states(idx)), want, atol=1e-6, rtol=0)
