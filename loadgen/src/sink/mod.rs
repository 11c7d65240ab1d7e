//! `ferrogram-loadgen push-sink`: a local stand-in for a push relay. It accepts HTTP/1.1
//! connections (keep-alive, pipelining), answers `200 {}` to every POST and counts requests,
//! the messages they stand for (the relay document's `count`) and body bytes, so a benchmark
//! can read how many pushes the server delivered and how fast.
//!
//! One task per connection on loadgen's executor (`runtime.rs`): each read is parsed into as
//! many requests as it holds and their answers go out in one write. Counters are shared
//! atomics, added once per read, not once per request. Everything is bounded: connections
//! (more are closed on accept), head and body size (a larger request is answered 431 or 413
//! and its connection closed), and the per-second history kept for `--json`.

pub mod http;
pub mod meter;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use self::http::{Parsed, CONTINUE_RESPONSE, NOT_ALLOWED_RESPONSE, OK_CLOSE_RESPONSE, OK_RESPONSE};
use crate::limits::{SINK_BODY_BYTES_MAX, SINK_CONNECTIONS_MAX, SINK_HEAD_BYTES_MAX, SINK_READ_BYTES};
use crate::reactor::{Listener, Stream};
use crate::runtime::Handle;

/// What the sink has seen so far.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// POSTs answered 200.
    pub requests: AtomicU64,
    /// The sum of their `count` fields.
    pub messages: AtomicU64,
    pub body_bytes: AtomicU64,
    /// Requests answered 405 (not a POST).
    pub not_posts: AtomicU64,
    /// Requests refused (malformed, too large); each closed its connection.
    pub bad_requests: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Closed on accept because `SINK_CONNECTIONS_MAX` were open.
    pub connections_refused: AtomicU64,
    pub connections_open: AtomicU64,
}

/// A snapshot of [`SinkCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkTotals {
    pub requests: u64,
    pub messages: u64,
    pub body_bytes: u64,
    pub not_posts: u64,
    pub bad_requests: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub connections_open: u64,
}

impl SinkCounters {
    pub fn totals(&self) -> SinkTotals {
        SinkTotals {
            requests: self.requests.load(Relaxed),
            messages: self.messages.load(Relaxed),
            body_bytes: self.body_bytes.load(Relaxed),
            not_posts: self.not_posts.load(Relaxed),
            bad_requests: self.bad_requests.load(Relaxed),
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
        }
    }
}

/// A bound listening socket and its counters.
#[derive(Debug)]
pub struct PushSink {
    listener: Listener,
    counters: Arc<SinkCounters>,
}

impl PushSink {
    /// Listens on `address` (port 0 picks one).
    pub fn bind(address: SocketAddr) -> io::Result<PushSink> {
        Ok(PushSink { listener: Listener::bind(address)?, counters: Arc::default() })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.get_ref().local_addr()
    }

    pub fn counters(&self) -> Arc<SinkCounters> {
        self.counters.clone()
    }

    /// Accepts connections until the runtime stops, each served by its own task on `handle`.
    pub async fn serve(self, handle: Handle) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it was accepted: the
                    // listener itself is fine, so wait a moment and go on.
                    eprintln!("push-sink: accept failed: {error}");
                    crate::reactor::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let counters = &self.counters;
            if counters.connections_open.load(Relaxed) >= SINK_CONNECTIONS_MAX as u64 {
                counters.connections_refused.fetch_add(1, Relaxed);
                continue;
            }
            counters.connections_accepted.fetch_add(1, Relaxed);
            counters.connections_open.fetch_add(1, Relaxed);
            let counters = counters.clone();
            handle
                .spawn(async move {
                    // A connection that breaks off ends its task; that is all there is to do.
                    let _ = serve_connection(stream, &counters).await;
                    counters.connections_open.fetch_sub(1, Relaxed);
                })
                .detach();
        }
    }
}

/// Answers one connection's requests until it closes, asks to close, or sends a bad request.
async fn serve_connection(mut stream: Stream, counters: &SinkCounters) -> io::Result<()> {
    // Answers are a few dozen bytes: waiting to fill a packet would only add latency.
    stream.get_ref().set_nodelay(true)?;
    let buffer_bytes_max = SINK_HEAD_BYTES_MAX + SINK_BODY_BYTES_MAX;
    let mut buffer = vec![0u8; SINK_READ_BYTES];
    let mut filled = 0;
    let mut answers: Vec<u8> = Vec::with_capacity(OK_RESPONSE.len() * 16);
    let mut continue_sent = false;
    loop {
        let (mut start, mut close) = (0, false);
        let (mut requests, mut messages, mut body_bytes, mut not_posts) = (0u64, 0u64, 0u64, 0u64);
        loop {
            match http::parse(&buffer[start..filled]) {
                Parsed::Request(request) => {
                    let body = &buffer[start + request.body.start..start + request.body.end];
                    if request.is_post {
                        requests += 1;
                        messages += http::message_count(body);
                        body_bytes += body.len() as u64;
                        answers.extend_from_slice(if request.keep_alive { OK_RESPONSE } else { OK_CLOSE_RESPONSE });
                    } else {
                        not_posts += 1;
                        answers.extend_from_slice(NOT_ALLOWED_RESPONSE);
                    }
                    start += request.length;
                    continue_sent = false;
                    if !request.keep_alive {
                        close = true;
                        break;
                    }
                }
                Parsed::Partial { expects_continue } => {
                    if expects_continue && !continue_sent {
                        answers.extend_from_slice(CONTINUE_RESPONSE);
                        continue_sent = true;
                    }
                    break;
                }
                Parsed::Bad(bad) => {
                    counters.bad_requests.fetch_add(1, Relaxed);
                    answers.extend_from_slice(bad.response());
                    close = true;
                    break;
                }
            }
        }
        if requests > 0 {
            counters.requests.fetch_add(requests, Relaxed);
            counters.messages.fetch_add(messages, Relaxed);
            counters.body_bytes.fetch_add(body_bytes, Relaxed);
        }
        if not_posts > 0 {
            counters.not_posts.fetch_add(not_posts, Relaxed);
        }
        if !answers.is_empty() {
            stream.write_all(&answers).await?;
            answers.clear();
        }
        if close {
            return Ok(());
        }
        buffer.copy_within(start..filled, 0);
        filled -= start;
        if filled == buffer.len() {
            if buffer.len() >= buffer_bytes_max {
                // Only reachable with chunk framing around a body near the limit.
                counters.bad_requests.fetch_add(1, Relaxed);
                stream.write_all(http::BadRequest::BodyTooLarge.response()).await?;
                return Ok(());
            }
            buffer.resize((buffer.len() * 2).min(buffer_bytes_max), 0);
        }
        let read = stream.read(&mut buffer[filled..]).await?;
        if read == 0 {
            return Ok(());
        }
        filled += read;
    }
}
