"""Settings from ``EVOTA_*`` environment variables; CLI flags override them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from evota.audit.anomalies import Thresholds
    from evota.firmware.importer import FetchPolicy
    from evota.firmware.s3_storage import S3Config
    from evota.store.retention import Retention


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVOTA_", extra="ignore")

    data_dir: Path = Path("./evota-data")
    host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=0, le=65535)
    ocpp_port: int = Field(9000, ge=0, le=65535)
    database_url: str | None = None
    registration: Literal["known-only", "open"] = "known-only"
    # Scale-out (docs/cluster.md): several nodes on one PostgreSQL and one Redis. Unset = one
    # node owns every connection and runner (the default; no Redis needed).
    redis_url: SecretStr | None = Field(
        None, description="redis://HOST:PORT/DB of the cluster's Redis; unset = single node"
    )
    node_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="this node's name in the cluster (default: the host name)",
    )
    components: str = Field(
        "ocpp,http,download,runners",
        description="what this node runs: a comma list of ocpp, http, download, runners",
    )
    # Charger ownership (evota.cluster.presence): a node not heard of for node_ttl is dead and
    # its chargers' claims lapse; it renews its liveness every heartbeat.
    cluster_node_ttl_seconds: float = Field(
        10.0, ge=1.0, le=300.0, description="seconds after which a silent node's claims lapse"
    )
    cluster_heartbeat_seconds: float = Field(
        3.0, ge=0.1, le=60.0, description="seconds between a node's liveness renewals"
    )
    admin_token: SecretStr | None = None

    heartbeat_interval: int = Field(300, ge=10, description="seconds, returned in BootNotification")
    pending_interval: int = Field(60, ge=5, description="seconds before a Pending charger retries")
    call_timeout: float = Field(30.0, gt=0, description="seconds to wait for a CALL's answer")
    max_message_size: int = Field(256 * 1024, ge=1024)
    # Unauthenticated charger connections (evota.gateway.limits, docs/ocpp.md)
    ocpp_handshake_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="seconds from accept to a completed, authenticated upgrade (a total "
        "deadline, not an idle timeout)",
    )
    ocpp_max_preauth: int = Field(
        512, ge=1, description="connections not yet upgraded and authenticated, in total"
    )
    ocpp_max_preauth_per_address: int = Field(
        32, ge=1, description="the same per source address (IPv6: per /64); below the total"
    )
    ocpp_trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks of TLS proxies in front of the OCPP listener: "
        "from them the charger's address is taken from X-Forwarded-For, and the per-address "
        'limits do not count the proxy itself (JSON list, e.g. ["10.0.0.5"])',
    )
    # Security profiles 2 and 3: TLS and mutual TLS on the OCPP listener, and the profile a
    # trusted proxy vouches for (evota.gateway.tls, evota.pki.identity, docs/security-profiles.md)
    ocpp_tls_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="wss:// listener for security profiles 2 and 3; unset: off (0: any free "
        "port). Needs ocpp_tls_cert and ocpp_tls_key",
    )
    ocpp_tls_cert: Path | None = Field(
        None,
        description="PEM server certificate (then its intermediates) of the wss:// listener; "
        "reloaded on SIGHUP or when the file changes",
    )
    ocpp_tls_key: Path | None = Field(None, description="PEM private key of ocpp_tls_cert")
    # 2.0.1 security profile upgrades (evota.control.profile_upgrades): SetNetworkProfile's URL
    ocpp_tls_public_url: str | None = Field(
        None,
        pattern=r"^wss://",
        max_length=400,
        description="wss:// URL a 2.0.1 charger is given by a security profile upgrade "
        "(SetNetworkProfile), e.g. wss://csms.example.com/ocpp/ behind NAT or a proxy; "
        "default: wss://HOST:OCPP_TLS_PORT/ocpp/",
    )
    ocpp_charger_ca: Path | None = Field(
        None,
        description="PEM file of the CA certificates charger client certificates must chain "
        "to (profile 3); unset: no client certificates are asked for or accepted",
    )
    ocpp_crl: Path | None = Field(
        None,
        description="PEM or DER CRL(s) of those CAs: revoked client certificates are refused; "
        "reloaded like the certificate",
    )
    cpo_name: str | None = Field(
        None,
        max_length=64,
        description="the CPO name: the O every charger client certificate must carry (OCPP "
        "security profile 3); unset: O is not checked",
    )
    ocpp_plain: bool = Field(
        True,
        description="false: no plain ws:// listener (profile 1 off; needs ocpp_tls_port)",
    )
    ocpp_client_cert_header: str | None = Field(
        None,
        max_length=64,
        validate_default=True,
        description="header in which a trusted proxy (ocpp_trusted_proxies) forwards the "
        "client certificate it verified (URL-encoded PEM, e.g. X-Client-Cert); ignored from "
        "anyone else; unset: none is taken",
    )

    # The charger CA: SignCertificate -> CertificateSigned, certificate inventory, expiry and
    # renewal (evota.pki.ca, evota.control.certificates, docs/security-profiles.md)
    ca_cert: Path | None = Field(
        None,
        description="PEM certificate of your own charger CA (with ca_key); unset: evota's "
        "built-in CA in data_dir/charger-ca, made on first start",
    )
    ca_key: Path | None = Field(
        None, validate_default=True, description="unencrypted PEM private key of ca_cert"
    )
    ca_validity_days: int = Field(
        365, ge=1, le=3650, description="validity of the charger certificates the CA signs"
    )
    ca_sign_interval_minutes: float = Field(
        10,
        ge=0,
        le=10080,
        description="at most one signed certificate per charger in this many minutes (a "
        "charger with a valid key must not flood the CA); further requests are Rejected; "
        "in a cluster per charger for all nodes",
    )
    cert_expiry_alert_days: int = Field(
        30,
        ge=0,
        le=3650,
        description="alert this many days before a charger certificate or the server's TLS "
        "certificate expires (0: off)",
    )
    cert_auto_renew: bool = Field(
        True,
        description="ask a charger whose certificate evota signed to renew it once it expires "
        "within cert_expiry_alert_days (rate-limited, never during a session; false: alerts "
        "only)",
    )
    cert_renew_per_hour: int = Field(
        60, ge=1, le=100000, description="automatic renewals started per hour, fleet-wide"
    )
    cert_inventory_hours: float = Field(
        24,
        gt=0,
        le=8760,
        description="ask a booting charger for its installed certificates at most once in "
        "this many hours (never again for a 1.6 charger without the security extension)",
    )
    cert_inventory_boot_delay_seconds: float = Field(
        30,
        ge=0,
        le=3600,
        description="wait after an accepted boot before asking for the installed certificates "
        "(the charger settles first)",
    )
    # Charger password changes (issue 16 §8, evota.control.passwords)
    charger_password_grace_minutes: float = Field(
        10,
        gt=0,
        le=1440,
        description="after a charger accepts a new password, evota accepts the old one too for "
        "this many minutes; without a connection with the new one by then, the old one stays",
    )

    charger_auth_failures_per_id: int = Field(
        10, ge=1, description="failed charger authentications per identity per window"
    )
    charger_auth_failures_per_address: int = Field(
        50, ge=1, description="failed charger authentications per source address per window"
    )
    charger_auth_failure_window_seconds: float = Field(
        60.0, gt=0, le=86400, description="sliding window of the two limits above (seconds)"
    )
    last_seen_flush_seconds: float = Field(5.0, gt=0)
    write_interval: float = Field(
        0.25, gt=0, le=5, description="seconds between batched writes of charger reports"
    )
    write_backlog_max: int = Field(
        1_000_000,
        ge=1000,
        description="status history and charger event rows queued while the database is "
        "unreachable; beyond this the oldest are shed (docs/cluster.md)",
    )
    # Firmware repository and delivery
    public_url: str | None = Field(
        None, description="base URL chargers use for firmware downloads (NAT, proxies)"
    )
    download_port: int = Field(8001, ge=0, le=65535, description="firmware download listener")
    firmware_max_bytes: int = Field(512 * 1024 * 1024, ge=1024, description="upload size limit")
    download_token_ttl: int = Field(
        7 * 24 * 3600, ge=60, description="seconds a download URL stays valid (charger retries)"
    )
    download_max_concurrent: int = Field(200, ge=1)
    download_max_per_site: int = Field(20, ge=1)
    # Where images and charger files live (evota.firmware.s3_storage, docs/firmware.md)
    firmware_store: str = Field(
        "local",
        description="local (data_dir/firmware) or s3://BUCKET[/PREFIX] (an S3-compatible "
        "object store every node shares)",
    )
    s3_endpoint_url: str | None = Field(
        None, pattern=r"^https?://", description="S3 API URL (MinIO, Ceph...); unset: AWS"
    )
    s3_region: str | None = Field(None, max_length=64, description="S3 region; unset: boto3's")
    s3_access_key_id: str | None = Field(
        None, max_length=128, description="unset: AWS_ACCESS_KEY_ID, a profile or a role"
    )
    s3_secret_access_key: SecretStr | None = Field(
        None,
        validate_default=True,
        description="with s3_access_key_id; unset: AWS_SECRET_ACCESS_KEY, a profile or a role",
    )
    firmware_cache_dir: Path | None = Field(
        None,
        description="S3 store: this node's local copies of images; default data_dir/firmware-cache",
    )
    firmware_cache_max_bytes: int = Field(
        20 * 1024**3, ge=1024 * 1024, description="S3 store: the cache's size limit"
    )
    # FTP/FTPS delivery for legacy chargers (evota.firmware.ftp_delivery, docs/updates.md)
    ftp_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="FTP download listener for chargers whose vendor profile says ftp/ftps; "
        "unset: off (0: any free port)",
    )
    ftp_passive_ports: str | None = Field(
        None,
        description="passive data ports as FIRST-LAST (e.g. 60000-60099), to open in the "
        "firewall; unset: any free port",
    )
    ftp_public_host: str | None = Field(
        None,
        description="host chargers use in ftp:// URLs, and (resolved to IPv4) in PASV answers "
        "behind NAT; default: the bind address",
    )
    ftp_tls: bool = Field(
        False, description="offer explicit FTPS (AUTH TLS); needed for the ftps protocol"
    )
    ftp_tls_cert: Path | None = Field(
        None, description="PEM certificate chain of the FTPS server (with ftp_tls)"
    )
    ftp_tls_key: Path | None = Field(
        None, validate_default=True, description="PEM private key of the FTPS server"
    )
    ftp_max_connections: int = Field(512, ge=1, description="FTP control connections in total")
    ftp_max_per_address: int = Field(
        16, ge=1, description="FTP control connections per source address"
    )
    ftp_timeout: float = Field(
        60, gt=0, le=3600, description="seconds an FTP session may idle or a transfer stall"
    )
    ftp_login_failures: int = Field(
        10, ge=1, description="failed FTP logins per source address before it is refused"
    )
    ftp_login_failure_window_seconds: float = Field(
        300, gt=0, le=86400, description="window of ftp_login_failures (seconds)"
    )

    @field_validator("components")
    @classmethod
    def _components(cls, value: str, info: ValidationInfo) -> str:
        from evota.cluster.node import parse_components

        # ValueError names the unknown one
        if "runners" not in parse_components(value) and info.data.get("redis_url") is None:
            raise ValueError(
                "a single node must run the runners (jobs, campaigns, operations): leave "
                "out runners only in a cluster (EVOTA_REDIS_URL)"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_needs_postgres(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        url = info.data.get("database_url") or ""
        if value is not None and not url.startswith("postgresql"):
            raise ValueError(
                "several nodes need PostgreSQL: set EVOTA_DATABASE_URL=postgresql+asyncpg://... "
                "(a SQLite file cannot be shared by nodes)"
            )
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("firmware_store")
    @classmethod
    def _firmware_store(cls, value: str) -> str:
        if value != "local":
            from evota.firmware.s3_storage import parse_store_url

            parse_store_url(value)  # ValueError in one line
        return value

    @field_validator("s3_secret_access_key")
    @classmethod
    def _s3_key_pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (value is None) != (info.data.get("s3_access_key_id") is None):
            raise ValueError("set both s3_access_key_id and s3_secret_access_key, or neither")
        return value

    def s3_config(self) -> S3Config | None:
        """How to reach the S3 store (evota.firmware.s3_storage); None for the local one."""
        if self.firmware_store == "local":
            return None
        from evota.firmware.s3_storage import S3Config, parse_store_url

        location = parse_store_url(self.firmware_store)
        if location is None:
            return None
        secret = self.s3_secret_access_key
        return S3Config(
            location,
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            access_key_id=self.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
        )

    @field_validator("ftp_passive_ports")
    @classmethod
    def _ftp_passive_ports(cls, value: str | None) -> str | None:
        if value is not None:
            passive_range(value)  # ValueError says what is wrong
        return value

    @field_validator("ftp_tls_key")
    @classmethod
    def _ftp_tls_files(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if info.data.get("ftp_tls") and (value is None or info.data.get("ftp_tls_cert") is None):
            raise ValueError("ftp_tls needs ftp_tls_cert and ftp_tls_key")
        return value

    # Update job phase timeouts (seconds)
    job_queue_timeout: float = Field(24 * 3600, gt=0, description="waiting for the charger")
    job_download_start_timeout: float = Field(900, gt=0, description="accepted, no download")
    job_download_timeout: float = Field(1800, gt=0, description="download stalled")
    job_install_timeout: float = Field(1800, gt=0, description="install too long")
    job_reboot_timeout: float = Field(900, gt=0, description="reboot never came back")
    job_verify_seconds: float = Field(
        30, ge=0, description="healthy time after booting the target before success"
    )
    campaign_tick_seconds: float = Field(
        1.0, gt=0, le=60, description="seconds between campaign engine evaluations"
    )
    campaign_defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON object of campaign policy fields (docs/campaigns.md) that a campaign "
        "created without them takes, in the API, CLI and console wizard alike; "
        '`evota demo` sets `{"soak_seconds": 20, ...}`',
    )
    kpi_rollup_minutes: float = Field(
        15,
        ge=0,
        le=1440,
        description="minutes between KPI rollups into charger_days and the firmware regression "
        "check (docs/kpis.md); 0: only on demand (`POST /api/v1/kpis/rollup`)",
    )
    # Data retention (evota.store.retention, docs/cluster.md "Data retention"); 0: forever
    retention_status_days: float = Field(
        90, ge=0, description="days connector status changes are kept (0 or at least 2)"
    )
    retention_events_days: float = Field(
        180, ge=0, description="days charger events (boots, firmware status, ...) are kept"
    )
    retention_job_events_days: float = Field(
        365, ge=0, description="days a finished job's history is kept after it finished"
    )
    retention_sessions_days: float = Field(
        0, ge=0, description="days a stopped charging session is kept (0: forever)"
    )
    retention_audit_days: float = Field(
        0,
        ge=0,
        description="days audit entries stay in the database; older ones are archived to "
        "audit_archive_dir and pruned behind a signed checkpoint (0: never)",
    )
    retention_interval_minutes: float = Field(
        60, ge=0, description="minutes between retention runs (the leader's); 0: never"
    )
    retention_batch: int = Field(
        5000, ge=100, le=100_000, description="rows one retention statement deletes at most"
    )
    audit_archive_dir: Path | None = Field(
        None, description="where audit archives go (default: DATA_DIR/audit-archive)"
    )

    @field_validator("retention_status_days", "retention_events_days")
    @classmethod
    def _history_outlives_the_rollup(cls, value: float) -> float:
        if 0 < value < 2:
            raise ValueError("must be 0 (keep forever) or at least 2 days: the KPI rollup reads it")
        return value

    def retention(self) -> Retention:
        """The retention periods (evota.store.retention) from these settings."""
        from evota.store.retention import Retention

        return Retention(
            status_days=self.retention_status_days,
            events_days=self.retention_events_days,
            job_events_days=self.retention_job_events_days,
            sessions_days=self.retention_sessions_days,
            audit_days=self.retention_audit_days,
        )

    # Operators: sessions, MFA, login throttling (evota.operators)
    session_idle_minutes: float = Field(30, gt=0, description="idle time before a login ends")
    session_max_hours: float = Field(12, gt=0, description="a login's absolute lifetime")
    mfa_required_roles: list[str] = Field(
        default_factory=lambda: ["operator", "firmware_manager", "security_admin"],
        description="roles that must give a second factor before changing anything",
    )
    login_max_failures: int = Field(5, ge=1, description="failed logins before a lockout")
    login_lockout_minutes: float = Field(15, gt=0)
    login_rate_per_minute: int = Field(
        20, ge=1, description="login attempts per client address per minute"
    )
    # Approvals (four eyes)
    approval_actions: list[str] = Field(
        default_factory=lambda: [
            "campaign.start",
            "firmware.revoke",
            "operation.start",
            "charger.disable",
            "charger.credentials",
            "user.grant",
            "user.credentials",
            "playbook.step",
            "certificate.rotate-root",
        ],
        description="actions that wait for a second operator's approval",
    )
    approval_charger_threshold: int = Field(
        10, ge=1, description="an operation on more chargers than this needs approval"
    )
    approval_ttl_hours: float = Field(24, gt=0, description="a request expires after this")
    # Uploads from chargers (diagnostics, logs)
    upload_max_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    api_max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="largest request body of an API call other than file uploads (413 beyond)",
    )
    # Remote commands: where chargers upload diagnostics and logs (evota.control.uploads)
    upload_public_url: str | None = Field(
        None, description="base URL chargers use to reach the HTTP API for uploads (NAT, proxies)"
    )
    upload_token_ttl: int = Field(
        24 * 3600, ge=60, description="seconds an upload URL stays valid (charger retries)"
    )
    # Anomaly alerts (evota.audit.anomalies, docs/alerts.md); a count of 0 turns its rule off
    alert_resets_per_charger: int = Field(
        3, ge=0, description="accepted resets of one charger in the window before an alert"
    )
    alert_resets_window_hours: float = Field(24, gt=0)
    alert_commands_per_operator: int = Field(
        100, ge=0, description="commands by one operator in the window before an alert"
    )
    alert_commands_window_minutes: float = Field(60, gt=0)
    alert_restricted_roles: list[str] = Field(
        default_factory=lambda: ["operator"],
        description="roles whose commands must fall within alert_allowed_hours (empty: off)",
    )
    alert_allowed_hours: str = Field(
        "07:00-20:00", description="HH:MM-HH:MM in alert_timezone; may cross midnight"
    )
    alert_timezone: str = "UTC"
    alert_failed_logins: int = Field(
        5, ge=0, description="failed logins per username or client address before an alert"
    )
    alert_failed_logins_window_minutes: float = Field(15, gt=0)
    # Playbook engine (evota.playbooks.runner, docs/playbooks.md "How a run works")
    playbooks_enabled: bool = Field(
        True,
        description="false: the global kill switch is engaged (stored) whenever the runner "
        "starts (no playbook run starts or sends); the API can flip it, and the flip is stored",
    )
    playbook_tick_seconds: float = Field(
        5.0, gt=0, le=60, description="seconds between checks of fault durations and wait deadlines"
    )
    playbook_webhook_timeout: float = Field(
        5.0, gt=0, le=60, description="seconds an escalation webhook POST may take"
    )

    @field_validator("ocpp_max_preauth_per_address")
    @classmethod
    def _preauth_per_address(cls, value: int, info: ValidationInfo) -> int:
        total = info.data.get("ocpp_max_preauth")
        if total is not None and value > total:
            raise ValueError(f"must not exceed ocpp_max_preauth ({total})")
        return value

    @field_validator("ocpp_client_cert_header")
    @classmethod
    def _tls_settings(cls, value: str | None, info: ValidationInfo) -> str | None:
        d = info.data
        if d.get("ocpp_tls_port") is not None and (
            d.get("ocpp_tls_cert") is None or d.get("ocpp_tls_key") is None
        ):
            raise ValueError("ocpp_tls_port needs ocpp_tls_cert and ocpp_tls_key")
        if d.get("ocpp_plain") is False and d.get("ocpp_tls_port") is None:
            raise ValueError("ocpp_plain=false needs ocpp_tls_port (no listener left)")
        if d.get("ocpp_crl") is not None and d.get("ocpp_charger_ca") is None:
            raise ValueError("ocpp_crl needs ocpp_charger_ca")
        if value is not None and (not value or not value.replace("-", "").isalnum()):
            raise ValueError("must be an HTTP header name (letters, digits, '-')")
        return value

    @field_validator("ca_key")
    @classmethod
    def _ca_files(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if (value is None) != (info.data.get("ca_cert") is None):
            raise ValueError("ca_cert and ca_key go together: set both or neither")
        return value

    @field_validator("ocpp_trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        from evota.gateway.limits import parse_networks

        parse_networks(value)  # ValueError names the entry that is not an address or network
        return value

    @field_validator("campaign_defaults")
    @classmethod
    def _campaign_defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        from evota.rollout.policy import PolicyError, policy_from_dict

        try:
            policy_from_dict(value, path="")
        except PolicyError as exc:
            raise ValueError(f"policy field {exc.field.lstrip('.')}: {exc.message}") from None
        return value

    @field_validator("alert_allowed_hours")
    @classmethod
    def _alert_hours(cls, value: str) -> str:
        from evota.audit.anomalies import Hours

        return str(Hours.parse(value))

    @field_validator("alert_timezone")
    @classmethod
    def _alert_timezone(cls, value: str) -> str:
        from evota.audit.anomalies import zone

        zone(value)
        return value

    @field_validator("alert_restricted_roles")
    @classmethod
    def _alert_roles(cls, value: list[str]) -> list[str]:
        from evota.operators.permissions import ROLES

        unknown = sorted(set(value) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(unknown)}; roles: {', '.join(ROLES)}")
        return value

    # Bulk operations and configuration profiles (evota.control.operations, .configuration)
    operation_min_sample: int = Field(
        5, ge=1, description="answers a stage needs before its failure rate can stop it"
    )
    operation_max_in_flight: int = Field(
        20, ge=1, le=500, description="commands of one operation awaiting an answer at once"
    )
    operation_resume_delay_seconds: float = Field(
        30,
        ge=0,
        description="after a restart, time for chargers to reconnect before "
        "resumed operations send again",
    )
    config_poll_hours: float = Field(
        24, gt=0, description="re-read a charger's configuration when older than this"
    )
    config_boot_delay_seconds: float = Field(
        1.0,
        ge=0,
        description="wait after an accepted boot before reading the configuration (longer "
        "than write_interval, so the boot's vendor and model are stored for profile targets)",
    )
    config_fetch_concurrency: int = Field(10, ge=1, le=200)
    # Playbook definitions (evota.playbooks.spec, docs/playbooks.md)
    playbook_webhook_allow_http: bool = Field(
        False, description="labs only: let a playbook's escalation webhook be plain http"
    )
    playbook_webhook_allow_networks: list[str] = Field(
        default_factory=list,
        description="networks (CIDRs) escalation webhooks may reach although they are private, "
        "loopback or link-local (an on-premises ticketing system)",
    )
    playbook_webhook_ca_file: Path | None = Field(
        None, description="PEM CA bundle trusted for webhook servers besides the public CAs"
    )
    # Who may charge (evota.fleet.tokens, docs/id-tokens.md)
    authorize_all: bool = Field(
        False,
        description="labs only: accept every id token (Authorize, transactions) without the "
        "token store; logged as a warning at start",
    )
    authorization_webhook_url: str | None = Field(
        None, description="ask this URL about id tokens the token store does not know"
    )
    authorization_webhook_timeout: float = Field(
        2.0, gt=0, le=30, description="seconds to wait for the webhook before answering Invalid"
    )
    # Firmware import from a vendor's URL and release feeds (evota.firmware.importer)
    firmware_import_max_bytes: int | None = Field(
        None, ge=1024, description="largest image an import fetches; default: firmware_max_bytes"
    )
    firmware_import_timeout: float = Field(
        30, gt=0, le=600, description="seconds an import waits to connect and for each read"
    )
    firmware_import_deadline: float = Field(
        600, gt=0, description="seconds a whole import fetch may take, redirects included"
    )
    firmware_import_allow_http: bool = Field(
        False, description="labs only: also import over plain http (no transport security)"
    )
    firmware_import_allow_networks: list[str] = Field(
        default_factory=list,
        description="networks (CIDRs) imports may fetch from although they are private, "
        "loopback or link-local (labs, tests)",
    )
    firmware_import_ca_file: Path | None = Field(
        None, description="PEM CA bundle trusted for import servers besides the public CAs"
    )
    firmware_import_max_concurrent: int = Field(
        4,
        ge=1,
        le=100,
        description="image imports (API and feeds) running at once, in a cluster for all nodes "
        "together; more: 429 (cluster with Redis unreachable: 503)",
    )
    firmware_feed_interval_hours: float = Field(
        0, ge=0, description="check the vendors' release feeds this often; 0: only on request"
    )
    firmware_feed_max_new: int = Field(
        5, ge=1, le=100, description="new versions one feed check imports at most (as drafts)"
    )
    firmware_feed_max_bytes: int = Field(
        1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="largest release feed document"
    )

    @field_validator("firmware_import_allow_networks", "playbook_webhook_allow_networks")
    @classmethod
    def _import_networks(cls, value: list[str]) -> list[str]:
        from evota.firmware.import_policy import parse_networks

        parse_networks(value)  # ValueError names the entry that is not a network
        return value

    def firmware_fetch_policy(self) -> FetchPolicy:
        """What an import fetch obeys (evota.firmware.importer), from these settings."""
        from evota.firmware.import_policy import parse_networks
        from evota.firmware.importer import FetchPolicy

        return FetchPolicy(
            max_bytes=self.firmware_import_max_bytes or self.firmware_max_bytes,
            timeout=self.firmware_import_timeout,
            deadline=self.firmware_import_deadline,
            allow_http=self.firmware_import_allow_http,
            allow_networks=parse_networks(self.firmware_import_allow_networks),
            ca_file=self.firmware_import_ca_file,
            max_concurrent=self.firmware_import_max_concurrent,
        )

    def playbook_webhook_policy(self) -> FetchPolicy:
        """Where an escalation webhook may go (the import's address rules, its own networks)."""
        from evota.firmware.import_policy import parse_networks
        from evota.firmware.importer import FetchPolicy

        return FetchPolicy(
            max_bytes=0,
            timeout=self.playbook_webhook_timeout,
            allow_http=self.playbook_webhook_allow_http,
            allow_networks=parse_networks(self.playbook_webhook_allow_networks),
            ca_file=self.playbook_webhook_ca_file,
        )

    log_level: str = "info"
    log_json: bool = False

    def alert_thresholds(self) -> Thresholds:
        """The anomaly rules' thresholds (evota.audit.anomalies) from these settings."""
        from datetime import timedelta

        from evota.audit.anomalies import Hours, Thresholds

        return Thresholds(
            resets_per_charger=self.alert_resets_per_charger,
            resets_window=timedelta(hours=self.alert_resets_window_hours),
            commands_per_operator=self.alert_commands_per_operator,
            commands_window=timedelta(minutes=self.alert_commands_window_minutes),
            restricted_roles=frozenset(self.alert_restricted_roles),
            allowed_hours=Hours.parse(self.alert_allowed_hours),
            timezone=self.alert_timezone,
            failed_logins=self.alert_failed_logins,
            failed_logins_window=timedelta(minutes=self.alert_failed_logins_window_minutes),
        )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'evota.db').resolve()}"

    def ftp_host(self) -> str:
        """The host in ftp:// URLs: EVOTA_FTP_PUBLIC_HOST, else the bind address."""
        if self.ftp_public_host:
            return self.ftp_public_host
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    def ocpp_tls_url(self, tls_port: int) -> str:
        """The wss:// URL 2.0.1 chargers are given (they append their identity)."""
        if self.ocpp_tls_public_url:
            return self.ocpp_tls_public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"wss://{host}:{tls_port}/ocpp/"

    def download_base_url(self, download_port: int) -> str:
        """Where chargers fetch firmware: EVOTA_PUBLIC_URL, else this host's listener."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{download_port}"


def passive_range(text: str) -> range:
    """``FIRST-LAST`` (inclusive) as a range of unprivileged ports, at most 10000 of them."""
    first, sep, last = text.partition("-")
    if not (sep and first.strip().isdigit() and last.strip().isdigit()):
        raise ValueError("must be FIRST-LAST, e.g. 60000-60099")
    lo, hi = int(first), int(last)
    if not 1024 <= lo <= hi <= 65535 or hi - lo >= 10000:
        raise ValueError("must be ports 1024..65535, FIRST <= LAST, at most 10000 of them")
    return range(lo, hi + 1)
