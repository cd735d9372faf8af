"""Charging-session rules shared by the fleet store and the health gates."""

from __future__ import annotations

# Stop reasons that mean the session ended because something went wrong on the charger side,
# not because the driver or the operator ended it. Health gates count these as failures.
INTERRUPTING_REASONS = frozenset(
    {"EmergencyStop", "PowerLoss", "Reboot", "HardReset", "SoftReset", "Other"}
)


def session_outcome(stop_reason: str | None) -> str:
    """``completed`` or ``interrupted``; 1.6 says a missing reason means ``Local``."""
    return "interrupted" if stop_reason in INTERRUPTING_REASONS else "completed"
