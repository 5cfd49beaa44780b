#!/usr/bin/env bash
# The MCP conformance suite (npm @modelcontextprotocol/conformance) against a real server:
# bin/enclave-mcp serve --http --conformance-fixtures on loopback with a token, behind a
# reverse proxy that adds the token (the suite sends no credentials; e2e/conformance/proxy).
# Two pinned suite versions,
# one protocol era each:
#   0.1.16          --spec-version 2025-11-25  (initialize handshake, sessions)
#   0.2.0-alpha.12  --spec-version 2026-07-28  (stateless), plus the tasks extension
#                   scenarios, which run only with --force
# Every scenario of the version is run (--suite all: the draft and pending ones too). The
# run fails on a failing scenario that is not in e2e/conformance/expected-failures-<version>.yaml
# and on a listed one that passes (the suite's own baseline rule, applied here to every run
# at once: the suite's exit status does not count a scenario that ends in an error), so the
# lists stay exact. A table per version shows every scenario's outcome.
#
# The suites need Node.js >= 22 (fs.globSync). When the system's node is older, Node 22 is
# installed from the npm registry (package node-linux-<arch>@22). Node and the suites are
# installed once into the cache directory and reused; set CONFORMANCE_CACHE to move it.
#
# Usage: scripts/conformance.sh [BIN]     (BIN defaults to bin/enclave-mcp)
set -euo pipefail

cd "$(dirname "$0")/.."
bin=${1:-bin/enclave-mcp}
cache=${CONFORMANCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enclave-mcp/conformance}
suites=("0.1.16 2025-11-25" "0.2.0-alpha.12 2026-07-28")
export NO_COLOR=1 FORCE_COLOR=0 npm_config_update_notifier=false

[ -x "$bin" ] || { echo "conformance: $bin not found: run make build" >&2; exit 1; }
command -v npm >/dev/null || { echo "conformance: npm is needed to install the suite (and Node 22)" >&2; exit 1; }
mkdir -p "$cache"

# npm_install DIR SPEC: installs SPEC into DIR, atomically (an interrupted install leaves no
# half-filled DIR behind to be taken for a good one next time).
npm_install() {
	local dir=$1 spec=$2 tmp
	tmp=$(mktemp -d "$cache/.install.XXXXXX")
	echo "conformance: installing $spec into $dir" >&2
	if ! npm install --prefix "$tmp" --no-audit --no-fund --no-save --loglevel=error "$spec" >&2; then
		rm -rf "$tmp"
		return 1
	fi
	rm -rf "$dir"
	mv "$tmp" "$dir"
}

# Node: the system's when it is 22 or newer, else Node 22 from the npm registry.
node=node
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 22 ]; then
	case $(uname -m) in
	x86_64) arch=x64 ;;
	aarch64 | arm64) arch=arm64 ;;
	*) echo "conformance: no Node 22 package for $(uname -m); install Node.js 22 or later" >&2; exit 1 ;;
	esac
	node=$cache/node22/node_modules/node-linux-$arch/bin/node
	[ -x "$node" ] || npm_install "$cache/node22" "node-linux-$arch@22"
fi
echo "conformance: node $("$node" --version)" >&2

for s in "${suites[@]}"; do
	set -- $s
	dir=$cache/suite-$1
	have=$("$node" -p "require('$dir/node_modules/@modelcontextprotocol/conformance/package.json').version" 2>/dev/null || true)
	[ "$have" = "$1" ] || npm_install "$dir" "@modelcontextprotocol/conformance@$1"
done

# The proxy is a small Go program; the server it starts is $bin.
go build -o "$cache/proxy" ./e2e/conformance/proxy

out=$(mktemp -d "${TMPDIR:-/tmp}/enclave-conformance.XXXXXX")
proxy_pid=
cleanup() {
	[ -z "$proxy_pid" ] || { kill "$proxy_pid" 2>/dev/null || true; wait "$proxy_pid" 2>/dev/null || true; }
}
trap cleanup EXIT
# The server serves the suite's fixture tools beside its own (--conformance-fixtures; the
# fixtures run no sandbox, and their calls take the path of every tool's, tasks included),
# and makes a task of a call of a client that declared the tasks extension once it has run
# 200 ms (--task-after): the tasks scenarios expect a task of slow_compute's one-second
# calls, and of nothing that ends at once.
"$cache/proxy" -bin "$bin" -log "$out/server.log" -- --conformance-fixtures --task-after 200ms >"$out/url" &
proxy_pid=$!
for _ in $(seq 600); do
	[ -s "$out/url" ] && break
	kill -0 "$proxy_pid" 2>/dev/null || { echo "conformance: the server did not start; its log:" >&2; cat "$out/server.log" >&2; exit 1; }
	sleep 0.1
