"""The long fuzz run of the OCPP gateway: tests/gateway/test_fuzz.py's harness, many frames.

Starts a real evota (SQLite in a temporary directory, or ``--database-url``), an accepted 1.6
and an accepted 2.0.1 charger, and sends generated hostile frames in batches; after every
batch it checks that each CALL got a valid answer, that the writer is alive and stores a
witness charger's boot, and that the API and console serve the chargers without a 5xx.
Violations are counted and the first few printed, not raised, so a long run finishes.

    uv run python bench/fuzz_gateway.py --frames 100000
    uv run python bench/fuzz_gateway.py --frames 20000 --seed 7 --database-url postgresql+asyncpg://...
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path

import structlog
from hypothesis import HealthCheck, Phase, given, seed, settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the harness lives with the tests

from tests.gateway.test_fuzz import Frame, Harness, batches  # noqa: E402

from evota.ocpp.dialect import DIALECTS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="frames to send in all")
    parser.add_argument("--batch", type=int, default=64, help="most frames per charger per batch")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (same run each time)")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = parser.parse_args()
    # evota logs every CALLERROR at info: keep the run's output to the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

    with tempfile.TemporaryDirectory(prefix="evota-fuzz-") as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'evota.db'}"
        harness = Harness(Path(tmp), url)
        started = time.perf_counter()
        with harness.started() as h:

            @seed(args.seed)
            @settings(
                max_examples=10**9,
                database=None,
                deadline=None,
                phases=[Phase.generate],  # no shrinking: violations are counted, not raised
                suppress_health_check=list(HealthCheck),
            )
            @given(
                frames_16=batches(DIALECTS["ocpp1.6"], args.batch),
                frames_201=batches(DIALECTS["ocpp2.0.1"], args.batch),
            )
            def one_batch(frames_16: list[Frame], frames_201: list[Frame]) -> None:
                if h.stats.frames >= args.frames:
                    raise _Done
                h.batch(frames_16, frames_201)

            with contextlib.suppress(_Done):  # enough frames were sent
                one_batch()
        elapsed = time.perf_counter() - started
    print_table(harness, elapsed, url, args)
    return 1 if harness.stats.violations else 0


class _Done(Exception):
    """Enough frames were sent."""


def print_table(harness: Harness, elapsed: float, url: str, args: argparse.Namespace) -> None:
    s = harness.stats
    backend = url.split("+", 1)[0].split(":", 1)[0]
    rows = [
        ("database", backend),
        ("frames sent", f"{s.frames}"),
        ("CALLRESULTs", f"{s.results}"),
        ("CALLERRORs", f"{sum(s.errors.values())}"),
        *((f"  {code}", f"{n}") for code, n in s.errors.most_common()),
        ("frames needing no answer", f"{s.unanswered}"),
        ("batches (witness boots stored)", f"{s.boots}"),
        ("frames/s (incl. checks)", f"{s.frames / elapsed:,.0f}"),
        ("elapsed", f"{elapsed:,.1f} s"),
        ("writer alive at the end", "yes" if harness.writer_alive else "NO"),
        ("API/console 5xx", f"{s.server_errors}"),
        ("violations", f"{len(s.violations)}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"fuzz_gateway --frames {args.frames} --batch {args.batch} --seed {args.seed}")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value.rjust(12)} |")
    for violation in s.violations[:20]:
        print("VIOLATION", violation[:400])


if __name__ == "__main__":
    raise SystemExit(main())
