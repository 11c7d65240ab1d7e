//! The `webhook:URL` code sender: POSTs `{"phone": ..., "code": ...}` to an SMS relay from a
//! thread of its own, so a slow relay never stalls a shard. The queue is bounded; when it is
//! full, `SendCode` answers `OVERLOADED` rather than queueing without limit.

use std::time::Duration;

const QUEUE_MAX: usize = 1024;
const ATTEMPTS_MAX: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct WebhookSender {
    queue: crossbeam::channel::Sender<(String, String)>,
}

/// The queue of codes to send is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the webhook queue is full")]
pub struct QueueFull;

impl WebhookSender {
    pub fn start(url: String) -> WebhookSender {
        let (queue, jobs) = crossbeam::channel::bounded::<(String, String)>(QUEUE_MAX);
        let spawned = std::thread::Builder::new().name("code-webhook".into()).spawn(move || {
            let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
            for (phone, code) in jobs {
                // Phones are validated as `+` and digits and codes as digits, so the JSON needs
                // no escaping.
                let body = format!(r#"{{"phone":"{phone}","code":"{code}"}}"#);
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let sent = agent.post(&url).set("content-type", "application/json").send_string(&body);
                    match sent {
                        Ok(_) => break,
                        Err(error) if attempt < ATTEMPTS_MAX => {
                            tracing::warn!(%error, attempt, "login code webhook failed; retrying");
                            std::thread::sleep(Duration::from_millis(200 << attempt));
                        }
                        Err(error) => {
                            tracing::error!(%error, phone, "login code webhook failed; giving up");
                            break;
                        }
                    }
                }
            }
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the login code webhook thread");
        }
        WebhookSender { queue }
    }

    pub fn send(&self, phone: &str, code: &str) -> Result<(), QueueFull> {
        self.queue.try_send((phone.to_owned(), code.to_owned())).map_err(|_| QueueFull)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    // The webhook sender POSTs the phone and code as JSON to the relay, retrying a relay that
    // failed once.
    #[test]
    fn codes_are_posted_as_json() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/sms", listener.local_addr().unwrap());
        let receiver = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for attempt in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let status = if attempt == 0 { "500 Internal Server Error" } else { "200 OK" };
                let mut stream = reader.into_inner();
                write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
                bodies.push((head, String::from_utf8(body).unwrap()));
            }
            bodies
        });
        let sender = WebhookSender::start(url);
        sender.send("+15551234567", "42424").unwrap();
        let bodies = receiver.join().unwrap();
        assert!(bodies[1].0.starts_with("POST /sms HTTP/1.1"), "{}", bodies[1].0);
        assert!(bodies[1].0.to_ascii_lowercase().contains("content-type: application/json"));
        assert_eq!(bodies[1].1, r#"{"phone":"+15551234567","code":"42424"}"#);
        assert_eq!(bodies[0].1, bodies[1].1, "the retry sends the same code");
    }
}
