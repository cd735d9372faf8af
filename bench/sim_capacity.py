"""Measure how many simulated chargers one process holds (not collected by pytest).

    uv run python bench/sim_capacity.py --count 2000 --steady 60

Starts the throwaway CSMS from conftest in a *separate* process (so its cost is not counted),
runs a Fleet in this one, and reports resident memory, CPU while connecting and in steady
state (heartbeats, status, sessions with MeterValues), and how long the fleet took to boot.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.sim.conftest import SEED, FakeCsms  # noqa: E402

from evota.sim.charger import SimConfig  # noqa: E402
from evota.sim.fleet import fleet_from_flags  # noqa: E402
from evota.sim.runner import Fleet  # noqa: E402


async def serve(interval: int) -> None:
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (20000, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )
    csms = FakeCsms(interval=interval)
    await csms.start()
    print(csms.port, flush=True)
    while True:
        await asyncio.sleep(5)
        csms.received.clear()  # keep the stand-in's memory flat


def mib(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


async def measure(args: argparse.Namespace) -> None:
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before the loop is busy
        [sys.executable, __file__, "--serve", "--interval", str(args.interval)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        me = psutil.Process()
        base = mib(me)
        config = SimConfig(
            speed=args.speed,
            session_rate=args.session_rate,
            meter_interval=60.0,
            session_duration=(600.0, 1800.0),
        )
        fleet = Fleet.from_spec(
            fleet_from_flags(args.count, seed=SEED),
            f"ws://127.0.0.1:{port}/ocpp",
            config=config,
            ramp_up=args.ramp_up,
        )
        cpu0, t0 = me.cpu_times(), time.monotonic()
        await fleet.start()
        await fleet.wait_for_all(lambda c: c.accepted, timeout=args.ramp_up + 120)
        booted = time.monotonic() - t0
        cpu1 = me.cpu_times()
        boot_cpu = cpu1.user + cpu1.system - cpu0.user - cpu0.system
        after_boot = mib(me)
        sent0 = fleet.summary().messages_sent
        await asyncio.sleep(args.steady)
        cpu2 = me.cpu_times()
        steady_cpu = cpu2.user + cpu2.system - cpu1.user - cpu1.system
        summary = fleet.summary()
        steady = mib(me)
        t_stop = time.monotonic()
        await fleet.stop()
        stop_s = time.monotonic() - t_stop
        msgs = summary.messages_sent - sent0
        print(
            f"chargers                 {args.count} (speed {args.speed}, "
            f"{args.session_rate} sessions/h, heartbeat {args.interval} s)"
        )
        print(
            f"all accepted after       {booted:.1f} s (ramp-up {args.ramp_up} s), "
            f"CPU {boot_cpu:.1f} s"
        )
        print(
            f"RSS                      {base:.0f} MiB before, {after_boot:.0f} MiB booted, "
            f"{steady:.0f} MiB after {args.steady:.0f} s steady"
        )
        print(f"per charger              {(steady - base) * 1024 / args.count:.0f} KiB")
        print(
            f"steady CPU               {100 * steady_cpu / args.steady:.1f} % of one core, "
            f"{msgs / args.steady:.0f} msgs/s sent"
        )
        print(
            f"sessions                 {summary.sessions_completed} done, "
            f"{summary.sessions_active} active; callerrors {summary.callerrors}, "
            f"timeouts {summary.call_timeouts}, failed connects {summary.connect_failures}"
        )
        print(
            f"stop                     {stop_s:.1f} s; tasks left "
            f"{len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])}"
        )
    finally:
        server.terminate()
        server.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--steady", type=float, default=60.0)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--session-rate", type=float, default=2.0)
    parser.add_argument("--interval", type=int, default=60, help="heartbeat interval the CSMS sets")
    parser.add_argument("--ramp-up", type=float, default=10.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(serve(args.interval) if args.serve else measure(args))


if __name__ == "__main__":
    main()
