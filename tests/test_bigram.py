"""The bigram baseline: sparse counts score exactly like the dense table, at any vocabulary size."""

from __future__ import annotations

import math
import time

import pytest
import torch

from hubstyle.errors import HubstyleError
from hubstyle.pretrain import BigramBaseline


def dense_nll_per_token(train: torch.Tensor, test: torch.Tensor, v: int, lam: float) -> torch.Tensor:
    """The reference: the full v x v count table (float64), one NLL per next token of ``test``."""
    prev, nxt = train[:, :-1].reshape(-1), train[:, 1:].reshape(-1)
    counts = torch.zeros(v, v, dtype=torch.float64)
    counts.index_put_((prev, nxt), torch.ones_like(prev, dtype=torch.float64), accumulate=True)
    unigram = torch.bincount(train.reshape(-1), minlength=v).double() + 1.0
    unigram /= unigram.sum()
    rows = counts.sum(1, keepdim=True)
    bigram = torch.where(rows > 0, counts / rows.clamp(min=1), unigram)
    log_probs = torch.log(lam * bigram + (1 - lam) * unigram)
    return -log_probs[test[:, :-1], test[:, 1:]]


@pytest.mark.parametrize("lam", [0.9, 0.5, 1.0])
def test_sparse_counts_match_the_dense_table(lam):
    v = 50
    g = torch.Generator().manual_seed(0)
    # tokens 40..49 never occur in training: unseen contexts and add-one unigrams both get exercised
    train = torch.randint(0, 40, (30, 17), generator=g)
    test = torch.randint(0, v, (9, 17), generator=g)
    model = BigramBaseline(v, interpolation=lam).fit(train)
    expected = dense_nll_per_token(train, test, v, lam).mean().item()
    assert model.mean_nll(test) == pytest.approx(expected, abs=1e-6)
    assert model.mean_nll(train) == pytest.approx(dense_nll_per_token(train, train, v, lam).mean().item(), abs=1e-6)


def test_unseen_previous_token_falls_back_to_the_unigram():
    v = 10
    train = torch.tensor([[1, 2, 3, 1, 2, 9]])  # 9 is only ever a last token: never a previous one
    model = BigramBaseline(v, interpolation=0.9).fit(train)
    unigram = (torch.bincount(train.reshape(-1), minlength=v).double() + 1) / (train.numel() + v)
    # (9 -> 2): 9 has no row, so the bigram is the unigram and the mix is the unigram itself
    assert model.mean_nll(torch.tensor([[9, 2]])) == pytest.approx(-math.log(unigram[2].item()), abs=1e-12)
    # (0 -> 5): neither token was seen
    assert model.mean_nll(torch.tensor([[0, 5]])) == pytest.approx(-math.log(unigram[5].item()), abs=1e-12)
    # (1 -> 2) was seen twice out of twice: 0.9 * 1 + 0.1 * unigram
    seen = 0.9 + 0.1 * unigram[2].item()
    assert model.mean_nll(torch.tensor([[1, 2]])) == pytest.approx(-math.log(seen), abs=1e-12)
    # (1 -> 3) was never seen after a seen context: 0.9 * 0 + 0.1 * unigram
    assert model.mean_nll(torch.tensor([[1, 3]])) == pytest.approx(-math.log(0.1 * unigram[3].item()), abs=1e-12)


def test_mask_scores_only_the_masked_in_next_tokens():
    v = 50
    g = torch.Generator().manual_seed(1)
    train = torch.randint(0, v, (20, 12), generator=g)
    test = torch.randint(0, v, (4, 12), generator=g)
    model = BigramBaseline(v).fit(train)
    per_token = dense_nll_per_token(train, test, v, 0.9)
    mask = torch.rand(4, 11, generator=g) > 0.5
    assert model.mean_nll(test, mask=mask) == pytest.approx(per_token[mask].mean().item(), abs=1e-6)
    assert model.mean_nll(test, mask=torch.ones(4, 11, dtype=torch.bool)) == pytest.approx(model.mean_nll(test))
    assert model.mean_nll(test, mask=mask) != pytest.approx(model.mean_nll(test))
    with pytest.raises(HubstyleError, match=r"mask must be a bool tensor of shape \(4, 11\)"):
        model.mean_nll(test, mask=torch.ones(4, 12, dtype=torch.bool))
    with pytest.raises(HubstyleError, match="mask selects no tokens"):
        model.mean_nll(test, mask=torch.zeros(4, 11, dtype=torch.bool))


def test_a_llama3_sized_vocabulary_fits_and_is_fast():
    v = 128_256  # a dense table would be v * v * 8 bytes = 123 GiB
    g = torch.Generator().manual_seed(2)
    train = torch.randint(0, v, (8, 512), generator=g)
    test = torch.randint(0, v, (2, 512), generator=g)
    start = time.perf_counter()
    model = BigramBaseline(v).fit(train)
    nll = model.mean_nll(test)
    assert time.perf_counter() - start < 0.5
    assert math.isfinite(nll) and nll > 0
    assert model.pair_keys.numel() <= train[:, 1:].numel()  # only the bigrams seen are stored
    assert model.row_counts.numel() == model.unigram.numel() == v
    # random ids almost never repeat a bigram: each test token gets its unigram (unseen context, most of them) or
    # 0.1 of it (seen context, unseen pair); a unigram is 1 or 2 (add-one) in train.numel() + v
    total = train.numel() + v
    assert math.log(total / 2) < nll < math.log(total / 0.1)


def test_errors_name_the_problem():
    with pytest.raises(HubstyleError, match="must be fit before"):
        BigramBaseline(10).mean_nll(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(HubstyleError, match=r"token id 10 is outside the vocabulary \(0..9\)"):
        BigramBaseline(10).fit(torch.tensor([[1, 10]]))
    with pytest.raises(HubstyleError, match=r"block >= 2; got \(2, 1\)"):
        BigramBaseline(10).fit(torch.zeros(2, 1, dtype=torch.long))
