// Shared plumbing of the fault-injection scenarios (tests/faults/*.mjs, scripts/faults and
// tests/conformance/faults.test.mjs): an HTTP client that never throws (a dropped connection is
// an answer too), workspaces through the admin API, codes read from the sink as a phone would,
// a leak check (no code in any response body), progress lines and the figures table.
//
// Nothing here prints a code, a pepper or an API key.

import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const VECTORS = JSON.parse(readFileSync(path.join(ROOT, 'tests', 'vectors', 'envelopes.json'), 'utf8')).cases;
/** The exact body of an error vector (tests/vectors/envelopes.json), e.g. '502', '503 store'. */
export function vectorBody(name) {
  const v = VECTORS.find((c) => c.name === name);
  if (!v) throw new Error(`no envelope vector named ${name}`);
  return v.body;
}
export const BODY_502 = vectorBody('502');
export const BODY_503 = vectorBody('503 store');

/**
 * A client of one host. `base()` answers the current base URL (a restarted Worker keeps its
 * port, a restarted Node host does not). Every call answers {status, text, json, ms, error}:
 * status 0 with `error` set when the connection failed or timed out.
 */
export class Client {
  constructor(base, { timeoutMs = 30_000 } = {}) {
    this.base = typeof base === 'function' ? base : () => base;
    this.timeoutMs = timeoutMs;
    this.bodies = []; // every body read, for the leak check
  }

  async call(method, route, { key, admin, body, timeoutMs } = {}) {
    const headers = {};
    if (key) headers.authorization = `Bearer ${key}`;
    if (admin) headers.authorization = `Bearer ${admin}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const started = Date.now();
    try {
      const res = await fetch(`${this.base()}${route}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs ?? this.timeoutMs),
      });
      const text = await res.text();
      this.bodies.push(text);
      let json = null;
      try {
        json = text ? JSON.parse(text) : null;
      } catch {
        json = null;
      }
      return { status: res.status, text, json, ms: Date.now() - started, started, error: null };
    } catch (err) {
      const error = String(err?.cause?.code || err?.name || err?.message || err);
      return { status: 0, text: '', json: null, ms: Date.now() - started, started, error };
    }
  }

  /** A fresh workspace (admin API); answers {id, key, request(), verify(), status()}. */
  async workspace(adminToken, policy, senders = ['OTPKIT']) {
    const res = await this.call('POST', '/v1/admin/workspaces', {
      admin: adminToken,
      body: { name: `faults ${process.pid}-${randomInt(1e9)}`, senders, ...(policy ? { policy } : {}) },
    });
    if (res.status !== 201) throw new Error(`creating a workspace answered ${res.status} ${res.error || res.text}`);
    const { workspaceId, apiKey } = res.json.data;
    const client = this;
    return {
      id: workspaceId,
      key: apiKey,
      request: (dest, purpose = 'LOGIN', opts = {}) =>
        client.call('POST', '/v1/messaging/otp/request', { key: apiKey, body: { dest, src: senders[0], purpose }, ...opts }),
      verify: (sessionId, code, opts = {}) =>
        client.call('POST', '/v1/messaging/otp/verify', { key: apiKey, body: { sessionId, code }, ...opts }),
      status: (sessionId, opts = {}) =>
        client.call('GET', `/v1/messaging/otp/sessions/${encodeURIComponent(sessionId)}`, { key: apiKey, ...opts }),
    };
  }

  /** Codes found in any response body read by this client (must be 0). */
  leaks(codes) {
    let n = 0;
    for (const code of codes) {
      const re = new RegExp(`(?<![0-9A-Za-z])${code}(?![0-9A-Za-z])`);
      if (this.bodies.some((b) => re.test(b))) n += 1;
    }
    return n;
  }
}

/** The code in a gateway message: the only run of 6–10 digits in its text (null if none). */
export function codeOf(message) {
  const runs = String(message?.text ?? '').match(/\d+/g)?.filter((r) => r.length >= 6 && r.length <= 10) || [];
  return runs.length === 1 ? runs[0] : null;
}

export function wrongCode(code) {
  return code.slice(0, -1) + String((Number(code[code.length - 1]) + 1) % 10);
}

// +2339 then 10 random digits: fresh per request, distinct from the conformance suite's +2335….
const used = new Set();
export function newDest(prefix = '+2339') {
  for (;;) {
    const d = `${prefix}${String(randomInt(0, 1e5)).padStart(5, '0')}${String(randomInt(0, 1e5)).padStart(5, '0')}`;
    if (!used.has(d)) {
      used.add(d);
      return d;
    }
  }
}

/** Runs `worker(i)` in `n` parallel loops until `until()` is true. */
export async function loops(n, until, worker) {
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      while (!until()) await worker(i);
    }),
  );
}

export function percentile(values, p) {
  if (!values.length) return 0;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Progress on stderr (the figures table goes to stdout). */
export function say(line) {
  process.stderr.write(`[faults ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

/** A problem record: kept (the first few printed) so a failure says what went wrong. */
export class Problems {
  constructor() {
    this.list = [];
  }
  add(figure, detail) {
    this.list.push({ figure, detail });
  }
  count(figure) {
    return this.list.filter((p) => p.figure === figure).length;
  }
  text(max = 15) {
    return this.list
      .slice(0, max)
      .map((p) => `  - [${p.figure}] ${p.detail}`)
      .join('\n') + (this.list.length > max ? `\n  … and ${this.list.length - max} more` : '');
  }
}

/**
 * Prints rows {scenario, host, figure, value, goal} as an aligned table. A row with a numeric
 * goal fails when value !== goal; goal '' is informational. Answers the failing rows.
 */
export function printTable(rows, out = process.stdout) {
  const head = ['scenario', 'host', 'figure', 'value', 'goal', ''];
  const cells = rows.map((r) => {
    const bad = r.goal !== '' && r.goal !== undefined && r.value !== r.goal;
    return [r.scenario, r.host, r.figure, String(r.value), r.goal === undefined ? '' : String(r.goal), bad ? 'FAIL' : ''];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c) => c.map((x, i) => (i === 3 ? x.padStart(widths[i]) : x.padEnd(widths[i]))).join('  ').trimEnd();
  out.write(`${line(head)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
  for (const c of cells) out.write(`${line(c)}\n`);
  return rows.filter((r) => r.goal !== '' && r.goal !== undefined && r.value !== r.goal);
}
