"""ServablePusher: copies a blessed model's servables into a TF Serving model base directory.

Each servable of the Trainer's model (``dmi``, ``dmi_exact``) goes to ``<serving_base>/<name>/<version>/``
with ``version`` one more than the largest integer version already there, through
:func:`trainer.push.push_servables`: a model server polling the directory never loads half a version
(locally each copy is written beside its target and renamed into place; on a remote serving base such as
``gs://``, ``saved_model.pb`` is copied last). A model that was not blessed is not copied.
"""

import dataclasses
import json

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from absl import logging
from tfx import v1 as tfx
from tfx.utils import path_utils

from pipeline.components import blessing
from trainer import export
from trainer import push as push_lib
from trainer import filesystem as fs

# Custom properties of the PushedModel artifact (the names TFX's own Pusher uses, plus the servables).
PUSHED = "pushed"  # int, 1 or 0
PUSHED_VERSION = "pushed_version"  # str, the version directory name ("" when not pushed)
PUSHED_DESTINATION = "pushed_destination"  # str, the serving base ("" when not pushed)
PUSHED_SERVABLES = "pushed_servables"  # str, JSON {name: version directory}


@dataclasses.dataclass(frozen=True)
class Push:
    """A push: the version served and each servable's version directory.

    Attributes:
      version: the version written, or the one already holding the model.
      servables: servable name -> its version directory.
      new: False when the latest version already held this model byte for byte (nothing copied: a re-run
        whose evaluator blessed the same model again does not serve it twice).
    """

    version: int
    servables: dict[str, str]
    new: bool = True


def push(model_uri: str, blessed: bool, serving_base: str) -> Push | None:
    """Pushes a model's servables when it is blessed.

    Args:
      model_uri: the Trainer's model artifact (servables under ``Format-Serving``).
      blessed: the evaluator's decision.
      serving_base: the directory TF Serving's model base paths are under (``<serving_base>/<name>``),
        local or a TensorFlow file system URI (``gs://...``).

    Returns:
      What was pushed (or found already served), or None when the model is not blessed (nothing copied).

    Raises:
      ValueError: the model has no servable.
    """
    if not blessed:
        return None
    export_dir = path_utils.serving_model_dir(model_uri)
    served = push_lib.served_version(export_dir, serving_base)
    version = served or push_lib.push_servables(export_dir, serving_base)
    servables = {name: fs.join(serving_base, name, str(version)) for name in export.SERVABLES}
    return Push(version, {name: path for name, path in servables.items() if fs.isdir(path)}, new=served is None)


@tfx.dsl.components.component
def ServablePusher(  # noqa: N802  (TFX names components in CamelCase)
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    model_blessing: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    pushed_model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.PushedModel],
    serving_base: tfx.dsl.components.Parameter[str],
) -> None:
    """Pushes the blessed model's servables as a new integer version.

    Args:
      model: the Trainer's ``model``.
      model_blessing: RetrievalEvaluator's ``blessing`` (``blessed`` custom property).
      pushed_model: records ``pushed`` (1 or 0), ``pushed_version``, ``pushed_destination`` and
        ``pushed_servables`` as custom properties.
      serving_base: the serving directory.
    """
    blessed = model_blessing.get_int_custom_property(blessing.BLESSED) == 1
    pushed = push(model.uri, blessed, serving_base)
    if pushed is None:
        logging.info("ServablePusher: the model at %s was not blessed; nothing pushed", model.uri)
        pushed_model.set_int_custom_property(PUSHED, 0)
        return
    pushed_model.set_int_custom_property(PUSHED, 1)
    pushed_model.set_string_custom_property(PUSHED_VERSION, str(pushed.version))
    pushed_model.set_string_custom_property(PUSHED_DESTINATION, serving_base)
    pushed_model.set_string_custom_property(PUSHED_SERVABLES, json.dumps(pushed.servables, sort_keys=True))
    if pushed.new:
        logging.info("ServablePusher: pushed version %d: %s", pushed.version, pushed.servables)
    else:
        logging.info("ServablePusher: version %d already serves this model: nothing copied", pushed.version)
