"""The pipeline's stages, one module each, run as `python -m stages.<name>` (see dvc.yaml)."""

import os

# TensorFlow's C++ start-up chatter (INFO/WARNING) hides the progress lines users read.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
