//! Errors as data: what a Redis command can end in.
//!
//! A reply that the server sent as an error (`-ERR …`, `-NOSCRIPT …`, `!…`) is a
//! [`ServerError`]: its first word is parsed into an [`ErrorCode`] so callers match on a variant
//! (`NoScript` → load the script, `Busy`/`Loading`/`TryAgain` → retry later) instead of on
//! strings. Everything the client itself decides (connection lost, timed out, bytes that are not
//! RESP3) is a variant of [`Error`]. The gateway will map these to its wire errors in one
//! exhaustive match, so a new variant must be added deliberately.

use std::fmt;
use std::time::Duration;

/// The code of a server error: the first word of its text, as Redis documents them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// `ERR`: the generic error (wrong arguments, unknown command, script runtime error …).
    Err,
    /// `NOSCRIPT`: `EVALSHA` named a script the server does not have (after a restart or
    /// `SCRIPT FLUSH`); load it and retry.
    NoScript,
    /// `BUSY`: a script or function is running past `busy-reply-threshold`.
    Busy,
    /// `BUSYKEY`: the target key exists (`RESTORE`, `MIGRATE`).
    BusyKey,
    /// `BUSYGROUP`: `XGROUP CREATE` of a group that exists.
    BusyGroup,
    /// `NOGROUP`: the stream or its consumer group does not exist.
    NoGroup,
    /// `WRONGTYPE`: the key holds another type.
    WrongType,
    /// `NOAUTH`: authentication is required.
    NoAuth,
    /// `WRONGPASS`: the user or password is wrong.
    WrongPass,
    /// `NOPERM`: the ACL user may not run this.
    NoPerm,
    /// `NOPROTO`: the server does not speak the asked protocol version.
    NoProto,
    /// `LOADING`: the server is still loading its data set (after a restart).
    Loading,
    /// `READONLY`: a write sent to a replica.
    ReadOnly,
    /// `MASTERDOWN`: a replica lost its master and `replica-serve-stale-data` is off.
    MasterDown,
    /// `MISCONF`: the server refuses writes because it cannot persist.
    Misconf,
    /// `OOM`: `maxmemory` reached.
    Oom,
    /// `EXECABORT`: a transaction was discarded because of an earlier error.
    ExecAbort,
    /// `TRYAGAIN`: a multi-key operation during resharding.
    TryAgain,
    /// `MOVED`: cluster redirection (not used by shardgate, which runs no Redis Cluster).
    Moved,
    /// `ASK`: cluster redirection during migration.
    Ask,
    /// `CLUSTERDOWN`: the cluster is down.
    ClusterDown,
    /// `UNBLOCKED`: a blocked client was released by `CLIENT UNBLOCK … ERROR`.
    Unblocked,
    /// Any other first word (kept as sent).
    Other(String),
}

impl ErrorCode {
    /// Parses the first word of an error text.
    pub fn parse(word: &str) -> ErrorCode {
        match word {
            "ERR" => ErrorCode::Err,
            "NOSCRIPT" => ErrorCode::NoScript,
            "BUSY" => ErrorCode::Busy,
            "BUSYKEY" => ErrorCode::BusyKey,
            "BUSYGROUP" => ErrorCode::BusyGroup,
            "NOGROUP" => ErrorCode::NoGroup,
            "WRONGTYPE" => ErrorCode::WrongType,
            "NOAUTH" => ErrorCode::NoAuth,
            "WRONGPASS" => ErrorCode::WrongPass,
            "NOPERM" => ErrorCode::NoPerm,
            "NOPROTO" => ErrorCode::NoProto,
            "LOADING" => ErrorCode::Loading,
            "READONLY" => ErrorCode::ReadOnly,
            "MASTERDOWN" => ErrorCode::MasterDown,
            "MISCONF" => ErrorCode::Misconf,
            "OOM" => ErrorCode::Oom,
            "EXECABORT" => ErrorCode::ExecAbort,
            "TRYAGAIN" => ErrorCode::TryAgain,
            "MOVED" => ErrorCode::Moved,
            "ASK" => ErrorCode::Ask,
            "CLUSTERDOWN" => ErrorCode::ClusterDown,
            "UNBLOCKED" => ErrorCode::Unblocked,
            other => ErrorCode::Other(other.to_string()),
        }
    }

