// Faults 2 and 3: a process is killed (SIGKILL) and restarted while requests keep coming.
//   redis     redis-server under `otpkit serve` (Redis store); otpkit serve itself is NOT restarted
//   wrangler  `wrangler dev` (and its workerd), restarted on the same --persist-to state and port
// The same load and the same checks serve both; `fault` says what is killed and restored.
//
// For redis: Redis runs with --appendonly yes --appendfsync always in a temporary directory, so every write
// it acknowledged survives the kill. Parallel loops request codes for fresh destinations, send a
// wrong code (at most twice per session: attempts never run out) and read statuses. Timeline:
//   before   Redis up: everything answers normally
//   outage   Redis SIGKILLed: every request must answer the exact 503 STORE_UNAVAILABLE body,
//            within OUTAGE_BOUND_MS (no hang). (wrangler: nothing listens; connections are refused)
//   after    Redis restarted on the same port and directory; otpkit serve is NOT restarted: it
//            must recover by itself (recovery time = Redis listening → first 200). (wrangler:
//            restarted; recovery time = kill → first 200, including wrangler's start)
// Then every session that was answered 200 (before, during or after) must still be there, intact:
// status 200 PENDING with exactly the attempts whose INVALID answer the client saw (plus at most
// the verifies whose answer was lost at the kill), and its code must verify with the remaining
// attempts. Requests in flight at the kill may fail (503 / dropped); when their SMS went out,
// a new request for the same destination must not wait past the moment the dead send goes stale
// and must answer 200 after it (the guard must not stay stuck). Two requests whose gateway never
// answers are made just before the kill, so at least two sends are surely in flight then.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { clusterReady, startRedisCluster } from '../conformance/redis.mjs';
import { BODY_503, codeOf, loops, newDest, percentile, Problems, say, sleep, wrongCode } from './common.mjs';

/** How long any request may take while Redis is down (the client's connect timeout is 2 s). */
export const OUTAGE_BOUND_MS = 3000;
/** otpkit-core's guard::IN_FLIGHT_STALE_MS: an unconfirmed send is treated as timed out after it. */
export const IN_FLIGHT_STALE_MS = 15_000;
const STALE_SLACK_MS = 2000;
const HANG_PROBES = 2;
const MAX_WRONG = 2; // wrong verifies per session (maxAttempts is 5)

