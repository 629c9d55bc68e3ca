#!/usr/bin/env bash
# A real Apache Kafka broker on loopback, no Docker.
#
#   deploy/local/kafka.sh start    fetch (once), format (once), start, wait until ready
#   deploy/local/kafka.sh stop     stop the broker this script started
#   deploy/local/kafka.sh status   exit 0 when a broker answers on $JOINERY_KAFKA_BROKERS
#
# The broker's jars come from Maven Central (org.apache.kafka:kafka_2.13, pinned
# in deploy/local/kafka/pom.xml) into $JOINERY_CACHE_DIR/kafka-<version>/libs.
# Data lives in $JOINERY_KAFKA_DATA (default $JOINERY_STATE_DIR/kafka/data),
# logs in $JOINERY_LOG_DIR/kafka/.
# Idempotent: a second start reuses the download and a running broker.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")"
KAFKA_HOME="$JOINERY_CACHE_DIR/kafka-$KAFKA_VERSION"
DATA_DIR="${JOINERY_KAFKA_DATA:-$JOINERY_STATE_DIR/kafka/data}"
LOG_DIR="$JOINERY_LOG_DIR/kafka"
PID_FILE="$JOINERY_STATE_DIR/kafka/kafka.pid"
HOST="${JOINERY_KAFKA_BROKERS%%,*}"; HOST="${HOST%%:*}"
PORT="${JOINERY_KAFKA_BROKERS%%,*}"; PORT="${PORT##*:}"

log() { echo "kafka: $*" >&2; }

java_bin() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then echo "$JAVA_HOME/bin/java"; else command -v java; fi
}

fetch() {
  if [ -f "$KAFKA_HOME/libs/.complete" ]; then return; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is required to fetch the broker: apt-get install maven"; exit 1; }
  log "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME"
  rm -rf "$KAFKA_HOME/libs"; mkdir -p "$KAFKA_HOME/libs"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs" >&2
  touch "$KAFKA_HOME/libs/.complete"
}

classpath() { echo "$KAFKA_HOME/libs/*"; }

run_class() {
  "$(java_bin)" -Xms256m -Xmx1g -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.yaml" -Dkafka.logs.dir="$LOG_DIR" \
    -cp "$(classpath)" "$@"
}

answers() {
  # A metadata request, not just an open port: the broker must be serving.
  (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null || return 1
  if command -v kcat >/dev/null; then
    timeout 10 kcat -L -b "$JOINERY_KAFKA_BROKERS" -m 5 >/dev/null 2>&1
  else
    timeout 30 "$(java_bin)" -Dlog4j2.configurationFile="$here/kafka/log4j2.yaml" -Dkafka.logs.dir="$LOG_DIR" \
      -cp "$(classpath)" org.apache.kafka.tools.BrokerApiVersionsCommand \
      --bootstrap-server "$JOINERY_KAFKA_BROKERS" >/dev/null 2>&1
  fi
}

ours_running() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

start() {
  fetch
  if answers; then log "a broker already answers on $JOINERY_KAFKA_BROKERS; reusing it"; return; fi
  if ours_running; then log "broker process $(cat "$PID_FILE") is starting"; else
    mkdir -p "$DATA_DIR" "$LOG_DIR" "$JOINERY_STATE_DIR/kafka"
    local props="$JOINERY_STATE_DIR/kafka/server.properties"
    # Ports follow JOINERY_KAFKA_BROKERS; the controller listens on the next port.
    sed -e "s/127.0.0.1:9093/$HOST:$((PORT + 1))/g" -e "s/127.0.0.1:9092/$HOST:$PORT/g" \
      "$here/kafka/server.properties" > "$props"
    echo "log.dirs=$DATA_DIR" >> "$props"
    if [ ! -f "$DATA_DIR/meta.properties" ]; then
      log "formatting KRaft storage in $DATA_DIR"
      run_class kafka.tools.StorageTool format --standalone -t "$(run_class kafka.tools.StorageTool random-uuid)" \
        -c "$props" --ignore-formatted >> "$LOG_DIR/format.log" 2>&1
    fi
    log "starting broker on $JOINERY_KAFKA_BROKERS (logs: $LOG_DIR)"
    nohup "$(java_bin)" -Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Dlog4j2.configurationFile="$here/kafka/log4j2.yaml" -Dkafka.logs.dir="$LOG_DIR" \
      -cp "$(classpath)" kafka.Kafka "$props" > "$LOG_DIR/stdout.log" 2>&1 < /dev/null &
    echo $! > "$PID_FILE"
  fi
  for _ in $(seq 1 120); do
    if answers; then log "ready"; return; fi
    ours_running || { log "broker exited; see $LOG_DIR/server.log and $LOG_DIR/stdout.log"; tail -20 "$LOG_DIR/stdout.log" >&2; exit 1; }
    sleep 1
  done
  log "broker did not answer within 120 s; see $LOG_DIR/server.log"; exit 1
}

stop() {
  if ! ours_running; then log "no broker started by this script is running"; rm -f "$PID_FILE"; return; fi
  local pid; pid="$(cat "$PID_FILE")"
  log "stopping broker $pid"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; log "stopped"; return; }; sleep 1; done
  log "broker did not stop in 60 s; killing it"; kill -KILL "$pid" || true; rm -f "$PID_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|fetch" >&2; exit 2 ;;
esac
