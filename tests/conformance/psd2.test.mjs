// SPEC §7 "PSD2 dynamic linking": with purpose TRANSACTION, amount + currency + payee bind the
// code to that payment: in its hash, in the message, in the status; a verify must carry the same
// three (the amount compared as a decimal), or it is INVALID and consumes an attempt.

import { describe, it } from 'node:test';
import {
  assert, call, codeOf, expectError, expectStatus, expectVerify, H, newDest, newWorkspace, useHarness,
} from './lib.mjs';

useHarness();

const PAYMENT = { amount: '10.50', currency: 'eur', payee: 'Acme Shop' };
const verify = (ws, body) => call('POST', '/v1/messaging/otp/verify', { key: ws.key, body });

async function pay(ws, dest, payment = PAYMENT, extra = {}) {
  const res = await ws.request(ws.body(dest, { purpose: 'TRANSACTION', ...payment, ...extra }));
  return expectStatus(res, 200, 'transaction request').data;
}

describe('PSD2 dynamic linking', () => {
  it('the message names the payment; the status shows it; only the same payment approves (amount as a decimal)', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const r = await pay(ws, dest);
    assert.equal(r.reused, false);
    const msgs = await H.sink.messages(dest);
    assert.equal(msgs.length, 1);
    const code = codeOf(msgs[0]);
    assert.equal(msgs[0].text, `${code} is your code to approve 10.50 EUR to Acme Shop. It expires in 5 minutes.`);
    const st = expectStatus(await ws.status(r.sessionId), 200).data;
    assert.deepEqual(st.transaction, { amount: '10.50', currency: 'EUR', payee: 'Acme Shop' });
    assert.equal(st.purpose, 'TRANSACTION');

    // The right code without the payment, or for another amount, currency or payee: INVALID, an attempt each.
    expectVerify(await verify(ws, { sessionId: r.sessionId, code }), 'INVALID', r.sessionId, 4);
    expectVerify(await verify(ws, { sessionId: r.sessionId, code, amount: '10.51', currency: 'EUR', payee: 'Acme Shop' }), 'INVALID', r.sessionId, 3);
    expectVerify(await verify(ws, { sessionId: r.sessionId, code, amount: '10.50', currency: 'USD', payee: 'Acme Shop' }), 'INVALID', r.sessionId, 2);
    expectVerify(await verify(ws, { sessionId: r.sessionId, code, amount: '10.50', currency: 'EUR', payee: 'Acme Shop.' }), 'INVALID', r.sessionId, 1);
    // The same payment, the amount written another way: APPROVED.
    expectVerify(await verify(ws, { sessionId: r.sessionId, code, amount: '10.5', currency: 'eur', payee: 'Acme Shop' }), 'APPROVED', r.sessionId, 0);
  });

  it('verify by destination with the payment; a code without a payment is not approved with one', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const r = await pay(ws, dest, { amount: '250', currency: 'GHS', payee: 'Kofi Ltd' });
    const code = codeOf((await H.sink.messages(dest))[0]);
    expectVerify(await verify(ws, { dest, purpose: 'TRANSACTION', code, amount: '250.00', currency: 'GHS', payee: 'Kofi Ltd' }), 'APPROVED', r.sessionId, 4);

    const login = await ws.issue(newDest());
    expectVerify(await verify(ws, { sessionId: login.sessionId, code: login.code, amount: '1', currency: 'EUR', payee: 'X' }), 'INVALID', login.sessionId, 4);
    expectVerify(await ws.verify(login.sessionId, login.code), 'APPROVED', login.sessionId, 3);
  });

  it('reuse: the same payment reuses the session; another payment gets a new code, and each approves only its own', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const a = await pay(ws, dest);
    const again = await pay(ws, dest, { ...PAYMENT, amount: '010.5' });
    assert.deepEqual([again.reused, again.sessionId], [true, a.sessionId]);
    assert.equal((await H.sink.messages(dest)).length, 1, 'no SMS for the same payment');
    const b = await pay(ws, dest, { ...PAYMENT, amount: '99' });
    assert.equal(b.reused, false);
    assert.notEqual(b.sessionId, a.sessionId);
    const msgs = await H.sink.messages(dest);
    assert.equal(msgs.length, 2);
    assert.match(msgs[1].text, /approve 99 EUR to Acme Shop/);
    const codeA = codeOf(msgs[0]);
    const codeB = codeOf(msgs[1]);
    const tx = (amount) => ({ amount, currency: 'EUR', payee: 'Acme Shop' });
    expectVerify(await verify(ws, { sessionId: b.sessionId, code: codeB, ...tx('10.50') }), 'INVALID', b.sessionId, 4);
    expectVerify(await verify(ws, { sessionId: b.sessionId, code: codeB, ...tx('99') }), 'APPROVED', b.sessionId, 3);
    expectVerify(await verify(ws, { sessionId: a.sessionId, code: codeA, ...tx('10.5') }), 'APPROVED', a.sessionId, 4);
  });

  it('a messageTemplate may place {amount}, {currency} and {payee}', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    await pay(ws, dest, PAYMENT, { messageTemplate: 'Pay {payee} {amount} {currency}? Code: {code}' });
    const m = (await H.sink.messages(dest))[0];
    assert.equal(m.text, `Pay Acme Shop 10.50 EUR? Code: ${codeOf(m)}`);
  });

  it('all three or none, each checked, TRANSACTION only → 400 naming the field; nothing sent', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const req = (extra) => ws.request(ws.body(dest, { purpose: 'TRANSACTION', ...PAYMENT, ...extra }));
    expectError(await req({ currency: undefined }), 400, 'VALIDATION_ERROR', { field: 'currency' });
    expectError(await req({ payee: undefined }), 400, 'VALIDATION_ERROR', { field: 'payee' });
    expectError(await req({ amount: undefined }), 400, 'VALIDATION_ERROR', { field: 'amount' });
    for (const amount of ['1e3', '-1', '1.23456', '1,5', '1234567890123456789', '']) {
      expectError(await req({ amount }), 400, 'VALIDATION_ERROR', { field: 'amount' });
    }
    expectError(await req({ currency: 'EURO' }), 400, 'VALIDATION_ERROR', { field: 'currency' });
    expectError(await req({ payee: 'Acme\u202eShop' }), 400, 'VALIDATION_ERROR', { field: 'payee' });
    expectError(await req({ payee: 'x'.repeat(65) }), 400, 'VALIDATION_ERROR', { field: 'payee' });
    expectError(await req({ purpose: 'LOGIN' }), 400, 'VALIDATION_ERROR', { field: 'purpose' });
    assert.equal((await H.sink.messages(dest)).length, 0);
  });
});
