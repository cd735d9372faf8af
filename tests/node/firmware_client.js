// An independent OCPP 1.6J charger taking a signed firmware update from evota, for
// tests/test_independent_firmware_client.py: the `ocpp-rpc` client in strict mode (every frame
// checked against ocpp-rpc's own 1.6 + Security Whitepaper schemas), Node's own HTTP client
// and crypto. Nothing here shares code with evota.
//
// Usage: node firmware_client.js --endpoint URL --identity ID --key KEY --root ROOT.pem
//
// Flow: boot on 1.0.0 -> print READY -> answer SignedUpdateFirmware (after verifying the
// signing certificate against ROOT) -> download the location -> verify the signature over the
// whole file with the certificate evota sent -> report statuses -> "reboot" (new connection,
// BootNotification with the version from the image header) -> Installed + FirmwareUpdated.
// Last stdout line: a JSON summary (with "error" on a failure).
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const { RPCClient } = require('ocpp-rpc');

function arg(name) {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? process.argv[i + 1] : undefined;
}
const endpoint = arg('endpoint');
const identity = arg('identity');
const key = arg('key');
const root = new crypto.X509Certificate(fs.readFileSync(arg('root')));
const now = () => new Date().toISOString();

const summary = {
    request: null,
    certificate_trusted: null,
    http_status: null,
    etag: null,
    bytes: 0,
    sha256: null,
    signature_valid: null,
    new_version: null,
    boot_after: null,
    strict_validation_failures: [],
    error: null,
};

function connect() {
    const client = new RPCClient({
        endpoint,
        identity,
        password: key,
        protocols: ['ocpp1.6'],
        strictMode: true,
        reconnect: false,
        callTimeoutMs: 5000,
    });
    client.on('strictValidationFailure', (e) => {
        summary.strict_validation_failures.push(String(e.error && e.error.message));
    });
    return client;
}

function download(location) {
    return new Promise((resolve, reject) => {
        http.get(location, (res) => {
            summary.http_status = res.statusCode;
            summary.etag = res.headers.etag || null;
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => resolve(Buffer.concat(chunks)));
            res.on('error', reject);
        }).on('error', reject);
    });
}

async function main() {
    let client = connect();
    await client.connect();
    const boot = await client.call('BootNotification', {
        chargePointVendor: 'Evota',
        chargePointModel: 'Sim-AC22',
        firmwareVersion: '1.0.0',
    });
    if (boot.status !== 'Accepted') throw new Error(`boot ${boot.status}`);
    await client.call('StatusNotification', { connectorId: 0, errorCode: 'NoError', status: 'Available' });

    const update = new Promise((resolve) => {
        client.handle('SignedUpdateFirmware', ({ params }) => {
            summary.request = { requestId: params.requestId, retrieveDateTime: params.firmware.retrieveDateTime };
            const cert = new crypto.X509Certificate(params.firmware.signingCertificate);
            summary.certificate_trusted = cert.verify(root.publicKey) && cert.checkIssued(root);
            if (!summary.certificate_trusted) return { status: 'InvalidCertificate' };
            setImmediate(() => resolve({ params, cert }));
            return { status: 'Accepted' };
        });
    });
    process.stdout.write('READY\n');
    const { params, cert } = await update;
    const requestId = params.requestId;
    const report = (c, status) => c.call('SignedFirmwareStatusNotification', { status, requestId });

    await report(client, 'Downloading');
    const body = await download(params.firmware.location);
    summary.bytes = body.length;
    summary.sha256 = crypto.createHash('sha256').update(body).digest('hex');
    await report(client, 'Downloaded');
    summary.signature_valid = crypto.verify(
        'sha256', body, cert.publicKey, Buffer.from(params.firmware.signature, 'base64'));
    if (!summary.signature_valid) {
        await report(client, 'InvalidSignature');
        return;
    }
    await report(client, 'SignatureVerified');
    await report(client, 'Installing');
    await report(client, 'InstallRebooting');
    await client.close({ code: 1000 });

    const header = body.subarray(0, 64).toString('latin1').split('\n')[0];
    summary.new_version = header.startsWith('EVOTA-SIM-FIRMWARE ') ? header.slice(19) : 'unknown';
    client = connect();
    await client.connect();
    summary.boot_after = await client.call('BootNotification', {
        chargePointVendor: 'Evota',
        chargePointModel: 'Sim-AC22',
        firmwareVersion: summary.new_version,
    });
    await client.call('StatusNotification', { connectorId: 0, errorCode: 'NoError', status: 'Available' });
    await report(client, 'Installed');
    await client.call('SecurityEventNotification', { type: 'FirmwareUpdated', timestamp: now() });
    // Stay connected through evota's verify window, then leave.
    await new Promise((r) => setTimeout(r, Number(arg('linger-ms') || 1500)));
    await client.close({ code: 1000 });
}

main()
    .catch((e) => { summary.error = String(e && e.stack || e); })
    .finally(() => {
        process.stdout.write(JSON.stringify(summary) + '\n');
        process.exit(0);
    });
