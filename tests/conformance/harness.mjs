#!/usr/bin/env node
// The environment the conformance tests run against: a host under test, the SMS sink it sends
// to, and (when we started the host) a way to restart it.
//
// Three ways to get one, tried in order by `harness()`:
//   1. OTPKIT_CONFORMANCE_CONTROL=<url>: a harness process started by tests/conformance/run
//      (this file as a CLI) shares ONE host and sink with every test file; GET <url>/info
//      describes them and POST <url>/restart restarts the host (POST <url>/crash SIGKILLs it
//      first: faults.test.mjs).
//   2. BASE_URL=<url>: a host somebody else runs (e.g. scripts/dev). Also needs ADMIN_TOKEN; the
//      sink is SINK_URL (default: BASE_URL's port + 1, where scripts/dev starts it);
//      SMS_GATEWAY_TOKEN is optional (the Authorization check is skipped without it).
//      Restart tests are skipped.
//   3. Otherwise this process starts its own sink and host (running one test file by hand).
//
// CLI: node tests/conformance/harness.mjs [--ready-file F]  starts sink + host, serves the control
// API on 127.0.0.1, writes its URL to F (or prints `READY <url>`), and stops both on SIGINT/SIGTERM.

import http from 'node:http';
import { writeFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHost } from './host.mjs';
import { sinkClient, startSink } from './sink.mjs';

let current = null;

function sinkUrlFor(baseUrl) {
  if (process.env.SINK_URL) return process.env.SINK_URL;
  const u = new URL(baseUrl);
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  return `http://127.0.0.1:${port + 1}`;
}

async function fromControl(control) {
  const base = control.replace(/\/+$/, '');
  const r = await fetch(`${base}/info`);
  if (!r.ok) throw new Error(`harness control ${base}/info answered ${r.status}`);
  const info = await r.json();
  return {
    kind: info.kind,
    baseUrl: info.baseUrl,
    adminToken: info.adminToken,
    gatewayToken: info.gatewayToken,
    sink: sinkClient(info.sinkUrl),
    restartSkip: info.restartSkip || null,
    pepper: info.pepper || null,
    hostOutputFile: info.hostOutputFile || null,
    bodyLogFile: info.bodyLogFile || null,
    storeDir: info.storeDir || null,
    redisUrl: info.redisUrl || null,
    redisUrls: info.redisUrls || [],
    async restart() {
      const res = await fetch(`${base}/restart`, { method: 'POST' });
      const body = await res.json();
      if (!res.ok) throw new Error(`restart failed: ${body.error}`);
      this.baseUrl = body.baseUrl;
    },
    /** SIGKILLs the host (no clean shutdown); restart() brings it back on the same state. */
    async crash() {
      const res = await fetch(`${base}/crash`, { method: 'POST' });
      const body = await res.json();
      if (!res.ok) throw new Error(`crash failed: ${body.error}`);
    },
    async close() {},
  };
}

function fromBaseUrl(baseUrl) {
  if (!process.env.ADMIN_TOKEN) {
    throw new Error('BASE_URL is set: ADMIN_TOKEN must be set too (the host\'s admin token)');
  }
  return {
    kind: 'external',
    baseUrl: baseUrl.replace(/\/+$/, ''),
    adminToken: process.env.ADMIN_TOKEN,
    gatewayToken: process.env.SMS_GATEWAY_TOKEN || null,
    sink: sinkClient(sinkUrlFor(baseUrl)),
    restartSkip: 'BASE_URL is set: the host under test is not ours to restart',
    async restart() {
      throw new Error(this.restartSkip);
    },
    async crash() {
      throw new Error(this.restartSkip);
    },
    async close() {},
  };
}

