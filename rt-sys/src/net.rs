//! Batched datagram reception: `recvmmsg(2)` with each datagram's kernel receive time
//! (`SO_TIMESTAMPNS`, delivered as `SCM_TIMESTAMPNS`), for receivers that must keep up
//! with a flood (a CAN bus at full load) without one system call per frame.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Datagrams taken with one call at most.
pub const MAX_BATCH: usize = 64;

/// Control space per datagram: room for one `SCM_TIMESTAMPNS` (`CMSG_SPACE` of a
/// `timespec` is 32 bytes on 64-bit Linux) and one more small message the socket may add.
const CMSG_BYTES: usize = 64;

/// One received datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Datagram {
    /// Bytes received into its buffer.
    pub len: usize,
    /// Kernel receive time, ns since the epoch (`CLOCK_REALTIME`); None when the socket
    /// sent no `SCM_TIMESTAMPNS` (the option is off, or the control data was cut short).
    pub ts_ns: Option<u64>,
    /// The datagram was longer than its buffer (`MSG_TRUNC`).
    pub truncated: bool,
}

/// Control buffer of one datagram, aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Cmsg([u8; CMSG_BYTES]);

/// Receive up to `min(bufs.len(), got.len(), MAX_BATCH)` datagrams from `fd` with one
/// `recvmmsg(2)`, `MSG_WAITFORONE`: it waits for the first (as long as the socket's
/// `SO_RCVTIMEO` allows; then `ErrorKind::WouldBlock`) and takes the rest only if they are
/// queued already. Datagram `i` lands in `bufs[i]`, its length and time in `got[i]`.
/// Returns how many came. Allocates nothing; every header is set up afresh on each call.
pub fn recv_batch<const N: usize>(
    fd: BorrowedFd<'_>,
    bufs: &mut [[u8; N]],
    got: &mut [Datagram],
) -> io::Result<usize> {
    let n = bufs.len().min(got.len()).min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    let mut iov: [MaybeUninit<libc::iovec>; MAX_BATCH] = [MaybeUninit::uninit(); MAX_BATCH];
    let mut ctl = [Cmsg([0; CMSG_BYTES]); MAX_BATCH];
    // SAFETY: mmsghdr is plain old data (integers and pointers); all zeroes is a valid value.
    let mut hdr: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iov[i].write(libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast(),
            iov_len: N,
        });
        let h = &mut hdr[i].msg_hdr;
        h.msg_iov = iov[i].as_mut_ptr();
        h.msg_iovlen = 1;
        h.msg_control = ctl[i].0.as_mut_ptr().cast();
        h.msg_controllen = CMSG_BYTES as _;
    }
    let count = loop {
        // SAFETY: the first `n` headers point at live iovecs (each at a live buffer of N
        // bytes) and live control buffers of CMSG_BYTES, all on this stack frame or
        // borrowed mutably for the call; the kernel writes at most that much.
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                hdr.as_mut_ptr(),
                libc::c_uint::try_from(n).unwrap_or(0),
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    for i in 0..count {
        let h = &hdr[i].msg_hdr;
        got[i] = Datagram {
            len: (hdr[i].msg_len as usize).min(N),
            ts_ns: timestamp_ns(h),
            truncated: h.msg_flags & libc::MSG_TRUNC != 0,
        };
    }
    Ok(count)
}

/// The `SCM_TIMESTAMPNS` of a received message, ns since the epoch.
fn timestamp_ns(h: &libc::msghdr) -> Option<u64> {
    // SAFETY: `h` is a header the kernel filled: msg_control/msg_controllen describe the
    // control data it wrote into our buffer; CMSG_FIRSTHDR/CMSG_NXTHDR stay inside it.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(h) };
    while !c.is_null() {
        // SAFETY: `c` is non-null and inside the control buffer (see above).
        let cm = unsafe { &*c };
        let data_len = (cm.cmsg_len as usize).saturating_sub(cmsg_header_len());
        if cm.cmsg_level == libc::SOL_SOCKET
            && cm.cmsg_type == libc::SCM_TIMESTAMPNS
            && data_len >= size_of::<libc::timespec>()
        {
            // SAFETY: the data of an SCM_TIMESTAMPNS is a timespec (length checked); it
            // may be unaligned, so it is read unaligned.
            let ts: libc::timespec =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>()) };
            let s = u64::try_from(ts.tv_sec).ok()?;
            let ns = u64::try_from(ts.tv_nsec).ok()?;
            return s.checked_mul(1_000_000_000)?.checked_add(ns);
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        c = unsafe { libc::CMSG_NXTHDR(h, c) };
    }
    None
}

