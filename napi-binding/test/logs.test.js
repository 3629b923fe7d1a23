'use strict';
// Failure lines of `otpkit serve` (SPEC §9 "Logs", issue 17 item 1): besides one line per request
// and one per failed delivery, a store step that fails logs which IO failed and the store's error
// name, and a 500 MISCONFIGURED says what is missing — never a key, number or code.

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');
const { randomBytes } = require('node:crypto');
const { OtpService, RedisStore, MemoryStore } = require('..');
const { listener } = require('../lib/server');

/** An HTTP server over `listener(service)` whose log lines are collected. */
async function served(service) {
  const lines = [];
  const server = http.createServer(listener(service, { log: (l) => lines.push(l), logLevel: 'info' }));
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  return { base, lines, close: () => new Promise((r) => server.close(r)) };
}

/** A TCP port nothing listens on (bound, then released). */
async function closedPort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

const parsed = (lines) => lines.map((l) => JSON.parse(l));

describe('failure lines (otpkit serve)', () => {
  const stops = [];
  after(async () => {
    for (const s of stops) await s();
  });

  it('a store that cannot be reached: 503, and a store_failed line naming the IO and the error code', async () => {
    const admin = randomBytes(16).toString('hex');
    const store = new RedisStore({ url: `redis://127.0.0.1:${await closedPort()}` });
    const service = new OtpService({ pepper: randomBytes(32).toString('hex'), store, adminToken: admin, gateway: async () => 'delivered' });
    const host = await served(service);
    stops.push(host.close, () => service.close());
    const res = await fetch(`${host.base}/v1/admin/workspaces`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'down', senders: ['Acme'] }),
    });
    assert.equal(res.status, 503);
    const lines = parsed(host.lines);
    const failed = lines.filter((l) => l.msg === 'store_failed');
    assert.equal(failed.length, 1, JSON.stringify(lines));
    assert.deepEqual(
      { level: failed[0].level, store: failed[0].store, io: failed[0].io, kind: failed[0].kind },
      { level: 'error', store: 'redis', io: 'putWorkspace', kind: 'unavailable' },
    );
    assert.match(failed[0].cause, /^[A-Za-z0-9_.:-]{1,64}$/);
    assert.notEqual(failed[0].cause, 'STORE_UNAVAILABLE', 'the client\'s own error name, not the answer\'s code');
    assert.ok(lines.some((l) => l.msg === 'request' && l.status === 503 && l.error === 'STORE_UNAVAILABLE'));
    for (const l of host.lines) assert.ok(!l.includes(admin), 'never the admin token');
  });

  it('a 500 MISCONFIGURED (no OTP_PEPPER): a config_problem line says what is missing', async () => {
    const service = new OtpService({ store: new MemoryStore(), allowMisconfigured: true, gateway: async () => 'delivered' });
    const host = await served(service);
    stops.push(host.close, () => service.close());
    const res = await fetch(`${host.base}/v1/messaging/otp/request`, {
      method: 'POST',
      headers: { 'x-api-key': `otpk_${'A'.repeat(43)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ dest: '+233202007745', src: 'Acme', purpose: 'LOGIN' }),
    });
    assert.equal(res.status, 500);
    const lines = parsed(host.lines);
    const problem = lines.filter((l) => l.msg === 'config_problem');
    assert.equal(problem.length, 1, JSON.stringify(lines));
    assert.equal(problem[0].level, 'error');
    assert.match(problem[0].problem, /OTP_PEPPER/);
    // Answers that are not MISCONFIGURED add no such line.
    const ok = await fetch(`${host.base}/nope`);
    assert.equal(ok.status, 404);
    assert.equal(parsed(host.lines).filter((l) => l.msg === 'config_problem').length, 1);
  });
});
