"""The recorded-responses transport, the stand-in model, and the bundled suite gating the LLM path."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
from typer.testing import CliRunner

from agent.brains.llm import LLMBrain, LLMConfig
from agent.brains.offline import OfflineBrain
from agent.brains.recording import RecordingError, RecordingTransport, load_recordings, request_key
from cli import app
from core.settings import BUNDLED_RUNBOOKS, Settings
from eval.cases import load_case_file
from eval.harness import Evaluator
from eval.scoring import check_gates
from eval.standin import StandinModel
from tests.llm_wire import URL
from vectorstore.embeddings import MiniLMEmbedder
from vectorstore.index import RunbookIndex

RECORDINGS = Path(__file__).resolve().parents[2] / "eval" / "recordings" / "bundled.jsonl"
BUNDLED_CASES = Path(__file__).resolve().parents[2] / "eval" / "cases" / "bundled.jsonl"
FORGOT = "I forgot my password and can't sign in"


@pytest.fixture
def standin(bundled_index: RunbookIndex) -> StandinModel:
    return StandinModel(bundled_index)


def brain_over(transport: httpx.BaseTransport, index: RunbookIndex) -> LLMBrain:
    config = LLMConfig(model="gpt-4.1-mini", api_key="sk-test", max_retries=0)
    return LLMBrain(config, index, OfflineBrain(index), http_client=httpx.Client(transport=transport))


def test_record_then_replay_without_the_endpoint(
    tmp_path: Path, standin: StandinModel, bundled_index: RunbookIndex
) -> None:
    path = tmp_path / "rec.jsonl"
    recorder = RecordingTransport(path, record=True, inner=httpx.MockTransport(standin))
    live = brain_over(recorder, bundled_index).understand(FORGOT, routing_text=FORGOT)
    assert recorder.recorded == 1 and not live.degraded
    assert live.proposed_runbook == "password-reset"

    replayer = RecordingTransport(path)
    replayed = brain_over(replayer, bundled_index).understand(FORGOT, routing_text=FORGOT)
    assert replayer.hits == 1 and replayer.misses == 0
    assert replayed == live

    other = "my vpn drops every few minutes"
    missed = brain_over(replayer, bundled_index).understand(other, routing_text=other)
    assert replayer.misses == 1
    assert missed.degraded and missed.proposed_runbook is None  # a miss never invents an answer


def test_key_ignores_json_formatting_only() -> None:
    assert request_key(b'{"a": 1, "b": [1, 2]}') == request_key(b'{"b":[1,2],"a":1}')
    assert request_key(b'{"a": 1}') != request_key(b'{"a": 2}')


def test_failed_answers_are_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    down = httpx.MockTransport(lambda request: httpx.Response(503, json={"error": {"message": "overloaded"}}))
    transport = RecordingTransport(path, record=True, inner=down)
    response = transport.handle_request(httpx.Request("POST", URL, json={"model": "m", "messages": []}))
    assert response.status_code == 503
    assert transport.recorded == 0 and not path.exists()


def test_a_bad_recordings_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text('{"key": "k", "status": 200, "body": "{}"}\nnot json\n')
    with pytest.raises(RecordingError, match=r"rec\.jsonl:2"):
        load_recordings(path)


def test_standin_streams_in_the_wire_format(standin: StandinModel) -> None:
    body = {
        "model": "gpt-4.1-mini",
        "stream": True,
        "messages": [
            {"role": "system", "content": "reword"},
            {
                "role": "user",
                "content": json.dumps(
                    {"draft": "Restart the VPN client. Did that help?", "runbook_id": "vpn-connection"}
                ),
            },
        ],
    }
    status, content_type, raw = standin.answer(json.dumps(body).encode())
    assert status == 200 and content_type == "text/event-stream"
    events = [e for e in raw.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Restart the VPN client. Did that help? [vpn-connection]"
    assert chunks[-1]["usage"]["prompt_tokens"] > 0


def test_eval_flags_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["eval", "--record"])
    assert result.exit_code == 2 and "--record needs --llm-recordings" in result.output
    result = CliRunner().invoke(app, ["eval", "--brain", "gpt"])
    assert result.exit_code == 2 and "--brain must be offline or llm" in result.output
    result = CliRunner().invoke(app, ["eval", "--llm-recordings", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2 and "no recordings file" in result.output


@pytest.fixture
def no_live_endpoint() -> Iterator[respx.MockRouter]:
    # Replay must never reach an endpoint: any request that escapes the transport fails here.
    with respx.mock(assert_all_called=False) as router:
        router.route().mock(side_effect=AssertionError("the replay reached the network"))
        yield router


@pytest.mark.slow
def test_bundled_suite_gates_the_llm_path_on_recordings(
    embedder: MiniLMEmbedder, caplog: pytest.LogCaptureFixture, no_live_endpoint: respx.MockRouter
) -> None:
    case_file = load_case_file(BUNDLED_CASES)
    settings = Settings(runbooks=BUNDLED_RUNBOOKS, brain="llm", llm_recordings=RECORDINGS, llm_api_key="sk-replay")
    with caplog.at_level(logging.WARNING, logger="agent.brains.recording"):
        report = Evaluator(BUNDLED_RUNBOOKS, embedder=embedder, settings=settings).run(case_file.cases)
    assert report["brain"] == "llm"
    assert check_gates(report["summary"], case_file.gates) == []
    assert report["summary"]["tokens_per_conversation"] > 0
    # Every message was read by the (recorded) model: a miss would show as llm_unavailable.
    unavailable = [c["id"] for c in report["cases"] for d in c["decisions"] if "llm_unavailable" in d["reasons"]]
    assert unavailable == []
    # The only replies that cannot replay are those quoting a request number the directory drew at
    # random this run; they fall back to the offline wording, which carries the new number.
    misses = [r for r in caplog.records if "no recorded LLM response" in r.getMessage()]
    random_numbers = sum(1 for c in report["cases"] for reply in c["replies"] if "Request number:" in reply)
    assert len(misses) <= random_numbers
    replies = [reply for c in report["cases"] for reply in c["replies"]]
    tagged = [reply for reply in replies if reply.rstrip().endswith("]")]
    assert len(tagged) > len(replies) // 3  # the reworded (tagged) replies came from the recordings
