//! The `tower-cx-gateway` binary as a test process: started on a free port,
//! its output kept, and stopped with a signal.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tower_cx::mock::MockServer;

/// A running gateway: the process, its base URL (`http://...`) and the
/// lines it printed after it started listening.
pub struct Gateway {
    pub child: Child,
    pub addr: String,
    pub output: Arc<Mutex<Vec<String>>>,
}

/// Start the gateway on a free loopback port with `args` and `env`, and
/// wait (at most 30 s) until it says where it listens. Its output is read
/// to the end, so that it never blocks on a full pipe.
pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tower-cx-gateway"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("listening on ") {
                return addr.to_string();
            }
        }
        panic!("the gateway exited before listening");
    })
    .await
    .expect("the gateway starts");
    let output = Arc::new(Mutex::new(Vec::new()));
    let keep = output.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keep.lock().unwrap().push(line);
        }
    });
    Gateway {
        child,
        addr,
        output,
    }
}

/// Wait (polling, at most 3 s) until `mock` has seen a request to `path`.
pub async fn wait_until_mock_saw(mock: &MockServer, path: &str) {
    for _ in 0..300 {
        if mock.counters().requests.contains_key(path) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the request never reached the mock at {path}");
}

/// Wait (polling, at most 3 s) until the gateway has printed `line`.
pub async fn wait_for_line(output: &Mutex<Vec<String>>, line: &str) {
    for _ in 0..300 {
        if output.lock().unwrap().iter().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the gateway never printed {line:?}: {:?}",
        output.lock().unwrap()
    );
}

/// Send SIGTERM to the gateway and wait (at most 60 s) until it exits with
/// code 0.
pub async fn terminate_and_exit_0(child: &mut Child) {
    terminate(child);
    let exit = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the gateway exits")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

/// Send SIGTERM to the gateway.
pub fn terminate(child: &Child) {
    let pid = child.id().expect("the gateway is running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
}
