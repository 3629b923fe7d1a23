// Starts and stops the otpkit host under test, configured to send its messages to a sink.
//
//   HOST=worker (default)  `wrangler dev --local` from the repo root (real workerd, Durable Objects,
//                          KV and D1 persisted in a temporary --persist-to directory). wrangler's
//                          [build] command builds the Worker first: the first start may take minutes.
//   HOST=node              `node napi-binding/bin/otpkit.js serve` (in-memory store, or Redis when
//                          REDIS_URL is set).
//   HOST=node-redis        the same with a private redis-server on a free port (or REDIS_URL).
//   HOST=node-cluster      the same on a private 3-master Redis Cluster (REDIS_CLUSTER_NODES).
//
// startHost({ gatewayUrl, gatewayToken? }) → { kind, baseUrl, adminToken, gatewayToken, persistent,
// restart(), crash(), stop(), output() }. Every secret is random per run.
// crash() SIGKILLs the host's whole process group (wrangler and workerd, or otpkit serve) without
// any warning and waits for it to be gone; restart() then starts it again on the same persisted
// state (the Worker also on the same port). Option redisUrl: the Redis of HOST=node-redis (the
// caller owns it; default $REDIS_URL or a private one).
// OTPKIT_HOST_OUTPUT_FILE=<file>: everything the host (and its redis-server) prints is also appended
// there, in full (output() keeps only the last lines).

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { appendFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRedisCluster } from './redis.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const FIRST_START_TIMEOUT_MS = 5 * 60_000; // includes wrangler's [build] (cold ≈ 2 min)
const START_TIMEOUT_MS = Number(process.env.HOST_START_TIMEOUT_MS || 0) || FIRST_START_TIMEOUT_MS;
const STOP_TIMEOUT_MS = 15_000;
const OUTPUT_LINES = 300;

export function randomToken(chars) {
  return randomBytes(chars).toString('base64url').slice(0, chars);
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The last lines a child printed, for failure messages. */
class OutputTail {
  constructor() {
    this.lines = [];
    this.partial = '';
  }
  push(chunk) {
    const text = this.partial + chunk.toString('utf8');
    const parts = text.split('\n');
    this.partial = parts.pop();
    for (const line of parts) this.lines.push(line);
    if (this.lines.length > OUTPUT_LINES) this.lines.splice(0, this.lines.length - OUTPUT_LINES);
    if (process.env.HOST_VERBOSE) process.stderr.write(chunk);
    // Everything the host printed, for zzz-leaks.test.mjs (harness.mjs sets it for a run).
    if (process.env.OTPKIT_HOST_OUTPUT_FILE) appendFileSync(process.env.OTPKIT_HOST_OUTPUT_FILE, chunk);
  }
  text() {
    return [...this.lines, this.partial].join('\n');
  }
}

function wranglerCommand() {
  const local = path.join(ROOT, 'node_modules', '.bin', 'wrangler');
  return existsSync(local) ? { cmd: local, pre: [] } : { cmd: 'npx', pre: ['wrangler'] };
}

const wranglerEnv = () => ({
  ...process.env,
  WRANGLER_SEND_METRICS: 'false',
  CLOUDFLARE_CF_FETCH_ENABLED: 'false',
  // Keep the host's own config out of the user's shell: only what we pass counts.
  OTP_PEPPER: undefined,
  ADMIN_TOKEN: undefined,
});

function cleanEnv(env) {
  const out = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}

/** Spawns a long-running child in its own process group; collects its output. */
function spawnChild(cmd, args, env, tail) {
  const child = spawn(cmd, args, {
    cwd: ROOT,
    env: cleanEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // own process group: SIGINT reaches wrangler and workerd alike
  });
  child.stdout.on('data', (c) => tail.push(c));
  child.stderr.on('data', (c) => tail.push(c));
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.alive = true;
  child.exited.then(() => {
    child.alive = false;
  });
  return child;
}

/** SIGKILL to the child's process group (no chance to flush or clean up); waits for its exit. */
async function crashChild(child) {
  if (!child || !child.alive) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  await child.exited;
}

async function stopChild(child) {
  if (!child || !child.alive) return;
  const group = (sig) => {
    try {
      process.kill(-child.pid, sig);
    } catch {
      try {
        child.kill(sig);
      } catch {
        // already gone
      }
    }
  };
  group('SIGINT');
  // The timer is cleared once the child exits, so a caller that stops a host in-process does not
  // wait STOP_TIMEOUT_MS for a timer nobody needs.
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(false), STOP_TIMEOUT_MS);
  });
  const done = await Promise.race([child.exited.then(() => true), timeout]);
  clearTimeout(timer);
  if (!done) {
    group('SIGKILL');
    await child.exited;
  }
  // Anything left in the group (workerd) after wrangler itself exited.
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // the group is empty
  }
}

