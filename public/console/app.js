// otpkit operator console: plain ES modules, no framework, no build step. Everything it shows
// comes from the HTTP API (core/openapi.yaml) of the host that serves it, same origin.
//
// Credentials: the admin token (every workspace) or an API key (its workspace), kept in this
// tab's sessionStorage — never in a URL, never in localStorage or a cookie. What each sees:
//   analytics, delivery   API key: GET /otp/analytics; admin: GET /v1/admin/analytics
//   fraud guard           admin only: GET /v1/admin/workspaces/{id}/fraud, DELETE …/fraud/blocks/{prefix}
//   audit, session        API key only (the API takes no admin token there): an admin gives a workspace key
//   keys, policy          admin only: GET/PATCH /v1/admin/workspaces/{id}, POST …/keys, DELETE …/keys/{keyId}

import { api, ApiError, seg } from './api.js';
import { drawChart, fitCharts } from './charts.js';
import { buildPolicyForm, clearErrors, fillPolicyForm, policyChanges, readPolicyForm, showFieldError } from './policy.js';

const AUTH = 'otpkit.console.auth';
const AUDIT_KEY = 'otpkit.console.auditKey';
const VIEWS = ['analytics', 'delivery', 'fraud', 'audit', 'session', 'keys', 'policy'];
const ADMIN_VIEWS = new Set(['keys', 'policy']);

const $ = (id) => document.getElementById(id);

const state = {
  auth: null, // { kind: 'admin'|'key', token }
  workspaces: [], // admin: every workspace (GET /v1/admin/workspaces, all pages)
  report: null, // the last analytics report
  reportKey: '',
  view: 'analytics',
  auditCursor: null,
  workspace: null, // admin: the selected workspace's detail
};

// ----------------------------------------------------------------------------------------------
// small DOM helpers (textContent only: nothing from the API is ever parsed as HTML)

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'data') Object.assign(e.dataset, v);
    else if (k.startsWith('aria-') || k === 'scope' || k === 'role') e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

/** Fills a <table> with a caption, a header row and rows of cells (strings or nodes). */
function fillTable(table, caption, headers, rows, empty = 'Nothing yet.') {
  table.textContent = '';
  if (caption) table.append(el('caption', {}, caption));
  const thead = el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', { scope: 'col' }, h))));
  const tbody = el('tbody');
  if (rows.length === 0) tbody.append(el('tr', {}, el('td', { colSpan: headers.length, class: 'empty' }, empty)));
  for (const r of rows) {
    const tr = el('tr');
    r.forEach((c, i) => tr.append(i === 0 ? el('th', { scope: 'row' }, c) : el('td', {}, c)));
    tbody.append(tr);
  }
  table.append(thead, tbody);
}

let statusTimer = null;
function say(message, kind = 'info') {
  const s = $('status');
  s.textContent = message;
  s.className = `status ${kind}`;
  clearTimeout(statusTimer);
  if (kind === 'info' && message) statusTimer = setTimeout(() => (s.textContent = ''), 6000);
}

function explain(err) {
  if (err instanceof ApiError) {
    if (err.status === 401) return 'The credential was refused (401): it is wrong, or the key was revoked.';
    return `${err.message}${err.code ? ` (${err.code}${err.field ? `, ${err.field}` : ''})` : ''}`;
  }
  return String(err?.message || err);
}

export const pct = (rate) => `${(Number(rate) * 100).toFixed(1)} %`;
const money = (c) => (c ? `${c.amount} ${c.currency}` : '—');
const when = (t) => (t ? t.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '—');

// ----------------------------------------------------------------------------------------------
// sign in / out

function loadAuth() {
  try {
    const a = JSON.parse(sessionStorage.getItem(AUTH) || 'null');
    if (a && (a.kind === 'admin' || a.kind === 'key') && typeof a.token === 'string') return a;
  } catch {
    // ignore a damaged entry
  }
  return null;
}

async function signIn(token) {
  const kind = token.startsWith('otpk_') ? 'key' : 'admin';
  try {
    if (kind === 'admin') await api('GET', '/v1/admin/workspaces', { token, query: { limit: 1 } });
    else await api('GET', '/otp/analytics', { token, query: { days: 1 } });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && kind === 'admin') {
      throw new Error('This host has no admin routes (no ADMIN_TOKEN configured). Sign in with an API key.');
    }
    if (err instanceof ApiError && err.status === 401) {
      throw new Error(kind === 'admin' ? 'That admin token was refused.' : 'That API key was refused (unknown or revoked).');
    }
    throw err;
  }
  state.auth = { kind, token };
  sessionStorage.setItem(AUTH, JSON.stringify(state.auth));
}

