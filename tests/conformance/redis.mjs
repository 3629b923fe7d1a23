// Private Redis servers for the tests and benchmarks: one redis-server on a free port, or a local
// Redis Cluster of several. scripts/bootstrap installs redis-server and redis-cli.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { freePort } from './host.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const listens = (port) =>
  new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => (s.end(), resolve(true)));
    s.on('error', () => resolve(false));
  });

/**
 * A private redis-server on a free port, no persistence unless `args` asks for it (later
 * arguments win): `{ url, port, child, output(), stop(), kill(), crash(), restart() }`.
 * `stop()` sends SIGTERM and waits for the exit (SIGKILL after 5 s); `kill()` is the synchronous
 * SIGKILL for `process.on('exit')`; `crash()` SIGKILLs and waits; `restart()` starts it again on
 * the same port, directory and arguments. Throws with the server's own output if it does not
 * listen in 10 s.
 */
export async function startRedis({ args = [], cwd = undefined, port: wanted = undefined } = {}) {
  const port = wanted ?? (await freePort());
  let child;
  let exited;
  let out = '';
  let spawnError = null;
  const alive = () => child.exitCode === null && child.signalCode === null && !spawnError;
  const kill = () => {
    if (alive()) child.kill('SIGKILL');
  };
  const stop = async () => {
    if (!alive()) return;
    child.kill('SIGTERM');
    const t = setTimeout(kill, 5000);
    await exited;
    clearTimeout(t);
  };
  const launch = async () => {
    spawnError = null;
    child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', ...args], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (d) => (out = (out + d).slice(-4000));
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.once('error', (e) => (spawnError = e));
    exited = new Promise((r) => child.once('close', r));
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(50)) {
      if (spawnError) throw new Error(`redis-server could not start (${spawnError.message}): scripts/bootstrap installs it`);
      if (!alive()) throw new Error(`redis-server exited (is port ${port} taken? is it installed? scripts/bootstrap installs it):\n${out}`);
      if (await listens(port)) return;
    }
    await stop();
    throw new Error(`redis-server did not listen on ${port} within 10 s:\n${out}`);
  };
  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    get child() {
      return child;
    },
    output: () => out,
    stop,
    kill,
    async crash() {
      kill();
      await exited;
    },
    restart: launch,
  };
}

/** Waits until every node of a local cluster reports `cluster_state:ok` (throws after `ms`). */
export async function clusterReady(servers, ms = 20_000) {
  let states = [];
  for (const deadline = Date.now() + ms; Date.now() < deadline; await sleep(100)) {
    states = servers.map((s) => {
      try {
        return execFileSync('redis-cli', ['-p', String(s.port), 'cluster', 'info'], { encoding: 'utf8' }).match(/cluster_state:(\w+)/)?.[1];
      } catch {
        return 'unreachable';
      }
    });
    if (states.every((st) => st === 'ok')) return;
  }
  throw new Error(`the local Redis Cluster did not reach cluster_state:ok in ${ms / 1000} s (${states.join(', ')})`);
}

/**
 * A local Redis Cluster of `masters` primaries (no replicas), each a private redis-server with
 * `--cluster-enabled yes` (and `args`) in its own temporary directory, joined by
 * `redis-cli --cluster create`: `{ nodes: 'host:port,…', servers, stop() }`. Waits until every
 * node reports `cluster_state:ok` (throws with what it saw after 20 s). A server restarted on its
 * directory (`servers[i].restart()`) rejoins with its node id and slots (nodes.conf).
 */
export async function startRedisCluster(masters = 3, { args = [] } = {}) {
  const dirs = [];
  const servers = [];
  const stop = async () => {
    await Promise.all(servers.map((s) => s.stop()));
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < masters; i++) {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'otpkit-cluster-'));
      dirs.push(dir);
      servers.push(await startRedis({ cwd: dir, args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '5000', ...args] }));
    }
    const addrs = servers.map((s) => `127.0.0.1:${s.port}`);
    execFileSync('redis-cli', ['--cluster', 'create', ...addrs, '--cluster-replicas', '0', '--cluster-yes'], { stdio: 'pipe' });
    await clusterReady(servers);
    return { nodes: addrs.join(','), servers, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
