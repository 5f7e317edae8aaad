# shellcheck shell=bash
# Shared settings and helpers of the local control plane scripts (sourced, not run).
# Everything version-like lives here, so one edit moves the whole local cluster.

E2E_LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
E2E_DIR="$(dirname "$E2E_LOCAL_DIR")"
REPO_DIR="$(dirname "$E2E_DIR")"

# Pinned tool versions. The Kubernetes version must match tools/k8s/go.mod
# (checked by build-tools) and the k8s-openapi feature in the root Cargo.toml (v1_37).
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16 # must match tools/etcd/go.mod
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0

TOOLS_CACHE="${TOKAFKA_TOOLS_CACHE:-$HOME/.cache/tokafka-tools}"
# Where a running local cluster keeps its state (certs, etcd data, logs, pids).
LOCAL_STATE_DIR="${TOKAFKA_LOCAL_DIR:-${TMPDIR:-/tmp}/tokafka-local}"

# Loopback ports of the control plane; override when they collide with something.
ETCD_CLIENT_PORT="${TOKAFKA_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${TOKAFKA_ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${TOKAFKA_APISERVER_PORT:-16443}"
KCM_PORT="${TOKAFKA_KCM_PORT:-10357}"
KUBELET_PORT="${TOKAFKA_KUBELET_PORT:-10350}"
NODE_NAME="${TOKAFKA_NODE_NAME:-tokafka-local-node}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	printf 'error: %s\n' "$1" >&2
	shift
	for hint in "$@"; do printf '  hint: %s\n' "$hint" >&2; done
	exit 1
}

# require_cmd CMD HINT: fail with a fix-it hint when a toolchain command is missing.
require_cmd() {
	command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed or not on PATH" "$2"
}

require_toolchains() {
	require_cmd go "install Go 1.26 or newer (https://go.dev/doc/install) and put it on PATH"
	require_cmd cargo "install Rust with rustup (https://rustup.rs) and put ~/.cargo/bin on PATH"
	local gov
	gov="$(go env GOVERSION)"
	case "$gov" in
	go1.2[6-9]* | go1.[3-9][0-9]*) ;;
	*) die "Go $gov is too old: Kubernetes $K8S_VERSION needs Go 1.26 or newer" "install a newer Go, or export GOTOOLCHAIN=go1.26.8 to let the go command fetch one" ;;
	esac
}

# ensure_apt_packages CMD:PKG...: install the Debian packages whose commands are missing.
ensure_apt_packages() {
	local missing=() pair
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	command -v apt-get >/dev/null 2>&1 || die "missing packages: ${missing[*]}" "install them with your package manager"
	[ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]}" "run: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
	log "installing Debian packages: ${missing[*]}"
	apt-get update -qq >/dev/null || die "apt-get update failed" "check the network access to the Debian mirror"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
		die "apt-get install ${missing[*]} failed" "run it by hand to see why"
}

# Hash of the files that define a build, so an edit of the wrapper module rebuilds it.
source_hash() { cat "$@" | sha256sum | cut -c1-12; }

k8s_bin_dir() { echo "$TOOLS_CACHE/k8s-$K8S_VERSION-$(source_hash "$E2E_LOCAL_DIR"/tools/k8s/{go.mod,go.sum,main.go})/bin"; }
etcd_bin_dir() { echo "$TOOLS_CACHE/etcd-$ETCD_VERSION-$(source_hash "$E2E_LOCAL_DIR"/tools/etcd/{go.mod,go.sum,main.go})/bin"; }
helm_bin_dir() { echo "$TOOLS_CACHE/helm-$HELM_VERSION/bin"; }
kubeconform_bin_dir() { echo "$TOOLS_CACHE/kubeconform-$KUBECONFORM_VERSION/bin"; }

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until SECONDS DESCRIPTION CMD...: poll CMD every 0.5 s until it succeeds or the deadline passes.
wait_until() {
	local timeout="$1" what="$2"
	shift 2
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.5
	done
}

# install_operator TAG: helm-install the operator chart (charts/tokafka-operator, or
# $TOKAFKA_OPERATOR_CHART) with images of TAG into namespace tokafka-system, waiting for it.
# Returns 2 when there is no chart yet.
install_operator() {
	local tag="$1" chart="${TOKAFKA_OPERATOR_CHART:-$REPO_DIR/charts/tokafka-operator}"
	[ -f "$chart/Chart.yaml" ] || return 2
	log "installing the operator with helm from $chart (image tag $tag)"
	helm upgrade --install tokafka-operator "$chart" --namespace tokafka-system --create-namespace \
		--set image.tag="$tag" --set image.pullPolicy=IfNotPresent --wait --timeout 180s >&2 ||
		die "helm could not install the operator" \
			"inspect with: kubectl -n tokafka-system get pods; kubectl -n tokafka-system describe pods" \
			"the chart must accept image.tag and image.pullPolicy values"
}
