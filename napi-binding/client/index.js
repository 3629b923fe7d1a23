// @ts-check
'use strict';
// otpkit/client: a typed HTTP client for a deployed otpkit (the Worker, `otpkit serve`, an
// adapter). The types come from core/openapi.yaml (client/schema.d.ts, made by scripts/gen-client);
// the requests are made by openapi-fetch. Only web platform APIs (fetch, Request, Response,
// Headers): no Node built-ins and no native addon, so it runs in Node ≥ 20, Cloudflare Workers,
// Deno, Bun and browsers. `fetch` is injectable (a Worker passes its service binding's fetch).
// This file is type-checked (JSDoc) against the generated paths by `tsc -p client/check`: a
// method whose path, parameters or body no longer fit the spec fails that check.

/** @typedef {import('./schema').paths} paths */
/** @typedef {import('./schema').components['schemas']} schemas */
/** @typedef {import('openapi-fetch').Client<paths>} RawClient */

// openapi-fetch's CommonJS build exports `{ default: createClient }`; its .d.cts declares the
// function itself (`export =`), hence the cast.
/** @type {typeof import('openapi-fetch')} */
const createFetchClient = /** @type {any} */ (require('openapi-fetch')).default;

/** HTTP statuses of a verification answer (SPEC §3), for the second dialect, whose body has no code. */
/** @type {Record<number, string>} */
const VERIFY_STATUS = { 400: 'INVALID', 404: 'NOT_FOUND', 409: 'ALREADY_USED', 410: 'EXPIRED', 423: 'MAX_ATTEMPTS_REACHED' };

class OtpkitHttpError extends Error {
  /**
   * @param {string} message
   * @param {{ status: number, code: string, field?: string, retryAfter?: number, attemptsLeft?: number, body: unknown }} details
   */
  constructor(message, details) {
    super(message);
    this.name = 'OtpkitHttpError';
    /** HTTP status. */
    this.status = details.status;
    /** Stable code: `error.code` of the error envelope, else the verification status (`INVALID`, `NOT_FOUND`, …), else `HTTP_<status>`. */
    this.code = details.code;
    /** The field a VALIDATION_ERROR names. */
    this.field = details.field;
    /** Seconds, from the Retry-After header (429 RATE_LIMITED, RESEND_TOO_SOON, …). */
    this.retryAfter = details.retryAfter;
    /** Attempts left, on a verification answer (v1 `data.attemptsLeft`, second dialect `attempts_remaining`). */
    this.attemptsLeft = details.attemptsLeft;
    /** The parsed body (or its text when it is not JSON). */
    this.body = details.body;
  }
}

/** @param {unknown} v @returns {v is Record<string, any>} */
const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);

