"""model.sample at the edges of float32: a temperature too large for float32 (1e300, 3.5e38, inf in a
per-row tensor) samples near uniformly instead of overflowing, and model.sampling_problem says in one
sentence what a script or the server must refuse."""

import math

import pytest
import torch

from model import MAX_TEMPERATURE, sample, sampling_problem


@pytest.mark.parametrize('temperature', [1e300, 3.5e38, MAX_TEMPERATURE,
                                         torch.tensor([1e300, 3.5e38, math.inf], dtype=torch.float64),
                                         torch.tensor([math.inf, math.inf, math.inf])])
def test_a_huge_temperature_samples_near_uniformly_and_never_a_masked_token(temperature):
    logits = torch.tensor([[0.0, 5.0, 10.0, -math.inf]]).repeat(3, 1)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(600):
        counts += torch.bincount(sample(logits, temperature, generator=g), minlength=4)
    assert counts[3] == 0  # the -inf logit stays impossible (inf / inf would have made it nan)
    assert counts[:3].min() > 0.25 * counts.sum()  # about a third each, where t=1 would pick id 2 almost always


def test_sampling_problem_refuses_what_sample_cannot_take():
    for t in (1e300, 3.5e38, math.inf, math.nan, -0.5, True, '0.8', None):
        assert sampling_problem(t).startswith('temperature must be a number from 0 (greedy) to 1e+30, got ')
    for t in (0, 0.8, 2, MAX_TEMPERATURE):
        assert sampling_problem(t) is None
    assert sampling_problem(1.0, top_p=0) == 'top_p must be in (0, 1], got 0'
    assert sampling_problem(1.0, top_p=1.5).startswith('top_p must be in (0, 1]')
    assert sampling_problem(1.0, top_k=-1).startswith('top_k must be an integer >= 0')
    assert sampling_problem(1.0, top_k=2.5).startswith('top_k must be an integer >= 0')
    assert sampling_problem(1.0, top_k=None, top_p=None) is None and sampling_problem(0.7, 40, 0.9) is None
