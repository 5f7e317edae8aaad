//! Writes the BrokerCluster CustomResourceDefinition (YAML) to stdout, or to the file given
//! as the only argument: `cargo run -p tokafka-operator --bin crdgen -- crds/brokercluster.yaml`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match tokafka_operator::crd_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("crdgen: cannot render the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::env::args().nth(1) {
        Some(path) => match std::fs::write(&path, yaml) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crdgen: cannot write {path}: {e}");
                ExitCode::FAILURE
            }
        },
        None => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
    }
}
