'use strict';
// Concurrency at scale across two `otpkit serve` processes sharing one real redis-server (issue 6):
// the scenarios of tests/conformance/scale.mjs with every burst spread round-robin over both
// processes, at full size (d: 1 000 sessions over 200 destinations). The gateway is the
// conformance suite's real HTTP sink; Redis and the sink start as in two-process.test.js.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { ROOT, startRedis, startSink } = require('./helpers');

describe('concurrency at scale: two otpkit serve processes on one Redis', () => {
  let S;
  let redis;
  let sink;
  let cluster;
  let ctx;
  let sizes;

  before(async () => {
    S = await import(pathToFileURL(path.join(ROOT, 'tests', 'conformance', 'scale.mjs')).href);
    sizes = S.SIZES.full;
    redis = await startRedis();
    sink = await startSink();
    cluster = await S.startServeCluster({ gatewayUrl: sink.gatewayUrl, redisUrl: redis.url, processes: 2 });
    ctx = S.httpContext({ bases: cluster.bases, adminToken: cluster.adminToken, sink });
  });

  after(async () => {
    await cluster?.stop();
    await sink?.stop();
    await redis?.stop();
  });

  /** Runs a scenario; on failure the processes' output goes with the assertion. */
  async function clean(run) {
    const r = await run();
    try {
      S.assertClean(r);
    } catch (err) {
      err.message += `\n${cluster.output().split('\n').slice(-40).join('\n')}`;
      throw err;
    }
    return r;
  }

  it('a. 100 parallel wrong verifies across both processes: exactly maxAttempts (10) INVALID, none over-counted', async () => {
    const r = await clean(() => S.wrongVerifies(ctx, sizes));
    assert.equal(r.counts.invalid, sizes.maxAttempts);
    assert.equal(r.counts.attemptsUsed, sizes.maxAttempts);
    assert.equal(r.counts.burstPeak, sizes.parallel);
  });

  it('b. 100 parallel right verifies across both processes: exactly one APPROVED', async () => {
    const r = await clean(() => S.rightVerifies(ctx, sizes));
    assert.equal(r.counts.approved, 1);
    assert.equal(r.counts.alreadyUsed, sizes.parallel - 1);
  });

  it('c. 100 parallel requests for one (destination, purpose) across both processes, reuse on: one SMS, one session', async () => {
    const r = await clean(() => S.parallelRequests(ctx, sizes));
    assert.deepEqual([r.counts.ok, r.counts.fresh, r.counts.sessionIds, r.counts.sms], [sizes.parallel, 1, 1, 1]);
  });

  it('d. 1 000 sessions over 200 destinations, each verified twice at once across both processes (50 in flight): approved once each, one SMS each', async () => {
    const r = await clean(() => S.manySessions(ctx, sizes));
    assert.equal(r.counts.sent, sizes.sessions);
    assert.equal(r.counts.sms, sizes.sessions);
    assert.equal(r.counts.approved, sizes.sessions);
    assert.equal(r.peakInFlight, sizes.inFlight);
  });
});
