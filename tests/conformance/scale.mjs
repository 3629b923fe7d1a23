#!/usr/bin/env node
// Concurrency at scale (issue 6): four scenarios over HTTP, each with its requests truly in flight
// together, that count what must never happen. Shared by
//   tests/conformance/scale.test.mjs            every host of the conformance suite (CI sizes)
//   napi-binding/test/scale-two-process.test.js two `otpkit serve` processes on one Redis
//   scripts/concurrency (this file as a CLI)     full sizes against each host, figures table
//
//   a. N parallel wrong verifies on one session: attempts used = maxAttempts exactly
//   b. N parallel right verifies on one session: exactly one APPROVED
//   c. N parallel requests for one (destination, purpose), reuse on: one SMS, one session id
//   d. S sessions over D destinations (S/D purposes each), then every session verified twice at
//      once with the right code at bounded client concurrency: each approved exactly once, one
//      SMS per session
//
// A scenario answers { name, figures, problems, counts, requests, proxyDrops, peakInFlight, ms }.
// `figures` are the counts that must be 0 (FIGURES); `problems` says in words every way the
// answers differ from SPEC (empty when the host conforms); proxyDrops counts requests that
// wrangler dev's local proxy lost before they reached the Worker (see quiet()). No code is ever
// printed.
//
// A context `ctx` is { call(method, route, {key, admin, body}) → {status, json, text},
// messages(to?) → sink messages, newDest(), codeOf?(message), quietMs? }; httpContext() builds
// one that spreads requests round-robin over several base URLs (two processes behind one Redis).
// quietMs: a pause before each scenario, for `wrangler dev` (see quiet()).
//
// CLI: node tests/conformance/scale.mjs [--hosts worker,node,node-redis-2,node-cluster-2] [--size full|ci] [--json FILE]
// starts each host in turn (with its own sink), runs a–d, prints the figures table.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, randomToken, ROOT, startHost } from './host.mjs';
import { startRedis, startRedisCluster } from './redis.mjs';
import { startSink } from './sink.mjs';

/** Sizes: `ci` keeps every host's run of scale.test.mjs short; `full` is scripts/concurrency's. */
export const SIZES = {
  ci: { parallel: 100, maxAttempts: 10, sessions: 200, destinations: 40, inFlight: 50 },
  full: { parallel: 100, maxAttempts: 10, sessions: 1000, destinations: 200, inFlight: 50 },
};

/** The counts that must be 0, in table order, with their column titles. */
export const FIGURES = [
  ['overCounted', 'attempts over-counted'],
  ['doubleApprovals', 'double approvals'],
  ['duplicateSms', 'duplicate SMS'],
  ['missingSms', 'missing SMS'],
  ['lostSessions', 'lost sessions'],
  ['failures', 'other failures'],
];

const PURPOSES = ['LOGIN', 'PASSWORD_RESET', 'TRANSACTION', 'DEVICE_VERIFICATION', 'EMAIL_VERIFICATION', 'ACCOUNT_RECOVERY', 'KYC_VERIFICATION'];

const zeroFigures = () => Object.fromEntries(FIGURES.map(([k]) => [k, 0]));

// ---------------------------------------------------------------------------------------------
// Clients

/** A context over plain fetch, round-robin over `bases`; `sink` is a sink.mjs sink or sinkClient. */
export function httpContext({ bases, adminToken, sink, timeoutMs = 60_000, quietMs = 0 }) {
  let next = 0;
  return {
    quietMs,
    async call(method, route, opts = {}) {
      const base = bases[next++ % bases.length];
      const headers = {};
      if (opts.key) headers.authorization = `Bearer ${opts.key}`;
      if (opts.admin) headers.authorization = `Bearer ${adminToken}`;
      let body;
      if (opts.body !== undefined) {
        body = JSON.stringify(opts.body);
        headers['content-type'] = 'application/json';
      }
      const res = await fetch(`${base}${route}`, { method, headers, body, signal: AbortSignal.timeout(timeoutMs) });
      const text = await res.text();
      let json = null;
      try {
        json = text ? JSON.parse(text) : null;
      } catch {
        json = null;
      }
      return { status: res.status, text, json };
    },
    messages: async (to) => sink.messages(to),
    newDest,
  };
}

// A destination no other run uses: +2336 then 10 random digits (lib.mjs uses +2335).
const usedDests = new Set();
export function newDest() {
  for (;;) {
    const d = `+2336${String(randomInt(0, 100_000)).padStart(5, '0')}${String(randomInt(0, 100_000)).padStart(5, '0')}`;
    if (!usedDests.has(d)) {
      usedDests.add(d);
      return d;
    }
  }
}

