'use strict';
// `otpkit serve`: SPEC's HTTP API on node:http. The answer to every request comes from
// OtpService.handle(), whose bodies come from otpkit-core: the same bytes as the Worker.

const http = require('node:http');
const { hostError, clientAborted, fromNative } = require('./errors');
const { requestInfo, logRequest, reportRun } = require('./log');
const native = require('./native');

// Connection limits (issue 19, item 2: ~21,000 sockets held open by clients dribbling a body after
// their 401 exhausted the file descriptors). Every connection has a deadline, whatever it sends:
//   headers   the request head must arrive within it;
//   request   the whole request, body included;
//   idle      no byte either way for this long: the socket is destroyed;
//   keepAlive an idle connection between two requests;
//   drain     an answer given before its body was read (401, 413, 415) is followed by at most this
//             much lingering read, then the socket is destroyed (see drain()).
// and at most maxConnections sockets are open at once (more are refused at accept).
// The idle deadline must stay above the gateway's timeout (10 s): a request waiting on the
// gateway sends nothing meanwhile.
const LIMITS = {
  maxConnections: ['OTPKIT_MAX_CONNECTIONS', 10_000],
  headersTimeoutMs: ['OTPKIT_HEADERS_TIMEOUT_MS', 10_000],
  requestTimeoutMs: ['OTPKIT_REQUEST_TIMEOUT_MS', 30_000],
  idleTimeoutMs: ['OTPKIT_IDLE_TIMEOUT_MS', 30_000],
  keepAliveTimeoutMs: ['OTPKIT_KEEPALIVE_TIMEOUT_MS', 5_000],
  drainTimeoutMs: ['OTPKIT_DRAIN_TIMEOUT_MS', 10_000],
};

/** The limits, from the environment (positive integers) or their defaults. */
function limitsFromEnv(env = process.env) {
  const out = {};
  for (const [key, [name, fallback]] of Object.entries(LIMITS)) {
    const raw = env[name];
    if (raw == null || raw === '') {
      out[key] = fallback;
      continue;
    }
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
    out[key] = n;
  }
  out.headersTimeoutMs = Math.min(out.headersTimeoutMs, out.requestTimeoutMs); // node requires headers <= request
  return out;
}

// The response in flight on a socket (set by the listener), for the clientError handler.
const RESPONSE = Symbol('otpkit.response');

/**
 * Reads at most `max` bytes; throws PAYLOAD_TOO_LARGE past it (then the rest is discarded), and
 * CLIENT_ABORTED when the connection goes before the body is complete (not an internal error).
 */
function bodyReader(req) {
  return (max) =>
    new Promise((resolve, reject) => {
      if (req.destroyed) return reject(clientAborted()); // gone while the service was busy
      const chunks = [];
      let size = 0;
      let done = false;
      const abort = () => {
        if (!done) {
          done = true;
          reject(clientAborted());
        }
      };
      req.on('data', (chunk) => {
        if (done) return;
        size += chunk.length;
        if (size > max) {
          done = true;
          req.resume();
          reject(hostError('PAYLOAD_TOO_LARGE'));
          return;
        }
        chunks.push(chunk);
      });
      req.on('end', () => {
        if (!done) {
          done = true;
          resolve(Buffer.concat(chunks));
        }
      });
      // node:http reports a connection closed or reset under the body as 'error' ("aborted",
      // ECONNRESET) and then 'close'; both are the client's doing.
      req.on('error', abort);
      req.on('close', abort);
    });
}

// An answer given before the body was read (401, 413, 415) must still reach a client that is
// sending: closing at once would reset the connection under the unread body and the client would
// see a reset instead of the answer. So the answer says `Connection: close`, the rest of the body is
// read and discarded, bounded in bytes and time (a lingering close), and the socket is destroyed at
// the bound: a client that dribbles its body cannot hold the connection open.
const DRAIN_MAX_BYTES = 64 * 1024 * 1024;

/** Reads and discards the rest of `req`: true when its end came within `ms` and the byte bound. */
function drain(req, ms) {
  return new Promise((resolve) => {
    if (req.complete) return resolve(true);
    if (req.destroyed) return resolve(false);
    let size = 0;
    const done = (ended) => {
      clearTimeout(timer);
      resolve(ended);
    };
    const timer = setTimeout(() => done(false), ms);
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > DRAIN_MAX_BYTES) done(false);
    });
    req.once('end', () => done(true));
    req.once('close', () => done(req.complete));
    req.once('error', () => done(false));
    req.resume();
  });
}

