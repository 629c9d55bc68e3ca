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
# GOV.UK Frontend for the mission board, installed by deploy/local/setup (npm ci in web/).
export JOINERY_BOARD_ASSETS="${JOINERY_BOARD_ASSETS:-$JOINERY_ROOT/web/node_modules/govuk-frontend/dist/govuk}"
mkdir -p "$JOINERY_CACHE_DIR" "$JOINERY_LOG_DIR"

# RocksDB's C++ takes ~17 minutes to compile on 2 cores. After the first
# source build, deploy/local/build keeps librocksdb.a and libsnappy.a here and
# later builds link them instead (any feature-set variant then costs seconds).
# Without the cache, librocksdb-sys builds from source as usual.
JOINERY_ROCKSDB_VERSION="$(sed -n '/^name = "librocksdb-sys"/{n;s/^version = "\(.*\)"/\1/p}' "$JOINERY_ROOT/Cargo.lock" 2>/dev/null)"
export JOINERY_ROCKSDB_CACHE="$JOINERY_CACHE_DIR/librocksdb-sys-${JOINERY_ROCKSDB_VERSION:-unknown}"
if [ -f "$JOINERY_ROCKSDB_CACHE/librocksdb.a" ] && [ -f "$JOINERY_ROCKSDB_CACHE/libsnappy.a" ]; then
  export ROCKSDB_LIB_DIR="$JOINERY_ROCKSDB_CACHE" ROCKSDB_STATIC=1
  export SNAPPY_LIB_DIR="$JOINERY_ROCKSDB_CACHE" SNAPPY_STATIC=1
fi
