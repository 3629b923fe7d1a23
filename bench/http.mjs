#!/usr/bin/env node
// HTTP benchmark (issue 7): request+verify pairs against otpkit serve (memory and Redis stores, and
// Redis on a local 3-master Redis Cluster),
// the Worker under wrangler dev, and a peer OTP service written the common way (bench/peer:
// node:http + ioredis, plaintext code), all on this machine, each its own process.
//
//   node bench/http.mjs [--rounds 3] [--seconds 5] [--warmup 1] [--levels 1,32,128]
//                       [--hosts node,node-redis,node-cluster,peer,worker] [--json FILE] [--write]
//   node bench/http.mjs --profile [--seconds 8] [--profile-hosts node-redis,peer]  # where the time goes
//
// One private redis-server (no persistence) serves both otpkit serve+Redis and the peer; FLUSHDB
// before each of their windows. The gateway stand-in (bench/lib/pairs.mjs) and the load generator
// run in this process. For each round, each level and each contender a timed window of `seconds`
// after `warmup` seconds of untimed pairs; contenders are interleaved (A, B, C, A, B, C …) so they
// share the machine's noise, and the table shows medians over the rounds. The otpkit/peer ratio is
// the median of the per-round ratios. wrangler dev is far slower locally (≈ 30 pairs/s): it runs
// after the others, one round, and not at 128 clients (`--worker-levels` to change that); its
// errors are counted like everyone's.
//
// --write replaces the section of BENCHMARKS.md between <!-- http-bench:start --> and
// <!-- http-bench:end --> (inserted before the in-process section when missing). Progress goes to
// stderr, the markdown to stdout. Never prints codes or keys.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createWorkspace, runPairs, startCodeSink, treeCpuSeconds } from './lib/pairs.mjs';
import { startRedis, writeSection } from './lib/common.mjs';
import { freePort, startHost } from '../tests/conformance/host.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(ROOT, 'napi-binding', 'package.json'));
const Redis = require('ioredis');

const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const flag = (name) => args.includes(`--${name}`);
const ROUNDS = Number(arg('rounds', '3'));
const SECONDS = Number(arg('seconds', flag('profile') ? '8' : '5'));
const WARMUP = Number(arg('warmup', '1'));
const LEVELS = arg('levels', '1,32,128').split(',').map(Number);
const WORKER_LEVELS = arg('worker-levels', '1,32').split(',').map(Number);
const HOSTS = arg('hosts', 'node,node-redis,node-cluster,peer,worker').split(',');
const JSON_FILE = arg('json', null);
const WORKSPACES = 3; // round-robin, so one workspace's flood shield (100,000/min) never bites

const LABEL = {
  node: 'otpkit serve, memory',
  'node-nodehttp': 'otpkit serve, memory, on node:http',
  'node-redis': 'otpkit serve, Redis',
  'node-redis-nodehttp': 'otpkit serve, Redis, on node:http',
  'node-cluster': 'otpkit serve, Redis Cluster (3 masters)',
  peer: 'peer (node:http + ioredis)',
  worker: 'Worker (wrangler dev)',
};

