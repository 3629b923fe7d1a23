// Types of the `otpkit` npm package (napi-binding/). Contract: SPEC.md; examples: README.md ("Node").

/// <reference types="node" />

/** A SPEC purpose. */
export type Purpose =
  | 'LOGIN'
  | 'PASSWORD_RESET'
  | 'TRANSACTION'
  | 'DEVICE_VERIFICATION'
  | 'EMAIL_VERIFICATION'
  | 'ACCOUNT_RECOVERY'
  | 'KYC_VERIFICATION';

export type Channel = 'sms' | 'whatsapp';

/** Outcomes of a verification (values, not errors). */
export type VerifyStatus = 'APPROVED' | 'INVALID' | 'EXPIRED' | 'MAX_ATTEMPTS_REACHED' | 'ALREADY_USED' | 'NOT_FOUND';

/** Stable error codes of {@link OtpError}. */
export type ErrorCode =
  | 'VALIDATION_ERROR'
  | 'UNAUTHORIZED'
  | 'NOT_FOUND'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'PAYLOAD_TOO_LARGE'
  | 'METHOD_NOT_ALLOWED'
  | 'SENDER_NOT_ALLOWED'
  | 'DESTINATION_NOT_ALLOWED'
  | 'RATE_LIMITED'
  | 'DESTINATION_LOCKED'
  /** The send would take the workspace's spend of the UTC day past policy dailySpendLimit (429, retryAfterSeconds until 00:00 UTC). */
  | 'SPEND_LIMIT_REACHED'
  /** Fraud Guard (policy fraudGuard) refuses sends to the destination's number prefix: many sends, hardly any verified (403, no Retry-After). */
  | 'FRAUD_SUSPECTED'
  /** A resend sooner than the policy's resendAfterSeconds after the last send (429, retryAfterSeconds). */
  | 'RESEND_TOO_SOON'
  | 'DELIVERY_FAILED'
  | 'STORE_UNAVAILABLE'
  | 'MISCONFIGURED'
  | 'INTERNAL_ERROR'
  /** cancel (and resend) of a session that is no longer pending: 409, 410, 423. */
  | 'ALREADY_USED'
  | 'EXPIRED'
  | 'MAX_ATTEMPTS_REACHED'
  /** The Idempotency-Key was used within 24 h with another request (422). */
  | 'IDEMPOTENCY_KEY_REUSED'
  /** The request first made with this Idempotency-Key is still running after this one waited 25 s (409). */
  | 'IDEMPOTENCY_KEY_IN_USE'
  /** A delivery receipt whose provider signature is missing or wrong (403; receipt routes only). */
  | 'INVALID_SIGNATURE';

/** Workspace policy (SPEC §2). Every key is optional; out-of-bounds values are refused with 400. */
export interface Policy {
  /** 6–10 digits (default 6). */
  codeLength?: number;
  /** 60–600 s (default 300). */
  ttlSeconds?: number;
  /** 1–10 (default 5). */
  maxAttempts?: number;
  /** Reuse an active session for the same (dest, purpose) (default true). */
  reuse?: boolean;
  /** Sliding window per destination (default 3 per 600 s). */
  sendsPerDestination?: { limit: number; windowSeconds: number };
  /** Workspace flood shield (default 600). */
  sendsPerWorkspacePerMinute?: number;
  /** Consecutive failed verifications per destination before a 1 h lock (default 100). */
  failureStreakLimit?: number;
  /** Calling-code prefixes, e.g. ["233", "1"]; null = all. */
  allowedCountries?: string[] | null;
  /** Fixed codes for test numbers (no SMS is sent), e.g. {"+15005550006": "123456"}. */
  testNumbers?: Record<string, string>;
  /** Price per SMS segment for analytics. */
  pricePerSegment?: { amount: string; currency: string };
  /** Seconds an ended session is kept after expiry (default 86400). */
  retentionSeconds?: number;
  /** Least seconds between two sends of one session (resend), 0–600 (default 30). */
  resendAfterSeconds?: number;
  /** Channels tried in order when a send fails definitely, e.g. ["whatsapp", "sms"]; null = none (default). */
  channelFallback?: Channel[] | null;
  /**
   * An undelivered or failed delivery receipt for a pending session sends the code again on the
   * next channel of `channelFallback` (needed), charged as a resend, not held to
   * `resendAfterSeconds` (default false).
   */
  fallbackOnUndelivered?: boolean;
  /**
   * Most spent on messages per UTC day (SMS segments × pricePerSegment; a WhatsApp message costs
   * 0 segments; test numbers exempt), in pricePerSegment's currency; null = no cap (default). A
   * send past it is refused 429 SPEND_LIMIT_REACHED until 00:00 UTC.
   */
  dailySpendLimit?: { amount: string; currency: string } | null;
  /**
   * SMS pumping defence (SPEC §9; off by default). Each given key replaces its value; null is
   * the defaults. Sends are counted per number prefix (`+`, the calling code and `prefixDigits`
   * digits); once a prefix has `minSends` sends in the rolling window and approved verifications
   * per send under `minConversion`, its sends are refused 403 FRAUD_SUSPECTED for `blockSeconds`.
   * Test numbers and safe-listed numbers or prefixes are neither counted nor refused.
   */
  fraudGuard?: Partial<FraudGuard> | null;
}

