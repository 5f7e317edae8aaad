# shellcheck shell=bash
# The operator on a real API server, installed by its Helm chart (e2e/local/up with
# TOKAFKA_LOCAL_OPERATOR=1, or e2e/kind/up): it runs and holds its Lease; a BrokerCluster of
# three becomes owned objects, Ready broker pods that form one cluster, and a Ready
# condition; a real Kafka client (kcat) produces and consumes through the client Service;
# a configuration the brokers would refuse, or an object
# the operator cannot read, becomes an InvalidSpec condition and creates nothing; a second operator replica takes over when the
# leader goes; a broker's rack is its node's zone; deleting a BrokerCluster removes what it owns, its volume claims only when
# deleteClaimsOnDelete is set. Scaling, rollouts and rebalancing are the day2 scenario's.

OPERATOR_NS=tokafka-system
OPERATOR_RELEASE=tokafka-operator

operator_pods() {
	kubectl -n "$OPERATOR_NS" get pods -l app.kubernetes.io/instance="$OPERATOR_RELEASE" \
		-o jsonpath='{range .items[?(@.status.phase=="Running")]}{.metadata.name}{"\n"}{end}' 2>/dev/null
}

lease_holder() {
	kubectl -n "$OPERATOR_NS" get lease "$OPERATOR_RELEASE" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null
}

# operator_metric POD NAME: the value of an unlabelled metric on an operator pod.
operator_metric() {
	pod_http "$OPERATOR_NS" "$1" 8080 /metrics | awk -v m="$2" '$1 == m {print $2}'
}

# new_lease_holder OLD: a running operator pod other than OLD holds the Lease.
new_lease_holder() {
	local holder
	holder="$(lease_holder)"
	[ -n "$holder" ] && [ "$holder" != "$1" ] && operator_pods | grep -qx "$holder"
}

one_leader() {
	local pod leaders=0
	for pod in $(operator_pods); do
		[ "$(operator_metric "$pod" tokafka_operator_leader)" = 1 ] && leaders=$((leaders + 1))
	done
	[ "$leaders" = 1 ]
}

bc_condition() { # NS NAME TYPE -> "STATUS REASON"
	kubectl -n "$1" get bc "$2" -o jsonpath="{.status.conditions[?(@.type==\"$3\")].status} {.status.conditions[?(@.type==\"$3\")].reason}" 2>/dev/null
}

bc_ready() { [ "$(bc_condition "$1" "$2" Ready)" = "True AllBrokersReady" ]; }

# owned_by_cluster NS KIND NAME CLUSTER: the object's controller owner is that BrokerCluster.
owned_by_cluster() {
	local uid owner
	uid="$(kubectl -n "$1" get bc "$4" -o jsonpath='{.metadata.uid}')" || return 1
	owner="$(kubectl -n "$1" get "$2" "$3" -o jsonpath='{.metadata.ownerReferences[?(@.controller==true)].uid}')" || return 1
	[ -n "$uid" ] && [ "$owner" = "$uid" ]
}

# cluster_members NS BC: the broker ids the cluster's admin API lists as registered and
# unfenced, space separated.
cluster_members() {
	pod_http "$1" "$2-0" 9644 /v1/cluster | python3 -c '
import json, sys
print(" ".join(str(i) for i in sorted(b["id"] for b in json.load(sys.stdin)["brokers"] if not b["fenced"])))'
}

# broker_rack NS BC ID: the rack the cluster reports for broker ID.
broker_rack() {
	pod_http "$1" "$2-0" 9644 /v1/cluster | python3 -c '
import json, sys
print(next(b["rack"] or "" for b in json.load(sys.stdin)["brokers"] if b["id"] == int(sys.argv[1])))' "$3"
}

# show_cluster NS BC: the cluster's admin view, for a failed check's diagnosis.
show_cluster() {
	echo "--- GET /v1/cluster from $2-0:" >&2
	pod_http "$1" "$2-0" 9644 /v1/cluster >&2
	echo >&2
}

# produce_and_consume BOOTSTRAP TOPIC COUNT: COUNT records with acks=all through kcat, read
# back in order from the beginning.
produce_and_consume() {
	local bootstrap="$1" topic="$2" count="$3" got
	seq 1 "$count" | sed 's/^/record-/' |
		timeout 60 kcat -P -b "$bootstrap" -t "$topic" -p 0 -X acks=all -X enable.idempotence=true || return 1
	got="$(timeout 60 kcat -C -b "$bootstrap" -t "$topic" -p 0 -o beginning -c "$count" -e -q)" || return 1
	[ "$got" = "$(seq 1 "$count" | sed 's/^/record-/')" ]
}

