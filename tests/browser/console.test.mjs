// The operator console (public/console/, SPEC §9) in a real browser — Debian's Chromium driven by
// playwright-core — against the Worker under `wrangler dev` and `otpkit serve`, each started as
// the conformance suite starts them (tests/conformance/host.mjs, with the SMS sink of sink.mjs).
//
//   node --test tests/browser/console.test.mjs                      both hosts
//   CONSOLE_HOSTS=node node --test tests/browser/console.test.mjs   one (worker, node, node-redis)
//   OTPKIT_CONSOLE_DOCS=1 …  also rewrites docs/console.png (1280 px) and docs/console-375.png
//
// Screenshots of every view at 1280 and 375 px go to target/screenshots/. Chromium: CHROMIUM
// (default /usr/bin/chromium, installed by scripts/bootstrap), started with the flags this closed
// network needs (no background networking, no component updates, no QUIC).

import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it as itTest } from 'node:test';
import { chromium } from 'playwright-core';
import { ROOT, startHost } from '../conformance/host.mjs';
import { startSink } from '../conformance/sink.mjs';

const KINDS = (process.env.CONSOLE_HOSTS || 'worker,node').split(',').map((s) => s.trim()).filter(Boolean);
const SHOTS = path.join(ROOT, 'target', 'screenshots');
const DOCS = process.env.OTPKIT_CONSOLE_DOCS === '1';
const VIEWS = ['analytics', 'delivery', 'fraud', 'audit', 'session', 'keys', 'policy'];
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (rate) => `${(Number(rate) * 100).toFixed(1)} %`; // as the console writes a rate
const money = (c) => `${c.amount} ${c.currency}`;

let browser = null;
const envs = new Map(); // kind → { host, sink }

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  if (DOCS) mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
  const started = await Promise.allSettled([
    chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: 60_000 }).then((b) => {
      browser = b;
    }),
    ...KINDS.map(async (kind) => {
      const sink = await startSink();
      try {
        envs.set(kind, { host: await startHost({ gatewayUrl: sink.gatewayUrl, kind }), sink });
      } catch (err) {
        await sink.stop();
        throw err;
      }
    }),
  ]);
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) throw failed.reason;
}, { timeout: 6 * 60_000 });

after(async () => {
  await browser?.close();
  for (const { host, sink } of envs.values()) {
    // crash() first (SIGKILL to the host's process group, then waits for its exit): stop() alone
    // waits on a 15 s timer that outlives the host and would hold this process open that long.
    // Nothing of the host's state is kept either way: stop() then removes it.
    await host.crash();
    await host.stop();
    await sink.stop();
  }
});

/** A client of one host's API. */
function client(env) {
  const call = async (method, route, token, body) => {
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${env.host.baseUrl}${route}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    return { status: res.status, headers: res.headers, text, json };
  };
  const admin = (method, route, body) => call(method, route, env.host.adminToken, body);
  return {
    call,
    admin,
    async workspace(name, policy) {
      const r = await admin('POST', '/v1/admin/workspaces', { name, senders: ['OTPKIT'], policy });
      assert.equal(r.status, 201, r.text);
      return { id: r.json.data.workspaceId, key: r.json.data.apiKey, keyId: r.json.data.keyId };
    },
    /** Sends a code to `dest` (200 expected) and reads it from the sink. */
    async send(ws, dest, extra = {}) {
      const r = await call('POST', '/v1/messaging/otp/request', ws.key, { dest, src: 'OTPKIT', purpose: 'LOGIN', ...extra });
      assert.equal(r.status, 200, `request ${dest}: ${r.text}`);
      const text = env.sink.messages(dest).at(-1)?.text || '';
      const code = text.match(/\b\d{6,10}\b/)?.[0];
      assert.ok(code, `a code reached the sink for ${dest}: ${text}`);
      return { sessionId: r.json.data.sessionId, code };
    },
    verify: (ws, sessionId, code) => call('POST', '/v1/messaging/otp/verify', ws.key, { sessionId, code }),
  };
}

