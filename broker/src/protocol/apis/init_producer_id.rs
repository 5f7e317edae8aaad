//! InitProducerId for idempotent producers: a fresh producer id, or the next epoch of the
//! producer id the client already holds (KIP-360). Transactions are not supported yet.
//!
//! Invariant: no two producers get the same id, across the brokers of a cluster and their
//! restarts (ids come from blocks the controller quorum hands out).

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;
use tracing::warn;

use crate::broker::Broker;
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;

pub async fn handle(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: InitProducerIdRequest = frame.decode()?;
    let mut response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        response.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
    } else if request.producer_id.0 >= 0
        && request.producer_epoch >= 0
        && request.producer_epoch < i16::MAX - 1
    {
        response.producer_id = request.producer_id;
        response.producer_epoch = request.producer_epoch + 1;
    } else {
        // The quorum hands out blocks, so that ids are unique across brokers.
        match broker.cluster.allocate_producer_id().await {
            Ok(id) => {
                response.producer_id = ProducerId(id);
                response.producer_epoch = 0;
            }
            Err(e) => {
                warn!(error = %e, "cannot allocate a producer id");
                response.error_code = ResponseError::CoordinatorNotAvailable.code();
            }
        }
    }
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}
