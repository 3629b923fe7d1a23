// Per-day charts with uPlot (vendor/uPlot.iife.min.js, MIT, v1.6.32, loaded as a classic script
// before this module: it defines the global uPlot). Why uPlot: 51 KB minified with no dependency,
// against ~200 KB for Chart.js; canvas drawing that never needs inline styles or eval (so the
// strict CSP holds); time axes built in. Every chart also has its numbers in a table next to it,
// for screen readers and exact values.

const charts = new Map(); // element id -> { plot, el }

const PALETTE = ['#1f6feb', '#1a7f37', '#cf222e', '#9a6700'];

function width(el) {
  return Math.max(200, Math.floor(el.getBoundingClientRect().width || el.parentElement?.clientWidth || 300));
}

/** Seconds since the epoch of a UTC calendar day "YYYY-MM-DD". */
export function daySeconds(date) {
  const [y, m, d] = date.split('-').map(Number);
  return Date.UTC(y, m - 1, d) / 1000;
}

/**
 * Draws (or redraws) a chart in the element `id`: `days` are the report's rows, `series` a list of
 * { label, value(row) → number, kind: 'line'|'bars', format(n) → string }.
 */
export function drawChart(id, days, series, { yFormat = (n) => String(n), yRange } = {}) {
  const el = document.getElementById(id);
  if (!el) return;
  const old = charts.get(id);
  if (old) old.plot.destroy();
  el.textContent = '';
  const U = globalThis.uPlot;
  if (!U) {
    el.textContent = 'Charts are unavailable (vendor/uPlot.iife.min.js did not load); the tables below have every figure.';
    return;
  }
  const xs = days.map((r) => daySeconds(r.date));
  const data = [xs, ...series.map((s) => days.map((r) => s.value(r)))];
  const bars = U.paths && U.paths.bars ? U.paths.bars({ size: [0.6, 40] }) : null;
  const opts = {
    width: width(el),
    height: 200,
    tzDate: (ts) => U.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    cursor: { drag: { x: false, y: false } },
    legend: { show: true, live: true },
    scales: {
      // half a day of room on each side: the first and last day's bars are drawn whole
      x: { time: true, range: (u, min, max) => [(min ?? 0) - 43200, (max ?? 0) + 43200] },
      y: yRange ? { range: yRange } : { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
    },
    axes: [
      { space: 60, values: (u, ticks) => ticks.map((t) => new Date(t * 1000).toISOString().slice(5, 10)) },
      { size: 56, values: (u, ticks) => ticks.map(yFormat) },
    ],
    series: [
      { label: 'day', value: (u, t) => (t == null ? '' : new Date(t * 1000).toISOString().slice(0, 10)) },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        fill: s.kind === 'bars' ? `${PALETTE[i % PALETTE.length]}55` : undefined,
        paths: s.kind === 'bars' && bars ? bars : undefined,
        points: { show: s.kind !== 'bars' && days.length <= 31 },
        value: (u, v) => (v == null ? '' : (s.format || yFormat)(v)),
      })),
    ],
  };
  const plot = new U(opts, data, el);
  charts.set(id, { plot, el });
}

let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const { plot, el } of charts.values()) {
      if (el.offsetParent !== null) plot.setSize({ width: width(el), height: 200 });
    }
  }, 100);
});

/** Resizes the charts inside `root` (a view that was hidden while drawn). */
export function fitCharts(root) {
  for (const { plot, el } of charts.values()) {
    if (root.contains(el) && el.offsetParent !== null) plot.setSize({ width: width(el), height: 200 });
  }
}
