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

use ferrogram_net::client::{connect_blocking, Authorized, BlockingClient, SignInOutcome, UploadedFile};
use ferrogram_net::transfer::{DownloadOptions, TransferError, UploadOptions};
use ferrogram_net::{ChatId, FileRef, LiveEvent, MediaKind, MessageId, Request, Response};

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

// Files and media messages.

/// Deterministic pseudo-random bytes (SplitMix64): chunks of different files never match.
pub fn pseudo_random(bytes: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 8);
    let mut state = seed;
    while out.len() < bytes {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(bytes);
    out
}

/// Uploads `content` as a file named `name` with the library's defaults.
pub fn upload(client: &BlockingClient, content: &[u8], name: &str) -> UploadedFile {
    let options = UploadOptions { name: name.into(), ..UploadOptions::default() };
    client.upload_file(content, Some(content.len() as u64), &options, |_| {}).expect("upload")
}

/// A random_id no other send of this test process used (each test runs its own server).
pub fn next_random_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Sends `file` to `chat` as a document with a fresh random_id; answers the message's id.
pub fn send_file(client: &BlockingClient, chat: ChatId, file: FileRef, caption: &str) -> MessageId {
    client.send_media(chat, next_random_id(), file, MediaKind::Document, caption).expect("send media").id
}

/// Downloads the whole file of media message `message` of `chat`, `in_flight` ranges at once.
pub fn download_message(
    client: &BlockingClient,
    chat: ChatId,
    message: MessageId,
    in_flight: usize,
) -> Result<Vec<u8>, TransferError> {
    let mut out = Vec::new();
    let options = DownloadOptions { ranges_in_flight: in_flight };
    let mut last = 0;
    client.download_file(chat, message, &options, &mut out, |progress| {
        assert!(progress.bytes_done >= last, "progress only grows");
        last = progress.bytes_done;
    })?;
    Ok(out)
}

/// The media figures the metrics give, summed over shards.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MediaFigures {
    pub files: u64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub chunks: u64,
    pub physical_bytes: u64,
}

/// Scrapes `/metrics` until `ready` holds (the server samples its shards once a second), at
/// most 20 s.
pub fn wait_for_media(address: SocketAddr, ready: impl Fn(&MediaFigures) -> bool) -> MediaFigures {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(address);
        let sum = |name: &str| -> u64 {
            let prefix = format!("ferrogram_media_{name}{{");
            text.lines()
                .filter(|line| line.starts_with(&prefix))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        let figures = MediaFigures {
            files: sum("files"),
            logical_bytes: sum("logical_bytes"),
            stored_bytes: sum("stored_bytes"),
            chunks: sum("chunks"),
            physical_bytes: sum("physical_bytes"),
        };
        if ready(&figures) {
            return figures;
        }
        assert!(Instant::now() < deadline, "the metrics never showed it: {figures:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The text of `GET /metrics` at `address` (waits for the listener after a restart).
pub fn scrape(address: SocketAddr) -> String {
    use std::io::Read as _;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match std::net::TcpStream::connect(address) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => panic!("cannot reach the metrics at {address}: {error}"),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: test\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
}
