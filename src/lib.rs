//! ferrogram: the server side of a Telegram-class messenger. This crate is the binary and a
//! thin facade over the crates that do the work (`ferrogram-engine` so far).

pub use engine;

pub mod messaging_bench;
pub mod stress;
