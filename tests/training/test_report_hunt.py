"""core/training/report.py's start-up lines against counts worked out by hand, on a stand-in model whose
parameter counts are round numbers."""

import torch

from core.training import planner, report


class CountedModel:
    """What plan_lines reads of a model: 1,000,000 parameters without the embeddings, 1,500,000 in all, 6 MFLOPs a
    token, and 3,000 trainable (adapter) parameters beside 12,000 frozen ones."""

    def get_num_params(self, non_embedding=True):
        return 1_000_000 if non_embedding else 1_500_000

    def flops_per_token(self, block_size):
        return 6_000_000

    def parameters(self):
        return [torch.zeros(3000, requires_grad=True), torch.zeros(12000, requires_grad=False)]


def lines(monkeypatch, **kw):
    monkeypatch.setattr(planner, 'summary', lambda plan: 'a plan')
    return '\n'.join(report.plan_lines(CountedModel(), tokens_per_iter=4096, max_iters=500, world_size=1,
                                       accumulation=1, batch_size=4, block_size=1024, peak_desc='p',
                                       memory_plan=lambda b, a: None, **kw))


def test_tokens_per_parameter_counts_the_parameters_without_the_embeddings(monkeypatch):
    # 4,096 x 500 = 2,048,000 tokens over 1,000,000 non-embedding parameters: 2.0 (over all 1.5 M it would be 1.4)
    assert 'tokens planned: 2,048,000 over 500 iterations, 2.0 tokens per parameter' in lines(monkeypatch)


def test_the_lora_line_gives_the_adapters_share_of_the_whole_model(monkeypatch):
    # 3,000 trainable of 1,500,000 in all: 0.20% (of the 1,000,000 without embeddings it would be 0.30%)
    text = lines(monkeypatch, lora_config={'rank': 4, 'targets': 'attn', 'base': 'gpt2'})
    assert 'LoRA rank 4 on attn: 3,000 trainable adapter parameters (0.20% of the model), base gpt2 frozen' in text
