'use strict';
// Preload for `bench/http.mjs --profile`: node 20 refuses --cpu-prof in NODE_OPTIONS, so this
// starts V8's sampling profiler through node:inspector and writes the .cpuprofile into
// $OTPKIT_CPU_PROF_DIR when the process calls process.exit() (otpkit serve and the peer both do
// on SIGINT). Use: NODE_OPTIONS="--require /abs/path/bench/peer/cpu-prof.cjs".
const inspector = require('node:inspector');
const fs = require('node:fs');
const path = require('node:path');

const dir = process.env.OTPKIT_CPU_PROF_DIR;
if (dir) {
  const session = new inspector.Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 1000 }); // µs, as --cpu-prof's default
  session.post('Profiler.start');
  const exit = process.exit.bind(process);
  let stopping = false;
  process.exit = (code) => {
    if (stopping) return exit(code);
    stopping = true;
    session.post('Profiler.stop', (err, res) => {
      if (!err) {
        fs.mkdirSync(dir, { recursive: true });
        fs.writeFileSync(path.join(dir, `${process.pid}.cpuprofile`), JSON.stringify(res.profile));
      }
      exit(code);
    });
  };
}
