#!/usr/bin/env node
// A hand-written battery of hostile HTTP requests against one running otpkit host: wrong types
// for every field, huge and odd numbers, unicode and control characters, 1 MB and 10 MB bodies,
// duplicate keys, missing/odd content types, deep nesting, truncated and slowly dribbled bodies,
// path traversal / encoded slashes / overlong ids, odd queries and methods — on every route of
// both dialects and the admin API.
//
// Every answer must be: below 500; a 4xx with SPEC's envelope (error.code, or the verify
// envelopes) when it is a 4xx; a 4xx where the input is certainly invalid; JSON when 2xx; within
// a time bound; and no response may contain a code the sink saw.
//
//   node tests/robustness/battery.mjs --control <harness control URL>   (tests/conformance/harness.mjs)
//   node tests/robustness/battery.mjs --base-url URL --admin-token T [--sink-url URL]
//   options: --label NAME  --json FILE (figures)  --quick (fewer values per field)  --concurrency N
//            --runtime workerd (recognise the local Worker runtime's own answers; see RUNTIME)
//
// Prints progress per group, then one figures line; exits 1 on any failure. Never prints a code,
// an API key or the admin token.

import { randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { rawRequest } from './rawhttp.mjs';

// ---------------------------------------------------------------------------------------------
// Arguments and host

const args = process.argv.slice(2);
const opt = (name, dflt = null) => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? dflt : args[i + 1];
};
const flag = (name) => args.includes(`--${name}`);

let baseUrl = opt('base-url');
let adminToken = opt('admin-token') || process.env.ADMIN_TOKEN || null;
let sinkUrl = opt('sink-url');
const control = opt('control');
if (control) {
  const info = await (await fetch(`${control.replace(/\/+$/, '')}/info`)).json();
  baseUrl = info.baseUrl;
  adminToken = info.adminToken;
  sinkUrl = info.sinkUrl;
}
if (!baseUrl || !adminToken) {
  console.error('battery: give --control URL (a harness), or --base-url URL and --admin-token T (or ADMIN_TOKEN).');
  process.exit(2);
}
const label = opt('label', 'host');
const quick = flag('quick');
const concurrency = Number(opt('concurrency', '4'));
const TIMEOUT_MS = Number(opt('timeout-ms', '20000')); // per request, past its own sending time

const redact = (s) =>
  String(s)
    .replace(/otpk_[A-Za-z0-9_-]+/g, 'otpk_…')
    .split(adminToken)
    .join('<admin>');

// ---------------------------------------------------------------------------------------------
// Figures and checks

const fig = { requests: 0, fiveXX: 0, nonEnvelope4xx: 0, unexpected2xx: 0, hang: 0, noAnswer: 0, bad2xx: 0, leaked: 0, runtime: 0 };

// Answers the local Worker runtime gives before (or instead of) otpkit's code, recognised by their
// exact bodies and only for the inputs that cause them (--runtime workerd; scripts/robustness sets
// it for HOST=worker). They are counted apart, never as passes, and listed in the report:
//  - workerd's HTTP parser refuses a method token it does not know (FOO, lower-case get): 501.
//  - workerd cannot parse a request-target that is not origin-form (*, http://host/…): 500.
//  - wrangler dev's proxy worker answers 503 "Your worker restarted mid-request" when the client
//    cuts the body short (half-close), and at times when a body over 16 KiB is still arriving after
//    the Worker answered 413. The Worker itself, reached on workerd's own socket (bypassing the
//    proxy), answers 400 "request body could not be read" and 413 there: measured 30 of 30
//    (15 × 1 MB chunked, 15 × 10 MB) against 1 + 11 503s and 2 closed connections of 30 through
//    the proxy.
const RUNTIME = opt('runtime') === 'workerd'
  ? [
      { when: (c) => !/^(GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS|TRACE|CONNECT)$/.test(c.method), status: 501, body: 'ERROR: Unrecognized request method.' },
      { when: (c) => !c.path.startsWith('/'), status: 500, body: 'Internal Server Error' },
      { when: (c) => c.big, status: 503, body: 'Your worker restarted mid-request.' },
      // The same proxy sometimes closes the connection without an answer when a body over 16 KiB
      // is still arriving after the Worker answered 413 (workerd's own socket answers 413).
      { when: (c) => c.big, error: 'closed' },
    ]
  : [];
const runtimeSeen = new Map();
const failures = [];
const bodies = []; // every response body, for the code-leak check at the end

function fail(kind, c, res, detail = '') {
  fig[kind] += 1;
  if (failures.length < 400) {
    const body = res?.body ? redact(res.body.toString('utf8').slice(0, 300)) : '';
    failures.push(`${kind}: ${c.name} → ${res?.status ?? res?.error} ${detail} ${body}`.trim());
  }
}

