#!/usr/bin/env node
// Redis round trips per operation of `otpkit serve` with REDIS_URL: counted, not timed.
//
//   node bench/redis-trips.mjs [--write] [--json FILE]
//
// Starts a private redis-server, `otpkit serve` on it and the gateway stand-in, watches Redis with
// MONITOR, and for each operation counts the commands otpkit sent while the HTTP request was open
// and the ones after the answer (bookkeeping: audit, analytics, failure streak). Bookkeeping that is
// started but not awaited (the failure streak after a verify) can land in either column: MONITOR
// shows what ran, not what the answer waited for; the critical path is stated from the code. A MULTI…EXEC
// transaction is one round trip; commands run inside a Lua script are listed apart (they are no
// round trip). Phases are separated by an ECHO marker from a second client: MONITOR streams in
// execution order, so once the marker is seen every earlier command is counted.
// The round trips the answer waits for are measured, not inferred: otpkit reaches Redis through a
// TCP proxy that holds every reply for DELAY_MS, so an answer that waits for k round trips in a row
// takes about k × DELAY_MS longer; k = round(latency / DELAY_MS) (local work is well under 1 ms).
// Goal (issue 7): ≤ 2 round trips per verify, one of them a Lua call.
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startHost, ROOT } from '../tests/conformance/host.mjs';
import { startCodeSink, postJson, freshDest, createWorkspace } from './lib/pairs.mjs';
import { startRedis, writeSection } from './lib/common.mjs';
import http from 'node:http';
import net from 'node:net';

const require = createRequire(path.join(ROOT, 'napi-binding', 'package.json'));
const Redis = require('ioredis');
const arg = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const write = process.argv.includes('--write');
const REPEAT = 5; // each operation is counted this many times; the table shows the median count

const DELAY_MS = Number(process.env.DELAY_MS || 60); // far above the local work of a request (≈ 1–3 ms), so rounding is exact
const sink = await startCodeSink();
process.stderr.write('redis-trips: starting redis-server, a delaying proxy in front of it and otpkit serve…\n');
const redisServer = await startRedis();
const { port: redisPort, url: redisUrl } = redisServer;
// The proxy: requests pass at once, each reply chunk is held DELAY_MS (order kept).
let delayMs = 0;
const proxy = net.createServer((client) => {
  const upstream = net.connect(redisPort, '127.0.0.1');
  client.pipe(upstream);
  upstream.on('data', (chunk) => {
    if (delayMs === 0) client.write(chunk);
    else setTimeout(() => client.write(chunk), delayMs);
  });
  const close = () => { client.destroy(); upstream.destroy(); };
  client.on('error', close).on('close', close);
  upstream.on('error', close).on('close', close);
});
await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
const host = await startHost({ gatewayUrl: sink.url, kind: 'node-redis', redisUrl: `redis://127.0.0.1:${proxy.address().port}` });
const apiKey = await createWorkspace(host.baseUrl, host.adminToken);

