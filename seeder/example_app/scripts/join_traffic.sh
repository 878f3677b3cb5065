#!/bin/sh
# AfterAllowTraffic: the new release passed ValidateService; take requests again.
set -eu
. "$(dirname "$0")/common.sh"
echo "$RELEASE_ID" > "$DATA_DIR/in-rotation"
log "in rotation"
