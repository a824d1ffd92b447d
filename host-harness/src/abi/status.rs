//! The status codes host calls return to the guest.
//!
//! Only the codes a guest can be handed are representable: the spec's `INVALID_MEMORY_ACCESS` (6) and
//! `UNIMPLEMENTED` (12) are missing from the Rust SDK's `Status` enum, so returning them to a Rust guest is
//! undefined behaviour. A bad pointer traps instead, and nothing here is ever "unimplemented".

/// A proxy-wasm status code a host call may return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    /// `OK` (0).
    Ok = 0,
    /// `NOT_FOUND` (1).
    NotFound = 1,
    /// `BAD_ARGUMENT` (2).
    BadArgument = 2,
    /// `SERIALIZATION_FAILURE` (3).
    SerializationFailure = 3,
    /// `PARSE_FAILURE` (4).
    ParseFailure = 4,
    /// `EMPTY` (7).
    Empty = 7,
    /// `CAS_MISMATCH` (8).
    CasMismatch = 8,
    /// `INTERNAL_FAILURE` (10).
    InternalFailure = 10,
}

impl Status {
    /// The value the guest receives.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The status with code `code`, if it is one a guest can be handed.
    pub fn from_code(code: u32) -> Option<Self> {
        [
            Status::Ok,
            Status::NotFound,
            Status::BadArgument,
            Status::SerializationFailure,
            Status::ParseFailure,
            Status::Empty,
            Status::CasMismatch,
            Status::InternalFailure,
        ]
        .into_iter()
        .find(|status| status.code() == code)
    }

    /// The spec's name for the status.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NotFound => "NOT_FOUND",
            Status::BadArgument => "BAD_ARGUMENT",
            Status::SerializationFailure => "SERIALIZATION_FAILURE",
            Status::ParseFailure => "PARSE_FAILURE",
            Status::Empty => "EMPTY",
            Status::CasMismatch => "CAS_MISMATCH",
            Status::InternalFailure => "INTERNAL_FAILURE",
        }
    }
}

/// What every host function returns: a status for the guest, or a trap (`Err`).
pub(crate) type HostResult = wasmtime::Result<u32>;

/// Returns `status` to the guest.
pub(crate) fn ret(status: Status) -> HostResult {
    Ok(status.code())
}
