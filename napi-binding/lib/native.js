'use strict';
// The Node-API module built from napi-binding/src (Rust). `scripts/build-node` puts it next to
// package.json as otpkit.node.
const path = require('node:path');

let native;
try {
  native = require(path.join(__dirname, '..', 'otpkit.node'));
} catch (e) {
  const err = new Error(
    `otpkit: the native module napi-binding/otpkit.node could not be loaded (${e.message}). ` +
      'Build it with scripts/build-node (or scripts/test, which builds everything).',
  );
  err.cause = e;
  throw err;
}

module.exports = native;
