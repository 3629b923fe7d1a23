// GET /openapi.json serves core/openapi.yaml, and every route and status this suite saw (the other
// files log them through lib.mjs call(); `run` runs this file last) is described in it.

import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { assert, call, expectStatus, useHarness } from './lib.mjs';
import { ROOT } from './host.mjs';

useHarness();

const source = readFileSync(path.join(ROOT, 'core', 'openapi.yaml'), 'utf8');
const doc = JSON.parse(source.slice(source.indexOf('{')));

/** The path template of doc that a concrete path matches, or null. */
function template(p) {
  for (const t of Object.keys(doc.paths)) {
    const re = new RegExp(`^${t.replace(/[.]/g, '\\.').replace(/\{[^}]+\}/g, '[^/]+')}$`);
    if (re.test(p)) return t;
  }
  return null;
}

describe('openapi', () => {
  it('GET /openapi.json answers openapi.yaml as JSON, without authentication', async () => {
    const res = await call('GET', '/openapi.json');
    const j = expectStatus(res, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.deepEqual(j, doc);
    assert.equal(j.openapi, '3.1.0');
  });

  it('every (route, status) the suite exercised is in openapi.yaml', (t) => {
    const log = process.env.OTPKIT_CALL_LOG;
    if (!log || !existsSync(log) || !process.env.OTPKIT_FULL_SUITE) {
      t.skip('needs a whole run of tests/conformance/run (the other files log the calls)');
      return;
    }
    const seen = new Set(readFileSync(log, 'utf8').split('\n').filter(Boolean));
    const missing = [];
    const covered = new Set();
    for (const line of seen) {
      const [method, p, status] = line.split(' ');
      // 404 for unknown paths and 405 for wrong methods are global (described in info).
      if (status === '405') continue;
      const tpl = template(p);
      if (tpl === null) {
        if (status !== '404') missing.push(`${line} (no such path in openapi.yaml)`);
        continue;
      }
      const op = doc.paths[tpl][method === 'HEAD' ? 'get' : method.toLowerCase()];
      if (!op) {
        missing.push(`${line} (no ${method} on ${tpl})`);
        continue;
      }
      if (!op.responses[status]) missing.push(`${method} ${tpl} ${status}`);
      else covered.add(`${method} ${tpl} ${status}`);
    }
    assert.deepEqual([...new Set(missing)].sort(), [], 'responses the suite saw that openapi.yaml does not describe');
    // The log is from a whole run, not an empty one.
    assert.ok(covered.size >= 30, `only ${covered.size} (route, status) pairs were logged`);
  });
});
