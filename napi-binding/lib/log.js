'use strict';
// Logs of `otpkit serve` (SPEC §9 "Logs"): one JSON line per request and one per failed
// delivery, with the fields otpkit-core decides (native.requestLogLine / deliveryFailureLine:
// never a code, key, hash, pepper or message text; destinations masked). LOG_LEVEL: debug, info
// (default), warn, error. What a request learns on its way (its route's name, the workspace it
// authenticated as) is noted in an AsyncLocalStorage the server opens per request, so the
// service's signatures stay as they are.

const { AsyncLocalStorage } = require('node:async_hooks');
const native = require('./native');
const { hostError } = require('./errors');

const requestInfo = new AsyncLocalStorage();

/** Notes `key` = `value` for the current request's log line (no-op outside a served request). */
function note(key, value) {
  const info = requestInfo.getStore();
  if (info) info[key] = value;
}

/** The current request's log context, if any (holds `log`: where lines go, and `level`). */
function current() {
  return requestInfo.getStore();
}

/** Prints the request's line (if LOG_LEVEL lets it through), and what a 500 MISCONFIGURED names. */
function logRequest(info, method, status, body) {
  const line = native.requestLogLine(info.level ?? null, Date.now(), method, info.route ?? 'unknown', status, Date.now() - info.started, info.workspace ?? null, status >= 400 ? body : null);
  if (line) info.log(line);
  if (status === 500 && typeof body === 'string') {
    const problem = native.configProblemLine(info.level ?? null, Date.now(), body);
    if (problem) info.log(problem);
  }
}

/**
 * Prints a failed store step's line for the current request (when one is being served): the IO's
 * kind, unreachable or corrupt, and the error's code or name only (ECONNREFUSED, CROSSSLOT, …).
 */
function logStoreFailure(store, io, error) {
  const info = requestInfo.getStore();
  if (!info) return;
  const corrupt = error?.code === 'INTERNAL_ERROR';
  // The client's own error when there is one: its code (ECONNREFUSED), or a Redis reply's first
  // word (CROSSSLOT, NOSCRIPT, READONLY), else the error's name. The core keeps only letters,
  // digits and _.:- (64 at most; a run of 6+ digits becomes #).
  const c = error?.cause ?? error;
  const reply = c?.name === 'ReplyError' && typeof c.message === 'string' ? c.message.split(' ')[0] : null;
  // A plain Error (ioredis' "Stream isn't writeable…", "Connection is closed.") says it in words.
  const words = c?.name === 'Error' && typeof c.message === 'string' ? c.message : null;
  const cause = String((typeof c?.code === 'string' && c.code) || reply || words || c?.name || 'Error');
  const line = native.storeFailureLine(info.level ?? null, Date.now(), store, String(io ?? ''), corrupt, cause);
  if (line) info.log(line);
}

/** Prints a failed delivery's line for the current request (when one is being served). */
function logDeliveryFailure(message, gateway, cause, startedMs) {
  const info = requestInfo.getStore();
  if (!info) return;
  const line = native.deliveryFailureLine(
    info.level ?? null, Date.now(), gateway, String(message.channel ?? 'sms'), String(message.to ?? ''), String(message.reference ?? ''),
    cause?.status ?? null, cause?.timedOut === true, Date.now() - startedMs,
  );
  if (line) info.log(line);
}

/**
 * Prints a delivery receipt's `delivery_undelivered` line (a receipt that moved a session to
 * undelivered or failed) for the current request: the core's ReceiptFlow builds it (masked
 * number, ids, provider status and error code; never a signature or token).
 */
function logReceipt(flow) {
  const info = requestInfo.getStore();
  if (!info) return;
  for (const line of flow.logLines(info.level ?? null, Date.now())) info.log(line);
}

/** The `delivery_fallback` line once a receipt's fallback resend `i` ended (`refused`: its error code, or null). */
function logFallback(flow, i, refused) {
  const info = requestInfo.getStore();
  if (!info) return;
  const line = flow.fallbackLogLine(i, refused, info.level ?? null, Date.now());
  if (line) info.log(line);
}

/**
 * What a flow run in Rust did that the request logs and counts, as the driver does for its own
 * steps (`store`: the store's kind): the store effects that failed (`failed`: `[effect, code,
 * cause, …]`), their times (`timed`: `[effect, seconds, …]`), and the messages sent through a
 * built-in gateway (`sent`: 8 fields a message, see src/inflight.rs `deliver`).
 */
function reportRun(store, { failed, timed, sent }, ctx) {
  for (let i = 0; i + 2 < (failed?.length ?? 0); i += 3) logStoreFailure(store, failed[i], hostError(failed[i + 1], { code: failed[i + 2] }));
  for (let i = 0; i + 1 < (timed?.length ?? 0); i += 2) ctx.metrics?.stored(timed[i], Number(timed[i + 1]));
  for (let i = 0; i + 7 < (sent?.length ?? 0); i += 8) {
    const [channel, kind, outcome, seconds, status, to, reference] = sent.slice(i, i + 7);
    const message = { channel, to, reference };
    ctx.metrics?.sent(message, outcome, Number(seconds));
    if (outcome === 'delivered') continue;
    const cause = outcome === 'timedOut' ? { timedOut: true } : status ? { status: Number(status) } : {};
    logDeliveryFailure(message, kind, cause, Date.now() - Number(seconds) * 1000);
  }
}

module.exports = { requestInfo, note, current, logRequest, logDeliveryFailure, logStoreFailure, logReceipt, logFallback, reportRun };
