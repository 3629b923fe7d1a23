// Types of otpkit/fastify (lib/adapters/fastify.js). Examples: README.md ("Framework adapters").

import type { FastifyPluginAsync } from 'fastify';
import type { OtpService } from '../../index';
import type { AdapterOptions } from './options';

export type { AdapterOptions };

/**
 * The HTTP API of `otpkit serve` (both dialects, admin, audit) as a Fastify plugin:
 * `await app.register(otpkitFastify(otp), { prefix: '/otp-api' })`. In its scope every body is
 * left unread for the API (the application's content-type parsers are untouched).
 */
export function otpkitFastify(service: OtpService, options?: AdapterOptions): FastifyPluginAsync;
