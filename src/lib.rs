//! ferrogram: the server side of a Telegram-class messenger. This crate is the binary and a
//! thin facade over the crates that do the work: `ferrogram-engine`, `ferrogram-net` and
//! `ferrogram-gateway-shim`.

pub use engine;

pub mod messaging_bench;
pub mod serve;
pub mod stress;
