// Options of otpkit/express, otpkit/fastify and otpkit/hono: those of the request listener they
// hand requests to (lib/server.js), as `otpkit serve` sets them from its environment.

export interface AdapterOptions {
  /**
   * Gets one JSON line per request and per failed delivery, the lines `otpkit serve` prints
   * (README "Logs"), e.g. `(line) => process.stdout.write(line + '\n')`. Default: none.
   */
  log?: ((line: string) => void) | null;
  /** The least level logged: `debug`, `info` (default), `warn` or `error` (LOG_LEVEL). */
  logLevel?: 'debug' | 'info' | 'warn' | 'error' | null;
  /**
   * An answer given before its body arrived (401, 413, 415) says `Connection: close`; the rest of
   * the body is read and discarded for at most this long, then the socket is destroyed (default
   * 10000, OTPKIT_DRAIN_TIMEOUT_MS).
   */
  drainTimeoutMs?: number;
  /** `GET /metrics` (a service with `metrics`) without the admin token (METRICS_PUBLIC=true). */
  metricsPublic?: boolean;
}