/** Policy `fraudGuard` as stored (defaults shown). */
export interface FraudGuard {
  /** Default false. */
  enabled: boolean;
  /** Digits after the calling code that make a prefix, 1–6 (default 3). */
  prefixDigits: number;
  /** The rolling window, 60–86400 s (default 3600). */
  windowSeconds: number;
  /** Sends in the window before a prefix may be blocked, 1–100000 (default 20). */
  minSends: number;
  /** Approved verifications per send under which it is blocked, 0–1 (default 0.1; 0 never blocks). */
  minConversion: number;
  /** How long a block lasts, 60–604800 s (default 3600). */
  blockSeconds: number;
  /** Numbers and prefixes (`+` and 1–15 digits) never counted nor refused, at most 100. */
  safeList: string[];
}

/** `GET /v1/admin/workspaces/{id}/fraud`. */
export interface FraudReport {
  workspaceId: string;
  fraudGuard: FraudGuard;
  /** Prefixes with counts in the last two windows or blocked: blocked ones first, then by sends. */
  prefixes: FraudPrefix[];
}

export interface FraudPrefix {
  /** `+`, the calling code and `prefixDigits` digits, e.g. `+233202`. */
  prefix: string;
  /** Sends in the rolling window (rounded down). */
  sends: number;
  /** Approved verifications in it (rounded down). */
  verified: number;
  /** verified / sends, 4 decimals (0 when nothing was sent). */
  conversion: number;
  blocked: boolean;
  /** RFC 3339, while blocked. */
  blockedUntil?: string;
  /** Sends refused since the block began (0 when not blocked). */
  refused: number;
}

/** What a gateway is asked to deliver. `text` contains the code: never log it. */
export interface OutgoingMessage {
  to: string;
  from: string;
  text: string;
  channel: Channel;
  /** The session id. */
  reference: string;
  /**
   * A WhatsApp template send (policy `whatsappContentSid` / `whatsappTemplate`, SPEC §8): the
   * code, and the Twilio Content SID or Meta template. Absent when the policy sets neither.
   */
  whatsapp?: { code: string; contentSid?: string; template?: { name: string; language: string } };
}

/** What a gateway's `send` is told besides the message. */
export interface SendOptions {
  /** The workspace the message is sent for. */
  workspaceId?: string;
  /** Why a send got no 2xx: `{status}`, `{timedOut: true}` or `{}` (unreachable). */
  onFailure?(cause: { status?: number; timedOut?: boolean }): void;
  /** The provider's message id of an accepted message (kept on the session and its audit row). */
  onAccepted?(messageId: string): void;
}

/**
 * `'delivered'` (2xx), `'failed'` (definite failure: not charged to the send limit) or
 * `'timedOut'` (unknown outcome: charged). Anything else, or a throw, counts as `'failed'`.
 */
export type DeliveryOutcome = 'delivered' | 'failed' | 'timedOut';

export interface Gateway {
  /** The outcome, or `{outcome, messageId}` to hand the provider's message id back. */
  send(
    message: OutgoingMessage,
    opts?: SendOptions,
  ): Promise<DeliveryOutcome | { outcome: DeliveryOutcome; messageId?: string }>;
}

/**
 * SPEC §5 JSON gateway: POST `{to, from, text, channel, reference}` with a Bearer token; 10 s timeout
 * (`timeoutMs`). Sent by the native module (reqwest + rustls); TLS trusts Mozilla's roots and
 * `NODE_EXTRA_CA_CERTS`. The constructor throws an {@link OtpError} `MISCONFIGURED` when
 * NODE_EXTRA_CA_CERTS cannot be read or holds no certificate (every built-in gateway's does).
 */
export class JsonGateway implements Gateway {
  constructor(opts: { url: string; token?: string; timeoutMs?: number });
  readonly url: string;
  send(message: OutgoingMessage, opts?: SendOptions): Promise<DeliveryOutcome>;
}

/**
 * WhatsApp Cloud API (SPEC §8): `POST {url}/messages` with a Bearer token, an authentication
 * template message (policy `whatsappTemplate`); without a template in the policy the send fails.
 */
