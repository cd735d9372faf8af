// Load from the independent Node client for bench/tls.py: N `ocpp-rpc` RPCClients (the same
// library as tests/node/tls_client.js), over ws:// with a password (profile 1) or wss:// with
// the server checked against a CA file and either a password (profile 2) or a client
// certificate (profile 3). Each boots, then sends StatusNotification back to back (one CALL
// outstanding, Available/Preparing alternating, as bench/loadgen.py does); the answers in the
// window after the warm-up are counted.
//
// Usage: node tls_load.js CONFIG.json   where CONFIG is
//   {"endpoint": "wss://127.0.0.1:9443/ocpp", "ca": "ca.pem" | null, "warmup": 2, "duration": 5,
//    "chargers": [{"id": "CP-1", "password": "..."} | {"id": "CP-2", "cert": "a.pem", "key": "a.key"}]}
// Prints one JSON line: {"connected", "failed", "ok", "errors", "window_s", "cpu_s", "error"}.
'use strict';

const fs = require('fs');
const { RPCClient } = require('ocpp-rpc');

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const ca = cfg.ca ? fs.readFileSync(cfg.ca) : null;
const out = { connected: 0, failed: 0, ok: 0, errors: 0, window_s: 0, cpu_s: 0, error: null };
let running = false;
let measuring = false;

function client(c) {
    const wsOpts = {};
    if (ca) Object.assign(wsOpts, { ca, minVersion: 'TLSv1.2' });
    if (c.cert) Object.assign(wsOpts, { cert: fs.readFileSync(c.cert), key: fs.readFileSync(c.key) });
    return new RPCClient({
        endpoint: cfg.endpoint,
        identity: c.id,
        ...(c.password ? { password: c.password } : {}),
        protocols: ['ocpp1.6'],
        strictMode: false, // the client's own cost stays small; evota validates every message
        reconnect: false,
        callTimeoutMs: 30000,
        wsOpts,
    });
}

async function setup(c) {
    const cli = client(c);
    await cli.connect();
    const boot = await cli.call('BootNotification', {
        chargePointVendor: 'evota-bench',
        chargePointModel: 'tls-bench-node',
    });
    if (boot.status !== 'Accepted') throw new Error(`boot ${boot.status}`);
    return cli;
}

async function loop(cli) {
    let i = 0;
    while (running) {
        const status = i++ % 2 ? 'Preparing' : 'Available';
        try {
            await cli.call('StatusNotification', {
                connectorId: 1,
                errorCode: 'NoError',
                status,
                timestamp: new Date().toISOString(),
            });
            if (measuring) out.ok++;
        } catch (err) {
            out.errors++;
            if (!running) return;
        }
    }
}

async function main() {
    const clients = [];
    const batch = 64;
    for (let i = 0; i < cfg.chargers.length; i += batch) {
        const got = await Promise.allSettled(cfg.chargers.slice(i, i + batch).map(setup));
        for (const r of got) {
            if (r.status === 'fulfilled') clients.push(r.value);
            else {
                out.failed++;
                if (!out.error) out.error = String(r.reason?.message ?? r.reason);
            }
        }
    }
    out.connected = clients.length;
    running = true;
    const loops = clients.map(loop);
    await new Promise((r) => setTimeout(r, cfg.warmup * 1000));
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    measuring = true;
    await new Promise((r) => setTimeout(r, cfg.duration * 1000));
    measuring = false;
    const t1 = process.hrtime.bigint();
    const cpu1 = process.cpuUsage(cpu0);
    running = false;
    await Promise.allSettled(loops);
    out.window_s = Number(t1 - t0) / 1e9;
    out.cpu_s = (cpu1.user + cpu1.system) / 1e6;
    await Promise.allSettled(clients.map((c) => c.close({ code: 1000 })));
    process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
    out.error = String(err?.message ?? err);
    process.stdout.write(JSON.stringify(out) + '\n');
    process.exit(1);
});
