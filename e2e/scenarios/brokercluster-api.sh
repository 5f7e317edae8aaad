# shellcheck shell=bash
# The BrokerCluster API on a real API server: the generated CRD installs, a valid cluster is
# accepted and listed with its short name, invalid specs are refused with the schema's
# messages (unknown and operator-owned config keys too), a storage size cannot shrink, and `kubectl scale bc` changes spec.replicas (and
# cannot take it below 1).

# brokercluster NAME REPLICAS SIZE [EXTRA_SPEC_YAML]: a BrokerCluster manifest.
brokercluster() {
	cat <<-YAML
		apiVersion: tokafka.io/v1alpha1
		kind: BrokerCluster
		metadata:
		  name: $1
		spec:
		  replicas: $2
		  image: tokafka/broker:dev
		  storage:
		    size: $3
	YAML
	[ -z "${4:-}" ] || printf '%s\n' "$4"
}

# refused NS MESSAGE: applying the manifest on stdin fails with MESSAGE in the answer.
refused() {
	local out
	if out="$(kubectl -n "$1" apply -f - 2>&1)"; then
		echo "accepted: $out" >&2
		return 1
	fi
	grep -qF "$2" <<<"$out" || { echo "$out" >&2; return 1; }
}

bc_field() { kubectl -n "$1" get bc "$2" -o jsonpath="{$3}" 2>/dev/null; }

scenario_brokercluster_api() {
	local ns crd="$E2E_DIR/../crds/brokercluster.yaml"
	check "the generated BrokerCluster CRD is applied" quietly kubectl apply --server-side -f "$crd"
	eventually 30 "the CRD is established" kubectl wait --for condition=established --timeout=1s crd/brokerclusters.tokafka.io || return
	if ! ns="$(e2e_namespace bcapi)"; then
		fail "a test namespace is created"
		return
	fi
	E2E_NAMESPACES+=("$ns")
	check "a valid BrokerCluster is accepted" quietly kubectl -n "$ns" apply -f - < <(brokercluster good 3 1Gi)
	check "kubectl get bc lists it" test "$(kubectl -n "$ns" get bc -o name)" = brokercluster.tokafka.io/good
	check "zero replicas are refused" refused "$ns" "spec.replicas" < <(brokercluster zero 0 1Gi)
	check "a replication factor above replicas is refused" refused "$ns" "defaultReplicationFactor must not exceed replicas" \
		< <(brokercluster wide 1 1Gi "  defaultReplicationFactor: 3")
	check "min.insync.replicas above the replication factor is refused" refused "$ns" "minInsyncReplicas must not exceed the replication factor" \
		< <(brokercluster strict 3 1Gi "  minInsyncReplicas: 4")
	check "clashing listener ports are refused" refused "$ns" "listener ports must be distinct" \
		< <(brokercluster ports 3 1Gi $'  listeners:\n    kafka: 9092\n    controller: 9092\n    http: 9644')
	check "a storage size that is not a quantity is refused" refused "$ns" "size must be a quantity" < <(brokercluster junk 3 lots)
	check "a storage size cannot shrink" refused "$ns" "storage size cannot shrink" < <(brokercluster good 3 512Mi)
	check "a storage size may grow" quietly kubectl -n "$ns" apply -f - < <(brokercluster good 3 2Gi)
	check "kubectl scale bc changes spec.replicas" quietly kubectl -n "$ns" scale bc good --replicas=5
	check "spec.replicas is 5 after the scale" test "$(bc_field "$ns" good .spec.replicas)" = 5
	check "scaling to 0 is refused" sh -c "! kubectl -n '$ns' scale bc good --replicas=0 >/dev/null 2>&1"
	check "spec.replicas is still 5" test "$(bc_field "$ns" good .spec.replicas)" = 5
	check "an unknown config key is refused by name" refused "$ns" "config key num.partitionz is not a broker key" \
		< <(brokercluster typo 3 1Gi $'  config:\n    num.partitionz: "3"')
	check "a config key the operator sets is refused" refused "$ns" "config key node.id is not a broker key, or is one the operator sets itself" \
		< <(brokercluster owned 3 1Gi $'  config:\n    node.id: "7"')
	check "a rack label other than the topology labels is refused" refused "$ns" "rackLabel must be topology.kubernetes.io/zone or topology.kubernetes.io/region" \
		< <(brokercluster rack 3 1Gi $'  podTemplate:\n    rackLabel: example.com/rack')
	check "nothing invalid was stored" test "$(kubectl -n "$ns" get bc -o name | wc -l)" = 1
	# Its image is not a broker: do not leave an operator (if one runs) starting its pods.
	kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1
}
