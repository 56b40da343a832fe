"""A deterministic synthetic interaction log with planted multi-interest structure.

Items belong to latent topics; each user mixes a few topics with Dirichlet weights and moves through
them with some persistence (a user tends to stay on a topic for a few events, as sessions do). Within a
topic, item popularity is Zipf-distributed, and topics themselves differ in size and popularity. The
next items of a user come from the same topic mixture as the history, so:

- a multi-interest model (one vector per topic a user mixes) ranks the right items of *every* topic;
- a single-vector model averages the topics into one direction that fits none of them well;
- popularity sees only the global skew and misses the user's topics.

The default size (used by ``make demo`` and the tests) trains in about a minute on 2 cores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from trainer.interactions import Interaction


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and shape of the synthetic log. Every run with the same config writes the same log.

    Attributes:
      users: number of users.
      items: number of items (split over the topics, bigger topics for lower topic ids).
      topics: number of latent topics.
      min_topics_per_user: fewest topics a user mixes.
      max_topics_per_user: most topics a user mixes.
      min_length: shortest sequence (>= 5, so the protocol's cut in [4, len-1] exists).
      mean_length: mean sequence length (lengths are shifted-geometric, a long tail as real logs).
      max_length: longest sequence.
      stay_probability: probability that the next event stays on the current topic.
      zipf_exponent: popularity skew of items within a topic (and of topics).
      seed: random seed.
    """

    users: int = 3000
    items: int = 1000
    topics: int = 100
    min_topics_per_user: int = 2
    max_topics_per_user: int = 4
    min_length: int = 8
    mean_length: float = 18.0
    max_length: int = 60
    stay_probability: float = 0.6
    zipf_exponent: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 1 or self.topics < 1:
            raise ValueError("users, items and topics must be positive")
        if self.items < self.topics:
            raise ValueError(f"items ({self.items}) must be >= topics ({self.topics})")
        if not 1 <= self.min_topics_per_user <= self.max_topics_per_user <= self.topics:
            raise ValueError(
                "need 1 <= min_topics_per_user <= max_topics_per_user <= topics, got "
                f"{self.min_topics_per_user}, {self.max_topics_per_user}, {self.topics}"
            )
        if not 5 <= self.min_length <= self.mean_length <= self.max_length:
            raise ValueError(
                "need 5 <= min_length <= mean_length <= max_length, got "
                f"{self.min_length}, {self.mean_length}, {self.max_length}"
            )
        if not 0.0 <= self.stay_probability < 1.0:
            raise ValueError(f"stay_probability must be in [0, 1), got {self.stay_probability}")


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def _draw(cdf: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn with the probabilities whose cumulative sums are ``cdf``."""
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)


def generate(config: SyntheticConfig = SyntheticConfig()) -> Iterator[Interaction]:
    """Yields the synthetic log's events, user by user, each user's events in time order.

    Ids are strings (``u<n>``, ``i<n>``); timestamps are seconds, increasing within a user.

    Args:
      config: sizes and shape.

    Yields:
      The events.
    """
    rng = np.random.default_rng(config.seed)
    # Topic sizes: Zipf-like, at least one item each; items shuffled so ids carry no topic information.
    sizes = np.maximum(1, np.round(_zipf_weights(config.topics, 0.5) * config.items)).astype(int)
    sizes[0] += config.items - sizes.sum()
    item_ids = rng.permutation(config.items)
    topic_items = np.split(item_ids, np.cumsum(sizes)[:-1])
    # Cumulative weights, sampled by binary search: rng.choice(p=...) would rebuild them on every draw.
    item_cdfs = [np.cumsum(_zipf_weights(len(items), config.zipf_exponent)) for items in topic_items]
    topic_popularity = _zipf_weights(config.topics, config.zipf_exponent)
    extra_length = config.mean_length - config.min_length

    for user in range(config.users):
        n_topics = rng.integers(config.min_topics_per_user, config.max_topics_per_user + 1)
        topics = rng.choice(config.topics, size=n_topics, replace=False, p=topic_popularity)
        mix_cdf = np.cumsum(rng.dirichlet(np.full(n_topics, 2.0)))
        length = config.min_length + (rng.geometric(1.0 / (1.0 + extra_length)) - 1 if extra_length else 0)
        length = int(min(length, config.max_length))
        start = 1_600_000_000 + int(rng.integers(0, 86_400 * 365))
        current = _draw(mix_cdf, rng)
        for position in range(length):
            if position and rng.random() >= config.stay_probability:
                current = _draw(mix_cdf, rng)
            topic = topics[current]
            item = topic_items[topic][_draw(item_cdfs[topic], rng)]
            yield Interaction(f"u{user}", f"i{item}", start + 3600 * position)
