// SPEC §9 "Operations", Admin: GET /v1/admin/workspaces (cursor paging), GET /v1/admin/analytics
// (every workspace), and the operator's actions audited in each workspace's own trail
// (workspace_created, workspace_updated, key_created, key_revoked).

import { describe, it } from 'node:test';
import {
  assert,
  call,
  codeOf,
  eventually,
  expectError,
  expectStatus,
  H,
  newDest,
  newWorkspace,
  useHarness,
} from './lib.mjs';

useHarness();

const LIST = '/v1/admin/workspaces';
const ANALYTICS = '/v1/admin/analytics';
const API_KEY_ANYWHERE = /otpk_[A-Za-z0-9_-]{43}/;
const HEX64 = /(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])/;

/** Every page of the listing with `limit`: the pages' answers (the last has nextCursor null). */
async function allPages(limit) {
  const pages = [];
  let cursor = null;
  for (let i = 0; i < 5000; i++) {
    const q = new URLSearchParams({ limit: String(limit), ...(cursor ? { cursor } : {}) });
    const res = await call('GET', `${LIST}?${q}`, { admin: true });
    const j = expectStatus(res, 200, `page ${i + 1}`);
    assert.equal(j.success, true);
    assert.deepEqual(Object.keys(j.data).sort(), ['nextCursor', 'workspaces']);
    assert.ok(!API_KEY_ANYWHERE.test(res.text), `no API key in a listing page: ${res.text.slice(0, 300)}`);
    assert.ok(!HEX64.test(res.text), `no key hash in a listing page: ${res.text.slice(0, 300)}`);
    pages.push(j.data);
    cursor = j.data.nextCursor;
    if (cursor === null) return pages;
    assert.equal(typeof cursor, 'string');
  }
  throw new Error('the listing did not end');
}

describe('GET /v1/admin/workspaces', () => {
  it('pages through every workspace with a small limit, in a stable order (by id), each as GET /{id} shows it, never a key', async () => {
    const mine = [];
    for (let i = 0; i < 5; i++) mine.push(await newWorkspace({ name: `list ${i} ${process.pid}` }));
    // One with a second key and a revoked one, so `keys` shows both.
    const extra = expectStatus(await call('POST', `/v1/admin/workspaces/${mine[0].id}/keys`, { admin: true }), 201);
    assert.equal((await call('DELETE', `/v1/admin/workspaces/${mine[0].id}/keys/${mine[0].keyId}`, { admin: true })).status, 204);

    const pages = await allPages(2);
    assert.ok(pages.length >= 3, `5 workspaces at 2 a page make at least 3 pages (got ${pages.length})`);
    for (const p of pages) assert.ok(p.workspaces.length <= 2, `a page holds at most limit=2: ${p.workspaces.length}`);
    for (const p of pages.slice(0, -1)) assert.equal(p.workspaces.length, 2, 'every page but the last is full');
    const ids = pages.flatMap((p) => p.workspaces.map((w) => w.workspaceId));
    assert.equal(new Set(ids).size, ids.length, 'no workspace listed twice');
    assert.deepEqual([...ids].sort(), ids, 'ordered by id');
    for (const ws of mine) assert.ok(ids.includes(ws.id), `${ws.id} is listed`);

    // Each entry is exactly GET /v1/admin/workspaces/{id}'s data.
    const listed = new Map(pages.flatMap((p) => p.workspaces.map((w) => [w.workspaceId, w])));
    for (const ws of mine) {
      const one = expectStatus(await call('GET', `/v1/admin/workspaces/${ws.id}`, { admin: true }), 200);
      assert.deepEqual(listed.get(ws.id), one.data, `the listing's ${ws.id} is its GET`);
    }
    const first = listed.get(mine[0].id);
    assert.deepEqual(first.keyIds, [extra.data.keyId]);
    assert.deepEqual(first.keys.map((k) => k.keyId), [mine[0].keyId, extra.data.keyId]);
    assert.equal(typeof first.keys[0].revokedAt, 'string', 'the revoked key is shown revoked');
    for (const k of first.keys) assert.deepEqual(Object.keys(k).sort(), ['createdAt', 'keyId', 'lastUsedAt', 'revokedAt']);

    // The same listing in one page (the largest limit) holds the same ids in the same order.
    const big = await allPages(200);
    const bigIds = big.flatMap((p) => p.workspaces.map((w) => w.workspaceId));
    assert.deepEqual(bigIds, ids, 'the order does not depend on the page size');
    // No limit: the default page of 50; `?cursor=&limit=` (both empty) is the same.
    for (const q of ['', '?cursor=&limit=']) {
      const d = expectStatus(await call('GET', `${LIST}${q}`, { admin: true }), 200, q);
      assert.deepEqual(d.data.workspaces.map((w) => w.workspaceId), bigIds.slice(0, 50), `default page ${q}`);
      assert.equal(d.data.nextCursor === null, bigIds.length <= 50);
    }
  });

  it('limit 1–200 and a cursor from nextCursor, else 400 VALIDATION_ERROR naming the field', async () => {
    for (const limit of ['0', '201', '-1', '1.5', 'abc', '99999999999']) {
      expectError(await call('GET', `${LIST}?limit=${encodeURIComponent(limit)}`, { admin: true }), 400, 'VALIDATION_ERROR', { field: 'limit' });
    }
    for (const cursor of ['a b', 'x'.repeat(1025), 'tab\there']) {
      expectError(await call('GET', `${LIST}?cursor=${encodeURIComponent(cursor)}`, { admin: true }), 400, 'VALIDATION_ERROR', { field: 'cursor' });
    }
    const one = expectStatus(await call('GET', `${LIST}?limit=1`, { admin: true }), 200);
    assert.equal(one.data.workspaces.length, 1);
    assert.equal((await call('POST', ANALYTICS, { admin: true, body: {} })).status, 405);
    assert.equal((await call('DELETE', LIST, { admin: true })).status, 405);
  });

  it('foreign auth → 401 on both routes: no token, a wrong token, an API key', async () => {
    const ws = await newWorkspace();
    for (const route of [LIST, `${LIST}?limit=2`, ANALYTICS, `${ANALYTICS}?days=7`]) {
      for (const auth of [{}, { admin: 'wrong-token' }, { admin: `${H.adminToken}x` }, { key: ws.key }]) {
        const res = await call('GET', route, auth);
        expectError(res, 401, 'UNAUTHORIZED');
        assert.ok(!res.text.includes(ws.id), 'a 401 names no workspace');
      }
    }
  });
});

