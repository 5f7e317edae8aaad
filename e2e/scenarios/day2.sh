# shellcheck shell=bash
# Day-2 operations on a BrokerCluster run by the operator (installed as for the operator
# scenario), each under continuous acks=all production and a consumer group of two members
# (e2e/load/checker.py, confluent-kafka): scale 3 → 5 with replicas and leadership spread
# onto the new brokers; an image change rolled over every broker; a broken image that halts
# the rollout and the fix that resumes it; a leader imbalance (a broker restarted by hand)
# that the operator rebalances; scale 5 → 3 by draining. For each it prints a "day-2
# figures" line: how long the operation took, and the checker's acknowledged records lost,
# duplicated and reordered, errors seen by the application and records the group never
# delivered (all of which must be 0). Also, without load: a restart asked for by the
# tokafka.io/restart annotation, held while spec.rollout.paused and rolled once unpaused.

# shellcheck source=/dev/null
source "$E2E_DIR/scenarios/operator.sh"

DAY2_CLUSTER=ops
LOAD_WORK=""
LOAD_PRODUCER=""
LOAD_CONSUMERS=()

# day2_cluster: three brokers, topics of three replicas needing two in sync, and a short
# health-gate timeout so that a broken image halts the rollout within the scenario.
day2_cluster() {
	cat <<-YAML
		apiVersion: tokafka.io/v1alpha1
		kind: BrokerCluster
		metadata:
		  name: $DAY2_CLUSTER
		spec:
		  replicas: 3
		  image: tokafka-broker:dev
		  version: 0.1.0
		  storage:
		    size: 1Gi
		    deleteClaimsOnDelete: true
		  defaultReplicationFactor: 3
		  minInsyncReplicas: 2
		  rollout:
		    healthGateTimeoutSeconds: 30
		  config:
		    # The brokers' own imbalance check would race the operator's: once an hour keeps
		    # it out of the imbalance check below, so what rebalances leadership is the operator.
		    leader.imbalance.check.interval.seconds: "3600"
	YAML
}

# replicas_spread NS BC N: N brokers hold replicas, the most loaded at most one more than the
# least, and nothing is moving.
replicas_spread() {
	pod_http "$1" "$2-0" 9644 /v1/cluster | python3 -c '
import json, sys
c = json.load(sys.stdin)
loads = [b["replicas"] for b in c["brokers"] if not b["fenced"]]
ok = len(loads) == int(sys.argv[1]) and min(loads) > 0 and max(loads) - min(loads) <= 1
sys.exit(0 if ok and c["reassigning_partitions"] == 0 else 1)' "$3"
}

# leaders_spread NS BC N: N serving brokers, the one leading the most partitions leads at
# most one more than the one leading the fewest.
leaders_spread() {
	pod_http "$1" "$2-0" 9644 /v1/cluster | python3 -c '
import json, sys
c = json.load(sys.stdin)
leaders = [b["leaders"] for b in c["brokers"] if not b["fenced"]]
sys.exit(0 if len(leaders) == int(sys.argv[1]) and max(leaders) - min(leaders) <= 1 else 1)' "$3"
}

# all_members NS BC: every broker id the cluster has registered, fenced or not.
all_members() {
	pod_http "$1" "$2-0" 9644 /v1/cluster | python3 -c '
import json, sys
print(" ".join(str(i) for i in sorted(b["id"] for b in json.load(sys.stdin)["brokers"])))'
}

# pod_uids NS BC: "name=uid" of the cluster's pods, one per line, sorted.
pod_uids() {
	kubectl -n "$1" get pods -l "tokafka.io/cluster=$2" \
		-o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}{"\n"}{end}' | sort
}

# all_replaced BEFORE AFTER: the same pods, each with a new uid.
all_replaced() {
	[ "$(cut -d= -f1 <<<"$1")" = "$(cut -d= -f1 <<<"$2")" ] && [ -z "$(comm -12 <(echo "$1") <(echo "$2"))" ]
}

# distinct_event_messages NS NAME REASON: how many different messages Events with REASON
# about NAME carry (a repeated Event is one message, however it is counted).
distinct_event_messages() {
	kubectl -n "$1" get events --field-selector "involvedObject.name=$2,reason=$3" \
		-o jsonpath='{range .items[*]}{.message}{"\n"}{end}' | sort -u | grep -c .
}

day2_bootstrap() { echo "$DAY2_CLUSTER.$1.svc.cluster.local:9092"; }

# cluster_json NS: the cluster's admin view (GET /v1/cluster) from broker 0.
cluster_json() { pod_http "$1" "$DAY2_CLUSTER-0" 9644 /v1/cluster; }

