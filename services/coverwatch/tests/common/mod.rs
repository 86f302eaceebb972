//! Running the `coverwatch` binary from tests: the environment, its start-up lines, signals.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const DEV_KEY: &str = "a-development-key-for-tests";

pub fn command(workdir: &std::path::Path, database_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coverwatch"));
    cmd.current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("COVERWATCH_DATABASE_URL", database_url)
        .env("COVERWATCH_GRPC_ADDR", "127.0.0.1:0")
        .env("COVERWATCH_HTTP_ADDR", "127.0.0.1:0")
        .env("COVERWATCH_SANDBOX_ADDR", "127.0.0.1:0")
        .env("COVERWATCH_DEV_API_KEY", DEV_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

pub fn workdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The stdout line that starts with `prefix`, waiting at most `deadline`.
pub fn wait_for_line(child: &mut Child, prefix: &str, deadline: Duration) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = std::time::Instant::now();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!("no `{prefix}` line within {deadline:?}; stderr:\n{stderr}");
            }
        }
    }
}

/// Through `kill(1)`: the workspace forbids the `unsafe` a direct `libc::kill` would need.
pub fn send_sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}");
}

pub fn wait_with_deadline(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("did not exit within {deadline:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
