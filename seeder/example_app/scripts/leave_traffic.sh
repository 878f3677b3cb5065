#!/bin/sh
# BeforeBlockTraffic (run from the live release): stop taking new requests before it stops.
set -eu
. "$(dirname "$0")/common.sh"
rm -f "$DATA_DIR/in-rotation"
log "out of rotation"
