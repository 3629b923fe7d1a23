'use strict';
// SMS / WhatsApp gateways (SPEC §5), sent with fetch. otpkit-core encodes the request
// (native.encodeGatewayRequest, the same bytes the Worker sends); this file only performs it.
// `send()` answers the delivery outcome the core understands: 'delivered' (2xx), 'failed'
// (non-2xx or refused: definite, refunded) or 'timedOut' (no answer in 10 s, the fetch is
// aborted: unknown, charged).

const native = require('./native');
const { fromNative } = require('./errors');

const TIMEOUT_MS = 10_000;

/** The core's request for `message` through gateway `kind`, or null without a URL. */
function encode(kind, { url, token, account }, { to, from, text, channel, reference }) {
  try {
    return native.encodeGatewayRequest(kind, url ? String(url) : null, token ?? null, account ?? null, to, from, text, channel, reference ?? '');
  } catch (e) {
    throw fromNative(e);
  }
}

async function post(req, timeoutMs) {
  if (!req) return 'failed'; // no gateway URL configured
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  try {
    const res = await fetch(req.url, { method: req.method, headers: req.headers, body: req.body, signal: controller.signal });
    // Drain the body so the connection can be reused; its content does not matter.
    await res.arrayBuffer().catch(() => {});
    return res.status >= 200 && res.status < 300 ? 'delivered' : 'failed';
  } catch {
    return timedOut ? 'timedOut' : 'failed';
  } finally {
    clearTimeout(timer);
  }
}

/** `POST url` with `{to, from, text, channel, reference}` and `Authorization: Bearer token`. */
class JsonGateway {
  /** @param {{url: string, token?: string, timeoutMs?: number}} opts */
  constructor({ url, token, timeoutMs = TIMEOUT_MS } = {}) {
    this.url = url;
    Object.defineProperty(this, 'token', { value: token, enumerable: false });
    this.timeoutMs = timeoutMs;
  }

  async send(message) {
    return post(encode('json', this, message), this.timeoutMs);
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

  async send(message) {
    return post(encode('twilio', this, message), this.timeoutMs);
  }
}

/**
 * The gateway the environment describes (SMS_GATEWAY_KIND, _URL, _TOKEN, _ACCOUNT). Throws an
 * OtpError MISCONFIGURED ("SMS_GATEWAY_KIND must be json or twilio") for an unknown kind.
 */
function gatewayFromEnv(env = process.env) {
  let kind;
  try {
    kind = native.gatewayKind(env.SMS_GATEWAY_KIND ?? null);
  } catch (e) {
    throw fromNative(e);
  }
  if (kind === 'twilio') {
    return new TwilioGateway({ url: env.SMS_GATEWAY_URL, account: env.SMS_GATEWAY_ACCOUNT, token: env.SMS_GATEWAY_TOKEN });
  }
  return new JsonGateway({ url: env.SMS_GATEWAY_URL, token: env.SMS_GATEWAY_TOKEN });
}

module.exports = { JsonGateway, TwilioGateway, gatewayFromEnv, TIMEOUT_MS };
