"""Local authorization: the authorization cache (ClearCache) and the versioned local list
(SendLocalList, GetLocalListVersion; rules in :mod:`evota.sim.control.locallist`)."""

from __future__ import annotations

from evota.ocpp import rpc
from evota.sim.charger import Reply, SimulatedCharger
from evota.sim.control.locallist import apply_local_list
from evota.sim.control.state import state


async def on_clear_cache(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    if not st.flag("AuthorizationCacheEnabled"):
        return Reply({"status": "Rejected"})
    st.auth_cache.clear()
    return Reply({"status": "Accepted"})


async def on_send_local_list(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    p = call.payload
    status, st.local_list = apply_local_list(
        st.local_list,
        p["listVersion"],
        p["updateType"],
        p.get("localAuthorizationList", []),
        max_send=st.number("SendLocalListMaxLength", 500),
        max_length=st.number("LocalAuthListMaxLength", 1000),
        enabled=st.flag("LocalAuthListEnabled"),
    )
    return Reply({"status": status})


async def on_get_local_list_version(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    return Reply({"listVersion": st.local_list.version if st.flag("LocalAuthListEnabled") else -1})
