// Baseline central system for bench/gateway.py: the `ocpp-rpc` package in strict mode.
//
// Written the way the ocpp-rpc README shows a barebones OCPP 1.6J server, minus the
// per-message console.log (the benchmark measures the library, not stdout).
// OCPP 2.0.1 too (bench/gateway.py --protocol ocpp2.0.1): the subprotocol is agreed per
// connection, and strict mode validates against the agreed protocol's schemas.
// Usage: node ocpp_rpc_server.js --port 9000 [--host 127.0.0.1]
'use strict';

const { RPCServer } = require('ocpp-rpc');

function arg(name, fallback) {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg('host', '127.0.0.1');
const port = Number(arg('port', '9000'));

const server = new RPCServer({
    protocols: ['ocpp1.6', 'ocpp2.0.1'],
    strictMode: true,
});

let validationFailures = 0;

// Security profile 1: the upgrade must carry HTTP Basic auth with identity as user and a
// 16-40 byte AuthorizationKey as password. Keys are not checked against a store (the bench
// measures the message path; evota does check them, against a salted hash).
server.auth((accept, reject, handshake) => {
    const pw = handshake.password;
    if (!pw || pw.length < 16 || pw.length > 40) {
        reject(401, 'Basic auth required');
        return;
    }
    accept({ identity: handshake.identity });
});

server.on('client', (client) => {
    client.on('strictValidationFailure', () => {
        validationFailures += 1;
    });
    client.handle('BootNotification', () => ({
        status: 'Accepted',
        interval: 300,
        currentTime: new Date().toISOString(),
    }));
    client.handle('Heartbeat', () => ({ currentTime: new Date().toISOString() }));
    client.handle('StatusNotification', () => ({}));
    client.handle('TransactionEvent', ({ params }) =>
        params.idToken ? { idTokenInfo: { status: 'Accepted' } } : {},
    );
});

async function main() {
    await server.listen(port, host);
    console.log(`ocpp-rpc ${require('ocpp-rpc/package.json').version} strict listening on ${host}:${port}`);
}

async function shutdown() {
    console.log(`strict validation failures: ${validationFailures}`);
    await server.close({ force: true, awaitPending: false });
    process.exit(0);
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