const CODE_RE = /^[A-Z][A-Z0-9_]*$/;
const VERIFY_STATUSES = new Set(['INVALID', 'NOT_FOUND', 'ALREADY_USED', 'EXPIRED', 'MAX_ATTEMPTS_REACHED']);

/** SPEC's envelope of a 4xx: the error envelope, or (verify routes) the verify envelopes. */
function isEnvelope(status, j) {
  if (!j || typeof j !== 'object' || Array.isArray(j)) return false;
  if (j.success !== false || typeof j.message !== 'string') return false;
  if (j.error && typeof j.error === 'object' && typeof j.error.code === 'string' && CODE_RE.test(j.error.code)) {
    const keys = Object.keys(j).sort().join(',');
    return keys === 'error,message,success';
  }
  // v1 verify outcomes
  if (j.data && VERIFY_STATUSES.has(j.data.status) && j.data.verified === false) return true;
  // second-dialect verify outcomes and its missing session
  if ([400, 409, 410, 423].includes(status) && Number.isInteger(j.attempts_remaining)) return true;
  if (status === 404 && j.message === 'OTP session not found' && Object.keys(j).length === 2) return true;
  return false;
}

function judge(c, res) {
  fig.requests += 1;
  const rtClosed = res.status === undefined && RUNTIME.find((r) => r.error && r.when(c) && res.error === r.error);
  if (rtClosed) {
    fig.runtime += 1;
    runtimeSeen.set(`connection closed without an answer (${c.name.replace(/^.* (?=\S+ MB|16 KiB)/, '')})`, (runtimeSeen.get(`connection closed without an answer (${c.name.replace(/^.* (?=\S+ MB|16 KiB)/, '')})`) || 0) + 1);
    return undefined;
  }
  if (res.error && res.status === undefined) {
    if (res.error === 'timeout') return fail('hang', c, res, `no answer within ${c.bound} ms`);
    return fail('noAnswer', c, res, '(connection ended without an answer)');
  }
  if (res.error === 'timeout') return fail('hang', c, res, `answer incomplete after ${c.bound} ms`);
  const text = res.body.toString('utf8');
  bodies.push(text);
  const rt = RUNTIME.find((r) => r.status && r.when(c) && res.status === r.status && text.startsWith(r.body));
  if (rt) {
    fig.runtime += 1;
    runtimeSeen.set(`${res.status} ${rt.body}`, (runtimeSeen.get(`${res.status} ${rt.body}`) || 0) + 1);
    return undefined;
  }
  if (res.status >= 500) return fail('fiveXX', c, res);
  let j = null;
  try {
    j = text ? JSON.parse(text) : null;
  } catch {
    j = null;
  }
  if (res.status >= 400) {
    if (!isEnvelope(res.status, j)) return fail('nonEnvelope4xx', c, res);
    if (c.expectCode && j.error?.code !== c.expectCode) {
      return fail('nonEnvelope4xx', c, res, `(expected error.code ${c.expectCode})`);
    }
    return undefined;
  }
  if (c.must4xx) return fail('unexpected2xx', c, res, '(input is invalid: a 4xx was due)');
  if (res.status === 204) return undefined;
  if (res.status >= 200 && res.status < 300 && j === null) return fail('bad2xx', c, res, '(2xx body is not JSON)');
  if (res.status >= 300) return fail('unexpected2xx', c, res, '(3xx)');
  return undefined;
}

async function run(c) {
  const sendMs = c.chunks ? Math.ceil(((c.stopAfter ?? c.body.length) / c.chunks.size) * c.chunks.everyMs) : 0;
  c.bound = sendMs + (c.timeoutMs ?? TIMEOUT_MS);
  const res = await rawRequest(baseUrl, { ...c, timeoutMs: c.bound });
  c.after?.(res);
  judge(c, res);
  return res;
}

async function runAll(group, cases, parallel = concurrency) {
  const started = Date.now();
  const before = { ...fig };
  let next = 0;
  const worker = async () => {
    while (next < cases.length) await run(cases[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(parallel, cases.length) }, worker));
  const bad = Object.keys(fig).filter((k) => k !== 'requests' && k !== 'runtime').reduce((n, k) => n + fig[k] - before[k], 0);
  console.log(`battery[${label}]: ${group.padEnd(28)} ${String(cases.length).padStart(4)} requests, ${bad} failures (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

// ---------------------------------------------------------------------------------------------
// Plain JSON calls for setup (fetch)

async function api(method, path, { key, admin, body } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (key) headers['x-api-key'] = key;
  if (admin) headers.authorization = `Bearer ${adminToken}`;
  const r = await fetch(`${baseUrl}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  bodies.push(text);
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: r.status, json, text };
}

