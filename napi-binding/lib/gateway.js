'use strict';
// SMS / WhatsApp gateways (SPEC §5). otpkit-core encodes the request (the same bytes the Worker
// sends) and the native module sends it (napi-binding/src/send.rs: reqwest + rustls on the
// addon's tokio runtime), one native call per message. `send()` answers the delivery outcome the
// core understands: 'delivered' (2xx), 'failed' (non-2xx or refused: definite, refunded) or
// 'timedOut' (no answer in 10 s: unknown, charged).
//
// A redirect is never followed: the request carries the number and the code, and a 3xx is a
// definite failure like any other non-2xx. The status alone decides; of the reply body at most
// MAX_REPLY_BYTES are read (so a small reply leaves the connection reusable). An accepted reply's
// body is where the provider's message id is (SPEC §8): the core reads it and `send()` hands it to
// `opts.onAccepted`. TLS trusts Mozilla's roots and NODE_EXTRA_CA_CERTS, as Node does.

const native = require('./native');
const { fromNative } = require('./errors');

const TIMEOUT_MS = 10_000;
/** At most this much of a gateway's reply body is read (otpkit_core::gateway::MAX_REPLY_BYTES). */
const MAX_REPLY_BYTES = 64 * 1024;

/** A timeout in ms the native side takes (1 ms to 2^32 − 1; anything else: TIMEOUT_MS). */
const timeout = (ms) => (Number.isFinite(ms) && ms >= 1 ? Math.min(Math.trunc(ms), 0xffffffff) : TIMEOUT_MS);

/**
 * Sends `message` through gateway `kind` and answers its outcome. `onFailure` (optional) hears why
 * a send did not get a 2xx: `{status}` (the gateway's answer), `{timedOut: true}`, or `{}` (not
 * reachable, none configured); `onAccepted` the provider's message id of an accepted message.
 * Rejects with OtpError MISCONFIGURED (unknown kind) or VALIDATION_ERROR (not the core's message).
 */
async function post(kind, { url, token, account, publicBaseUrl }, message, timeoutMs, opts = {}) {
  const { to, from, text, channel, reference, whatsapp } = message;
  const m = { to, from, text, channel, reference: reference ?? '' };
  if (whatsapp) m.whatsapp = whatsapp;
  let sent;
  try {
    sent = await native.sendGatewayMessage(kind, url ? String(url) : null, token ?? null, account ?? null, JSON.stringify(m), String(opts.workspaceId ?? 'default'), publicBaseUrl ?? null, timeout(timeoutMs));
  } catch (e) {
    throw fromNative(e);
  }
  if (sent.outcome === 'delivered') {
    if (sent.messageId) opts.onAccepted?.(sent.messageId);
  } else {
    opts.onFailure?.(sent.outcome === 'timedOut' ? { timedOut: true } : sent.status != null ? { status: sent.status } : {});
  }
  return sent.outcome;
}

/**
 * A built-in gateway: POSTs the core's encoding of each message for its `kind` (`json`,
 * `twilio` or `meta`). The classes below only fix the kind. Options: `url`, `token` (kept
 * non-enumerable: never printed with the gateway), `account` (Twilio), `publicBaseUrl` (a
 * Twilio send asks for status callbacks there), `timeoutMs` (default TIMEOUT_MS).
 */
class HttpGateway {
  #kind;

  /**
   * @param {'json' | 'twilio' | 'meta'} kind
   * @param {{url: string, token?: string, account?: string, publicBaseUrl?: string | null, timeoutMs?: number}} opts
   */
  constructor(kind, { url, token, account, publicBaseUrl, timeoutMs = TIMEOUT_MS } = {}) {
    try {
      native.checkGatewayClient(); // unusable NODE_EXTRA_CA_CERTS: MISCONFIGURED here, not at each send
    } catch (e) {
      throw fromNative(e);
    }
    this.#kind = kind;
    this.url = url;
    if (account !== undefined) this.account = account;
    Object.defineProperty(this, 'token', { value: token, enumerable: false });
    this.publicBaseUrl = publicBaseUrl ?? null;
    this.timeoutMs = timeoutMs;
  }

  /** `json`, `twilio` or `meta` (read-only). */
  get kind() {
    return this.#kind;
  }

  /**
   * `opts.onFailure`: see post(); `opts.onAccepted(messageId)`; `opts.workspaceId` (names the
   * workspace in a Twilio send's status callback).
   */
  async send(message, opts = {}) {
    return post(this.#kind, this, message, this.timeoutMs, opts);
  }

  /**
   * The settings the native module sends with (native.NativeGateway), or null when `send` is
   * not this class's own (a subclass that changes how a message goes out keeps its way).
   */
  nativeSettings() {
    if (this.send !== HttpGateway.prototype.send) return null;
    return {
      kind: this.#kind,
      url: this.url ? String(this.url) : undefined,
      token: this.token ?? undefined,
      account: this.account ?? undefined,
      publicBaseUrl: this.publicBaseUrl ?? undefined,
      timeoutMs: timeout(this.timeoutMs),
    };
  }
}

/** `POST url` with `{to, from, text, channel, reference}` and `Authorization: Bearer token`. */
class JsonGateway extends HttpGateway {
  /** @param {{url: string, token?: string, timeoutMs?: number}} opts */
  constructor(opts = {}) {
    super('json', opts);
  }
}

/** Twilio Messages API form encoding (`To`, `From`, `Body`; `whatsapp:` prefix), basic auth. */
class TwilioGateway extends HttpGateway {
  /** @param {{url: string, account: string, token: string, publicBaseUrl?: string, timeoutMs?: number}} opts */
  constructor(opts = {}) {
    super('twilio', opts);
  }
}

/**
 * The WhatsApp Cloud API (SPEC §8): `POST {url}/messages`, Bearer token, an authentication
 * template message (policy `whatsappTemplate`) with the code as body parameter and copy-code
 * button. A message without a template in its workspace's policy cannot be sent (failed).
 */
class MetaGateway extends HttpGateway {
  /** @param {{url: string, token: string, timeoutMs?: number}} opts */
  constructor(opts = {}) {
    super('meta', opts);
  }
}

/** SMS through one gateway, WhatsApp through another (WHATSAPP_GATEWAY_*). */
class ChannelGateway {
  /** @param {{sms: object, whatsapp: object}} gateways */
  constructor({ sms, whatsapp }) {
    this.sms = sms;
    this.whatsapp = whatsapp;
  }

