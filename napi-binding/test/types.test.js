'use strict';
// index.d.ts checked against what the Rust core really answers: every operation of the library
// is called (memory store and Redis, a JavaScript gateway), each answer is written into a
// TypeScript file as an object literal typed with the interface index.d.ts promises for it,
// and the TypeScript compiler (the package's own devDependency) type-checks that file strictly.
// A field the core answers but index.d.ts does not declare (excess property), a declared field
// the core leaves out, or a value of another type fails the test with the compiler's message.
// A deliberately wrong answer must fail the same check (the check can fail).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const ts = require('typescript');
const { OtpService, RedisStore, MemoryStore } = require('..');
const { PEPPER, startRedis, codeOf, newDest, recorder } = require('./helpers');

const INDEX = path.join(__dirname, '..', 'index');

/**
 * Type-checks `samples` ([type, value, label]) against index.d.ts: the compiler's messages
 * (none when every value is what its type says).
 */
function typeErrors(samples) {
  const lines = [`import type * as otp from ${JSON.stringify(INDEX)};`];
  samples.forEach(([type, value, label], i) => {
    lines.push(`// ${label}`);
    lines.push(`export const v${i}: ${type} = ${JSON.stringify(value, null, 1)};`);
  });
  const file = path.join(__dirname, '..', '__types_check__.ts');
  const text = lines.join('\n');
  const options = { strict: true, noEmit: true, exactOptionalPropertyTypes: true, skipLibCheck: false, types: ['node'], target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS };
  const host = ts.createCompilerHost(options);
  const read = host.readFile.bind(host);
  host.readFile = (f) => (path.resolve(f) === file ? text : read(f));
  const exists = host.fileExists.bind(host);
  host.fileExists = (f) => path.resolve(f) === file || exists(f);
  const getSource = host.getSourceFile.bind(host);
  host.getSourceFile = (f, lang, ...rest) =>
    path.resolve(f) === file ? ts.createSourceFile(f, text, lang) : getSource(f, lang, ...rest);
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const where = d.file && d.start != null ? d.file.getLineAndCharacterOfPosition(d.start) : null;
    const at = where ? `${path.basename(d.file.fileName)}:${where.line + 1}` : '';
    const label = where && d.file.fileName.endsWith('__types_check__.ts') ? lineLabel(text, where.line) : '';
    return `${at} ${label} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
}

/** The `// label` comment above line `n` of the generated file. */
function lineLabel(text, n) {
  const lines = text.split('\n');
  for (let i = n; i >= 0; i--) if (lines[i].startsWith('// ')) return `(${lines[i].slice(3)})`;
  return '';
}

/**
 * Every operation of the library, once or more, each answer with its index.d.ts type (`sent`:
 * what its gateway was given, for the code).
 */
async function answers(otp, sent) {
  const samples = [];
  // Each answer has the type its method is declared to resolve to.
  const add = (method, value, label, of = 'OtpService') =>
    samples.push([`Awaited<ReturnType<otp.${of}['${method}']>>`, value, label]);
  const dest = newDest();
  const r = await otp.request({ dest, src: 'ACME', purpose: 'LOGIN', app: 'shop' });
  add('request', r, 'request');
  add('request', await otp.request({ dest, src: 'ACME', purpose: 'LOGIN' }), 'request reused');
  const code = codeOf(sent.at(-1).text);
  const wrong = String((Number(code[0]) + 1) % 10) + code.slice(1);
  add('verify', await otp.verify({ sessionId: r.sessionId, code: wrong }), 'verify INVALID');
  add('status', await otp.status(r.sessionId), 'status pending');
  add('verify', await otp.verify({ sessionId: r.sessionId, code }), 'verify APPROVED');
  add('verify', await otp.verify({ sessionId: r.sessionId, code }), 'verify ALREADY_USED');
  add('status', await otp.status(r.sessionId), 'status approved');
  add('verify', await otp.verify({ dest: newDest(), purpose: 'LOGIN', code: '123456' }), 'verify by destination, none');
  const unknown = '00000000-0000-4000-8000-000000000000';
  add('verify', await otp.verify({ sessionId: unknown, code: '123456' }), 'verify NOT_FOUND');
  add('status', await otp.status(unknown), 'status unknown');

  const tx = await otp.request({ dest: newDest(), src: 'ACME', purpose: 'TRANSACTION', amount: '10.50', currency: 'EUR', payee: 'Shop' });
  add('status', await otp.status(tx.sessionId), 'status with a payment');
  add('resend', await otp.resend(tx.sessionId), 'resend');
  add('cancel', await otp.cancel(tx.sessionId), 'cancel');

  add('audit', await otp.audit({ limit: 50 }), 'audit');
  add('analytics', await otp.analytics(), 'analytics');
  add('analytics', await otp.analytics({ app: 'shop', days: 2 }), 'analytics of one app');

  // Priced in another currency than the library's workspace: the admin report's costs are null.
  const policy = { pricePerSegment: { amount: '0.05', currency: 'EUR' } };
  const ws = await otp.createWorkspace({ name: 'Types', senders: ['ACME'], policy });
  add('createWorkspace', ws, 'createWorkspace');
  add('createKey', await otp.createKey(ws.workspaceId), 'createKey');
  add('getWorkspace', await otp.getWorkspace(ws.workspaceId), 'getWorkspace');
  add('listWorkspaces', await otp.listWorkspaces({ limit: 5 }), 'listWorkspaces');
  add('getFraud', await otp.getFraud(ws.workspaceId), 'getFraud');
  const scoped = otp.forWorkspace(ws.workspaceId);
  add('request', await scoped.request({ dest: newDest(), src: 'ACME', purpose: 'DEVICE_VERIFICATION' }), 'forWorkspace request', 'WorkspaceOps');
  add('status', await scoped.status(unknown), 'forWorkspace status', 'WorkspaceOps');
  add('audit', await scoped.audit(), 'forWorkspace audit', 'WorkspaceOps');
  add('adminAnalytics', await otp.adminAnalytics(), 'adminAnalytics');
  await otp.settle();
  return samples;
}

describe('index.d.ts against the answers of the Rust core', () => {
  let redis;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
  });

  for (const kind of ['memory', 'redis']) {
    it(`${kind} store: every operation's answer is the type index.d.ts declares`, async () => {
      const store = kind === 'memory' ? new MemoryStore() : new RedisStore({ url: redis.url });
      if (kind === 'redis') await store.connect();
      const gateway = recorder();
      const otp = new OtpService({ pepper: PEPPER, gateway, store, policy: { resendAfterSeconds: 0 } });
      try {
        const samples = await answers(otp, gateway.sent);
        assert.ok(samples.length >= 20, `${samples.length} answers`);
        assert.deepEqual(typeErrors(samples), []);
      } finally {
        await otp.close();
      }
    });
  }

  it('the check fails on an answer index.d.ts does not describe', () => {
    const good = { sessionId: '00000000-0000-4000-8000-000000000000', expiresInSeconds: 300, attemptsLeft: 5, reused: false, channel: 'sms' };
    assert.deepEqual(typeErrors([['otp.RequestResult', good, 'as declared']]), []);
    const cases = [
      [{ ...good, extra: 1 }, /extra/],
      [{ ...good, reused: 'no' }, /boolean/],
      [{ ...good, channel: 'fax' }, /fax/],
      [(({ attemptsLeft, ...rest }) => rest)(good), /attemptsLeft/],
    ];
    for (const [value, message] of cases) {
      const errors = typeErrors([['otp.RequestResult', value, 'wrong']]);
      assert.equal(errors.length, 1, JSON.stringify(value));
      assert.match(errors[0], message);
    }
  });
});
