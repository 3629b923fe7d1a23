// SPEC §9 "Logs": one JSON line per request (time, level, route name, status, latency, workspace,
// error code) and one per failed delivery with its cause (gateway status, masked destination),
// the same fields on every host; never a code, key or full number (zzz-leaks checks the whole
// output for those). Read from the host's own output, as an operator would.

import { describe, it } from 'node:test';
import { readFileSync, existsSync } from 'node:fs';
import { H, assert, eventually, expectStatus, mask, newDest, newWorkspace, useHarness } from './lib.mjs';

useHarness();

/** Every JSON log line the host printed so far (wrangler may prefix a line; the JSON is its tail). */
function logLines() {
  if (!H.hostOutputFile || !existsSync(H.hostOutputFile)) return null;
  const out = [];
  for (const raw of readFileSync(H.hostOutputFile, 'utf8').split('\n')) {
    // wrangler colours a console.warn line: drop its escape sequences, keep the JSON object
    const plain = raw.replace(/\x1b\[[0-9;]*m/g, '');
    const i = plain.indexOf('{"time"');
    if (i === -1) continue;
    try {
      out.push(JSON.parse(plain.slice(i, plain.lastIndexOf('}') + 1)));
    } catch {
      // not one of ours
    }
  }
  return out;
}

describe('logs', () => {
  it('a JSON line per request: route name, status, latency, workspace; error codes; a failed delivery with its cause', async (t) => {
    if (logLines() === null) return t.skip('needs the shared harness of tests/conformance/run (the host output file)');
    const ws = await newWorkspace({ policy: { sendsPerDestination: { limit: 1, windowSeconds: 600 } } });
    const dest = newDest();
    expectStatus(await ws.request(ws.body(dest, { purpose: 'KYC_VERIFICATION' })), 200);
    expectStatus(await ws.request(ws.body(dest, { purpose: 'TRANSACTION' })), 429);
    const failing = newDest();
    await H.sink.setMode(failing, 'fail500');
    expectStatus(await ws.request(ws.body(failing)), 502);
    await H.sink.setMode(failing, 'ok');

    const found = await eventually(() => {
      const lines = logLines();
      const mine = lines.filter((l) => l.msg === 'request' && l.workspace === ws.id);
      const failed = lines.filter((l) => l.msg === 'delivery_failed' && l.dest === mask(failing));
      return mine.length >= 3 && failed.length >= 1 ? { mine, failed } : null;
    }, 5000);
    assert.ok(found, 'the request and delivery-failure lines appear in the host output');
    const byStatus = (s) => found.mine.find((l) => l.status === s);
    const ok = byStatus(200);
    assert.equal(ok.route, 'request');
    assert.equal(ok.method, 'POST');
    assert.equal(ok.level, 'info');
    assert.ok(Number.isInteger(ok.latencyMs) && ok.latencyMs >= 0, JSON.stringify(ok));
    assert.ok(!Number.isNaN(Date.parse(ok.time)));
    assert.equal(ok.error, undefined);
    assert.deepEqual([byStatus(429).level, byStatus(429).error], ['warn', 'RATE_LIMITED']);
    assert.deepEqual([byStatus(502).level, byStatus(502).error], ['error', 'DELIVERY_FAILED']);
    const f = found.failed[0];
    assert.deepEqual([f.level, f.cause, f.gatewayStatus, f.channel], ['warn', 'gateway_status', 500, 'sms']);
    assert.ok(Number.isInteger(f.latencyMs));
    for (const l of [...found.mine, ...found.failed]) {
      const text = JSON.stringify(l);
      assert.ok(!text.includes(dest) && !text.includes(failing), `no full number: ${text}`);
      assert.ok(!text.includes(ws.key), 'no API key');
    }
  });
});