/** The code in a gateway message: the only run of 6–10 digits in its text. */
function plainCodeOf(message) {
  const runs = String(message.text ?? '').match(/\d+/g)?.filter((r) => r.length >= 6 && r.length <= 10) || [];
  if (runs.length !== 1) throw new Error(`expected exactly one run of 6–10 digits in a gateway message (found ${runs.length})`);
  return runs[0];
}

/** A wrong code of the same length. */
function wrongCode(code) {
  return code.slice(0, -1) + String((Number(code[code.length - 1]) + 1) % 10);
}

/**
 * Wraps ctx.call: counts requests and the peak number in flight at once, and turns a transport
 * error (timeout, reset) into status 0 so it is counted, not fatal. Assertion errors of the
 * conformance client (a code in a response body) still throw.
 */
function tracker(ctx) {
  const t = { requests: 0, inFlight: 0, peak: 0, drops: 0 };
  t.call = async (method, route, opts) => {
    t.requests += 1;
    t.inFlight += 1;
    if (t.inFlight > t.peak) t.peak = t.inFlight;
    try {
      return await ctx.call(method, route, opts);
    } catch (err) {
      if (err?.code === 'ERR_ASSERTION') throw err;
      return { status: 0, text: String(err?.cause?.code || err?.name || err), json: null };
    } finally {
      t.inFlight -= 1;
    }
  };
  /**
   * The answers without wrangler dev's proxy drops (counted in t.drops). Only under wrangler dev
   * (ctx.quietMs set): such a request never reached the Worker, so the scenario's expectations
   * are for the requests that did; the drops are reported in their own column.
   */
  t.kept = (answers) => {
    const kept = answers.filter((a) => !(ctx.quietMs && a.status === 503 && a.text.startsWith(WRANGLER_PROXY_DROP)));
    t.drops += answers.length - kept.length;
    return kept;
  };
  /** Runs fn; answers [its result, the peak in flight while it ran]. */
  t.burst = async (fn) => {
    const saved = t.peak;
    t.peak = t.inFlight;
    const r = await fn();
    const peak = t.peak;
    t.peak = Math.max(saved, peak);
    return [r, peak];
  };
  return t;
}

/**
 * Waits ctx.quietMs (if set) with no request in flight before a scenario. Under `wrangler dev`
 * (quietMs = WRANGLER_QUIET_MS) every request passes wrangler's local ProxyWorker, whose pooled
 * connections to the Worker race the runtime's 5 s keep-alive close: a POST sent on a connection
 * idle for ≈5 s is dropped and answered 503 "Your worker restarted mid-request" although nothing
 * restarted (upstream: cloudflare/workers-sdk#14641, #15252). A burst after a pause of a few
 * seconds hits that often. Past 6 s of quiet every pooled connection is closed on both sides,
 * so the scenario's burst opens fresh ones. Not a retry: nothing sent is ever sent again.
 */
async function quiet(ctx) {
  if (ctx.quietMs) await new Promise((r) => setTimeout(r, ctx.quietMs));
}

/** The quiet time for a host under `wrangler dev` (see quiet()). */
export const WRANGLER_QUIET_MS = 6_000;

/** wrangler dev's own 503 body when its proxy loses a request (not an answer of the Worker). */
const WRANGLER_PROXY_DROP = 'Your worker restarted mid-request';

