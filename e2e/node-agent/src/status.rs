//! Computes a pod's status from what the node agent observes of its processes.
//!
//! Pure: the pod worker keeps a [`ContainerView`] per container and asks [`pod_status`] for the
//! PodStatus to report. Condition transition times are carried over from the previous status
//! while a condition keeps its value, as the kubelet does.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The state of one container's process as the agent sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Time,
    },
    Terminated(Exit),
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub started_at: Option<Time>,
    pub finished_at: Time,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub state: ProcessState,
    pub last_exit: Option<Exit>,
    pub ready: bool,
    pub started: bool,
    pub restart_count: i32,
    /// Terminated and will not be restarted (restart policy Never/OnFailure).
    pub done: bool,
}

impl ContainerView {
    pub fn waiting(name: &str, image: &str, reason: &str) -> Self {
        ContainerView {
            name: name.to_string(),
            image: image.to_string(),
            state: ProcessState::Waiting {
                reason: reason.to_string(),
                message: None,
            },
            last_exit: None,
            ready: false,
            started: false,
            restart_count: 0,
            done: false,
        }
    }
}

/// Everything the agent knows of a pod it runs.
#[derive(Clone, Debug, Default)]
pub struct PodView {
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: Option<Time>,
    /// Volumes and address are in place; containers can start.
    pub sandbox_ready: bool,
    pub init_containers: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    pub message: Option<String>,
}

impl PodView {
    /// All init containers ran to success.
    pub fn initialized(&self) -> bool {
        self.init_containers
            .iter()
            .all(|c| matches!(&c.state, ProcessState::Terminated(e) if e.exit_code == 0))
    }
}

/// The restart count a container starts with when the agent takes over a pod that already
/// ran (after an agent restart): its reported count, plus one if it had started, since the
/// agent's restart ended its process.
pub fn carried_restarts(previous: Option<&PodStatus>, name: &str) -> i32 {
    let Some(cs) = previous
        .and_then(|p| p.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
    else {
        return 0;
    };
    let ran = cs
        .state
        .as_ref()
        .is_some_and(|s| s.running.is_some() || s.terminated.is_some());
    cs.restart_count + i32::from(ran)
}

/// The phase: Pending until a container has run, Succeeded/Failed when every container is done.
pub fn phase(view: &PodView) -> &'static str {
    let init_failed = view
        .init_containers
        .iter()
        .any(|c| c.done && !exited_zero(c));
    if init_failed {
        return "Failed";
    }
    if !view.initialized() {
        return "Pending";
    }
    if !view.containers.is_empty() && view.containers.iter().all(|c| c.done) {
        return if view.containers.iter().all(exited_zero) {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    let ran = view.containers.iter().any(|c| {
        matches!(
            c.state,
            ProcessState::Running { .. } | ProcessState::Terminated(_)
        ) || c.restart_count > 0
    });
    if ran {
        "Running"
    } else {
        "Pending"
    }
}

fn exited_zero(c: &ContainerView) -> bool {
    matches!(&c.state, ProcessState::Terminated(e) if e.exit_code == 0)
}

/// The PodStatus to report for `view` at `now`, keeping transition times from `previous`.
pub fn pod_status(view: &PodView, now: &Time, previous: Option<&PodStatus>) -> PodStatus {
    let phase = phase(view);
    let initialized = view.initialized();
    let containers_ready =
        initialized && !view.containers.is_empty() && view.containers.iter().all(|c| c.ready);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let condition = |type_: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == status))
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        PodCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            last_transition_time: Some(since),
            reason: if ok { None } else { reason.map(str::to_string) },
            ..Default::default()
        }
    };
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            view.sandbox_ready && !terminal,
            None,
        ),
        condition("Initialized", initialized, Some("ContainersNotInitialized")),
        condition(
            "Ready",
            containers_ready && !terminal,
            Some(if terminal {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
        ),
        condition(
            "ContainersReady",
            containers_ready && !terminal,
            Some(if terminal {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
        ),
        condition("PodScheduled", true, None),
    ];
    let statuses = |cs: &[ContainerView]| -> Option<Vec<ContainerStatus>> {
        if cs.is_empty() {
            None
        } else {
            Some(cs.iter().map(container_status).collect())
        }
    };
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(view.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: view.host_ip.clone(),
        }]),
        pod_ip: view.pod_ip.clone(),
        pod_ips: view
            .pod_ip
            .as_ref()
            .map(|ip| vec![PodIP { ip: ip.clone() }]),
        start_time: view.start_time.clone(),
        init_container_statuses: statuses(&view.init_containers),
        container_statuses: statuses(&view.containers),
        message: view.message.clone(),
        qos_class: previous.and_then(|p| p.qos_class.clone()),
        ..Default::default()
    }
}

