// Fault 1: the SMS gateway goes bad under a steady stream of requests, then comes back.
//
// Parallel loops each request a code for a fresh destination (so every request is a new send and
// its gateway messages are exactly the sink's messages to that number). Three phases:
//   ok       the gateway answers every message
//   bad      each destination's gateway answer is drawn from a mix: 500, connection reset, no
//            answer (the host's 10 s timeout), slow (answers 200 after slowMs, under the timeout:
//            must succeed) or ok
//   recover  the gateway answers everything again; the destinations that failed are requested
//            again first (no reuse entry may be left behind), then fresh ones
// Per request: 200 ⇒ exactly one SMS, its reference is the session id, its code verifies
// (APPROVED); 502 ⇒ the exact DELIVERY_FAILED body, and the session the gateway was told about
// does not exist (status 404, verify NOT_FOUND).
// Figures (goal 0): sessions lost, orphan sessions, wrong statuses, duplicate SMS, code leaks.

import { BODY_502, codeOf, loops, newDest, percentile, Problems, say } from './common.mjs';

const BAD_MIX = [
  ['fail500', 30],
  ['reset', 20],
  ['hang', 10],
  ['slow', 10],
  ['ok', 30],
];
const SUCCEEDS = new Set(['ok', 'slow']);

function pickBad() {
  const total = BAD_MIX.reduce((a, [, w]) => a + w, 0);
  let r = Math.random() * total;
  for (const [mode, w] of BAD_MIX) {
    if ((r -= w) < 0) return mode;
  }
  return 'ok';
}

/**
 * opts: client (common.Client), adminToken, sink ({messages(to), setMode(to, mode, {delayMs})}),
 * okMs, badMs, recoverMs, concurrency, slowMs (default 9000), label (for progress lines).
 * Answers {figures: {...}, problems: Problems}.
 */
