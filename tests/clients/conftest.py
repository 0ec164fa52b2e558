"""Fixtures for the real-client tests: the demo directory (tests/api) served on 127.0.0.1."""

from __future__ import annotations

from tests.api.conftest import demo as demo  # the demo directory, on each backend
