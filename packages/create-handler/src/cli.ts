#!/usr/bin/env node
// The bin `create-handler`, which `npm create @liveupdate/handler` runs.
import { runStarter } from './run-starter.js';

process.exitCode = runStarter(process.argv.slice(2), process.cwd(), {
  out: (text) => console.log(text),
  error: (text) => console.error(text),
});
