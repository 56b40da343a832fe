"""The compiled Kubeflow Pipelines v2 spec, executed: every task's container command, in DAG order.

A tiny stand-in for Kubeflow's orchestrator runs ``dmi-rec.json`` as ``dmirec compile-kfp`` writes it, on
this machine: for each task (in dependency order) it builds the ``ExecutorInput`` Kubeflow would (the
task's constant parameters, its input artifacts from the producing tasks' ``executor_output.json``, fresh
output URIs under a local pipeline root) and runs the task's own container command and arguments with
``{{$}}`` replaced, i.e. TFX's Kubeflow V2 entry point (``kubeflow_v2_run_executor``), the one the image
runs. The two resolver tasks TFX compiles from the latest-blessed-model Resolver have no container: the
stand-in answers their artifact queries over the artifacts earlier runs produced, as Kubeflow's ML
Metadata does. Kubeflow's cache is mimicked too: a task whose parameters and inputs are unchanged reuses
its earlier outputs.

Run 1 trains, blesses and pushes version 1. Run 2 changes only the Trainer's settings: the tasks before
it come from the cache, the resolver hands run 1's model to the evaluator, which measures it on the same
test users, and the new model is pushed as version 2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pipeline import configs, kubeflow_runner
from pipeline.components import blessing
from trainer import interactions, synthetic
from trainer.config import parse_overrides

pytestmark = pytest.mark.slow

TRAINING = ["embedding_dim=16", "eval_every=30", "num_negatives=32", "batch_size=32", "diffusion_steps=4",
            "steps_per_call=10"]
ENTRY_POINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
# The only artifact-query terms TFX's latest-blessed-model resolver compiles to (an unknown one fails).
_TERM = re.compile(r'^(schema_title|name)="(.*)"$|^state=LIVE$|^metadata\.(\w+)\.number_value=([\d.]+)$')
_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.artifacts\['(\w+)'\]\.metadata\['(\w+)'\]\}\}")
_PLACEHOLDER_INPUT = re.compile(r"\{\{\$\.inputs\.artifacts\['(\w+)'\]")


def _schema_title(artifact_type: Mapping[str, Any]) -> str:
    if "schemaTitle" in artifact_type:
        return artifact_type["schemaTitle"]
    return re.search(r"title: (\S+)", artifact_type["instanceSchema"]).group(1)


def _topological(tasks: Mapping[str, Any]) -> list[str]:
    def producers(task: Mapping[str, Any]) -> set[str]:
        artifacts = task.get("inputs", {}).get("artifacts", {}).values()
        return set(task.get("dependentTasks", [])) | {a["taskOutputArtifact"]["producerTask"] for a in artifacts}

    order: list[str] = []
    while len(order) < len(tasks):
        ready = sorted(n for n, t in tasks.items() if n not in order and producers(t) <= set(order))
        assert ready, f"a cycle among {set(tasks) - set(order)}"
        order += ready
    return order


class KubeflowStandIn:
    """Runs compiled specs task by task; keeps every artifact produced, as Kubeflow's ML Metadata would."""

    def __init__(self, root: Path):
        self.root = root
        self.artifacts: list[dict[str, Any]] = []  # RuntimeArtifact JSON, oldest first
        self.cache: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.states: list[dict[str, str]] = []

    def run(self, spec: Mapping[str, Any], run: int) -> dict[str, dict[str, list[dict[str, Any]]]]:
        tasks = spec["root"]["dag"]["tasks"]
        executors = spec["deploymentSpec"]["executors"]
        outputs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        states: dict[str, str] = {}
        for name in _topological(tasks):
            task = tasks[name]
            component = spec["components"][task["componentRef"]["name"]]
            executor = executors[component["executorLabel"]]
            inputs = {
                key: outputs[ref["taskOutputArtifact"]["producerTask"]][ref["taskOutputArtifact"]["outputArtifactKey"]]
                for key, ref in task.get("inputs", {}).get("artifacts", {}).items()
            }
            if "resolver" in executor:
                outputs[name] = self._resolve(executor["resolver"]["outputArtifactQueries"], inputs)
                states[name] = "RESOLVED"
                continue
            parameters = {k: v["runtimeValue"]["constantValue"] for k, v in task["inputs"].get("parameters", {}).items()}
            key = json.dumps([executor, parameters, {k: [a["name"] for a in v] for k, v in inputs.items()}], sort_keys=True)
            if key in self.cache:
                outputs[name], states[name] = self.cache[key], "CACHED"
                continue
            outputs[name] = self._execute(name, run, component, executor["container"], parameters, inputs)
            self.cache[key], states[name] = outputs[name], "COMPLETE"
        self.states.append(states)
        return outputs

    def _resolve(self, queries: Mapping[str, Any], inputs: Mapping[str, list]) -> dict[str, list]:
        resolved = {}
        for key, query in queries.items():
            if any(not inputs[name] for name in _PLACEHOLDER_INPUT.findall(query["filter"])):
                resolved[key] = []  # what the query refers to was not found: nothing resolves
                continue

            def value(match: re.Match) -> str:
                (artifact,) = inputs[match.group(1)]
                return str(artifact["metadata"][match.group(2)])

            terms = [_TERM.match(term.strip()) for term in _PLACEHOLDER.sub(value, query["filter"]).split(" AND ")]
            assert all(terms), f"unsupported artifact query {query['filter']!r}"
            found = [a for a in self.artifacts if all(self._matches(a, t) for t in terms)]
            resolved[key] = found[-1:]  # the latest
        return resolved

    @staticmethod
    def _matches(artifact: Mapping[str, Any], term: re.Match) -> bool:
        field, text, prop, number = term.groups()
        if field == "schema_title":
            return artifact["type"]["schemaTitle"] == text
        if field == "name":
            return artifact["name"] == text
        if prop is not None:
            return artifact.get("metadata", {}).get(prop) == float(number)
        return True  # state=LIVE: every recorded artifact is live

    def _execute(self, name: str, run: int, component, container, parameters, inputs) -> dict[str, list]:
        task_root = self.root / f"run{run}" / name
        definitions = component.get("outputDefinitions", {}).get("artifacts", {})
        outputs = {
            key: {"artifacts": [{
                "name": f"projects/test/locations/local/metadataStores/default/artifacts/run{run}-{name}-{key}",
                "type": {"schemaTitle": _schema_title(d["artifactType"])},
                "uri": str(task_root / key),
            }]}
            for key, d in definitions.items()
        }
        for declared in outputs.values():  # Kubeflow's launcher prepares each output's folder
            Path(declared["artifacts"][0]["uri"]).mkdir(parents=True)
        executor_input = {
            "inputs": {
                "parameters": parameters,
                "artifacts": {key: {"artifacts": artifacts} for key, artifacts in inputs.items()},
            },
            "outputs": {"artifacts": outputs, "outputFile": str(task_root / "executor_output.json")},
        }
        command = [sys.executable if part == "python" else part for part in container["command"]]
        assert command[-1] == ENTRY_POINT  # the image's entry point
        args = [json.dumps(executor_input) if arg == "{{$}}" else arg for arg in container["args"]]
        result = subprocess.run([*command, *args], capture_output=True, text=True, check=False, timeout=900)
        assert result.returncode == 0, f"task {name} failed:\n{result.stderr[-6000:]}"
        written = json.loads((task_root / "executor_output.json").read_text()).get("artifacts", {})
        produced = {}
        for key, declared in outputs.items():
            (artifact,) = declared["artifacts"]
            reported = written.get(key, {}).get("artifacts", [{}])[0]
            artifact = {**artifact, "metadata": reported.get("metadata", {})}
            produced[key] = [artifact]
            self.artifacts.append(artifact)
        return produced


