//! shardgate's Redis client (placeholder doc, completed below).

mod encode;
pub mod error;
pub mod pipeline;
pub mod push;
pub mod value;

pub use error::{Error, ErrorCode, ProtocolError, ServerError};
pub use push::Push;
pub use value::Value;