async function listening(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.end();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/** A redis-server that keeps every acknowledged write on disk: {url, port, dir, kill(), start(), stop()}. */
export async function startDurableRedis(port) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'otpkit-faults-redis-'));
  let child = null;
  const r = {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    get pid() {
      return child?.pid;
    },
    async start() {
      child = spawn('redis-server', [
        '--bind', '127.0.0.1', '--port', String(port), '--dir', dir,
        '--appendonly', 'yes', '--appendfsync', 'always', '--save', '',
      ], { stdio: 'ignore' });
      const c = child;
      c.exited = new Promise((res) => c.once('exit', res));
      const deadline = Date.now() + 15_000;
      while (!(await listening(port))) {
        if (c.exitCode !== null) throw new Error('redis-server exited at start (is it installed? scripts/bootstrap installs it)');
        if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${port} within 15 s`);
        await sleep(20);
      }
    },
    /** SIGKILL: no shutdown, no final fsync beyond what appendfsync always already did. */
    async kill() {
      if (!child || child.exitCode !== null) return;
      child.kill('SIGKILL');
      await child.exited;
    },
    async stop() {
      if (child && child.exitCode === null) {
        child.kill('SIGTERM');
        await child.exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await r.start();
  return r;
}

/**
 * A local Redis Cluster of `masters` primaries (no replicas) that keeps every acknowledged write
 * on disk (tests/conformance/redis.mjs with --appendonly yes --appendfsync always):
 * {nodes, kill(), start(), stop()}. kill() SIGKILLs the first master; start() brings it back on
 * its port, directory and nodes.conf (the same node id and slots) and waits until every node
 * reports cluster_state:ok again.
 */
export async function startDurableCluster(masters = 3) {
  const c = await startRedisCluster(masters, { args: ['--appendonly', 'yes', '--appendfsync', 'always'] });
  const [first] = c.servers;
  return {
    nodes: c.nodes,
    kill: () => first.crash(),
    async start() {
      await first.restart();
      await clusterReady(c.servers, 30_000);
    },
    stop: c.stop,
  };
}

/**
 * opts: client, adminToken, sink, fault {name, kill(), restore(), answers503: bool, partial?: bool}, beforeMs,
 * outageMs (time between the kill and the restore), afterMs, concurrency, label.
 * Answers {figures, problems}.
 */
export async function crashScenario({ client, adminToken, sink, fault, beforeMs, outageMs, afterMs, concurrency, label = '' }) {
  const name = fault.name;
  const problems = new Problems();
  const ws = await client.workspace(adminToken, {
    sendsPerDestination: { limit: 100, windowSeconds: 600 },
    sendsPerWorkspacePerMinute: 100000,
  });
  const codes = new Set();
  const sessions = []; // answered 200: {sessionId, dest, code, acked, unsure, wrongSent}
  const answers = []; // {op, started, ended, status, text, error}
  const failedRequests = []; // request answers that were not 200 (dest)
  let killAt = Infinity;
  let deadAt = Infinity; // kill() has returned: the process (host or Redis) is gone
  let backAt = Infinity;
  let recoveredAt = Infinity;
  let restoreStartedAt = 0;
  let stop = false;

  const record = (op, res, extra = {}) => {
    const a = { op, started: res.started, ended: res.started + res.ms, status: res.status, text: res.text, error: res.error, ms: res.ms, ...extra };
    answers.push(a);
    return a;
  };

  async function newSession() {
    const dest = newDest('+2338');
    const before = (await sink.messages(dest)).length;
    const res = await ws.request(dest);
    record('request', res, { dest });
    if (res.status === 0) await sleep(50); // nothing listens: do not spin
    if (res.status === 200) {
      const sessionId = res.json?.data?.sessionId;
      const m = (await sink.messages(dest)).slice(before).find((x) => x.reference === sessionId);
      const code = m ? codeOf(m) : null;
      if (!code) {
        problems.add('sessions lost', `a 200 without an SMS naming its session`);
        return;
      }
      codes.add(code);
      sessions.push({ sessionId, dest, code, acked: 0, unsure: 0, wrongSent: 0, at: res.started, ended: res.started + res.ms });
    } else {
      failedRequests.push({ dest, before, res });
    }
  }

  async function wrongVerify() {
    const open = sessions.filter((x) => x.wrongSent < MAX_WRONG);
    const s = open[Math.floor(Math.random() * open.length)];
    if (!s) return newSession();
    s.wrongSent += 1;
    const res = await ws.verify(s.sessionId, wrongCode(s.code));
    record('verify', res);
    if (res.status === 400 && res.json?.data?.status === 'INVALID') s.acked += 1;
    else if (res.status === 503 || res.status === 0) s.unsure += 1; // applied or not: the answer was lost
    else problems.add('wrong statuses', `wrong code → ${res.status} ${res.text.slice(0, 120)}`);
  }

  async function readStatus() {
    const s = sessions[Math.floor(Math.random() * sessions.length)];
    if (!s) return newSession();
    record('status', await ws.status(s.sessionId));
  }

  let smsWithoutAnswer = 0;
  let orphanSessions = 0;
  let retriedInWindow = 0;
  let keptReused = 0;
  let keptNewCode = 0;
  // Requests that failed (at the kill or during the outage) but whose SMS went out. Their
  // guard entry may still say "sending" (nobody lived to confirm it); SPEC's guard treats such an
  // entry as timed out IN_FLIGHT_STALE_MS after its admission (before the kill). So a new request
  // for the destination may wait for it, but must answer by then (+ slack), and one made after
  // it must answer 200 at once (reusing the session if the failed request's session exists).
  async function retryFailed() {
  for (const f of failedRequests.splice(0)) {
    const msgs = (await sink.messages(f.dest)).slice(f.before);
    if (!msgs.length) continue;
    smsWithoutAnswer += 1;
    await sink.setMode(f.dest, 'ok'); // a hang probe's number: the gateway answers again
    const st = await ws.status(msgs[0].reference);
    if (st.status === 200) orphanSessions += 1;
    const staleAt = f.res.started + IN_FLIGHT_STALE_MS;
    let again = await ws.request(f.dest, 'LOGIN', { timeoutMs: 40_000 });
    const first = `first ask ${again.started - staleAt} ms from the stale moment → ${again.status || again.error} after ${again.ms} ms`;
    if (again.started < staleAt) {
      retriedInWindow += 1;
      const late = again.started + again.ms - staleAt;
      if (late > STALE_SLACK_MS) {
        problems.add('waits past the stale moment', `a request for a destination whose send died with the kill waited ${late} ms past the moment that send went stale (answer ${again.status || again.error})`);
      }
      if (again.status !== 200) {
        await sleep(Math.max(0, staleAt + 200 - Date.now()));
        again = await ws.request(f.dest, 'LOGIN', { timeoutMs: 40_000 });
      }
    }
    if (again.status === 200 && st.status === 200) {
      // The failed request's session was stored (its SMS went out) but its confirmation was not:
      // it is verifiable though the client was told 503 / lost the answer. A new request reuses
      // it while the guard still waits for it; once that send is stale the guard has forgotten
      // it and a new code is sent (the old one still verifies until it expires).
      if (again.json.data.sessionId === msgs[0].reference) keptReused += 1;
      else keptNewCode += 1;
    }
    if (again.status !== 200) {
      problems.add('stuck destinations', `a new request after a failed one whose SMS went out (send stale) → ${again.status || again.error} ${again.text.slice(0, 120)} after ${again.ms} ms`);
    } else if (again.ms > 5000) {
      problems.add('stuck destinations', `a new request after the failed send went stale took ${again.ms} ms (${probeDests.includes(f.dest) ? "a hang probe's number" : "a loop's number"}; the failed request answered ${f.res.status || f.res.error} after ${f.res.ms} ms; ${first})`);
    }
  }
  }

  const start = Date.now();
  let lastReport = 0;
  const phase = () => (Date.now() < killAt ? 'before' : Date.now() < backAt ? 'outage' : 'after');
  const loadDone = loops(concurrency, () => stop, async () => {
    const r = Math.random();
    if (phase() === 'outage' && !fault.answers503) await sleep(20); // connection refused is instant
    if (r < 0.6 || sessions.length < 5) await newSession();
    else if (r < 0.8) await wrongVerify();
    else await readStatus();
    if (Date.now() - lastReport > 5000) {
      lastReport = Date.now();
      say(`${label}${name}: ${Math.round((Date.now() - start) / 1000)} s, ${phase()}, ${answers.length} answers, ${sessions.length} sessions`);
    }
  });

  say(`${label}${name}: ${concurrency} loops; up ${beforeMs / 1000} s → SIGKILL, down ${outageMs / 1000} s → restarted, ${afterMs / 1000} s more`);
  await sleep(beforeMs);
  // Sends certainly in flight at the kill: the gateway holds these messages without answering,
  // so each is admitted (its guard entry says "sending") and its outcome dies with the kill.
  const probes = [];
  const probeDests = [];
  for (let i = 0; i < HANG_PROBES; i++) {
    const dest = newDest('+2338');
    probeDests.push(dest);
    await sink.setMode(dest, 'hang');
    probes.push(
      ws.request(dest, 'LOGIN', { timeoutMs: 40_000 }).then((res) => {
        record('request', res, { dest });
        if (res.status !== 200) failedRequests.push({ dest, before: 0, res });
      }),
    );
  }
  // Kill once the gateway holds both messages (the sends are admitted and waiting on it).
  for (const until = Date.now() + 5000; Date.now() < until; await sleep(50)) {
    const held = await Promise.all(probeDests.map(async (d) => (await sink.messages(d)).length));
    if (held.every((n) => n > 0)) break;
  }
  killAt = Date.now();
  await fault.kill();
  deadAt = Date.now();
  say(`${label}${name}: SIGKILLed ${name} (${sessions.length} sessions answered 200 so far)`);
  await sleep(outageMs);
  restoreStartedAt = Date.now();
  await fault.restore();
  backAt = Date.now();
  say(`${label}${name}: ${name} restarted in ${backAt - restoreStartedAt} ms (same persisted state)`);
  // Recovery: the first 200 to a fresh request after Redis listens again.
  while (Date.now() - backAt < 30_000) {
    const dest = newDest('+2338');
    const res = await ws.request(dest, 'LOGIN', { timeoutMs: 10_000 });
    if (res.status === 200) {
      recoveredAt = Date.now();
      const m = (await sink.messages(dest)).find((x) => x.reference === res.json.data.sessionId);
      if (m && codeOf(m)) {
        codes.add(codeOf(m));
        sessions.push({ sessionId: res.json.data.sessionId, dest, code: codeOf(m), acked: 0, unsure: 0, wrongSent: 0, at: res.started, ended: Date.now() });
      }
      break;
    }
    await sleep(20);
  }
  if (recoveredAt === Infinity) problems.add('not recovered', `no 200 within 30 s after ${name} came back`);
  else say(`${label}${name}: serving again ${recoveredAt - backAt} ms after ${name} came back`);
  // At once, while the sends that died with the kill may still look in flight.
  const retriesDone = retryFailed();
  await sleep(afterMs);
  stop = true;
  await loadDone;
  await retriesDone;
  await Promise.all(probes);
  await retryFailed(); // anything that failed later
  say(`${label}${name}: load stopped; checking ${sessions.length} sessions`);

  // During the outage: exact 503 (redis) or no connection at all (a killed host), bounded.
  // Started once the kill had landed (kill() goes through the harness's control channel, so a
  // request started just after killAt can still be answered by the process about to die) and
  // over before the restart began (once it begins, the new process or Redis may already answer:
  // a restarted Node host can even get its old port back).
  const outage = answers.filter((a) => a.started >= deadAt && a.ended <= restoreStartedAt);
  for (const a of outage) {
    if (!fault.answers503) {
      if (a.status !== 0) problems.add('wrong statuses', `${a.op} answered ${a.status} while nothing was running`);
      continue;
    }
    // partial: one shard of a cluster is down; what the others hold answers normally.
    const served = fault.partial && a.status > 0 && a.status < 500;
    if (!served && (a.status !== 503 || a.text !== BODY_503)) problems.add('non-503 during outage', `${a.op} → ${a.status || a.error} ${a.text.slice(0, 120)}`);
    if (a.ms > OUTAGE_BOUND_MS) problems.add('slow answers during outage', `${a.op} answered after ${a.ms} ms (bound ${OUTAGE_BOUND_MS} ms)`);
  }
  // After recovery (+1 s of slack for the connection pool), everything succeeds again.
  const after = answers.filter((a) => a.started >= recoveredAt + 1000);
  for (const a of after) {
    if (a.status === 503 || a.status === 0 || a.status >= 500) problems.add('failures after recovery', `${a.op} → ${a.status || a.error} ${a.text.slice(0, 120)}`);
  }
  const inFlight = answers.filter((a) => a.started < killAt && a.ended >= killAt);

  // Every session answered 200: there, intact, and verifiable with its remaining attempts.
  let beforeKillVerified = 0;
  for (const s of sessions) {
    const st = await ws.status(s.sessionId);
    if (st.status !== 200) {
      problems.add('sessions lost', `status of a session answered 200 → ${st.status || st.error}${s.ended < killAt ? ' (answered before the kill)' : ''}`);
      continue;
    }
    const d = st.json.data;
    const used = d.attemptsUsed;
    if (d.state !== 'PENDING' || d.maxAttempts !== 5 || used < s.acked || used > s.acked + s.unsure || d.sessionId !== s.sessionId) {
      problems.add('sessions corrupted', `state ${d.state}, attemptsUsed ${used} (client saw ${s.acked} INVALID, ${s.unsure} unanswered), maxAttempts ${d.maxAttempts}`);
      continue;
    }
    const v = await ws.verify(s.sessionId, s.code);
    if (v.status !== 200 || v.json?.data?.status !== 'APPROVED' || v.json?.data?.attemptsLeft !== 5 - used - 1) {
      problems.add('sessions corrupted', `verify with its code → ${v.status} ${v.json?.data?.status} attemptsLeft ${v.json?.data?.attemptsLeft} (expected ${5 - used - 1})`);
      continue;
    }
    if (s.ended < killAt) beforeKillVerified += 1;
  }

  const leaks = client.leaks(codes);
  if (leaks) problems.add('code leaks', `${leaks} codes appear in response bodies`);
  const outageMsList = outage.map((a) => a.ms);
  const ackedBeforeKill = sessions.filter((s) => s.ended < killAt).length;
  const figures = {
      'sessions answered 200 before the kill / verified after': `${ackedBeforeKill} / ${beforeKillVerified}`,
      'requests in flight at the kill (200 / 503 / dropped)': `${inFlight.length} (${inFlight.filter((a) => a.status === 200 || a.status === 400).length} / ${inFlight.filter((a) => a.status === 503).length} / ${inFlight.filter((a) => a.status === 0).length})`,
      'requests during outage': outage.length,
      'outage answer latency p50 / max (ms)': `${percentile(outageMsList, 50)} / ${outageMsList.length ? Math.max(...outageMsList) : 0}`,
      [`recovery time after ${name} is back (ms)`]: recoveredAt === Infinity ? 'never' : recoveredAt - backAt,
      [`${name} restart time (ms)`]: backAt - restoreStartedAt,
      'failed requests whose SMS went out (session kept / none)': `${smsWithoutAnswer} (${orphanSessions} / ${smsWithoutAnswer - orphanSessions})`,
      'of those, asked again before their send went stale': retriedInWindow,
      'session kept: asked again → reused / new code': `${keptReused} / ${keptNewCode}`,
      [`waits > ${STALE_SLACK_MS} ms past a dead send's stale moment`]: problems.count('waits past the stale moment'),
      'non-503 answers during outage': problems.count('non-503 during outage'),
      [`answers slower than ${OUTAGE_BOUND_MS} ms during outage`]: problems.count('slow answers during outage'),
      'sessions lost': problems.count('sessions lost'),
      'sessions corrupted': problems.count('sessions corrupted'),
      'failures after recovery': problems.count('failures after recovery') + problems.count('not recovered'),
      'stuck destinations': problems.count('stuck destinations'),
      'wrong statuses': problems.count('wrong statuses'),
      'code leaks': problems.count('code leaks'),
  };
  if (!fault.answers503) {
    delete figures['non-503 answers during outage'];
    delete figures[`answers slower than ${OUTAGE_BOUND_MS} ms during outage`];
    delete figures['outage answer latency p50 / max (ms)'];
  }
  return { problems, figures };
}

/** The figures whose goal is 0 (those a scenario reports). */
export const CRASH_ERROR_FIGURES = [
  'non-503 answers during outage', `answers slower than ${OUTAGE_BOUND_MS} ms during outage`, 'sessions lost',
  'sessions corrupted', 'failures after recovery', 'stuck destinations', 'wrong statuses', 'code leaks',
  `waits > ${STALE_SLACK_MS} ms past a dead send's stale moment`,
];
