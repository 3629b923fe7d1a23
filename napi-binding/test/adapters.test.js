'use strict';
// otpkit/express, otpkit/fastify and otpkit/hono (issue 18, item 3): the API of `otpkit serve`
// mounted in a real Express, Fastify and Hono (@hono/node-server) app, at the root and under a
// prefix, with and without a body parser that reads the body before the adapter. Each mount sends
// a code to the SMS sink, verifies it, and checks the refusals (401, 400, 413, 415, 404) answer
// with the API's envelope; a malformed body's 400 is byte for byte what OtpService.handle() says.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Readable } = require('node:stream');
const express = require('express');
const Fastify = require('fastify');
const { Hono } = require('hono');
const { serve } = require('@hono/node-server');
// Through the package's own exports map, as an application requires them.
const { OtpService, JsonGateway } = require('otpkit');
const { otpkitExpress } = require('otpkit/express');
const { otpkitFastify } = require('otpkit/fastify');
const { otpkitHono } = require('otpkit/hono');
const { PEPPER, startSink, newDest } = require('./helpers');

const ADMIN = 'adapters-admin-token-0123456789';
const PREFIX = '/otp-api';
const MALFORMED = '{"sessionId": "x", "code": ';

let sink;
let otp;

before(async () => {
  sink = await startSink();
  otp = new OtpService({ pepper: PEPPER, gateway: new JsonGateway({ url: sink.gatewayUrl, token: 't' }), adminToken: ADMIN });
});
after(async () => {
  await otp?.close();
  await sink?.stop();
});

const listen = (server) =>
  new Promise((resolve) => {
    if (server.listening) return resolve(`http://127.0.0.1:${server.address().port}`);
    server.once('listening', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
const close = (server) =>
  new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });

async function call(url, { method = 'GET', headers = {}, body } = {}) {
  const res = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(5000) }); // a hung request fails
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, text, json, headers: res.headers };
}

/** What OtpService.handle() answers for one request: the body `otpkit serve` would send. */
async function reference(method, path, headers, body) {
  const reply = await otp.handle({ method, path, query: '', headers, readBody: async () => Buffer.from(body) });
  return reply.body;
}

/**
 * The API at `base + mount` (`base` is the app's own address): a workspace by the admin route, a
 * code sent and verified, the refusals. `exact`: the listener gets the bytes that arrived (no body
 * parser, or one that kept them), so a body that is not UTF-8 is refused as `otpkit serve` refuses
 * it; a parser that kept only the decoded text or the parsed value cannot show that.
 */
