//! The little HTTP/1.1 the push sink speaks: find where one request ends in a buffer (heads
//! parsed by `httparse`, bodies framed by `Content-Length` or chunked), whether the connection
//! stays open after it, and the canned answers. No I/O here, so every case is unit-tested.

use std::ops::Range;

use crate::limits::{SINK_BODY_BYTES_MAX, SINK_HEADERS_MAX, SINK_HEAD_BYTES_MAX};

/// The answer to every POST.
pub const OK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
/// The same, for a request that asked to close the connection.
pub const OK_CLOSE_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
/// The answer to anything but a POST (the connection stays open).
pub const NOT_ALLOWED_RESPONSE: &[u8] = b"HTTP/1.1 405 Method Not Allowed\r\nallow: POST\r\ncontent-length: 0\r\n\r\n";
/// Sent once when a request's head carries `Expect: 100-continue` and its body has not come.
pub const CONTINUE_RESPONSE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What the start of a buffer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// One whole request.
    Request(Request),
    /// Not a whole request yet. `expects_continue`: its head is complete and asks for
    /// `100 Continue` before the client sends the body.
    Partial { expects_continue: bool },
    /// A request the sink refuses; the connection closes after the answer.
    Bad(BadRequest),
}

/// A whole request at the start of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Bytes of head and body (as framed).
    pub length: usize,
    pub is_post: bool,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
    /// Where the body lies in the buffer (framing included when chunked).
    pub body: Range<usize>,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadRequest {
    #[error("malformed request")]
    Malformed,
    #[error("request head over {SINK_HEAD_BYTES_MAX} bytes")]
    HeadTooLarge,
    #[error("more than {SINK_HEADERS_MAX} headers")]
    TooManyHeaders,
    #[error("request body over {SINK_BODY_BYTES_MAX} bytes")]
    BodyTooLarge,
    #[error("a transfer encoding other than chunked")]
    UnsupportedEncoding,
}

impl BadRequest {
    /// The whole answer, which also closes the connection.
    pub fn response(self) -> &'static [u8] {
        match self {
            BadRequest::Malformed => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            BadRequest::HeadTooLarge | BadRequest::TooManyHeaders => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
            BadRequest::BodyTooLarge => {
                b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
            BadRequest::UnsupportedEncoding => {
                b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
        }
    }
}

/// Finds the first request in `bytes`.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; SINK_HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let head_length = match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) if length <= SINK_HEAD_BYTES_MAX => length,
        Ok(httparse::Status::Complete(_)) => return Parsed::Bad(BadRequest::HeadTooLarge),
        Ok(httparse::Status::Partial) if bytes.len() > SINK_HEAD_BYTES_MAX => {
            return Parsed::Bad(BadRequest::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial { expects_continue: false },
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad(BadRequest::TooManyHeaders),
        Err(_) => return Parsed::Bad(BadRequest::Malformed),
    };
    let head = match Head::read(&request) {
        Ok(head) => head,
        Err(bad) => return Parsed::Bad(bad),
    };
    let rest = &bytes[head_length..];
    let body_length = if head.chunked {
        match chunked_length(rest) {
            Ok(Some(length)) => length,
            Ok(None) => return Parsed::Partial { expects_continue: head.expects_continue },
            Err(bad) => return Parsed::Bad(bad),
        }
    } else {
        let length = head.content_length.unwrap_or(0);
        if rest.len() < length {
            return Parsed::Partial { expects_continue: head.expects_continue };
        }
        length
    };
    Parsed::Request(Request {
        length: head_length + body_length,
        is_post: head.is_post,
        keep_alive: head.keep_alive,
        body: head_length..head_length + body_length,
    })
}

/// The number in a relay document's `"count":N` field (how many messages one push stands
/// for), or 0 when there is none. JSON escapes every quote inside a string, so `count":`
/// with a bare quote can only end a key.
pub fn message_count(body: &[u8]) -> u64 {
    const KEY: &[u8] = b"\"count\":";
    let Some(at) = body.windows(KEY.len()).position(|window| window == KEY) else { return 0 };
    let digits = body[at + KEY.len()..].iter().skip_while(|byte| byte.is_ascii_whitespace());
    let mut count: u64 = 0;
    for &byte in digits.take_while(|byte| byte.is_ascii_digit()).take(20) {
        count = count.saturating_mul(10).saturating_add(u64::from(byte - b'0'));
    }
    count
}

/// What the sink needs from a request's head.
struct Head {
    is_post: bool,
    keep_alive: bool,
    content_length: Option<usize>,
    chunked: bool,
    expects_continue: bool,
}

impl Head {
    fn read(request: &httparse::Request<'_, '_>) -> Result<Head, BadRequest> {
        let http_1_1 = request.version == Some(1);
        let mut head = Head {
            is_post: request.method == Some("POST"),
            keep_alive: http_1_1,
            content_length: None,
            chunked: false,
            expects_continue: false,
        };
        for header in request.headers.iter() {
            let value = std::str::from_utf8(header.value).map_err(|_| BadRequest::Malformed)?.trim();
            if header.name.eq_ignore_ascii_case("content-length") {
                let length: usize = value.parse().map_err(|_| BadRequest::Malformed)?;
                if head.content_length.is_some_and(|earlier| earlier != length) {
                    return Err(BadRequest::Malformed);
                }
                if length > SINK_BODY_BYTES_MAX {
                    return Err(BadRequest::BodyTooLarge);
                }
                head.content_length = Some(length);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                // Only `chunked` alone: anything else (gzip, chunked not last) is not framed
                // in a way the sink reads.
                if !value.eq_ignore_ascii_case("chunked") {
                    return Err(BadRequest::UnsupportedEncoding);
                }
                head.chunked = true;
            } else if header.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        head.keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") && !http_1_1 {
                        head.keep_alive = true;
                    }
                }
            } else if header.name.eq_ignore_ascii_case("expect") && value.eq_ignore_ascii_case("100-continue") {
                head.expects_continue = http_1_1;
            }
        }
        // Both framings at once is how requests are smuggled: refused (RFC 9112 §6.3).
        if head.chunked && head.content_length.is_some() {
            return Err(BadRequest::Malformed);
        }
        Ok(head)
    }
}