describe('admin actions in the workspace audit trail', () => {
  it('workspace_created, key_created, workspace_updated, key_revoked, with the key by id only', async () => {
    const ws = await newWorkspace({ name: `audited ${process.pid}` });
    expectStatus(await call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { policy: { ttlSeconds: 180 } } }), 200);
    const second = expectStatus(await call('POST', `/v1/admin/workspaces/${ws.id}/keys`, { admin: true }), 201).data;
    assert.equal((await call('DELETE', `/v1/admin/workspaces/${ws.id}/keys/${second.keyId}`, { admin: true })).status, 204);
    // A read is not audited, nor is a refused change.
    expectStatus(await call('GET', `/v1/admin/workspaces/${ws.id}`, { admin: true }), 200);
    expectError(await call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { policy: { ttlSeconds: 99999 } } }), 400, 'VALIDATION_ERROR');

    const want = [
      ['key_revoked', second.keyId],
      ['key_created', second.keyId],
      ['workspace_updated', undefined],
      ['key_created', ws.keyId],
      ['workspace_created', undefined],
    ];
    // Written after each answer (waitUntil on the Worker): allow them a moment.
    let page;
    const caughtUp = await eventually(async () => {
      const res = await call('GET', '/v1/messaging/otp/audit', { key: ws.key });
      page = expectStatus(res, 200);
      return page.data.events.length >= want.length;
    }, 5000);
    assert.ok(caughtUp, `the five admin events arrived: ${JSON.stringify(page?.data.events)}`);
    const events = page.data.events;
    // Created and its first key in the same instant: order within one millisecond may differ.
    const sorted = (list) => [...list].sort((a, b) => `${a[0]}${a[1]}`.localeCompare(`${b[0]}${b[1]}`));
    assert.deepEqual(
      sorted(events.map((e) => [e.event, e.keyId])),
      sorted(want),
      `the admin events: ${JSON.stringify(events)}`,
    );
    assert.equal(events[0].event, 'key_revoked', 'newest first');
    assert.equal(events.at(-1).event === 'workspace_created' || events.at(-1).event === 'key_created', true);
    for (const e of events) {
      assert.equal(e.sessionId, '', 'no session');
      assert.equal(e.purpose, null, 'no purpose');
      assert.equal(e.dest, '', 'no destination');
      assert.equal(e.outcome, 'ok');
      assert.ok(!Number.isNaN(Date.parse(e.time)));
      const text = JSON.stringify(e);
      assert.ok(!API_KEY_ANYWHERE.test(text) && !HEX64.test(text), `never a key or hash: ${text}`);
    }
    // Another workspace's trail holds none of them.
    const other = await newWorkspace();
    await new Promise((r) => setTimeout(r, 300));
    const otherEvents = expectStatus(await call('GET', '/v1/messaging/otp/audit', { key: other.key }), 200).data.events;
    assert.ok(otherEvents.every((e) => e.keyId !== second.keyId && e.keyId !== ws.keyId), JSON.stringify(otherEvents));
  });
});

