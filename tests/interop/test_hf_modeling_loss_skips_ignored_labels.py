"""The exported custom modeling file's loss skips labels of -100, transformers' convention for padding and prompt
tokens (what its Trainer and data collators write), and averages over the positions left. The expected loss is
written out here from the logits."""

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip('transformers')

from core.interop import hf  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402


def test_labels_of_minus_100_are_left_out_of_the_loss(tmp_path):
    torch.manual_seed(0)
    ours = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=29, qk_norm=True)).eval()
    kind, _, _ = hf.save_hf_folder(ours, tmp_path / 'm', None)
    assert kind == 'custom'
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'm', trust_remote_code=True).eval()
    idx = torch.randint(0, 29, (2, 8), generator=torch.Generator().manual_seed(2))
    labels = idx.clone()
    labels[0, :4] = -100  # a prompt not to be learned
    labels[1, 6:] = -100  # padding at the end
    with torch.no_grad():
        out = theirs(idx, labels=labels)
    # position t scored on labels[t + 1], only where that label is a token: rows 0 (t = 3..6) and 1 (t = 0..4)
    pairs = [(0, t) for t in range(3, 7)] + [(1, t) for t in range(0, 5)]
    want = torch.stack([F.cross_entropy(out.logits[b, t], idx[b, t + 1]) for b, t in pairs]).mean()
    torch.testing.assert_close(out.loss, want)
