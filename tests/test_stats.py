"""Intervals of a difference (labkit.training.stats), the tables and sentences built on them (report), and their
recorded numbers (record).

The sentence check (`claimed`) reads what a sentence says about a difference: "higher", "lower", "within noise" or
"no interval". `test_a_sentence_that_contradicts_its_interval_is_caught` feeds it sentences written against the
numbers, so the check is shown to fail where it should.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from labkit.core.errors import LabkitError
from labkit.lab import record
from labkit.training import report, stats
from labkit.training.config import TrainConfig
from labkit.training.report import Comparison
from labkit.training.stats import Interval


def claimed(sentence: str) -> str:
    """What a sentence claims about a difference (one of stats.VERDICTS), read from its words."""
    if "within noise" in sentence:
        return "within noise"
    if "no interval" in sentence:
        return "no interval"
    said = re.search(r" is (higher|lower), beyond the noise", sentence)
    return said.group(1) if said else "nothing"


def contradicts(sentence: str, interval: Interval) -> bool:
    """Whether the sentence's claim or its numbers disagree with the interval."""
    if claimed(sentence) != stats.verdict(interval):
        return True
    numbers = [float(n.replace("−", "-")) for n in re.findall(r"[+−-]\d+\.\d+", sentence)]
    scaled = interval.scaled(100)
    expected = [scaled.mean] + ([scaled.lo, scaled.hi] if interval.finite else [])
    return len(numbers) < len(expected) or any(abs(a - b) > 0.006 for a, b in zip(numbers, expected, strict=False))


# --------------------------------------------------------------------------------------------- intervals
def test_paired_is_the_t_interval_of_the_per_seed_differences():
    a, b = [0.97, 0.96, 0.98], [0.95, 0.95, 0.96]
    d = np.subtract(a, b)
    half = 4.302652729911275 * d.std(ddof=1) / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    got = stats.paired(a, b)
    assert got.mean == pytest.approx(d.mean()) and got.n == 3 and "paired" in got.method
    assert (got.lo, got.hi) == pytest.approx((d.mean() - half, d.mean() + half))
    assert got.excludes_zero and stats.verdict(got) == "higher"
    assert stats.verdict(stats.paired(b, a)) == "lower"
    assert stats.verdict(stats.paired([0.97, 0.95, 0.96], [0.96, 0.96, 0.96])) == "within noise"


def test_one_seed_has_no_interval_and_bad_input_is_one_line():
    one = stats.paired([0.9], [0.8])
    assert not one.finite and not one.excludes_zero and stats.verdict(one) == "no interval"
    for bad in (lambda: stats.paired([0.9, 0.8], [0.8]), lambda: stats.paired([], []),
                lambda: stats.paired([0.9, float("nan")], [0.8, 0.8]), lambda: stats.paired([1, 2], [1, 2], 1.5),
                lambda: stats.bootstrap([1, 0], [1]), lambda: stats.bootstrap([1], [1], n=0)):
        with pytest.raises(LabkitError):
            bad()


def test_bootstrap_is_paired_over_the_same_images():
    rng = np.random.default_rng(1)
    a = (rng.random(400) < 0.9).astype(float)
    same = stats.bootstrap(a, a)
    assert (same.mean, same.lo, same.hi) == (0.0, 0.0, 0.0) and not same.excludes_zero
    b = a.copy()
    b[:20] = 1 - b[:20]  # 20 of 400 images changed: a paired bootstrap sees them, an unpaired one would drown them
    got = stats.bootstrap(a, b, seed=3)
    assert got.mean == pytest.approx((a - b).mean()) and got.lo <= got.mean <= got.hi and got.n == 400
    assert stats.bootstrap(a, b, seed=3) == got, "a seeded bootstrap is reproducible"
    better = stats.bootstrap(np.ones(400), a)
    assert better.excludes_zero and stats.verdict(better) == "higher"


def test_an_interval_prints_short_and_scales_to_points():
    i = Interval(0.004, -0.002, 0.01, 3, "paired t over 3 seeds")
    assert str(i) == "+0.004 [-0.002, +0.01]"
    assert i.scaled(100).lo == pytest.approx(-0.2) and not i.excludes_zero


# --------------------------------------------------------------------------------------------- sentences
INTERVALS = [Interval(0.004, -0.002, 0.01, 3, "paired t over 3 seeds"),
              Interval(0.02, 0.005, 0.035, 3, "paired t over 3 seeds"),
              Interval(-0.03, -0.05, -0.01, 360, "bootstrap over 360 test images"),
              Interval(0.01, -math.inf, math.inf, 1, "one seed, no interval")]


@pytest.mark.parametrize("interval", INTERVALS, ids=["noise", "higher", "lower", "one-seed"])
def test_describe_says_what_the_interval_shows(interval):
    sentence = stats.describe("sla aggregated", "sla single", interval)
    assert not contradicts(sentence, interval), sentence


