'use strict';
// otpkit/hono: the HTTP API `otpkit serve` answers (both dialects, admin, audit), as a Hono
// sub-app for @hono/node-server:
//
//   app.route('/otp-api', otpkitHono(otp));
//   serve({ fetch: app.fetch, port: 3000 });
//
// The request is answered on Node's own objects (c.env.incoming / c.env.outgoing, which
// @hono/node-server provides) by the listener, which sees the path without the sub-app's prefix
// and answers 404 NOT_FOUND for a path that is not the API's. Middleware that would change the
// answer afterwards (headers set on c.res) does not apply: it is already sent.

// hono.js (require) and hono.mjs (import) build it, each with Hono from its own module format: an
// application that imports Hono and one that requires it each get the copy of Hono they use (the
// CommonJS and ES module copies do not share a request's internals: hono/route's basePath of one
// cannot read a request of the other).

const { listener } = require('../server');
const { bodyWasRead, replay, stripPrefix, answerAt } = require('./common');

/** `otpkitHono` for one copy of Hono: `{ Hono, basePath (hono/route), RESPONSE_ALREADY_SENT (@hono/node-server/utils/response) }`. */
function honoAdapter({ Hono, basePath, RESPONSE_ALREADY_SENT }) {
  // The path the sub-app is mounted at ('/otp-api'; '' or '/' at the root).
  const mountedAt = (c) => {
    try {
      return basePath(c);
    } catch (e) {
      // hono/route of another copy of Hono than the application's cannot read its request.
      throw new Error('otpkit/hono: the application uses another copy of hono than otpkit does ' +
        '(otpkit installed as a link to a folder with its own node_modules?): install otpkit from its tarball, ' +
        'or with npm install --install-links', { cause: e });
    }
  };
  /**
   * A Hono app answering the API with `service`, to mount with `app.route(prefix, …)`. `options`
   * are the listener's (`log`, `logLevel`, `drainTimeoutMs`, `metricsPublic`).
   */
  function otpkitHono(service, options = {}) {
    const answer = listener(service, options);
    const app = new Hono();
    app.all('*', async (c) => {
      const { incoming, outgoing } = c.env ?? {};
      if (!incoming || !outgoing) {
        throw new Error('otpkit/hono answers on Node\'s request and response: serve the app with @hono/node-server');
      }
      const url = stripPrefix(incoming.url, mountedAt(c));
      if (!bodyWasRead(incoming)) {
        await answerAt(answer, incoming, outgoing, url); // the listener reads the body itself
      } else {
        // A middleware before read it through Hono (c.req.json(), .text(), a validator): Hono keeps
        // what it read and gives the bytes again (re-encoded from the text it decoded, or taken
        // as they were when read as an ArrayBuffer).
        const bytes = Buffer.from(await c.req.arrayBuffer());
        await answer(replay(incoming, bytes, url), outgoing);
      }
      return RESPONSE_ALREADY_SENT;
    });
    return app;
  }
  return otpkitHono;
}

module.exports = { honoAdapter };
