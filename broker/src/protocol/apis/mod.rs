//! One module per Kafka API (or family of admin APIs). Each handler decodes its request,
//! acts on the broker state, and returns the response to encode.

pub mod admin;
pub mod api_versions;
pub mod configs;
pub mod fetch;
pub mod groups;
pub mod init_producer_id;
pub mod leader_epochs;
pub mod list_offsets;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod reassignments;
pub mod sasl;
pub mod scram_credentials;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

/// A protocol string from a Rust one.
pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}