function signOut() {
  sessionStorage.removeItem(AUTH);
  sessionStorage.removeItem(AUDIT_KEY);
  // a fresh page: nothing the last credential loaded stays in the DOM (a new key, tables)
  location.replace(location.pathname);
}

const isAdmin = () => state.auth?.kind === 'admin';
const auditToken = () => (isAdmin() ? sessionStorage.getItem(AUDIT_KEY) : state.auth?.token);

// ----------------------------------------------------------------------------------------------
// layout

function render() {
  const signedIn = Boolean(state.auth);
  $('signin-view').hidden = signedIn;
  $('app').hidden = !signedIn;
  $('signout').hidden = !signedIn;
  $('who').hidden = !signedIn;
  if (!signedIn) {
    $('token').focus();
    return;
  }
  $('who').textContent = isAdmin() ? 'Admin token: every workspace' : 'API key: its workspace';
  for (const e of document.querySelectorAll('[data-admin]')) e.hidden = !isAdmin();
  show(viewFromHash(), false);
}

function viewFromHash() {
  const v = location.hash.replace(/^#/, '');
  if (!VIEWS.includes(v)) return 'analytics';
  if (ADMIN_VIEWS.has(v) && !isAdmin()) return 'analytics';
  return v;
}

async function show(view, focus = true) {
  state.view = view;
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll('#tabs a')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const wsBar = $('ws-bar');
  wsBar.hidden = !(isAdmin() && ['fraud', 'keys', 'policy'].includes(view));
  if (!wsBar.hidden) $(`${view}-title`).after(wsBar); // the workspace picker under the view's title
  if (focus) $(`${view}-title`).focus?.();
  try {
    await load(view);
  } catch (err) {
    say(explain(err), 'error');
  }
}

async function load(view) {
  switch (view) {
    case 'analytics':
    case 'delivery':
      await loadReport();
      if (view === 'analytics') renderAnalytics();
      else renderDelivery();
      return;
    case 'fraud':
      return loadFraud();
    case 'audit':
      return prepareAudit();
    case 'session':
      $('session-key-note').hidden = !isAdmin();
      return undefined;
    case 'keys':
      return loadKeys();
    case 'policy':
      return loadPolicy();
    default:
      return undefined;
  }
}

// ----------------------------------------------------------------------------------------------
// analytics and delivery

async function loadReport(force = false) {
  const days = $('an-days').value;
  const app = $('an-app').value.trim();
  const key = `${state.auth.kind}|${days}|${app}`;
  if (!force && state.report && state.reportKey === key) return;
  const path = isAdmin() ? '/v1/admin/analytics' : '/otp/analytics';
  state.report = await api('GET', path, { token: state.auth.token, query: { days, app } });
  state.reportKey = key;
}

function figure(dl, id, label, value) {
  dl.append(el('div', { class: 'figure' }, el('dt', {}, label), el('dd', { data: { metric: id } }, value)));
}

function costOf(r) {
  if (r.estimated_cost) return money(r.estimated_cost);
  const all = state.report?.estimated_costs;
  return all && all.length ? all.map(money).join(' + ') : '—';
}

function renderAnalytics() {
  const r = state.report;
  if (!r) return;
  const t = r.totals;
  $('an-scope').textContent = `${isAdmin() ? 'Every workspace' : 'This workspace'}${r.app ? `, app "${r.app}"` : ', every app'}, ${r.from} to ${r.to} (UTC days).`;
  const dl = $('an-totals');
  dl.textContent = '';
  figure(dl, 'sent', 'Sent', t.sent);
  figure(dl, 'verified', 'Verified', t.verified);
  figure(dl, 'conversion', 'Conversion', pct(t.verification_rate));
  figure(dl, 'cost', 'Estimated cost', costOf(t));
  figure(dl, 'reused', 'Reused (no SMS)', t.reused);
  figure(dl, 'failed', 'Locked (wrong codes)', t.failed);
  figure(dl, 'expired', 'Expired', t.expired);
  figure(dl, 'segments', 'SMS segments', t.sms_segments);
  if (t.fraud_blocked !== undefined) figure(dl, 'fraud_blocked', 'Refused by Fraud Guard', t.fraud_blocked);
  if (t.fraud_saved !== undefined) figure(dl, 'fraud_saved', 'Saved by Fraud Guard', money(t.fraud_saved));

  drawChart('ch-sent', r.days, [
    { label: 'Sent', value: (d) => d.sent, kind: 'bars' },
    { label: 'Verified', value: (d) => d.verified, kind: 'bars' },
  ]);
  drawChart('ch-conv', r.days, [{ label: 'Conversion', value: (d) => (d.sent ? d.verification_rate * 100 : null) }], {
    yFormat: (n) => `${Math.round(n)} %`,
    yRange: [0, 100],
  });
  const cur = t.estimated_cost?.currency || '';
  drawChart('ch-cost', r.days, [{ label: `Cost ${cur}`.trim(), value: (d) => (d.estimated_cost ? Number(d.estimated_cost.amount) : null), kind: 'bars', format: (n) => String(n) }], {
    yFormat: (n) => String(+n.toPrecision(4)),
  });

  fillTable($('an-days-table'), 'Every day of the period', ['Day', 'Sent', 'Verified', 'Conversion', 'Cost'],
    r.days.map((d) => [d.date, d.sent, d.verified, pct(d.verification_rate), costOf(d)]));
  const byRows = (obj) => Object.entries(obj || {}).map(([k, c]) => [k, c.sent, c.verified, pct(c.verification_rate), costOf(c)]);
  fillTable($('an-channel'), 'By channel, over the period', ['Channel', 'Sent', 'Verified', 'Conversion', 'Cost'], byRows(r.by_channel), 'No activity.');
  fillTable($('an-purpose'), 'By purpose, over the period', ['Purpose', 'Sent', 'Verified', 'Conversion', 'Cost'], byRows(r.by_purpose), 'No activity.');
  // Calling codes, busiest first ("other": counted before otpkit kept the country, or unknown).
  const byCountry = byRows(r.by_country).sort((a, b) => b[1] - a[1]).map(([k, ...rest]) => [k === 'other' ? 'other' : `+${k}`, ...rest]);
  fillTable($('an-country'), 'By destination country (calling code), over the period', ['Country', 'Sent', 'Verified', 'Conversion', 'Cost'], byCountry, 'No activity.');
  $('an-ws-block').hidden = !isAdmin();
  if (isAdmin()) {
    const names = new Map(state.workspaces.map((w) => [w.workspaceId, w.name]));
    fillTable($('an-workspaces'), 'Each workspace with activity', ['Workspace', 'Sent', 'Verified', 'Conversion', 'Cost'],
      (r.workspaces || []).map((w) => [names.get(w.workspace_id) ? `${names.get(w.workspace_id)} (${w.workspace_id})` : w.workspace_id,
        w.totals.sent, w.totals.verified, pct(w.totals.verification_rate), money(w.totals.estimated_cost)]), 'No activity.');
  }
  fitCharts($('view-analytics'));
}

function renderDelivery() {
  const r = state.report;
  if (!r) return;
  const t = r.totals;
  const dl = $('dl-totals');
  dl.textContent = '';
  const attempts = t.sent + t.delivery_failed;
  figure(dl, 'dl-sent', 'Sent (accepted by the gateway)', t.sent);
  figure(dl, 'dl-failed', 'Delivery failed', t.delivery_failed);
  figure(dl, 'dl-resent', 'Resent', t.resent ?? 0);
  figure(dl, 'dl-rate', 'Accepted', attempts ? pct(t.sent / attempts) : '—');
  drawChart('ch-dl', r.days, [
    { label: 'Sent', value: (d) => d.sent, kind: 'bars' },
    { label: 'Failed', value: (d) => d.delivery_failed, kind: 'bars' },
    { label: 'Resent', value: (d) => d.resent ?? 0, kind: 'bars' },
  ]);
  fillTable($('dl-days-table'), 'Every day of the period', ['Day', 'Sent', 'Delivery failed', 'Resent'],
    r.days.map((d) => [d.date, d.sent, d.delivery_failed, d.resent ?? 0]));
  fitCharts($('view-delivery'));
}

// ----------------------------------------------------------------------------------------------
// admin: workspaces

async function loadWorkspaces() {
  const all = [];
  let cursor = '';
  for (let page = 0; page < 50; page++) {
    const j = await api('GET', '/v1/admin/workspaces', { token: state.auth.token, query: { limit: 200, cursor } });
    all.push(...j.data.workspaces);
    cursor = j.data.nextCursor;
    if (!cursor) break;
  }
  state.workspaces = all;
  const sel = $('ws-select');
  const keep = sel.value;
  sel.textContent = '';
  for (const w of all) sel.append(el('option', { value: w.workspaceId }, `${w.name} (${w.workspaceId})`));
  if (all.some((w) => w.workspaceId === keep)) sel.value = keep;
  if (!all.length) sel.append(el('option', { value: '' }, 'no workspace yet'));
}

async function selectedWorkspace() {
  if (!state.workspaces.length) await loadWorkspaces();
  return $('ws-select').value || null;
}

// ----------------------------------------------------------------------------------------------
// Fraud Guard

async function loadFraud() {
  $('fraud-needs-admin').hidden = isAdmin();
  $('fraud-body').hidden = !isAdmin();
  if (!isAdmin()) return;
  const id = await selectedWorkspace();
  if (!id) {
    fillTable($('fraud-table'), 'Prefixes', ['Prefix'], [], 'No workspace.');
    return;
  }
  const j = await api('GET', `/v1/admin/workspaces/${seg(id)}/fraud`, { token: state.auth.token });
  if ($('ws-select').value !== id) return; // another workspace was picked meanwhile
  const g = j.data.fraudGuard;
  $('fraud-policy').textContent = `Fraud Guard is ${g.enabled ? 'on' : 'off'}: prefixes of + calling code and ${g.prefixDigits} digits; ` +
    `a prefix with at least ${g.minSends} sends in ${g.windowSeconds} s and conversion under ${pct(g.minConversion)} is blocked for ${g.blockSeconds} s.`;
  $('fraud-recommend').hidden = g.enabled;
  const rows = j.data.prefixes.map((p) => {
    const cells = [p.prefix, p.sends, p.verified, pct(p.conversion), p.blocked ? `blocked until ${when(p.blockedUntil)}` : 'open', p.refused];
    if (p.blocked) {
      const b = el('button', { type: 'button', class: 'danger', data: { unblock: p.prefix }, 'aria-label': `Unblock ${p.prefix}` }, 'Unblock');
      cells.push(b);
    } else cells.push('');
    return cells;
  });
  // what the guard refused and saved, from the analytics (the period chosen under Analytics)
  await loadReport();
  const totals = state.report.workspaces?.find((w) => w.workspace_id === id)?.totals;
  $('fraud-saved').textContent = `Last ${state.report.period_days} days: ${totals?.fraud_blocked ?? 0} sends refused by Fraud Guard` +
    `${totals?.fraud_saved ? `, ${money(totals.fraud_saved)} not spent` : ''}.`;
  fillTable($('fraud-table'), `Prefixes of ${id} (blocked first, then by sends)`, ['Prefix', 'Sends', 'Verified', 'Conversion', 'State', 'Refused', 'Action'], rows, 'No prefix has traffic in the window.');
}

async function unblock(prefix) {
  const id = $('ws-select').value;
  await api('DELETE', `/v1/admin/workspaces/${seg(id)}/fraud/blocks/${seg(prefix)}`, { token: state.auth.token });
  say(`${prefix} unblocked (its counts were cleared).`);
  await loadFraud();
}

// ----------------------------------------------------------------------------------------------
// audit and session lookup

function prepareAudit() {
  $('audit-key-block').hidden = !isAdmin();
  if (!auditToken()) {
    delete $('audit-table').dataset.results;
    fillTable($('audit-table'), 'Audit events', ['Time'], [], 'Give a workspace API key above to read its audit log.');
    $('audit-more').hidden = true;
  }
}

async function searchAudit(more = false) {
  const token = auditToken();
  if (!token) {
    say('The audit log needs a workspace API key (the admin token cannot read it).', 'error');
    return;
  }
  const since = $('au-since').value;
  const query = {
    sessionId: $('au-session').value.trim(),
    since: since ? new Date(`${since}${since.length === 16 ? ':00' : ''}Z`).toISOString() : '',
    limit: $('au-limit').value,
    cursor: more ? state.auditCursor : '',
  };
  const j = await api('GET', '/v1/messaging/otp/audit', { token, query });
  const rows = j.data.events.map((e) => [when(e.time), e.event, e.outcome ?? '', e.status ?? '', e.sessionId || '—', e.purpose ?? '—', e.app ?? '—', e.dest || '—', e.channel ?? (e.keyId ? `key ${e.keyId}` : '')]);
  const table = $('audit-table');
  if (more && table.tBodies[0]) {
    for (const r of rows) {
      const tr = el('tr');
      r.forEach((c, i) => tr.append(i === 0 ? el('th', { scope: 'row' }, c) : el('td', {}, c)));
      table.tBodies[0].append(tr);
    }
  } else {
    fillTable(table, 'Audit events, newest first', ['Time (UTC)', 'Event', 'Outcome', 'Status', 'Session', 'Purpose', 'App', 'Number', 'Detail'], rows, 'No event matches.');
  }
  table.dataset.results = String(table.tBodies[0].querySelectorAll('tr:not(:has(td.empty))').length); // rows shown
  state.auditCursor = j.data.nextCursor;
  $('audit-more').hidden = !j.data.nextCursor;
}

async function lookupSession(id) {
  const token = auditToken();
  const out = $('session-out');
  out.textContent = '';
  if (!token) {
    say('Session lookup needs a workspace API key: give one under Audit (the admin token cannot read sessions).', 'error');
    return;
  }
  try {
    const j = await api('GET', `/v1/messaging/otp/sessions/${seg(id)}`, { token });
    const s = j.data;
    const rows = [
      ['Session', s.sessionId], ['State', s.state], ['Number', s.dest], ['Purpose', s.purpose], ['App', s.app ?? '—'],
      ['Channel', s.channel], ['Attempts', `${s.attemptsUsed} of ${s.maxAttempts}`], ['Created', when(s.createdAt)],
      ['Expires', when(s.expiresAt)], ['Verified', when(s.verifiedAt)],
    ];
    if (s.delivery) rows.push(['Delivery', s.delivery]);
    if (s.transaction) rows.push(['Transaction', `${s.transaction.amount} ${s.transaction.currency} to ${s.transaction.payee}`]);
    for (const [k, v] of rows) out.append(el('div', {}, el('dt', {}, k), el('dd', { data: { prop: k.toLowerCase() } }, v)));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) out.append(el('div', {}, el('dt', {}, 'Session'), el('dd', {}, 'Not found in this workspace.')));
    else throw err;
  }
}