/// Bytes before a control message's data (`CMSG_LEN(0)`).
fn cmsg_header_len() -> usize {
    // SAFETY: CMSG_LEN is arithmetic on its argument.
    unsafe { libc::CMSG_LEN(0) as usize }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    fn dgram_pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into `fds`.
        let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, fds.as_mut_ptr()) };
        assert_eq!(r, 0, "socketpair: {}", io::Error::last_os_error());
        // SAFETY: both descriptors are new and owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn set_int(fd: &OwnedFd, name: libc::c_int, v: libc::c_int) {
        // SAFETY: a c_int option of the right size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&v as *const libc::c_int).cast(),
                libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap(),
            )
        };
        assert_eq!(r, 0, "setsockopt {name}: {}", io::Error::last_os_error());
    }

    fn send(fd: &OwnedFd, data: &[u8]) {
        // SAFETY: `data` is a live slice.
        let r = unsafe { libc::send(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
        assert_eq!(r, data.len() as isize);
    }

    fn set_timeout_ms(fd: &OwnedFd, ms: i64) {
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: ms * 1000,
        };
        // SAFETY: a timeval option of the right size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                libc::socklen_t::try_from(size_of::<libc::timeval>()).unwrap(),
            )
        };
        assert_eq!(r, 0);
    }

    /// Queued datagrams come in one call, in order, each with its length and a kernel
    /// time between the send and the receive; a long one is marked truncated.
    #[test]
    fn a_batch_takes_what_is_queued_with_timestamps() {
        let (a, b) = dgram_pair();
        set_int(&b, libc::SO_TIMESTAMPNS, 1);
        let before = crate::rt::realtime_ns();
        send(&a, &[1, 2, 3]);
        send(&a, &[4; 16]);
        send(&a, &[5; 20]);
        let mut bufs = [[0u8; 16]; 8];
        let mut got = [Datagram::default(); 8];
        let n = recv_batch(b.as_fd(), &mut bufs, &mut got).unwrap();
        let after = crate::rt::realtime_ns();
        assert_eq!(n, 3);
        assert_eq!(got[0].len, 3);
        assert_eq!(&bufs[0][..3], &[1, 2, 3]);
        assert_eq!((got[1].len, got[1].truncated), (16, false));
        assert_eq!(bufs[1], [4; 16]);
        assert_eq!((got[2].len, got[2].truncated), (16, true));
        for g in &got[..3] {
            let t = g.ts_ns.expect("SCM_TIMESTAMPNS");
            assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
        }
        // Headers are rebuilt each call: a second batch still carries timestamps.
        send(&a, &[6]);
        assert_eq!(recv_batch(b.as_fd(), &mut bufs, &mut got).unwrap(), 1);
        assert!(got[0].ts_ns.is_some());
        assert_eq!(bufs[0][0], 6);
    }

    /// Without SO_TIMESTAMPNS there is no time; with nothing queued the call times out
    /// as the socket says; the batch is capped by the shorter slice.
    #[test]
    fn no_option_no_time_and_timeouts_are_would_block() {
        let (a, b) = dgram_pair();
        set_timeout_ms(&b, 20);
        let mut bufs = [[0u8; 4]; 2];
        let mut got = [Datagram::default(); 1];
        let e = recv_batch(b.as_fd(), &mut bufs, &mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        send(&a, &[1]);
        send(&a, &[2]);
        assert_eq!(recv_batch(b.as_fd(), &mut bufs, &mut got).unwrap(), 1);
        assert_eq!(got[0].ts_ns, None);
        assert_eq!(recv_batch(b.as_fd(), &mut bufs, &mut got).unwrap(), 1);
        assert_eq!(bufs[0][0], 2);
        assert_eq!(recv_batch(b.as_fd(), &mut bufs, &mut []).unwrap(), 0);
    }
}
