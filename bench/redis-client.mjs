#!/usr/bin/env node
// Issue 14 asks for the addon's RedisStore to move from ioredis (JavaScript) to a Rust client,
// "chosen by measurement". This measures the one thing every flow step does: one EVALSHA of a
// small script that reads a session (≈ 300 bytes) and writes it back with PX, a round trip.
// Same script, same keys, same private redis-server, interleaved runs (A B C, A B C), at 1, 16 and
// 64 requests in flight:
//   ioredis     today's client, in this Node process (defineCommand: EVALSHA, EVAL on NOSCRIPT)
//   redis-rs    redis 0.32, MultiplexedConnection + Script (EVALSHA), tokio, 2 worker threads
//   fred        fred 10, one client (pipelined), evalsha, tokio, 2 worker threads
// Then the same at 16 in flight on a local 3-master Redis Cluster (each client's cluster mode;
// ioredis's Redis.Cluster). Reported: operations/s, latency p50/p99, the client process's CPU per
// operation and Redis's (INFO cpu, summed over the nodes), the best of the runs by throughput. CPU
// per operation is the figure that says what a client costs, whatever the core count.
//
//   node bench/redis-client.mjs [--write] [--seconds 4]
import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from '../tests/conformance/host.mjs';
import { startRedis, startRedisCluster, writeSection } from './lib/common.mjs';

const require = createRequire(path.join(ROOT, 'napi-binding', 'package.json'));
const Redis = require('ioredis');
const arg = (name, d) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : d;
};
const write = process.argv.includes('--write');
const SECONDS = Number(arg('seconds', 4));
const ROUNDS = 2;
const INFLIGHT = [1, 16, 64];
const KEYS = 10_000;
const STEP = `
local v = redis.call('GET', KEYS[1])
if not v then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return v
`;
const log = (m) => process.stderr.write(`redis-client: ${m}\n`);

const crate = path.join(ROOT, 'bench', 'redis-client');
log('building bench/redis-client (release; the first build fetches and compiles redis-rs and fred, a few minutes)');
execFileSync('cargo', ['build', '--release', '-q'], { cwd: crate, stdio: ['ignore', 'inherit', 'inherit'] });
const bin = path.join(crate, 'target', 'release', 'otpkit-bench-redis-client');

const value = (i) =>
  `{"v":2,"id":"${String(i).padStart(8, '0')}-5c1d-4e6f-9a0b-1c2d3e4f5a6b","workspaceId":"ws_0123456789abcdef01234567","dest":"+233201234567","purpose":"LOGIN","channel":"sms","codeHash":"${'ab'.repeat(32)}","attemptsUsed":0,"maxAttempts":5,"createdAt":1795348800000,"expiresAt":1795349100000}`;

function redisCpuUs(info) {
  const get = (n) => Number((info.match(new RegExp(`^${n}:([0-9.]+)`, 'm')) || [])[1] || 0);
  return (get('used_cpu_user') + get('used_cpu_sys')) * 1e6;
}

async function ioredisRun(url, inflight, cluster = null) {
  const nodes = cluster ? cluster.split(',').map((n) => ({ host: n.split(':')[0], port: Number(n.split(':')[1]) })) : null;
  const admin = cluster ? new Redis.Cluster(nodes) : new Redis(url);
  for (let i = 0; i < KEYS; i += 500) {
    await Promise.all(Array.from({ length: Math.min(500, KEYS - i) }, (_, j) => admin.set(`bench:${i + j}`, value(i + j), 'PX', 600000)));
  }
  const servers = cluster ? nodes.map((n) => new Redis(n.port, n.host)) : [admin];
  const serversCpu = async () => (await Promise.all(servers.map((c) => c.info('cpu')))).reduce((sum, info) => sum + redisCpuUs(info), 0);
  const r = cluster ? new Redis.Cluster(nodes) : new Redis(url);
  r.defineCommand('step', { numberOfKeys: 1, lua: STEP });
  const vals = Array.from({ length: 16 }, (_, i) => value(i));
  for (let i = 0; i < 200; i++) await r.step(`bench:${i}`, vals[i % 16], 300000);
  const redisBefore = await serversCpu();
  const cpuBefore = process.cpuUsage();
  const lat = [];
  let stop = false;
  const started = process.hrtime.bigint();
  const worker = async (t) => {
    for (let i = t; !stop; i += inflight) {
      const t0 = process.hrtime.bigint();
      await r.step(`bench:${i % KEYS}`, vals[i % 16], 300000);
      lat.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  };
  const timer = setTimeout(() => (stop = true), SECONDS * 1000);
  await Promise.all(Array.from({ length: inflight }, (_, t) => worker(t)));
  clearTimeout(timer);
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuBefore);
  const redisCpu = (await serversCpu()) - redisBefore;
  lat.sort((a, b) => a - b);
  const n = Math.max(lat.length, 1);
  const pct = (p) => Math.round(lat[Math.min(n - 1, Math.floor(n * p))] ?? 0);
  r.disconnect();
  admin.disconnect();
  if (cluster) for (const c of servers) c.disconnect();
  return {
    client: 'ioredis',
    inflight,
    ops: lat.length,
    opsPerSec: Math.round(lat.length / elapsed),
    p50us: pct(0.5),
    p99us: pct(0.99),
    cpuUsPerOp: Math.round(((cpu.user + cpu.system) / n) * 100) / 100,
    redisCpuUsPerOp: Math.round((redisCpu / n) * 100) / 100,
  };
}

