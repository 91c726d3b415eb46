"""Muon's muon_ns='polar_express' (the recipe's, and every plan's) against the published iteration, written out here
as modded-nanogpt runs it (Amsel et al. 2025, arXiv:2505.16932): the matrix scaled to 1/1.02 of unit Frobenius norm,
then five quintic steps with the paper's coefficients, in float32."""

import pytest
import torch

from core.training import optim

PUBLISHED = [(8.156554524902461, -22.48329292557795, 15.878769915207462),
             (4.042929935166739, -2.808917465908714, 0.5000178451051316),
             (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
             (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
             (2.3465413258596377, -1.7097828382687081, 0.42323551169305323)]


def polar_express(G):
    X = G.float()
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-7)
    for a, b, c in PUBLISHED:
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if tall else X


@pytest.mark.parametrize('shape', [(3, 32, 32), (2, 32, 96), (2, 96, 32)])
def test_polar_express_is_the_published_iteration(shape, monkeypatch):
    monkeypatch.setattr(optim, 'cpu_native_bf16', lambda: False)  # float32 on every CPU, as the reference
    torch.manual_seed(0)
    G = torch.randn(shape)
    got = optim.orthogonalize(G, 'polar_express', 1e-7, None, None)
    torch.testing.assert_close(got, polar_express(G), atol=2e-4, rtol=2e-3)
