'use strict';
// What the framework adapters (express.js, fastify.js, hono.js) share. Each hands the request to
// lib/server.js's listener, the one `otpkit serve` runs, so every route, check and byte of every
// answer is the same. The listener reads the body itself, after checking the key, the content type
// and the declared size (SPEC §3's order: 401, 415, 413, 400). When something before the adapter
// already read the body (a body parser), the listener is given a stand-in for the request that
// replays the body's bytes.

const { Readable } = require('node:stream');
const native = require('../native');
const { fromNative } = require('../errors');

/** Has something read the body of `req` (an IncomingMessage)? Then the listener cannot read it again. */
const bodyWasRead = (req) => Boolean(req.readableDidRead || req.readableEnded);

/**
 * The bytes of a body that something before the adapter read, or null when no copy of it was kept:
 * - `req.rawBody` when it holds them (a Buffer or string: e.g. `express.json({ verify })` keeping
 *   the raw body, the recommended way): exactly the bytes that arrived;
 * - else `body`, as the parser left it: a Buffer (express.raw) or a string (express.text) as is;
 *   an object (express.json without a raw copy) re-serialised with JSON.stringify, because it is
 *   the only copy left: the same JSON value, though not always the same spelling (a duplicate key
 *   keeps its last value, `1.0` becomes `1`). A form (express.urlencoded) is an object too, but
 *   the API takes JSON only: the listener answers 415 from the content type without reading it
 *   (except on the delivery receipt routes, which take any content type: a form re-serialised
 *   no longer matches its signature, 403; keep req.rawBody).
 */
function keptBody(req, body) {
  const raw = req.rawBody;
  if (raw instanceof Uint8Array) return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  if (typeof raw === 'string') return Buffer.from(raw, 'utf8');
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body === undefined) return null;
  return Buffer.from(JSON.stringify(body), 'utf8');
}

/**
 * A stand-in for `req` whose body was already read: the same method, headers and socket, `url`
 * (the path the listener should see), complete, and `bytes` as its body, streamed like the
 * original's (the listener's size limit and parse apply to it unchanged).
 */
function replay(req, bytes, url = req.url) {
  const copy = Readable.from(bytes.length > 0 ? [bytes] : [], { objectMode: false });
  return Object.assign(copy, {
    method: req.method,
    url,
    headers: req.headers,
    rawHeaders: req.rawHeaders,
    httpVersion: req.httpVersion,
    socket: req.socket,
    connection: req.socket,
    complete: true,
  });
}

/**
 * A body over the API's size limit, for a body parser that refused one as too large and kept
 * none of it: the listener answers 413 PAYLOAD_TOO_LARGE, in SPEC's order (after 401 and 415).
 */
const tooLarge = () => Buffer.alloc(native.maxBodyBytes() + 1, 0x20);

/** Is `url`'s path one of the API's routes (with any method)? Decides whose a body parser's error is. */
function isApiPath(method, url) {
  const q = url.indexOf('?');
  try {
    native.route(method, q === -1 ? url : url.slice(0, q));
    return true;
  } catch (e) {
    return fromNative(e).code !== 'NOT_FOUND';
  }
}

/** `url` without the mount `prefix` ('/otp-api/v1/x?q' → '/v1/x?q'); `url` itself when it does not start with it. */
function stripPrefix(url, prefix) {
  const p = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  if (!p || url.slice(0, p.length).toLowerCase() !== p.toLowerCase()) return url;
  const rest = url.slice(p.length);
  if (rest === '') return '/';
  if (rest[0] === '/') return rest;
  if (rest[0] === '?') return `/${rest}`;
  return url; // '/otp-apix': not under the prefix
}

/**
 * Runs `answer` (the listener) on `req` seen at `url` without copying it: the url is set for the
 * listener and restored once it has answered (the framework may log the original afterwards).
 */
async function answerAt(answer, req, res, url) {
  const original = req.url;
  req.url = url;
  try {
    await answer(req, res);
  } finally {
    req.url = original;
  }
}

module.exports = { bodyWasRead, keptBody, replay, tooLarge, isApiPath, stripPrefix, answerAt };
