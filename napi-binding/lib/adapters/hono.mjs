// otpkit/hono for import: the adapter (hono-app.js) on the ES module copy of Hono, the one an
// application that imports Hono uses (a Hono app of the CommonJS copy cannot read its requests).
import { Hono } from 'hono';
import { basePath } from 'hono/route';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import app from './hono-app.js';

export const otpkitHono = app.honoAdapter({ Hono, basePath, RESPONSE_ALREADY_SENT });
