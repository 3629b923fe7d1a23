// Type-checked, never run (tsc -p client/check, lib DOM and WebWorker, no Node types): the uses
// of otpkit/client the README shows, with the types the spec gives. A method, body or result that
// no longer matches client/schema.d.ts (core/openapi.yaml) fails here.

import { createClient, OtpkitHttpError } from '../index';
import type { RequestResult, SessionView, VerifyResult, ZendStatus } from '../index';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const same = <A, B>(ok: Equal<A, B>): Equal<A, B> => ok;

// The result types are the spec's schemas.
type Schemas = import('../schema').components['schemas'];
same<RequestResult, Schemas['RequestResult']>(true);
same<VerifyResult, Schemas['VerifyResult']>(true);
same<SessionView, Schemas['SessionView']>(true);
same<ZendStatus, Schemas['ZendStatus']>(true);

export async function node(): Promise<string> {
  const otp = createClient({ baseUrl: 'http://127.0.0.1:8787', apiKey: 'otpk_…' });
  const { sessionId, expiresInSeconds, reused } = await otp.request(
    { dest: '+233202007745', src: 'ACME', purpose: 'LOGIN', channel: 'sms' },
    { idempotencyKey: 'signup-42' },
  );
  try {
    const r = await otp.verify({ sessionId, code: '123456' });
    const approved: 'APPROVED' | 'INVALID' | 'EXPIRED' | 'MAX_ATTEMPTS_REACHED' | 'ALREADY_USED' | 'NOT_FOUND' = r.status;
    void approved;
  } catch (e) {
    if (e instanceof OtpkitHttpError && e.code === 'INVALID') return `wrong code, ${e.attemptsLeft} left`;
    if (e instanceof OtpkitHttpError && e.status === 429) return `wait ${e.retryAfter ?? 0} s`;
    throw e;
  }
  await otp.verify({ dest: '+233202007745', purpose: 'LOGIN', code: '123456' });
  const s = await otp.status(sessionId);
  const state: 'PENDING' | 'APPROVED' | 'EXPIRED' | 'LOCKED' | 'CANCELED' | undefined = s.state;
  await otp.resend(sessionId, { channel: 'whatsapp' });
  await otp.resend(sessionId);
  const c = await otp.cancel(sessionId);
  const page = await otp.audit({ sessionId, limit: 10 });
  const z = await otp.zend.send({ phone_number: '+233202007746', app: 'shop', expiry: 5 });
  await otp.zend.verify(z.id ?? '', { code: '123456' });
  const zs = await otp.zend.status(z.id ?? '');
  await otp.zend.resend(z.id ?? '', {}, { idempotencyKey: 'k' });
  await otp.zend.cancel(z.id ?? '');
  const report = await otp.zend.analytics({ app: 'shop', days: 7 });
  // Everything else through the typed openapi-fetch client.
  const admin = createClient({ baseUrl: 'http://127.0.0.1:8787', apiKey: 'ADMIN_TOKEN' });
  const created = await admin.raw.POST('/v1/admin/workspaces', { body: { name: 'Shop', senders: ['ACME'] } });
  const health = await otp.raw.GET('/health');
  // @ts-expect-error: no such route in the spec
  await otp.raw.GET('/v1/messaging/otp/nope');
  // @ts-expect-error: `dest` is required by the spec
  await otp.request({ src: 'ACME', purpose: 'LOGIN' });
  // @ts-expect-error: not a purpose of the spec
  await otp.request({ dest: '+233202007745', src: 'ACME', purpose: 'SIGNUP' });
  return [expiresInSeconds, reused, state, c.state, page.nextCursor, zs.status, report.totals.sent, created.data?.data, health.data?.status].join();
}

/** A Worker calling otpkit through a service binding (wrangler.toml: services = [{ binding = "OTPKIT", service = "otpkit" }]). */
interface Env {
  OTPKIT: { fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> };
  OTPKIT_API_KEY: string;
}
export const worker = {
  async fetch(request: Request, env: Env): Promise<Response> {
    const otp = createClient({ baseUrl: 'https://otpkit', apiKey: env.OTPKIT_API_KEY, fetch: env.OTPKIT.fetch.bind(env.OTPKIT) });
    const { phone } = (await request.json()) as { phone: string };
    const { sessionId } = await otp.request({ dest: phone, src: 'ACME', purpose: 'LOGIN' });
    return Response.json({ sessionId });
  },
};
