"""evota: a CSMS for OTA firmware lifecycle and OTA control of EV charger fleets."""

__version__ = "0.1.0"
