// Types of otpkit/express (lib/adapters/express.js). Examples: README.md ("Framework adapters").
// Structural (node:http) types: no dependency on @types/express; they fit Express 4 and 5's app.use.

/// <reference types="node" />

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { OtpService } from '../../index';
import type { AdapterOptions } from './options';

export type { AdapterOptions };

/** Express's (and connect's) `next`. */
export type NextFunction = (err?: unknown) => void;

/** Answers the request (with the listener of `otpkit serve`). */
export type OtpkitHandler = (req: IncomingMessage, res: ServerResponse, next: NextFunction) => void;
/** Answers, on the API's routes, what a body parser before the handler refused (malformed JSON → 400, too large → 413). */
export type OtpkitBodyErrorHandler = (err: unknown, req: IncomingMessage, res: ServerResponse, next: NextFunction) => void;

/**
 * The HTTP API of `otpkit serve` (both dialects, admin, audit) as Express middleware, with or
 * without a body parser before it: `app.use('/otp-api', otpkitExpress(otp))`. The path it sees is
 * relative to the mount path; it answers every request that reaches it (404 NOT_FOUND off the API).
 */
export function otpkitExpress(service: OtpService, options?: AdapterOptions): [OtpkitHandler, OtpkitBodyErrorHandler];
