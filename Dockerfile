# The image every component of the Kubeflow pipeline runs in (`dmirec compile-kfp --image ...`):
# TFX 1.16's image with this project installed. Build from the repository root:
#   docker build -t gcr.io/<project>/dmi-rec:<tag> . && docker push gcr.io/<project>/dmi-rec:<tag>
FROM gcr.io/tfx-oss-public/tfx:1.16.0

# Keras 2 (tf_keras) must be selected before TensorFlow is first imported; in the containers TFX's
# entry point imports TensorFlow before any project module, so the variable is set for the process.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONUNBUFFERED=1

# pipeline/configs.py IMAGE_PROJECT_DIR: the schema is read from here (IMAGE_SCHEMA_PATH).
WORKDIR /opt/dmi-rec
COPY . .

# Every package pinned as in development; TFX 1.16 declares Python < 3.11, hence --ignore-requires-python.
RUN python -m pip install --no-cache-dir --ignore-requires-python -c constraints.txt .
