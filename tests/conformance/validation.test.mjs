// Bad inputs: every validation error with its field, malformed/empty bodies, 415, 413, the order of
// checks, unknown routes. None of them may send an SMS or consume a verification attempt.

import { describe, it } from 'node:test';
import { randomInt } from 'node:crypto';
import {
  adminCreate, assert, call, expectError, expectStatus, expectVectorBody, expectVerify, H, newDest, newWorkspace,
  useHarness, wrongCode,
} from './lib.mjs';

useHarness();

const REQUEST = '/v1/messaging/otp/request';
const VERIFY = '/v1/messaging/otp/verify';

describe('request validation', () => {
  const dest = () => newDest();
  const cases = [
    ['dest missing', (b) => delete b.dest, 'dest', 'dest is required'],
    ['dest null', (b) => (b.dest = null), 'dest', 'dest is required'],
    ['dest a number', (b) => (b.dest = 233202007745), 'dest', 'dest must be a string'],
    ['dest without +', (b) => (b.dest = b.dest.slice(1)), 'dest'],
    ['dest starting with 0', (b) => (b.dest = '+0233202007745'), 'dest'],
    ['dest too short', (b) => (b.dest = '+1234567'), 'dest'],
    ['dest too long', (b) => (b.dest = '+1234567890123456'), 'dest'],
    ['dest with a letter', (b) => (b.dest = '+23320200774a'), 'dest'],
    ['dest with spaces', (b) => (b.dest = '+233 20 200 7745'), 'dest'],
    // One number, one spelling (issue 19): a trunk prefix after the calling code is refused.
    ['dest with a trunk 0 after the calling code', (b) => (b.dest = `+2330${b.dest.slice(4)}`), 'dest'],
    ['dest with two trunk 0s after the calling code', (b) => (b.dest = `+23300${b.dest.slice(6)}`), 'dest'],
    ['dest UK mobile with its trunk 0', (b) => (b.dest = `+4407${b.dest.slice(-9)}`), 'dest'],
    ['dest NANP number with its trunk 1', (b) => (b.dest = `+11202${b.dest.slice(-7)}`), 'dest'],
    ['src missing', (b) => delete b.src, 'src', 'src is required'],
    ['src not a string', (b) => (b.src = ['OTPKIT']), 'src', 'src must be a string'],
    ['src too long', (b) => (b.src = 'TooLongSender'), 'src'],
    ['src with a dash', (b) => (b.src = 'Bad-Name'), 'src'],
    ['src only spaces', (b) => (b.src = '   '), 'src'],
    ['src empty', (b) => (b.src = ''), 'src'],
    ['purpose missing', (b) => delete b.purpose, 'purpose', 'purpose is required'],
    ['purpose lower case', (b) => (b.purpose = 'login'), 'purpose'],
    ['purpose unknown', (b) => (b.purpose = 'SIGNUP'), 'purpose'],
    ['purpose not a string', (b) => (b.purpose = 1), 'purpose', 'purpose must be a string'],
    ['messageTemplate without {code}', (b) => (b.messageTemplate = 'Your code is ready'), 'messageTemplate'],
    ['messageTemplate with {code} twice', (b) => (b.messageTemplate = '{code} or {code}'), 'messageTemplate'],
    ['messageTemplate not a string', (b) => (b.messageTemplate = 5), 'messageTemplate', 'messageTemplate must be a string'],
    ['messageTemplate over 3 SMS segments', (b) => (b.messageTemplate = `{code} ${'x'.repeat(480)}`), 'messageTemplate'],
    // Text that reaches a phone (issue 19): no hidden characters, no decoy code.
    ['messageTemplate with BEL, ESC and CR', (b) => (b.messageTemplate = 'Code {code}\u0007\u001b[31m\r\nFake: 000000'), 'messageTemplate'],
    ['messageTemplate with a carriage return', (b) => (b.messageTemplate = 'Code {code}\r\nBye'), 'messageTemplate'],
    ['messageTemplate with a C1 control', (b) => (b.messageTemplate = 'Code {code}\u0085'), 'messageTemplate'],
    ['messageTemplate with a right-to-left override', (b) => (b.messageTemplate = '\u202e{code} edoc ruoY'), 'messageTemplate'],
    ['messageTemplate with a bidi isolate', (b) => (b.messageTemplate = 'Code \u2067{code}\u2069'), 'messageTemplate'],
    ['messageTemplate with a zero-width space', (b) => (b.messageTemplate = 'Co\u200bde {code}'), 'messageTemplate'],
    ['messageTemplate with a byte order mark', (b) => (b.messageTemplate = '\ufeff{code}'), 'messageTemplate'],
    ['messageTemplate with a decoy code', (b) => (b.messageTemplate = 'Code {code}. Old code: 000000'), 'messageTemplate'],
    ['messageTemplate with a decoy code in groups', (b) => (b.messageTemplate = '{code} or 123 456'), 'messageTemplate'],
    ['messageTemplate with a digit touching {code}', (b) => (b.messageTemplate = '{code}0 is your code'), 'messageTemplate'],
    ['app over 64 characters', (b) => (b.app = 'a'.repeat(65)), 'app'],
    ['app not a string', (b) => (b.app = 42), 'app', 'app must be a string'],
    ['app with a newline', (b) => (b.app = 'Acme\nPay'), 'app'],
    ['app with a right-to-left override', (b) => (b.app = '\u202eemcA'), 'app'],
    ['app with a zero-width joiner', (b) => (b.app = 'Ac\u200dme'), 'app'],
    ['channel unknown', (b) => (b.channel = 'email'), 'channel'],
    ['channel upper case', (b) => (b.channel = 'SMS'), 'channel'],
    ['channel not a string', (b) => (b.channel = true), 'channel', 'channel must be a string'],
  ];
  for (const [name, mutate, field, message] of cases) {
    it(`${name} → 400 VALIDATION_ERROR field ${field}`, async () => {
      const ws = await newWorkspace();
      const d = dest();
      const body = ws.body(d);
      mutate(body);
      const res = await ws.request(body);
      expectError(res, 400, 'VALIDATION_ERROR', { field, message });
      assert.equal((await H.sink.messages(d)).length, 0, 'no SMS');
    });
  }

  it('the missing dest body is byte for byte the vector', async () => {
    const ws = await newWorkspace();
    expectVectorBody(await ws.request({ src: 'ZECKTA', purpose: 'LOGIN' }), '400 missing dest');
  });

  it('app of exactly 64 characters is accepted', async () => {
    const ws = await newWorkspace();
    const { sessionId } = await ws.issue(newDest(), { app: 'é'.repeat(64) });
    const st = expectStatus(await ws.status(sessionId), 200);
    assert.equal(st.data.app, 'é'.repeat(64));
  });

  it('one number, one spelling: +233…, +2330… and +23300… do not get three send windows', async () => {
    const ws = await newWorkspace({ policy: { sendsPerDestination: { limit: 1, windowSeconds: 600 }, reuse: false } });
    const d = `+23320${String(randomInt(0, 10_000_000)).padStart(7, '0')}`;
    await ws.issue(d);
    for (const spelling of [`+2330${d.slice(4)}`, `+23300${d.slice(4)}`]) {
      const res = await ws.request(ws.body(spelling));
      const j = expectError(res, 400, 'VALIDATION_ERROR', { field: 'dest' });
      assert.match(j.message, /trunk 0 after the country code \(\+233 0… is written \+233 …\)/, res.text);
      assert.equal((await H.sink.messages(spelling)).length, 0, `no SMS to ${spelling}`);
    }
    assert.equal((await H.sink.messages(d)).length, 1);
  });

  it('numbers whose plan keeps the 0 after the calling code are accepted (Italy, Côte d\'Ivoire, Congo, Benin)', async () => {
    const ws = await newWorkspace();
    const r = (n) => String(randomInt(0, 10 ** n)).padStart(n, '0');
    for (const d of [`+3902${r(8)}`, `+22507${r(8)}`, `+24206${r(7)}`, `+22901${r(8)}`]) {
      const { message } = await ws.issue(d);
      assert.equal(message.to, d);
    }
  });

  it('a template with a newline and short numbers is sent as written', async () => {
    const ws = await newWorkspace();
    const d = newDest();
    const { message, code } = await ws.issue(d, { messageTemplate: 'Your code: {code}\nValid {minutes} min, 3 tries.', app: 'Shop 2024' });
    assert.equal(message.text, `Your code: ${code}\nValid 5 min, 3 tries.`);
  });

  it('an E.164 sender name that is allowed works as src', async () => {
    const ws = await newWorkspace({ senders: ['+12025550123'] });
    const { message } = await ws.issue(newDest());
    assert.equal(message.body.from, '+12025550123');
  });
});