/** Polls `fn` until it answers a truthy value (analytics and audit rows may lag up to 2 s). */
async function eventually(fn, what, ms = 8000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(150);
  }
}

/** A fresh browser context (its own sessionStorage) on the console, signed in with `token`. */
async function openConsole(env, token, { width = 1280 } = {}) {
  const context = await browser.newContext({ viewport: { width, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const problems = []; // CSP violations and uncaught errors: none allowed
  const urls = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
  page.on('request', (r) => urls.push(r.url()));
  page.on('dialog', (d) => d.accept());
  await page.goto(`${env.host.baseUrl}/console`);
  assert.equal(new URL(page.url()).pathname, '/console/', '/console redirects to /console/');
  await page.waitForSelector('body[data-ready="true"]');
  await page.fill('#token', token);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');
  await settled(page);
  return { context, page, problems, urls };
}

/** The text of `selector` with its white space collapsed. */
async function text(page, selector) {
  return (await page.textContent(selector))?.replace(/\s+/g, ' ').trim();
}

/** Waits until the page has no API request in flight (public/console/api.js counts them). */
async function settled(page) {
  await page.waitForSelector('html[data-pending="0"]', { state: 'attached' });
}

async function showView(page, view) {
  await page.click(`#tabs a[data-view="${view}"]`);
  await page.waitForSelector(`#view-${view}:not([hidden])`);
  await settled(page);
}

/** Picks the admin's workspace (a view of one: fraud, keys, policy) and waits for its data. */
async function pickWorkspace(page, id) {
  if ((await page.inputValue('#ws-select')) !== id) await page.selectOption('#ws-select', id);
  await settled(page);
}

async function shoot(page, kind, name) {
  const width = page.viewportSize().width;
  const file = path.join(SHOTS, `console-${kind}-${name}-${width}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

for (const kind of KINDS) {
  describe(`console on ${kind}`, () => {
    let env;
    let api;
    let ws; // the workspace whose figures are checked
    let approved; // a verified session of ws

    let failures = 0;
    // A failing test also shows the end of the host's output (the same tail host.mjs keeps).
    const it = (name, fn) => itTest(name, async (t) => {
      try {
        await fn(t);
      } catch (err) {
        failures += 1;
        throw err;
      }
    });

    before(() => {
      env = envs.get(kind);
      api = client(env);
    });
    after(() => {
      if (failures && env) process.stderr.write(`--- the last lines of the ${kind} host's output ---\n${env.host.output().split('\n').slice(-40).join('\n')}\n`);
    });

    it('is served at /console: redirect, content types, CSP and cache headers, no traversal; the API is untouched', async () => {
      const base = env.host.baseUrl;
      const redirect = await fetch(`${base}/console`, { redirect: 'manual' });
      assert.equal(redirect.status, 307);
      assert.equal(redirect.headers.get('location'), '/console/');
      const html = await fetch(`${base}/console/`);
      assert.equal(html.status, 200);
      assert.match(html.headers.get('content-type'), /^text\/html/);
      const csp = html.headers.get('content-security-policy');
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /script-src 'self'(;|$)/);
      assert.match(csp, /style-src 'self'(;|$)/);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
      assert.equal(html.headers.get('x-content-type-options'), 'nosniff');
      assert.match(html.headers.get('cache-control'), /must-revalidate/);
      assert.ok(html.headers.get('etag'), 'an ETag');
      const body = await html.text();
      assert.doesNotMatch(body, /<script(?![^>]*\bsrc=)[^>]*>/i, 'no inline script');
      assert.doesNotMatch(body, /<style|\sstyle=/i, 'no inline style');
      for (const [file, type] of [['app.js', /javascript/], ['style.css', /^text\/css/], ['vendor/uPlot.iife.min.js', /javascript/]]) {
        const r = await fetch(`${base}/console/${file}`);
        assert.equal(r.status, 200, file);
        assert.match(r.headers.get('content-type'), type, file);
        assert.equal(r.headers.get('content-security-policy'), csp, `${file}: the same CSP`);
        await r.arrayBuffer();
      }
      const head = await fetch(`${base}/console/app.js`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      // Nothing outside public/console: traversal attempts and unknown files are the API's 404.
      for (const p of ['/console/nope.js', '/console/%2e%2e/wrangler.toml', '/console/..%2f..%2fpackage.json', '/console/%2e%2e%2f_headers', '/_headers']) {
        const r = await fetch(`${base}${p}`);
        const t = await r.text();
        assert.equal(r.status, 404, `${p}: ${t.slice(0, 80)}`);
        assert.match(t, /NOT_FOUND/, p);
      }
      const health = await fetch(`${base}/health`);
      assert.deepEqual(await health.json(), { status: 'ok' });
    });

    it('admin sign-in: the figures shown equal the API\'s (analytics, delivery, by workspace)', async () => {
      ws = await api.workspace(`Console ${kind}`, { pricePerSegment: { amount: '0.0075', currency: 'USD' }, resendAfterSeconds: 0 });
      const dests = ['+233201110001', '+233201110002', '+233201110003', '+233201110004'];
      const sent = [];
      for (const d of dests) sent.push(await api.send(ws, d));
      for (const s of sent.slice(0, 2)) assert.equal((await api.verify(ws, s.sessionId, s.code)).status, 200);
      approved = sent[0];
      const resend = await api.call('POST', `/v1/messaging/otp/sessions/${sent[3].sessionId}/resend`, ws.key);
      assert.equal(resend.status, 200, resend.text);
      env.sink.setMode('+233201110009', 'fail500');
      const failed = await api.call('POST', '/v1/messaging/otp/request', ws.key, { dest: '+233201110009', src: 'OTPKIT', purpose: 'LOGIN' });
      assert.equal(failed.status, 502, failed.text);
      await eventually(async () => {
        const r = await api.call('GET', '/otp/analytics?days=30', ws.key);
        const t = r.json?.totals;
        return t && t.verified === 2 && t.delivery_failed === 1 && t.resent === 1 && t.sent >= 4;
      }, 'the analytics rows');

      const { context, page, problems, urls } = await openConsole(env, env.host.adminToken);
      try {
        // the token: in this tab's sessionStorage only, never in a URL, no cookie, no localStorage
        const stored = await page.evaluate(() => ({ session: sessionStorage.getItem('otpkit.console.auth'), local: localStorage.length, cookie: document.cookie, href: location.href }));
        assert.equal(JSON.parse(stored.session).token, env.host.adminToken);
        assert.equal(stored.local, 0);
        assert.equal(stored.cookie, '');
        assert.ok(urls.every((u) => !u.includes(env.host.adminToken)) && !stored.href.includes(env.host.adminToken), 'the token is in no URL');

        const report = (await api.admin('GET', '/v1/admin/analytics?days=7')).json;
        await page.selectOption('#an-days', '7');
        await page.click('#analytics-form button[type=submit]');
        await page.waitForFunction((from) => document.querySelector('#an-scope')?.textContent.includes(`${from} to`), report.from);
        assert.equal(await text(page, '[data-metric="sent"]'), String(report.totals.sent));
        assert.equal(await text(page, '[data-metric="verified"]'), String(report.totals.verified));
        assert.equal(await text(page, '[data-metric="conversion"]'), pct(report.totals.verification_rate));
        assert.equal(await text(page, '[data-metric="cost"]'), money(report.totals.estimated_cost));
        assert.equal(await text(page, '[data-metric="segments"]'), String(report.totals.sms_segments));
        // today's row of the per-day table, and this workspace's row
        const lastRow = await page.$$eval('#an-days-table tbody tr:last-child > *', (cells) => cells.map((c) => c.textContent.trim()));
        const today = report.days.at(-1);
        assert.deepEqual(lastRow, [today.date, String(today.sent), String(today.verified), pct(today.verification_rate), money(today.estimated_cost)]);
        const wsRow = await page.$$eval('#an-workspaces tbody tr', (rows, id) => rows.map((r) => [...r.children].map((c) => c.textContent.trim())).find((r) => r[0].includes(id)), ws.id);
        const mine = report.workspaces.find((w) => w.workspace_id === ws.id).totals;
        assert.deepEqual(wsRow.slice(1), [String(mine.sent), String(mine.verified), pct(mine.verification_rate), money(mine.estimated_cost)]);
        assert.equal(await page.locator('#ch-sent canvas').count() > 0, true, 'the per-day chart is drawn');
        // By country: every calling code of the admin report, busiest first.
        const countries = await page.$$eval('#an-country tbody tr > :first-child', (cells) => cells.map((c) => c.textContent.trim()));
        assert.deepEqual(countries, Object.entries(report.by_country).sort((a, b) => b[1].sent - a[1].sent).map(([k]) => (k === 'other' ? 'other' : `+${k}`)));
        await shoot(page, kind, 'analytics');

        await showView(page, 'delivery');
        assert.equal(await text(page, '[data-metric="dl-sent"]'), String(report.totals.sent));
        assert.equal(await text(page, '[data-metric="dl-failed"]'), String(report.totals.delivery_failed));
        assert.equal(await text(page, '[data-metric="dl-resent"]'), String(report.totals.resent));
        assert.equal(report.totals.delivery_failed, 1);
        assert.equal(report.totals.resent, 1);
        await shoot(page, kind, 'delivery');

        // audit as admin: needs a workspace key, which the page asks for
        await eventually(async () => {
          const r = await api.call('GET', `/v1/messaging/otp/audit?sessionId=${approved.sessionId}`, ws.key);
          return r.json?.data.events.some((e) => e.event === 'verify_approved');
        }, 'the audit rows');
        await showView(page, 'audit');
        assert.match(await text(page, '#audit-key-help'), /admin token cannot read them/);
        await page.fill('#audit-key', ws.key);
        await page.click('#audit-key-form button[type=submit]');
        await page.fill('#au-session', approved.sessionId);
        await page.click('#audit-form button[type=submit]');
        await page.waitForSelector('#audit-table[data-results]');
        const events = await page.$$eval('#audit-table tbody tr', (rows) => rows.map((r) => [...r.children].map((c) => c.textContent.trim())));
        const apiEvents = (await api.call('GET', `/v1/messaging/otp/audit?sessionId=${approved.sessionId}&limit=50`, ws.key)).json.data.events;
        assert.deepEqual(events.map((e) => e[1]), apiEvents.map((e) => e.event), 'the same events, newest first');
        assert.ok(events.every((e) => e[4] === approved.sessionId));
        assert.ok(events.some((e) => e[1] === 'verify_approved'));
        assert.deepEqual(problems, []);
      } finally {
        await context.close();
      }
    });

    it('API-key sign-in: its workspace\'s figures, audit, session lookup; Fraud Guard says it needs the admin token', async () => {
      const { context, page, problems } = await openConsole(env, ws.key);
      try {
        assert.equal(await page.locator('#tabs a[data-view="keys"]').isVisible(), false, 'no key management with an API key');
        await page.waitForFunction(() => document.querySelector('#an-scope')?.textContent.includes('This workspace'));
        const report = (await api.call('GET', '/otp/analytics?days=30', ws.key)).json;
        assert.equal(await text(page, '[data-metric="sent"]'), String(report.totals.sent));
        assert.equal(await text(page, '[data-metric="verified"]'), String(report.totals.verified));
        assert.equal(await text(page, '[data-metric="conversion"]'), pct(report.totals.verification_rate));
        assert.equal(await text(page, '[data-metric="cost"]'), money(report.totals.estimated_cost));
        const byPurpose = await page.$$eval('#an-purpose tbody tr', (rows) => rows.map((r) => [...r.children].map((c) => c.textContent.trim())));
        assert.deepEqual(byPurpose, Object.entries(report.by_purpose).map(([p, c]) => [p, String(c.sent), String(c.verified), pct(c.verification_rate), money(c.estimated_cost)]));
        const byCountry = await page.$$eval('#an-country tbody tr', (rows) => rows.map((r) => [...r.children].map((c) => c.textContent.trim())));
        assert.ok(Object.keys(report.by_country).length >= 1, 'the API answers by country');
        assert.deepEqual(
          byCountry,
          Object.entries(report.by_country).sort((a, b) => b[1].sent - a[1].sent)
            .map(([k, c]) => [k === 'other' ? 'other' : `+${k}`, String(c.sent), String(c.verified), pct(c.verification_rate), money(c.estimated_cost)]),
        );

        await showView(page, 'fraud');
        assert.equal(await page.locator('#fraud-needs-admin').isVisible(), true);
        assert.match(await text(page, '#fraud-needs-admin'), /needs the admin token/);

        await showView(page, 'audit');
        assert.equal(await page.locator('#audit-key-block').isVisible(), false, 'an API key reads its own audit');
        await page.click('#audit-form button[type=submit]');
        await page.waitForSelector('#audit-table[data-results]');
        const kinds = await page.$$eval('#audit-table tbody tr > :nth-child(2)', (cells) => cells.map((c) => c.textContent.trim()));
        for (const e of ['requested', 'delivered', 'verify_approved', 'resent', 'delivery_failed']) assert.ok(kinds.includes(e), `audit shows ${e}: ${kinds}`);
        await shoot(page, kind, 'audit');

        await showView(page, 'session');
        await page.fill('#se-id', approved.sessionId);
        await page.click('#session-form button[type=submit]');
        await page.waitForSelector('#session-out [data-prop="state"]');
        const view = (await api.call('GET', `/v1/messaging/otp/sessions/${approved.sessionId}`, ws.key)).json.data;
        assert.equal(await text(page, '[data-prop="state"]'), 'APPROVED');
        assert.equal(await text(page, '[data-prop="number"]'), view.dest);
        assert.equal(await text(page, '[data-prop="session"]'), approved.sessionId);
        await shoot(page, kind, 'session');

        await page.click('#signout');
        await page.waitForSelector('#signin-view:not([hidden])');
        assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'signed out: nothing kept');
        assert.equal(await page.locator('#session-out dd').count(), 0, 'signed out: nothing of the last session on the page');
        assert.deepEqual(problems, []);
      } finally {
        await context.close();
      }
    });

    it('keys: a key created on the page is shown once and works; revoked on the page, it is refused', async () => {
      const { context, page, problems } = await openConsole(env, env.host.adminToken);
      try {
        await showView(page, 'keys');
        await pickWorkspace(page, ws.id);
        assert.match(await text(page, '#keys-table caption'), new RegExp(ws.id));
        await page.click('#key-create');
        await page.waitForSelector('#key-new:not([hidden])');
        const key = await page.inputValue('#key-new-value');
        assert.match(key, /^otpk_[A-Za-z0-9_-]{43}$/);
        assert.equal((await api.call('GET', '/otp/analytics?days=1', key)).status, 200, 'the new key works');
        const detail = (await api.admin('GET', `/v1/admin/workspaces/${ws.id}`)).json.data;
        const created = detail.keys.find((k) => k.keyId !== ws.keyId && !k.revokedAt);
        await page.waitForSelector(`#keys-table button[data-revoke="${created.keyId}"]`);
        await shoot(page, kind, 'keys');
        await page.click('#key-new-done');
        assert.equal(await page.inputValue('#key-new-value'), '', 'the key is gone from the page once copied');
        await page.click(`#keys-table button[data-revoke="${created.keyId}"]`); // confirm() is accepted
        await page.waitForSelector(`#keys-table button[data-revoke="${created.keyId}"]`, { state: 'detached' });
        assert.equal((await api.call('GET', '/otp/analytics?days=1', key)).status, 401, 'the revoked key is refused');
        const after = (await api.admin('GET', `/v1/admin/workspaces/${ws.id}`)).json.data;
        assert.ok(after.keys.find((k) => k.keyId === created.keyId).revokedAt);
        assert.equal((await api.call('GET', '/otp/analytics?days=1', ws.key)).status, 200, 'the other key still works');
        assert.deepEqual(problems, []);
      } finally {
        await context.close();
      }
    });

    it('policy editor: bounds checked in the page, a server error shown at its field, a change saved', async () => {
      const { context, page, problems } = await openConsole(env, env.host.adminToken);
      const patches = [];
      page.on('request', (r) => {
        if (r.method() === 'PATCH') patches.push(r.postData());
      });
      try {
        await showView(page, 'policy');
        await pickWorkspace(page, ws.id);
        assert.equal(await page.getAttribute('#policy-form', 'data-workspace'), ws.id);
        assert.equal(await page.inputValue('#pol-ttlSeconds'), '300');
        // out of bounds: caught in the page, nothing sent
        await page.fill('#pol-ttlSeconds', '5');
        await page.click('#policy-save');
        await page.waitForSelector('#pol-ttlSeconds-err:not([hidden])');
        assert.match(await text(page, '#pol-ttlSeconds-err'), /from 60 to 600/);
        assert.equal(await page.getAttribute('#pol-ttlSeconds', 'aria-invalid'), 'true');
        assert.equal(patches.length, 0, 'no request for an out-of-bounds value');
        // in bounds but refused by the server: a spend limit in another currency than the price's
        await page.fill('#pol-ttlSeconds', '120');
        await page.fill('#pol-dailySpendLimit-amount', '10');
        await page.fill('#pol-dailySpendLimit-currency', 'EUR');
        await page.click('#policy-save');
        await page.waitForSelector('#pol-dailySpendLimit-currency-err:not([hidden])');
        assert.match(await text(page, '#pol-dailySpendLimit-currency-err'), /VALIDATION_ERROR/);
        assert.equal(patches.length, 1);
        assert.equal((await api.admin('GET', `/v1/admin/workspaces/${ws.id}`)).json.data.policy.ttlSeconds, 300, 'nothing saved');
        await shoot(page, kind, 'policy-error');
        // fixed: saved, and only the changed keys were sent
        await page.fill('#pol-dailySpendLimit-currency', 'USD');
        await page.click('#policy-save');
        await page.waitForFunction(() => document.querySelector('#status')?.textContent.startsWith('Policy saved'));
        assert.deepEqual(Object.keys(JSON.parse(patches.at(-1)).policy).sort(), ['dailySpendLimit', 'ttlSeconds']);
        const policy = (await api.admin('GET', `/v1/admin/workspaces/${ws.id}`)).json.data.policy;
        assert.equal(policy.ttlSeconds, 120);
        assert.deepEqual(policy.dailySpendLimit, { amount: '10', currency: 'USD' });
        assert.deepEqual(problems, []);
      } finally {
        await context.close();
      }
    });

    it('nothing overflows at 375 px; every field has a label; screenshots of every view', async () => {
      for (const width of [375, 1280]) {
        const { context, page, problems } = await openConsole(env, env.host.adminToken, { width });
        try {
          await page.evaluate((key) => sessionStorage.setItem('otpkit.console.auditKey', key), ws.key);
          for (const view of VIEWS) {
            await showView(page, view);
            if (view === 'audit') {
              await page.click('#audit-form button[type=submit]');
              await page.waitForSelector('#audit-table[data-results]');
            }
            if (view === 'session') {
              await page.fill('#se-id', approved.sessionId);
              await page.click('#session-form button[type=submit]');
              await page.waitForSelector('#session-out [data-prop="state"]');
            }
            if (view === 'keys') await page.waitForSelector('#keys-table tbody tr');
            if (view === 'policy') await page.waitForSelector('#pol-ttlSeconds');
            await sleep(150); // charts settle after their resize
            const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
            assert.ok(scrollWidth <= width, `${view} at ${width} px: document is ${scrollWidth} px wide`);
            const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
              .filter((e) => e.offsetParent !== null && e.labels.length === 0 && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
              .map((e) => e.id || e.outerHTML.slice(0, 60)));
            assert.deepEqual(unlabelled, [], `${view}: every visible field has a label`);
            const file = await shoot(page, kind, view);
            if (DOCS && kind === KINDS[0] && view === 'analytics') {
              copyFileSync(file, path.join(ROOT, 'docs', width === 375 ? 'console-375.png' : 'console.png'));
            }
          }
          assert.deepEqual(problems, []);
        } finally {
          await context.close();
        }
      }
    });

    // Last: Fraud Guard's host support arrived last.
    it('fraud guard: a prefix blocked by a pumping run is listed and unblocked from the page', async () => {
      const fws = await api.workspace(`Pumped ${kind}`, { pricePerSegment: { amount: '0.01', currency: 'USD' } });
      const patch = await api.admin('PATCH', `/v1/admin/workspaces/${fws.id}`, { policy: { fraudGuard: { enabled: true, minSends: 5 } } });
      assert.equal(patch.status, 200, patch.text);
      // a pumping run: distinct numbers in +233 55x, none verified
      const statuses = [];
      for (let i = 0; i < 7; i++) {
        const r = await api.call('POST', '/v1/messaging/otp/request', fws.key, { dest: `+23355${String(1000000 + i)}`, src: 'OTPKIT', purpose: 'LOGIN' });
        statuses.push(r.status);
      }
      assert.deepEqual(statuses.slice(0, 5), [200, 200, 200, 200, 200], `sends: ${statuses}`);
      assert.equal(statuses.at(-1), 403, `the pumped prefix is refused: ${statuses}`);
      const fraud = (await api.admin('GET', `/v1/admin/workspaces/${fws.id}/fraud`)).json.data;
      const blocked = fraud.prefixes.find((p) => p.blocked);
      assert.ok(blocked, JSON.stringify(fraud));
      assert.equal(blocked.prefix, '+233551');
      const refused = await eventually(async () => {
        const report = (await api.admin('GET', '/v1/admin/analytics?days=30')).json;
        const t = report.workspaces.find((w) => w.workspace_id === fws.id)?.totals;
        return t?.fraud_blocked === 2 && t;
      }, 'fraud_blocked in the analytics');

      const { context, page, problems } = await openConsole(env, env.host.adminToken);
      try {
        await showView(page, 'fraud');
        await page.click('#ws-reload'); // the workspace is newer than the list
        await settled(page);
        await pickWorkspace(page, fws.id);
        await page.waitForSelector(`#fraud-table button[data-unblock="${blocked.prefix}"]`);
        const row = await page.$$eval('#fraud-table tbody tr', (rows) => rows.map((r) => [...r.children].map((c) => c.textContent.trim()))[0]);
        assert.deepEqual(row.slice(0, 4), [blocked.prefix, String(blocked.sends), String(blocked.verified), pct(blocked.conversion)]);
        assert.match(row[4], /^blocked until /);
        assert.equal(row[5], String(blocked.refused));
        assert.match(await text(page, '#fraud-policy'), /Fraud Guard is on/);
        assert.equal(await text(page, '#fraud-saved'), `Last 30 days: 2 sends refused by Fraud Guard, ${money(refused.fraud_saved)} not spent.`);
        await shoot(page, kind, 'fraud-blocked');
        await page.click(`#fraud-table button[data-unblock="${blocked.prefix}"]`);
        await page.waitForSelector(`#fraud-table button[data-unblock="${blocked.prefix}"]`, { state: 'detached' });
        await page.waitForFunction(() => document.querySelector('#status')?.textContent.includes('unblocked'));
        const afterUnblock = (await api.admin('GET', `/v1/admin/workspaces/${fws.id}/fraud`)).json.data;
        assert.ok(!afterUnblock.prefixes.some((p) => p.prefix === blocked.prefix && p.blocked), JSON.stringify(afterUnblock));
        const again = await api.call('POST', '/v1/messaging/otp/request', fws.key, { dest: '+233551999999', src: 'OTPKIT', purpose: 'LOGIN' });
        assert.equal(again.status, 200, `sends to the prefix go again: ${again.text}`);
        assert.deepEqual(problems, []);
      } finally {
        await context.close();
      }
    });
  });
}
