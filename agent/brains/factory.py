"""Build the brain that settings choose: the offline brain, or the LLM brain over it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.brains.base import Brain
from agent.brains.llm import LLMBrain, LLMConfig
from agent.brains.offline import OfflineBrain
from core.settings import Settings
from vectorstore.index import RunbookIndex

if TYPE_CHECKING:
    import httpx


def llm_config(settings: Settings) -> LLMConfig:
    """The LLM brain's configuration from settings (model, endpoint, key, bounds, prices)."""
    return LLMConfig(
        model=settings.llm_model,
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key,
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        temperature=settings.llm_temperature,
        max_prompt_tokens=settings.llm_max_prompt_tokens,
        max_conversation_tokens=settings.llm_max_conversation_tokens,
        price_input_per_mtok=settings.llm_price_input_per_mtok,
        price_output_per_mtok=settings.llm_price_output_per_mtok,
        propose_outcomes=settings.llm_propose_outcomes,
    )


def make_brain(settings: Settings, index: RunbookIndex, *, http_client: httpx.Client | None = None) -> Brain:
    """The brain ``settings.brain`` names.

    Args:
        settings: ``brain`` picks offline or llm; the ``llm_*`` settings configure the LLM brain,
            and ``llm_recordings`` replays (or, with ``llm_record``, records) its HTTP exchanges.
        index: The routing index both brains use.
        http_client: The HTTP client of the LLM brain (tests and benchmarks pass their own).

    Returns:
        The offline brain, or the LLM brain with the offline brain as its fallback.
    """
    offline = OfflineBrain(index)
    if settings.brain == "offline":
        return offline
    if http_client is None and settings.llm_recordings is not None:
        from agent.brains.recording import recording_client

        http_client = recording_client(
            settings.llm_recordings, record=settings.llm_record, timeout=settings.llm_timeout_s
        )
    return LLMBrain(llm_config(settings), index, offline, http_client=http_client)