async function exercise(base, mount, { exact }) {
  const api = base + mount;
  const created = await call(`${api}/v1/admin/workspaces`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'adapters', senders: ['Acme'] }),
  });
  assert.equal(created.status, 201, created.text);
  const { apiKey } = created.json.data;
  assert.match(apiKey, /^otpk_/);
  const json = { 'x-api-key': apiKey, 'content-type': 'application/json' };
  const post = (path, body, headers = json) =>
    call(`${api}${path}`, { method: 'POST', headers, body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body) });

  const dest = newDest();
  const noKey = await post('/v1/messaging/otp/request', { dest, src: 'Acme', purpose: 'LOGIN' }, { 'content-type': 'application/json' });
  assert.equal(noKey.status, 401, noKey.text);
  assert.equal(noKey.json.error.code, 'UNAUTHORIZED');

  const sent = await post('/v1/messaging/otp/request', { dest, src: 'Acme', purpose: 'LOGIN' });
  assert.equal(sent.status, 200, sent.text);
  assert.equal(sent.json.success, true);
  assert.equal(sent.json.data.reused, false);
  const { sessionId } = sent.json.data;
  const messages = await sink.messages(dest);
  assert.equal(messages.length, 1, 'one SMS at the sink');
  const code = /\d{6}/.exec(messages[0].text)[0];
  const wrong = code === '000000' ? '111111' : '000000';

  const invalid = await post('/v1/messaging/otp/verify', { sessionId, code: wrong });
  assert.equal(invalid.status, 400, invalid.text);
  assert.equal(invalid.json.data.status, 'INVALID');
  assert.equal(invalid.json.data.attemptsLeft, 4);

  const badCode = await post('/v1/messaging/otp/verify', { sessionId, code: 'abc' });
  assert.equal(badCode.status, 400, badCode.text);
  assert.equal(badCode.json.error.code, 'VALIDATION_ERROR');

  const malformed = await post('/v1/messaging/otp/verify', MALFORMED);
  assert.equal(malformed.status, 400, malformed.text);
  assert.equal(malformed.json.error.code, 'VALIDATION_ERROR');
  assert.equal(malformed.text, await reference('POST', '/v1/messaging/otp/verify', json, MALFORMED), 'the same bytes as otpkit serve');

  const plain = await post('/v1/messaging/otp/verify', JSON.stringify({ sessionId, code }), { 'x-api-key': apiKey, 'content-type': 'text/plain' });
  assert.equal(plain.status, 415, plain.text);
  assert.equal(plain.json.error.code, 'UNSUPPORTED_MEDIA_TYPE');
  const form = await post('/v1/messaging/otp/verify', `sessionId=${sessionId}&code=${code}`, {
    'x-api-key': apiKey,
    'content-type': 'application/x-www-form-urlencoded',
  });
  assert.equal(form.status, 415, form.text);
  assert.equal(form.json.error.code, 'UNSUPPORTED_MEDIA_TYPE');
  const nonsense = await post('/v1/messaging/otp/verify', '{}', { 'x-api-key': apiKey, 'content-type': 'nonsense' });
  assert.equal(nonsense.status, 415, nonsense.text);
  assert.equal(nonsense.json.error.code, 'UNSUPPORTED_MEDIA_TYPE');

  if (exact) {
    const notUtf8 = Buffer.concat([Buffer.from(`{"dest":"${newDest()}","src":"Acme","purpose":"LOGIN","note":"`), Buffer.from([0xff]), Buffer.from('"}')]);
    const refused = await post('/v1/messaging/otp/request', notUtf8);
    assert.equal(refused.status, 400, refused.text);
    assert.equal(refused.text, await reference('POST', '/v1/messaging/otp/request', json, notUtf8));
  }

  const big = await post('/v1/messaging/otp/verify', JSON.stringify({ sessionId, code, pad: 'x'.repeat(17 * 1024) }));
  assert.equal(big.status, 413, big.text);
  assert.equal(big.json.error.code, 'PAYLOAD_TOO_LARGE');

  const approved = await post('/v1/messaging/otp/verify', { sessionId, code });
  assert.equal(approved.status, 200, approved.text);
  assert.equal(approved.json.data.status, 'APPROVED');
  assert.equal(approved.json.data.verified, true);
  const again = await post('/v1/messaging/otp/verify', { sessionId, code });
  assert.equal(again.status, 409, again.text);
  assert.equal(again.json.data.status, 'ALREADY_USED');

  const status = await call(`${api}/v1/messaging/otp/sessions/${sessionId}`, { headers: { 'x-api-key': apiKey } });
  assert.equal(status.status, 200, status.text);
  assert.equal(status.json.data.state, 'APPROVED');
  assert.equal(status.json.data.dest, `${dest.slice(0, 4)}${'*'.repeat(dest.length - 8)}${dest.slice(-4)}`);
  const zend = await call(`${api}/otp/${sessionId}/status`, { headers: { authorization: `Bearer ${apiKey}` } });
  assert.equal(zend.status, 200, zend.text);
  assert.equal(zend.json.status, 'verified');

  const unknown = await call(`${api}/nope`, { headers: { 'x-api-key': apiKey } });
  assert.equal(unknown.status, 404, unknown.text);
  assert.equal(unknown.json.error.code, 'NOT_FOUND');
  if (mount) {
    // Under a prefix the API is there only: the same path at the app's root is the app's 404.
    const outside = await call(`${base}/v1/messaging/otp/sessions/${sessionId}`, { headers: { 'x-api-key': apiKey } });
    assert.equal(outside.status, 404);
    assert.ok(!outside.text.includes('"success"'), `not otpkit's answer: ${outside.text}`);
  }
}

// ── Express ──────────────────────────────────────────────────────────────────────────────────
const keepRaw = (req, _res, buf) => {
  req.rawBody = buf;
};
// name → [parsers, does the adapter get the exact bytes?]
const EXPRESS_PARSERS = {
  none: [[], true],
  'express.json() + express.urlencoded()': [[express.json(), express.urlencoded({ extended: false })], false],
  'express.json({ verify }) keeping req.rawBody': [[express.json({ verify: keepRaw })], true],
  'express.raw()': [[express.raw({ type: '*/*' })], true],
  'express.text()': [[express.text({ type: '*/*' })], false],
};

