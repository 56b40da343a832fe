"""The one configuration object of a training run: model variant, sizes, diffusion, loss and schedule.

Defaults are the paper's where it gives them (DMI section 4.1: d = 64, K = 4, batch 128, 10 x batch
negatives, eta = 0.4, alpha_min = 1e-4; lambda, alpha_max and T from its tuning grids) and REMI's published
setting for the routing regularization (rlambda = 100), except values chosen by the searches on Beauty's
validation users (``bench/tune.py``, results in ``bench/results/tuning.json``, ``docs/results.md`` and
``docs/refinement.md``; test users never took part):

- ``denoiser_norm = "pre"``: the paper leaves the transformer layer's layout open; pre-norm reached a
  higher validation Recall@50 than post-norm at both learning rates tried (0.1641 vs 0.1590 at 2e-3,
  0.1674 vs 0.1646 at 1e-3);
- ``learning_rate = 1e-3`` instead of the paper's 2e-3: the 2e-3 runs peaked at 2,000 steps and then
  overfitted (0.1641 against 0.1674 at 1e-3); 1e-3 is also ComiRec's and REMI's rate, so every model now
  trains with the same one;
- ``noise_scale = 4`` (s of Eq. 8, whose value the paper does not give): more forward noise regularised
  better (validation Recall@50 0.1674 / 0.1694 / 0.1718 / 0.1721 for s = 1 / 2 / 4 / 8);
- ``refiner_schedule = "two_stage"``, ``backbone_learning_rate = 3e-5``, ``denoiser_query_residual =
  False`` (issue 10, ``docs/refinement.md``): trained jointly as the paper says, the refiner either stays
  the identity (the norm loss pins it) or, freed, weakens the extractor below ``remi``; trained second, on
  the ``remi`` model of the same config whose extractor keeps learning at a small rate, with a denoiser
  that has no residual path from its noisy input, it reached the best validation Recall@50 of the search
  (2 seeds: 0.1783 / 0.1689 against ``remi``'s 0.1706 / 0.1690 for the same seeds).

Every model the project trains is a :class:`ModelConfig` with a variant name; :func:`variant_config`
applies the variant's preset (``remi`` = DMI without diffusion, ...) and then the caller's overrides,
so baselines and ablations are trained by exactly the same code.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

# Variant presets: the fields each variant sets on top of the defaults. The paper's ablations (Table 3):
# dmi-T swaps the transformer denoiser for an MLP, dmi-IP attends to every history item (no pruning),
# dmi-GD lets the diffusion loss reach the extractor and uses the denoised vector alone (no fusion).
VARIANTS: dict[str, dict[str, Any]] = {
    "dmi": {},
    "remi": {"diffusion": False},
    "comirec": {"diffusion": False, "routing_weight": 0.0},
    "ydnn": {"user_tower": "mean_pooling", "diffusion": False, "routing_weight": 0.0},
    "pop": {"user_tower": "popularity", "diffusion": False, "routing_weight": 0.0},
    "dmi-T": {"denoiser": "mlp"},
    "dmi-IP": {"gamma": 1.0},
    "dmi-GD": {"stop_gradient": False},
    # A control, not one of the paper's: the default's schedule with eta = 0, so Z = v and the refiner is
    # trained (by L_dm) but never used. It is remi trained a second time at the backbone rate, and tells
    # what the two-stage schedule gives without any refinement.
    "dmi-eta0": {"eta": 0.0},
    # The paper read literally (section 4.1 and Eq. 18): post-norm, lr 2e-3, s = 1, the Euclidean L_dm,
    # no input dropout, one-step joint training; for comparison with the tuned `dmi`.
    "dmi-paper": {
        "denoiser_norm": "post",
        "learning_rate": 0.002,
        "noise_scale": 1.0,
        "diffusion_loss": "norm",
        "denoiser_input_dropout": 0.0,
        "denoiser_query_residual": True,
        "denoiser_recency": False,
        "denoiser_input_gradient": False,
        "diffusion_noise": "absolute",
        "diffusion_training": "one_step",
        "refiner_schedule": "joint",
        "backbone_learning_rate": 0.0,
        "refiner_learning_rate": 0.0,
        "coarse_loss_weight": 0.0,
        "eta": 0.4,
        "diffusion_weight": 5.0,
        "gamma": 0.5,
        "diffusion_steps": 10,
        "alpha_max": 0.004,
    },
}
# Every variant trains with Adam at lr 1e-3 (ComiRec's and REMI's published rate, protocol.md; chosen for
# DMI on validation users, see above). `--set learning_rate=0.002` gives the paper's DMI rate.

from trainer.choices import (  # noqa: E402  (the one definition of each choice list)
    DENOISER_NORMS,
    DENOISERS,
    DIFFUSION_LOSSES,
    DIFFUSION_NOISES,
    DIFFUSION_TRAININGS,
    ITEM_TABLE_UPDATES,
    REFINER_SCHEDULES,
    SAMPLERS,
    SERVING_NOISES,
    USER_TOWERS,
)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of one model and its training run.

    Attributes:
      model: variant name, one of :data:`VARIANTS` (set through :func:`variant_config`).
      user_tower: ``self_attentive`` (ComiRec-SA extractor, K interests), ``mean_pooling`` (YouTube-DNN:
        mean of history embeddings + MLP, one vector) or ``popularity`` (no model: most popular items).
      embedding_dim: d, the size of item embeddings and interest vectors.
      num_interests: K, interest vectors per user.
      max_length: L, the longest history the tower reads (the last L items).
      attention_units: d_a of the extractor (W1: d_a x d); 0 means 4 * d, as ComiRec-SA.
      diffusion: refine interests with the diffusion module (False: the paper's DMI-diff = REMI).
      diffusion_steps: T, steps of the forward process (Eq. 8).
      sampling_steps: S <= T, DDIM steps at serving and evaluation; 0 means S = T (the paper's Alg. 2).
        An export can serve another S from the same weights (``ExportSettings.sampling_steps``).
      alpha_min: minimum noise level of the linear schedule (Eq. 8).
      alpha_max: maximum noise level (Eq. 8; the paper tunes {0.001, 0.002, 0.004, 0.008}).
      noise_scale: s of Eq. 8 (not given by the paper; 4 chosen on validation users).
      gamma: share of the history kept by item pruning (k = ceil(gamma * n), Eq. 12); 1.0 = no pruning.
      eta: weight of the denoised vector in the final representation (Eq. 13).
      diffusion_weight: lambda, weight of the reconstruction loss L_dm (Eq. 19; tuned in {3..7}).
      denoiser: ``transformer`` (cross-attention, Eq. 11) or ``mlp`` (the dmi-T ablation).
      denoiser_heads: attention heads of the denoiser's cross-attention.
      denoiser_dropout: dropout of the transformer denoiser (attention probabilities and residual
        branches; the paper does not mention any, so 0 by default).
      denoiser_norm: ``post`` or ``pre``: LayerNorm placement in the transformer denoiser (the paper does
        not say; see :class:`trainer.layers.InterestDenoiser`).
      denoiser_input_dropout: dropout on the noisy interest ``v_t`` before the denoiser reads it (training
        only; it reaches both the attention query and the pre-norm residual path), so that the denoiser
        cannot copy its input; DiffRec and DDRM drop half of theirs. 0: the paper (none).
      denoiser_query_residual: keep the pre-norm denoiser's residual path from ``v_t`` (False: the
        prediction comes from the attention over the history alone, see ``InterestDenoiser``).
      denoiser_input_gradient: the recommendation loss reaches the extractor through the denoiser's
        input too (L_dm still does not; see DiffusionRefiner). False: the paper (v frozen in the denoiser).
      denoiser_recency: add a learned embedding of each history item's recency to the history the
        denoiser attends to (the paper's Eq. 11 attends to item embeddings alone; see DiffusionRefiner).
      diffusion_loss: L_dm per example: ``norm`` (Eq. 18 literally, the Euclidean norm), ``squared`` (its
        square) or ``mse`` (the square averaged over dimensions, as DiffRec / DDRM).
      diffusion_noise: ``absolute`` (Eq. 7) or ``relative`` forward noise (scaled by each interest's RMS
        value, so the schedule's levels are signal-to-noise ratios at any interest scale).
      diffusion_training: ``one_step`` (Algorithm 1: one denoiser call at a random step) or ``chain``
        (training runs the serving DDIM chain from T, so serving computes what was trained).
      refiner_schedule: ``joint`` (the paper: extractor, items and refiner train together) or
        ``two_stage``: the ``remi`` model of the same config trains first, then the refiner alone on its
        frozen extractor and item table (as DDRM trains its denoiser on a frozen, pretrained backbone).
      backbone_learning_rate: with ``two_stage``, the Adam rate at which the extractor and the item table
        keep training in the second stage (0: frozen; the refiner trains at ``refiner_learning_rate``).
      refiner_learning_rate: with ``two_stage``, the refiner's Adam rate in the second stage (0: the run's
        ``learning_rate``, which the first stage trains at). The second stage starts from a trained
        backbone and a random refiner, and at 1e-3 its validation peak comes within 1-2k steps; a rate of
        its own lets the refiner train slower without changing the first stage.
      coarse_loss_weight: weight of a second sampled-softmax term on the selected *unrefined* interest
        ``v`` (0: the paper). It keeps training the extractor towards REMI's objective while the refiner
        trains jointly, instead of only through the ``(1 - eta) v`` part of ``Z``.
      stop_gradient: freeze the interest vector for the diffusion loss (Sec. 3.2); False with the output
        taken from the denoiser alone is the dmi-GD ablation.
      serving_noise: ``zero`` (deterministic v_T = sqrt(abar_T) v) or ``random`` (stateless noise seeded
        per request) at the start of the DDIM loop.
      routing_weight: rlambda, weight of REMI's routing regularization (0 disables it).
      ydnn_hidden_units: hidden layer sizes of the YouTube-DNN tower's MLP (the last one is d).
      batch_size: training users per step.
      num_negatives: sampled negatives per batch, shared across the batch (10 x batch size).
      sampler: ``log_uniform`` (ComiRec; ids sorted by frequency) or ``uniform`` (REMI).
      learning_rate: Adam learning rate (1e-3; the paper's DMI used 2e-3, see above).
      item_table_update: how Adam updates the item table (``trainer.optimizers``): ``dense`` (exact
        Adam over every row each step, O(N d)), ``lazy`` (only the batch's rows, as LazyAdam / SparseAdam)
        or ``auto`` (dense below ``trainer.optimizers.LAZY_MIN_ITEMS`` items, lazy from there: the same
        throughput at 400k items as at Beauty's 12k).
      max_steps: training steps at most (fewer only when early stopping ends the run).
      eval_every: steps between validation evaluations (one Keras "epoch"); validation also runs after
        the last step when ``max_steps`` is not a multiple of it.
      patience: evaluations without a validation Recall@50 improvement before stopping.
      steps_per_call: training steps per compiled call (fewer Python round trips).
      min_cut: smallest cut position of a training example (protocol: 4, so the history has >= 4 items).
      eval_batch_size: users per batch at evaluation.
      seed: random seed of initialisation, batch sampling and diffusion noise.
    """

    model: str = "dmi"
    user_tower: str = "self_attentive"
    embedding_dim: int = 64
    num_interests: int = 4
    max_length: int = 20
    attention_units: int = 0
    diffusion: bool = True
    diffusion_steps: int = 10
    sampling_steps: int = 0
    alpha_min: float = 1e-4
    alpha_max: float = 0.004
    noise_scale: float = 4.0
    gamma: float = 0.5
    eta: float = 0.4
    diffusion_weight: float = 5.0
    denoiser: str = "transformer"
    denoiser_heads: int = 2
    denoiser_norm: str = "pre"
    denoiser_dropout: float = 0.0
    denoiser_input_dropout: float = 0.0
    denoiser_query_residual: bool = False
    denoiser_recency: bool = False
    denoiser_input_gradient: bool = False
    diffusion_loss: str = "norm"
    diffusion_noise: str = "absolute"
    diffusion_training: str = "one_step"
    refiner_schedule: str = "two_stage"
    backbone_learning_rate: float = 3e-5
    refiner_learning_rate: float = 0.0
    coarse_loss_weight: float = 0.0
    stop_gradient: bool = True
    serving_noise: str = "zero"
    routing_weight: float = 100.0
    ydnn_hidden_units: tuple[int, ...] = (256,)
    batch_size: int = 128
    num_negatives: int = 1280
    sampler: str = "log_uniform"
    learning_rate: float = 0.001
    item_table_update: str = "auto"
    max_steps: int = 100_000
    eval_every: int = 1000
    patience: int = 10
    steps_per_call: int = 50
    min_cut: int = 4
    eval_batch_size: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.model in VARIANTS, f"model must be one of {', '.join(VARIANTS)}, got {self.model!r}")
        _check(
            self.user_tower in USER_TOWERS,
            f"user_tower must be one of {USER_TOWERS}, got {self.user_tower!r}",
        )
        _check(self.denoiser in DENOISERS, f"denoiser must be one of {DENOISERS}, got {self.denoiser!r}")
        _check(
            self.denoiser_norm in DENOISER_NORMS,
            f"denoiser_norm must be one of {DENOISER_NORMS}, got {self.denoiser_norm!r}",
        )
        _check(self.sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        for name, choices in (
            ("serving_noise", SERVING_NOISES),
            ("diffusion_loss", DIFFUSION_LOSSES),
            ("diffusion_noise", DIFFUSION_NOISES),
            ("diffusion_training", DIFFUSION_TRAININGS),
            ("refiner_schedule", REFINER_SCHEDULES),
            ("item_table_update", ITEM_TABLE_UPDATES),
        ):
            value = getattr(self, name)
            _check(value in choices, f"{name} must be one of {choices}, got {value!r}")
        _check(
            self.denoiser_query_residual or self.denoiser_norm == "pre",
            "denoiser_query_residual=false needs denoiser_norm=pre",
        )
        for name in (
            "embedding_dim",
            "num_interests",
            "max_length",
            "diffusion_steps",
            "batch_size",
            "num_negatives",
            "max_steps",
            "eval_every",
            "patience",
            "steps_per_call",
            "eval_batch_size",
            "denoiser_heads",
        ):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(
            0 <= self.sampling_steps <= self.diffusion_steps,
            f"sampling_steps must be in [0, diffusion_steps={self.diffusion_steps}], got {self.sampling_steps}",
        )
        _check(
            0 < self.alpha_min <= self.alpha_max,
            f"need 0 < alpha_min <= alpha_max, got {self.alpha_min}, {self.alpha_max}",
        )
        _check(self.noise_scale * self.alpha_max < 1, "noise_scale * alpha_max must be < 1")
        _check(0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}")
        _check(0 <= self.eta <= 1, f"eta must be in [0, 1], got {self.eta}")
        _check(
            0 <= self.denoiser_dropout < 1, f"denoiser_dropout must be in [0, 1), got {self.denoiser_dropout}"
        )
        _check(
            0 <= self.denoiser_input_dropout < 1,
            f"denoiser_input_dropout must be in [0, 1), got {self.denoiser_input_dropout}",
        )
        _check(
            self.backbone_learning_rate >= 0,
            f"backbone_learning_rate must be >= 0, got {self.backbone_learning_rate}",
        )
        _check(
            self.refiner_learning_rate >= 0,
            f"refiner_learning_rate must be >= 0, got {self.refiner_learning_rate}",
        )
        _check(
            not self.refiner_learning_rate or self.refiner_schedule == "two_stage",
            "refiner_learning_rate needs refiner_schedule=two_stage (jointly, everything trains at learning_rate)",
        )
        _check(self.coarse_loss_weight >= 0, f"coarse_loss_weight must be >= 0, got {self.coarse_loss_weight}")
        _check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        _check(self.min_cut >= 1, f"min_cut must be >= 1, got {self.min_cut}")
        _check(
            self.embedding_dim % self.denoiser_heads == 0,
            f"embedding_dim ({self.embedding_dim}) must be divisible by denoiser_heads ({self.denoiser_heads})",
        )

    @property
    def num_sampling_steps(self) -> int:
        """S, the DDIM steps used at serving (sampling_steps, or T when 0)."""
        return self.sampling_steps or self.diffusion_steps

    @property
    def pruned_length(self) -> int:
        """k_max = ceil(gamma * L): the most history items item pruning keeps."""
        return math.ceil(self.gamma * self.max_length)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        values = json.loads(text)
        values["ydnn_hidden_units"] = tuple(values.get("ydnn_hidden_units", ()))
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        _check(not unknown, f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls(**values)


# Fields that only the diffusion refiner reads: a model without it is the same whatever they are.
DIFFUSION_FIELDS: tuple[str, ...] = (
    "diffusion_steps",
    "sampling_steps",
    "alpha_min",
    "alpha_max",
    "noise_scale",
    "gamma",
    "eta",
    "diffusion_weight",
    "denoiser",
    "denoiser_heads",
    "denoiser_norm",
    "denoiser_dropout",
    "denoiser_input_dropout",
    "denoiser_query_residual",
    "denoiser_recency",
    "denoiser_input_gradient",
    "diffusion_loss",
    "diffusion_noise",
    "diffusion_training",
    "refiner_schedule",
    "backbone_learning_rate",
    "refiner_learning_rate",
    "coarse_loss_weight",
    "stop_gradient",
    "serving_noise",
)


def without_diffusion(config: ModelConfig, model: str = "remi") -> ModelConfig:
    """``config`` with the refiner off and every :data:`DIFFUSION_FIELDS` at its default.

    Two configs that differ only in the refiner give the same model here (e.g. the frozen first stage of
    a two-stage run, shared by every refiner trained on it).
    """
    defaults = ModelConfig()
    values = {name: getattr(defaults, name) for name in DIFFUSION_FIELDS}
    return dataclasses.replace(config, **values, model=model, diffusion=False)


def has_servable(config: ModelConfig) -> bool:
    """Whether the config's model can be exported as servables (the pipeline trains only these).

    Every neural user tower can; ``popularity`` (the ``pop`` variant) ranks by counts and has no model.

    Args:
      config: the model's configuration.

    Returns:
      True when :func:`trainer.export.export_servables` can export the trained model.
    """
    return config.user_tower != "popularity"


def servable_variants() -> tuple[str, ...]:
    """The variants of :data:`VARIANTS` that :func:`has_servable` (the pipeline's ``--model`` choices)."""
    return tuple(name for name in VARIANTS if has_servable(variant_config(name)))


def require_servable(config: ModelConfig) -> None:
    """Fails for a config without a servable (see :func:`has_servable`), before anything is trained.

    Args:
      config: the model's configuration.

    Raises:
      ValueError: the config's model has no servable.
    """
    _check(
        has_servable(config), f"model {config.model!r} has no servable; the pipeline trains neural variants only"
    )


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def variant_config(model: str = "dmi", overrides: Mapping[str, Any] | None = None) -> ModelConfig:
    """The config of a variant: its preset on top of the defaults, then ``overrides``.

    Args:
      model: a variant name from :data:`VARIANTS`.
      overrides: field values that win over the preset (e.g. from ``--set key=value``).

    Returns:
      The validated config.
    """
    if model not in VARIANTS:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(VARIANTS)}")
    values: dict[str, Any] = {**VARIANTS[model], **dict(overrides or {}), "model": model}
    return ModelConfig(**values)


def parse_overrides(assignments: list[str]) -> dict[str, Any]:
    """Parses ``key=value`` strings into typed config overrides (``--set`` on the command line).

    Values are converted to the field's type: ``--set diffusion=false``, ``--set alpha_max=0.008``,
    ``--set ydnn_hidden_units=512,256``.

    Raises:
      ValueError: an assignment without ``=``, an unknown field or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    defaults = ModelConfig()
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--set expects key=value, got {assignment!r}")
        if key not in fields or key == "model":
            raise ValueError(f"unknown config field {key!r} in --set {assignment}")
        default = getattr(defaults, key)
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                value: Any = text.lower() in ("true", "1")
            elif isinstance(default, tuple):
                value = tuple(int(part) for part in text.split(",") if part)
            else:
                value = type(default)(text)
        except ValueError:
            raise ValueError(f"--set {assignment}: expected a {type(default).__name__} value") from None
        overrides[key] = value
    return overrides