/// The framed length of a chunked body at the start of `bytes` (chunks, the last chunk and
/// trailers), `None` while incomplete.
fn chunked_length(bytes: &[u8]) -> Result<Option<usize>, BadRequest> {
    /// A chunk-size line (size and extensions) longer than this is not one.
    const SIZE_LINE_BYTES_MAX: usize = 1024;
    let mut at = 0;
    let mut data = 0usize;
    loop {
        let Some(line_length) = line_at(bytes, at, SIZE_LINE_BYTES_MAX)? else { return Ok(None) };
        let line = &bytes[at..at + line_length];
        let size_text = line.split(|&byte| byte == b';').next().unwrap_or_default();
        let size_text = std::str::from_utf8(size_text).map_err(|_| BadRequest::Malformed)?.trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| BadRequest::Malformed)?;
        at += line_length + 2;
        if size == 0 {
            // Trailer lines until an empty one.
            loop {
                let Some(trailer_length) = line_at(bytes, at, SINK_HEAD_BYTES_MAX)? else { return Ok(None) };
                at += trailer_length + 2;
                if trailer_length == 0 {
                    return Ok(Some(at));
                }
            }
        }
        data = data.checked_add(size).ok_or(BadRequest::BodyTooLarge)?;
        if data > SINK_BODY_BYTES_MAX {
            return Err(BadRequest::BodyTooLarge);
        }
        if bytes.len() < at + size + 2 {
            return Ok(None);
        }
        if &bytes[at + size..at + size + 2] != b"\r\n" {
            return Err(BadRequest::Malformed);
        }
        at += size + 2;
    }
}

