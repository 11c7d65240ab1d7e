//! Shared by the end-to-end tests: start the real `ferrogram serve` process on a free
//! loopback port with its own data directory, read login codes from its `file:` code sender,
//! and log users in through the protocol client.

#![allow(dead_code)]

use std::io::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrogram_net::client::{connect_blocking, Authorized, BlockingClient, SignInOutcome};
use ferrogram_net::{LiveEvent, Request, Response};

/// A `ferrogram serve` child process. Killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub address: SocketAddr,
    pub directory: PathBuf,
    pub data_dir: PathBuf,
    pub codes: PathBuf,
    extra: Vec<String>,
}

impl Server {
    /// Starts a server in a fresh directory under the target's temporary directory.
    pub fn start(name: &str, extra: &[&str]) -> Server {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let directory = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&directory).expect("test directory");
        let mut server = Server {
            child: None,
            // Port 0 at first: the server picks a free port itself and reports it, so two tests
            // never race for one. Restarts reuse the port it reported.
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: directory.join("data"),
            codes: directory.join("codes"),
            directory,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    /// Starts the process again on the same data directory and port.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrogram"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.address.to_string())
            .arg("--code-sender")
            .arg(format!("file:{}", self.codes.display()))
            .args(&self.extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ferrogram serve");
        // Wait for the line saying it listens (bounded: a server that cannot start fails).
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let address = line
                    .strip_prefix("ferrogram listening on ")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|address| address.parse::<SocketAddr>().ok());
                match address {
                    Some(address) => self.address = address,
                    None => panic!("unexpected first line: {line}"),
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start within 60 s");
            }
        }
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (at most 30 s) for a graceful exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        // SAFETY: `kill` with a valid pid of our own child and a standard signal.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn connect(&self) -> BlockingClient {
        connect_blocking(self.address, "e2e-test").expect("connect").with_call_timeout(Duration::from_secs(30))
    }

    /// The last code the server wrote for `phone` (waits for it, at most 10 s).
    pub fn code_for(&self, phone: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.codes).unwrap_or_default();
            let code = text.lines().rev().find_map(|line| {
                let (p, code) = line.split_once(' ')?;
                (p == phone).then(|| code.to_owned())
            });
            if let Some(code) = code {
                return code;
            }
            assert!(Instant::now() < deadline, "no code was written for {phone}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Logs `phone` in on a new connection (signing up as `name` if it is new).
    pub fn login(&self, phone: &str, name: &str) -> (BlockingClient, Authorized) {
        let client = self.connect();
        client.call(Request::SendCode { phone: phone.into() }).expect("send code");
        let code = self.code_for(phone);
        let authorized = match client.sign_in(phone, &code).expect("sign in") {
            SignInOutcome::Authorized(authorized) => authorized,
            SignInOutcome::SignUpRequired => {
                let (first, last) = name.split_once(' ').unwrap_or((name, ""));
                let response = client
                    .call(Request::SignUp {
                        phone: phone.into(),
                        code,
                        first_name: first.into(),
                        last_name: last.into(),
                    })
                    .expect("sign up");
                authorized_from(response)
            }
        };
        (client, authorized)
    }

    /// A new connection authorized with an earlier login's token.
    pub fn reconnect(&self, token: &[u8]) -> (BlockingClient, Response) {
        let client = self.connect();
        let response = client.call(Request::Authenticate { token: token.to_vec() }).expect("authenticate");
        (client, response)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

pub fn authorized_from(response: Response) -> Authorized {
    match response {
        Response::Authorized { user, token, authorization, state } => Authorized { user, token, authorization, state },
        other => panic!("expected Authorized, got {other:?}"),
    }
}

/// A loopback port nobody listens on right now (for side listeners such as `--metrics`; the
/// server's own port comes from the server).
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    listener.local_addr().expect("probe address")
}

/// Collects live events until `done` says enough or `timeout` passes.
pub fn collect_updates(
    client: &BlockingClient,
    timeout: Duration,
    mut done: impl FnMut(&[LiveEvent]) -> bool,
) -> Vec<LiveEvent> {
    let deadline = Instant::now() + timeout;
    let mut events = Vec::new();
    while !done(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if let Some(event) = client.next_update_timeout(left.min(Duration::from_millis(200))) {
            events.push(event);
        }
    }
    events
}

// The command-line client, run as a user would, with its profiles under `home`.

/// `ferrogram login` with its profiles under `home`, typing the code the server wrote.
pub fn cli_login(server: &Server, home: &Path, phone: &str, name: &str) {
    let mut child = cli_command(server, home, &["login", "--phone", phone, "--name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferrogram login");
    let code = server.code_for(phone);
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{code}").expect("type the code");
    drop(stdin);
    let output = child.wait_with_output().expect("ferrogram login ends");
    assert!(output.status.success(), "login failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Runs a client subcommand against `server` and answers its standard output; it must succeed.
pub fn cli_ok(server: &Server, home: &Path, args: &[&str]) -> String {
    let output = cli(server, home, args);
    assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

pub fn cli(server: &Server, home: &Path, args: &[&str]) -> Output {
    cli_command(server, home, args).stdin(Stdio::null()).output().expect("run ferrogram")
}

/// A client subcommand with its profiles under `home`, talking to `server`. None can hang the
/// test: the client connects within 10 s and waits at most a minute for each answer.
pub fn cli_command(server: &Server, home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrogram"));
    command
        .args(args)
        .arg("--server")
        .arg(server.address.to_string())
        .env("FERROGRAM_HOME", home)
        .env_remove("FERROGRAM_SERVER");
    command
}