/** @param {string | null} h @returns {number | undefined} */
function parseRetryAfter(h) {
  if (h === null || h.trim() === '') return undefined;
  const n = Number(h);
  if (Number.isFinite(n)) return Math.max(0, Math.ceil(n));
  const when = Date.parse(h); // an HTTP-date (otpkit sends seconds; a proxy might not)
  return Number.isNaN(when) ? undefined : Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

/**
 * The error for a non-2xx answer.
 * @param {Response} response
 * @param {unknown} body
 * @param {boolean} verification the answer of a verify route (its HTTP status tells the outcome)
 */
function httpError(response, body, verification) {
  const { status } = response;
  let code;
  let field;
  let attemptsLeft;
  let text;
  if (isObject(body)) {
    if (isObject(body.error) && typeof body.error.code === 'string') {
      code = body.error.code;
      if (typeof body.error.field === 'string') field = body.error.field;
    } else if (isObject(body.data) && typeof body.data.status === 'string') {
      code = body.data.status;
    }
    if (isObject(body.data) && typeof body.data.attemptsLeft === 'number') attemptsLeft = body.data.attemptsLeft;
    else if (typeof body.attempts_remaining === 'number') attemptsLeft = body.attempts_remaining;
    if (typeof body.message === 'string') text = body.message;
  }
  if (code === undefined) code = (verification && VERIFY_STATUS[status]) || (status === 404 ? 'NOT_FOUND' : `HTTP_${status}`);
  return new OtpkitHttpError(`${text ?? response.statusText ?? 'HTTP error'} (${status} ${code})`, {
    status,
    code,
    field,
    retryAfter: parseRetryAfter(response.headers.get('retry-after')),
    attemptsLeft,
    body,
  });
}

/**
 * The data of a 2xx answer; anything else throws OtpkitHttpError.
 * @template T
 * @param {Promise<{ data?: T, error?: unknown, response: Response }>} pending
 * @param {boolean} [verification]
 * @returns {Promise<T>}
 */
async function ok(pending, verification = false) {
  const { data, error, response } = await pending;
  if (!response.ok) throw httpError(response, error, verification);
  return /** @type {T} */ (data);
}

/**
 * The `data` of a v1 envelope `{ success, message, data }`.
 * @template T
 * @param {Promise<{ data?: { data: T }, error?: unknown, response: Response }>} pending
 * @param {boolean} [verification]
 * @returns {Promise<T>}
 */
async function envelope(pending, verification = false) {
  return (await ok(pending, verification)).data;
}

/** @param {{ idempotencyKey?: string } | undefined} o */
const idem = (o) => (o?.idempotencyKey === undefined ? undefined : { 'Idempotency-Key': o.idempotencyKey });

/**
 * A client of one otpkit deployment (see index.d.ts, which this implementation is checked against).
 * @param {import('./index').ClientOptions} options
 * @returns {import('./index').OtpkitClient}
 */
function createClient(options) {
  if (!isObject(options)) throw new TypeError('createClient: options { baseUrl, apiKey, fetch? } expected');
  const { baseUrl, apiKey, fetch: customFetch, headers } = options;
  if (typeof baseUrl !== 'string' || !/^https?:\/\//i.test(baseUrl)) {
    throw new TypeError('createClient: baseUrl must be an absolute http(s) URL (with a service binding, any host: "https://otpkit")');
  }
  if (apiKey !== undefined && (typeof apiKey !== 'string' || apiKey === '')) throw new TypeError('createClient: apiKey must be a non-empty string');
  if (customFetch !== undefined && typeof customFetch !== 'function') throw new TypeError('createClient: fetch must be a function');
  if (headers !== undefined && !isObject(headers)) throw new TypeError('createClient: headers must be an object');

  /** @type {RawClient} */
  const raw = createFetchClient({
    baseUrl,
    headers: { ...headers, ...(apiKey === undefined ? {} : { authorization: `Bearer ${apiKey}` }) },
    // globalThis.fetch is looked up at each call (not when the client is made), and called on its
    // own: a service binding's fetch is passed bound (env.OTPKIT.fetch.bind(env.OTPKIT)).
    fetch: (request) => (customFetch ?? globalThis.fetch)(request),
  });

  return {
    raw,

    /** POST /v1/messaging/otp/request */
    /** @param {schemas['RequestBody']} body @param {{ idempotencyKey?: string, signal?: AbortSignal }} [o] */
    request: (body, o) =>
      envelope(raw.POST('/v1/messaging/otp/request', { body, params: { header: idem(o) }, signal: o?.signal })),

    /** POST /v1/messaging/otp/verify: resolves only when APPROVED; any other outcome throws with its status as code */
    /** @param {schemas['VerifyBody']} body @param {{ signal?: AbortSignal }} [o] */
    verify: (body, o) => envelope(raw.POST('/v1/messaging/otp/verify', { body, signal: o?.signal }), true),

    /** GET /v1/messaging/otp/sessions/{sessionId} */
    /** @param {string} sessionId @param {{ signal?: AbortSignal }} [o] */
    status: (sessionId, o) =>
      envelope(raw.GET('/v1/messaging/otp/sessions/{sessionId}', { params: { path: { sessionId } }, signal: o?.signal })),

    /** POST /v1/messaging/otp/sessions/{sessionId}/resend */
    /** @param {string} sessionId @param {{ channel?: schemas['Channel'] }} [body] @param {{ idempotencyKey?: string, signal?: AbortSignal }} [o] */
    resend: (sessionId, body, o) =>
      envelope(
        raw.POST('/v1/messaging/otp/sessions/{sessionId}/resend', {
          params: { path: { sessionId }, header: idem(o) },
          body: body ?? {},
          signal: o?.signal,
        }),
      ),

    /** POST /v1/messaging/otp/sessions/{sessionId}/cancel */
    /** @param {string} sessionId @param {{ signal?: AbortSignal }} [o] */
    cancel: (sessionId, o) =>
      envelope(raw.POST('/v1/messaging/otp/sessions/{sessionId}/cancel', { params: { path: { sessionId } }, signal: o?.signal })),

    /** GET /v1/messaging/otp/audit */
    /** @param {{ sessionId?: string, since?: string, limit?: number, cursor?: string }} [query] @param {{ signal?: AbortSignal }} [o] */
    audit: (query, o) => envelope(raw.GET('/v1/messaging/otp/audit', { params: { query }, signal: o?.signal })),

    /** The second dialect (ZendOTP-compatible, `/otp/...`): flat snake_case bodies, answered as they come. */
    zend: {
      /** @param {schemas['ZendSendBody']} body @param {{ idempotencyKey?: string, signal?: AbortSignal }} [o] */
      send: (body, o) => ok(raw.POST('/otp/send', { body, params: { header: idem(o) }, signal: o?.signal })),

      /** @param {string} id @param {{ signal?: AbortSignal }} [o] */
      status: (id, o) => ok(raw.GET('/otp/{id}/status', { params: { path: { id } }, signal: o?.signal })),

      /** @param {string} id @param {{ code: string }} body @param {{ signal?: AbortSignal }} [o] */
      verify: (id, body, o) => ok(raw.POST('/otp/{id}/verify', { params: { path: { id } }, body, signal: o?.signal }), true),

      /** @param {string} id @param {{ channel?: schemas['Channel'] }} [body] @param {{ idempotencyKey?: string, signal?: AbortSignal }} [o] */
      resend: (id, body, o) =>
        ok(raw.POST('/otp/{id}/resend', { params: { path: { id }, header: idem(o) }, body: body ?? {}, signal: o?.signal })),

      /** @param {string} id @param {{ signal?: AbortSignal }} [o] */
      cancel: (id, o) => ok(raw.POST('/otp/{id}/cancel', { params: { path: { id } }, signal: o?.signal })),

      /** @param {{ app?: string, days?: number }} [query] @param {{ signal?: AbortSignal }} [o] */
      analytics: (query, o) => ok(raw.GET('/otp/analytics', { params: { query }, signal: o?.signal })),
    },
  };
}

module.exports = { createClient, OtpkitHttpError };
