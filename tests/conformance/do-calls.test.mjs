// Durable Object calls on the response path of each route (issue 7's goal was at most 2 for any
// request; since issue 19 a new send makes 3: the workspace flood shield is counted exactly in the
// WorkspaceObject once the destination admits the send, instead of in KV, where a burst overshot it
// many times over. Bookkeeping such as the delivery confirmation, the failure streak and cancellations
// follows the answer). The Worker reports them in `x-otpkit-do-calls` when OTPKIT_TRACE_DO_CALLS
// is set, as host.mjs does; other hosts have no Durable Objects and skip this file.

import { describe, it } from 'node:test';
import {
  assert, call, codeOf, expectStatus, H, newDest, newWorkspace, sleep, useHarness, wrongCode,
} from './lib.mjs';

useHarness();

const calls = (res) => Number(res.headers.get('x-otpkit-do-calls'));

describe('Durable Object calls per request (Worker)', () => {
  it('new send 3, reuse ≤ 2, verify 1, status 1, failed delivery 3, refused 1', async (t) => {
    const probe = await call('GET', '/health');
    if (probe.headers.get('x-otpkit-do-calls') == null) {
      t.skip(`HOST=${H.kind}: no x-otpkit-do-calls header (no Durable Objects, or tracing off)`);
      return;
    }
    assert.equal(calls(probe), 0);
    const ws = await newWorkspace({ policy: { sendsPerDestination: { limit: 2, windowSeconds: 3600 } } });
    const seen = {};
    const note = (what, res) => {
      seen[what] = calls(res);
      return res;
    };

    const dest = newDest();
    const sent = note('v1 new send', await ws.request(ws.body(dest)));
    expectStatus(sent, 200);
    const sessionId = sent.json.data.sessionId;
    note('v1 reuse (just after the send)', await ws.request(ws.body(dest)));
    await sleep(300); // the reuse hint in KV follows the answer
    note('v1 reuse (KV hint)', await ws.request(ws.body(dest)));
    note('v1 status', await ws.status(sessionId));
    const code = codeOf((await H.sink.messages(dest)).at(-1));
    note('v1 verify wrong', await ws.verify(sessionId, wrongCode(code)));
    note('v1 verify right', await ws.verify(sessionId, code));
    note('v1 verify unknown session', await ws.verify('3f1c2b9e-8a47-4d0e-9b6a-1c2d3e4f5a6b', code));

    const z = note('zend new send', await ws.zendSend({ phone_number: newDest(), app: 'A' }));
    expectStatus(z, 200);
    note('zend status', await ws.zendStatus(z.json.id));
    note('zend verify', await ws.zendVerify(z.json.id, '000000'));

    const resend = (w, id) => call('POST', `/v1/messaging/otp/sessions/${id}/resend`, { key: w.key });
    const quick = await newWorkspace({ policy: { resendAfterSeconds: 0 } });
    expectStatus(note('resend', await resend(quick, (await quick.issue(newDest())).sessionId)), 200);
    const soon = note('resend too soon', await resend(ws, z.json.id));
    assert.equal(soon.status, 429);

    const failing = newDest();
    await H.sink.setMode(failing, 'fail500');
    note('failed delivery', await ws.request(ws.body(failing)));

    const limited = newDest();
    await ws.issue(limited);
    await ws.issue(limited, { purpose: 'TRANSACTION' });
    const refused = note('rate limited', await ws.request(ws.body(limited, { purpose: 'KYC_VERIFICATION' })));
    assert.equal(refused.status, 429);
    note('audit', await ws.audit());
    note('analytics', await call('GET', '/otp/analytics', { key: ws.key }));

    t.diagnostic(`Durable Object calls on the response path: ${JSON.stringify(seen)}`);
    assert.deepEqual(
      {
        'v1 new send': seen['v1 new send'],
        'zend new send': seen['zend new send'],
        'v1 reuse (KV hint)': seen['v1 reuse (KV hint)'],
        'v1 status': seen['v1 status'],
        'zend status': seen['zend status'],
        'v1 verify wrong': seen['v1 verify wrong'],
        'v1 verify right': seen['v1 verify right'],
        'zend verify': seen['zend verify'],
        resend: seen.resend,
        'resend too soon': seen['resend too soon'],
        'failed delivery': seen['failed delivery'],
        'rate limited': seen['rate limited'],
        audit: seen.audit,
        analytics: seen.analytics,
      },
      {
        'v1 new send': 3, // admit, flood shield, create
        'zend new send': 3,
        'v1 reuse (KV hint)': 1, // the hinted session
        'v1 status': 1,
        'zend status': 1,
        'v1 verify wrong': 1,
        'v1 verify right': 1,
        'zend verify': 1,
        resend: 4, // reserve at the session, admit (charge), flood shield, apply at the session
        'resend too soon': 1, // the reservation refuses
        'failed delivery': 3, // admit, flood shield, and the failure confirmed (refunded) before the answer
        'rate limited': 1,
        audit: 0,
        analytics: 0,
      },
    );
    assert.ok(seen['v1 reuse (just after the send)'] <= 2, 'reuse without a hint: admit, then the session');
    assert.equal(seen['v1 verify unknown session'], 1);
  });
});
