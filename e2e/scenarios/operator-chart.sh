# shellcheck shell=bash
# The operator's Helm chart, checked against the running API server without installing it:
# it lints strictly; it renders manifests (with its CRD) that the schemas of this cluster's
# Kubernetes version accept, with the defaults and with one namespace, two replicas and no
# leader election; the operator gets exactly its flag contract; the RBAC has no wildcards;
# values.schema.json refuses bad values with a message naming them; and the example
# BrokerCluster is valid for the CRD and accepted by the API server (dry run).
# Needs helm and kubeconform (taken from the tools cache, built there when missing) and
# python3 (e2e/local/kubeconform-schemas).

# shellcheck source=/dev/null
declare -F helm_bin_dir >/dev/null || source "$E2E_DIR/local/lib.sh"

CHART_DIR="$E2E_DIR/../charts/tokafka-operator"
CHART_RELEASE=tokafka-operator
CHART_EXAMPLE="$E2E_DIR/../crds/examples/brokercluster-3.yaml"

# chart_tools: helm and kubeconform on PATH, the pinned builds preferred, built when missing.
chart_tools() {
	local tool dir
	for tool in helm kubeconform; do
		dir="$("${tool}_bin_dir")"
		if [ ! -x "$dir/$tool" ] && ! command -v "$tool" >/dev/null 2>&1; then
			"$E2E_LOCAL_DIR/build-tools" "$tool" >&2 || return 1
		fi
		[ -x "$dir/$tool" ] && PATH="$dir:$PATH"
	done
	export PATH
}

# chart_render HELM_ARGS...: the chart's manifests, as installed into tokafka-system.
chart_render() {
	helm template "$CHART_RELEASE" "$CHART_DIR" --namespace tokafka-system "$@"
}

# chart_explained CMD...: CMD, showing its output only when it fails.
chart_explained() {
	local out
	out="$("$@" 2>&1)" || {
		printf '%s\n' "$out" >&2
		return 1
	}
}

# chart_conforms SCHEMAS HELM_ARGS...: the rendering and the CRD pass kubeconform -strict.
chart_conforms() {
	local schemas="$1"
	shift
	chart_render --include-crds "$@" | kubeconform -strict -summary -schema-location "$schemas" -
}

# chart_field TEMPLATE JSONPATH HELM_ARGS...: JSONPATH of the one object TEMPLATE renders.
chart_field() {
	local template="$1" path="$2"
	shift 2
	chart_render --show-only "templates/$template" "$@" | kubectl create --dry-run=client -f - -o jsonpath="$path"
}

operator_args() { chart_field deployment.yaml '{range .spec.template.spec.containers[0].args[*]}{@}{"\n"}{end}' "$@"; }

# chart_args_are EXPECTED HELM_ARGS...: the operator's args, one a line, are EXPECTED.
chart_args_are() {
	local expected="$1" actual
	shift
	actual="$(operator_args "$@")" || return 1
	[ "$actual" = "$expected" ] || {
		diff <(printf '%s\n' "$expected") <(printf '%s\n' "$actual") >&2
		return 1
	}
}

# chart_no_wildcards TEMPLATE: the role TEMPLATE renders names no "*" group, resource or verb.
chart_no_wildcards() {
	local words
	words="$(chart_field "$1" '{range .rules[*]}{.apiGroups[*]} {.resources[*]} {.verbs[*]}{"\n"}{end}')" || return 1
	[ -n "$words" ] || return 1
	! tr ' ' '\n' <<<"$words" | grep -qxF '*'
}

# chart_refused MESSAGE HELM_ARGS...: rendering fails on the values schema, naming MESSAGE.
chart_refused() {
	local message="$1" out
	shift
	if out="$(chart_render "$@" 2>&1)"; then
		echo "accepted: helm template $*" >&2
		return 1
	fi
	if ! grep -qF "values don't meet the specifications of the schema" <<<"$out" || ! grep -qF "$message" <<<"$out"; then
		echo "$out" >&2
		return 1
	fi
}

# chart_renders_no KIND HELM_ARGS...: the rendering has no object of KIND.
chart_renders_no() {
	local kind="$1" out
	shift
	out="$(chart_render "$@")" || return 1
	! grep -qx "kind: $kind" <<<"$out"
}

scenario_operator_chart() {
	local schemas crd="$E2E_DIR/../crds/brokercluster.yaml"
	check "helm and kubeconform are available" chart_tools || return
	check "the chart's CRD is crds/brokercluster.yaml" cmp -s "$crd" "$CHART_DIR/crds/brokercluster.yaml"
	check "helm lint --strict passes" chart_explained helm lint --strict "$CHART_DIR"

	# The CRD must be installed before the schemas are written, for the BrokerCluster schema.
	check "the BrokerCluster CRD is applied" quietly kubectl apply --server-side -f "$crd"
	eventually 30 "the CRD is established" kubectl wait --for condition=established --timeout=1s crd/brokerclusters.tokafka.io || return
	if schemas="$("$E2E_LOCAL_DIR/kubeconform-schemas")"; then
		pass "kubeconform schemas are written from the cluster's OpenAPI"
	else
		fail "kubeconform schemas are written from the cluster's OpenAPI"
		return
	fi
	check "the default rendering conforms to the cluster's schemas" chart_explained chart_conforms "$schemas"
	check "one namespace, two replicas, no leader election: the rendering conforms" \
		chart_explained chart_conforms "$schemas" --set watchNamespace=x --set leaderElection.enabled=false --set replicaCount=2

	# The operator's flag contract; $(VAR) is Kubernetes' expansion from the pod's env.
	# shellcheck disable=SC2016
	local contract=('--metrics-listen=$(POD_IP):8080' '--lease-namespace=$(POD_NAMESPACE)'
		"--lease-name=$CHART_RELEASE" '--identity=$(POD_NAME)')
	check "by default the operator gets the listen, lease, identity and log flags" chart_args_are \
		"$(printf '%s\n' "${contract[@]}" --log-format=json)"
	check "watchNamespace and leaderElection.enabled=false become flags" chart_args_are \
		"$(printf '%s\n' "${contract[@]}" --log-format=text --watch-namespace=x --leader-election=false)" \
		--set watchNamespace=x --set leaderElection.enabled=false --set logFormat=text
	check "the operator's environment is POD_NAME, POD_NAMESPACE, POD_IP and RUST_LOG" test \
		"$(chart_field deployment.yaml '{.spec.template.spec.containers[0].env[*].name}')" = "POD_NAME POD_NAMESPACE POD_IP RUST_LOG"
	check "the ClusterRole has no wildcard" chart_no_wildcards clusterrole.yaml
	check "the leader-election Role has no wildcard" chart_no_wildcards role.yaml
	check "without leader election there is no Lease Role" chart_renders_no Role --set leaderElection.enabled=false

	check "replicaCount=0 is refused by the values schema" chart_refused "/replicaCount" --set replicaCount=0
	check "image.pullPolicy=Sometimes is refused by the values schema" chart_refused "/image/pullPolicy" --set image.pullPolicy=Sometimes
	check "an unknown value is refused by the values schema" chart_refused "'replicas' not allowed" --set replicas=3

	check "the example BrokerCluster conforms to the CRD's schema" \
		chart_explained kubeconform -strict -summary -schema-location "$schemas" "$CHART_EXAMPLE"
	check "the API server accepts the example BrokerCluster (dry run)" \
		chart_explained kubectl apply --dry-run=server -f "$CHART_EXAMPLE"
}