done
url=$(head -1 "$out/url")
[ -n "$url" ] || { echo "conformance: the server did not answer within 60 s" >&2; exit 1; }
echo "conformance: server behind the token proxy at $url" >&2

# run VERSION SPEC NAME [ARGS...]: one suite run; its output goes to $out/NAME.log, its
# results under $out/NAME/. Its exit status is not used: verdict judges the results.
run() {
	local version=$1 spec=$2 name=$3
	shift 3
	"$node" "$cache/suite-$version/node_modules/@modelcontextprotocol/conformance/dist/index.js" \
		server --url "$url" --spec-version "$spec" -o "$out/$name" "$@" >"$out/$name.log" 2>&1 || true
}

# verdict VERSION SPEC: a line per scenario the runs of VERSION started, judged the way the
# suite's own --expected-failures judges them (a scenario fails on a FAILURE or a WARNING
# check, and one that ended in an error before any check is a failure too), against
# e2e/conformance/expected-failures-VERSION.yaml: fails on an unlisted failure or a listed
# pass.
verdict() {
	"$node" - "$out" "$1" "$2" "e2e/conformance/expected-failures-$1.yaml" <<'EOF_NODE'
const fs = require('fs'), path = require('path');
const [out, version, spec, baseline] = process.argv.slice(2);
const listed = new Set(fs.readFileSync(baseline, 'utf8').split('\n')
  .map(l => l.match(/^\s*-\s*([\w.\/-]+)/)).filter(Boolean).map(m => m[1]));
const rows = [];
let bad = 0;
for (const run of fs.readdirSync(out).filter(f => f.startsWith(version + '-') && f.endsWith('.log')).sort()) {
  const log = fs.readFileSync(path.join(out, run), 'utf8');
  const dir = path.join(out, run.replace(/\.log$/, ''));
  const results = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  for (const m of log.matchAll(/^Running client scenario '([^']+)'/gm)) {
    const name = m[1];
    const res = results.find(r => r.startsWith(`server-${name}-20`));
    const file = res && path.join(dir, res, 'checks.json');
    let ok = false, note = 'ended in an error before any check (see its log)';
    if (file && fs.existsSync(file)) {
      const checks = JSON.parse(fs.readFileSync(file, 'utf8'));
      const failing = checks.filter(c => c.status === 'FAILURE' || c.status === 'WARNING').length;
      const passing = checks.filter(c => c.status === 'SUCCESS').length;
      ok = failing === 0;
      note = `${passing} passed, ${failing} failed or warned`;
    }
    let verdict = ok ? 'pass' : 'fail (listed)';
    if (ok && listed.has(name)) verdict = 'PASS, BUT LISTED: remove it', bad++;
    if (!ok && !listed.has(name)) verdict = 'FAIL, NOT LISTED', bad++;
    rows.push([name, verdict, note]);
    listed.delete(name);
  }
}
for (const name of listed) rows.push([name, 'LISTED, NOT RUN: remove it', '']), bad++;
const w = Math.max(...rows.map(r => r[0].length));
console.log(`\n${version} --spec-version ${spec}: ${rows.filter(r => r[1] === 'pass').length} of ${rows.length} scenarios pass`);
for (const r of rows) console.log(`  ${r[0].padEnd(w)}  ${r[1].padEnd(16)}  ${r[2]}`);
process.exit(bad ? 1 : 0);
EOF_NODE
}

failed=0
for s in "${suites[@]}"; do
	set -- $s
	version=$1 spec=$2
	run "$version" "$spec" "$version-all" --suite all
	if [ "$spec" = 2026-07-28 ]; then
		# Extension scenarios run only with --force, one at a time. The tasks extension is
		# issue 12's; the skills extension (sep-2640-*) is not one this server offers.
		for sc in $("$node" "$cache/suite-$version/node_modules/@modelcontextprotocol/conformance/dist/index.js" list --server |
			sed -n 's/^ *- \(tasks-[a-z0-9-]*\) \[extension\]$/\1/p'); do
			run "$version" "$spec" "$version-ext-$sc" --scenario "$sc" --force
		done
	fi
	verdict "$version" "$spec" || failed=1
done

if [ "$failed" = 1 ]; then
	echo "conformance: FAILED: a scenario outside the expected failures failed, or a listed one passed or did not run; results, logs and the server's log are in $out" >&2
	trap - EXIT
	cleanup
	exit 1
fi
rm -rf "$out"
echo "conformance: ok"
