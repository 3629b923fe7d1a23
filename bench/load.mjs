#!/usr/bin/env node
// Load script (not a test): request+verify pairs against a host, latency percentiles per route.
//
//   node bench/load.mjs [--pairs 2000] [--concurrency 1,32,128] [--port 8799]
//
// Starts its own SMS gateway stand-in (in this process: it answers 200 and keeps the code by
// session id, as a phone would) and `wrangler dev` on a fresh state directory, creates a
// workspace, then for each concurrency level runs `pairs` request+verify pairs, each on its own
// destination number (so the per-destination send window never interferes), and prints
// p50/p90/p99/max per route and pairs/s. Set BASE_URL + ADMIN_TOKEN + SINK_PORT to use a host
// you started yourself (its SMS_GATEWAY_URL must point to http://127.0.0.1:$SINK_PORT/sms).
import http from 'node:http';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const pairs = Number(arg('pairs', '2000'));
const levels = arg('concurrency', '1,32,128').split(',').map(Number);
const port = Number(arg('port', '8799'));

// The gateway stand-in: remembers the code of each session (reference) until it is read.
const codes = new Map();
const sink = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    try {
      const m = JSON.parse(body);
      codes.set(m.reference, /\d{6,10}/.exec(m.text)[0]);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"accepted":true}');
    } catch {
      res.writeHead(400).end();
    }
  });
});
await new Promise((r) => sink.listen(Number(process.env.SINK_PORT || 0), '127.0.0.1', r));
const sinkUrl = `http://127.0.0.1:${sink.address().port}/sms`;

let base = process.env.BASE_URL;
let admin = process.env.ADMIN_TOKEN;
let wrangler, state;
if (!base) {
  admin = randomBytes(12).toString('hex');
  state = mkdtempSync(join(tmpdir(), 'otpkit-load-'));
  const env = { ...process.env, WRANGLER_SEND_METRICS: 'false', CLOUDFLARE_CF_FETCH_ENABLED: 'false' };
  // Its own process group, so the whole tree (npx, wrangler, workerd) can be stopped at the end.
  const wr = (args) => spawn('npx', ['wrangler', ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  console.error('load: applying the D1 migration and starting wrangler dev (the Worker build may take a while)…');
  await new Promise((r) => wr(['d1', 'migrations', 'apply', 'AUDIT', '--local', '--persist-to', state]).on('exit', r));
  wrangler = wr(['dev', '--local', '--ip', '127.0.0.1', '--port', String(port), '--show-interactive-dev-session=false',
    '--persist-to', state, '--var', `OTP_PEPPER:${randomBytes(32).toString('hex')}`, '--var', `ADMIN_TOKEN:${admin}`,
    '--var', `SMS_GATEWAY_URL:${sinkUrl}`]);
  let out = '';
  wrangler.stdout.on('data', (d) => (out += d));
  wrangler.stderr.on('data', (d) => (out += d));
  base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 300_000;
  for (;;) {
    try { if ((await fetch(`${base}/health`)).ok) break; } catch {}
    if (Date.now() > deadline || wrangler.exitCode !== null) { console.error(out); throw new Error('wrangler dev did not start'); }
    await new Promise((r) => setTimeout(r, 500));
  }
}

const post = (path, key, body) => fetch(base + path, {
  method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
});
const created = await (await post('/v1/admin/workspaces', admin, { name: 'load', senders: ['LOAD'],
  policy: { sendsPerWorkspacePerMinute: 100000 } })).json();
const key = created.data.apiKey;

const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
let dest = 100000000;
const rows = [];
for (const c of levels) {
  const lat = { request: [], verify: [] };
  let errors = 0, next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < pairs) {
      next += 1;
      const to = `+1555${String(dest++).slice(-7)}`;
      let t = performance.now();
      const r = await post('/v1/messaging/otp/request', key, { dest: to, src: 'LOAD', purpose: 'LOGIN' });
      const rb = await r.json();
      lat.request.push(performance.now() - t);
      if (r.status !== 200) { errors += 1; continue; }
      const sid = rb.data.sessionId;
      const code = codes.get(sid); codes.delete(sid);
      t = performance.now();
      const v = await post('/v1/messaging/otp/verify', key, { sessionId: sid, code });
      await v.text();
      lat.verify.push(performance.now() - t);
      if (v.status !== 200) errors += 1;
    }
  };
  await Promise.all(Array.from({ length: c }, worker));
  const secs = (performance.now() - t0) / 1000;
  for (const route of ['request', 'verify']) {
    const xs = lat[route].sort((a, b) => a - b);
    rows.push({ concurrency: c, route, n: xs.length, p50: pct(xs, 50), p90: pct(xs, 90), p99: pct(xs, 99), max: xs.at(-1), pairsPerSec: pairs / secs, errors });
  }
}

console.log(`\nrequest+verify against ${wrangler ? 'wrangler dev (local workerd)' : base}; ${pairs} pairs per level\n`);
console.log('| clients | route | n | p50 ms | p90 ms | p99 ms | max ms | pairs/s | errors |');
console.log('|---:|---|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(`| ${r.concurrency} | ${r.route} | ${r.n} | ${r.p50.toFixed(1)} | ${r.p90.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.max.toFixed(1)} | ${r.pairsPerSec.toFixed(0)} | ${r.errors} |`);
}
sink.close();
if (wrangler) {
  // SIGTERM to the group: a shell started in the background ignores SIGINT, and workerd is a
  // grandchild; SIGKILL after 5 s if anything is left.
  const exited = new Promise((r) => wrangler.on('exit', r));
  const group = (sig) => {
    try {
      process.kill(-wrangler.pid, sig);
    } catch {
      // already gone
    }
  };
  group('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  group('SIGKILL');
  rmSync(state, { recursive: true, force: true });
}
