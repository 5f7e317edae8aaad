//! Consumer-group APIs of the classic protocol: FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, ListGroups, DescribeGroups, DeleteGroups.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use std::collections::BTreeMap;

use tracing::{debug, info, warn};

use super::str_bytes;
use crate::broker::Broker;
use crate::cluster::{spread_replicas, Refusal};
use crate::controller::metadata::{ClusterMetadata, NO_LEADER};
use crate::group::membership::JoinRequest;
use crate::group::offsets::{partition_for, OFFSETS_TOPIC};
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;
use crate::replica::TopicRef;

/// FindCoordinator key type of consumer groups.
const KEY_TYPE_GROUP: i8 = 0;

fn opt_str(s: Option<String>) -> Option<StrBytes> {
    s.map(|s| str_bytes(&s))
}

pub async fn find_coordinator(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: FindCoordinatorRequest = frame.decode()?;
    let keys: Vec<String> = if frame.version >= 4 {
        request
            .coordinator_keys
            .iter()
            .map(|k| k.as_str().to_string())
            .collect()
    } else {
        vec![request.key.as_str().to_string()]
    };
    let mut answers = Vec::with_capacity(keys.len());
    for key in &keys {
        let answer = if request.key_type != KEY_TYPE_GROUP {
            Err(Refusal::new(
                ResponseError::CoordinatorNotAvailable,
                "only group coordinators are served",
            ))
        } else {
            coordinator(broker, key, &frame.identity.listener).await
        };
        answers.push(answer);
    }
    let mut response = FindCoordinatorResponse::default();
    let unpack = |answer: &CoordinatorAnswer| match answer {
        Ok((node, host, port)) => (0, None, *node, str_bytes(host), *port),
        Err(refused) => (
            refused.code.code(),
            Some(str_bytes(&refused.message)),
            -1,
            StrBytes::default(),
            -1,
        ),
    };
    if frame.version >= 4 {
        response.coordinators = keys
            .iter()
            .zip(&answers)
            .map(|(key, answer)| {
                let (code, message, node, host, port) = unpack(answer);
                Coordinator::default()
                    .with_key(str_bytes(key))
                    .with_node_id(BrokerId(node))
                    .with_host(host)
                    .with_port(port)
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect();
    } else if let Some(answer) = answers.first() {
        let (code, message, node, host, port) = unpack(answer);
        response.error_code = code;
        if frame.version >= 1 {
            response.error_message = message;
        }
        response.node_id = BrokerId(node);
        response.host = host;
        response.port = port;
    }
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

/// A coordinator's (node id, host, port), or the error to answer.
type CoordinatorAnswer = Result<(i32, String, i32), Refusal>;

/// How long the first FindCoordinator waits for `__consumer_offsets` to be created and led.
const OFFSETS_TOPIC_CREATED_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The coordinator of `group`: the leader of its `__consumer_offsets` partition. The topic is
/// created through the controller on first use, and the answer waits (a few seconds at most)
/// until this broker has applied it with a leader for the group's partition, so that the
/// first consumer of a new cluster finds its coordinator at once (COORDINATOR_NOT_AVAILABLE,
/// which clients retry, when that takes longer).
async fn coordinator(broker: &Broker, group: &str, listener: &str) -> CoordinatorAnswer {
    let cluster = &broker.cluster;
    let mut metadata = cluster.metadata();
    let not_available =
        |why: String| Err(Refusal::new(ResponseError::CoordinatorNotAvailable, why));
    if !metadata.topics.contains_key(OFFSETS_TOPIC) {
        create_offsets_topic(broker, &metadata).await;
        let led = |m: &ClusterMetadata| {
            m.topics.get(OFFSETS_TOPIC).is_some_and(|t| {
                let count = i32::try_from(t.partitions.len()).unwrap_or(i32::MAX);
                m.partition(OFFSETS_TOPIC, partition_for(group, count))
                    .is_some_and(|p| p.leader != NO_LEADER)
            })
        };
        cluster
            .wait_for_metadata(OFFSETS_TOPIC_CREATED_WITHIN, led)
            .await;
        metadata = cluster.metadata();
    }
    let Some(topic) = metadata.topics.get(OFFSETS_TOPIC) else {
        return not_available(format!("{OFFSETS_TOPIC} is being created"));
    };
    let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
    let index = partition_for(group, count);
    let leader = metadata
        .partition(OFFSETS_TOPIC, index)
        .map_or(NO_LEADER, |p| p.leader);
    match metadata.brokers.get(&leader) {
        Some(b) => {
            let (host, port) = b.address_for(listener);
            Ok((b.id, host.to_string(), port))
        }
        None => not_available(format!("{OFFSETS_TOPIC}-{index} has no leader")),
    }
}

/// Creates `__consumer_offsets` through the controller: `offsets.topic.num.partitions`
/// partitions, compacted, with `offsets.topic.replication.factor` replicas or as many as
/// there are brokers. A failure (another broker created it first) is only logged.
async fn create_offsets_topic(broker: &Broker, metadata: &ClusterMetadata) {
    let cluster = &broker.cluster;
    let brokers = i16::try_from(metadata.placement_brokers().len()).unwrap_or(i16::MAX);
    let replication_factor = cluster.config.offsets_topic_replication_factor.min(brokers);
    let assignment = match spread_replicas(
        metadata,
        broker.config.offsets_topic_partitions,
        replication_factor,
    ) {
        Ok(assignment) => assignment,
        Err(refused) => {
            warn!(error = %refused, "cannot place {OFFSETS_TOPIC} yet");
            return;
        }
    };
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert(
        "segment.bytes".to_string(),
        broker.config.offsets_topic_segment_bytes.to_string(),
    );
    match cluster
        .create_topic(OFFSETS_TOPIC, assignment, configs)
        .await
    {
        Ok(_) => info!(replication_factor, "created {OFFSETS_TOPIC}"),
        Err(refused) => debug!(error = %refused, "{OFFSETS_TOPIC} not created here"),
    }
}

/// Why this broker cannot serve `group` now: NOT_COORDINATOR when it does not lead the
/// group's offsets partition, COORDINATOR_LOAD_IN_PROGRESS while it loads it.
pub fn coordinator_error(broker: &Broker, group: &str) -> Option<ResponseError> {
    let offsets = &broker.groups.offsets;
    let index = partition_for(group, offsets.partition_count());
    if offsets.is_loaded(index) {
        return None;
    }
    let leading = broker
        .replicas
        .partition(TopicRef::Name(OFFSETS_TOPIC), index)
        .is_some_and(|p| p.is_leader());
    Some(if leading {
        ResponseError::CoordinatorLoadInProgress
    } else {
        ResponseError::NotCoordinator
    })
}

pub async fn join_group(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: JoinGroupRequest = frame.decode()?;
    let v = frame.version;
    let group_id = request.group_id.0.as_str().to_string();
    let mut response = JoinGroupResponse::default().with_generation_id(-1);
    if group_id.is_empty() {
        response.error_code = ResponseError::InvalidGroupId.code();
        return Ok(Outcome::Respond(respond(frame, Answer::new(response))?));
    }
    if let Some(error) = coordinator_error(broker, &group_id) {
        response.error_code = error.code();
        if v < 7 {
            response.protocol_name = Some(StrBytes::default());
        }
        return Ok(Outcome::Respond(respond(frame, Answer::new(response))?));
    }
    let join = JoinRequest {
        member_id: request.member_id.as_str().to_string(),
        instance_id: request
            .group_instance_id
            .as_ref()
            .map(|s| s.as_str().to_string()),
        client_id: frame
            .header
            .client_id
            .as_ref()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        client_host: frame.client_host.clone(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if v >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.as_str().to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: v >= 4,
        supports_skip_assignment: v >= 9,
    };
    let result = broker.groups.join(&group_id, join).await;
    response.error_code = result.error.map_or(0, |e| e.code());
    response.generation_id = result.generation_id;
    response.member_id = str_bytes(&result.member_id);
    if result.error.is_none() {
        response.leader = str_bytes(&result.leader);
        response.protocol_name = opt_str(result.protocol_name);
        if v >= 7 {
            response.protocol_type = opt_str(result.protocol_type);
        }
        if v >= 9 {
            response.skip_assignment = result.skip_assignment;
        }
        response.members = result
            .members
            .into_iter()
            .map(|(id, instance, metadata)| {
                JoinGroupResponseMember::default()
                    .with_member_id(str_bytes(&id))
                    .with_group_instance_id(if v >= 5 { opt_str(instance) } else { None })
                    .with_metadata(metadata)
            })
            .collect();
    } else if v < 7 {
        // Before v7 the protocol name is not nullable.
        response.protocol_name = Some(StrBytes::default());
    }
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

pub async fn sync_group(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: SyncGroupRequest = frame.decode()?;
    if let Some(error) = coordinator_error(broker, request.group_id.0.as_str()) {
        let mut response = SyncGroupResponse::default().with_error_code(error.code());
        if frame.version >= 5 {
            response.protocol_type = None;
            response.protocol_name = None;
        }
        return Ok(Outcome::Respond(respond(frame, Answer::new(response))?));
    }
    let assignments = request
        .assignments
        .iter()
        .map(|a| (a.member_id.as_str().to_string(), a.assignment.clone()))
        .collect();
    let result = broker
        .groups
        .sync(
            request.group_id.0.as_str(),
            request.member_id.as_str(),
            request.generation_id,
            assignments,
        )
        .await;
    let mut response = SyncGroupResponse::default()
        .with_error_code(result.error.map_or(0, |e| e.code()))
        .with_assignment(result.assignment);
    if frame.version >= 5 {
        response.protocol_type = opt_str(result.protocol_type);
        response.protocol_name = opt_str(result.protocol_name);
    }
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

pub fn heartbeat(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: HeartbeatRequest = frame.decode()?;
    if let Some(error) = coordinator_error(broker, request.group_id.0.as_str()) {
        let response = HeartbeatResponse::default().with_error_code(error.code());
        return Ok(Outcome::Respond(respond(frame, Answer::new(response))?));
    }
    let code = broker.groups.heartbeat(
        request.group_id.0.as_str(),
        request.member_id.as_str(),
        request.group_instance_id.as_ref().map(|s| s.as_str()),
        request.generation_id,
    );
    let response = HeartbeatResponse::default().with_error_code(code);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

pub fn leave_group(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: LeaveGroupRequest = frame.decode()?;
    let group_id = request.group_id.0.as_str();
    let mut response = LeaveGroupResponse::default();
    if let Some(error) = coordinator_error(broker, group_id) {
        response.error_code = error.code();
        return Ok(Outcome::Respond(respond(frame, Answer::new(response))?));
    }
    if frame.version >= 3 {
        let members: Vec<(String, Option<String>)> = request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str().to_string(),
                    m.group_instance_id.as_ref().map(|s| s.as_str().to_string()),
                )
            })
            .collect();
        let results = broker.groups.leave(group_id, &members);
        response.members = members
            .iter()
            .zip(results)
            .map(|((id, instance), code)| {
                MemberResponse::default()
                    .with_member_id(str_bytes(id))
                    .with_group_instance_id(opt_str(instance.clone()))
                    .with_error_code(code)
            })
            .collect();
    } else {
        let results = broker
            .groups
            .leave(group_id, &[(request.member_id.as_str().to_string(), None)]);
        response.error_code = results
            .first()
            .copied()
            .unwrap_or(ResponseError::UnknownMemberId.code());
    }
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

pub fn list_groups(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: ListGroupsRequest = frame.decode()?;
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|g| {
            request.states_filter.is_empty()
                || request
                    .states_filter
                    .iter()
                    .any(|s| s.as_str().eq_ignore_ascii_case(g.state))
        })
        .filter(|_| {
            request.types_filter.is_empty()
                || request
                    .types_filter
                    .iter()
                    .any(|t| t.as_str().eq_ignore_ascii_case("classic"))
        })
        .map(|g| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&g.id)))
                .with_protocol_type(str_bytes(&g.protocol_type));
            if frame.version >= 4 {
                listed.group_state = str_bytes(g.state);
            }
            if frame.version >= 5 {
                listed.group_type = str_bytes("classic");
            }
            listed
        })
        .collect();
    let response = ListGroupsResponse::default().with_groups(groups);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

pub fn describe_groups(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: DescribeGroupsRequest = frame.decode()?;
    let groups = request
        .groups
        .iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            if let Some(error) = coordinator_error(broker, id.0.as_str()) {
                return described.with_error_code(error.code());
            }
            match broker.groups.describe(id.0.as_str()) {
                Some(g) => described
                    .with_group_state(str_bytes(g.state))
                    .with_protocol_type(str_bytes(&g.protocol_type))
                    .with_protocol_data(str_bytes(&g.protocol))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(
                                |(member_id, instance, client_id, host, metadata, assignment)| {
                                    DescribedGroupMember::default()
                                        .with_member_id(str_bytes(&member_id))
                                        .with_group_instance_id(if frame.version >= 4 {
                                            opt_str(instance)
                                        } else {
                                            None
                                        })
                                        .with_client_id(str_bytes(&client_id))
                                        .with_client_host(str_bytes(&host))
                                        .with_member_metadata(metadata)
                                        .with_member_assignment(assignment)
                                },
                            )
                            .collect(),
                    ),
                // Kafka describes an unknown group as Dead with no members.
                None => described.with_group_state(str_bytes("Dead")),
            }
        })
        .collect();
    let response = DescribeGroupsResponse::default().with_groups(groups);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

pub fn delete_groups(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: DeleteGroupsRequest = frame.decode()?;
    let results = request
        .groups_names
        .iter()
        .map(|id| {
            let code = match coordinator_error(broker, id.0.as_str()) {
                Some(error) => error.code(),
                None => broker.groups.delete_group(id.0.as_str()),
            };
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(code)
        })
        .collect();
    let response = DeleteGroupsResponse::default().with_results(results);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}