describe('GET /v1/admin/analytics', () => {
  it('equals the sum of two workspaces’ own analytics, each costed at its own price', async () => {
    const app = `Admin${process.pid}${Date.now()}`;
    const a = await newWorkspace({ policy: { pricePerSegment: { amount: '0.05', currency: 'USD' } } });
    const b = await newWorkspace({ policy: { pricePerSegment: { amount: '0.0075', currency: 'USD' } } });
    const send = async (ws) => {
      const dest = newDest();
      const res = await ws.request({ ...ws.body(dest), app });
      const j = expectStatus(res, 200, 'request');
      const msgs = await H.sink.messages(dest);
      return { sessionId: j.data.sessionId, code: codeOf(msgs[msgs.length - 1]) };
    };
    const a1 = await send(a);
    await send(a);
    const b1 = await send(b);
    expectStatus(await a.verify(a1.sessionId, a1.code), 200);
    expectStatus(await b.verify(b1.sessionId, b1.code), 200);

    const own = async (ws) => expectStatus(await call('GET', `/otp/analytics?app=${app}&days=7`, { key: ws.key }), 200);
    const ready = await eventually(async () => {
      const [x, y] = [await own(a), await own(b)];
      return x.totals.sent === 2 && x.totals.verified === 1 && y.totals.sent === 1 && y.totals.verified === 1 ? [x, y] : null;
    }, 5000);
    assert.ok(ready, 'both workspaces’ analytics caught up');
    const [ra, rb] = ready;

    const res = await call('GET', `${ANALYTICS}?app=${app}&days=7`, { admin: true });
    const all = expectStatus(res, 200);
    assert.ok(!API_KEY_ANYWHERE.test(res.text) && !HEX64.test(res.text), 'no key or hash');
    assert.equal(all.app, app);
    assert.equal(all.period_days, 7);
    assert.equal(all.from, ra.from);
    assert.equal(all.to, ra.to);
    for (const f of ['sent', 'reused', 'delivery_failed', 'verified', 'failed', 'expired', 'sms_segments', 'resent']) {
      assert.equal(all.totals[f], ra.totals[f] + rb.totals[f], `totals.${f}`);
      all.days.forEach((d, i) => assert.equal(d[f], ra.days[i][f] + rb.days[i][f], `days[${i}].${f}`));
    }
    assert.equal(all.totals.verification_rate, 0.6667);
    // 2 segments at 0.05 and 1 at 0.0075, summed exactly.
    assert.deepEqual(all.totals.estimated_cost, { amount: '0.1075', currency: 'USD' });
    assert.deepEqual(all.estimated_costs, [{ amount: '0.1075', currency: 'USD' }]);
    assert.equal(all.by_channel.sms.sent, 3);
    assert.equal(all.by_purpose.LOGIN.verified, 2);
    // Each workspace with its own totals, exactly as its own report shows them.
    const byId = Object.fromEntries(all.workspaces.map((w) => [w.workspace_id, w.totals]));
    assert.deepEqual(Object.keys(byId).sort(), [a.id, b.id].sort(), 'only the workspaces with activity for this app');
    assert.deepEqual(byId[a.id], ra.totals);
    assert.deepEqual(byId[b.id], rb.totals);

    // Without the app filter every workspace of the run counts: at least these.
    const every = expectStatus(await call('GET', ANALYTICS, { admin: true }), 200);
    assert.equal(every.period_days, 30);
    assert.ok(every.totals.sent >= 3);
    const listedSent = every.workspaces.reduce((n, w) => n + w.totals.sent, 0);
    assert.equal(every.totals.sent, listedSent, 'the totals are the sum of the listed workspaces');
    for (const days of ['0', '91', 'x']) {
      expectError(await call('GET', `${ANALYTICS}?days=${days}`, { admin: true }), 400, 'VALIDATION_ERROR', { field: 'days' });
    }
  });
});
