// A tiny HTTP/1.1 client on node:net, for requests fetch() will not send: any path bytes, any
// headers (or none), bodies written slowly or cut short, Content-Length that lies. One request
// per connection (Connection: close). Answers { status, headers, body (Buffer), ms } or
// { error: 'timeout' | 'closed' | <code>, ms } — never throws.

import net from 'node:net';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * opts: method, path (raw, sent as is), headers (array of [name, value] or object; sent as is,
 * in order), body (Buffer|string), contentLength ('auto' default | number | null = none),
 * chunks: { size, everyMs } to dribble the body, stopAfter (bytes: stop writing there and
 * half-close, for truncated bodies), timeoutMs (whole exchange, from connect to the last byte).
 */
export function rawRequest(baseUrl, opts) {
  const u = new URL(baseUrl);
  const started = Date.now();
  const body = opts.body === undefined ? null : Buffer.isBuffer(opts.body) ? opts.body : Buffer.from(opts.body, 'utf8');
  const headers = Array.isArray(opts.headers) ? [...opts.headers] : Object.entries(opts.headers || {});
  const names = new Set(headers.map(([k]) => k.toLowerCase()));
  if (!names.has('host')) headers.unshift(['host', u.host]);
  if (!names.has('connection')) headers.push(['connection', 'close']);
  const cl = opts.contentLength === undefined ? 'auto' : opts.contentLength;
  if (cl === 'auto' && body !== null && !names.has('content-length') && !names.has('transfer-encoding')) {
    headers.push(['content-length', String(body.length)]);
  } else if (typeof cl === 'number') headers.push(['content-length', String(cl)]);
  const head = Buffer.from(
    `${opts.method} ${opts.path} HTTP/1.1\r\n${headers.map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`,
    'latin1',
  );

  return new Promise((resolve) => {
    const sock = net.connect(Number(u.port || 80), u.hostname);
    sock.setNoDelay(true);
    const received = [];
    let settled = false;
    const finish = (value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ ...value, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish(parse(Buffer.concat(received), 'timeout')), opts.timeoutMs ?? 20_000);
    sock.on('data', (d) => {
      received.push(d);
      const r = parse(Buffer.concat(received), null);
      if (r.complete) finish(r);
    });
    sock.on('end', () => finish(parse(Buffer.concat(received), 'closed')));
    sock.on('close', () => finish(parse(Buffer.concat(received), 'closed')));
    // A server may answer (413) and close while we still write: what it answered counts.
    // EPIPE/ECONNRESET on a write usually means the server answered and closed early: give its
    // answer, already on the way, a moment to be read.
    sock.on('error', (e) => {
      if (settled) return;
      setTimeout(() => finish(parse(Buffer.concat(received), e.code || 'error')), 500);
    });

    sock.on('connect', async () => {
      const write = (buf) =>
        new Promise((res) => {
          if (settled || sock.destroyed) return res(false);
          if (sock.write(buf)) return res(true);
          const onDrain = () => { cleanup(); res(true); };
          const onGone = () => { cleanup(); res(false); };
          const cleanup = () => { sock.off('drain', onDrain); sock.off('close', onGone); };
          sock.once('drain', onDrain);
          sock.once('close', onGone);
        });
      if (!(await write(head)) || body === null) return;
      const limit = opts.stopAfter ?? body.length;
      if (opts.chunks) {
        for (let i = 0; i < limit; i += opts.chunks.size) {
          if (!(await write(body.subarray(i, Math.min(limit, i + opts.chunks.size))))) return;
          await sleep(opts.chunks.everyMs);
        }
      } else {
        const step = 256 * 1024;
        for (let i = 0; i < limit; i += step) {
          if (!(await write(body.subarray(i, Math.min(limit, i + step))))) return;
        }
      }
      if (opts.stopAfter !== undefined && !settled) sock.end(); // half-close: the rest never comes
    });
  });
}

/** Parses what was received; `complete` once a whole response is there. */
function parse(buf, endedBy) {
  const sep = buf.indexOf('\r\n\r\n');
  if (sep === -1) return { error: endedBy || 'incomplete', complete: false, partial: buf.length };
  const lines = buf.subarray(0, sep).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
  if (!m) return { error: endedBy || 'bad-response', complete: false };
  const headers = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  const status = Number(m[1]);
  let rest = buf.subarray(sep + 4);
  let complete = false;
  if (headers['transfer-encoding']?.toLowerCase().includes('chunked')) {
    const out = [];
    let p = 0;
    for (;;) {
      const eol = rest.indexOf('\r\n', p);
      if (eol === -1) break;
      const n = parseInt(rest.subarray(p, eol).toString('latin1'), 16);
      if (Number.isNaN(n)) break;
      if (n === 0) {
        complete = true;
        break;
      }
      if (rest.length < eol + 2 + n) break;
      out.push(rest.subarray(eol + 2, eol + 2 + n));
      p = eol + 2 + n + 2;
    }
    rest = Buffer.concat(out);
  } else if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    complete = rest.length >= n;
    rest = rest.subarray(0, n);
  } else if (status === 204 || status === 304) complete = true;
  if (!complete && endedBy && endedBy !== 'timeout') complete = true; // body delimited by close
  if (!complete && endedBy === 'timeout') return { error: 'timeout', complete: false, status };
  return { status, headers, body: rest, complete };
}
