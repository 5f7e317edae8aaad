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

use super::str_bytes;
use crate::broker::Broker;
use crate::group::membership::{codes, JoinRequest};
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;

/// FindCoordinator key type of consumer groups.
const KEY_TYPE_GROUP: i8 = 0;

fn opt_str(s: Option<String>) -> Option<StrBytes> {
    s.map(|s| str_bytes(&s))
}

pub fn find_coordinator(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: FindCoordinatorRequest = frame.decode()?;
    let config = &broker.config;
    let served = request.key_type == KEY_TYPE_GROUP;
    let (code, message) = if served {
        (0, None)
    } else {
        (
            ResponseError::CoordinatorNotAvailable.code(),
            Some(str_bytes("only group coordinators are served")),
        )
    };
    let (node, host, port) = if served {
        (
            config.node_id,
            str_bytes(&config.advertised_host),
            config.advertised_port,
        )
    } else {
        (-1, StrBytes::default(), -1)
    };
    let mut response = FindCoordinatorResponse::default();
    if frame.version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(node))
                    .with_host(host.clone())
                    .with_port(port)
                    .with_error_code(code)
                    .with_error_message(message.clone())
            })
            .collect();
    } else {
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
    response.error_code = result.error_code;
    response.generation_id = result.generation_id;
    response.member_id = str_bytes(&result.member_id);
    if result.error_code == codes::NONE {
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
        .with_error_code(result.error_code)
        .with_assignment(result.assignment);
    if frame.version >= 5 {
        response.protocol_type = opt_str(result.protocol_type);
        response.protocol_name = opt_str(result.protocol_name);
    }
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

pub fn heartbeat(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: HeartbeatRequest = frame.decode()?;
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
        response.error_code = results.first().copied().unwrap_or(codes::UNKNOWN_MEMBER_ID);
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
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(broker.groups.delete_group(id.0.as_str()))
        })
        .collect();
    let response = DeleteGroupsResponse::default().with_results(results);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}
