"""What serving choices do with the same trained DMI weights, on validation users only.

The refiner's serving behaviour has knobs that do not change its weights: the number of DDIM steps S,
the start noise (``zero``: ``v_T = sqrt(alpha_bar_T) v``; ``random``: Algorithm 2's forward process at
``T``, seeded per user) and eta of Eq. 13 (the share of the refined vector in ``Z``). This script trains
one ``dmi`` model per trial (``NAME=MODEL[:KEY=VALUE,...]`` as ``bench.tune``, validation users only) or
loads ``--model-dir``, then evaluates every combination on **validation** users, so that what it shows
can be used to choose defaults without touching test users. Rows: validation Recall@50 / HitRate@50 and
the refinement size (``trainer.diagnostics``).

    python -m bench.serving_probe --trial id5=dmi:denoiser_input_dropout=0.5
    python -m bench.serving_probe --model-dir runs/dmi
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench import arguments, datasets, run_record, summaries, training

MODULE = "bench.serving_probe"
SERVING_ETAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class _Served:
    """A DMI model served with a per-user seed (needed by ``serving_noise="random"``)."""

    def __init__(self, model: Any):
        self.model = model
        self.num_items = model.num_items

    def recommend(self, history: Any, n: int, exclude_history: bool = False, refine: bool = True) -> Any:
        import tensorflow as tf

        from trainer import retrieval

        seed = tf.range(tf.shape(history)[0], dtype=tf.int64)
        interests = self.model.user_interests(history, seed=seed, refine=refine)
        return retrieval.top_n(interests, self.model.item_table, n)


def variants(model: Any, vocabulary: Any, steps: Sequence[int], etas: Sequence[float]) -> list[Any]:
    """``(label, settings, model)`` for every S x noise x eta (copies of the trained weights)."""
    from trainer.train import build_model

    rows = []
    for s, noise, eta in itertools.product(steps, ("zero", "random"), etas):
        config = dataclasses.replace(model.config, sampling_steps=s, serving_noise=noise, eta=eta)
        clone = build_model(config, vocabulary)
        clone.set_weights(model.get_weights())
        rows.append((f"S={s} {noise} eta={eta}", {"S": s, "noise": noise, "eta": eta}, clone))
    return rows


def probe(model: Any, vocabulary: Any, validation: Any, etas: Sequence[float]) -> list[dict[str, Any]]:
    """Validation metrics and refinement size of each serving variant, plus the unrefined weights."""
    from trainer.diagnostics import refinement_diagnostics
    from trainer.evaluation import Evaluator

    steps = sorted({1, model.config.diffusion_steps})
    rows = [{"label": "no refinement", "validation": Evaluator(model, validation, refine=False)()}]
    for label, settings, clone in variants(model, vocabulary, steps, etas):
        metrics = Evaluator(_Served(clone), validation)()
        size = refinement_diagnostics(clone, validation.histories)["refinement_size"]
        rows.append({"label": label, **settings, "validation": metrics, "refinement_size": size})
        run_record.log(
            f"{label}: validation recall@50 {metrics['recall@50']:.4f} (refinement size {size:.3f})"
        )
    return rows


def parse_args(argv: Sequence[str]) -> Any:
    from bench import tune

    parser = arguments.base_parser(MODULE, __doc__)
    arguments.add_data_arguments(parser)
    parser.add_argument("--model-dir", help="a trained dmi model directory (dmirec train --out)")
    parser.add_argument(
        "--trial", action="append", type=tune.parse_trial, default=[], metavar="NAME=MODEL[:KEY=VALUE,...]"
    )
    parser.add_argument(
        "--etas",
        type=lambda t: [float(x) for x in t.split(",")],
        default=list(SERVING_ETAS),
        help="serving eta values (default 0,0.2,...,1)",
    )
    arguments.add_training_arguments(parser, jobs=False)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()
    threads = arguments.configure_threads(args)
    from trainer import train as train_lib
    from trainer.config import parse_overrides
    from trainer.sequences import evaluation_set

    stem = run_record.result_stem("serving_probe", args.data)
    path = run_record.result_path(args.out, stem, args.quick)
    result = run_record.read_json(path) or {"probes": {}}
    result.update({**run_record.run_metadata(MODULE, argv, args.quick), "threads": threads})
    shared = {**datasets.schedule(args.data, args.quick), "patience": 3, **parse_overrides(args.set)}
    models = []
    if args.model_dir:
        config, vocabulary, model = train_lib.load_model(args.model_dir)
        dataset = datasets.load_dataset(args.data, args.beauty_path, args.split_seed, vocabulary=vocabulary)
        models.append((os.path.basename(os.path.normpath(args.model_dir)), "dmi", {}, model, vocabulary))
    else:
        dataset = datasets.load_dataset(args.data, args.beauty_path, args.split_seed)
        for name, model_name, overrides in args.trial:
            trained, _ = training.train_run(
                model_name, dataset.data, {**shared, **overrides}, evaluate_test=False
            )
            models.append((name, model_name, overrides, trained.model, dataset.data.vocabulary))
    for name, model_name, overrides, model, vocabulary in models:
        validation = evaluation_set(dataset.data.eval, model.config.max_length)
        result["probes"][name] = {
            "model": model_name,
            "overrides": overrides,
            "config": dataclasses.asdict(model.config),
            "rows": probe(model, vocabulary, validation, args.etas),
        }
        run_record.write_json(path, result)
    run_record.finish_metadata(result, started)
    run_record.write_json(path, result)
    for name, entry in result["probes"].items():
        print(f"\n{name} ({entry['overrides']}), validation users")
        print(
            summaries.text_table(
                ["serving", "val R@50", "val HR@50", "refinement size"],
                [
                    [
                        row["label"],
                        f"{row['validation']['recall@50']:.4f}",
                        f"{row['validation']['hit_rate@50']:.4f}",
                        summaries.format_number(row.get("refinement_size"), 3),
                    ]
                    for row in entry["rows"]
                ],
            )
        )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
