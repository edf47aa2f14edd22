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


def _skip_cuda(items):
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


# ---------------------------------------------------------------- store backends (issue 30)
# The store's tests run on SQLite by default (the README's test command) and again on a
# PostgreSQL server with `pytest --store=postgresql` (.ci/run, POLLENSTUDIO_TEST_PG set by
# scripts/pg_throwaway.sh). Tests that go through the `store` fixture run on the chosen
# backend; under --store=postgresql the others (SQLite's own file format, backups, damaged
# pages) are skipped, having run in the SQLite pass.
PG_ENV = "POLLENSTUDIO_TEST_PG"


def pytest_addoption(parser):
    parser.addoption("--store", choices=("sqlite", "postgresql"), default="sqlite",
                     help="backend of the store tests (the `store` fixture); postgresql needs "
                          f"{PG_ENV}=postgresql://USER@HOST:PORT/DB (scripts/pg_throwaway.sh starts one)")


def pytest_collection_modifyitems(config, items):
    _skip_cuda(items)
    if config.getoption("--store") != "postgresql":
        return
    skip = pytest.mark.skip(reason="not a test of the `store` fixture (SQLite's file, backups, damage, or no "
                                   "database at all): runs in the SQLite pass")
    for item in items:
        if not {"store", "pg_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(skip)


@pytest.fixture
def pg_url():
    """The throwaway PostgreSQL server's URL (skips the test when none is set)."""
    url = os.environ.get(PG_ENV, "").strip()
    if not url:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL server to test against (scripts/pg_throwaway.sh)")
    return url


class StoreMaker:
    """``create(folder, name=None)`` / ``open(folder)`` on the backend under test. A server
    project is a fresh schema whose image root is ``folder``; dropped after the test."""

    def __init__(self, backend: str, url: str | None):
        self.backend, self._url, self._urls, self._n = backend, url, {}, 0

    def _key(self, folder):
        from pathlib import Path

        p = Path(folder).resolve()
        return p.parent if p.name == "project.pollen" else p

    def create(self, folder, name=None):
        from pollenstudio.project import Project

        if self.backend == "sqlite":
            return Project.create(folder, name=name)
        import uuid

        key = self._key(folder)
        if key in self._urls:
            return Project.create(self._urls[key], name=name, image_root=key)  # refused: already a project
        key.mkdir(parents=True, exist_ok=True)
        url = f"{self._url}{'&' if '?' in self._url else '?'}project=t{uuid.uuid4().hex[:16]}"
        p = Project.create(url, name=name, image_root=key)
        self._urls[key] = url
        return p

    def open(self, folder):
        from pollenstudio.project import Project

        if self.backend == "sqlite":
            return Project.open(folder)
        return Project.open(self._urls.get(self._key(folder), str(folder)), image_root=self._key(folder))

    def target(self, folder) -> str:
        """What another process passes to ``Project.open``: the folder, or the server URL."""
        return str(folder) if self.backend == "sqlite" else self._urls[self._key(folder)]

    def drop_all(self):
        if not self._urls:
            return
        import psycopg
        from pollenstudio.project.dialect import parse_server_url

        with psycopg.connect(self._url, autocommit=True) as conn:
            for url in self._urls.values():
                conn.execute(f'DROP SCHEMA IF EXISTS "{parse_server_url(url).project}" CASCADE')


@pytest.fixture
def store(request):
    """Makes projects on the backend of --store (see StoreMaker)."""
    backend = request.config.getoption("--store")
    url = None
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
    maker = StoreMaker(backend, url)
    yield maker
    maker.drop_all()
