//! A child process that ends with the test: the guard kills it (and, when it was
//! started in a process group of its own, the whole group) and reaps it on drop, so
//! a failing test leaves nothing running either.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A running child, killed with SIGKILL and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    group: bool,
}

impl ChildGuard {
    /// Starts `cmd` with its own stdin closed. With `group`, it leads a new process
    /// group, and everything it starts (unless it moves away) is killed with it.
    pub fn spawn(mut cmd: Command, group: bool) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        if group {
            cmd.process_group(0);
        }
        let child = cmd.stdin(Stdio::null()).spawn()?;
        Ok(Self { child, group })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (as `kill` spells it: `-STOP`, `-TERM`, …) to the process.
    pub fn signal(&self, signal: &str) {
        assert!(
            send(signal, &self.pid().to_string()),
            "kill {signal} {}",
            self.pid()
        );
    }

    /// Whether it has exited, and how; reaps it if so.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("waitpid works")
    }

    /// SIGKILL to the process, its descendants and its group; then reaps it.
    /// Idempotent.
    pub fn kill(&mut self) {
        let pid = self.pid();
        let running = self.try_wait().is_none();
        // Collected before anything dies: an orphan's parent is no longer us.
        let descendants = if running {
            descendants(pid)
        } else {
            Vec::new()
        };
        // The group outlives a leader that exited on its own (a crashed driver
        // leaves its browser behind): kill it either way.
        if self.group {
            send("-KILL", &format!("-{pid}"));
        }
        if running {
            let _ = self.child.kill();
            for d in descendants {
                send("-KILL", &d.to_string());
            }
        }
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `limit` for the exit; `None` if it did not exit.
    pub async fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.signal("-TERM");
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn send(signal: &str, target: &str) -> bool {
    Command::new("kill")
        .args([signal, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every live process below `pid`, read from `/proc`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            Some((p, ppid.parse().ok()?))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}
