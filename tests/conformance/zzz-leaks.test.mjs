// Runs after every other file (`run` runs them in name order) and checks what the whole run
// produced (SECURITY.md, "Key leakage" and "Log leakage"):
//   - every code the SMS sink received (all of them, from every file),
//   - against every answer the suite read (headers and body; lib.mjs call() logs them to the
//     harness's $OTPKIT_BODY_LOG), every audit row of every workspace the suite made, and every
//     line the host printed (host.mjs appends it all to $OTPKIT_HOST_OUTPUT_FILE; for wrangler
//     that includes the Worker's console output and its request log).
// Also: API keys only in the 201 answers that mint them, never their hashes; the admin token,
// the pepper and the gateway token nowhere; destinations only masked in audit rows and logs.
// Needs the shared harness of `run` (skipped with BASE_URL: the host's output is not ours).

import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { before, describe, it } from 'node:test';
import { assert, call, H, useHarness } from './lib.mjs';

useHarness();

const FULL = Boolean(process.env.OTPKIT_FULL_SUITE);
// Audit events of the operator's actions: no session, purpose or destination (keyId names a key by id).
const ADMIN_EVENTS = ['workspace_created', 'workspace_updated', 'key_created', 'key_revoked'];
// Fraud Guard's events are about a number prefix (SPEC §9): their dest is the prefix itself.
const PREFIX_EVENTS = ['prefix_blocked', 'prefix_unblocked'];
// A code is a run of 6–10 digits not inside a longer alphanumeric word (as lib.mjs checks).
// A run after `+` is a number or a Fraud Guard prefix (+233202), never a code.
const DIGIT_RUN = /(?<![0-9A-Za-z+])\d{6,10}(?![0-9A-Za-z])/g;
const API_KEY_ANYWHERE = /otpk_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])/g;
const HEX64 = /(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])/g;
// workerd's own diagnostics name a Durable Object by its id, 64 hex digits, as `actorId = <id>`
// (e.g. "NOSENTRY SQLite alarm handler canceled with requestScheduledAlarm.; … actorId = …", printed
// now and then when an alarm is re-set while its handler is queued). An object id is not a secret:
// neither host's code prints that label, so only the runtime's lines are let through.
const RUNTIME_ACTOR_ID = /actorId = [0-9a-f]{64}(?![0-9a-fA-F])/g;

/** Whether an answer carried `run` before the sink received it as a code (the host's own number). */
function printedBefore(run) {
  return firstPrinted.get(run) < codeAt.get(run);
}

/** The 64-hex-digit values of `text` that could be hashes: all but workerd's labelled object ids. */
function hex64Suspects(text) {
  return text.replace(RUNTIME_ACTOR_ID, 'actorId = <object id>').match(HEX64) || [];
}

let skip = null;
let answers = []; // { where, text } from every other file: status line, headers and body
let logLines = []; // { where, text } every line the host printed
let codes = new Set();
let codeAt = new Map(); // code → when the sink first received it (ms)
let firstPrinted = new Map(); // digit run that is also a code → when an answer first carried it (ms)
let dests = new Set();
let creations = []; // { entry, workspaceId, apiKey }
let auditRows = []; // { where, text } one per audit event of every reachable workspace
let auditStats = { workspaces: 0, reachable: 0, events: 0 };

/** `text` with every secret in `hide` replaced, so a failure message never prints one. */
function redact(text, hide) {
  let out = text;
  for (const s of hide) if (s) out = out.split(s).join('<redacted>');
  return out.length > 400 ? `${out.slice(0, 400)}…` : out;
}

/** Asserts no leak was found, showing the first 20 (already redacted) and the count. */
function assertNone(leaks, what) {
  assert.deepEqual(leaks.slice(0, 20), [], `${what} (${leaks.length} in all; the first 20 shown)`);
}

/** Every 16-character window of a secret. */
function windows(secret) {
  const out = [];
  for (let i = 0; i + 16 <= secret.length; i++) out.push(secret.slice(i, i + 16));
  return out;
}

function parseBodyLog(file) {
  const out = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    const e = JSON.parse(line);
    out.push(e);
  }
  return out;
}

/** Every page of a workspace's audit log through any of its keys (revoked ones answer 401). */
async function auditOf(workspaceId, keys) {
  for (const key of keys) {
    const rows = [];
    let cursor = null;
    for (let page = 0; page < 100; page++) {
      const q = new URLSearchParams({ limit: '500', ...(cursor ? { cursor: String(cursor) } : {}) });
      const res = await call('GET', `/v1/messaging/otp/audit?${q}`, { key });
      if (res.status === 401) break;
      assert.equal(res.status, 200, `audit of ${workspaceId}: ${res.status}`);
      for (const ev of res.json.data.events) rows.push({ where: `audit of ${workspaceId}`, text: JSON.stringify(ev), ev });
      cursor = res.json.data.nextCursor;
      if (cursor === null || cursor === undefined) return rows;
    }
    if (rows.length) return rows;
  }
  return null;
}

