"""CSMS root rotation, the shell (issue 16 §7): rows, bulk operations, the server certificate
files and the TLS reload. Every decision is :mod:`evota.pki.rotation`'s.

- ``start``: store the rotation and a staged bulk operation of the internal step
  ``rotate-root-install`` (install the new root, then read the charger's inventory and
  succeed only if it lists the root), stopping on the first failure; four eyes as for any
  bulk operation (``operation.start``).
- ``switch``: the new server certificate and key are files the operator put next to the
  configured ones (``EVOTA_OCPP_TLS_CERT`` + ``.next``, ``EVOTA_OCPP_TLS_KEY`` + ``.next``;
  no path comes from an API caller). They must chain to the new root; they replace the
  configured files (the old ones are kept as ``.previous``), the listener reloads, and the
  targeted chargers on TLS are disconnected so that they reconnect and check the new chain.
- ``finish``: a staged bulk operation of ``rotate-root-remove`` (DeleteCertificate of the
  old root; NotFound counts as done), only once every charger that was on TLS at the switch
  has connected again.

Progress is read from the stored operations whenever the status is asked for, so a
restarted evota resumes where it was (after a restart every connection was made under the
certificate then configured: the switched one).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.frames import CloseCode

from evota.audit.log import SYSTEM, Actor, AuditLog
from evota.clock import Clock
from evota.control import catalog, commands
from evota.control import operation as op
from evota.control.operations import ApprovalsLike, Info, OperationRunner, Outcome
from evota.pki import inventory as inv
from evota.pki import rotation as rules
from evota.pki.rotation import RotationError, RotationState
from evota.store.models import Charger, ChargerInstalledCertificate, Operation, RootRotation

log = structlog.get_logger("evota.rotation")

INSTALL = "rotate-root-install"
REMOVE = "rotate-root-remove"
ACTION = "certificate.rotate-root"  # audit action prefix of background phase changes
APPROVAL = "certificate.rotate-root"  # the four-eyes action of a start
NEXT, PREVIOUS = ".next", ".previous"
_SHA256 = hashes.SHA256()

SendFn = Callable[
    [Actor, str, catalog.CommandSpec, catalog.Params, str | None],
    Awaitable[commands.CommandResult],
]


class RotationConflict(Exception):
    """The request does not fit the rotation's state (409); ``detail`` lists the chargers."""

    def __init__(self, message: str, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = dict(detail or {})


class Connections(Protocol):
    """What the rotation needs of the gateway."""

    @property
    def connections(self) -> Mapping[str, Any]: ...

    @property
    def tls(self) -> Any: ...  # evota.gateway.tls.TlsConfig | None (control sits below it)

    def reload_tls(self) -> str | None: ...


class Fleetwide(Protocol):
    """Cluster mode (evota.cluster.rotation): the switch reaches every node's listener and
    the status counts every node's chargers."""

    def connected(self, charger_ids: Sequence[str]) -> set[str]: ...

    async def switched(self, rotation_id: str) -> int: ...

    async def reconnection(self, rotation_id: str) -> tuple[set[str], set[str], list[str]]: ...


class RootRotations:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        audit: AuditLog,
        runner: OperationRunner,
        send: SendFn,
        inventory: Callable[[str], Awaitable[dict[str, Any]]],
        gateway: Connections,
        protocol: Callable[[str], str | None],
        approvals: ApprovalsLike | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._audit = audit
        self._runner = runner
        self._send = send
        self._inventory = inventory
        self._gateway = gateway
        self._protocol = protocol
        self._approvals = approvals
        # Connections of the targeted chargers on TLS when the server certificate switched,
        # by rotation id: a charger has reconnected when its connection is another object.
        self._at_switch: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        # Cluster mode: every node reloads and reconnects its chargers (the runtime sets it).
        self.fleetwide: Fleetwide | None = None
        # Cluster mode: whether this node leads, and how to ask the leader to settle a
        # finished removal. Only the leader writes (its writes are fenced by its term).
        self.leading: Callable[[], bool] = lambda: True
        self.settle_on_leader: Callable[[str], Awaitable[object]] | None = None

    def start(self) -> None:
        self._runner.add_step(INSTALL, self._install_step)
        self._runner.add_step(REMOVE, self._remove_step)
        if self._approvals is not None:
            self._approvals.register(APPROVAL, self._approved, self._approval_ended)

    async def _approved(self, payload: dict[str, Any], approver: Actor) -> dict[str, Any]:
        """The second operator said yes: the install operation starts (not asked again)."""
        async with self._lock:
            row = await self._row(str(payload["rotation_id"]))
            if row is None or row.state != RotationState.AWAITING_APPROVAL:
                return {"rotation_id": payload["rotation_id"], "started": False}
            created = await self._create_install(
                approver, row.id, row.new_root, list(row.charger_ids), row.reason, payload, True
            )
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(RootRotation)
                    .where(RootRotation.id == row.id)
                    .values(state=RotationState.INSTALLING, install_operation_id=created["id"])
                )
        return {"rotation_id": row.id, "install_operation_id": created["id"]}

    async def _approval_ended(self, payload: dict[str, Any], why: str) -> None:
        """Rejected or expired: the rotation ends before anything was sent."""
        async with self._lock:
            row = await self._row(str(payload["rotation_id"]))
            if row is not None and row.state == RotationState.AWAITING_APPROVAL:
                await self._set(row.id, RotationState.STOPPED, finished=True)
        log.info("root rotation not approved", rotation_id=payload["rotation_id"], why=why)

    async def _create_install(
        self,
        actor: Actor,
        rotation_id: str,
        new_root: str,
        ids: list[str],
        reason: str,
        plan: Mapping[str, Any],
        approved: bool,
    ) -> dict[str, Any]:
        return await self._runner.create(
            actor=actor,
            command=INSTALL,
            params={"rotation_id": rotation_id, "certificate": new_root},
            charger_ids=ids,
            reason=reason,
            target={"charger_ids": ids} if plan.get("named") else {},
            stages=plan.get("stages"),
            max_failure_rate=0.0,  # stop on the first charger that does not hold it
            rate_per_second=float(plan.get("rate_per_second", 10.0)),
            approved=approved,
        )

    # -- the per-charger steps ----------------------------------------------------------------
    async def _install_step(self, info: Info, actor: Actor, charger_id: str) -> Outcome:
        pem = str(info.params["certificate"])
        use = rules.ROOT_USE.get(self._protocol(charger_id) or "", "CSMSRootCertificate")
        spec = catalog.get("install-certificate")
        assert spec is not None
        params = spec.params.model_validate({"certificate_type": use, "certificate": pem})
        result = await self._send(actor, charger_id, spec, params, info.reason)
        if not result.accepted:
            return Outcome(False, result.status, {"reason": "install refused"})
        checked = await self._inventory(charger_id)
        if checked.get("outcome") != "ok":
            return Outcome(False, result.status, {"reason": f"inventory {checked.get('outcome')}"})
        keys = rules.root_keys(x509.load_pem_x509_certificate(pem.encode()))
        held = await self._holding([charger_id], keys)
        if charger_id not in held:
            return Outcome(False, result.status, {"reason": "the inventory lacks the new root"})
        return Outcome(True, result.status, {"inventory": "holds the new root"})

    async def _remove_step(self, info: Info, actor: Actor, charger_id: str) -> Outcome:
        spec = catalog.get("delete-certificate")
        assert spec is not None
        fields = {k: info.params[k] for k in rules.DELETE_FIELDS}
        params = spec.params.model_validate(fields)
        result = await self._send(actor, charger_id, spec, params, info.reason)
        # NotFound: the charger does not hold the old root (any more): nothing left to remove.
        ok = result.accepted or result.status == "NotFound"
        return Outcome(ok, result.status, {})

    # -- reading ------------------------------------------------------------------------------
    async def _holding(
        self, charger_ids: Sequence[str], keys: frozenset[inv.Key]
    ) -> frozenset[str]:
        t = ChargerInstalledCertificate
        query = select(
            t.charger_id, t.hash_algorithm, t.issuer_name_hash, t.issuer_key_hash, t.serial
        ).where(t.charger_id.in_(list(charger_ids)))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return rules.holders(
            ((r[0], inv.HashData(r[1], r[2], r[3], r[4]).key()) for r in rows), keys
        )

    async def _row(self, rotation_id: str | None = None) -> Any:
        query = select(RootRotation)
        if rotation_id is not None:
            query = query.where(RootRotation.id == rotation_id)
        query = query.order_by(RootRotation.created_at.desc()).limit(1)
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).first()

    async def _op_state(self, op_id: str | None) -> str | None:
        if op_id is None:
            return None
        async with self._engine.connect() as conn:
            found = await conn.execute(select(Operation.state).where(Operation.id == op_id))
            return found.scalar_one_or_none()

    def _connected(self, ids: Sequence[str]) -> set[str]:
        if self.fleetwide is not None:
            return self.fleetwide.connected(ids)
        return {cid for cid in ids if cid in self._gateway.connections}

    def _reconnected(self, rotation_id: str) -> tuple[set[str], set[str]]:
        """(chargers on TLS at the switch, those of them connected again since)."""
        before = self._at_switch.get(rotation_id, {})
        now = self._gateway.connections
        again = {cid for cid, conn in before.items() if cid in now and now[cid] is not conn}
        return set(before), again

    async def status(self, rotation_id: str | None = None) -> dict[str, Any] | None:
        """The newest rotation (or the one named) with its phase, operations and what the
        next move waits for; settles a finished removal operation."""
        async with self._lock:
            row = await self._row(rotation_id)
            if row is None:
                return None
            remove_state = await self._op_state(row.remove_operation_id)
            after = rules.end_state(row.state, remove_state)
            if after is not None and self.leading():
                await self._set(row.id, after, finished=after == RotationState.FINISHED)
                await self._audit.record(
                    SYSTEM,
                    f"{ACTION}.{after}",
                    str(remove_state),
                    target=row.id,
                    detail={"remove_operation_id": row.remove_operation_id},
                )
                row = await self._row(row.id)
            elif after is not None and self.settle_on_leader is not None:
                try:  # the leader settles it; without one the stored phase is shown
                    await self.settle_on_leader(row.id)
                except Exception as exc:
                    log.warning("rotation not settled by the leader", reason=str(exc)[:200])
                row = await self._row(row.id)
            return await self._view(row)

    async def _view(self, row: Any) -> dict[str, Any]:
        new_root = x509.load_pem_x509_certificate(row.new_root.encode())
        old_root = x509.load_pem_x509_certificate(row.old_root.encode())
        targets = list(row.charger_ids)
        install_state = await self._op_state(row.install_operation_id)
        holding = await self._holding(targets, rules.root_keys(new_root))
        ready = rules.switch_readiness(
            row.state, install_state, targets, self._connected(targets), holding, row.min_share
        )
        lagging: list[str] = []
        if self.fleetwide is not None:  # every node's chargers and listeners
            on_tls, again, lagging = await self.fleetwide.reconnection(row.id)
        else:
            on_tls, again = self._reconnected(row.id)
        removal = rules.removal_readiness(row.state, row.switched_at, on_tls, again, lagging)
        return {
            "id": row.id,
            "state": row.state,
            "reason": row.reason,
            "new_root": _describe(new_root),
            "old_root": _describe(old_root),
            "chargers": len(targets),
            "min_share": row.min_share,
            "install_operation_id": row.install_operation_id,
            "install_state": install_state,
            "remove_operation_id": row.remove_operation_id,
            "remove_state": await self._op_state(row.remove_operation_id),
            "holding_new_root": ready.holding,
            "connected": ready.connected,
            "lacking_new_root": list(ready.lacking),
            "switch_problem": ready.problem,
            "not_reconnected": list(removal.waiting),
            "finish_problem": removal.problem,
            "created_by": row.created_by,
            "created_at": row.created_at,
            "switched_at": row.switched_at,
            "finished_at": row.finished_at,
        }

    # -- moves --------------------------------------------------------------------------------
    async def begin(
        self,
        actor: Actor,
        *,
        new_root: str,
        old_root: str,
        reason: str,
        charger_ids: Sequence[str] | None = None,
        stages: Sequence[Any] | None = None,
        min_share: float = 1.0,
        rate_per_second: float = 10.0,
    ) -> dict[str, Any]:
        """Store the rotation and its install operation (which may await approval)."""
        new = rules.load_root(new_root, "new_root")
        old = rules.load_root(old_root, "old_root")
        # Stored and sent as parsed: one certificate, nothing the caller appended to it.
        new_root = new.public_bytes(serialization.Encoding.PEM).decode()
        old_root = old.public_bytes(serialization.Encoding.PEM).decode()
        if len(new_root) > rules.MAX_PEM:
            raise RotationError("new_root", f"longer than OCPP's {rules.MAX_PEM} characters")
        if new.fingerprint(_SHA256) == old.fingerprint(_SHA256):
            raise RotationError("new_root", "is the old root")
        if not 0 < min_share <= 1:
            raise RotationError("min_share", "must be above 0 and at most 1")
        chain = self._server_chain(None)
        if chain and not rules.chains_to(chain, old):
            raise RotationError("old_root", "the server certificate in use does not chain to it")
        async with self._lock:
            active = await self._row()
            if active is not None and active.state in rules.ACTIVE:
                raise RotationConflict(f"rotation {active.id} is {active.state}")
            ids = await self._targets(charger_ids)
            rotation_id = str(uuid.uuid4())
            plan = {
                "rotation_id": rotation_id,
                "named": bool(charger_ids),
                "stages": list(stages) if stages else None,
                "rate_per_second": rate_per_second,
            }
            if not reason or not reason.strip():
                raise RotationError("reason", "a reason is required")
            op.plan_stages(len(ids), stages)  # a bad stage list is refused before approval
            op.Limits(0.0, 1, rate_per_second)
            waits = self._approvals is not None and self._approvals.required(APPROVAL)
            created: dict[str, Any] = {}
            if not waits:
                created = await self._create_install(
                    actor, rotation_id, new_root, ids, reason, plan, False
                )
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(RootRotation).values(
                        id=rotation_id,
                        state=RotationState.AWAITING_APPROVAL
                        if waits
                        else RotationState.INSTALLING,
                        new_root=new_root,
                        old_root=old_root,
                        charger_ids=ids,
                        min_share=min_share,
                        reason=reason,
                        install_operation_id=created.get("id"),
                        created_by=actor.name,
                        created_at=self._clock.now(),
                    )
                )
            if waits:
                assert self._approvals is not None
                summary = (
                    f"rotate the CSMS root to {new.subject.rfc4514_string()} on {len(ids)} chargers"
                )
                approval_id = await self._approvals.request(
                    actor, APPROVAL, summary[:300], plan, reason, len(ids)
                )
                log.info("root rotation awaits approval", rotation_id=rotation_id)
                return {
                    "id": rotation_id,
                    "state": RotationState.AWAITING_APPROVAL,
                    "approval_id": approval_id,
                }
        log.info("root rotation started", rotation_id=rotation_id, chargers=len(ids))
        return {"id": rotation_id, "state": RotationState.INSTALLING, "install_operation": created}

    async def _targets(self, charger_ids: Sequence[str] | None) -> list[str]:
        async with self._engine.connect() as conn:
            known = list((await conn.execute(select(Charger.id).order_by(Charger.id))).scalars())
        if not charger_ids:
            return known
        have = set(known)
        missing = [cid for cid in charger_ids if cid not in have]
        if missing:
            raise RotationError("charger_ids", f"unknown chargers: {', '.join(missing[:10])}")
        return list(dict.fromkeys(charger_ids))

    def _server_chain(self, path: Path | None) -> list[x509.Certificate]:
        tls = self._gateway.tls
        where = path or (tls.files.cert if tls is not None else None)
        if where is None:
            return []
        try:
            return x509.load_pem_x509_certificates(where.read_bytes())
        except (OSError, ValueError):
            return []

    async def switch(self, rotation_id: str) -> dict[str, Any]:
        """Put the server certificate under the new root in place, once the new root is on
        the fleet; refused (RotationConflict) before, with the chargers that lack it."""
        async with self._lock:
            row = await self._row(rotation_id)
            if row is None:
                raise KeyError(rotation_id)
            view = await self._view(row)
            if view["switch_problem"] is not None:
                raise RotationConflict(
                    view["switch_problem"], {"lacking_new_root": view["lacking_new_root"]}
                )
            self.replace_server_certificate(row.new_root)
            targets = list(row.charger_ids)
            conns = self._gateway.connections
            on_tls = {cid: conns[cid] for cid in targets if cid in conns and conns[cid].secure}
            if self.fleetwide is None:
                self._at_switch[row.id] = on_tls
            await self._set(row.id, RotationState.SWITCHED, switched=True)
        if self.fleetwide is not None:  # this node's chargers now, the other nodes' on notice
            reconnecting = await self.fleetwide.switched(row.id)
        else:
            for conn in on_tls.values():  # reconnect now, checking the new chain
                conn.close(CloseCode.SERVICE_RESTART, "server certificate rotated")
            reconnecting = len(on_tls)
        log.info("server certificate switched", rotation_id=rotation_id, reconnecting=reconnecting)
        return {"id": rotation_id, "state": RotationState.SWITCHED, "reconnecting": reconnecting}

    def replace_server_certificate(self, new_root_pem: str) -> None:
        """The ``.next`` pair (chaining to the new root) in place of the configured files,
        the listener reloaded; RotationConflict says why not (nothing changed then)."""
        tls = self._gateway.tls
        if tls is None or tls.files.cert is None or tls.files.key is None:
            raise RotationConflict("evota has no TLS listener (EVOTA_OCPP_TLS_PORT): no switch")
        cert, key = tls.files.cert, tls.files.key
        cert_next, key_next = _sibling(cert, NEXT), _sibling(key, NEXT)
        if not cert_next.is_file() or not key_next.is_file():
            raise RotationConflict(
                f"put the new server certificate and key at {cert_next} and {key_next} first"
            )
        root = x509.load_pem_x509_certificate(new_root_pem.encode())
        if not rules.chains_to(self._server_chain(cert_next), root):
            raise RotationConflict(f"{cert_next} does not chain to the new root")
        try:  # the key must match: the listener's reload would refuse the pair otherwise
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_next, key_next)
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise RotationConflict(f"the new server certificate cannot be used: {exc}") from None
        for path in (cert, key):
            shutil.copy2(path, _sibling(path, PREVIOUS))
        os.replace(key_next, key)
        os.replace(cert_next, cert)
        problem = self._gateway.reload_tls()
        if problem is not None:  # put the old pair back: chargers keep reaching evota
            os.replace(_sibling(key, PREVIOUS), key)
            os.replace(_sibling(cert, PREVIOUS), cert)
            self._gateway.reload_tls()
            raise RotationConflict(f"the TLS listener refused the new certificate: {problem}")

    async def finish(self, actor: Actor, rotation_id: str, reason: str) -> dict[str, Any]:
        """Remove the old root from the fleet (staged, stop on failure), once every charger
        that was on TLS reconnected under the new certificate."""
        async with self._lock:
            row = await self._row(rotation_id)
            if row is None:
                raise KeyError(rotation_id)
            view = await self._view(row)
            if view["finish_problem"] is not None:
                raise RotationConflict(
                    view["finish_problem"], {"not_reconnected": view["not_reconnected"]}
                )
            old = x509.load_pem_x509_certificate(row.old_root.encode())
            created = await self._runner.create(
                actor=actor,
                command=REMOVE,
                params={"rotation_id": row.id, **rules.delete_params(old)},
                charger_ids=list(row.charger_ids),
                reason=reason,
                max_failure_rate=0.0,
            )
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(RootRotation)
                    .where(RootRotation.id == row.id)
                    .values(state=RotationState.REMOVING, remove_operation_id=created["id"])
                )
        return {"id": rotation_id, "state": RotationState.REMOVING, "remove_operation": created}

    async def stop(self, rotation_id: str) -> dict[str, Any]:
        """End a rotation that has not switched (its install operation is left as it is)."""
        async with self._lock:
            row = await self._row(rotation_id)
            if row is None:
                raise KeyError(rotation_id)
            if row.state not in {RotationState.INSTALLING, RotationState.AWAITING_APPROVAL}:
                raise RotationConflict(f"the rotation is {row.state}: only one not switched stops")
            await self._set(row.id, RotationState.STOPPED, finished=True)
        return {"id": rotation_id, "state": RotationState.STOPPED}

    async def _set(
        self,
        rotation_id: str,
        state: RotationState,
        *,
        switched: bool = False,
        finished: bool = False,
    ) -> None:
        values: dict[str, Any] = {"state": state}
        if switched:
            values["switched_at"] = self._clock.now()
        if finished:
            values["finished_at"] = self._clock.now()
        async with self._engine.begin() as conn:
            await conn.execute(
                update(RootRotation).where(RootRotation.id == rotation_id).values(**values)
            )


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _describe(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "sha256": cert.fingerprint(_SHA256).hex(),
        "not_after": cert.not_valid_after_utc,
    }
