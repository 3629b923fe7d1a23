// ESM entry of otpkit/express: the same function as the CommonJS one.
import adapter from './express.js';

export const { otpkitExpress } = adapter;