function rustRun(client, url, inflight, cluster = null) {
  const target = cluster ? ['--cluster', cluster] : ['--url', url];
  const r = spawnSync(bin, [...target, '--client', client, '--inflight', String(inflight), '--seconds', String(SECONDS), '--threads', '2'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${client} run failed: ${r.stderr.trim()} (run ${bin} by hand to see why)`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const redis = await startRedis();
process.on('exit', () => redis.kill());
const best = new Map();
const clients = ['ioredis', 'redis-rs', 'fred'];
const total = ROUNDS * INFLIGHT.length * clients.length;
let done = 0;
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const inflight of INFLIGHT) {
      for (const client of clients) {
        done++;
        log(`[${done}/${total}] round ${round + 1}: ${client}, ${inflight} in flight, ${SECONDS} s`);
        const row = client === 'ioredis' ? await ioredisRun(redis.url, inflight) : rustRun(client, redis.url, inflight);
        const k = `${client}/${inflight}`;
        if (!best.has(k) || best.get(k).opsPerSec < row.opsPerSec) best.set(k, row);
      }
    }
  }
} finally {
  await redis.stop();
}

log('starting a local 3-master Redis Cluster (redis-server --cluster-enabled yes ×3, redis-cli --cluster create)');
const cluster = await startRedisCluster(3);
const CLUSTER_INFLIGHT = 16;
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const client of clients) {
      log(`cluster round ${round + 1}: ${client}, ${CLUSTER_INFLIGHT} in flight, ${SECONDS} s`);
      const row = client === 'ioredis' ? await ioredisRun(null, CLUSTER_INFLIGHT, cluster.nodes) : rustRun(client, null, CLUSTER_INFLIGHT, cluster.nodes);
      const k = `${client}/cluster`;
      if (!best.has(k) || best.get(k).opsPerSec < row.opsPerSec) best.set(k, row);
    }
  }
} finally {
  await cluster.stop();
}

const fmt = (n) => Math.round(n).toLocaleString('en');
const lines = [
  `Measured by \`scripts/bench redis-client\` on ${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown CPU'}), one local redis-server, ${SECONDS} s per run, best of ${ROUNDS} interleaved rounds. One operation = one EVALSHA of a GET + SET PX script on a ≈ 300-byte value.`,
  '',
  '| client | in flight | ops/s | vs ioredis | p50 µs | p99 µs | client CPU µs/op | Redis CPU µs/op |',
  '|---|---:|---:|---:|---:|---:|---:|---:|',
];
for (const inflight of INFLIGHT) {
  const base = best.get(`ioredis/${inflight}`);
  for (const client of clients) {
    const r = best.get(`${client}/${inflight}`);
    lines.push(`| ${client} | ${inflight} | ${fmt(r.opsPerSec)} | ${(r.opsPerSec / base.opsPerSec).toFixed(2)}× | ${r.p50us} | ${r.p99us} | ${r.cpuUsPerOp.toFixed(1)} | ${r.redisCpuUsPerOp.toFixed(1)} |`);
  }
}
{
  const base = best.get('ioredis/cluster');
  for (const client of clients) {
    const r = best.get(`${client}/cluster`);
    lines.push(`| ${client}, 3-master cluster | ${CLUSTER_INFLIGHT} | ${fmt(r.opsPerSec)} | ${(r.opsPerSec / base.opsPerSec).toFixed(2)}× | ${r.p50us} | ${r.p99us} | ${r.cpuUsPerOp.toFixed(1)} | ${r.redisCpuUsPerOp.toFixed(1)} |`);
  }
}
const table = lines.join('\n');
console.log(table);
if (write) {
  writeSection('redis-client', table, { heading: '## Rust Redis clients for the addon (issue 14)' });
  log('wrote the table into BENCHMARKS.md');
}
