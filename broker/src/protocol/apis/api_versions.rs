//! ApiVersions: the versions of every API this broker serves.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::versions::SUPPORTED;
use crate::protocol::RequestFrame;

/// The response body listing every supported API.
pub fn supported_versions() -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|&(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(api_keys)
}

pub fn handle(frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let _request: ApiVersionsRequest = frame.decode()?;
    Ok(Outcome::Respond(respond(
        frame,
        Answer::new(supported_versions()),
    )?))
}
