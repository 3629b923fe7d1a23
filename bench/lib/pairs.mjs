// The load generator shared by the HTTP benchmarks (bench/http.mjs, bench/scaling.mjs):
// request+verify pairs against any host with the v1 API, and the SMS gateway stand-in that
// hands the codes back (as a phone would).
//
//   const sink = await startCodeSink();          // point the host's SMS_GATEWAY_URL at sink.url
//   const r = await runPairs({ base, apiKey, codes: sink.codes, clients: 32, seconds: 8 }); // apiKey: one or an array
//   // r = { clients, seconds, pairs, pairsPerSec, request: {n, p50, p90, p99, max}, verify: {…},
//   //       errors, errorSamples }
//
// node:http with a keep-alive agent of exactly `clients` sockets (fetch costs the generator about
// twice the CPU per request, and the generator shares the machine with the host). Every pair uses a
// destination never used before in this process, so send windows never interfere; a verify counts as
// an error unless it answers 200 with status APPROVED.
import http from 'node:http';
import { readdirSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

/** The gateway stand-in: answers 200 and keeps each message's code by its reference (session id). */
export async function startCodeSink({ port = 0 } = {}) {
  const codes = new Map();
  let received = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      try {
        const m = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        codes.set(m.reference, /\d{4,10}/.exec(m.text)[0]);
        received += 1;
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"accepted":true}');
      } catch {
        res.writeHead(400).end();
      }
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}/sms`,
    codes,
    get received() {
      return received;
    },
    close: () => new Promise((r) => {
      server.closeAllConnections?.();
      server.close(() => r());
    }),
  };
}

let destCounter = 0;
const destBase = 1_000_000 + Math.floor(Math.random() * 8_000_000);
/** A +1 555 number not used before by this process (10 million per process). */
export function freshDest(prefix = '+1555') {
  destCounter += 1;
  return `${prefix}${String((destBase + destCounter) % 10_000_000).padStart(7, '0')}`;
}

/** POST a JSON body; resolves {status, body(text)}. */
export function postJson(agent, base, path, apiKey, body) {
  const url = new URL(path, base);
  const data = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', 'content-length': data.length },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

const pct = (xs, p) => (xs.length ? xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] : NaN);
function summary(xs) {
  xs.sort((a, b) => a - b);
  return { n: xs.length, p50: pct(xs, 50), p90: pct(xs, 90), p99: pct(xs, 99), max: xs.length ? xs[xs.length - 1] : NaN };
}

/**
 * Runs request+verify pairs from `clients` concurrent loops for `seconds` (after `warmupSeconds`
 * of untimed pairs), or for exactly `pairs` pairs when given. Routes: SPEC's v1 paths (override
 * with `paths`). `purpose` LOGIN, sender `src`.
 */
export async function runPairs({
  base,
  apiKey,
  codes,
  clients = 1,
  seconds = 8,
  warmupSeconds = 1,
  pairs = null,
  src = 'LOAD',
  destPrefix = '+1555',
  paths = { request: '/v1/messaging/otp/request', verify: '/v1/messaging/otp/verify' },
  cpuSeconds = null, // () => [CPU seconds used so far, …] by the processes under test: sampled around the timed window
}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients, keepAliveMsecs: 10_000 });
  const lat = { request: [], verify: [] };
  let errors = 0;
  const errorSamples = [];
  let done = 0;
  let started = 0;
  let timing = false;
  const fail = (what) => {
    errors += 1;
    if (errorSamples.length < 5) errorSamples.push(what);
  };
  // Several keys (workspaces) share the load round-robin: one workspace's flood shield allows at
  // most 100,000 sends a minute (SPEC), less than a fast host does.
  const keys = Array.isArray(apiKey) ? apiKey : [apiKey];
  let turn = 0;
  const one = async () => {
    const dest = freshDest(destPrefix);
    const key = keys[turn++ % keys.length];
    let t = performance.now();
    let r;
    try {
      r = await postJson(agent, base, paths.request, key, { dest, src, purpose: 'LOGIN' });
    } catch (e) {
      if (timing) fail(`request: ${e.code || e.message}`);
      return;
    }
    const tReq = performance.now() - t;
    if (r.status !== 200) {
      if (timing) fail(`request ${r.status}: ${r.body.slice(0, 160)}`);
      return;
    }
    const sessionId = JSON.parse(r.body).data.sessionId;
    const code = codes.get(sessionId);
    codes.delete(sessionId);
    if (code == null) {
      if (timing) fail('request: the gateway stand-in got no code for the session');
      return;
    }
    t = performance.now();
    let v;
    try {
      v = await postJson(agent, base, paths.verify, key, { sessionId, code });
    } catch (e) {
      if (timing) fail(`verify: ${e.code || e.message}`);
      return;
    }
    const tVer = performance.now() - t;
    if (!timing) return;
    lat.request.push(tReq);
    lat.verify.push(tVer);
    if (v.status !== 200 || JSON.parse(v.body).data?.status !== 'APPROVED') {
      fail(`verify ${v.status}: ${v.body.slice(0, 160)}`);
      return;
    }
    done += 1;
  };

  // Warm-up: untimed pairs, same concurrency (connections open, JIT warm).
  const until = (deadline, counted) => async () => {
    while (performance.now() < deadline && (!counted || pairs == null || started < pairs)) {
      if (counted) started += 1;
      await one();
    }
  };
  if (warmupSeconds > 0) {
    await Promise.all(Array.from({ length: clients }, until(performance.now() + warmupSeconds * 1000, false)));
  }
  timing = true;
  const cpu0 = cpuSeconds?.();
  const own0 = process.cpuUsage();
  const t0 = performance.now();
  const deadline = pairs == null ? t0 + seconds * 1000 : Infinity;
  await Promise.all(Array.from({ length: clients }, until(deadline, true)));
  const secs = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds ? cpuSeconds().map((x, i) => x - cpu0[i]) : null;
  const own = process.cpuUsage(own0);
  agent.destroy();
  return {
    clients,
    cpuSeconds: cpu,
    // This process's own CPU in the window: the load's clients (and whatever else runs here).
    loadCpuSeconds: (own.user + own.system) / 1e6,
    seconds: secs,
    pairs: done,
    pairsPerSec: done / secs,
    request: summary(lat.request),
    verify: summary(lat.verify),
    errors,
    errorSamples,
  };
}

/**
 * CPU seconds (user + system) used so far by processes `pids` and every descendant of theirs
 * (wrangler's workerd, for one), from /proc. Linux only: null elsewhere.
 */
export function treeCpuSeconds(pids) {
  let entries;
  try {
    entries = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return null;
  }
  const stat = new Map(); // pid → { ppid, ticks }
  for (const d of entries) {
    let text;
    try {
      text = readFileSync(`/proc/${d}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // pid (comm) state ppid … utime(14) stime(15): comm may hold spaces, so split after ')'.
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    stat.set(Number(d), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) });
  }
  const children = new Map();
  for (const [pid, { ppid }] of stat) (children.get(ppid) ?? children.set(ppid, []).get(ppid)).push(pid);
  let ticks = 0;
  const seen = new Set();
  const walk = (pid) => {
    if (seen.has(pid)) return;
    seen.add(pid);
    ticks += stat.get(pid)?.ticks ?? 0;
    for (const c of children.get(pid) ?? []) walk(c);
  };
  for (const pid of pids) walk(pid);
  return ticks / CLOCK_TICKS_OF();
}
let CLOCK_TICKS_CACHED = null;
/** USER_HZ: the unit of /proc's times (getconf CLK_TCK; 100 on Linux). */
const CLOCK_TICKS_OF = () => {
  if (CLOCK_TICKS_CACHED == null) {
    try {
      CLOCK_TICKS_CACHED = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      CLOCK_TICKS_CACHED = 100;
    }
  }
  return CLOCK_TICKS_CACHED;
};

/** Creates a workspace through the admin API (flood shield at SPEC's maximum); resolves its API key. */
export async function createWorkspace(base, adminToken, { name = 'bench', senders = ['LOAD'], policy = {} } = {}) {
  const agent = new http.Agent({ keepAlive: false });
  const r = await postJson(agent, base, '/v1/admin/workspaces', adminToken, {
    name,
    senders,
    policy: { sendsPerWorkspacePerMinute: 100_000, ...policy },
  });
  if (r.status !== 201 && r.status !== 200) throw new Error(`creating the bench workspace: ${r.status} ${r.body}`);
  return JSON.parse(r.body).data.apiKey;
}
