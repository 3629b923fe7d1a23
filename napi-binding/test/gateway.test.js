'use strict';
// The gateway client (lib/gateway.js) against the conformance suite's SMS sink: a redirect is
// never followed (a 3xx is 'failed', and nothing reaches the Location), a huge reply is read
// only up to MAX_REPLY_BYTES, and a plain-http:// gateway URL to another machine is warned
// about at start-up (by gatewayFromEnv and so by `otpkit serve`), without the token.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const { JsonGateway, TwilioGateway, gatewayFromEnv } = require('../lib/gateway');
const { PEPPER, freePort, startSink, newDest } = require('./helpers');

const TOKEN = 'gw-token-must-never-be-printed-0123';

const message = (to) => ({ to, from: 'OTPKIT', text: '123456 is your code', channel: 'sms', reference: 'sess_1' });

describe('gateway client: redirects and replies', () => {
  let sink;
  before(async () => {
    sink = await startSink();
  });
  after(async () => {
    await sink?.stop();
  });

  for (const status of [302, 307, 308]) {
    it(`a ${status} is a definite failure and is not followed (json and twilio)`, async () => {
      for (const gw of [
        new JsonGateway({ url: sink.gatewayUrl, token: TOKEN }),
        new TwilioGateway({ url: sink.gatewayUrl, account: 'AC1', token: TOKEN }),
      ]) {
        const to = newDest();
        sink.setMode(to, `redirect${status}`);
        assert.equal(await gw.send(message(to)), 'failed');
        const msgs = sink.messages(to);
        assert.equal(msgs.length, 1, 'one POST');
        assert.deepEqual(msgs[0].followed, [], 'nothing reached the redirect target');
      }
    });
  }

  it('a 50 MB reply: the status decides (delivered), and the rest of the body is cancelled', async () => {
    const to = newDest();
    sink.setMode(to, 'huge');
    const gw = new JsonGateway({ url: sink.gatewayUrl, token: TOKEN });
    const started = Date.now();
    assert.equal(await gw.send(message(to)), 'delivered');
    assert.ok(Date.now() - started < 5_000, 'promptly');
    const deadline = Date.now() + 5_000;
    let reply;
    while (Date.now() < deadline) {
      reply = sink.messages(to)[0].reply;
      if (reply.complete || reply.closedEarly) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(reply.complete, false, `not read to the end (the sink wrote ${reply.written} bytes)`);
    assert.equal(reply.closedEarly, true, 'the connection was closed');
  });

  it('a short reply still decides by its status (500 → failed, 200 → delivered)', async () => {
    const gw = new JsonGateway({ url: sink.gatewayUrl, token: TOKEN });
    const bad = newDest();
    sink.setMode(bad, 'fail500');
    assert.equal(await gw.send(message(bad)), 'failed');
    assert.equal(await gw.send(message(newDest())), 'delivered');
  });
});

describe('gateway client: plain-http:// warning at start-up', () => {
  const warnings = (url, extra = {}) => {
    const seen = [];
    gatewayFromEnv({ SMS_GATEWAY_URL: url, SMS_GATEWAY_TOKEN: TOKEN, ...extra }, { warn: (m) => seen.push(m) });
    return seen;
  };

  it('warns once, naming the host only, for http:// to another machine', () => {
    const url = 'http://user:hunter2@sms.example.net:8080/send?key=query-secret';
    for (const kind of [undefined, 'twilio']) {
      const seen = warnings(url, { SMS_GATEWAY_KIND: kind, SMS_GATEWAY_ACCOUNT: 'AC1' });
      assert.equal(seen.length, 1, `one warning (${kind ?? 'json'})`);
      assert.match(seen[0], /SMS_GATEWAY_URL is plain http:\/\/ to sms\.example\.net\b.*https:\/\//);
      assert.doesNotMatch(seen[0], /\n/);
      for (const secret of [TOKEN, 'hunter2', 'query-secret', 'user']) assert.ok(!seen[0].includes(secret), `no ${secret}`);
    }
    assert.equal(warnings('HTTP://10.0.0.7/sms').length, 1);
    assert.equal(warnings('http://[2001:db8::1]/sms').length, 1);
    assert.equal(warnings('http://127.example.com/sms').length, 1);
  });

  it('does not warn for https://, loopback (127.0.0.0/8, localhost, [::1]), or no URL', () => {
    for (const url of [
      'https://sms.example.net/send',
      'http://127.0.0.1:8788/sms',
      'http://127.3.2.1/sms',
      'http://localhost:9000/sms',
      'http://LOCALHOST./sms',
      'http://[::1]:9000/sms',
      undefined,
      '',
      'not a url',
    ]) {
      assert.deepEqual(warnings(url), [], String(url));
    }
  });

  it('warn: null silences it', () => {
    assert.doesNotThrow(() => gatewayFromEnv({ SMS_GATEWAY_URL: 'http://sms.example.net/' }, { warn: null }));
  });

  /** Starts `otpkit serve` with `env`, waits until it listens, stops it; answers its stderr. */
  async function serveStderr(env) {
    const port = await freePort();
    const child = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'otpkit.js'), 'serve'], {
      env: { PATH: process.env.PATH, OTP_PEPPER: PEPPER, PORT: String(port), OTPKIT_BIND: '127.0.0.1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise((r) => child.once('exit', r));
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`otpkit serve did not listen: ${stderr}`)), 10_000);
      child.stdout.on('data', (d) => {
        stdout += d;
        if (stdout.includes('listening')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', () => {
        clearTimeout(timer);
        reject(new Error(`otpkit serve exited: ${stderr}`));
      });
    });
    child.kill('SIGTERM');
    await exited;
    return stderr;
  }

  it('`otpkit serve` warns on its stderr (one line, no token) for an http:// gateway elsewhere, not for https://', async () => {
    const warned = await serveStderr({ SMS_GATEWAY_URL: 'http://sms.example.net/send', SMS_GATEWAY_TOKEN: TOKEN });
    const lines = warned.split('\n').filter((l) => l.includes('SMS_GATEWAY_URL'));
    assert.equal(lines.length, 1, `one warning line: ${warned}`);
    assert.match(lines[0], /plain http:\/\/ to sms\.example\.net/);
    assert.ok(!warned.includes(TOKEN), 'the token is never printed');

    const quiet = await serveStderr({ SMS_GATEWAY_URL: 'https://sms.example.net/send', SMS_GATEWAY_TOKEN: TOKEN });
    assert.ok(!quiet.includes('SMS_GATEWAY_URL'), `no warning for https://: ${quiet}`);
  });
});

