"""Wilson intervals against known values, RateCI, and loading prompt sets."""

from __future__ import annotations

import math

import pytest

from hubstyle.errors import HubstyleError
from hubstyle.evaluate.prompts import load_demo_prompts, load_prompts
from hubstyle.evaluate.stats import RateCI, wilson_interval

# Worked by hand from the closed form (and cross-checked by solving |p - p_hat| = z sqrt(p(1 - p) / n) for p).
KNOWN = [
    (8, 10, 0.95, (0.4902, 0.9433)),
    (0, 10, 0.95, (0.0, 0.2775)),
    (10, 10, 0.95, (0.7225, 1.0)),
    (50, 100, 0.95, (0.4038, 0.5962)),
    (1, 3, 0.95, (0.0615, 0.7923)),
    (8, 10, 0.99, (0.4008, 0.9599)),
]


@pytest.mark.parametrize(("successes", "n", "confidence", "expected"), KNOWN)
def test_wilson_known_values(successes, n, confidence, expected):
    low, high = wilson_interval(successes, n, confidence)
    assert low == pytest.approx(expected[0], abs=1e-4)
    assert high == pytest.approx(expected[1], abs=1e-4)


def test_wilson_bounds_solve_the_score_equation():
    z = 1.959963984540054
    for successes, n in [(3, 17), (40, 41), (123, 500)]:
        p_hat = successes / n
        for bound in wilson_interval(successes, n):
            assert abs(p_hat - bound) == pytest.approx(z * math.sqrt(bound * (1 - bound) / n), rel=1e-9)


def test_wilson_is_symmetric_and_narrows_with_n():
    low, high = wilson_interval(3, 10)
    mirror_low, mirror_high = wilson_interval(7, 10)
    assert (low, high) == pytest.approx((1 - mirror_high, 1 - mirror_low))
    assert wilson_interval(300, 1000)[1] - wilson_interval(300, 1000)[0] < high - low


def test_wilson_empty_sample_is_the_whole_range():
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("successes", "n", "confidence"), [(11, 10, 0.95), (-1, 10, 0.95), (1, 10, 1.0), (1, 10, 0)])
def test_wilson_bad_input(successes, n, confidence):
    with pytest.raises(HubstyleError) as err:
        wilson_interval(successes, n, confidence)
    assert "\n" not in str(err.value)


def test_rate_ci():
    ci = RateCI.from_counts(8, 10)
    assert (ci.rate, ci.successes, ci.n) == (0.8, 8, 10)
    assert (ci.low, ci.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert ci.as_dict()["high"] == ci.high
    assert str(ci) == "80.0% (8/10; 95% CI 49.0%-94.3%)"
    assert RateCI.from_counts(0, 0).rate == 0.0


# --- prompt sets -------------------------------------------------------------------------------------------


def test_packaged_prompts():
    prompts = load_prompts()
    assert len(prompts) >= 150
    assert len(set(prompts)) == len(prompts)
    assert all(3 <= len(p.split()) <= 12 for p in prompts)
    assert not any(p.startswith("#") for p in prompts)
    old = {"thou", "thee", "thy", "hath", "doth", "prithee", "'tis"}
    assert not any(old & set(p.lower().split()) for p in prompts)
    demo = load_demo_prompts()
    assert len(demo) == 8
    assert set(demo) <= set(prompts)


def test_prompts_skip_comments_blanks_and_duplicates(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment\n\nHow do I fix a bike?\n  Tell me about rain.  \nHow do I fix a bike?\n")
    assert load_prompts(path) == ["How do I fix a bike?", "Tell me about rain."]


def test_empty_prompts_file_names_the_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# only a comment\n\n")
    with pytest.raises(HubstyleError, match="empty.txt") as err:
        load_prompts(path)
    assert "\n" not in str(err.value)


def test_missing_prompts_file(tmp_path):
    with pytest.raises(HubstyleError, match="nope.txt"):
        load_prompts(tmp_path / "nope.txt")
