// Types of otpkit/client (client/index.js): a typed HTTP client for a deployed otpkit. Every body
// type below is read from ./schema.d.ts, which scripts/gen-client generates from core/openapi.yaml:
// a route or field the spec changes changes these types, and `tsc -p client/check` (run by
// napi-binding/test/client.test.js) fails when a method here no longer fits the spec.
// No Node types: only the web platform's Request, Response and AbortSignal (lib DOM or WebWorker).

import type { Client } from 'openapi-fetch';
import type { components, operations, paths } from './schema';

export type { components, operations, paths };

type Schemas = components['schemas'];
type JsonOf<R> = R extends { content: { 'application/json': infer B } } ? B : never;
/** The JSON body of an operation's 200 answer. */
type Ok<Op> = Op extends { responses: { 200: infer R } } ? JsonOf<R> : never;
/** The JSON request body of an operation (optional bodies included). */
type BodyOf<Op> = Op extends { requestBody?: infer B } ? JsonOf<NonNullable<B>> : never;
/** The query parameters of an operation. */
type QueryOf<Op> = Op extends { parameters: { query?: infer Q } } ? NonNullable<Q> : never;
/** The `data` of a v1 envelope `{ success, message, data }`. */
type DataOf<Op> = Ok<Op> extends { data: infer D } ? D : never;

type V1Request = paths['/v1/messaging/otp/request']['post'];
type V1Verify = paths['/v1/messaging/otp/verify']['post'];
type V1Status = paths['/v1/messaging/otp/sessions/{sessionId}']['get'];
type V1Resend = paths['/v1/messaging/otp/sessions/{sessionId}/resend']['post'];
type V1Cancel = paths['/v1/messaging/otp/sessions/{sessionId}/cancel']['post'];
type V1Audit = paths['/v1/messaging/otp/audit']['get'];
type ZSend = paths['/otp/send']['post'];
type ZStatus = paths['/otp/{id}/status']['get'];
type ZVerify = paths['/otp/{id}/verify']['post'];
type ZResend = paths['/otp/{id}/resend']['post'];
type ZCancel = paths['/otp/{id}/cancel']['post'];
type ZAnalytics = paths['/otp/analytics']['get'];

export type Purpose = Schemas['Purpose'];
export type Channel = Schemas['Channel'];
/** Codes of the error envelope `{ success: false, message, error: { code, … } }`. */
export type ErrorCode = Schemas['Error']['error']['code'];
/** Outcomes of a verification (`data.status`). */
export type VerifyStatus = Schemas['VerifyResult']['status'];

export type RequestBody = BodyOf<V1Request>;
export type RequestResult = DataOf<V1Request>;
export type VerifyBody = BodyOf<V1Verify>;
export type VerifyResult = DataOf<V1Verify>;
export type SessionView = DataOf<V1Status>;
export type ResendBody = BodyOf<V1Resend>;
export type ResendResult = DataOf<V1Resend>;
export type CancelResult = DataOf<V1Cancel>;
export type AuditQuery = QueryOf<V1Audit>;
export type AuditPage = DataOf<V1Audit>;
export type ZendSendBody = BodyOf<ZSend>;
export type ZendSendResult = Ok<ZSend>;
export type ZendStatus = Ok<ZStatus>;
export type ZendVerifyBody = BodyOf<ZVerify>;
export type ZendVerifyResult = Ok<ZVerify>;
export type ZendResendBody = BodyOf<ZResend>;
export type ZendResendResult = Ok<ZResend>;
export type ZendCancelResult = Ok<ZCancel>;
export type AnalyticsQuery = QueryOf<ZAnalytics>;
export type AnalyticsReport = Ok<ZAnalytics>;

/** The typed openapi-fetch client over every route of core/openapi.yaml (never throws for an HTTP status). */
export type RawClient = Client<paths>;

export interface ClientOptions {
  /** Where otpkit answers, absolute: `https://otp.example.com`, `http://127.0.0.1:8787`; with a service binding any host (`https://otpkit`). */
  baseUrl: string;
  /** The workspace's API key (`otpk_…`), sent as `Authorization: Bearer`. The ADMIN_TOKEN for the admin routes (through `raw`). */
  apiKey?: string;
  /** Makes each request (default: `globalThis.fetch`, looked up at each call). In a Worker, a service binding: `env.OTPKIT.fetch.bind(env.OTPKIT)`. */
  fetch?: (request: Request) => Promise<Response>;
  /** Headers added to every request. */
  headers?: Record<string, string>;
}

