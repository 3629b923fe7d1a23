#!/usr/bin/env node
// The peer for bench/http.mjs: an HTTP OTP service written the common way, node:http + ioredis,
// so otpkit serve is compared with what a typical Node developer would deploy, not with a straw man.
//
//   PORT=8790 REDIS_URL=redis://127.0.0.1:6379 SMS_GATEWAY_URL=http://127.0.0.1:9000/sms \
//   API_KEY=... node bench/peer/server.mjs
//
// Same routes and envelopes as otpkit (SPEC's v1 dialect), one API key compared to the configured
// one, JSON bodies, a minimal check of dest (E.164), src and purpose. request: 6-digit code from
// crypto.randomInt, session id from randomUUID, {code in PLAINTEXT, dest, attempts, expiresAt} as
// JSON with SET … PX, the SMS POSTed with fetch before answering. verify: GET, expiry and attempts
// checks, plaintext compare, DEL on success (single use), SET of the new attempts count otherwise —
// GET then SET/DEL without a transaction, so concurrent wrong guesses can race the attempts count.
// It does less than otpkit on purpose, as the common version does: no per-destination or
// per-workspace limits, no audit, no hashing of the code, no idempotency, no workspaces.
// Never logs codes or keys.
import http from 'node:http';
import { randomInt, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../../napi-binding/package.json', import.meta.url));
const Redis = require('ioredis');

const PORT = Number(process.env.PORT || 8790);
const API_KEY = process.env.API_KEY || '';
const SMS_GATEWAY_URL = process.env.SMS_GATEWAY_URL || '';
const TTL_MS = 5 * 60_000;
const MAX_ATTEMPTS = 5;
const E164 = /^\+[1-9]\d{6,14}$/;
const PURPOSES = new Set(['LOGIN', 'SIGNUP', 'RESET_PASSWORD', 'TRANSACTION', 'CHANGE_CONTACT', 'OTHER']);

if (!API_KEY) {
  console.error('peer: API_KEY is required');
  process.exit(2);
}

const redis = new Redis(process.env.REDIS_URL || 'redis://127.0.0.1:6379', { lazyConnect: false });
redis.on('error', (e) => console.error(`peer: redis: ${e.message}`));

function send(res, status, payload) {
  const body = JSON.stringify(payload);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
const fail = (res, status, code, message) => send(res, status, { success: false, error: { code, message } });

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (e) {
        reject(e);
      }
    });
    req.on('error', reject);
  });
}

async function requestOtp(body, res) {
  const { dest, src, purpose } = body || {};
  if (typeof dest !== 'string' || !E164.test(dest)) return fail(res, 400, 'VALIDATION_ERROR', 'dest must be E.164');
  if (typeof src !== 'string' || !src || src.length > 11) return fail(res, 400, 'VALIDATION_ERROR', 'src is required');
  if (purpose !== undefined && !PURPOSES.has(purpose)) return fail(res, 400, 'VALIDATION_ERROR', 'unknown purpose');
  const code = String(randomInt(0, 1_000_000)).padStart(6, '0');
  const sessionId = randomUUID();
  const expiresAt = Date.now() + TTL_MS;
  await redis.set(`otp:${sessionId}`, JSON.stringify({ code, dest, attempts: 0, expiresAt }), 'PX', TTL_MS);
  const sms = await fetch(SMS_GATEWAY_URL, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ to: dest, from: src, text: `${code} is your verification code.`, reference: sessionId }),
  });
  await sms.arrayBuffer();
  if (!sms.ok) {
    await redis.del(`otp:${sessionId}`);
    return fail(res, 502, 'GATEWAY_ERROR', 'the SMS could not be sent');
  }
  send(res, 200, { success: true, data: { sessionId } });
}

async function verifyOtp(body, res) {
  const { sessionId, code } = body || {};
  if (typeof sessionId !== 'string' || typeof code !== 'string') {
    return fail(res, 400, 'VALIDATION_ERROR', 'sessionId and code are required');
  }
  const key = `otp:${sessionId}`;
  const raw = await redis.get(key);
  if (!raw) return send(res, 200, { success: true, data: { sessionId, status: 'EXPIRED' } });
  const s = JSON.parse(raw);
  if (Date.now() > s.expiresAt) {
    await redis.del(key);
    return send(res, 200, { success: true, data: { sessionId, status: 'EXPIRED' } });
  }
  if (s.attempts >= MAX_ATTEMPTS) return send(res, 200, { success: true, data: { sessionId, status: 'LOCKED' } });
  if (code === s.code) {
    await redis.del(key);
    return send(res, 200, { success: true, data: { sessionId, status: 'APPROVED' } });
  }
  s.attempts += 1;
  await redis.set(key, JSON.stringify(s), 'PX', Math.max(1, s.expiresAt - Date.now()));
  send(res, 200, { success: true, data: { sessionId, status: s.attempts >= MAX_ATTEMPTS ? 'LOCKED' : 'REJECTED' } });
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.method === 'GET' && req.url === '/health') return send(res, 200, { success: true, data: { status: 'ok' } });
    const route =
      req.url === '/v1/messaging/otp/request' ? requestOtp : req.url === '/v1/messaging/otp/verify' ? verifyOtp : null;
    if (!route || req.method !== 'POST') return fail(res, 404, 'NOT_FOUND', 'no such route');
    if (req.headers.authorization !== `Bearer ${API_KEY}`) return fail(res, 401, 'UNAUTHORIZED', 'bad API key');
    let body;
    try {
      body = await readJson(req);
    } catch {
      return fail(res, 400, 'VALIDATION_ERROR', 'body must be JSON');
    }
    await route(body, res);
  } catch (e) {
    console.error(`peer: ${e.message}`);
    if (!res.headersSent) fail(res, 500, 'INTERNAL', 'internal error');
  }
});
server.keepAliveTimeout = 5000; // as otpkit serve
server.listen(PORT, '127.0.0.1', () => console.log(`peer: listening on http://127.0.0.1:${PORT}`));

const stop = () => {
  server.close();
  server.closeIdleConnections?.();
  redis.quit().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
