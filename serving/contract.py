"""The names of DMI-Rec's serving contract, for the code that builds or reads retrieval requests.

A DMI-Rec servable has two signatures:

- :data:`RETRIEVAL_SIGNATURE` (``serving_default``): :data:`HISTORY_INPUT` string ``[batch, max_len]``,
  :data:`TOP_N_INPUT` int32 scalar and :data:`EXCLUDE_HISTORY_INPUT` bool scalar (both with defaults in
  the SignatureDef) -> :data:`ITEM_IDS_OUTPUT` string and :data:`SCORES_OUTPUT` float32 ``[batch, top_n]``;
- :data:`INTERESTS_SIGNATURE` (``user_interests``): :data:`HISTORY_INPUT` -> :data:`INTERESTS_OUTPUT`
  float32 ``[batch, K, d]``.

The SignatureDef of the exported SavedModel is the source of truth: the server itself never reads these
names (it validates and runs whatever a SavedModel's SignatureDefs declare); only the client, the fuzzing
requests, the test fixtures (:mod:`serving.testing`) and the benchmarks use them. The trainer's exporter
(``trainer/export.py``, which serving may not import) defines the same names; this module must match what
it writes, and ``tests/test_serving_contract.py`` checks that it does against a freshly exported servable.
"""

from __future__ import annotations

from serving.signature import DEFAULT_SIGNATURE

RETRIEVAL_SIGNATURE = DEFAULT_SIGNATURE  # a request without signature_name retrieves
INTERESTS_SIGNATURE = "user_interests"
HISTORY_INPUT = "history"
TOP_N_INPUT = "top_n"
EXCLUDE_HISTORY_INPUT = "exclude_history"
ITEM_IDS_OUTPUT = "item_ids"
SCORES_OUTPUT = "scores"
INTERESTS_OUTPUT = "interests"