/** Runs fn over items with at most `limit` in flight; answers the results in order. */
async function pool(items, limit, fn) {
  const out = new Array(items.length);
  let i = 0;
  const worker = async () => {
    while (i < items.length) {
      const k = i++;
      out[k] = await fn(items[k], k);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** "200×1, 409×99" */
function tally(answers) {
  const m = new Map();
  for (const a of answers) {
    const k = `${a.status}${a.json?.data?.status ? ` ${a.json.data.status}` : a.json?.error?.code ? ` ${a.json.error.code}` : ''}`;
    m.set(k, (m.get(k) || 0) + 1);
  }
  const odd = answers.find((a) => ![200, 400, 409, 423].includes(a.status));
  // The first unexpected body, shortened (a host never puts a code in a body; lib.mjs checks that).
  let first = odd ? `; first: ${odd.text.slice(0, 160)}` : '';
  if (odd && odd.status === 503 && odd.text.startsWith(WRANGLER_PROXY_DROP)) {
    first += ' [wrangler dev\'s proxy lost the request before the Worker answered: cloudflare/workers-sdk#14641]';
  }
  return `${[...m].sort((x, y) => y[1] - x[1]).map(([k, n]) => `${k}×${n}`).join(', ')}${first}`;
}

let wsCounter = 0;

/** A workspace through the admin API, its policy then set with PATCH (as an operator would). */
async function workspace(t, label, policy) {
  wsCounter += 1;
  const res = await t.call('POST', '/v1/admin/workspaces', {
    admin: true,
    body: { name: `scale ${label} ${process.pid}-${wsCounter}`, senders: ['OTPKIT'] },
  });
  if (res.status !== 201) throw new Error(`creating a workspace answered ${res.status}: ${res.text}`);
  const { workspaceId, apiKey } = res.json.data;
  const patched = await t.call('PATCH', `/v1/admin/workspaces/${encodeURIComponent(workspaceId)}`, { admin: true, body: { policy } });
  if (patched.status !== 200) throw new Error(`setting the policy answered ${patched.status}: ${patched.text}`);
  return { id: workspaceId, key: apiKey };
}

const request = (t, ws, dest, purpose) => t.call('POST', '/v1/messaging/otp/request', { key: ws.key, body: { dest, src: 'OTPKIT', purpose } });
const verify = (t, ws, sessionId, code) => t.call('POST', '/v1/messaging/otp/verify', { key: ws.key, body: { sessionId, code } });
const status = (t, ws, sessionId) => t.call('GET', `/v1/messaging/otp/sessions/${encodeURIComponent(sessionId)}`, { key: ws.key });

/** One new session (setup, not under test): its id and the code the sink received. */
async function issue(ctx, t, ws, dest, purpose = 'LOGIN') {
  const res = await request(t, ws, dest, purpose);
  if (res.status !== 200 || res.json?.data?.reused !== false) throw new Error(`setup: a request answered ${res.status}: ${res.text}`);
  const sessionId = res.json.data.sessionId;
  const msgs = (await ctx.messages(dest)).filter((m) => m.reference === sessionId);
  if (msgs.length !== 1) throw new Error(`setup: the sink holds ${msgs.length} messages for session ${sessionId}`);
  return { sessionId, code: (ctx.codeOf || plainCodeOf)(msgs[0]) };
}

function result(name, t, started, figures, problems, counts) {
  return { name, figures, problems, counts, requests: t.requests, proxyDrops: t.drops, peakInFlight: t.peak, ms: Date.now() - started };
}

// ---------------------------------------------------------------------------------------------
// The scenarios

/** a. `parallel` wrong verifies on one session at once: exactly maxAttempts are counted. */
export async function wrongVerifies(ctx, { parallel, maxAttempts }) {
  await quiet(ctx);
  const t = tracker(ctx);
  const started = Date.now();
  const f = zeroFigures();
  const problems = [];
  const ws = await workspace(t, 'a', { maxAttempts });
  const s = await issue(ctx, t, ws, ctx.newDest());
  const bad = wrongCode(s.code);
  const [sent, burstPeak] = await t.burst(() => Promise.all(Array.from({ length: parallel }, () => verify(t, ws, s.sessionId, bad))));
  const answers = t.kept(sent);
  const invalid = answers.filter((a) => a.status === 400 && a.json?.data?.status === 'INVALID');
  const locked = answers.filter((a) => a.status === 423 && a.json?.data?.status === 'MAX_ATTEMPTS_REACHED');
  const other = answers.length - invalid.length - locked.length;
  const st = await status(t, ws, s.sessionId);
  const used = st.json?.data?.attemptsUsed;
  // Attempts the host let through beyond the maximum, whichever it shows more of.
  f.overCounted = Math.max(0, Math.max(invalid.length, Number.isInteger(used) ? used : 0) - maxAttempts);
  f.failures = other;
  if (answers.some((a) => a.status === 404) || st.status === 404) f.lostSessions = 1;
  if (invalid.length !== maxAttempts) problems.push(`${invalid.length} INVALID answers, expected maxAttempts = ${maxAttempts} (${tally(answers)})`);
  if (locked.length !== answers.length - maxAttempts) problems.push(`${locked.length} MAX_ATTEMPTS_REACHED answers, expected ${answers.length - maxAttempts}`);
  if (other) problems.push(`${other} answers neither INVALID nor MAX_ATTEMPTS_REACHED (${tally(answers)})`);
  const left = invalid.map((a) => a.json.data.attemptsLeft).sort((x, y) => x - y);
  const want = Array.from({ length: maxAttempts }, (_, i) => i);
  if (invalid.length === maxAttempts && left.join() !== want.join()) {
    problems.push(`INVALID attemptsLeft ${left.join(',')}, expected each of ${want.join(',')} once (an attempt counted twice or lost)`);
  }
  for (const a of locked) {
    if (a.json.data.attemptsLeft !== 0) problems.push(`MAX_ATTEMPTS_REACHED with attemptsLeft ${a.json.data.attemptsLeft}`);
  }
  if (st.status !== 200) problems.push(`status answered ${st.status}: ${st.text}`);
  else {
    if (used !== maxAttempts) problems.push(`status attemptsUsed ${used}, expected ${maxAttempts}`);
    if (st.json.data.state !== 'LOCKED') problems.push(`status state ${st.json.data.state}, expected LOCKED`);
  }
  const after = await verify(t, ws, s.sessionId, s.code);
  if (after.json?.data?.status === 'APPROVED') {
    f.doubleApprovals += 1;
    problems.push('the right code approved a locked session');
  } else if (after.status !== 423) problems.push(`the right code after the lock answered ${after.status}, expected 423`);
  return result('a. wrong verifies', t, started, f, problems, {
    parallel, maxAttempts, invalid: invalid.length, locked: locked.length, attemptsUsed: used ?? null, burstPeak,
  });
}

/** b. `parallel` right verifies on one session at once: approved exactly once. */
export async function rightVerifies(ctx, { parallel }) {
  await quiet(ctx);
  const t = tracker(ctx);
  const started = Date.now();
  const f = zeroFigures();
  const problems = [];
  const maxAttempts = 5;
  const ws = await workspace(t, 'b', { maxAttempts });
  const s = await issue(ctx, t, ws, ctx.newDest());
  const [sent, burstPeak] = await t.burst(() => Promise.all(Array.from({ length: parallel }, () => verify(t, ws, s.sessionId, s.code))));
  const answers = t.kept(sent);
  const approved = answers.filter((a) => a.status === 200 && a.json?.data?.status === 'APPROVED');
  const used = answers.filter((a) => a.status === 409 && a.json?.data?.status === 'ALREADY_USED');
  const other = answers.length - approved.length - used.length;
  f.doubleApprovals = Math.max(0, approved.length - 1);
  f.failures = other;
  if (approved.length === 0) f.lostSessions = 1;
  if (approved.length !== 1) problems.push(`${approved.length} APPROVED answers, expected exactly 1 (${tally(answers)})`);
  if (used.length !== answers.length - 1) problems.push(`${used.length} ALREADY_USED answers, expected ${answers.length - 1} (${tally(answers)})`);
  for (const a of [...approved, ...used]) {
    if (a.json.data.attemptsLeft !== maxAttempts - 1) problems.push(`${a.json.data.status} with attemptsLeft ${a.json.data.attemptsLeft}, expected ${maxAttempts - 1}`);
  }
  const st = await status(t, ws, s.sessionId);
  if (st.status !== 200) {
    problems.push(`status answered ${st.status}: ${st.text}`);
    if (st.status === 404) f.lostSessions = 1;
  } else {
    const u = st.json.data.attemptsUsed;
    if (u > 1) f.overCounted += u - 1;
    if (u !== 1) problems.push(`status attemptsUsed ${u}, expected 1`);
    if (st.json.data.state !== 'APPROVED') problems.push(`status state ${st.json.data.state}, expected APPROVED`);
  }
  return result('b. right verifies', t, started, f, problems, { parallel, approved: approved.length, alreadyUsed: used.length, burstPeak });
}

/** c. `parallel` requests for one (destination, purpose) at once, reuse on: one SMS, one session. */
export async function parallelRequests(ctx, { parallel }) {
  await quiet(ctx);
  const t = tracker(ctx);
  const started = Date.now();
  const f = zeroFigures();
  const problems = [];
  // Reuse on and the default send limit (3 per 10 min): reuses are not charged to it (SPEC §3).
  const ws = await workspace(t, 'c', { reuse: true, maxAttempts: 5 });
  const dest = ctx.newDest();
  const [sent, burstPeak] = await t.burst(() => Promise.all(Array.from({ length: parallel }, () => request(t, ws, dest, 'LOGIN'))));
  const answers = t.kept(sent);
  const ok = answers.filter((a) => a.status === 200 && a.json?.success === true);
  const fresh = ok.filter((a) => a.json.data.reused === false);
  const reused = ok.filter((a) => a.json.data.reused === true);
  const ids = new Set(ok.map((a) => a.json.data.sessionId));
  f.failures = answers.length - ok.length;
  if (f.failures) problems.push(`${f.failures} requests were not answered 200 (${tally(answers)}); with one send and reuses free of the send limit, SPEC leaves no room for a 429 or 502 here`);
  if (fresh.length !== 1) problems.push(`${fresh.length} answers with reused:false, expected exactly 1`);
  if (reused.length !== ok.length - fresh.length) problems.push('answers without a boolean reused');
  if (ids.size !== 1) problems.push(`${ids.size} different session ids in the 200 answers, expected 1`);
  for (const a of reused) {
    if (a.json.message !== 'Active OTP already exists. No new SMS sent.') problems.push(`reuse message ${JSON.stringify(a.json.message)}`);
    if (a.json.data.attemptsLeft !== 5) problems.push(`reuse attemptsLeft ${a.json.data.attemptsLeft}, expected 5`);
  }
  const msgs = await ctx.messages(dest);
  f.duplicateSms = Math.max(0, msgs.length - 1);
  f.missingSms = msgs.length === 0 ? 1 : 0;
  if (msgs.length !== 1) problems.push(`the sink received ${msgs.length} messages for the destination, expected exactly 1`);
  const sessionId = fresh[0]?.json.data.sessionId;
  if (msgs.length >= 1 && sessionId) {
    const mine = msgs.filter((m) => m.reference === sessionId);
    if (mine.length !== 1) problems.push(`the sink's message names session ${msgs[0].reference}, the answers ${sessionId}`);
    else {
      // Every answer's session is real: its code (from the one SMS) approves it, once.
      const v = await verify(t, ws, sessionId, (ctx.codeOf || plainCodeOf)(mine[0]));
      if (v.json?.data?.status !== 'APPROVED') {
        f.lostSessions = 1;
        problems.push(`the shared session's code answered ${v.status}: ${v.text}`);
      }
    }
  } else if (ok.length) f.lostSessions = 1;
  return result('c. parallel requests, reuse', t, started, f, problems, {
    parallel, ok: ok.length, fresh: fresh.length, reused: reused.length, sessionIds: ids.size, sms: msgs.length, burstPeak,
  });
}

/**
 * d. `sessions` sessions over `destinations` destinations (sessions/destinations purposes each),
 * issued at `inFlight` requests at once, then each verified twice at once with the right code
 * (inFlight/2 sessions at a time) and its status read: each approved exactly once, one SMS each.
 */
export async function manySessions(ctx, { sessions, destinations, inFlight }, onProgress = () => {}) {
  const per = sessions / destinations;
  if (!Number.isInteger(per) || per < 1 || per > PURPOSES.length) {
    throw new Error(`sessions / destinations must be a whole number of purposes, 1–${PURPOSES.length} (got ${sessions}/${destinations})`);
  }
  await quiet(ctx);
  const t = tracker(ctx);
  const started = Date.now();
  const f = zeroFigures();
  const problems = [];
  const note = (what, n) => {
    if (n) problems.push(`${n} ${what}`);
  };
  // The limits must not interfere: `per` sends per destination, all sends within a minute.
  const ws = await workspace(t, 'd', {
    reuse: true,
    maxAttempts: 5,
    sendsPerDestination: { limit: Math.max(per, 10), windowSeconds: 600 },
    sendsPerWorkspacePerMinute: 100_000,
  });
  const dests = Array.from({ length: destinations }, () => ctx.newDest());
  const jobs = dests.flatMap((dest) => PURPOSES.slice(0, per).map((purpose) => ({ dest, purpose })));

  // Issue every session.
  let done = 0;
  const issued = await pool(jobs, inFlight, async (job) => {
    const res = await request(t, ws, job.dest, job.purpose);
    done += 1;
    if (done % 250 === 0 || done === jobs.length) onProgress(`issued ${done}/${jobs.length}`);
    return { ...job, res };
  });
  const reached = new Set(t.kept(issued.map((x) => x.res)));
  const issueDrops = issued.length - reached.size;
  const answered = issued.filter((x) => reached.has(x.res));
  const sent = answered.filter((x) => x.res.status === 200 && x.res.json?.data?.reused === false);
  const reusedWrongly = answered.filter((x) => x.res.status === 200 && x.res.json?.data?.reused !== false);
  const refusedIssue = answered.filter((x) => x.res.status !== 200);
  f.failures += refusedIssue.length;
  if (refusedIssue.length) problems.push(`${refusedIssue.length} requests not answered 200 (${tally(refusedIssue.map((x) => x.res))})`);
  // A reused answer for a (destination, purpose) asked once names some other request's session.
  f.lostSessions += reusedWrongly.length;
  note('requests for a fresh (destination, purpose) answered reused or without reused:false', reusedWrongly.length);
  const byId = new Map();
  for (const x of sent) {
    const id = x.res.json.data.sessionId;
    if (byId.has(id)) {
      f.lostSessions += 1;
      problems.push(`session id ${id} answered to two requests`);
    } else byId.set(id, { ...x, sessionId: id, msgs: [] });
  }

  // The sink: exactly one message per session, none for anything else.
  const destSet = new Set(dests);
  const all = (await ctx.messages()).filter((m) => destSet.has(m.to));
  let stray = 0;
  for (const m of all) {
    const s = byId.get(m.reference);
    if (s && s.dest === m.to) s.msgs.push(m);
    else stray += 1;
  }
  let dup = 0;
  let missing = 0;
  for (const s of byId.values()) {
    if (s.msgs.length === 0) missing += 1;
    else dup += s.msgs.length - 1;
  }
  f.duplicateSms += dup + stray;
  f.missingSms += missing;
  note('sessions with more than one SMS (extra messages)', dup);
  note('SMS naming no session that was answered 200', stray);
  note('sessions answered 200 whose SMS never reached the sink', missing);
  onProgress(`sink: ${all.length} messages for ${byId.size} sessions`);

  // Verify each session twice at once with the right code.
  const withCode = [...byId.values()].filter((s) => s.msgs.length >= 1);
  for (const s of withCode) s.code = (ctx.codeOf || plainCodeOf)(s.msgs[0]);
  done = 0;
  const pairs = await pool(withCode, Math.max(1, Math.floor(inFlight / 2)), async (s) => {
    const two = t.kept(await Promise.all([verify(t, ws, s.sessionId, s.code), verify(t, ws, s.sessionId, s.code)]));
    done += 1;
    if (done % 250 === 0 || done === withCode.length) onProgress(`verified ${done}/${withCode.length} (2 at once each)`);
    return two;
  });
  let zeroApproved = 0;
  let unverified = 0; // both verifies lost by wrangler dev's proxy: the session is left PENDING
  let oddAnswers = [];
  for (const [i, two] of pairs.entries()) {
    if (two.length === 0) {
      withCode[i].unverified = true;
      unverified += 1;
      continue;
    }
    const approved = two.filter((a) => a.status === 200 && a.json?.data?.status === 'APPROVED').length;
    const used = two.filter((a) => a.status === 409 && a.json?.data?.status === 'ALREADY_USED').length;
    f.doubleApprovals += Math.max(0, approved - 1);
    if (approved === 0) zeroApproved += 1;
    if (approved + used !== two.length) oddAnswers = oddAnswers.concat(two.filter((a) => !(a.status === 200 || a.status === 409)));
  }
  f.lostSessions += zeroApproved;
  f.failures += oddAnswers.length;
  note('sessions not approved by either of two right verifies', zeroApproved);
  note(`verify answers neither APPROVED nor ALREADY_USED (${tally(oddAnswers)})`, oddAnswers.length);
  if (f.doubleApprovals) problems.push(`${f.doubleApprovals} sessions approved twice`);

  // Every session's status: APPROVED after exactly one attempt.
  done = 0;
  const states = await pool(withCode, inFlight, async (s) => {
    const [st] = t.kept([await status(t, ws, s.sessionId)]);
    done += 1;
    if (done % 500 === 0 || done === withCode.length) onProgress(`status ${done}/${withCode.length}`);
    return st;
  });
  let notApproved = 0;
  let statusFailed = 0;
  for (const [i, st] of states.entries()) {
    if (!st) continue; // lost by wrangler dev's proxy
    if (st.status !== 200) {
      statusFailed += 1;
      continue;
    }
    const u = st.json.data.attemptsUsed;
    if (u > 1) f.overCounted += u - 1;
    const want = withCode[i].unverified ? ['PENDING', 0] : ['APPROVED', 1];
    if (st.json.data.state !== want[0] || u !== want[1]) notApproved += 1;
  }
  f.failures += statusFailed;
  note(`status reads not answered 200 (${tally(states.filter((s) => s && s.status !== 200))})`, statusFailed);
  note('sessions whose status is not APPROVED with attemptsUsed 1 (or PENDING with 0 when neither verify reached the Worker)', notApproved);
  return result('d. many sessions', t, started, f, problems, {
    sessions, destinations, purposesEach: per, inFlight, sent: sent.length, issueDrops, sms: all.length,
    approved: pairs.length - zeroApproved - unverified, unverified,
  });
}

/** Runs a–d in order; answers their results and the totals. */
export async function runAll(ctx, sizes, log = () => {}) {
  const results = [];
  const steps = [
    [`a. ${sizes.parallel} parallel wrong verifies on one session (maxAttempts ${sizes.maxAttempts})`, () => wrongVerifies(ctx, sizes)],
    [`b. ${sizes.parallel} parallel right verifies on one session`, () => rightVerifies(ctx, sizes)],
    [`c. ${sizes.parallel} parallel requests for one (destination, purpose), reuse on`, () => parallelRequests(ctx, sizes)],
    [`d. ${sizes.sessions} sessions over ${sizes.destinations} destinations, verified twice each at ${sizes.inFlight} in flight`,
      () => manySessions(ctx, sizes, (m) => log(`   ${m}`))],
  ];
  for (const [i, [title, run]] of steps.entries()) {
    log(`[${i + 1}/${steps.length}] ${title}`);
    const r = await run();
    const drops = r.proxyDrops ? ` (${r.proxyDrops} lost by wrangler dev's proxy before reaching the Worker)` : '';
    log(`   ${r.requests} requests${drops} in ${(r.ms / 1000).toFixed(1)} s, peak ${r.peakInFlight} in flight; ${r.problems.length ? `PROBLEMS: ${r.problems.join('; ')}` : 'as SPEC says'}`);
    results.push(r);
  }
  return { results, totals: totals(results) };
}

export function totals(results) {
  const f = zeroFigures();
  for (const r of results) for (const [k] of FIGURES) f[k] += r.figures[k];
  return {
    figures: f,
    requests: results.reduce((n, r) => n + r.requests, 0),
    proxyDrops: results.reduce((n, r) => n + r.proxyDrops, 0),
    ms: results.reduce((n, r) => n + r.ms, 0),
    peakInFlight: Math.max(0, ...results.map((r) => r.peakInFlight)),
    problems: results.flatMap((r) => r.problems.map((p) => `${r.name}: ${p}`)),
  };
}

/** Fails (node:assert) with every problem and figure when a scenario found anything. */
export function assertClean(r) {
  const bad = FIGURES.filter(([k]) => r.figures[k] !== 0).map(([k, title]) => `${title} ${r.figures[k]}`);
  assert.deepEqual(r.problems, [], `${r.name}: ${[...bad, ...r.problems].join('; ')}`);
  assert.deepEqual(r.figures, zeroFigures(), `${r.name}: ${bad.join('; ')}`);
  // wrangler dev's proxy may lose a rare request (see quiet()); more than 1% is not that.
  assert.ok(r.proxyDrops <= Math.floor(r.requests / 100), `${r.name}: wrangler dev's proxy lost ${r.proxyDrops} of ${r.requests} requests`);
}

// ---------------------------------------------------------------------------------------------
// Several `otpkit serve` processes on one Redis

/**
 * Starts `processes` `otpkit serve` processes sharing `redisUrl` (or the Redis Cluster of
 * `clusterNodes`, REDIS_CLUSTER_NODES) and one set of secrets, sending
 * to `gatewayUrl`. Answers { bases, adminToken, output(), stop() }.
 */
export async function startServeCluster({ gatewayUrl, redisUrl, clusterNodes, processes = 2 }) {
  const bin = path.join(ROOT, 'napi-binding', 'bin', 'otpkit.js');
  const secrets = {
    OTP_PEPPER: randomToken(48),
    ADMIN_TOKEN: `adm_${randomToken(32)}`,
    SMS_GATEWAY_URL: gatewayUrl,
    SMS_GATEWAY_TOKEN: `gw_${randomToken(24)}`,
    SMS_GATEWAY_KIND: 'json',
    ...(clusterNodes ? { REDIS_CLUSTER_NODES: clusterNodes } : { REDIS_URL: redisUrl }),
  };
  const children = [];
  const stop = async () => {
    await Promise.all(children.map((c) => {
      if (c.child.exitCode != null || c.child.signalCode != null) return null;
      const done = new Promise((r) => c.child.once('exit', r));
      c.child.kill('SIGTERM');
      return done;
    }));
  };
  try {
    for (let i = 0; i < processes; i++) {
      const port = await freePort();
      const child = spawn(process.execPath, [bin, 'serve'], {
        env: { ...process.env, ...secrets, PORT: String(port) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const c = { child, base: `http://127.0.0.1:${port}`, out: '' };
      child.stdout.on('data', (d) => (c.out += d));
      child.stderr.on('data', (d) => (c.out += d));
      children.push(c);
    }
    for (const c of children) {
      const deadline = Date.now() + 30_000;
      for (;;) {
        if (c.child.exitCode != null) throw new Error(`otpkit serve exited at start:\n${c.out}`);
        const ok = await fetch(`${c.base}/health`, { signal: AbortSignal.timeout(2000) }).then((r) => r.status === 200, () => false);
        if (ok) break;
        if (Date.now() > deadline) throw new Error(`otpkit serve did not answer /health within 30 s:\n${c.out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    bases: children.map((c) => c.base),
    adminToken: secrets.ADMIN_TOKEN,
    output: () => children.map((c, i) => `--- process ${i + 1} ---\n${c.out}`).join('\n'),
    stop,
  };
}

// ---------------------------------------------------------------------------------------------
// CLI (scripts/concurrency)

const HOSTS = {
  worker: 'Worker (wrangler dev)',
  node: 'Node, memory (otpkit serve)',
  'node-redis-2': 'Node, 2 processes, 1 Redis',
  'node-cluster-2': 'Node, 2 processes, 3-master Redis Cluster',
};

async function startTarget(kind, sink) {
  if (kind === 'node-redis-2' || kind === 'node-cluster-2') {
    const onCluster = kind === 'node-cluster-2';
    const redis = onCluster ? await startRedisCluster(3) : await startRedis();
    let cluster;
    try {
      const where = onCluster ? { clusterNodes: redis.nodes } : { redisUrl: redis.url };
      cluster = await startServeCluster({ gatewayUrl: sink.gatewayUrl, ...where, processes: 2 });
    } catch (err) {
      await redis.stop();
      throw err;
    }
    return {
      bases: cluster.bases,
      adminToken: cluster.adminToken,
      output: cluster.output,
      async stop() {
        await cluster.stop();
        await redis.stop();
      },
    };
  }
  const host = await startHost({ gatewayUrl: sink.gatewayUrl, kind });
  return { bases: [host.baseUrl], adminToken: host.adminToken, output: host.output, stop: () => host.stop() };
}

function table(rows) {
  const head = ['host', ...FIGURES.map(([, t]) => t), 'requests', 'lost by wrangler\'s proxy', 'wall s', 'peak in flight'];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i ? '---:' : '---')).join('|')}|`];
  for (const r of rows) {
    if (r.error) {
      lines.push(`| ${r.label} | ${FIGURES.map(() => '–').join(' | ')} | – | – | – | – |`);
      continue;
    }
    const t = r.totals;
    lines.push(`| ${r.label} | ${FIGURES.map(([k]) => t.figures[k]).join(' | ')} | ${t.requests} | ${t.proxyDrops} | ${(t.ms / 1000).toFixed(1)} | ${t.peakInFlight} |`);
  }
  return lines.join('\n');
}

function scenarioTable(rows) {
  const head = ['host', 'scenario', ...FIGURES.map(([, t]) => t), 'requests', 'lost by wrangler\'s proxy', 's'];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i > 1 ? '---:' : '---')).join('|')}|`];
  for (const r of rows) {
    for (const s of r.results || []) {
      lines.push(`| ${r.label} | ${s.name} | ${FIGURES.map(([k]) => s.figures[k]).join(' | ')} | ${s.requests} | ${s.proxyDrops} | ${(s.ms / 1000).toFixed(1)} |`);
    }
  }
  return lines.join('\n');
}

async function main(argv) {
  let hosts = Object.keys(HOSTS);
  let size = 'full';
  let jsonFile = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--hosts') hosts = argv[++i].split(',').filter(Boolean);
    else if (a === '--size') size = argv[++i];
    else if (a === '--json') jsonFile = argv[++i];
    else throw new Error(`unknown argument ${a} (usage: scale.mjs [--hosts ${Object.keys(HOSTS).join(',')}] [--size full|ci] [--json FILE])`);
  }
  for (const h of hosts) if (!HOSTS[h]) throw new Error(`unknown host ${h}: one of ${Object.keys(HOSTS).join(', ')}`);
  if (!SIZES[size]) throw new Error(`unknown size ${size}: full or ci`);
  const sizes = SIZES[size];
  const log = (m) => process.stdout.write(`${m}\n`);
  if (process.env.REDIS_URL) {
    // host.mjs would give the memory host that Redis; node-redis-2 starts its own.
    log('concurrency: ignoring REDIS_URL (the Redis setup starts its own redis-server)');
    delete process.env.REDIS_URL;
  }
  log(`concurrency: sizes ${JSON.stringify(sizes)}; hosts ${hosts.join(', ')}`);
  const rows = [];
  for (const [i, kind] of hosts.entries()) {
    const label = HOSTS[kind];
    log(`\n== host ${i + 1}/${hosts.length}: ${label} — starting it (the Worker may build first: minutes)`);
    const sink = await startSink();
    let target;
    const startedAt = Date.now();
    try {
      target = await startTarget(kind, sink);
      log(`   ready after ${((Date.now() - startedAt) / 1000).toFixed(1)} s on ${target.bases.join(', ')}`);
      const ctx = httpContext({ bases: target.bases, adminToken: target.adminToken, sink, quietMs: kind === 'worker' ? WRANGLER_QUIET_MS : 0 });
      const run = await runAll(ctx, sizes, (m) => log(`   ${m}`));
      rows.push({ kind, label, ...run });
    } catch (err) {
      log(`   FAILED: ${err.message}`);
      if (target) log(`   last host output:\n${target.output().split('\n').slice(-30).join('\n')}`);
      rows.push({ kind, label, error: err.message });
    } finally {
      if (target) await target.stop();
      await sink.stop();
    }
  }
  log('\nPer scenario:\n');
  log(scenarioTable(rows));
  log(`\nConcurrency at scale (${size} sizes: ${sizes.parallel} parallel for a–c; d = ${sizes.sessions} sessions over ${sizes.destinations} destinations, ${sizes.inFlight} in flight), goal 0 for every error count:\n`);
  log(table(rows));
  const problems = rows.flatMap((r) => (r.error ? [`${r.label}: did not run: ${r.error}`] : r.totals.problems.map((p) => `${r.label}: ${p}`)));
  if (jsonFile) writeFileSync(jsonFile, JSON.stringify({ sizes, rows }, null, 2));
  if (problems.length) {
    log(`\nNOT met: ${problems.length} problem(s):`);
    for (const p of problems) log(`  - ${p}`);
    log('\nNext: reproduce one host with  node tests/conformance/scale.mjs --hosts <host>  (HOST_VERBOSE=1 streams its output)');
    return rows.some((r) => r.error) ? 2 : 1;
  }
  log('\nMet: every error count is 0 on every host.');
  return 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`concurrency: ${err.stack || err}\n`);
      process.exit(2);
    },
  );
}
