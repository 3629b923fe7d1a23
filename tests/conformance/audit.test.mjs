// GET /v1/messaging/otp/audit: events after a request and verifications (allowing SPEC's 2 s lag),
// their shape, workspace scoping, and that no code, key or full number is ever in them.

import { describe, it } from 'node:test';
import {
  assert, eventually, expectError, expectStatus, H, mask, newDest, newWorkspace, RFC3339, useHarness, wrongCode,
} from './lib.mjs';

useHarness();

const LAG_MS = 2000 + 500; // SPEC: up to 2 s; half a second for the polling itself

async function eventsOf(ws, query, want) {
  let last = [];
  const ok = await eventually(async () => {
    const j = expectStatus(await ws.audit(query), 200);
    last = j.data.events;
    return want(last);
  }, LAG_MS);
  return { ok, events: last };
}

describe('audit', () => {
  it('request + wrong + right verify → requested, delivered, verify_invalid, verify_approved (newest first)', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const s = await ws.issue(dest, { app: 'Acme' });
    await ws.verify(s.sessionId, wrongCode(s.code));
    await ws.verify(s.sessionId, s.code);
    const wanted = ['requested', 'delivered', 'verify_invalid', 'verify_approved'];
    const { ok, events } = await eventsOf(ws, { sessionId: s.sessionId }, (evs) => wanted.every((w) => evs.some((e) => e.event === w)));
    assert.ok(ok, `events within 2 s: ${JSON.stringify(events.map((e) => e.event))}`);
    for (const e of events) {
      for (const k of ['time', 'event', 'sessionId', 'purpose', 'app', 'dest', 'outcome']) assert.ok(k in e, `event has ${k}: ${JSON.stringify(e)}`);
      assert.match(e.time, RFC3339);
      assert.equal(e.sessionId, s.sessionId);
      assert.equal(e.purpose, 'LOGIN');
      assert.equal(e.app, 'Acme');
      assert.equal(e.dest, mask(dest));
      assert.equal(typeof e.outcome, 'string');
    }
    const order = events.map((e) => e.event);
    assert.ok(order.indexOf('verify_approved') < order.indexOf('verify_invalid'), `newest first: ${order}`);
    assert.ok(order.indexOf('verify_invalid') < order.indexOf('requested'), `newest first: ${order}`);
    const times = events.map((e) => Date.parse(e.time));
    for (let i = 1; i < times.length; i++) assert.ok(times[i - 1] >= times[i], 'times descend');
    const approved = events.find((e) => e.event === 'verify_approved');
    assert.equal(approved.status, 'APPROVED');
    const invalid = events.find((e) => e.event === 'verify_invalid');
    assert.equal(invalid.status, 'INVALID');

    // Never a code, a key or the full number (the code check runs on every body via lib.mjs).
    const raw = (await ws.audit({ sessionId: s.sessionId })).text;
    assert.ok(!raw.includes(s.code));
    assert.ok(!raw.includes(dest));
    assert.ok(!raw.includes(ws.key));
    assert.ok(!/hash|pepper/i.test(raw));
  });

  it('a reuse and a refused verify are recorded (reused, verify_rejected with status)', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const s = await ws.issue(dest);
    expectStatus(await ws.request(ws.body(dest)), 200);
    await ws.verify(s.sessionId, s.code);
    await ws.verify(s.sessionId, s.code); // ALREADY_USED
    const { ok, events } = await eventsOf(ws, { sessionId: s.sessionId }, (evs) =>
      evs.some((e) => e.event === 'reused') && evs.some((e) => e.event === 'verify_rejected'));
    assert.ok(ok, `events: ${JSON.stringify(events.map((e) => e.event))}`);
    assert.equal(events.find((e) => e.event === 'verify_rejected').status, 'ALREADY_USED');
  });

  it('a failed delivery is recorded as delivery_failed', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    await H.sink.setMode(dest, 'fail500');
    expectError(await ws.request(ws.body(dest)), 502, 'DELIVERY_FAILED');
    const [msg] = await H.sink.messages(dest);
    const { ok, events } = await eventsOf(ws, { sessionId: msg.reference }, (evs) => evs.some((e) => e.event === 'delivery_failed'));
    assert.ok(ok, `events: ${JSON.stringify(events.map((e) => e.event))}`);
    assert.ok(!events.some((e) => e.event === 'delivered'));
  });

  it('is scoped to the workspace', async () => {
    const owner = await newWorkspace();
    const other = await newWorkspace();
    const s = await owner.issue(newDest());
    const { ok } = await eventsOf(owner, { sessionId: s.sessionId }, (evs) => evs.some((e) => e.event === 'delivered'));
    assert.ok(ok);
    const j = expectStatus(await other.audit({ sessionId: s.sessionId }), 200);
    assert.deepEqual(j.data.events, []);
    const all = expectStatus(await other.audit(), 200);
    assert.ok(!all.data.events.some((e) => e.sessionId === s.sessionId));
  });

  it('answers the SPEC envelope; limit pages with nextCursor; bad parameters → 400 with field', async () => {
    const ws = await newWorkspace({ policy: { reuse: false, sendsPerDestination: { limit: 10, windowSeconds: 600 } } });
    const dest = newDest();
    for (let i = 0; i < 3; i++) await ws.issue(dest);
    const { ok } = await eventsOf(ws, {}, (evs) => evs.filter((e) => e.event === 'delivered').length >= 3);
    assert.ok(ok);
    const res = await ws.audit({ limit: '2' });
    const j = expectStatus(res, 200);
    assert.deepEqual(Object.keys(j), ['success', 'message', 'data']);
    assert.equal(j.success, true);
    assert.equal(j.message, 'OK');
    assert.deepEqual(Object.keys(j.data).sort(), ['events', 'nextCursor']);
    assert.equal(j.data.events.length, 2);
    assert.notEqual(j.data.nextCursor, null);
    const page2 = expectStatus(await ws.audit({ limit: '2', cursor: String(j.data.nextCursor) }), 200);
    assert.ok(page2.data.events.length >= 1);
    const first = new Set(j.data.events.map((e) => JSON.stringify(e)));
    for (const e of page2.data.events) assert.ok(!first.has(JSON.stringify(e)), 'pages do not overlap');
    // since: nothing in the future.
    const future = new Date(Date.now() + 3600_000).toISOString();
    assert.deepEqual(expectStatus(await ws.audit({ since: future }), 200).data.events, []);

    expectError(await ws.audit({ sessionId: 'nope' }), 400, 'VALIDATION_ERROR', { field: 'sessionId' });
    expectError(await ws.audit({ limit: '0' }), 400, 'VALIDATION_ERROR', { field: 'limit' });
    expectError(await ws.audit({ limit: '501' }), 400, 'VALIDATION_ERROR', { field: 'limit' });
    expectError(await ws.audit({ since: 'yesterday' }), 400, 'VALIDATION_ERROR', { field: 'since' });
  });
});
