"""Answer relevance and fluency: distinct-n by hand, bootstrap intervals, real MiniLM similarities and prompt ranks,
random reference text, bad input."""

from __future__ import annotations

import json
import random

import pytest

from hubstyle.errors import HubstyleError
from hubstyle.evaluate.answers import (
    answer_lines,
    answer_stats,
    bootstrap_mean_ci,
    compare_answers,
    distinct_n,
    draw_reference,
    load_encoder,
    prompt_ranks,
    rank_stats,
    relevance,
)

SEA = "Tell me about the sea"
ON_TOPIC = "The sea is deep and blue and full of fish."
OFF_TOPIC = "I like pizza with cheese."
# Prompts on clearly different topics, and an answer on each prompt's topic in an archaic register.
TOPICS = ["Tell me about the sea", "What is bread made of?", "How do I fix a flat bicycle tyre?",
          "Why do cats purr?", "What causes thunder and lightning?", "How should I water a cactus?"]
ARCHAIC = ["The sea, good sir, is deep and salt, and fish do swim therein.",
           "Bread, my lord, is wrought of flour and water, salt and yeast, and baked i' the oven.",
           "Thy wheel's tyre is pierced: patch the tube, and pump it full of air again.",
           "The cat doth purr when she is content, and sometimes when she is sore afeard.",
           "Thunder is the sound the lightning maketh when it rends the heavy air.",
           "Water thy cactus but seldom, once the soil be dry, for it loveth the desert."]


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
    assert set(result) == {"base", "tuned", "reference", "relevance_ratio", "prompt_rank_ratio", "encoder"}
    assert result["encoder"] == encoder.name and result["reference"] is None  # no reference text given
    json.dumps(result)  # plain JSON data
    for side in ("base", "tuned"):
        stats = result[side]
        assert set(stats) == {"relevance", "prompt_rank", "length", "distinct_1", "distinct_2"}
        assert set(stats["prompt_rank"]) == {"top1", "top5", "mrr", "n"} and stats["prompt_rank"]["n"] == 2
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


def test_rank_stats_by_hand():
    # ranks 1, 2, 5, 10: one first, three in the first five, MRR (1 + 1/2 + 1/5 + 1/10) / 4
    assert rank_stats([1, 2, 5, 10]) == {"top1": 0.25, "top5": 0.75, "mrr": 0.45, "n": 4}
    assert rank_stats([1]) == {"top1": 1.0, "top5": 1.0, "mrr": 1.0, "n": 1}
    assert rank_stats([3, 3, 3]) == {"top1": 0.0, "top5": 1.0, "mrr": 0.3333, "n": 3}


def test_prompt_ranks_with_real_minilm(encoder):
    n = len(TOPICS)
    # An answer that repeats its prompt, or answers it in an archaic register, picks its own prompt out.
    assert prompt_ranks(TOPICS, TOPICS, encoder=encoder) == [1] * n
    assert prompt_ranks(TOPICS, ARCHAIC, encoder=encoder, batch_size=2) == [1] * n
    # The same answers shuffled (each one on another prompt's topic) rank their own prompts badly.
    shifted = ARCHAIC[1:] + ARCHAIC[:1]
    ranks = prompt_ranks(TOPICS, shifted, encoder=encoder)
    assert all(r > 1 for r in ranks), ranks
    assert rank_stats(ranks)["mrr"] < 0.5 < rank_stats(prompt_ranks(TOPICS, ARCHAIC, encoder=encoder))["mrr"]
    # An empty (or blank) answer ranks last, behind every candidate.
    assert prompt_ranks(TOPICS, ["", *ARCHAIC[1:-1], "  "], encoder=encoder) == [n, 1, 1, 1, 1, n]
    assert prompt_ranks(TOPICS[:2], ["", ""], encoder=encoder) == [2, 2]
    assert prompt_ranks([], [], encoder=encoder) == []


def test_prompt_rank_ties_count_against_the_answer(encoder):
    # Two candidates are the same prompt: an answer scoring both the same ranks below the copy, not above it.
    prompts = [SEA, SEA, TOPICS[1]]
    assert prompt_ranks(prompts, [SEA, ON_TOPIC, ARCHAIC[1]], encoder=encoder) == [2, 2, 1]
    # candidates: rank among more prompts than there are answers (answer i's own prompt is candidates[i])
    assert prompt_ranks(TOPICS[:2], ARCHAIC[:2], encoder=encoder, candidates=TOPICS) == [1, 1]
    assert prompt_ranks(TOPICS[:1], [""], encoder=encoder, candidates=TOPICS) == [len(TOPICS)]


