"""Wires evota together in one process: database, fleet service, OCPP gateway, HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import structlog
import uvicorn
from sqlalchemy import insert, make_url, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit import anomalies
from evota.audit.alerts import AlertMonitor
from evota.audit.archive import ARCHIVE_DIR
from evota.audit.log import AuditLog
from evota.clock import Clock, SystemClock
from evota.cluster import envelope
from evota.cluster import redis as cluster_redis
from evota.cluster.envelope import Seal
from evota.cluster.events import EventRelay
from evota.cluster.fence import fenced
from evota.cluster.leader import (
    Follower,
    LeaderCalls,
    Leadership,
    NoLeader,
    PgLeader,
    SoleLeader,
)
from evota.cluster.limits import SharedLimits
from evota.cluster.live import LiveBus
from evota.cluster.node import Node, parse_components, single_node_lock
from evota.cluster.presence import ChargerPresence, Presence, connected_anywhere
from evota.cluster.pruner import Pruner
from evota.cluster.resets import SharedResets
from evota.cluster.rotation import RotationSpread
from evota.cluster.routing import ClusterSend
from evota.config import Settings, passive_range
from evota.control import uploads as charger_uploads
from evota.control.certificates import CertificateService
from evota.control.configuration import ConfigurationService
from evota.control.dispatch import CommandPath, send_command
from evota.control.local_lists import LocalListSync
from evota.control.operations import OperationRunner
from evota.control.passwords import PasswordChanges
from evota.control.profile_upgrades import STEP as profile_upgrade_step
from evota.control.profile_upgrades import ProfileUpgrades
from evota.control.rotation import RootRotations
from evota.evidence import kpi_service
from evota.evidence.rollup import Rollup
from evota.files import load_key, private_dir, private_sqlite
from evota.firmware import state_changes as firmware_changes
from evota.firmware import tokens
from evota.firmware.delivery import DeliveryServer, ServedImage
from evota.firmware.feeds import FeedWatcher
from evota.firmware.ftp_delivery import (
    FtpDelivery,
    FtpEndpoint,
    TlsFiles,
    effective_protocol,
    location,
    resolve_ipv4,
)
from evota.firmware.lifecycle import FirmwareState
from evota.firmware.storage import FirmwareStore, LocalFirmwareStore
from evota.fleet import changes as charger_changes
from evota.fleet.charger import ChargerState
from evota.fleet.events import Registration
from evota.fleet.service import FleetService
from evota.fleet.vendor_store import VendorStore
from evota.gateway import tls as ocpp_tls
from evota.gateway.limits import AuthFailures, Exhausted, parse_networks
from evota.gateway.server import Gateway
from evota.operators import four_eyes, user_approvals
from evota.operators.approvals import Approvals
from evota.operators.credentials import token_hash
from evota.periodic import Periodic, raise_if_cancelled
from evota.pki import ca as ca_files
from evota.pki.ca import BuiltinCA, CAError, ChargerCA
from evota.playbooks.runner import PlaybookRunner
from evota.rollout import approvals as campaign_approvals
from evota.rollout.campaigns import CampaignRunner
from evota.rollout.charger_facts import CHARGER_FACTS
from evota.rollout.runner import JobRunner, job_timeouts, record_bytes_served
from evota.store import db
from evota.store.models import ApiToken, Charger, Firmware

if TYPE_CHECKING:
    from evota.firmware.s3_storage import FirmwareCache

log = structlog.get_logger("evota")

BOOTSTRAP_TOKEN_NAME = "bootstrap-admin"
REVOKED_TOPIC = "firmware:revoked"  # live-bus notice: reload the revoked images
REVOKED_RELOAD = 30.0  # seconds: cluster nodes reload them at least this often


BYTES_FLUSH_SECONDS = 2.0  # cluster: how often a node records its downloads' bytes
CONNECTED_CHECK_SECONDS = 60.0  # cluster: how often a node re-stores its chargers' flag


def _started(start: Callable[..., None], *args: Any) -> Callable[[], Awaitable[None]]:
    """A runner whose start is synchronous, as a leadership hook."""

    async def hook() -> None:
        start(*args)

    return hook


async def _nothing() -> None:
    """The stop of a runner that only registers handlers."""


@dataclass
class Runtime:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    engine: AsyncEngine = field(init=False)
    # the runners' writes: the engine, fenced by the leader's term in cluster mode
    runner_engine: AsyncEngine = field(init=False)
    audit: AuditLog = field(init=False)
    approvals: Approvals = field(init=False)
    command_path: CommandPath = field(init=False)
    uploads: charger_uploads.ChargerUploads = field(init=False)
    alerts: AlertMonitor = field(init=False)
    operations: OperationRunner = field(init=False)
    configuration: ConfigurationService = field(init=False)
    local_lists: LocalListSync = field(init=False)
    fleet: FleetService = field(init=False)
    charger_ca: ChargerCA = field(init=False)  # signs chargers' CSRs (evota.pki.ca)
    certificates: CertificateService = field(init=False)  # SignCertificate, inventory, expiry
    rotations: RootRotations = field(init=False)  # CSMS root rotation (evota.control.rotation)
    passwords: PasswordChanges = field(init=False)  # charger password changes, no lock-outs
    profile_upgrades: ProfileUpgrades = field(init=False)  # security profile upgrades
    vendor_profiles: VendorStore = field(init=False)  # vendor and model profiles, cached
    gateway: Gateway = field(init=False)
    firmware_store: FirmwareStore = field(init=False)  # local, or S3 (evota.firmware.s3_storage)
    firmware_cache: FirmwareCache | None = None  # the S3 store's local copies, served by sendfile
    firmware_feeds: FeedWatcher = field(init=False)  # vendors' release feeds (drafts)
    delivery: DeliveryServer = field(init=False)
    jobs: JobRunner = field(init=False)
    campaigns: CampaignRunner = field(init=False)
    kpi_rollup: Rollup = field(init=False)  # charger_days and the regression check
    pruner: Pruner = field(init=False)  # data retention (evota.store.retention)
    playbooks: PlaybookRunner = field(init=False)  # self-healing playbooks (evota.playbooks)
    download_port: int = 0
    ftp: FtpDelivery | None = None  # FTP/FTPS delivery, when EVOTA_FTP_PORT is set
    ftp_endpoint: FtpEndpoint | None = None
    _revoked_sha256: frozenset[str] = frozenset()
    _revoked_watch: asyncio.Task[None] | None = None  # cluster: other nodes' revocations
    http_port: int = 0
    ocpp_port: int = 0
    ocpp_tls_port: int = 0  # the wss:// listener's port, when EVOTA_OCPP_TLS_PORT is set
    generated_admin_token: str | None = None
    _uvicorn: uvicorn.Server | None = None
    _http_task: asyncio.Task[Any] | None = None
    node: Node = field(init=False)  # this process in the cluster (evota.cluster.node)
    seal: Seal | None = None  # cluster mode: the cluster key (evota.cluster.envelope)
    _node_lock: IO[bytes] | None = None  # SQLite: one node per database file
    _stopping: bool = False  # stop() has begun
    _bytes_flush: Periodic | None = None  # cluster: this node's download bytes, recorded
    _connected_check: Periodic | None = None  # cluster: stored `connected` follows claims
    _bytes_pending: dict[str, int] = field(default_factory=dict)  # not recorded yet
    # Cluster mode: login, charger-key and download limits in Redis (evota.cluster.limits)
    shared_limits: SharedLimits | None = None
    # Cluster mode: charger events to the leader's services, live updates from every node
    events: EventRelay | None = None  # evota.cluster.events
    live: LiveBus | None = None  # evota.cluster.live
    # Cluster mode: who holds which charger (evota.cluster.presence), commands routed to it
    presence: ChargerPresence | None = None
    # Cluster mode: a scheduled Reset completed on whichever node its charger boots onto
    resets: SharedResets | None = None  # evota.cluster.resets
    # Cluster mode: the root rotation's switch on every node's listener (evota.cluster.rotation)
    rotation_spread: RotationSpread | None = None
    send: Any = field(init=False)  # Gateway.send, or ClusterSend in cluster mode
    components: frozenset[str] = field(init=False)  # EVOTA_COMPONENTS
    # who runs the runners: this process alone, or the cluster's elected leader
    leadership: Leadership = field(init=False)
    leader_calls: LeaderCalls = field(init=False)  # API calls into the runners

    async def start(self, serve_http: bool = True) -> None:
        s = self.settings
        private_dir(s.data_dir)  # keys, database and uploads: 0700 / 0600 (evota.files)
        private_sqlite(s.resolved_database_url())
        self.node = Node.start(s.node_id)
        if s.redis_url is not None:  # messages between nodes carry the cluster key's seal
            self.seal = Seal(load_key(s.data_dir / envelope.KEY_FILE))
        if s.redis_url is not None:
            self.shared_limits = self._shared_limits(s.redis_url.get_secret_value())
        self.components = parse_components(s.components)
        url = make_url(s.resolved_database_url())
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            self._node_lock = single_node_lock(Path(url.database))
        self.engine = db.create_engine(s.resolved_database_url())
        await db.migrate(self.engine)
        self.audit, key_created = AuditLog.for_data_dir(
            self.engine, self.clock, s.data_dir, create_key=True
        )
        await self.audit.start(key_created)
        self.leadership = self._leadership()
        self.runner_engine = self._runner_engine()
        self.leader_calls = self._leader_calls()
        self.alerts = AlertMonitor(
            self.engine,
            self.clock,
            self.audit,
            s.alert_thresholds(),
            rules_engine=self.runner_engine,
        )
        await self.leadership.add(self.alerts.start, self._alerts_deposed)
        self.approvals = Approvals(
            self.engine,
            self.clock,
            self.audit,
            four_eyes.Policy.of(s.approval_actions, s.approval_charger_threshold),
            timedelta(hours=s.approval_ttl_hours),
            decisions_engine=self.runner_engine,
        )
        if s.redis_url is None:  # cluster: only a node alone may (_start_presence)
            await self._reset_connected()
        await self._bootstrap_admin_token()
        self.firmware_store = self._firmware_store()
        self.fleet = FleetService(
            self.engine,
            self.clock,
            open_registration=s.registration == "open",
            heartbeat_interval=s.heartbeat_interval,
            pending_interval=s.pending_interval,
            last_seen_interval=s.last_seen_flush_seconds,
            write_interval=s.write_interval,
        )
        self.fleet.writer.max_backlog = s.write_backlog_max  # bounded while the database is away
        self.fleet.writer.start()
        if s.redis_url is not None:  # the leader's state a charger's node reads (cluster.live)
            self.live = LiveBus(cluster_redis.connect(s.redis_url.get_secret_value()), self.node)
            self.fleet.upgrading = self.live.replicated("upgrading")
            self.live.start()
        self.fleet.security_listeners.append(self.alerts.security_event)
        # The playbook engine hears the fleet from the first connection on: what arrives
        # before it starts (_start_playbooks) waits in its queue.
        self.playbooks = PlaybookRunner(
            self.runner_engine,  # the leader's worker writes; the API tells it (leader calls)
            self.clock,
            send=lambda actor, charger_id, spec, params, reason: send_command(
                self.command_path, actor, charger_id, spec, params, reason
            ),
            alerts=self.alerts,
            audit=self.audit,
            approvals=self.approvals,
            enabled=s.playbooks_enabled,
            tick_seconds=s.playbook_tick_seconds,
            webhook_timeout=s.playbook_webhook_timeout,
            webhook_policy=s.playbook_webhook_policy(),
        )
        self.fleet.charger_listeners.append(self.playbooks.charger_event)
        # Vendor profiles: every service reads them from memory (for_charger, no I/O).
        self.vendor_profiles = VendorStore(self.engine, self.clock)
        await self.vendor_profiles.load()
        self.fleet.boot_listeners.append(self.vendor_profiles.charger_booted)
        await self._start_tokens()
        self.charger_ca = self._charger_ca()
        self.gateway = Gateway(
            self.fleet,
            call_timeout=s.call_timeout,
            max_message_size=s.max_message_size,
            handshake_timeout=s.ocpp_handshake_timeout,
            max_preauth=s.ocpp_max_preauth,
            max_preauth_per_address=s.ocpp_max_preauth_per_address,
            trusted_proxies=parse_networks(s.ocpp_trusted_proxies),
            auth_failures=AuthFailures(
                s.charger_auth_failures_per_id,
                s.charger_auth_failures_per_address,
                s.charger_auth_failure_window_seconds,
            ),
            on_auth_failures=self._charger_auth_alert,
            shared_auth_failures=self.shared_limits.auth_failures if self.shared_limits else None,
            clock=self.clock,
            tls=self._tls_config(),
            client_cert_header=s.ocpp_client_cert_header,
            on_tls_reload_failed=self._tls_reload_alert,
        )
        cluster = self.live is not None  # chargers are admitted once the relay is in place
        if s.ocpp_plain and "ocpp" in self.components:
            self.ocpp_port = await self.gateway.start(s.host, s.ocpp_port, serving=not cluster)
        if s.ocpp_tls_port is not None and "ocpp" in self.components:
            self.ocpp_tls_port = await self.gateway.start_tls(
                s.host, s.ocpp_tls_port, serving=not cluster
            )
        self.send = self.gateway.send
        if s.redis_url is not None:  # commands to chargers on other nodes go there
            self.presence = self._presence(s.redis_url.get_secret_value())
            self.send = ClusterSend(self.presence, self.gateway)
        self.uploads = charger_uploads.ChargerUploads(
            self.engine,
            self.clock,
            load_key(s.data_dir / charger_uploads.KEY_FILE),
            s.data_dir / "uploads",
            lambda: charger_uploads.base_url(
                s.upload_public_url, s.host, self.http_port or s.http_port
            ),
            max_bytes=s.upload_max_bytes,
            token_ttl=s.upload_token_ttl,
            remote=getattr(self.firmware_store, "files", None),  # S3: charger files there too
        )
        if self.live is not None and self.seal is not None:  # cluster: resets on any node
            self.resets = SharedResets(
                self.live.redis, self.seal, self.fleet, self.audit, self.clock
            )
            self.fleet.reset_claim = self.resets.booted
            self.resets.start()
        self.command_path = CommandPath(
            send=self.send,
            audit=self.audit,
            reset_scheduled=self.fleet.reset_scheduled,
            upload_url=self.uploads.url,
            profile_for=self.vendor_profiles.for_charger,
            reset_shared=self.resets.scheduled if self.resets is not None else None,
        )
        await self._start_certificates()
        await self._start_firmware()
        if self.live is not None:  # the relay first: the presence listener stays local
            await self._start_cluster_events(self.live)
        if self.presence is not None:
            await self._start_presence()
        await self.gateway.serve()  # cluster: chargers only now (single node: already serving)
        if serve_http and "http" in self.components:
            await self._start_http()
        await self.leadership.start()  # cluster: stand for election (docs/cluster.md)
        # Everything allocated so far (modules, FastAPI app, schemas) lives for the whole run:
        # keep it out of the cyclic GC's full collections, which otherwise stall the gateway.
        gc.collect()
        gc.freeze()

    def _leadership(self) -> Leadership:
        """Single node: this process runs every runner; cluster: the elected leader does
        (a node without the ``runners`` component never stands)."""
        if "runners" not in self.components:
            return Follower()
        if self.settings.redis_url is None:
            return SoleLeader()
        return PgLeader(self.settings.resolved_database_url(), self.node.key, self.clock)

    def _runner_engine(self) -> AsyncEngine:
        """Cluster mode: the runners' commits are fenced by this node's term, so a deposed
        leader's writes fail instead of landing (evota.cluster.fence); one node: the engine."""
        leadership = self.leadership
        if not isinstance(leadership, PgLeader):
            return self.engine
        return fenced(self.engine, lambda: leadership.token, leadership.deposed)

    def _leader_calls(self) -> LeaderCalls:
        url = self.settings.redis_url
        if url is None:
            return LeaderCalls(self.leadership, self.node.key)  # always in process
        from evota.cluster.redis import connect

        calls = LeaderCalls(self.leadership, self.node.key, connect(url.get_secret_value()))
        calls.seal = self.seal
        return calls

    async def _start_leader_calls(self) -> None:
        """API calls into the runners (evota.api.leader_calls): the leader takes other
        nodes' calls once every runner before runs."""
        from evota.api import leader_calls

        leader_calls.register(self, self.leader_calls)
        await self.leadership.add(self.leader_calls.opened, self.leader_calls.closed)
        await self.leader_calls.start()

    def _charger_ca(self) -> ChargerCA:
        """The operator's CA files, else the built-in CA in the data directory."""
        s = self.settings
        validity = timedelta(days=s.ca_validity_days)
        try:
            if s.ca_cert is not None and s.ca_key is not None:
                return BuiltinCA.from_files(s.ca_cert, s.ca_key, validity)
            return BuiltinCA.in_data_dir(s.data_dir, self.clock.now(), s.cpo_name, validity)
        except CAError as exc:
            raise OSError(f"charger CA: {exc}") from None

    async def _start_certificates(self) -> None:
        """SignCertificate -> CertificateSigned, the inventory at boot, expiry and renewal."""
        s = self.settings
        self.certificates = CertificateService(
            self.engine,
            self.clock,
            self.audit,
            self.charger_ca,
            self.command_path,
            self.live_state,
            self.alerts.raise_alert,
            runner_engine=self.runner_engine,
            cpo_name=s.cpo_name,
            sign_interval=timedelta(minutes=s.ca_sign_interval_minutes),
            alert_days=s.cert_expiry_alert_days,
            auto_renew=s.cert_auto_renew,
            renew_per_hour=s.cert_renew_per_hour,
            inventory_every=timedelta(hours=s.cert_inventory_hours),
            boot_delay=s.cert_inventory_boot_delay_seconds,
            server_certificate=s.ocpp_tls_cert,
            shared=self.shared_limits.signings if self.shared_limits else None,
        )
        self.fleet.certificates = self.certificates
        self.fleet.ready_listeners.append(self.certificates.charger_ready)
        await self.leadership.add(self.certificates.start, self.certificates.stop)
        self.passwords = PasswordChanges(
            self.runner_engine,
            self.clock,
            self.audit,
            self.command_path,
            self.alerts.raise_alert,
            grace=timedelta(minutes=s.charger_password_grace_minutes),
        )
        self.fleet.key_listeners.append(self.passwords.promoted)
        await self.leadership.add(self.passwords.start, self.passwords.stop)
        self.profile_upgrades = ProfileUpgrades(
            self.runner_engine,
            self.clock,
            self.audit,
            self.command_path,
            self.live_state,
            self.alerts.raise_alert,
            self.fleet.upgrading,
            csms_url=(
                s.ocpp_tls_url(self.ocpp_tls_port)
                if self.ocpp_tls_port or s.ocpp_tls_public_url
                else None
            ),
        )
        self.fleet.channel_listeners.append(self.profile_upgrades.connected)

    async def _start_tokens(self) -> None:
        """The token store in memory, and how tokens it does not know are decided."""
        s = self.settings
        authority = self.fleet.tokens
        authority.accept_all = s.authorize_all
        authority.webhook_url = s.authorization_webhook_url or None
        authority.webhook_timeout = s.authorization_webhook_timeout
        await authority.reload()
        if s.authorize_all:
            log.warning(
                "EVOTA_AUTHORIZE_ALL is set: every id token is accepted, anyone can charge "
                "(labs only; see docs/id-tokens.md)"
            )
        log.info("token store loaded", tokens=len(authority.records))

    async def _start_firmware(self) -> None:
        s = self.settings
        swept = self.firmware_store.sweep_temp()
        if swept:
            log.info("removed unfinished uploads", count=swept)
        await self._load_revoked()
        if self.live is not None:
            self._revoked_watch = asyncio.create_task(
                self._watch_revoked(self.live), name="revoked-images"
            )
        key = load_key(s.data_dir / tokens.KEY_FILE)
        self.delivery = DeliveryServer(
            keys=[key],
            lookup=self._served_image,
            site_of=self._site_of,
            max_concurrent=s.download_max_concurrent,
            max_per_site=s.download_max_per_site,
            now=lambda: self.clock.now().timestamp(),  # the clock tokens are issued with
            caps=self.shared_limits.downloads if self.shared_limits else None,
        )
        if "download" in self.components:
            self.download_port = await asyncio.to_thread(
                self.delivery.start, s.host, s.download_port
            )
            await self._start_ftp()
        if s.redis_url is not None:  # every node serves downloads, only the leader runs jobs
            self._bytes_flush = Periodic("bytes-served", self._record_bytes_served)
            self._bytes_flush.start(BYTES_FLUSH_SECONDS)
        self.jobs = JobRunner(
            self.runner_engine,
            self.clock,
            send=self.send,
            ready=self._ready,
            timeouts=job_timeouts(s),
            token_keys=[key],
            token_ttl=s.download_token_ttl,
            base_url=lambda: s.download_base_url(self.download_port),
            # HTTP and FTP bytes alike; in a cluster each node records its own (below)
            take_bytes=dict if self._bytes_flush is not None else self.delivery.take_bytes,
            location=self._download_location,
            audit=self.audit,
            profile_for=self.vendor_profiles.for_charger,
        )
        await self.leadership.add(self.jobs.start, self.jobs.stop)
        self.fleet.jobs = self.jobs
        self.campaigns = CampaignRunner(
            self.runner_engine,
            self.clock,
            self.jobs,
            connected=self._ready,
            tick_interval=s.campaign_tick_seconds,
            profile_for=self.vendor_profiles.for_identity,
        )
        self.fleet.boot_listeners.append(self.campaigns.charger_booted)  # the leader's, relayed
        await self.leadership.add(self.campaigns.start, self.campaigns.stop)
        self.kpi_rollup = Rollup(
            self.runner_engine,
            self.clock,
            after_run=partial(
                kpi_service.check_regressions, self.engine, raise_alert=self.alerts.raise_alert
            ),
        )
        await self.leadership.add(
            _started(self.kpi_rollup.start, s.kpi_rollup_minutes * 60), self.kpi_rollup.stop
        )
        self.pruner = Pruner(
            self.runner_engine,
            self.clock,
            s.retention(),
            audit=self.audit,
            archive_dir=s.audit_archive_dir or s.data_dir / ARCHIVE_DIR,
            batch=s.retention_batch,
            rollup=s.kpi_rollup_minutes > 0,
        )
        await self.leadership.add(
            _started(self.pruner.start, s.retention_interval_minutes * 60), self.pruner.stop
        )
        self.firmware_feeds = FeedWatcher(
            self.runner_engine,
            self.firmware_store,
            self.audit,
            self.clock.now,
            s.firmware_fetch_policy(),
            max_new=s.firmware_feed_max_new,
            max_feed_bytes=s.firmware_feed_max_bytes,
            slots=self.shared_limits.imports if self.shared_limits else None,
        )
        await self.leadership.add(
            _started(self.firmware_feeds.start, s.firmware_feed_interval_hours * 3600),
            self.firmware_feeds.stop,
        )
        self._register_approvals()
        await self._start_control()
        await self._start_playbooks()
        await self.leadership.add(self.approvals.start, self.approvals.stop)
        await self._start_leader_calls()
        log.info("firmware downloads listening", host=s.host, port=self.download_port)

    async def _start_control(self) -> None:
        """Bulk operations and configuration profiles (before the approvals sweep, which
        must find the operation handlers)."""
        s = self.settings
        send = partial(send_command, self.command_path)
        self.operations = OperationRunner(
            self.runner_engine,
            self.clock,
            send,
            self.audit,
            approvals=self.approvals,
            connected=self._ready,
            min_sample=s.operation_min_sample,
            max_in_flight=s.operation_max_in_flight,
            resume_delay=s.operation_resume_delay_seconds,
        )
        self.configuration = ConfigurationService(
            self.runner_engine,
            self.clock,
            fetch_send=self.send,
            send=send,
            runner=self.operations,
            ready=self._ready,
            connected_ids=self._connected_ids,
            poll_hours=s.config_poll_hours,
            boot_delay=s.config_boot_delay_seconds,
            concurrency=s.config_fetch_concurrency,
            profile_for=self.vendor_profiles.for_charger,
        )
        self.fleet.ready_listeners.append(self.configuration.charger_ready)
        # adds the apply-config-profile step first
        await self.leadership.add(self.configuration.start, self.configuration.stop)
        # CSMS root rotation (issue 16 §7): its two steps exist before operations resume
        self.rotations = RootRotations(
            self.runner_engine,
            self.clock,
            self.audit,
            self.operations,
            send,
            self.certificates.inventory,
            self.gateway,
            lambda cid: state.protocol if (state := self.live_state(cid)) else None,
            approvals=self.approvals,
        )
        if self.settings.redis_url is not None:  # cluster: writes only on the leader
            self.rotations.leading = lambda: self.leadership.is_leader
            self.rotations.settle_on_leader = lambda rotation_id: self.leader_calls.call(
                "rotations.settle", rotation_id=rotation_id
            )
        await self.leadership.add(_started(self.rotations.start), _nothing)
        if self.live is not None and self.presence is not None:  # cluster: every node switches
            self.rotation_spread = RotationSpread(
                self.live.redis,
                self.live,
                self.node,
                self.engine,
                self.gateway,
                self.rotations,
                self.presence.directory,
                self.is_connected,
                listening=bool(self.ocpp_tls_port),
            )
            self.rotations.fleetwide = self.rotation_spread
            self.rotation_spread.start()
        self.operations.add_step(profile_upgrade_step, self.profile_upgrades.step)
        # registers operation.start, resumes running ones
        await self.leadership.add(self.operations.start, self.operations.stop)
        # chargers' local lists follow the token store
        self.local_lists = LocalListSync(
            self.runner_engine, self.clock, self.fleet.tokens, self.command_path, self._ready
        )
        await self.leadership.add(self.local_lists.start, self.local_lists.stop)
        self.fleet.ready_listeners.append(self.local_lists.charger_ready)

    async def _start_playbooks(self) -> None:
        """The playbook engine starts (it registers the ``playbook.step`` approval executor:
        before the approvals sweep) and judges kpi_threshold after every KPI rollup."""
        await self.leadership.add(self.playbooks.start, self.playbooks.stop)
        regressions = self.kpi_rollup.after_run

        async def after_rollup(now: datetime) -> None:  # kpi_threshold reads the new days
            if regressions is not None:
                await regressions(now)
            await self.playbooks.kpis_rolled(now)

        self.kpi_rollup.after_run = after_rollup

    def _register_approvals(self) -> None:
        """What runs when each kind of four-eyes request is approved (defined next to each
        domain's services; the API only creates the requests)."""
        charger_changes.register_approvals(
            self.approvals,
            self.engine,
            self.live_state,
            self.passwords.change,
            self.charger_changed,
        )
        campaign_approvals.register_approvals(self.approvals, self.campaigns)
        user_approvals.register_approvals(self.approvals, self.engine, self.clock, self.audit)
        firmware_changes.register_approvals(
            self.approvals, self.engine, self.clock, self.on_firmware_revoked
        )

    def _tls_config(self) -> ocpp_tls.TlsConfig | None:
        """The OCPP listener's TLS and client-certificate trust (profiles 2 and 3), if any."""
        s = self.settings
        tls_port = s.ocpp_tls_port is not None
        if not tls_port and s.ocpp_charger_ca is None and not s.ocpp_client_cert_header:
            return None
        # The CA evota signs chargers' CSRs with is trusted too: without it, a profile-3
        # charger renewed through SignCertificate would be locked out at its next connect.
        signing_ca = s.ca_cert or s.data_dir / ca_files.CA_DIR / ca_files.CERT_FILE
        files = ocpp_tls.TlsFiles(
            s.ocpp_tls_cert if tls_port else None,
            s.ocpp_tls_key if tls_port else None,
            s.ocpp_charger_ca,
            s.ocpp_crl,
            s.cpo_name,
            extra_ca=(signing_ca,),
        )
        try:
            return ocpp_tls.TlsConfig(files)
        except ValueError as exc:  # IdentityError, a key that does not match: one clear line
            raise OSError(f"OCPP TLS settings: {exc}") from None

    def server_certificate_not_after(self) -> datetime | None:
        """When the wss:// listener's certificate in use expires (None: no TLS listener);
        a reload changes it."""
        tls = self.gateway.tls
        return tls.server_not_after if tls is not None else None

    def reload_tls(self) -> str | None:
        """SIGHUP: load the OCPP listener's certificate, key, charger CA and CRL again;
        the reason when the old ones stay in use."""
        return self.gateway.reload_tls()

    async def _tls_reload_alert(self, problem: str) -> None:
        await self.alerts.raise_alert(
            anomalies.Alert(
                anomalies.TLS_RELOAD_FAILED,
                "ocpp-listener",
                self.clock.now(),
                f"the OCPP listener's TLS files were not reloaded: {problem}; "
                "the previous certificate stays in use",
                detail={"error": problem[:300]},
            )
        )

    async def _charger_auth_alert(self, filled: Exhausted) -> None:
        """Failed charger keys filled a window: a security event for the operators."""
        client = filled.subject.startswith("client:")
        what = f"source {filled.subject[7:]}" if client else f"charger {filled.subject}"
        await self.alerts.raise_alert(
            anomalies.Alert(
                anomalies.CHARGER_AUTH_FAILURES,
                filled.subject,
                self.clock.now(),
                f"{filled.failures} failed authentications for {what} within "
                f"{filled.window:g} s; further attempts are refused for now",
                chargers=() if client else (filled.subject,),
                detail={"failures": filled.failures, "window_seconds": filled.window},
            )
        )

    def live_state(self, charger_id: str) -> ChargerState | None:
        """The state the open connection of a charger keeps in memory (None: not connected).
        Cluster mode: for a charger on another node, its claim (accepted, protocol, site) as
        a detached ChargerState (no connectors; writes to it change nothing)."""
        conn = self.gateway.connections.get(charger_id)
        if conn is not None:
            return conn.state
        where = self._elsewhere(charger_id)
        if where is None:
            return None
        registration = Registration.ACCEPTED if where.accepted else Registration.PENDING
        return ChargerState(charger_id, registration, where.accepted, where.site_id, where.protocol)

    def _elsewhere(self, charger_id: str) -> Presence | None:
        """Cluster mode: the charger's claim on another live node."""
        if self.presence is None or not self.presence.directory.available:
            return None
        where = self.presence.directory.get(charger_id)
        return where if where is not None and where.node != self.node.key else None

    def is_connected(self, charger_id: str) -> bool:
        """Connected to this node, or (cluster mode) to another live node."""
        return charger_id in self.gateway.connections or self._elsewhere(charger_id) is not None

    def node_of(self, charger_id: str) -> str | None:
        """The name of the node holding the charger's connection (None: not connected)."""
        if charger_id in self.gateway.connections:
            return self.node.name
        where = self._elsewhere(charger_id)
        return where.node_name if where is not None else None

    def charger_changed(self, charger_id: str, changes: Mapping[str, Any]) -> None:
        """An operator changed a charger's registration or site: cluster mode, the node
        holding its connection applies it there too (a disabled charger stops at once).
        Running campaigns here read it again (an approved change runs on the leader; the
        edit route also tells the leader, evota.api.chargers)."""
        if CHARGER_FACTS.intersection(changes):
            self.campaigns.facts_changed([charger_id])
        if self.presence is not None:
            self.presence.changed(charger_id, changes)

    def _connected_ids(self) -> list[str]:
        if self.presence is None:
            return list(self.gateway.connections)
        return connected_anywhere(self.presence.directory, self.gateway.connections)

    def _ready(self, charger_id: str) -> bool:
        conn = self.gateway.connections.get(charger_id)
        if conn is not None:
            return conn.state is not None and conn.state.accepted
        where = self._elsewhere(charger_id)
        return where is not None and where.accepted

    def _site_of(self, charger_id: str) -> str | None:
        conn = self.gateway.connections.get(charger_id)
        if conn is not None:
            return conn.state.site_id if conn.state is not None else None
        where = self._elsewhere(charger_id)
        return where.site_id if where is not None else None

    async def _start_ftp(self) -> None:
        """FTP/FTPS for legacy chargers, sharing the HTTP server's keys, caps and counters."""
        s = self.settings
        if s.ftp_port is None:
            return
        public = s.ftp_host()
        tls = TlsFiles(s.ftp_tls_cert, s.ftp_tls_key) if s.ftp_tls_cert and s.ftp_tls_key else None
        server = FtpDelivery(
            self.delivery,
            passive_ports=passive_range(s.ftp_passive_ports) if s.ftp_passive_ports else None,
            masquerade_address=(
                await asyncio.to_thread(resolve_ipv4, public) if s.ftp_public_host else None
            ),
            tls=tls if s.ftp_tls else None,
            timeout=s.ftp_timeout,
            max_connections=s.ftp_max_connections,
            max_per_address=s.ftp_max_per_address,
            max_failures=s.ftp_login_failures,
            failure_window=s.ftp_login_failure_window_seconds,
        )
        port = await asyncio.to_thread(server.start, s.host, s.ftp_port)
        self.ftp = server
        self.ftp_endpoint = FtpEndpoint(public, port, tls=s.ftp_tls)

    def _download_location(self, charger_id: str, sha256: str, token: str) -> str:
        """UpdateFirmware's location: the charger's vendor profile picks HTTP(S) or FTP(S)."""
        wanted = self.vendor_profiles.for_charger(charger_id).download_protocol
        if effective_protocol(wanted, self.ftp_endpoint) != wanted and wanted.startswith("ftp"):
            log.warning(
                "download protocol not served here; sending an HTTP location",
                charger_id=charger_id,
                wanted=wanted,
                hint="set EVOTA_FTP_PORT (and EVOTA_FTP_TLS for ftps)",
            )
        return location(
            wanted,
            charger_id=charger_id,
            sha256=sha256,
            token=token,
            http_base=self.settings.download_base_url(self.download_port),
            endpoint=self.ftp_endpoint,
        )

    def _firmware_store(self) -> FirmwareStore:
        """EVOTA_FIRMWARE_STORE: the data directory, or an S3 bucket with a local cache."""
        s = self.settings
        config = s.s3_config()
        if config is None:
            return LocalFirmwareStore(s.data_dir / "firmware")
        from evota.firmware.s3_storage import S3FirmwareStore

        cache_dir = s.firmware_cache_dir or s.data_dir / "firmware-cache"
        store = S3FirmwareStore(config, cache_dir, s.firmware_cache_max_bytes)
        self.firmware_cache = store.cache
        log.info("firmware store", store=str(config.location), cache=str(cache_dir))
        return store

    def _served_image(self, sha256: str) -> ServedImage | None:
        """Called from download threads: filesystem and an immutable set only (S3: the
        local cache, which fetches a missing image in this thread)."""
        if self.firmware_cache is not None:
            if sha256 in self._revoked_sha256:
                return ServedImage(Path(), 0, revoked=True)
            cached = self.firmware_cache.lookup(sha256)
            if cached is None:
                return None
            return ServedImage(cached.path, cached.size, release=cached.release)
        path = self.firmware_store.path_of(sha256)
        if path is None:
            return None
        size = self.firmware_store.size_of(sha256)
        return ServedImage(path, size or 0, revoked=sha256 in self._revoked_sha256)

    async def _watch_revoked(self, live: LiveBus) -> None:
        """Cluster mode: reload the revoked images when any node revokes one (a notice over
        the live bus) and at least every ``REVOKED_RELOAD`` seconds, so a notice lost while
        Redis was away delays a node's refusal by that much at most."""
        notices = live.subscribe(REVOKED_TOPIC)
        try:
            while True:
                await notices.get(REVOKED_RELOAD)
                try:
                    await self._load_revoked()
                except Exception as exc:  # the database away: the old set stays, try again
                    raise_if_cancelled()
                    log.warning("revoked images not reloaded", error=str(exc)[:200])
        finally:
            notices.close()

    async def _load_revoked(self) -> None:
        """Blobs whose every image is revoked (identical bytes may back a live image too)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(Firmware.sha256, Firmware.state))).all()
        live = {r.sha256 for r in rows if r.state != FirmwareState.REVOKED}
        self._revoked_sha256 = frozenset(r.sha256 for r in rows if r.sha256 not in live)

    async def _start_http(self) -> None:
        from evota.api.app import create_app
        from evota.api.listener import guarded_h11

        app = create_app(self)
        config = uvicorn.Config(
            app,
            host=self.settings.host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            http=guarded_h11(),  # request heads have a deadline (evota.api.listener)
        )
        server = uvicorn.Server(config)
        self._uvicorn = server
        self._http_task = asyncio.create_task(server.serve(), name="http")
        while not server.started:
            if self._http_task.done():
                self._http_task.result()  # raises the bind error
            await asyncio.sleep(0.01)
        self.http_port = server.servers[0].sockets[0].getsockname()[1]
        log.info("http listener started", host=self.settings.host, port=self.http_port)

    async def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            if self._http_task:
                await self._http_task
        self._stopping = True
        await self.leader_calls.stop()
        await self.leadership.stop()  # the runners, last started first
        if self.ftp is not None:
            await asyncio.to_thread(self.ftp.stop)
        await asyncio.to_thread(self.delivery.stop)
        if self._bytes_flush is not None:  # what this node's downloads sent, to the last byte
            await self._bytes_flush.stop()
            with contextlib.suppress(Exception):
                await self._record_bytes_served()
        await self.gateway.stop()
        if self._revoked_watch is not None:
            self._revoked_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._revoked_watch
        if self.resets is not None:
            await self.resets.stop()
        if self.rotation_spread is not None:
            await self.rotation_spread.stop()
        await self._stop_cluster_events()
        if self._connected_check is not None:
            await self._connected_check.stop()
        if self.presence is not None:  # this node's claims go now, not after the TTL
            await self.presence.stop()
            await self.presence.redis.aclose()
        if self.shared_limits is not None:
            await self.shared_limits.close()
            self.shared_limits = None
        await self.fleet.writer.stop()
        await self.fleet.tokens.close()
        await self.alerts.stop()  # last: what the closing listeners cause still counts
        if self.presence is None:  # cluster: the other nodes' chargers stay connected
            await self._reset_connected()
        self.audit.anchor()  # the last head, outside the database
        await self.engine.dispose()
        if self._node_lock is not None:
            self._node_lock.close()
            self._node_lock = None

    async def _record_bytes_served(self) -> None:
        """Cluster mode: this node's download bytes per job, added to the jobs' rows (kept
        for the next time while the database is away)."""
        pending = self._bytes_pending
        for job_id, count in self.delivery.take_bytes().items():
            pending[job_id] = pending.get(job_id, 0) + count
        await record_bytes_served(self.engine, pending)
        pending.clear()

    async def _alerts_deposed(self) -> None:
        """The alert monitor stops when this node loses the leadership; at shutdown it
        stops after the listeners, as it always did."""
        if not self._stopping:
            await self.alerts.stop()

    async def on_firmware_revoked(self, firmware_id: str) -> None:
        """A revoked image must not be downloaded or installed any more: stop its jobs
        where the runners run (the leader, in a cluster)."""
        await self._load_revoked()
        if self.live is not None:  # every node's download server stops serving it now
            self.live.publish(REVOKED_TOPIC, {"firmware_id": firmware_id})
        try:
            await self.leader_calls.call("firmware.revoked", firmware_id=firmware_id)
        except NoLeader as exc:  # the revocation is stored; its jobs are not stopped
            log.error(
                "revoked image's jobs not stopped: no runner leader answered",
                firmware_id=firmware_id,
                reason=str(exc),
            )

    async def stop_revoked_jobs(self, firmware_id: str) -> None:
        """On the leader: stop the campaigns and cancel the jobs of a revoked image."""
        stopped = await self.campaigns.firmware_revoked(firmware_id)
        if stopped:
            log.info("campaigns stopped by revocation", campaigns=stopped)
        cancelled = await self.jobs.firmware_revoked(firmware_id)
        log.info("firmware revoked", firmware_id=firmware_id, jobs_cancelled=len(cancelled))

    def _shared_limits(self, url: str) -> SharedLimits:
        """Cluster mode: the limits every node shares, on the nodes' common wall clock."""
        s = self.settings
        return SharedLimits(
            url,
            login_per_minute=s.login_rate_per_minute,
            auth_per_identity=s.charger_auth_failures_per_id,
            auth_per_source=s.charger_auth_failures_per_address,
            auth_window=s.charger_auth_failure_window_seconds,
            download_max=s.download_max_concurrent,
            download_max_per_site=s.download_max_per_site,
            now=lambda: self.clock.now().timestamp(),
            sign_interval=s.ca_sign_interval_minutes * 60,
        )

    def _presence(self, url: str) -> ChargerPresence:
        s = self.settings
        ttl = s.cluster_node_ttl_seconds
        presence = ChargerPresence(
            cluster_redis.connect(url),
            self.node,
            self.gateway,
            on_lapsed=self._lapsed,
            # replaced by a connection on another node: the stored flag stays connected
            on_superseded=lambda cid: self.fleet.writer.charger(cid, connected=True),
            heartbeat=min(s.cluster_heartbeat_seconds, ttl / 3),
            node_ttl_ms=int(ttl * 1000),
        )
        presence.seal = self.seal
        return presence

    async def _start_presence(self) -> None:
        """Claims for this node's connections, the mirror of the others'. The listener is
        added after the event relay took the fleet's listeners to the leader: it is local."""
        assert self.presence is not None
        self.fleet.charger_listeners.append(self.presence.charger_event)
        await self.presence.start()
        if self.presence.directory.available and self.presence.directory.live_nodes == {
            self.node.key
        }:
            await self._reset_connected()  # alone: no connection is open anywhere
        self._connected_check = Periodic("connected-flags", self._reassert_connected)
        self._connected_check.start(CONNECTED_CHECK_SECONDS)

    async def _reassert_connected(self) -> int:
        """Cluster: store ``connected`` again for the chargers this node holds whose flag
        another node's late write cleared. A charger that reconnects through another node
        leaves two writes, the old node's disconnect and the new node's connect, in two
        nodes' write queues; under a storm the old one can land last (642 of 20,000 in a
        benchmark storm). The claim in Redis is the truth; this makes the stored flag (the
        list filter, the console's counts) follow it within a minute."""
        assert self.presence is not None
        directory, me = self.presence.directory, self.node.key
        mine = sorted(
            cid
            for cid in list(self.gateway.connections)
            if (claim := directory.get(cid)) is not None and claim.node == me and claim.accepted
        )
        fixed = 0
        for start in range(0, len(mine), 1000):
            async with self.engine.connect() as conn:
                cleared = (
                    await conn.execute(
                        select(Charger.id).where(
                            Charger.id.in_(mine[start : start + 1000]), ~Charger.connected
                        )
                    )
                ).scalars()
                for cid in cleared:
                    self.fleet.writer.charger(cid, connected=True)
                    fixed += 1
        if fixed:
            log.info("connected flags stored again", chargers=fixed)
        return fixed

    async def _lapsed(self, charger_ids: list[str]) -> None:
        """A dead node's chargers no live node claimed: not connected any more."""
        async with self.engine.begin() as conn:
            for start in range(0, len(charger_ids), 1000):
                chunk = charger_ids[start : start + 1000]
                await conn.execute(
                    update(Charger)
                    .where(Charger.id.in_(chunk), Charger.connected)
                    .values(connected=False)
                )

    async def _start_cluster_events(self, live: LiveBus) -> None:
        """Cluster mode: what chargers cause reaches the leader's services whichever node
        they are on (evota.cluster.events); the campaign runner's notes and change notices
        reach every node's API (evota.cluster.live)."""
        self.events = EventRelay(live.redis, self.node, seal=self.seal)
        self.events.install(self.fleet, local_boot=[self.vendor_profiles.charger_booted])
        self.alerts.local_audit = False
        self.events.install_audit(self.audit, self.alerts.observe)
        self.events.start()
        self.campaigns.notes = live.replicated("campaign", limit=50)
        await self.leadership.add(self.events.lead, self.events.unlead)

    async def _stop_cluster_events(self) -> None:
        if self.events is not None:
            await self.events.stop()
        if self.live is not None:
            await self.live.stop()
            await self.live.redis.aclose()

    async def _reset_connected(self) -> None:
        """A single node owns every connection: after a restart none are open."""
        async with self.engine.begin() as conn:
            await conn.execute(update(Charger).where(Charger.connected).values(connected=False))

    async def _bootstrap_admin_token(self) -> None:
        configured = (
            self.settings.admin_token.get_secret_value() if self.settings.admin_token else None
        )
        async with self.engine.begin() as conn:
            existing = (
                await conn.execute(select(ApiToken).where(ApiToken.name == BOOTSTRAP_TOKEN_NAME))
            ).first()
            if configured:
                values = {"token_hash": token_hash(configured), "role": "admin", "revoked_at": None}
                if existing:
                    await conn.execute(
                        update(ApiToken)
                        .where(ApiToken.name == BOOTSTRAP_TOKEN_NAME)
                        .values(**values)
                    )
                else:
                    await conn.execute(
                        insert(ApiToken).values(
                            name=BOOTSTRAP_TOKEN_NAME, created_at=self.clock.now(), **values
                        )
                    )
            elif not existing:
                token = "evota_" + secrets.token_urlsafe(32)
                await conn.execute(
                    insert(ApiToken).values(
                        name=BOOTSTRAP_TOKEN_NAME,
                        token_hash=token_hash(token),
                        role="admin",
                        created_at=self.clock.now(),
                    )
                )
                self.generated_admin_token = token
