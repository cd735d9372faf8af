"""Prometheus metrics.

The per-message counters are plain integers in dicts, turned into metric families only when
Prometheus scrapes: ``prometheus_client``'s ``inc()`` takes a lock and costs several times
more, and the gateway's hot path counts three things per message.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTED = Gauge(
    "evota_connected_chargers", "Chargers with an open OCPP connection", registry=REGISTRY
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
JOBS_FINISHED = Counter(
    "evota_firmware_jobs_finished",
    "Firmware update jobs that ended, by final state and failure",
    ["state", "failure"],
    registry=REGISTRY,
)
CAMPAIGN_CHARGER_ROWS_READ = Counter(
    "evota_campaign_charger_rows_read",
    "Charger rows the campaign runner read (whole campaigns at first, then noticed chargers)",
    registry=REGISTRY,
)
CAMPAIGN_JOB_ROWS_READ = Counter(
    "evota_campaign_job_rows_read",
    "Job rows the campaign runner read (whole campaigns at first, then only changed jobs)",
    registry=REGISTRY,
)
FIRMWARE_BYTES = Counter(
    "evota_firmware_bytes_served", "Firmware bytes sent to chargers", registry=REGISTRY
)
FIRMWARE_CACHE = Counter(
    "evota_firmware_cache",
    "S3 store: the node's image cache (evota.firmware.s3_storage), by event: fetched (from "
    "the bucket), damaged (a copy failed its SHA-256 and was removed), evicted, full (503)",
    ["event"],
    registry=REGISTRY,
)
CLUSTER_EVENTS = Counter(
    "evota_cluster_events",
    "Charger events relayed to the runner leader (evota.cluster.events), by outcome: "
    "published, handled, failed, dropped_flood (a charger over its rate), dropped_full",
    ["outcome"],
    registry=REGISTRY,
)
ALERTS = Counter(
    "evota_alerts", "Anomaly alerts raised, by rule (docs/alerts.md)", ["rule"], registry=REGISTRY
)

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)

#: (action, direction, type) -> count
messages: defaultdict[tuple[str, str, str], int] = defaultdict(int)
#: (code, direction) -> count
callerrors: defaultdict[tuple[str, str], int] = defaultdict(int)
#: action -> [count per bucket (+Inf last)], and the sum of observed seconds
_latency: dict[str, list[int]] = {}
_latency_sum: defaultdict[str, float] = defaultdict(float)


def observe_handler(action: str, seconds: float) -> None:
    counts = _latency.get(action)
    if counts is None:
        counts = _latency[action] = [0] * (len(BUCKETS) + 1)
    counts[bisect_left(BUCKETS, seconds)] += 1
    _latency_sum[action] += seconds


def _counter(
    name: str, doc: str, labels: list[str], values: Mapping[Any, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in list(values.items()):
        family.add_metric(list(label_values), value)
    return family


class _HotPathCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield _counter(
            "evota_ocpp_messages",
            "OCPP messages by action, direction (in/out) and message type",
            ["action", "direction", "type"],
            messages,
        )
        yield _counter(
            "evota_ocpp_callerrors",
            "CALLERRORs by code and direction",
            ["code", "direction"],
            callerrors,
        )
        hist = HistogramMetricFamily(
            "evota_ocpp_handler_seconds",
            "Time from receiving a charger's CALL to sending the answer",
            labels=["action"],
        )
        for action, counts in list(_latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            hist.add_metric([action], buckets, _latency_sum[action])
        yield hist


REGISTRY.register(_HotPathCollector())