// Requests node:http refuses before they reach the listener (a malformed request line, an unknown
// method, bytes that are not allowed in a path, a body cut short, headers too large, a deadline
// missed) still get SPEC's error envelope rather than node's bare "400 Bad Request".
const CLIENT_ERRORS = {
  HPE_INVALID_METHOD: [405, 'Method not allowed', 'METHOD_NOT_ALLOWED'],
  HPE_HEADER_OVERFLOW: [431, 'Request headers are too large', 'VALIDATION_ERROR'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request not received in time', 'VALIDATION_ERROR'],
  ERR_HTTP_HEADERS_TIMEOUT: [408, 'Request not received in time', 'VALIDATION_ERROR'],
};
const TIMEOUTS = new Set(['ERR_HTTP_REQUEST_TIMEOUT', 'ERR_HTTP_HEADERS_TIMEOUT']);

function clientErrorHandler(lingerMs) {
  return (err, socket) => {
    const inFlight = socket[RESPONSE];
    // Nothing can be said on a dead socket, nor after an answer already begun on this one.
    if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const [status, message, code] = CLIENT_ERRORS[err.code] || [400, 'Malformed HTTP request', 'VALIDATION_ERROR'];
    const body = JSON.stringify({ success: false, message, error: { code } });
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
    if (TIMEOUTS.has(err.code) || inFlight) {
      // Too slow, or a request is still being read on it: the answer goes out, then the socket.
      if (socket.writableFinished) socket.destroy();
      else socket.once('finish', () => socket.destroy());
      return;
    }
    // A malformed request may have more bytes behind it: a lingering close, bounded like drain().
    const timer = setTimeout(() => socket.destroy(), lingerMs);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  };
}

/**
 * A node:http request listener for an OtpService. `log` (a function of one line, or null) gets a
 * JSON line per request and per failed delivery at `logLevel` (see lib/log.js).
 */
function listener(service, { drainTimeoutMs = LIMITS.drainTimeoutMs[1], log = null, logLevel = null, metricsPublic = false } = {}) {
  const handler = answer(service, drainTimeoutMs, metricsPublic);
  if (!log && !service.metrics) return handler;
  return (req, res) => {
    const info = { started: Date.now(), log: log || (() => {}), level: logLevel };
    res.once('finish', () => {
      if (log) logRequest(info, req.method, res.statusCode, info.body);
      service.metrics?.answered(info.route, res.statusCode, info.body);
    });
    return requestInfo.run(info, () => handler(req, res, info));
  };
}

/**
 * `GET /metrics` (SPEC §9, this host only): Prometheus text of `service.metrics`; the admin token
 * is required unless `metricsPublic` (METRICS_PUBLIC=true); without metrics or an admin token
 * (and not public) it is not there (404), like the admin routes.
 */
async function metricsReply(service, req, metricsPublic) {
  const auth = req.headers.authorization ?? null;
  if (!service.metrics || (!metricsPublic && !service.adminToken)) return native.errorReply('NOT_FOUND');
  if (req.method !== 'GET' && req.method !== 'HEAD') return native.errorReply('METHOD_NOT_ALLOWED');
  if (!metricsPublic && !native.adminAuthorized(service.adminToken, auth)) return native.errorReply('UNAUTHORIZED');
  const { body, contentType } = await service.metrics.expose();
  return { status: 200, body, contentType };
}

// The operator console (SPEC §9): the static files of public/console/ in the repository, or of
// console/ in the npm package (scripts/build-node copies them there; files: ["console/"]), for
// GET and HEAD. Only the files found by listing that directory are served: no part of a URL
// reaches the file system, so there is no traversal. Headers as the Worker's public/_headers.
const consoleFs = require('node:fs');
const consolePath = require('node:path');
const { createHash } = require('node:crypto');
const CONSOLE_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cache-control': 'public, max-age=0, must-revalidate', // with an ETag: revalidated, as Workers assets are
};
const CONSOLE_TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.txt': 'text/plain; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png' };
let consoleFiles = null; // '/console/app.js' → absolute file

function consoleDir() {
  const pkg = consolePath.join(__dirname, '..');
  const repo = consolePath.join(pkg, '..', 'public', 'console'); // a checkout: napi-binding/../public/console
  if (consoleFs.existsSync(consolePath.join(pkg, '..', 'wrangler.toml')) && consoleFs.existsSync(consolePath.join(repo, 'index.html'))) return repo;
  return consolePath.join(pkg, 'console');
}

