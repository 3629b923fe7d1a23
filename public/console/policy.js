// The policy editor: one field per policy key (SPEC §2, §7, §9), checked in the browser against
// the same bounds the server applies (core/src/policy.rs, core/src/fraud.rs), then sent as a PATCH
// of only the keys that changed. A server error names its field (policy.x.y): shown next to it.

const INT = 'int';
const NUM = 'num';
const BOOL = 'bool';
const TEXT = 'text';
const AREA = 'area';

const DECIMAL = /^[0-9]{1,12}(\.[0-9]{1,6})?$/;
const SPEND = /^[0-9]{1,9}(\.[0-9]{1,6})?$/;
const CURRENCY = /^[A-Z]{3}$/;
const E164 = /^\+[1-9][0-9]{7,14}$/;

// [path, label, kind, extra]; the path is the policy key (dotted for nested values).
export const FIELDS = [
  ['General', [
    ['codeLength', 'Code length (digits)', INT, { min: 6, max: 10 }],
    ['ttlSeconds', 'Code lifetime (seconds)', INT, { min: 60, max: 600 }],
    ['maxAttempts', 'Attempts per code', INT, { min: 1, max: 10 }],
    ['reuse', 'Reuse an active code for the same number and purpose', BOOL],
    ['resendAfterSeconds', 'Seconds between two sends of one session', INT, { min: 0, max: 600 }],
    ['retentionSeconds', 'Keep ended sessions (seconds)', INT, { min: 0, max: 2592000 }],
  ]],
  ['Limits', [
    ['sendsPerDestination.limit', 'Sends per number per window', INT, { min: 1, max: 100 }],
    ['sendsPerDestination.windowSeconds', 'Window per number (seconds)', INT, { min: 60, max: 86400 }],
    ['sendsPerWorkspacePerMinute', 'Sends per workspace per minute', INT, { min: 1, max: 100000 }],
    ['failureStreakLimit', 'Wrong codes in a row before a number is locked', INT, { min: 5, max: 1000 }],
  ]],
  ['Destinations and channels', [
    ['allowedCountries', 'Allowed calling codes (comma-separated; empty: all)', TEXT, { placeholder: '233, 234, 1' }],
    ['testNumbers', 'Test numbers, one "number=code" a line', AREA, { placeholder: '+15005550006=123456' }],
    ['channelFallback', 'Channel fallback (comma-separated; empty: none)', TEXT, { placeholder: 'whatsapp, sms' }],
    ['fallbackOnUndelivered', 'Resend on the next fallback channel when a receipt says undelivered', BOOL],
  ]],
  ['Cost', [
    ['pricePerSegment.amount', 'Price per SMS segment', TEXT, { inputmode: 'decimal' }],
    ['pricePerSegment.currency', 'Price currency (ISO 4217)', TEXT, { maxlength: 3 }],
    ['dailySpendLimit.amount', 'Daily spend limit (empty: no cap)', TEXT, { inputmode: 'decimal' }],
    ['dailySpendLimit.currency', 'Spend limit currency (the price\'s)', TEXT, { maxlength: 3 }],
  ]],
  ['Fraud Guard', [
    ['fraudGuard.enabled', 'Fraud Guard on (recommended)', BOOL],
    ['fraudGuard.prefixDigits', 'Prefix digits after the calling code', INT, { min: 1, max: 6 }],
    ['fraudGuard.windowSeconds', 'Counting window (seconds)', INT, { min: 60, max: 86400 }],
    ['fraudGuard.minSends', 'Minimum sends before judging a prefix', INT, { min: 1, max: 100000 }],
    ['fraudGuard.minConversion', 'Block under this conversion (0–1; 0 counts only)', NUM, { min: 0, max: 1, step: 0.001 }],
    ['fraudGuard.blockSeconds', 'Block for (seconds)', INT, { min: 60, max: 604800 }],
    ['fraudGuard.safeList', 'Safe list: numbers or prefixes (comma-separated)', TEXT, { placeholder: '+23324, +14155550100' }],
  ]],
];

const ALL = FIELDS.flatMap(([, list]) => list);
const idOf = (path) => `pol-${path.replace(/\./g, '-')}`;

