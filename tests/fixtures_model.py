"""The `model_server` fixture: a fresh local OpenAI-compatible server (tests/model_server.py) for each test.

Enable it for the whole suite with `pytest_plugins = ["tests.fixtures_model"]` in tests/conftest.py.
"""

from collections.abc import Iterator

import pytest

from tests.model_server import ModelServer


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    """A started server with an empty script (so it gives the default reply), stopped after the test."""
    with ModelServer() as server:
        yield server