export class MetaGateway implements Gateway {
  constructor(opts: { url: string; token: string; timeoutMs?: number });
  readonly url: string;
  send(message: OutgoingMessage, opts?: SendOptions): Promise<DeliveryOutcome>;
}

/** Twilio Messages API form encoding (`To`, `From`, `Body`; `whatsapp:` prefix), basic auth. */
export class TwilioGateway implements Gateway {
  /**
   * `publicBaseUrl`: this service's public URL (PUBLIC_BASE_URL); with it, each send asks Twilio
   * for status callbacks at `<publicBaseUrl>/v1/messaging/otp/delivery-receipts/twilio`.
   */
  constructor(opts: { url: string; account: string; token: string; publicBaseUrl?: string | null; timeoutMs?: number });
  readonly url: string;
  send(message: OutgoingMessage, opts?: SendOptions): Promise<DeliveryOutcome>;
}

/**
 * The gateway that SMS_GATEWAY_KIND / _URL / _TOKEN / _ACCOUNT describe. Throws an {@link OtpError}
 * `MISCONFIGURED` when SMS_GATEWAY_KIND is neither `json` nor `twilio`. Warns once (through
 * `warn`, default `console.warn`; `null` silences it) when SMS_GATEWAY_URL is plain `http://` to a
 * host that is not loopback; the line names the host only, never the URL's secrets or the token.
 */
export function gatewayFromEnv(
  env?: Record<string, string | undefined>,
  opts?: { warn?: ((line: string) => void) | null },
): Gateway;

/** The keys delivery receipts (SPEC §8) are checked with. Holds tokens: never log it. */
export interface ReceiptKeys {
  /** PUBLIC_BASE_URL: Twilio signs the URL it posted to (without it, Twilio receipts are 403). */
  publicBaseUrl?: string | null;
  /** The auth tokens of the Twilio gateways configured (SMS, WhatsApp; at most two). */
  twilioTokens?: string[];
  /** SMS_GATEWAY_TOKEN: the key of the JSON receipt's `X-Otpkit-Signature` (HMAC-SHA256). */
  jsonToken?: string | null;
  /** WHATSAPP_APP_SECRET: the Meta app secret its webhooks' `X-Hub-Signature-256` is made with. */
  metaAppSecret?: string | null;
  /** WHATSAPP_VERIFY_TOKEN: the verify token typed into Meta's webhook settings. */
  metaVerifyToken?: string | null;
}

/**
 * The receipt keys the environment describes (the core's rule, the Worker's too): PUBLIC_BASE_URL,
 * SMS_GATEWAY_TOKEN when SMS_GATEWAY_KIND is twilio and WHATSAPP_GATEWAY_TOKEN when
 * WHATSAPP_GATEWAY_URL is set with kind twilio (`twilioTokens`), SMS_GATEWAY_TOKEN (`jsonToken`),
 * WHATSAPP_APP_SECRET and WHATSAPP_VERIFY_TOKEN. An unknown gateway kind is no Twilio gateway
 * (gatewayFromEnv refuses it).
 */
export function receiptKeysFromEnv(env?: Record<string, string | undefined>): ReceiptKeys;

/** Every refusal: a stable `code` and the HTTP status `otpkit serve` answers with. */
export class OtpError extends Error {
  readonly name: 'OtpError';
  readonly code: ErrorCode;
  readonly httpStatus: number;
  /** The offending field (VALIDATION_ERROR), dotted for nested ones (`policy.ttlSeconds`). */
  readonly field?: string;
  /** Whole seconds ≥ 1 (RATE_LIMITED, DESTINATION_LOCKED, SPEND_LIMIT_REACHED, RESEND_TOO_SOON). */
  readonly retryAfterSeconds?: number;
}

/** Sizes of a memory store. */
export interface MemoryStats {
  sessions: number;
  guards: number;
  auditEvents: number;
  /** Analytics buckets (day, channel, purpose, app) with counters. */
  analyticsBuckets: number;
  /** Sessions sent and not yet verified, locked or expired. */
  analyticsOpen: number;
  /** Idempotency-Key records (kept by the key's hash, 24 h). */
  idempotencyRecords: number;
  /** Fraud Guard counts (per workspace and number prefix; dropped once idle). */
  fraudPrefixes: number;
  /** Delivery receipt index entries (by session id and provider message id; kept until purge). */
  receiptIndex: number;
}

/**
 * Audit retention of a store that caps by count. Each workspace's audit trail is two streams,
 * each capped at `auditKeep` events (default 10,000; oldest dropped first): lifecycle events, and
 * those an end user can repeat without a send (`reused`, `rate_limited` and other refusals,
 * `verify_rejected`), so no amount of the latter pushes a session's `requested`/`delivered` out.
 * Queries merge both newest first. The Redis store also drops a stream 90 days after its last event.
 */
