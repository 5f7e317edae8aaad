//! Starting and stopping a container's process.
//!
//! Each process runs in its own session (so its whole process group can be signalled), in a
//! private mount namespace where the pod's volumes are bind-mounted at their mount paths, and
//! in a private UTS namespace carrying the pod's hostname. It dies with the agent
//! (`PR_SET_PDEATHSIG`), so a crashed agent leaves no pods behind.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::podspec::ProcessSpec;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot prepare mount target {path}: {source}")]
    MountTarget { path: String, source: io::Error },
    #[error("cannot open log file {path}: {source}")]
    Log { path: String, source: io::Error },
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
}

/// Starts the process of `spec`, its output appended to `log_path`. Mount targets missing on
/// the host are created first (the filesystem is shared) and added to `created`, so the agent
/// can remove them when it stops.
///
/// # Errors
/// A mount target that cannot be created, an unwritable log, a program that cannot be executed
/// (missing, not executable, or a namespace/mount refused by the kernel).
pub fn spawn(
    spec: &ProcessSpec,
    hostname: &str,
    log_path: &Path,
    isolate: bool,
    created: &mut Vec<PathBuf>,
) -> Result<Child, ProcessError> {
    let log = open_log(log_path)?;
    let log2 = log.try_clone().map_err(|source| ProcessError::Log {
        path: log_path.display().to_string(),
        source,
    })?;

    // Mount targets must exist; they are created on the host (shared filesystem) before forking.
    let mut binds: Vec<(CString, CString, bool)> = Vec::new();
    for m in &spec.mounts {
        let is_file = m.source.is_file();
        let prepared = if is_file {
            m.target
                .parent()
                .map_or(Ok(()), |p| create_dirs(p, created))
                .and_then(|()| {
                    if !m.target.exists() {
                        File::create(&m.target)?;
                        created.push(m.target.clone());
                    }
                    Ok(())
                })
        } else {
            std::fs::create_dir_all(&m.source).and_then(|()| create_dirs(&m.target, created))
        };
        prepared.map_err(|source| ProcessError::MountTarget {
            path: m.target.display().to_string(),
            source,
        })?;
        binds.push((cstring(&m.source), cstring(&m.target), m.read_only));
    }
    let hostname = hostname.to_string();
    // Prepared before the fork: no allocation may happen between fork and exec.
    let user = spec.user.as_ref().map(|u| {
        let groups: Vec<nix::unistd::Gid> = u
            .groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        (
            nix::unistd::Uid::from_raw(u.uid),
            nix::unistd::Gid::from_raw(u.gid),
            groups,
        )
    });

    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .kill_on_drop(true);
    // The image's WORKDIR is unknown: "/" as for an image without one.
    cmd.current_dir(
        spec.working_dir
            .as_ref()
            .filter(|d| d.is_dir())
            .map_or(Path::new("/"), |d| d.as_path()),
    );
    // SAFETY: the closure runs between fork and exec and only makes system calls on data
    // prepared before the fork (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(io::Error::from)?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            if isolate {
                unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
                    .map_err(io::Error::from)?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .map_err(io::Error::from)?;
                for (source, target, read_only) in &binds {
                    mount(
                        Some(source.as_c_str()),
                        target.as_c_str(),
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None::<&str>,
                    )
                    .map_err(io::Error::from)?;
                    if *read_only {
                        mount(
                            None::<&str>,
                            target.as_c_str(),
                            None::<&str>,
                            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                            None::<&str>,
                        )
                        .map_err(io::Error::from)?;
                    }
                }
                nix::unistd::sethostname(&hostname).map_err(io::Error::from)?;
            }
            // Last: mounts and the hostname need root.
            if let Some((uid, gid, groups)) = &user {
                nix::unistd::setgroups(groups).map_err(io::Error::from)?;
                nix::unistd::setgid(*gid).map_err(io::Error::from)?;
                nix::unistd::setuid(*uid).map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: spec.program.display().to_string(),
        source,
    })
}

/// `create_dir_all` that records each directory it creates.
fn create_dirs(dir: &Path, created: &mut Vec<PathBuf>) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    std::fs::create_dir_all(dir)?;
    created.extend(missing.into_iter().rev().map(Path::to_path_buf));
    Ok(())
}

/// Gives a volume to the pod's `fsGroup` as the kubelet does: group-owned, group read-write,
/// directories set-group-ID so new files join the group. Recursive; symlinks untouched.
///
/// # Errors
/// A file whose owner or mode cannot be changed.
pub fn apply_fs_group(dir: &Path, gid: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(dir, None, Some(gid))?;
    let mode = meta.permissions().mode();
    let wanted = if meta.is_dir() {
        mode | 0o2070
    } else {
        mode | 0o060
    };
    if wanted != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(wanted))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            apply_fs_group(&entry?.path(), gid)?;
        }
    }
    Ok(())
}

/// Removes mount targets the agent created, deepest first, where they are still empty.
pub fn remove_created(created: &[PathBuf]) {
    let mut paths: Vec<&PathBuf> = created.iter().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    paths.dedup();
    for p in paths {
        let removed = if p.is_dir() {
            std::fs::remove_dir(p) // fails, harmlessly, when something else put files there
        } else if p.metadata().is_ok_and(|m| m.len() == 0) {
            std::fs::remove_file(p)
        } else {
            Ok(())
        };
        if let Err(e) = removed {
            tracing::debug!(path = %p.display(), error = %e, "mount target left in place");
        }
    }
}

fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn open_log(path: &Path) -> Result<File, ProcessError> {
    let err = |source| ProcessError::Log {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)
}

/// Stops a process the way the kubelet does: SIGTERM to its process group, then SIGKILL once
/// `grace` has passed. Returns the exit status.
pub async fn terminate(child: &mut Child, grace: Duration) -> io::Result<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        let pgid = Pid::from_raw(pid as i32);
        let _ = killpg(pgid, Signal::SIGTERM); // ESRCH: already gone, wait() below reports it
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => {
                let _ = killpg(pgid, Signal::SIGKILL); // stragglers of the group
                return status;
            }
            Err(_) => {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        }
    }
    child.kill().await.ok();
    child.wait().await
}
