// Shared helpers of the conformance suites: the harness, an HTTP client that checks every body it
// reads for leaked codes, workspaces through the admin API, codes read from the sink (as a phone
// would), and the exact bodies of tests/vectors/envelopes.json.

import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { appendFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before } from 'node:test';
import { closeHarness, harness } from './harness.mjs';
import { ROOT } from './host.mjs';

export { assert };

/** The current harness, set by `useHarness()`'s `before` hook. */
export let H = null;

/** Registers the file-level hooks: one harness for the whole file. */
export function useHarness() {
  before(async () => {
    H = await harness();
  });
  after(async () => {
    await closeHarness();
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
export const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
export const API_KEY = /^otpk_[A-Za-z0-9_-]{43}$/;
export const DEFAULT_TEXT = /^(\d{6,10}) is your verification code\. It expires in (\d+) minutes\.$/;

// ---------------------------------------------------------------------------------------------
// No code in any response: every body read is kept, every code learned is kept, and each is
// checked against all of the other kind (so a leak is found whichever is seen first).

const seenBodies = [];
const knownCodes = new Set();

function containsCode(text, code) {
  return new RegExp(`(?<![0-9A-Za-z])${code}(?![0-9A-Za-z])`).test(text);
}

function checkLeak(text, code, where) {
  assert.ok(!containsCode(text, code), `a code (${code}) appears in the response body of ${where}: ${text}`);
}

function noteBody(text, where) {
  for (const code of knownCodes) checkLeak(text, code, where);
  seenBodies.push({ text, where });
}

export function noteCode(code) {
  if (knownCodes.has(code)) return;
  knownCodes.add(code);
  for (const b of seenBodies) checkLeak(b.text, code, b.where);
}

// ---------------------------------------------------------------------------------------------
// HTTP

/**
 * One request to the host. opts: key (API key, sent as Bearer), xApiKey, admin (true = admin
 * token, or a string token), body (JSON-encoded unless raw), raw (string/Buffer body as is),
 * contentType (default application/json when there is a body), headers.
 * Answers { status, headers, text, json, ms }.
 */
export async function call(method, route, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (opts.key) headers.authorization = `Bearer ${opts.key}`;
  if (opts.xApiKey) headers['x-api-key'] = opts.xApiKey;
  if (opts.admin) headers.authorization = `Bearer ${opts.admin === true ? H.adminToken : opts.admin}`;
  let body;
  if (opts.raw !== undefined) body = opts.raw;
  else if (opts.body !== undefined) body = JSON.stringify(opts.body);
  if (body !== undefined && opts.contentType !== null && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
    headers['content-type'] = opts.contentType ?? 'application/json';
  }
  const started = Date.now();
  const res = await fetch(`${H.baseUrl}${route}`, {
    method,
    headers,
    body,
    signal: AbortSignal.timeout(opts.timeoutMs ?? 30_000),
  });
  const text = await res.text();
  const ms = Date.now() - started;
  noteBody(text, `${method} ${route}`);
  // Every (method, path, status) the suite sees, for zz-openapi.test.mjs to check against openapi.yaml.
  if (process.env.OTPKIT_CALL_LOG) appendFileSync(process.env.OTPKIT_CALL_LOG, `${method} ${route.split('?')[0]} ${res.status}\n`);
  // Every answer (headers and body) the suite reads, for the run-wide leak checks of zzz-leaks.test.mjs.
  if (H.bodyLogFile) {
    const entry = { method, route, status: res.status, headers: Object.fromEntries(res.headers), text, at: Date.now() }; // `at`: the answer read whole
    appendFileSync(H.bodyLogFile, `${JSON.stringify(entry)}\n`);
  }
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: res.status, headers: res.headers, text, json, ms };
}

/** Asserts the status and that the answer is JSON, showing the body on failure. */
export function expectStatus(res, status, what = '') {
  assert.equal(res.status, status, `${what ? `${what}: ` : ''}expected HTTP ${status}, got ${res.status}: ${res.text}`);
  if (status !== 204) {
    assert.match(res.headers.get('content-type') || '', /^application\/json/i, `content-type of ${res.text}`);
    assert.notEqual(res.json, null, `body is not JSON: ${res.text}`);
  }
  return res.json;
}

/** Asserts a non-verification error envelope. */
export function expectError(res, status, code, { field, message } = {}) {
  const j = expectStatus(res, status);
  assert.equal(j.success, false, res.text);
  assert.equal(typeof j.message, 'string', res.text);
  assert.equal(j.error?.code, code, res.text);
  if (field !== undefined) {
    assert.equal(j.error.field, field, `error.field of ${res.text}`);
    assert.ok(j.message.startsWith(`${field} `), `message names the field "${field}": ${res.text}`);
  }
  if (message !== undefined) assert.equal(j.message, message, res.text);
  if (status !== 429) {
    assert.equal(j.error.retryAfterSeconds, undefined, res.text);
    assert.equal(res.headers.get('retry-after'), null, `no Retry-After on ${status}`);
  }
  const allowed = new Set(['code', 'field', 'retryAfterSeconds']);
  for (const k of Object.keys(j.error)) assert.ok(allowed.has(k), `unexpected error key ${k}: ${res.text}`);
  assert.deepEqual(Object.keys(j).sort(), ['error', 'message', 'success'], res.text);
  return j;
}

/** Asserts a 429 with a Retry-After header equal to error.retryAfterSeconds (integer ≥ 1). */
export function expectRetryAfter(res, code, maxSeconds) {
  const j = expectError(res, 429, code);
  const secs = j.error.retryAfterSeconds;
  assert.ok(Number.isInteger(secs) && secs >= 1, `retryAfterSeconds is an integer ≥ 1: ${res.text}`);
  if (maxSeconds !== undefined) assert.ok(secs <= maxSeconds, `retryAfterSeconds ${secs} ≤ ${maxSeconds}`);
  assert.equal(res.headers.get('retry-after'), String(secs), 'Retry-After header equals error.retryAfterSeconds');
  return secs;
}

// ---------------------------------------------------------------------------------------------
// Exact bodies (tests/vectors/envelopes.json)

const VECTORS = JSON.parse(readFileSync(path.join(ROOT, 'tests', 'vectors', 'envelopes.json'), 'utf8')).cases;

export function vector(name) {
  const v = VECTORS.find((c) => c.name === name);
  if (!v) throw new Error(`no envelope vector named ${name}`);
  return v;
}

/** Asserts the exact bytes of an error vector's body. */
export function expectVectorBody(res, name) {
  const v = vector(name);
  const expected = v.kind === 'validation' ? v.reply : v.body;
  assert.equal(res.status, v.status, `${name}: status (${res.text})`);
  assert.equal(res.text, expected, `${name}: exact body`);
}

const VERIFY_VECTOR = {
  APPROVED: 'verify APPROVED',
  INVALID: 'verify INVALID',
  EXPIRED: 'verify EXPIRED',
  MAX_ATTEMPTS_REACHED: 'verify MAX_ATTEMPTS_REACHED',
  ALREADY_USED: 'verify ALREADY_USED',
  NOT_FOUND: 'verify NOT_FOUND echoes the id given',
};

/** The exact v1 verify body for an outcome, session id and attemptsLeft (from the vectors). */
export function verifyBody(status, sessionId, attemptsLeft) {
  const v = vector(VERIFY_VECTOR[status]);
  const j = JSON.parse(v.body);
  j.data.sessionId = sessionId;
  j.data.attemptsLeft = attemptsLeft;
  return { status: v.status, body: JSON.stringify(j) };
}

/** Asserts a v1 verify answer byte for byte. */
export function expectVerify(res, status, sessionId, attemptsLeft) {
  const want = verifyBody(status, sessionId, attemptsLeft);
  assert.equal(res.status, want.status, `verify ${status}: HTTP status (${res.text})`);
  assert.equal(res.text, want.body, `verify ${status}: exact body`);
  assert.match(res.headers.get('content-type') || '', /^application\/json/i);
  return res.json;
}

// ---------------------------------------------------------------------------------------------
// Destinations, workspaces, sink

// A destination number no other test uses: +2335 then 10 random digits (14 digits, valid E.164),
// distinct within this process and, with overwhelming odds, across the run's processes.
const usedDests = new Set();
export function newDest() {
  for (;;) {
    const d = `+2335${String(randomInt(0, 100_000)).padStart(5, '0')}${String(randomInt(0, 100_000)).padStart(5, '0')}`;
    if (!usedDests.has(d)) {
      usedDests.add(d);
      return d;
    }
  }
}

export async function adminCreate(body) {
  return call('POST', '/v1/admin/workspaces', { admin: true, body });
}

let wsCounter = 0;

/** A fresh workspace through the admin API; answers a client bound to its API key. */
export async function newWorkspace({ policy, senders = ['OTPKIT', 'ACME'], name } = {}) {
  wsCounter += 1;
  const body = { name: name || `conformance ${process.pid}-${wsCounter}`, senders };
  if (policy !== undefined) body.policy = policy;
  const res = await adminCreate(body);
  const j = expectStatus(res, 201, 'create workspace');
  return new Workspace(j.data.workspaceId, j.data.apiKey, j.data.keyId, senders);
}

export class Workspace {
  constructor(id, key, keyId, senders) {
    this.id = id;
    this.key = key;
    this.keyId = keyId;
    this.senders = senders;
  }
  request(body, opts = {}) {
    return call('POST', '/v1/messaging/otp/request', { key: this.key, body, ...opts });
  }
  /** A valid request body for `dest` with overrides. */
  body(dest, extra = {}) {
    return { dest, src: this.senders[0], purpose: 'LOGIN', ...extra };
  }
  verify(sessionId, code, opts = {}) {
    return call('POST', '/v1/messaging/otp/verify', { key: this.key, body: { sessionId, code }, ...opts });
  }
  status(sessionId) {
    return call('GET', `/v1/messaging/otp/sessions/${encodeURIComponent(sessionId)}`, { key: this.key });
  }
  audit(query = {}) {
    const q = new URLSearchParams(query).toString();
    return call('GET', `/v1/messaging/otp/audit${q ? `?${q}` : ''}`, { key: this.key });
  }
  zendSend(body) {
    return call('POST', '/otp/send', { key: this.key, body });
  }
  zendVerify(id, code) {
    return call('POST', `/otp/${encodeURIComponent(id)}/verify`, { key: this.key, body: { code } });
  }
  zendStatus(id) {
    return call('GET', `/otp/${encodeURIComponent(id)}/status`, { key: this.key });
  }
  /** Requests a code for `dest` (200 expected) and reads it from the sink. */
  async issue(dest, extra = {}) {
    const before = (await H.sink.messages(dest)).length;
    const res = await this.request(this.body(dest, extra));
    const j = expectStatus(res, 200, 'request');
    assert.equal(j.data.reused, false, `a new session: ${res.text}`);
    const msgs = await H.sink.messages(dest);
    assert.equal(msgs.length, before + 1, 'exactly one message reached the gateway');
    const message = msgs[msgs.length - 1];
    assert.equal(message.reference, j.data.sessionId, 'gateway reference is the session id');
    return { sessionId: j.data.sessionId, code: codeOf(message), res, message, data: j.data };
  }
}

/** The code in a gateway message: the only run of 6–10 digits in its text. */
export function codeOf(message) {
  assert.equal(typeof message.text, 'string', `message text: ${JSON.stringify(message)}`);
  const runs = message.text.match(/\d+/g)?.filter((r) => r.length >= 6 && r.length <= 10) || [];
  assert.equal(runs.length, 1, `exactly one run of 6–10 digits in "${message.text}"`);
  noteCode(runs[0]);
  return runs[0];
}

/** A wrong code of the same length as `code`. */
export function wrongCode(code) {
  const last = code[code.length - 1];
  return code.slice(0, -1) + String((Number(last) + 1) % 10);
}

/** Polls `fn` until it returns a truthy value or `ms` pass; answers the last value. */
export async function eventually(fn, ms = 2000, every = 100) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() >= deadline) return last;
    await sleep(every);
  }
}

/** Masks like SPEC: keeps +, the first 3 and the last 4 digits. */
export function mask(dest) {
  const digits = dest.slice(1);
  return `+${[...digits].map((c, i) => (i < 3 || i + 4 >= digits.length ? c : '*')).join('')}`;
}
