"""NucleusSampler draws from exactly the distribution transformers' temperature + top-p warpers leave."""

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from hubstyle.errors import HubstyleError
from hubstyle.evaluate.sampling import NucleusSampler


def _reference(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    warped = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores.clone()))
    return torch.softmax(warped, dim=-1)


def _dense(sampler: NucleusSampler, scores: torch.Tensor) -> torch.Tensor:
    ids, probs = sampler.nucleus(scores)
    out = torch.zeros_like(scores).scatter_add_(1, ids, probs)
    return out / out.sum(-1, keepdim=True)


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 1.0])
def test_nucleus_matches_transformers_warpers(top_p):
    torch.manual_seed(0)
    peaked = torch.randn(5, 1000) * 4
    flat = torch.randn(3, 1000) * 0.1  # a nucleus far wider than the 16 candidates: the full-sort path
    scores = torch.cat([peaked, flat])
    scores[0, :10] = float("-inf")  # tokens another processor forbade stay forbidden
    sampler = NucleusSampler(0.8, top_p, candidates=16)
    ours, ref = _dense(sampler, scores), _reference(scores, 0.8, top_p)
    assert torch.equal(ours > 0, ref > 0)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_draws_follow_the_nucleus_and_the_seed():
    torch.manual_seed(1)
    scores = torch.randn(4, 300) * 3
    sampler = NucleusSampler(1.0, 0.9, candidates=32)
    allowed = _reference(scores, 1.0, 0.9) > 0
    torch.manual_seed(7)
    first = [sampler(None, scores).argmax(-1) for _ in range(50)]
    torch.manual_seed(7)
    again = [sampler(None, scores).argmax(-1) for _ in range(50)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(bool(allowed[torch.arange(4), tok].all()) for tok in first)
    row = sampler(None, scores)[0]
    assert int((row == 0).sum()) == 1 and bool(torch.isinf(row).sum() == 299)


def test_bad_settings_are_refused():
    with pytest.raises(HubstyleError, match="temperature"):
        NucleusSampler(0.0, 0.9)
    with pytest.raises(HubstyleError, match="top_p"):
        NucleusSampler(1.0, 0.0)