# broker_cluster NAME REPLICAS [EXTRA_SPEC_YAML]: a BrokerCluster running the local broker.
broker_cluster() {
	cat <<-YAML
		apiVersion: tokafka.io/v1alpha1
		kind: BrokerCluster
		metadata:
		  name: $1
		spec:
		  replicas: $2
		  image: tokafka-broker:dev
		  version: 0.1.0
		  storage:
		    size: 1Gi
	YAML
	[ -z "${3:-}" ] || printf '%s\n' "$3"
}

reconciles_counted() {
	pod_http "$OPERATOR_NS" "$1" 8080 /metrics | grep -q '^tokafka_operator_reconciles_total{result="success"} [1-9]'
}

# three_in_sync BOOTSTRAP TOPIC: partition 0 of TOPIC lists three in-sync replicas.
three_in_sync() {
	timeout 20 kcat -L -b "$1" -t "$2" | grep -q 'partition 0,.*isrs: [0-9],[0-9],[0-9]$'
}


# has_event NS NAME REASON: an Event with REASON about object NAME.
has_event() {
	kubectl -n "$1" get events --field-selector "involvedObject.name=$2,reason=$3" -o name | grep -q .
}

count_lines() { "$@" | wc -l | tr -d ' '; }

unreadable_cluster() {
	cat <<-YAML
		apiVersion: tokafka.io/v1alpha1
		kind: BrokerCluster
		metadata:
		  name: unreadable
		spec:
		  replicas: 1
		  image: tokafka-broker:dev
	YAML
}

gone() { ! kubectl -n "$1" get "$2" "$3" >/dev/null 2>&1; }

