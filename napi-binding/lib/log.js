'use strict';
// Logs of `otpkit serve` (SPEC §9 "Logs"): one JSON line per request and one per failed
// delivery, with the fields otpkit-core decides (native.requestLogLine / deliveryFailureLine:
// never a code, key, hash, pepper or message text; destinations masked). LOG_LEVEL: debug, info
// (default), warn, error. What a request learns on its way (its route's name, the workspace it
// authenticated as) is noted in an AsyncLocalStorage the server opens per request, so the
// service's signatures stay as they are.

const { AsyncLocalStorage } = require('node:async_hooks');
const native = require('./native');

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

/** Prints the request's line (if LOG_LEVEL lets it through). */
function logRequest(info, method, status, body) {
  const line = native.requestLogLine(info.level ?? null, Date.now(), method, info.route ?? 'unknown', status, Date.now() - info.started, info.workspace ?? null, status >= 400 ? body : null);
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

module.exports = { requestInfo, note, current, logRequest, logDeliveryFailure };
