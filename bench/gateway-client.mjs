#!/usr/bin/env node
// The gateway's HTTP client: otpkit's native sender (napi-binding/src/send.rs, reqwest + rustls
// on the addon's tokio runtime, one native call per message) against Node's fetch (undici) used
// the way lib/gateway.js used it until issue 14 (redirect: 'manual', an abort timer, the reply
// body read up to 64 KiB). Both post the same JSON gateway request to the same local gateway, a
// node:http server in its own process (its CPU is not counted).
//
//   node bench/gateway-client.mjs [--sends 4000] [--rounds 3] [--write]
//
// Per arm and concurrency: sends/s, latency p50/p99, and this process's CPU (user + system, every
// thread: the JS thread, undici's, the tokio workers) per send. Rounds alternate the arms' order;
// the table shows each figure's median over the rounds.
import { createRequire } from 'node:module';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from '../tests/conformance/host.mjs';
import { writeSection } from './lib/common.mjs';

const require = createRequire(path.join(ROOT, 'napi-binding', 'package.json'));
const { JsonGateway } = require('./lib/gateway.js');

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const SENDS = arg('sends', 4000);
const ROUNDS = arg('rounds', 3);
const LEVELS = [1, 32];
const write = process.argv.includes('--write');
const log = (m) => process.stderr.write(`gateway-client: ${m}\n`);

// The gateway: answers every POST 200 with a provider id, as a JSON gateway does.
const gatewayCode = `
  const http = require('node:http');
  let n = 0;
  const s = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => { res.setHeader('content-type', 'application/json'); res.end('{"id":"m' + (n++) + '"}'); });
  });
  s.keepAliveTimeout = 60000;
  s.listen(0, '127.0.0.1', () => console.log(s.address().port));`;
const gateway = spawn(process.execPath, ['-e', gatewayCode], { stdio: ['ignore', 'pipe', 'inherit'] });
const port = await new Promise((resolve) => gateway.stdout.once('data', (d) => resolve(Number(String(d).trim()))));
const url = `http://127.0.0.1:${port}/sms`;
const TOKEN = 'bench-token-0123456789';
const message = (i) => ({ to: `+23320${String(1000000 + i).slice(-7)}`, from: 'OTPKIT', text: `${String(i % 1e6).padStart(6, '0')} is your code`, channel: 'sms', reference: `sess_${i}` });

/** Node's fetch, as lib/gateway.js sent before issue 14 (the peer). */
async function fetchSend(m) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 10_000);
  try {
    const body = JSON.stringify({ to: m.to, from: m.from, text: m.text, channel: m.channel, reference: m.reference });
    const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body, redirect: 'manual', signal: controller.signal });
    const reader = res.body.getReader();
    let read = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      read += value.byteLength;
      if (read > 64 * 1024) {
        await reader.cancel();
        break;
      }
    }
    return res.status >= 200 && res.status < 300 ? 'delivered' : 'failed';
  } catch {
    return 'failed';
  } finally {
    clearTimeout(timer);
  }
}

const native = new JsonGateway({ url, token: TOKEN });
const arms = {
  'fetch (undici)': fetchSend,
  'otpkit native (reqwest)': (m) => native.send(m),
};

async function run(send, inFlight) {
  const lat = [];
  let next = 0;
  let failed = 0;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < SENDS) {
        const i = next++;
        const s = process.hrtime.bigint();
        if ((await send(message(i))) !== 'delivered') failed++;
        lat.push(Number(process.hrtime.bigint() - s) / 1e6);
      }
    }),
  );
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  lat.sort((a, b) => a - b);
  if (failed) throw new Error(`${failed} sends failed: is the gateway up?`);
  return { rate: SENDS / secs, p50: lat[Math.floor(lat.length * 0.5)], p99: lat[Math.floor(lat.length * 0.99)], cpuUs: (cpu.user + cpu.system) / SENDS };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = {}; // `${arm}|${level}` → [round results]
for (const [name, send] of Object.entries(arms)) for (let i = 0; i < 300; i++) await send(message(i)); // warm both
for (let r = 0; r < ROUNDS; r++) {
  const names = Object.keys(arms);
  if (r % 2) names.reverse();
  for (const level of LEVELS) {
    for (const name of names) {
      const res = await run(arms[name], level);
      (results[`${name}|${level}`] ??= []).push(res);
      log(`round ${r + 1}/${ROUNDS}, ${level} in flight, ${name}: ${res.rate.toFixed(0)} sends/s, ${res.cpuUs.toFixed(0)} µs CPU/send`);
    }
  }
}
gateway.kill();

const rows = [];
for (const level of LEVELS) {
  const peer = results[`fetch (undici)|${level}`];
  const peerRate = median(peer.map((x) => x.rate));
  const peerCpu = median(peer.map((x) => x.cpuUs));
  for (const name of Object.keys(arms)) {
    const xs = results[`${name}|${level}`];
    const rate = median(xs.map((x) => x.rate));
    const cpu = median(xs.map((x) => x.cpuUs));
    rows.push(`| ${name} | ${level} | ${rate.toFixed(0)} | ${median(xs.map((x) => x.p50)).toFixed(2)} | ${median(xs.map((x) => x.p99)).toFixed(2)} | ${cpu.toFixed(0)} | ${(rate / peerRate).toFixed(2)}× | ${(cpu / peerCpu).toFixed(2)}× |`);
  }
}
const table = `Measured by \`node bench/gateway-client.mjs\` on ${new Date().toISOString().slice(0, 10)} (${SENDS} sends per cell, medians of ${ROUNDS} rounds with the order alternating; ${os.cpus().length} cores, ${os.cpus()[0].model.trim()}, Node ${process.version}). The gateway is a local node:http server in its own process; CPU is this process's (every thread) per send.

| client | in flight | sends/s | p50 ms | p99 ms | CPU µs/send | sends/s vs fetch | CPU vs fetch |
|---|---:|---:|---:|---:|---:|---:|---:|
${rows.join('\n')}`;
console.log(table);
if (write) writeSection('gateway-client', table, { heading: '## The gateway client: native sender vs fetch (issue 14)' });