// ----------------------------------------------------------------------------------------------
// keys

async function loadKeys() {
  const id = await selectedWorkspace();
  if (!id) {
    fillTable($('keys-table'), 'Keys', ['Key id'], [], 'No workspace.');
    return;
  }
  const j = await api('GET', `/v1/admin/workspaces/${seg(id)}`, { token: state.auth.token });
  if ($('ws-select').value !== id) return; // another workspace was picked meanwhile
  state.workspace = j.data;
  const rows = j.data.keys.map((k) => [
    k.keyId, when(k.createdAt), k.revokedAt ? `revoked ${when(k.revokedAt)}` : 'live',
    k.revokedAt ? '' : el('button', { type: 'button', class: 'danger', data: { revoke: k.keyId }, 'aria-label': `Revoke key ${k.keyId}` }, 'Revoke'),
  ]);
  fillTable($('keys-table'), `Keys of ${j.data.name} (${id}); a key itself is never shown again after its creation`, ['Key id', 'Created', 'State', 'Action'], rows, 'No key.');
}

async function createKey() {
  const id = $('ws-select').value;
  const j = await api('POST', `/v1/admin/workspaces/${seg(id)}/keys`, { token: state.auth.token });
  $('key-new-value').value = j.data.apiKey;
  $('key-new').hidden = false;
  $('key-new-value').focus();
  $('key-new-value').select();
  say(`Key ${j.data.keyId} created: copy it now, it is not shown again.`);
  await loadKeys();
}

