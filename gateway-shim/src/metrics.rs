//! Counters and latency histograms in Prometheus text format (`--metrics ADDR`).
//!
//! Each shard writes only its own [`ShardMetrics`] (relaxed atomics, no sharing between
//! writers); the scrape thread reads them all. The send → ack histogram sits behind a mutex
//! that only its shard and a scrape ever take.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrogram_net::ErrorCode;
use hdrhistogram::Histogram;

/// Request kinds counted separately, by the name `request_name` gives them.
pub const REQUEST_NAMES: [&str; 55] = [
    "send_code",
    "sign_in",
    "sign_up",
    "authenticate",
    "log_out",
    "get_authorizations",
    "revoke_authorization",
    "get_self",
    "get_users",
    "set_name",
    "set_username",
    "resolve_username",
    "resolve_phone",
    "set_blocked",
    "open_private",
    "create_group",
    "create_channel",
    "join_chat",
    "leave_chat",
    "add_member",
    "remove_member",
    "promote_member",
    "get_chat",
    "get_members",
    "send_message",
    "forward_messages",
    "edit_message",
    "delete_messages",
    "pin_message",
    "get_history",
    "get_messages",
    "read_history",
    "set_typing",
    "get_state",
    "get_difference",
    "get_chat_difference",
    "get_dialogs",
    "subscribe_chat",
    "unsubscribe_chat",
    "get_presence",
    "register_device",
    "unregister_device",
    "list_devices",
    "set_notify_settings",
    "get_notify_settings",
    "upload_start",
    "upload_part",
    "upload_finish",
    "upload_cancel",
    "get_file",
    "get_file_info",
    "send_media",
    "malformed",
    "unauthorized",
    "refused",
];

/// One shard's counters.
#[derive(Debug)]
pub struct ShardMetrics {
    pub connections_open: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Refused at accept: per-IP or per-shard cap.
    pub connections_refused: AtomicU64,
    /// Closed because the client did not read its updates fast enough.
    pub connections_dropped_slow: AtomicU64,
    /// Closed for a protocol violation (bad frame, bad handshake) or a timeout.
    pub connections_closed_bad_input: AtomicU64,
    pub connections_closed_timeout: AtomicU64,
    pub requests: [AtomicU64; REQUEST_NAMES.len()],
    pub errors: [AtomicU64; ErrorCode::ALL.len()],
    pub updates_sent: AtomicU64,
    pub update_frames_sent: AtomicU64,
    pub resyncs: AtomicU64,
    /// The shard's WAL, sampled once a second from its `LogStats`.
    pub wal_batches: AtomicU64,
    pub wal_batch_bytes: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub wal_sync_us: AtomicU64,
    pub wal_sync_us_max: AtomicU64,
    /// Bytes of upload parts stored (retries of stored parts not counted) and of file bytes
    /// answered, counted by the gateway as it goes.
    pub media_part_bytes: AtomicU64,
    pub media_download_bytes: AtomicU64,
    /// The shard's media store, sampled once a second from its `StorageStats`.
    pub media: MediaGauges,
    send_ack_us: Mutex<Histogram<u64>>,
}

/// A shard's media storage figures (`engine::media::StorageStats`), as last sampled.
#[derive(Debug, Default)]
pub struct MediaGauges {
    pub files: AtomicU64,
    pub logical_bytes: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub chunks: AtomicU64,
    pub chunks_unreferenced: AtomicU64,
    pub physical_bytes: AtomicU64,
    pub garbage_bytes: AtomicU64,
    pub segments: AtomicU64,
    pub uploads: AtomicU64,
    pub staging_bytes: AtomicU64,
    pub cache_bytes: AtomicU64,
}

impl Default for ShardMetrics {
    fn default() -> ShardMetrics {
        ShardMetrics {
            connections_open: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_dropped_slow: AtomicU64::new(0),
            connections_closed_bad_input: AtomicU64::new(0),
            connections_closed_timeout: AtomicU64::new(0),
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            updates_sent: AtomicU64::new(0),
            update_frames_sent: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            wal_batches: AtomicU64::new(0),
            wal_batch_bytes: AtomicU64::new(0),
            wal_syncs: AtomicU64::new(0),
            wal_sync_us: AtomicU64::new(0),
            wal_sync_us_max: AtomicU64::new(0),
            media_part_bytes: AtomicU64::new(0),
            media_download_bytes: AtomicU64::new(0),
            media: MediaGauges::default(),
            // 1 µs to 1 h at 3 significant digits: the bounds are constants that always work.
            send_ack_us: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid")),
            ),
        }
    }
}

