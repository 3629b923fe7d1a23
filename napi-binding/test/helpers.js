'use strict';
// Shared test plumbing: a private redis-server, free ports, the conformance suite's SMS sink.

const { spawn } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

const ROOT = path.resolve(__dirname, '..', '..');
const PEPPER = 'test-pepper-0123456789abcdef0123456789';

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.end();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/** A private redis-server on a free port: { url, port, stop(), kill() }. */
async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  let exited = false;
  child.on('exit', () => (exited = true));
  const deadline = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (exited) throw new Error('redis-server exited at start (is it installed? scripts/bootstrap installs it)');
    if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${port}`);
    await sleep(50);
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      if (exited) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await done;
    },
  };
}

/**
 * A private local Redis Cluster of `masters` primaries (tests/conformance/redis.mjs):
 * `{ nodes: 'host:port,…', servers: [{url, port, stop()}], stop() }` once cluster_state is ok.
 */
async function startRedisCluster(masters = 3) {
  const mod = await import(pathToFileURL(path.join(ROOT, 'tests', 'conformance', 'redis.mjs')).href);
  return mod.startRedisCluster(masters);
}

/** The conformance suite's SMS sink (a real HTTP server). */
async function startSink() {
  const mod = await import(pathToFileURL(path.join(ROOT, 'tests', 'conformance', 'sink.mjs')).href);
  return mod.startSink({ port: 0 });
}

/** The code inside a message text (the first run of digits). */
const codeOf = (text) => /\d{4,10}/.exec(text)[0];

/** A gateway that records what it was given and answers `outcome` (no network). */
function recorder(outcome = 'delivered') {
  const sent = [];
  const gw = async (m) => {
    sent.push(m);
    return typeof outcome === 'function' ? outcome(m) : outcome;
  };
  gw.sent = sent;
  return gw;
}

let destCounter = Math.floor(Math.random() * 1e6);
/** A fresh E.164 destination. */
const newDest = () => `+1555${String(destCounter++ % 1e7).padStart(7, '0')}`;

/**
 * A real `otpkit serve` (bin/otpkit.js) on a free loopback port with `env` added to this
 * process's environment: `{port, base, output(), stop()}` once it answers /health.
 */
async function serve(env) {
  const { spawn: spawnChild } = require('node:child_process');
  const port = await freePort();
  const child = spawnChild(process.execPath, [path.join(ROOT, 'napi-binding', 'bin', 'otpkit.js'), 'serve'], {
    env: { ...process.env, ...env, PORT: String(port), OTPKIT_BIND: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (out += c));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (child.exitCode != null) throw new Error(`otpkit serve exited:\n${out}`);
    if (await fetch(`${base}/health`).then(() => true, () => false)) break; // any answer: listening
    if (i > 100) throw new Error(`otpkit serve did not listen:\n${out}`);
    await sleep(100);
  }
  return {
    port,
    base,
    output: () => out,
    async stop() {
      if (child.exitCode != null) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await done;
    },
  };
}

/**
 * A test's own ioredis client to the same Redis as a store, so that a test reads and writes the
 * keys itself rather than through the store's client. `target` is what the store was given: a
 * URL (`'redis://…'`), `{url}` (one Redis: a plain `new Redis(url)`) or `{nodes}` (a Redis
 * Cluster, `'host:port,…'` or an array of `host:port`: `new Redis.Cluster(nodes)`); the results of
 * startRedis() and startRedisCluster() are both. With `t` (a test context, or anything with
 * `after(fn)`), the client is closed when the test ends; without it, the caller closes it
 * (`client.disconnect()`, in the file's after hook). defineStepScripts(client) works on it.
 */
function redisClientFor(target, t) {
  const Redis = require('ioredis'); // a devDependency: the tests' own client, not the package's
  const { url, nodes } = typeof target === 'string' ? { url: target } : target ?? {};
  let client;
  if (nodes) {
    const list = (Array.isArray(nodes) ? nodes : String(nodes).split(',')).map((n) => String(n).trim()).filter(Boolean);
    const startupNodes = list.map((n) => {
      const m = /^(.+):(\d{1,5})$/.exec(n);
      if (!m) throw new TypeError(`redisClientFor: "${n}" is not host:port`);
      return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
    });
    client = new Redis.Cluster(startupNodes);
  } else if (url) {
    client = new Redis(url);
  } else {
    throw new TypeError('redisClientFor needs a url or nodes (e.g. the result of startRedis() or startRedisCluster())');
  }
  client.on('error', () => {}); // a command that fails rejects; no unhandled-error noise while a server stops
  if (t) t.after(() => client.disconnect());
  return client;
}

/**
 * Defines the flow-step scripts RedisCore runs in Rust (ADMIT, REFUND_SPEND, FRAUD_VERIFIED) and
 * the operator's UNBLOCK_PREFIX as commands of an ioredis client (a test's own, redisClientFor),
 * so a test can hold them to the core's rules directly.
 */
function defineStepScripts(client) {
  const { RedisStore } = require('../lib/redis-store');
  const s = RedisStore.scripts;
  if (!client.otpkitAdmit) client.defineCommand('otpkitAdmit', { numberOfKeys: 3, lua: s.admit });
  if (!client.otpkitRefundSpend) client.defineCommand('otpkitRefundSpend', { numberOfKeys: 1, lua: s.refundSpend });
  if (!client.otpkitFraudVerified) client.defineCommand('otpkitFraudVerified', { numberOfKeys: 2, lua: s.fraudVerified });
  if (!client.otpkitUnblockPrefix) client.defineCommand('otpkitUnblockPrefix', { numberOfKeys: 2, lua: s.unblockPrefix });
  return client;
}

module.exports = { defineStepScripts, redisClientFor, ROOT, PEPPER, freePort, sleep, startRedis, startRedisCluster, startSink, codeOf, newDest, recorder, serve };
