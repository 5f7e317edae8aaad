//! The words the operator reports in: condition types, condition reasons, Event reasons and
//! Event actions. Users match on them (`kubectl wait --for=condition=Ready`, alerts on
//! `reason=ScaleDownBlocked`), so they are API: they change only on purpose, here.

/// The condition types of a BrokerCluster (also the values of `status.phase`).
pub mod condition {
    /// Every desired broker serves, as the cluster itself reports.
    pub const READY: &str = "Ready";
    /// Something is under way: brokers starting, a scale-down, a rollout, partitions moving.
    pub const PROGRESSING: &str = "Progressing";
    /// The spec cannot be applied, or data is at risk.
    pub const DEGRADED: &str = "Degraded";
}

/// The reasons of conditions (a condition change is also an Event with its reason).
pub mod reason {
    /// `spec` cannot be applied (or the object cannot be read): Ready False, Degraded True.
    pub const INVALID_SPEC: &str = "InvalidSpec";

    // Ready
    pub const ALL_BROKERS_READY: &str = "AllBrokersReady";
    pub const BROKERS_NOT_READY: &str = "BrokersNotReady";
    pub const CLUSTER_UNREACHABLE: &str = "ClusterUnreachable";
    pub const BROKERS_NOT_SERVING: &str = "BrokersNotServing";
    /// Ready False and Degraded True.
    pub const OFFLINE_PARTITIONS: &str = "OfflinePartitions";

    // Degraded
    pub const HEALTHY: &str = "Healthy";
    pub const ROLLOUT_HALTED: &str = "RolloutHalted";
    pub const SCALE_DOWN_BLOCKED: &str = "ScaleDownBlocked";
    pub const UNDER_REPLICATED_PARTITIONS: &str = "UnderReplicatedPartitions";

    // Progressing
    pub const STABLE: &str = "Stable";
    pub const SCALING_DOWN: &str = "ScalingDown";
    pub const ROLLOUT_PAUSED: &str = "RolloutPaused";
    pub const ROLLING_RESTART: &str = "RollingRestart";
    pub const REASSIGNING_PARTITIONS: &str = "ReassigningPartitions";
    pub const BROKERS_STARTING: &str = "BrokersStarting";
}

/// The reasons of the Events the operator's actions publish.
pub mod event {
    pub const DRAIN_CANCELLED: &str = "DrainCancelled";
    pub const DRAINING_BROKER: &str = "DrainingBroker";
    pub const RESTARTING_BROKER: &str = "RestartingBroker";
    pub const VOLUME_EXPANSION_FAILED: &str = "VolumeExpansionFailed";
    pub const SPREADING_REPLICAS: &str = "SpreadingReplicas";
    pub const REBALANCING_LEADERS: &str = "RebalancingLeaders";
    pub const DELETING: &str = "Deleting";
    /// A BrokerCluster the operator cannot read (the condition reason of the same name).
    pub const INVALID_SPEC: &str = super::reason::INVALID_SPEC;
}

/// The actions of Events.
pub mod action {
    pub const RECONCILE: &str = "Reconcile";
    pub const SCALE: &str = "Scale";
    pub const ROLLING_RESTART: &str = "RollingRestart";
    pub const EXPAND_VOLUME: &str = "ExpandVolume";
    pub const BALANCE: &str = "Balance";
    pub const DELETE: &str = "Delete";
}
