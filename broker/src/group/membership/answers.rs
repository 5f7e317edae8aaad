//! What the state machine and the coordinator exchange: the JoinGroup request as the state
//! machine needs it, the answers to JoinGroup and SyncGroup, and the [`Effect`]s that carry
//! answers to requests parked earlier. Plain data; an error is a `ResponseError` (`None`:
//! success), turned into a code only where a response is written.

use bytes::Bytes;
use kafka_protocol::ResponseError;

/// A JoinGroup request as the state machine needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id first gets one with MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
    /// JoinGroup v9+ (KIP-814): the member understands `skip_assignment`.
    pub supports_skip_assignment: bool,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    /// `None` when the join succeeded.
    pub error: Option<ResponseError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only for the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// The leader must not compute an assignment: the group keeps its current one (a static
    /// leader that restarted into a stable group, KIP-814).
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(error: ResponseError, member_id: &str) -> Self {
        Self {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    /// `None` when the sync succeeded.
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ResponseError) -> Self {
        Self {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer ready for a waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Join {
        member_id: String,
        result: JoinResult,
    },
    Sync {
        member_id: String,
        result: SyncResult,
    },
}

/// What happened to a JoinGroup: answered now, or parked until the rebalance completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Answer now (an error, MEMBER_ID_REQUIRED, or the current generation).
    Immediate(JoinResult),
    /// Wait for an [`Effect::Join`] for this member id.
    Pending { member_id: String },
}

/// What happened to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    Immediate(SyncResult),
    Pending,
}
