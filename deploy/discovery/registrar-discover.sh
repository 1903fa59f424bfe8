#!/bin/sh
# Registrar's discovery action: runs on an unknown machine booted into Tinkerbell's HookOS,
# reports its hardware to Registrar, then waits for the review: approved -> reboot (the
# approved Workflow provisions it in the next power cycle), rejected -> power off.
#
# It reports what it finds: `lshw -json` (required), and where present the BMC's address
# (ipmitool), `ip -j -d link` (link state), `dmidecode -s` answers (DMI identity) and
# `lldpctl -f json` (the switch ports it is cabled to). POSIX sh, curl and sed suffice.
#
# Environment:
#   REGISTRAR_URL     e.g. http://registrar.tinkerbell.svc:8080           (required)
#   REPORT_TOKEN      bearer token for the report API                    (required)
#   MAC               the boot NIC's MAC (Tinkerbell passes the worker ID) (required)
#   POLL_SECONDS      how often to ask about the review (default 30)
#   MAX_WAIT_SECONDS  give up waiting after this long (default 86400); exit 3
#   RETRIES           attempts to deliver the report (default 8, backoff 2,4,8.. s, max 60)
#   LLDP_WAIT_SECONDS with lldpd installed but not running, run it this long to hear the
#                     switches (default 0: only ask a running lldpd)
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
lldpd_pid=""
trap 'if [ -n "$lldpd_pid" ]; then kill "$lldpd_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

log() { printf '%s registrar-discover: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

# A JSON string's contents: newlines and tabs become spaces, other control characters and
# bytes beyond ASCII go (the report must be valid UTF-8; DMI strings are ASCII), and
# backslashes and double quotes are escaped.
json_escape() {
  printf '%s' "$1" | LC_ALL=C tr '\n\r\t' '   ' | LC_ALL=C tr -d '\001-\037\177\200-\377' | sed 's/\\/\\\\/g; s/"/\\"/g'
}

# What the machine is. lshw is required; the rest is best effort, each tool only if present.
if ! lshw -json -quiet > "$work/lshw.json" 2> "$work/lshw.err"; then
  log "lshw failed: $(cat "$work/lshw.err")"
  exit 1
fi
bmc=""
if command -v ipmitool >/dev/null 2>&1; then
  bmc=$(ipmitool lan print 2>/dev/null | awk -F': *' '/^IP Address[[:space:]]*:/ {print $2; exit}' || true)
  [ "$bmc" = "0.0.0.0" ] && bmc=""
fi

# Link state, and NICs lshw missed: `ip -j -d link` (-d tells virtual devices apart), or
# without -d on older iproute2. BusyBox's ip has no JSON: then nothing.
ip_link=""
if command -v ip >/dev/null 2>&1; then
  ip_link=$(ip -j -d link show 2>/dev/null || ip -j link show 2>/dev/null || true)
  case "$ip_link" in \[*) ;; *) ip_link="" ;; esac
fi

# DMI identity, one `dmidecode -s` keyword at a time: the first answer that is no comment
# (dmidecode warns in `#` lines) and not blank. Registrar drops placeholders.
dmi=""
if command -v dmidecode >/dev/null 2>&1; then
  for keyword in system-manufacturer system-product-name system-serial-number system-uuid \
      baseboard-manufacturer baseboard-product-name baseboard-serial-number \
      chassis-manufacturer chassis-serial-number chassis-asset-tag; do
    value=$(dmidecode -s "$keyword" 2>/dev/null | sed -n '/^#/d; /^[[:space:]]*$/d; p; q' || true)
    [ -n "$value" ] || continue
    dmi="$dmi${dmi:+,}\"$keyword\":\"$(json_escape "$value")\""
  done
fi

# Where it is cabled: lldpd's neighbors. A running lldpd is asked; else, with
# LLDP_WAIT_SECONDS > 0 and lldpd installed, one is started for that long (switches
# advertise every 30 s by default) and stopped again.
LLDP_WAIT_SECONDS=${LLDP_WAIT_SECONDS:-0}
lldp=""
if command -v lldpctl >/dev/null 2>&1; then
  lldp=$(lldpctl -f json 2>/dev/null || true)
  if [ -z "$lldp" ] && [ "$LLDP_WAIT_SECONDS" -gt 0 ] && command -v lldpd >/dev/null 2>&1; then
    log "starting lldpd for ${LLDP_WAIT_SECONDS}s to hear the switches"
    lldpd -d > "$work/lldpd.log" 2>&1 &
    lldpd_pid=$!
    sleep "$LLDP_WAIT_SECONDS"
    lldp=$(lldpctl -f json 2>/dev/null || true)
    kill "$lldpd_pid" 2>/dev/null || true
    wait "$lldpd_pid" 2>/dev/null || true
    lldpd_pid=""
  fi
  case "$lldp" in \{*) ;; *) lldp="" ;; esac
fi

# The body the report API takes: {"mac", "timestamp", "specs"[, "bmc_address", "ip_link",
# "dmidecode", "lldp"]}. With "lshw-only", just what lshw said: the fallback when Registrar
# refuses the rest (a tool printed something broken, or an older Registrar).
build_report() {
  {
    printf '{"mac":"%s","timestamp":"%s",' "$(json_escape "$MAC")" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    if [ -n "$bmc" ]; then printf '"bmc_address":"%s",' "$(json_escape "$bmc")"; fi
    if [ "$1" = full ]; then
      if [ -n "$ip_link" ]; then printf '"ip_link":%s,' "$ip_link"; fi
      if [ -n "$dmi" ]; then printf '"dmidecode":{%s},' "$dmi"; fi
      if [ -n "$lldp" ]; then printf '"lldp":%s,' "$lldp"; fi
    fi
    printf '"specs":'
    cat "$work/lshw.json"
    printf '}'
  } > "$work/report.json"
}
extras=no
if [ -n "$ip_link$dmi$lldp" ]; then extras=yes; fi
build_report full

attempt=1
delay=2
while :; do
  code=$(curl -sS -o "$work/answer" -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $REPORT_TOKEN" -H "Content-Type: application/json" \
    --data-binary @"$work/report.json" "$REGISTRAR_URL/api/v1/reports" 2> "$work/curl.err" || true)
  case "$code" in
    2??) log "report accepted: $(cat "$work/answer")"; break ;;
    400|422)
      if [ "$extras" = yes ]; then
        log "report refused ($code): $(cat "$work/answer"); sending lshw's facts alone"
        extras=no
        build_report lshw-only
        continue
      fi
      log "report refused ($code): $(cat "$work/answer")"; exit 2 ;;
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