# cluster_settled NS: no partition under-replicated, offline or moving.
cluster_settled() {
	cluster_json "$1" | python3 -c '
import json, sys
c = json.load(sys.stdin)
sys.exit(0 if c["under_replicated_partitions"] == 0 and c["offline_partitions"] == 0
         and c["reassigning_partitions"] == 0 else 1)'
}

# leader_imbalance_at_most NS PERCENT: no broker's leader imbalance is above PERCENT.
leader_imbalance_at_most() {
	cluster_json "$1" | python3 -c '
import json, sys
c = json.load(sys.stdin)
sys.exit(0 if all(v <= int(sys.argv[1]) for v in c["leader_imbalance_percent"].values()) else 1)' "$2"
}

# leader_imbalance_above NS BROKER PERCENT: BROKER's leader imbalance is above PERCENT.
leader_imbalance_above() {
	cluster_json "$1" | python3 -c '
import json, sys
c = json.load(sys.stdin)
sys.exit(0 if c["leader_imbalance_percent"].get(sys.argv[1], 0) > int(sys.argv[2]) else 1)' "$2" "$3"
}

# records_at_least BOOTSTRAP TOPIC N: TOPIC holds at least N records.
records_at_least() {
	local n
	n="$(timeout 30 python3 "$E2E_DIR/load/checker.py" count --bootstrap "$1" --topic "$2" 2>/dev/null)" || return 1
	[ "${n:-0}" -ge "$3" ]
}

ops_field() { kubectl -n "$1" get bc "$DAY2_CLUSTER" -o jsonpath="$2"; }

# load_start NS TOPIC: acks=all production into a new topic of 6 partitions and a consumer
# group of two members reading it; returns once records flow and every replica is in sync.
load_start() {
	local ns="$1" topic="$2" bootstrap member
	bootstrap="$(day2_bootstrap "$ns")"
	LOAD_WORK="$(mktemp -d)"
	LOAD_CONSUMERS=()
	python3 "$E2E_DIR/load/checker.py" produce --bootstrap "$bootstrap" --topic "$topic" \
		--partitions 6 --out "$LOAD_WORK/acked.json" 2>"$LOAD_WORK/producer.log" &
	LOAD_PRODUCER=$!
	# The group subscribes once the topic exists (a subscription to a missing topic is an
	# error the client reports to the application).
	eventually 90 "load on $topic: records flow (acks=all, idempotent)" records_at_least "$bootstrap" "$topic" 300
	for member in 1 2; do
		python3 "$E2E_DIR/load/checker.py" consume --bootstrap "$bootstrap" --topic "$topic" \
			--group "$topic-readers" --out "$LOAD_WORK/consumer-$member.json" \
			2>"$LOAD_WORK/consumer-$member.log" &
		LOAD_CONSUMERS+=($!)
	done
	eventually 90 "load on $topic: every partition is fully in sync" cluster_settled "$ns"
}