/** Starts a sink and a host in this process. */
export async function startLocal() {
  const sink = await startSink();
  let host;
  try {
    host = await startHost({ gatewayUrl: sink.gatewayUrl });
  } catch (err) {
    await sink.stop();
    throw err;
  }
  return {
    kind: host.kind,
    get baseUrl() {
      return host.baseUrl;
    },
    adminToken: host.adminToken,
    gatewayToken: host.gatewayToken,
    sink: sinkClient(sink.url),
    sinkUrl: sink.url,
    restartSkip: host.persistent ? null : `HOST=${host.kind} keeps sessions in memory: they do not survive a restart`,
    pepper: host.pepper,
    hostOutputFile: process.env.OTPKIT_HOST_OUTPUT_FILE || null,
    bodyLogFile: process.env.OTPKIT_BODY_LOG || null,
    // Where the host keeps its state, for tests that search it (idempotency: no key in clear):
    // the Worker's --persist-to directory, HOST=node-redis's Redis, HOST=node-cluster's nodes.
    storeDir: host.persistDir || null,
    redisUrl: host.redisUrl || null,
    redisUrls: host.redisUrls || [],
    host,
    async restart() {
      await host.restart();
    },
    async crash() {
      await host.crash();
    },
    async close() {
      await host.stop();
      await sink.stop();
    },
  };
}

/** The shared harness of this process (see the top of this file). */
export async function harness() {
  if (!current) {
    current = (async () => {
      if (process.env.OTPKIT_CONFORMANCE_CONTROL) return fromControl(process.env.OTPKIT_CONFORMANCE_CONTROL);
      if (process.env.BASE_URL) return fromBaseUrl(process.env.BASE_URL);
      return startLocal();
    })();
  }
  return current;
}

/** Stops what `harness()` started in this process (nothing for a shared or external host). */
export async function closeHarness() {
  if (!current) return;
  const h = await current.catch(() => null);
  current = null;
  if (h) await h.close();
}

async function main(argv) {
  let readyFile = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--ready-file') readyFile = argv[++i];
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  // For zzz-leaks.test.mjs: everything the host prints and every response body the test files
  // read (lib.mjs call()), in a private (0700) directory removed when the harness stops.
  const leakDir = mkdtempSync(path.join(os.tmpdir(), 'otpkit-leaks-'));
  process.env.OTPKIT_HOST_OUTPUT_FILE ||= path.join(leakDir, 'host-output.log');
  process.env.OTPKIT_BODY_LOG ||= path.join(leakDir, 'bodies.jsonl');
  const h = await startLocal();
  let restarting = null;
  const info = () => ({
    kind: h.kind,
    baseUrl: h.baseUrl,
    adminToken: h.adminToken,
    gatewayToken: h.gatewayToken,
    sinkUrl: h.sinkUrl,
    restartSkip: h.restartSkip,
    pepper: h.pepper,
    hostOutputFile: h.hostOutputFile,
    bodyLogFile: h.bodyLogFile,
    storeDir: h.storeDir,
    redisUrl: h.redisUrl,
    redisUrls: h.redisUrls,
  });
  const server = http.createServer(async (req, res) => {
    const send = (status, value) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    try {
      if (req.method === 'GET' && req.url === '/info') return send(200, info());
      if (req.method === 'GET' && req.url === '/output') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        return res.end(h.host.output());
      }
      if (req.method === 'POST' && req.url === '/restart') {
        restarting ??= h.restart().finally(() => {
          restarting = null;
        });
        await restarting;
        return send(200, info());
      }
      if (req.method === 'POST' && req.url === '/crash') {
        await h.crash();
        return send(200, info());
      }
      return send(404, { error: 'not found' });
    } catch (err) {
      return send(500, { error: String(err?.message || err) });
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  process.stdout.write(`harness: ${h.kind} host on ${h.baseUrl}, sink on ${h.sinkUrl}, control on ${url}\n`);
  if (readyFile) writeFileSync(readyFile, url);
  else process.stdout.write(`READY ${url}\n`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    server.close();
    server.closeAllConnections?.();
    await h.close();
    if (!process.env.KEEP_STATE) rmSync(leakDir, { recursive: true, force: true });
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).catch((err) => {
    process.stderr.write(`harness: ${err.stack || err}\n`);
    process.exit(1);
  });
}
