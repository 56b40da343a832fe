"""DMI-Rec benchmark suite: reproduction of the paper's tables, ablations, speed and serving latency.

Every script is a module runnable as ``python -m bench.<name>`` (``--help`` lists its options) and writes a
JSON file (and a PNG where a picture reads better) under ``bench/results``; ``python -m bench.run_all`` (or
``dmirec bench``) runs them all and regenerates ``docs/results.md`` from those files.

Importing this package selects Keras 2 before TensorFlow is imported, as every entry point must.
"""

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 before anything imports TensorFlow)
