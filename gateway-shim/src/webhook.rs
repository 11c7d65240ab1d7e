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