impl ShardMetrics {
    pub fn count_request(&self, index: usize) {
        self.requests[index].fetch_add(1, Relaxed);
    }

    pub fn count_error(&self, code: ErrorCode) {
        if let Some(index) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[index].fetch_add(1, Relaxed);
        }
    }

    pub fn record_send_ack(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, 3_600_000_000);
        if let Ok(mut histogram) = self.send_ack_us.lock() {
            let _ = histogram.record(micros);
        }
    }
}

/// The per-shard series that are one atomic each: name, help, type, and the atomic.
type Series = (&'static str, &'static str, &'static str, fn(&ShardMetrics) -> &AtomicU64);

const SHARD_SERIES: [Series; 27] = [
    ("connections_open", "Open client connections.", "gauge", |m| &m.connections_open),
    ("connections_accepted_total", "Connections accepted.", "counter", |m| &m.connections_accepted),
    ("connections_refused_total", "Connections refused at a cap.", "counter", |m| &m.connections_refused),
    ("connections_dropped_slow_total", "Connections closed for not reading (queue drops).", "counter", |m| {
        &m.connections_dropped_slow
    }),
    ("connections_closed_bad_input_total", "Connections closed for protocol violations.", "counter", |m| {
        &m.connections_closed_bad_input
    }),
    ("connections_closed_timeout_total", "Connections closed by a handshake, frame or idle timeout.", "counter", |m| {
        &m.connections_closed_timeout
    }),
    ("updates_sent_total", "Live events sent.", "counter", |m| &m.updates_sent),
    ("update_frames_sent_total", "Updates frames sent.", "counter", |m| &m.update_frames_sent),
    ("resyncs_total", "Live streams that overflowed and told the client to resync.", "counter", |m| &m.resyncs),
    ("wal_batches_total", "WAL batches written (group commits).", "counter", |m| &m.wal_batches),
    (
        "wal_batch_bytes_total",
        "Bytes of WAL batches written; divided by batches, the mean batch size.",
        "counter",
        |m| &m.wal_batch_bytes,
    ),
    ("wal_fsyncs_total", "fdatasync calls of the WAL.", "counter", |m| &m.wal_syncs),
    ("wal_fsync_microseconds_total", "Time spent in WAL fdatasync; divided by fsyncs, the mean.", "counter", |m| {
        &m.wal_sync_us
    }),
    ("wal_fsync_microseconds_max", "The longest WAL fdatasync so far.", "gauge", |m| &m.wal_sync_us_max),
    ("media_part_bytes_total", "Bytes of upload parts stored (retries not counted).", "counter", |m| {
        &m.media_part_bytes
    }),
    ("media_download_bytes_total", "File bytes answered to downloads.", "counter", |m| &m.media_download_bytes),
    ("media_files", "Files stored.", "gauge", |m| &m.media.files),
    ("media_logical_bytes", "Sum of the sizes of stored files.", "gauge", |m| &m.media.logical_bytes),
    (
        "media_stored_bytes",
        "Payload bytes of the chunks files reference, each chunk once (after dedup).",
        "gauge",
        |m| &m.media.stored_bytes,
    ),
    ("media_chunks", "Chunks referenced by a file.", "gauge", |m| &m.media.chunks),
    ("media_chunks_unreferenced", "Indexed chunks no file references, awaiting compaction.", "gauge", |m| {
        &m.media.chunks_unreferenced
    }),
    ("media_physical_bytes", "Bytes of chunk segment files on disk.", "gauge", |m| &m.media.physical_bytes),
    (
        "media_garbage_bytes",
        "Segment bytes holding nothing referenced (unreferenced chunks, padding): compaction's work.",
        "gauge",
        |m| &m.media.garbage_bytes,
    ),
    ("media_segments", "Chunk segment files.", "gauge", |m| &m.media.segments),
    ("media_uploads", "Uploads in progress.", "gauge", |m| &m.media.uploads),
    ("media_staging_bytes", "Bytes of upload parts held in memory.", "gauge", |m| &m.media.staging_bytes),
    ("media_cache_bytes", "Bytes of chunks in the read cache.", "gauge", |m| &m.media.cache_bytes),
];

/// Every shard's metrics, plus process-wide facts.
#[derive(Debug)]
pub struct Metrics {
    pub shards: Vec<ShardMetrics>,
    /// Set when the `fixed:` code sender is on: every login accepts one code.
    pub insecure_fixed_code: bool,
}

impl Metrics {
    pub fn new(shards: usize, insecure_fixed_code: bool) -> Metrics {
        Metrics { shards: (0..shards).map(|_| ShardMetrics::default()).collect(), insecure_fixed_code }
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, kind, value) in SHARD_SERIES {
            let _ = writeln!(out, "# HELP ferrogram_{name} {help}\n# TYPE ferrogram_{name} {kind}");
            for (shard, metrics) in self.shards.iter().enumerate() {
                let _ = writeln!(out, "ferrogram_{name}{{shard=\"{shard}\"}} {}", value(metrics).load(Relaxed));
            }
        }

        let _ = writeln!(
            out,
            "# HELP ferrogram_media_dedup_ratio Logical bytes over stored bytes (1 when nothing is stored).\n\
             # TYPE ferrogram_media_dedup_ratio gauge"
        );
        for (shard, metrics) in self.shards.iter().enumerate() {
            let logical = metrics.media.logical_bytes.load(Relaxed);
            let stored = metrics.media.stored_bytes.load(Relaxed);
            let ratio = if stored == 0 { 1.0 } else { logical as f64 / stored as f64 };
            let _ = writeln!(out, "ferrogram_media_dedup_ratio{{shard=\"{shard}\"}} {ratio}");
        }

        let _ = writeln!(
            out,
            "# HELP ferrogram_requests_total Requests by method.\n# TYPE ferrogram_requests_total counter"
        );
        for (shard, metrics) in self.shards.iter().enumerate() {
            for (index, name) in REQUEST_NAMES.iter().enumerate() {
                let value = metrics.requests[index].load(Relaxed);
                if value > 0 {
                    let _ = writeln!(out, "ferrogram_requests_total{{shard=\"{shard}\",method=\"{name}\"}} {value}");
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP ferrogram_errors_total Errors answered, by code.\n# TYPE ferrogram_errors_total counter"
        );
        for (shard, metrics) in self.shards.iter().enumerate() {
            for (index, code) in ErrorCode::ALL.iter().enumerate() {
                let value = metrics.errors[index].load(Relaxed);
                let _ = writeln!(out, "ferrogram_errors_total{{shard=\"{shard}\",code=\"{}\"}} {value}", code.name());
            }
        }
        let _ = writeln!(
            out,
            "# HELP ferrogram_send_ack_seconds Send to acknowledgement latency.\n# TYPE ferrogram_send_ack_seconds summary"
        );
        for (shard, metrics) in self.shards.iter().enumerate() {
            let Ok(histogram) = metrics.send_ack_us.lock() else { continue };
            for quantile in [0.5, 0.9, 0.99, 0.999, 1.0] {
                let seconds = histogram.value_at_quantile(quantile) as f64 / 1e6;
                let _ =
                    writeln!(out, "ferrogram_send_ack_seconds{{shard=\"{shard}\",quantile=\"{quantile}\"}} {seconds}");
            }
            let sum = histogram.mean() * histogram.len() as f64 / 1e6;
            let _ = writeln!(out, "ferrogram_send_ack_seconds_sum{{shard=\"{shard}\"}} {sum}");
            let _ = writeln!(out, "ferrogram_send_ack_seconds_count{{shard=\"{shard}\"}} {}", histogram.len());
        }
        let _ = writeln!(
            out,
            "# HELP ferrogram_insecure_fixed_login_code 1 when every login accepts one fixed code.\n\
             # TYPE ferrogram_insecure_fixed_login_code gauge\nferrogram_insecure_fixed_login_code {}",
            u8::from(self.insecure_fixed_code)
        );
        out
    }
}

/// Serves `GET /metrics` (any path, really) on `address` from a thread of its own.
pub fn serve(metrics: Arc<Metrics>, address: SocketAddr) -> std::io::Result<SocketAddr> {
    serve_with_push(metrics, None, address)
}

/// The push dispatcher's and the push feeder's metrics, rendered after the gateway's.
pub type PushMetricsPair = (Option<Arc<crate::push::PushMetrics>>, Arc<crate::push_host::PushHostMetrics>);

/// As [`serve`], with the push metrics too when push is on.
pub fn serve_with_push(
    metrics: Arc<Metrics>,
    push: Option<PushMetricsPair>,
    address: SocketAddr,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            // Read the request head (bounded) and answer whatever was asked with the metrics.
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            for _ in 0..100 {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line == "\r\n" || line == "\n" => break,
                    Ok(_) => {}
                }
            }
            let mut body = metrics.render();
            if let Some((dispatcher, host)) = &push {
                if let Some(dispatcher) = dispatcher {
                    dispatcher.render(&mut body);
                }
                host.render(&mut body);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes()));
        }
    })?;
    Ok(bound)
}
