//! `crds/brokercluster.yaml`, and the Helm chart's copy of it, must be what `crdgen` writes
//! for the current API types.

const REGENERATE: &str = "run `cargo run -p tokafka-operator --bin crdgen -- crds/brokercluster.yaml && cp crds/brokercluster.yaml charts/tokafka-operator/crds/`";

fn assert_current(relative: &str) {
    let path = format!("{}/../{relative}", env!("CARGO_MANIFEST_DIR"));
    let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let generated = tokafka_operator::crd_yaml().expect("render");
    assert!(on_disk == generated, "{relative} is stale: {REGENERATE}");
}

#[test]
fn the_checked_in_crd_is_current() {
    assert_current("crds/brokercluster.yaml");
}

#[test]
fn the_charts_crd_is_current() {
    assert_current("charts/tokafka-operator/crds/brokercluster.yaml");
}