export interface AuditRetentionOptions {
  /** Events kept per workspace in each stream, a positive integer (default 10,000). */
  auditKeep?: number;
}

/** One process, state in Rust memory behind one lock (the default). Lost when the process exits. */
export class MemoryStore {
  constructor(opts?: AuditRetentionOptions);
  readonly kind: 'memory';
  stats(): MemoryStats;
  /** Purges sessions past retention (each with a `purged` audit event); runs every 10 s by itself. */
  sweep(now?: number): number;
  close(): Promise<void>;
}

/**
 * Redis, for several processes: every change is a Lua compare-and-set on a version, so attempts
 * are never over-counted, a session is approved at most once and one SMS is sent for concurrent
 * requests, across processes. Keys expire with the session retention.
 */
export class RedisStore {
  /**
   * The store connects by itself, in the native module (redis-rs): no Redis client to install.
   * @param opts.nodes a Redis Cluster's `host:port,…` (or an array; default: REDIS_CLUSTER_NODES); or
   * @param opts.url a redis:// or rediss:// URL (default: REDIS_URL).
   * @param opts.client kept for stores made with an ioredis client: only its connection options
   *   (host, port, user, password, database, TLS; a Cluster's start nodes) are read.
   * @param opts.prefix key prefix (default "otpkit:").
   * @param opts.auditKeep audit events kept per workspace in each stream (default 10,000).
   * @param opts.keyCache default true: API key → workspace lookups kept in this process after
   *   `connect()`, emptied whenever Redis reports a write to a key entry or a workspace record
   *   (`CLIENT TRACKING … BCAST` on one more connection, one per master of a Cluster), so
   *   revocation stays immediate and authentication usually costs no round trip.
   * - `log` / `logLevel`: where the `key_cache_off` line (level warn) goes when a Redis refuses
   *   that tracking (an ACL without `CLIENT`, Redis before 6), once per node and cause; without
   *   `log`, a process warning says it. Lookups then go to Redis.
   */
  constructor(
    opts?: {
      client?: unknown;
      url?: string;
      nodes?: string | string[];
      prefix?: string;
      keyCache?: boolean;
      log?: ((line: string) => void) | null;
      logLevel?: string | null;
    } & AuditRetentionOptions,
  );
  readonly kind: 'redis';
  /**
   * Connects and pings; rejects with OtpError STORE_UNAVAILABLE when Redis does not answer, and
   * MISCONFIGURED when the deployment is not the one configured (a url naming a Cluster node;
   * nodes naming a Redis without cluster mode).
   */
  connect(): Promise<void>;
  /**
   * Purges sessions past retention, each once across processes, with a `purged` audit event;
   * runs every 10 s by itself. Resolves to how many were purged.
   */
  sweep(now?: number, limit?: number): Promise<number>;
  close(): Promise<void>;
}

export interface RequestParams {
  /** E.164 destination: `+` then 8–15 digits. */
  dest: string;
  /** Sender name (one of the workspace's senders). */
  src: string;
  purpose: Purpose;
  /**
   * Must contain `{code}` once; may use `{minutes}`, `{app}`, `{purpose}` (and `{amount}`,
   * `{currency}`, `{payee}` with a payment); ≤ 3 SMS segments.
   */
  messageTemplate?: string;
  /** ≤ 64 characters. */
  app?: string;
  channel?: Channel;
  /**
   * PSD2 dynamic linking (purpose `TRANSACTION` only): amount, currency and payee together bind
   * the code to that payment; a verify must carry the same three.
   */
  amount?: string;
  /** ISO 4217, e.g. `EUR`. */
  currency?: string;
  /** 1–64 characters. */
  payee?: string;
}

/** The payment a code is bound to (PSD2 dynamic linking). */
export interface Transaction {
  /** As given, e.g. `"10.50"` (compared as a decimal). */
  amount: string;
  /** ISO 4217, upper case. */
  currency: string;
  payee: string;
}

/** The payment a verify approves: required, all three, for a code bound to one. */
export interface VerifyPayment {
  amount?: string;
  currency?: string;
  payee?: string;
}

export interface RequestResult {
  sessionId: string;
  expiresInSeconds: number;
  attemptsLeft: number;
  /** An active session for (dest, purpose) was reused: no SMS was sent. */
  reused: boolean;
  /** The channel the code went out on (after any fallback). */
  channel: Channel;
}

/** `resend`'s options. */
export interface ResendParams {
  /** Send the new code on this channel (default: the session's). */
  channel?: Channel;
}

