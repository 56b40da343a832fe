"""How a trained model is exported: the ScaNN index of the ``dmi`` servable, XLA, and the DDIM steps served.

Not part of the training configuration (:class:`trainer.config.ModelConfig`): the same trained weights
can be exported again with other settings (``dmirec export``), e.g. a ScaNN setting chosen from the
recall/latency curve of ``bench/serving_latency.py`` on the user's own catalogue, or fewer DDIM steps than
the model was evaluated with (the paper's online deployment serves with DDIM's fewer steps, section
4.6). ``dmirec train``, ``dmirec export`` and the pipeline (``PipelineSettings.export``, carried to the
Trainer in its ``custom_config``) take the same settings under the same names as
:func:`trainer.export.export_servables`. This module imports nothing heavy, so the pipeline's settings can
be checked before any component runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """What :func:`trainer.export.export_servables` is given besides the model.

    Attributes:
      scann_leaves: partitions of the ``dmi`` servable's ScaNN index, at least 2; None: about ``sqrt(items)``.
      scann_leaves_to_search: partitions searched per query, at most ``scann_leaves``; None: two fifths
        of the leaves, or enough to hold four times the candidates (:func:`trainer.export.scann_parameters`).
      xla: compile the user tower (and exact scoring) with XLA; False for a TF Serving build without its
        CPU JIT (``serving/deploy/README.md``).
      sampling_steps: S, the DDIM steps of the servables' unrolled refinement, in ``1..T``; None: the
        model's own (``ModelConfig.sampling_steps``: T unless set, the paper's Algorithm 2). Only the
        serving graph changes, not a weight (:meth:`trainer.model.DMIModel.with_sampling_steps`): fewer
        steps, less latency (``docs/performance.md``); ``bench/ddim_steps.py`` measures what each S serves.
    """

    scann_leaves: int | None = None
    scann_leaves_to_search: int | None = None
    xla: bool = True
    sampling_steps: int | None = None

    def __post_init__(self) -> None:
        for name in ("scann_leaves", "scann_leaves_to_search", "sampling_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.scann_leaves == 1:
            raise ValueError(
                "scann_leaves must be at least 2: ScaNN's tree of one leaf answers the first item to every query"
            )
        if not isinstance(self.xla, bool):
            raise ValueError(f"xla must be true or false, got {self.xla!r}")
        if (
            self.scann_leaves is not None
            and self.scann_leaves_to_search is not None
            and self.scann_leaves_to_search > self.scann_leaves
        ):
            raise ValueError(
                f"scann_leaves_to_search ({self.scann_leaves_to_search}) must be at most scann_leaves "
                f"({self.scann_leaves})"
            )

    def check_config(self, config: ModelConfig) -> None:
        """Fails when the settings do not fit a model of ``config`` (checked before any data is read).

        Raises:
          ValueError: ``sampling_steps`` for a model without a diffusion refiner, or more than its T.
        """
        if self.sampling_steps is None:
            return
        if not config.diffusion:
            raise ValueError(f"sampling_steps: the {config.model!r} model has no diffusion refiner to sample with")
        if self.sampling_steps > config.diffusion_steps:
            raise ValueError(
                f"sampling_steps ({self.sampling_steps}) must be at most the model's diffusion_steps "
                f"T = {config.diffusion_steps}"
            )

    def check_model(self, config: ModelConfig, num_items: int) -> None:
        """Fails when the settings do not fit a model of ``config`` on ``num_items`` items (before training it).

        Raises:
          ValueError: :meth:`check_config`'s refusals, more leaves than items, or more leaves to search
            than the index's default leaves.
        """
        from trainer import export

        self.check_config(config)
        export.scann_parameters(
            num_items, export.DEFAULT_MAX_TOP_N, config.max_length, self.scann_leaves, self.scann_leaves_to_search
        )

    def to_dict(self) -> dict[str, Any]:
        """The settings that differ from the defaults (a JSON object; empty for the defaults)."""
        defaults = ExportSettings()
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != getattr(defaults, field.name)
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "ExportSettings":
        """The inverse of :meth:`to_dict`.

        Raises:
          ValueError: an unknown field or an invalid value.
        """
        values = dict(values or {})
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown export setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)
