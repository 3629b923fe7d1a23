#!/usr/bin/env node
// In-process benchmark (a script, not a test): request+verify pairs per second through the Node
// package's OtpService, against a "node:crypto" peer written the way a typical Node developer
// would, with an in-memory store and with Redis. No HTTP: each pair is two awaited calls.
//
//   node napi-binding/bench/inprocess.mjs [--write]
//   RUNS=5 SECONDS=1.5 WARMUP=2000 CONCURRENCY=1,16 REDIS_URL=redis://… (all optional)
//
// Progress goes to stderr, a markdown table to stdout; --write also replaces the
// <!-- node-inprocess:start --> … <!-- node-inprocess:end --> section of BENCHMARKS.md.
// Without REDIS_URL a private redis-server (no persistence) is started on a free port and
// killed at the end. See README.md next to this file for the method.
import { createRequire } from 'node:module';
import { createHmac, randomInt, randomUUID, randomBytes, timingSafeEqual } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import os from 'node:os';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { BENCHMARKS_MD, startRedis, writeSection } from '../../bench/lib/common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const pkgDir = join(here, '..');
const require = createRequire(join(pkgDir, 'package.json'));
const { OtpService, MemoryStore, RedisStore } = require(pkgDir);
const Redis = require('ioredis'); // the same ioredis package RedisStore uses

const RUNS = Number(process.env.RUNS || 5);
const SECONDS = Number(process.env.SECONDS || 1.5);
const WARMUP = Number(process.env.WARMUP || 2000);
const PRIME = 200; // untimed pairs on each fresh instance before its timed run
const LEVELS = (process.env.CONCURRENCY || '1,16').split(',').map(Number);
const WRITE = process.argv.includes('--write');

// A full GC before every timed run (untimed), so one contender's garbage is not collected
// during the other's run.
v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');

const log = (...a) => console.error('bench:', ...a);
const PEPPER = randomBytes(32).toString('hex'); // 64 bytes
const POLICY = { sendsPerWorkspacePerMinute: 100_000 };
const TTL_MS = 5 * 60 * 1000;

// ---- the gateway: one no-op object shared by every contender --------------------------------
// It keeps the code (first run of digits of the text) by destination, as a phone would.
const inbox = new Map();
const gateway = {
  async send({ to, text }) {
    inbox.set(to, /\d+/.exec(text)[0]);
    return 'delivered';
  },
};
function takeCode(dest) {
  const code = inbox.get(dest);
  if (code === undefined) throw new Error(`no message was sent to ${dest}`);
  inbox.delete(dest);
  return code;
}

// A different E.164 destination for every pair (the per-destination window is 3 sends / 10 min).
let destN = 0;
const nextDest = () => {
  if (destN >= 1e7) throw new Error('out of destinations');
  return '+1555' + String(destN++).padStart(7, '0');
};

