'use strict';
// SMS / WhatsApp gateways (SPEC §5), sent with fetch. otpkit-core encodes the request
// (native.encodeGatewayRequest, the same bytes the Worker sends); this file only performs it.
// `send()` answers the delivery outcome the core understands: 'delivered' (2xx), 'failed'
// (non-2xx or refused: definite, refunded) or 'timedOut' (no answer in 10 s, the fetch is
// aborted: unknown, charged).
//
// A redirect is never followed: the request carries the number and the code, and a 3xx is a
// definite failure like any other non-2xx (following one would re-POST them to wherever the
// Location points, or turn a 302 into a GET whose 2xx "delivers" nothing). The status alone
// decides; of the reply body at most MAX_REPLY_BYTES are read (so a small reply leaves the
// connection reusable) before the rest is cancelled.

const native = require('./native');
const { fromNative } = require('./errors');

const TIMEOUT_MS = 10_000;
/** At most this much of a gateway's reply body is read; the rest is cancelled (otpkit_core::gateway::MAX_REPLY_BYTES). */
const MAX_REPLY_BYTES = 64 * 1024;

/** The core's request for `message` through gateway `kind`, or null without a URL. */
function encode(kind, { url, token, account }, { to, from, text, channel, reference }) {
  try {
    return native.encodeGatewayRequest(kind, url ? String(url) : null, token ?? null, account ?? null, to, from, text, channel, reference ?? '');
  } catch (e) {
    throw fromNative(e);
  }
}

/**
 * POSTs the core's request. `onFailure` (optional) hears why a send did not get a 2xx:
 * `{status}` (the gateway's answer), `{timedOut: true}`, or `{}` (not reachable, none configured).
 */
async function post(req, timeoutMs, onFailure = null) {
  const fail = (cause, outcome = 'failed') => {
    onFailure?.(cause);
    return outcome;
  };
  if (!req) return fail({}); // no gateway URL configured
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  try {
    const res = await fetch(req.url, { method: req.method, headers: req.headers, body: req.body, redirect: 'manual', signal: controller.signal });
    await discard(res.body);
    // A 3xx (undici answers the real one for redirect: 'manual') is not 2xx: failed.
    return res.status >= 200 && res.status < 300 ? 'delivered' : fail({ status: res.status });
  } catch {
    return timedOut ? fail({ timedOut: true }, 'timedOut') : fail({});
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Reads and drops a reply body, up to MAX_REPLY_BYTES: a short one is drained (the connection
 * can be reused), a longer one is cancelled there (the connection is closed). Never throws.
 */
async function discard(body) {
  if (!body) return;
  let reader;
  try {
    reader = body.getReader();
    let read = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      read += value.byteLength;
      if (read > MAX_REPLY_BYTES) break;
    }
  } catch {
    // aborted or reset while reading: the status has decided already
  }
  await reader?.cancel().catch(() => {});
}

/** `POST url` with `{to, from, text, channel, reference}` and `Authorization: Bearer token`. */
class JsonGateway {
  /** @param {{url: string, token?: string, timeoutMs?: number}} opts */
  constructor({ url, token, timeoutMs = TIMEOUT_MS } = {}) {
    this.url = url;
    Object.defineProperty(this, 'token', { value: token, enumerable: false });
    this.timeoutMs = timeoutMs;
  }

  get kind() {
    return 'json';
  }

  /** `opts.onFailure`: see post(). */
  async send(message, opts = {}) {
    return post(encode('json', this, message), this.timeoutMs, opts.onFailure);
  }
}

/** Twilio Messages API form encoding (`To`, `From`, `Body`; `whatsapp:` prefix), basic auth. */
class TwilioGateway {
  /** @param {{url: string, account: string, token: string, timeoutMs?: number}} opts */
  constructor({ url, account, token, timeoutMs = TIMEOUT_MS } = {}) {
    this.url = url;
    this.account = account;
    Object.defineProperty(this, 'token', { value: token, enumerable: false });
    this.timeoutMs = timeoutMs;
  }

  get kind() {
    return 'twilio';
  }

  /** `opts.onFailure`: see post(). */
  async send(message, opts = {}) {
    return post(encode('twilio', this, message), this.timeoutMs, opts.onFailure);
  }
}

/** Whether `hostname` (as `URL#hostname` spells it) is this machine: 127.0.0.0/8, localhost, [::1]. */
function isLoopback(hostname) {
  const h = hostname.toLowerCase().replace(/\.$/, '');
  return h === 'localhost' || h === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(h) ||
    /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(h); // ::ffff:127.x.y.z
}

/**
 * The warning for a gateway URL that would carry the token and every code in clear over the
 * network (plain http:// to a host that is not this machine), or null. Names the host only:
 * never the whole URL (it may hold credentials), the token or a code.
 */
function plainHttpWarning(url) {
  if (!url) return null;
  let u;
  try {
    u = new URL(String(url));
  } catch {
    return null; // not a URL: every send fails, nothing crosses the network
  }
  if (u.protocol !== 'http:' || isLoopback(u.hostname)) return null;
  return `otpkit: warning: SMS_GATEWAY_URL is plain http:// to ${u.hostname}: the gateway token and every code would cross the network unencrypted; use https://`;
}

/**
 * The gateway the environment describes (SMS_GATEWAY_KIND, _URL, _TOKEN, _ACCOUNT). Throws an
 * OtpError MISCONFIGURED ("SMS_GATEWAY_KIND must be json or twilio") for an unknown kind.
 * Calls `warn` (default console.warn; null: silent) with one line when SMS_GATEWAY_URL is
 * plain http:// to a host other than this machine.
 */
function gatewayFromEnv(env = process.env, { warn = console.warn } = {}) {
  let kind;
  try {
    kind = native.gatewayKind(env.SMS_GATEWAY_KIND ?? null);
  } catch (e) {
    throw fromNative(e);
  }
  const warning = plainHttpWarning(env.SMS_GATEWAY_URL);
  if (warning && warn) warn(warning);
  if (kind === 'twilio') {
    return new TwilioGateway({ url: env.SMS_GATEWAY_URL, account: env.SMS_GATEWAY_ACCOUNT, token: env.SMS_GATEWAY_TOKEN });
  }
  return new JsonGateway({ url: env.SMS_GATEWAY_URL, token: env.SMS_GATEWAY_TOKEN });
}

module.exports = { JsonGateway, TwilioGateway, gatewayFromEnv, TIMEOUT_MS, MAX_REPLY_BYTES };
