'use strict';
// `otpkit serve`: SPEC's HTTP API on node:http. The answer to every request comes from
// OtpService.handle(), whose bodies come from otpkit-core: the same bytes as the Worker.

const http = require('node:http');
const { hostError } = require('./errors');

/** Reads at most `max` bytes; throws PAYLOAD_TOO_LARGE past it (then the rest is discarded). */
function bodyReader(req) {
  return (max) =>
    new Promise((resolve, reject) => {
      const chunks = [];
      let size = 0;
      let done = false;
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
      req.on('error', (e) => {
        if (!done) {
          done = true;
          reject(e);
        }
      });
    });
}

// An answer given before the body was read (401, 413, 415) must still reach a client that is
// sending: closing at once (Connection: close) would reset the connection under the unread body
// and the client would see a reset instead of the answer. So the rest of the body is read and
// discarded first, bounded in bytes and time (a lingering close).
const DRAIN_MAX_BYTES = 64 * 1024 * 1024;
const DRAIN_MAX_MS = 10_000;

function drain(req) {
  return new Promise((resolve) => {
    if (req.complete || req.destroyed) return resolve();
    let size = 0;
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(done, DRAIN_MAX_MS);
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > DRAIN_MAX_BYTES) done();
    });
    req.once('end', done);
    req.once('close', done);
    req.once('error', done);
    req.resume();
  });
}

// Requests node:http refuses before they reach the listener (a malformed request line, an unknown
// method, bytes that are not allowed in a path, a body cut short, headers too large) still get
// SPEC's error envelope rather than node's bare "400 Bad Request".
const CLIENT_ERRORS = {
  HPE_INVALID_METHOD: [405, 'Method not allowed', 'METHOD_NOT_ALLOWED'],
  HPE_HEADER_OVERFLOW: [431, 'Request headers are too large', 'VALIDATION_ERROR'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request not received in time', 'VALIDATION_ERROR'],
  ERR_HTTP_HEADERS_TIMEOUT: [408, 'Request not received in time', 'VALIDATION_ERROR'],
};

function onClientError(err, socket) {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const [status, message, code] = CLIENT_ERRORS[err.code] || [400, 'Malformed HTTP request', 'VALIDATION_ERROR'];
  const body = JSON.stringify({ success: false, message, error: { code } });
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** A node:http request listener for an OtpService. */
function listener(service) {
  return async (req, res) => {
    const url = req.url || '/';
    const q = url.indexOf('?');
    const reply = await service.handle({
      method: req.method,
      path: q === -1 ? url : url.slice(0, q),
      query: q === -1 ? '' : url.slice(q + 1),
      headers: req.headers,
      readBody: bodyReader(req),
    });
    const headers = {};
    if (reply.status !== 204) headers['content-type'] = 'application/json';
    if (reply.retryAfter != null) headers['retry-after'] = String(reply.retryAfter);
    const body = reply.status === 204 ? '' : reply.body;
    headers['content-length'] = Buffer.byteLength(body);
    res.writeHead(reply.status, headers);
    if (!req.complete) {
      // answered before the whole body arrived: send the answer, then drain (see drain())
      if (req.method !== 'HEAD') res.write(body);
      await drain(req);
      res.end();
      return;
    }
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}

/** An http.Server answering SPEC's API with `service`. */
function createServer(service) {
  const server = http.createServer(listener(service));
  server.keepAliveTimeout = 5000;
  server.on('clientError', onClientError);
  return server;
}

module.exports = { createServer, listener };
