// State survives a restart of the host: a session issued before is verified after.
// Skipped (with the reason) when the host is not ours (BASE_URL) or keeps state in memory.

import { describe, it } from 'node:test';
import { assert, expectStatus, expectVerify, H, newDest, newWorkspace, useHarness, wrongCode } from './lib.mjs';

useHarness();

describe('restart', () => {
  it('a session issued before a restart verifies after it (APPROVED), attempts kept', async (t) => {
    if (H.restartSkip) {
      t.skip(H.restartSkip);
      return;
    }
    const ws = await newWorkspace();
    const dest = newDest();
    const s = await ws.issue(dest);
    expectVerify(await ws.verify(s.sessionId, wrongCode(s.code)), 'INVALID', s.sessionId, 4);
    // Verification bookkeeping may follow the response; let it land before stopping the host.
    await new Promise((r) => setTimeout(r, 500));

    await H.restart();

    const health = await fetch(`${H.baseUrl}/health`);
    assert.equal(health.status, 200);
    const st = expectStatus(await ws.status(s.sessionId), 200);
    assert.equal(st.data.state, 'PENDING');
    assert.equal(st.data.attemptsUsed, 1);
    // Reuse survives too: no new SMS for the same (dest, purpose).
    const again = expectStatus(await ws.request(ws.body(dest)), 200);
    assert.equal(again.data.reused, true);
    assert.equal(again.data.sessionId, s.sessionId);
    assert.equal((await H.sink.messages(dest)).length, 1);
    expectVerify(await ws.verify(s.sessionId, s.code), 'APPROVED', s.sessionId, 3);
  });
});
