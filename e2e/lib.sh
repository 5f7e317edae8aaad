# shellcheck shell=bash
# Helpers of the e2e scenarios (sourced). Scenarios talk to whatever cluster KUBECONFIG
# names: a kind cluster (e2e/kind/up) or the local control plane (e2e/local/up).
# Every wait is a poll with a deadline; nothing sleeps in place of a condition.

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
E2E_PASSED=0
E2E_FAILED=0

pass() {
	E2E_PASSED=$((E2E_PASSED + 1))
	printf 'PASS: %s\n' "$*"
}
fail() {
	E2E_FAILED=$((E2E_FAILED + 1))
	printf 'FAIL: %s\n' "$*"
}

# check DESCRIPTION CMD...: one check, counted.
check() {
	local what="$1"
	shift
	if "$@"; then pass "$what"; else fail "$what"; fi
}

# eventually SECONDS DESCRIPTION CMD...: poll CMD every 0.5 s until it succeeds (pass) or the
# deadline passes (fail). Returns CMD's last status.
eventually() {
	local timeout="$1" what="$2"
	shift 2
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			fail "$what (not within ${timeout}s)"
			return 1
		fi
		sleep 0.5
	done
	pass "$what"
}

# prints EXPECTED CMD...: CMD succeeds and prints exactly EXPECTED. Conditions polled by
# `eventually` must run their command on every poll, which "$(...)" in its arguments would
# not: it is expanded once, before the first poll.
prints() {
	local expected="$1" out
	shift
	out="$("$@" 2>/dev/null)" || return 1
	[ "$out" = "$expected" ]
}

# quietly CMD...: CMD without its output (for checks whose output is noise).
quietly() { "$@" >/dev/null 2>&1; }

# summary: the closing line CI reads; true when nothing failed.
summary() {
	printf '%s passed, %s failed\n' "$E2E_PASSED" "$E2E_FAILED"
	[ "$E2E_FAILED" -eq 0 ]
}

# e2e_namespace NAME: a fresh namespace whose default service account exists (pods need it).
e2e_namespace() {
	local ns="e2e-$1-$RANDOM"
	kubectl create namespace "$ns" >/dev/null || return 1
	local deadline=$((SECONDS + 60))
	until kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.5
	done
	echo "$ns"
}

# pod_ready NS POD: the pod exists and its Ready condition is True.
pod_ready() {
	[ "$(kubectl -n "$1" get pod "$2" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

pod_gone() { ! kubectl -n "$1" get pod "$2" >/dev/null 2>&1; }
pod_uid() { kubectl -n "$1" get pod "$2" -o jsonpath='{.metadata.uid}' 2>/dev/null; }
pod_ip() { kubectl -n "$1" get pod "$2" -o jsonpath='{.status.podIP}' 2>/dev/null; }

# statefulset_ready NS NAME REPLICAS: that many replicas ready.
statefulset_ready() {
	[ "$(kubectl -n "$1" get statefulset "$2" -o jsonpath='{.status.readyReplicas}' 2>/dev/null)" = "$3" ]
}

# pod_http NS POD PORT PATH: GET from a pod's port, printing the body. Pod addresses are
# reachable from the test host on the local node (loopback); on kind it goes through
# `kubectl port-forward`.
pod_http() {
	local ns="$1" pod="$2" port="$3" path="$4" ip
	ip="$(pod_ip "$ns" "$pod")"
	if [ -n "$ip" ] && curl -fsS --connect-timeout 2 --max-time 5 "http://$ip:$port$path" 2>/dev/null; then
		return 0
	fi
	local local_port=$((20000 + RANDOM % 20000)) pf status=1
	kubectl -n "$ns" port-forward "pod/$pod" "$local_port:$port" >/dev/null 2>&1 &
	pf=$!
	local deadline=$((SECONDS + 10))
	while [ "$SECONDS" -lt "$deadline" ]; do
		if curl -fsS --max-time 5 "http://127.0.0.1:$local_port$path" 2>/dev/null; then
			status=0
			break
		fi
		sleep 0.3
	done
	kill "$pf" 2>/dev/null
	wait "$pf" 2>/dev/null
	return $status
}