describe('run-wide leak checks', () => {
  before(async () => {
    if (!H.bodyLogFile || !H.hostOutputFile) {
      skip = 'needs the harness of tests/conformance/run (BASE_URL is set, or an old harness)';
      return;
    }
    // No file yet: this file runs alone (its own calls come after this point).
    const entries = existsSync(H.bodyLogFile) ? parseBodyLog(H.bodyLogFile) : [];
    answers = entries.map((e) => ({
      where: `${e.method} ${e.route.split('?')[0]} → ${e.status}`,
      text: `${JSON.stringify(e.headers)}\n${e.text}`,
      entry: e,
    }));
    const out = existsSync(H.hostOutputFile) ? readFileSync(H.hostOutputFile, 'utf8') : '';
    logLines = out.split('\n').map((text, i) => ({ where: `host output line ${i + 1}`, text }));

    for (const m of await H.sink.messages()) {
      const at = Date.parse(m.receivedAt);
      if (typeof m.text === 'string') {
        for (const run of m.text.match(DIGIT_RUN) || []) {
          codes.add(run);
          if (!(codeAt.get(run) <= at)) codeAt.set(run, at);
        }
      }
      if (m.to) dests.add(m.to);
    }
    // A run of digits an answer carried before the code existed is one of the host's own numbers
    // (604800, `blockSeconds`'s upper bound, was once also a random code): it cannot be that code
    // leaking. Answers before the code are those read whole before the sink got it (an answer to
    // the request that sent the code is read after: a code it carried is a leak).
    for (const a of answers) {
      const at = a.entry.at;
      if (typeof at !== 'number') continue;
      for (const run of a.text.match(DIGIT_RUN) || []) {
        if (codes.has(run) && !(firstPrinted.get(run) <= at)) firstPrinted.set(run, at);
      }
    }

    // API keys minted by the suite: the 201 answers of workspace and key creation.
    for (const a of answers) {
      const e = a.entry;
      if (e.status !== 201) continue;
      let j;
      try {
        j = JSON.parse(e.text);
      } catch {
        continue;
      }
      const apiKey = j?.data?.apiKey;
      if (typeof apiKey !== 'string') continue;
      const m = e.route.match(/^\/v1\/admin\/workspaces\/([^/?]+)\/keys/);
      const workspaceId = j.data.workspaceId || (m && decodeURIComponent(m[1]));
      creations.push({ entry: e, workspaceId, apiKey });
    }

    // Every audit row of every workspace the suite made.
    const byWs = new Map();
    for (const c of creations) {
      if (!byWs.has(c.workspaceId)) byWs.set(c.workspaceId, []);
      byWs.get(c.workspaceId).push(c.apiKey);
    }
    auditStats.workspaces = byWs.size;
    for (const [id, keys] of byWs) {
      const rows = await auditOf(id, keys);
      if (rows === null) continue;
      auditStats.reachable += 1;
      auditStats.events += rows.length;
      auditRows.push(...rows);
    }
    process.stdout.write(
      `leak checks over: ${codes.size} codes, ${answers.length} answers, ${logLines.length} host output lines, ` +
        `${auditStats.events} audit rows of ${auditStats.reachable}/${auditStats.workspaces} workspaces, ${creations.length} API keys\n`,
    );
  });

  it('the checks have something to check (and would see a leak)', (t) => {
    if (skip) return t.skip(skip);
    // The scanner finds a code where lib.mjs's check would, and only there.
    const sample = 'x 4815162342 y';
    assert.deepEqual(sample.match(DIGIT_RUN), ['4815162342']);
    assert.equal('id a4815162342b'.match(DIGIT_RUN), null);
    // A 64-hex value counts unless it is workerd's labelled object id.
    const h = 'c3bd442d4435a005839e622531a0f9962f094da0bf995c8bef639c1f38924036';
    assert.deepEqual(hex64Suspects(`hash ${h}`), [h]);
    assert.deepEqual(hex64Suspects(`alarm …; actorId = ${h}`), []);
    assert.deepEqual(hex64Suspects(`actorId = ${h} then ${h.toUpperCase()}`), [h.toUpperCase()]);
    assert.ok(logLines.some((l) => l.text.trim()), 'the host printed something');
    // Only a number printed before its code existed is let through.
    firstPrinted.set('0000000001', 10);
    codeAt.set('0000000001', 20);
    firstPrinted.set('0000000002', 30);
    codeAt.set('0000000002', 20);
    assert.equal(printedBefore('0000000001'), true);
    assert.equal(printedBefore('0000000002'), false);
    assert.equal(printedBefore('0000000003'), false); // never printed
    for (const k of ['0000000001', '0000000002']) (firstPrinted.delete(k), codeAt.delete(k));
    if (!FULL) return;
    assert.ok(codes.size >= 100, `the sink saw ${codes.size} codes in a whole run`);
    assert.ok(answers.length >= 500, `${answers.length} answers logged in a whole run`);
    assert.ok(creations.length >= 50, `${creations.length} API keys minted in a whole run`);
    assert.ok(auditStats.events >= 100, `${auditStats.events} audit rows read`);
    if (H.kind === 'worker') {
      // wrangler's request log is in the captured output: the log check sees the Worker's lines.
      assert.ok(logLines.some((l) => l.text.includes('/v1/messaging/otp/request')), 'wrangler request log lines captured');
    }
  });

  it('no issued code in any answer, audit row or host log line of the whole run', (t) => {
    if (skip) return t.skip(skip);
    const leaks = [];
    for (const h of [...answers, ...auditRows, ...logLines]) {
      for (const run of h.text.match(DIGIT_RUN) || []) {
        if (codes.has(run) && !printedBefore(run)) leaks.push(`${h.where}: ${redact(h.text, [run])}`);
      }
    }
    assertNone(leaks, 'an issued code (shown as <redacted>) appears in these places');
  });

  it('API keys only in the 201 that mints them, never their hashes; admin token, pepper and gateway token nowhere', (t) => {
    if (skip) return t.skip(skip);
    const minted = new Set(creations.map((c) => c.entry));
    const keys = creations.map((c) => c.apiKey);
    const hashes = keys.map((k) => createHash('sha256').update(k).digest('hex'));
    const secrets = [
      ['the admin token', H.adminToken],
      ['the pepper', H.pepper],
      ['the SMS gateway token', H.gatewayToken],
    ];
    assert.ok(H.pepper && H.adminToken && H.gatewayToken, 'the harness names every secret of the host');
    const hide = [...keys, ...hashes, ...secrets.map(([, s]) => s)];
    const leaks = [];
    for (const h of [...answers, ...auditRows, ...logLines]) {
      if (!h.entry || !minted.has(h.entry)) {
        if ((h.text.match(API_KEY_ANYWHERE) || []).length) leaks.push(`an API key in ${h.where}: ${redact(h.text, hide)}`);
      }
      // Any 16 consecutive characters of a secret count (a truncated print is a leak too).
      for (const [name, s] of secrets) {
        if (windows(s).some((w) => h.text.includes(w))) leaks.push(`${name} (or 16+ characters of it) in ${h.where}: ${redact(h.text, [...hide, ...windows(s)])}`);
      }
      // An API key's hash counts wherever it is, even under a runtime label.
      for (const hex of h.text.match(HEX64) || []) {
        if (hashes.includes(hex.toLowerCase())) leaks.push(`an API key hash in ${h.where}: ${redact(h.text, hide)}`);
      }
      for (const hex of hex64Suspects(h.text)) {
        if (!hashes.includes(hex.toLowerCase())) leaks.push(`a 64-hex-digit value (a hash?) in ${h.where}: ${redact(h.text, hide)}`);
      }
    }
    // A minted key appears once: in its own 201 answer.
    for (const c of creations) {
      const seen = answers.filter((a) => a.text.includes(c.apiKey)).length;
      if (seen !== 1) leaks.push(`an API key appears in ${seen} answers (want only its 201)`);
    }
    assertNone(leaks, 'secrets where they must not be');
  });

  it('destinations are masked in every audit row and never printed in full by the host', (t) => {
    if (skip) return t.skip(skip);
    const leaks = [];
    for (const r of auditRows) {
      // The operator's actions (SPEC §9) are about no destination: theirs is empty, nothing to mask.
      const admin = ADMIN_EVENTS.includes(r.ev.event);
      if (PREFIX_EVENTS.includes(r.ev.event)) {
        if (!/^\+\d{2,9}$/.test(r.ev.dest) || r.ev.sessionId !== '') leaks.push(`${r.where}: ${r.ev.event} is not about a prefix: ${r.ev.dest}`);
      } else if (admin ? r.ev.dest !== '' : !/^\+\d{3}\*+\d{4}$/.test(r.ev.dest)) leaks.push(`${r.where}: dest ${r.ev.dest} is not masked`);
      for (const k of Object.keys(r.ev)) {
        if (!['time', 'event', 'sessionId', 'purpose', 'app', 'dest', 'outcome', 'status', 'test', 'channel', 'keyId', 'messageId'].includes(k)) {
          leaks.push(`${r.where}: unexpected audit field ${k}`);
        }
      }
    }
    for (const h of [...auditRows, ...logLines]) {
      for (const d of dests) if (h.text.includes(d)) leaks.push(`${h.where}: a full destination number`);
    }
    assertNone(leaks, 'destinations in the clear');
  });
});
