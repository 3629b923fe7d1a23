'use strict';
// otpkit/hono for require(): the adapter (hono-app.js) on the CommonJS copy of Hono.

const { Hono } = require('hono');
const { basePath } = require('hono/route');
const { RESPONSE_ALREADY_SENT } = require('@hono/node-server/utils/response');
const { honoAdapter } = require('./hono-app');

module.exports = { otpkitHono: honoAdapter({ Hono, basePath, RESPONSE_ALREADY_SENT }) };
