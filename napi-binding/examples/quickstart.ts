// Type-checked by scripts/test (tsc --noEmit -p napi-binding/examples) and runnable after a build:
//   node --experimental-strip-types is not needed: this file is only type-checked.
import http from 'node:http';
import { OtpService, OtpError, JsonGateway, RedisStore, createServer, type VerifyResult } from '../index.js';

async function main(): Promise<void> {
  const otp = new OtpService({
    pepper: process.env.OTP_PEPPER ?? '',
    gateway: new JsonGateway({ url: 'http://127.0.0.1:9999/sms', token: 'gateway-token' }),
    senders: ['Acme'],
    policy: { ttlSeconds: 300, maxAttempts: 5 },
  });
  try {
    const { sessionId, reused } = await otp.request({ dest: '+233202007745', src: 'Acme', purpose: 'LOGIN' });
    const result: VerifyResult = await otp.verify({ sessionId, code: '123456' });
    if (result.status === 'APPROVED' && !reused) console.log('signed in');
    const st = await otp.status(sessionId);
    console.log(st?.state, st?.attemptsUsed);
    const report = await otp.analytics({ app: 'shop', days: 7 });
    console.log(report.totals.verification_rate, report.by_channel.sms?.estimated_cost.amount);
  } catch (e) {
    if (e instanceof OtpError && e.code === 'RATE_LIMITED') console.log(`retry in ${e.retryAfterSeconds} s`);
    else throw e;
  }

  // Several processes: one Redis.
  const shared = new OtpService({
    pepper: process.env.OTP_PEPPER ?? '',
    gateway: async () => 'delivered',
    store: new RedisStore({ url: 'redis://127.0.0.1:6379' }),
  });
  const tenant = await shared.createWorkspace({ name: 'Acme', senders: ['Acme'] });
  const ops = shared.forApiKey(tenant.apiKey);
  await ops.request({ dest: '+233202007745', src: 'Acme', purpose: 'PASSWORD_RESET', channel: 'whatsapp' });
  // A retry with the same Idempotency-Key answers the first answer again and sends nothing.
  await ops.request({ dest: '+233202007745', src: 'Acme', purpose: 'LOGIN' }, { idempotencyKey: 'order-1234' });
  await shared.close();

  // The HTTP API of the Worker, on node:http.
  const server: http.Server = createServer(otp);
  server.listen(8787);
}

void main();