async function waitHealthy(baseUrl, child, tail, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    if (!child.alive) {
      const { code, signal } = await child.exited;
      throw new Error(`${what} exited (code ${code}, signal ${signal}) before /health answered.\n--- its output ---\n${tail.text()}`);
    }
    try {
      const r = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(2000) });
      const body = await r.text();
      if (r.status === 200) return;
      last = `${r.status} ${body}`;
    } catch (err) {
      last = String(err?.cause?.code || err?.message || err);
    }
    await sleep(250);
  }
  throw new Error(`${what} did not answer GET /health within ${Math.round(timeoutMs / 1000)} s (last: ${last}).\n--- its output ---\n${tail.text()}`);
}

function commonSecrets(gatewayUrl, gatewayToken, gatewayKind = 'json', gatewayAccount, extraEnv = {}) {
  const secrets = {
    ...extraEnv,
    OTP_PEPPER: randomToken(48),
    ADMIN_TOKEN: `adm_${randomToken(32)}`,
    SMS_GATEWAY_URL: gatewayUrl,
    SMS_GATEWAY_TOKEN: gatewayToken || `gw_${randomToken(24)}`,
    SMS_GATEWAY_KIND: gatewayKind,
  };
  if (gatewayAccount) secrets.SMS_GATEWAY_ACCOUNT = gatewayAccount;
  return secrets;
}

async function startWorker({ gatewayUrl, gatewayToken, gatewayKind, gatewayAccount, extraEnv }) {
  const persistDir = mkdtempSync(path.join(os.tmpdir(), 'otpkit-conformance-'));
  // An empty env file: wrangler then reads neither .dev.vars nor .env from the repo root.
  const envFile = path.join(persistDir, 'empty.env');
  writeFileSync(envFile, '');
  const secrets = commonSecrets(gatewayUrl, gatewayToken, gatewayKind, gatewayAccount, extraEnv);
  const { cmd, pre } = wranglerCommand();
  const tail = new OutputTail();

  const migrate = spawnSync(cmd, [...pre, 'd1', 'migrations', 'apply', 'AUDIT', '--local', '--persist-to', persistDir], {
    cwd: ROOT,
    env: cleanEnv(wranglerEnv()),
    encoding: 'utf8',
    timeout: 120_000,
    input: 'y\n',
  });
  if (migrate.status !== 0) {
    throw new Error(`wrangler d1 migrations apply failed (status ${migrate.status}):\n${migrate.stdout}\n${migrate.stderr}`);
  }

  // x-otpkit-do-calls on every answer: Durable Object calls on the response path (do-calls.test.mjs).
  const vars = Object.entries({ ...secrets, OTPKIT_TRACE_DO_CALLS: '1' }).flatMap(([k, v]) => ['--var', `${k}:${v}`]);
  let port;
  let child;
  let starts = 0;
  const start = async (samePort) => {
    port = samePort || (await freePort());
    const args = [
      ...pre, 'dev', '--local', '--ip', '127.0.0.1', '--port', String(port),
      '--show-interactive-dev-session=false', '--persist-to', persistDir, '--env-file', envFile,
      '--inspector-port', String(await freePort()),
      ...vars,
    ];
    tail.push(`\n$ wrangler dev --port ${port} (start #${++starts})\n`);
    child = spawnChild(cmd, args, wranglerEnv(), tail);
    await waitHealthy(`http://127.0.0.1:${port}`, child, tail, START_TIMEOUT_MS, 'wrangler dev');
  };
  await start();
  const host = {
    kind: 'worker',
    get baseUrl() {
      return `http://127.0.0.1:${port}`;
    },
    adminToken: secrets.ADMIN_TOKEN,
    gatewayToken: secrets.SMS_GATEWAY_TOKEN,
    pepper: secrets.OTP_PEPPER, // for the leak checks only
    persistent: true,
    persistDir,
    /** wrangler's pid (workerd runs under it): for CPU accounting (bench/http.mjs). */
    get pid() {
      return child.pid;
    },
    output: () => tail.text(),
    async restart() {
      await stopChild(child);
      await start(port); // same port and persist dir: only the process is new
    },
    async crash() {
      await crashChild(child);
    },
    async stop() {
      await stopChild(child);
      if (!process.env.KEEP_STATE) rmSync(persistDir, { recursive: true, force: true });
    },
  };
  return host;
}

