//! ferrogram's wire protocol (DESIGN §6): length-prefixed frames, versioned handshake,
//! requests with a client-chosen `req_id`, unsolicited updates, rkyv payloads validated before
//! use, typed errors, and a client (`client`). `net` knows nothing of storage.

pub mod bytes;
pub mod client;
pub mod codec;
pub mod frame;
pub mod limits;
pub mod protocol;
pub mod transfer;

pub use client::{BlockingClient, Client, ClientError, Connection, UpdateStream};
pub use codec::{DecodeError, EncodeError};
pub use frame::{FrameError, FrameHeader, FrameType};
pub use protocol::*;
