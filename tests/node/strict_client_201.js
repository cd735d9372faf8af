// An independent OCPP 2.0.1 charging station for tests/test_v201_gateway.py: the `ocpp-rpc`
// client in strict mode (every CALL, CALLRESULT and inbound CALL is checked against
// ocpp-rpc's own copy of the 2.0.1 JSON schemas), run through a scripted session against evota.
//
// Usage:
//   node strict_client_201.js --endpoint ws://127.0.0.1:9000/ocpp --identity CS-1 --key KEY \
//       --fresh-identity CS-2 [--commands-timeout-ms 20000]
// Both identities must be provisioned with KEY; the fresh one must never have been accepted.
//
// stdout protocol (one line each):
//   READY_FOR_COMMANDS  the strict station is booted and answers evota's CALLs until evota
//                       sends DataTransfer {vendorId: "evota.test", messageId: "done"}
//   {...}               the JSON summary, last line, always printed (with "error" on a crash)
// Every frame in and out is logged on stderr.
'use strict';

const { RPCClient } = require('ocpp-rpc');
const standardValidators = require('ocpp-rpc/lib/standard-validators');

function arg(name, fallback) {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const endpoint = arg('endpoint');
const identity = arg('identity');
const key = arg('key');
const freshIdentity = arg('fresh-identity', identity && `${identity}-fresh`);
const commandsTimeoutMs = Number(arg('commands-timeout-ms', '20000'));
if (!endpoint || !identity || !key) {
    process.stderr.write('usage: strict_client_201.js --endpoint URL --identity ID --key KEY\n');
    process.exit(2);
}

const PROTOCOL = 'ocpp2.0.1';
const STRICT = standardValidators.find((v) => v.subprotocol === PROTOCOL);
// For the client that sends schema-invalid CALLs: evota's answers are still checked
// (`*.conf`), the requests (`*.req`) are not, so the bad ones reach evota.
const RESPONSES_ONLY = {
    subprotocol: PROTOCOL,
    validate(schemaId, params) {
        return schemaId.endsWith('.req') ? true : STRICT.validate(schemaId, params);
    },
};

const now = () => new Date().toISOString();
const STATUS = { timestamp: now(), connectorStatus: 'Available', evseId: 1, connectorId: 1 };
const TOKEN = { idToken: 'RPC-TOKEN-0123456789-ABCDEFGHIJ', type: 'ISO14443' };

const summary = {
    library: `ocpp-rpc/${require('ocpp-rpc/package.json').version}`,
    protocol: {},
    boot: null,
    session: {},
    commands: [],
    bad_payloads: {},
    raw_frames: {},
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

function makeClient(label, id, strictModeValidators) {
    const client = new RPCClient({
        endpoint,
        identity: id,
        password: key,
        protocols: [PROTOCOL],
        strictMode: true,
        strictModeValidators,
        reconnect: false,
        callTimeoutMs: 5000,
    });
    client.lastInbound = new Map(); // message id -> raw inbound frame
    client.inbound = []; // every raw inbound frame, in order
    client.sentFrames = 0;
    client.on('message', ({ message, outbound }) => {
        const text = message.toString();
        if (outbound) client.sentFrames += 1;
        process.stderr.write(`[${label}] ${outbound ? '>>' : '<<'} ${text}\n`);
        if (!outbound) {
            client.inbound.push(text);
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
        if (client.expectBadMessages) return; // CALLERRORs with id "-1" for our raw frames
        summary.bad_messages.push({ client: label, frame: buffer.toString(), error: errorInfo(error) });
    });
    return client;
}

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

// What the station answers to each CSMS-initiated action evota may send.
const ANSWERS = {
    Reset: () => ({ status: 'Accepted' }),
    RequestStartTransaction: () => ({ status: 'Accepted', transactionId: 'RPC-TX-2' }),
    RequestStopTransaction: () => ({ status: 'Accepted' }),
    UnlockConnector: () => ({ status: 'Unlocked' }),
    ChangeAvailability: () => ({ status: 'Scheduled' }),
    GetVariables: (p) => ({
        getVariableResult: p.getVariableData.map((d) => ({
            attributeStatus: d.variable.name === 'HeartbeatInterval' ? 'Accepted' : 'UnknownVariable',
            ...(d.variable.name === 'HeartbeatInterval' ? { attributeValue: '60' } : {}),
            component: d.component,
            variable: d.variable,
        })),
    }),
    SetVariables: (p) => ({
        setVariableResult: p.setVariableData.map((d) => ({
            attributeStatus: 'Accepted',
            component: d.component,
            variable: d.variable,
        })),
    }),
    GetBaseReport: () => ({ status: 'Accepted' }),
    GetLog: () => ({ status: 'Accepted', filename: 'diag.log' }),
    TriggerMessage: () => ({ status: 'Accepted' }),
    SetChargingProfile: () => ({ status: 'Accepted' }),
    ClearChargingProfile: () => ({ status: 'Unknown' }),
    SendLocalList: () => ({ status: 'Accepted' }),
    GetLocalListVersion: () => ({ versionNumber: 0 }),
    ClearCache: () => ({ status: 'Accepted' }),
    InstallCertificate: () => ({ status: 'Accepted' }),
    DeleteCertificate: () => ({ status: 'NotFound' }),
    GetInstalledCertificateIds: () => ({ status: 'NotFound' }),
    DataTransfer: () => ({ status: 'Accepted' }),
    UpdateFirmware: () => ({ status: 'Accepted' }),
};

async function strictSession() {
    const client = makeClient('strict', identity);
    let resolveDone;
    const done = new Promise((resolve) => {
        resolveDone = resolve;
    });
    for (const [action, answer] of Object.entries(ANSWERS)) {
        client.handle(action, ({ params }) => {
            summary.commands.push({ action, params });
            if (action === 'DataTransfer' && params.vendorId === 'evota.test' && params.messageId === 'done') {
                resolveDone();
            }
            return answer(params);
        });
    }

    await client.connect();
    summary.protocol.strict = client.protocol;
    summary.boot = await client.call('BootNotification', {
        chargingStation: { vendorName: 'Independent', model: 'ocpp-rpc-201', firmwareVersion: '2.2.1' },
        reason: 'PowerUp',
    });
    const s = summary.session;
    s.heartbeat = await client.call('Heartbeat', {});
    s.status = await client.call('StatusNotification', { ...STATUS, timestamp: now() });
    s.authorize = await client.call('Authorize', { idToken: TOKEN });
    const meter = (wh, context) => [
        {
            timestamp: now(),
            sampledValue: [
                { value: wh, context, measurand: 'Energy.Active.Import.Register', unitOfMeasure: { unit: 'Wh' } },
                { value: 16.2, context, measurand: 'Current.Import', phase: 'L1' },
            ],
        },
    ];
    s.started = await client.call('TransactionEvent', {
        eventType: 'Started',
        timestamp: now(),
        triggerReason: 'Authorized',
        seqNo: 0,
        transactionInfo: { transactionId: 'RPC-TX-1', chargingState: 'EVConnected' },
        evse: { id: 1, connectorId: 1 },
        idToken: TOKEN,
        meterValue: meter(1000, 'Transaction.Begin'),
    });
    s.updated = await client.call('TransactionEvent', {
        eventType: 'Updated',
        timestamp: now(),
        triggerReason: 'MeterValuePeriodic',
        seqNo: 1,
        transactionInfo: { transactionId: 'RPC-TX-1', chargingState: 'Charging' },
        meterValue: meter(2500, 'Sample.Periodic'),
    });
    s.meter_values = await client.call('MeterValues', { evseId: 1, meterValue: meter(2600, 'Sample.Clock') });
    s.ended = await client.call('TransactionEvent', {
        eventType: 'Ended',
        timestamp: now(),
        triggerReason: 'StopAuthorized',
        seqNo: 2,
        transactionInfo: { transactionId: 'RPC-TX-1', stoppedReason: 'Local' },
        idToken: TOKEN,
        meterValue: meter(4000, 'Transaction.End'),
    });
    s.notify_event = await client.call('NotifyEvent', {
        generatedAt: now(),
        seqNo: 0,
        eventData: [
            {
                eventId: 1,
                timestamp: now(),
                trigger: 'Delta',
                actualValue: 'Occupied',
                component: { name: 'Connector', evse: { id: 1, connectorId: 1 } },
                variable: { name: 'AvailabilityState' },
                eventNotificationType: 'HardWiredNotification',
            },
        ],
    });
    s.notify_report = await client.call('NotifyReport', {
        requestId: 1,
        generatedAt: now(),
        seqNo: 0,
        reportData: [
            {
                component: { name: 'OCPPCommCtrlr' },
                variable: { name: 'HeartbeatInterval' },
                variableAttribute: [{ value: '60' }],
            },
        ],
    });
    s.security_event = await client.call('SecurityEventNotification', { type: 'StartupOfTheDevice', timestamp: now() });
    s.firmware_status = await client.call('FirmwareStatusNotification', { status: 'Idle' });
    s.log_status = await client.call('LogStatusNotification', { status: 'Idle' });
    s.data_transfer = await client.call('DataTransfer', { vendorId: 'com.example', data: { any: ['json'] } });
    s.sign_certificate = await client.call('SignCertificate', { csr: '-----BEGIN CERTIFICATE REQUEST-----' });

    // Strict mode is really on: an invalid CALL is refused locally and never reaches evota.
    client.selfChecking = true;
    client.selfCheckFailures = [];
    const sentBefore = client.sentFrames;
    const selfCheck = await attempt(client, 'StatusNotification', { evseId: 1 });
    client.selfChecking = false;
    summary.strict_self_check = {
        refused_locally: !selfCheck.ok && client.sentFrames === sentBefore,
        rpcErrorCode: selfCheck.rpcErrorCode ?? null,
        events: client.selfCheckFailures.length,
    };

    process.stdout.write('READY_FOR_COMMANDS\n');
    let timer;
    const timedOut = new Promise((resolve) => {
        timer = setTimeout(() => resolve('timeout'), commandsTimeoutMs);
    });
    const outcome = await Promise.race([done.then(() => 'done'), timedOut]);
    clearTimeout(timer);
    if (outcome !== 'done') summary.commands_timed_out = true;
    await client.close({ awaitPending: true });
}

const GOOD_STATUS = { timestamp: '2026-11-29T10:00:00Z', connectorStatus: 'Available', evseId: 1, connectorId: 1 };
const BAD_PAYLOADS = {
    'missing-field': ['StatusNotification', { timestamp: '2026-11-29T10:00:00Z', evseId: 1, connectorId: 1 }],
    'wrong-type': ['StatusNotification', { ...GOOD_STATUS, evseId: 'one' }],
    'bad-enum': ['StatusNotification', { ...GOOD_STATUS, connectorStatus: 'Charging' }],
    'extra-property': ['StatusNotification', { ...GOOD_STATUS, errorCode: 'NoError' }],
    'too-long-string': ['SecurityEventNotification', { type: 't'.repeat(51), timestamp: '2026-11-29T10:00:00Z' }],
    'bad-date-time': ['StatusNotification', { ...GOOD_STATUS, timestamp: 'tuesday' }],
    'unknown-action': ['MakeCoffee', {}],
    'csms-only-action': ['Reset', { type: 'Immediate' }],
};
const RAW_FRAMES = {
    'invalid-json': '[2, "r1", "Heartbeat", {',
    'id-not-string': '[2, 17, "Heartbeat", {}]',
    'unknown-message-type': '[7, "r2", "Heartbeat", {}]',
    'payload-not-object': '[2, "r3", "Heartbeat", []]',
};

function nextInbound(client, count, timeoutMs) {
    return new Promise((resolve) => {
        const started = Date.now();
        const tick = () => {
            if (client.inbound.length > count) resolve(client.inbound[count]);
            else if (Date.now() - started > timeoutMs) resolve(null);
            else setTimeout(tick, 10);
        };
        tick();
    });
}

// Same identity, reconnecting after its accepted boot: no second BootNotification needed.
async function badPayloadSession() {
    const client = makeClient('lenient', identity, [RESPONSES_ONLY]);
    await client.connect();
    summary.protocol.lenient = client.protocol;
    for (const [name, [action, payload]] of Object.entries(BAD_PAYLOADS)) {
        const outcome = await attempt(client, action, payload);
        outcome.action = action;
        summary.bad_payloads[name] = outcome;
    }
    client.expectBadMessages = true;
    for (const [name, text] of Object.entries(RAW_FRAMES)) {
        const count = client.inbound.length;
        client.sendRaw(text);
        const answer = await nextInbound(client, count, 3000);
        summary.raw_frames[name] = answer === null ? null : JSON.parse(answer);
    }
    client.expectBadMessages = false;
    summary.after_bad_payloads = await attempt(client, 'Heartbeat', {});
    await client.close({ awaitPending: true });
}

async function beforeBootSession() {
    const client = makeClient('fresh', freshIdentity);
    await client.connect();
    summary.protocol.fresh = client.protocol;
    const payload = { ...GOOD_STATUS, timestamp: now() };
    summary.bad_payloads['call-before-boot'] = {
        ...(await attempt(client, 'StatusNotification', payload)),
        action: 'StatusNotification',
    };
    const boot = await attempt(client, 'BootNotification', {
        chargingStation: { vendorName: 'Independent', model: 'ocpp-rpc-201' },
        reason: 'PowerUp',
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
