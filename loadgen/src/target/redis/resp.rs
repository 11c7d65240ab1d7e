//! RESP2, the Redis wire protocol, as much as the adapter needs: commands go out as arrays of
//! bulk strings; replies come in as simple strings, errors, integers, bulk strings and arrays
//! (nested, possibly null). Written by hand (about 150 lines) rather than taken from a Redis
//! client crate: the maintained clients are bound to tokio or their own connection model,
//! while loadgen runs on its own reactor (`reactor.rs`) and needs pipelining on its own terms.

use thiserror::Error;

/// The longest bulk string a reply may carry (Redis's own `proto-max-bulk-len` default).
pub const BULK_BYTES_MAX: usize = 512 * 1024 * 1024;
/// The most elements one reply array may announce, and how deep arrays may nest: a reply past
/// either is treated as a broken stream rather than allocated.
pub const ARRAY_ELEMENTS_MAX: usize = 1 << 24;
pub const NESTING_MAX: usize = 8;
/// The longest header line (type byte, length or simple string, CRLF).
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// One reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    /// An error reply: `-CODE message`.
    Error(String),
    Integer(i64),
    /// `None` for the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None` for the null array (`*-1`).
    Array(Option<Vec<Value>>),
}

/// Why a byte stream is not RESP2.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RespError {
    #[error("unknown reply type byte {0:#04x}")]
    UnknownType(u8),
    #[error("a bad length or integer: {0:?}")]
    BadNumber(String),
    #[error("a length past the limit: {0}")]
    TooLong(i64),
    #[error("arrays nested deeper than {NESTING_MAX}")]
    TooDeep,
    #[error("a line without CRLF within {LINE_BYTES_MAX} bytes")]
    LineTooLong,
    #[error("a bulk string not followed by CRLF")]
    MissingTerminator,
    #[error("a simple string or error that is not UTF-8")]
    NotUtf8,
}

/// Appends one command (an array of bulk strings) to `out`.
pub fn encode(out: &mut Vec<u8>, arguments: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(arguments.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for argument in arguments {
        out.push(b'$');
        out.extend_from_slice(argument.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(argument);
        out.extend_from_slice(b"\r\n");
    }
}

/// The first complete reply of `input` and the bytes it took; `Ok(None)` when `input` holds
/// only part of one (read more and try again from the same start).
pub fn decode(input: &[u8]) -> Result<Option<(Value, usize)>, RespError> {
    decode_at(input, 0)
}

fn decode_at(input: &[u8], depth: usize) -> Result<Option<(Value, usize)>, RespError> {
    if depth > NESTING_MAX {
        return Err(RespError::TooDeep);
    }
    let Some((line, mut used)) = line(input)? else { return Ok(None) };
    let (kind, body) = (line[0], &line[1..]);
    let value = match kind {
        b'+' => Value::Simple(text(body)?),
        b'-' => Value::Error(text(body)?),
        b':' => Value::Integer(number(body)?),
        b'$' => {
            let length = number(body)?;
            if length < 0 {
                Value::Bulk(None)
            } else {
                let length = bounded(length, BULK_BYTES_MAX)?;
                if input.len() < used + length + 2 {
                    return Ok(None);
                }
                if &input[used + length..used + length + 2] != b"\r\n" {
                    return Err(RespError::MissingTerminator);
                }
                let bytes = input[used..used + length].to_vec();
                used += length + 2;
                Value::Bulk(Some(bytes))
            }
        }
        b'*' => {
            let count = number(body)?;
            if count < 0 {
                Value::Array(None)
            } else {
                let count = bounded(count, ARRAY_ELEMENTS_MAX)?;
                // Never trust an announced count for the allocation: a partial reply is common.
                let mut elements = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    let Some((element, taken)) = decode_at(&input[used..], depth + 1)? else { return Ok(None) };
                    elements.push(element);
                    used += taken;
                }
                Value::Array(Some(elements))
            }
        }
        other => return Err(RespError::UnknownType(other)),
    };
    Ok(Some((value, used)))
}

/// The first line of `input` without its CRLF, and the bytes it took with it.
fn line(input: &[u8]) -> Result<Option<(&[u8], usize)>, RespError> {
    let window = &input[..input.len().min(LINE_BYTES_MAX)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(0) => Err(RespError::UnknownType(b'\r')),
        Some(end) => Ok(Some((&input[..end], end + 2))),
        None if input.len() >= LINE_BYTES_MAX => Err(RespError::LineTooLong),
        None => Ok(None),
    }
}

fn text(body: &[u8]) -> Result<String, RespError> {
    String::from_utf8(body.to_vec()).map_err(|_| RespError::NotUtf8)
}

fn number(body: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| RespError::BadNumber(String::from_utf8_lossy(body).into_owned()))
}