const log = (s) => process.stderr.write(`http: ${s}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// The REDIS_URL of the caller's shell would turn the memory host into a Redis one (host.mjs).
delete process.env.REDIS_URL;

// Children still running when this script fails: stopped before it exits (their groups are detached).
const running = new Set();

/** A child in its own process group, output kept (last 200 lines) for failure messages. */
function spawnGroup(cmd, argv, env) {
  const child = spawn(cmd, argv, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const lines = [];
  const keep = (c) => {
    lines.push(...c.toString('utf8').split('\n'));
    if (lines.length > 200) lines.splice(0, lines.length - 200);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  child.alive = true;
  running.add(child);
  child.exited.then(() => {
    child.alive = false;
    running.delete(child);
  });
  child.output = () => lines.join('\n');
  child.stopGroup = async () => {
    if (!child.alive) return;
    try {
      process.kill(-child.pid, 'SIGINT');
    } catch {}
    const done = await Promise.race([child.exited.then(() => true), sleep(10_000).then(() => false)]);
    if (!done) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {}
      await child.exited;
    }
  };
  return child;
}

/** The shared private redis-server, with a client for FLUSHDB and INFO between windows. */
async function startRedisWithClient() {
  const server = await startRedis();
  const client = new Redis(server.url);
  return { url: server.url, pid: server.child.pid, client, stop: async () => (client.disconnect(), server.stop()) };
}

async function startPeer({ gatewayUrl, redisUrl, env: extra = {} }) {
  const port = await freePort();
  const apiKey = `peer_${randomBytes(24).toString('base64url')}`;
  const env = { ...process.env, ...extra, PORT: String(port), REDIS_URL: redisUrl, SMS_GATEWAY_URL: gatewayUrl, API_KEY: apiKey };
  const child = spawnGroup(process.execPath, [path.join(ROOT, 'bench', 'peer', 'server.mjs')], env);
  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (!child.alive) throw new Error(`the peer exited:\n${child.output()}`);
    try {
      if ((await fetch(`${baseUrl}/health`)).status === 200) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`the peer did not answer /health:\n${child.output()}`);
    await sleep(150);
  }
  return { kind: 'peer', baseUrl, apiKey, pid: child.pid, stop: () => child.stopGroup() };
}

/** Starts one contender; `keys()` gives the API keys for a window (after FLUSHDB for Redis ones). */
async function startContender(kind, { sink, redis, nodeOptions }) {
  if (kind === 'peer') {
    const p = await startPeer({ gatewayUrl: sink.url, redisUrl: redis.url, env: nodeOptions ? { NODE_OPTIONS: nodeOptions } : {} });
    return { ...p, keys: async () => [p.apiKey], cpu: () => [treeCpuSeconds([p.pid]), treeCpuSeconds([redis.pid])] };
  }
  const saved = process.env.NODE_OPTIONS;
  if (nodeOptions) process.env.NODE_OPTIONS = nodeOptions; // this child only: restored below
  // `…-nodehttp`: the same host on node:http (OTPKIT_HTTP=node), the server before the native one.
  const base = kind.replace(/-nodehttp$/, '');
  const extraEnv = base === kind ? {} : { OTPKIT_HTTP: 'node' };
  let h;
  try {
    h = await startHost({ gatewayUrl: sink.url, kind: base, extraEnv, redisUrl: base === 'node-redis' ? redis.url : undefined });
  } finally {
    if (saved === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = saved;
  }
  const make = async () => {
    const keys = [];
    for (let i = 0; i < WORKSPACES; i++) keys.push(await createWorkspace(h.baseUrl, h.adminToken, { name: `bench-${i}` }));
    return keys;
  };
  // Memory and the Worker keep their workspaces; Redis is flushed before each window (each
  // master of the cluster, which host.mjs started for this contender alone).
  const flushed = base === 'node-redis' || base === 'node-cluster';
  const masters = base === 'node-cluster' ? h.redisUrls.map((url) => new Redis(url)) : [];
  const flush = () => Promise.all(masters.map((m) => m.flushall()));
  let fixed = flushed ? null : await make();
  const stop = async () => {
    for (const m of masters) m.disconnect();
    await h.stop();
  };
  // CPU of the host's process tree, and of the Redis servers it uses (the shared one, or its cluster's).
  const storePids = () => (base === 'node-redis' ? [redis.pid] : h.redisPids ?? []);
  const cpu = () => [treeCpuSeconds([h.pid]), treeCpuSeconds(storePids())];
  return { kind, baseUrl: h.baseUrl, stop, flush, cpu, keys: async () => fixed || (await make()) };
}

function machineLine() {
  const cpus = os.cpus();
  const model = (cpus[0]?.model || 'unknown CPU').replace(/\s+/g, ' ').trim();
  return `${cpus.length} cores, ${model}, ${os.arch()}; Node ${process.version}; ${new Date().toISOString().slice(0, 10)}`;
}

const ms = (x) => (Number.isFinite(x) ? (x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0)) : '–');
const int = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–');

async function bench() {
  const t0 = Date.now();
  const sink = await startCodeSink();
  const needRedis = HOSTS.some((h) => h.startsWith('node-redis') || h === 'peer');
  const redis = needRedis ? await startRedisWithClient() : null;
  const fast = HOSTS.filter((h) => h !== 'worker');
  const results = {}; // `${kind}@${clients}` → [run, …]
  const push = (kind, clients, r) => (results[`${kind}@${clients}`] ||= []).push(r);
  const total = fast.length * LEVELS.length * ROUNDS + (HOSTS.includes('worker') ? WORKER_LEVELS.length : 0);
  let step = 0;
  const window = async (c, clients, round, rounds) => {
    step += 1;
    log(`[${step}/${total}] ${LABEL[c.kind]}, ${clients} clients, round ${round}/${rounds} …`);
    if (c.kind.startsWith('node-redis') || c.kind === 'peer') await redis.client.flushdb();
    if (c.kind === 'node-cluster') await c.flush();
    const apiKey = await c.keys();
    const r = await runPairs({ base: c.baseUrl, apiKey, codes: sink.codes, clients, seconds: SECONDS, warmupSeconds: WARMUP, cpuSeconds: c.cpu });
    sink.codes.clear(); // codes of warm-up pairs cut short
    push(c.kind, clients, { round, ...r });
    log(`    ${int(r.pairsPerSec)} pairs/s, request p50/p99 ${ms(r.request.p50)}/${ms(r.request.p99)} ms, verify p50/p99 ${ms(r.verify.p50)}/${ms(r.verify.p99)} ms, errors ${r.errors}${r.errors ? ` (${r.errorSamples[0]})` : ''}`);
  };

  const contenders = [];
  try {
    for (const kind of fast) {
      log(`starting ${LABEL[kind]} …`);
      contenders.push(await startContender(kind, { sink, redis }));
    }
    for (let round = 1; round <= ROUNDS; round++) {
      for (const clients of LEVELS) for (const c of contenders) await window(c, clients, round, ROUNDS);
    }
  } finally {
    for (const c of contenders) await c.stop();
  }
  if (HOSTS.includes('worker')) {
    log('starting the Worker under wrangler dev (builds it first if needed) …');
    const w = await startContender('worker', { sink, redis });
    try {
      for (const clients of WORKER_LEVELS) await window(w, clients, 1, 1);
    } finally {
      await w.stop();
    }
  }
  if (redis) await redis.stop();
  await sink.close();
  const wallSeconds = (Date.now() - t0) / 1000;
  log(`done in ${Math.round(wallSeconds)} s`);
  return { machine: machineLine(), rounds: ROUNDS, seconds: SECONDS, warmup: WARMUP, hosts: HOSTS, results, wallSeconds };
}

function summarize(run) {
  const rows = [];
  for (const kind of ['node', 'node-nodehttp', 'node-redis', 'node-redis-nodehttp', 'node-cluster', 'peer', 'worker']) {
    for (const clients of kind === 'worker' ? WORKER_LEVELS : LEVELS) {
      const rs = run.results[`${kind}@${clients}`];
      if (!rs) continue;
      rows.push({
        kind,
        clients,
        runs: rs.length,
        pairsPerSec: median(rs.map((r) => r.pairsPerSec)),
        request: { p50: median(rs.map((r) => r.request.p50)), p99: median(rs.map((r) => r.request.p99)) },
        verify: { p50: median(rs.map((r) => r.verify.p50)), p99: median(rs.map((r) => r.verify.p99)) },
        // CPU ms per pair of the host's processes and of its Redis (medians over the rounds).
        cpuHost: median(rs.map((r) => (r.cpuSeconds?.[0] * 1000) / r.pairs)),
        cpuStore: median(rs.map((r) => (r.cpuSeconds?.[1] * 1000) / r.pairs)),
        // CPU ms per pair of the load generator (its clients and the gateway stand-in).
        cpuLoad: median(rs.map((r) => (r.loadCpuSeconds * 1000) / r.pairs)),
        errors: rs.reduce((a, r) => a + r.errors, 0),
        pairs: rs.reduce((a, r) => a + r.pairs, 0),
        errorSamples: rs.flatMap((r) => r.errorSamples).slice(0, 3),
      });
    }
  }
  // otpkit serve+Redis / peer: the median of the ratios of the same round (adjacent windows).
  const ratios = [];
  for (const clients of LEVELS) {
    const a = run.results[`node-redis@${clients}`];
    const b = run.results[`peer@${clients}`];
    if (!a || !b) continue;
    const per = a.map((r) => r.pairsPerSec / (b.find((x) => x.round === r.round)?.pairsPerSec ?? NaN));
    ratios.push({ clients, ratio: median(per), perRound: per });
  }
  return { rows, ratios };
}

function markdown(run, { rows, ratios }) {
  const out = [];
  const worker = run.hosts.includes('worker') ? `; the Worker 1 round at ${WORKER_LEVELS.join(' and ')} clients` : '';
  out.push(`Measured on ${run.machine}: ${run.rounds} round${run.rounds === 1 ? '' : 's'} × ${run.seconds} s per window (after ${run.warmup} s of warm-up), medians over the rounds${worker}; the whole run took ${Math.round(run.wallSeconds)} s.`);
  out.push('');
  out.push('| host | clients | pairs/s (median) | request p50/p99 ms | verify p50/p99 ms | CPU ms/pair: host + Redis | load generator CPU ms/pair | errors |');
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|');
  const cpuCell = (r) => (Number.isFinite(r.cpuHost) ? (r.kind === 'node' || r.kind === 'node-nodehttp' || r.kind === 'worker' ? `${r.cpuHost.toFixed(2)}` : `${r.cpuHost.toFixed(2)} + ${r.cpuStore.toFixed(2)}`) : '–');
  for (const r of rows) {
    out.push(`| ${LABEL[r.kind]} | ${r.clients} | ${int(r.pairsPerSec)} | ${ms(r.request.p50)} / ${ms(r.request.p99)} | ${ms(r.verify.p50)} / ${ms(r.verify.p99)} | ${cpuCell(r)} | ${Number.isFinite(r.cpuLoad) ? r.cpuLoad.toFixed(2) : '–'} | ${r.errors} of ${r.pairs + r.errors} |`);
  }
  const at32 = rows.find((r) => r.kind === 'node-redis' && r.clients === 32);
  if (ratios.length || at32) out.push('', 'Goals (issue 7):', '');
  if (ratios.length) {
    const txt = ratios.map((x) => `${x.clients}: ${x.ratio.toFixed(2)}×`).join(', ');
    const met = ratios.every((x) => x.ratio >= 1.5);
    out.push(`- ${met ? 'met' : 'NOT met'}: otpkit serve+Redis ≥ 1.5× the peer's throughput (otpkit serve+Redis / peer at ${ratios.map((x) => x.clients).join(', ')} clients: ${txt}; median of the per-round ratios)`);
  }
  if (at32) {
    const met = at32.request.p99 <= 5 && at32.verify.p99 <= 5;
    out.push(`- ${met ? 'met' : 'NOT met'}: otpkit serve+Redis p99 ≤ 5 ms at 32 clients (request ${ms(at32.request.p99)} ms, verify ${ms(at32.verify.p99)} ms)`);
  }
  // Issue 14's goals, at 32 clients, against the same peer.
  const at = (kind) => rows.find((r) => r.kind === kind && r.clients === 32);
  const peer32 = at('peer');
  if (peer32 && (at32 || at('node'))) {
    out.push('', 'Goals (issue 14, at 32 clients):', '');
    const r32 = ratios.find((x) => x.clients === 32);
    if (r32) out.push(`- ${r32.ratio >= 3 ? 'met' : 'NOT met'}: otpkit serve+Redis ≥ 3× the peer's pairs/s (${r32.ratio.toFixed(2)}×)`);
    if (at32) {
      const req = at32.request.p99 / peer32.request.p99;
      const ver = at32.verify.p99 / peer32.verify.p99;
      out.push(`- ${req <= 1 / 3 && ver <= 1 / 3 ? 'met' : 'NOT met'}: request and verify p99 ≤ ⅓ of the peer's (request ${ms(at32.request.p99)} vs ${ms(peer32.request.p99)} ms: ${req.toFixed(2)}×; verify ${ms(at32.verify.p99)} vs ${ms(peer32.verify.p99)} ms: ${ver.toFixed(2)}×)`);
      const mine = at32.cpuHost + at32.cpuStore;
      const theirs = peer32.cpuHost + peer32.cpuStore;
      if (Number.isFinite(mine) && Number.isFinite(theirs)) {
        out.push(`- CPU per pair, host + Redis: otpkit serve ${mine.toFixed(2)} ms (${at32.cpuHost.toFixed(2)} + ${at32.cpuStore.toFixed(2)}), the peer ${theirs.toFixed(2)} ms (${peer32.cpuHost.toFixed(2)} + ${peer32.cpuStore.toFixed(2)}): ${(mine / theirs).toFixed(2)}× the peer's`);
      }
    }
    const mem = at('node');
    if (mem) out.push(`- ${mem.pairsPerSec / peer32.pairsPerSec >= 4 ? 'met' : 'NOT met'}: otpkit serve with the memory store ≥ 4× the peer's pairs/s (${(mem.pairsPerSec / peer32.pairsPerSec).toFixed(2)}×, ratio of the medians; CPU ${mem.cpuHost.toFixed(2)} ms a pair)`);
    // What the goal's rate leaves for each pair of the machine's CPU, against what the parts that
    // are not the host (the load generator, and Redis) already took a pair in this run.
    const cores = os.cpus().length;
    const budget = (times, r, store) => {
      const rate = times * peer32.pairsPerSec;
      const others = r.cpuLoad + (store ? r.cpuStore : 0);
      if (!Number.isFinite(others)) return;
      const left = (cores * 1000) / rate;
      out.push(`- Budget of ${times}× on ${cores} cores (${int(rate)} pairs/s): ${left.toFixed(2)} ms of CPU a pair for everything; the load generator${store ? ' and Redis' : ''} alone took ${others.toFixed(2)} ms a pair in this run${others >= left ? ', so the goal cannot be reached on this machine whatever the host does' : `, leaving ${(left - others).toFixed(2)} ms for the host`}`);
    };
    if (at32) budget(3, at32, true);
    if (mem) budget(4, mem, false);
  }
  const errs = rows.filter((r) => r.errors);
  if (errs.length) {
    out.push('');
    out.push(`Errors: ${errs.map((r) => `${LABEL[r.kind]} at ${r.clients}: ${r.errors} (e.g. ${r.errorSamples[0]?.replace(/\|/g, '\\|')})`).join('; ')}.`);
  }
  return out.join('\n');
}

