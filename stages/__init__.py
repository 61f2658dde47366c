"""The pipeline's stages, one module each, run as `python -m stages.<name>` (see dvc.yaml);
`stages.app` holds what people run on a trained model, `stages.core` the library.

This is the one place that decides what TensorFlow may print while it starts: its C++ INFO
and WARNING lines (level 2 hides them, errors stay), and the lines it writes before its
logging is set up, which no level reaches (the oneDNN note, "could not find cuda drivers",
cuInit's "UNKNOWN ERROR (303)" on a machine with no GPU). Those are held back while
TensorFlow imports and probes for GPUs, and shown after all on a machine that has an NVIDIA
device, where they may explain a GPU that is not used.
"""

import importlib.abc
import importlib.util
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _held_back_stderr(run):
    """Run `run()` with file descriptor 2 sent to a temporary file; replay it on GPU hosts."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            return run()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if os.path.exists("/dev/nvidiactl"):
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            def load():
                exec_module(module)
                module.config.list_physical_devices("GPU")  # where cuInit speaks
                # Serving several models, or batches of several sizes, traces a tf.function
                # once per model or shape on purpose; TF's hint about it is noise here.
                module.get_logger().addFilter(
                    lambda record: "triggered tf.function retracing" not in record.getMessage())

            _held_back_stderr(load)

        spec.loader.exec_module = quiet_exec_module
        return spec


if "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _QuietTensorFlowImport())
