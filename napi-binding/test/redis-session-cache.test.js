'use strict';
// A verify on the process that stored the session decides on the value it stored and writes at
// once (src/redis_store.rs SessionCache): one round trip, no read. The compare-and-set compares
// the whole value, so a value another process changed meanwhile is read and decided again:
// nothing it counted is lost. Against a real redis-server, with two stores (two "processes").

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { OtpService, RedisStore } = require('..');
const { PEPPER, startRedis, codeOf, newDest, recorder, redisClientFor } = require('./helpers');

/** The commands clients send while `fn` runs (MONITOR; those run inside scripts left out). */
async function sentDuring(client, fn) {
  const monitor = await client.monitor();
  const seen = [];
  monitor.on('monitor', (_time, args, source) => {
    if (!String(source).includes('lua')) seen.push(String(args[0]).toUpperCase());
  });
  await new Promise((r) => setTimeout(r, 50));
  try {
    await fn();
    await new Promise((r) => setTimeout(r, 100));
  } finally {
    monitor.disconnect();
  }
  return seen;
}

describe('Redis: a verify decides on the session this process stored', () => {
  let redis;
  let own;
  const services = [];
  before(async () => {
    redis = await startRedis();
    own = redisClientFor(redis.url);
  });
  after(async () => {
    for (const s of services) await s.close();
    own?.disconnect();
    await redis?.stop();
  });

  async function service(gateway) {
    const store = new RedisStore({ url: redis.url });
    await store.connect();
    const otp = new OtpService({ pepper: PEPPER, gateway, store });
    services.push(otp);
    return otp;
  }

  it('the verify reads nothing: its compare-and-set is its only round trip before the answer', async () => {
    const gw = recorder();
    const a = await service(gw);
    const r = await a.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
    await a.settle();
    let verified;
    const sent = await sentDuring(own, async () => {
      verified = await a.verify({ sessionId: r.sessionId, code: codeOf(gw.sent[0].text) });
    });
    assert.equal(verified.status, 'APPROVED');
    assert.ok(!sent.includes('GET'), `no GET of the session: ${sent.join(', ')}`);
    // Its compare-and-set, then (after the answer) the failure streak's and the audit's scripts;
    // a script's first use in a process loads it (SCRIPT LOAD) once.
    const scripts = sent.filter((c) => c !== 'SCRIPT');
    assert.ok(scripts.length >= 1 && scripts.every((c) => c === 'EVALSHA'), sent.join(', '));
  });

  it('a value another process changed meanwhile is decided again: its wrong attempt still counts', async () => {
    const gw = recorder();
    const a = await service(gw);
    const b = await service(recorder());
    const r = await a.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
    const code = codeOf(gw.sent[0].text);
    const wrong = code === '000000' ? '111111' : '000000';
    const first = await b.verify({ sessionId: r.sessionId, code: wrong }); // b changes what a stored
    assert.equal(first.status, 'INVALID');
    const second = await a.verify({ sessionId: r.sessionId, code: wrong }); // a's value is stale
    assert.equal(second.status, 'INVALID');
    assert.equal(second.attemptsLeft, first.attemptsLeft - 1, "b's attempt is not lost");
    const third = await a.verify({ sessionId: r.sessionId, code: wrong }); // a wrote last: known again
    assert.equal(third.attemptsLeft, second.attemptsLeft - 1);
    assert.equal((await b.verify({ sessionId: r.sessionId, code })).status, 'APPROVED');
    const again = await a.verify({ sessionId: r.sessionId, code });
    assert.equal(again.status, 'ALREADY_USED', 'approved once, whoever asks next');
  });
});