async function revokeKey(keyId) {
  if (!window.confirm(`Revoke key ${keyId}? Requests with it are refused from now on.`)) return;
  const id = $('ws-select').value;
  await api('DELETE', `/v1/admin/workspaces/${seg(id)}/keys/${seg(keyId)}`, { token: state.auth.token });
  say(`Key ${keyId} revoked.`);
  await loadKeys();
}

// ----------------------------------------------------------------------------------------------
// policy

async function loadPolicy() {
  const form = $('policy-form');
  if (!form.firstChild) buildPolicyForm(form);
  const id = await selectedWorkspace();
  if (!id) return;
  const j = await api('GET', `/v1/admin/workspaces/${seg(id)}`, { token: state.auth.token });
  if ($('ws-select').value !== id) return; // another workspace was picked meanwhile
  state.workspace = j.data;
  fillPolicyForm(form, j.data.policy);
  form.dataset.workspace = id; // the workspace whose policy the form holds
}

async function savePolicy() {
  const form = $('policy-form');
  clearErrors(form);
  const { policy, errors } = readPolicyForm(form);
  if (errors.length) {
    let first = null;
    for (const [path, msg] of errors) first ||= showFieldError(form, path, msg);
    first?.focus();
    say(`Not saved: ${errors.length} field${errors.length > 1 ? 's need' : ' needs'} a fix.`, 'error');
    return;
  }
  const patch = policyChanges(state.workspace.policy, policy);
  if (!Object.keys(patch).length) {
    say('Nothing changed.');
    return;
  }
  const id = state.workspace.workspaceId;
  try {
    await api('PATCH', `/v1/admin/workspaces/${seg(id)}`, { token: state.auth.token, body: { policy: patch } });
  } catch (err) {
    if (err instanceof ApiError && err.field) {
      const input = showFieldError(form, err.field.replace(/^policy\.?/, ''), `${err.message} (${err.code})`);
      input?.focus();
      say(`Not saved: the server refused ${err.field}.`, 'error');
      return;
    }
    throw err;
  }
  say(`Policy saved (${Object.keys(patch).join(', ')}).`);
  await loadPolicy();
}