function get(obj, path) {
  return path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

const splitList = (s) => s.split(/[,\s]+/).map((x) => x.trim()).filter(Boolean);

/** Builds the form's fields (once). */
export function buildPolicyForm(form) {
  form.textContent = '';
  for (const [legendText, list] of FIELDS) {
    const fs = document.createElement('fieldset');
    const legend = document.createElement('legend');
    legend.textContent = legendText;
    fs.append(legend);
    for (const [path, label, kind, extra = {}] of list) {
      const wrap = document.createElement('div');
      wrap.className = kind === BOOL ? 'field check' : 'field';
      const id = idOf(path);
      const lab = document.createElement('label');
      lab.htmlFor = id;
      lab.textContent = label;
      let input;
      if (kind === AREA) {
        input = document.createElement('textarea');
        input.rows = 3;
      } else {
        input = document.createElement('input');
        input.type = kind === BOOL ? 'checkbox' : kind === INT || kind === NUM ? 'number' : 'text';
      }
      input.id = id;
      input.dataset.path = path;
      input.spellcheck = false;
      if (extra.min !== undefined) input.min = String(extra.min);
      if (extra.max !== undefined) input.max = String(extra.max);
      if (kind === INT) input.step = '1';
      if (extra.step !== undefined) input.step = String(extra.step);
      if (extra.placeholder) input.placeholder = extra.placeholder;
      if (extra.maxlength) input.maxLength = extra.maxlength;
      if (extra.inputmode) input.inputMode = extra.inputmode;
      const err = document.createElement('p');
      err.className = 'error';
      err.id = `${id}-err`;
      err.hidden = true;
      input.setAttribute('aria-describedby', err.id);
      if (kind === BOOL) wrap.append(input, lab, err);
      else wrap.append(lab, input, err);
      fs.append(wrap);
    }
    form.append(fs);
  }
  const formErr = document.createElement('p');
  formErr.id = 'policy-error';
  formErr.className = 'error';
  formErr.setAttribute('role', 'alert');
  formErr.hidden = true;
  const save = document.createElement('button');
  save.type = 'submit';
  save.id = 'policy-save';
  save.textContent = 'Save policy';
  form.append(formErr, save);
}

/** Fills the form with `policy` (GET /v1/admin/workspaces/{id}'s). */
export function fillPolicyForm(form, policy) {
  clearErrors(form);
  for (const [path, , kind] of ALL) {
    const input = form.querySelector(`#${idOf(path)}`);
    const v = get(policy, path);
    if (kind === BOOL) input.checked = Boolean(v);
    else if (path === 'allowedCountries' || path === 'channelFallback' || path === 'fraudGuard.safeList') input.value = Array.isArray(v) ? v.join(', ') : '';
    else if (path === 'testNumbers') input.value = Object.entries(v || {}).map(([n, c]) => `${n}=${c}`).join('\n');
    else input.value = v == null ? '' : String(v);
  }
}

export function clearErrors(form) {
  for (const el of form.querySelectorAll('.error')) {
    el.hidden = true;
    el.textContent = '';
  }
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

/** Shows `message` next to the field of `path` (a policy path, or a prefix of one). */
export function showFieldError(form, path, message) {
  let field = ALL.find(([p]) => p === path) || ALL.find(([p]) => p.startsWith(`${path}.`) || path.startsWith(`${p}.`));
  if (!field) {
    const el = form.querySelector('#policy-error');
    el.textContent = path ? `${path}: ${message}` : message;
    el.hidden = false;
    return null;
  }
  const input = form.querySelector(`#${idOf(field[0])}`);
  const err = form.querySelector(`#${idOf(field[0])}-err`);
  err.textContent = message;
  err.hidden = false;
  input.setAttribute('aria-invalid', 'true');
  return input;
}

/**
 * Reads the form into a full policy value and checks it; answers { policy, errors: [[path, msg]] }.
 */
export function readPolicyForm(form) {
  const errors = [];
  const val = (path) => form.querySelector(`#${idOf(path)}`);
  const out = {};
  const int = (path, min, max) => {
    const raw = val(path).value.trim();
    const n = Number(raw);
    if (raw === '' || !Number.isInteger(n) || n < min || n > max) {
      errors.push([path, `must be a whole number from ${min} to ${max}`]);
      return undefined;
    }
    return n;
  };
  for (const [path, , kind, extra = {}] of ALL) {
    if (kind === INT) out[path] = int(path, extra.min, extra.max);
  }
  const p = {
    codeLength: out.codeLength,
    ttlSeconds: out.ttlSeconds,
    maxAttempts: out.maxAttempts,
    reuse: val('reuse').checked,
    sendsPerDestination: { limit: out['sendsPerDestination.limit'], windowSeconds: out['sendsPerDestination.windowSeconds'] },
    sendsPerWorkspacePerMinute: out.sendsPerWorkspacePerMinute,
    failureStreakLimit: out.failureStreakLimit,
    retentionSeconds: out.retentionSeconds,
    resendAfterSeconds: out.resendAfterSeconds,
  };
  // allowedCountries: calling-code prefixes, 1–6 digits, not starting with 0.
  const countries = splitList(val('allowedCountries').value);
  if (countries.some((c) => !/^[1-9][0-9]{0,5}$/.test(c))) errors.push(['allowedCountries', 'each calling code is 1 to 6 digits, the first not 0']);
  else if (countries.length > 300) errors.push(['allowedCountries', 'at most 300 calling codes']);
  p.allowedCountries = countries.length ? countries : null;
  // testNumbers: "number=code" lines.
  const tests = {};
  const lines = val('testNumbers').value.split('\n').map((l) => l.trim()).filter(Boolean);
  for (const line of lines) {
    const [n, c] = line.split('=').map((x) => (x || '').trim());
    if (!E164.test(n || '') || !/^[0-9]{6,10}$/.test(c || '')) {
      errors.push(['testNumbers', `"${line}": write +E.164 number=code of 6 to 10 digits`]);
      break;
    }
    tests[n] = c;
  }
  if (lines.length > 100) errors.push(['testNumbers', 'at most 100 test numbers']);
  if (p.codeLength && Object.values(tests).some((c) => c.length !== p.codeLength)) {
    errors.push(['testNumbers', `each code must have ${p.codeLength} digits (the code length)`]);
  }
  p.testNumbers = tests;
  // channelFallback
  const channels = splitList(val('channelFallback').value).map((c) => c.toLowerCase());
  if (channels.some((c) => c !== 'sms' && c !== 'whatsapp') || new Set(channels).size !== channels.length) {
    errors.push(['channelFallback', 'distinct channels: sms, whatsapp']);
  }
  p.channelFallback = channels.length ? channels : null;
  p.fallbackOnUndelivered = val('fallbackOnUndelivered').checked;
  if (p.fallbackOnUndelivered && !p.channelFallback) errors.push(['fallbackOnUndelivered', 'needs a channel fallback (the channels to resend on)']);
  // pricePerSegment and dailySpendLimit
  const amount = val('pricePerSegment.amount').value.trim();
  const currency = val('pricePerSegment.currency').value.trim();
  if (!DECIMAL.test(amount)) errors.push(['pricePerSegment.amount', 'a decimal such as 0.0075 (up to 6 decimals)']);
  if (!CURRENCY.test(currency)) errors.push(['pricePerSegment.currency', 'three capital letters (ISO 4217), e.g. USD']);
  p.pricePerSegment = { amount, currency };
  const limAmount = val('dailySpendLimit.amount').value.trim();
  const limCurrency = val('dailySpendLimit.currency').value.trim();
  if (limAmount === '' && limCurrency === '') p.dailySpendLimit = null;
  else {
    if (!SPEND.test(limAmount)) errors.push(['dailySpendLimit.amount', 'a decimal below 1000000000 (up to 6 decimals)']);
    if (!CURRENCY.test(limCurrency)) errors.push(['dailySpendLimit.currency', 'three capital letters (ISO 4217)']);
    p.dailySpendLimit = { amount: limAmount, currency: limCurrency };
  }
  // fraudGuard
  const conv = val('fraudGuard.minConversion').value.trim();
  const convN = Number(conv);
  if (conv === '' || !Number.isFinite(convN) || convN < 0 || convN > 1) errors.push(['fraudGuard.minConversion', 'a number from 0 to 1']);
  const safe = splitList(val('fraudGuard.safeList').value);
  if (safe.some((s) => !/^\+[0-9]{1,15}$/.test(s))) errors.push(['fraudGuard.safeList', '+ then 1 to 15 digits each']);
  if (safe.length > 100) errors.push(['fraudGuard.safeList', 'at most 100 entries']);
  p.fraudGuard = {
    enabled: val('fraudGuard.enabled').checked,
    prefixDigits: out['fraudGuard.prefixDigits'],
    windowSeconds: out['fraudGuard.windowSeconds'],
    minSends: out['fraudGuard.minSends'],
    minConversion: convN,
    blockSeconds: out['fraudGuard.blockSeconds'],
    safeList: safe,
  };
  return { policy: p, errors };
}

function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  return JSON.stringify(v ?? null);
}

/** The top-level keys of `next` whose value differs from `current`'s. */
export function policyChanges(current, next) {
  const patch = {};
  for (const [k, v] of Object.entries(next)) {
    if (canonical(v) !== canonical(current?.[k])) patch[k] = v;
  }
  return patch;
}
