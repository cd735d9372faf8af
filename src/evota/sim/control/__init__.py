"""Remote commands on a simulated charger: every OCPP 1.6 CSMS-initiated control message
(and the Security Whitepaper's), behaving the way a well-made station does, one module per
OCPP functional block:

- :mod:`~evota.sim.control.availability`: Reset, ChangeAvailability (per connector, 0: the
  whole charger, persistent across reboots).
- :mod:`~evota.sim.control.configuration`: GetConfiguration, ChangeConfiguration over the key
  store (:mod:`~evota.sim.control.keys`, pure).
- :mod:`~evota.sim.control.authorization`: the authorization cache and the versioned local
  list (:mod:`~evota.sim.control.locallist`, pure).
- :mod:`~evota.sim.control.transactions`: remote start/stop, UnlockConnector.
- :mod:`~evota.sim.control.smartcharging`: charging profiles, which cap the power sessions
  draw (:mod:`~evota.sim.control.schedules`, pure).
- :mod:`~evota.sim.control.trigger`: TriggerMessage, ExtendedTriggerMessage.
- :mod:`~evota.sim.control.diagnostics`: GetDiagnostics, GetLog (generated files uploaded
  over HTTP).
- :mod:`~evota.sim.control.certificates`: the certificate store.
- :mod:`~evota.sim.control.datatransfer`: DataTransfer.

What they change on the charger is one :class:`~evota.sim.control.state.ControlState`
(``state(charger)``). :data:`evota.sim.v16.HANDLERS` routes the 1.6 actions to these modules;
the 2.0.1 handlers (:mod:`evota.sim.v201`) reuse the same state and rules through their own
names (the configuration store is also the 2.0.1 device model's). Security-extension messages
get CALLERROR NotImplemented from a ``plain`` 1.6 charger (one without the extension), as
:mod:`evota.sim.firmware` does for SignedUpdateFirmware. Decisions that have rules
(configuration values, the local list, charging profile limits) are pure functions,
property-tested in ``tests/sim/test_control.py``.
"""