// ---- the peer: node:crypto, written plainly ---------------------------------------------------
class CryptoPeer {
  constructor({ pepper, gateway }) {
    this.pepper = pepper;
    this.gateway = gateway;
  }
  hash(sessionId, code) {
    return createHmac('sha256', this.pepper).update(sessionId + code).digest('hex');
  }
  async request({ dest, src, purpose }) {
    const code = String(randomInt(0, 1_000_000)).padStart(6, '0');
    const sessionId = randomUUID();
    const session = {
      codeHash: this.hash(sessionId, code),
      dest,
      purpose,
      expiresAt: Date.now() + TTL_MS,
      attempts: 0,
      maxAttempts: 5,
      used: false,
    };
    const outcome = await this.gateway.send({
      to: dest,
      from: src,
      text: `${code} is your verification code. It expires in 5 minutes.`,
      channel: 'sms',
      reference: sessionId,
    });
    if (outcome !== 'delivered') throw new Error('DELIVERY_FAILED');
    await this.save(sessionId, session, TTL_MS);
    return { sessionId, expiresInSeconds: TTL_MS / 1000, attemptsLeft: session.maxAttempts, reused: false };
  }
  async verify({ sessionId, code }) {
    const s = await this.load(sessionId);
    const answer = (status, message, attemptsLeft) => ({
      sessionId,
      status,
      verified: status === 'APPROVED',
      message,
      attemptsLeft,
    });
    if (!s) return answer('NOT_FOUND', 'Session not found', 0);
    if (s.used) return answer('ALREADY_USED', 'Code already used', 0);
    const now = Date.now();
    if (now >= s.expiresAt) return answer('EXPIRED', 'Code expired', 0);
    if (s.attempts >= s.maxAttempts) return answer('MAX_ATTEMPTS_REACHED', 'Too many attempts', 0);
    s.attempts += 1;
    const given = Buffer.from(this.hash(sessionId, String(code)), 'hex');
    const ok = timingSafeEqual(given, Buffer.from(s.codeHash, 'hex'));
    if (ok) s.used = true;
    await this.save(sessionId, s, s.expiresAt - now);
    const left = s.maxAttempts - s.attempts;
    return ok ? answer('APPROVED', 'OTP verified successfully', left) : answer('INVALID', 'Invalid OTP code', left);
  }
}

class MapPeer extends CryptoPeer {
  constructor(opts) {
    super(opts);
    this.sessions = new Map();
  }
  load(id) {
    return this.sessions.get(id);
  }
  save(id, s) {
    this.sessions.set(id, s);
  }
  async close() {}
}

class RedisPeer extends CryptoPeer {
  constructor({ url, prefix, ...opts }) {
    super(opts);
    this.redis = new Redis(url);
    this.prefix = prefix;
  }
  async load(id) {
    const json = await this.redis.get(this.prefix + id);
    return json == null ? null : JSON.parse(json);
  }
  async save(id, s, ttlMs) {
    await this.redis.set(this.prefix + id, JSON.stringify(s), 'PX', Math.max(1, Math.ceil(ttlMs)));
  }
  async close() {
    await this.redis.quit();
  }
}

// ---- one pair, with output checks ---------------------------------------------------------------
function fail(name, what, value) {
  throw new Error(`${name}: ${what}: ${JSON.stringify(value)}`);
}
async function pair(name, svc) {
  const dest = nextDest();
  const r = await svc.request({ dest, src: 'Acme', purpose: 'LOGIN' });
  if (!r || typeof r.sessionId !== 'string' || !r.sessionId) fail(name, 'request without a sessionId', r);
  const v = await svc.verify({ sessionId: r.sessionId, code: takeCode(dest) });
  if (!v || v.status !== 'APPROVED' || v.sessionId !== r.sessionId) fail(name, 'verify not APPROVED', v);
}

async function drive(name, svc, { count = Infinity, seconds = Infinity, conc = 1 }) {
  let done = 0;
  let started = 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  const worker = async () => {
    while (started < count && performance.now() < deadline) {
      started++;
      await pair(name, svc);
      done++;
    }
  };
  await Promise.all(Array.from({ length: conc }, worker));
  return { done, t0 };
}

// ---- Redis -------------------------------------------------------------------------------------
let redisServer = null; // bench/lib/common.mjs's private redis-server, when REDIS_URL is not set
let redisUrl = process.env.REDIS_URL || null;
const privateRedis = !redisUrl;
const tag = randomBytes(4).toString('hex'); // key prefixes, so a shared REDIS_URL is left tidy

process.on('exit', () => redisServer?.kill());
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    redisServer?.kill();
    process.exit(130);
  });
}

let admin = null; // an ioredis client for housekeeping (FLUSHDB, cleanup), never timed
async function resetRedis() {
  if (privateRedis) await admin.flushdb();
}

