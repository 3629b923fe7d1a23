#!/usr/bin/env node
// Fault injection against real hosts (scripts/faults is the entry point):
//   node tests/faults/run.mjs [gateway|redis|cluster|wrangler|all ...] [--smoke] [--hosts worker,node,node-redis,node-cluster]
// gateway   the SMS gateway fails (500 / reset / no answer / 9 s slow) under load, then recovers;
//           against the Worker (wrangler dev), otpkit serve in memory, and otpkit serve on Redis
// redis     redis-server SIGKILLed and restarted (AOF, fsync always) under otpkit serve
// wrangler  wrangler dev SIGKILLed and restarted on the same --persist-to state
// --smoke   short versions (CI); prints the same table. Exit status 1 when a figure misses its goal.

import { printTable, say } from './common.mjs';
import { Client } from './common.mjs';
import { crashScenario, CRASH_ERROR_FIGURES, startDurableCluster, startDurableRedis } from './crash.mjs';
import { GATEWAY_ERROR_FIGURES, gatewayScenario } from './gateway.mjs';
import { freePort, startHost } from '../conformance/host.mjs';
import { startSink } from '../conformance/sink.mjs';

const FULL = {
  gateway: { okMs: 15_000, badMs: 45_000, recoverMs: 15_000, concurrency: 12 },
  redis: { beforeMs: 15_000, outageMs: 10_000, afterMs: 15_000, concurrency: 8 },
  cluster: { beforeMs: 15_000, outageMs: 10_000, afterMs: 15_000, concurrency: 8 },
  wrangler: { beforeMs: 20_000, outageMs: 2_000, afterMs: 15_000, concurrency: 8 },
};
const SMOKE = {
  gateway: { okMs: 3_000, badMs: 12_000, recoverMs: 5_000, concurrency: 6 },
  redis: { beforeMs: 4_000, outageMs: 4_000, afterMs: 4_000, concurrency: 4 },
  cluster: { beforeMs: 4_000, outageMs: 4_000, afterMs: 4_000, concurrency: 4 },
  wrangler: { beforeMs: 6_000, outageMs: 1_000, afterMs: 5_000, concurrency: 4 },
};

function parseArgs(argv) {
  const out = { scenarios: [], smoke: false, hosts: ['worker', 'node', 'node-redis'] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--smoke') out.smoke = true;
    else if (a === '--hosts') out.hosts = argv[++i].split(',');
    else if (a.startsWith('--hosts=')) out.hosts = a.slice(8).split(',');
    else if (a === 'all') out.scenarios.push('gateway', 'redis', 'cluster', 'wrangler');
    else if (['gateway', 'redis', 'cluster', 'wrangler'].includes(a)) out.scenarios.push(a);
    else if (a === '-h' || a === '--help') {
      process.stdout.write('usage: scripts/faults [gateway|redis|cluster|wrangler|all] [--smoke] [--hosts worker,node,node-redis,node-cluster]\n');
      process.exit(0);
    } else {
      process.stderr.write(`faults: unknown argument ${a} (gateway, redis, cluster, wrangler, all, --smoke, --hosts)\n`);
      process.exit(2);
    }
  }
  if (!out.scenarios.length) out.scenarios = ['gateway', 'redis', 'cluster', 'wrangler'];
  out.scenarios = [...new Set(out.scenarios)];
  return out;
}

function rowsOf(scenario, host, figures, errorFigures) {
  return Object.entries(figures).map(([figure, value]) => ({
    scenario,
    host,
    figure,
    value,
    goal: errorFigures.includes(figure) ? 0 : '',
  }));
}

