//! The `tokafka-broker` binary.

fn main() {
    eprintln!("tokafka-broker: the Kafka protocol server is not built yet; see the README");
    std::process::exit(2);
}
