'use strict';
// otpkit/client (napi-binding/client/): the typed HTTP client, against a real `otpkit serve`
// (bin/otpkit.js) whose SMS go to the conformance suite's sink.
//  - it agrees with the spec: client/schema.d.ts is byte for byte what openapi-typescript makes of
//    core/openapi.yaml (scripts/gen-client --check), and the hand-written client type-checks
//    against it without Node's types (tsc -p client/check, lib DOM and lib WebWorker)
//  - importing it loads no native addon and no Node built-in
//  - request → code from the sink → verify, status, resend, cancel, audit; both dialects; errors
//    with a stable code (INVALID, NOT_FOUND, UNAUTHORIZED, VALIDATION_ERROR, RESEND_TOO_SOON +
//    retryAfter); a custom fetch injected (the service-binding path)
//  - the same client bundled for a Worker (esbuild, platform neutral) and run in workerd
//    (Miniflare), calling otpkit serve through a service binding
// No code or API key is printed.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const { randomBytes } = require('node:crypto');
const path = require('node:path');
const { ROOT, PEPPER, startSink, codeOf, newDest, serve } = require('./helpers');

const PKG = path.join(ROOT, 'napi-binding');
const { createClient, OtpkitHttpError } = require('otpkit/client'); // the package's own exports map

/** Runs a command; its output is shown only when it fails. */
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', ...opts });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** The rejection of `promise`, which must be an OtpkitHttpError. */
async function httpError(promise) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof OtpkitHttpError, `an OtpkitHttpError, not ${e}`);
    assert.equal(e.name, 'OtpkitHttpError');
    return e;
  }
  assert.fail('expected a rejection');
}

