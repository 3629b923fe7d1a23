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
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}

/** An http.Server answering SPEC's API with `service`. */
function createServer(service) {
  const server = http.createServer(listener(service));
  server.keepAliveTimeout = 5000;
  return server;
}

module.exports = { createServer, listener };