fn container_status(c: &ContainerView) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: format!("tokafka-node-agent://{}", c.image),
        container_id: Some(format!("process://{}", c.name)),
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        state: Some(state(&c.state)),
        last_state: c.last_exit.as_ref().map(|e| ContainerState {
            terminated: Some(terminated(e)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn state(s: &ProcessState) -> ContainerState {
    match s {
        ProcessState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        ProcessState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(started_at.clone()),
            }),
            ..Default::default()
        },
        ProcessState::Terminated(e) => ContainerState {
            terminated: Some(terminated(e)),
            ..Default::default()
        },
    }
}

fn terminated(e: &Exit) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: e.exit_code,
        signal: e.signal,
        reason: Some(e.reason.clone()),
        started_at: e.started_at.clone(),
        finished_at: Some(e.finished_at.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn running(name: &str, ready: bool) -> ContainerView {
        ContainerView {
            state: ProcessState::Running { started_at: t(1) },
            ready,
            started: true,
            ..ContainerView::waiting(name, "app:dev", "ContainerCreating")
        }
    }

    fn exited(name: &str, code: i32, done: bool) -> ContainerView {
        ContainerView {
            state: ProcessState::Terminated(Exit {
                exit_code: code,
                signal: None,
                reason: if code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                },
                started_at: Some(t(1)),
                finished_at: t(2),
            }),
            done,
            ..ContainerView::waiting(name, "app:dev", "")
        }
    }

    fn view(containers: Vec<ContainerView>) -> PodView {
        PodView {
            pod_ip: Some("127.1.0.2".into()),
            host_ip: "127.0.0.1".into(),
            sandbox_ready: true,
            containers,
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a PodStatus, type_: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn pod_is_pending_until_a_container_runs() {
        assert_eq!(
            phase(&view(vec![ContainerView::waiting(
                "a",
                "i",
                "ContainerCreating"
            )])),
            "Pending"
        );
        assert_eq!(phase(&view(vec![running("a", false)])), "Running");
    }

    #[test]
    fn pod_is_ready_only_when_every_container_is_ready() {
        let s = pod_status(
            &view(vec![running("a", true), running("b", false)]),
            &t(5),
            None,
        );
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "Ready").reason.as_deref(),
            Some("ContainersNotReady")
        );
        let s = pod_status(
            &view(vec![running("a", true), running("b", true)]),
            &t(5),
            None,
        );
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(s.pod_ip.as_deref(), Some("127.1.0.2"));
    }

    #[test]
    fn restarting_container_keeps_the_pod_running() {
        let mut c = exited("a", 1, false);
        c.restart_count = 1;
        assert_eq!(phase(&view(vec![c])), "Running");
    }

    #[test]
    fn finished_containers_end_the_pod() {
        assert_eq!(phase(&view(vec![exited("a", 0, true)])), "Succeeded");
        assert_eq!(
            phase(&view(vec![exited("a", 0, true), exited("b", 2, true)])),
            "Failed"
        );
    }

    #[test]
    fn pending_init_container_holds_the_pod_and_a_failed_one_fails_it() {
        let mut v = view(vec![ContainerView::waiting("a", "i", "PodInitializing")]);
        v.init_containers = vec![running("init", false)];
        assert_eq!(phase(&v), "Pending");
        let s = pod_status(&v, &t(1), None);
        assert_eq!(cond(&s, "Initialized").status, "False");
        v.init_containers = vec![exited("init", 1, true)];
        assert_eq!(phase(&v), "Failed");
        v.init_containers = vec![exited("init", 0, true)];
        assert!(v.initialized());
    }

    #[test]
    fn restart_count_carries_over_an_agent_restart() {
        assert_eq!(carried_restarts(None, "a"), 0);
        let mut c = running("a", true);
        c.restart_count = 2;
        let previous = pod_status(&view(vec![c]), &t(1), None);
        assert_eq!(carried_restarts(Some(&previous), "a"), 3);
        assert_eq!(carried_restarts(Some(&previous), "other"), 0);
        let waiting = pod_status(
            &view(vec![ContainerView::waiting("a", "i", "ContainerCreating")]),
            &t(1),
            None,
        );
        assert_eq!(carried_restarts(Some(&waiting), "a"), 0);
    }

    #[test]
    fn transition_time_is_kept_while_a_condition_holds() {
        let v = view(vec![running("a", true)]);
        let first = pod_status(&v, &t(10), None);
        let second = pod_status(&v, &t(20), Some(&first));
        assert_eq!(cond(&second, "Ready").last_transition_time, Some(t(10)));
        let unready = pod_status(&view(vec![running("a", false)]), &t(30), Some(&second));
        assert_eq!(cond(&unready, "Ready").last_transition_time, Some(t(30)));
    }
}
