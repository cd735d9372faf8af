"""A whole campaign in virtual time: 100,000 chargers, four waves, three days of nights.

The engine's decisions over a campaign's life, with the test suite's tiny fake world
(``tests/rollout/test_engine.py``: chargers finish jobs 20-50 minutes after they start, 5%
come back on the old version once, one in 20 is in a session each half hour, 0.2% never come
online). Prints when each wave advanced, how many engine calls and job starts it took, and
each gate's outcome with the numbers it judged, so two versions of the engine can be compared
decision for decision (issue 13: cumulative gates must leave a large fleet's campaign as it
was).

    PYTHONPATH=. uv run --frozen python bench/campaign_virtual.py [--chargers 100000]
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

from tests.rollout.test_engine import NIGHT, T0, Sim, StartJob, _h, big_fleet, view

from evota.rollout.policy import Policy, WaveSpec
from evota.rollout.waves import plan_waves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=100_000)
    args = parser.parse_args()
    began = time.perf_counter()
    fleet = big_fleet(args.chargers)
    specs = [WaveSpec(count=50), WaveSpec(percent=10), WaveSpec(percent=40), WaveSpec(percent=100)]
    waves = plan_waves(list(fleet.values()), specs, seed="sim")
    policy = Policy(
        success_threshold=0.9,
        soak_seconds=3600,
        health_window_seconds=1800,
        windows=(NIGHT,),
        max_per_site_fraction=0.25,
        retries={"booted_previous_version": 1},
        retry_backoff_seconds=600,
        max_wait_seconds=6 * 3600,
    )

    def outcome(s: StartJob, attempt: int) -> str | None:
        return "booted_previous_version" if attempt == 1 and _h(s.charger_id) % 20 == 0 else None

    sim = Sim(view([list(w) for w in waves], policy), fleet, outcome, session_share=20)
    sim.run(T0 + timedelta(days=3))
    elapsed = time.perf_counter() - began
    print(f"{'chargers':<22}{args.chargers:>12,}")
    print(f"{'waves':<22}{' / '.join(f'{len(w):,}' for w in waves):>40}")
    print(f"{'state':<22}{sim.campaign.state:>12}")
    print(f"{'engine calls':<22}{sim.calls:>12,}")
    print(f"{'job starts':<22}{len(sim.started):>12,}")
    for at, wave in sim.advances:
        print(f"{'advanced to ' + str(wave):<22}{at.isoformat():>30}")
    print(f"{'finished':<22}{sim.now.isoformat():>30}")
    for g in sim.gates:
        summary = getattr(g, "outcome", "passed" if g.passed else "failed")  # type: ignore[attr-defined]
        numbers = f"{g.succeeded:,}/{g.executed:,}"  # type: ignore[attr-defined]
        print(f"{'gate ' + str(g.wave):<22}{summary + ' ' + numbers:>30}")  # type: ignore[attr-defined]
    print(f"{'wall time (s)':<22}{elapsed:>12.1f}")


if __name__ == "__main__":
    main()