  get kind() {
    return this.sms.kind;
  }

  /** The gateway of `message.channel`. */
  for(message) {
    return message?.channel === 'whatsapp' ? this.whatsapp : this.sms;
  }

  async send(message, opts = {}) {
    return this.for(message).send(message, opts);
  }
}

/**
 * The service's gateway as the native module sends with it (native.NativeGateway: a flow run in
 * Rust then sends its messages itself), or null for a gateway written in JavaScript (a
 * function, a provider's SDK), whose sends go through the driver.
 */
function nativeGateway(gateway) {
  let sms = null;
  let whatsapp = null;
  if (gateway instanceof HttpGateway) sms = gateway.nativeSettings();
  else if (gateway instanceof ChannelGateway && gateway.send === ChannelGateway.prototype.send && gateway.sms instanceof HttpGateway && gateway.whatsapp instanceof HttpGateway) {
    sms = gateway.sms.nativeSettings();
    whatsapp = gateway.whatsapp.nativeSettings();
    if (!whatsapp) return null;
  }
  if (!sms) return null;
  try {
    return new native.NativeGateway(sms, whatsapp);
  } catch (e) {
    throw fromNative(e);
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
  let waKind = null;
  try {
    kind = native.gatewayKind(env.SMS_GATEWAY_KIND ?? null);
    if (env.WHATSAPP_GATEWAY_URL) waKind = native.whatsappGatewayKind(env.WHATSAPP_GATEWAY_KIND ?? null);
  } catch (e) {
    throw fromNative(e);
  }
  const warning = plainHttpWarning(env.SMS_GATEWAY_URL);
  if (warning && warn) warn(warning);
  // Twilio sends ask for status callbacks at PUBLIC_BASE_URL's receipt route (SPEC §8).
  const publicBaseUrl = env.PUBLIC_BASE_URL || null;
  const make = (k, prefix) => {
    const opts = { url: env[`${prefix}_URL`], account: env[`${prefix}_ACCOUNT`], token: env[`${prefix}_TOKEN`], publicBaseUrl };
    if (k === 'twilio') return new TwilioGateway(opts);
    if (k === 'meta') return new MetaGateway(opts);
    return new JsonGateway(opts);
  };
  const sms = make(kind, 'SMS_GATEWAY');
  if (!waKind) return sms;
  return new ChannelGateway({ sms, whatsapp: make(waKind, 'WHATSAPP_GATEWAY') });
}

/**
 * The keys delivery receipts (SPEC §8) are checked with, from the environment. Which secret
 * checks which receipt is the core's rule (otpkit_core::delivery::ReceiptSettings, the Worker's
 * too): PUBLIC_BASE_URL (Twilio signs the URL it posts to), the auth token of each Twilio gateway
 * configured (SMS_GATEWAY_TOKEN when SMS_GATEWAY_KIND is twilio; WHATSAPP_GATEWAY_TOKEN when
 * WHATSAPP_GATEWAY_URL is set and its kind is twilio), SMS_GATEWAY_TOKEN for the JSON receipt's
 * HMAC, WHATSAPP_APP_SECRET and WHATSAPP_VERIFY_TOKEN for Meta's webhooks. For OtpService's
 * `receipts` option; holds secrets: never log it.
 */
function receiptKeysFromEnv(env = process.env) {
  const names = ['PUBLIC_BASE_URL', 'SMS_GATEWAY_KIND', 'SMS_GATEWAY_TOKEN', 'WHATSAPP_GATEWAY_URL', 'WHATSAPP_GATEWAY_KIND', 'WHATSAPP_GATEWAY_TOKEN', 'WHATSAPP_APP_SECRET', 'WHATSAPP_VERIFY_TOKEN'];
  const settings = {};
  for (const n of names) if (typeof env[n] === 'string') settings[n] = env[n];
  const k = native.receiptKeys(settings);
  return {
    publicBaseUrl: k.publicBaseUrl ?? null,
    twilioTokens: k.twilioTokens,
    jsonToken: k.jsonToken ?? null,
    metaAppSecret: k.metaAppSecret ?? null,
    metaVerifyToken: k.metaVerifyToken ?? null,
  };
}

module.exports = { JsonGateway, TwilioGateway, MetaGateway, ChannelGateway, gatewayFromEnv, receiptKeysFromEnv, nativeGateway, TIMEOUT_MS, MAX_REPLY_BYTES };
