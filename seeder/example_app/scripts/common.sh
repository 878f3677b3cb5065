# Shared by the example hooks: where this host keeps its deploy log (the peer's data dir).
DATA_DIR="$(dirname "$(dirname "$RELEASE_DIR")")"
log() { echo "$LIFECYCLE_EVENT $RELEASE_ID $*" >> "$DATA_DIR/deploy.log"; echo "$LIFECYCLE_EVENT: $*"; }