describe('second dialect and policy: the same rules', () => {
  it('/otp/send: phone_number with a trunk 0 → 400 field phone_number, no SMS', async () => {
    const ws = await newWorkspace();
    const d = `+2330${newDest().slice(4)}`;
    const res = await ws.zendSend({ phone_number: d, app: 'shop' });
    expectError(res, 400, 'VALIDATION_ERROR', { field: 'phone_number' });
    assert.equal((await H.sink.messages(d)).length, 0);
  });

  it('/otp/send: app with a right-to-left override → 400 field app, no SMS', async () => {
    const ws = await newWorkspace();
    const d = newDest();
    const res = await ws.zendSend({ phone_number: d, app: 'shop\u202e' });
    expectError(res, 400, 'VALIDATION_ERROR', { field: 'app' });
    assert.equal((await H.sink.messages(d)).length, 0);
  });

  it('policy.testNumbers with a trunk 0 → 400 field policy.testNumbers', async () => {
    const res = await adminCreate({ name: 'trunk', senders: ['ACME'], policy: { testNumbers: { '+2330202007745': '123456' } } });
    expectError(res, 400, 'VALIDATION_ERROR', { field: 'policy.testNumbers' });
  });
});

describe('bodies and content types', () => {
  it('malformed JSON → 400 without a field (exact body)', async () => {
    const ws = await newWorkspace();
    expectVectorBody(await call('POST', REQUEST, { key: ws.key, raw: '{"dest"' }), '400 malformed JSON has no field');
  });

  it('empty body, a JSON array, a JSON string → 400 VALIDATION_ERROR without a field', async () => {
    const ws = await newWorkspace();
    for (const raw of ['', '   ', '[1]', '"dest"', 'null']) {
      const res = await call('POST', REQUEST, { key: ws.key, raw });
      const j = expectError(res, 400, 'VALIDATION_ERROR');
      assert.equal(j.error.field, undefined, `no field for body ${JSON.stringify(raw)}: ${res.text}`);
    }
  });

  it('415 for a missing or non-JSON content type (exact body), on every JSON route', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    for (const route of [REQUEST, VERIFY, '/otp/send', '/otp/00000000-0000-4000-8000-000000000000/verify']) {
      for (const contentType of ['text/plain', 'application/x-www-form-urlencoded', null]) {
        const res = await call('POST', route, { key: ws.key, raw: JSON.stringify(ws.body(dest)), contentType });
        expectVectorBody(res, '415');
      }
    }
    assert.equal((await H.sink.messages(dest)).length, 0);
  });

  it('application/json with parameters and any case is JSON', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const res = await call('POST', REQUEST, { key: ws.key, raw: JSON.stringify(ws.body(dest)), contentType: 'Application/JSON; charset=utf-8' });
    expectStatus(res, 200);
  });

  it('413 over 16 KiB (exact body); 16 KiB exactly is read', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const big = JSON.stringify({ ...ws.body(dest), app: 'x'.repeat(16 * 1024) });
    expectVectorBody(await call('POST', REQUEST, { key: ws.key, raw: big }), '413');
    // A body of exactly 16384 bytes (JSON padded with whitespace) passes the size check.
    const base = JSON.stringify(ws.body(dest));
    const exact = base + ' '.repeat(16 * 1024 - base.length);
    assert.equal(Buffer.byteLength(exact), 16 * 1024);
    const res = await call('POST', REQUEST, { key: ws.key, raw: exact });
    assert.notEqual(res.status, 413, `16 KiB exactly is allowed: ${res.text}`);
    expectStatus(res, 200);
    assert.equal((await H.sink.messages(dest)).length, 1);
  });

  it('order of checks: 401 before 415 before 413 before 400', async () => {
    const ws = await newWorkspace();
    const big = `{"dest":${'1'.repeat(17 * 1024)}`; // too large and malformed
    expectVectorBody(await call('POST', REQUEST, { raw: big, contentType: 'text/plain' }), '401');
    expectVectorBody(await call('POST', REQUEST, { key: ws.key, raw: big, contentType: 'text/plain' }), '415');
    expectVectorBody(await call('POST', REQUEST, { key: ws.key, raw: big }), '413');
    expectVectorBody(await call('POST', REQUEST, { key: ws.key, raw: '{"dest"' }), '400 malformed JSON has no field');
  });

  it('unknown routes → 404 NOT_FOUND', async () => {
    const ws = await newWorkspace();
    for (const [method, route] of [
      ['GET', '/v1/nope'],
      ['POST', '/v1/messaging/otp/requests'],
      ['GET', '/'],
      ['POST', '/v2/messaging/otp/request'],
      ['GET', '/otp/x/y/z'],
    ]) {
      const res = await call(method, route, { key: ws.key, ...(method === 'POST' ? { body: {} } : {}) });
      expectError(res, 404, 'NOT_FOUND');
    }
  });

  it('a known route with the wrong method is refused (405 or 404), never served', async () => {
    const ws = await newWorkspace();
    const res = await call('GET', REQUEST, { key: ws.key });
    assert.ok([404, 405].includes(res.status), `GET ${REQUEST}: ${res.status} ${res.text}`);
    assert.equal(res.json?.success, false);
  });
});