/**
 * The code and exactly one of `sessionId` (verify by id) or `dest` + `purpose` (verify by
 * destination: the active session of that number and purpose, counted the same way).
 */
export type VerifyParams = VerifyPayment &
  (
    | { sessionId: string; dest?: never; purpose?: never; /** 4–10 digits, as a string. */ code: string }
    | { sessionId?: never; dest: string; purpose: Purpose; /** 4–10 digits, as a string. */ code: string }
  );

export interface VerifyResult {
  /** The session checked; null when a verify by destination found no active session (NOT_FOUND). */
  sessionId: string | null;
  status: VerifyStatus;
  verified: boolean;
  message: string;
  attemptsLeft: number;
}

export interface SessionStatus {
  sessionId: string;
  /** Masked, e.g. `+233*****7745`. */
  dest: string;
  purpose: Purpose;
  app: string | null;
  channel: Channel;
  state: 'PENDING' | 'APPROVED' | 'EXPIRED' | 'LOCKED' | 'CANCELED';
  attemptsUsed: number;
  maxAttempts: number;
  /** RFC 3339. */
  createdAt: string;
  expiresAt: string;
  verifiedAt: string | null;
  /** The payment the code is bound to (PSD2), when there is one. */
  transaction?: Transaction;
  /** What the provider's receipts say of the latest message (SPEC §8); absent for test numbers. */
  delivery?: DeliveryState;
  /** The provider's error code of an `undelivered` or `failed` message. */
  deliveryErrorCode?: string;
}

/** Where a message is, as far as the provider's receipts have told (SPEC §8); never backwards. */
export type DeliveryState = 'accepted' | 'sent' | 'delivered' | 'undelivered' | 'failed';

export interface AuditEvent {
  time: string;
  /**
   * Session events, and the operator's: `workspace_created`, `workspace_updated`, `key_created`,
   * `key_revoked`; Fraud Guard's `prefix_blocked`, `prefix_unblocked` (`dest` is the prefix).
   */
  event: string;
  /** Empty for an event about no session (refusals, admin events). */
  sessionId: string;
  /** null for the admin events. */
  purpose: Purpose | null;
  app: string | null;
  /** Masked; empty for the admin events. */
  dest: string;
  outcome: string;
  status?: string;
  test?: boolean;
  /** The key of `key_created` / `key_revoked`, by id (never the key or its hash). */
  keyId?: string;
  /** The channel of a delivery event (`delivered`, `delivery_failed`, `resent`, `delivery_receipt`). */
  channel?: Channel;
  /** The provider's message id of a `delivered` or `resent` message, when its gateway named one. */
  messageId?: string;
}

export interface AuditPage {
  events: AuditEvent[];
  nextCursor: string | null;
}

export interface AuditQuery {
  sessionId?: string;
  /** RFC 3339. */
  since?: string;
  /** 1–500 (default 100). */
  limit?: number | string;
  cursor?: string;
}

export interface AnalyticsQuery {
  /** Only this app (default: every app). */
  app?: string;
  /** UTC calendar days including today, 1–90 (default 30). */
  days?: number | string;
}

/** Counts of one day, channel, purpose or the whole period. Test numbers are never counted. */
export interface AnalyticsCounts {
  /** Sessions whose message the gateway accepted (not reuses). */
  sent: number;
  /** Requests answered with an active session (no message). */
  reused: number;
  /** Requests whose delivery failed or timed out. */
  delivery_failed: number;
  verified: number;
  /** Sessions locked: every attempt used without the right code. */
  failed: number;
  /** Sessions that reached expiry unverified (canceled ones included). */
  expired: number;
  /** verified / sent, 4 decimals; 0 when nothing was sent. */
  verification_rate: number;
  /** SMS segments sent (WhatsApp messages have none). */
  sms_segments: number;
  /** Codes sent again for a session (resend). */
  resent: number;
  /** pricePerSegment × sms_segments, exact, with the price's decimals. */
  estimated_cost: { amount: string; currency: string };
  /** Sends Fraud Guard refused (FRAUD_SUSPECTED). */
  fraud_blocked: number;
  /** What those sends would have cost: pricePerSegment × their SMS segments. */
  fraud_saved: { amount: string; currency: string };
  /** Messages a receipt said reached the handset (SPEC §8). */
  delivered: number;
  /** Messages a receipt said were undelivered or failed. */
  undelivered: number;
  /** delivered / (delivered + undelivered), 4 decimals; 0 when no message has a final receipt. */
  delivery_rate: number;
}