describe('otpkit/express', () => {
  for (const [name, [parsers, exact]] of Object.entries(EXPRESS_PARSERS)) {
    for (const mount of ['', PREFIX]) {
      it(`body parser: ${name}; mounted at ${mount || '/'}`, async () => {
        const app = express();
        app.set('env', 'test'); // express's own 400 for its route is expected: not logged
        const read = [];
        for (const p of parsers) app.use(p);
        app.use((req, _res, next) => {
          if (req.method === 'POST') read.push(req.readableEnded);
          next();
        });
        app.post('/login/code', (req, res) => res.json({ mine: true, body: req.body ?? null }));
        if (mount) app.use(mount, otpkitExpress(otp));
        else app.use(otpkitExpress(otp));
        const server = app.listen(0, '127.0.0.1');
        try {
          const base = await listen(server);
          await exercise(base, mount, { exact });
          // The parser really read the bodies before the adapter (or nothing did).
          assert.equal(read.some(Boolean), parsers.length > 0, `bodies read before otpkit: ${read}`);
          // The application's own route still answers, and its body parser's errors stay its own.
          const mine = await call(`${base}/login/code`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"phone":"1"}' });
          assert.equal(mine.status, 200, mine.text);
          assert.equal(mine.json.mine, true);
          if (name.startsWith('express.json()')) {
            assert.deepEqual(mine.json.body, { phone: '1' });
            const broken = await call(`${base}/login/code`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: MALFORMED });
            assert.equal(broken.status, 400);
            assert.ok(!broken.text.includes('"success"'), `express's own error answer, not otpkit's: ${broken.text}`);
          }
        } finally {
          await close(server);
        }
      });
    }
  }

  it('a body over express.json()\'s limit is the API\'s 413, after the key check', async () => {
    const app = express();
    app.use(express.json({ limit: '1kb' }));
    app.use(PREFIX, otpkitExpress(otp));
    const server = app.listen(0, '127.0.0.1');
    try {
      const base = await listen(server);
      const body = JSON.stringify({ dest: newDest(), src: 'Acme', purpose: 'LOGIN', pad: 'x'.repeat(2048) });
      const anon = await call(`${base}${PREFIX}/v1/messaging/otp/request`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      assert.equal(anon.status, 401, anon.text);
      const created = await otp.createWorkspace({ name: 'limit', senders: ['Acme'] });
      const big = await call(`${base}${PREFIX}/v1/messaging/otp/request`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': created.apiKey },
        body,
      });
      assert.equal(big.status, 413, big.text);
      assert.equal(big.json.error.code, 'PAYLOAD_TOO_LARGE');
    } finally {
      await close(server);
    }
  });
});

// ── Fastify ──────────────────────────────────────────────────────────────────────────────────
describe('otpkit/fastify', () => {
  for (const parsers of ['default JSON parser', 'no parsers', 'a preParsing hook reading the body (as fastify-raw-body does)']) {
    for (const mount of ['', PREFIX]) {
      it(`${parsers}; mounted at ${mount || '/'}`, async () => {
        const app = Fastify();
        if (parsers === 'no parsers') app.removeAllContentTypeParsers();
        const read = [];
        if (parsers.startsWith('a preParsing hook')) {
          app.addHook('preParsing', async (request, _reply, payload) => {
            const chunks = [];
            for await (const chunk of payload) chunks.push(chunk);
            request.rawBody = Buffer.concat(chunks);
            read.push(request.raw.readableEnded);
            return Readable.from([request.rawBody]);
          });
        }
        app.post('/login/code', async (request) => ({ mine: true, body: request.body ?? null }));
        await app.register(otpkitFastify(otp), mount ? { prefix: mount } : {});
        await app.listen({ port: 0, host: '127.0.0.1' });
        try {
          const base = `http://127.0.0.1:${app.server.address().port}`;
          await exercise(base, mount, { exact: true });
          assert.equal(read.length > 0 && read.every(Boolean), parsers.startsWith('a preParsing hook'), `bodies read before otpkit: ${read}`);
          // The application's parsers are its own: its route still gets the parsed JSON.
          const mine = await call(`${base}/login/code`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"phone":"1"}' });
          if (parsers === 'no parsers') assert.equal(mine.status, 415, mine.text);
          else assert.deepEqual(mine.json, { mine: true, body: { phone: '1' } });
        } finally {
          await app.close();
        }
      });
    }
  }
});

// ── Hono (@hono/node-server) ─────────────────────────────────────────────────────────────────
describe('otpkit/hono', () => {
  for (const parsers of ['none', 'a middleware reading c.req.json()']) {
    for (const mount of ['', PREFIX]) {
      it(`body read before: ${parsers}; mounted at ${mount || '/'}`, async () => {
        const app = new Hono();
        const read = [];
        if (parsers !== 'none') {
          app.use('*', async (c, next) => {
            if (c.req.method === 'POST') {
              c.set('body', await c.req.json().catch(() => undefined));
              read.push(c.env.incoming.readableDidRead);
            }
            await next();
          });
        }
        app.post('/login/code', async (c) => c.json({ mine: true }));
        app.route(mount || '/', otpkitHono(otp));
        const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
        try {
          const base = await listen(server);
          await exercise(base, mount, { exact: parsers === 'none' });
          assert.equal(read.length > 0 && read.every(Boolean), parsers !== 'none', `bodies read before otpkit: ${read}`);
          const mine = await call(`${base}/login/code`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
          assert.deepEqual(mine.json, { mine: true });
        } finally {
          await close(server);
        }
      });
    }
  }

  it('imported as ES modules (Hono\'s ES module copy, as an application that imports it has)', async () => {
    const [{ Hono: HonoEsm }, { serve: serveEsm }, { otpkitHono: otpkitHonoEsm }] = await Promise.all([
      import('hono'),
      import('@hono/node-server'),
      import('otpkit/hono'),
    ]);
    assert.notEqual(HonoEsm, Hono, 'two copies of Hono: the test means the ES module one');
    const app = new HonoEsm();
    app.route(PREFIX, otpkitHonoEsm(otp));
    const server = serveEsm({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
    try {
      await exercise(await listen(server), PREFIX, { exact: true });
    } finally {
      await close(server);
    }
  });
});
