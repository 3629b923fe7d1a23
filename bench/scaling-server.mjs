// The server bench/scaling.mjs measures: `otpkit serve` (napi-binding/bin/otpkit.js) in every way
// that matters — the package's OtpService + createServer, MemoryStore or RedisStore from REDIS_URL,
// the JSON gateway from SMS_GATEWAY_URL, the same environment variables — plus an IPC channel
// (started with child_process.fork) through which the bench asks it to prefill N live sessions
// before the HTTP runs and to report memory. While prefilling, the gateway drops the messages
// (answers 'delivered' without sending; the codes are never seen); afterwards it is the real JSON
// gateway pointed at the bench's code sink.
//
// Prefill:
//   memory store: N real requests in-process, `FlowService.call('request', workspace, …)` (the
//     code path of POST /v1/messaging/otp/request after authentication), 64 in flight, round-robin over
//     the given workspaces, every session on its own destination (+1666…).
//   Redis store: one real request per workspace (the template), then its exact records copied
//     N − W times with new session ids and destinations through pipelined commands: the session
//     (`s:<ws>:<id>`, same value, same TTL), its guard (`g:<ws>:<dest>`), its purge entry
//     (`purge:all`), its analytics open-session entry (`ao:<ws>`), the day counters, and the
//     last 10,000 audit lines per workspace (what the real path keeps). Their codes are unknown,
//     so they are never verified.
//
// Messages in: {cmd:'prefill', n, workspaces:[id…]}, {cmd:'watch'}, {cmd:'stats'}.
// Messages out: {ready, port}, {progress, done, n}, {prefilled, …memory}, {stats, …}.
// Never sends or prints codes, keys or the pepper.
import { createRequire } from 'node:module';
import { randomUUID } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const PKG = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'napi-binding');
const { OtpService, MemoryStore, RedisStore, gatewayFromEnv, createServer } = require(PKG);
// The bench's own Redis client (ioredis, a devDependency of the package): the store's client is
// its own business; this one reads memory and key counts and copies the template records.
const Redis = createRequire(path.join(PKG, 'package.json'))('ioredis');

const env = process.env;
const PREFIX = 'otpkit:'; // RedisStore's default prefix
const AUDIT_KEEP = 10_000; // as napi-binding/lib/redis-store.js
const CONCURRENCY = 64;
const BATCH = 10_000; // Redis copies per pipeline
const PROGRESS_EVERY = 100_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const send = (m) => process.send && process.send(m);

let store;
let raw = null; // the bench's own client to the store's Redis
if (env.REDIS_URL) {
  store = new RedisStore({ url: env.REDIS_URL });
  await store.connect();
  raw = new Redis(env.REDIS_URL);
  raw.on('error', () => {}); // a failed command rejects; no unhandled-error noise at shutdown
} else {
  store = new MemoryStore();
}
const real = gatewayFromEnv(env);
let prefilling = false;
const gateway = { send: (m) => (prefilling ? Promise.resolve('delivered') : real.send(m)) };
const service = new OtpService({ pepper: env.OTP_PEPPER, adminToken: env.ADMIN_TOKEN, gateway, store });
const server = createServer(service);
await new Promise((r) => server.listen(Number(env.PORT || 0), '127.0.0.1', r));

function gc() {
  if (global.gc) {
    global.gc();
    global.gc();
  }
}

async function redisMemory() {
  const info = await raw.info('memory');
  const field = (k) => Number(new RegExp(`^${k}:(\\d+)`, 'm').exec(info)?.[1] ?? NaN);
  const keys = await raw.dbsize();
  return { usedMemory: field('used_memory'), usedMemoryRss: field('used_memory_rss'), keys };
}

async function memory() {
  gc();
  await sleep(50);
  gc();
  const m = process.memoryUsage();
  const out = { rss: m.rss, heapUsed: m.heapUsed, external: m.external };
  if (store.kind === 'memory') out.store = store.stats();
  else out.redis = await redisMemory();
  return out;
}

const destOf = (i) => `+1666${String(i).padStart(7, '0')}`;
const bodyFor = (dest) => Buffer.from(JSON.stringify({ dest, src: 'LOAD', purpose: 'LOGIN' }));

async function issueOne(ws, dest) {
  // The path a request takes in otpkit serve and the library: the flow run in Rust (FlowService).
  const flows = service.flowService();
  const reply = flows ? await flows.call('request', ws, null, bodyFor(dest)) : await service.issue(ws, 'v1', bodyFor(dest));
  if (reply.status !== 200) throw new Error(`prefill request answered ${reply.status}`);
  return JSON.parse(reply.body).data.sessionId;
}

