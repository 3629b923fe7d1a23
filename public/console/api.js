// The console's only way to the API: same-origin fetch with the signed-in credential in the
// Authorization header (never in a URL). Answers the parsed JSON body; throws ApiError with the
// API's error code and field (core/openapi.yaml's Error schema) otherwise.

export class ApiError extends Error {
  constructor(status, body) {
    const err = body && typeof body === 'object' ? body.error || {} : {};
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || null;
    this.field = err.field || null;
    this.retryAfterSeconds = err.retryAfterSeconds ?? null;
  }
}

// Requests in flight, on <html data-pending>: "0" once the page has settled (tests wait for it).
let pending = 0;
const mark = () => {
  document.documentElement.dataset.pending = String(pending);
};
mark();

/** One request. `token`: Bearer credential; `query`: object of strings (empty ones dropped). */
export async function api(method, path, opts = {}) {
  pending += 1;
  mark();
  try {
    return await request(method, path, opts);
  } finally {
    pending -= 1;
    mark();
  }
}

async function request(method, path, { token, query, body } = {}) {
  let url = path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
    const s = q.toString();
    if (s) url += `?${s}`;
  }
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

/** Path segment, percent-encoded (a prefix's + too). */
export const seg = (s) => encodeURIComponent(s);
