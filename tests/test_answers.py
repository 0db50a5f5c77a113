"""Answer relevance and fluency: distinct-n by hand, bootstrap intervals, real MiniLM similarities, bad input."""

from __future__ import annotations

import json
import random

import pytest

from hubstyle.errors import HubstyleError
from hubstyle.evaluate.answers import (
    answer_stats,
    bootstrap_mean_ci,
    compare_answers,
    distinct_n,
    load_encoder,
    relevance,
)

SEA = "Tell me about the sea"
ON_TOPIC = "The sea is deep and blue and full of fish."
OFF_TOPIC = "I like pizza with cheese."


@pytest.fixture(scope="module")
def encoder():
    """The offline MiniLM-L6 sentence encoder, loaded once for this file (run on one thread, restored after)."""
    import torch

    # A handful of short sentences: one thread is faster than two spinning against other jobs on shared cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_encoder()
    torch.set_num_threads(threads)


def test_distinct_n_by_hand():
    texts = ["a b a b", "a b c"]
    # unigrams a b a b a b c: 3 unique of 7; bigrams ab ba ab | ab bc: 3 unique (ab ba bc) of 5
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    # lower-cased, punctuation is a token: "hi" "," "hi" "!" -> 3 unique of 4
    assert distinct_n(["Hi, HI!"], 1) == pytest.approx(3 / 4)
    assert distinct_n(["", "one"], 2) == 0.0
    assert distinct_n([], 1) == 0.0
    with pytest.raises(HubstyleError, match="n must be a positive integer"):
        distinct_n(texts, 0)


def test_bootstrap_ci_contains_mean_reproducible_and_narrows():
    rng = random.Random(1)
    small = [rng.gauss(0.5, 0.2) for _ in range(20)]
    large = [rng.gauss(0.5, 0.2) for _ in range(2000)]
    mean, low, high = bootstrap_mean_ci(small, seed=3)
    assert mean == pytest.approx(sum(small) / len(small))
    assert low < mean < high
    assert bootstrap_mean_ci(small, seed=3) == (mean, low, high)
    assert bootstrap_mean_ci(small, seed=4) != (mean, low, high)
    _, big_low, big_high = bootstrap_mean_ci(large, seed=3)
    assert big_high - big_low < (high - low) / 4  # 100x the data: about a tenth of the width
    assert bootstrap_mean_ci([0.3]) == (0.3, 0.3, 0.3)
    with pytest.raises(HubstyleError, match="non-empty"):
        bootstrap_mean_ci([])
    with pytest.raises(HubstyleError, match="confidence"):
        bootstrap_mean_ci(small, confidence=1.0)


def test_relevance_with_real_minilm(encoder):
    on, off, same, empty = relevance([SEA] * 4, [ON_TOPIC, OFF_TOPIC, SEA, "  "], encoder=encoder, batch_size=2)
    assert on > off + 0.3, (on, off)
    assert on > 0.5 and off < 0.2
    assert same == pytest.approx(1.0, abs=1e-4)
    assert empty == 0.0
    # Batching and order do not change a score.
    assert relevance([SEA], [ON_TOPIC], encoder=encoder)[0] == pytest.approx(on, abs=1e-5)


def test_bad_input_is_one_line_error(encoder):
    with pytest.raises(HubstyleError, match="2 prompts but 1 answers") as err:
        relevance([SEA, SEA], [ON_TOPIC], encoder=encoder)
    assert "\n" not in str(err.value)
    with pytest.raises(HubstyleError, match="one string"):
        relevance(SEA, ON_TOPIC, encoder=encoder)
    with pytest.raises(HubstyleError, match="does not exist"):
        load_encoder("./no/such/encoder")


def test_compare_answers_keys_and_ratio(encoder):
    prompts = [SEA, "What is bread made of?"]
    base = [ON_TOPIC, "Bread is made of flour, water, salt and yeast."]
    tuned = [OFF_TOPIC, ""]
    result = compare_answers(prompts, base, tuned, encoder=encoder, floor=0.2)
    assert set(result) == {"base", "tuned", "relevance_ratio", "encoder"}
    assert result["encoder"] == encoder.name
    json.dumps(result)  # plain JSON data
    for side in ("base", "tuned"):
        stats = result[side]
        assert set(stats) == {"relevance", "length", "distinct_1", "distinct_2"}
        assert set(stats["relevance"]) == {"mean", "low", "high", "below_floor", "floor", "n"}
        assert set(stats["length"]) == {"mean_words", "median_words", "empty"}
        assert stats["relevance"]["n"] == 2
    b, t = result["base"], result["tuned"]
    assert b["relevance"]["below_floor"] == 0.0 and t["relevance"]["below_floor"] == 1.0
    assert t["length"] == {"mean_words": 2.5, "median_words": 2.5, "empty": 0.5}
    assert result["relevance_ratio"] == pytest.approx(t["relevance"]["mean"] / b["relevance"]["mean"], abs=1e-3)
    assert result["relevance_ratio"] < 0.5
    # answer_stats alone gives the same side.
    assert answer_stats(prompts, base, encoder=encoder) == b
    # An all-empty base has mean relevance 0: no ratio.
    assert compare_answers(prompts, ["", ""], base, encoder=encoder)["relevance_ratio"] is None
