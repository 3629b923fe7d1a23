'use strict';
// The Node-API module built from napi-binding/src (Rust), loaded by the loader napi-rs generates
// (`napi build --platform` writes binding.js; scripts/build-node runs it). That loader takes, in
// order: $NAPI_RS_NATIVE_LIBRARY_PATH, ./otpkit.<platform>.node next to it (a checkout after
// scripts/build-node), then the per-platform package otpkit-<platform> that npm installed as an
// optionalDependency of otpkit (scripts/pack-node makes them). This file is the only one that loads it.
const fs = require('node:fs');
const path = require('node:path');

// napi-rs's name for this machine's binary ("linux-x64-gnu", "darwin-arm64", "win32-x64-msvc", …).
function platformName() {
  const { platform, arch } = process;
  if (platform === 'win32') return `win32-${arch}-msvc`;
  if (platform !== 'linux') return `${platform}-${arch}`;
  let musl = false;
  try {
    const report = process.report && process.report.getReport();
    musl = !(report && report.header && report.header.glibcVersionRuntime);
  } catch {
    // unknown: assume glibc
  }
  return `linux-${arch}-${musl ? 'musl' : 'gnu'}`;
}

function supported() {
  try {
    const { napi } = require('../package.json');
    const names = { 'x86_64': 'x64', aarch64: 'arm64' };
    return (napi.targets || []).map((t) => {
      const [cpu, , os, abi] = t.split('-');
      const arch = names[cpu] || cpu;
      if (os === 'darwin') return `darwin-${arch}`;
      if (os === 'windows') return `win32-${arch}-${abi}`;
      return `${os}-${arch}-${abi}`;
    });
  } catch {
    return [];
  }
}

let native;
try {
  native = require('../binding.js');
} catch (e) {
  const name = platformName();
  const list = supported();
  const checkout = fs.existsSync(path.join(__dirname, '..', 'src', 'lib.rs'));
  const hint = checkout
    ? 'In a checkout of the repository, build it with scripts/build-node (or scripts/test, which builds everything).'
    : list.includes(name)
      ? `npm did not install the optional dependency otpkit-${name}: reinstall otpkit (npm install otpkit), ` +
        'without --omit=optional / --no-optional, from a registry that has it.'
      : `otpkit has no prebuilt binary for ${name} (it has: ${list.join(', ')}); ` +
        'build one from the repository with `napi build --platform --release` in napi-binding/ and point ' +
        'NAPI_RS_NATIVE_LIBRARY_PATH at the .node file.';
  const err = new Error(
    `otpkit: no native module for this platform (${name}, node ${process.version}) could be loaded. ${hint} ` +
      `(loader: ${e.message.split('\n')[0]})`,
  );
  err.cause = e;
  err.code = 'OTPKIT_NO_NATIVE_BINDING';
  throw err;
}

module.exports = native;
