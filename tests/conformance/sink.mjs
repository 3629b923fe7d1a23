#!/usr/bin/env node
// A real SMS gateway stand-in (SPEC §5, `SMS_GATEWAY_KIND=json`), on 127.0.0.1.
//
// Every POST to any path but the control routes is recorded as a message (with its headers)
// and answered according to the mode of its `to` number:
//   ok       200 {"accepted":true}
//   fail500  500 {"error":"gateway failure"}
//   failWhatsapp  500 for a message on channel whatsapp, 200 for the others (channel fallback)
//   hang     no answer: the socket is held open until the client gives up (or the sink stops)
//   reset    the socket is destroyed without any answer (connection reset)
//   slow     200 {"accepted":true} after `delayMs` (default 9000: just under the hosts' 10 s timeout)
//   redirect302, redirect307, redirect308
//            that status with `Location: <sink>/_redirect-target/<seq>` (absolute, back at this
//            sink). Whatever arrives there (any method) is answered 200 {"accepted":true} and
//            recorded in the message's `followed` list ({method, bodyBytes}): a gateway client
//            that follows redirects shows up there (and would call the message delivered)
//   huge     200 with a 50 MB body (Content-Length set), written in 64 KiB chunks as fast as the
//            client reads; the message's `reply` says {bytes, written, complete, closedEarly}:
//            `complete` once all of it was handed to the socket, `closedEarly` when the client
//            closed the connection before that
// Control API on the same server (JSON):
//   GET  /_messages[?to=+X]   recorded messages, oldest first
//   POST /_mode {to?, mode, delayMs?}   sets the mode of one number (or the default without `to`);
//                             delayMs is the delay of `slow`
//   POST /_reset              forgets messages and modes
//   GET  /_health             {"status":"ok"}
//
// As a module: `const sink = await startSink({ port })` → { url, gatewayUrl, messages(to),
// setMode(to, mode, {delayMs}?), reset(), stop() }.
// As a CLI: `node tests/conformance/sink.mjs --port N [--quiet]` prints each message it receives
// (scripts/dev uses this to show codes to the developer).

import http from 'node:http';
import { fileURLToPath } from 'node:url';

const MODES = new Set(['ok', 'fail500', 'failWhatsapp', 'hang', 'reset', 'slow', 'redirect302', 'redirect307', 'redirect308', 'huge']);
const SLOW_DEFAULT_MS = 9000;
const HUGE_BYTES = 50 * 1024 * 1024;
const HUGE_CHUNK = Buffer.alloc(64 * 1024, 0x20); // JSON whitespace
const MAX_BODY = 1024 * 1024;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

// `+` in a query string decodes to a space: accept both spellings of a number.
function normalizeTo(to) {
  if (typeof to !== 'string') return to;
  const t = to.trim();
  return /^\d/.test(t) && to.startsWith(' ') ? `+${t}` : t;
}

function parseForm(text) {
  const out = {};
  for (const [k, v] of new URLSearchParams(text)) out[k] = v;
  return out;
}

/**
 * Starts the sink. Options: port (0 = any free port), host (default 127.0.0.1),
 * onMessage(message) called for every recorded message.
 */