async function prefillReal(n, workspaces, from = 0) {
  let next = from;
  let done = from;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      await issueOne(workspaces[i % workspaces.length], destOf(i));
      done += 1;
      if (done % PROGRESS_EVERY === 0) send({ progress: true, done, n });
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

/**
 * A raw RESP connection for the bulk copies: commands are encoded straight into buffers and the
 * replies (all one-line: +OK or :n, or -ERR) are only counted. About 3× faster than an ioredis
 * pipeline here, where the encoding in JS is the bottleneck.
 */
async function respPipe(url) {
  const net = await import('node:net');
  const u = new URL(url);
  const sock = net.connect(Number(u.port), u.hostname);
  await new Promise((r, j) => (sock.once('connect', r), sock.once('error', j)));
  sock.setNoDelay(true);
  let sent = 0;
  let replies = 0;
  let errors = 0;
  let waiter = null;
  let lineStart = true;
  sock.on('data', (buf) => {
    for (let i = 0; i < buf.length; i++) {
      if (lineStart && buf[i] === 45) errors += 1; // '-'
      lineStart = buf[i] === 10;
      if (lineStart) replies += 1;
    }
    if (waiter && replies >= waiter.n) waiter.resolve();
  });
  let parts = [];
  let size = 0;
  const flush = async () => {
    if (!parts.length) return;
    const chunk = parts.join('');
    parts = [];
    size = 0;
    if (!sock.write(chunk)) await new Promise((r) => sock.once('drain', r));
  };
  return {
    async cmd(...args) {
      let s = `*${args.length}\r\n`;
      for (const a of args) {
        const v = String(a);
        s += `$${Buffer.byteLength(v)}\r\n${v}\r\n`;
      }
      parts.push(s);
      size += s.length;
      sent += 1;
      if (size > 1 << 20) await flush();
    },
    /** Waits until every command sent so far has answered; throws if any answered an error. */
    async sync() {
      await flush();
      if (replies < sent) await new Promise((resolve) => (waiter = { n: sent, resolve }));
      waiter = null;
      if (errors) throw new Error(`${errors} copied records were refused by Redis`);
    },
    close: () => sock.end(),
  };
}

const mask = (dest) => `${dest.slice(0, 4)}****${dest.slice(-4)}`;

async function prefillRedisCopies(n, workspaces) {
  const R = raw;
  const W = workspaces.length;
  // 1. One real session per workspace: the templates.
  const templates = [];
  for (let w = 0; w < W && w < n; w++) {
    const ws = workspaces[w];
    const dest = destOf(w);
    const sid = await issueOne(ws, dest);
    templates.push({ ws, wsId: ws.id, dest, sid });
  }
  await service.settle();
  for (const t of templates) {
    const sKey = `${PREFIX}s:${t.wsId}:${t.sid}`;
    const gKey = `${PREFIX}g:${t.wsId}:${t.dest}`;
    const [[, sVal], [, sTtl], [, gVal], [, gTtl], [, purgeScore], [, ao], [, audit]] = await R.pipeline()
      .get(sKey)
      .pttl(sKey)
      .get(gKey)
      .pttl(gKey)
      .zscore(`${PREFIX}purge:all`, sKey)
      .zrange(`${PREFIX}ao:${t.wsId}`, 0, -1, 'WITHSCORES')
      .lrange(`${PREFIX}a:${t.wsId}`, 0, -1)
      .exec();
    if (!sVal || !gVal || purgeScore == null || sTtl < 60_000 || gTtl < 60_000) {
      throw new Error('template records missing or too short-lived');
    }
    const aoAt = ao.findIndex((m, i) => i % 2 === 0 && m.startsWith(`${t.sid}|`));
    if (aoAt < 0) throw new Error('template has no analytics open entry');
    const lines = audit.filter((l) => l.includes(t.sid)).map((l) => l.slice(l.indexOf('|') + 1)).reverse();
    if (lines.length !== 2 || !lines.every((l) => l.includes(`"dest":"${mask(t.dest)}"`))) {
      throw new Error('template audit lines not as expected');
    }
    const day = Number(ao[aoAt].split('|')[1]);
    const counters = await R.hgetall(`${PREFIX}an:${t.wsId}:${day}`);
    Object.assign(t, { sVal, sTtl, gVal, gTtl, purgeScore, aoMember: ao[aoAt], aoScore: ao[aoAt + 1], lines, day, counters });
  }
  // 2. The copies, round-robin over the workspaces (index i → workspace i % W, destination i).
  const copies = n - templates.length;
  const perWs = templates.map((_, w) => Math.floor(copies / W) + (w < copies % W ? 1 : 0));
  const auditFrom = perWs.map((c) => Math.max(0, c - AUDIT_KEEP / 2)); // older ones would be trimmed
  const seen = perWs.map(() => 0);
  let seq = await R.incrby(`${PREFIX}aseq:all`, 2 * Math.min(copies, W * (AUDIT_KEEP / 2)));
  seq -= 2 * Math.min(copies, W * (AUDIT_KEEP / 2));
  let done = templates.length;
  let lastCopy = null;
  const pipe = await respPipe(env.REDIS_URL);
  for (let start = 0; start < copies; start += BATCH) {
    const purge = []; // one variadic ZADD per batch (and per workspace for `ao`): fewer commands
    const open = templates.map(() => []);
    for (let j = start; j < Math.min(copies, start + BATCH); j++) {
      const w = j % W;
      const t = templates[w];
      const i = templates.length + j;
      const sid = randomUUID();
      const dest = destOf(i);
      const sKey = `${PREFIX}s:${t.wsId}:${sid}`;
      lastCopy = { wsId: t.wsId, sid };
      await pipe.cmd('SET', sKey, t.sVal.split(t.sid).join(sid).split(`"dest":"${t.dest}"`).join(`"dest":"${dest}"`), 'PX', t.sTtl);
      await pipe.cmd('SET', `${PREFIX}g:${t.wsId}:${dest}`, t.gVal.split(t.sid).join(sid), 'PX', t.gTtl);
      purge.push(t.purgeScore, sKey);
      open[w].push(t.aoScore, t.aoMember.split(t.sid).join(sid));
      if (seen[w]++ >= auditFrom[w]) {
        const ls = t.lines.map((l) => l.split(t.sid).join(sid).split(mask(t.dest)).join(mask(dest)));
        await pipe.cmd('LPUSH', `${PREFIX}a:${t.wsId}`, ...ls.map((l) => `${++seq}|${l}`));
      }
      done += 1;
      if (done % PROGRESS_EVERY === 0) send({ progress: true, done, n });
    }
    await pipe.cmd('ZADD', `${PREFIX}purge:all`, ...purge);
    for (let w = 0; w < W; w++) if (open[w].length) await pipe.cmd('ZADD', `${PREFIX}ao:${templates[w].wsId}`, ...open[w]);
    await pipe.sync(); // one batch in flight at a time, so neither side buffers without bound
  }
  pipe.close();
  const fin = R.pipeline();
  templates.forEach((t, w) => {
    fin.ltrim(`${PREFIX}a:${t.wsId}`, 0, AUDIT_KEEP - 1);
    for (const [field, v] of Object.entries(t.counters)) fin.hincrby(`${PREFIX}an:${t.wsId}:${t.day}`, field, Number(v) * perWs[w]);
  });
  await fin.exec();
  // Sanity: a copy reads back as a live PENDING session through the service.
  if (lastCopy) {
    const st = await service.forWorkspace(lastCopy.wsId).status(lastCopy.sid);
    if (!st || !JSON.stringify(st).includes('PENDING')) throw new Error('a copied session does not read back as PENDING');
  }
}

let eld = null;

process.on('message', async (msg) => {
  try {
    if (msg.cmd === 'prefill') {
      const workspaces = [];
      for (const id of msg.workspaces) {
        // (OtpService.loadWorkspace went with the admin flows: the stored record, parsed as the service does)
        const json = await store.getWorkspace(id);
        if (json == null) throw new Error(`workspace ${id} not found`);
        workspaces.push(service.parsedWorkspace(json));
      }
      const t0 = performance.now();
      prefilling = true;
      // Memory store: the first sessions (up to 1,000, at most half) are made before the "before"
      // measurement, so one-time costs of the first requests (compiled code, allocator arenas) are
      // not counted per session; the per-session figure divides by the sessions made after it.
      const warm = store.kind === 'memory' ? Math.min(1000, Math.floor(msg.n / 2)) : 0;
      if (warm) await prefillReal(warm, workspaces);
      await service.settle();
      const before = await memory();
      if (store.kind === 'memory') await prefillReal(msg.n, workspaces, warm);
      else await prefillRedisCopies(msg.n, workspaces);
      await service.settle();
      prefilling = false;
      const seconds = (performance.now() - t0) / 1000;
      const after = await memory();
      send({ prefilled: true, seconds, before, after, measured: msg.n - warm, method: store.kind === 'memory' ? 'requests' : 'copies' });
    } else if (msg.cmd === 'watch') {
      eld = monitorEventLoopDelay({ resolution: 5 });
      eld.enable();
      send({ watching: true });
    } else if (msg.cmd === 'stats') {
      let loop = null;
      if (eld) {
        eld.disable();
        loop = { p99Ms: eld.percentile(99) / 1e6, maxMs: eld.max / 1e6 };
        eld = null;
      }
      // The periodic sweep (every 10 s in both stores), timed alone: median of 3.
      const sweeps = [];
      for (let k = 0; k < 3; k++) {
        const t = performance.now();
        await store.sweep(Date.now());
        sweeps.push(performance.now() - t);
      }
      sweeps.sort((a, b) => a - b);
      send({ stats: true, memory: await memory(), loop, sweepMs: sweeps[1] });
    }
  } catch (e) {
    send({ error: String(e && e.message) });
  }
});

const stop = () => {
  server.close();
  server.closeIdleConnections?.();
  raw?.disconnect();
  service.close().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 3000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('disconnect', stop);
send({ ready: true, port: server.address().port });
