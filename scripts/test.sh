#!/usr/bin/env bash
# Joinkeep's `npm test`: builds, starts a throwaway PostgreSQL cluster, runs every compiled test file against it,
# and always tears the cluster down. Nothing is skipped: a test that needs a service gets it from here.
#
# On a fresh Debian machine run as root, it installs PostgreSQL when its server binaries are missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

TMP_ROOT=""
PG_BIN=""
PG_DATA=""
RUN_AS=()

# Stops PostgreSQL and removes everything this run created, whatever way the script ends.
cleanup() {
  local status=$?
  if [[ -n "$PG_DATA" && -f "$PG_DATA/postmaster.pid" ]]; then
    "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 || log "warning: could not stop PostgreSQL"
  fi
  [[ -n "$TMP_ROOT" ]] && rm -rf "$TMP_ROOT"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- PostgreSQL server binaries ---------------------------------------------------------------------------------
# Debian keeps them off PATH in /usr/lib/postgresql/<version>/bin; elsewhere they are usually on PATH.
find_pg_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then echo "$dir"; return 0; fi
  done
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null && command -v postgres >/dev/null; then
    dirname "$(command -v initdb)"; return 0
  fi
  return 1
}

if ! PG_BIN="$(find_pg_bin)"; then
  if [[ "$(id -u)" -ne 0 ]]; then
    die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found. Install them (Debian: sudo apt-get install -y postgresql) or run this script as root."
  fi
  log "PostgreSQL server binaries not found: installing the postgresql package"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
  PG_BIN="$(find_pg_bin)" || die "postgresql installed, but initdb/pg_ctl/postgres still not found"
fi
log "PostgreSQL binaries: $PG_BIN"

# initdb refuses to run as root: as root, the cluster belongs to the `postgres` system user.
if [[ "$(id -u)" -eq 0 ]]; then
  if ! id postgres >/dev/null 2>&1; then
    log "creating system user postgres"
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  fi
  RUN_AS=(runuser -u postgres --)
else
  RUN_AS=(env)
fi

# --- Other tools the tests use -----------------------------------------------------------------------------------
# openssl makes throwaway certificates for the TLS client-certificate tests.
if ! command -v openssl >/dev/null; then
  [[ "$(id -u)" -eq 0 ]] || die "openssl not found; install it (Debian: sudo apt-get install -y openssl)"
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssl
fi

# --- Build ------------------------------------------------------------------------------------------------------
# tsc emits even when it reports type errors; the tests still run so their results are visible, and the type
# errors fail the run at the end.
build_status=0
npm run build || build_status=$?
# The dependency direction of docs/architecture.md is part of the build.
node scripts/check-layers.mjs || build_status=$?

# --- Throwaway PostgreSQL cluster ------------------------------------------------------------------------------
TMP_ROOT="$(mktemp -d "${TMPDIR:-/tmp}/joinkeep-test.XXXXXX")"
PG_DATA="$TMP_ROOT/data"
chmod 0755 "$TMP_ROOT"
[[ "$(id -u)" -eq 0 ]] && chown postgres: "$TMP_ROOT"

# Trust authentication is fine for a cluster that listens on 127.0.0.1 only and lives for one test run.
"${RUN_AS[@]}" "$PG_BIN/initdb" -D "$PG_DATA" --username=postgres --auth=trust --encoding=UTF8 --locale=C --no-sync >"$TMP_ROOT/initdb.log" 2>&1 \
  || { cat "$TMP_ROOT/initdb.log" >&2; die "initdb failed"; }

free_port() {
  node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

# A port picked as free can be taken before the server binds it: try a few.
PG_PORT=""
for _ in 1 2 3; do
  port="$(free_port)"
  # fsync stays on (the default): the durability tests should see real commits.
  if "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$TMP_ROOT/postgres.log" -w -t 30 start \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $TMP_ROOT -c max_connections=300" >/dev/null; then
    PG_PORT="$port"
    break
  fi
done
[[ -n "$PG_PORT" ]] || { cat "$TMP_ROOT/postgres.log" >&2 || true; die "PostgreSQL did not start"; }
export JOINKEEP_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
log "PostgreSQL listening on 127.0.0.1:$PG_PORT"

# --- SoftHSM2 -----------------------------------------------------------------------------------------------------
# The PKCS#11 custody tests run against SoftHSM2. Each test process makes its own softhsm2.conf and tokens
# (test/helpers/softhsm.ts); here we only make sure the library and softhsm2-util are installed.
softhsm_module() {
  local p
  for p in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
    [[ -f "$p" ]] && { echo "$p"; return 0; }
  done
  return 1
}
if ! softhsm_module >/dev/null || ! command -v softhsm2-util >/dev/null; then
  [[ "$(id -u)" -eq 0 ]] || die "SoftHSM2 not found; install it (Debian: sudo apt-get install -y softhsm2) or run this script as root"
  log "SoftHSM2 not found: installing the softhsm2 package"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends softhsm2
fi
JOINKEEP_TEST_PKCS11_MODULE="$(softhsm_module)" || die "softhsm2 installed, but libsofthsm2.so still not found"
export JOINKEEP_TEST_PKCS11_MODULE
log "SoftHSM2 module: $JOINKEEP_TEST_PKCS11_MODULE"

# --- Tests --------------------------------------------------------------------------------------------------------
# Every test/**/*.test.ts runs from its compiled file. Going from the sources (not from dist/) means output of
# deleted or renamed tests is not run, and a test that failed to compile is an error, not a silent skip.
test_files=()
missing=()
while IFS= read -r src; do
  compiled="dist/${src%.ts}.js"
  if [[ -f "$compiled" ]]; then test_files+=("$compiled"); else missing+=("$src"); fi
done < <(find test -name '*.test.ts' | sort)
[[ ${#missing[@]} -eq 0 ]] || die "no compiled output for: ${missing[*]}"
[[ ${#test_files[@]} -gt 0 ]] || die "no test files found under test/"
log "running ${#test_files[@]} test file(s)"

test_status=0
node --test --test-concurrency=2 "${test_files[@]}" || test_status=$?

if [[ $test_status -ne 0 ]]; then exit "$test_status"; fi
if [[ $build_status -ne 0 ]]; then die "tests passed, but the TypeScript build or the layer check reported errors (see above)"; fi
exit 0