describe('otpkit/client agrees with core/openapi.yaml', () => {
  it('client/schema.d.ts is what openapi-typescript makes of core/openapi.yaml (scripts/gen-client --check)', () => {
    run('bash', [path.join(ROOT, 'scripts', 'gen-client'), '--check']);
  });

  it('the hand-written client type-checks against it without Node types (lib DOM, then WebWorker)', () => {
    const tsc = path.join(PKG, 'node_modules', '.bin', 'tsc');
    run(tsc, ['-p', path.join(PKG, 'client', 'check')]);
    run(tsc, ['-p', path.join(PKG, 'client', 'check'), '--lib', 'ES2022,WebWorker']);
  });

  it('require and import of otpkit/client load no native addon and no Node built-in', () => {
    // In a fresh process: every module load is recorded, and process.dlopen (how a .node file
    // is loaded) throws.
    const probe = (load) => `
      const Module = require('node:module');
      const loads = [];
      const orig = Module._load;
      Module._load = function (request, parent, isMain) {
        if (parent && parent.filename) loads.push([request, parent.filename]);
        return orig.apply(this, arguments);
      };
      process.dlopen = () => { throw new Error('a native addon was loaded'); };
      (async () => {
        const m = await ${load};
        if (typeof m.createClient !== 'function' || typeof m.OtpkitHttpError !== 'function') throw new Error('exports');
        const files = Object.keys(require.cache);
        const own = files.filter((f) => f.startsWith(${JSON.stringify(PKG + path.sep)}) && !f.includes('node_modules'));
        const builtins = loads.filter(([r, p]) => (Module.isBuiltin(r)) && !p.endsWith('[eval]') && !p.includes('[eval'));
        console.log(JSON.stringify({ own, builtins, natives: files.filter((f) => f.endsWith('.node')) }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    for (const load of ["require('otpkit/client')", "import('otpkit/client')"]) {
      const r = run(process.execPath, ['-e', probe(load)], { cwd: PKG });
      const { own, builtins, natives } = JSON.parse(r.stdout.trim().split('\n').pop());
      assert.deepEqual(natives, [], `${load}: no .node file`);
      assert.deepEqual(builtins, [], `${load}: no Node built-in`);
      assert.ok(own.every((f) => f.includes(`${path.sep}client${path.sep}`)), `${load} loads only client/: ${own.join(', ')}`);
    }
    // And in the source: what client/ and openapi-fetch import or require is each other, nothing else.
    const fs = require('node:fs');
    const sources = ['client/index.js', 'client/index.mjs', 'node_modules/openapi-fetch/dist/index.cjs', 'node_modules/openapi-fetch/dist/index.mjs'];
    for (const file of sources) {
      const text = fs.readFileSync(path.join(PKG, file), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, ''); // code, not comments (JSDoc types)
      const specs = [...text.matchAll(/(?:require\(\s*|\bfrom\s+|\bimport\s*\(\s*|^import\s+)['"]([^'"]+)['"]/gm)].map((m) => m[1]);
      assert.ok(specs.every((s) => s === 'openapi-fetch' || s === './index.js'), `${file} imports only the client: ${specs}`);
    }
  });
});

describe('otpkit/client against otpkit serve', () => {
  let sink;
  let srv;
  let apiKey;
  let otp;
  const admin = randomBytes(16).toString('hex');

  /** The code of the last SMS the sink received for `dest`. */
  const lastCode = async (dest) => {
    const msgs = await sink.messages(dest);
    assert.ok(msgs.length > 0, 'an SMS reached the sink');
    return codeOf(msgs[msgs.length - 1].text);
  };
  const wrongOf = (code) => (code === '000000' ? '111111' : '000000');

  before(async () => {
    sink = await startSink();
    srv = await serve({
      OTP_PEPPER: PEPPER,
      ADMIN_TOKEN: admin,
      SMS_GATEWAY_URL: sink.gatewayUrl,
      SMS_GATEWAY_TOKEN: 'sink-token',
    });
    // The admin route through the typed raw client, with the ADMIN_TOKEN as the key.
    const operator = createClient({ baseUrl: srv.base, apiKey: admin });
    const { data, error, response } = await operator.raw.POST('/v1/admin/workspaces', {
      body: { name: 'client', senders: ['Acme'], policy: { resendAfterSeconds: 30 } },
    });
    assert.equal(response.status, 201, JSON.stringify(error));
    apiKey = data.data.apiKey;
    otp = createClient({ baseUrl: srv.base, apiKey });
  });

  after(async () => {
    await srv?.stop();
    await sink?.stop();
  });

  it('request → the code from the sink → verify APPROVED; status; a second verify ALREADY_USED', async () => {
    const dest = newDest();
    const sent = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN', app: 'shop' });
    assert.equal(sent.reused, false);
    assert.equal(sent.attemptsLeft, 5);
    assert.match(sent.sessionId, /^[0-9a-f-]{36}$/);
    const again = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
    assert.equal(again.reused, true, 'an active session is reused');
    assert.equal(again.sessionId, sent.sessionId);

    const before = await otp.status(sent.sessionId);
    assert.equal(before.state, 'PENDING');
    assert.equal(before.app, 'shop');
    assert.ok(before.dest.includes('*'), 'masked destination');

    const code = await lastCode(dest);
    const wrong = await httpError(otp.verify({ sessionId: sent.sessionId, code: wrongOf(code) }));
    assert.equal(wrong.status, 400);
    assert.equal(wrong.code, 'INVALID');
    assert.equal(wrong.attemptsLeft, 4);

    const ok = await otp.verify({ sessionId: sent.sessionId, code });
    assert.deepEqual(
      { status: ok.status, verified: ok.verified, attemptsLeft: ok.attemptsLeft, sessionId: ok.sessionId },
      { status: 'APPROVED', verified: true, attemptsLeft: 3, sessionId: sent.sessionId },
    );
    const st = await otp.status(sent.sessionId);
    assert.equal(st.state, 'APPROVED');
    assert.equal(st.attemptsUsed, 2);
    assert.ok(st.verifiedAt);

    const used = await httpError(otp.verify({ sessionId: sent.sessionId, code }));
    assert.deepEqual([used.status, used.code], [409, 'ALREADY_USED']);

    const page = await otp.audit({ sessionId: sent.sessionId, limit: 10 });
    assert.ok(Array.isArray(page.events));
  });

  it('verify by destination; errors with a stable code: NOT_FOUND, VALIDATION_ERROR + field, UNAUTHORIZED', async () => {
    const dest = newDest();
    const sent = await otp.request({ dest, src: 'Acme', purpose: 'PASSWORD_RESET' });
    const r = await otp.verify({ dest, purpose: 'PASSWORD_RESET', code: await lastCode(dest) });
    assert.equal(r.status, 'APPROVED');
    assert.equal(r.sessionId, sent.sessionId);

    const unknown = '00000000-0000-4000-8000-000000000000';
    const nf = await httpError(otp.verify({ sessionId: unknown, code: '123456' }));
    assert.deepEqual([nf.status, nf.code, nf.attemptsLeft], [404, 'NOT_FOUND', 0]);
    const nfStatus = await httpError(otp.status(unknown));
    assert.deepEqual([nfStatus.status, nfStatus.code], [404, 'NOT_FOUND']);

    const bad = await httpError(otp.request({ dest: 'not a number', src: 'Acme', purpose: 'LOGIN' }));
    assert.deepEqual([bad.status, bad.code, bad.field], [400, 'VALIDATION_ERROR', 'dest']);
    const sender = await httpError(otp.request({ dest: newDest(), src: 'Other', purpose: 'LOGIN' }));
    assert.deepEqual([sender.status, sender.code], [403, 'SENDER_NOT_ALLOWED']);

    const stranger = createClient({ baseUrl: srv.base, apiKey: 'otpk_not_a_key' });
    const unauth = await httpError(stranger.status(sent.sessionId));
    assert.deepEqual([unauth.status, unauth.code], [401, 'UNAUTHORIZED']);
    assert.ok(!unauth.message.includes('otpk_'), 'the key is not in the message');
  });

  it('resend (a new code, RESEND_TOO_SOON with retryAfter), cancel (CANCELED, then EXPIRED), idempotency', async () => {
    const dest = newDest();
    const key = `client-${randomBytes(4).toString('hex')}`;
    const sent = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' }, { idempotencyKey: key });
    const replay = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' }, { idempotencyKey: key });
    assert.deepEqual(replay, sent, 'the same Idempotency-Key answers the first answer again');
    const reusedKey = await httpError(otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' }, { idempotencyKey: key }));
    assert.deepEqual([reusedKey.status, reusedKey.code], [422, 'IDEMPOTENCY_KEY_REUSED']);

    const soon = await httpError(otp.resend(sent.sessionId));
    assert.deepEqual([soon.status, soon.code], [429, 'RESEND_TOO_SOON']);
    assert.ok(Number.isInteger(soon.retryAfter) && soon.retryAfter >= 1 && soon.retryAfter <= 30, `retryAfter ${soon.retryAfter}`);
    assert.equal(soon.retryAfter, soon.body.error.retryAfterSeconds);

    const canceled = await otp.cancel(sent.sessionId);
    assert.equal(canceled.state, 'CANCELED');
    const ended = await httpError(otp.verify({ sessionId: sent.sessionId, code: await lastCode(dest) }));
    assert.deepEqual([ended.status, ended.code], [410, 'EXPIRED']);
    const again = await httpError(otp.cancel(sent.sessionId));
    assert.deepEqual([again.status, again.code], [410, 'EXPIRED']);

    // A workspace whose resends are not spaced: resend sends a new code, the old one stops matching.
    const operator = createClient({ baseUrl: srv.base, apiKey: admin });
    const { data } = await operator.raw.POST('/v1/admin/workspaces', {
      body: { name: 'client-resend', senders: ['Acme'], policy: { resendAfterSeconds: 0 } },
    });
    const fast = createClient({ baseUrl: srv.base, apiKey: data.data.apiKey });
    const d2 = newDest();
    const s2 = await fast.request({ dest: d2, src: 'Acme', purpose: 'LOGIN' });
    const first = await lastCode(d2);
    const re = await fast.resend(s2.sessionId, { channel: 'sms' });
    assert.deepEqual([re.sessionId, re.reused, re.channel], [s2.sessionId, false, 'sms']);
    assert.equal((await sink.messages(d2)).length, 2);
    const second = await lastCode(d2);
    if (first !== second) {
      const old = await httpError(fast.verify({ sessionId: s2.sessionId, code: first }));
      assert.equal(old.code, 'INVALID');
    }
    assert.equal((await fast.verify({ sessionId: s2.sessionId, code: second })).status, 'APPROVED');
  });

  it('the second dialect (/otp/...): send, status, verify (INVALID then verified), resend, cancel, analytics', async () => {
    const phone = newDest();
    const sent = await otp.zend.send({ phone_number: phone, app: 'shop', expiry: 5 });
    assert.deepEqual([sent.status, sent.expiry_minutes, sent.app], ['sent', 5, 'shop']);
    assert.equal((await otp.zend.status(sent.id)).status, 'pending');
    const code = await lastCode(phone);
    const wrong = await httpError(otp.zend.verify(sent.id, { code: wrongOf(code) }));
    assert.deepEqual([wrong.status, wrong.code, wrong.attemptsLeft], [400, 'INVALID', 4]);
    const ok = await otp.zend.verify(sent.id, { code });
    assert.equal(ok.success, true);
    assert.ok(ok.verified_at);
    // The session of one dialect is the session of the other.
    assert.equal((await otp.status(sent.id)).state, 'APPROVED');
    const nf = await httpError(otp.zend.status('00000000-0000-4000-8000-000000000000'));
    assert.deepEqual([nf.status, nf.code], [404, 'NOT_FOUND']);
    const nfVerify = await httpError(otp.zend.verify('00000000-0000-4000-8000-000000000000', { code: '123456' }));
    assert.deepEqual([nfVerify.status, nfVerify.code], [404, 'NOT_FOUND']);

    const s2 = await otp.zend.send({ phone_number: newDest(), app: 'shop' });
    const soon = await httpError(otp.zend.resend(s2.id));
    assert.deepEqual([soon.status, soon.code], [429, 'RESEND_TOO_SOON']);
    assert.ok(soon.retryAfter >= 1);
    assert.equal((await otp.zend.cancel(s2.id)).status, 'expired');
    const report = await otp.zend.analytics({ app: 'shop', days: 7 });
    assert.equal(report.period_days, 7);
    assert.equal(typeof report.totals.sent, 'number');
  });

  it('a custom fetch (the service-binding path): every request goes through it, relative to any baseUrl host', async () => {
    // As a Worker's `env.OTPKIT.fetch.bind(env.OTPKIT)`: the binding gets a Request for a host
    // of the client's choosing and answers it; here it forwards to otpkit serve.
    const seen = [];
    const binding = {
      target: srv.base,
      async fetch(request) {
        assert.ok(request instanceof Request);
        seen.push(`${request.method} ${new URL(request.url).pathname}`);
        const url = new URL(request.url);
        return fetch(new Request(this.target + url.pathname + url.search, request));
      },
    };
    const viaBinding = createClient({ baseUrl: 'https://otpkit.internal', apiKey, fetch: binding.fetch.bind(binding) });
    const dest = newDest();
    const sent = await viaBinding.request({ dest, src: 'Acme', purpose: 'LOGIN' });
    const r = await viaBinding.verify({ sessionId: sent.sessionId, code: await lastCode(dest) });
    assert.equal(r.status, 'APPROVED');
    assert.equal((await viaBinding.status(sent.sessionId)).state, 'APPROVED');
    assert.deepEqual(seen, [
      'POST /v1/messaging/otp/request',
      'POST /v1/messaging/otp/verify',
      `GET /v1/messaging/otp/sessions/${sent.sessionId}`,
    ]);
    // The key went as Authorization: Bearer, with the JSON content type.
    const headers = [];
    const spy = createClient({
      baseUrl: 'https://otpkit.internal',
      apiKey,
      fetch: async (request) => {
        headers.push([request.headers.get('authorization') === `Bearer ${apiKey}`, request.headers.get('content-type')]);
        return binding.fetch(request);
      },
    });
    await spy.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
    assert.deepEqual(headers, [[true, 'application/json']]);
    // A network failure is the fetch's own error, not an OtpkitHttpError.
    const down = createClient({ baseUrl: 'https://otpkit.internal', apiKey, fetch: async () => { throw new TypeError('fetch failed'); } });
    await assert.rejects(down.status(sent.sessionId), (e) => e instanceof TypeError && !(e instanceof OtpkitHttpError));
  });

  it('in workerd (Miniflare): bundled for a Worker (esbuild, platform neutral: no Node built-ins), through a service binding', async () => {
    const esbuild = require(path.join(ROOT, 'node_modules', 'esbuild')); // root devDependencies (wrangler's, miniflare):
    const { Miniflare } = require(path.join(ROOT, 'node_modules', 'miniflare')); // scripts/bootstrap installs them
    const worker = `
      import { createClient, OtpkitHttpError } from 'otpkit/client';
      export default {
        async fetch(req, env) {
          const otp = createClient({ baseUrl: 'https://otpkit', apiKey: env.OTPKIT_API_KEY, fetch: env.OTPKIT.fetch.bind(env.OTPKIT) });
          const body = await req.json();
          try {
            if (new URL(req.url).pathname === '/login/code') {
              const { sessionId } = await otp.request({ dest: body.phone, src: 'Acme', purpose: 'LOGIN' });
              return Response.json({ sessionId, state: (await otp.status(sessionId)).state });
            }
            const r = await otp.verify({ sessionId: body.sessionId, code: body.code });
            return Response.json({ status: r.status });
          } catch (e) {
            if (e instanceof OtpkitHttpError) return Response.json({ code: e.code, attemptsLeft: e.attemptsLeft }, { status: e.status });
            throw e;
          }
        },
      };`;
    // What wrangler does (esbuild, the workerd/worker/browser conditions), with platform neutral:
    // a Node built-in anywhere in the client would not resolve.
    const built = await esbuild.build({
      stdin: { contents: worker, resolveDir: __dirname, sourcefile: 'worker.mjs' },
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      conditions: ['workerd', 'worker', 'browser'],
      mainFields: ['module', 'main'],
      write: false,
      logLevel: 'silent',
    });
    const mf = new Miniflare({
      modules: true,
      script: built.outputFiles[0].text,
      compatibilityDate: '2025-01-01',
      bindings: { OTPKIT_API_KEY: apiKey },
      serviceBindings: { OTPKIT: { external: { address: `127.0.0.1:${srv.port}`, http: {} } } },
    });
    try {
      const call = async (p, body) => {
        const r = await mf.dispatchFetch(`http://app${p}`, { method: 'POST', body: JSON.stringify(body) });
        return [r.status, await r.json()];
      };
      const phone = newDest();
      const [s1, sent] = await call('/login/code', { phone });
      assert.deepEqual([s1, sent.state], [200, 'PENDING']);
      const code = await lastCode(phone);
      assert.deepEqual(await call('/login/verify', { sessionId: sent.sessionId, code: wrongOf(code) }), [400, { code: 'INVALID', attemptsLeft: 4 }]);
      assert.deepEqual(await call('/login/verify', { sessionId: sent.sessionId, code }), [200, { status: 'APPROVED' }]);
      assert.equal((await otp.status(sent.sessionId)).state, 'APPROVED');
    } finally {
      await mf.dispose();
    }
  });

  it('options are checked when the client is made', () => {
    assert.throws(() => createClient({ apiKey: 'k' }), TypeError);
    assert.throws(() => createClient({ baseUrl: '/relative', apiKey: 'k' }), TypeError);
    assert.throws(() => createClient({ baseUrl: srv.base, apiKey: '' }), TypeError);
    assert.throws(() => createClient({ baseUrl: srv.base, apiKey: 'k', fetch: 'no' }), TypeError);
  });
});