describe('verify validation (no attempt consumed)', () => {
  const cases = [
    ['sessionId missing', (b) => delete b.sessionId, 'sessionId', 'sessionId is required'],
    ['sessionId a number', (b) => (b.sessionId = 12), 'sessionId', 'sessionId must be a string'],
    ['code missing', (b) => delete b.code, 'code', 'code is required'],
    ['code a number', (b) => (b.code = Number(b.code)), 'code', 'code must be a string'],
    ['code with a letter', (b) => (b.code = `${b.code.slice(0, 5)}a`), 'code'],
    ['code too short (3 digits)', (b) => (b.code = '123'), 'code'],
    ['code too long (11 digits)', (b) => (b.code = '12345678901'), 'code'],
    ['code with spaces', (b) => (b.code = ` ${b.code}`), 'code'],
    ['code empty', (b) => (b.code = ''), 'code'],
  ];
  for (const [name, mutate, field, message] of cases) {
    it(`${name} → 400 VALIDATION_ERROR field ${field}, and the session keeps its attempts`, async () => {
      const ws = await newWorkspace();
      const s = await ws.issue(newDest());
      const body = { sessionId: s.sessionId, code: s.code };
      mutate(body);
      expectError(await call('POST', VERIFY, { key: ws.key, body }), 400, 'VALIDATION_ERROR', { field, message });
      const st = expectStatus(await ws.status(s.sessionId), 200);
      assert.equal(st.data.attemptsUsed, 0, 'no attempt consumed');
      expectVerify(await ws.verify(s.sessionId, wrongCode(s.code)), 'INVALID', s.sessionId, 4);
    });
  }

  it('code 1 (a number) → the vector body', async () => {
    const ws = await newWorkspace();
    expectVectorBody(await call('POST', VERIFY, { key: ws.key, raw: '{"sessionId":"x","code":1}' }), '400 code not a string');
  });

  it('a well-formed code of the wrong length is simply wrong (INVALID, attempt consumed)', async () => {
    const ws = await newWorkspace();
    const s = await ws.issue(newDest());
    expectVerify(await ws.verify(s.sessionId, '1234'), 'INVALID', s.sessionId, 4);
    expectVerify(await ws.verify(s.sessionId, '1234567890'), 'INVALID', s.sessionId, 3);
    expectVerify(await ws.verify(s.sessionId, s.code), 'APPROVED', s.sessionId, 2);
  });

  it('malformed JSON on verify → 400 without a field', async () => {
    const ws = await newWorkspace();
    const res = await call('POST', VERIFY, { key: ws.key, raw: '{"sessionId":' });
    const j = expectError(res, 400, 'VALIDATION_ERROR', { message: 'request body is not valid JSON' });
    assert.equal(j.error.field, undefined);
  });
});
