"""The CLI against a real engine: the end-to-end fixtures (a broker, a worker, a
private store per test), shared with tests/e2e."""

from tests.e2e.conftest import default_network, engine, up  # noqa: F401
