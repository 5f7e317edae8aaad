//! `crds/brokercluster.yaml` must be what `crdgen` writes for the current API types.

#[test]
fn the_checked_in_crd_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/brokercluster.yaml");
    let on_disk = std::fs::read_to_string(path).expect("crds/brokercluster.yaml");
    let generated = tokafka_operator::crd_yaml().expect("render");
    assert!(
        on_disk == generated,
        "crds/brokercluster.yaml is stale: run `cargo run -p tokafka-operator --bin crdgen -- crds/brokercluster.yaml`"
    );
}
