# shellcheck shell=bash
# A StatefulSet of 3 pods with a volume each becomes Ready; a deleted pod comes back under
# the same name with its volume's data. Exercises what the operator's brokers rely on:
# scheduling, volume claims, env from field and ConfigMap references, ConfigMap volumes,
# stable hostnames, readiness probes and graceful deletion; a scale-down keeps the removed
# pod's claim, and deleting the claim deletes its volume.

whoami_has() { # NS POD LINE
	pod_http "$1" "$2" 8080 /whoami | grep -qxF "$3"
}

logs_contain() { # NS POD TEXT
	kubectl -n "$1" logs "$2" 2>/dev/null | grep -qF "$3"
}

volume_gone() { [ -n "$1" ] && ! kubectl get pv "$1" >/dev/null 2>&1; }

replaced_and_ready() { # NS POD OLD_UID
	local uid
	uid="$(pod_uid "$1" "$2")"
	[ -n "$uid" ] && [ "$uid" != "$3" ] && pod_ready "$1" "$2"
}

scenario_statefulset_volumes() {
	local ns token old_uid i
	if ! ns="$(e2e_namespace sts)"; then
		fail "a test namespace with a default service account is created"
		return
	fi
	E2E_NAMESPACES+=("$ns")
	check "the StatefulSet manifest is applied" quietly kubectl -n "$ns" apply -f "$E2E_DIR/manifests/smoke-statefulset.yaml"
	eventually 180 "3 pods of the StatefulSet are Ready" statefulset_ready "$ns" web 3 || return
	for i in 0 1 2; do
		check "web-$i has its own hostname" whoami_has "$ns" "web-$i" "hostname=web-$i"
	done
	check "env from a configMapKeyRef reaches the process" whoami_has "$ns" web-0 "greeting=hello from a configmap"
	check "a ConfigMap volume is mounted" whoami_has "$ns" web-0 "config=mode = smoke"
	eventually 30 "kubectl logs shows the program's output" logs_contain "$ns" web-2 "testapp listening on"

	token="token-$RANDOM$RANDOM"
	check "web-1 writes a token into its volume" quietly pod_http "$ns" web-1 8080 "/write/$token"
	old_uid="$(pod_uid "$ns" web-1)"
	check "web-1 is deleted" quietly kubectl -n "$ns" delete pod web-1 --wait=false
	eventually 120 "web-1 is recreated (new uid) and Ready" replaced_and_ready "$ns" web-1 "$old_uid" || return
	check "the recreated web-1 reads the token from its volume" test "$(pod_http "$ns" web-1 8080 /read)" = "$token"
	check "the recreated web-1 booted a second time on the same volume" whoami_has "$ns" web-1 "boots=2"
	check "the other pods kept running" test "$(kubectl -n "$ns" get pod web-0 -o jsonpath='{.status.containerStatuses[0].restartCount}')" = 0

	local volume
	volume="$(kubectl -n "$ns" get pvc data-web-2 -o jsonpath='{.spec.volumeName}')"
	check "the StatefulSet is scaled to 2" quietly kubectl -n "$ns" scale statefulset web --replicas 2
	eventually 60 "web-2 goes away" pod_gone "$ns" web-2
	check "its claim is kept after the pod is gone" quietly kubectl -n "$ns" get pvc data-web-2
	check "the claim of the removed pod is deleted" quietly kubectl -n "$ns" delete pvc data-web-2 --wait=false
	eventually 60 "its volume is released and deleted" volume_gone "$volume"
}
