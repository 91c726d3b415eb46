"""core/training/report.py's eval lines: an exact evaluation's perplexity is exp(loss) well past an untrained
model's loss (ln 50257 = 10.8 for GPT-2's vocabulary), capped only where exp would overflow."""

import math

from core.training import report


def test_perplexity_is_exp_of_the_val_loss_for_an_untrained_model():
    lines = report.eval_lines(3, {'train': 10.9, 'val': 10.8, 'val_bpb': math.nan, 'val_tokens': 1000})
    assert lines[0] == 'step 3: train loss 10.9000, val loss 10.8000'
    assert lines[1] == 'step 3: val perplexity 49020.8011 (exact over 1,000 tokens)'  # e^10.8 = 49020.80
    huge = report.eval_lines(1, {'train': 1e9, 'val': 1e9, 'val_bpb': math.nan, 'val_tokens': 5})
    assert 'val perplexity 5184705528587072045056.0000' in huge[1]  # e^50, the cap
