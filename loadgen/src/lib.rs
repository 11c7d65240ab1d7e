//! ferrogram-loadgen: the open-loop load generator (DESIGN §9, issue 5).
//!
//! A run plans users and chats from a seed (`plan`), sets them up on a target through its
//! normal client API (`setup`), then offers operations at a fixed rate whatever the latency
//! (`schedule`, `run`), measuring each from its intended start into HdrHistograms (`stats`):
//! send → ack, send → delivery on every online recipient (the intended time travels in the
//! message text, `stamp`), history pages, media messages (upload, send, the recipient's
//! download checked byte for byte against content regenerated from the caption's seed:
//! `media`), and loadgen's own lateness. It reports achieved vs
//! offered rate, errors by code, lost deliveries and its own CPU use, and says when it, not
//! the server, was the bottleneck (`report`). `acks` and `verify` check afterwards that every
//! acknowledged message is stored and delivered exactly once.
//!
//! Targets sit behind one trait (`target`): ferrogram today, other systems (Redis) next.
//!
//! `push-sink` (`sink`) is the receiving end for push benchmarks: a local HTTP/1.1 relay
//! that answers every POST and counts them; `--push-devices` gives every provisioned user a
//! `webhook` device, so offline recipients cause pushes to it.

pub mod acks;
pub mod cli;
pub mod limits;
pub mod media;
pub mod observer;
pub mod options;
pub mod plan;
pub mod reactor;
pub mod report;
pub mod run;
pub mod runtime;
pub mod schedule;
pub mod setup;
pub mod sink;
pub mod slots;
pub mod stamp;
pub mod stats;
pub mod svg;
pub mod system;
pub mod target;
pub mod verify;
