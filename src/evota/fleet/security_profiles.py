"""Per-charger security profiles (OCPP 1.6 Security Whitepaper, 2.0.1 A00), pure.

Profile 1: HTTP Basic over plain ``ws://``. Profile 2: HTTP Basic over TLS (``wss://``).
Profile 3: TLS with a client certificate that identifies the charger (:mod:`evota.pki.identity`);
the Basic password may be left out (2.0.1 authenticates the station by its certificate), and
when it is sent it must still be right. A charger's stored profile is the least it may
connect with: a connection below it is a downgrade attempt and is refused. The profile is
only raised by an operator; lowering it is a credential change (``charger.credentials``).
"""

from __future__ import annotations

from dataclasses import dataclass

PROFILES = (1, 2, 3)
#: The security event type evota records (and alerts on) for a connection below the profile.
DOWNGRADE = "SecurityProfileDowngrade"


@dataclass(frozen=True, slots=True)
class Channel:
    """What the connection proved: TLS (directly or via a trusted proxy), and a client
    certificate that passed every identity check for the charger id in the URL."""

    tls: bool = False
    certificate: bool = False

    @property
    def profile(self) -> int:
        """The highest profile this connection satisfies."""
        return 3 if self.tls and self.certificate else 2 if self.tls else 1


PLAIN = Channel()


def password_required(profile: int, channel: Channel) -> bool:
    """Only a profile-3 charger with a verified certificate may leave out the Basic password."""
    return not (profile >= 3 and channel.profile >= 3)


def downgrade(profile: int, channel: Channel) -> str | None:
    """Why this connection is below the charger's profile, or None if it is not."""
    if profile >= 2 and not channel.tls:
        return f"security profile {profile} needs TLS (wss://); the charger connected over ws://"
    if profile >= 3 and not channel.certificate:
        return "security profile 3 needs a valid client certificate; none was presented"
    return None


def lowers(old: int, new: int) -> bool:
    """Lowering a profile weakens a charger's authentication: a credential change."""
    return new < old