def test_prompt_rank_bad_input_is_one_line_error(encoder):
    cases = [
        (lambda: prompt_ranks(TOPICS, ARCHAIC[:2], encoder=encoder), "6 prompts but 2 answers"),
        (lambda: prompt_ranks(SEA, ON_TOPIC, encoder=encoder), "one string"),
        (lambda: prompt_ranks([SEA, 3], [ON_TOPIC, ON_TOPIC], encoder=encoder), r"prompts\[1\] is int"),
        (lambda: prompt_ranks(TOPICS, ARCHAIC, encoder=encoder, candidates=TOPICS[:2]),
         "got 2 candidate prompts for 6 answers"),
        (lambda: rank_stats([]), "no ranks to summarise"),
        (lambda: compare_answers(TOPICS, ARCHAIC, ARCHAIC, reference_answers=ARCHAIC[:3], encoder=encoder),
         "6 prompts but 3 answers"),
        (lambda: draw_reference(ARCHAIC, -1, seed=0), "whole number from 0, got -1"),
        (lambda: draw_reference("some text", 2, seed=0), "one string"),
    ]
    for call, message in cases:
        with pytest.raises(HubstyleError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


def test_draw_reference_is_seeded_and_skips_blank_texts():
    texts = [f"passage {i}" for i in range(20)] + ["", "   "]
    drawn = draw_reference(texts, 5, seed=7)
    assert drawn == draw_reference(texts, 5, seed=7) and drawn != draw_reference(texts, 5, seed=8)
    assert len(set(drawn)) == 5 and all(t.strip() for t in drawn)  # without replacement when there are enough
    assert sorted(draw_reference(texts, 20, seed=0)) == sorted(texts[:20])
    few = draw_reference(["one", "two", ""], 4, seed=0)  # fewer texts than prompts: with replacement
    assert len(few) == 4 and set(few) <= {"one", "two"}
    assert draw_reference(["", " "], 3, seed=0) is None and draw_reference([], 3, seed=0) is None


def test_compare_answers_reads_random_real_text_as_the_reference(encoder):
    # base answers each prompt; tuned says one archaic line to all; the reference is real text written to no prompt
    base = ARCHAIC
    tuned = ["Forsooth, the hour is late and I am weary."] * len(TOPICS)
    reference = draw_reference(["O Romeo, Romeo, wherefore art thou Romeo?", "Now is the winter of our discontent.",
                                "All the world's a stage, and all the men and women merely players.",
                                "Friends, Romans, countrymen, lend me your ears.",
                                "If music be the food of love, play on.", "The quality of mercy is not strained."],
                               len(TOPICS), seed=0)
    result = compare_answers(TOPICS, base, tuned, reference_answers=reference, encoder=encoder)
    json.dumps(result)
    b, t, r = result["base"], result["tuned"], result["reference"]
    assert r == answer_stats(TOPICS, reference, encoder=encoder)  # the reference is read like any side
    assert b["prompt_rank"] == {"top1": 1.0, "top5": 1.0, "mrr": 1.0, "n": len(TOPICS)}
    # one line for every prompt picks one prompt out, whatever its register: chance level, ranks 1..n once each
    assert sorted(prompt_ranks(TOPICS, tuned, encoder=encoder)) == list(range(1, len(TOPICS) + 1))
    chance = sum(1 / k for k in range(1, len(TOPICS) + 1)) / len(TOPICS)
    assert t["prompt_rank"] == {"top1": round(1 / len(TOPICS), 4), "top5": round(5 / len(TOPICS), 4),
                                "mrr": round(chance, 4), "n": len(TOPICS)}
    assert result["prompt_rank_ratio"] == pytest.approx(1 / len(TOPICS), abs=1e-4)
    assert r["prompt_rank"]["mrr"] < b["prompt_rank"]["mrr"] and r["relevance"]["mean"] < b["relevance"]["mean"]
    # an all-empty base ranks every prompt last (top-1 of 0): no prompt-rank ratio
    assert compare_answers(TOPICS, [""] * len(TOPICS), base, encoder=encoder)["prompt_rank_ratio"] is None

    lines = answer_lines(result)
    assert [line.split(":")[0] for line in lines] == [
        "relevance (base)", "relevance (tuned)", "relevance (random real text)"]
    assert f"prompt rank top-1 100%, MRR 1.000; {b['length']['mean_words']:.1f} words" in lines[0]
    assert lines[1].startswith(f"relevance (tuned): {t['relevance']['mean']:.3f} (95% CI ")
    assert len(answer_lines({**result, "reference": None})) == 2


def test_reference_texts_read_a_conversations_trained_turns():
    from hubstyle.data.chat import Conversation
    from hubstyle.evaluate.run import reference_texts

    talk = Conversation([{"role": "user", "content": "How fare you?"}, {"role": "assistant", "content": "Well, sir."}])
    assert sorted(reference_texts([talk, "Now is the winter.", ""], 2, seed=0)) == ["Now is the winter.", "Well, sir."]
    assert reference_texts(["", talk], 3, seed=1) == ["Well, sir."] * 3
    assert reference_texts([], 3, seed=0) is None  # no style text at hand: no reference side
