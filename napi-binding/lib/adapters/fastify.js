'use strict';
// otpkit/fastify: the HTTP API `otpkit serve` answers (both dialects, admin, audit), as a Fastify
// plugin:
//
//   await app.register(otpkitFastify(otp), { prefix: '/otp-api' });
//
// Every request under the prefix is handed to the listener (reply.hijack(), request.raw,
// reply.raw), which sees the path without the prefix and answers 404 NOT_FOUND for a path that is
// not the API's.

const { listener } = require('../server');
const native = require('../native');
const { bodyWasRead, keptBody, replay, stripPrefix, answerAt } = require('./common');

const limit = native.maxBodyBytes();

/**
 * A Fastify plugin answering the API with `service`. `options` are the listener's (`log`,
 * `logLevel`, `drainTimeoutMs`, `metricsPublic`); the mount prefix is register()'s `prefix`.
 */
function otpkitFastify(service, options = {}) {
  const answer = listener(service, options);

  async function otpkit(fastify) {
    const prefix = fastify.prefix;
    // Fastify parses a body before the handler runs (JSON with its own limit and errors, or 415).
    // In this plugin's scope (encapsulated: the application's parsers are untouched) a body of any
    // content type is left unread instead, for the listener to read after it has checked the key,
    // the content type and the declared size, as SPEC orders.
    fastify.removeAllContentTypeParsers();
    fastify.addContentTypeParser('*', (request, payload, done) => {
      if (payload === request.raw) return done(null); // unread: the listener reads it
      // A preParsing hook (fastify-raw-body, a decompressor) read request.raw and gave this stream
      // instead: its bytes are the body (kept as a Buffer, at most one byte over the API's limit).
      const chunks = [];
      let size = 0;
      payload.on('data', (chunk) => {
        if (size > limit) return;
        chunks.push(chunk);
        size += chunk.length;
      });
      payload.once('end', () => done(null, Buffer.concat(chunks)));
      payload.once('error', done);
    });

    const handle = (request, reply) => {
      const raw = request.raw;
      const url = stripPrefix(raw.url, prefix);
      let bytes = null;
      if (bodyWasRead(raw)) {
        // Read by a hook: the copy in request.body (the parser's above); none is needed without a body.
        const h = raw.headers;
        const none = h['transfer-encoding'] === undefined && (h['content-length'] ?? '0') === '0';
        bytes = keptBody(raw, request.body) ?? (none ? Buffer.alloc(0) : null);
        if (bytes === null) throw new Error('otpkit/fastify: the request body was read before otpkit and no copy of it was kept');
      }
      reply.hijack(); // the listener writes reply.raw
      return bytes ? answer(replay(raw, bytes, url), reply.raw) : answerAt(answer, raw, reply.raw, url);
    };
    // A Content-Type header Fastify cannot parse is refused before any handler: the listener
    // answers it instead (401 without a key, else 415 UNSUPPORTED_MEDIA_TYPE in the API's envelope).
    // (A preParsing hook may have read the body then, with no copy left: the listener refuses such
    // a header before reading one, so an empty body stands in.)
    fastify.setErrorHandler((err, request, reply) => {
      if (err.code !== 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || reply.sent) throw err;
      if (request.body === undefined) request.body = Buffer.alloc(0);
      return handle(request, reply);
    });
    fastify.all('/', handle);
    fastify.all('/*', handle);
  }
  return otpkit;
}

module.exports = { otpkitFastify };