function listConsole() {
  const files = new Map();
  const walk = (dir, prefix) => {
    for (const e of consoleFs.readdirSync(dir, { withFileTypes: true })) {
      if (e.name.startsWith('.')) continue;
      if (e.isDirectory()) walk(consolePath.join(dir, e.name), `${prefix}${e.name}/`);
      else if (e.isFile()) files.set(`${prefix}${e.name}`, consolePath.join(dir, e.name));
    }
  };
  try {
    walk(consoleDir(), '/console/');
  } catch {
    // no console shipped: its paths answer as any unknown path
  }
  return files;
}

/** The reply to a console path (`{status, headers, body}`), or null (no such file: the API's). */
async function consoleReply(method, reqHeaders, urlPath) {
  consoleFiles ??= listConsole();
  const redirect = urlPath === '/console' || urlPath === '/console/index.html';
  const file = consoleFiles.get(redirect || urlPath === '/console/' ? '/console/index.html' : urlPath);
  if (!file) return null;
  if (method !== 'GET' && method !== 'HEAD') {
    return { status: 405, headers: { allow: 'GET, HEAD', 'content-length': '0', ...CONSOLE_HEADERS }, body: '' }; // as Workers assets
  }
  if (redirect) return { status: 307, headers: { location: '/console/', 'content-length': '0', ...CONSOLE_HEADERS }, body: '' };
  let body;
  try {
    body = await consoleFs.promises.readFile(file);
  } catch {
    return null;
  }
  const etag = `"${createHash('sha256').update(body).digest('hex').slice(0, 32)}"`;
  const headers = { ...CONSOLE_HEADERS, etag, 'content-type': CONSOLE_TYPES[consolePath.extname(file)] || 'application/octet-stream' };
  if (reqHeaders['if-none-match'] === etag) return { status: 304, headers, body: '' };
  headers['content-length'] = String(body.length);
  return { status: 200, headers, body };
}

/**
 * The reply to one request, whatever carries it (node:http here, hyper in serveNative): `r` is
 * `{method, url, headers, readBody(max)}`; answers `{status, headers, body}` (the whole body,
 * also for HEAD: the transport leaves it out). `info`: the request's log context, if any.
 */
async function replyTo(service, r, info, metricsPublic) {
  const url = r.url || '/';
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  if (path === '/console' || path.startsWith('/console/')) {
    if (info) info.route = 'console';
    const reply = await consoleReply(r.method, r.headers, path);
    if (reply) return reply;
  }
  if (path === '/metrics' && info) info.route = 'metrics';
  const reply = path === '/metrics' ? await metricsReply(service, r, metricsPublic) : await service.handle({
    method: r.method,
    path,
    query: q === -1 ? '' : url.slice(q + 1),
    pathAndQuery: url, // as received: a Twilio receipt's signature covers it
    headers: r.headers,
    readBody: r.readBody,
  });
  if (info && reply.status >= 400) info.body = reply.body; // its error code is logged
  const headers = {};
  if (reply.status !== 204) headers['content-type'] = reply.contentType ?? 'application/json';
  if (reply.retryAfter != null) headers['retry-after'] = String(reply.retryAfter);
  if (reply.replayed) headers['idempotent-replayed'] = 'true'; // SPEC §7: an Idempotency-Key replay
  const body = reply.status === 204 ? '' : reply.body;
  headers['content-length'] = String(Buffer.byteLength(body));
  // A 401 always closes: an unauthenticated client gets no kept-alive connection, and every 401
  // looks the same (whether the key was missing, answered before the body arrived, or looked up
  // while it did — otherwise the headers would tell the two apart, by timing).
  if (reply.status === 401) headers.connection = 'close';
  return { status: reply.status, headers, body };
}