// ---- contenders ------------------------------------------------------------------------------
// Each make() returns a fresh instance (fresh store) plus its end-of-run hook and its closer.
// otpkit's end-of-run hook settles its background work (audit, guard bookkeeping) inside the
// timed window, so no work of one run is left to slow down the next contender's run.
let runSeq = 0;
const contenders = {
  memory: [
    {
      key: 'otpkit',
      make: async () => {
        const svc = new OtpService({ pepper: PEPPER, gateway, policy: POLICY, store: new MemoryStore() });
        return { svc, end: () => svc.settle(), close: () => svc.close() };
      },
    },
    {
      key: 'peer',
      make: async () => {
        const svc = new MapPeer({ pepper: PEPPER, gateway });
        return { svc, end: async () => {}, close: () => svc.close() };
      },
    },
  ],
  redis: [
    {
      key: 'otpkit',
      make: async () => {
        const store = new RedisStore({ url: redisUrl, prefix: `otpkit-bench:${tag}:${runSeq++}:` });
        await store.connect();
        const svc = new OtpService({ pepper: PEPPER, gateway, policy: POLICY, store });
        return { svc, end: () => svc.settle(), close: () => svc.close() };
      },
    },
    {
      key: 'peer',
      make: async () => {
        const svc = new RedisPeer({ url: redisUrl, prefix: `peer-bench:${tag}:${runSeq++}:`, pepper: PEPPER, gateway });
        await svc.redis.ping();
        return { svc, end: async () => {}, close: () => svc.close() };
      },
    },
  ],
};

