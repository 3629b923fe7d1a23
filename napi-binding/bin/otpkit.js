#!/usr/bin/env node
'use strict';
// otpkit serve: SPEC's HTTP API on a native HTTP/1.1 server (hyper, lib/server.js serveNative), configured like the Worker (OTP_PEPPER, ADMIN_TOKEN,
// SMS_GATEWAY_*) plus PORT (default 8787), OTPKIT_BIND (default 127.0.0.1), REDIS_CLUSTER_NODES or
// REDIS_URL (both absent: memory).

const path = require('node:path');

const USAGE = `usage: otpkit serve

Environment:
  OTP_PEPPER           secret of >= 32 bytes (without it every route answers 500 MISCONFIGURED)
  ADMIN_TOKEN          enables the admin routes (/v1/admin/...)
  SMS_GATEWAY_URL      where messages are POSTed; SMS_GATEWAY_KIND json (default) or twilio
  SMS_GATEWAY_TOKEN    bearer token (json) or auth token (twilio); SMS_GATEWAY_ACCOUNT (twilio)
  PUBLIC_BASE_URL      this service's public URL: Twilio sends ask for delivery receipts there
  REDIS_URL            redis://host:port to share state between processes (default: in memory)
  REDIS_CLUSTER_NODES  host:port,host:port,… of a Redis Cluster (takes precedence over REDIS_URL)
  PORT, OTPKIT_BIND    where to listen (default 8787 on 127.0.0.1)
  LOG_LEVEL            debug, info (default), warn or error: one JSON line per request on stdout
  METRICS_PUBLIC       true: GET /metrics without the admin token (default: ADMIN_TOKEN required)
  OTPKIT_HTTP          node: serve on node:http instead of the native server (to compare)
`;

// How long requests in flight get to finish on SIGTERM / SIGINT (a gateway send takes at most 10 s).
const GRACE_MS = 12_000;

async function serve() {
  const { OtpService, MemoryStore, RedisStore, gatewayFromEnv, receiptKeysFromEnv, createServer, serveNative, Metrics } = require(path.join(__dirname, '..'));
  const env = process.env;
  let store;
  if (env.REDIS_CLUSTER_NODES || env.REDIS_URL) {
    const log = { log: (line) => process.stdout.write(`${line}\n`), logLevel: env.LOG_LEVEL ?? null };
    store = env.REDIS_CLUSTER_NODES ? new RedisStore({ nodes: env.REDIS_CLUSTER_NODES, ...log }) : new RedisStore({ url: env.REDIS_URL, ...log });
    try {
      await store.connect();
    } catch (e) {
      // Keep going: requests answer 503 STORE_UNAVAILABLE until Redis is reachable, or 500
      // MISCONFIGURED (as without OTP_PEPPER) when the client does not match the deployment.
      if (e.code === 'MISCONFIGURED') console.error(`otpkit: ${e.message}; answering 500 MISCONFIGURED`);
      else console.error(`otpkit: ${store.cluster ? 'the Redis Cluster' : 'Redis'} is not reachable yet; answering 503 until it is`);
    }
  } else {
    store = new MemoryStore();
  }
  const service = new OtpService({
    pepper: env.OTP_PEPPER,
    adminToken: env.ADMIN_TOKEN,
    gateway: gatewayFromEnv(env),
    receipts: receiptKeysFromEnv(env), // POST /v1/messaging/otp/delivery-receipts/*
    store,
    allowMisconfigured: true,
    metrics: new Metrics(), // GET /metrics
  });
  if (!service.engine.configured) console.error('otpkit: OTP_PEPPER is missing or shorter than 32 bytes; answering 500 MISCONFIGURED');
  const port = Number(env.PORT || 8787);
  const host = env.OTPKIT_BIND || '127.0.0.1';
  const where = store.cluster ? 'redis cluster' : store.kind;
  let close;
  if (env.OTPKIT_HTTP === 'node') {
    // node:http (createServer), the server before the native one; kept to compare the two.
    const server = createServer(service);
    server.listen(port, host, () => console.log(`otpkit serve: listening on http://${host}:${port} (${where} store, node:http)`));
    close = () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeIdleConnections?.();
      });
  } else {
    let server;
    try {
      server = serveNative(service, { host, port, log: (line) => process.stdout.write(`${line}\n`), logLevel: env.LOG_LEVEL ?? null, metricsPublic: env.METRICS_PUBLIC === 'true' });
    } catch (e) {
      throw new Error(e.message);
    }
    console.log(`otpkit serve: listening on http://${host}:${server.port} (${where} store)`);
    close = () => server.close(GRACE_MS);
  }
  // SIGTERM / SIGINT: stop accepting, finish the requests in flight and the work that follows
  // their answers (audit, confirmations), close the store, exit 0.
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    setTimeout(() => process.exit(0), GRACE_MS + 5_000).unref();
    close()
      .catch(() => {})
      .then(() => service.close())
      .finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

const cmd = process.argv[2];
if (cmd === 'serve') {
  serve().catch((e) => {
    console.error(`otpkit serve: ${e.message}`);
    process.exit(1);
  });
} else {
  process.stdout.write(USAGE);
  process.exit(cmd === 'help' || cmd === '--help' || cmd === '-h' ? 0 : 2);
}
