// Concurrency at scale on every host (issue 6): 100 requests truly in flight together on one
// session or one (destination, purpose), and many sessions verified concurrently. The scenarios
// live in scale.mjs (shared with the two-process Redis test and scripts/concurrency, which runs
// them at full size and prints the figures). Sizes here are the CI ones (SIZES.ci): a–c at full
// size, d smaller (its full size is 1 000 sessions over 200 destinations). OTPKIT_SCALE=full runs
// the full sizes here too.

import { describe, it } from 'node:test';
import { assert, call, codeOf, H, newDest, useHarness } from './lib.mjs';
import { assertClean, manySessions, parallelRequests, rightVerifies, SIZES, WRANGLER_QUIET_MS, wrongVerifies } from './scale.mjs';

useHarness();

const size = process.env.OTPKIT_SCALE === 'full' ? 'full' : 'ci';
const S = SIZES[size];

/**
 * The suite's own client (it logs every call and checks every body for codes) and sink. Under
 * wrangler dev (and against a BASE_URL host, which may be one) each scenario starts after 6 s of quiet (scale.mjs quiet(): wrangler's local
 * proxy drops POSTs sent on connections idle for ≈5 s, upstream cloudflare/workers-sdk#14641).
 */
const ctx = () => ({ call, messages: (to) => H.sink.messages(to), newDest, codeOf, quietMs: ['worker', 'external'].includes(H.kind) ? WRANGLER_QUIET_MS : 0 });

describe(`concurrency at scale (${size} sizes)`, () => {
  it(`a. ${S.parallel} parallel wrong verifies on one session: exactly maxAttempts (${S.maxAttempts}) INVALID, the rest 423, none over-counted`, async () => {
    const r = await wrongVerifies(ctx(), S);
    assertClean(r);
    assert.equal(r.counts.invalid, S.maxAttempts);
    assert.equal(r.counts.attemptsUsed, S.maxAttempts);
    assert.equal(r.counts.burstPeak, S.parallel, 'all verifies were in flight together');
  });

  it(`b. ${S.parallel} parallel right verifies on one session: exactly one APPROVED, ${S.parallel - 1} ALREADY_USED`, async () => {
    const r = await rightVerifies(ctx(), S);
    assertClean(r);
    assert.equal(r.counts.approved, 1);
    assert.equal(r.counts.burstPeak, S.parallel, 'all verifies were in flight together');
  });

  it(`c. ${S.parallel} parallel requests for one (destination, purpose) with reuse on: one SMS, one session id in every answer`, async () => {
    const r = await parallelRequests(ctx(), S);
    assertClean(r);
    assert.deepEqual([r.counts.ok + r.proxyDrops, r.counts.fresh, r.counts.sessionIds, r.counts.sms], [S.parallel, 1, 1, 1]);
    assert.equal(r.counts.burstPeak, S.parallel, 'all requests were in flight together');
  });

  it(`d. ${S.sessions} sessions over ${S.destinations} destinations (${S.sessions / S.destinations} purposes each; full size 1 000 over 200 in scripts/concurrency), each verified twice at once with ${S.inFlight} in flight: approved once each, one SMS each`, async () => {
    const r = await manySessions(ctx(), S);
    assertClean(r);
    // Under wrangler dev a request its proxy lost never reached the Worker (scale.mjs quiet()).
    assert.equal(r.counts.sent, S.sessions - r.counts.issueDrops);
    assert.equal(r.counts.sms, r.counts.sent);
    assert.equal(r.counts.approved, r.counts.sent - r.counts.unverified);
    assert.equal(r.peakInFlight, S.inFlight, 'the client kept its bound of requests in flight');
  });
});
