// An independent OCPP charger over TLS (issue 16): the `ocpp-rpc` client in strict mode, on
// wss:// with the server checked against a CA file and, for security profile 3, a client
// certificate and key (no password); with --password it is a profile-2 charger instead.
// Optionally it runs the certificate renewal flow with a CSR made outside evota (openssl):
// on the CSMS's trigger (1.6 ExtendedTriggerMessage SignChargePointCertificate, 2.0.1
// TriggerMessage SignChargingStationCertificate) it sends SignCertificate with that CSR,
// answers CertificateSigned Accepted only if the certificate is for the CSR's key (Node's
// own X.509 code checks), then reconnects presenting the new certificate and boots again.
//
// Usage:
//   node tls_client.js --endpoint wss://127.0.0.1:9443/ocpp --identity CP-1 --ca ca.pem \
//       [--cert cp.pem --key cp.key] [--password KEY] [--protocol ocpp1.6|ocpp2.0.1] \
//       [--csr cp.csr --csr-key cp-new.key] [--wait-ms 20000]
//
// stdout protocol (one line each):
//   READY_FOR_TRIGGER  booted with --csr given: waiting for the CSMS's trigger
//   {...}              the JSON summary, last line, always printed (with "error" on a crash)
// Every frame in and out is logged on stderr.
'use strict';

const fs = require('fs');
const crypto = require('crypto');
const { RPCClient } = require('ocpp-rpc');

function arg(name, fallback) {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const endpoint = arg('endpoint');
const identity = arg('identity');
const protocol = arg('protocol', 'ocpp1.6');
const caFile = arg('ca');
const certFile = arg('cert');
const keyFile = arg('key');
const password = arg('password');
const csrFile = arg('csr');
const csrKeyFile = arg('csr-key');
const waitMs = Number(arg('wait-ms', '20000'));
if (!endpoint || !identity || !caFile) {
    process.stderr.write('usage: tls_client.js --endpoint URL --identity ID --ca FILE ...\n');
    process.exit(2);
}

const summary = {
    library: `ocpp-rpc/${require('ocpp-rpc/package.json').version}`,
    connect: null,
    boot: null,
    trigger: null,
    sign_certificate: null,
    certificate_signed: null,
    reconnect: null,
    reboot: null,
    strict_validation_failures: [],
    error: null,
};

function errorInfo(err) {
    return {
        name: err?.constructor?.name,
        code: err?.code ?? null,
        message: err?.message,
        rpcErrorCode: err?.rpcErrorCode ?? null,
    };
}

function makeClient(label, cert, key) {
    const wsOpts = { ca: fs.readFileSync(caFile), minVersion: 'TLSv1.2' };
    if (cert) Object.assign(wsOpts, { cert, key });
    const client = new RPCClient({
        endpoint,
        identity,
        ...(password ? { password } : {}),
        protocols: [protocol],
        strictMode: true,
        reconnect: false,
        callTimeoutMs: 5000,
        wsOpts,
    });
    client.on('message', ({ message, outbound }) => {
        process.stderr.write(`[${label}] ${outbound ? '>>' : '<<'} ${message.toString()}\n`);
    });
    client.on('strictValidationFailure', (e) => {
        summary.strict_validation_failures.push({
            client: label, method: e.method, outbound: e.outbound, error: errorInfo(e.error),
        });
    });
    return client;
}

function bootPayload() {
    if (protocol === 'ocpp1.6') {
        return { chargePointVendor: 'NodeTLS', chargePointModel: 'ocpp-rpc' };
    }
    return { reason: 'PowerUp', chargingStation: { vendorName: 'NodeTLS', model: 'ocpp-rpc' } };
}

async function connectAndBoot(label, cert, key) {
    const client = makeClient(label, cert, key);
    try {
        await client.connect();
    } catch (err) {
        return { client: null, connect: { ok: false, ...errorInfo(err) }, boot: null };
    }
    const boot = await client.call('BootNotification', bootPayload());
    return { client, connect: { ok: true, protocol: client.protocol }, boot };
}

async function renewal(client) {
    const csr = fs.readFileSync(csrFile, 'utf8');
    const newKey = crypto.createPrivateKey(fs.readFileSync(csrKeyFile));
    let signedChain = null;
    const done = new Promise((resolve) => {
        const onTrigger = ({ params }) => {
            summary.trigger = params;
            const wanted = protocol === 'ocpp1.6'
                ? 'SignChargePointCertificate' : 'SignChargingStationCertificate';
            if (params.requestedMessage !== wanted) return { status: 'Rejected' };
            setImmediate(async () => {
                const request = protocol === 'ocpp1.6'
                    ? { csr } : { csr, certificateType: 'ChargingStationCertificate' };
                try {
                    summary.sign_certificate = await client.call('SignCertificate', request);
                } catch (err) {
                    summary.sign_certificate = errorInfo(err);
                    resolve();
                }
            });
            return { status: 'Accepted' };
        };
        client.handle(protocol === 'ocpp1.6' ? 'ExtendedTriggerMessage' : 'TriggerMessage', onTrigger);
        client.handle('CertificateSigned', ({ params }) => {
            let status = 'Rejected';
            try {
                const leaf = new crypto.X509Certificate(params.certificateChain);
                const subject = leaf.subject.split('\n');
                summary.certificate_signed = { subject, serial: leaf.serialNumber };
                if (leaf.checkPrivateKey(newKey) && subject.includes(`CN=${identity}`)) {
                    status = 'Accepted';
                    signedChain = params.certificateChain;
                }
            } catch (err) {
                summary.certificate_signed = errorInfo(err);
            }
            summary.certificate_signed.status = status;
            setImmediate(resolve);
            return { status };
        });
    });
    process.stdout.write('READY_FOR_TRIGGER\n');
    await Promise.race([done, new Promise((r) => setTimeout(r, waitMs))]);
    return signedChain;
}

async function main() {
    const cert = certFile ? fs.readFileSync(certFile) : null;
    const key = keyFile ? fs.readFileSync(keyFile) : null;
    const first = await connectAndBoot('first', cert, key);
    summary.connect = first.connect;
    summary.boot = first.boot;
    if (!first.client) return;
    if (csrFile && csrKeyFile) {
        const chain = await renewal(first.client);
        await first.client.close({ code: 1000 });
        if (chain) {
            const again = await connectAndBoot('renewed', chain, fs.readFileSync(csrKeyFile));
            summary.reconnect = again.connect;
            summary.reboot = again.boot;
            if (again.client) await again.client.close({ code: 1000 });
        }
        return;
    }
    await first.client.call('Heartbeat', {});
    await first.client.close({ code: 1000 });
}

main()
    .catch((err) => {
        summary.error = errorInfo(err);
    })
    .finally(() => {
        process.stdout.write(JSON.stringify(summary) + '\n');
        process.exit(0);
    });