/** GET /otp/analytics: every count is attributed to the UTC day its session was created. */
export interface AnalyticsReport {
  app: string | null;
  period_days: number;
  /** First and last day of the period, YYYY-MM-DD (UTC). */
  from: string;
  to: string;
  totals: AnalyticsCounts;
  /** Every day of the period, oldest first. */
  days: Array<AnalyticsCounts & { date: string }>;
  /** Only channels and purposes with activity in the period. */
  by_channel: Partial<Record<Channel, AnalyticsCounts>>;
  by_purpose: Partial<Record<Purpose, AnalyticsCounts>>;
  /** By the destination's calling code (`"233"`; `"other"` when unknown), with activity only. */
  by_country: Record<string, AnalyticsCounts>;
  /** The provider error codes of the period's undelivered and failed messages, most frequent first (≤ 10). */
  top_errors: Array<{ code: string; count: number }>;
}

/** The OTP operations bound to one workspace. */
export interface WorkspaceOps {
  request(params: RequestParams, opts?: IdempotencyOptions): Promise<RequestResult>;
  verify(params: VerifyParams): Promise<VerifyResult>;
  status(sessionId: string): Promise<SessionStatus | null>;
  cancel(sessionId: string): Promise<SessionStatus>;
  resend(sessionId: string, params?: ResendParams, opts?: IdempotencyOptions): Promise<RequestResult>;
  audit(query?: AuditQuery): Promise<AuditPage>;
  analytics(query?: AnalyticsQuery): Promise<AnalyticsReport>;
}

export interface OtpServiceOptions {
  /** OTP_PEPPER: ≥ 32 bytes. Codes are stored only as HMAC-SHA256 under it. */
  pepper: string;
  /** Where messages go: a Gateway, or a function with the signature of `send`. */
  gateway: Gateway | ((message: OutgoingMessage) => Promise<DeliveryOutcome>);
  /** Default: a new MemoryStore. */
  store?: MemoryStore | RedisStore;
  /** Sender names of the library's own workspace (default: any valid sender name). */
  senders?: string[];
  /** Policy of the library's own workspace. */
  policy?: Policy;
  /** Id of the library's own workspace (default "default"). */
  workspaceId?: string;
  /** Enables the admin routes of `handle()` / `otpkit serve`. */
  adminToken?: string;
  /** Answer MISCONFIGURED instead of throwing when the pepper is missing (for servers). */
  allowMisconfigured?: boolean;
  /** Counts sends, verifications, refusals and latencies for `GET /metrics` of createServer(). */
  metrics?: Metrics;
  /**
   * The keys delivery receipts are checked with (`receiptKeysFromEnv()` for the environment's).
   * Default: from the gateway's own settings (its `publicBaseUrl`, each Twilio gateway's token,
   * the SMS gateway's token for JSON receipts).
   */
  receipts?: ReceiptKeys;
}

/**
 * Prometheus metrics (prom-client): `otpkit_requests_total`, `otpkit_sends_total{channel,country,outcome}`,
 * `otpkit_verifications_total{status}`, `otpkit_blocked_sends_total{reason}` (reason: the error code,
 * e.g. RATE_LIMITED, SPEND_LIMIT_REACHED, FRAUD_SUSPECTED for sends Fraud Guard refused),
 * `otpkit_gateway_latency_seconds`, `otpkit_store_latency_seconds`, and the process's defaults.
 * createServer() answers them at `GET /metrics` (the admin token unless METRICS_PUBLIC=true).
 */
export class Metrics {
  constructor();
  /** The text exposition and its content type. */
  expose(): Promise<{ body: string; contentType: string }>;
}

/** The HTTP answer `handle()` produces. */
export interface Reply {
  status: number;
  body: string;
  retryAfter?: number;
  /** An answer replayed for an Idempotency-Key (sent with `Idempotent-Replayed: true`). */
  replayed?: boolean;
}

/**
 * Options of the operations that send (SPEC §7 "Idempotency"). `idempotencyKey`: 1–255
 * characters of [\x21-\x7E] (else OtpError VALIDATION_ERROR, field `Idempotency-Key`), kept
 * hashed per workspace for 24 h. The same key with the same params answers the first answer
 * again — the same result, or the same refusal thrown — and sends and charges nothing; with other
 * params it rejects with IDEMPOTENCY_KEY_REUSED (422). A call made while the first is still
 * running waits for it. A 5xx failure (DELIVERY_FAILED, STORE_UNAVAILABLE) is not kept: the
 * same call runs again.
 */
export interface IdempotencyOptions {
  idempotencyKey?: string;
}

export interface HandledRequest {
  method: string;
  /** Without the query string. */
  path: string;
  /** The query string without `?`. */
  query?: string;
  /**
   * The path and query string exactly as received (a Twilio receipt's signature covers them);
   * default `path` + `?` + `query`.
   */
  pathAndQuery?: string;
  /** Lower-case header names, as node:http gives them. */
  headers: Record<string, string | string[] | undefined>;
  /** Reads the body, refusing more than `maxBytes` (PAYLOAD_TOO_LARGE). */
  readBody(maxBytes: number): Promise<Buffer>;
}

