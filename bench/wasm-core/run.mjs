#!/usr/bin/env node
// Times the core's operations compiled to wasm32 (pkg/ from wasm-bindgen --target nodejs).
// Each operation runs N times inside wasm per call; 7 rounds, median ns/op. Prints JSON.
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const w = require('./pkg/otpkit_bench_wasm.js');

const ops = {
  hash: w.hash_n, issue: w.issue_n, verify_right: w.verify_right_n, verify_wrong: w.verify_wrong_n,
  session_clone: w.clone_n, render_segments: w.render_segments_n, envelope_verify: w.envelope_verify_n,
};
const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const out = {};
for (const [name, f] of Object.entries(ops)) {
  f(2000); // warm-up (JIT tiers, fixture)
  let n = 1000;
  while (true) { const t = process.hrtime.bigint(); f(n); if (Number(process.hrtime.bigint() - t) > 50e6) break; n *= 2; }
  const rounds = [];
  for (let r = 0; r < 7; r++) { const t = process.hrtime.bigint(); f(n); rounds.push(Number(process.hrtime.bigint() - t) / n); }
  out[name] = median(rounds);
}
// One JS→wasm call per verification (string passed across the boundary).
{
  const n = 200000, rounds = [];
  for (let i = 0; i < 20000; i++) w.verify_once('000000');
  for (let r = 0; r < 7; r++) { const t = process.hrtime.bigint(); for (let i = 0; i < n; i++) w.verify_once('000000'); rounds.push(Number(process.hrtime.bigint() - t) / n); }
  out.verify_wrong_one_call = median(rounds);
}
console.log(JSON.stringify(out));
