'use strict';
// otpkit for Node.js. See index.d.ts for the API and README.md ("Node") for examples.

const { OtpService } = require('./lib/service');
const { MemoryStore } = require('./lib/memory-store');
const { RedisStore } = require('./lib/redis-store');
const { OtpError } = require('./lib/errors');
const { JsonGateway, TwilioGateway, MetaGateway, gatewayFromEnv, receiptKeysFromEnv } = require('./lib/gateway');
const { createServer, listener, serveNative } = require('./lib/server');

module.exports = {
  OtpService,
  MemoryStore,
  RedisStore,
  OtpError,
  JsonGateway,
  TwilioGateway,
  MetaGateway,
  gatewayFromEnv,
  receiptKeysFromEnv,
  createServer,
  serveNative,
  listener,
};

// Prometheus metrics (prom-client), loaded only by those who ask for them (`otpkit serve`).
Object.defineProperty(module.exports, 'Metrics', {
  enumerable: true,
  get: () => require('./lib/metrics').Metrics,
});
