#!/bin/sh
# Starts the example "service": here, it records which release is serving.
set -eu
. "$(dirname "$0")/common.sh"
echo "$RELEASE_ID" > "$DATA_DIR/serving"
log "serving $(cat "$RELEASE_DIR/VERSION")"
