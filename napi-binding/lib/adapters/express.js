'use strict';
// otpkit/express: the HTTP API `otpkit serve` answers (both dialects, admin, audit), as Express
// middleware, with or without a body parser before it:
//
//   app.use('/otp-api', otpkitExpress(otp));
//
// Express makes req.url relative to the mount path, so the listener sees '/v1/messaging/…'.
// It answers every request that reaches it (404 NOT_FOUND for a path that is not the API's):
// mount it under a prefix, or after your own routes.

const { listener } = require('../server');
const { bodyWasRead, keptBody, replay, tooLarge, isApiPath } = require('./common');

/**
 * Middleware answering the API with `service`: an array of two functions, for `app.use(path, …)`
 * (or a Router) — the handler and an error handler for what a body parser before it refused.
 * `options` are the listener's (`log`, `logLevel`, `drainTimeoutMs`, `metricsPublic`).
 */
function otpkitExpress(service, options = {}) {
  const answer = listener(service, options);
  const run = (req, res, next, bytes) => {
    Promise.resolve(answer(bytes ? replay(req, bytes) : req, res)).catch(next);
  };

  function otpkit(req, res, next) {
    if (!bodyWasRead(req)) return run(req, res, next, null); // the listener reads the body itself
    // A body parser (express.json, .raw, .text, .urlencoded) read it: the bytes it kept.
    const bytes = keptBody(req, req.body);
    if (bytes === null) {
      return next(new Error('otpkit/express: the request body was read before otpkit and no copy of it was kept ' +
        '(req.rawBody or req.body): mount otpkit before that middleware'));
    }
    return run(req, res, next, bytes);
  }

  // A body parser that refused the body calls next(err), which skips `otpkit`. For the API's
  // routes the listener answers instead, as `otpkit serve` answers such a body: malformed JSON
  // (the text the parser kept in err.body) → 400 VALIDATION_ERROR, over the parser's limit → 413
  // PAYLOAD_TOO_LARGE; each after the key and content type checks. Other errors, and errors on
  // paths that are not the API's (your own routes when mounted at the root), go on to yours.
  function otpkitBodyErrors(err, req, res, next) {
    if (!err || typeof err.type !== 'string' || res.headersSent || !isApiPath(req.method, req.url)) return next(err);
    if (err.type === 'entity.parse.failed') {
      const bytes = keptBody(req, err.body);
      return bytes === null ? next(err) : run(req, res, next, bytes);
    }
    if (err.type === 'entity.too.large') return run(req, res, next, tooLarge());
    return next(err);
  }

  return [otpkit, otpkitBodyErrors];
}

module.exports = { otpkitExpress };
