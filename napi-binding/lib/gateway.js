'use strict';
// SMS / WhatsApp gateways (SPEC §5), sent with fetch. `send()` answers the delivery outcome the
// core understands: 'delivered' (2xx), 'failed' (non-2xx or refused: definite, refunded) or
// 'timedOut' (no answer in 10 s, the fetch is aborted: unknown, charged).

const TIMEOUT_MS = 10_000;

async function post(url, headers, body, timeoutMs) {
  if (!url) return 'failed';
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  try {
    const res = await fetch(url, { method: 'POST', headers, body, signal: controller.signal });
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

  send({ to, from, text, channel, reference }) {
    const headers = { 'content-type': 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const body = JSON.stringify({ to, from, text, channel, reference });
    return post(this.url, headers, body, this.timeoutMs);
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

  send({ to, from, text, channel }) {
    const wa = channel === 'whatsapp';
    const form = new URLSearchParams({
      To: wa ? `whatsapp:${to}` : to,
      From: wa ? `whatsapp:${from}` : from,
      Body: text,
    });
    const auth = Buffer.from(`${this.account || ''}:${this.token || ''}`).toString('base64');
    const headers = { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${auth}` };
    return post(this.url, headers, form.toString(), this.timeoutMs);
  }
}

/** The gateway the environment describes (SMS_GATEWAY_KIND, _URL, _TOKEN, _ACCOUNT). */
function gatewayFromEnv(env = process.env) {
  const kind = (env.SMS_GATEWAY_KIND || 'json').toLowerCase();
  if (kind === 'twilio') {
    return new TwilioGateway({ url: env.SMS_GATEWAY_URL, account: env.SMS_GATEWAY_ACCOUNT, token: env.SMS_GATEWAY_TOKEN });
  }
  if (kind !== 'json') throw new Error('SMS_GATEWAY_KIND must be json or twilio');
  return new JsonGateway({ url: env.SMS_GATEWAY_URL, token: env.SMS_GATEWAY_TOKEN });
}

module.exports = { JsonGateway, TwilioGateway, gatewayFromEnv, TIMEOUT_MS };
