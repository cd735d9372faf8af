"""Benchmark the campaign engine's pure core on a 100,000-charger campaign.

Measures, in one process with no I/O: eligibility (query + image checks + exclusions), wave
planning (spread over sites and models), one gate evaluation over the biggest wave, and
`decide` in the situations the shell meets most (starting a wave; a wave all in flight; a
finished wave at its gate). Prints a table; the target is < 1 s for planning plus a gate.

    uv run --frozen python bench/campaign.py [--chargers 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from typing import Any

from evota.firmware.updates import ImageFacts
from evota.rollout.campaign import CampaignView, JobView
from evota.rollout.engine import decide
from evota.rollout.gate import Health, evaluate_gate
from evota.rollout.policy import AutoStopRule, Policy, Target, WaveSpec, Window
from evota.rollout.target import plan_eligibility
from evota.rollout.waves import plan_waves
from evota.selection import ChargerSnapshot

NOW = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")


def fleet(n: int) -> list[ChargerSnapshot]:
    out = []
    for i in range(n):
        out.append(
            ChargerSnapshot(
                id=f"CP-{i:06d}",
                vendor="Acme" if i % 10 else "Zap",
                model=("AC11", "AC22", "DC50")[i % 3],
                hardware_revision="r2",
                firmware_version=("1.8.0", "1.9.0", "1.9.3", "2.4.0")[i % 4],
                site_id=f"site-{i // 8}",
                region=("DE", "US", "JP", "UK")[(i // 8) % 4],
                tags=frozenset({"public"} if i % 2 else {"fleet"}),
                timezone=ZONES[(i // 8) % 4],
                connected=i % 97 != 0,
                last_seen=NOW - timedelta(days=(i % 97 == 0) * (i % 20)),
            )
        )
    return out


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chargers", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n, repeat = args.chargers, args.repeat
    chargers = fleet(n)
    by_id = {c.id: c for c in chargers}
    image = ImageFacts(id="fw", vendor="Acme", version="2.4.0", state="released",
                       models=("AC11", "AC22", "DC50"))  # fmt: skip
    target = Target(vendors=("acme",), older_than_target=True)
    specs = [WaveSpec(percent=1), WaveSpec(percent=5), WaveSpec(percent=25), WaveSpec(percent=100)]
    policy = Policy(
        windows=(Window(frozenset(range(7)), clock(22), clock(6)),),
        max_per_site_fraction=0.25,
        max_concurrent=20_000,
        start_rate_per_minute=5_000,
        retries={"booted_previous_version": 1, "timed_out": 1},
        auto_stop=(AutoStopRule(frozenset({"unhealthy"}), 20, 5, "abort_and_rollback"),),
    )
    rows: list[tuple[str, str, float]] = []

    t_elig, elig = timed(lambda: plan_eligibility(target, image, chargers, NOW), repeat)
    rows.append(("plan_eligibility", f"{n:,} chargers -> {len(elig.eligible):,} eligible", t_elig))
    eligible = [by_id[c] for c in elig.eligible]
    t_waves, waves = timed(lambda: plan_waves(eligible, specs, seed="bench"), repeat)
    sizes = "/".join(f"{len(w):,}" for w in waves)
    rows.append(("plan_waves", f"waves {sizes}", t_waves))

    big = len(waves) - 1
    done = NOW - timedelta(hours=2)
    jobs: dict[str, list[JobView]] = {}
    jid = 0
    for wave in waves:
        for cid in wave:
            jid += 1
            failed = jid % 200 == 0
            state = "failed" if failed else "succeeded"
            failure = "installation_failed" if failed else None
            jobs[cid] = [JobView(cid, jid, "update", state, failure, by_id[cid].firmware_version,
                                 "2.4.0", done - timedelta(hours=1), done)]  # fmt: skip
    health = {cid: Health(4, 0, 1, 1.0, 4, 0, 1, 1.0, False, True) for cid in waves[big]}
    wave_jobs = [jobs[c][0] for c in waves[big]]
    t_gate, gate = timed(lambda: evaluate_gate(big, wave_jobs, by_id, health, policy), repeat)
    rows.append(
        ("evaluate_gate", f"wave of {gate.executed:,}, wilson {gate.wilson_lower:.4f}", t_gate)
    )

    def view(**kw: Any) -> CampaignView:
        base: dict[str, Any] = dict(
            id="bench", state="running", waves=waves, current_wave=big, policy=policy,
            target_version="2.4.0", wave_started_at=NOW - timedelta(hours=3), wave_done_at=None,
        )  # fmt: skip
        base.update(kw)
        return CampaignView(**base)

    earlier = {c: js for c, js in jobs.items() if c not in set(waves[big])}
    t_start, d = timed(lambda: decide(view(), earlier, by_id, {}, NOW), repeat)
    rows.append(("decide: start last wave", f"{len(d.start):,} StartJobs", t_start))
    running = {
        **earlier,
        **{c: [JobView(c, 10**7 + i, "update", "downloading", None, "1.9.0", "2.4.0", NOW, None)]
           for i, c in enumerate(waves[big])},
    }  # fmt: skip
    t_flight, d = timed(lambda: decide(view(), running, by_id, {}, NOW), repeat)
    rows.append(("decide: wave in flight", f"{len(d.start):,} StartJobs", t_flight))
    at_gate = view(wave_done_at=NOW - timedelta(hours=2))
    t_dg, d = timed(lambda: decide(at_gate, jobs, by_id, health, NOW), repeat)
    rows.append(("decide: gate + complete", f"state {d.state}", t_dg))

    total = t_elig + t_waves + t_gate
    print(f"{'step':<26} {'what':<44} {'median s':>9}")
    for name, what, secs in rows:
        print(f"{name:<26} {what:<44} {secs:>9.3f}")
    print(f"{'planning + gate':<26} {'target < 1 s':<44} {total:>9.3f}")


if __name__ == "__main__":
    main()
