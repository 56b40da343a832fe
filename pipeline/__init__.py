"""DMI-Rec's TFX pipeline: components, the pipeline definition, its runners and the ``dmirec`` commands.

Importing the package loads nothing heavy (the command line starts here). ``pipeline.QuarantinedRows`` is
the import path of SequenceExampleGen's custom artifact type as Kubeflow sees it (its schema title must
read ``<namespace>.<Name>`` and be importable: see ``sequence_example_gen/spec.py``); it is resolved on
first use, so that plain ``import pipeline`` does not load TFX.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "QuarantinedRows":
        from pipeline.sequence_example_gen.spec import QuarantinedRows

        return QuarantinedRows
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
