// SPEC §7 "Idempotency": header Idempotency-Key (1–255 chars of [\x21-\x7E]) on request,
// /otp/send and resend. Same key + same body (after JSON parsing, key order ignored) within 24 h →
// the first answer's status and body replayed with Idempotent-Replayed: true, nothing sent or
// charged; same key, other body → 422 IDEMPOTENCY_KEY_REUSED; a duplicate in flight waits for
// the first; keys are per workspace and stored hashed; 5xx answers are not stored.

import { describe, it } from 'node:test';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import {
  assert, call, codeOf, expectError, expectStatus, expectVerify, H, newDest, newWorkspace, useHarness,
} from './lib.mjs';
import { ROOT } from './host.mjs';

useHarness();

const REPLAYED = 'idempotent-replayed';
const newKey = () => `idem-${randomUUID()}`;
const withKey = (key) => ({ headers: { 'Idempotency-Key': key } });
const replayed = (res) => res.headers.get(REPLAYED);
const messages = async (dest) => (await H.sink.messages(dest)).length;
const resendV1 = (ws, id, body, key) =>
  call('POST', `/v1/messaging/otp/sessions/${encodeURIComponent(id)}/resend`, { key: ws.key, body, ...withKey(key) });

/** The second answer is the first one again: status, body byte for byte, and the replay header. */
function expectReplay(first, again) {
  assert.equal(again.status, first.status, `replayed status: ${again.text}`);
  assert.equal(again.text, first.text, 'replayed body, byte for byte');
  assert.equal(replayed(again), 'true', 'Idempotent-Replayed: true');
  assert.equal(again.headers.get('retry-after'), first.headers.get('retry-after'), 'the same Retry-After');
}