# load_verify NS TOPIC OPERATION SECONDS: stops the load, prints the operation's figures and
# checks them.
load_verify() {
	local ns="$1" topic="$2" operation="$3" took="$4" pid stopped=0 figures
	kill -TERM "$LOAD_PRODUCER" 2>/dev/null
	check "$operation: the load's producer stops cleanly" wait "$LOAD_PRODUCER"
	kill -TERM "${LOAD_CONSUMERS[@]}" 2>/dev/null
	for pid in "${LOAD_CONSUMERS[@]}"; do wait "$pid" || stopped=1; done
	check "$operation: the group's consumers read to the end and stop cleanly" test "$stopped" = 0
	local args=(--bootstrap "$(day2_bootstrap "$ns")" --topic "$topic" --acked "$LOAD_WORK/acked.json")
	for pid in 1 2; do args+=(--consumed "$LOAD_WORK/consumer-$pid.json"); done
	if figures="$(python3 "$E2E_DIR/load/checker.py" verify "${args[@]}" 2>"$LOAD_WORK/verify.log")"; then
		pass "$operation: no acknowledged record lost, duplicated or reordered; no application error; the group delivered every record"
	else
		fail "$operation: no acknowledged record lost, duplicated or reordered; no application error; the group delivered every record"
		tail -n 20 "$LOAD_WORK"/*.log >&2
	fi
	echo "day-2 figures: $operation: took ${took}s; ${figures#checker: }"
	rm -rf "$LOAD_WORK"
}

# uids_of NS ORDINAL...: "name=uid" of those broker pods, one per line.
uids_of() {
	local ns="$1" ordinal
	shift
	for ordinal in "$@"; do echo "$DAY2_CLUSTER-$ordinal=$(pod_uid "$ns" "$DAY2_CLUSTER-$ordinal")"; done
}

# replaced_and_ready NS POD OLD_UID: POD exists under a new uid and is Ready.
replaced_and_ready() { [ "$(pod_uid "$1" "$2")" != "$3" ] && pod_ready "$1" "$2"; }

# rollout_status NS: "updated ready-text phase current-version" of the BrokerCluster.
rollout_status() {
	ops_field "$1" '{.status.rollout.updated} {.status.readyReplicasText} {.status.phase} {.status.currentVersion}'
}

scenario_day2() {
	local ns started ready_at before
	eventually 120 "the operator Deployment is available" \
		kubectl -n "$OPERATOR_NS" wait --for=condition=Available --timeout=1s "deployment/$OPERATOR_RELEASE" || return
	if ! ns="$(e2e_namespace day2)"; then
		fail "a test namespace is created"
		return
	fi
	E2E_NAMESPACES+=("$ns")
	check "BrokerCluster $DAY2_CLUSTER of 3 is applied" quietly kubectl -n "$ns" apply -f - < <(day2_cluster)
	eventually 240 "it becomes Ready with 3 brokers" bc_ready "$ns" "$DAY2_CLUSTER" || return

	# Scale 3 → 5: new brokers start and register; replicas spread onto them.
	load_start "$ns" scale-up
	started=$SECONDS
	check "kubectl scale bc $DAY2_CLUSTER --replicas=5 is accepted" quietly kubectl -n "$ns" scale bc "$DAY2_CLUSTER" --replicas=5
	eventually 240 "the cluster has five brokers" prints "0 1 2 3 4" cluster_members "$ns" "$DAY2_CLUSTER" || show_cluster "$ns" "$DAY2_CLUSTER"
	eventually 240 "replicas spread over the five brokers (loads within one), nothing moving" replicas_spread "$ns" "$DAY2_CLUSTER" 5 || show_cluster "$ns" "$DAY2_CLUSTER"
	eventually 120 "leadership spread over the five brokers (leader counts within one)" leaders_spread "$ns" "$DAY2_CLUSTER" 5 || show_cluster "$ns" "$DAY2_CLUSTER"
	eventually 120 "the BrokerCluster reports 5/5 Ready" prints "5/5 Ready" ops_field "$ns" '{.status.readyReplicasText} {.status.phase}'
	load_verify "$ns" scale-up "scale 3 → 5" $((SECONDS - started))

	# An image change rolls over every broker, one at a time.
	load_start "$ns" image-roll
	before="$(pod_uids "$ns" "$DAY2_CLUSTER")"
	started=$SECONDS
	check "the image is changed to tokafka-broker:v2 (version 0.2.0)" quietly kubectl -n "$ns" patch bc "$DAY2_CLUSTER" --type=merge \
		-p '{"spec":{"image":"tokafka-broker:v2","version":"0.2.0"}}'
	eventually 600 "the rollout completes: 5 brokers updated, 5/5 Ready, version 0.2.0" \
		prints "5 5/5 Ready 0.2.0" rollout_status "$ns"
	load_verify "$ns" image-roll "image change rolled over 5 brokers" $((SECONDS - started))
	check "every broker pod was replaced" all_replaced "$before" "$(pod_uids "$ns" "$DAY2_CLUSTER")"
	check "a RestartingBroker Event for each of the 5 brokers" prints 5 distinct_event_messages "$ns" "$DAY2_CLUSTER" RestartingBroker

	# A broken image halts the rollout after the first broker; fixing the spec resumes it.
	load_start "$ns" broken-image
	before="$(uids_of "$ns" 0 1 2 3)"
	started=$SECONDS
	check "the image is changed to one that does not exist" quietly kubectl -n "$ns" patch bc "$DAY2_CLUSTER" --type=merge \
		-p '{"spec":{"image":"registry.invalid/tokafka-broker:v3","version":"0.3.0"}}'
	eventually 180 "the rollout halts: Degraded, reason RolloutHalted" prints "True RolloutHalted" bc_condition "$ns" "$DAY2_CLUSTER" Degraded
	check "the halt names the broker that did not come back (4)" sh -c "kubectl -n '$ns' get bc '$DAY2_CLUSTER' -o jsonpath='{.status.conditions[?(@.type==\"Degraded\")].message}' | grep -q 'pod 4'"
	check "the other brokers were left alone" test "$(uids_of "$ns" 0 1 2 3)" = "$before"
	echo "the broken image halted the rollout after $((SECONDS - started)) s"
	started=$SECONDS
	check "the image is fixed (tokafka-broker:v3)" quietly kubectl -n "$ns" patch bc "$DAY2_CLUSTER" --type=merge \
		-p '{"spec":{"image":"tokafka-broker:v3"}}'
	eventually 600 "the rollout resumes and completes: 5 updated, 5/5 Ready, version 0.3.0" \
		prints "5 5/5 Ready 0.3.0" rollout_status "$ns"
	eventually 60 "Degraded is False again" prints "False" ops_field "$ns" '{.status.conditions[?(@.type=="Degraded")].status}'
	load_verify "$ns" broken-image "broken image halted, then the fix rolled over 5 brokers" $((SECONDS - started))

	# A broker restarted by hand comes back leading nothing: the operator rebalances.
	load_start "$ns" imbalance
	eventually 120 "leadership starts balanced (no broker above 10%)" leader_imbalance_at_most "$ns" 10
	before="$(pod_uid "$ns" "$DAY2_CLUSTER-1")"
	started=$SECONDS
	check "broker pod $DAY2_CLUSTER-1 is deleted" quietly kubectl -n "$ns" delete pod "$DAY2_CLUSTER-1" --wait=false
	eventually 60 "broker 1's leader imbalance rises above 10%" leader_imbalance_above "$ns" 1 10
	eventually 180 "the pod comes back Ready" replaced_and_ready "$ns" "$DAY2_CLUSTER-1" "$before"
	ready_at=$SECONDS
	eventually 120 "the operator rebalances leadership (no broker above 10%)" leader_imbalance_at_most "$ns" 10 || show_cluster "$ns" "$DAY2_CLUSTER"
	check "a RebalancingLeaders Event says the operator did" has_event "$ns" "$DAY2_CLUSTER" RebalancingLeaders
	echo "leadership was back in balance $((SECONDS - ready_at)) s after the restarted broker was Ready"
	load_verify "$ns" imbalance "broker restarted by hand, leadership rebalanced" $((SECONDS - started))

	# The tokafka.io/restart annotation rolls every broker without a spec change;
	# spec.rollout.paused holds the rollout until it is unpaused.
	before="$(pod_uids "$ns" "$DAY2_CLUSTER")"
	check "the rollout is paused (spec.rollout.paused)" quietly kubectl -n "$ns" patch bc "$DAY2_CLUSTER" --type=merge \
		-p '{"spec":{"rollout":{"paused":true}}}'
	check "a restart is asked for with the tokafka.io/restart annotation" \
		quietly kubectl -n "$ns" annotate bc "$DAY2_CLUSTER" tokafka.io/restart=day2 --overwrite
	eventually 60 "Progressing says RolloutPaused, 0 of 5 brokers updated" prints "True RolloutPaused 0" \
		ops_field "$ns" '{.status.conditions[?(@.type=="Progressing")].status} {.status.conditions[?(@.type=="Progressing")].reason} {.status.rollout.updated}'
	check "no broker was restarted while paused" test "$(pod_uids "$ns" "$DAY2_CLUSTER")" = "$before"
	started=$SECONDS
	check "the rollout is unpaused" quietly kubectl -n "$ns" patch bc "$DAY2_CLUSTER" --type=merge \
		-p '{"spec":{"rollout":{"paused":false}}}'
	eventually 600 "the restart rolls over the 5 brokers" prints "5 5/5 Ready 0.3.0" rollout_status "$ns"
	check "every broker pod was replaced" all_replaced "$before" "$(pod_uids "$ns" "$DAY2_CLUSTER")"
	echo "restart by annotation rolled over 5 brokers in $((SECONDS - started)) s"

	# Scale 5 → 3: brokers 4 then 3 are drained, removed and forgotten.
	load_start "$ns" scale-down
	started=$SECONDS
	check "kubectl scale bc $DAY2_CLUSTER --replicas=3 is accepted" quietly kubectl -n "$ns" scale bc "$DAY2_CLUSTER" --replicas=3
	eventually 300 "the StatefulSet shrinks to 3" prints 3 kubectl -n "$ns" get statefulset "$DAY2_CLUSTER" -o jsonpath='{.spec.replicas}'
	eventually 120 "pods $DAY2_CLUSTER-3 and $DAY2_CLUSTER-4 are gone" sh -c "! kubectl -n '$ns' get pod '$DAY2_CLUSTER-3' '$DAY2_CLUSTER-4' -o name 2>/dev/null | grep -q ."
	eventually 120 "the cluster is brokers 0, 1 and 2 (3 and 4 forgotten)" prints "0 1 2" all_members "$ns" "$DAY2_CLUSTER"
	eventually 120 "the BrokerCluster reports 3/3 Ready" prints "3/3 Ready" ops_field "$ns" '{.status.readyReplicasText} {.status.phase}'
	load_verify "$ns" scale-down "scale 5 → 3" $((SECONDS - started))
	check "the removed brokers' claims are kept (deleteClaimsOnScaleDown false)" quietly kubectl -n "$ns" get pvc "data-$DAY2_CLUSTER-3" "data-$DAY2_CLUSTER-4"

	check "BrokerCluster $DAY2_CLUSTER is deleted" quietly kubectl -n "$ns" delete bc "$DAY2_CLUSTER" --wait=false
	eventually 120 "its broker pods are gone" prints "" kubectl -n "$ns" get pods -l "tokafka.io/cluster=$DAY2_CLUSTER" -o name
}