function answer(service, drainTimeoutMs, metricsPublic = false) {
  return async (req, res, info = null) => {
    const socket = req.socket;
    socket[RESPONSE] = res;
    res.once('close', () => {
      if (socket[RESPONSE] === res) socket[RESPONSE] = undefined;
    });
    const reply = await replyTo(service, { method: req.method, url: req.url, headers: req.headers, readBody: bodyReader(req) }, info, metricsPublic);
    // The client went away (or a deadline cut it): nobody to answer.
    if (socket.destroyed || res.destroyed || res.writableEnded) return;
    const { headers, body } = reply;
    if (!req.complete) {
      // answered before the whole body arrived: send the answer, drain, close (see drain())
      headers.connection = 'close';
      res.writeHead(reply.status, headers);
      if (req.method !== 'HEAD') res.write(body);
      const ended = await drain(req, drainTimeoutMs);
      if (!ended) socket.destroy(); // the deadline (or the byte bound): cut, whatever is still coming
      else if (!socket.destroyed) res.end(); // Connection: close: node closes after the answer
      return;
    }
    res.writeHead(reply.status, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}

/**
 * An http.Server answering SPEC's API with `service`, with the connection limits above
 * (OTPKIT_MAX_CONNECTIONS, OTPKIT_{HEADERS,REQUEST,IDLE,KEEPALIVE,DRAIN}_TIMEOUT_MS).
 */
function createServer(service) {
  const limits = limitsFromEnv();
  const server = http.createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      // how often node checks the two deadlines above (its default, 30 s, would let them run late)
      connectionsCheckingInterval: Math.max(100, Math.min(30_000, Math.floor(limits.headersTimeoutMs / 4))),
    },
    listener(service, {
      ...limits,
      log: (line) => process.stdout.write(`${line}\n`),
      logLevel: process.env.LOG_LEVEL ?? null,
      metricsPublic: process.env.METRICS_PUBLIC === 'true',
    }),
  );
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.setTimeout(limits.idleTimeoutMs); // no 'timeout' listener: an idle socket is destroyed
  server.maxConnections = limits.maxConnections;
  server.on('clientError', clientErrorHandler(limits.drainTimeoutMs));
  return server;
}

/**
 * `otpkit serve`'s server: hyper on the native module's tokio runtime (src/serve.rs) holds the
 * connections, their deadlines (the same OTPKIT_* limits as createServer) and the writes. With a
 * gateway the OTP routes (request, verify, status, cancel, resend) are answered there
 * too (src/service.rs), and only told to JavaScript afterwards for the log line and metrics;
 * every other request crosses to JavaScript once, and is answered by replyTo() as on node:http,
 * with the same request log line and metrics. Answers `{port, connections, close(graceMs)}`: close() stops
 * accepting, lets requests in flight finish (idle connections close at once) for at most
 * `graceMs`, then closes the rest.
 */
function serveNative(service, { host = '127.0.0.1', port = 8787, log = null, logLevel = null, metricsPublic = false } = {}) {
  const limits = limitsFromEnv();
  const readerOf = (r) => (max) => {
    if (r.body) return r.body.length > max ? Promise.reject(hostError('PAYLOAD_TOO_LARGE')) : Promise.resolve(r.body);
    return r.stream.read(max).catch((e) => {
      throw e?.message === 'PAYLOAD_TOO_LARGE' ? hostError('PAYLOAD_TOO_LARGE') : clientAborted();
    });
  };
  const reply = async (r, info) => {
    try {
      return await replyTo(service, { method: r.method, url: r.url, headers: r.headers, readBody: readerOf(r) }, info, metricsPublic);
    } catch (e) {
      const { status, body } = service.errorReply(e);
      return { status, headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }, body };
    }
  };
  const answered =
    !log && !service.metrics
      ? (r) => reply(r, null)
      : (r) => {
          const info = { started: Date.now(), log: log || (() => {}), level: logLevel };
          return requestInfo.run(info, async () => {
            const out = await reply(r, info);
            if (log) logRequest(info, r.method, out.status, info.body);
            service.metrics?.answered(info.route, out.status, info.body);
            return out;
          });
        };
  let server = null;
  // Each request is answered with one synchronous call back (server.respond), whatever happens.
  const handler = (r) => {
    answered(r).then(
      (out) => server.respond(r.id, out),
      () => server.respond(r.id, { status: 500, headers: { 'content-type': 'application/json' }, body: native.errorReply('INTERNAL_ERROR').body }),
    );
  };
  // The OTP routes are answered in Rust when the service can (see flowService()): each answer is
  // told here as it is answered, for its log line and metrics (and what its flow did after, once done).
  const flows = service.flowService();
  const onServed = (e) => {
    const info = { started: Date.now() - e.latencyMs, log: log || (() => {}), level: logLevel, route: e.route, workspace: e.workspace ?? undefined };
    requestInfo.run(info, () => {
      reportRun(service.store.kind ?? 'store', e, { metrics: service.metrics });
      if (e.after) return;
      if (log) logRequest(info, e.method, e.status, e.body ?? undefined);
      service.metrics?.answered(e.route, e.status, e.body ?? undefined);
    });
  };
  const told = flows && (log || service.metrics) ? onServed : null;
  try {
    server = native.serveNative(host, port, { ...limits, maxBodyBytes: native.maxBodyBytes() }, handler, flows, told);
  } catch (e) {
    throw fromNative(e);
  }
  return server;
}

module.exports = { createServer, listener, serveNative, limitsFromEnv };