/// The length of the CRLF-terminated line starting at `at`, `None` while its end has not
/// come; a line longer than `max` is malformed.
fn line_at(bytes: &[u8], at: usize, max: usize) -> Result<Option<usize>, BadRequest> {
    let rest = &bytes[at.min(bytes.len())..];
    match rest.windows(2).position(|pair| pair == b"\r\n") {
        Some(length) if length <= max => Ok(Some(length)),
        Some(_) => Err(BadRequest::Malformed),
        None if rest.len() > max + 1 => Err(BadRequest::Malformed),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(parsed: Parsed) -> Request {
        match parsed {
            Parsed::Request(request) => request,
            other => panic!("expected a whole request, got {other:?}"),
        }
    }

    // A POST with a Content-Length body is whole once its last body byte is there, and not
    // one byte earlier; HTTP/1.1 keeps the connection unless asked to close, HTTP/1.0 closes
    // it unless asked to keep it.
    #[test]
    fn content_length_frames_the_body_and_connection_headers_decide_keep_alive() {
        let text = b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let whole = request(parse(text));
        assert_eq!((whole.length, whole.is_post, whole.keep_alive), (text.len(), true, true));
        assert_eq!(&text[whole.body.clone()], b"hello");
        assert_eq!(parse(&text[..text.len() - 1]), Parsed::Partial { expects_continue: false });
        assert_eq!(parse(&text[..10]), Parsed::Partial { expects_continue: false });

        let close = request(parse(b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"));
        assert!(!close.keep_alive);
        let old = request(parse(b"POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n"));
        assert!(!old.keep_alive);
        let old_kept = request(parse(b"POST / HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"));
        assert!(old_kept.keep_alive);
        let get = request(parse(b"GET / HTTP/1.1\r\n\r\n"));
        assert_eq!((get.is_post, get.length), (false, 18));
    }

    // Two pipelined requests: the first one's length says where the second starts.
    #[test]
    fn pipelined_requests_are_found_one_after_another() {
        let one = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_vec();
        let mut two = one.clone();
        two.extend_from_slice(&one);
        let first = request(parse(&two));
        assert_eq!(first.length, one.len());
        let second = request(parse(&two[first.length..]));
        assert_eq!(second.length, one.len());
    }

    // A chunked body (with an extension and a trailer) is whole only after its last chunk and
    // the empty line; broken chunk framing is refused.
    #[test]
    fn chunked_bodies_are_framed_to_their_end() {
        let text =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nT: 1\r\n\r\n";
        let whole = request(parse(text));
        assert_eq!(whole.length, text.len());
        for cut in [text.len() - 1, text.len() - 3, 60, 50] {
            assert_eq!(parse(&text[..cut]), Parsed::Partial { expects_continue: false }, "cut at {cut}");
        }
        let broken = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWikiXX0\r\n\r\n";
        assert_eq!(parse(broken), Parsed::Bad(BadRequest::Malformed));
        let not_hex = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(parse(not_hex), Parsed::Bad(BadRequest::Malformed));
    }

    // Every bound holds: head size, header count, body size (declared or chunked), and
    // ambiguous framing is refused.
    #[test]
    fn oversized_and_ambiguous_requests_are_refused() {
        let mut long_head = b"POST / HTTP/1.1\r\nX: ".to_vec();
        long_head.resize(SINK_HEAD_BYTES_MAX + 10, b'a');
        assert_eq!(parse(&long_head), Parsed::Bad(BadRequest::HeadTooLarge));

        let mut many = b"POST / HTTP/1.1\r\n".to_vec();
        for index in 0..=SINK_HEADERS_MAX {
            many.extend_from_slice(format!("H{index}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Parsed::Bad(BadRequest::TooManyHeaders));

        let huge = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", SINK_BODY_BYTES_MAX + 1);
        assert_eq!(parse(huge.as_bytes()), Parsed::Bad(BadRequest::BodyTooLarge));
        let huge_chunk =
            format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", SINK_BODY_BYTES_MAX + 1);
        assert_eq!(parse(huge_chunk.as_bytes()), Parsed::Bad(BadRequest::BodyTooLarge));

        let both = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(both), Parsed::Bad(BadRequest::Malformed));
        let gzip = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(parse(gzip), Parsed::Bad(BadRequest::UnsupportedEncoding));
        assert_eq!(parse(b"NOT HTTP\r\n\r\n"), Parsed::Bad(BadRequest::Malformed));
        assert_eq!(parse(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Parsed::Bad(BadRequest::Malformed));
    }

    // A head asking for 100-continue says so while its body is missing.
    #[test]
    fn expect_continue_is_reported_while_the_body_is_missing() {
        let head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(parse(head), Parsed::Partial { expects_continue: true });
        let mut whole = head.to_vec();
        whole.extend_from_slice(b"{}");
        assert!(matches!(parse(&whole), Parsed::Request(_)));
    }

    // The count of a relay document, wherever the key is and with or without spaces; an
    // escaped quote inside a text is not a key.
    #[test]
    fn message_counts_come_from_the_count_key() {
        assert_eq!(message_count(br#"{"badge":4,"body":"hi","count":12,"date":1}"#), 12);
        assert_eq!(message_count(br#"{"count": 3}"#), 3);
        assert_eq!(message_count(br#"{"text":"say \"count\":9","count":2}"#), 2);
        assert_eq!(message_count(b"{}"), 0);
    }
}
