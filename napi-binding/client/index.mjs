// otpkit/client for import: the same objects as the CommonJS entry (one OtpkitHttpError class).
import client from './index.js';

export const { createClient, OtpkitHttpError } = client;
export default client;