describe('gateway client: the native sender (TLS, keep-alive, timeouts, message ids)', () => {
  const http = require('node:http');
  const https = require('node:https');
  const fs = require('node:fs');
  const os = require('node:os');
  const { execFileSync } = require('node:child_process');

  /** A local gateway: `handler(req, body, res)`; counts the TCP connections it accepted. */
  async function serve(handler, tls = null) {
    const onRequest = (req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => handler(req, Buffer.concat(chunks).toString(), res));
    };
    const server = tls ? https.createServer(tls, onRequest) : http.createServer(onRequest);
    let connections = 0;
    server.on(tls ? 'secureConnection' : 'connection', () => connections++);
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const scheme = tls ? 'https' : 'http';
    return {
      url: `${scheme}://127.0.0.1:${server.address().port}/sms`,
      connections: () => connections,
      stop: () => new Promise((r) => server.close(r).closeAllConnections()),
    };
  }

  it('keeps the connection: five sends in a row use one', async () => {
    const gw = await serve((req, body, res) => res.end('{}'));
    try {
      const client = new JsonGateway({ url: gw.url, token: TOKEN });
      for (let i = 0; i < 5; i++) assert.equal(await client.send(message(newDest())), 'delivered');
      assert.equal(gw.connections(), 1);
    } finally {
      await gw.stop();
    }
  });

  it('no answer within timeoutMs is timedOut (onFailure hears {timedOut: true}); a closed port is failed ({})', async () => {
    const gw = await serve(() => {}); // never answers
    try {
      let cause = null;
      const started = Date.now();
      const outcome = await new JsonGateway({ url: gw.url, token: TOKEN, timeoutMs: 300 }).send(message(newDest()), { onFailure: (c) => (cause = c) });
      assert.equal(outcome, 'timedOut');
      assert.deepEqual(cause, { timedOut: true });
      assert.ok(Date.now() - started >= 250, 'not before the timeout');
    } finally {
      await gw.stop();
    }
    const closed = `http://127.0.0.1:${await freePort()}/sms`;
    let cause = null;
    assert.equal(await new JsonGateway({ url: closed, token: TOKEN }).send(message(newDest()), { onFailure: (c) => (cause = c) }), 'failed');
    assert.deepEqual(cause, {});
    cause = null;
    assert.equal(await new JsonGateway({ url: 'not a url', token: TOKEN }).send(message(newDest()), { onFailure: (c) => (cause = c) }), 'failed');
    assert.deepEqual(cause, {});
  });

  it('hands the provider id of an accepted reply to onAccepted, and the status of a refusal to onFailure', async () => {
    const gw = await serve((req, body, res) => {
      const { to } = JSON.parse(body);
      if (to.endsWith('9')) {
        res.statusCode = 429;
        return res.end('{"id":"not-this"}');
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ id: `msg-${to.slice(-4)}` }));
    });
    try {
      const client = new JsonGateway({ url: gw.url, token: TOKEN });
      let id = null;
      assert.equal(await client.send(message('+233201234560'), { onAccepted: (i) => (id = i) }), 'delivered');
      assert.equal(id, 'msg-4560');
      let cause = null;
      id = null;
      assert.equal(await client.send(message('+233201234569'), { onAccepted: (i) => (id = i), onFailure: (c) => (cause = c) }), 'failed');
      assert.deepEqual(cause, { status: 429 });
      assert.equal(id, null);
    } finally {
      await gw.stop();
    }
  });

  it('https: trusts a certificate from NODE_EXTRA_CA_CERTS, refuses one chaining to an unknown CA; a file without one is MISCONFIGURED when the gateway is made', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'otpkit-tls-'));
    const f = (n) => path.join(dir, n);
    const ssl = (...args) => execFileSync('openssl', args, { stdio: 'pipe' });
    ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=otpkit test CA');
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('gw.key'), '-out', f('gw.csr'), '-subj', '/CN=127.0.0.1');
    fs.writeFileSync(f('ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
    ssl('x509', '-req', '-in', f('gw.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('gw.pem'), '-days', '2', '-extfile', f('ext'));
    const seen = [];
    const gw = await serve((req, body, res) => {
      seen.push({ auth: req.headers.authorization, to: JSON.parse(body).to });
      res.end('{"id":"tls-1"}');
    }, { key: fs.readFileSync(f('gw.key')), cert: fs.readFileSync(f('gw.pem')) });
    // NODE_EXTRA_CA_CERTS is read once per process, as Node does: each case is its own process.
    const sendFrom = (env) =>
      new Promise((resolve, reject) => {
        const script = `const { JsonGateway } = require(${JSON.stringify(path.join(__dirname, '..', 'lib', 'gateway'))});
          let gw;
          try { gw = new JsonGateway({ url: ${JSON.stringify(gw.url)}, token: ${JSON.stringify(TOKEN)} }); }
          catch (e) { console.log('constructor', e.code, e.message); process.exit(0); }
          gw.send({ to: '+233201110000', from: 'OTPKIT', text: '123456', channel: 'sms', reference: 'sess_1' }, { onAccepted: (id) => console.log('id', id) })
            .then((o) => console.log('outcome', o), (e) => console.log('error', e.code, e.message));`;
        const child = spawn(process.execPath, ['-e', script], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.on('error', reject);
        child.on('exit', () => resolve(out.trim()));
      });
    try {
      assert.equal(await sendFrom({ NODE_EXTRA_CA_CERTS: f('ca.pem') }), 'id tls-1\noutcome delivered');
      assert.deepEqual(seen, [{ auth: `Bearer ${TOKEN}`, to: '+233201110000' }]);
      assert.equal(await sendFrom({}), 'outcome failed', 'an unknown CA is refused');
      assert.equal(seen.length, 1, 'nothing was sent over the refused connection');
      fs.writeFileSync(f('bad.pem'), 'not a certificate\n');
      assert.match(await sendFrom({ NODE_EXTRA_CA_CERTS: f('bad.pem') }), /^constructor MISCONFIGURED NODE_EXTRA_CA_CERTS .* holds no usable certificate$/);
    } finally {
      await gw.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