async function startRedis(tail) {
  const port = await freePort();
  const child = spawnChild('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], process.env, tail);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (!child.alive) throw new Error(`redis-server exited:\n${tail.text()}`);
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return { url: `redis://127.0.0.1:${port}`, child };
    await sleep(100);
  }
  throw new Error(`redis-server did not listen on ${port}:\n${tail.text()}`);
}

async function startNode({ gatewayUrl, gatewayToken, gatewayKind, gatewayAccount, extraEnv, redis, cluster = false, clusterNodes, redisUrl: givenRedisUrl }) {
  const bin = path.join(ROOT, 'napi-binding', 'bin', 'otpkit.js');
  if (!existsSync(bin)) {
    throw new Error(`HOST=node needs ${path.relative(ROOT, bin)} (build the napi binding first)`);
  }
  const secrets = commonSecrets(gatewayUrl, gatewayToken, gatewayKind, gatewayAccount, extraEnv);
  const tail = new OutputTail();
  let redisUrl = cluster ? null : (redis && givenRedisUrl) || process.env.REDIS_URL || null;
  let redisChild = null;
  let redisCluster = null; // HOST=node-cluster: a private 3-master Redis Cluster (or the caller's)
  if (cluster && clusterNodes) {
    redisCluster = { nodes: clusterNodes, servers: [], stop: async () => {} }; // the caller owns it
  } else if (cluster) {
    redisCluster = await startRedisCluster(3);
  } else if (redis && !redisUrl) {
    const r = await startRedis(tail);
    redisUrl = r.url;
    redisChild = r.child;
  }
  const clusterEnv = redisCluster ? { REDIS_CLUSTER_NODES: redisCluster.nodes } : {};
  let port;
  let child;
  const start = async () => {
    port = await freePort();
    const env = { ...process.env, ...secrets, ...clusterEnv, PORT: String(port), REDIS_URL: redisUrl || undefined };
    child = spawnChild(process.execPath, [bin, 'serve'], env, tail);
    await waitHealthy(`http://127.0.0.1:${port}`, child, tail, 60_000, 'otpkit serve');
  };
  await start();
  return {
    kind: redisCluster ? 'node-cluster' : redisUrl ? 'node-redis' : 'node',
    get baseUrl() {
      return `http://127.0.0.1:${port}`;
    },
    adminToken: secrets.ADMIN_TOKEN,
    gatewayToken: secrets.SMS_GATEWAY_TOKEN,
    pepper: secrets.OTP_PEPPER, // for the leak checks only
    redisUrl, // null for the memory store and the cluster
    // Every Redis that holds the host's state (each node of the cluster), for tests that search it.
    redisUrls: redisCluster ? redisCluster.servers.map((s) => s.url) : redisUrl ? [redisUrl] : [],
    // The in-memory store is gone after a restart by design; Redis keeps it.
    persistent: Boolean(redisUrl || redisCluster),
    /** otpkit serve's pid, and the pids of the Redis servers this host started (CPU accounting). */
    get pid() {
      return child.pid;
    },
    get redisPids() {
      return redisCluster ? redisCluster.servers.map((s) => s.child.pid) : redisChild ? [redisChild.pid] : [];
    },
    output: () => tail.text(),
    async restart() {
      await stopChild(child);
      await start();
    },
    async crash() {
      await crashChild(child);
    },
    async stop() {
      await stopChild(child);
      await stopChild(redisChild);
      await redisCluster?.stop();
    },
  };
}

/**
 * Starts the host named by `kind` (default: $HOST or "worker"), sending messages to
 * `gatewayUrl` with SMS_GATEWAY_KIND `gatewayKind` (default json; twilio needs `gatewayAccount`).
 */
export async function startHost({ gatewayUrl, gatewayToken, gatewayKind, gatewayAccount, extraEnv = {}, redisUrl, clusterNodes, kind = process.env.HOST || 'worker' } = {}) {
  if (!gatewayUrl) throw new Error('startHost needs the gateway (sink) URL');
  // extraEnv: more settings (WHATSAPP_GATEWAY_*, …), as vars on the Worker, env on Node.
  const gw = { gatewayUrl, gatewayToken, gatewayKind, gatewayAccount, extraEnv };
  switch (kind) {
    case 'worker':
      return startWorker(gw);
    case 'node':
      return startNode({ ...gw, redis: false });
    case 'node-redis':
    case 'redis':
      return startNode({ ...gw, redis: true, redisUrl });
    case 'node-cluster':
      return startNode({ ...gw, redis: true, cluster: true, clusterNodes });
    default:
      throw new Error(`unknown HOST=${kind} (worker, node, node-redis, node-cluster)`);
  }
}
