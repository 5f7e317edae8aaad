# shellcheck shell=bash
# Apache Kafka as a reference broker: fetch it from Maven Central (cached outside the repo),
# start it as a single KRaft node (combined broker + controller) on loopback, wait until it
# serves, and stop it. Source this file and call the functions, or use scripts/kafka-reference.
#
#   . broker/bench/kafka.sh
#   kafka_start /tmp/ref 29092 29093      # prints the bootstrap address
#   kafka_run_class org.apache.kafka.tools.ProducerPerformance ...
#   kafka_stop /tmp/ref
#
# Environment:
#   TOKAFKA_TOOLS_CACHE   cache root (default ~/.cache/tokafka-tools); Kafka's jars live in
#                         $TOKAFKA_TOOLS_CACHE/kafka-$KAFKA_VERSION/libs
#   KAFKA_VERSION         default 4.3.1 (4.4.0's tools need packages Maven Central does not serve)
#   KAFKA_HEAP_OPTS       default "-Xmx1G -Xms1G", as kafka-server-start.sh
#   KAFKA_START_TIMEOUT_S readiness deadline, default 90
#
# Needs java (17+) and, for the first fetch only, mvn.

KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
KAFKA_CACHE_ROOT="${TOKAFKA_TOOLS_CACHE:-$HOME/.cache/tokafka-tools}"
KAFKA_HOME_DIR="$KAFKA_CACHE_ROOT/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME_DIR/libs"
# The JVM flags of Kafka's own start scripts (kafka-run-class.sh), so the reference runs as
# a user would run it.
KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}"

_kafka_log() { printf 'kafka-reference: %s\n' "$*" >&2; }

# Downloads Kafka's jars (server, storage tool, perf tools, log4j binding) once.
kafka_fetch() {
  if [[ -f "$KAFKA_HOME_DIR/.complete" ]]; then
    return 0
  fi
  command -v java >/dev/null || { _kafka_log "java not found (need Java 17+)"; return 1; }
  command -v mvn >/dev/null || { _kafka_log "mvn not found (needed once, to fetch Kafka $KAFKA_VERSION)"; return 1; }
  mkdir -p "$KAFKA_HOME_DIR"
  local pom="$KAFKA_HOME_DIR/pom.xml"
  cat >"$pom" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.tokafka</groupId>
  <artifactId>kafka-reference</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-storage</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.25.4</version></dependency>
  </dependencies>
</project>
EOF
  _kafka_log "fetching Apache Kafka $KAFKA_VERSION into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS"
  if ! mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$KAFKA_LIBS" >"$KAFKA_HOME_DIR/fetch.log" 2>&1; then
    _kafka_log "mvn failed; see $KAFKA_HOME_DIR/fetch.log"
    tail -20 "$KAFKA_HOME_DIR/fetch.log" >&2
    return 1
  fi
  cat >"$KAFKA_HOME_DIR/log4j2.properties" <<'EOF'
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka_request.name = kafka.request.logger
logger.kafka_request.level = warn
EOF
  cat >"$KAFKA_HOME_DIR/tools-log4j2.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = err
EOF
  touch "$KAFKA_HOME_DIR/.complete"
}

# Runs a Java main class from Kafka's jars (tools: ProducerPerformance, TopicCommand, ...),
# logging warnings to stderr. JAVA_TOOL_HEAP (default -Xmx512M) sizes the tool's heap.
kafka_run_class() {
  kafka_fetch || return 1
  local class="$1"
  shift
  # shellcheck disable=SC2086
  java ${JAVA_TOOL_HEAP:--Xmx512M} $KAFKA_JVM_PERFORMANCE_OPTS \
    -Dlog4j2.configurationFile="$KAFKA_HOME_DIR/tools-log4j2.properties" \
    -cp "$KAFKA_LIBS/*" "$class" "$@"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
_kafka_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# kafka_start DIR [PORT] [CONTROLLER_PORT] [KEY=VALUE...]
# Formats DIR/data (if new) and starts Kafka in the background with its pid in DIR/kafka.pid,
# the server log in DIR/logs/server.log and stdout/stderr in DIR/kafka.out. Extra KEY=VALUE
# arguments are appended to server.properties. Waits until the node has registered and its
# listener accepts connections; prints the bootstrap address (127.0.0.1:PORT) on stdout.
kafka_start() {
  local dir="$1" port="${2:-29092}" cport="${3:-29093}"
  shift $(($# < 3 ? $# : 3))
  kafka_fetch || return 1
  mkdir -p "$dir/logs" "$dir/data"
  dir="$(cd "$dir" && pwd)"
  if [[ -f "$dir/kafka.pid" ]] && kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null; then
    _kafka_log "already running in $dir (pid $(cat "$dir/kafka.pid"))"
    echo "127.0.0.1:$port"
    return 0
  fi
  if _kafka_port_open "$port" || _kafka_port_open "$cport"; then
    _kafka_log "port $port or $cport is already in use"
    return 1
  fi
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  local kv
  for kv in "$@"; do
    echo "$kv" >>"$dir/server.properties"
  done
  local log4j="-Dlog4j2.configurationFile=$KAFKA_HOME_DIR/log4j2.properties -Dkafka.logs.dir=$dir/logs"
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    # A cluster id is 16 random bytes in URL-safe base64 without padding.
    local cluster_id
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    # shellcheck disable=SC2086
    if ! java -Xmx256M $log4j -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$dir/server.properties" >"$dir/format.out" 2>&1; then
      _kafka_log "storage format failed:"
      cat "$dir/format.out" >&2
      return 1
    fi
  fi
  # shellcheck disable=SC2086
  setsid java ${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G} $KAFKA_JVM_PERFORMANCE_OPTS $log4j \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" \
    >"$dir/kafka.out" 2>&1 </dev/null &
  echo $! >"$dir/kafka.pid"
  local pid=$! deadline=$((SECONDS + ${KAFKA_START_TIMEOUT_S:-90}))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      _kafka_log "Kafka exited during start; last lines of $dir/logs/server.log and kafka.out:"
      tail -20 "$dir/logs/server.log" "$dir/kafka.out" >&2 2>/dev/null
      rm -f "$dir/kafka.pid"
      return 1
    fi
    if grep -q "Kafka Server started" "$dir/logs/server.log" 2>/dev/null && _kafka_port_open "$port"; then
      break
    fi
    if ((SECONDS >= deadline)); then
      _kafka_log "Kafka not ready after ${KAFKA_START_TIMEOUT_S:-90}s; stopping it (logs in $dir/logs)"
      kafka_stop "$dir"
      return 1
    fi
    sleep 0.3
  done
  _kafka_log "Kafka $KAFKA_VERSION ready on 127.0.0.1:$port (pid $pid, dir $dir)"
  echo "127.0.0.1:$port"
}

# kafka_stop DIR: SIGTERM (a clean shutdown), SIGKILL after KAFKA_STOP_TIMEOUT_S (default 30).
kafka_stop() {
  local dir="$1"
  [[ -f "$dir/kafka.pid" ]] || return 0
  local pid
  pid="$(cat "$dir/kafka.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    local deadline=$((SECONDS + ${KAFKA_STOP_TIMEOUT_S:-30}))
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS >= deadline)); then
        _kafka_log "Kafka (pid $pid) did not stop in time; killing it"
        kill -KILL "$pid" 2>/dev/null
        break
      fi
      sleep 0.2
    done
  fi
  rm -f "$dir/kafka.pid"
}

# kafka_status DIR: exit 0 when the node started from DIR is running.
kafka_status() {
  local dir="$1"
  [[ -f "$dir/kafka.pid" ]] && kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null
}
