// Shared by the benchmark scripts (bench/*.mjs, napi-binding/bench/inprocess.mjs): a private
// redis-server, and the rewrite of one marked section of BENCHMARKS.md.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../tests/conformance/host.mjs';

export const BENCHMARKS_MD = path.join(ROOT, 'BENCHMARKS.md');

export { startRedis, startRedisCluster } from '../../tests/conformance/redis.mjs';

/**
 * Replaces the section `<!-- name:start -->` … `<!-- name:end -->` of BENCHMARKS.md with `body`
 * between those markers. When the file has no such section, it goes in with `heading` (a markdown
 * heading line) in front, before the marker `<!-- before:start -->` if there is one, else at the
 * end. The file is read right before writing: other bench parts write other sections.
 */
export function writeSection(name, body, { heading = null, before = null, file = BENCHMARKS_MD } = {}) {
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const block = `${start}\n${body.trim()}\n${end}`;
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  let next;
  if (a >= 0 && b > a) {
    next = text.slice(0, a) + block + text.slice(b + end.length);
  } else {
    const section = `${heading ? `${heading}\n\n` : ''}${block}\n\n`;
    const anchor = before ? text.indexOf(`<!-- ${before}:start -->`) : -1;
    next = anchor >= 0 ? text.slice(0, anchor) + section + text.slice(anchor) : `${text.trimEnd()}\n\n${section}`;
  }
  writeFileSync(file, next);
}
