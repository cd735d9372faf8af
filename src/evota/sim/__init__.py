"""The charger fleet simulator: strict OCPP 1.6J and 2.0.1 chargers, thousands per process.

``fleet`` turns a fleet file or flags into charger specs, ``charger`` is one simulated
charger (one core behind a per-protocol wire), ``firmware`` its firmware updates and
``control`` its remote commands (one module per OCPP functional block), ``v16`` the OCPP 1.6J
wire and its dispatch table, ``v201`` the OCPP 2.0.1 wire and handlers (with
``devicemodel``), ``runner`` runs and provisions a fleet, ``cli`` is ``evota sim``.
"""

from evota.sim.charger import ChargerStats, Reply, SimConfig, SimulatedCharger, handles
from evota.sim.control.state import ControlState
from evota.sim.firmware import FirmwareAgent
from evota.sim.fleet import (
    ChargerSpec,
    FaultProfile,
    FleetError,
    FleetFileError,
    FleetSpec,
    SiteSpec,
    derive_key,
    fleet_from_flags,
    load_fleet,
    parse_fleet,
)
from evota.sim.runner import Fleet, FleetSummary, ProvisionError, ProvisionReport, wait_until
from evota.sim.v16 import HANDLERS, V16Wire  # registers the OCPP 1.6J wire
from evota.sim.v201 import V201Wire  # registers the OCPP 2.0.1 wire and handlers

__all__ = [
    "HANDLERS",
    "ChargerSpec",
    "ChargerStats",
    "ControlState",
    "FaultProfile",
    "FirmwareAgent",
    "Fleet",
    "FleetError",
    "FleetFileError",
    "FleetSpec",
    "FleetSummary",
    "ProvisionError",
    "ProvisionReport",
    "Reply",
    "SimConfig",
    "SimulatedCharger",
    "SiteSpec",
    "V16Wire",
    "V201Wire",
    "derive_key",
    "fleet_from_flags",
    "handles",
    "load_fleet",
    "parse_fleet",
    "wait_until",
]