/**
 * OTPs by SMS/WhatsApp. The methods on the service itself act in its own workspace; use
 * `forWorkspace` / `forApiKey` for tenants created with `createWorkspace`.
 * Validation and refusals reject with {@link OtpError}; verification outcomes are results.
 */
export class OtpService {
  /** Throws OtpError MISCONFIGURED without a pepper of ≥ 32 bytes, VALIDATION_ERROR for a bad policy. */
  constructor(opts: OtpServiceOptions);
  readonly store: MemoryStore | RedisStore;

  /** Sends a code, or reuses the active session for (dest, purpose) without an SMS. */
  request(params: RequestParams, opts?: IdempotencyOptions): Promise<RequestResult>;
  /** Checks a code. Every outcome resolves (status APPROVED, INVALID, …); bad input rejects. */
  verify(params: VerifyParams): Promise<VerifyResult>;
  /** A session's status, or null when there is none. */
  status(sessionId: string): Promise<SessionStatus | null>;
  /**
   * Cancels a pending session: its status with state CANCELED (a verify then answers EXPIRED).
   * Rejects with OtpError NOT_FOUND, or ALREADY_USED (409) / EXPIRED (410) /
   * MAX_ATTEMPTS_REACHED (423) when the session is no longer pending.
   */
  cancel(sessionId: string): Promise<SessionStatus>;
  /**
   * Sends a pending session a new code: same session id, the old code stops working, attempts
   * used are kept, a new expiry. Charged like a send. Rejects with OtpError RESEND_TOO_SOON
   * (429, `retryAfterSeconds`), RATE_LIMITED, DESTINATION_LOCKED, DELIVERY_FAILED, NOT_FOUND,
   * or ALREADY_USED (409) / EXPIRED (410) / MAX_ATTEMPTS_REACHED (423).
   */
  resend(sessionId: string, params?: ResendParams, opts?: IdempotencyOptions): Promise<RequestResult>;
  /** Audit events of the service's own workspace, newest first. */
  audit(query?: AuditQuery): Promise<AuditPage>;
  /** Analytics of the service's own workspace (VALIDATION_ERROR for a bad `days` or `app`). */
  analytics(query?: AnalyticsQuery): Promise<AnalyticsReport>;

  /** Operations in a workspace created with `createWorkspace` (NOT_FOUND if there is none). */
  forWorkspace(workspaceId: string): WorkspaceOps;
  /** Operations in the workspace of an API key (UNAUTHORIZED if it is unknown or revoked). */
  forApiKey(apiKey: string): WorkspaceOps;

  /** Creates a tenant and its first API key (shown once). */
  createWorkspace(params: { name: string; senders: string[]; policy?: Policy }): Promise<{
    workspaceId: string;
    apiKey: string;
    keyId: string;
  }>;
  /** The workspace with every key by id and times, revoked ones too (never a key or its hash). */
  getWorkspace(workspaceId: string): Promise<WorkspaceDetail>;
  /** Replaces `senders`, merges `policy` keys. */
  updateWorkspace(workspaceId: string, patch: { name?: string; senders?: string[]; policy?: Policy }): Promise<unknown>;
  createKey(workspaceId: string): Promise<{ apiKey: string; keyId: string }>;
  /** Revocation is immediate. */
  revokeKey(workspaceId: string, keyId: string): Promise<void>;
  /**
   * One page of every workspace, by id, each as getWorkspace() shows it; pass `nextCursor` back
   * as `cursor` (null at the end). `limit` 1–200, default 50 (VALIDATION_ERROR otherwise).
   */
  listWorkspaces(query?: { cursor?: string | null; limit?: number | string }): Promise<WorkspacePage>;
  /** Analytics across every workspace (GET /v1/admin/analytics; VALIDATION_ERROR for a bad `days` or `app`). */
  adminAnalytics(query?: AnalyticsQuery): Promise<AdminAnalyticsReport>;
  /**
   * Fraud Guard's prefixes of a workspace created with `createWorkspace` (GET
   * /v1/admin/workspaces/{id}/fraud): blocked ones first, then by sends. NOT_FOUND if there is none.
   */
  getFraud(workspaceId: string): Promise<FraudReport>;
  /**
   * Ends the block of a prefix (`+233202`, or `233202`) and clears its counts (DELETE
   * /v1/admin/workspaces/{id}/fraud/blocks/{prefix}; audited `prefix_unblocked`). Rejects with
   * NOT_FOUND when the workspace is unknown or the prefix is not blocked.
   */
  unblockPrefix(workspaceId: string, prefix: string): Promise<void>;

