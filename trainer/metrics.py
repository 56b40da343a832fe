"""Retrieval metrics of the multi-interest evaluation protocol (ComiRec / REMI / DMI).

Evaluation runs outside the TensorFlow graph: the retrieval step (``trainer.retrieval.top_n``) produces,
for each evaluated user, the ids of the top ``N_max`` items in rank order, and this module scores those
lists against the user's held-out target items with plain numpy.

For one user with top-N list ``R`` (rank order, rank 0 first) and target items ``T``:

* ``recall@N = |R[:N] ∩ set(T)| / |set(T)|``. Targets are a set: an item the user interacted with twice
  in the held-out part counts once, in the numerator and in the denominator. (ComiRec's and REMI's
  evaluation code tests hits against ``set(iid_list)`` but divides by ``len(iid_list)``, which counts
  repeats; pass ``count_repeated_targets=True`` for that denominator. The two agree whenever no user
  repeats a target item, as on the Beauty file.)
* ``hit_rate@N = 1`` if ``R[:N] ∩ T`` is non-empty, else 0.
* ``ndcg@N = DCG / IDCG`` with ``DCG = sum over hits of 1 / log2(rank + 2)``. How ``rank`` and ``IDCG``
  are taken depends on ``ndcg``:

  - ``"rank"`` (default): rank = the hit's position in ``R`` (0-based); IDCG is the DCG of ``h`` hits at
    ranks ``0..h-1``, ``h`` = the number of hits (REMI's normalisation, as the protocol states it).
  - ``"standard"``: rank as above; IDCG over ``min(|set(T)|, N)`` ideal positions, the textbook NDCG.
  - ``"remi"``: REMI's published code. It builds a Python ``set`` from ``R[:N]`` (adding the ids in rank
    order) and enumerates *that set*; the enumeration index of a hit is used as its rank, and IDCG is
    taken over the number of hits. A set's iteration order follows the ids' hashes, not the ranking,
    so this NDCG does NOT measure ranking quality: it is offered only to compare with numbers published
    with that code (REMI, and most likely the DMI paper). Always label it as such.

Every metric is averaged over users; a user without a hit contributes 0 to all three.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

NDCG_MODES: tuple[str, ...] = ("rank", "standard", "remi")
DEFAULT_CUTOFFS: tuple[int, ...] = (20, 50)
_METRIC_NAMES: tuple[str, ...] = ("recall", "hit_rate", "ndcg")


def _discounts(n: int) -> np.ndarray:
    """Returns ``1 / log2(rank + 2)`` for ranks ``0..n-1`` as float64, shape ``(n,)``."""
    return 1.0 / np.log2(np.arange(n, dtype=np.float64) + 2.0)


def _remi_set_order_dcg(top_items: np.ndarray, target_set: set) -> float:
    """DCG of one user as REMI's evaluation code computes it (hits enumerated in Python set order).

    Args:
      top_items: ``(N,)`` retrieved ids in rank order (the first ``N`` of the user's list).
      target_set: The user's distinct target ids.

    Returns:
      ``sum over hits of 1 / log2(no + 2)``, ``no`` = the hit's index when iterating the Python set built
      by adding ``top_items`` one by one in rank order (exactly how REMI builds ``item_list_set``).
    """
    item_list_set: set = set()
    for item in top_items.tolist():
        item_list_set.add(item)
    dcg = 0.0
    for no, item in enumerate(item_list_set):
        if item in target_set:
            dcg += 1.0 / np.log2(no + 2.0)
    return dcg


class MetricsAccumulator:
    """Streams Recall@N, HitRate@N and NDCG@N over batches of users.

    Example:
      >>> acc = MetricsAccumulator(cutoffs=(20, 50))
      >>> for top_items, targets in batches:   # top_items: (B, >= 50) ids in rank order
      ...     acc.update(top_items, targets)
      >>> acc.result()   # {"recall@20": ..., "hit_rate@20": ..., "ndcg@20": ..., "recall@50": ...}
    """

    def __init__(
        self,
        cutoffs: Sequence[int] = DEFAULT_CUTOFFS,
        ndcg: str = "rank",
        *,
        count_repeated_targets: bool = False,
    ) -> None:
        """Initialises the accumulator.

        Args:
          cutoffs: The list lengths ``N`` to report, positive ints, e.g. ``(20, 50)``.
          ndcg: ``"rank"``, ``"standard"`` or ``"remi"``; see the module docstring.
          count_repeated_targets: If True the recall denominator is the number of target entries with
            repeats (``len(iid_list)`` in ComiRec/REMI's code) instead of the number of distinct targets.

        Raises:
          ValueError: If ``cutoffs`` is empty, holds a non-positive or non-integer value or a duplicate,
            or ``ndcg`` is not a known mode.
        """
        cutoffs = tuple(cutoffs)
        if not cutoffs:
            raise ValueError("cutoffs must hold at least one list length N.")
        for cutoff in cutoffs:
            if isinstance(cutoff, bool) or not isinstance(cutoff, (int, np.integer)) or cutoff < 1:
                raise ValueError(f"Every cutoff must be a positive int; got {cutoff!r} in {cutoffs}.")
        if len(set(cutoffs)) != len(cutoffs):
            raise ValueError(f"cutoffs must be distinct; got {cutoffs}.")
        if ndcg not in NDCG_MODES:
            raise ValueError(f"Unknown ndcg mode {ndcg!r}; expected one of {NDCG_MODES}.")
        self._cutoffs: tuple[int, ...] = tuple(int(c) for c in cutoffs)
        self._ndcg = ndcg
        self._count_repeated_targets = count_repeated_targets
        self.reset()

    @property
    def cutoffs(self) -> tuple[int, ...]:
        """The list lengths ``N`` reported by ``result()``."""
        return self._cutoffs

    @property
    def ndcg_mode(self) -> str:
        """The NDCG variant: ``"rank"``, ``"standard"`` or ``"remi"``."""
        return self._ndcg

    @property
    def num_users(self) -> int:
        """How many users have been accumulated since construction or the last ``reset()``."""
        return self._num_users

    def reset(self) -> None:
        """Forgets every accumulated user."""
        self._num_users = 0
        self._sums: dict[str, float] = {
            f"{name}@{cutoff}": 0.0 for cutoff in self._cutoffs for name in _METRIC_NAMES
        }

    def update(self, top_items: np.ndarray, targets: Sequence[Iterable[int]]) -> None:
        """Adds a batch of users.

        Args:
          top_items: ``(U, N_max)`` integer array, row ``u`` = user ``u``'s retrieved ids in rank order
            (best first), without duplicates; ``N_max`` must be at least the largest cutoff (extra
            columns are ignored).
          targets: ``U`` sequences of target item ids (each non-empty; repeats allowed).

        Raises:
          ValueError: If ``top_items`` is not a 2-D integer array, has fewer columns than the largest
            cutoff, has a row with a repeated id among its first ``max(cutoffs)`` columns, if
            ``len(targets) != U``, or if a user has no target.
        """
        top_items = np.asarray(top_items)
        if top_items.ndim != 2:
            raise ValueError(f"top_items must have shape (num_users, N_max); got shape {top_items.shape}.")
        if top_items.size and not np.issubdtype(top_items.dtype, np.integer):
            raise ValueError(f"top_items must hold integer item ids; got dtype {top_items.dtype}.")
        num_users, n_max = top_items.shape
        max_cutoff = max(self._cutoffs)
        if max_cutoff > n_max:
            raise ValueError(
                f"Cutoff {max_cutoff} exceeds the number of retrieved items per user "
                f"(top_items has N_max={n_max} columns)."
            )
        if len(targets) != num_users:
            raise ValueError(
                f"top_items has {num_users} rows (users) but targets has {len(targets)} entries."
            )
        if num_users == 0:
            return
        top_items = top_items[:, :max_cutoff].astype(np.int64, copy=False)
        ranked = np.sort(top_items, axis=1)
        duplicated_rows = np.flatnonzero(np.any(ranked[:, 1:] == ranked[:, :-1], axis=1))
        if duplicated_rows.size:
            row = int(duplicated_rows[0])
            raise ValueError(
                f"top_items row {row} repeats an item id among its first {max_cutoff} columns: "
                f"{top_items[row].tolist()}."
            )

        target_sets = []
        num_targets = np.empty(num_users, dtype=np.float64)
        num_distinct = np.empty(num_users, dtype=np.int64)
        for user, user_targets in enumerate(targets):
            user_targets = [int(t) for t in user_targets]
            if not user_targets:
                raise ValueError(f"User {user} (row {user} of this batch) has no target items.")
            target_set = set(user_targets)
            target_sets.append(target_set)
            num_distinct[user] = len(target_set)
            num_targets[user] = len(user_targets) if self._count_repeated_targets else len(target_set)

        hits = self._hit_matrix(top_items, target_sets)  # (U, max_cutoff) bool, rank order.
        discounts = _discounts(max_cutoff)
        # ideal_dcg[h] = DCG of h hits at ranks 0..h-1.
        ideal_dcg = np.concatenate([[0.0], np.cumsum(discounts)])

        for cutoff in self._cutoffs:
            cut_hits = hits[:, :cutoff]
            num_hits = cut_hits.sum(axis=1)
            has_hit = num_hits > 0
            if self._ndcg == "remi":
                dcg = np.array(
                    [
                        (
                            _remi_set_order_dcg(top_items[user, :cutoff], target_sets[user])
                            if has_hit[user]
                            else 0.0
                        )
                        for user in range(num_users)
                    ]
                )
            else:
                dcg = cut_hits @ discounts[:cutoff]
            if self._ndcg == "standard":
                idcg = ideal_dcg[np.minimum(num_distinct, cutoff)]
            else:
                idcg = ideal_dcg[num_hits]
            ndcg = np.divide(dcg, idcg, out=np.zeros(num_users), where=has_hit)

            self._sums[f"recall@{cutoff}"] += float(np.sum(num_hits / num_targets))
            self._sums[f"hit_rate@{cutoff}"] += float(np.sum(has_hit))
            self._sums[f"ndcg@{cutoff}"] += float(np.sum(ndcg))
        self._num_users += num_users

    def result(self) -> dict[str, float]:
        """Returns the metrics averaged over every accumulated user.

        Returns:
          ``{"recall@N": ..., "hit_rate@N": ..., "ndcg@N": ...}`` for each cutoff ``N``, in cutoff order.

        Raises:
          ValueError: If no user has been accumulated.
        """
        if self._num_users == 0:
            raise ValueError("No users accumulated: call update() before result().")
        return {key: total / self._num_users for key, total in self._sums.items()}

    @staticmethod
    def _hit_matrix(top_items: np.ndarray, target_sets: Sequence[set]) -> np.ndarray:
        """Marks which retrieved items are targets, vectorised over users.

        Args:
          top_items: ``(U, N)`` int64 ids.
          target_sets: ``U`` sets of target ids.

        Returns:
          ``(U, N)`` bool array, ``True`` where ``top_items[u, r]`` is in ``target_sets[u]``.
        """
        num_users = top_items.shape[0]
        lengths = np.fromiter((len(s) for s in target_sets), dtype=np.int64, count=num_users)
        flat_targets = np.fromiter(
            (item for s in target_sets for item in s), dtype=np.int64, count=int(lengths.sum())
        )
        target_users = np.repeat(np.arange(num_users, dtype=np.int64), lengths)
        # Encode (user, item) pairs as one int64 key; ids are shifted to be non-negative first.
        low = min(int(top_items.min()), int(flat_targets.min()))
        span = max(int(top_items.max()), int(flat_targets.max())) - low + 1
        top_keys = np.arange(num_users, dtype=np.int64)[:, None] * span + (top_items - low)
        target_keys = target_users * span + (flat_targets - low)
        return np.isin(top_keys, target_keys)

