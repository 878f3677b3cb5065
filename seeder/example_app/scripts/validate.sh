#!/bin/sh
# Checks the switch really happened: current must point at this release and be serving.
set -eu
. "$(dirname "$0")/common.sh"
[ "$(readlink -f "$DATA_DIR/current")" = "$(readlink -f "$RELEASE_DIR")" ] || { log "current is wrong"; exit 1; }
[ "$(cat "$DATA_DIR/serving")" = "$RELEASE_ID" ] || { log "not serving"; exit 1; }
log "healthy"
