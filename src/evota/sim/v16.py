"""OCPP 1.6J on the simulated charger: the wire adapter and the dispatch table.

:class:`V16Wire` spells what the charger core does as 1.6 messages (BootNotification,
StatusNotification per connector, Authorize/StartTransaction/MeterValues/StopTransaction, the
firmware and security notifications); :data:`HANDLERS` routes each CSMS-initiated 1.6 action
(and the Security Whitepaper's) to its functional block in :mod:`evota.sim.control` or to
:mod:`evota.sim.firmware`. :mod:`evota.sim.v201` is the same for 2.0.1.
"""

from __future__ import annotations

from typing import Any

from evota.ocpp.errors import V16_SPELLING, ErrorKind
from evota.ocpp.schemas import SchemaSet, v16
from evota.sim import firmware
from evota.sim.charger import WIRES, Handler, SimulatedCharger, Transaction, Wire
from evota.sim.control import (
    authorization,
    availability,
    certificates,
    configuration,
    datatransfer,
    diagnostics,
    smartcharging,
    transactions,
    trigger,
)

SUBPROTOCOL = "ocpp1.6"


class V16Wire(Wire):
    """OCPP 1.6J (one instance per charger): a plain 1.6 charger, or one with the Security
    Whitepaper extension (``firmware_update`` other than ``plain``)."""

    protocol = SUBPROTOCOL
    #: The 1.6 simulator boots on every connection.
    boot_every_connection = True
    #: Plain 1.6 firmware statuses only (no DownloadScheduled) for unsigned updates.
    detailed_firmware = False

    @property
    def spelling(self) -> dict[ErrorKind, str]:
        return V16_SPELLING

    def schemas(self) -> SchemaSet:
        return v16()

    def handlers(self) -> dict[str, Handler]:
        return HANDLERS

    # -- charger-initiated messages -------------------------------------------------------------
    def boot(self, charger: SimulatedCharger, reason: str) -> dict[str, Any]:
        """The BootNotification payload (1.6 has no boot reason)."""
        spec = charger.spec
        return {
            "chargePointVendor": spec.vendor,
            "chargePointModel": spec.model,
            "chargePointSerialNumber": spec.serial_number,
            "firmwareVersion": charger.firmware_version,
        }

    async def status(
        self, charger: SimulatedCharger, connector: int, status: str, error_code: str, force: bool
    ) -> None:
        """Report a connector status (the core speaks 1.6 statuses; 0 is the whole charger)."""
        await charger.call(
            "StatusNotification",
            {
                "connectorId": connector,
                "errorCode": error_code,
                "status": status,
                "timestamp": charger._now(),
            },
        )

    def authorize_remote(self, charger: SimulatedCharger) -> bool:
        """Whether a remotely started session is authorized first (1.6 sim: always)."""
        return True

    async def authorize(self, charger: SimulatedCharger, txn: Transaction) -> bool:
        auth = await charger.call("Authorize", {"idTag": txn.id_tag})
        return bool(auth["idTagInfo"]["status"] == "Accepted")

    async def start(self, charger: SimulatedCharger, txn: Transaction) -> bool:
        """Open the transaction (sets its id); False: the CSMS refused the id tag."""
        started = await charger.call(
            "StartTransaction",
            {
                "connectorId": txn.connector_id,
                "idTag": txn.id_tag,
                "meterStart": txn.meter_start,
                "timestamp": charger._now(),
            },
        )
        txn.transaction_id = started["transactionId"]
        return bool(started["idTagInfo"]["status"] == "Accepted")

    async def meter(self, charger: SimulatedCharger, txn: Transaction) -> None:
        assert txn.transaction_id is not None
        await charger.call(
            "MeterValues",
            {
                "connectorId": txn.connector_id,
                "transactionId": txn.transaction_id,
                "meterValue": [
                    {
                        "timestamp": charger._now(),
                        "sampledValue": [
                            {
                                "value": str(int(charger.meter_wh[txn.connector_id])),
                                "context": "Sample.Periodic",
                                "measurand": "Energy.Active.Import.Register",
                                "location": "Outlet",
                                "unit": "Wh",
                            }
                        ],
                    }
                ],
            },
        )

    async def stop(
        self, charger: SimulatedCharger, txn: Transaction, reason: str, meter_stop: int
    ) -> None:
        assert txn.transaction_id is not None
        await charger.call(
            "StopTransaction",
            {
                "transactionId": txn.transaction_id,
                "idTag": txn.id_tag,
                "meterStop": meter_stop,
                "timestamp": charger._now(),
                "reason": reason,
            },
        )

    def firmware_status(self, status: str, request_id: int | None) -> tuple[str, dict[str, Any]]:
        """A plain update (no request id) reports 1.6 core statuses, a signed one the
        extension's."""
        if request_id is None:
            return "FirmwareStatusNotification", {"status": status}
        return "SignedFirmwareStatusNotification", {"status": status, "requestId": request_id}

    def security_event(
        self, charger: SimulatedCharger, kind: str, tech_info: str
    ) -> tuple[str, dict[str, Any]] | None:
        """None for a charger without the security extension (``firmware_update: plain``)."""
        if charger.spec.firmware_update == "plain":
            return None
        payload = {"type": kind, "timestamp": charger._now(), "techInfo": tech_info[:255]}
        return "SecurityEventNotification", payload


WIRES[SUBPROTOCOL] = V16Wire

#: Inbound 1.6 action -> handler, by feature profile. Payloads arrive schema-validated and
#: replies are checked too; a charger may get its own table (``SimulatedCharger(handlers=)``).
HANDLERS: dict[str, Handler] = {
    # Core
    "ChangeAvailability": availability.on_change_availability,
    "ChangeConfiguration": configuration.on_change_configuration,
    "ClearCache": authorization.on_clear_cache,
    "DataTransfer": datatransfer.on_data_transfer,
    "GetConfiguration": configuration.on_get_configuration,
    "RemoteStartTransaction": transactions.on_remote_start_transaction,
    "RemoteStopTransaction": transactions.on_remote_stop_transaction,
    "Reset": availability.on_reset,
    "UnlockConnector": transactions.on_unlock_connector,
    # Firmware Management
    "GetDiagnostics": diagnostics.on_get_diagnostics,
    "UpdateFirmware": firmware.on_update_firmware,
    # Local Auth List Management
    "GetLocalListVersion": authorization.on_get_local_list_version,
    "SendLocalList": authorization.on_send_local_list,
    # Smart Charging
    "ClearChargingProfile": smartcharging.on_clear_charging_profile,
    "SetChargingProfile": smartcharging.on_set_charging_profile,
    # Remote Trigger
    "TriggerMessage": trigger.on_trigger_message,
    # Security Whitepaper extension (CALLERROR NotImplemented on a plain 1.6 charger)
    "CertificateSigned": certificates.on_certificate_signed,
    "DeleteCertificate": certificates.on_delete_certificate,
    "ExtendedTriggerMessage": trigger.on_extended_trigger_message,
    "GetInstalledCertificateIds": certificates.on_get_installed_certificate_ids,
    "GetLog": diagnostics.on_get_log,
    "InstallCertificate": certificates.on_install_certificate,
    "SignedUpdateFirmware": firmware.on_signed_update_firmware,
}
