//! One error type for the whole crate. Every message says what was wrong and, where it can, what to do.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The weight file is unreadable, or does not fit the architecture.
    Weights(String),
    /// The image or tensor handed in cannot be explained as it is.
    Input(String),
    /// An option (layer, method, class, colormap...) names something that does not exist.
    Option(String),
    /// The numbers went bad (NaN/Inf) somewhere in the network or the method.
    Numeric(String),
    /// A failure inside the tensor library; should not happen on validated input.
    Internal(String),
    /// The caller asked the computation to stop (`cancel::request`); nothing is wrong with the input.
    Cancelled(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Weights(m) => write!(f, "weights: {m}"),
            Error::Input(m) => write!(f, "input: {m}"),
            Error::Option(m) => write!(f, "option: {m}"),
            Error::Numeric(m) => write!(f, "numeric: {m}"),
            Error::Internal(m) => write!(f, "internal: {m}"),
            Error::Cancelled(m) => write!(f, "cancelled: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for building an `Err` of one kind with a formatted message.
#[macro_export]
macro_rules! fail {
    ($kind:ident, $($arg:tt)*) => {
        Err($crate::error::Error::$kind(format!($($arg)*)))
    };
}
