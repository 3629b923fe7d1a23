'use strict';
// Prometheus metrics of `otpkit serve` (SPEC §9: `GET /metrics`, the admin token unless
// METRICS_PUBLIC=true). Encoded by prom-client, the Prometheus client most Node services use
// (text exposition format, histograms, the process's default metrics), rather than by hand.
// Labels are bounded: route names, statuses, error codes, channels and calling codes — never a
// number, a workspace id or anything a client can choose freely.

const client = require('prom-client');
const native = require('./native');

const VERIFY_STATUSES = { 200: 'APPROVED', 404: 'NOT_FOUND', 409: 'ALREADY_USED', 410: 'EXPIRED', 423: 'MAX_ATTEMPTS_REACHED' };

class Metrics {
  constructor() {
    const registers = [(this.registry = new client.Registry())];
    client.collectDefaultMetrics({ register: this.registry });
    this.requests = new client.Counter({
      name: 'otpkit_requests_total', help: 'Requests answered, by route and HTTP status.', labelNames: ['route', 'status'], registers,
    });
    this.sends = new client.Counter({
      name: 'otpkit_sends_total',
      help: 'Messages handed to the gateway, by channel, destination calling code and outcome (delivered, failed, timedOut).',
      labelNames: ['channel', 'country', 'outcome'],
      registers,
    });
    this.verifications = new client.Counter({
      name: 'otpkit_verifications_total', help: 'Verifications answered, by status.', labelNames: ['status'], registers,
    });
    this.blocked = new client.Counter({
      name: 'otpkit_blocked_sends_total',
      help:
        'Requests and resends refused before a send, by reason (the error code: RATE_LIMITED, DESTINATION_LOCKED, RESEND_TOO_SOON, SPEND_LIMIT_REACHED, FRAUD_SUSPECTED for Fraud Guard\'s blocks, …).',
      labelNames: ['reason'],
      registers,
    });
    this.gatewayLatency = new client.Histogram({
      name: 'otpkit_gateway_latency_seconds', help: 'Time of one gateway send, by channel and outcome.', labelNames: ['channel', 'outcome'],
      buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers,
    });
    this.storeLatency = new client.Histogram({
      name: 'otpkit_store_latency_seconds', help: 'Time of one store effect of a flow, by effect (readSession, admit, verify, …).', labelNames: ['io'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers,
    });
  }

  /** A request answered (`body` read for the verify status and the refusal reason only). */
  answered(route, status, body) {
    this.requests.inc({ route: route ?? 'unknown', status: String(status) });
    if (route === 'verify') {
      let name = VERIFY_STATUSES[status];
      if (status === 400) name = body && body.includes('"INVALID"') ? 'INVALID' : null; // else a malformed request
      if (name) this.verifications.inc({ status: name });
    } else if ((route === 'request' || route === 'resend') && (status === 403 || status === 429)) {
      const reason = native.errorCodeOf(body ?? '');
      if (reason) this.blocked.inc({ reason });
    }
  }

  /** One gateway send. */
  sent(message, outcome, seconds) {
    const channel = message.channel === 'whatsapp' ? 'whatsapp' : 'sms';
    this.sends.inc({ channel, country: native.callingCode(String(message.to ?? '')), outcome });
    this.gatewayLatency.observe({ channel, outcome }, seconds);
  }

  /** One store effect. */
  stored(io, seconds) {
    this.storeLatency.observe({ io }, seconds);
  }

  /** The text exposition, and its content type. */
  async expose() {
    return { body: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}

module.exports = { Metrics };