const monitorClient = new Redis(redisUrl);
const monitor = await monitorClient.monitor();
const marker = new Redis(redisUrl);
let seen = [];
const waiting = new Map();
monitor.on('monitor', (time, args, source) => {
  if (args[0]?.toLowerCase() === 'echo' && waiting.has(args[1])) {
    waiting.get(args[1])();
    waiting.delete(args[1]);
    return;
  }
  seen.push({ cmd: args[0].toUpperCase(), lua: source === 'lua' });
});
let markers = 0;
/** Everything Redis executed since the last cut. */
async function cut() {
  const name = `otpkit-bench-mark-${++markers}`;
  const got = new Promise((r) => waiting.set(name, r));
  await marker.echo(name);
  await got;
  const out = seen;
  seen = [];
  return out;
}
function summarize(cmds) {
  let trips = 0;
  let lua = 0;
  let inMulti = false;
  const names = [];
  for (const c of cmds) {
    if (c.lua) continue;
    if (c.cmd === 'MULTI') {
      inMulti = true;
      trips += 1;
      names.push('MULTI…EXEC');
      continue;
    }
    if (inMulti) {
      if (c.cmd === 'EXEC') inMulti = false;
      continue;
    }
    trips += 1;
    if (c.cmd === 'EVALSHA' || c.cmd === 'EVAL') lua += 1;
    names.push(c.cmd);
  }
  return { trips, lua, inLua: cmds.filter((c) => c.lua).length, names: names.join(', ') };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const call = (route, body) => postJson(agent, host.baseUrl, route, apiKey, body);
const settleMs = 300; // bookkeeping after the answer finishes well within this locally

async function measure(label, fn) {
  const runs = [];
  for (let i = 0; i < REPEAT; i++) {
    const setup = await fn.setup?.();
    await cut();
    await fn.run(setup);
    const before = summarize(await cut());
    await new Promise((r) => setTimeout(r, settleMs));
    const after = summarize(await cut());
    // The same operation again with every Redis reply held DELAY_MS.
    const setup2 = await fn.setup?.();
    await new Promise((r) => setTimeout(r, settleMs));
    delayMs = DELAY_MS;
    const t = performance.now();
    await fn.run(setup2);
    const waited = performance.now() - t;
    delayMs = 0;
    await new Promise((r) => setTimeout(r, settleMs + DELAY_MS * 10));
    await cut();
    runs.push({ before, after, critical: Math.round(waited / DELAY_MS), waitedMs: waited });
  }
  const mid = runs.sort((a, b) => a.before.trips + a.after.trips - (b.before.trips + b.after.trips))[Math.floor(REPEAT / 2)];
  const critical = runs.map((r) => r.critical).sort((a, b) => a - b)[Math.floor(REPEAT / 2)];
  process.stderr.write(`redis-trips: ${label}: the answer waits for ${critical} round trips; ${mid.before.trips} while open (${mid.before.names}), ${mid.after.trips} after (${mid.after.names})\n`);
  return { label, ...mid, critical };
}

async function newSession() {
  const r = await call('/v1/messaging/otp/request', { dest: freshDest(), src: 'LOAD', purpose: 'LOGIN' });
  if (r.status !== 200) throw new Error(`request answered ${r.status}`);
  const sessionId = JSON.parse(r.body).data.sessionId;
  const code = sink.codes.get(sessionId);
  sink.codes.delete(sessionId);
  return { sessionId, code };
}
const expect = (r, status) => {
  if (r.status !== status) throw new Error(`answered ${r.status}, expected ${status}: ${r.body.slice(0, 200)}`);
};

const rows = [];
// Warm-up: scripts loaded (EVALSHA after the first EVAL), connections open.
for (let i = 0; i < 3; i++) await newSession();
await new Promise((r) => setTimeout(r, settleMs));
rows.push(await measure('request (new send)', {
  run: async () => expect(await call('/v1/messaging/otp/request', { dest: freshDest(), src: 'LOAD', purpose: 'LOGIN' }), 200),
}));
rows.push(await measure('request (reuse of a live code)', {
  setup: async () => {
    const dest = freshDest();
    expect(await call('/v1/messaging/otp/request', { dest, src: 'LOAD', purpose: 'LOGIN' }), 200);
    await new Promise((r) => setTimeout(r, settleMs));
    return dest;
  },
  run: async (dest) => expect(await call('/v1/messaging/otp/request', { dest, src: 'LOAD', purpose: 'LOGIN' }), 200),
}));
rows.push(await measure('verify, right code', {
  setup: newSession,
  run: async (s) => expect(await call('/v1/messaging/otp/verify', { sessionId: s.sessionId, code: s.code }), 200),
}));
rows.push(await measure('verify, wrong code', {
  setup: newSession,
  run: async (s) => {
    const wrong = String((Number(s.code) + 1) % 10 ** s.code.length).padStart(s.code.length, '0');
    expect(await call('/v1/messaging/otp/verify', { sessionId: s.sessionId, code: wrong }), 400);
  },
}));
rows.push(await measure('status', {
  setup: newSession,
  run: async (s) => {
    const r = await new Promise((resolve, reject) => {
      const req = http.request(`${host.baseUrl}/v1/messaging/otp/sessions/${s.sessionId}`, { agent, headers: { authorization: `Bearer ${apiKey}` } }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode, body: '' }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(r, 200);
  },
}));

agent.destroy();
monitor.disconnect();
monitorClient.disconnect();
marker.disconnect();
await host.stop();
await sink.close();
proxy.close();
await redisServer.stop();

const verifyRight = rows.find((r) => r.label === 'verify, right code');
const verifyOps = rows.filter((r) => r.label.startsWith('verify'));
const worst = Math.max(...verifyOps.map((r) => r.critical));
const goalMet = worst <= 1;
const table = [
  '| operation (HTTP, `otpkit serve` + Redis) | round trips the answer waits for | round trips while the request was open | of them Lua | commands, in order | after the answer | commands after |',
  '|---|---:|---:|---:|---|---:|---|',
  ...rows.map((r) => `| ${r.label} | ${r.critical} | ${r.before.trips} | ${r.before.lua} | ${r.before.names} | ${r.after.trips} | ${r.after.names || '–'} |`),
].join('\n');
const waits = worst === 1 ? "the session's compare-and-set, decided on the value this process stored (a verify on another process reads the session first: 2)" : "the session's read and its write";
const verdict = `Goal (issue 14) ≤ 1 round trip per verify answer: **${goalMet ? 'met' : 'NOT met'}** (the answer waits for ${worst}: ${waits}; ${verifyRight.before.trips + verifyRight.after.trips - worst} more run beside or after the answer: the failure streak's compare-and-set — the guard was read by the session's write — and the audit/analytics script).`;
const machine = `${os.cpus().length} cores, ${os.cpus()[0].model.trim()}, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
console.log(table);
console.log();
console.log(verdict);
if (arg('json')) writeFileSync(arg('json'), JSON.stringify({ rows, goalMet, machine }, null, 2));
if (write) {
  writeSection(
    'redis-trips',
    `Counted by \`node bench/redis-trips.mjs --write\` (MONITOR on a private redis-server; median of ${REPEAT} per operation; ${machine}). Each operation runs with a key the process has used before: the API-key lookup is answered by the store's key cache (\`RedisStore\` \`keyCache\`, emptied by Redis's \`CLIENT TRACKING\` reports), so it costs no round trip; without the cache (a cold key, \`keyCache: false\`) it is one Lua call (\`EVALSHA\`) more, or, for verify and status, the same one that also reads the session.\n\n${table}\n\n${verdict}`,
    { heading: '## Redis round trips per operation' },
  );
  console.log('wrote BENCHMARKS.md');
}