def test_a_sentence_that_contradicts_its_interval_is_caught():
    noise, higher = INTERVALS[0], INTERVALS[1]
    assert contradicts(stats.describe("a", "b", noise), higher)  # "within noise" said of a real difference
    assert contradicts(stats.describe("a", "b", higher), noise)  # "higher" said of noise
    assert contradicts(stats.describe("a", "b", INTERVALS[2]), higher)  # "lower" said of "higher"
    wrong_numbers = stats.describe("a", "b", Interval(0.004, -0.002, 0.02, 3, "paired t over 3 seeds"))
    assert contradicts(wrong_numbers, noise)  # same verdict, other bounds


# ----------------------------------------------------------------------------------- tables and records
def _comparison(accs: dict[str, list[float]], modes=("single",)) -> Comparison:
    """A comparison of made-up runs: method -> per-seed single accuracies (other modes: single - 0.01)."""
    configs, runs = [], []
    for method, per_seed in accs.items():
        for seed, acc in enumerate(per_seed):
            configs.append(TrainConfig(method=method, seed=seed, dataset="digits"))
            runs.append({"method": method, "test_acc": {m: acc - 0.01 * k for k, m in enumerate(modes)},
                         "train_seconds": 1.0, "forwards_per_image": {m: 1 for m in modes}})
    rows = report.summarize(runs)
    return Comparison(configs, [None] * len(runs), runs, rows, report.format_table(rows))


def test_rows_carry_their_difference_and_the_table_shows_it(tmp_path):
    comp = report.with_differences(_comparison({"baseline": [0.95, 0.96, 0.97], "sla": [0.97, 0.975, 0.995]},
                                               modes=("single", "aggregated")))
    by = {(r["method"], r["mode"]): r for r in comp.rows}
    assert by["baseline", "single"].get("is_reference") and "acc_diff" not in by["baseline", "single"]
    assert by["sla", "single"]["acc_diff_vs"] == ("baseline", "single")
    assert by["sla", "single"]["acc_diff"].mean == pytest.approx(0.02)
    assert by["sla", "aggregated"]["acc_diff_vs"] == ("sla", "single")
    assert by["sla", "aggregated"]["acc_diff"].mean == pytest.approx(-0.01)
    assert "Δ acc (pp) [95% interval]" in comp.table and "vs baseline single" in comp.table
    said = report.findings(comp)
    assert said and all(not contradicts(s, by[tuple(s.split(" − ")[0].split(" "))]["acc_diff"]) for s in said)
    numbers = record.comparison(tmp_path, comp)
    base = "diff.acc.sla.single.vs.baseline.single"
    assert numbers[f"{base}.mean"] == pytest.approx(by["sla", "single"]["acc_diff"].mean) and numbers[f"{base}.n"] == 3
    assert numbers[f"{base}.lo"] < numbers[f"{base}.hi"] and numbers[f"{base}.beyond_noise"] in (0, 1)


def test_settings_of_one_method_compare_across_comparisons():
    t1 = _comparison({"sla+sd": [0.95, 0.96, 0.97]}).renamed("T=1")
    t4 = _comparison({"sla+sd": [0.93, 0.94, 0.95]}).renamed("T=4")
    d = report.difference(t4, ("T=4", "single"), ("T=1", "single"), other=t1)
    assert d.mean == pytest.approx(-0.02) and d.n == 3
    both = report.join([t1, t4])
    assert [r["method"] for r in both.rows] == ["T=1", "T=4"] and both.group(3) == "T=4"
    assert report.difference(both, ("T=4", "single"), ("T=1", "single")) == d


def test_the_sentences_are_written_from_the_recorded_numbers(tmp_path):
    """record.findings reads the diff.* numbers back from results.json: its sentences agree with them, and with one
    seed there is no interval to claim anything from."""
    record.difference(tmp_path, "sla.aggregated", "sla.single", INTERVALS[0])
    record.difference(tmp_path, "sla+sd.T=0.5.distilled", "sla+sd.T=1.distilled", INTERVALS[2])
    record.difference(tmp_path, "mt.single", "sla.single", INTERVALS[3])
    read = record.intervals(tmp_path)
    assert read["acc", "sla.aggregated", "sla.single"] == INTERVALS[0]
    assert read["acc", "sla+sd.T=0.5.distilled", "sla+sd.T=1.distilled"] == INTERVALS[2]
    said = record.findings(tmp_path)
    assert said[0].startswith("sla+sd T=0.5 distilled − sla+sd T=1 distilled: −3.00 pp")  # beyond noise first
    for sentence, interval in zip(said, (INTERVALS[2], INTERVALS[0], INTERVALS[3]), strict=True):
        assert not contradicts(sentence, interval), sentence
    assert record.findings(tmp_path, among={"mt.single"}) == [said[2]] and "no interval" in said[2]
