"""Settings, read from the environment (prefix ``TIERONE_``) and ``.env`` in one place."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

BUNDLED_RUNBOOKS = Path(__file__).resolve().parent.parent / "runbooks"


def own_setting(name: str) -> bool:
    """Whether TIERONE_NAME is one of Tierone's own settings (its keys among them), not a pack's variable."""
    return name.upper().startswith("TIERONE_") and name[len("TIERONE_") :].lower() in Settings.model_fields


def _tierone_environment() -> dict[str, SecretStr]:
    # Tierone's own settings (the vault key, the LLM key...) are left out: a pack's tool never gets them.
    return {
        name: SecretStr(value)
        for name, value in os.environ.items()
        if name.startswith("TIERONE_") and not own_setting(name)
    }


class Settings(BaseSettings):
    """Everything Tierone reads from its environment; nothing else reads it."""

    # populate_by_name: Settings(llm_api_key=...) works as well as the aliased environment names.
    model_config = SettingsConfigDict(env_prefix="TIERONE_", env_file=".env", extra="ignore", populate_by_name=True)

    brain: Literal["offline", "llm"] = "offline"
    llm_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("TIERONE_LLM_BASE_URL", "OPENAI_BASE_URL")
    )
    llm_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("TIERONE_LLM_API_KEY", "OPENAI_API_KEY")
    )
    llm_model: str = "gpt-4.1-mini"
    llm_timeout_s: float = 20.0
    llm_max_retries: int = 2
    llm_temperature: float = 0.0
    # Prices for cost estimates in eval reports and packets, in currency units per million tokens.
    llm_price_input_per_mtok: float = 0.40
    llm_price_output_per_mtok: float = 1.60
    # Token budgets of the LLM brain: one call's prompt, and all calls of one conversation; past
    # the conversation's budget the offline brain reads and words the rest of it.
    llm_max_prompt_tokens: int = 6000
    llm_max_conversation_tokens: int = 40000
    # Ask the model for the outcome of an answer to a branching step that the embeddings could not
    # place (the policy still judges it). Off until the bundled LLM recordings include those calls.
    llm_propose_outcomes: bool = False
    # Replay chat-completions responses from this JSON Lines file instead of calling the endpoint
    # (`tierone eval --llm-recordings`); with llm_record, call the endpoint and store them there.
    llm_recordings: Path | None = None
    llm_record: bool = False
    data_dir: Path = Path("data")
    # postgresql://user:password@host:port/db puts every store and the conversations' checkpoints in
    # that PostgreSQL database (core/db.py); unset: SQLite files in data_dir.
    database_url: SecretStr | None = None
    runbooks: Path = BUNDLED_RUNBOOKS
    # A Chroma server for the routing index, http://host:port (shared by replicas); unset: DATA_DIR/chroma.
    chroma_url: str | None = None
    # Longest customer message accepted, in characters.
    max_message_chars: int = 8000
    # A real identity provider / ITSM REST API (tools/http_backend.py); unset: the embedded directory.
    directory_url: str | None = None
    directory_token: str | None = None
    # An Atlassian Statuspage v2 page; unset: the embedded status page.
    status_url: str | None = None
    # A helpdesk webhook that receives every new handoff packet (app/notify.py); unset: none sent.
    handoff_webhook_url: str | None = None
    handoff_webhook_secret: str | None = None
    handoff_webhook_timeout_s: float = 10.0
    # Backoff between delivery attempts: doubling from the base, never longer than the max.
    handoff_retry_base_s: float = 2.0
    handoff_retry_max_s: float = 300.0
    # Outbound mail (one-time codes, replies to email conversations); unset host: the file outbox.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_timeout_s: float = 10.0
    mail_from: str = "Tierone Support <support@tierone.local>"
    # How long a process holds a mail reply it is sending; on PostgreSQL another replica sends a reply
    # whose lease ran out (its sender died), looking every half lease.
    mail_send_lease_s: float = 300.0
    # Shared secret of the inbound-mail webhook (POST /inbound/email); unset: the webhook refuses mail.
    inbound_secret: str | None = None
    # Largest inbound-mail post accepted, in bytes (attachments included; only the text is used).
    inbound_max_bytes: int = 2_000_000
    # The HTTP service (server.py). Browser origins allowed to call the API from other sites (CORS),
    # as a JSON list or comma-separated; empty: only pages served by Tierone itself.
    cors_origins: Annotated[list[str], NoDecode] = []
    # Token buckets on message endpoints, per conversation and per client IP: the sustained rate
    # per minute and the burst; a rate of 0 turns that limit off. Over it: 429 with Retry-After.
    rate_conversation_per_minute: float = 30.0
    rate_conversation_burst: int = 10
    rate_ip_per_minute: float = 600.0
    rate_ip_burst: int = 200
    # Largest request body accepted outside the inbound-mail webhook, in bytes (413 beyond it).
    max_body_bytes: int = 65_536
    # A ticket is flagged at risk this many minutes before its first response is due.
    sla_at_risk_minutes: float = 15.0
    # An SSE stream sends a comment this often when nothing happens, so proxies keep it open.
    sse_ping_seconds: float = 15.0
    # Server logs: "json" (one object per line, no message text) or "text"; and the level.
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    # The vault (core/vault.py): Fernet key(s), comma-separated to rotate (the first encrypts);
    # unset: a development key is made in DATA_DIR/vault.key, with a warning. Values are purged
    # after the retention limit.
    vault_key: SecretStr | None = None
    vault_retention_hours: float = 24.0
    # Tool abuse limits (tools/actions.py): how long a verification lasts; one-time codes per
    # account (a pause between two, a cap per hour); account changes (resets, unlocks) per account per day.
    verification_ttl_minutes: float = 30.0
    code_cooldown_seconds: float = 60.0
    codes_per_account_per_hour: int = 5
    account_actions_per_day: int = 3
    # What a pack's tools.yaml refers to as ${TIERONE_...} (its API's address, its token): every
    # TIERONE_ variable of the environment that is not one of the settings above, by its full name.
    # The pack itself never holds them.
    tool_values: dict[str, SecretStr] = Field(default_factory=_tierone_environment, exclude=True, repr=False)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip().rstrip("/") for part in text.split(",") if part.strip()]
        return value

    @field_validator("chroma_url")
    @classmethod
    def _check_chroma_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or port == -1
            or parts.username is not None
            or parts.path.strip("/")
            or parts.query
        ):
            raise ValueError("TIERONE_CHROMA_URL must be a Chroma server's http://host:port, without user or path")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"{parts.scheme}://{host}:{port or (443 if parts.scheme == 'https' else 8000)}"

    @property
    def conversations_db(self) -> Path:
        """SQLite file holding LangGraph checkpoints (conversation state)."""
        return self.data_dir / "conversations.sqlite"

    @property
    def desk_db(self) -> Path:
        """SQLite file holding the directory, audit log, tool runs and handoff queue."""
        return self.data_dir / "tierone.sqlite"

    @property
    def chroma_dir(self) -> Path:
        """Folder of the persistent Chroma index."""
        return self.data_dir / "chroma"

    @property
    def vault_db(self) -> Path:
        """SQLite file holding the vault's encrypted values."""
        return self.data_dir / "vault.sqlite"

    @property
    def outbox_dir(self) -> Path:
        """Folder where the embedded backend delivers mail (one-time codes, links)."""
        return self.data_dir / "outbox"
