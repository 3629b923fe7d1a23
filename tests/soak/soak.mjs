#!/usr/bin/env node
// Soak: mixed OTP traffic at a fixed rate against one host for a fixed time, with the resident
// memory (RSS) of the host's processes sampled every 10 s.
//
//   node tests/soak/soak.mjs --host worker|node|node-redis [--seconds 600] [--rate 25]
//                            [--sample 10] [--warmup 120] [--cooldown 0] [--json out.json]
//
// The host is started by tests/conformance/host.mjs (wrangler dev --local, or `otpkit serve`
// with the memory store, or with a private redis-server started here) and sends its messages
// to a local SMS sink in this process, so codes are read as a phone would read them.
//
// Traffic is open loop: `rate` flows start every second whatever the host's latency, each flow
// on a destination no other flow holds at that moment. A flow is one of:
//   48% v1 request → (70%) right code, (20%) wrong then right, (10%) left pending to expire
//   15% v1 status of a session seen earlier
//   12% ZendOTP send → status → verify
//   10% verify of an unknown session id (404)
//    8% audit query (limit 50)
//    7% analytics query
// Every answer is checked against what SPEC says it must be; anything else is an error.
// The workspace policy keeps sessions short (ttl 60 s, ZendOTP expiry 1 min, retention 0) so the live set
// reaches a plateau after the first minutes: from then on RSS should stay flat.
//
// --cooldown N: after the traffic, N more seconds of samples with no traffic at all — memory the
// host gives back once idle (objects evicted, caches dropped) is not a leak; memory it keeps is.
//
// Prints a progress line per sample and a summary; exits 1 when any error was seen.

import { randomInt, randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, startHost } from '../conformance/host.mjs';
import { startSink } from '../conformance/sink.mjs';

const args = process.argv.slice(2);
function opt(name, dflt) {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = args[i + 1];
  if (v === undefined) throw new Error(`--${name} needs a value`);
  return v;
}
const HOST = opt('host', process.env.HOST || 'node');
const SECONDS = Number(opt('seconds', 600));
const RATE = Number(opt('rate', 25));
const SAMPLE_S = Number(opt('sample', 10));
const WARMUP_S = Number(opt('warmup', Math.min(120, Math.floor(SECONDS / 3))));
const JSON_OUT = opt('json', null);
const COOLDOWN_S = Number(opt('cooldown', 0));
const POOL = 2000; // destinations
for (const [k, v] of Object.entries({ SECONDS, RATE, SAMPLE_S, WARMUP_S })) {
  if (!Number.isFinite(v) || v <= 0) {
    console.error(`soak: ${k} must be a positive number`);
    process.exit(2);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// RSS of a process group (host.mjs starts each child in its own group) and of single processes.

function procStat(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    const name = stat.slice(stat.indexOf('(') + 1, close);
    const f = stat.slice(close + 2).split(' ');
    // fields after ")": state ppid pgrp ... rss is field 24 overall → index 21 here
    return { name, pgrp: Number(f[2]), rssPages: Number(f[21]) };
  } catch {
    return null;
  }
}
const PAGE = 4096;

function groupRss(pgrp) {
  const out = new Map();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const s = procStat(Number(e));
    if (!s || s.pgrp !== pgrp) continue;
    out.set(s.name, (out.get(s.name) || 0) + s.rssPages * PAGE);
  }
  return out;
}

/** The pid listening on a TCP port on 127.0.0.1, from /proc/net/tcp and the fds under /proc. */
function listenerPid(port) {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && f[1].endsWith(`:${hex}`) && f[3] === '0A') inodes.add(f[9]);
    }
  }
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let fds;
    try {
      fds = readdirSync(`/proc/${e}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let link;
      try {
        link = readlinkSync(`/proc/${e}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(link || '');
      if (m && inodes.has(m[1])) return Number(e);
    }
  }
  return null;
}

const mb = (bytes) => bytes / (1024 * 1024);

// ---------------------------------------------------------------------------------------------
// A private redis-server for node-redis (so its RSS can be sampled too).