fn bounded(length: i64, max: usize) -> Result<usize, RespError> {
    usize::try_from(length).ok().filter(|&length| length <= max).ok_or(RespError::TooLong(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(input: &[u8]) -> Value {
        let (value, used) = decode(input).expect("valid").expect("complete");
        assert_eq!(used, input.len(), "the whole reply is taken");
        value
    }

    // A command is an array of bulk strings, binary-safe (lengths, not delimiters).
    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"FCALL", b"lg_send", b"0", b"a b\r\n"]);
        assert_eq!(out, b"*4\r\n$5\r\nFCALL\r\n$7\r\nlg_send\r\n$1\r\n0\r\n$5\r\na b\r\n\r\n");
        let mut empty = Vec::new();
        encode(&mut empty, &[b"PING", b""]);
        assert_eq!(empty, b"*2\r\n$4\r\nPING\r\n$0\r\n\r\n");
    }

    // Each reply type decodes, nulls included, and an encoded command decodes back as the
    // array of bulk strings it is.
    #[test]
    fn each_reply_type_decodes() {
        assert_eq!(complete(b"+OK\r\n"), Value::Simple("OK".into()));
        assert_eq!(complete(b"-ERR no such\r\n"), Value::Error("ERR no such".into()));
        assert_eq!(complete(b":-42\r\n"), Value::Integer(-42));
        assert_eq!(complete(b"$3\r\na\r\n\r\n"), Value::Bulk(Some(b"a\r\n".to_vec())));
        assert_eq!(complete(b"$0\r\n\r\n"), Value::Bulk(Some(Vec::new())));
        assert_eq!(complete(b"$-1\r\n"), Value::Bulk(None));
        assert_eq!(complete(b"*-1\r\n"), Value::Array(None));
        assert_eq!(complete(b"*0\r\n"), Value::Array(Some(Vec::new())));
        assert_eq!(
            complete(b"*3\r\n$7\r\nmessage\r\n*1\r\n:1\r\n$-1\r\n"),
            Value::Array(Some(vec![
                Value::Bulk(Some(b"message".to_vec())),
                Value::Array(Some(vec![Value::Integer(1)])),
                Value::Bulk(None),
            ]))
        );
        let mut command = Vec::new();
        encode(&mut command, &[b"GET", b"k"]);
        assert_eq!(
            complete(&command),
            Value::Array(Some(vec![Value::Bulk(Some(b"GET".to_vec())), Value::Bulk(Some(b"k".to_vec()))]))
        );
    }

    // A reply cut anywhere is "not yet" (never an error, never a wrong value), and two replies
    // back to back come out one at a time.
    #[test]
    fn partial_reads_wait_for_more() {
        let whole: &[u8] = b"*2\r\n$5\r\nhello\r\n:7\r\n+NEXT\r\n";
        let first_length = whole.len() - b"+NEXT\r\n".len();
        for cut in 0..first_length {
            assert_eq!(decode(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        let (first, used) = decode(whole).expect("valid").expect("complete");
        assert_eq!(used, first_length);
        assert_eq!(first, Value::Array(Some(vec![Value::Bulk(Some(b"hello".to_vec())), Value::Integer(7)])));
        assert_eq!(decode(&whole[used..]), Ok(Some((Value::Simple("NEXT".into()), 7))));
    }

    // Garbage is refused rather than guessed at or allocated for.
    #[test]
    fn malformed_streams_are_errors() {
        assert_eq!(decode(b"!3\r\n"), Err(RespError::UnknownType(b'!')));
        assert!(matches!(decode(b":12x\r\n"), Err(RespError::BadNumber(_))));
        assert_eq!(decode(b"$3\r\nabcd\r\n"), Err(RespError::MissingTerminator));
        assert_eq!(decode(b"$999999999999\r\n"), Err(RespError::TooLong(999_999_999_999)));
        assert_eq!(decode(b"*99999999999\r\n"), Err(RespError::TooLong(99_999_999_999)));
        assert_eq!(decode(&[b"*1\r\n".repeat(NESTING_MAX + 2), b":1\r\n".to_vec()].concat()), Err(RespError::TooDeep));
        assert_eq!(decode(&vec![b'+'; LINE_BYTES_MAX]), Err(RespError::LineTooLong));
        assert_eq!(decode(b"\r\n"), Err(RespError::UnknownType(b'\r')));
    }
}
