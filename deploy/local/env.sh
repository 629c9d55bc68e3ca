# Sourced by every deploy/local script: where caches, logs and state live.
# Nothing here is required for correctness; deleting the cache only costs time.
JOINERY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export JOINERY_ROOT
export JOINERY_CACHE_DIR="${JOINERY_CACHE_DIR:-$HOME/.cache/joinery}"
# Outside the clone, so that CI runs and later sessions reuse the RocksDB build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$JOINERY_CACHE_DIR/target}"
export JOINERY_STATE_DIR="${JOINERY_STATE_DIR:-$JOINERY_ROOT/.joinery}"
export JOINERY_LOG_DIR="${JOINERY_LOG_DIR:-$JOINERY_STATE_DIR/logs}"
export JOINERY_KAFKA_BROKERS="${JOINERY_KAFKA_BROKERS:-127.0.0.1:9092}"
mkdir -p "$JOINERY_CACHE_DIR" "$JOINERY_LOG_DIR"