export async function startSink({ port = 0, host = '127.0.0.1', onMessage } = {}) {
  let messages = [];
  let modes = new Map();
  let defaultMode = 'ok';
  let delays = new Map(); // `slow` delay per number ('' = the default mode's)
  let seq = 0;
  const sockets = new Set();

  let selfUrl = null; // set once listening
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://sink.local');
    try {
      const followed = /^\/_redirect-target\/(\d+)$/.exec(url.pathname);
      if (followed) {
        // A gateway client followed one of our redirects: note it on the message it was for.
        const raw = await readBody(req).catch(() => '');
        const target = messages.find((m) => m.seq === Number(followed[1]));
        if (target) target.followed.push({ method: req.method, bodyBytes: Buffer.byteLength(raw) });
        return sendJson(res, 200, { accepted: true, id: `msg_${followed[1]}` });
      }
      if (url.pathname === '/_health' && req.method === 'GET') {
        return sendJson(res, 200, { status: 'ok' });
      }
      if (url.pathname === '/_messages' && req.method === 'GET') {
        const to = url.searchParams.has('to') ? normalizeTo(url.searchParams.get('to')) : null;
        return sendJson(res, 200, to === null ? messages : messages.filter((m) => m.to === to));
      }
      if (url.pathname === '/_mode' && req.method === 'POST') {
        let body;
        try {
          body = JSON.parse(await readBody(req));
        } catch {
          return sendJson(res, 400, { error: 'body must be JSON {to?, mode}' });
        }
        if (!MODES.has(body?.mode)) {
          return sendJson(res, 400, { error: `mode must be one of ${[...MODES].join(', ')}` });
        }
        if (body.delayMs !== undefined && !(Number.isInteger(body.delayMs) && body.delayMs >= 0)) {
          return sendJson(res, 400, { error: 'delayMs must be an integer ≥ 0' });
        }
        setModeOf(body.to === undefined || body.to === null ? null : normalizeTo(body.to), body.mode, body.delayMs);
        return sendJson(res, 200, { ok: true });
      }
      if (url.pathname === '/_reset' && req.method === 'POST') {
        await readBody(req);
        messages = [];
        modes = new Map();
        delays = new Map();
        defaultMode = 'ok';
        return sendJson(res, 200, { ok: true });
      }
      if (req.method !== 'POST') {
        return sendJson(res, 404, { error: 'not found' });
      }

      // A gateway message.
      const raw = await readBody(req);
      const contentType = String(req.headers['content-type'] || '');
      let body = null;
      try {
        body = contentType.includes('application/x-www-form-urlencoded') ? parseForm(raw) : JSON.parse(raw);
      } catch {
        body = null;
      }
      const to = body && typeof body === 'object' ? (body.to ?? body.To ?? null) : null;
      const mode = (to !== null && modes.get(to)) || defaultMode;
      const message = {
        seq: ++seq,
        receivedAt: new Date().toISOString(),
        method: req.method,
        path: url.pathname,
        headers: { ...req.headers },
        raw,
        body,
        to,
        from: body?.from ?? body?.From ?? null,
        text: body?.text ?? body?.Body ?? null,
        channel: body?.channel ?? null,
        reference: body?.reference ?? null,
        mode,
        followed: [],
      };
      messages.push(message);
      if (onMessage) {
        try {
          onMessage(message);
        } catch {
          // a printing callback must never break the gateway
        }
      }
      switch (mode) {
        case 'fail500':
          return sendJson(res, 500, { error: 'gateway failure' });
        case 'failWhatsapp':
          if (message.channel === 'whatsapp') return sendJson(res, 500, { error: 'whatsapp failure' });
          return sendJson(res, 200, { accepted: true, id: `msg_${message.seq}` });
        case 'redirect302':
        case 'redirect307':
        case 'redirect308': {
          const status = Number(mode.slice(8));
          const location = `${selfUrl}/_redirect-target/${message.seq}`;
          const body = JSON.stringify({ moved: location });
          res.writeHead(status, { location, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
          return res.end(body);
        }
        case 'huge':
          return sendHuge(res, message);
        case 'hang':
          return; // never answered; closed when the client aborts or the sink stops
        case 'reset':
          req.socket.destroy();
          return;
        case 'slow': {
          const ms = (to !== null && modes.has(to) ? delays.get(to) : delays.get('')) ?? SLOW_DEFAULT_MS;
          const timer = setTimeout(() => {
            if (!res.destroyed) sendJson(res, 200, { accepted: true, id: `msg_${message.seq}` });
          }, ms);
          res.on('close', () => clearTimeout(timer));
          return;
        }
        default:
          return sendJson(res, 200, { accepted: true, id: `msg_${message.seq}` });
      }
    } catch (err) {
      if (!res.headersSent) sendJson(res, 500, { error: String(err?.message || err) });
    }
  });
  function sendHuge(res, message) {
    const reply = { bytes: HUGE_BYTES, written: 0, complete: false, closedEarly: false };
    message.reply = reply;
    res.on('finish', () => {
      reply.complete = true;
    });
    res.on('close', () => {
      if (!reply.complete) reply.closedEarly = true;
    });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': HUGE_BYTES });
    const pump = () => {
      while (reply.written < HUGE_BYTES) {
        if (res.destroyed) return;
        const n = Math.min(HUGE_CHUNK.length, HUGE_BYTES - reply.written);
        const more = res.write(n === HUGE_CHUNK.length ? HUGE_CHUNK : HUGE_CHUNK.subarray(0, n));
        reply.written += n;
        if (!more) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
  }

  function setModeOf(to, mode, delayMs) {
    if (to === null) defaultMode = mode;
    else modes.set(to, mode);
    if (delayMs !== undefined) delays.set(to ?? '', delayMs);
    else delays.delete(to ?? '');
  }

  // As a provider's load balancer does (about a minute): a host that reads replies (the Worker
  // reads each for its message id) reuses connections, and workerd does not honour the
  // `Keep-Alive: timeout` a short value announces, so an idle connection closed by the sink as it
  // is reused resets a send. Closing the sink destroys its sockets either way.
  server.keepAliveTimeout = 65_000;
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const url = `http://${host}:${address.port}`;
  selfUrl = url;

  return {
    url,
    port: address.port,
    /** Where the host under test should POST messages (its SMS_GATEWAY_URL). */
    gatewayUrl: `${url}/sms`,
    /** Messages recorded for `to` (all without it), oldest first. */
    messages: (to) => (to === undefined ? [...messages] : messages.filter((m) => m.to === to)),
    setMode: (to, mode, { delayMs } = {}) => {
      if (!MODES.has(mode)) throw new Error(`unknown sink mode ${mode}`);
      setModeOf(to === undefined || to === null ? null : to, mode, delayMs);
    },
    reset: () => {
      messages = [];
      modes = new Map();
      delays = new Map();
      defaultMode = 'ok';
    },
    stop: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A client for a sink's control API (a sink in another process, e.g. started by scripts/dev). */
export function sinkClient(url) {
  const base = url.replace(/\/+$/, '');
  const post = async (path, body) => {
    const r = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body ?? {}),
    });
    if (!r.ok) throw new Error(`sink ${path}: ${r.status} ${await r.text()}`);
    return r.json();
  };
  return {
    url: base,
    gatewayUrl: `${base}/sms`,
    async messages(to) {
      const q = to === undefined ? '' : `?to=${encodeURIComponent(to)}`;
      const r = await fetch(`${base}/_messages${q}`);
      if (!r.ok) throw new Error(`sink /_messages: ${r.status}`);
      return r.json();
    },
    setMode: (to, mode, { delayMs } = {}) => post('/_mode', { to, mode, delayMs }),
    reset: () => post('/_reset', {}),
  };
}

function printMessage(m) {
  const when = m.receivedAt.slice(11, 19);
  const who = `${m.to ?? '?'}${m.from ? ` from ${m.from}` : ''}${m.channel ? ` (${m.channel})` : ''}`;
  const tail = m.mode === 'ok' ? '' : `  [answered: ${m.mode}]`;
  process.stdout.write(`[sms ${when}] to ${who}: ${m.text ?? m.raw}${tail}\n`);
}

async function main(argv) {
  let port = Number(process.env.SINK_PORT || 0);
  let quiet = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--port') port = Number(argv[++i]);
    else if (a.startsWith('--port=')) port = Number(a.slice(7));
    else if (a === '--quiet') quiet = true;
    else if (a === '-h' || a === '--help') {
      process.stdout.write('usage: node tests/conformance/sink.mjs [--port N] [--quiet]\n');
      return;
    }
    else throw new Error(`unknown argument ${a}`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('--port must be 0..65535');
  const sink = await startSink({ port, onMessage: quiet ? undefined : printMessage });
  process.stdout.write(`SMS sink listening on ${sink.url} (gateway URL ${sink.gatewayUrl}; control: GET /_messages, POST /_mode, POST /_reset)\n`);
  const stop = async () => {
    await sink.stop();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).catch((err) => {
    process.stderr.write(`sink: ${err.message}\n`);
    process.exit(1);
  });
}