async function withSinkAndHost(kind, extra, fn) {
  const sink = await startSink();
  let host;
  try {
    say(`starting ${kind} host${kind === 'worker' ? ' (wrangler dev; the first start may build the Worker for minutes)' : ''}`);
    host = await startHost({ gatewayUrl: sink.gatewayUrl, kind, ...extra });
    say(`${kind} host ready on ${host.baseUrl}`);
    return await fn(sink, host);
  } catch (err) {
    if (host) process.stderr.write(`--- last lines of the host's output ---\n${host.output().split('\n').slice(-40).join('\n')}\n`);
    throw err;
  } finally {
    if (host) await host.stop();
    await sink.stop();
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const cfg = args.smoke ? SMOKE : FULL;
  const rows = [];
  const problemTexts = [];
  const started = Date.now();
  const total = args.scenarios.reduce((n, s) => n + (s === 'gateway' ? args.hosts.length : 1), 0);
  let step = 0;
  const note = (what) => say(`[${++step}/${total}] ${what}`);

  for (const scenario of args.scenarios) {
    if (scenario === 'gateway') {
      for (const kind of args.hosts) {
        note(`gateway faults against ${kind}`);
        const r = await withSinkAndHost(kind, {}, (sink, host) =>
          gatewayScenario({ client: new Client(() => host.baseUrl), adminToken: host.adminToken, sink, ...cfg.gateway, label: `${kind} ` }),
        );
        rows.push(...rowsOf('gateway', kind, r.figures, GATEWAY_ERROR_FIGURES));
        if (r.problems.list.length) problemTexts.push(`gateway / ${kind}:\n${r.problems.text()}`);
      }
    } else if (scenario === 'redis') {
      note('Redis SIGKILL + restart under otpkit serve');
      const redis = await startDurableRedis(await freePort());
      try {
        const r = await withSinkAndHost('node-redis', { redisUrl: redis.url }, (sink, host) =>
          crashScenario({
            client: new Client(() => host.baseUrl),
            adminToken: host.adminToken,
            sink,
            fault: { name: 'redis', kill: () => redis.kill(), restore: () => redis.start(), answers503: true },
            ...cfg.redis,
            label: 'node-redis ',
          }),
        );
        rows.push(...rowsOf('redis kill', 'node-redis', r.figures, CRASH_ERROR_FIGURES));
        if (r.problems.list.length) problemTexts.push(`redis kill:\n${r.problems.text()}`);
      } finally {
        await redis.stop();
      }
    } else if (scenario === 'cluster') {
      note('one master of a 3-master Redis Cluster SIGKILLed + restarted under otpkit serve');
      const cluster = await startDurableCluster(3);
      try {
        const r = await withSinkAndHost('node-cluster', { clusterNodes: cluster.nodes }, (sink, host) =>
          crashScenario({
            client: new Client(() => host.baseUrl),
            adminToken: host.adminToken,
            sink,
            // Requests whose keys live on the other masters keep answering: 200 or the exact 503.
            fault: { name: 'cluster master', kill: () => cluster.kill(), restore: () => cluster.start(), answers503: true, partial: true },
            ...cfg.cluster,
            label: 'node-cluster ',
          }),
        );
        rows.push(...rowsOf('cluster master kill', 'node-cluster', r.figures, CRASH_ERROR_FIGURES));
        if (r.problems.list.length) problemTexts.push(`cluster master kill:\n${r.problems.text()}`);
      } finally {
        await cluster.stop();
      }
    } else {
      note('wrangler dev SIGKILL + restart on the same --persist-to state');
      const r = await withSinkAndHost('worker', {}, (sink, host) =>
        crashScenario({
          client: new Client(() => host.baseUrl),
          adminToken: host.adminToken,
          sink,
          fault: { name: 'wrangler', kill: () => host.crash(), restore: () => host.restart(), answers503: false },
          ...cfg.wrangler,
          label: 'worker ',
        }),
      );
      rows.push(...rowsOf('wrangler kill', 'worker', r.figures, CRASH_ERROR_FIGURES));
      if (r.problems.list.length) problemTexts.push(`wrangler kill:\n${r.problems.text()}`);
    }
  }

  process.stdout.write(`\nFault injection ${args.smoke ? '(smoke)' : '(full)'}: ${args.scenarios.join(', ')} — ${Math.round((Date.now() - started) / 1000)} s\n\n`);
  const failing = printTable(rows);
  if (problemTexts.length) process.stdout.write(`\nProblems seen:\n${problemTexts.join('\n')}\n`);
  if (failing.length) {
    process.stdout.write(`\nFAIL: ${failing.length} figure(s) missed their goal of 0 (see the problems above; the host's code is in core/, edge-worker/src, napi-binding/lib).\n`);
    process.exit(1);
  }
  process.stdout.write('\nOK: every error figure is 0.\n');
}

main().catch((err) => {
  process.stderr.write(`faults: ${err.stack || err}\nIf a host did not start: run scripts/bootstrap, scripts/build-node and scripts/build-worker first.\n`);
  process.exit(1);
});
