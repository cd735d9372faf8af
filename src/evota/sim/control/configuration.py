"""Configuration: GetConfiguration and ChangeConfiguration over the key store
(:mod:`evota.sim.control.keys`). ``HeartbeatInterval`` takes effect at once,
``AuthorizationKey`` (write-only) by reconnecting with it right after the answer (OCTT
TC_073; the ``reject_password`` and ``keep_old_password`` faults say no or ignore it), a
raised ``SecurityProfile`` (1.6 Security Whitepaper) by reconnecting on the new profile right
after the answer, when :func:`evota.sim.tls.profile_change_answer` allows it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from evota.ocpp import rpc
from evota.ocpp.errors import ErrorKind, RpcError
from evota.sim.charger import Reply, SimulatedCharger
from evota.sim.control.keys import ConfigKey, change_answer
from evota.sim.control.state import state
from evota.sim.tls import profile_change_answer


async def on_get_configuration(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    st.configuration["HeartbeatInterval"] = ConfigKey(
        str(int(charger.heartbeat_interval)), False, "int"
    )
    wanted: list[str] | None = call.payload.get("key")
    if wanted and len(wanted) > st.number("GetConfigurationMaxKeys", 100):
        raise RpcError(
            ErrorKind.OCCURRENCE_CONSTRAINT, "key: more keys than GetConfigurationMaxKeys"
        )
    if not wanted:
        names = [k for k, v in st.configuration.items() if not v.secret]
        unknown: list[str] = []
    else:
        names = [k for k in dict.fromkeys(wanted) if k in st.configuration]
        unknown = [k for k in dict.fromkeys(wanted) if k not in st.configuration]
    payload: dict[str, Any] = {
        "configurationKey": [{"key": k, **st.configuration[k].shown} for k in names]
    }
    if unknown:
        payload["unknownKey"] = unknown
    return Reply(payload)


def apply_setting(charger: SimulatedCharger, key: str, value: str) -> str:
    """Change configuration ``key`` (1.6 ChangeConfiguration, 2.0.1 SetVariables); returns
    :func:`change_answer`'s status, applying the change and its side effects when it allows."""
    st = state(charger)
    status = change_answer(st.configuration, key, value)
    if key == "SecurityProfile" and status == "Accepted":
        status = profile_change_answer(
            charger.security_profile,
            int(value),
            has_root=bool(charger.csms_roots()),
            has_certificate=charger.tls.cert is not None or charger.spec.client_ca is not None,
            can_tls=charger.url.startswith("wss://") or charger.tls_url is not None,
        )
    if key == "AuthorizationKey" and status == "Accepted":
        if charger.draw(charger.spec.faults.reject_password):
            return "Rejected"
        if charger.draw(charger.spec.faults.keep_old_password):
            return status  # says yes, goes on connecting with the old key
    if status in ("Accepted", "RebootRequired"):
        entry = st.configuration[key]
        if entry.kind == "bool":
            value = value.lower()
        st.configuration[key] = replace(entry, value=value)
        if key == "HeartbeatInterval":
            charger.heartbeat_interval = float(value)
        elif key == "AuthorizationKey":
            charger.auth_key = value  # used from the next connection on
    return status


async def on_change_configuration(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    key, value = call.payload["key"], call.payload["value"]
    before = charger.security_profile
    status = apply_setting(charger, key, value)
    if key == "SecurityProfile" and status == "Accepted" and int(value) != before:
        return Reply({"status": status}, then=lambda: switch_profile(charger, int(value)))
    if key == "AuthorizationKey" and status == "Accepted":
        return Reply({"status": status}, then=lambda: reconnect_with_new_key(charger))
    return Reply({"status": status})


async def switch_profile(charger: SimulatedCharger, profile: int) -> None:
    """Reconnect on ``profile`` (after the answer is on the wire); the
    ``no_reconnect_after_profile_switch`` fault makes the charger go dark instead."""
    charger.security_profile = profile
    if charger.draw(charger.spec.faults.no_reconnect_after_profile_switch):
        charger.offline_forever = True
    charger.reconnect()


async def reconnect_with_new_key(charger: SimulatedCharger) -> None:
    """A new password is used from the next connection: reconnect at once (after the answer)."""
    charger.reconnect()