export async function gatewayScenario({ client, adminToken, sink, okMs, badMs, recoverMs, concurrency, slowMs = 9000, label = '' }) {
  const problems = new Problems();
  // Limits far above the load: this scenario is about delivery, not rate limiting.
  const ws = await client.workspace(adminToken, {
    sendsPerDestination: { limit: 100, windowSeconds: 600 },
    sendsPerWorkspacePerMinute: 100000,
  });
  const codes = new Set();
  // The bad phase starts with one request of each failure kind (so even a short run sees all).
  const firstBad = ['hang', 'slow', 'fail500', 'reset'];
  const retry = []; // destinations whose request failed: requested again once the gateway is back
  const stats = { requests: 0, ok200: 0, failed502: 0, slow200: 0, retried: 0, byMode: {} };
  const latency = { ok: [], slow: [], failed: [], hang: [] };

  const start = Date.now();
  const okEnd = start + okMs;
  const badEnd = okEnd + badMs;
  const end = badEnd + recoverMs;
  const phaseAt = (t) => (t < okEnd ? 'ok' : t < badEnd ? 'bad' : 'recover');

  let lastReport = 0;
  const report = () => {
    if (Date.now() - lastReport < 5000) return;
    lastReport = Date.now();
    say(`${label}gateway: ${Math.round((Date.now() - start) / 1000)} / ${Math.round((end - start) / 1000)} s, phase ${phaseAt(Date.now())}, ${stats.requests} requests, ${stats.ok200} × 200, ${stats.failed502} × 502, ${problems.list.length} problems`);
  };

  /** Checks a 200: one SMS naming the session, whose code verifies. */
  async function check200(res, dest, mode, before) {
    const sessionId = res.json?.data?.sessionId;
    const msgs = await sink.messages(dest);
    if (msgs.length > before + 1) problems.add('duplicate SMS', `${mode}: ${msgs.length - before} messages for one 200`);
    const m = msgs.find((x) => x.reference === sessionId && msgs.indexOf(x) >= before);
    const code = m ? codeOf(m) : null;
    if (!sessionId || !code) {
      problems.add('sessions lost', `${mode}: 200 without an SMS naming its session (${msgs.length - before} new messages)`);
      return;
    }
    codes.add(code);
    if (res.json.data.reused !== false) problems.add('wrong statuses', `${mode}: a fresh destination answered reused=${res.json.data.reused}`);
    const v = await ws.verify(sessionId, code);
    if (v.status !== 200 || v.json?.data?.status !== 'APPROVED') {
      problems.add('sessions lost', `${mode}: the code of a 200 does not verify (verify → ${v.status} ${v.error || v.json?.data?.status})`);
    }
  }

  /** Checks a 502: exact body; the session the gateway saw does not exist. */
  async function check502(res, dest, mode, before) {
    if (res.text !== BODY_502) problems.add('wrong statuses', `${mode}: 502 body differs: ${res.text.slice(0, 200)}`);
    const msgs = await sink.messages(dest);
    if (msgs.length > before + 1) problems.add('duplicate SMS', `${mode}: ${msgs.length - before} gateway calls for one request`);
    for (const m of msgs.slice(before)) {
      const code = codeOf(m);
      if (code) codes.add(code);
      const st = await ws.status(m.reference);
      const v = code ? await ws.verify(m.reference, code) : { status: 404 };
      if (st.status !== 404 || v.status !== 404) {
        problems.add('orphan sessions', `${mode}: the failed request's session exists (status → ${st.status}, verify → ${v.status})`);
      }
    }
  }

  async function one(dest, mode, isRetry) {
    const before = (await sink.messages(dest)).length;
    if (mode !== 'ok' || isRetry) await sink.setMode(dest, mode, mode === 'slow' ? { delayMs: slowMs } : {});
    const res = await ws.request(dest, 'LOGIN', { timeoutMs: 40_000 });
    stats.requests += 1;
    stats.byMode[mode] = (stats.byMode[mode] || 0) + 1;
    if (isRetry) stats.retried += 1;
    const want = SUCCEEDS.has(mode) ? 200 : 502;
    if (res.status !== want) {
      problems.add('wrong statuses', `${isRetry ? 'retry after a failure, ' : ''}gateway ${mode}: expected ${want}, got ${res.status || res.error} ${res.text.slice(0, 160)} after ${res.ms} ms`);
    }
    if (res.status === 200) {
      stats.ok200 += 1;
      if (mode === 'slow') stats.slow200 += 1;
      (mode === 'slow' ? latency.slow : latency.ok).push(res.ms);
      await check200(res, dest, mode, before);
    } else if (res.status === 502) {
      stats.failed502 += 1;
      (mode === 'hang' ? latency.hang : latency.failed).push(res.ms);
      await check502(res, dest, mode, before);
      if (!isRetry) retry.push(dest);
    } else {
      // Neither: nothing more to check than what the sink saw.
      const msgs = await sink.messages(dest);
      if (msgs.length > before + 1) problems.add('duplicate SMS', `${mode}: ${msgs.length - before} gateway calls for one request`);
    }
    report();
  }

  say(`${label}gateway: ${concurrency} loops; ok ${okMs / 1000} s → bad ${badMs / 1000} s (500/reset/hang/slow ${slowMs} ms/ok) → recover ${recoverMs / 1000} s`);
  await loops(concurrency, () => Date.now() >= end, async () => {
    const phase = phaseAt(Date.now());
    if (phase === 'recover' && retry.length) return one(retry.shift(), 'ok', true);
    return one(newDest(), phase === 'bad' ? firstBad.shift() || pickBad() : 'ok', false);
  });
  // Whatever failed too late to be retried inside the window is retried now.
  while (retry.length) await one(retry.shift(), 'ok', true);

  const leaks = client.leaks(codes);
  if (leaks) problems.add('code leaks', `${leaks} codes appear in response bodies`);
  say(`${label}gateway: done, ${stats.requests} requests, ${problems.list.length} problems`);
  return {
    problems,
    stats,
    figures: {
      requests: stats.requests,
      'requests per gateway mode': Object.entries(stats.byMode).map(([m, n]) => `${m} ${n}`).join(', '),
      'answered 200': stats.ok200,
      'answered 502': stats.failed502,
      'slow gateway (9 s) answered 200': `${stats.slow200}/${stats.byMode.slow || 0}`,
      'failed destinations retried after recovery': stats.retried,
      'p95 latency ok / slow / 502 / hang (ms)': `${percentile(latency.ok, 95)} / ${percentile(latency.slow, 95)} / ${percentile(latency.failed, 95)} / ${percentile(latency.hang, 95)}`,
      'sessions lost': problems.count('sessions lost'),
      'orphan sessions': problems.count('orphan sessions'),
      'wrong statuses': problems.count('wrong statuses'),
      'duplicate SMS': problems.count('duplicate SMS'),
      'code leaks': problems.count('code leaks'),
    },
  };
}

/** The figures whose goal is 0. */
export const GATEWAY_ERROR_FIGURES = ['sessions lost', 'orphan sessions', 'wrong statuses', 'duplicate SMS', 'code leaks'];