const METHOD = `**Method.** \`node bench/http.mjs --write\` (about 4 minutes). One pair = \`POST /v1/messaging/otp/request\`
for a destination never used before, the code taken from what the gateway stand-in received, then
\`POST /v1/messaging/otp/verify\`, which must answer 200 \`APPROVED\` (anything else is an error,
counted, never dropped). \`clients\` loops run pairs concurrently over node:http keep-alive
connections (bench/lib/pairs.mjs); the load generator and the gateway stand-in share one Node process.
Each contender is its own process on the same 2 cores: \`otpkit serve\` with the memory store,
\`otpkit serve\` with Redis, the peer, and the Worker under \`wrangler dev --local\`. Each otpkit
window spreads its pairs round-robin over 3 workspaces created through the admin API, so the
per-workspace flood shield (100,000 sends a minute) never bites. otpkit serve+Redis and the peer
share one private redis-server (no persistence, \`FLUSHDB\` before each window); otpkit serve on a
Redis Cluster has its own local 3-master cluster (three more redis-server on the same 2 cores,
\`FLUSHALL\` of each master before each window). Rounds interleave the
contenders (memory, Redis, peer, memory, …) at each level; the table gives the median over the rounds
of pairs/s and of each window's p50/p99, and the throughput ratio is the median of the per-round
ratios. CPU per pair is the user + system time (from /proc) of the host's processes (wrangler and
workerd together for the Worker) and, apart, of the Redis servers it uses, over the timed window,
divided by the pairs it completed: a figure that does not hide in core count. The Worker runs once, after the others, at 1 and 32 clients only: locally it saturates near
40 requests/s (see above), so 128 clients would only queue.

**The peer** (\`bench/peer/server.mjs\`) is an OTP service written the common way: node:http, ioredis,
one API key compared as a string, a 6-digit \`crypto.randomInt\` code, \`randomUUID\` session id,
\`{code, dest, attempts, expiresAt}\` stored as JSON with \`SET … PX\`, the SMS POSTed with \`fetch\`
before answering; verify is \`GET\`, plaintext compare, \`DEL\` on success or \`SET\` of the new attempts
count — no transaction, so concurrent guesses can race the attempts counter. **It does less than
otpkit**: no per-destination or per-workspace limits, no audit trail, the code stored in plaintext
(otpkit stores an HMAC), no workspaces or idempotency. The comparison asks what otpkit's extra
guarantees cost against what people actually deploy.`;

