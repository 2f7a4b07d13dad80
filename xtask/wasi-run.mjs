// Runs a wasm32-wasip1 program in Node's V8 with Node's WASI: `node wasi-run.mjs PROGRAM.wasm ARGS...`.
// The cargo runner of `cargo xtask test` for the metering tests, and the bench's way of timing the
// filter's logic in V8. Imports other than WASI's (the proxy-wasm host functions a filter module
// imports) get stubs returning 0: the programs run here never call them. Exits with the program's
// exit code; a trap (a panic under panic=abort) is an uncaught error, so a failure either way.
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { WASI } from 'node:wasi';

const [program, ...args] = process.argv.slice(2);
const wasi = new WASI({ version: 'preview1', args: [basename(program), ...args], env: {}, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(program));
const imports = wasi.getImportObject();
for (const i of WebAssembly.Module.imports(module)) {
  imports[i.module] ??= {};
  imports[i.module][i.name] ??= () => 0;
}
const instance = await WebAssembly.instantiate(module, imports);
process.exitCode = wasi.start({ exports: { memory: instance.exports.memory, _start: instance.exports._start } });
