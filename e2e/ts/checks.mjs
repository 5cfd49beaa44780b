// Shared by the end-to-end client scripts: a watchdog, failure bookkeeping and text
// extraction, so each script holds only its own scenario.

// A hung server must not hang the caller.
setTimeout(() => {
  console.error("FAIL: timed out after 120 s");
  process.exit(1);
}, 120_000).unref();

export const failures = [];

export function check(cond, what) {
  if (!cond) {
    failures.push(what);
    console.error("FAIL: " + what);
  }
}

export function textOf(result) {
  return (result.content ?? [])
    .filter((c) => c.type === "text")
    .map((c) => c.text)
    .join("");
}