  /**
   * A delivery receipt (SPEC §8), for an app that mounts the receipt routes itself: `kind`
   * `'twilio'` (POST …/delivery-receipts/twilio; `pathAndQuery` the request's path and query
   * string exactly as received, `signature` its `X-Twilio-Signature`), `'json'` (`signature`
   * its `X-Otpkit-Signature`), `'meta'` (POST …/delivery-receipts/meta, `signature` its
   * `X-Hub-Signature-256`) or `'metaCheck'` (Meta's GET of the same URL: the check is in
   * `pathAndQuery`), `rawBody` the body's bytes as received. Resolves to the reply to send back:
   * 200, 403 INVALID_SIGNATURE, 400 VALIDATION_ERROR, or 503 (the provider retries).
   */
  receipt(kind: 'twilio' | 'json' | 'meta' | 'metaCheck', pathAndQuery: string, signature: string | null | undefined, rawBody: Buffer | string): Promise<Reply>;

  /** Answers one HTTP request exactly as the Worker does (what `otpkit serve` uses). */
  handle(req: HandledRequest): Promise<Reply>;
  /** Waits for bookkeeping that follows answers (audit rows, failure streak). */
  settle(): Promise<void>;
  /** Settles and closes the store (and its Redis client, if the store created it). */
  close(): Promise<void>;
}

/** A node:http server answering SPEC's HTTP API with `service`. */
export function createServer(service: OtpService): import('node:http').Server;
/** A running native server (serveNative). */
export interface NativeServer {
  /** The port it listens on (the one given, or the free one picked for port 0). */
  readonly port: number;
  /** Connections open now. */
  readonly connections: number;
  /**
   * Stops accepting; lets each connection finish the request it is serving (idle ones close at
   * once) for at most `graceMs`, then closes the rest. Resolves once every connection is gone.
   */
  close(graceMs: number): Promise<void>;
}
/**
 * SPEC's HTTP API with `service` on the native HTTP/1.1 server `otpkit serve` uses (hyper on the
 * module's own threads; the OTPKIT_* connection limits from the environment, as createServer).
 * `log`: gets one JSON line per request at `logLevel`. Throws MISCONFIGURED when it cannot listen.
 */
export function serveNative(
  service: OtpService,
  opts?: { host?: string; port?: number; log?: ((line: string) => void) | null; logLevel?: string | null; metricsPublic?: boolean },
): NativeServer;
/** The request listener, to mount under your own node:http server. */
export function listener(
  service: OtpService,
): (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => Promise<void>;

/** `GET /v1/admin/workspaces`: one page. */
export interface WorkspacePage {
  workspaces: WorkspaceDetail[];
  /** The `cursor` of the next page; null on the last. */
  nextCursor: string | null;
}

/**
 * `GET /v1/admin/analytics`: AnalyticsReport over every workspace (each bucket costed at its own
 * workspace's price). Every `estimated_cost` is null when workspaces price in more than one
 * currency; `estimated_costs` has the period's cost per currency.
 */
export interface AdminAnalyticsReport
  extends Omit<AnalyticsReport, 'totals' | 'days' | 'by_channel' | 'by_purpose' | 'by_country'> {
  totals: AdminAnalyticsCounts;
  days: Array<AdminAnalyticsCounts & { date: string }>;
  by_channel: Partial<Record<Channel, AdminAnalyticsCounts>>;
  by_purpose: Partial<Record<Purpose, AdminAnalyticsCounts>>;
  by_country: Record<string, AdminAnalyticsCounts>;
  estimated_costs: Array<{ amount: string; currency: string }>;
  /** Each workspace with activity in the period, by id, with its totals as its own analytics() shows them. */
  workspaces: Array<{ workspace_id: string; totals: AnalyticsCounts }>;
}

export type AdminAnalyticsCounts = Omit<AnalyticsCounts, 'estimated_cost' | 'fraud_saved'> & {
  estimated_cost: { amount: string; currency: string } | null;
  /** null as estimated_cost is. */
  fraud_saved: { amount: string; currency: string } | null;
};

/** `GET /v1/admin/workspaces/{id}`: the workspace as PATCH shows it, plus its keys. */
export interface WorkspaceDetail {
  workspaceId: string;
  name: string;
  senders: string[];
  policy: Required<Policy>;
  /** Ids of live keys. */
  keyIds: string[];
  /** RFC 3339. */
  createdAt: string;
  /** Every key, oldest first; `lastUsedAt`: when it last authenticated a request (to within an hour), or null. */
  keys: Array<{ keyId: string; createdAt: string; revokedAt: string | null; lastUsedAt: string | null }>;
}
