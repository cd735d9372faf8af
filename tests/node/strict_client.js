// An independent OCPP 1.6J charger for tests/test_ocpp_rpc_client.py: the `ocpp-rpc` client
// in strict mode (every CALL, CALLRESULT and inbound CALL is checked against ocpp-rpc's own
// copy of the 1.6 JSON schemas), run through a scripted session against evota.
//
// Usage:
//   node strict_client.js --endpoint ws://127.0.0.1:9000/ocpp --identity CP-1 --key KEY \
//       [--fresh-identity CP-2] [--reset-timeout-ms 10000]
// or the same through EVOTA_OCPP_ENDPOINT, EVOTA_IDENTITY, EVOTA_KEY, EVOTA_FRESH_IDENTITY.
// Both identities must be provisioned with KEY; the fresh one must never have been accepted.
//
// stdout protocol (one line each):
//   READY_FOR_RESET   the strict client is booted and waits for a Reset CALL from evota
//   {...}             the JSON summary, last line, always printed (with "error" on a crash)
// Every frame in and out is logged on stderr.
'use strict';

const { RPCClient } = require('ocpp-rpc');
const standardValidators = require('ocpp-rpc/lib/standard-validators');

function arg(name, envName, fallback) {
    const i = process.argv.indexOf(`--${name}`);
    if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
    return process.env[envName] ?? fallback;
}

const endpoint = arg('endpoint', 'EVOTA_OCPP_ENDPOINT');
const identity = arg('identity', 'EVOTA_IDENTITY');
const key = arg('key', 'EVOTA_KEY');
const freshIdentity = arg('fresh-identity', 'EVOTA_FRESH_IDENTITY', identity && `${identity}-fresh`);
const resetTimeoutMs = Number(arg('reset-timeout-ms', 'EVOTA_RESET_TIMEOUT_MS', '10000'));
if (!endpoint || !identity || !key) {
    process.stderr.write('usage: strict_client.js --endpoint URL --identity ID --key KEY\n');
    process.exit(2);
}

const STRICT_16 = standardValidators.find((v) => v.subprotocol === 'ocpp1.6');
// For the client that sends schema-invalid CALLs: it still validates what evota answers
// (`*.conf`), but not the `*.req` payloads, so the bad ones reach evota.
const CONF_ONLY_16 = {
    subprotocol: 'ocpp1.6',
    validate(schemaId, params) {
        return schemaId.endsWith('.req') ? true : STRICT_16.validate(schemaId, params);
    },
};

const now = () => new Date().toISOString();
const GOOD_STATUS = { connectorId: 1, errorCode: 'NoError', status: 'Available' };

const summary = {
    library: `ocpp-rpc/${require('ocpp-rpc/package.json').version}`,
    protocol: {},
    boot: null,
    session: {},
    reset: { received: [], answered: null },
    bad_payloads: {},
    after_bad_payloads: null,
    before_boot: null,
    strict_self_check: null,
    strict_validation_failures: [],
    bad_messages: [],
    error: null,
};

function errorInfo(err) {
    return {
        name: err?.constructor?.name,
        rpcErrorCode: err?.rpcErrorCode ?? null,
        message: err?.message,
        details: err?.details ?? null,
    };
}

// A client whose every frame is logged and whose protocol-level complaints land in the summary.
function makeClient(label, id, strictModeValidators) {
    const client = new RPCClient({
        endpoint,
        identity: id,
        password: key,
        protocols: ['ocpp1.6'],
        strictMode: true,
        strictModeValidators,
        reconnect: false,
        callTimeoutMs: 5000,
    });
    client.lastInbound = new Map(); // message id -> raw inbound frame
    client.sentFrames = 0;
    client.on('message', ({ message, outbound }) => {
        const text = message.toString();
        if (outbound) client.sentFrames += 1;
        process.stderr.write(`[${label}] ${outbound ? '>>' : '<<'} ${text}\n`);
        if (!outbound) {
            try {
                const frame = JSON.parse(text);
                if (Array.isArray(frame) && typeof frame[1] === 'string') {
                    client.lastInbound.set(frame[1], frame);
                }
            } catch {
                // badMessage reports it
            }
        }
    });
    client.on('call', ({ outbound, payload }) => {
        if (outbound) client.lastCallId = payload[1];
    });
    client.on('strictValidationFailure', (e) => {
        const sink = client.selfChecking ? client.selfCheckFailures : summary.strict_validation_failures;
        sink.push({
            client: label,
            method: e.method,
            outbound: e.outbound,
            isCall: e.isCall,
            params: e.params,
            result: e.result,
            error: errorInfo(e.error),
        });
    });
    client.on('badMessage', ({ buffer, error }) => {
        summary.bad_messages.push({ client: label, frame: buffer.toString(), error: errorInfo(error) });
    });
    return client;
}

// Sends a CALL and returns what came back: the result, or the CALLERROR as ocpp-rpc reports it
// plus the raw frame evota sent.
async function attempt(client, action, payload) {
    client.lastCallId = null;
    try {
        const result = await client.call(action, payload);
        return { ok: true, result };
    } catch (err) {
        const frame = client.lastInbound.get(client.lastCallId) ?? null;
        return { ok: false, ...errorInfo(err), frame };
    }
}

// What ocpp-rpc's own strict validator thinks of a payload (informative only).
function localVerdict(action, payload) {
    try {
        STRICT_16.validate(`urn:${action}.req`, payload);
        return 'valid';
    } catch (err) {
        return err.rpcErrorCode;
    }
}

