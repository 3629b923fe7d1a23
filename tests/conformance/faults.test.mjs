// Fault injection, short versions (the full ones: scripts/faults; the scenarios: tests/faults/).
// 1. The SMS gateway answers 500, resets, does not answer (10 s timeout) or answers slowly (9 s,
//    under the timeout: must succeed) for a mix of destinations under a steady stream of
//    requests, then comes back. Every 200 has exactly one SMS whose code verifies; every 502 is
//    the exact DELIVERY_FAILED body and leaves no session; failed destinations work once the
//    gateway is back. gateway.test.mjs covers each failure alone; this is the mixed, loaded case.
// 2. The host is SIGKILLed mid-load and restarted on the same persisted state (the Worker's
//    --persist-to directory, or Redis): every session answered 200 still verifies with its
//    attempts; a destination whose send died with the host is usable again once that send is
//    stale. Skipped for the in-memory host (its state ends with the process by design).

import { describe, it } from 'node:test';
import { crashScenario, CRASH_ERROR_FIGURES } from '../faults/crash.mjs';
import { Client } from '../faults/common.mjs';
import { gatewayScenario, GATEWAY_ERROR_FIGURES } from '../faults/gateway.mjs';
import { assert, H, useHarness } from './lib.mjs';

useHarness();

function expectZero(figures, names, problems) {
  for (const name of names) {
    if (name in figures) assert.equal(figures[name], 0, `${name} must be 0. Problems seen:\n${problems.text()}`);
  }
}

describe('faults', () => {
  it('gateway 500 / reset / no answer / 9 s slow, mixed under load, then back: no lost, orphan or duplicate session, right statuses', { timeout: 120_000 }, async () => {
    const r = await gatewayScenario({
      client: new Client(() => H.baseUrl),
      adminToken: H.adminToken,
      sink: H.sink,
      okMs: 2000,
      badMs: 11_000,
      recoverMs: 3000,
      concurrency: 4,
      label: `${H.kind} `,
    });
    expectZero(r.figures, GATEWAY_ERROR_FIGURES, r.problems);
    const m = r.stats.byMode;
    for (const mode of ['fail500', 'reset', 'hang', 'slow']) assert.ok(m[mode] >= 1, `at least one request met gateway ${mode}: ${JSON.stringify(m)}`);
    assert.equal(r.stats.slow200, m.slow, 'every slow (9 s) gateway answer made a 200');
    assert.ok(r.stats.failed502 >= 3 && r.stats.retried >= 3, `failures happened and were retried: ${JSON.stringify(r.stats)}`);
    assert.ok(r.stats.ok200 >= 10, `a steady stream succeeded: ${JSON.stringify(r.stats)}`);
  });

  it('host SIGKILLed mid-load, restarted on its state: every 200 session verifies with its attempts; no stuck destination', { timeout: 180_000 }, async (t) => {
    if (H.restartSkip) {
      t.skip(H.restartSkip);
      return;
    }
    const r = await crashScenario({
      client: new Client(() => H.baseUrl),
      adminToken: H.adminToken,
      sink: H.sink,
      fault: { name: `${H.kind} host`, kill: () => H.crash(), restore: () => H.restart(), answers503: false },
      beforeMs: 4000,
      outageMs: 500,
      afterMs: 3000,
      concurrency: 4,
      label: `${H.kind} `,
    });
    expectZero(r.figures, CRASH_ERROR_FIGURES, r.problems);
    const [before, verified] = r.figures['sessions answered 200 before the kill / verified after'].split(' / ').map(Number);
    assert.ok(before >= 5, `sessions were issued before the kill (${before})`);
    assert.equal(verified, before, 'every one verified after the restart');
  });
});
