"""The data sets a benchmark runs on (Beauty, ``synthetic``, ``synthetic-long``), their training
schedules, and loading them through the product's data path (``trainer.data``), as ``dmirec train`` does."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bench.run_record import REPO_ROOT, log

if TYPE_CHECKING:
    from trainer.interactions import Interaction
    from trainer.sequences import SequenceData, Vocabulary


DEFAULT_BEAUTY = os.environ.get(
    "DMIREC_BEAUTY", os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "beauty", "Beauty.txt")
)


DATASETS = ("beauty", "synthetic", "synthetic-long")


# Training schedules: "full" aims at a converged model on 2 cores, "quick" only proves the path works.
SCHEDULES: dict[str, dict[str, int]] = {
    "beauty": {"max_steps": 30_000, "eval_every": 1000, "patience": 5},
    "synthetic": {"max_steps": 10_000, "eval_every": 250, "patience": 5},
    # The long-history regime reads the last 40 items (its histories average 40).
    "synthetic-long": {"max_steps": 30_000, "eval_every": 1000, "patience": 3, "max_length": 40},
}


QUICK_SCHEDULES: dict[str, dict[str, int]] = {
    "beauty": {"max_steps": 1000, "eval_every": 500, "patience": 2},
    "synthetic": {"max_steps": 500, "eval_every": 250, "patience": 2},
    "synthetic-long": {"max_steps": 500, "eval_every": 250, "patience": 2, "max_length": 40},
}


# A second regime to check tuned settings on before they become defaults (nothing is tuned on it): longer
# histories than Beauty's (mean 40, L = 40) and a catalogue of 40k items in 400 topics.
SYNTHETIC_LONG = {
    "users": 30_000,
    "items": 40_000,
    "topics": 400,
    "min_length": 10,
    "mean_length": 40.0,
    "max_length": 120,
}


def schedule(dataset: str, quick: bool) -> dict[str, int]:
    """The default ``max_steps`` / ``eval_every`` / ``patience`` for a data set (and ``max_length`` where
    the data set's histories call for another L)."""
    return dict((QUICK_SCHEDULES if quick else SCHEDULES)[dataset])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A data set ready for the protocol.

    Attributes:
      name: ``beauty`` or ``synthetic``.
      data: the vocabulary and the train / eval / test users.
      source: where it came from, for the result file.
      sequences: every user's raw item ids in time order (what a served model is asked with).
    """

    name: str
    data: SequenceData
    source: str
    sequences: Mapping[str, list[str]] = dataclasses.field(default_factory=dict, repr=False)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "items": self.data.num_items,
            "users": {split: len(seqs) for split, seqs in self.data.splits.items()},
            "train_interactions": int(len(self.data.train.items)),
        }


def beauty_log(source: str, cache_dir: str | None = None) -> str:
    """Converts ``Beauty.txt`` (read in place) to an interaction log CSV outside the repository, once.

    Returns:
      The CSV's path (under the system temporary directory unless ``cache_dir`` is given).
    """
    from trainer import interactions

    if not os.path.exists(source):
        raise FileNotFoundError(f"{source} not found (pass --beauty-path or set DMIREC_BEAUTY)")
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "dmirec-bench")
    target = os.path.join(cache_dir, "beauty.csv")
    if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(source):
        interactions.convert(source, target, fmt="sequences")
    return target


def load_dataset(
    name: str, beauty_path: str = DEFAULT_BEAUTY, split_seed: int = 0, vocabulary: Vocabulary | None = None
) -> Dataset:
    """Loads ``beauty`` (Beauty.txt, converted to a temporary CSV), ``synthetic`` (the default
    :class:`trainer.synthetic.SyntheticConfig`, generated in memory) or ``synthetic-long``
    (:data:`SYNTHETIC_LONG`) and splits its users.

    Args:
      name: the data set.
      beauty_path: Beauty.txt.
      split_seed: seed of the user split.
      vocabulary: encode with this vocabulary (a trained model's) instead of building one.
    """
    from trainer import interactions, synthetic
    from trainer.sequences import SequenceData, user_sequence

    def dataset(events: Iterable[Interaction], source: str) -> Dataset:
        by_user = interactions.group_by_user(events)
        sequences = {user: user_sequence(user_events) for user, user_events in by_user.items()}
        data = SequenceData.from_sequences(sequences, seed=split_seed, vocabulary=vocabulary)
        return Dataset(name, data, source, sequences)

    if name == "beauty":
        log = beauty_log(beauty_path)
        return dataset(
            interactions.read_interactions(log),
            f"{beauty_path} (converted to {log}), split seed {split_seed}",
        )
    if name in ("synthetic", "synthetic-long"):
        config = synthetic.SyntheticConfig(**(SYNTHETIC_LONG if name == "synthetic-long" else {}))
        return dataset(synthetic.generate(config), f"trainer.synthetic.{config}, split seed {split_seed}")
    raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