async function strictSession() {
    const client = makeClient('strict', identity);
    let resolveReset;
    const resetSeen = new Promise((resolve) => {
        resolveReset = resolve;
    });
    client.handle('Reset', ({ params }) => {
        summary.reset.received.push(params);
        resolveReset();
        return { status: 'Accepted' };
    });
    client.on('response', ({ outbound, payload }) => {
        if (outbound) summary.reset.answered = payload;
    });

    await client.connect();
    summary.protocol.strict = client.protocol;
    const boot = await client.call('BootNotification', {
        chargePointVendor: 'Independent',
        chargePointModel: 'ocpp-rpc-strict',
        chargePointSerialNumber: 'SN-RPC-1',
        firmwareVersion: '2.2.1',
    });
    summary.boot = boot;
    const s = summary.session;
    s.heartbeat = await client.call('Heartbeat', {});
    s.status_available = await client.call('StatusNotification', { ...GOOD_STATUS, timestamp: now() });
    s.authorize = await client.call('Authorize', { idTag: 'TAG-RPC' });
    s.start = await client.call('StartTransaction', {
        connectorId: 1,
        idTag: 'TAG-RPC',
        meterStart: 1000,
        timestamp: now(),
    });
    s.status_charging = await client.call('StatusNotification', {
        ...GOOD_STATUS,
        status: 'Charging',
        timestamp: now(),
    });
    s.stop = await client.call('StopTransaction', {
        meterStop: 4000,
        timestamp: now(),
        transactionId: s.start.transactionId,
        idTag: 'TAG-RPC',
        reason: 'EVDisconnected',
    });

    // Proof that strict mode is really on for this connection: an invalid CALL is refused
    // locally and never reaches evota.
    client.selfChecking = true;
    client.selfCheckFailures = [];
    const sentBefore = client.sentFrames;
    const selfCheck = await attempt(client, 'StatusNotification', { connectorId: 1 });
    client.selfChecking = false;
    summary.strict_self_check = {
        refused_locally: !selfCheck.ok && client.sentFrames === sentBefore,
        rpcErrorCode: selfCheck.rpcErrorCode ?? null,
        events: client.selfCheckFailures.length,
    };

    process.stdout.write('READY_FOR_RESET\n');
    let timer;
    const timedOut = new Promise((resolve) => {
        timer = setTimeout(() => resolve('timeout'), resetTimeoutMs);
    });
    const outcome = await Promise.race([resetSeen.then(() => 'reset'), timedOut]);
    clearTimeout(timer);
    if (outcome !== 'reset') summary.reset.timed_out = true;
    await client.close({ awaitPending: true });
}

const BAD_PAYLOADS = {
    'missing-field': ['StatusNotification', { connectorId: 1, status: 'Available' }],
    'wrong-type': ['StatusNotification', { ...GOOD_STATUS, connectorId: 'one' }],
    'bad-enum': ['StatusNotification', { ...GOOD_STATUS, status: 'Exploded' }],
    'extra-property': ['StatusNotification', { ...GOOD_STATUS, colour: 'red' }],
    'too-long-string': ['StatusNotification', { ...GOOD_STATUS, info: 'i'.repeat(51) }],
    'bad-date-time': ['StatusNotification', { ...GOOD_STATUS, timestamp: 'tuesday' }],
    'unknown-action': ['MakeCoffee', {}],
    'csms-only-action': ['Reset', { type: 'Soft' }],
};

// Same identity, reconnecting after its accepted boot: no second BootNotification needed.
async function badPayloadSession() {
    const client = makeClient('lenient', identity, [CONF_ONLY_16]);
    await client.connect();
    summary.protocol.lenient = client.protocol;
    for (const [name, [action, payload]] of Object.entries(BAD_PAYLOADS)) {
        const outcome = await attempt(client, action, payload);
        outcome.action = action;
        outcome.payload = payload;
        outcome.ocpp_rpc_local_verdict = action === 'StatusNotification' ? localVerdict(action, payload) : null;
        summary.bad_payloads[name] = outcome;
    }
    // The connection survived every bad frame and evota's answer is still schema-valid.
    summary.after_bad_payloads = await attempt(client, 'Heartbeat', {});
    await client.close({ awaitPending: true });
}

// A charger that was never accepted: a valid CALL before BootNotification is refused; after
// the boot the same CALL goes through.
async function beforeBootSession() {
    const client = makeClient('fresh', freshIdentity);
    await client.connect();
    summary.protocol.fresh = client.protocol;
    const payload = { ...GOOD_STATUS, timestamp: now() };
    const before = await attempt(client, 'StatusNotification', payload);
    summary.bad_payloads['call-before-boot'] = { ...before, action: 'StatusNotification', payload };
    const boot = await attempt(client, 'BootNotification', {
        chargePointVendor: 'Independent',
        chargePointModel: 'ocpp-rpc-strict',
    });
    const after = await attempt(client, 'StatusNotification', { ...payload, timestamp: now() });
    summary.before_boot = { boot, after };
    await client.close({ awaitPending: true });
}

async function main() {
    await strictSession();
    await badPayloadSession();
    await beforeBootSession();
}

main()
    .catch((err) => {
        summary.error = { ...errorInfo(err), stack: err?.stack };
        process.exitCode = 1;
    })
    .finally(() => {
        process.stdout.write(`${JSON.stringify(summary)}\n`);
    });