async function timedRun(storeName, c, conc) {
  const inst = await c.make();
  try {
    await drive(c.key, inst.svc, { count: PRIME, conc }); // untimed
    await inst.end();
    gc();
    const { done, t0 } = await drive(c.key, inst.svc, { seconds: SECONDS, conc });
    await inst.end();
    const secs = (performance.now() - t0) / 1000;
    return done / secs;
  } finally {
    await inst.close();
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// ---- main ------------------------------------------------------------------------------------
const tStart = performance.now();
const results = [];
try {
  if (privateRedis) {
    log('starting a private redis-server');
    redisServer = await startRedis();
    redisUrl = redisServer.url;
  }
  admin = new Redis(redisUrl);
  log(`redis at ${redisUrl}${privateRedis ? ' (private)' : ' (REDIS_URL)'}`);
  log(`runs ${RUNS} × ${SECONDS} s per contender, concurrency ${LEVELS.join(', ')}, warm-up ${WARMUP} pairs`);

  for (const storeName of ['memory', 'redis']) {
    const pairOf = contenders[storeName];
    for (const c of pairOf) {
      await resetRedis();
      log(`${storeName} ${c.key} warm-up ${WARMUP} pairs`);
      const inst = await c.make();
      try {
        await drive(c.key, inst.svc, { count: Math.ceil(WARMUP / 2), conc: 1 });
        await drive(c.key, inst.svc, { count: Math.floor(WARMUP / 2), conc: 16 });
        await inst.end();
      } finally {
        await inst.close();
      }
    }
    for (const conc of LEVELS) {
      const rates = { otpkit: [], peer: [] };
      for (let run = 1; run <= RUNS; run++) {
        for (const c of pairOf) {
          await resetRedis();
          const rate = await timedRun(storeName, c, conc);
          rates[c.key].push(rate);
          log(`${storeName} ${c.key} c=${conc} run ${run}/${RUNS}: ${Math.round(rate)} pairs/s`);
        }
      }
      const o = median(rates.otpkit);
      const p = median(rates.peer);
      results.push({ store: storeName, conc, otpkit: o, peer: p, ratio: o / p, rates });
    }
  }
  await resetRedis();
} finally {
  if (admin) {
    if (!privateRedis) {
      // leave a shared Redis as we found it
      for (const pattern of [`otpkit-bench:${tag}:*`, `peer-bench:${tag}:*`]) {
        let cursor = '0';
        do {
          const [next, keys] = await admin.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
          if (keys.length) await admin.unlink(...keys);
          cursor = next;
        } while (cursor !== '0');
      }
    }
    admin.disconnect();
  }
  await redisServer?.stop();
}
const totalSecs = (performance.now() - tStart) / 1000;

// ---- report ----------------------------------------------------------------------------------
const fmt = (n) => Math.round(n).toLocaleString('en-US');
const table = [
  '| store | concurrency | otpkit pairs/s | peer pairs/s | otpkit/peer |',
  '|---|---:|---:|---:|---:|',
  ...results.map(
    (r) =>
      `| ${r.store === 'memory' ? 'memory (Map peer)' : 'Redis (ioredis peer)'} | ${r.conc} | ${fmt(r.otpkit)} | ${fmt(r.peer)} | ${r.ratio.toFixed(2)}× |`,
  ),
].join('\n');
console.log(table);
log(`total ${totalSecs.toFixed(1)} s`);

const find = (store, conc) => results.find((r) => r.store === store && r.conc === conc);
const goal = (r, want, label) =>
  r ? `${r.ratio >= want ? 'met' : 'NOT met'}: ${label} (${r.ratio.toFixed(2)}×)` : `${label}: not measured`;
// Issue 14's goals: memory ≥ 2×, Redis ≥ 1.5×, sequential and 16 in flight.
const goals = [
  goal(find('memory', 1), 2, '≥ 2× the Map peer, memory store, sequential'),
  goal(find('memory', 16), 2, '≥ 2× the Map peer, memory store, 16 in flight'),
  goal(find('redis', 1), 1.5, '≥ 1.5× the Redis peer, Redis store, sequential'),
  goal(find('redis', 16), 1.5, '≥ 1.5× the Redis peer, Redis store, 16 in flight'),
];
for (const g of goals) log('goal', g);

// Markdown paragraphs wrapped at 100 columns, as the rest of BENCHMARKS.md.
const wrap = (text, width = 100) => {
  const lines = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines.join('\n');
};

if (WRITE) {
  const cpus = os.cpus();
  const date = new Date().toISOString().slice(0, 10);
  const section = [
    '## Node in-process: OtpService vs node:crypto peers',
    '',
    wrap(`\`node napi-binding/bench/inprocess.mjs --write\` (${totalSecs.toFixed(0)} s). Measured on ${cpus.length} cores, ${cpus[0]?.model?.trim() ?? 'unknown CPU'}, ${os.arch()}; Node ${process.version}; ${date}.`),
    '',
    table,
    '',
    'Goals (issue 14, from the ratios above):',
    '',
    ...goals.map((g) => `- ${g}`),
    '',
    wrap(`**Method.** One request+verify pair = \`request({dest, src, purpose})\` with a destination never used before, the code taken from the text the no-op gateway received, then \`verify({sessionId, code})\`; every verify must answer \`APPROVED\` (the script aborts otherwise). No HTTP: both calls are awaited in the same process. **otpkit** is \`OtpService\` (the Rust core through Node-API: per-destination guard, flood shield at 100,000/min, session store, audit events) with the default \`MemoryStore\` or \`RedisStore\`; its background bookkeeping is settled inside each timed run. The **peer** is what a typical Node developer writes with \`node:crypto\`: \`randomInt\` code, \`randomUUID\` session id, HMAC-SHA256(pepper, sessionId+code) hex, \`timingSafeEqual\`, attempts/used/expiry checks, stored in a \`Map\` or as JSON in Redis (\`GET\` / \`SET … PX\`) through the same ioredis package; it has no rate limiting and no audit. Each contender gets a ${WARMUP}-pair warm-up, then ${RUNS} runs of ${SECONDS} s each, interleaved otpkit, peer, otpkit, peer… so both share the machine's noise; each run uses a fresh instance (fresh store, ${PRIME} untimed pairs first). The table shows the median pairs/s over the runs, sequentially (concurrency 1) and with 16 pairs in flight. The Redis contenders share one local redis-server (${privateRedis ? 'private, no persistence, FLUSHDB before each run' : 'from REDIS_URL'}) on the same ${cpus.length} cores as Node.`),
  ].join('\n');
  writeSection('node-inprocess', section);
  log(`wrote ${BENCHMARKS_MD}`);
}
