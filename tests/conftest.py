import os

# Qt must never need a display in tests; set before anything imports Qt.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Detection in the CLI and the app defaults to "auto" (the fastest installed CPU runtime);
# tests run PyTorch unless they ask for a runtime (tests/unit/test_backends.py), so the suite
# does not export ONNX models wherever the cpu-fast extra happens to be installed.
os.environ.setdefault("POLLENSTUDIO_BACKEND", "torch")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI runs the property tests on a fixed set of examples (HYPOTHESIS_PROFILE=ci, set by .ci/run),
# so a merge is never failed by an example that a random run happened to draw; locally they
# explore new random examples each run, which is how they find bugs.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Run every test on one intra-op torch thread.

    The tests use tiny models, which are overhead-bound; on a 2-core machine two threads
    spin-wait for each other (measured 3-10x slower steps under load by
    bench/throughput.py --threads and bench/latency.py), and one thread makes results
    reproducible run to run.
    """
    try:
        import torch
    except ImportError:  # a Qt-only environment still runs the GUI tests
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