const HEADING = '## HTTP: request+verify pairs against a peer service';

// ---- --profile: where otpkit serve+Redis spends its time, and Redis commands per pair ----

/** Self time per function from a .cpuprofile (V8's sampled profile): [{name, url, ms, pct}]. */
function selfTimes(profile, window = null) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = profile.timeDeltas;
  // Sample times are CLOCK_MONOTONIC µs, as process.hrtime() here: keep the timed window only.
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    t += dt[i] || 0;
    if (window && (t < window[0] || t > window[1])) continue;
    self.set(profile.samples[i], (self.get(profile.samples[i]) || 0) + (dt[i] || 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const agg = new Map();
  for (const [id, us] of self) {
    const cf = byId.get(id).callFrame;
    const file = cf.url ? cf.url.replace(/^file:\/\//, '').replace(`${ROOT}/`, '') : '';
    const key = `${cf.functionName || '(anonymous)'}\t${file}${file ? `:${cf.lineNumber + 1}` : ''}`;
    agg.set(key, (agg.get(key) || 0) + us);
  }
  const byFile = new Map();
  for (const [key, us] of agg) {
    const file = key.split('\t')[1].replace(/:\d+$/, '') || key.split('\t')[0];
    const group = file.startsWith('node:') ? 'node: internals' : file;
    byFile.set(group, (byFile.get(group) || 0) + us);
  }
  const list = (m) =>
    [...m].map(([k, us]) => ({ key: k, ms: us / 1000, pct: (100 * us) / total })).sort((x, y) => y.ms - x.ms);
  const idle = [...agg].filter(([k]) => k.startsWith('(idle)')).reduce((a, [, us]) => a + us, 0);
  return { totalMs: total / 1000, busyMs: (total - idle) / 1000, functions: list(agg), files: list(byFile) };
}

/** redis-server's own CPU time so far, µs (user + sys, main thread and children). */
async function redisCpu(client) {
  const info = await client.info('cpu');
  const v = (k) => Number(new RegExp(`^${k}:([\\d.]+)`, 'm').exec(info)?.[1] || 0);
  return 1e6 * (v('used_cpu_sys') + v('used_cpu_user'));
}

async function commandStats(client) {
  const info = await client.info('commandstats');
  const out = {};
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

/** Commands per pair as the client sends them (MONITOR's source tells Lua-internal ones apart). */
async function roundTrips(redis, c, sink, pairs = 20) {
  const apiKey = await c.keys(); // before MONITOR: creating workspaces is not part of a pair
  const mon = await redis.client.monitor();
  let commands = 0;
  let lua = 0;
  let inMulti = false;
  let multis = 0;
  mon.on('monitor', (_time, argv, source) => {
    const cmd = String(argv[0]).toLowerCase();
    if (source === 'lua') return void (lua += 1);
    if (cmd === 'monitor' || cmd === 'info' || cmd === 'config') return;
    commands += 1;
    if (cmd === 'multi') inMulti = true;
    else if (cmd === 'exec') (inMulti = false), (multis += 1);
    else if (inMulti) multis += 1; // queued inside MULTI: no round trip of its own
  });
  await sleep(200);
  const r = await runPairs({ base: c.baseUrl, apiKey, codes: sink.codes, clients: 1, pairs, warmupSeconds: 0 });
  await sleep(1000);
  mon.disconnect();
  const n = r.pairs + r.errors;
  return { commands: commands / n, lua: lua / n, roundTrips: (commands - multis) / n };
}

async function profile() {
  const sink = await startCodeSink();
  const redis = await startRedisWithClient();
  const clients = 32;
  const report = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'otpkit-http-prof-'));
  for (const kind of arg('profile-hosts', 'node-redis,peer').split(',')) {
    // node 20 refuses --cpu-prof in NODE_OPTIONS: a preload runs the same profiler (bench/peer/cpu-prof.cjs).
    process.env.OTPKIT_CPU_PROF_DIR = path.join(dir, kind);
    const nodeOptions = `--require ${path.join(ROOT, 'bench', 'peer', 'cpu-prof.cjs')}`;
    log(`profiling ${LABEL[kind]} at ${clients} clients for ${SECONDS} s …`);
    const c = await startContender(kind, { sink, redis, nodeOptions });
    let r;
    let cmds;
    let trips;
    let window;
    let redisUs;
    try {
      await redis.client.flushdb();
      const apiKey = await c.keys();
      await runPairs({ base: c.baseUrl, apiKey, codes: sink.codes, clients, seconds: 1, warmupSeconds: 0 });
      await sleep(500); // bookkeeping after the answers (otpkit) settles
      sink.codes.clear();
      await redis.client.config('RESETSTAT');
      const cpu0 = await redisCpu(redis.client);
      window = [Number(process.hrtime.bigint() / 1000n)];
      r = await runPairs({ base: c.baseUrl, apiKey, codes: sink.codes, clients, seconds: SECONDS, warmupSeconds: 0 });
      window.push(Number(process.hrtime.bigint() / 1000n));
      await sleep(1000);
      cmds = await commandStats(redis.client);
      redisUs = (await redisCpu(redis.client)) - cpu0;
      trips = await roundTrips(redis, c, sink);
    } finally {
      await c.stop();
      delete process.env.OTPKIT_CPU_PROF_DIR;
    }
    const attempted = r.pairs + r.errors;
    const perPair = Object.entries(cmds)
      .filter(([k]) => !['config', 'info'].includes(k))
      .map(([k, n]) => [k, n / attempted])
      .sort((a, b) => b[1] - a[1]);
    const sumPerPair = perPair.reduce((a, [, n]) => a + n, 0);
    const files = readdirSync(path.join(dir, kind)).filter((f) => f.endsWith('.cpuprofile'));
    const prof = files.length ? selfTimes(JSON.parse(readFileSync(path.join(dir, kind, files[0]), 'utf8')), window) : null;
    report.push({ kind, r, perPair, sumPerPair, prof, trips, redisUsPerPair: redisUs / attempted, attempted });
    log(`    ${int(r.pairsPerSec)} pairs/s, errors ${r.errors}, ${sumPerPair.toFixed(1)} Redis commands per pair`);
  }
  await redis.stop();
  await sink.close();
  rmSync(dir, { recursive: true, force: true });
  const out = [`Profile, ${machineLine()}: ${clients} clients, ${SECONDS} s, node --cpu-prof on the host process.`, ''];
  for (const x of report) {
    out.push(`### ${LABEL[x.kind]}: ${int(x.r.pairsPerSec)} pairs/s, request p50/p99 ${ms(x.r.request.p50)}/${ms(x.r.request.p99)} ms, verify p50/p99 ${ms(x.r.verify.p50)}/${ms(x.r.verify.p99)} ms, errors ${x.r.errors}`);
    out.push('');
    out.push(`Redis commands per pair at ${clients} clients (INFO commandstats, Lua-internal ones included): ${x.sumPerPair.toFixed(2)} (${x.perPair.map(([k, n]) => `${k} ${n.toFixed(2)}`).join(', ')})`);
    out.push('');
    out.push(`Sequential pairs under MONITOR: ${x.trips.roundTrips.toFixed(1)} round trips per pair (MULTI…EXEC counted as one), ${x.trips.commands.toFixed(1)} commands sent by the client, ${x.trips.lua.toFixed(1)} run inside Lua scripts`);
    out.push('');
    out.push(`redis-server CPU (INFO cpu, user+sys) per pair: ${Math.round(x.redisUsPerPair)} µs`);
    if (x.prof) {
      out.push('');
      out.push(`Host process CPU in the timed window (sampled): ${Math.round((1000 * x.prof.busyMs) / x.attempted)} µs per pair busy (${Math.round(x.prof.busyMs)} of ${Math.round(x.prof.totalMs)} ms not idle).`);
      out.push('');
      out.push(`CPU self time by file (of ${Math.round(x.prof.totalMs)} ms sampled in the timed window):`);
      for (const f of x.prof.files.slice(0, 10)) out.push(`- ${f.pct.toFixed(1)} % ${f.key}`);
      out.push('');
      out.push('Top functions by self time:');
      for (const f of x.prof.functions.slice(0, 20)) out.push(`- ${f.pct.toFixed(1)} % ${f.key.replace('\t', '  ')}`);
    }
    out.push('');
  }
  process.stdout.write(`${out.join('\n')}\n`);
  process.exit(0);
}

async function main() {
  if (flag('profile')) return profile();
  const run = await bench();
  const sum = summarize(run);
  const md = markdown(run, sum);
  process.stdout.write(`${md}\n`);
  if (JSON_FILE) writeFileSync(JSON_FILE, `${JSON.stringify({ ...run, summary: sum }, null, 2)}\n`);
  if (flag('write')) {
    writeSection('http-bench', `${md}\n\n${METHOD}`, { heading: HEADING, before: 'node-inprocess' });
    log('BENCHMARKS.md: http-bench section written');
  }
  process.exit(0); // idle keep-alive sockets of fetch would hold the loop open for a while
}

main().catch(async (e) => {
  process.stderr.write(`http: ${e.stack || e}\n`);
  for (const child of running) await child.stopGroup();
  process.exit(1);
});
