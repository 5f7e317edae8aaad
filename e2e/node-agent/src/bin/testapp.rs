//! `tokafka-e2e-testapp`: the small program the e2e smoke test runs in its StatefulSet.
//!
//! It listens on `$POD_IP:$PORT` (a pod's own address, as every process on the local node
//! must) and serves:
//! - `GET /ready`         200 once started (readiness/liveness probe target)
//! - `GET /write/<token>` stores `<token>` in `$DATA_DIR/token` (the pod's volume)
//! - `GET /read`          the stored token (404 when none)
//! - `GET /whoami`        `key=value` lines: pod name, hostname, boots on this volume, the
//!   `$GREETING` variable and the first line of `$CONFIG_FILE`
//!
//! On start it counts boots in `$DATA_DIR/boots`, so a test can tell a restart with its volume
//! from a fresh volume.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

fn main() -> std::io::Result<()> {
    let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let data = PathBuf::from(std::env::var("DATA_DIR").unwrap_or_else(|_| "/data".into()));
    std::fs::create_dir_all(&data)?;
    let boots_file = data.join("boots");
    let boots = std::fs::read_to_string(&boots_file)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    std::fs::write(&boots_file, boots.to_string())?;
    let listener = TcpListener::bind(format!("{ip}:{port}"))?;
    println!(
        "testapp listening on {ip}:{port}, data in {}, boot {boots}",
        data.display()
    );
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                match serve(s, &data, boots) {
                    // Probes hang up as soon as they have the status line.
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
                        ) => {}
                    Err(e) => eprintln!("request failed: {e}"),
                    Ok(()) => {}
                }
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
    Ok(())
}

fn serve(mut stream: TcpStream, data: &Path, boots: u64) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (code, body) = route(&path, data, boots);
    let reason = if code == 200 { "OK" } else { "Not Found" };
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn route(path: &str, data: &Path, boots: u64) -> (u16, String) {
    if path == "/ready" {
        return (200, "ok\n".into());
    }
    if let Some(token) = path.strip_prefix("/write/") {
        return match std::fs::write(data.join("token"), token) {
            Ok(()) => (200, format!("stored {token}\n")),
            Err(e) => (500, format!("{e}\n")),
        };
    }
    if path == "/read" {
        return match std::fs::read_to_string(data.join("token")) {
            Ok(t) => (200, t),
            Err(_) => (404, "no token\n".into()),
        };
    }
    if path == "/whoami" {
        let pod = std::env::var("POD_NAME").unwrap_or_default();
        let host = hostname();
        let greeting = std::env::var("GREETING").unwrap_or_default();
        let config = std::env::var("CONFIG_FILE")
            .ok()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|c| c.lines().next().map(str::to_string))
            .unwrap_or_default();
        return (
            200,
            format!(
                "pod={pod}\nhostname={host}\nboots={boots}\ngreeting={greeting}\nconfig={config}\n"
            ),
        );
    }
    (404, "not found\n".into())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
