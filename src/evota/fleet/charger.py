"""The live, in-memory view of one connected charger that the gateway consults per message."""

from __future__ import annotations

from dataclasses import dataclass, field

from evota.fleet.events import Registration


@dataclass(slots=True, eq=False)
class ChargerState:
    id: str
    registration: Registration
    booted: bool
    site_id: str | None = None
    protocol: str | None = None
    # connector id -> (status, error_code) last stored, so repeats are not history rows
    connectors: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """May the charger send CALLs other than BootNotification (1.6 errata)?"""
        return self.registration is Registration.ACCEPTED and self.booted