const usedDests = new Set();
function newDest() {
  for (;;) {
    const d = `+2336${String(randomInt(0, 1e9)).padStart(9, '0')}`;
    if (!usedDests.has(d)) {
      usedDests.add(d);
      return d;
    }
  }
}

async function newWorkspace(name) {
  const r = await api('POST', '/v1/admin/workspaces', { admin: true, body: { name, senders: ['OTPKIT', 'ACME'] } });
  if (r.status !== 201) throw new Error(`battery: could not create a workspace through the admin API (HTTP ${r.status}): ${redact(r.text)}`);
  return r.json.data;
}

// ---------------------------------------------------------------------------------------------
// Values

// Raw JSON fragments (not JSON.stringify'd: some are not even JSON).
const STRINGY = [
  ['NUL', '"a\\u0000b"'],
  ['raw control chars', '"\\u0001\\u001f\\u007f"'],
  ['RTL override', '"\\u202eKIPTO"'],
  ['emoji', '"\\ud83d\\ude00"'],
  ['lone high surrogate', '"\\ud800"'],
  ['lone low surrogate', '"\\udc00x"'],
  ['empty string', '""'],
  ['whitespace', '"   "'],
  ['overlong string (4 KB)', JSON.stringify('x'.repeat(4096))],
  ['zero-width + combining', '"\\u200b\\u0301\\ufeff"'],
];
const WRONG_TYPES = [
  ['null', 'null'],
  ['true', 'true'],
  ['zero', '0'],
  ['-0', '-0'],
  ['-1', '-1'],
  ['1e308', '1e308'],
  ['-1e308', '-1e308'],
  ['1e309 (overflows f64)', '1e309'],
  ['2^64', '18446744073709551616'],
  ['2^53+1', '9007199254740993'],
  ['fraction', '6.5'],
  ['array', '[]'],
  ['array of strings', '["a","b"]'],
  ['object', '{}'],
  ['nested object', '{"a":{"b":[1,{"c":null}]}}'],
  ['"NaN" text', '"NaN"'],
  ['"1e308" text', '"1e308"'],
  ['"2^64" text', '"18446744073709551616"'],
];
const NOT_JSON = [
  ['bare NaN', 'NaN'],
  ['bare Infinity', 'Infinity'],
  ['bare -Infinity', '-Infinity'],
  ['bare undefined', 'undefined'],
  ['hex number', '0x10'],
  ['leading +', '+1'],
  ['single-quoted', "'x'"],
];
const valuesFor = () => {
  const all = [...WRONG_TYPES, ...STRINGY, ...NOT_JSON];
  return quick ? all.filter((_, i) => i % 3 === 0) : all;
};
const jsonTypeOf = (frag) => {
  try {
    const v = JSON.parse(frag);
    if (v === null) return 'null';
    if (Array.isArray(v)) return 'array';
    if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
    return typeof v;
  } catch {
    return 'invalid';
  }
};

