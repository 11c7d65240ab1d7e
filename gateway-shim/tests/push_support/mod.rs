//! What the push tests share: a local HTTP/1.1 receiver on 127.0.0.1 (std `TcpListener`,
//! keep-alive, a thread per connection) that records every request and answers with a status
//! the test chooses; an h2c receiver for APNs over HTTP/2; builders for jobs and configs; and
//! waiting with a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::messaging::{ChatId, MessageId, UnixMs, UserId};
use engine::ShardId;
use ferrogram_gateway_shim::push::{
    Device, DeviceKind, JobId, MessagePush, NotificationSettings, PushConfig, PushJob, PushJobKind, PushReport,
    WebhookConfig,
};

pub const SECRET: &[u8] = b"relay secret";

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub version: String,
    /// Names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// How the receiver answers a request: status and body.
pub type Responder = Arc<dyn Fn(&Request) -> (u16, String) + Send + Sync>;

pub fn always_ok() -> Responder {
    Arc::new(|_| (200, "{}".into()))
}

/// A local HTTP/1.1 receiver. Stops when dropped.
pub struct Receiver {
    pub address: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start(respond: Responder) -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").expect("bind"), respond)
    }

    /// Listens on `listener` (a test that wants a port before anything listens on it binds it
    /// again later: std sets SO_REUSEADDR).
    pub fn on(listener: TcpListener, respond: Responder) -> Receiver {
        let address = listener.local_addr().expect("address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (recorded, stopping) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (recorded, respond, stopping) = (recorded.clone(), respond.clone(), stopping.clone());
                std::thread::spawn(move || serve(stream, recorded, respond, stopping));
            }
        });
        Receiver { address, requests, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
    }
}

fn serve(stream: TcpStream, recorded: Arc<Mutex<Vec<Request>>>, respond: Responder, stopping: Arc<AtomicBool>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    while !stopping.load(Ordering::Relaxed) {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next()) else { return };
        let (method, path, version) = (method.to_owned(), path.to_owned(), version.to_owned());
        let mut headers = Vec::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
                if name == "content-length" {
                    length = value.parse().unwrap_or(0);
                }
                headers.push((name, value));
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Request { method, path, version, headers, body };
        let (status, answer) = respond(&request);
        recorded.lock().unwrap().push(request);
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A local cleartext HTTP/2 (h2c, prior knowledge) receiver, as APNs would be reached.
pub struct H2Receiver {
    pub address: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl H2Receiver {
    pub fn start(status: u16) -> H2Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let address = listener.local_addr().expect("address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((socket, _)) = listener.accept().await else { continue };
                    let recorded = recorded.clone();
                    tokio::spawn(async move {
                        let Ok(mut connection) = h2::server::handshake(socket).await else { return };
                        // The connection makes progress only while `accept` is polled, so
                        // each request is served by a task of its own.
                        while let Some(Ok((request, mut respond))) = connection.accept().await {
                            let recorded = recorded.clone();
                            tokio::spawn(async move {
                                let (parts, mut body) = request.into_parts();
                                let mut bytes = Vec::new();
                                while let Some(Ok(chunk)) = body.data().await {
                                    let _ = body.flow_control().release_capacity(chunk.len());
                                    bytes.extend_from_slice(&chunk);
                                }
                                let headers = parts
                                    .headers
                                    .iter()
                                    .map(|(name, value)| {
                                        (name.as_str().to_owned(), value.to_str().unwrap_or("").to_owned())
                                    })
                                    .collect();
                                recorded.lock().unwrap().push(Request {
                                    method: parts.method.to_string(),
                                    path: parts.uri.path().to_owned(),
                                    version: format!("{:?}", parts.version),
                                    headers,
                                    body: bytes,
                                });
                                let response = http::Response::builder().status(status).body(()).unwrap();
                                let _ = respond.send_response(response, true);
                            });
                        }
                    });
                }
            });
        });
        H2Receiver { address, requests }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// A dispatcher configuration for tests: short windows and retries, the relay at `relay_url`.
pub fn config(relay_url: &str) -> PushConfig {
    PushConfig {
        coalescing_window: Duration::from_millis(300),
        attempts_max: 20,
        retry_delay_min: Duration::from_millis(40),
        retry_delay_max: Duration::from_millis(400),
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        proxy_from_environment: false,
        webhook: Some(WebhookConfig { url: relay_url.to_owned(), secret: SECRET.to_vec() }),
        ..PushConfig::default()
    }
}

pub fn device(kind: DeviceKind, token: &str) -> Device {
    Device { kind, token: token.to_owned(), app_sandbox: false, no_muted: false }
}

pub fn job_id(sequence: u64) -> JobId {
    JobId { shard: ShardId(0), sequence }
}

/// A message job for `user` in `chat`, to one webhook device named after the user.
pub fn message_job(sequence: u64, user: u64, chat: u64, message: u64, badge: u32) -> PushJob {
    PushJob {
        id: job_id(sequence),
        kind: PushJobKind::Message(MessagePush {
            user: UserId(user),
            chat: ChatId(chat),
            message: MessageId(message),
            sender_name: "Ann".into(),
            text_preview: format!("message {message}"),
            unread_badge: badge,
            date: UnixMs(1_700_000_000_000 + message),
            devices: vec![device(DeviceKind::Webhook, &format!("token-{user}"))],
            settings: NotificationSettings::DEFAULT,
        }),
    }
}

/// Waits until `done` holds, panicking with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Collects reports until `count` arrived, panicking after `timeout`.
pub fn reports(channel: &crossbeam::channel::Receiver<PushReport>, count: usize, timeout: Duration) -> Vec<PushReport> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match channel.recv_timeout(left) {
            Ok(report) => got.push(report),
            Err(_) => panic!("timed out with {} of {count} reports: {got:?}", got.len()),
        }
    }
    got
}
