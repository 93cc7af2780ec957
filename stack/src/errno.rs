//! Socket errors, as Linux names them (errno values).

/// A socket error, as Linux names it (errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}
impl std::error::Error for Errno {}

pub const EAGAIN: Errno = Errno(libc::EAGAIN);
pub const EADDRINUSE: Errno = Errno(libc::EADDRINUSE);
pub const ECONNREFUSED: Errno = Errno(libc::ECONNREFUSED);
pub const EHOSTUNREACH: Errno = Errno(libc::EHOSTUNREACH);
pub const EMSGSIZE: Errno = Errno(libc::EMSGSIZE);
pub const ENETUNREACH: Errno = Errno(libc::ENETUNREACH);
pub const EBADF: Errno = Errno(libc::EBADF);
pub const EADDRNOTAVAIL: Errno = Errno(libc::EADDRNOTAVAIL);
pub const ENETDOWN: Errno = Errno(libc::ENETDOWN);
