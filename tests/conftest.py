import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Full float32 on Ampere and newer GPUs: NVIDIA's libraries read this (in subprocesses too), and
# main.py turns TensorFlow's own TF32 (XLA's dots and convolutions) off when it is set.
os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def pytest_configure(config) -> None:
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)  # before any graph runs
    # The fast tier runs in two processes (pytest -n 2): neither may take a whole GPU's memory.
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    # As main.py on a CPU: no grappler rewrites, which cost ~40% of a second-order test's CPU time and
    # leave every result as it is (applies to tf.compat.v1 sessions too).
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


def pytest_collection_modifyitems(items) -> None:
    # The longest tests first (marker `longest`): with -n 2 each process starts on one of them, and the
    # short tests fill in beside them instead of queueing behind one process's long ones.
    items.sort(key=lambda item: item.get_closest_marker("longest") is None)


@pytest.fixture(autouse=True)
def restore_environ():
    """main.main() run in-process sets variables (TF_XLA_FLAGS, CUDA_VISIBLE_DEVICES) that later
    subprocesses would inherit: each test starts from the environment it was given."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
