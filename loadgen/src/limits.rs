//! Every bound of the load generator in one place: in-flight work, waits, timeouts, sizes.
//! Loadgen is a client like any other, so its limits follow the server's announced ones
//! (`docs/PROTOCOL.md` §4.1, §6.5) and it never lets its own memory grow without bound.

use std::time::Duration;

/// Operations launched and not yet answered, over all connections. When it is reached the
/// scheduler waits (the wait is part of every later operation's latency) and the run is
/// flagged: loadgen, not the server, then set the pace.
pub const IN_FLIGHT_DEFAULT: usize = 65_536;
pub const IN_FLIGHT_MAX: usize = 1 << 20;
/// Requests one connection keeps in flight. The server answers `OVERLOADED` past 256
/// (`requests_in_flight_max` of `Welcome`), so a connection never goes beyond it.
pub const IN_FLIGHT_PER_CONNECTION_MAX: usize = 256;
/// Users provisioned (connect, log in, sign up) at once.
pub const PROVISION_CONCURRENCY_DEFAULT: usize = 256;
pub const PROVISION_CONCURRENCY_MAX: usize = 4096;
/// One setup step (connect, a login request, creating a chat) gives up after this long, so
/// setup ends even when a server stops answering.
pub const SETUP_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the TCP connection and handshake of one user may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Closing the sessions at the end (log out, close) gives up after this long in all, and the
/// operations still waiting then get this long to see their connection gone.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// One session's log-out at the end of a run.
pub const LOG_OUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the end of a run checks whether every expected delivery has arrived.
pub const DRAIN_POLL: Duration = Duration::from_millis(10);
/// The scheduler's first operation is due this long after setup finished, so the first
/// intended times are not already late when the load starts.
pub const LOAD_START_LEAD: Duration = Duration::from_millis(100);

/// Users, chats and the like: bounds on what one run sets up.
pub const USERS_MAX: usize = 1_000_000;
pub const CHATS_MAX: usize = 1_000_000;
/// Members of one group; the server creates a group with at most 200 members besides its
/// creator and the rest are added one by one.
pub const GROUP_SIZE_MAX: usize = 1000;
pub const GROUP_MEMBERS_AT_CREATION_MAX: usize = 199;
/// Messages sent into each history chat before the load starts.
pub const PREFILL_MAX: usize = 1_000_000;
/// Prefill messages sent together (pipelined) on one connection.
pub const PREFILL_BATCH: usize = 128;
/// Chats one connection may follow with `SubscribeChat` (the server's bound).
pub const FOLLOWED_CHATS_MAX: usize = 1000;

/// The offered rate and the run's length.
pub const RATE_PER_SECOND_MAX: f64 = 10_000_000.0;
pub const DURATION_S_MAX: f64 = 24.0 * 3600.0;

/// Histograms hold microseconds from 1 us to an hour with three significant digits.
pub const HISTOGRAM_US_LOWEST: u64 = 1;
pub const HISTOGRAM_US_HIGHEST: u64 = 3_600_000_000;
pub const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;

/// The report's send → ack timeline: the slowest ack of every 100 ms of the window, for the
/// first hour of it.
pub const TIMELINE_STEP: Duration = Duration::from_millis(100);
pub const TIMELINE_STEPS_MAX: usize = 36_000;

/// Message texts: the stamp plus padding, within the server's text limit.
pub const MESSAGE_BYTES_MAX: usize = ferrogram_net::limits::MESSAGE_TEXT_MAX;

/// The media scenario (`--scenario media`): the default file size, the duplicate pool, the
/// window of parts or ranges one transfer keeps in flight (the Rust client keeps 4 of each;
/// the server holds at most 2 MiB of one connection's file bytes queued, so more ranges only
/// wait there), and the uploads and downloads in flight over the whole run. Loadgen holds at
/// most one window of buffers per transfer in flight, so its media memory stays under
/// `MEDIA_BUFFER_BYTES_MAX`; an operation that finds every upload slot taken waits, and the
/// wait is counted (the run is then loadgen's limit, like the in-flight cap).
pub const MEDIA_FILE_BYTES_DEFAULT: u64 = 256 * 1024;
pub const MEDIA_FILE_BYTES_MAX: u64 = ferrogram_net::limits::FILE_BYTES_MAX;
pub const MEDIA_POOL_FILES_DEFAULT: usize = 8;
pub const MEDIA_POOL_FILES_MAX: usize = 4096;
pub const MEDIA_WINDOW_DEFAULT: usize = 4;
pub const MEDIA_WINDOW_MAX: usize = 8;
pub const MEDIA_UPLOADS_IN_FLIGHT_MAX: usize = 256;
pub const MEDIA_DOWNLOADS_IN_FLIGHT_MAX: usize = 256;
pub const MEDIA_BUFFER_BYTES_MAX: u64 = 4 << 30;
/// Media messages received and waiting for a download slot; a receiver that finds the queue
/// full waits (its update stream backs up, as a slow client's does).
pub const MEDIA_ARRIVALS_QUEUED_MAX: usize = 65_536;

