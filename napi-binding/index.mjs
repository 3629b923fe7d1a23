// ESM entry: the same objects as the CommonJS entry.
import otpkit from './index.js';

export const {
  OtpService,
  MemoryStore,
  RedisStore,
  OtpError,
  JsonGateway,
  TwilioGateway,
  MetaGateway,
  gatewayFromEnv,
  receiptKeysFromEnv,
  createServer,
  serveNative,
  listener,
  Metrics,
} = otpkit;
export default otpkit;
