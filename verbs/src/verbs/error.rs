//! The error of verbs calls, with the errno libibverbs would give.

use std::fmt;

use super::mr::MrError;
use super::qp_state::TransitionError;
use crate::net::NetError;

/// Why a verbs call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An argument is invalid for this object or state (EINVAL); the text says which.
    Invalid(&'static str),
    /// A queue or table is full, or a limit would be exceeded (ENOMEM).
    Full(&'static str),
    /// The object is still in use (EBUSY).
    Busy(&'static str),
    /// Not supported by xrdma (yet) (EOPNOTSUPP); the text says what.
    Unsupported(&'static str),
    /// A QP state transition the IBTA table does not allow (EINVAL).
    Transition(TransitionError),
    /// Memory registration failed.
    Mr(MrError),
    /// The frame I/O backend failed.
    Net(NetError),
    /// A connection manager call failed with this errno, as librdmacm's would.
    Cm(i32),
}

impl Error {
    pub(crate) fn invalid(why: &'static str) -> Error {
        Error::Invalid(why)
    }

    /// The errno a C caller sees for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Invalid(_) | Error::Transition(_) => libc::EINVAL,
            Error::Full(_) => libc::ENOMEM,
            Error::Busy(_) => libc::EBUSY,
            Error::Unsupported(_) => libc::EOPNOTSUPP,
            Error::Mr(e) => e.errno(),
            Error::Net(e) => e.errno(),
            Error::Cm(errno) => *errno,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(why) => write!(f, "invalid argument: {why}"),
            Error::Full(what) => write!(f, "out of resources: {what}"),
            Error::Busy(what) => write!(f, "busy: {what}"),
            Error::Unsupported(what) => write!(f, "not supported: {what}"),
            Error::Transition(e) => write!(f, "{e}"),
            Error::Mr(e) => write!(f, "{e}"),
            Error::Net(e) => write!(f, "{e}"),
            Error::Cm(errno) => write!(f, "{}", std::io::Error::from_raw_os_error(*errno)),
        }
    }
}

impl std::error::Error for Error {}

impl From<TransitionError> for Error {
    fn from(e: TransitionError) -> Self {
        Error::Transition(e)
    }
}

impl From<MrError> for Error {
    fn from(e: MrError) -> Self {
        Error::Mr(e)
    }
}

impl From<NetError> for Error {
    fn from(e: NetError) -> Self {
        Error::Net(e)
    }
}
