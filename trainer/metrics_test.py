"""Tests for trainer.metrics: every expected value is worked out by hand in the comments."""

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pytest

from trainer.metrics import DEFAULT_CUTOFFS, MetricsAccumulator


def retrieval_metrics(
    top_items: np.ndarray,
    targets: Sequence[Iterable[int]],
    cutoffs: Sequence[int] = DEFAULT_CUTOFFS,
    ndcg: str = "rank",
    *,
    count_repeated_targets: bool = False,
) -> dict[str, float]:
    """Scores one batch of users with a fresh `MetricsAccumulator` (the product streams batches into one).

    Args:
      top_items: ``(U, N_max)`` integer array of retrieved ids in rank order, no duplicates per row.
      targets: ``U`` non-empty sequences of target item ids.
      cutoffs: List lengths ``N`` to report; each must be ``<= N_max``.
      ndcg: ``"rank"`` (default), ``"standard"`` or ``"remi"``; see trainer.metrics.
      count_repeated_targets: Recall denominator counts repeated targets (ComiRec/REMI's code).

    Returns:
      ``{"recall@N": ..., "hit_rate@N": ..., "ndcg@N": ...}`` for each cutoff, averaged over the users.
    """
    accumulator = MetricsAccumulator(cutoffs, ndcg=ndcg, count_repeated_targets=count_repeated_targets)
    accumulator.update(top_items, targets)
    return accumulator.result()


# 1 / log2(rank + 2) for ranks 0..3, written out.
D0, D1, D2, D3 = 1.0, 1 / math.log2(3), 1 / math.log2(4), 1 / math.log2(5)  # 1, .6309, .5, .4307

# Three users, N_max = 4, cutoffs (2, 4).
#   A: list [5, 3, 8, 1], targets {1, 3, 9}: hits at ranks 1 (id 3) and 3 (id 1).
#   B: list [2, 4, 6, 7], target {10}: no hit.
#   C: list [9, 4, 2, 6], targets [9, 9, 6] (9 repeated -> set {9, 6}): hits at ranks 0 and 3.
TOP = np.array([[5, 3, 8, 1], [2, 4, 6, 7], [9, 4, 2, 6]])
TARGETS = [[3, 1, 9], [10], [9, 9, 6]]


def test_rank_ndcg_recall_and_hit_rate_by_hand():
    got = retrieval_metrics(TOP, TARGETS, cutoffs=(2, 4))
    expected = {
        # @2: A 1 hit of 3, B 0, C 1 hit of 2 distinct.
        "recall@2": (1 / 3 + 0 + 1 / 2) / 3,
        "hit_rate@2": 2 / 3,
        # A: rank 1 / IDCG(1 hit) = D1 / D0; C: rank 0 -> 1.
        "ndcg@2": (D1 + 0 + 1.0) / 3,
        "recall@4": (2 / 3 + 0 + 2 / 2) / 3,
        "hit_rate@4": 2 / 3,
        # A: ranks 1, 3 over IDCG of 2 hits; C: ranks 0, 3 over the same IDCG.
        "ndcg@4": ((D1 + D3) / (D0 + D1) + 0 + (D0 + D3) / (D0 + D1)) / 3,
    }
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_standard_ndcg_uses_min_of_distinct_targets_and_cutoff():
    got = retrieval_metrics(TOP, TARGETS, cutoffs=(2, 4), ndcg="standard")
    # A has 3 distinct targets, C has 2.
    # @2: A ideal over min(3, 2) = 2 positions, C over 2.
    assert got["ndcg@2"] == pytest.approx((D1 / (D0 + D1) + 0 + D0 / (D0 + D1)) / 3, abs=1e-12)
    # @4: A ideal over 3 positions, C over 2.
    assert got["ndcg@4"] == pytest.approx(
        ((D1 + D3) / (D0 + D1 + D2) + 0 + (D0 + D3) / (D0 + D1)) / 3, abs=1e-12
    )
    # Recall and hit rate do not depend on the NDCG mode.
    rank = retrieval_metrics(TOP, TARGETS, cutoffs=(2, 4))
    for key in ("recall@2", "hit_rate@2", "recall@4", "hit_rate@4"):
        assert got[key] == rank[key]


def test_remi_ndcg_enumerates_the_retrieved_set_in_python_set_order():
    # User A only. CPython iterates a small set of small non-negative ints by slot, id % 8:
    #   {5, 3} iterates 3, 5          -> hit 3 at index 0: DCG = D0, IDCG(1 hit) = D0 -> 1.0
    #   {5, 3, 8, 1} iterates 8, 1, 3, 5 -> hits 1, 3 at indices 1, 2: DCG = D1 + D2.
    # In rank order the same hits sit at ranks 1 and (1, 3), which gives different numbers.
    assert list({5, 3}) == [3, 5] and list({5, 3, 8, 1}) == [8, 1, 3, 5]  # The premise above.
    top, targets = TOP[:1], TARGETS[:1]
    remi = retrieval_metrics(top, targets, cutoffs=(2, 4), ndcg="remi")
    rank = retrieval_metrics(top, targets, cutoffs=(2, 4), ndcg="rank")
    assert remi["ndcg@2"] == pytest.approx(1.0, abs=1e-12)
    assert remi["ndcg@4"] == pytest.approx((D1 + D2) / (D0 + D1), abs=1e-12)
    assert rank["ndcg@2"] == pytest.approx(D1, abs=1e-12)
    assert rank["ndcg@4"] == pytest.approx((D1 + D3) / (D0 + D1), abs=1e-12)
    assert {k: v for k, v in remi.items() if "ndcg" not in k} == {
        k: v for k, v in rank.items() if "ndcg" not in k
    }