scenario_operator() {
	local ns pods leader
	eventually 120 "the operator Deployment is available" \
		kubectl -n "$OPERATOR_NS" wait --for=condition=Available --timeout=1s "deployment/$OPERATOR_RELEASE" || return
	pods="$(operator_pods)"
	leader="$(lease_holder)"
	check "the operator holds its leader Lease" grep -qx "$leader" <<<"$pods"
	check "the operator serves /healthz" quietly pod_http "$OPERATOR_NS" "$leader" 8080 /healthz
	check "the operator reports itself leader in /metrics" test "$(operator_metric "$leader" tokafka_operator_leader)" = 1

	if ! ns="$(e2e_namespace operator)"; then
		fail "a test namespace is created"
		return
	fi
	E2E_NAMESPACES+=("$ns")
	check "the example BrokerCluster of 3 is applied" quietly kubectl -n "$ns" apply -f "$E2E_DIR/../crds/examples/brokercluster-3.yaml"
	eventually 60 "the operator creates the StatefulSet" kubectl -n "$ns" get statefulset demo || return
	local kind name
	for kind in statefulset/demo service/demo service/demo-brokers configmap/demo-config poddisruptionbudget/demo; do
		check "$kind is owned by the BrokerCluster" owned_by_cluster "$ns" "${kind%/*}" "${kind#*/}" demo
	done
	check "the headless Service publishes not-ready addresses" test "$(kubectl -n "$ns" get service demo-brokers -o jsonpath='{.spec.clusterIP} {.spec.publishNotReadyAddresses}')" = "None true"
	check "the StatefulSet updates OnDelete" test "$(kubectl -n "$ns" get statefulset demo -o jsonpath='{.spec.updateStrategy.type}')" = OnDelete
	check "the BrokerCluster carries the operator's finalizer" test "$(kubectl -n "$ns" get bc demo -o jsonpath='{.metadata.finalizers[0]}')" = tokafka.io/cleanup
	for name in demo-0 demo-1 demo-2; do
		eventually 180 "broker pod $name becomes Ready" pod_ready "$ns" "$name"
	done
	eventually 120 "the BrokerCluster's Ready condition is True" bc_ready "$ns" demo || return
	check "kubectl get bc shows 3/3 Ready" test "$(kubectl -n "$ns" get bc demo -o jsonpath='{.status.readyReplicasText} {.status.phase} {.status.currentVersion}')" = "3/3 Ready 0.1.0"
	check "the brokers form one cluster of 0, 1 and 2" test "$(cluster_members "$ns" demo)" = "0 1 2" || show_cluster "$ns" demo
	eventually 30 "the Ready transition is an Event on the BrokerCluster" has_event "$ns" demo AllBrokersReady
	check "kcat produces 200 records (acks=all) and reads them back in order through the client Service" \
		produce_and_consume "demo.$ns.svc.cluster.local:9092" orders 200
	check "the topic's partition has 3 in-sync replicas" three_in_sync "demo.$ns.svc.cluster.local:9092" orders
	check "the operator's metrics count successful reconciles" reconciles_counted "$leader"

	# A value the schema cannot judge but the broker refuses: reported, nothing created.
	check "a BrokerCluster with a configuration value the broker refuses is stored" \
		quietly kubectl -n "$ns" apply -f - < <(broker_cluster badvalue 1 $'  config:\n    num.partitions: many')
	eventually 60 "it is reported Ready=False with reason InvalidSpec" prints "False InvalidSpec" bc_condition "$ns" badvalue Ready
	check "the InvalidSpec message names the key" sh -c "kubectl -n '$ns' get bc badvalue -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}' | grep -q num.partitions"
	check "nothing was created for it" gone "$ns" statefulset badvalue
	# An object stored under a looser schema (an older CRD) that the operator cannot read must
	# be reported on that object and must not stall the watch of the others.
	check "the CRD is swapped for one that takes any spec" quietly kubectl patch crd brokerclusters.tokafka.io --type=json \
		-p '[{"op":"replace","path":"/spec/versions/0/schema/openAPIV3Schema/properties/spec","value":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}]'
	eventually 30 "a BrokerCluster without storage is stored under it" quietly kubectl -n "$ns" apply -f - < <(unreadable_cluster)
	check "the CRD is restored" quietly kubectl apply --server-side --force-conflicts -f "$E2E_DIR/../crds/brokercluster.yaml"
	eventually 60 "the unreadable BrokerCluster is reported Ready=False with reason InvalidSpec" prints "False InvalidSpec" bc_condition "$ns" unreadable Ready
	check "its message says why it cannot be read" sh -c "kubectl -n '$ns' get bc unreadable -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}' | grep -q 'missing field .storage.'"
	check "nothing was created for it" gone "$ns" statefulset unreadable

	# Leader election: a second replica waits; when the leader goes, it takes over.
	check "the chart scales the operator to two replicas" quietly helm upgrade "$OPERATOR_RELEASE" "$E2E_DIR/../charts/tokafka-operator" \
		-n "$OPERATOR_NS" --reuse-values --set replicaCount=2 --wait --timeout 120s
	eventually 60 "two operator pods run" prints 2 count_lines operator_pods
	leader="$(lease_holder)"
	local standby
	standby="$(operator_pods | grep -vx "$leader" | head -1)"
	check "the standby replica is not leading" test "$(operator_metric "$standby" tokafka_operator_leader)" = 0
	check "the leader pod is deleted" quietly kubectl -n "$OPERATOR_NS" delete pod "$leader" --wait=false
	# The standby or the Deployment's replacement pod, whichever asks first.
	eventually 60 "another running replica takes the Lease" new_lease_holder "$leader"
	eventually 30 "exactly one replica reports itself leader" one_leader
	local node
	node="$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')"
	check "the node is labelled with zone e2e-zone-a" quietly kubectl label node "$node" topology.kubernetes.io/zone=e2e-zone-a --overwrite
	check "a rack-aware BrokerCluster that keeps its claims is applied" quietly kubectl -n "$ns" apply -f - \
		< <(broker_cluster keep 1 $'  podTemplate:\n    rackLabel: topology.kubernetes.io/zone')
	eventually 120 "the new leader reconciles it to Ready" bc_ready "$ns" keep
	check "its broker's rack is the node's zone" prints e2e-zone-a broker_rack "$ns" keep 0
	quietly kubectl label node "$node" topology.kubernetes.io/zone-

	# Deletion: owned objects go; claims only by policy.
	check "BrokerCluster demo is deleted" quietly kubectl -n "$ns" delete bc demo --wait=false
	check "BrokerCluster keep is deleted" quietly kubectl -n "$ns" delete bc keep --wait=false
	eventually 60 "demo is gone (the finalizer ran)" gone "$ns" bc demo
	for kind in statefulset/demo service/demo service/demo-brokers configmap/demo-config poddisruptionbudget/demo; do
		eventually 60 "$kind is deleted with the cluster" gone "$ns" "${kind%/*}" "${kind#*/}"
	done
	eventually 120 "demo's broker pods are gone" prints "" kubectl -n "$ns" get pods -l tokafka.io/cluster=demo -o name
	eventually 120 "demo's volume claims are deleted (deleteClaimsOnDelete)" prints "" kubectl -n "$ns" get pvc -l tokafka.io/cluster=demo -o name
	eventually 120 "keep's broker pod is gone" pod_gone "$ns" keep-0
	check "keep's volume claim is kept (deleteClaimsOnDelete false)" quietly kubectl -n "$ns" get pvc data-keep-0
}
