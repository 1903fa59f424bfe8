#!/bin/sh
# Registrar's discovery action: runs on an unknown machine booted into Tinkerbell's HookOS,
# reports its hardware to Registrar, then waits for the review: approved -> reboot (the
# approved Workflow provisions it in the next power cycle), rejected -> power off.
#
# Environment:
#   REGISTRAR_URL     e.g. http://registrar.tinkerbell.svc:8080           (required)
#   REPORT_TOKEN      bearer token for the report API                    (required)
#   MAC               the boot NIC's MAC (Tinkerbell passes the worker ID) (required)
#   POLL_SECONDS      how often to ask about the review (default 30)
#   MAX_WAIT_SECONDS  give up waiting after this long (default 86400); exit 3
#   RETRIES           attempts to deliver the report (default 8, backoff 2,4,8.. s, max 60)
#   REBOOT_CMD / POWEROFF_CMD   what to run at the end (default: reboot -f / poweroff -f)
# Exit codes: 0 done, 1 bad configuration, 2 report refused or undeliverable, 3 timed out.
set -eu

: "${REGISTRAR_URL:?set REGISTRAR_URL}"
: "${REPORT_TOKEN:?set REPORT_TOKEN}"
: "${MAC:?set MAC}"
POLL_SECONDS=${POLL_SECONDS:-30}
MAX_WAIT_SECONDS=${MAX_WAIT_SECONDS:-86400}
RETRIES=${RETRIES:-8}
REBOOT_CMD=${REBOOT_CMD:-"reboot -f"}
POWEROFF_CMD=${POWEROFF_CMD:-"poweroff -f"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log() { printf '%s registrar-discover: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

# What the machine is. lshw is required; the rest is best effort.
if ! lshw -json -quiet > "$work/lshw.json" 2> "$work/lshw.err"; then
  log "lshw failed: $(cat "$work/lshw.err")"
  exit 1
fi
bmc=""
if command -v ipmitool >/dev/null 2>&1; then
  bmc=$(ipmitool lan print 2>/dev/null | awk -F': *' '/^IP Address[[:space:]]*:/ {print $2; exit}' || true)
  [ "$bmc" = "0.0.0.0" ] && bmc=""
fi

# The body the report API takes: {"mac", "specs", "timestamp"[, "bmc_address"]}.
{
  printf '{"mac":"%s","timestamp":"%s",' "$MAC" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  [ -n "$bmc" ] && printf '"bmc_address":"%s",' "$bmc"
  printf '"specs":'
  cat "$work/lshw.json"
  printf '}'
} > "$work/report.json"

attempt=1
delay=2
while :; do
  code=$(curl -sS -o "$work/answer" -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $REPORT_TOKEN" -H "Content-Type: application/json" \
    --data-binary @"$work/report.json" "$REGISTRAR_URL/api/v1/reports" 2> "$work/curl.err" || true)
  case "$code" in
    2??) log "report accepted: $(cat "$work/answer")"; break ;;
    4??) log "report refused ($code): $(cat "$work/answer")"; exit 2 ;;
  esac
  if [ "$attempt" -ge "$RETRIES" ]; then
    log "report undeliverable after $attempt attempts: ${code:-no answer} $(cat "$work/curl.err" 2>/dev/null)"
    exit 2
  fi
  log "report not delivered (${code:-no answer}); retrying in ${delay}s"
  sleep "$delay"
  attempt=$((attempt + 1))
  delay=$((delay * 2)); [ "$delay" -gt 60 ] && delay=60
done

waited=0
while [ "$waited" -lt "$MAX_WAIT_SECONDS" ]; do
  next=$(curl -sS -H "Authorization: Bearer $REPORT_TOKEN" "$REGISTRAR_URL/api/v1/reports/$MAC" 2>/dev/null \
    | sed -n 's/.*"next":"\([a-z]*\)".*/\1/p' || true)
  case "$next" in
    reboot) log "approved: rebooting into provisioning"; sh -c "$REBOOT_CMD"; exit 0 ;;
    poweroff) log "rejected: powering off"; sh -c "$POWEROFF_CMD"; exit 0 ;;
  esac
  sleep "$POLL_SECONDS"
  waited=$((waited + POLL_SECONDS))
done
log "no review within ${MAX_WAIT_SECONDS}s"
exit 3
