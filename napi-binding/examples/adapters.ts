// Type-checked by scripts/test (tsc --noEmit -p napi-binding/examples): the framework adapters of
// README.md ("Framework adapters"), through the package's exports map, against each framework's
// own types (Express: @types/express; Fastify and Hono ship theirs).
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { serve } from '@hono/node-server';
import { OtpService, JsonGateway } from 'otpkit';
import { otpkitExpress } from 'otpkit/express';
import { otpkitFastify } from 'otpkit/fastify';
import { otpkitHono } from 'otpkit/hono';

async function main(): Promise<void> {
  const otp = new OtpService({
    pepper: process.env.OTP_PEPPER ?? '',
    gateway: new JsonGateway({ url: 'http://127.0.0.1:9999/sms', token: 'gateway-token' }),
    adminToken: process.env.ADMIN_TOKEN,
  });

  const app = express();
  app.use(express.json());
  app.use('/otp-api', otpkitExpress(otp, { log: (line) => console.log(line) }));
  const router = express.Router();
  router.use(otpkitExpress(otp));
  app.use(router);
  app.listen(3000);

  const fastify = Fastify({ logger: true });
  await fastify.register(otpkitFastify(otp), { prefix: '/otp-api' });
  await fastify.listen({ port: 3001 });

  const hono = new Hono();
  hono.get('/', (c) => c.text('my app'));
  hono.route('/otp-api', otpkitHono(otp, { logLevel: 'warn' }));
  serve({ fetch: hono.fetch, port: 3002 });
}

void main;