/// File descriptors kept free beyond one per connection (listener-free client: the reactor,
/// output files, standard streams, provisioning connections in passing).
pub const SPARE_FILE_DESCRIPTORS: u64 = 256;

/// A run is flagged as limited by loadgen when its own CPU use passes this share of the cores
/// it may use, or when it issued less than this share of the offered operations.
pub const CPU_BOTTLENECK_SHARE: f64 = 0.80;
pub const RATE_SHORTFALL_SHARE: f64 = 0.95;
/// ... or when it issued more than 1% of its operations later than this after their intended
/// time: its own lateness is inside every latency it measures.
pub const ISSUE_LAG_P99_MAX: Duration = Duration::from_millis(1);

/// `verify`: messages per history page and updates per difference page (the server's
/// maxima), and users checked at once.
pub const VERIFY_HISTORY_PAGE: u32 = ferrogram_net::limits::HISTORY_PAGE_MAX;
pub const VERIFY_DIFFERENCE_PAGE: u32 = ferrogram_net::limits::DIFFERENCE_LIMIT_MAX;
pub const VERIFY_THREADS_DEFAULT: usize = 8;
pub const VERIFY_THREADS_MAX: usize = 256;
pub const VERIFY_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Problems listed one by one in a verify report before the rest are only counted.
pub const VERIFY_PROBLEMS_LISTED_MAX: usize = 50;

/// `push-sink`: bytes of one request's head (request line and headers) and body, headers per
/// request, connections open at once (more are closed on accept), and seconds of per-second
/// rates kept for `--json`. A push is a few hundred bytes of JSON (APNs and FCM cap theirs at
/// 4 KiB); the dispatcher keeps at most 4,096 requests in flight, 256 by default.
pub const SINK_HEAD_BYTES_MAX: usize = 16 * 1024;
pub const SINK_BODY_BYTES_MAX: usize = 1024 * 1024;
pub const SINK_HEADERS_MAX: usize = 64;
pub const SINK_CONNECTIONS_MAX: usize = 8192;
pub const SINK_SECONDS_RECORDED_MAX: usize = 24 * 3600;
/// Bytes read from a sink connection at a time (the buffer grows past it only for a request
/// that does not fit, up to head + body maxima).
pub const SINK_READ_BYTES: usize = 64 * 1024;

const _: () = assert!(IN_FLIGHT_DEFAULT <= IN_FLIGHT_MAX);
const _: () = assert!(PROVISION_CONCURRENCY_DEFAULT <= PROVISION_CONCURRENCY_MAX);
const _: () = assert!(PREFILL_BATCH <= IN_FLIGHT_PER_CONNECTION_MAX, "a prefill batch fits one connection's window");
const _: () = assert!(GROUP_MEMBERS_AT_CREATION_MAX < GROUP_SIZE_MAX);
const _: () = assert!(HISTOGRAM_US_LOWEST < HISTOGRAM_US_HIGHEST);
const _: () = assert!(VERIFY_THREADS_DEFAULT <= VERIFY_THREADS_MAX);
const _: () = assert!(MEDIA_WINDOW_DEFAULT <= MEDIA_WINDOW_MAX);
const _: () = assert!(MEDIA_POOL_FILES_DEFAULT <= MEDIA_POOL_FILES_MAX);
const _: () = assert!(MEDIA_FILE_BYTES_DEFAULT <= MEDIA_FILE_BYTES_MAX);
const _: () = assert!(
    (MEDIA_UPLOADS_IN_FLIGHT_MAX * ferrogram_net::limits::UPLOAD_PART_BYTES_MAX
        + MEDIA_DOWNLOADS_IN_FLIGHT_MAX * ferrogram_net::limits::DOWNLOAD_LIMIT_BYTES_MAX as usize) as u64
        * MEDIA_WINDOW_MAX as u64
        <= MEDIA_BUFFER_BYTES_MAX,
    "every transfer's window of buffers fits the media memory bound"
);
const _: () =
    assert!(MEDIA_WINDOW_MAX < IN_FLIGHT_PER_CONNECTION_MAX, "a window fits one connection's in-flight bound");
const _: () = assert!(SINK_READ_BYTES >= SINK_HEAD_BYTES_MAX, "a maximal head fits the first read buffer");