// ----------------------------------------------------------------------------------------------
// wiring

function guard(fn) {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (err) {
      say(explain(err), 'error');
    }
  };
}

function wire() {
  $('signin').addEventListener('submit', async (e) => {
    e.preventDefault();
    const errEl = $('signin-error');
    errEl.hidden = true;
    const token = $('token').value.trim();
    if (!token) return;
    try {
      await signIn(token);
      $('token').value = '';
      if (isAdmin()) await loadWorkspaces();
      render();
    } catch (err) {
      errEl.textContent = explain(err);
      errEl.hidden = false;
    }
  });
  $('signout').addEventListener('click', signOut);
  window.addEventListener('hashchange', () => {
    // only the views' own fragments switch views (#main is the skip link's target)
    if (state.auth && VIEWS.includes(location.hash.slice(1))) show(viewFromHash());
  });
  $('analytics-form').addEventListener('submit', guard(async (e) => {
    e.preventDefault();
    await loadReport(true);
    renderAnalytics();
  }));
  $('ws-select').addEventListener('change', guard(() => load(state.view)));
  $('ws-reload').addEventListener('click', guard(async () => {
    await loadWorkspaces();
    await load(state.view);
  }));
  $('fraud-reload').addEventListener('click', guard(async () => {
    state.reportKey = ''; // fresh analytics too
    await loadFraud();
  }));
  $('fraud-table').addEventListener('click', guard(async (e) => {
    const b = e.target.closest('button[data-unblock]');
    if (b) await unblock(b.dataset.unblock);
  }));
  $('audit-key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const k = $('audit-key').value.trim();
    if (k) sessionStorage.setItem(AUDIT_KEY, k);
    else sessionStorage.removeItem(AUDIT_KEY);
    $('audit-key').value = '';
    say(k ? 'Workspace key set for audit and session lookup (this tab only).' : 'Workspace key cleared.');
  });
  $('audit-form').addEventListener('submit', guard(async (e) => {
    e.preventDefault();
    await searchAudit(false);
  }));
  $('audit-more').addEventListener('click', guard(() => searchAudit(true)));
  $('session-form').addEventListener('submit', guard(async (e) => {
    e.preventDefault();
    await lookupSession($('se-id').value.trim());
  }));
  $('key-create').addEventListener('click', guard(createKey));
  $('key-new-done').addEventListener('click', () => {
    $('key-new-value').value = '';
    $('key-new').hidden = true;
  });
  $('keys-table').addEventListener('click', guard(async (e) => {
    const b = e.target.closest('button[data-revoke]');
    if (b) await revokeKey(b.dataset.revoke);
  }));
  $('policy-form').addEventListener('submit', guard(async (e) => {
    e.preventDefault();
    await savePolicy();
  }));
}

async function start() {
  wire();
  for (const v of VIEWS) $(`${v}-title`).tabIndex = -1;
  state.auth = loadAuth();
  if (state.auth && isAdmin()) {
    try {
      await loadWorkspaces();
    } catch (err) {
      say(explain(err), 'error');
    }
  }
  render();
  document.body.dataset.ready = 'true'; // for tests: the module ran
}

start();