def test_remi_ndcg_is_zero_without_hits_and_one_when_every_hit_comes_first_in_set_order():
    # Targets {1}: set {1, 2} iterates 1, 2 -> hit at index 0 -> 1.0, although 1 is ranked second.
    got = retrieval_metrics(np.array([[2, 1], [3, 4]]), [[1], [7]], cutoffs=(2,), ndcg="remi")
    assert got["ndcg@2"] == pytest.approx((1.0 + 0.0) / 2)


def test_repeated_targets_count_once_unless_asked():
    # User C alone: targets [9, 9, 6]. Distinct: 2 hits / 2 = 1 at @4, 1/2 at @2.
    distinct = retrieval_metrics(TOP[2:], TARGETS[2:], cutoffs=(2, 4))
    assert distinct["recall@2"] == pytest.approx(1 / 2)
    assert distinct["recall@4"] == pytest.approx(1.0)
    # ComiRec/REMI's denominator len(iid_list) = 3.
    repeated = retrieval_metrics(TOP[2:], TARGETS[2:], cutoffs=(2, 4), count_repeated_targets=True)
    assert repeated["recall@2"] == pytest.approx(1 / 3)
    assert repeated["recall@4"] == pytest.approx(2 / 3)
    assert repeated["ndcg@4"] == distinct["ndcg@4"]
    assert repeated["hit_rate@4"] == distinct["hit_rate@4"] == 1.0


def test_users_without_hits_count_zero():
    got = retrieval_metrics(np.array([[1, 2, 3], [4, 5, 6]]), [[7, 8], [9]], cutoffs=(1, 3))
    assert got == {
        "recall@1": 0.0,
        "hit_rate@1": 0.0,
        "ndcg@1": 0.0,
        "recall@3": 0.0,
        "hit_rate@3": 0.0,
        "ndcg@3": 0.0,
    }


def test_perfect_list_scores_one_and_extra_columns_are_ignored():
    # Both targets in the first two places; column 3 (another target) lies beyond every cutoff.
    got = retrieval_metrics(np.array([[4, 2, 5, 3]]), [[2, 4, 3]], cutoffs=(2, 3))
    assert got["ndcg@2"] == pytest.approx(1.0)
    assert got["recall@2"] == pytest.approx(2 / 3)
    assert got["recall@3"] == pytest.approx(2 / 3)
    assert got["ndcg@3"] == pytest.approx(1.0)  # IDCG over the hits (REMI's normalisation).
    assert retrieval_metrics(np.array([[4, 2, 5, 3]]), [[2, 4, 3]], cutoffs=(3,), ndcg="standard")[
        "ndcg@3"
    ] == pytest.approx((D0 + D1) / (D0 + D1 + D2))


def test_accumulator_streams_the_same_as_one_call():
    rng = np.random.default_rng(0)
    top = np.stack([rng.permutation(40)[:10] + 1 for _ in range(37)])
    targets = [rng.choice(40, size=rng.integers(1, 6)) + 1 for _ in range(37)]
    for mode in ("rank", "standard", "remi"):
        acc = MetricsAccumulator(cutoffs=(5, 10), ndcg=mode)
        for start in range(0, 37, 8):
            acc.update(top[start : start + 8], targets[start : start + 8])
        assert acc.num_users == 37
        streamed, whole = acc.result(), retrieval_metrics(top, targets, (5, 10), ndcg=mode)
        assert streamed.keys() == whole.keys()
        for key in whole:
            assert streamed[key] == pytest.approx(whole[key], abs=1e-12)
    acc.reset()
    with pytest.raises(ValueError, match="No users accumulated"):
        acc.result()


def test_matches_a_straightforward_per_user_loop():
    rng = np.random.default_rng(1)
    top = np.stack([rng.permutation(200)[:50] for _ in range(60)])  # Includes id 0 sometimes.
    targets = [rng.choice(200, size=rng.integers(1, 30)) for _ in range(60)]
    got = retrieval_metrics(top, targets)
    for cutoff in (20, 50):
        recall = hit = ndcg = 0.0
        for row, user_targets in zip(top, targets):
            wanted = set(user_targets.tolist())
            ranks = [r for r, item in enumerate(row[:cutoff]) if item in wanted]
            recall += len(ranks) / len(wanted)
            hit += bool(ranks)
            if ranks:
                ndcg += sum(1 / math.log2(r + 2) for r in ranks) / sum(
                    1 / math.log2(r + 2) for r in range(len(ranks))
                )
        assert got[f"recall@{cutoff}"] == pytest.approx(recall / 60, abs=1e-12)
        assert got[f"hit_rate@{cutoff}"] == pytest.approx(hit / 60, abs=1e-12)
        assert got[f"ndcg@{cutoff}"] == pytest.approx(ndcg / 60, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cutoffs=(2, 5)), "Cutoff 5 exceeds"),
        (dict(ndcg="dcg"), "Unknown ndcg mode"),
        (dict(cutoffs=()), "at least one"),
        (dict(cutoffs=(0,)), "positive int"),
        (dict(cutoffs=(2, 2)), "distinct"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(TOP, TARGETS, **kwargs)


def test_invalid_inputs():
    with pytest.raises(ValueError, match="3 rows .* targets has 2"):
        retrieval_metrics(TOP, TARGETS[:2], cutoffs=(2,))
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(TOP[0], TARGETS[:1], cutoffs=(2,))
    with pytest.raises(ValueError, match="integer"):
        retrieval_metrics(TOP.astype(float), TARGETS, cutoffs=(2,))
    with pytest.raises(ValueError, match="User 1 .* no target"):
        retrieval_metrics(TOP, [[1], [], [2]], cutoffs=(2,))
    with pytest.raises(ValueError, match="row 0 repeats"):
        retrieval_metrics(np.array([[1, 1, 2]]), [[1]], cutoffs=(3,))
