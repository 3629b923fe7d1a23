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
