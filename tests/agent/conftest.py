"""Fixtures of the resolver's tests: an LLM brain over the bundled index, and its mocked endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx

from agent.brains.llm import LLMBrain, LLMConfig
from agent.brains.offline import OfflineBrain
from vectorstore.index import RunbookIndex


@pytest.fixture
def brain(bundled_index: RunbookIndex) -> LLMBrain:
    config = LLMConfig(model="gpt-4.1-mini", api_key="sk-test", max_retries=1, timeout_s=2)
    return LLMBrain(config, bundled_index, OfflineBrain(bundled_index))


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """The OpenAI-compatible endpoint, mocked with respx; each test adds the routes it answers."""
    with respx.mock(assert_all_called=False) as router:
        yield router
