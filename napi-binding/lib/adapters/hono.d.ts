// Types of otpkit/hono (lib/adapters/hono.js). Examples: README.md ("Framework adapters").

import type { Hono } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import type { OtpService } from '../../index';
import type { AdapterOptions } from './options';

export type { AdapterOptions };

/**
 * The HTTP API of `otpkit serve` (both dialects, admin, audit) as a Hono app, served by
 * @hono/node-server: `app.route('/otp-api', otpkitHono(otp))`. It answers on Node's request and
 * response (`c.env.incoming` / `c.env.outgoing`), whether or not a middleware read the body before.
 */
export function otpkitHono(service: OtpService, options?: AdapterOptions): Hono<{ Bindings: HttpBindings }>;
