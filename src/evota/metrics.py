"""Prometheus metrics. Label children are cached so the hot path does a dict lookup, not a
label resolution, per message."""

from __future__ import annotations

from functools import cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTED = Gauge(
    "evota_connected_chargers", "Chargers with an open OCPP connection", registry=REGISTRY
)
MESSAGES = Counter(
    "evota_ocpp_messages",
    "OCPP messages by action, direction (in/out) and message type",
    ["action", "direction", "type"],
    registry=REGISTRY,
)
CALLERRORS = Counter(
    "evota_ocpp_callerrors",
    "CALLERRORs by code and direction",
    ["code", "direction"],
    registry=REGISTRY,
)
HANDLER_SECONDS = Histogram(
    "evota_ocpp_handler_seconds",
    "Time from receiving a charger's CALL to sending the answer",
    ["action"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
    registry=REGISTRY,
)
HANDSHAKES = Counter(
    "evota_ocpp_handshakes",
    "WebSocket upgrade outcomes by HTTP status",
    ["status"],
    registry=REGISTRY,
)
WRITE_BACKLOG = Gauge(
    "evota_fleet_write_backlog", "Charger reports waiting to be written", registry=REGISTRY
)


@cache
def message(action: str, direction: str, type_: str) -> Counter:
    return MESSAGES.labels(action, direction, type_)


@cache
def callerror(code: str, direction: str) -> Counter:
    return CALLERRORS.labels(code, direction)


@cache
def handler_seconds(action: str) -> Histogram:
    return HANDLER_SECONDS.labels(action)
