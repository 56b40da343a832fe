"""The pipeline's custom TFX components.

- ``validation_gate.ValidationGate``: fails the run when ExampleValidator found anomalies.
- ``retrieval_evaluator.RetrievalEvaluator``: protocol metrics on test users and the blessing decision
  (rule and ML Metadata baseline in ``blessing.py``).
- ``servable_pusher.ServablePusher``: copies blessed servables into a TF Serving directory.
"""

from pipeline.components.retrieval_evaluator import RetrievalEvaluator
from pipeline.components.servable_pusher import ServablePusher
from pipeline.components.validation_gate import ValidationGate

__all__ = ["RetrievalEvaluator", "ServablePusher", "ValidationGate"]
