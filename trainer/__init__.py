"""DMI-Rec trainer: data tooling, the DMI model and its baselines, training and evaluation.

Importing this package selects Keras 2 (``tf_keras``) for TensorFlow: ``TF_USE_LEGACY_KERAS=1`` must be
set before TensorFlow is first imported, so every entry point of the project imports ``trainer`` (or sets
the variable itself) before ``tensorflow``.
"""

import os
import warnings

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# google-api-core (pulled in by TFX and Beam) warns on every import that Python 3.11 support ends in 2027.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\..*")
