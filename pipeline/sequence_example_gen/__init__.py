"""SequenceExampleGen: the TFX component turning interaction logs into per-user sequence examples.

``component.py`` (the component), ``spec.py`` (its parameters, outputs and the ``QuarantinedRows``
artifact type), ``executor.py`` (the Beam executor) and ``transforms.py`` (the pure Beam logic).
"""

from pipeline.sequence_example_gen.component import SequenceExampleGen
from pipeline.sequence_example_gen.spec import QuarantinedRows

__all__ = ["QuarantinedRows", "SequenceExampleGen"]
