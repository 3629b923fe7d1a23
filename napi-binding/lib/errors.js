'use strict';
// OtpError: every refusal otpkit makes, with SPEC's stable code and HTTP status. The HTTP body
// the Worker would answer travels with it (`reply`), so `otpkit serve` answers byte for byte alike.

const PREFIX = 'OTPKIT:';

class OtpError extends Error {
  /**
   * @param {string} code stable code (VALIDATION_ERROR, RATE_LIMITED, …)
   * @param {number} httpStatus
   * @param {string} message
   * @param {{field?: string, retryAfterSeconds?: number, body?: string}} [extra]
   */
  constructor(code, httpStatus, message, extra = {}) {
    super(message);
    this.name = 'OtpError';
    this.code = code;
    this.httpStatus = httpStatus;
    if (extra.field) this.field = extra.field;
    if (extra.retryAfterSeconds != null) this.retryAfterSeconds = extra.retryAfterSeconds;
    Object.defineProperty(this, 'body', { value: extra.body ?? null, enumerable: false });
  }

  /** The HTTP answer for this error: `{status, body, retryAfter}`. */
  get reply() {
    const native = require('./native');
    if (this.body == null) return native.errorReply(this.code);
    return { status: this.httpStatus, body: this.body, retryAfter: this.retryAfterSeconds ?? undefined };
  }
}

/** The OtpError of the native module's error JSON (`{code, httpStatus, message, field?, retryAfterSeconds?, body}`). */
function fromInfo(info) {
  return new OtpError(info.code, info.httpStatus, info.message, {
    field: info.field ?? undefined,
    retryAfterSeconds: info.retryAfterSeconds ?? undefined,
    body: info.body,
  });
}

/** Turns what the native module threw into an OtpError (anything else is returned unchanged). */
function fromNative(e) {
  if (e instanceof OtpError) return e;
  if (e && typeof e.message === 'string' && e.message.startsWith(PREFIX)) {
    const info = JSON.parse(e.message.slice(PREFIX.length));
    const err = fromInfo(info);
    // The failing part's own word (a Redis reply's READONLY, ECONNREFUSED): for the store-failure log.
    if (typeof info.cause === 'string') Object.defineProperty(err, 'cause', { value: { code: info.cause }, enumerable: false });
    return err;
  }
  return e;
}

/**
 * The OtpError for a host-side condition (STORE_UNAVAILABLE, DELIVERY_FAILED, …); `message` says
 * what is wrong for MISCONFIGURED.
 */
function hostError(code, cause, message) {
  const native = require('./native');
  try {
    native.throwError(code, message);
  } catch (e) {
    const err = fromNative(e);
    if (cause) Object.defineProperty(err, 'cause', { value: cause, enumerable: false });
    return err;
  }
  return new OtpError('INTERNAL_ERROR', 500, 'internal error');
}

/**
 * The client went away before its request was read (the connection closed or reset under a body
 * still arriving). Not an internal error and nothing to log: `otpkit serve` has nobody to answer.
 * Its code is the host's own (not SPEC's); its reply, should one be asked for, is the 400
 * envelope `otpkit serve` gives any request it could not read.
 */
function clientAborted() {
  return new OtpError('CLIENT_ABORTED', 400, 'request aborted by the client', {
    body: '{"success":false,"message":"Malformed HTTP request","error":{"code":"VALIDATION_ERROR"}}',
  });
}

/** The OtpError carried by an error reply (`{status, body}`) of the core. */
function fromReply(reply) {
  let parsed = {};
  try {
    parsed = JSON.parse(reply.body);
  } catch {
    // fall through: an empty body
  }
  const info = parsed.error || {};
  return new OtpError(info.code || 'NOT_FOUND', reply.status, parsed.message || 'error', {
    field: info.field,
    retryAfterSeconds: info.retryAfterSeconds,
    body: reply.body,
  });
}

module.exports = { OtpError, fromInfo, fromNative, hostError, fromReply, clientAborted };
