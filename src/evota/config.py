"""Settings from ``EVOTA_*`` environment variables; CLI flags override them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVOTA_", extra="ignore")

    data_dir: Path = Path("./evota-data")
    host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=0, le=65535)
    ocpp_port: int = Field(9000, ge=0, le=65535)
    database_url: str | None = None
    registration: Literal["known-only", "open"] = "known-only"
    admin_token: SecretStr | None = None

    heartbeat_interval: int = Field(300, ge=10, description="seconds, returned in BootNotification")
    pending_interval: int = Field(60, ge=5, description="seconds before a Pending charger retries")
    call_timeout: float = Field(30.0, gt=0, description="seconds to wait for a CALL's answer")
    max_message_size: int = Field(256 * 1024, ge=1024)
    last_seen_flush_seconds: float = Field(5.0, gt=0)
    write_interval: float = Field(
        0.25, gt=0, le=5, description="seconds between batched writes of charger reports"
    )
    log_level: str = "info"
    log_json: bool = False

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'evota.db').resolve()}"