/** A JSON object text from [key, rawFragment] pairs (duplicates kept, as written). */
const objectText = (pairs) => `{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;

// ---------------------------------------------------------------------------------------------
// Routes

async function main() {
  const t0 = Date.now();
  console.log(`battery[${label}]: against ${baseUrl}${quick ? ' (quick)' : ''}; creating workspaces through the admin API`);
  const ws = await newWorkspace('robustness battery');
  const victim = await newWorkspace('robustness battery (admin target)');
  const KEY = ws.apiKey;
  const auth = [['x-api-key', KEY]];
  const adminAuth = [['authorization', `Bearer ${adminToken}`]];

  // One real session for the verify and status routes.
  const issued = await api('POST', '/v1/messaging/otp/request', {
    key: KEY,
    body: { dest: newDest(), src: 'OTPKIT', purpose: 'LOGIN' },
  });
  if (issued.status !== 200) throw new Error(`battery: a plain request failed (HTTP ${issued.status}): ${issued.text}`);
  const SID = issued.json.data.sessionId;

  const v1Request = () => [['dest', JSON.stringify(newDest())], ['src', '"OTPKIT"'], ['purpose', '"LOGIN"'], ['app', '"battery"'], ['channel', '"sms"'], ['messageTemplate', '"{code} is your code"']];
  const zendSend = () => [['phone_number', JSON.stringify(newDest())], ['app', '"battery"'], ['channel', '"sms"'], ['expiry', '5'], ['length', '6'], ['purpose', '"LOGIN"']];
  const v1Verify = () => [['sessionId', JSON.stringify(SID)], ['code', '"000000"']];
  const zendVerify = () => [['code', '"000000"']];
  const createWs = () => [['name', '"battery ws"'], ['senders', '["OTPKIT"]'], ['policy', '{"codeLength":6}']];
  const patchWs = () => [['senders', '["OTPKIT","ACME"]'], ['policy', '{"ttlSeconds":300}']];
  const POLICY_KEYS = ['codeLength', 'ttlSeconds', 'maxAttempts', 'reuse', 'sendsPerDestination', 'sendsPerWorkspacePerMinute', 'failureStreakLimit', 'allowedCountries', 'testNumbers', 'pricePerSegment', 'retentionSeconds'];

  // Field types, for "certainly invalid": a non-null value of another JSON type.
  const TYPES = {
    dest: 'string', src: 'string', purpose: 'string', app: 'string', channel: 'string', messageTemplate: 'string',
    phone_number: 'string', expiry: 'integer', length: 'integer', sessionId: 'string', code: 'string',
    name: 'string', senders: 'array', policy: 'object',
  };

  const bodyRoutes = [
    { name: 'POST /v1/messaging/otp/request', method: 'POST', path: '/v1/messaging/otp/request', auth, fields: v1Request },
    { name: 'POST /otp/send', method: 'POST', path: '/otp/send', auth, fields: zendSend },
    { name: 'POST /v1/messaging/otp/verify', method: 'POST', path: '/v1/messaging/otp/verify', auth, fields: v1Verify },
    { name: 'POST /otp/{id}/verify', method: 'POST', path: `/otp/${SID}/verify`, auth, fields: zendVerify },
    { name: 'POST /v1/admin/workspaces', method: 'POST', path: '/v1/admin/workspaces', auth: adminAuth, fields: createWs },
    { name: 'PATCH /v1/admin/workspaces/{id}', method: 'PATCH', path: `/v1/admin/workspaces/${victim.workspaceId}`, auth: adminAuth, fields: patchWs },
  ];
  const json = [['content-type', 'application/json']];

  // 1. Wrong types and odd values for every field of every body route.
  for (const r of bodyRoutes) {
    const cases = [];
    for (const [field] of r.fields()) {
      for (const [vname, frag] of valuesFor()) {
        const pairs = r.fields().map(([k, v]) => [k, k === field ? frag : v]);
        const t = jsonTypeOf(frag);
        const want = TYPES[field];
        const wrongType = t === 'invalid' || (t !== 'null' && t !== want && !(want === 'integer' && t === 'number'));
        cases.push({ name: `${r.name} ${field}=${vname}`, method: r.method, path: r.path, headers: [...r.auth, ...json], body: objectText(pairs), must4xx: wrongType });
      }
      // the field missing
      const without = r.fields().filter(([k]) => k !== field);
      cases.push({ name: `${r.name} without ${field}`, method: r.method, path: r.path, headers: [...r.auth, ...json], body: objectText(without) });
    }
    await runAll(`${r.name} fields`, cases);
  }

  // 1b. Every policy key of the admin API, with every odd value.
  {
    const cases = [];
    for (const key of POLICY_KEYS) {
      for (const [vname, frag] of valuesFor()) {
        const body = objectText([['policy', objectText([[key, frag]])]]);
        cases.push({ name: `PATCH policy.${key}=${vname}`, method: 'PATCH', path: `/v1/admin/workspaces/${victim.workspaceId}`, headers: [...adminAuth, ...json], body });
      }
    }
    for (const [vname, frag] of valuesFor()) {
      cases.push({ name: `PATCH policy.sendsPerDestination.limit=${vname}`, method: 'PATCH', path: `/v1/admin/workspaces/${victim.workspaceId}`, headers: [...adminAuth, ...json], body: `{"policy":{"sendsPerDestination":{"limit":${frag},"windowSeconds":600}}}` });
      cases.push({ name: `PATCH policy.pricePerSegment.amount=${vname}`, method: 'PATCH', path: `/v1/admin/workspaces/${victim.workspaceId}`, headers: [...adminAuth, ...json], body: `{"policy":{"pricePerSegment":{"amount":${frag},"currency":"USD"}}}` });
      cases.push({ name: `PATCH policy.testNumbers value=${vname}`, method: 'PATCH', path: `/v1/admin/workspaces/${victim.workspaceId}`, headers: [...adminAuth, ...json], body: `{"policy":{"testNumbers":{"+15005550006":${frag}}}}` });
      cases.push({ name: `PATCH senders[0]=${vname}`, method: 'PATCH', path: `/v1/admin/workspaces/${victim.workspaceId}`, headers: [...adminAuth, ...json], body: `{"senders":[${frag}]}` });
      cases.push({ name: `PATCH allowedCountries[0]=${vname}`, method: 'PATCH', path: `/v1/admin/workspaces/${victim.workspaceId}`, headers: [...adminAuth, ...json], body: `{"policy":{"allowedCountries":[${frag}]}}` });
    }
    for (const amount of ['"1e308"', '"-0"', '"0.00000000000000000000000000001"', `"${'9'.repeat(400)}"`, '"NaN"', '"1,5"', '"0x1"']) {
      cases.push({ name: `PATCH pricePerSegment.amount=${amount.slice(0, 20)}`, method: 'PATCH', path: `/v1/admin/workspaces/${victim.workspaceId}`, headers: [...adminAuth, ...json], body: `{"policy":{"pricePerSegment":{"amount":${amount},"currency":"USD"}}}` });
    }
    await runAll('admin policy keys', cases);
    // Leave the victim workspace usable.
    await api('PATCH', `/v1/admin/workspaces/${victim.workspaceId}`, { admin: true, body: { senders: ['OTPKIT'], policy: { codeLength: 6, ttlSeconds: 300, maxAttempts: 5, reuse: true, allowedCountries: null, testNumbers: {}, pricePerSegment: { amount: '0', currency: 'USD' } } } });
  }

  // 2. Whole bodies: sizes, duplicates, content types, nesting, truncation, encodings.
  {
    const cases = [];
    const MB = 1024 * 1024;
    for (const r of bodyRoutes) {
      const valid = objectText(r.fields());
      const H = (extra = json) => [...r.auth, ...extra];
      const add = (what, c) => cases.push({ name: `${r.name} ${what}`, method: r.method, path: r.path, headers: H(), ...c });
      add('1 MB body', { body: objectText([...r.fields(), ['pad', JSON.stringify('x'.repeat(MB))]]), must4xx: true, expectCode: 'PAYLOAD_TOO_LARGE' });
      add('10 MB body', { body: objectText([...r.fields(), ['pad', JSON.stringify('x'.repeat(10 * MB))]]), must4xx: true, expectCode: 'PAYLOAD_TOO_LARGE', timeoutMs: 60_000 });
      add('1 MB body, chunked (no Content-Length)', { headers: H([...json, ['transfer-encoding', 'chunked']]), body: chunked(objectText([...r.fields(), ['pad', JSON.stringify('x'.repeat(MB))]])), contentLength: null, must4xx: true, expectCode: 'PAYLOAD_TOO_LARGE' });
      add('Content-Length 10 MB, 2 KB sent, then half-closed', { body: valid + ' '.repeat(2048), contentLength: 10 * MB, stopAfter: valid.length + 2048, must4xx: true });
      add('16 KiB + 1 body', { body: objectText([...r.fields(), ['pad', JSON.stringify('x'.repeat(16 * 1024))]]), must4xx: true, expectCode: 'PAYLOAD_TOO_LARGE' });
      for (const [k] of r.fields()) {
        add(`duplicate key ${k} (bad first)`, { body: `{${JSON.stringify(k)}:12345,${valid.slice(1)}` });
        add(`duplicate key ${k} (bad last)`, { body: `${valid.slice(0, -1)},${JSON.stringify(k)}:[1]}` });
      }
      add('no content-type', { headers: H([]), body: valid, must4xx: true, expectCode: 'UNSUPPORTED_MEDIA_TYPE' });
      for (const ct of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonx', 'json', '', ';', 'application/json/../xml', 'application/xml', '*/*', 'application/json\u00e9'.replace('\u00e9', '%C3%A9')]) {
        add(`content-type "${ct}"`, { headers: H([['content-type', ct]]), body: valid, must4xx: true });
      }
      for (const ct of ['application/json; charset=utf-8', 'APPLICATION/JSON', 'application/json; charset=latin1', 'application/json;;;', 'application/problem+json', 'application/vnd.api+json']) {
        add(`content-type "${ct}"`, { headers: H([['content-type', ct]]), body: valid });
      }
      add('two content-type headers', { headers: H([['content-type', 'application/json'], ['content-type', 'text/plain']]), body: valid });
      add('empty body', { body: '', must4xx: true });
      add('no body at all', { body: undefined, contentLength: null, must4xx: true });
      for (const [what, text] of [['null', 'null'], ['array', '[]'], ['string', '"x"'], ['number', '123'], ['true', 'true'], ['{}', '{}'], ['bare NaN', 'NaN'], ['whitespace only', ' \n\t '], ['trailing garbage', `${valid}xyz`], ['two objects', `${valid}${valid}`], ['comment', `/* c */${valid}`], ['trailing comma', `${valid.slice(0, -1)},}`], ['single quotes', valid.replace(/"/g, "'")]]) {
        add(`body ${what}`, { body: text, must4xx: !['{}'].includes(what) });
      }
      add('UTF-8 BOM before the JSON', { body: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(valid)]) });
      add('UTF-16LE body', { body: Buffer.from(valid, 'utf16le'), must4xx: true });
      add('invalid UTF-8 inside a string', { body: Buffer.concat([Buffer.from(valid.slice(0, -2)), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]) });
      add('raw NUL byte in the body', { body: Buffer.concat([Buffer.from(valid.slice(0, -1)), Buffer.from([0]), Buffer.from('}')]), must4xx: true });
      add('raw control character in a string', { body: valid.replace('"', '"\u0001') });
      for (const depth of [64, 1000, 100000]) {
        add(`nested arrays depth ${depth} as a field`, { body: `${valid.slice(0, -1)},"deep":${'['.repeat(depth)}${']'.repeat(depth)}}`, must4xx: depth > 8000 });
        add(`nested objects depth ${depth} as the body`, { body: `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`, must4xx: true });
      }
      add(`unclosed nesting depth 5000`, { body: '['.repeat(5000), must4xx: true });
      for (const cut of [1, Math.floor(valid.length / 2), valid.length - 1]) {
        add(`truncated body (${cut}/${valid.length} bytes, framed)`, { body: valid.slice(0, cut), must4xx: true });
      }
      add('truncated body (Content-Length larger, half-closed)', { body: valid, contentLength: valid.length + 50, stopAfter: valid.length });
      add('slow body (3 bytes / 100 ms)', { body: valid.slice(0, 60) + (valid.length > 60 ? valid.slice(60) : ''), chunks: { size: 3, everyMs: 100 }, timeoutMs: 15_000 });
      add('slow body cut short (3 bytes / 100 ms, 30 bytes, then half-closed)', { body: valid, contentLength: valid.length, chunks: { size: 3, everyMs: 100 }, stopAfter: 30 });
      add('Expect: 100-continue', { headers: H([...json, ['expect', '100-continue']]), body: valid });
    }
    // Bodies over 16 KiB and bodies the client cuts short run on their own, one at a time:
    // wrangler dev's proxy answers 503 to other requests in flight when one of these loses its
    // connection (see RUNTIME).
    for (const c of cases) c.big = c.stopAfter !== undefined || (c.body !== undefined && c.body.length > 16 * 1024);
    await runAll('bodies (all body routes)', cases.filter((c) => !c.big));
    await runAll('bodies over 16 KiB or cut short', cases.filter((c) => c.big), 1);
  }

  // 3. Path parameters: traversal, encoded slashes, overlong, odd characters.
  {
    const ids = [
      ['..', '..'], ['%2e%2e', '%2e%2e'], ['../../health', '..%2F..%2Fhealth'], ['%2F', '%2F'], ['%252F', '%252F'],
      ['%5C', '%5C'], ['%00', '%00'], ['a%00b', 'a%00b'], ['%0d%0a', '%0d%0a'], ['%FF (bad UTF-8)', '%FF'], ['%', '%'], ['%zz', '%zz'],
      ['emoji', '%F0%9F%98%80'], ['RTL', '%E2%80%AE'], ['lone surrogate (CESU)', '%ED%A0%80'], ['uuid upper', SID.toUpperCase()],
      ['uuid with braces', `%7B${SID}%7D`], ['uuid + suffix', `${SID}x`], ['uuid + ;', `${SID};x=1`], ['space', '%20'], ['plus', '+'],
      ['overlong (256)', 'a'.repeat(256)], ['overlong (4096)', 'b'.repeat(4096)], ['overlong uuid-ish (8000)', `${SID}`.repeat(222)],
      ['dot', '.'], ['tilde', '~'], ['quote', '%22'], ['json', '%7B%22a%22%3A1%7D'], ['NaN', 'NaN'], ['1e308', '1e308'], ['-0', '-0'],
      ['unicode raw bytes', Buffer.from('ü', 'utf8').toString('latin1')],
    ];
    const cases = [];
    const pathRoutes = [
      ['GET', (id) => `/v1/messaging/otp/sessions/${id}`, auth, null],
      ['GET', (id) => `/otp/${id}/status`, auth, null],
      ['POST', (id) => `/otp/${id}/verify`, auth, '{"code":"000000"}'],
      ['PATCH', (id) => `/v1/admin/workspaces/${id}`, adminAuth, '{"senders":["OTPKIT"]}'],
      ['POST', (id) => `/v1/admin/workspaces/${id}/keys`, adminAuth, null],
      ['DELETE', (id) => `/v1/admin/workspaces/${id}/keys/key_x`, adminAuth, null],
      ['DELETE', (id) => `/v1/admin/workspaces/${victim.workspaceId}/keys/${id}`, adminAuth, null],
    ];
    for (const [method, p, a, body] of pathRoutes) {
      for (const [what, id] of ids) {
        cases.push({ name: `${method} ${p('{id}')} id=${what}`, method, path: p(id), headers: body ? [...a, ...json] : a, body: body ?? undefined, must4xx: !what.startsWith('uuid upper') });
      }
    }
    // Traversal and odd spellings of whole paths.
    for (const path of ['/v1/messaging/otp/../otp/request', '/v1/messaging/otp/%2e%2e/otp/request', '/v1%2Fmessaging%2Fotp%2Frequest', '//v1/messaging/otp/request', '/v1/messaging/otp/request/', '/v1/messaging/otp/request?x=1#frag', '/./health', '/health/..', '/HEALTH', '/health%00', `/${'x/'.repeat(2000)}`, `/${'a'.repeat(8000)}`, '/otp//status', '/otp/%2F/status', '/otp/ /status'.replace(' ', '%20'), '*', 'http://evil.example/health']) {
      cases.push({ name: `POST ${path.slice(0, 60)}`, method: 'POST', path, headers: [...auth, ...json], body: objectText(v1Request()) });
      cases.push({ name: `GET ${path.slice(0, 60)}`, method: 'GET', path, headers: auth });
    }
    await runAll('path parameters', cases.map((c) => ({ ...c, must4xx: c.must4xx ?? false })));
  }

  // 4. Query strings of audit and analytics.
  {
    const cases = [];
    const vals = ['', 'NaN', '-0', '1e308', '18446744073709551616', '-1', '0', '501', '1.5', '%00', '%FF', '%F0%9F%98%80', '%E2%80%AE', `${'9'.repeat(400)}`, 'x'.repeat(4000), '..%2F..', '%ED%A0%80', 'null', '[]', '%7B%7D'];
    for (const [path, keys] of [['/v1/messaging/otp/audit', ['limit', 'since', 'cursor', 'sessionId']], ['/otp/analytics', ['days', 'app']]]) {
      for (const k of keys) for (const v of quick ? vals.filter((_, i) => i % 2 === 0) : vals) cases.push({ name: `GET ${path}?${k}=${v.slice(0, 20)}`, method: 'GET', path: `${path}?${k}=${v}`, headers: auth });
      cases.push({ name: `GET ${path} repeated params`, method: 'GET', path: `${path}?${keys[0]}=1&${keys[0]}=2&${keys[0]}=x`, headers: auth });
      cases.push({ name: `GET ${path} unknown param`, method: 'GET', path: `${path}?zzz=1`, headers: auth });
      cases.push({ name: `GET ${path} bare keys`, method: 'GET', path: `${path}?${keys.join('&')}`, headers: auth });
      cases.push({ name: `GET ${path} a 12 KB query`, method: 'GET', path: `${path}?${keys[0]}=${'1'.repeat(12000)}`, headers: auth });
      cases.push({ name: `GET ${path} with a JSON body`, method: 'GET', path, headers: [...auth, ...json], body: '{"limit":"x"}' });
    }
    cases.push({ name: 'GET audit since=RFC3339 with offset', method: 'GET', path: '/v1/messaging/otp/audit?since=2026-01-01T00:00:00%2B14:00', headers: auth });
    cases.push({ name: 'GET audit since=year 99999', method: 'GET', path: '/v1/messaging/otp/audit?since=99999-01-01T00:00:00Z', headers: auth });
    cases.push({ name: 'GET audit since=month 13', method: 'GET', path: '/v1/messaging/otp/audit?since=2026-13-01T00:00:00Z', headers: auth });
    cases.push({ name: 'GET audit since=leap second', method: 'GET', path: '/v1/messaging/otp/audit?since=2016-12-31T23:59:60Z', headers: auth });
    await runAll('query strings', cases);
  }

  // 5. Auth headers and methods on every route.
  {
    const cases = [];
    const routes = [
      ['POST', '/v1/messaging/otp/request'], ['POST', '/v1/messaging/otp/verify'], ['GET', `/v1/messaging/otp/sessions/${SID}`],
      ['GET', '/v1/messaging/otp/audit'], ['POST', '/otp/send'], ['GET', `/otp/${SID}/status`], ['POST', `/otp/${SID}/verify`],
      ['GET', '/otp/analytics'], ['POST', '/v1/admin/workspaces'], ['PATCH', `/v1/admin/workspaces/${victim.workspaceId}`],
      ['POST', `/v1/admin/workspaces/${victim.workspaceId}/keys`], ['DELETE', `/v1/admin/workspaces/${victim.workspaceId}/keys/key_nope`],
      ['GET', '/health'], ['GET', '/openapi.json'],
    ];
    const badAuth = [
      ['none', []], ['Bearer empty', [['authorization', 'Bearer ']]], ['Bearer spaces', [['authorization', 'Bearer    ']]],
      ['Basic', [['authorization', 'Basic Zm9vOmJhcg==']]], ['bearer lower', [['authorization', `bearer ${KEY}x`]]],
      ['x-api-key 8 KB', [['x-api-key', `otpk_${'A'.repeat(8000)}`]]], ['x-api-key latin1 bytes', [['x-api-key', 'otpk_\u00ff\u00fe']]],
      ['two authorization headers', [['authorization', 'Bearer otpk_a'], ['authorization', `Bearer ${KEY}`]]],
      ['key in both, the bearer wrong', [['authorization', 'Bearer otpk_wrong'], ['x-api-key', KEY]]],
      ['admin token as API key', [['x-api-key', adminToken]]], ['API key as admin token', [['authorization', `Bearer ${KEY}`]]],
      ['admin token + suffix', [['authorization', `Bearer ${adminToken}x`]]], ['admin token prefix', [['authorization', `Bearer ${adminToken.slice(0, -1)}`]]],
    ];
    for (const [method, path] of routes) {
      const body = method === 'GET' || method === 'DELETE' ? undefined : '{}';
      for (const [what, h] of badAuth) {
        const isPublic = path === '/health' || path === '/openapi.json';
        cases.push({ name: `${method} ${path.slice(0, 40)} auth=${what}`, method, path, headers: body ? [...h, ...json] : h, body, must4xx: !isPublic && what !== 'key in both, the bearer wrong' && !(what === 'API key as admin token' && !path.startsWith('/v1/admin')) && !(what === 'two authorization headers') });
      }
      for (const m of ['PUT', 'OPTIONS', 'TRACE', 'FOO', 'get', 'CONNECT']) {
        if (m === 'CONNECT') continue; // not a request a server routes
        cases.push({ name: `${m} ${path.slice(0, 40)}`, method: m, path, headers: [...auth], must4xx: true });
      }
    }
    await runAll('auth headers and methods', cases);
  }

  // 6. No code in any response: every code the sink saw for our destinations.
  if (sinkUrl) {
    const r = await fetch(`${sinkUrl}/_messages`);
    const msgs = (await r.json()).filter((m) => usedDests.has(m.to));
    const codes = new Set();
    for (const m of msgs) for (const run of String(m.text ?? '').match(/\d{4,10}/g) || []) if (run.length >= 6) codes.add(run);
    let leaks = 0;
    for (const code of codes) {
      const re = new RegExp(`(?<![0-9A-Za-z])${code}(?![0-9A-Za-z])`);
      for (const b of bodies) if (re.test(b)) leaks += 1;
    }
    fig.leaked = leaks;
    if (leaks) failures.push(`leaked: ${leaks} response bodies contain a code the gateway received`);
    console.log(`battery[${label}]: code-leak check: ${codes.size} codes sent by the host, ${bodies.length} bodies checked, ${leaks} leaks`);
  } else {
    console.log(`battery[${label}]: code-leak check skipped (no --sink-url)`);
  }

  const other = fig.nonEnvelope4xx + fig.unexpected2xx + fig.hang + fig.noAnswer + fig.bad2xx + fig.leaked;
  for (const [what, n] of runtimeSeen) console.log(`battery[${label}]: answered by the runtime, not otpkit (${n}×): ${what}`);
  const out = { host: label, tool: 'battery', requests: fig.requests, fiveXX: fig.fiveXX, otherFailures: other, runtime: fig.runtime, detail: fig, seconds: Math.round((Date.now() - t0) / 1000), failures: failures.slice(0, 200) };
  if (failures.length) {
    console.log(`battery[${label}]: failures (first ${Math.min(failures.length, 60)} of ${failures.length}):`);
    for (const f of failures.slice(0, 60)) console.log(`  ${f}`);
  }
  console.log(`battery[${label}]: ${fig.requests} requests, ${fig.fiveXX} 5xx, ${fig.nonEnvelope4xx} non-envelope 4xx, ${fig.unexpected2xx} 2xx/3xx where a 4xx was due, ${fig.hang} hangs, ${fig.noAnswer} without an answer, ${fig.bad2xx} non-JSON 2xx, ${fig.leaked} code leaks, ${fig.runtime} answered by the runtime (${out.seconds} s)`);
  if (opt('json')) writeFileSync(opt('json'), JSON.stringify(out, null, 1));
  process.exitCode = fig.fiveXX + other > 0 ? 1 : 0;
}

function chunked(text) {
  const buf = Buffer.from(text);
  const parts = [];
  for (let i = 0; i < buf.length; i += 64 * 1024) {
    const piece = buf.subarray(i, i + 64 * 1024);
    parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
}

main().catch((err) => {
  console.error(`battery[${label}]: ${redact(err?.stack || err)}`);
  console.error('battery: is the host running and the admin token right? Start one with tests/conformance/harness.mjs (HOST=worker|node|node-redis).');
  process.exit(2);
});
