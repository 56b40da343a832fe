"""The deployment configs in serving/deploy/ parse as TF Serving's text formats."""

import os

import re

from serving import server_config

DEPLOY = os.path.join(os.path.dirname(__file__), "deploy")


def test_model_configs_parse_and_name_the_servables():
    both = server_config.read_model_config_file(os.path.join(DEPLOY, "models.config"))
    assert sorted(m.name for m in both) == ["dmi", "dmi_exact"]
    exact = server_config.read_model_config_file(os.path.join(DEPLOY, "models_exact.config"))
    assert [m.name for m in exact] == ["dmi_exact"]


# Fields of tensorflow_serving's BatchingParameters (its proto is not in the tensorflow-serving-api wheel).
BATCHING_FIELDS = {
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "allowed_batch_sizes",
    "pad_variable_length_inputs",
    "thread_pool_name",
    "enable_large_batch_splitting",
    "max_execution_batch_size",
}


def test_batching_parameters_use_known_fields():
    with open(os.path.join(DEPLOY, "batching_parameters.txt"), encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    fields = [re.match(r"(\w+)\s*[:{]", line).group(1) for line in lines]
    assert fields and set(fields) <= BATCHING_FIELDS