export interface CallOptions {
  /** Aborts the request. */
  signal?: AbortSignal;
}

export interface SendOptions extends CallOptions {
  /** `Idempotency-Key` (SPEC §7): the same key and body within 24 h answer the first answer again and send nothing. */
  idempotencyKey?: string;
}

export interface OtpkitClient {
  /** POST /v1/messaging/otp/request: sends a code, or reuses an active session (`reused: true`, no SMS). */
  request(body: RequestBody, options?: SendOptions): Promise<RequestResult>;
  /**
   * POST /v1/messaging/otp/verify (by `sessionId`, or by `dest` + `purpose`). Resolves only with
   * `status: 'APPROVED'`; any other outcome throws OtpkitHttpError with that status as `code`
   * (`INVALID` 400, `NOT_FOUND` 404, `ALREADY_USED` 409, `EXPIRED` 410, `MAX_ATTEMPTS_REACHED` 423)
   * and `attemptsLeft`.
   */
  verify(body: VerifyBody, options?: CallOptions): Promise<VerifyResult>;
  /** GET /v1/messaging/otp/sessions/{sessionId}: the session's state (masked destination, attempts, times). */
  status(sessionId: string, options?: CallOptions): Promise<SessionView>;
  /** POST /v1/messaging/otp/sessions/{sessionId}/resend: a new code for the same session. */
  resend(sessionId: string, body?: ResendBody, options?: SendOptions): Promise<ResendResult>;
  /** POST /v1/messaging/otp/sessions/{sessionId}/cancel: the session becomes CANCELED. */
  cancel(sessionId: string, options?: CallOptions): Promise<CancelResult>;
  /** GET /v1/messaging/otp/audit: the workspace's events, newest first. */
  audit(query?: AuditQuery, options?: CallOptions): Promise<AuditPage>;
  /** The second dialect (ZendOTP-compatible, `/otp/...`): flat snake_case bodies, resolved as they come. */
  zend: {
    /** POST /otp/send */
    send(body: ZendSendBody, options?: SendOptions): Promise<ZendSendResult>;
    /** GET /otp/{id}/status */
    status(id: string, options?: CallOptions): Promise<ZendStatus>;
    /** POST /otp/{id}/verify: resolves when verified; otherwise throws as `verify` does. */
    verify(id: string, body: ZendVerifyBody, options?: CallOptions): Promise<ZendVerifyResult>;
    /** POST /otp/{id}/resend */
    resend(id: string, body?: ZendResendBody, options?: SendOptions): Promise<ZendResendResult>;
    /** POST /otp/{id}/cancel */
    cancel(id: string, options?: CallOptions): Promise<ZendCancelResult>;
    /** GET /otp/analytics */
    analytics(query?: AnalyticsQuery, options?: CallOptions): Promise<AnalyticsReport>;
  };
  /** Every route, typed, as openapi-fetch answers: `{ data, error, response }` (admin, health, metrics, routes added later). */
  raw: RawClient;
}

/** A client of one otpkit deployment, with one API key. Makes no request until a method is called. */
export function createClient(options: ClientOptions): OtpkitClient;

/** A non-2xx answer. Network failures reject with the fetch implementation's own error. */
export class OtpkitHttpError extends Error {
  constructor(
    message: string,
    details: { status: number; code: string; field?: string; retryAfter?: number; attemptsLeft?: number; body: unknown },
  );
  name: 'OtpkitHttpError';
  /** HTTP status. */
  status: number;
  /** `error.code` of the error envelope; else the verification status (`INVALID`, `NOT_FOUND`, …); else `HTTP_<status>`. */
  code: ErrorCode | VerifyStatus | `HTTP_${number}`;
  /** The field a VALIDATION_ERROR names. */
  field?: string;
  /** Seconds to wait, from the Retry-After header (RATE_LIMITED, RESEND_TOO_SOON, DESTINATION_LOCKED, …). */
  retryAfter?: number;
  /** Attempts left, on a verification answer. */
  attemptsLeft?: number;
  /** The answer's body, parsed (its text when not JSON). */
  body: unknown;
}