describe('idempotency', () => {
  it('same key + same body → the first answer replayed (status, body, header), exactly one SMS; the code works', async () => {
    const ws = await newWorkspace({ policy: { reuse: false } });
    const dest = newDest();
    const key = newKey();
    const first = await ws.request(ws.body(dest), withKey(key));
    const j = expectStatus(first, 200, 'first request');
    assert.equal(j.data.reused, false);
    assert.equal(replayed(first), null, 'the first answer is not a replay');
    const again = await ws.request(ws.body(dest), withKey(key));
    expectReplay(first, again);
    assert.equal(await messages(dest), 1, 'one message reached the gateway');
    const code = codeOf((await H.sink.messages(dest))[0]);
    expectVerify(await ws.verify(j.data.sessionId, code), 'APPROVED', j.data.sessionId, 4);
    // Without the key the same body is a new request (reuse off: a new code).
    expectStatus(await ws.request(ws.body(dest)), 200);
    assert.equal(await messages(dest), 2);
  });

  it('key order and whitespace of the body do not matter; the second dialect replays too', async () => {
    const ws = await newWorkspace({ policy: { reuse: false } });
    const dest = newDest();
    const key = newKey();
    const first = await ws.request({ dest, src: ws.senders[0], purpose: 'LOGIN' }, withKey(key));
    expectStatus(first, 200);
    const raw = `{ "purpose" : "LOGIN",\n "src": "${ws.senders[0]}", "dest": "${dest}" }`;
    const again = await call('POST', '/v1/messaging/otp/request', { key: ws.key, raw, ...withKey(key) });
    expectReplay(first, again);
    assert.equal(await messages(dest), 1);

    const zdest = newDest();
    const zkey = newKey();
    const z1 = await call('POST', '/otp/send', { key: ws.key, body: { phone_number: zdest, app: 'Acme' }, ...withKey(zkey) });
    expectStatus(z1, 200);
    const z2 = await call('POST', '/otp/send', { key: ws.key, body: { app: 'Acme', phone_number: zdest }, ...withKey(zkey) });
    expectReplay(z1, z2);
    assert.equal(await messages(zdest), 1);
  });

  it('same key, other body or other route → 422 IDEMPOTENCY_KEY_REUSED, nothing sent', async () => {
    const ws = await newWorkspace({ policy: { reuse: false } });
    const dest = newDest();
    const other = newDest();
    const key = newKey();
    expectStatus(await ws.request(ws.body(dest), withKey(key)), 200);
    const res = await ws.request(ws.body(other), withKey(key));
    expectError(res, 422, 'IDEMPOTENCY_KEY_REUSED');
    assert.equal(replayed(res), null);
    expectError(await ws.request(ws.body(dest, { purpose: 'KYC_VERIFICATION' }), withKey(key)), 422, 'IDEMPOTENCY_KEY_REUSED');
    // The same key on the other dialect's route is another request.
    const z = await call('POST', '/otp/send', { key: ws.key, body: { phone_number: dest, app: 'Acme' }, ...withKey(key) });
    expectError(z, 422, 'IDEMPOTENCY_KEY_REUSED');
    assert.equal(await messages(other), 0);
    assert.equal(await messages(dest), 1);
  });

  it('keys are per workspace: another workspace with the same key and body runs its own request', async () => {
    const a = await newWorkspace({ policy: { reuse: false } });
    const b = await newWorkspace({ policy: { reuse: false }, senders: a.senders });
    const dest = newDest();
    const key = newKey();
    const ra = await a.request(a.body(dest), withKey(key));
    const rb = await b.request(b.body(dest), withKey(key));
    const ja = expectStatus(ra, 200);
    const jb = expectStatus(rb, 200);
    assert.equal(replayed(rb), null, 'not a replay of the other workspace\'s answer');
    assert.notEqual(ja.data.sessionId, jb.data.sessionId);
    assert.equal(await messages(dest), 2);
    expectReplay(rb, await b.request(b.body(dest), withKey(key)));
  });

  it('10 parallel requests with one key → one SMS and 10 identical answers (9 replays that waited for the first)', async () => {
    const ws = await newWorkspace({ policy: { reuse: false } });
    const dest = newDest();
    const key = newKey();
    const all = await Promise.all(Array.from({ length: 10 }, () => ws.request(ws.body(dest), withKey(key))));
    for (const r of all) expectStatus(r, 200, 'parallel request');
    assert.equal(new Set(all.map((r) => r.text)).size, 1, `identical bodies: ${all.map((r) => r.text).join('\n')}`);
    assert.equal(all.filter((r) => replayed(r) === 'true').length, 9, 'nine replays');
    assert.equal(await messages(dest), 1, 'exactly one SMS');
  });

  it('a 5xx (502 DELIVERY_FAILED) is not stored: a retry with the key runs again; its 200 is then replayed', async () => {
    const ws = await newWorkspace({ policy: { reuse: false } });
    const dest = newDest();
    const key = newKey();
    await H.sink.setMode(dest, 'fail500');
    const failed = await ws.request(ws.body(dest), withKey(key));
    expectError(failed, 502, 'DELIVERY_FAILED');
    assert.equal(replayed(failed), null);
    await H.sink.setMode(dest, 'ok');
    const retry = await ws.request(ws.body(dest), withKey(key));
    expectStatus(retry, 200, 'the retry ran');
    assert.equal(replayed(retry), null, 'not a replay of the 502');
    assert.equal(await messages(dest), 2, 'the retry reached the gateway');
    expectReplay(retry, await ws.request(ws.body(dest), withKey(key)));
    assert.equal(await messages(dest), 2);
  });

  it('a 4xx is stored: a 429 RATE_LIMITED is replayed (same body, Retry-After) and charges nothing more', async () => {
    const ws = await newWorkspace({ policy: { reuse: false, sendsPerDestination: { limit: 1, windowSeconds: 3600 } } });
    const dest = newDest();
    expectStatus(await ws.request(ws.body(dest)), 200);
    const key = newKey();
    const limited = await ws.request(ws.body(dest), withKey(key));
    expectError(limited, 429, 'RATE_LIMITED');
    assert.ok(limited.headers.get('retry-after'), 'Retry-After');
    expectReplay(limited, await ws.request(ws.body(dest), withKey(key)));
    assert.equal(await messages(dest), 1);
  });

  it('a malformed key → 400 VALIDATION_ERROR on the field Idempotency-Key, nothing sent', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    for (const bad of ['', 'a b', 'x'.repeat(256), 'clé']) {
      const res = await ws.request(ws.body(dest), withKey(bad));
      expectError(res, 400, 'VALIDATION_ERROR', { field: 'Idempotency-Key' });
    }
    expectError(
      await call('POST', '/otp/send', { key: ws.key, body: { phone_number: dest, app: 'Acme' }, ...withKey('a b') }),
      400,
      'VALIDATION_ERROR',
      { field: 'Idempotency-Key' },
    );
    assert.equal(await messages(dest), 0);
    // The longest and the widest keys are fine.
    expectStatus(await ws.request(ws.body(dest), withKey('~'.repeat(255))), 200);
    expectStatus(await ws.request(ws.body(newDest()), withKey('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~')), 200);
  });

  it('resend: the same key replays the first resend (one new code), another session with the key → 422', async (t) => {
    const ws = await newWorkspace({ policy: { reuse: false, resendAfterSeconds: 0 } });
    const dest = newDest();
    const s = await ws.issue(dest);
    const key = newKey();
    const first = await resendV1(ws, s.sessionId, {}, key);
    if (first.status === 404 && first.json?.error?.code === 'NOT_FOUND' && !first.json?.data) {
      t.skip('no resend route on this host yet');
      return;
    }
    expectStatus(first, 200, 'resend');
    assert.equal(await messages(dest), 2);
    expectReplay(first, await resendV1(ws, s.sessionId, {}, key));
    assert.equal(await messages(dest), 2, 'the replay sent nothing');
    const code = codeOf((await H.sink.messages(dest)).at(-1));
    expectVerify(await ws.verify(s.sessionId, code), 'APPROVED', s.sessionId, 4);
    // The route is part of the request: the key on another session's resend is another request.
    const other = await ws.issue(newDest());
    expectError(await resendV1(ws, other.sessionId, {}, key), 422, 'IDEMPOTENCY_KEY_REUSED');
  });

  it('Durable Object calls (Worker): a keyed new send costs 2 more (claim, finish); a replay or a 422 costs 1', async (t) => {
    const probe = await call('GET', '/health');
    if (probe.headers.get('x-otpkit-do-calls') == null) {
      t.skip(`HOST=${H.kind}: no x-otpkit-do-calls header (no Durable Objects, or tracing off)`);
      return;
    }
    const calls = (res) => Number(res.headers.get('x-otpkit-do-calls'));
    const ws = await newWorkspace({ policy: { reuse: false } });
    const dest = newDest();
    const key = newKey();
    const plain = await ws.request(ws.body(newDest()));
    const first = await ws.request(ws.body(dest), withKey(key));
    const again = await ws.request(ws.body(dest), withKey(key));
    const other = await ws.request(ws.body(newDest()), withKey(key));
    expectStatus(first, 200);
    expectReplay(first, again);
    expectError(other, 422, 'IDEMPOTENCY_KEY_REUSED');
    const seen = { plain: calls(plain), keyed: calls(first), replay: calls(again), mismatch: calls(other) };
    t.diagnostic(`Durable Object calls on the response path: ${JSON.stringify(seen)}`);
    assert.deepEqual(seen, { plain: seen.plain, keyed: seen.plain + 2, replay: 1, mismatch: 1 });
  });

  it('the key is stored only hashed (searched in the Worker\'s storage and in Redis)', async (t) => {
    if (!H.storeDir && !H.redisUrls.length) {
      t.skip(`HOST=${H.kind}: no store to search from here (memory: the key reaches the store only as its hash, see the flow traces)`);
      return;
    }
    const ws = await newWorkspace({ policy: { reuse: false } });
    const key = `clear-${randomUUID()}`;
    const res = await ws.request(ws.body(newDest()), withKey(key));
    const { sessionId } = expectStatus(res, 200).data;
    const texts = [];
    // Every Redis of the host: each node of a cluster holds its own slots' keys.
    if (H.redisUrls.length) {
      for (const url of H.redisUrls) {
        const Redis = createRequire(path.join(ROOT, 'napi-binding', 'package.json'))('ioredis');
        const redis = new Redis(url);
        try {
          const keys = await redis.keys('*');
          for (const k of keys) {
            texts.push(k);
            const type = await redis.type(k);
            if (type === 'string') texts.push(await redis.get(k));
            else if (type === 'list') texts.push(...(await redis.lrange(k, 0, -1)));
            else if (type === 'hash') texts.push(JSON.stringify(await redis.hgetall(k)));
            else if (type === 'zset') texts.push(...(await redis.zrange(k, 0, -1)));
          }
        } finally {
          redis.disconnect();
        }
      }
    } else {
      const walk = (dir) => {
        for (const name of readdirSync(dir)) {
          const p = path.join(dir, name);
          texts.push(name);
          if (statSync(p).isDirectory()) walk(p);
          else texts.push(readFileSync(p).toString('latin1'));
        }
      };
      walk(H.storeDir);
    }
    const all = texts.join('\n');
    // The search does find what the record holds (its fingerprint; the stored answer names the session)...
    assert.ok(all.includes('"fingerprint"') && all.includes(sessionId), 'the store was searched where the record lives');
    // ...and never the key.
    assert.ok(!all.includes(key), 'the Idempotency-Key appears in clear in the store');
  });
});
