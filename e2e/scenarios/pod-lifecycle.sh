# shellcheck shell=bash
# Pod lifecycle as the kubelet does it: init containers run first and share an emptyDir,
# deletion sends SIGTERM and waits for the process (up to the grace period, then kills),
# a failing liveness probe restarts the container, and a pod reaches the API with its
# service account's token and RBAC, and ends Succeeded; a Job runs to completion and its
# output is read back with kubectl logs (how scenarios run clients inside the cluster); a pod
# runs as its security context's user and groups and can write to its volume.

phase_is() { [ "$(kubectl -n "$1" get pod "$2" -o jsonpath='{.status.phase}' 2>/dev/null)" = "$3" ]; }
job_complete() { [ "$(kubectl -n "$1" get job "$2" -o jsonpath='{.status.succeeded}' 2>/dev/null)" = 1 ]; }
job_logs_contain() { kubectl -n "$1" logs "job/$2" 2>/dev/null | grep -qF "$3"; }
logs_match() { kubectl -n "$1" logs "$2" 2>/dev/null | grep -qxF "$3"; }
restarted() { [ "$(kubectl -n "$1" get pod "$2" -o jsonpath='{.status.containerStatuses[0].restartCount}' 2>/dev/null)" -ge 1 ] 2>/dev/null; }

# deletion_takes NS POD MIN MAX: deleting POD takes at least MIN and at most MAX seconds.
deletion_takes() {
	local start=$SECONDS
	kubectl -n "$1" delete pod "$2" --wait=false >/dev/null || return 1
	while ! pod_gone "$1" "$2"; do
		[ $((SECONDS - start)) -le "$4" ] || return 1
		sleep 0.2
	done
	local took=$((SECONDS - start))
	echo "  deleting $2 took ${took}s (expected ${3}-${4}s)"
	[ "$took" -ge "$3" ]
}

scenario_pod_lifecycle() {
	local ns
	if ! ns="$(e2e_namespace life)"; then
		fail "a test namespace with a default service account is created"
		return
	fi
	E2E_NAMESPACES+=("$ns")
	check "the pods are created" quietly kubectl -n "$ns" apply -f "$E2E_DIR/manifests/pod-lifecycle.yaml"
	eventually 120 "a pod whose init container prepared its emptyDir runs" phase_is "$ns" graceful Running
	eventually 120 "a pod that ignores SIGTERM runs" phase_is "$ns" stubborn Running
	eventually 120 "a pod reads the API with its service account token and succeeds" phase_is "$ns" api-reader Succeeded
	eventually 60 "a failing liveness probe restarts the container" restarted "$ns" unhealthy
	eventually 60 "a Job runs to completion" job_complete "$ns" client
	check "the Job's output is read with kubectl logs" job_logs_contain "$ns" client "client ran in $ns"
	eventually 60 "a pod with a security context runs to completion" phase_is "$ns" non-root Succeeded
	check "it runs as its runAsUser and runAsGroup with its fsGroup" logs_match "$ns" non-root "uid=1000 gid=3000 groups=3000 2000"
	check "it can write to its volume" logs_match "$ns" non-root "scratch-writable"
	check "deletion waits for a process that handles SIGTERM (2 s)" deletion_takes "$ns" graceful 2 15
	check "deletion kills a process that ignores SIGTERM after its grace period (3 s)" deletion_takes "$ns" stubborn 3 20
}
