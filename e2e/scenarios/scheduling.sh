# shellcheck shell=bash
# Scheduling as on a one-node cluster: required pod anti-affinity lets only one of two pods
# run (the other is Unschedulable until the first goes), and a node selector that the node
# does not satisfy leaves a pod Pending. The operator's placement rules must cope with this.

unschedulable() { # NS POD
	[ "$(kubectl -n "$1" get pod "$2" -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}' 2>/dev/null)" = Unschedulable ]
}
running() { [ "$(kubectl -n "$1" get pod "$2" -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ]; }

# one_running_one_unschedulable NS A B: exactly one of A and B runs, the other is unschedulable.
one_running_one_unschedulable() {
	{ running "$1" "$2" && unschedulable "$1" "$3"; } || { running "$1" "$3" && unschedulable "$1" "$2"; }
}

scenario_scheduling() {
	local ns first second
	if ! ns="$(e2e_namespace sched)"; then
		fail "a test namespace with a default service account is created"
		return
	fi
	E2E_NAMESPACES+=("$ns")
	check "the pods are created" quietly kubectl -n "$ns" apply -f "$E2E_DIR/manifests/scheduling.yaml"
	eventually 60 "of two anti-affine pods one runs and one is Unschedulable" one_running_one_unschedulable "$ns" solo-a solo-b || return
	eventually 30 "a pod whose node selector no node satisfies is Unschedulable" unschedulable "$ns" needs-ssd
	if running "$ns" solo-a; then first=solo-a second=solo-b; else first=solo-b second=solo-a; fi
	check "the running anti-affine pod is deleted" quietly kubectl -n "$ns" delete pod "$first" --wait=false
	eventually 60 "the other anti-affine pod is scheduled and runs once the first is gone" running "$ns" "$second"
}
