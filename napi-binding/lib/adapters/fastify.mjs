// ESM entry of otpkit/fastify: the same function as the CommonJS one.
import adapter from './fastify.js';

export const { otpkitFastify } = adapter;
