//! The one error type of the wire layer.

use core::fmt;

/// Why a buffer could not be parsed, or a `Repr` could not be emitted.
///
/// Small and `Copy`, like smoltcp's `wire::Error`; the verbs layer maps it to
/// its own error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than a header or a length field says.
    Truncated,
    /// A field holds a value the protocol forbids (bad version, inconsistent
    /// lengths, reserved codes), or a `Repr` cannot be encoded.
    Malformed,
    /// Legal on the wire but not handled by xrdma (IP fragments, unknown
    /// opcodes, a nonzero BTH transport version, non-UDP payloads).
    Unsupported,
    /// The IPv4 header checksum or the RoCEv2 ICRC does not match.
    BadChecksum,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Error::Truncated => "truncated packet",
            Error::Malformed => "malformed packet",
            Error::Unsupported => "unsupported packet",
            Error::BadChecksum => "bad checksum",
        };
        f.write_str(text)
    }
}

impl std::error::Error for Error {}

/// The result type of the wire layer.
pub type Result<T> = core::result::Result<T, Error>;