    /// True when the same command may succeed later without any change: the server is busy,
    /// loading, or between roles. The caller decides whether a retry is safe (idempotence).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ErrorCode::Busy
                | ErrorCode::Loading
                | ErrorCode::MasterDown
                | ErrorCode::TryAgain
                | ErrorCode::ClusterDown
                | ErrorCode::ReadOnly
        )
    }
}

/// An error reply from the server: `code` is the parsed first word, `message` the whole text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// What kind of error, for matching.
    pub code: ErrorCode,
    /// The full text as the server sent it (e.g. `NOSCRIPT No matching script. …`).
    pub message: String,
}

impl ServerError {
    /// Builds one from the text of a simple or blob error.
    pub fn from_text(message: String) -> ServerError {
        let word = message.split(' ').next().unwrap_or("");
        ServerError {
            code: ErrorCode::parse(word),
            message,
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerError {}

/// Bytes from the server that are not valid RESP3, or a reply nobody asked for: the connection
/// can no longer be trusted to pair replies with requests and is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The decoder refused the bytes.
    #[error("undecodable RESP3 from the server: {0}")]
    Decode(String),
    /// A reply (not a push) arrived while no request was waiting.
    #[error("a reply arrived with no request in flight")]
    UnexpectedReply,
    /// A frame kind that RESP3 only allows as a chunk of a streamed one arrived alone.
    #[error("a streamed RESP3 frame arrived, which Redis does not send")]
    Streamed,
}

/// How a command ended when it did not get a normal reply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The server answered with an error reply.
    #[error("redis error: {0}")]
    Server(ServerError),
    /// The connection was lost (or is down and the client fails fast, or did not come back
    /// within the command's timeout). The command may or may not have run on the server.
    #[error("redis connection lost")]
    Disconnected,
    /// No reply within the timeout. The command may still run; its late reply is discarded.
    #[error("redis command timed out after {0:?}")]
    Timeout(Duration),
    /// Connecting or the `HELLO 3` handshake failed (address, refused, auth …).
    #[error("redis connect to {addr} failed: {reason}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why (the OS error, or the server's refusal; never a password).
        reason: String,
    },
    /// The server sent bytes that are not RESP3 or a reply nobody asked for.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The reply had another shape than the command documents (e.g. `SCRIPT LOAD` not
    /// answering the sha1 of the script it was given).
    #[error("unexpected redis reply: {0}")]
    UnexpectedReply(String),
    /// The client was closed by its owner.
    #[error("redis client closed")]
    Closed,
}

impl Error {
    /// True when the failure is about reaching Redis rather than the command itself: the
    /// gateway answers these with `UNAVAILABLE`, `retryable: true`.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Disconnected | Error::Timeout(_) | Error::Connect { .. } => true,
            Error::Server(e) => e.code.is_transient(),
            Error::Protocol(_) | Error::UnexpectedReply(_) | Error::Closed => false,
        }
    }
}

impl From<ServerError> for Error {
    fn from(e: ServerError) -> Error {
        Error::Server(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_word_is_the_code() {
        let e = ServerError::from_text("NOSCRIPT No matching script. Please use EVAL.".into());
        assert_eq!(e.code, ErrorCode::NoScript);
        assert_eq!(e.message, "NOSCRIPT No matching script. Please use EVAL.");
        let e = ServerError::from_text("BUSY Redis is busy running a script.".into());
        assert_eq!(e.code, ErrorCode::Busy);
        assert!(e.code.is_transient());
        let e = ServerError::from_text("ERR unknown command 'FOO'".into());
        assert_eq!(e.code, ErrorCode::Err);
        assert!(!Error::Server(e).is_unavailable());
        let e = ServerError::from_text("WEIRD thing".into());
        assert_eq!(e.code, ErrorCode::Other("WEIRD".into()));
        assert_eq!(
            ServerError::from_text(String::new()).code,
            ErrorCode::Other(String::new())
        );
    }

    #[test]
    fn reaching_redis_is_what_makes_an_error_unavailable() {
        assert!(Error::Disconnected.is_unavailable());
        assert!(Error::Timeout(Duration::from_secs(1)).is_unavailable());
        assert!(!Error::Closed.is_unavailable());
        assert!(!Error::Protocol(ProtocolError::UnexpectedReply).is_unavailable());
    }
}
