"""The serving contract on both sides of the layering rule: serving expects what trainer/export.py writes.

The trainer and the server may not import each other, so each has its own copy of the contract's names
(``trainer.export`` and ``serving.contract``). The SignatureDefs of an exported servable are the source of
truth; these tests export a real (tiny, untrained) servable and hold both copies, and the server's reading
of the exporter's warm-up file, to it.
"""

from __future__ import annotations

import pytest

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from serving import contract
from serving.servable import Servable, read_signature_defs
from serving.warmup import WARMUP_PATH, read_warmup_requests, replay_warmup_requests
from trainer import config, export, synthetic, train
from trainer.export_settings import ExportSettings
from trainer.sequences import SequenceData

NAMES = (
    "RETRIEVAL_SIGNATURE",
    "INTERESTS_SIGNATURE",
    "HISTORY_INPUT",
    "TOP_N_INPUT",
    "EXCLUDE_HISTORY_INPUT",
    "ITEM_IDS_OUTPUT",
    "SCORES_OUTPUT",
    "INTERESTS_OUTPUT",
)
TINY = {"embedding_dim": 8, "num_interests": 2, "max_length": 5, "diffusion_steps": 2}


@pytest.fixture(scope="module")
def servable_dir(tmp_path_factory) -> str:
    """The ``dmi_exact`` servable of an untrained tiny model (no XLA: the names do not depend on it)."""
    events = synthetic.generate(synthetic.SyntheticConfig(users=60, items=40, topics=4, seed=3))
    data = SequenceData.from_interactions(events)
    model = train.build_model(config.variant_config("dmi", TINY), data.vocabulary)
    export_dir = str(tmp_path_factory.mktemp("export"))
    options = {"top_n": 5, "max_top_n": 10, "scann": False, "batch_sizes": (1, 2)}
    plain = ExportSettings(xla=False)
    return export.export_servables(model, data.vocabulary, export_dir, plain, **options)[export.EXACT]


def test_both_packages_name_the_contract_alike():
    for name in NAMES:
        assert getattr(export, name) == getattr(contract, name), name


def test_exported_signature_defs_match_the_serving_constants(servable_dir):
    signature_defs = {k: v for k, v in read_signature_defs(servable_dir).items() if not k.startswith("__")}
    assert set(signature_defs) == {contract.RETRIEVAL_SIGNATURE, contract.INTERESTS_SIGNATURE}
    retrieval = signature_defs[contract.RETRIEVAL_SIGNATURE]
    options = {contract.TOP_N_INPUT, contract.EXCLUDE_HISTORY_INPUT}
    assert set(retrieval.inputs) == {contract.HISTORY_INPUT, *options}
    assert set(retrieval.defaults) == options
    assert set(retrieval.outputs) == {contract.ITEM_IDS_OUTPUT, contract.SCORES_OUTPUT}
    interests = signature_defs[contract.INTERESTS_SIGNATURE]
    assert set(interests.inputs) == {contract.HISTORY_INPUT}
    assert set(interests.outputs) == {contract.INTERESTS_OUTPUT}


def test_the_server_reads_and_replays_the_exporters_warmup_file(servable_dir):
    assert export.WARMUP_FILE == WARMUP_PATH
    requests = read_warmup_requests(servable_dir)
    assert [(r.model_spec.signature_name, set(r.inputs)) for r in requests] == [
        (signature, {contract.HISTORY_INPUT})
        for signature in (contract.RETRIEVAL_SIGNATURE, contract.INTERESTS_SIGNATURE)
        for _ in (1, 2)
    ]
    assert replay_warmup_requests(Servable.load(export.EXACT, 1, servable_dir)) == len(requests)