async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'otpkit-soak-redis-'));
  const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: 'ignore',
    detached: true,
  });
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) {
      return {
        url: `redis://127.0.0.1:${port}`,
        pid: child.pid,
        stop() {
          try {
            process.kill(child.pid, 'SIGTERM');
          } catch {
            // gone
          }
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    await sleep(100);
  }
  throw new Error('redis-server did not start within 10 s (is it installed? scripts/bootstrap installs it)');
}

// ---------------------------------------------------------------------------------------------
// Traffic.

const codes = new Map(); // sessionId → code, learned from the sink
// wrangler dev's local proxy (not the Worker) answers this when a pooled connection to workerd it
// reuses was closed after ~5 s idle (cloudflare/workers-sdk#14641): the request never reached the
// Worker. Counted apart (`proxyLost`); more than 1% of requests lost that way fails the run.
const WRANGLER_PROXY_DROP = 'Your worker restarted mid-request';
class ProxyLost extends Error {}

const stats = { flows: 0, requests: 0, errors: 0, proxyLost: 0, byRoute: new Map(), errorSamples: [], latencies: [] };

function countRoute(name) {
  stats.byRoute.set(name, (stats.byRoute.get(name) || 0) + 1);
}

function fail(what, res) {
  stats.errors += 1;
  if (stats.errorSamples.length < 20) {
    const detail = res instanceof Error ? String(res.cause?.code || res.message) : `${res.status} ${res.text?.slice(0, 200)}`;
    stats.errorSamples.push(`${what}: ${detail}`);
    if (stats.errorSamples.length <= 5) console.log(`  error: ${what}: ${detail}`); // the first few at once
  }
}

let baseUrl;
let apiKey;

async function call(name, method, route, body) {
  stats.requests += 1;
  countRoute(name);
  const started = performance.now();
  const res = await fetch(`${baseUrl}${route}`, {
    method,
    headers: { authorization: `Bearer ${apiKey}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  const wasm = res.headers.get('x-otpkit-wasm-bytes');
  if (wasm) stats.wasmBytes = Math.max(stats.wasmBytes || 0, Number(wasm));
  if (HOST === 'worker' && res.status === 503 && text.startsWith(WRANGLER_PROXY_DROP)) {
    stats.proxyLost += 1;
    throw new ProxyLost();
  }
  if (stats.latencies.length < 200_000) stats.latencies.push(performance.now() - started);
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // checked by the caller
  }
  return { status: res.status, text, json };
}

// +23359 then 9 digits: 14 digits, valid E.164, apart from the conformance suite's random ones.
const free = Array.from({ length: POOL }, (_, i) => `+23359${String(i).padStart(9, '0')}`);
const known = []; // recent session ids (ring) for status flows

function takeDest() {
  if (free.length === 0) return null;
  return free.splice(randomInt(free.length), 1)[0];
}

async function codeFor(sessionId) {
  for (let i = 0; i < 50; i += 1) {
    const c = codes.get(sessionId);
    if (c) return c;
    await sleep(20);
  }
  return null;
}

function wrong(code) {
  return code.slice(0, -1) + String((Number(code[code.length - 1]) + 1) % 10);
}

async function v1Flow(dest) {
  const purpose = ['LOGIN', 'PASSWORD_RESET'][randomInt(2)];
  const r = await call('v1 request', 'POST', '/v1/messaging/otp/request', { dest, src: 'SOAK', purpose });
  if (r.status !== 200 || !r.json?.data?.sessionId) return fail('v1 request', r);
  const { sessionId, expiresInSeconds } = r.json.data;
  known[stats.flows % 500] = sessionId;
  const code = await codeFor(sessionId);
  if (!code) return fail('v1 request', { status: 'no SMS for', text: sessionId });
  if (expiresInSeconds < 10) return; // a reused session about to expire: nothing certain to check
  const dice = randomInt(100);
  if (dice < 10) return; // left pending: it expires
  if (dice < 30) {
    const w = await call('v1 verify', 'POST', '/v1/messaging/otp/verify', { sessionId, code: wrong(code) });
    if (w.status !== 400 || w.json?.data?.status !== 'INVALID') return fail('v1 verify (wrong)', w);
  }
  const v = await call('v1 verify', 'POST', '/v1/messaging/otp/verify', { sessionId, code });
  if (v.status !== 200 || v.json?.data?.status !== 'APPROVED') return fail('v1 verify (right)', v);
}

async function statusFlow() {
  const id = known[randomInt(Math.max(1, known.length))];
  if (!id) return;
  const r = await call('v1 status', 'GET', `/v1/messaging/otp/sessions/${id}`);
  // A session seen earlier may have expired and been removed since: 404 is allowed then.
  if (r.status === 200 && ['PENDING', 'APPROVED', 'EXPIRED', 'LOCKED'].includes(r.json?.data?.state)) return;
  if (r.status === 404 && r.json?.error?.code === 'NOT_FOUND') return;
  fail('v1 status', r);
}

async function zendFlow(dest) {
  const s = await call('zend send', 'POST', '/otp/send', { phone_number: dest, app: 'soak', expiry: 1, purpose: 'TRANSACTION' });
  if (s.status !== 200 || !s.json?.id) return fail('zend send', s);
  const id = s.json.id;
  const code = await codeFor(id);
  if (!code) return fail('zend send', { status: 'no SMS for', text: id });
  const st = await call('zend status', 'GET', `/otp/${id}/status`);
  if (st.status !== 200 || !['pending', 'verified'].includes(st.json?.status)) return fail('zend status', st);
  if (st.json.status === 'verified') return;
  const v = await call('zend verify', 'POST', `/otp/${id}/verify`, { code });
  if (v.status !== 200 || v.json?.success !== true) return fail('zend verify', v);
}

async function unknownFlow() {
  const id = randomUUID();
  const r = await call('verify unknown', 'POST', '/v1/messaging/otp/verify', { sessionId: id, code: '123456' });
  if (r.status !== 404 || r.json?.data?.status !== 'NOT_FOUND') fail('verify unknown', r);
}

async function auditFlow() {
  const r = await call('audit', 'GET', '/v1/messaging/otp/audit?limit=50');
  if (r.status !== 200 || !Array.isArray(r.json?.data?.events)) fail('audit', r);
}

async function analyticsFlow() {
  const r = await call('analytics', 'GET', '/otp/analytics?days=1');
  if (r.status !== 200 || typeof r.json?.totals?.sent !== 'number') fail('analytics', r);
}

async function flow() {
  stats.flows += 1;
  const dice = randomInt(100);
  try {
    if (dice < 48 || (dice >= 63 && dice < 75)) {
      const dest = takeDest();
      if (!dest) return fail('client', new Error('destination pool exhausted: the host is too slow for this rate'));
      try {
        await (dice < 48 ? v1Flow(dest) : zendFlow(dest));
      } finally {
        free.push(dest);
      }
    } else if (dice < 63) await statusFlow();
    else if (dice < 85) await unknownFlow();
    else if (dice < 93) await auditFlow();
    else await analyticsFlow();
  } catch (err) {
    if (!(err instanceof ProxyLost)) fail('transport', err);
  }
}

// ---------------------------------------------------------------------------------------------

function pct(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main() {
  const sink = await startSink({
    onMessage(m) {
      const run = m.text?.match(/\d{6,10}/);
      if (m.reference && run) codes.set(m.reference, run[0]);
    },
  });
  let redis = null;
  if (HOST === 'node-redis') {
    redis = await startRedis();
    process.env.REDIS_URL = redis.url;
  }
  console.log(`soak: starting ${HOST} (the Worker may need a build first: minutes)`);
  const host = await startHost({ gatewayUrl: sink.gatewayUrl, kind: HOST });
  baseUrl = host.baseUrl;
  const stopAll = async () => {
    await host.stop().catch(() => {});
    redis?.stop();
    await sink.stop().catch(() => {});
  };
  process.on('SIGTERM', () => stopAll().then(() => process.exit(143)));

  try {
    const port = Number(new URL(baseUrl).port);
    const pid = listenerPid(port);
    if (!pid) throw new Error(`no process found listening on port ${port}`);
    const pgrp = procStat(pid).pgrp;

    const created = await fetch(`${baseUrl}/v1/admin/workspaces`, {
      method: 'POST',
      headers: { authorization: `Bearer ${host.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'soak',
        senders: ['SOAK'],
        policy: {
          ttlSeconds: 60,
          retentionSeconds: 0, // ended sessions purged at expiry: the live set plateaus
          sendsPerDestination: { limit: 100, windowSeconds: 60 },
          sendsPerWorkspacePerMinute: 100000,
        },
      }),
    });
    const cj = await created.json();
    if (created.status !== 201) throw new Error(`workspace create answered ${created.status}`);
    apiKey = cj.data.apiKey;

    const samples = [];
    const sample = (t) => {
      const g = groupRss(pgrp);
      const total = [...g.values()].reduce((a, b) => a + b, 0);
      const redisRss = redis ? (procStat(redis.pid)?.rssPages || 0) * PAGE : 0;
      const s = { t, hostMb: mb(total), wasmMb: stats.wasmBytes ? +mb(stats.wasmBytes).toFixed(1) : null, byProcess: Object.fromEntries([...g].map(([k, v]) => [k, +mb(v).toFixed(1)])), redisMb: mb(redisRss), requests: stats.requests, errors: stats.errors };
      samples.push(s);
      const procs = Object.entries(s.byProcess).map(([k, v]) => `${k} ${v}`).join(', ');
      console.log(
        `  t=${String(t).padStart(4)} s  requests ${String(stats.requests).padStart(7)}  errors ${stats.errors}${HOST === 'worker' ? `  lost by wrangler's proxy ${stats.proxyLost}` : ''}  host RSS ${s.hostMb.toFixed(1)} MB (${procs})` +
          (redis ? `  redis ${s.redisMb.toFixed(1)} MB` : '') +
          (s.wasmMb !== null ? `  wasm memory ${s.wasmMb} MB` : ''),
      );
    };

    console.log(`soak: ${HOST} for ${SECONDS} s at ${RATE} flows/s, RSS every ${SAMPLE_S} s (warm-up ${WARMUP_S} s)`);
    sample(0);
    const started = Date.now();
    const inflight = new Set();
    let next = started;
    let nextSample = started + SAMPLE_S * 1000;
    const interval = 1000 / RATE;
    while (Date.now() - started < SECONDS * 1000) {
      const now = Date.now();
      while (next <= now) {
        const p = flow().finally(() => inflight.delete(p));
        inflight.add(p);
        next += interval;
      }
      if (now >= nextSample) {
        sample(Math.round((now - started) / 1000));
        nextSample += SAMPLE_S * 1000;
      }
      await sleep(Math.max(1, Math.min(next, nextSample) - Date.now()));
    }
    await Promise.all(inflight);
    const elapsed = (Date.now() - started) / 1000;
    sample(Math.round(elapsed));
    const cooldown = [];
    if (COOLDOWN_S > 0) {
      console.log(`soak: no traffic for ${COOLDOWN_S} s, RSS still sampled`);
      const idleFrom = Date.now();
      while (Date.now() - idleFrom < COOLDOWN_S * 1000) {
        await sleep(SAMPLE_S * 1000);
        const t = Math.round((Date.now() - started) / 1000);
        sample(t);
        cooldown.push(samples[samples.length - 1]);
      }
      samples.splice(samples.length - cooldown.length, cooldown.length);
    }

    const warm = samples.find((s) => s.t >= WARMUP_S) || samples[0];
    const tail = samples.slice(-3);
    const endMb = tail.reduce((a, s) => a + s.hostMb, 0) / tail.length;
    const maxMb = Math.max(...samples.filter((s) => s.t >= WARMUP_S).map((s) => s.hostMb), warm.hostMb);
    const lat = [...stats.latencies].sort((a, b) => a - b);
    const result = {
      host: HOST,
      seconds: +elapsed.toFixed(1),
      rate: RATE,
      flows: stats.flows,
      requests: stats.requests,
      requestsPerSecond: +(stats.requests / elapsed).toFixed(1),
      errors: stats.errors,
      proxyLost: stats.proxyLost,
      p50ms: +pct(lat, 50).toFixed(1),
      p99ms: +pct(lat, 99).toFixed(1),
      rssStartMb: +samples[0].hostMb.toFixed(1),
      rssWarmMb: +warm.hostMb.toFixed(1),
      rssEndMb: +endMb.toFixed(1),
      rssMaxAfterWarmupMb: +maxMb.toFixed(1),
      growthAfterWarmupMb: +(endMb - warm.hostMb).toFixed(1),
      rssAfterCooldownMb: cooldown.length ? +cooldown[cooldown.length - 1].hostMb.toFixed(1) : null,
      cooldownSeconds: COOLDOWN_S,
      redisWarmMb: redis ? +warm.redisMb.toFixed(1) : null,
      redisEndMb: redis ? +(tail.reduce((a, s) => a + s.redisMb, 0) / tail.length).toFixed(1) : null,
      byRoute: Object.fromEntries(stats.byRoute),
      errorSamples: stats.errorSamples,
      samples,
    };
    console.log();
    console.log(`soak summary (${HOST})`);
    console.log(`  ${result.requests} requests in ${result.seconds} s (${result.requestsPerSecond}/s), ${result.flows} flows, errors ${result.errors}`);
    if (HOST === 'worker') console.log(`  lost by wrangler dev's proxy before reaching the Worker: ${stats.proxyLost} (${((100 * stats.proxyLost) / Math.max(1, stats.requests)).toFixed(2)}%; cloudflare/workers-sdk#14641)`);
    console.log(`  latency p50 ${result.p50ms} ms, p99 ${result.p99ms} ms`);
    console.log(`  host RSS: start ${result.rssStartMb} MB, after warm-up (${warm.t} s) ${result.rssWarmMb} MB, end (mean of last 3) ${result.rssEndMb} MB, max after warm-up ${result.rssMaxAfterWarmupMb} MB → growth ${result.growthAfterWarmupMb} MB`);
    if (cooldown.length) console.log(`  host RSS after ${COOLDOWN_S} s without traffic: ${result.rssAfterCooldownMb} MB`);
    if (redis) console.log(`  redis RSS: after warm-up ${result.redisWarmMb} MB, end ${result.redisEndMb} MB`);
    console.log(`  routes: ${[...stats.byRoute].map(([k, v]) => `${k} ${v}`).join(', ')}`);
    for (const e of stats.errorSamples) console.log(`  error: ${e}`);
    if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify(result, null, 2));
    const tooManyLost = stats.proxyLost > stats.requests / 100;
    if (tooManyLost) console.log('  more than 1% of requests lost by the proxy: that is not the known idle-connection drop any more');
    return result.errors === 0 && !tooManyLost ? 0 : 1;
  } finally {
    await stopAll();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`soak: ${err.stack || err}`);
    process.exit(2);
  },
);
