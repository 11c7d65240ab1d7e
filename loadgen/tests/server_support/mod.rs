// A real `ferrogram serve` for loadgen's end-to-end tests: the workspace's debug binary with
// `loadgen/bench-server.toml` (plus whatever a test adds to it), the `fixed:` login code, a
// loopback port it picks itself, and its own data directory; killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const CODE: &str = "12345";

/// The workspace's `target/debug/ferrogram` (built by `cargo test --workspace` for the root
/// package's own tests), or `None` after saying so: a package's tests cannot build another
/// package's binary, so a test without it passes without running.
pub fn server_binary() -> Option<PathBuf> {
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/ferrogram");
    if binary.exists() {
        return Some(binary);
    }
    eprintln!("SKIPPED: {} is missing; build it with `cargo build -p ferrogram --bin ferrogram`", binary.display());
    None
}

pub struct Server {
    child: Child,
    pub address: SocketAddr,
    pub directory: PathBuf,
}

impl Server {
    /// Starts the server in a fresh directory named after `name`. `extra_config` is appended to
    /// the benchmark config; `files` are written into the directory first (a secret, say) and
    /// `args(directory)` gives further flags.
    pub fn start(
        binary: &Path,
        name: &str,
        extra_config: &str,
        files: &[(&str, &str)],
        args: impl FnOnce(&Path) -> Vec<std::ffi::OsString>,
    ) -> Server {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos());
        let directory =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("loadgen-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&directory).expect("a test directory");
        let limits = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-server.toml");
        let mut config = std::fs::read_to_string(limits).expect("bench-server.toml");
        config.push_str(extra_config);
        std::fs::write(directory.join("server.toml"), config).expect("a config file");
        for (file, contents) in files {
            std::fs::write(directory.join(file), contents).expect("a file for the server");
        }
        let mut child = Command::new(binary)
            .args(["serve", "--cores", "1", "--listen", "127.0.0.1:0", "--code-sender", &format!("fixed:{CODE}")])
            .arg("--config")
            .arg(directory.join("server.toml"))
            .arg("--data-dir")
            .arg(directory.join("data"))
            .args(args(&directory))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ferrogram serve starts");
        let stdout = child.stdout.take().expect("its standard output");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not say it listens within 60 s");
            }
        };
        // "ferrogram listening on 127.0.0.1:PORT (data in ..., 1 shards)"
        let address = line
            .split_whitespace()
            .nth(3)
            .and_then(|word| word.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Server { child, address, directory }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