def _compile(out: Path, root: Path, log: Path, serving: Path, max_steps: int) -> dict[str, Any]:
    settings = configs.PipelineSettings(
        model="dmi",
        overrides=parse_overrides([*TRAINING, f"max_steps={max_steps}"]),
        beam_args=configs.IN_PROCESS_BEAM_ARGS,
        recall_tolerance=1.0,  # run 2's shorter training may score lower: still pushed, and compared
    )
    path = kubeflow_runner.compile_pipeline(
        out_dir=str(out), pipeline_root=str(root), log=str(log), image="dmi-rec:test", settings=settings,
        serving_base=str(serving), schema_path=configs.LOCAL_SCHEMA_PATH,  # the image's copy of the schema
    )
    return json.loads(Path(path).read_text())["pipelineSpec"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("kfp_run")
    log = work / "logs" / "log.csv"
    log.parent.mkdir()
    interactions.write_log(str(log), synthetic.generate(synthetic.SyntheticConfig(users=300, items=120, topics=6)))
    serving = work / "serving"
    kubeflow = KubeflowStandIn(work / "root")
    first = kubeflow.run(_compile(work / "spec1", work / "root", log, serving, max_steps=60), run=1)
    versions_after_first = {name: sorted(os.listdir(serving / name)) for name in ("dmi", "dmi_exact")}
    second = kubeflow.run(_compile(work / "spec2", work / "root", log, serving, max_steps=40), run=2)
    return {"first": first, "second": second, "states": kubeflow.states, "serving": serving,
            "versions_after_first": versions_after_first}


def _blessing(outputs) -> dict[str, Any]:
    (artifact,) = outputs["RetrievalEvaluator"]["blessing"]
    return artifact["metadata"]


def test_every_task_runs_and_the_blessed_model_is_pushed(runs):
    states = runs["states"][0]
    containers = {name for name, state in states.items() if state != "RESOLVED"}
    assert {states[name] for name in containers} == {"COMPLETE"}
    assert {"SequenceExampleGen", "ValidationGate", "Trainer", "RetrievalEvaluator", "ServablePusher"} <= containers
    first = _blessing(runs["first"])
    assert first[blessing.BLESSED] == 1 and "no blessed model to compare with" in first[blessing.REASON]
    assert runs["first"]["latest_blessed_model_resolver-model-resolver"]["model"] == []
    assert runs["versions_after_first"] == {"dmi": ["1"], "dmi_exact": ["1"]}
    for name in ("dmi", "dmi_exact"):
        assert (runs["serving"] / name / "1" / "saved_model.pb").is_file()


def test_the_second_run_compares_with_the_first_runs_model_through_the_resolver(runs):
    states = runs["states"][1]
    assert states["ValidationGate"] == states["SequenceExampleGen"] == "CACHED"
    assert states["Trainer"] == states["RetrievalEvaluator"] == states["ServablePusher"] == "COMPLETE"
    (baseline,) = runs["second"]["latest_blessed_model_resolver-model-resolver"]["model"]
    (first_model,) = runs["first"]["Trainer"]["model"]
    assert baseline["name"] == first_model["name"]
    second = _blessing(runs["second"])
    assert second[blessing.BLESSED] == 1
    assert "not worse than the latest blessed model's" in second[blessing.REASON]
    # Run 1's model, measured again on the same test users, scores what it scored when it was blessed.
    assert second[blessing.BASELINE_RECALL] == pytest.approx(_blessing(runs["first"])[blessing.RECALL], abs=1e-3)
    assert second[blessing.BASELINE_MODEL_ID] == first_model["name"]  # the entry point's name for its id
    assert sorted(os.listdir(runs["serving"] / "dmi")) == ["1", "2"]
